//! The audit trail: appending hash-chained events, listing them, verifying the chain.

use crate::audit::{AuditContent, AuditResult, BreakKind, GENESIS_HASH, chain_hash, check_link};
use crate::schema::audit_events;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::tenants::page;
use super::{Page, StoreError};

/// Key of the advisory lock that orders appends, so two transactions never chain onto the
/// same previous row.
const AUDIT_CHAIN_LOCK: i64 = 0x6275_6c6b_6175_6474; // "bulkaudt"

/// What a caller records; id, time and hashes are filled in by [`append`].
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub actor_id: Option<Uuid>,
    pub actor: String,
    pub tenant_id: Option<Uuid>,
    pub action: String,
    pub target: String,
    pub result: AuditResult,
    pub request_id: String,
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = audit_events)]
pub struct AuditEvent {
    pub seq: i64,
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub actor_id: Option<Uuid>,
    pub actor: String,
    pub tenant_id: Option<Uuid>,
    pub action: String,
    pub target: String,
    pub result: String,
    pub request_id: String,
    pub details: serde_json::Value,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

impl AuditEvent {
    fn content(&self) -> AuditContent<'_> {
        AuditContent {
            id: self.id,
            occurred_at: self.occurred_at,
            actor_id: self.actor_id,
            actor: &self.actor,
            tenant_id: self.tenant_id,
            action: &self.action,
            target: &self.target,
            result: &self.result,
            request_id: &self.request_id,
            details: &self.details,
        }
    }
}

/// Appends one event. Runs in the caller's transaction (or its own), so a mutation and its
/// audit row commit or roll back together. In the caller's transaction it takes no savepoint
/// of its own (two statements fewer per audited change): every caller passes its error on,
/// which ends that transaction anyway.
pub fn append(conn: &mut PgConnection, event: &NewAuditEvent) -> Result<(), StoreError> {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    let in_transaction = AnsiTransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()?
        .is_some();
    if in_transaction {
        append_in_transaction(conn, event)
    } else {
        conn.transaction(|conn| append_in_transaction(conn, event))
    }
}

/// The chain's lock, the previous hash and the new row. The previous hash is read by a
/// statement of its own after the lock is held: a statement's snapshot is taken when it
/// starts, so one that waited for the lock inside itself would miss the row committed by the
/// transaction it waited for, and fork the chain.
fn append_in_transaction(conn: &mut PgConnection, event: &NewAuditEvent) -> Result<(), StoreError> {
    diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
        .bind::<diesel::sql_types::Int8, _>(AUDIT_CHAIN_LOCK)
        .execute(conn)?;
    let prev_hash: Vec<u8> = audit_events::table
        .select(audit_events::hash)
        .order(audit_events::seq.desc())
        .first(conn)
        .optional()?
        .unwrap_or_else(|| GENESIS_HASH.to_vec());
    // PostgreSQL keeps microseconds: hash exactly what will be read back.
    let now = Utc::now();
    let occurred_at = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    let id = Uuid::now_v7();
    let content = AuditContent {
        id,
        occurred_at,
        actor_id: event.actor_id,
        actor: &event.actor,
        tenant_id: event.tenant_id,
        action: &event.action,
        target: &event.target,
        result: event.result.as_str(),
        request_id: &event.request_id,
        details: &event.details,
    };
    let hash = chain_hash(&prev_hash, &content);
    diesel::insert_into(audit_events::table)
        .values((
            audit_events::id.eq(id),
            audit_events::occurred_at.eq(occurred_at),
            audit_events::actor_id.eq(event.actor_id),
            audit_events::actor.eq(&event.actor),
            audit_events::tenant_id.eq(event.tenant_id),
            audit_events::action.eq(&event.action),
            audit_events::target.eq(&event.target),
            audit_events::result.eq(event.result.as_str()),
            audit_events::request_id.eq(&event.request_id),
            audit_events::details.eq(&event.details),
            audit_events::prev_hash.eq(&prev_hash),
            audit_events::hash.eq(hash.as_slice()),
        ))
        .execute(conn)?;
    Ok(())
}

/// Events in append order after `after_seq`; of one tenant, or all.
pub fn list(
    conn: &mut PgConnection,
    tenant_id: Option<Uuid>,
    after_seq: Option<i64>,
    limit: i64,
) -> Result<Page<AuditEvent>, StoreError> {
    let mut query = audit_events::table
        .select(AuditEvent::as_select())
        .order(audit_events::seq.asc())
        .limit(limit + 1)
        .into_boxed();
    if let Some(tenant_id) = tenant_id {
        query = query.filter(audit_events::tenant_id.eq(tenant_id));
    }
    if let Some(after) = after_seq {
        query = query.filter(audit_events::seq.gt(after));
    }
    let rows = query.load(conn)?;
    Ok(page(rows, limit, |e| e.seq.to_string()))
}

/// The first row that does not fit the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub seq: i64,
    pub id: Uuid,
    pub kind: BreakKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub checked: u64,
    pub first_break: Option<ChainBreak>,
}

/// Walks the whole chain in batches and reports the first broken link.
pub fn verify(conn: &mut PgConnection) -> Result<ChainReport, StoreError> {
    const BATCH: i64 = 2_000;
    let mut expected_prev = GENESIS_HASH.to_vec();
    let mut after = 0_i64;
    let mut checked = 0_u64;
    loop {
        let rows: Vec<AuditEvent> = audit_events::table
            .select(AuditEvent::as_select())
            .filter(audit_events::seq.gt(after))
            .order(audit_events::seq.asc())
            .limit(BATCH)
            .load(conn)?;
        let Some(last) = rows.last() else {
            return Ok(ChainReport {
                checked,
                first_break: None,
            });
        };
        after = last.seq;
        for row in &rows {
            checked += 1;
            if let Err(kind) = check_link(&expected_prev, &row.prev_hash, &row.hash, &row.content())
            {
                return Ok(ChainReport {
                    checked,
                    first_break: Some(ChainBreak {
                        seq: row.seq,
                        id: row.id,
                        kind,
                    }),
                });
            }
            expected_prev.clone_from(&row.hash);
        }
    }
}
