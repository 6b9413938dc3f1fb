//! The connections of one run (plan, apply, verify) against one environment: the admin's, on
//! its server and its database, and, for baseline migrations after the first apply, a session
//! that logged in as the environment's owner role.

use super::ExecError;
use super::fence::{Fence, Side};
use super::pool::{ConnPool, PooledConn};
use super::sql;
use std::sync::Arc;

/// Run by the owner's session once connected: touches the catalogs DDL uses and PL/pgSQL.
const OWNER_WARM_UP: &str = "DO $bk$BEGIN END$bk$; \
     SELECT FROM pg_catalog.pg_class LIMIT 0; SELECT FROM pg_catalog.pg_type LIMIT 0; \
     SELECT FROM pg_catalog.pg_attribute LIMIT 0; SELECT FROM pg_catalog.pg_index LIMIT 0; \
     SELECT FROM pg_catalog.pg_constraint LIMIT 0; SELECT FROM pg_catalog.pg_depend LIMIT 0";

/// The connections of one run against one environment.
pub(crate) struct Session<'a> {
    pool: &'a ConnPool,
    server_url: String,
    envdb_url: String,
    server: Option<PooledConn<'a>>,
    envdb: Option<PooledConn<'a>>,
    /// Where baseline migrations run: a session that logged in as the environment's owner
    /// role (see [`Session::owner`]), closed when the baseline steps end.
    owner: Option<PooledConn<'a>>,
    /// The owner session being connected in the background (`start_owner`).
    owner_pending: Option<std::thread::JoinHandle<Result<diesel::PgConnection, ExecError>>>,
    owner_url: String,
    /// While the owner role may log in: what ends that (run by `close_owner`).
    owner_logout: Option<String>,
    /// The job lease an apply or destroy runs under: every step on the server, the
    /// environment's database and the owner's session takes or checks it (see `fence`).
    fence: Option<Arc<Fence>>,
}

impl<'a> Session<'a> {
    pub(crate) fn new(pool: &'a ConnPool, server_url: String, envdb_url: String) -> Self {
        Self {
            pool,
            server_url,
            envdb_url,
            server: None,
            envdb: None,
            owner: None,
            owner_pending: None,
            owner_url: String::new(),
            owner_logout: None,
            fence: None,
        }
    }

    /// Fences every step of this run (set before the first connection is handed out).
    pub(crate) fn with_fence(mut self, fence: Option<Arc<Fence>>) -> Self {
        self.fence = fence;
        self
    }

    fn fenced(&self, mut conn: PooledConn<'a>, side: Side) -> Result<PooledConn<'a>, ExecError> {
        if let Some(fence) = &self.fence {
            conn.set_fence("take the environment's fence", fence.clone(), side)?;
        }
        Ok(conn)
    }

    /// A connection to the environment's server: the pooled database for a shared
    /// environment (roles are server-wide), the maintenance database for a dedicated one.
    pub(crate) fn server(&mut self) -> Result<&mut PooledConn<'a>, ExecError> {
        if self.server.is_none() {
            let conn = self.pool.get(&self.server_url)?;
            self.server = Some(self.fenced(conn, Side::Admin)?);
        }
        self.server
            .as_mut()
            .ok_or_else(|| ExecError::Unreachable("no server connection".to_owned()))
    }

