//! Baseline migrations: each runs once, in one transaction with its record in the admin-only
//! `bulkhead_meta.baseline`, as the environment's owner role.
//!
//! Where the migration runs depends on whether tenant code could be waiting for it:
//! - on an environment's first apply the plan creates its schema, and no tenant role can reach
//!   it before the baseline ran (the app role gets USAGE and CREATE on it last, and its
//!   credentials are handed out once the environment is ready): the migration runs in the
//!   admin's session under `SET LOCAL ROLE <owner>`;
//! - on every later apply (re-apply, new blueprint version, repair) the tenant may have made
//!   objects a migration meets (a table with a trigger under a name the migration uses, a
//!   function that resolves ahead of a built-in, a deferred trigger that fires at COMMIT): the
//!   migration runs in a session that logged in as the owner role, so such code runs as that
//!   role at most and has no admin to `RESET ROLE` back to.

use super::ExecError;
use super::actions::Context;
use super::meta;
use super::postgres::Session;
use super::sql::{ident, literal, password_verifier};
use bulkhead_core::plan::{self, BASELINE_TABLE, META_SCHEMA, Resource};

pub(crate) fn apply(
    session: &mut Session<'_>,
    ctx: &Context<'_>,
    step: &str,
    resource: &Resource,
    id: &str,
) -> Result<(), ExecError> {
    let Some(migration) = ctx.spec.blueprint.baseline.iter().find(|m| m.id == id) else {
        return Err(ExecError::StalePlan(format!(
            "baseline migration {id} is not in blueprint {}; re-plan",
            ctx.spec.blueprint.key()
        )));
    };
    let checksum = plan::sha256_hex(migration.sql.as_bytes());
    if resource.attr_str("checksum") != Some(checksum.as_str()) {
        return Err(ExecError::StalePlan(format!(
            "baseline migration {id} of blueprint {} changed since the plan was made; re-plan",
            ctx.spec.blueprint.key()
        )));
    }
    let schema = ident(&ctx.names.schema)?;
    if ctx.fresh_schema {
        return apply_fresh(session, ctx, step, id, &checksum, &migration.sql);
    }
    start_owner(session, ctx, step)?;
    // The migration and its record commit together, in a session that logged in as the owner
    // role: whatever tenant code the migration reaches, before or at COMMIT, runs as that role
    // at most. The record comes first, so a concurrent attempt waits on it and then finds the
    // migration applied.
    let sql = format!(
        "SET LOCAL search_path = {schema}, pg_temp;\n\
         SELECT {}.record_baseline({}, {}, {});\n\
         {}\n;\n",
        ident(META_SCHEMA)?,
        literal(&ctx.names.schema)?,
        literal(id)?,
        literal(&checksum)?,
        migration.sql
    );
    let conn = session.owner()?;
    conn.fenced(step, |c, fence| {
        record_and_migrate(c, &format!("{fence}{sql}"))
    })
}

/// Makes a baseline index again that was dropped behind Bulkhead's back (a repair), the
/// statement as the blueprint wrote it with `IF NOT EXISTS`, in the owner's login session as a
/// later migration runs (tenant code the statement meets runs as the owner role at most).
pub(crate) fn restore_index(
    session: &mut Session<'_>,
    ctx: &Context<'_>,
    step: &str,
    name: &str,
) -> Result<(), ExecError> {
    let statement = bulkhead_core::indexes::of_blueprint(&ctx.spec.blueprint)
        .into_iter()
        .find(|index| index.name == name)
        .and_then(|index| bulkhead_core::indexes::restore_statement(&index))
        .ok_or_else(|| {
            ExecError::StalePlan(format!(
                "index {name} is not made by blueprint {}'s baseline; re-plan",
                ctx.spec.blueprint.key()
            ))
        })?;
    start_owner(session, ctx, step)?;
    // `IF NOT EXISTS` also skips when another relation (a tenant's table, say) holds the
    // name: the step then fails, saying so, instead of reporting the index made.
    let missing = format!(
        "{name} was not made: another relation in the schema has its name; rename or drop it"
    );
    let sql = format!(
        "SET LOCAL search_path = {schema}, pg_temp;\n{statement};\n\
         DO $bk$BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_indexes WHERE schemaname = {schema_name} \
         AND indexname = {index_name}) THEN RAISE EXCEPTION '%', {missing}; END IF; END$bk$;\n",
        schema = ident(&ctx.names.schema)?,
        schema_name = literal(&ctx.names.schema)?,
        index_name = literal(name)?,
        missing = literal(&missing)?,
    );
    let conn = session.owner()?;
    conn.fenced(step, |c, fence| {
        diesel::Connection::transaction(c, |c| {
            diesel::connection::SimpleConnection::batch_execute(c, &format!("{fence}{sql}"))
        })
    })
}

