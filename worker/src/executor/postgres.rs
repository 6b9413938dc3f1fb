//! The PostgreSQL executor: environments as schemas in a pooled database (shared) or as
//! databases of their own (dedicated), each with an owner role and an app role.
//!
//! One run (plan, apply, verify) reuses cached admin connections: on the pooled database for a
//! shared environment, on the maintenance database plus the environment's own database for a
//! dedicated one. The catalogs are read in two or three queries; each action is one round trip.

use super::actions::{self, Context};
use super::lockdown::{LOCK_DOWN_ALL, canary_lockdown, ensure_databases, lock_sql};
use super::pool::{ConnPool, PooledConn};
use super::probes;
pub(crate) use super::session::Session;
use super::sql::{self, ident};
use super::{ConnectionInfo, Endpoint, ExecError, GuaranteeCheck, StepAbort, Targets};
use bulkhead_core::domain::Isolation;
use bulkhead_core::plan::{self, EnvNames, EnvironmentSpec, Plan, PlanAction, Resource};
use diesel::sql_types::{BigInt, Text};
use diesel::{QueryableByName, RunQueryDsl};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// The schema, in the pooled database, holding the table the data probe tries to read.
pub const CANARY_SCHEMA: &str = "bk_canary";

/// Provisions, inspects, destroys and probes environments on PostgreSQL servers.
pub struct PostgresExecutor {
    targets: Targets,
    pub(super) pool: ConnPool,
    prepared: Mutex<bool>,
    spares: usize,
    refills: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// A spare was used and not yet replaced: replaced after the run's verification (or at the
    /// next plan), so the copy does not compete with the run it would slow down.
    refill_pending: AtomicBool,
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

impl PostgresExecutor {
    pub fn new(targets: Targets) -> Self {
        Self {
            targets,
            pool: ConnPool::default(),
            prepared: Mutex::new(false),
            spares: 0,
            refills: Mutex::new(Vec::new()),
            refill_pending: AtomicBool::new(false),
        }
    }

    /// Keeps `count` (at most 16) spare databases ready on the dedicated server, closed to
    /// connections, and makes a dedicated environment's database by renaming one instead of
    /// copying a template (milliseconds instead of tens to hundreds). Spares are made in the
    /// background by `prepare` and after each apply that used one; `drop_prepared` removes them.
    pub fn with_spare_databases(mut self, count: usize) -> Self {
        self.spares = count.min(16);
        self
    }

    /// Name prefix of this deployment's spare databases.
    pub fn spare_prefix(&self) -> String {
        let digest = plan::sha256_hex(self.targets.pooled_database.as_bytes());
        format!("bk_spare_{}_", &digest[..12])
    }

    /// Tops the spares up in a background thread (no-op without spares).
    fn refill_spares(&self) {
        if self.spares == 0 {
            return;
        }
        let (url, prefix, count) = (
            self.targets.dedicated_admin_url.clone(),
            self.spare_prefix(),
            self.spares,
        );
        let handle = std::thread::spawn(move || {
            if let Err(error) = super::spares::make(&url, &prefix, count) {
                tracing::warn!(%error, "could not make spare databases");
            }
        });
        let mut refills = self
            .refills
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        refills.retain(|h| !h.is_finished());
        refills.push(handle);
    }

    /// Starts the pending refill, if any, and waits for spare databases being made.
    pub fn wait_for_spares(&self) {
        self.refill_if_pending();
        self.join_refills();
    }

    fn refill_if_pending(&self) {
        if self.refill_pending.swap(false, Ordering::Relaxed) {
            self.refill_spares();
        }
    }

    fn join_refills(&self) {
        let handles: Vec<_> = self
            .refills
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
            .collect();
        for handle in handles {
            let _ = handle.join();
        }
    }

    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// The database the data probe tries to connect to; made by `prepare` on each server, named
    /// after the pooled database so several deployments (or tests) on one server do not clash.
    pub fn canary_database(&self) -> String {
        let digest = plan::sha256_hex(self.targets.pooled_database.as_bytes());
        format!("bk_canary_{}", &digest[..16])
    }