    /// A connection to the database the environment's schema lives in.
    pub(crate) fn envdb(&mut self) -> Result<&mut PooledConn<'a>, ExecError> {
        if self.envdb_url == self.server_url {
            return self.server();
        }
        if self.envdb.is_none() {
            let conn = self.pool.get(&self.envdb_url)?;
            self.envdb = Some(self.fenced(conn, Side::Admin)?);
        }
        self.envdb
            .as_mut()
            .ok_or_else(|| ExecError::Unreachable("no database connection".to_owned()))
    }

    /// Lets the environment's owner role log in and starts connecting as it, in the background,
    /// for the baseline migrations (see [`Session::owner`]); first runs `prepare_sql` (the
    /// admin's checks) on the environment's database and `login_sql(password)` on the server.
    /// Started early (after the schema step), the connection is ready by the first migration.
    pub(crate) fn start_owner(
        &mut self,
        step: &str,
        owner_role: &str,
        prepare_sql: &str,
        login_sql: &dyn Fn(&str) -> Result<String, ExecError>,
        logout_sql: String,
    ) -> Result<(), ExecError> {
        if self.owner.is_some() || self.owner_pending.is_some() {
            return Ok(());
        }
        let password = hex::encode(rand::random::<[u8; 24]>());
        let login = login_sql(&password)?;
        self.owner_logout = Some(logout_sql);
        if self.envdb_url == self.server_url {
            // One round trip: the environment's database is the server connection's.
            self.server()?
                .batch_retrying(step, &format!("{prepare_sql}{login}"))?;
        } else {
            self.envdb()?.batch_retrying(step, prepare_sql)?;
            self.server()?.batch_retrying(step, &login)?;
        }
        let url = sql::with_user(&self.envdb_url, owner_role, &password)?;
        self.owner_url = url.clone();
        self.owner_pending = Some(std::thread::spawn(move || {
            let mut conn = super::pool::establish(&url)?;
            // A new backend's first DDL pays for loading the catalogs it touches and the PL/pgSQL
            // library: paid here, in the background, rather than by the first migration.
            diesel::connection::SimpleConnection::batch_execute(&mut conn, OWNER_WARM_UP)
                .map_err(|e| sql::query_error("warm up", &sql::target_of(&url), &e))?;
            Ok(conn)
        }));
        Ok(())
    }

    /// The session that logged in as the environment's owner role, for the baseline migrations
    /// (after [`Session::start_owner`]). Tenant code a migration reaches (a trigger on a table
    /// the tenant made first, a function that resolves ahead of a built-in, a deferred trigger
    /// that fires at COMMIT) runs as that role at most: the session's own user is not the
    /// admin, so there is nothing to `RESET ROLE` back to. Never pooled (tenant code could leave
    /// prepared statements or session state in it).
    pub(crate) fn owner(&mut self) -> Result<&mut PooledConn<'a>, ExecError> {
        if self.owner.is_none() {
            let pending = self.owner_pending.take().ok_or_else(|| {
                ExecError::Unreachable("the owner role's session was not started".to_owned())
            })?;
            let conn = pending.join().map_err(|_| {
                ExecError::Unreachable("connecting as the owner role panicked".to_owned())
            })??;
            let mut conn = self.pool.wrap(&self.owner_url, conn);
            conn.never_reuse();
            self.owner = Some(self.fenced(conn, Side::Owner)?);
        }
        self.owner
            .as_mut()
            .ok_or_else(|| ExecError::Unreachable("no owner session".to_owned()))
    }

    /// Ends the owner session and takes the owner role's login away again (also after a failed
    /// step; a crash before this leaves `LOGIN` on the role, which the next plan shows as drift
    /// and repairs, and a password that expires ten minutes after it was set).
    pub(crate) fn close_owner(&mut self) -> Result<(), ExecError> {
        if let Some(pending) = self.owner_pending.take() {
            // Connected or not, it is ended with the login below.
            drop(pending.join());
        }
        if let Some(conn) = self.owner.take() {
            conn.close();
        }
        match self.owner_logout.take() {
            // Tenant code running as the owner could have set a password of its own and
            // logged in from outside: its sessions end here too.
            // Fenced like every step: a worker whose lease was taken over must not end the
            // owner sessions of the run that holds it now (that run logs the owner out itself;
            // the one-time password expires after ten minutes anyway).
            Some(sql) => self
                .server()?
                .batch_retrying("end the owner role's login", &sql),
            None => Ok(()),
        }
    }

    /// An admin connection to another database of the environment's server.
    pub(crate) fn in_database(&self, database: &str) -> Result<PooledConn<'a>, ExecError> {
        self.pool
            .get(&sql::with_database(&self.server_url, database)?)
    }

    /// Closes every connection to the environment's database (before it is dropped).
    pub(crate) fn forget_envdb(&mut self) {
        if let Some(conn) = self.envdb.take() {
            conn.close();
        }
        if let Some(conn) = self.owner.take() {
            conn.close();
        }
        self.pool.evict(&self.envdb_url);
    }
}
