//! Webhooks and their delivery outbox: a tenant's endpoints (the signing secret sealed), the
//! deliveries the database's triggers queue for each event, the sender's claim of the oldest
//! due delivery per endpoint (so each endpoint gets its events in order), and each try's end.

use super::StoreError;
use crate::crypto::Sealed;
use crate::schema::webhooks;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Int4, Int8, Interval, Nullable, Text, Uuid as SqlUuid};
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhooks)]
pub struct Webhook {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub secret_nonce: Vec<u8>,
    pub secret_ciphertext: Vec<u8>,
    pub secret_key_id: String,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Webhook {
    pub fn sealed_secret(&self) -> Sealed {
        Sealed {
            key_id: Some(self.secret_key_id.clone()),
            nonce: self.secret_nonce.clone(),
            ciphertext: self.secret_ciphertext.clone(),
        }
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = webhooks)]
pub struct NewWebhook<'a> {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub url: &'a str,
    pub events: &'a [String],
    pub secret_nonce: Vec<u8>,
    pub secret_ciphertext: Vec<u8>,
    pub secret_key_id: String,
    pub created_by: Option<Uuid>,
}

pub fn insert(conn: &mut PgConnection, new: &NewWebhook<'_>) -> Result<Webhook, StoreError> {
    Ok(diesel::insert_into(webhooks::table)
        .values(new)
        .returning(Webhook::as_returning())
        .get_result(conn)?)
}

/// The tenant's live webhooks, oldest first.
pub fn list(conn: &mut PgConnection, tenant_id: Uuid) -> Result<Vec<Webhook>, StoreError> {
    Ok(webhooks::table
        .filter(webhooks::tenant_id.eq(tenant_id))
        .filter(webhooks::deleted_at.is_null())
        .order(webhooks::id)
        .select(Webhook::as_select())
        .load(conn)?)
}

pub fn find(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<Webhook>, StoreError> {
    Ok(webhooks::table
        .filter(webhooks::tenant_id.eq(tenant_id))
        .filter(webhooks::id.eq(id))
        .filter(webhooks::deleted_at.is_null())
        .select(Webhook::as_select())
        .first(conn)
        .optional()?)
}

/// Deletes a webhook: no new deliveries; those not sent yet end `failed` ("webhook deleted").
pub fn delete(conn: &mut PgConnection, tenant_id: Uuid, id: Uuid) -> Result<bool, StoreError> {
    let deleted = diesel::sql_query(
        "UPDATE webhooks SET deleted_at = now() WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<SqlUuid, _>(id)
    .execute(conn)?;
    diesel::sql_query(
        "UPDATE webhook_deliveries SET state = 'failed', last_error = 'webhook deleted' \
         WHERE webhook_id = $1 AND state = 'pending'",
    )
    .bind::<SqlUuid, _>(id)
    .execute(conn)?;
    Ok(deleted == 1)
}

#[derive(Debug, Clone, QueryableByName, serde::Serialize, utoipa::ToSchema)]
pub struct Delivery {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    /// Such as `job.succeeded` (the CloudEvents `type` is `dev.bulkhead.` and this).
    #[diesel(sql_type = Text)]
    pub event_type: String,
    /// What it is about: `jobs/<id>` or `environments/<id>`.
    #[diesel(sql_type = Text)]
    pub subject: String,
    /// `pending` (not delivered yet), `delivered` or `failed` (given up).
    #[diesel(sql_type = Text)]
    pub state: String,
    #[diesel(sql_type = Int4)]
    pub attempts: i32,
    /// The HTTP status of the last try, if it got one.
    #[diesel(sql_type = Nullable<Int4>)]
    pub last_status: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    pub occurred_at: DateTime<Utc>,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    pub next_attempt_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Timestamptz>)]
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A webhook's latest deliveries, newest first.
pub fn deliveries(
    conn: &mut PgConnection,
    webhook_id: Uuid,
    limit: i64,
) -> Result<Vec<Delivery>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT id, event_type, subject, state, attempts, last_status, last_error, occurred_at, \
                next_attempt_at, delivered_at \
         FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY seq DESC LIMIT $2",
    )
    .bind::<SqlUuid, _>(webhook_id)
    .bind::<Int8, _>(limit)
    .load(conn)?)
}

/// A delivery claimed for one try, with where it goes.
#[derive(Debug, Clone, QueryableByName)]
pub struct Due {
    #[diesel(sql_type = Int8)]
    pub seq: i64,
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub webhook_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    pub event_type: String,
    #[diesel(sql_type = Text)]
    pub subject: String,
    #[diesel(sql_type = diesel::sql_types::Jsonb)]
    pub data: serde_json::Value,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    pub occurred_at: DateTime<Utc>,
    #[diesel(sql_type = Int4)]
    pub attempts: i32,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = diesel::sql_types::Bytea)]
    pub secret_nonce: Vec<u8>,
    #[diesel(sql_type = diesel::sql_types::Bytea)]
    pub secret_ciphertext: Vec<u8>,
    #[diesel(sql_type = Text)]
    pub secret_key_id: String,
}

