//! Executes one plan action. Every action converges: it brings its object to the desired state
//! whatever state it finds (`IF NOT EXISTS`, guards, revoke-then-grant), so running it twice, or
//! after a crash half-way, ends in the same place. The statements of one action go in one round
//! trip, which PostgreSQL runs as one transaction; `CREATE DATABASE` / `DROP DATABASE` run alone.
//!
//! Identifiers always come from the environment's [`EnvNames`], never from the plan's
//! attributes; attributes only supply values (limits, privileges from a fixed list, settings
//! from a fixed list, tags), and are quoted.

use super::ExecError;
use super::meta;
use super::postgres::Session;
use super::sql::{ident, literal, password_verifier};
use bulkhead_core::plan::{
    self, BASELINE_TABLE, EnvNames, EnvironmentSpec, KIND_BASELINE, KIND_DATABASE, KIND_GRANT,
    KIND_INDEX, KIND_ROLE, KIND_SCHEMA, META_SCHEMA, Op, PlanAction, Resource,
};
use serde_json::Value;
use std::collections::BTreeSet;

/// What every action needs besides the action itself.
pub(crate) struct Context<'a> {
    pub spec: &'a EnvironmentSpec,
    pub names: &'a EnvNames,
    pub dedicated: bool,
    pub app_password: &'a str,
    /// Name prefix of ready-made spare databases to claim, when the executor keeps some.
    pub spare_prefix: Option<String>,
    /// The plan makes the environment from nothing (roles, schema, database): no tenant code
    /// can have prepared anything for its migrations (see `baseline`).
    pub fresh_schema: bool,
}

pub(crate) fn execute(
    session: &mut Session<'_>,
    ctx: &Context<'_>,
    action: &PlanAction,
) -> Result<(), ExecError> {
    guard(ctx, action)?;
    let step = action.headline();
    let resource = match (action.op, &action.desired, &action.actual) {
        (Op::Delete, _, Some(actual)) => actual,
        (Op::Create | Op::Update, Some(desired), _) => desired,
        _ => return Err(refused(&step, "the action lacks the resource it acts on")),
    };
    match (action.kind.as_str(), action.op) {
        (KIND_ROLE, Op::Create | Op::Update) => {
            ensure_role(session, ctx, &step, resource, action.op)
        }
        (KIND_ROLE, Op::Delete) => drop_role(session, ctx, &step, &action.name),
        (KIND_DATABASE, Op::Create | Op::Update) => {
            ensure_database(session, ctx, &step, resource, action.op)
        }
        (KIND_DATABASE, Op::Delete) => drop_database(session, ctx, &step),
        (KIND_SCHEMA, Op::Create | Op::Update) => ensure_schema(session, ctx, &step, resource),
        (KIND_SCHEMA, Op::Delete) => drop_schema(session, ctx, &step),
        (KIND_GRANT, op) => super::grants::grant(session, ctx, &step, resource, op),
        (KIND_BASELINE, Op::Create) => {
            super::baseline::apply(session, ctx, &step, resource, &action.name)
        }
        (KIND_INDEX, Op::Create) => {
            super::baseline::restore_index(session, ctx, &step, &action.name)
        }
        (KIND_INDEX, _) => Err(refused(
            &step,
            "indexes a baseline migration made are forward-only: a changed one is a new \
             migration in a new blueprint version",
        )),
        (KIND_BASELINE, _) => Err(refused(
            &step,
            "baseline migrations are forward-only: an applied migration cannot be changed or \
             removed; add a new migration in a new blueprint version instead",
        )),
        (other, _) => Err(refused(&step, &format!("unknown resource kind {other:?}"))),
    }
}

pub(crate) fn refused(step: &str, reason: &str) -> ExecError {
    ExecError::Target {
        step: step.to_owned(),
        target: "(plan)".to_owned(),
        reason: reason.to_owned(),
    }
}

