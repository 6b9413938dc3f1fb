//! The grant actions: the app role's privileges on the database, on the schema, and by default
//! on what the owner role makes in it (revoke-then-grant, so they converge).

use super::ExecError;
use super::actions::{Context, if_role_exists, privileges, refused};
use super::postgres::Session;
use super::sql::{ident, literal};
use bulkhead_core::plan::{
    GRANT_DEFAULT_PRIVILEGES, GRANT_ON_DATABASE, GRANT_ON_SCHEMA, Op, Resource,
};

pub(crate) fn grant(
    session: &mut Session<'_>,
    ctx: &Context<'_>,
    step: &str,
    resource: &Resource,
    op: Op,
) -> Result<(), ExecError> {
    let app = ident(&ctx.names.app_role)?;
    let schema = ident(&ctx.names.schema)?;
    let owner = ident(&ctx.names.owner_role)?;
    match resource.attr_str("object_type") {
        Some(GRANT_ON_DATABASE) => {
            let db = ident(&ctx.names.database)?;
            let mut sql = String::new();
            sql.push_str(&if_role_exists(
                &ctx.names.app_role,
                &format!("REVOKE ALL ON DATABASE {db} FROM {app}"),
            )?);
            if op != Op::Delete {
                let granted =
                    privileges(resource, "privileges", &["CONNECT", "TEMPORARY", "CREATE"])?;
                if !granted.is_empty() {
                    sql.push_str(&format!(
                        "GRANT {} ON DATABASE {db} TO {app};\n",
                        granted.join(", ")
                    ));
                }
            }
            session.server()?.batch_retrying(step, &sql)
        }
        Some(GRANT_ON_SCHEMA) => {
            let mut sql = if_role_exists(
                &ctx.names.app_role,
                &format!("REVOKE ALL ON SCHEMA {schema} FROM {app}"),
            )?;
            if op != Op::Delete {
                let granted = privileges(resource, "privileges", &["USAGE", "CREATE"])?;
                if !granted.is_empty() {
                    sql.push_str(&format!(
                        "GRANT {} ON SCHEMA {schema} TO {app};\n",
                        granted.join(", ")
                    ));
                }
            }
            session.envdb()?.batch(step, &sql)
        }
        Some(GRANT_DEFAULT_PRIVILEGES) => {
            let prefix = format!("ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema}");
            let mut sql = if_role_exists(
                &ctx.names.app_role,
                &format!("{prefix} REVOKE ALL ON TABLES FROM {app}"),
            )?;
            sql.push_str(&if_role_exists(
                &ctx.names.app_role,
                &format!("{prefix} REVOKE ALL ON SEQUENCES FROM {app}"),
            )?);
            if op != Op::Delete {
                let tables = privileges(
                    resource,
                    "tables",
                    &[
                        "SELECT",
                        "INSERT",
                        "UPDATE",
                        "DELETE",
                        "TRUNCATE",
                        "REFERENCES",
                        "TRIGGER",
                    ],
                )?;
                if !tables.is_empty() {
                    sql.push_str(&format!(
                        "{prefix} GRANT {} ON TABLES TO {app};\n",
                        tables.join(", ")
                    ));
                }
                let sequences = privileges(resource, "sequences", &["USAGE", "SELECT", "UPDATE"])?;
                if !sequences.is_empty() {
                    sql.push_str(&format!(
                        "{prefix} GRANT {} ON SEQUENCES TO {app};\n",
                        sequences.join(", ")
                    ));
                }
                // Tables the owner already has (a re-made app role, a repaired grant) get the
                // same privileges (only what the owner owns: never an object the app role made).
                sql.push_str(&existing_objects_grant(ctx, &tables, &sequences)?);
            }
            session.envdb()?.batch(step, &sql)
        }
        other => Err(refused(
            step,
            &format!("unknown grant object_type {other:?}"),
        )),
    }
}

/// Grants `tables` / `sequences` privileges on what the owner role already owns in the schema.
fn existing_objects_grant(
    ctx: &Context<'_>,
    tables: &[&str],
    sequences: &[&str],
) -> Result<String, ExecError> {
    let grant = |privileges: &[&str], kind: &str| -> Result<String, ExecError> {
        if privileges.is_empty() {
            return Ok("NULL;".to_owned());
        }
        Ok(format!(
            "EXECUTE format({}, t.relname);",
            literal(&format!(
                "GRANT {} ON {kind} {}.%I TO {}",
                privileges.join(", "),
                ident(&ctx.names.schema)?,
                ident(&ctx.names.app_role)?
            ))?
        ))
    };
    Ok(format!(
        "DO $bk$DECLARE t record; BEGIN\n\
         FOR t IN SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace\n\
           WHERE n.nspname = {} AND c.relowner = {}::regrole AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') LOOP\n\
           IF t.relkind = 'S' THEN {} ELSE {} END IF;\n\
         END LOOP; END$bk$;\n",
        literal(&ctx.names.schema)?,
        literal(&ctx.names.owner_role)?,
        grant(sequences, "SEQUENCE")?,
        grant(tables, "TABLE")?
    ))
}
