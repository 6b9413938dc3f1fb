//! Budgets (one monthly budget per tenant), spend so far, and threshold crossings: recorded
//! and audited (`budget.threshold_crossed`) once per period and threshold.

use super::StoreError;
use super::audit::{self, NewAuditEvent};
use super::metering::decimal;
use crate::audit::AuditResult;
use crate::metering::{month_of, reached_thresholds};
use chrono::{DateTime, NaiveDate, Utc};
use diesel::sql_types::{Array, Date, Integer, Nullable, Text, Uuid as SqlUuid};
use diesel::{PgConnection, QueryableByName, RunQueryDsl};
use rust_decimal::Decimal;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub tenant_id: Uuid,
    pub amount: Decimal,
    pub currency: String,
    pub thresholds: Vec<i32>,
    pub updated_at: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct BudgetRow {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    amount: String,
    #[diesel(sql_type = Text)]
    currency: String,
    #[diesel(sql_type = Array<Integer>)]
    thresholds: Vec<i32>,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    updated_at: DateTime<Utc>,
}

impl BudgetRow {
    fn into_budget(self) -> Result<Budget, StoreError> {
        Ok(Budget {
            tenant_id: self.tenant_id,
            amount: decimal(&self.amount)?,
            currency: self.currency,
            thresholds: self.thresholds,
            updated_at: self.updated_at,
        })
    }
}

const COLUMNS: &str = "tenant_id, amount::text AS amount, currency, thresholds, updated_at";

pub fn get(conn: &mut PgConnection, tenant_id: Uuid) -> Result<Option<Budget>, StoreError> {
    let rows: Vec<BudgetRow> = diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM budgets WHERE tenant_id = $1"
    ))
    .bind::<SqlUuid, _>(tenant_id)
    .load(conn)?;
    rows.into_iter()
        .next()
        .map(BudgetRow::into_budget)
        .transpose()
}

/// Sets (or replaces) the tenant's monthly budget.
pub fn put(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    amount: Decimal,
    currency: &str,
    thresholds: &[i32],
    by: Uuid,
) -> Result<Budget, StoreError> {
    let row: BudgetRow = diesel::sql_query(format!(
        "INSERT INTO budgets (tenant_id, amount, currency, period, thresholds, updated_by) \
         VALUES ($1, $2::numeric, $3, 'month', $4, $5) \
         ON CONFLICT (tenant_id) DO UPDATE SET amount = excluded.amount, currency = \
         excluded.currency, thresholds = excluded.thresholds, updated_by = excluded.updated_by, \
         updated_at = now() RETURNING {COLUMNS}"
    ))
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<Text, _>(amount.to_string())
    .bind::<Text, _>(currency)
    .bind::<Array<Integer>, _>(thresholds)
    .bind::<SqlUuid, _>(by)
    .get_result(conn)?;
    row.into_budget()
}

/// Removes the budget; `false` if there was none.
pub fn delete(conn: &mut PgConnection, tenant_id: Uuid) -> Result<bool, StoreError> {
    let n = diesel::sql_query("DELETE FROM budgets WHERE tenant_id = $1")
        .bind::<SqlUuid, _>(tenant_id)
        .execute(conn)?;
    Ok(n > 0)
}

/// Spend of the tenant over `[from, to)` (whole days, UTC), exact.
pub fn spent(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Decimal, StoreError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Nullable<Text>)]
        spent: Option<String>,
    }
    let row: Row = diesel::sql_query(
        "SELECT sum(cost)::text AS spent FROM charges_daily_tags \
         WHERE tenant_id = $1 AND day >= $2 AND day < $3",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<Date, _>(from)
    .bind::<Date, _>(to)
    .get_result(conn)?;
    row.spent.as_deref().map_or(Ok(Decimal::ZERO), decimal)
}

/// Thresholds this period has already crossed.
pub fn crossed(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    period_start: NaiveDate,
) -> Result<Vec<i32>, StoreError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Integer)]
        threshold: i32,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT threshold FROM budget_crossings WHERE tenant_id = $1 AND period_start = $2 ORDER BY threshold",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<Date, _>(period_start)
    .load(conn)?;
    Ok(rows.into_iter().map(|r| r.threshold).collect())
}

/// After a pass: for every budget, the month's spend; each threshold reached for the first time
/// this month is recorded and audited once (the primary key makes a second record a no-op).
pub fn audit_crossings(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    pass_id: Uuid,
) -> Result<usize, StoreError> {
    let (from, to) = month_of(now);
    let budgets: Vec<BudgetRow> =
        diesel::sql_query(format!("SELECT {COLUMNS} FROM budgets")).load(conn)?;
    let mut audited = 0;
    for row in budgets {
        let budget = row.into_budget()?;
        let spent = spent(conn, budget.tenant_id, from, to)?;
        for threshold in reached_thresholds(&budget.thresholds, budget.amount, spent) {
            let inserted = diesel::sql_query(
                "INSERT INTO budget_crossings (tenant_id, period_start, threshold, spent) \
                 VALUES ($1, $2, $3, $4::numeric) ON CONFLICT DO NOTHING",
            )
            .bind::<SqlUuid, _>(budget.tenant_id)
            .bind::<Date, _>(from)
            .bind::<Integer, _>(threshold)
            .bind::<Text, _>(spent.to_string())
            .execute(conn)?;
            if inserted == 0 {
                continue;
            }
            audit::append(
                conn,
                &NewAuditEvent {
                    actor_id: None,
                    actor: "system:metering".into(),
                    tenant_id: Some(budget.tenant_id),
                    action: "budget.threshold_crossed".into(),
                    target: format!("budget:{}", budget.tenant_id),
                    result: AuditResult::Success,
                    request_id: format!("meter-pass-{pass_id}"),
                    details: serde_json::json!({
                        "period_start": from,
                        "threshold": threshold,
                        "amount": budget.amount.to_string(),
                        "currency": budget.currency,
                        "spent": spent.to_string(),
                    }),
                },
            )?;
            audited += 1;
        }
    }
    Ok(audited)
}
