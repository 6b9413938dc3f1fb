//! A small cache of admin connections, keyed by URL, so one provisioning run (plan, apply,
//! verify) does not pay for a new backend at every phase.

use super::ExecError;
use super::fence::{self, Fence, Side};
use super::sql;
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use std::sync::Arc;
use std::sync::Mutex;

/// Settings of every admin session: quiet, bounded waits, recognisable in `pg_stat_activity`.
/// Commits do not wait for the WAL flush: every step converges, so a step lost in a server
/// crash is simply planned again; [`PooledConn::make_durable`] flushes at the end of a run.
/// `search_path` is pinned to the system catalog (and this session's own temporary schema,
/// last): no name the admin uses resolves into a schema a tenant can create objects in.
/// A database's owner may attach settings to its database (`ALTER DATABASE … SET role = …`,
/// `default_transaction_read_only`): the session's user and write mode are pinned too.
pub(crate) const SESSION_SETUP: &str = "SET SESSION AUTHORIZATION DEFAULT; \
     SET ROLE NONE; \
     SET default_transaction_read_only = off; \
     SET search_path = pg_catalog, pg_temp; \
     SET client_min_messages = warning; \
     SET synchronous_commit = off; \
     SET lock_timeout = '10s'; \
     SET statement_timeout = '5min'; \
     SET idle_in_transaction_session_timeout = '1min'; \
     SET application_name = 'bulkhead-worker'";

/// Idle connections kept at most.
const MAX_IDLE: usize = 8;

#[derive(Default)]
pub(crate) struct ConnPool {
    idle: Mutex<Vec<(String, PgConnection)>>,
}

impl ConnPool {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(String, PgConnection)>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An idle connection to `url`, or a new one.
    pub(crate) fn get(&self, url: &str) -> Result<PooledConn<'_>, ExecError> {
        let cached = {
            let mut idle = self.idle();
            idle.iter()
                .rposition(|(u, _)| u == url)
                .map(|at| idle.remove(at).1)
        };
        match cached {
            Some(conn) => Ok(PooledConn {
                pool: self,
                url: url.to_owned(),
                target: sql::target_of(url),
                conn: Some(conn),
                keep: true,
                fence: None,
            }),
            None => self.get_fresh(url),
        }
    }

    /// A new connection to `url`, never one from the cache.
    pub(crate) fn get_fresh(&self, url: &str) -> Result<PooledConn<'_>, ExecError> {
        Ok(self.wrap(url, establish(url)?))
    }

    /// Lends out a connection made elsewhere (see [`establish`]).
    pub(crate) fn wrap(&self, url: &str, conn: PgConnection) -> PooledConn<'_> {
        PooledConn {
            pool: self,
            url: url.to_owned(),
            target: sql::target_of(url),
            conn: Some(conn),
            keep: true,
            fence: None,
        }
    }

    /// Closes idle connections to `url` (before its database is dropped).
    pub(crate) fn evict(&self, url: &str) {
        self.idle().retain(|(u, _)| u != url);
    }

    /// Closes every idle connection.
    pub(crate) fn clear(&self) {
        self.idle().clear();
    }

    fn put(&self, url: String, conn: PgConnection) {
        let mut idle = self.idle();
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push((url, conn));
    }
}

/// A connection on loan; it goes back to the cache when dropped unless a statement failed on it.
pub(crate) struct PooledConn<'a> {
    pool: &'a ConnPool,
    url: String,
    target: String,
    conn: Option<PgConnection>,
    keep: bool,
    /// Set for the steps of a fenced run: every [`batch`](Self::batch) first takes (or, as the
    /// owner role, checks) the environment's fence in its transaction (see `fence`).
    fence: Option<(Arc<Fence>, Side)>,
}

