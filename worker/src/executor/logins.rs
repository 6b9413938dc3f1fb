//! Stopping an environment at its target: its app role loses its login (a role attribute only
//! a superuser or a `CREATEROLE` role can give back, never the tenant) and the sessions of its
//! roles are ended. Starting it again is an ordinary apply of the role (see `execution`).

use super::ExecError;
use super::fence::Fence;
use super::postgres::PostgresExecutor;
use super::sql::{ident, literal};
use bulkhead_core::plan::EnvironmentSpec;
use diesel::connection::SimpleConnection;
use diesel::sql_types::BigInt;
use diesel::{Connection, QueryableByName, RunQueryDsl};
use std::sync::Arc;

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
