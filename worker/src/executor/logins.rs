//! Stopping an environment at its target: its app role loses its login (a role attribute only
//! a superuser or a `CREATEROLE` role can give back, never the tenant) and the sessions of its
//! roles are ended. Starting it again is an ordinary apply of the role (see `execution`).
//!
//! A login is checked before its backend shows in `pg_stat_activity`, and a client can make
//! that gap as long as it likes (`post_auth_delay` is set per connection, by anyone): a session
//! that passed the check just before the stop committed can appear after the stop looked. So
//! the workers' sweep also ends, every tick, the sessions of stopped environments' roles, and
//! those left in the pooled database by roles a destroy dropped ([`end_stray_sessions`]).

use super::ExecError;
use super::fence::Fence;
use super::postgres::PostgresExecutor;
use super::sql::{ident, literal};
use bulkhead_core::domain::Isolation;
use bulkhead_core::plan::{self, EnvironmentSpec};
use diesel::connection::SimpleConnection;
use diesel::sql_types::{Array, BigInt, Text};
use diesel::{Connection, QueryableByName, RunQueryDsl};
use std::sync::Arc;
use uuid::Uuid;

impl PostgresExecutor {
    /// Takes the login away from the environment's app role, then ends every session of its
    /// roles, each step under the job's fence. In this order: once the first step commits no
    /// new session can start, so none slips in between. Returns how many sessions it ended.
    pub fn stop_logins(
        &self,
        spec: &EnvironmentSpec,
        fence: Option<Arc<Fence>>,
    ) -> Result<i64, ExecError> {
        self.prepare()?;
        let names = self.names(spec);
        let mut session = self.session(spec, &names)?.with_fence(fence);
        let server = session.server()?;
        server.batch_retrying(
            "take the app role's login away",
            &format!("ALTER ROLE {} NOLOGIN;", ident(&names.app_role)?),
        )?;
        let end_sessions = format!(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS ended \
             FROM pg_stat_activity WHERE usename IN ({}, {}) AND pid <> pg_backend_pid()",
            literal(&names.app_role)?,
            literal(&names.owner_role)?
        );
        #[derive(QueryableByName)]
        struct Ended {
            #[diesel(sql_type = BigInt)]
            ended: i64,
        }
        let ended = server.fenced("end the environment's sessions", |c, prefix| {
            c.transaction(|c| {
                if !prefix.is_empty() {
                    c.batch_execute(prefix)?;
                }
                diesel::sql_query(&end_sessions).get_result::<Ended>(c)
            })
        })?;
        Ok(ended.ended)
    }
}

/// What one sweep of stray sessions ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StrayEnded {
    /// Sessions of stopped environments' roles, by environment.
    pub stopped: Vec<(Uuid, i64)>,
    /// Sessions in the pooled database of roles that no longer exist (outlived a destroy).
    pub orphaned: i64,
}

#[derive(QueryableByName)]
struct EndedRole {
    #[diesel(sql_type = Text)]
    role: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    ended: bool,
}

impl PostgresExecutor {
    /// Ends the sessions of the app and owner roles of `stopped` environments (id and tier),
    /// and every client session in the pooled database whose role was dropped. Not fenced: it
    /// changes nothing but sessions that should not exist.
    pub fn end_stray_sessions(
        &self,
        stopped: &[(Uuid, Isolation)],
    ) -> Result<StrayEnded, ExecError> {
        let mut out = StrayEnded::default();
        let pooled_url = self.pooled_url()?;
        for (isolation, url) in [
            (Isolation::Shared, pooled_url.clone()),
            (
                Isolation::Dedicated,
                self.targets().dedicated_admin_url.clone(),
            ),
        ] {
            let mut owners = std::collections::HashMap::new();
            for (id, _) in stopped.iter().filter(|(_, i)| *i == isolation) {
                let names = plan::names(*id, isolation, &self.targets().pooled_database);
                owners.insert(names.app_role, *id);
                owners.insert(names.owner_role, *id);
            }
            if owners.is_empty() {
                continue;
            }
            let roles: Vec<String> = owners.keys().cloned().collect();
            let mut conn = self.pool.get(&url)?;
            // The call sits in the select list: PostgreSQL may evaluate WHERE conditions in
            // any order, and a `pg_terminate_backend` there could run for every session.
            let ended: Vec<EndedRole> = conn.run("end stopped environments' sessions", |c| {
                diesel::sql_query(
                    "SELECT usename::text AS role, pg_terminate_backend(pid) AS ended \
                     FROM pg_stat_activity WHERE usename = ANY($1) AND pid <> pg_backend_pid()",
                )
                .bind::<Array<Text>, _>(&roles)
                .load(c)
            })?;
            for role in ended.into_iter().filter(|r| r.ended) {
                if let Some(id) = owners.get(&role.role) {
                    match out.stopped.iter_mut().find(|(e, _)| e == id) {
                        Some((_, n)) => *n += 1,
                        None => out.stopped.push((*id, 1)),
                    }
                }
            }
        }
        #[derive(QueryableByName)]
        struct Orphans {
            #[diesel(sql_type = BigInt)]
            ended: i64,
        }
        let pooled = self.targets().pooled_database.clone();
        let mut conn = self.pool.get(&pooled_url)?;
        out.orphaned = conn
            .run("end sessions of dropped roles", |c| {
                diesel::sql_query(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS ended \
                     FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend' \
                       AND usesysid IS NOT NULL \
                       AND NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.oid = usesysid)",
                )
                .bind::<Text, _>(&pooled)
                .get_result::<Orphans>(c)
            })?
            .ended;
        Ok(out)
    }
}