impl PooledConn<'_> {
    /// Makes every later [`batch`](Self::batch) take the fence; the admin side first names the
    /// session after the job, makes sure the fence row exists and takes it.
    pub(crate) fn set_fence(
        &mut self,
        step: &str,
        fence: Arc<Fence>,
        side: Side,
    ) -> Result<(), ExecError> {
        self.fence = Some((fence.clone(), side));
        if side == Side::Admin {
            // The run's first contact takes the fence at once: a worker whose lease was taken
            // over is refused here even when the new holder has no step to run.
            let handout = fence.handout_sql()?;
            self.retrying(|conn| {
                conn.fenced(step, |c, prefix| {
                    c.batch_execute(&format!("{handout}{prefix}"))
                })
            })?;
        }
        Ok(())
    }

    /// Runs `f` with the fence's prefix for the statements of one transaction ("" when the run
    /// is not fenced). A prefix that waited a lease for the fence makes an admin session end
    /// the holder if it is a session of an older lease, and the step runs once more.
    pub(crate) fn fenced<T>(
        &mut self,
        step: &str,
        mut f: impl FnMut(&mut PgConnection, &str) -> diesel::QueryResult<T>,
    ) -> Result<T, ExecError> {
        let Some((fence, side)) = self.fence.clone() else {
            return self.run(step, |c| f(c, ""));
        };
        let prefix = fence.prefix(side)?;
        match self.run(step, |c| f(c, &prefix)) {
            Err(error) if side == Side::Admin && fence::is_lock_timeout(&error) => {
                let taken = self.run(step, |c| fence.take_over(c))?;
                if !taken {
                    return Err(error);
                }
                self.run(step, |c| f(c, &prefix))
            }
            other => other,
        }
    }

    /// Only the fence: before and after a statement that cannot run in a transaction
    /// (`CREATE DATABASE`, `DROP DATABASE`).
    pub(crate) fn check_fence(&mut self, step: &str) -> Result<(), ExecError> {
        if self.fence.is_none() {
            return Ok(());
        }
        self.batch(step, "SELECT 1")
    }
    /// `host:port/database`, for messages.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// Runs `f` on the connection; an error discards the connection instead of returning it.
    pub(crate) fn run<T>(
        &mut self,
        step: &str,
        f: impl FnOnce(&mut PgConnection) -> diesel::QueryResult<T>,
    ) -> Result<T, ExecError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(ExecError::Unreachable(format!(
                "{step}: connection already closed"
            )));
        };
        f(conn).map_err(|e| {
            self.keep = false;
            sql::query_error(step, &self.target, &e)
        })
    }

    /// Runs statements in one round trip (an implicit transaction when there are several),
    /// fenced when the run is.
    pub(crate) fn batch(&mut self, step: &str, statements: &str) -> Result<(), ExecError> {
        self.fenced(step, |c, prefix| {
            if prefix.is_empty() {
                c.batch_execute(statements)
            } else {
                c.batch_execute(&format!("{prefix}{statements}"))
            }
        })
    }

    /// [`batch`](Self::batch), tried again (up to 8 times, after a short random pause) when it
    /// lost a race on a catalog row: concurrent GRANT/REVOKE on one database or schema fail with
    /// "tuple concurrently updated", concurrent `CREATE … IF NOT EXISTS` with a unique violation
    /// on a catalog index. No advisory lock serialises these in databases tenants can connect
    /// to: a tenant could take the same key and stall every other tenant's steps.
    pub(crate) fn batch_retrying(&mut self, step: &str, statements: &str) -> Result<(), ExecError> {
        self.retrying(|conn| conn.batch(step, statements))
    }

    fn retrying(
        &mut self,
        mut attempt_once: impl FnMut(&mut Self) -> Result<(), ExecError>,
    ) -> Result<(), ExecError> {
        let mut attempt = 0u32;
        loop {
            match attempt_once(self) {
                Err(error) if attempt < 8 && lost_catalog_race(&error) => {
                    attempt += 1;
                    let pause = rand::random_range(1..=5u64) * u64::from(attempt);
                    std::thread::sleep(std::time::Duration::from_millis(pause));
                }
                other => return other,
            }
        }
    }

    /// Runs statements in one explicit transaction.
    pub(crate) fn transaction(&mut self, step: &str, statements: &str) -> Result<(), ExecError> {
        self.run(step, |c| c.transaction(|c| c.batch_execute(statements)))
    }

    /// Waits until everything committed on this server so far is durable: a transaction that
    /// writes a commit record with synchronous commit on flushes the WAL up to it.
    pub(crate) fn make_durable(&mut self) -> Result<(), ExecError> {
        self.transaction(
            "flush the write-ahead log",
            "SET LOCAL synchronous_commit = on; SELECT txid_current();",
        )
    }

    /// Whether a notification on `channel` (this session LISTENs on it) has arrived; stops
    /// listening. One round trip makes the server deliver what is pending.
    pub(crate) fn heard(&mut self, channel: &str) -> Result<bool, ExecError> {
        self.run("hear a probe notification", |c| {
            c.batch_execute("SELECT 1")?;
            let heard = c
                .notifications_iter()
                .filter_map(Result::ok)
                .any(|n| n.channel == channel);
            c.batch_execute("UNLISTEN *")?;
            Ok(heard)
        })
    }

    /// Closes the connection when dropped instead of caching it: for a session tenant code
    /// may have run in (it can leave prepared statements, temporary objects or session locks
    /// behind that a later user of the connection would meet).
    pub(crate) fn never_reuse(&mut self) {
        self.keep = false;
    }

    /// Closes the connection now instead of caching it.
    pub(crate) fn close(mut self) {
        self.keep = false;
        self.conn = None;
    }
}

/// A new admin-style session to `url`: connected and set up (see [`SESSION_SETUP`]).
pub(crate) fn establish(url: &str) -> Result<PgConnection, ExecError> {
    let target = sql::target_of(url);
    let mut conn = PgConnection::establish(url).map_err(|e| sql::connect_error(&target, &e))?;
    conn.batch_execute(SESSION_SETUP)
        .map_err(|e| sql::query_error("set up session", &target, &e))?;
    Ok(conn)
}

/// Whether a statement failed only because a concurrent session changed the same catalog row.
fn lost_catalog_race(error: &ExecError) -> bool {
    let text = error.to_string();
    text.contains("tuple concurrently updated")
        || (text.contains("duplicate key value violates unique constraint \"pg_")
            && text.contains("_index\""))
}

impl Drop for PooledConn<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.keep
        {
            self.pool.put(std::mem::take(&mut self.url), conn);
        }
    }
}