fn interval(duration: Duration) -> diesel::data_types::PgInterval {
    diesel::data_types::PgInterval::from_microseconds(
        i64::try_from(duration.as_micros()).unwrap_or(i64::MAX),
    )
}

/// Claims up to `limit` deliveries for one try each, for `hold` (another sender takes one
/// only after that): the oldest pending delivery of each live webhook, if it is due, so a
/// webhook's events go out one at a time in the order they happened. At most `per_tenant` of a
/// tenant's deliveries are in flight at once (those claimed earlier count), so one tenant's
/// slow endpoints cannot take every slot. The heads are found per live webhook (an index probe
/// each), whatever the number of pending rows behind them.
pub fn claim_due(
    conn: &mut PgConnection,
    limit: i64,
    per_tenant: i64,
    hold: Duration,
) -> Result<Vec<Due>, StoreError> {
    Ok(diesel::sql_query(
        "WITH heads AS (SELECT h.seq, h.tenant_id, h.next_attempt_at, h.claimed_until \
                 FROM webhooks w CROSS JOIN LATERAL (SELECT seq, tenant_id, next_attempt_at, \
                     claimed_until FROM webhook_deliveries d WHERE d.webhook_id = w.id \
                     AND d.state = 'pending' ORDER BY d.seq LIMIT 1) h \
                 WHERE w.deleted_at IS NULL), \
              busy AS (SELECT tenant_id, count(*) AS n FROM heads \
                 WHERE claimed_until >= now() GROUP BY tenant_id), \
              ranked AS (SELECT h.seq, row_number() OVER (PARTITION BY h.tenant_id ORDER BY h.seq) \
                     + coalesce(b.n, 0) AS place \
                 FROM heads h LEFT JOIN busy b ON b.tenant_id = h.tenant_id \
                 WHERE h.next_attempt_at <= now() \
                   AND (h.claimed_until IS NULL OR h.claimed_until < now())), \
              due AS (SELECT seq FROM ranked WHERE place <= $3 ORDER BY seq LIMIT $1) \
         UPDATE webhook_deliveries d SET claimed_until = now() + $2, attempts = d.attempts + 1 \
         FROM due, webhooks w \
         WHERE d.seq = due.seq AND w.id = d.webhook_id AND w.deleted_at IS NULL \
           AND d.state = 'pending' AND (d.claimed_until IS NULL OR d.claimed_until < now()) \
         RETURNING d.seq, d.id, d.webhook_id, d.tenant_id, d.event_type, d.subject, d.data, \
                   d.occurred_at, d.attempts, w.url, w.secret_nonce, w.secret_ciphertext, \
                   w.secret_key_id",
    )
    .bind::<Int8, _>(limit)
    .bind::<Interval, _>(interval(hold))
    .bind::<Int8, _>(per_tenant)
    .load(conn)?)
}

/// How one try ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TryOutcome {
    /// A 2xx answer.
    Delivered { status: i32 },
    /// Anything else: the status if there was one, and why.
    Failed { status: Option<i32>, error: String },
}

/// Records a try: delivered, or retried after `retry_in` unless the event is older than
/// `give_up_after` (then `failed`). Returns the delivery's new state, or `None` when it was
/// settled meanwhile (a try whose claim lapsed must not undo a later one's delivery).
pub fn record_try(
    conn: &mut PgConnection,
    seq: i64,
    outcome: &TryOutcome,
    retry_in: Duration,
    give_up_after: Duration,
) -> Result<Option<String>, StoreError> {
    #[derive(QueryableByName)]
    struct State {
        #[diesel(sql_type = Text)]
        state: String,
    }
    let row: Option<State> = match outcome {
        TryOutcome::Delivered { status } => diesel::sql_query(
            "UPDATE webhook_deliveries SET state = 'delivered', delivered_at = now(), \
             last_status = $2, last_error = NULL, claimed_until = NULL \
             WHERE seq = $1 AND state = 'pending' RETURNING state",
        )
        .bind::<Int8, _>(seq)
        .bind::<Int4, _>(*status)
        .get_result(conn)
        .optional()?,
        TryOutcome::Failed { status, error } => diesel::sql_query(
            "UPDATE webhook_deliveries SET last_status = $2, last_error = $3, claimed_until = NULL, \
                 state = CASE WHEN now() + $4 > occurred_at + $5 THEN 'failed' ELSE 'pending' END, \
                 next_attempt_at = now() + $4 \
             WHERE seq = $1 AND state = 'pending' RETURNING state",
        )
        .bind::<Int8, _>(seq)
        .bind::<Nullable<Int4>, _>(*status)
        .bind::<Text, _>(error.chars().take(500).collect::<String>())
        .bind::<Interval, _>(interval(retry_in))
        .bind::<Interval, _>(interval(give_up_after))
        .get_result(conn)
        .optional()?,
    };
    Ok(row.map(|r| r.state))
}
