//! Denials counted outside the audit chain: a flood of refused requests adds to one row per
//! principal, tenant, action and window instead of queueing on the chain's lock, and each row is
//! folded into the chain as one `denied` event (with its count) once its window has closed.

use super::StoreError;
use super::audit::{self, NewAuditEvent};
use crate::audit::AuditResult;
use crate::schema::audit_denial_counts as counts;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;
use uuid::Uuid;

/// One denial to count.
#[derive(Debug, Clone)]
pub struct Denial {
    pub principal_id: Uuid,
    pub actor: String,
    pub tenant_id: Option<Uuid>,
    pub action: String,
    pub target: String,
    pub request_id: String,
}

/// The window `at` falls in, for windows of `seconds` counted from the epoch.
pub fn window(at: DateTime<Utc>, seconds: i64) -> (DateTime<Utc>, DateTime<Utc>) {
    let seconds = seconds.max(1);
    let start = at.timestamp().div_euclid(seconds) * seconds;
    let start = DateTime::from_timestamp(start, 0).unwrap_or(at);
    (start, start + chrono::Duration::seconds(seconds))
}

/// Adds one to the denial's row for the current window (one upsert; no chain lock).
pub fn count(
    conn: &mut PgConnection,
    denial: &Denial,
    window_seconds: i64,
) -> Result<(), StoreError> {
    let (start, end) = window(Utc::now(), window_seconds);
    diesel::insert_into(counts::table)
        .values((
            counts::principal_id.eq(denial.principal_id),
            counts::tenant_id.eq(denial.tenant_id.unwrap_or(Uuid::nil())),
            counts::action.eq(&denial.action),
            counts::window_start.eq(start),
            counts::window_end.eq(end),
            counts::actor.eq(&denial.actor),
            counts::target.eq(&denial.target),
            counts::denials.eq(1_i64),
            counts::last_request_id.eq(&denial.request_id),
        ))
        .on_conflict((
            counts::principal_id,
            counts::tenant_id,
            counts::action,
            counts::window_start,
        ))
        .do_update()
        .set((
            counts::denials.eq(counts::denials + 1),
            counts::target.eq(excluded(counts::target)),
            counts::last_request_id.eq(excluded(counts::last_request_id)),
        ))
        .execute(conn)?;
    Ok(())
}

type Row = (
    Uuid,
    Uuid,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    String,
    String,
    i64,
    String,
);

/// Folds up to `limit` rows whose window has closed into the audit chain, one `denied` event
/// each, in one transaction (rows several API processes race for are skipped, not doubled).
/// Returns how many rows were folded.
pub fn fold_closed(conn: &mut PgConnection, limit: i64) -> Result<usize, StoreError> {
    conn.transaction(|conn| {
        let rows: Vec<Row> = counts::table
            .filter(counts::window_end.le(Utc::now()))
            .order(counts::window_end.asc())
            .limit(limit)
            .for_update()
            .skip_locked()
            .select((
                counts::principal_id,
                counts::tenant_id,
                counts::action,
                counts::window_start,
                counts::window_end,
                counts::actor,
                counts::target,
                counts::denials,
                counts::last_request_id,
            ))
            .load(conn)?;
        for (principal_id, tenant_id, action, start, end, actor, target, denials, request_id) in
            &rows
        {
            audit::append(
                conn,
                &NewAuditEvent {
                    actor_id: Some(*principal_id),
                    actor: actor.clone(),
                    tenant_id: (!tenant_id.is_nil()).then_some(*tenant_id),
                    action: action.clone(),
                    target: target.clone(),
                    result: AuditResult::Denied,
                    request_id: request_id.clone(),
                    details: serde_json::json!({
                        "aggregated": true,
                        "denials": denials,
                        "window_start": start,
                        "window_end": end,
                    }),
                },
            )?;
            diesel::delete(counts::table.find((*principal_id, *tenant_id, action, *start)))
                .execute(conn)?;
        }
        Ok(rows.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_aligned_and_contain_their_instant() {
        let at = DateTime::from_timestamp(1_800_000_125, 0).expect("time");
        let (start, end) = window(at, 60);
        assert_eq!(start.timestamp(), 1_800_000_120);
        assert_eq!(end.timestamp(), 1_800_000_180);
        assert!(start <= at && at < end);
    }
}