/// A plan may only touch the environment's own objects: its (kind, name) must be one the
/// environment would have.
fn guard(ctx: &Context<'_>, action: &PlanAction) -> Result<(), ExecError> {
    let own: BTreeSet<(String, String)> = plan::desired(ctx.spec, ctx.names)
        .into_iter()
        .map(|r| (r.kind, r.name))
        .collect();
    let is_own = own.contains(&(action.kind.clone(), action.name.clone()))
        || (action.kind == KIND_BASELINE
            && [&action.desired, &action.actual]
                .into_iter()
                .flatten()
                .all(|r| {
                    r.attr_str("schema") == Some(ctx.names.schema.as_str())
                        && r.attr_str("database") == Some(ctx.names.database.as_str())
                }));
    if is_own {
        Ok(())
    } else {
        Err(refused(
            &action.headline(),
            "the plan names an object this environment does not own; refusing to touch it",
        ))
    }
}

/// Runs `statement` only when role `role` exists.
pub(crate) fn if_role_exists(role: &str, statement: &str) -> Result<String, ExecError> {
    Ok(format!(
        "DO $bk$BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = {}) THEN EXECUTE {}; END IF; END$bk$;\n",
        literal(role)?,
        literal(statement)?
    ))
}

/// The comment an object gets: none. Catalog comments are readable by every role on the
/// server; a comment left by an earlier version (the tenant's cost tags) is removed.
fn comment(resource: &Resource) -> Result<&'static str, ExecError> {
    match resource.comment() {
        None | Some(Value::Null) => Ok("NULL"),
        Some(_) => Err(refused(
            &format!("{} {}", resource.kind, resource.name),
            "objects on the target carry no comment; the plan asks for one",
        )),
    }
}

fn int_attr(resource: &Resource, key: &str) -> Result<i64, ExecError> {
    resource
        .attributes
        .get(key)
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            refused(
                &format!("{} {}", resource.kind, resource.name),
                &format!("attribute {key} must be an integer"),
            )
        })
}