/// The first apply's path: in the admin's session, the record first (a concurrent attempt
/// waits on it, then finds the migration applied), then the migration as the owner role.
fn apply_fresh(
    session: &mut Session<'_>,
    ctx: &Context<'_>,
    step: &str,
    id: &str,
    checksum: &str,
    migration: &str,
) -> Result<(), ExecError> {
    let sql = format!(
        "{ensure}INSERT INTO {meta}.{table} (schema_name, id, checksum) VALUES ({schema_name}, {id}, {checksum});\n\
         SET LOCAL ROLE {owner};\n\
         SET LOCAL search_path = {schema}, pg_temp;\n\
         {migration}\n;\n",
        ensure = meta::ensure_sql()?,
        meta = ident(META_SCHEMA)?,
        table = ident(BASELINE_TABLE)?,
        schema_name = literal(&ctx.names.schema)?,
        id = literal(id)?,
        checksum = literal(checksum)?,
        owner = ident(&ctx.names.owner_role)?,
        schema = ident(&ctx.names.schema)?,
    );
    session.envdb()?.fenced(step, |c, fence| {
        record_and_migrate(c, &format!("{fence}{sql}"))
    })
}

/// Runs the record and the migration in one transaction; a record that exists already (a
/// concurrent or earlier attempt applied the migration) counts as done, matched on the error's
/// code and constraint, not its text, which tenant code could raise.
fn record_and_migrate(c: &mut diesel::PgConnection, sql: &str) -> diesel::QueryResult<()> {
    match diesel::Connection::transaction(c, |c| {
        diesel::connection::SimpleConnection::batch_execute(c, sql)
    }) {
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            info,
        )) if info.constraint_name() == Some("baseline_pkey")
            && info.table_name() == Some(BASELINE_TABLE) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Once per run, in the admin's sessions: the bookkeeping exists, the schema is the owner's,
/// the owner may record its migrations and (pooled database) connect; then the owner role may
/// log in, with a one-time password, until the baseline steps end, and a session as it starts
/// connecting. Then it may not log in, and its sessions are ended (tenant code running as the
/// owner could have set a password of its own and logged in from outside).
pub(crate) fn start_owner(
    session: &mut Session<'_>,
    ctx: &Context<'_>,
    step: &str,
) -> Result<(), ExecError> {
    let owner = ident(&ctx.names.owner_role)?;
    let mut prepare = meta::ensure_sql()?;
    prepare.push_str(&meta::expect_owner(
        "schema",
        &ctx.names.schema,
        &[&ctx.names.owner_role],
    )?);
    prepare.push_str(&meta::grant_record_sql(&ctx.names.owner_role)?);
    let database = ident(&ctx.names.database)?;
    let pooled = !ctx.dedicated;
    let login_sql = |password: &str| -> Result<String, ExecError> {
        let secret = password_verifier(password)?;
        let mut sql = String::new();
        if pooled {
            // Kept: the role may not log in outside its migrations, and a grant made once does
            // not churn the pooled database's ACL row at every apply.
            sql.push_str(&format!(
                "DO $bk$BEGIN IF NOT pg_catalog.has_database_privilege({}, {}, 'CONNECT') THEN \
                 GRANT CONNECT ON DATABASE {database} TO {owner}; END IF; END$bk$;\n",
                literal(&ctx.names.owner_role)?,
                literal(&ctx.names.database)?
            ));
        }
        // This run holds the environment's fence now: any session of the owner role is left
        // over from an older lease (or from tenant code that logged in as it) and would hold
        // the role's only connection.
        sql.push_str(&format!(
            "SELECT pg_catalog.pg_terminate_backend(pid, 5000) FROM pg_catalog.pg_stat_activity \
             WHERE usename = {} AND pid <> pg_catalog.pg_backend_pid();\n",
            literal(&ctx.names.owner_role)?
        ));
        sql.push_str(&format!(
            "ALTER ROLE {owner} WITH LOGIN PASSWORD {secret} VALID UNTIL {};\n",
            literal(&(chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339())?
        ));
        Ok(sql)
    };
    let logout = format!(
        "ALTER ROLE {owner} WITH NOLOGIN PASSWORD NULL VALID UNTIL 'infinity';\n\
         SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
         WHERE usename = {} AND pid <> pg_catalog.pg_backend_pid();\n",
        literal(&ctx.names.owner_role)?
    );
    session.start_owner(step, &ctx.names.owner_role, &prepare, &login_sql, logout)
}
