//! Reading charges: totals grouped by up to two dimensions (from the daily rollups) and the
//! charge rows of the FOCUS export (hourly, read through a cursor in batches).

use super::StoreError;
use super::metering::decimal;
use chrono::{DateTime, NaiveDate, Utc};
use diesel::sql_types::{Array, Date, Jsonb, Nullable, Text, Uuid as SqlUuid};
use diesel::{PgConnection, QueryableByName, RunQueryDsl};
use rust_decimal::Decimal;
use uuid::Uuid;

/// What costs are grouped by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dimension {
    Environment,
    Tenant,
    Sku,
    Day,
    Month,
    /// A cost tag's value; charges without the tag form their own group (key `null`).
    Tag(String),
}

/// Whose charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    All,
    Tenant(Uuid),
    /// The tenants where the principal holds an active role that reads costs (a partner's
    /// managed tenants; not those where it is only, say, a viewer).
    MemberOf(Uuid),
}

impl Scope {
    /// A WHERE clause on `c.tenant_id` (ids are formatted from `Uuid`s: nothing else reaches
    /// the SQL text).
    fn clause(self) -> String {
        match self {
            Self::All => "true".to_owned(),
            Self::Tenant(id) => format!("c.tenant_id = '{id}'"),
            Self::MemberOf(id) => format!(
                "c.tenant_id IN (SELECT tenant_id FROM memberships WHERE principal_id = '{id}' \
                 AND state = 'active' AND role IN ('partner', 'tenant_admin', 'billing'))"
            ),
        }
    }
}

/// One group of the answer: its keys (one per dimension), labels (an environment's name, a
/// tenant's slug) and, per unit, quantity and cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    pub keys: Vec<Option<String>>,
    pub labels: Vec<Option<String>>,
    pub unit: String,
    pub quantity: Decimal,
    pub cost: Decimal,
}

#[derive(QueryableByName)]
struct Grouped {
    #[diesel(sql_type = Nullable<Text>)]
    k1: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    l1: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    k2: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    l2: Option<String>,
    #[diesel(sql_type = Text)]
    unit: String,
    #[diesel(sql_type = Text)]
    quantity: String,
    #[diesel(sql_type = Text)]
    cost: String,
}

/// (key, label) expressions of a dimension; tag keys are bound as `$3[n]`.
fn expressions(dimension: &Dimension, tag_index: &mut usize) -> (String, String) {
    match dimension {
        Dimension::Environment => ("c.environment_id::text".into(), "e.name".into()),
        Dimension::Tenant => ("c.tenant_id::text".into(), "t.slug".into()),
        Dimension::Sku => ("c.sku_id".into(), "NULL::text".into()),
        Dimension::Day => ("c.day::text".into(), "NULL::text".into()),
        Dimension::Month => ("to_char(c.day, 'YYYY-MM')".into(), "NULL::text".into()),
        Dimension::Tag(_) => {
            *tag_index += 1;
            (
                format!("c.cost_tags ->> ($3::text[])[{tag_index}]"),
                "NULL::text".into(),
            )
        }
    }
}

/// Costs over `[from, to)` grouped by one or two dimensions and the unit, from the daily
/// rollups: per environment when an environment is asked for, else per tag set (a year of
/// hourly charges of a thousand environments is a few thousand rows there).
pub fn grouped(
    conn: &mut PgConnection,
    scope: Scope,
    from: NaiveDate,
    to: NaiveDate,
    dimensions: &[Dimension],
) -> Result<Vec<GroupRow>, StoreError> {
    let by_environment = dimensions.contains(&Dimension::Environment);
    let source = if by_environment {
        "charges_daily"
    } else {
        "charges_daily_tags"
    };
    let mut tag_index = 0;
    let mut exprs: Vec<(String, String)> = dimensions
        .iter()
        .map(|d| expressions(d, &mut tag_index))
        .collect();
    while exprs.len() < 2 {
        exprs.push(("NULL::text".into(), "NULL::text".into()));
    }
    let tags: Vec<String> = dimensions
        .iter()
        .filter_map(|d| match d {
            Dimension::Tag(key) => Some(key.clone()),
            _ => None,
        })
        .collect();
    let joins = format!(
        "{}{}",
        if by_environment {
            " JOIN environments e ON e.id = c.environment_id"
        } else {
            ""
        },
        if dimensions.contains(&Dimension::Tenant) {
            " JOIN tenants t ON t.id = c.tenant_id"
        } else {
            ""
        }
    );
    let sql = format!(
        "SELECT {k1} AS k1, {l1} AS l1, {k2} AS k2, {l2} AS l2, c.unit, \
                sum(c.quantity)::text AS quantity, sum(c.cost)::text AS cost \
         FROM {source} c{joins} \
         WHERE {scope} AND c.day >= $1 AND c.day < $2 \
         GROUP BY 1, 2, 3, 4, 5 ORDER BY 1 NULLS LAST, 3 NULLS LAST, 5",
        k1 = exprs[0].0,
        l1 = exprs[0].1,
        k2 = exprs[1].0,
        l2 = exprs[1].1,
        scope = scope.clause(),
    );
    let rows: Vec<Grouped> = diesel::sql_query(sql)
        .bind::<Date, _>(from)
        .bind::<Date, _>(to)
        .bind::<Array<Text>, _>(&tags)
        .load(conn)?;
    let n = dimensions.len();
    rows.into_iter()
        .map(|r| {
            Ok(GroupRow {
                keys: [r.k1, r.k2].into_iter().take(n).collect(),
                labels: [r.l1, r.l2].into_iter().take(n).collect(),
                unit: r.unit,
                quantity: decimal(&r.quantity)?,
                cost: decimal(&r.cost)?,
            })
        })
        .collect()
}