/// The privileges listed in `key`, each checked against `allowed`, joined for GRANT.
pub(crate) fn privileges(
    resource: &Resource,
    key: &str,
    allowed: &[&str],
) -> Result<Vec<&'static str>, ExecError> {
    let listed = resource.attributes.get(key).and_then(Value::as_array);
    let mut out = Vec::new();
    for item in listed.into_iter().flatten() {
        let name = item.as_str().unwrap_or("");
        match allowed.iter().find(|a| **a == name) {
            Some(known) => out.push(static_privilege(known)),
            None => {
                return Err(refused(
                    &format!("{} {}", resource.kind, resource.name),
                    &format!(
                        "{key} lists {item}, which is not one of {}",
                        allowed.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(out)
}

fn static_privilege(name: &str) -> &'static str {
    const ALL: &[&str] = &[
        "CONNECT",
        "TEMPORARY",
        "CREATE",
        "USAGE",
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "TRUNCATE",
        "REFERENCES",
        "TRIGGER",
    ];
    ALL.iter().copied().find(|p| *p == name).unwrap_or("USAGE")
}

fn ensure_role(
    session: &mut Session<'_>,
    ctx: &Context<'_>,
    step: &str,
    resource: &Resource,
    op: Op,
) -> Result<(), ExecError> {
    let name = if resource.name == ctx.names.app_role {
        &ctx.names.app_role
    } else {
        &ctx.names.owner_role
    };
    let role = ident(name)?;
    let login = resource
        .attributes
        .get("login")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let limit = int_attr(resource, "connection_limit")?;
    let mut sql = format!(
        "DO $bk$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {}) THEN CREATE ROLE {role}; END IF; END$bk$;\n",
        literal(name)?
    );
    sql.push_str(&format!(
        "ALTER ROLE {role} WITH NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT {} CONNECTION LIMIT {limit}",
        if login { "LOGIN" } else { "NOLOGIN" }
    ));
    if !login {
        // A role that may not log in has no password either (a crashed run may have left the
        // owner's one-time password behind).
        sql.push_str(" PASSWORD NULL VALID UNTIL 'infinity'");
    } else if op == Op::Create {
        // The password is set when the role is made (or re-made after drift), never on update.
        let secret = password_verifier(ctx.app_password)?;
        sql.push_str(&format!(" PASSWORD {secret}"));
    }
    sql.push_str(";\n");
    sql.push_str(&format!("ALTER ROLE {role} RESET ALL;\n"));
    sql.push_str(&format!(
        "DO $bk$DECLARE d record; BEGIN FOR d IN SELECT b.datname FROM pg_catalog.pg_db_role_setting s \
         JOIN pg_catalog.pg_database b ON b.oid = s.setdatabase \
         WHERE s.setrole = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = {}) LOOP \
         EXECUTE pg_catalog.format('ALTER ROLE %I IN DATABASE %I RESET ALL', {}, d.datname); \
         END LOOP; END$bk$;\n",
        literal(name)?,
        literal(name)?
    ));
    let settings = resource
        .attributes
        .get("settings")
        .and_then(Value::as_object);
    for (key, value) in settings.into_iter().flatten() {
        let value = value.as_str().unwrap_or("");
        let set = match key.as_str() {
            "search_path" => ident(value)?,
            "statement_timeout"
            | "idle_in_transaction_session_timeout"
            | "lock_timeout"
            | "temp_file_limit"
            | "work_mem" => {
                let number: u64 = value.parse().map_err(|_| {
                    refused(
                        step,
                        &format!(
                            "setting {key} must be a whole number (milliseconds or kB), not {value:?}"
                        ),
                    )
                })?;
                number.to_string()
            }
            other => {
                return Err(refused(
                    step,
                    &format!("setting {other:?} is not managed by Bulkhead"),
                ));
            }
        };
        sql.push_str(&format!("ALTER ROLE {role} SET {key} = {set};\n"));
    }
    sql.push_str(&format!(
        "COMMENT ON ROLE {role} IS {};\n",
        comment(resource)?
    ));
    session.server()?.batch(step, &sql)
}

fn drop_role(
    session: &mut Session<'_>,
    ctx: &Context<'_>,
    step: &str,
    name: &str,
) -> Result<(), ExecError> {
    let name = if name == ctx.names.app_role {
        &ctx.names.app_role
    } else {
        &ctx.names.owner_role
    };
    // A session of another role can hold a lock on this role for as long as it likes (a GRANT
    // to it in an open transaction): it would stall the DROP, so it is ended.
    session.server()?.batch(
        step,
        &end_lockers("pg_authid", "pg_roles", "rolname", name)?,
    )?;
    // Another tenant may have granted this role privileges in its own database (it may grant
    // on what it owns to any role): DROP OWNED BY there first, or DROP ROLE would fail on them
    // and leave the environment half destroyed.
    #[derive(diesel::QueryableByName)]
    struct Database {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    let elsewhere = session.server()?.run(step, |c| {
        diesel::RunQueryDsl::load::<Database>(
            diesel::sql_query(
                "SELECT DISTINCT d.datname::text AS name FROM pg_catalog.pg_shdepend s \
                 JOIN pg_catalog.pg_database d ON d.oid = s.dbid \
                 JOIN pg_catalog.pg_roles r ON r.oid = s.refobjid \
                 WHERE s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass \
                   AND r.rolname = $1 AND d.datallowconn \
                   AND d.datname <> pg_catalog.current_database()",
            )
            .bind::<diesel::sql_types::Text, _>(name),
            c,
        )
    })?;
    for database in elsewhere {
        session.in_database(&database.name)?.batch_retrying(
            step,
            &if_role_exists(name, &format!("DROP OWNED BY {}", ident(name)?))?,
        )?;
    }
    // DROP OWNED BY revokes the role's CONNECT on the pooled database (its ACL row, which
    // concurrent steps change too: retried on a lost race).
    let mut sql = String::new();
    sql.push_str(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {} AND pid <> pg_backend_pid();\n",
        literal(name)?
    ));
    sql.push_str(&if_role_exists(
        name,
        &format!("DROP OWNED BY {}", ident(name)?),
    )?);
    sql.push_str(&format!("DROP ROLE IF EXISTS {};\n", ident(name)?));
    session.server()?.batch_retrying(step, &sql)
}

fn ensure_database(
    session: &mut Session<'_>,
    ctx: &Context<'_>,
    step: &str,
    resource: &Resource,
    op: Op,
) -> Result<(), ExecError> {
    let db = ident(&ctx.names.database)?;
    let owner = ident(&ctx.names.owner_role)?;
    let limit = int_attr(resource, "connection_limit")?;
    let claimed = op == Op::Create && super::spares::claim(session, ctx, step)?;
    if op == Op::Create && !claimed {
        // Outside any transaction: the fence just before (and the next step's just after).
        session.server()?.check_fence(step)?;
        // Closed until PUBLIC's default CONNECT is revoked below: no one else may get in first.
        let create = format!(
            "CREATE DATABASE {db} OWNER {owner} CONNECTION LIMIT {limit} ALLOW_CONNECTIONS false"
        );
        let server = session.server()?;
        match server.run(step, |c| {
            diesel::RunQueryDsl::execute(diesel::sql_query(&create), c)
        }) {
            Ok(_) => {}
            // Made by an earlier attempt whose result was lost: converge it below.
            Err(ExecError::Target { reason, .. }) if reason.contains("already exists") => {}
            Err(other) => return Err(other),
        }
    }
    let mut sql = meta::expect_owner("database", &ctx.names.database, &[&ctx.names.owner_role])?;
    sql.push_str(&format!("ALTER DATABASE {db} OWNER TO {owner};\n"));
    sql.push_str(&format!("ALTER DATABASE {db} CONNECTION LIMIT {limit};\n"));
    sql.push_str(&format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC;\n"));
    sql.push_str(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true;\n"));
    let public = privileges(
        resource,
        "public_privileges",
        &["CONNECT", "TEMPORARY", "CREATE"],
    )?;
    if !public.is_empty() {
        sql.push_str(&format!(
            "GRANT {} ON DATABASE {db} TO PUBLIC;\n",
            public.join(", ")
        ));
    }
    sql.push_str(&format!(
        "COMMENT ON DATABASE {db} IS {};\n",
        comment(resource)?
    ));
    session.server()?.batch_retrying(step, &sql)?;

    // Template-made databases let PUBLIC use schema public: take that away at once.
    let public_schema = privileges(resource, "public_schema_privileges", &["USAGE", "CREATE"])?;
    let mut inside = String::from(
        "DO $bk$BEGIN IF EXISTS (SELECT FROM pg_namespace WHERE nspname = 'public') THEN \
         REVOKE ALL ON SCHEMA public FROM PUBLIC; END IF; END$bk$;\n",
    );
    if !public_schema.is_empty() {
        inside.push_str(&format!(
            "GRANT {} ON SCHEMA public TO PUBLIC;\n",
            public_schema.join(", ")
        ));
    }
    // The admin's bookkeeping, before any tenant role may connect.
    inside.push_str(&meta::ensure_sql()?);
    session.envdb()?.batch_retrying(step, &inside)
}

/// Ends every other session holding a lock on the shared object `name` (a role or a database,
/// found in `catalog` by `name_column`; `class` is the catalog its locks name).
fn end_lockers(
    class: &str,
    catalog: &str,
    name_column: &str,
    name: &str,
) -> Result<String, ExecError> {
    Ok(format!(
        "SELECT pg_catalog.pg_terminate_backend(l.pid) FROM pg_catalog.pg_locks l \
         WHERE l.locktype = 'object' AND l.classid = 'pg_catalog.{class}'::pg_catalog.regclass \
           AND l.objid = (SELECT oid FROM pg_catalog.{catalog} WHERE {name_column} = {}) \
           AND l.pid <> pg_catalog.pg_backend_pid();\n",
        literal(name)?
    ))
}

fn drop_database(
    session: &mut Session<'_>,
    ctx: &Context<'_>,
    step: &str,
) -> Result<(), ExecError> {
    if !ctx.dedicated {
        return Err(refused(
            step,
            "a shared environment's database is the pooled one; it is never dropped",
        ));
    }
    session.forget_envdb();
    // WITH (FORCE) ends the sessions in the database; a session elsewhere can hold a lock on it
    // too (ALTER ROLE … IN DATABASE … in an open transaction) and is ended first.
    session.server()?.batch(
        step,
        &end_lockers("pg_database", "pg_database", "datname", &ctx.names.database)?,
    )?;
    let sql = format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        ident(&ctx.names.database)?
    );
    let server = session.server()?;
    server.run(step, |c| {
        diesel::RunQueryDsl::execute(diesel::sql_query(&sql), c)
    })?;
    // Outside any transaction: the fence was checked just before (above) and again after.
    server.check_fence(step)
}

fn ensure_schema(
    session: &mut Session<'_>,
    ctx: &Context<'_>,
    step: &str,
    resource: &Resource,
) -> Result<(), ExecError> {
    let schema = ident(&ctx.names.schema)?;
    let owner = ident(&ctx.names.owner_role)?;
    let mut sql = meta::expect_owner("schema", &ctx.names.schema, &[&ctx.names.owner_role])?;
    sql.push_str(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {owner};\n"
    ));
    sql.push_str(&format!("ALTER SCHEMA {schema} OWNER TO {owner};\n"));
    sql.push_str(&format!("REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;\n"));
    // No role but the environment's own holds anything on the schema: the owner role's default
    // privileges (ALTER DEFAULT PRIVILEGES … ON SCHEMAS, which code running as the owner could
    // set) do not carry grants to others into a re-made schema. The app role's share is the
    // grant step's.
    sql.push_str(&format!(
        "DO $bk$DECLARE g record; BEGIN FOR g IN SELECT DISTINCT a.grantee FROM pg_catalog.pg_namespace n \
         CROSS JOIN LATERAL pg_catalog.aclexplode(n.nspacl) a \
         WHERE n.nspname = {name} AND a.grantee <> 0 AND a.grantee <> n.nspowner \
           AND pg_catalog.pg_get_userbyid(a.grantee) <> {app} LOOP \
         EXECUTE pg_catalog.format('REVOKE ALL ON SCHEMA %I FROM %I', {name}, \
           pg_catalog.pg_get_userbyid(g.grantee)); END LOOP; END$bk$;\n",
        name = literal(&ctx.names.schema)?,
        app = literal(&ctx.names.app_role)?
    ));
    let public = privileges(resource, "public_privileges", &["USAGE", "CREATE"])?;
    if !public.is_empty() {
        sql.push_str(&format!(
            "GRANT {} ON SCHEMA {schema} TO PUBLIC;\n",
            public.join(", ")
        ));
    }
    sql.push_str(&format!(
        "COMMENT ON SCHEMA {schema} IS {};\n",
        comment(resource)?
    ));
    session.envdb()?.batch(step, &sql)
}

fn drop_schema(session: &mut Session<'_>, ctx: &Context<'_>, step: &str) -> Result<(), ExecError> {
    // The environment's sessions would hold locks on its tables: end them first.
    let mut sql = meta::expect_owner("schema", &ctx.names.schema, &[&ctx.names.owner_role])?;
    sql.push_str(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename IN ({}, {}) \
         AND datname = current_database() AND pid <> pg_backend_pid();\n\
         DROP SCHEMA IF EXISTS {} CASCADE;\n",
        literal(&ctx.names.app_role)?,
        literal(&ctx.names.owner_role)?,
        ident(&ctx.names.schema)?
    ));
    // Its baseline records go with it (the pooled database outlives the schema).
    sql.push_str(&format!(
        "DO $bk$BEGIN IF to_regclass({}) IS NOT NULL THEN \
         DELETE FROM {}.{} WHERE schema_name = {}; END IF; END$bk$;\n",
        literal(&format!("{META_SCHEMA}.{BASELINE_TABLE}"))?,
        ident(META_SCHEMA)?,
        ident(BASELINE_TABLE)?,
        literal(&ctx.names.schema)?
    ));
    session.envdb()?.batch(step, &sql)
}
