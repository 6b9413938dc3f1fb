//! The `housekeeping` table: when each periodic task last started, installation-wide, so that
//! however many workers run, one of them runs a task once per interval.

use super::StoreError;
use diesel::sql_types::{BigInt, Text};
use diesel::{PgConnection, QueryableByName, RunQueryDsl};
use std::time::Duration;

/// Starts `task` if its last start is at least `every` ago (or it never ran): moves the row to
/// now and answers `true`. A concurrent claim waits for the row, sees it moved, and answers
/// `false`, so one caller per interval wins; the claim commits at once and holds nothing while
/// the task runs.
pub const CLAIM_SQL: &str = "INSERT INTO housekeeping AS h (task, last_run_at) VALUES ($1, now()) \
     ON CONFLICT (task) DO UPDATE SET last_run_at = now() \
     WHERE h.last_run_at <= now() - make_interval(secs => $2::double precision) \
     RETURNING task";

pub fn claim(conn: &mut PgConnection, task: &str, every: Duration) -> Result<bool, StoreError> {
    #[derive(QueryableByName)]
    struct Claimed {
        #[diesel(sql_type = Text)]
        #[expect(dead_code, reason = "only whether a row came back matters")]
        task: String,
    }
    let claimed: Vec<Claimed> = diesel::sql_query(CLAIM_SQL)
        .bind::<Text, _>(task)
        .bind::<BigInt, _>(super::seconds(every))
        .load(conn)?;
    Ok(!claimed.is_empty())
}