    /// Once per process (later calls return at once): the pooled database exists with the
    /// admin's bookkeeping schema, PUBLIC may neither connect to it nor use its schema `public`,
    /// PUBLIC may connect to no other database on either server that is not a tenant's (see
    /// [`LOCK_DOWN_ALL`]), and the canary objects the isolation
    /// probes need exist (a canary database on each server, a canary schema with a table in the
    /// pooled database). Safe to run concurrently from several workers.
    pub fn prepare(&self) -> Result<(), ExecError> {
        let mut prepared = self
            .prepared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *prepared {
            return Ok(());
        }
        let started = Instant::now();
        let pooled = self.targets.pooled_database.clone();
        let canary = self.canary_database();
        {
            let mut admin = self.pool.get(&self.targets.shared_admin_url)?;
            ensure_databases(&mut admin, &[&pooled, &canary])?;
            let mut sql = lock_sql(&pooled)?;
            sql.push_str(&format!(
                "REVOKE CONNECT, TEMPORARY ON DATABASE {0} FROM PUBLIC;\n\
                 ALTER DATABASE {0} ALLOW_CONNECTIONS true;\n",
                ident(&pooled)?
            ));
            sql.push_str(&canary_lockdown(&canary)?);
            admin.batch_retrying("lock down the pooled and canary databases", &sql)?;
            admin.batch_retrying(
                "revoke PUBLIC's CONNECT on every database not made for a tenant",
                LOCK_DOWN_ALL,
            )?;
        }
        {
            let mut conn = self.pool.get(&self.pooled_url()?)?;
            let schema = ident(CANARY_SCHEMA)?;
            let sql = format!(
                "REVOKE ALL ON SCHEMA public FROM PUBLIC;\n\
                 REVOKE EXECUTE ON FUNCTION pg_catalog.lo_creat(integer), pg_catalog.lo_create(oid), \
                   pg_catalog.lo_from_bytea(oid, bytea), pg_catalog.lo_import(text), \
                   pg_catalog.lo_import(text, oid) FROM PUBLIC;\n\
                 CREATE SCHEMA IF NOT EXISTS {schema};\n\
                 REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;\n\
                 COMMENT ON SCHEMA {schema} IS 'Bulkhead isolation canary: no tenant may read it';\n\
                 CREATE TABLE IF NOT EXISTS {schema}.secret (id integer PRIMARY KEY, note text NOT NULL);\n\
                 INSERT INTO {schema}.secret VALUES (1, 'a tenant must never read this') ON CONFLICT DO NOTHING;\n\
                 DO $bk$DECLARE n record; BEGIN\n\
                   FOR n IN SELECT nspname FROM pg_catalog.pg_namespace ns JOIN pg_catalog.pg_description d\n\
                              ON d.objoid = ns.oid AND d.classoid = 'pg_catalog.pg_namespace'::pg_catalog.regclass\n\
                            WHERE nspname ~ '^bk_[0-9a-f]{{32}}$' LOOP\n\
                     EXECUTE pg_catalog.format('COMMENT ON SCHEMA %I IS NULL', n.nspname);\n\
                   END LOOP; END$bk$;\n\
                 {meta}",
                meta = super::meta::ensure_sql()?
            );
            // No advisory lock here: tenants can connect to the pooled database and could hold
            // the key. A worker that loses the race to another one preparing tries again.
            conn.batch_retrying("prepare the pooled database", &sql)?;
            conn.make_durable()?;
        }
        if !self.same_server() {
            let mut admin = self.pool.get(&self.targets.dedicated_admin_url)?;
            ensure_databases(&mut admin, &[&canary])?;
            admin.batch_retrying("lock down the canary database", &canary_lockdown(&canary)?)?;
            admin.batch_retrying(
                "revoke PUBLIC's CONNECT on every database not made for a tenant",
                LOCK_DOWN_ALL,
            )?;
        }
        *prepared = true;
        self.refill_spares();
        tracing::info!(
            pooled_database = %pooled,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "postgres executor prepared"
        );
        Ok(())
    }

