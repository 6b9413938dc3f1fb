//! The mail outbox: mail written in the transaction that makes it necessary (an invitation),
//! sent by the API's mail relay with retries; a sent row stays as the record of what was sent,
//! its one-time tokens removed.

use super::StoreError;
use chrono::{DateTime, Utc};
use diesel::sql_types::{Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::{PgConnection, QueryableByName, RunQueryDsl};
use uuid::Uuid;

/// What a mail is for (kept in the record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    Invitation,
    PartnerInvitation,
    /// A membership offered to an existing account (no token: it accepts signed in).
    MembershipOffer,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invitation => "invitation",
            Self::PartnerInvitation => "partner_invitation",
            Self::MembershipOffer => "membership_offer",
        }
    }
}

/// Attempts before a mail is given up (with its last error kept).
pub const MAX_ATTEMPTS: i32 = 30;

#[derive(Debug, Clone, QueryableByName)]
pub struct OutboxMail {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub recipient: String,
    #[diesel(sql_type = Text)]
    pub subject: String,
    #[diesel(sql_type = Text)]
    pub body: String,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub sent_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
}

/// Queues a mail; call in the transaction that makes it necessary.
pub fn enqueue(
    conn: &mut PgConnection,
    kind: MailKind,
    recipient: &str,
    subject: &str,
    body: &str,
) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    diesel::sql_query(
        "INSERT INTO mail_outbox (id, recipient, subject, body, kind) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(recipient)
    .bind::<Text, _>(subject)
    .bind::<Text, _>(body)
    .bind::<Text, _>(kind.as_str())
    .execute(conn)?;
    Ok(id)
}

/// Takes up to `limit` due mails for sending: each is held for a minute (another relay skips
/// it) and counts an attempt. Rows locked by another relay are skipped, not waited for.
pub const TAKE_DUE_SQL: &str = "UPDATE mail_outbox SET attempts = attempts + 1, \
         send_after = now() + interval '1 minute' \
     WHERE id IN (SELECT id FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL \
                  AND send_after <= now() ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
     RETURNING id, recipient, subject, body, kind, attempts, created_at, sent_at, last_error";

pub fn take_due(conn: &mut PgConnection, limit: i64) -> Result<Vec<OutboxMail>, StoreError> {
    Ok(diesel::sql_query(TAKE_DUE_SQL)
        .bind::<diesel::sql_types::BigInt, _>(limit)
        .load(conn)?)
}

/// Marks a mail sent and removes one-time tokens (`bki_…`) from the stored body.
pub fn mark_sent(conn: &mut PgConnection, id: Uuid) -> Result<(), StoreError> {
    diesel::sql_query(
        "UPDATE mail_outbox SET sent_at = now(), last_error = NULL, \
                body = regexp_replace(body, 'bki_[0-9a-f]+', 'bki_<removed once sent>', 'g') \
         WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .execute(conn)?;
    Ok(())
}

/// Records a failed attempt: tried again after `retry_in`, or given up after
/// [`MAX_ATTEMPTS`] (its token removed too).
pub fn mark_failed(
    conn: &mut PgConnection,
    id: Uuid,
    error: &str,
    retry_in: std::time::Duration,
) -> Result<(), StoreError> {
    let retry_ms = i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX);
    diesel::sql_query(
        "UPDATE mail_outbox SET last_error = $2, \
                send_after = now() + make_interval(secs => $3::double precision / 1000), \
                failed_at = CASE WHEN attempts >= $4 THEN now() END, \
                body = CASE WHEN attempts >= $4 \
                       THEN regexp_replace(body, 'bki_[0-9a-f]+', 'bki_<removed: never sent>', 'g') \
                       ELSE body END \
         WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(error)
    .bind::<diesel::sql_types::BigInt, _>(retry_ms)
    .bind::<Integer, _>(MAX_ATTEMPTS)
    .execute(conn)?;
    Ok(())
}

/// The mails sent or waiting for `recipient`, newest first (for operators and tests).
pub fn for_recipient(
    conn: &mut PgConnection,
    recipient: &str,
) -> Result<Vec<OutboxMail>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT id, recipient, subject, body, kind, attempts, created_at, sent_at, last_error \
         FROM mail_outbox WHERE recipient = $1 ORDER BY created_at DESC",
    )
    .bind::<Text, _>(recipient)
    .load(conn)?)
}

/// Deletes up to `limit` mails sent (or given up) more than `age` ago, oldest first, skipping
/// rows another session holds; returns how many (retention).
pub const DELETE_DONE_SQL: &str = "DELETE FROM mail_outbox WHERE id = ANY(ARRAY(\
     SELECT id FROM mail_outbox WHERE (sent_at IS NOT NULL OR failed_at IS NOT NULL) \
       AND coalesce(sent_at, failed_at) < now() - make_interval(secs => $1::double precision) \
     ORDER BY coalesce(sent_at, failed_at) LIMIT $2 FOR UPDATE SKIP LOCKED))";

pub fn delete_done_before(
    conn: &mut PgConnection,
    age: std::time::Duration,
    limit: i64,
) -> Result<usize, StoreError> {
    Ok(diesel::sql_query(DELETE_DONE_SQL)
        .bind::<diesel::sql_types::BigInt, _>(super::seconds(age))
        .bind::<diesel::sql_types::BigInt, _>(limit)
        .execute(conn)?)
}
