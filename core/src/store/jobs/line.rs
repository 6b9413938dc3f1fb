//! An environment's line of active jobs (queued, waiting for review, or running): who is
//! first, who wakes next, how many wait ahead of a job. The active states are spelled out in
//! the SQL (`active_job_states_sql!`), as the partial index `jobs_line` spells them, never
//! bound: a cached generic plan could not prove a bound list matches the index and would walk
//! the environment's history.

use super::Job;
use crate::jobs::JobState;
use crate::schema::jobs;
use crate::store::StoreError;
use diesel::expression::SqlLiteral;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Uuid as SqlUuid};
use std::collections::HashMap;
use uuid::Uuid;

/// `state` is one of `JobState::ACTIVE`, in the words of the `jobs_line` index's predicate.
fn in_line() -> SqlLiteral<Bool> {
    diesel::dsl::sql::<Bool>(concat!("state IN ", crate::active_job_states_sql!()))
}

/// An environment's active jobs, in line order.
pub fn active_for_environment(
    conn: &mut PgConnection,
    environment_id: Uuid,
) -> Result<Vec<Job>, StoreError> {
    Ok(jobs::table
        .filter(jobs::environment_id.eq(environment_id))
        .filter(in_line())
        .order((jobs::created_at.asc(), jobs::id.asc()))
        .select(Job::as_select())
        .load(conn)?)
}

/// For an active job: how many active jobs of its environment are ahead of it (0 = next or
/// running). `None` for a finished job.
pub fn queue_position(conn: &mut PgConnection, job: &Job) -> Result<Option<i64>, StoreError> {
    Ok(queue_positions(conn, std::slice::from_ref(job))?
        .pop()
        .flatten())
}

/// How many active jobs of its environment are ahead of each given job (in line order: created
/// at, then id), for every one at once.
pub const QUEUE_POSITIONS_SQL: &str = concat!(
    "SELECT j.id, count(a.id) AS ahead FROM jobs j \
     LEFT JOIN jobs a ON a.environment_id = j.environment_id \
       AND a.state IN ",
    crate::active_job_states_sql!(),
    " AND (a.created_at, a.id) < (j.created_at, j.id) \
     WHERE j.id = ANY($1) GROUP BY j.id"
);

/// [`queue_position`] of each job, in order, in one query (a page of the jobs list).
pub fn queue_positions(
    conn: &mut PgConnection,
    page: &[Job],
) -> Result<Vec<Option<i64>>, StoreError> {
    #[derive(QueryableByName)]
    struct Ahead {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
        #[diesel(sql_type = BigInt)]
        ahead: i64,
    }
    let waiting: Vec<Uuid> = page
        .iter()
        .filter(|job| job.state.is_active())
        .map(|job| job.id)
        .collect();
    let ahead: HashMap<Uuid, i64> = if waiting.is_empty() {
        HashMap::new()
    } else {
        diesel::sql_query(QUEUE_POSITIONS_SQL)
            .bind::<Array<SqlUuid>, _>(&waiting)
            .load::<Ahead>(conn)?
            .into_iter()
            .map(|row| (row.id, row.ahead))
            .collect()
    };
    Ok(page.iter().map(|job| ahead.get(&job.id).copied()).collect())
}

/// Queues a wake-up for the environment's next job, if the first in its line is queued: call
/// in the transaction that ended or removed the job ahead of it.
pub fn wake_next(conn: &mut PgConnection, environment_id: Uuid) -> Result<(), StoreError> {
    if let Some((next, operation)) = next_in_line(conn, environment_id)? {
        crate::store::outbox::enqueue(conn, next, &operation)?;
    }
    Ok(())
}

/// The first active job of an environment, if it is queued: the one to wake next.
pub fn next_in_line(
    conn: &mut PgConnection,
    environment_id: Uuid,
) -> Result<Option<(Uuid, String)>, StoreError> {
    let first: Option<(Uuid, String, JobState)> = jobs::table
        .filter(jobs::environment_id.eq(environment_id))
        .filter(in_line())
        .order((jobs::created_at.asc(), jobs::id.asc()))
        .select((jobs::id, jobs::operation, jobs::state))
        .first(conn)
        .optional()?;
    Ok(first
        .filter(|(_, _, state)| *state == JobState::Queued)
        .map(|(id, operation, _)| (id, operation)))
}