    /// Undoes `prepare`: drops the canary databases and the pooled database. For tests and
    /// decommissioning; refuses while any environment schema is left in the pooled database.
    pub fn drop_prepared(&self) -> Result<(), ExecError> {
        let mut prepared = self
            .prepared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.join_refills();
        let pooled = self.targets.pooled_database.clone();
        let canary = self.canary_database();
        {
            let mut admin = self.pool.get(&self.targets.shared_admin_url)?;
            let exists = admin.run("find the pooled database", |c| {
                diesel::sql_query(
                    "SELECT datname::text AS name FROM pg_database WHERE datname = $1",
                )
                .bind::<Text, _>(&pooled)
                .load::<Name>(c)
            })?;
            if !exists.is_empty() {
                let mut conn = self.pool.get(&self.pooled_url()?)?;
                let left = conn.run("count environments", |c| {
                    diesel::sql_query(
                        "SELECT count(*) AS count FROM pg_namespace WHERE nspname ~ '^bk_[0-9a-f]{32}$'",
                    )
                    .get_result::<Count>(c)
                })?;
                conn.close();
                if left.count > 0 {
                    return Err(ExecError::Target {
                        step: "drop the pooled database".to_owned(),
                        target: sql::target_of(&self.pooled_url()?),
                        reason: format!(
                            "{} environments still live in it; destroy them first",
                            left.count
                        ),
                    });
                }
            }
        }
        self.pool.clear();
        let mut admin = self.pool.get(&self.targets.shared_admin_url)?;
        for database in [&canary, &pooled] {
            let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(database)?);
            admin.run("drop a prepared database", |c| {
                diesel::sql_query(&drop).execute(c)
            })?;
        }
        drop(admin);
        let mut dedicated = self.pool.get(&self.targets.dedicated_admin_url)?;
        if !self.same_server() {
            let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(&canary)?);
            dedicated.run("drop the canary database", |c| {
                diesel::sql_query(&drop).execute(c)
            })?;
        }
        let spares = dedicated.run("list spare databases", |c| {
            diesel::sql_query(
                "SELECT datname::text AS name FROM pg_database WHERE left(datname, length($1)) = $1",
            )
            .bind::<Text, _>(self.spare_prefix())
            .load::<Name>(c)
        })?;
        for spare in spares {
            let drop = format!("DROP DATABASE IF EXISTS {}", ident(&spare.name)?);
            dedicated.run("drop a spare database", |c| {
                diesel::sql_query(&drop).execute(c)
            })?;
        }
        drop(dedicated);
        self.pool.clear();
        *prepared = false;
        Ok(())
    }

    pub fn names(&self, spec: &EnvironmentSpec) -> EnvNames {
        plan::names(spec.id, spec.isolation, &self.targets.pooled_database)
    }

    /// The environment's resources as the target has them.
    pub fn read_actual(&self, spec: &EnvironmentSpec) -> Result<Vec<Resource>, ExecError> {
        self.prepare()?;
        let names = self.names(spec);
        let mut session = self.session(spec, &names)?;
        read_actual_in(&mut session, spec, &names)
    }

    /// What `apply` would do now to reach the spec.
    pub fn plan(&self, spec: &EnvironmentSpec) -> Result<Plan, ExecError> {
        self.refill_if_pending();
        let actual = self.read_actual(spec)?;
        Ok(plan::diff(&plan::desired(spec, &self.names(spec)), &actual))
    }

    /// What `apply` would do now to remove the environment.
    pub fn destroy_plan(&self, spec: &EnvironmentSpec) -> Result<Plan, ExecError> {
        Ok(plan::teardown(&self.read_actual(spec)?))
    }

    /// Executes `plan`, refusing it when the target changed since it was made. `on_step` runs
    /// after each action; returning `Err(StepAbort)` stops before the next one. Every action
    /// converges, so after a stop or crash a new plan picks up where this one ended.
    pub fn apply(
        &self,
        spec: &EnvironmentSpec,
        plan: &Plan,
        app_password: &str,
        on_step: &mut dyn FnMut(&PlanAction) -> Result<(), StepAbort>,
    ) -> Result<(), ExecError> {
        self.apply_fenced(spec, plan, app_password, None, on_step)
    }

    /// [`apply`](Self::apply) under a job's lease: every step takes the environment's fence on
    /// the target first (see `fence`), so a worker whose lease was taken over changes nothing
    /// more, even with a statement already sent.
    pub fn apply_fenced(
        &self,
        spec: &EnvironmentSpec,
        plan: &Plan,
        app_password: &str,
        fence: Option<std::sync::Arc<super::Fence>>,
        on_step: &mut dyn FnMut(&PlanAction) -> Result<(), StepAbort>,
    ) -> Result<(), ExecError> {
        if plan.hash != plan.recompute_hash() {
            return Err(ExecError::StalePlan(
                "the plan's hash does not match its actions; make a new plan".to_owned(),
            ));
        }
        self.prepare()?;
        let names = self.names(spec);
        let mut session = self.session(spec, &names)?.with_fence(fence);
        let actual = read_actual_in(&mut session, spec, &names)?;
        let now = plan::fingerprint(&actual);
        if now != plan.actual_fingerprint {
            return Err(ExecError::StalePlan(format!(
                "the target changed since the plan was made (state {} is now {}); re-plan",
                &plan.actual_fingerprint[..plan.actual_fingerprint.len().min(12)],
                &now[..12]
            )));
        }
        let ctx = Context {
            spec,
            names: &names,
            dedicated: spec.isolation == Isolation::Dedicated,
            app_password,
            spare_prefix: (self.spares > 0).then(|| self.spare_prefix()),
            fresh_schema: brand_new(plan, &names, spec.isolation),
        };
        // On a first apply the migrations run in the admin's session (see `baseline`).
        let migrates = !ctx.fresh_schema
            && plan
                .actions
                .iter()
                .any(|a| a.kind == plan::KIND_BASELINE && a.op == plan::Op::Create);
        // The owner's session for the migrations connects in the background once nothing
        // before the first migration changes the owner role or the database any more (an
        // update of the role would take its login away again), while the admin's other steps
        // run.
        let first_migration = plan
            .actions
            .iter()
            .position(|a| a.kind == plan::KIND_BASELINE);
        let start_owner_at = first_migration.filter(|_| migrates).map(|first| {
            plan.actions[..first]
                .iter()
                .rposition(|a| {
                    (a.kind == plan::KIND_ROLE && a.name == names.owner_role)
                        || a.kind == plan::KIND_DATABASE
                })
                .map_or(0, |last| last + 1)
        });
        let mut run = || -> Result<(), ExecError> {
            let mut after_baseline = false;
            for (index, action) in plan.actions.iter().enumerate() {
                let started = Instant::now();
                // Baseline migrations and restored baseline indexes run in the owner's session.
                let as_owner =
                    action.kind == plan::KIND_BASELINE || action.kind == plan::KIND_INDEX;
                if after_baseline && !as_owner {
                    session.close_owner()?;
                }
                if start_owner_at == Some(index) {
                    super::baseline::start_owner(&mut session, &ctx, &action.headline())?;
                }
                actions::execute(&mut session, &ctx, action)?;
                after_baseline = as_owner;
                tracing::debug!(
                    environment_id = %spec.id,
                    step = %action.headline(),
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "applied"
                );
                on_step(action).map_err(|StepAbort| ExecError::Aborted)?;
            }
            Ok(())
        };
        let ran = run();
        // The owner role may log in only while its migrations run, whatever happened.
        let closed = session.close_owner();
        ran?;
        closed?;
        if !plan.actions.is_empty() {
            session.server()?.make_durable()?;
        }
        if plan
            .actions
            .iter()
            .any(|a| a.op == plan::Op::Create && a.kind == plan::KIND_DATABASE)
        {
            self.refill_pending.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Probes the environment's isolation as its app role, over TCP, with its password.
    pub fn verify_isolation(
        &self,
        spec: &EnvironmentSpec,
        app_password: &str,
    ) -> Result<Vec<GuaranteeCheck>, ExecError> {
        self.prepare()?;
        let names = self.names(spec);
        let checks = probes::verify(self, spec, &names, app_password);
        self.refill_if_pending();
        checks
    }

    /// Sets a new password on the environment's app role (rotation).
    pub fn set_app_password(
        &self,
        spec: &EnvironmentSpec,
        app_password: &str,
    ) -> Result<(), ExecError> {
        let names = self.names(spec);
        let secret = sql::password_verifier(app_password)?;
        let sql = format!("ALTER ROLE {} PASSWORD {secret}", ident(&names.app_role)?);
        let mut session = self.session(spec, &names)?;
        session.server()?.run("set the app role's password", |c| {
            diesel::sql_query(&sql).execute(c)
        })?;
        Ok(())
    }

    pub fn connection_info(&self, spec: &EnvironmentSpec) -> ConnectionInfo {
        let names = self.names(spec);
        let endpoint = self.endpoint(spec.isolation);
        ConnectionInfo {
            host: endpoint.host.clone(),
            port: endpoint.port,
            database: names.database,
            schema: names.schema,
            username: names.app_role,
        }
    }

    pub(crate) fn endpoint(&self, isolation: Isolation) -> &Endpoint {
        match isolation {
            Isolation::Shared => &self.targets.shared_endpoint,
            Isolation::Dedicated => &self.targets.dedicated_endpoint,
        }
    }

    /// An admin connection to the pooled database (the isolation probes' listener).
    pub(crate) fn pooled_admin(&self) -> Result<PooledConn<'_>, ExecError> {
        self.pool.get(&self.pooled_url()?)
    }

    pub(super) fn pooled_url(&self) -> Result<String, ExecError> {
        sql::with_database(
            &self.targets.shared_admin_url,
            &self.targets.pooled_database,
        )
    }

    /// Whether both tiers' admin URLs reach the same server as the same user (a URL that does
    /// not parse is a server of its own).
    pub(crate) fn same_server(&self) -> bool {
        matches!(
            (
                sql::with_database(&self.targets.shared_admin_url, "x"),
                sql::with_database(&self.targets.dedicated_admin_url, "x"),
            ),
            (Ok(shared), Ok(dedicated)) if shared == dedicated
        )
    }

    pub(super) fn session(
        &self,
        spec: &EnvironmentSpec,
        names: &EnvNames,
    ) -> Result<Session<'_>, ExecError> {
        let (server_url, envdb_url) = match spec.isolation {
            Isolation::Shared => (self.pooled_url()?, self.pooled_url()?),
            Isolation::Dedicated => (
                self.targets.dedicated_admin_url.clone(),
                sql::with_database(&self.targets.dedicated_admin_url, &names.database)?,
            ),
        };
        Ok(Session::new(&self.pool, server_url, envdb_url))
    }
}