/// How finely the export splits charges: FOCUS `ChargePeriodStart`/`End`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// One row per environment, SKU and hour (the stored charges).
    Hour,
    /// One row per environment, SKU and day (the daily rollup; a month of a thousand
    /// environments is ~120,000 rows instead of ~2.9 million).
    Day,
}

/// One charge as the FOCUS export writes it.
#[derive(Debug, Clone, QueryableByName)]
pub struct ExportRow {
    #[diesel(sql_type = SqlUuid)]
    pub environment_id: Uuid,
    #[diesel(sql_type = Text)]
    pub environment_name: String,
    #[diesel(sql_type = Text)]
    pub isolation: String,
    #[diesel(sql_type = SqlUuid)]
    pub tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    pub tenant_slug: String,
    #[diesel(sql_type = Text)]
    pub tenant_name: String,
    #[diesel(sql_type = Text)]
    pub sku_id: String,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    pub period_start: DateTime<Utc>,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    pub period_end: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub sku_price_id: String,
    #[diesel(sql_type = Text)]
    pub region: String,
    #[diesel(sql_type = Text)]
    pub currency: String,
    #[diesel(sql_type = Text)]
    pub quantity: String,
    #[diesel(sql_type = Text)]
    pub list_unit_price: String,
    #[diesel(sql_type = Text)]
    pub cost: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub allocation_method: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub allocated_from: Option<String>,
    #[diesel(sql_type = Jsonb)]
    pub cost_tags: serde_json::Value,
}

/// Rows fetched from the export's cursor at a time.
pub const EXPORT_BATCH: i64 = 2000;

/// Every charge in scope over `[from, to)`, hourly or daily, in batches of [`EXPORT_BATCH`]
/// read through a server-side cursor (memory stays flat whatever the range); `each` gets every
/// batch and answers whether to go on (the client may have gone). Read in a REPEATABLE READ,
/// read-only transaction, so the export is one consistent snapshot.
pub fn export(
    conn: &mut PgConnection,
    scope: Scope,
    granularity: Granularity,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    each: &mut dyn FnMut(Vec<ExportRow>) -> bool,
) -> Result<usize, StoreError> {
    // Formatted from `DateTime`s and a `Uuid` scope (a utility statement takes no parameters).
    let (from, to) = (from.to_rfc3339(), to.to_rfc3339());
    let select = match granularity {
        Granularity::Hour => format!(
            "SELECT c.environment_id, e.name AS environment_name, e.isolation, c.tenant_id, \
                    t.slug AS tenant_slug, t.name AS tenant_name, c.sku_id, \
                    c.hour AS period_start, c.hour + interval '1 hour' AS period_end, \
                    c.sku_price_id, c.region, c.currency, c.quantity::text AS quantity, \
                    c.list_unit_price::text AS list_unit_price, c.cost::text AS cost, \
                    c.allocation_method, c.allocated_from, c.cost_tags \
             FROM charges c JOIN environments e ON e.id = c.environment_id \
             JOIN tenants t ON t.id = c.tenant_id \
             WHERE {} AND c.hour >= '{from}'::timestamptz AND c.hour < '{to}'::timestamptz \
             ORDER BY c.hour, c.tenant_id, c.environment_id, c.sku_id",
            scope.clause()
        ),
        Granularity::Day => format!(
            "SELECT c.environment_id, e.name AS environment_name, e.isolation, c.tenant_id, \
                    t.slug AS tenant_slug, t.name AS tenant_name, c.sku_id, \
                    (c.day::timestamp AT TIME ZONE 'UTC') AS period_start, \
                    ((c.day + 1)::timestamp AT TIME ZONE 'UTC') AS period_end, \
                    c.sku_price_id, c.region, c.currency, c.quantity::text AS quantity, \
                    c.list_unit_price::text AS list_unit_price, c.cost::text AS cost, \
                    c.allocation_method, c.allocated_from, c.cost_tags \
             FROM charges_daily c JOIN environments e ON e.id = c.environment_id \
             JOIN tenants t ON t.id = c.tenant_id \
             WHERE {} AND c.day >= ('{from}'::timestamptz AT TIME ZONE 'UTC')::date \
               AND c.day < ('{to}'::timestamptz AT TIME ZONE 'UTC')::date \
             ORDER BY c.day, c.tenant_id, c.environment_id, c.sku_id",
            scope.clause()
        ),
    };
    conn.build_transaction()
        .repeatable_read()
        .read_only()
        .run(|conn| {
            // The stream waits for its client between batches (at most 30 s, see the API):
            // longer than the pool's idle-in-transaction default allows.
            diesel::sql_query("SET LOCAL idle_in_transaction_session_timeout = '45s'")
                .execute(conn)?;
            diesel::sql_query(format!(
                "DECLARE focus_export NO SCROLL CURSOR FOR {select}"
            ))
            .execute(conn)?;
            let mut total = 0;
            loop {
                let rows: Vec<ExportRow> =
                    diesel::sql_query(format!("FETCH {EXPORT_BATCH} FROM focus_export"))
                        .load(conn)?;
                let n = rows.len();
                total += n;
                if n == 0 || !each(rows) || n < usize::try_from(EXPORT_BATCH).unwrap_or(0) {
                    break;
                }
            }
            diesel::sql_query("CLOSE focus_export").execute(conn)?;
            Ok(total)
        })
}
