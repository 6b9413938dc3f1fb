//! The storage side of the job lease's fencing: every step an apply or destroy runs on a target
//! first takes its environment's fence row in the admin-only `bulkhead_meta` (see `meta`), in
//! the step's own transaction, and a worker whose lease was taken over finds its token refused
//! there, even when it was paused with a statement already inside PostgreSQL.
//!
//! The fence row's lock also keeps the steps of one environment from running concurrently: a
//! takeover waits for the paused session's transaction instead of racing it. After a wait of a
//! lease, the new holder ends the session holding the row if it carries a lower token (its
//! `application_name` is `bulkhead/<job>/<token>`) and says so in the job's events.
//!
//! Why a row lock and not an advisory lock: every role that can connect to a database may take
//! any advisory lock key in it, and tenants connect to the pooled database; a tenant holding an
//! environment's key would stall every step of it. Nobody but the admin can lock a row of
//! `bulkhead_meta.fence` (the owner role only through `check_fence`, for its own environment).

use super::ExecError;
use super::meta;
use super::sql::literal;
use bulkhead_core::domain::Isolation;
use diesel::sql_types::{BigInt, Integer, Text, Uuid as SqlUuid};
use diesel::{PgConnection, QueryableByName, RunQueryDsl};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The lock timeout of admin sessions outside the fence (see `pool::SESSION_SETUP`).
const STEP_LOCK_TIMEOUT: &str = "10s";

/// Reports a takeover to the job's events: `(message, details)`.
pub type Report = Arc<dyn Fn(&str, serde_json::Value) + Send + Sync>;

/// The job lease an apply or destroy runs under, as the target checks it.
#[derive(Clone)]
pub struct Fence {
    pub environment_id: Uuid,
    pub job_id: Uuid,
    /// The job's fencing token: from one sequence for all jobs, so a later claim of any job
    /// of the environment holds a higher one.
    pub token: i64,
    /// How long a step waits for the fence before it ends a holder with a lower token.
    pub lease: Duration,
    pub report: Report,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("environment_id", &self.environment_id)
            .field("job_id", &self.job_id)
            .field("token", &self.token)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// Who runs a step: the admin takes (and raises) the fence; the owner role's session, for
/// baseline migrations, checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Admin,
    Owner,
}

impl Fence {
    /// `bulkhead/<job id>/<token>`: how a session of this job shows in `pg_stat_activity`.
    pub fn application_name(&self) -> String {
        format!("bulkhead/{}/{}", self.job_id, self.token)
    }

    /// How long a step waits for the fence: a lease, but under the admin sessions' statement
    /// timeout (5 min), which would otherwise end the wait before the takeover could start.
    fn lease_ms(&self) -> u128 {
        self.lease.as_millis().clamp(1, 240_000)
    }

    /// Run once when a run hands out an admin connection, followed by the fence's prefix in
    /// the same transaction: names the session after the job, makes the bookkeeping (and
    /// fence) when missing, and creates the environment's fence row if there is none. The
    /// existence check comes first: `ON CONFLICT` alone would wait for a paused holder that
    /// updated the row, under the step lock timeout rather than the fence's.
    pub(crate) fn handout_sql(&self) -> Result<String, ExecError> {
        Ok(format!(
            "SET application_name = {app};\n{ensure}\
             INSERT INTO bulkhead_meta.fence (environment_id, token, job_id) SELECT {env}, 0, {job} \
             WHERE NOT EXISTS (SELECT FROM bulkhead_meta.fence WHERE environment_id = {env}) \
             ON CONFLICT (environment_id) DO NOTHING;\n",
            app = literal(&self.application_name())?,
            ensure = meta::ensure_sql()?,
            env = literal(&self.environment_id.to_string())?,
            job = literal(&self.job_id.to_string())?,
        ))
    }

    /// What a step's transaction starts with: wait at most a lease for the fence, take it (or
    /// check it, for the owner role), then the usual lock timeout for the step's own statements.
    pub(crate) fn prefix(&self, side: Side) -> Result<String, ExecError> {
        let env = literal(&self.environment_id.to_string())?;
        let take = match side {
            Side::Admin => format!(
                "SELECT bulkhead_meta.take_fence({env}, {}, {});\n",
                self.token,
                literal(&self.job_id.to_string())?
            ),
            Side::Owner => format!(
                "SET application_name = {};\nSELECT bulkhead_meta.check_fence({env}, {});\n",
                literal(&self.application_name())?,
                self.token
            ),
        };
        Ok(format!(
            "SET LOCAL lock_timeout = '{}ms';\n{take}SET LOCAL lock_timeout = '{STEP_LOCK_TIMEOUT}';\n",
            self.lease_ms()
        ))
    }