/// Whether the plan makes the environment from nothing: both roles, the schema and (dedicated)
/// the database are all created by it. Only then has no tenant code had a chance to prepare
/// anything its migrations meet: a schema re-made by a repair gets the owner role's default
/// privileges, which code that once ran as that role may have set.
fn brand_new(plan: &Plan, names: &EnvNames, isolation: Isolation) -> bool {
    let created = |kind: &str, name: &str| {
        plan.actions
            .iter()
            .any(|a| a.kind == kind && a.name == name && a.op == plan::Op::Create)
    };
    created(plan::KIND_ROLE, &names.owner_role)
        && created(plan::KIND_ROLE, &names.app_role)
        && created(plan::KIND_SCHEMA, &names.schema)
        && (isolation == Isolation::Shared || created(plan::KIND_DATABASE, &names.database))
}

fn read_actual_in(
    session: &mut Session<'_>,
    spec: &EnvironmentSpec,
    names: &EnvNames,
) -> Result<Vec<Resource>, ExecError> {
    let dedicated = spec.isolation == Isolation::Dedicated;
    let mut actual = Vec::new();
    let database_exists =
        super::catalog::read_server(session.server()?, names, dedicated, &mut actual)?;
    if database_exists {
        let indexes = plan::index_resources(spec, names);
        super::catalog::read_database(session.envdb()?, names, dedicated, &indexes, &mut actual)?;
    }
    Ok(actual)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn executor_can_be_shared_across_threads() {
        assert_send_sync::<PostgresExecutor>();
    }
}