    /// After a step waited a lease for the fence: ends the session holding the environment's
    /// fence row if it belongs to an older lease, waits for it to go, and reports it. Returns
    /// whether a session was ended (then the step is worth trying again). Runs in an admin
    /// session (it reads `bulkhead_meta.fence`).
    ///
    /// The holder is the backend whose transaction id is the row's `xmax` (the transaction that
    /// locked it last, still open). It is ended when it carries a lower token in its
    /// `application_name`, or when it is a session of the environment's owner role (which only
    /// a run's migrations use, one step at a time, and tenant code running as that role could
    /// rename to look newer). Never when the stored token is above ours (then we are the stale
    /// one). Found and ended in one statement, so a pid reused meanwhile is never hit.
    pub(crate) fn take_over(&self, conn: &mut PgConnection) -> diesel::QueryResult<bool> {
        #[derive(QueryableByName)]
        struct Ended {
            #[diesel(sql_type = Integer)]
            pid: i32,
            #[diesel(sql_type = Text)]
            application_name: String,
            #[diesel(sql_type = Text)]
            usename: String,
            #[diesel(sql_type = Text)]
            state: String,
            #[diesel(sql_type = diesel::sql_types::Bool)]
            ended: bool,
        }
        let owner_role =
            bulkhead_core::plan::names(self.environment_id, Isolation::Shared, "").owner_role;
        let timeout_ms = i64::try_from(self.lease_ms()).unwrap_or(30_000);
        let ended: Vec<Ended> = diesel::sql_query(
            "SELECT a.pid, coalesce(a.application_name, '') AS application_name, \
                    coalesce(a.usename::text, '') AS usename, coalesce(a.state, '') AS state, \
                    pg_catalog.pg_terminate_backend(a.pid, $3) AS ended \
             FROM bulkhead_meta.fence f \
             JOIN pg_catalog.pg_stat_activity a ON a.backend_xid = f.xmax \
             WHERE f.environment_id = $1 AND f.token <= $2 \
               AND a.pid <> pg_catalog.pg_backend_pid() \
               AND (a.usename = $4 OR CASE WHEN a.application_name ~ '^bulkhead/[0-9a-f-]{36}/[0-9]{1,18}$' \
                    THEN pg_catalog.split_part(a.application_name, '/', 3)::bigint < $2 ELSE false END)",
        )
        .bind::<SqlUuid, _>(self.environment_id)
        .bind::<BigInt, _>(self.token)
        .bind::<BigInt, _>(timeout_ms)
        .bind::<Text, _>(&owner_role)
        .load(conn)?;
        for holder in &ended {
            let (job, token) = parse_application_name(&holder.application_name)
                .map_or((None, None), |(job, token)| {
                    (Some(job.to_string()), Some(token))
                });
            tracing::warn!(
                environment_id = %self.environment_id,
                pid = holder.pid,
                stale_job = ?job,
                stale_token = ?token,
                token = self.token,
                "took the environment's fence over from a session of an older lease"
            );
            (self.report)(
                &format!(
                    "ended target session {} ({}, {}, {}) of an older lease that held the \
                     environment's fence for longer than a lease",
                    holder.pid, holder.usename, holder.application_name, holder.state
                ),
                serde_json::json!({
                    "pid": holder.pid,
                    "stale_job": job,
                    "stale_token": token,
                    "role": holder.usename,
                    "token": self.token,
                    "session_state": holder.state,
                    "ended": holder.ended,
                }),
            );
        }
        Ok(ended.iter().any(|h| h.ended))
    }
}

/// `bulkhead/<job>/<token>` → (job, token).
pub(crate) fn parse_application_name(name: &str) -> Option<(Uuid, i64)> {
    let rest = name.strip_prefix("bulkhead/")?;
    let (job, token) = rest.split_once('/')?;
    Some((Uuid::try_parse(job).ok()?, token.parse().ok()?))
}

/// Whether a step failed waiting for a lock (the fence's, or another the step needed).
pub(crate) fn is_lock_timeout(error: &ExecError) -> bool {
    error.to_string().contains("lock timeout")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_names_round_trip() {
        let fence = Fence {
            environment_id: Uuid::now_v7(),
            job_id: Uuid::now_v7(),
            token: 42,
            lease: Duration::from_secs(3),
            report: Arc::new(|_, _| {}),
        };
        assert_eq!(
            parse_application_name(&fence.application_name()),
            Some((fence.job_id, 42))
        );
        assert_eq!(parse_application_name("bulkhead-worker"), None);
        assert_eq!(parse_application_name("bulkhead/not-a-job/1"), None);
        assert!(
            fence
                .prefix(Side::Admin)
                .expect("prefix")
                .contains("take_fence")
        );
        assert!(
            fence
                .prefix(Side::Owner)
                .expect("prefix")
                .contains("check_fence")
        );
    }
}
