//! Reads an environment's actual resources from PostgreSQL's catalogs, in the same shape as the
//! planner's desired resources, so equal means nothing to do.
//!
//! Server-wide objects (roles, databases) come from one query on any database of the server;
//! objects inside the environment's database (schema, grants, default privileges, baseline
//! records) from one query there. Baseline records come from the admin-only `bulkhead_meta`
//! schema; an environment made by an earlier version also has its records in a table of its own
//! schema, which is read only when the admin owns it (one more query, for such environments).

use super::ExecError;
use super::pool::PooledConn;
use super::sql;
use bulkhead_core::plan::{
    self, BASELINE_TABLE, EnvNames, GRANT_DEFAULT_PRIVILEGES, GRANT_ON_DATABASE, GRANT_ON_SCHEMA,
    KIND_BASELINE, KIND_DATABASE, KIND_GRANT, KIND_ROLE, KIND_SCHEMA, LEGACY_BASELINE_TABLE,
    META_SCHEMA, Resource,
};
use diesel::sql_types::Text;
use diesel::{QueryableByName, RunQueryDsl};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[derive(QueryableByName)]
struct Doc {
    #[diesel(sql_type = Text)]
    doc: String,
}

/// Roles and the environment's database (with its ACL): $1 owner, $2 app, $3 database.
const SERVER_QUERY: &str = r"
SELECT json_build_object(
  'roles', coalesce((
    SELECT json_agg(json_build_object(
      'name', r.rolname, 'login', r.rolcanlogin, 'connection_limit', r.rolconnlimit,
      'superuser', r.rolsuper, 'createdb', r.rolcreatedb, 'createrole', r.rolcreaterole,
      'replication', r.rolreplication, 'bypassrls', r.rolbypassrls,
      'settings', coalesce((SELECT s.setconfig FROM pg_db_role_setting s
                            WHERE s.setrole = r.oid AND s.setdatabase = 0), '{}'),
      'database_settings', coalesce((SELECT json_agg(d.datname || ': ' || c ORDER BY d.datname, c)
                            FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
                            CROSS JOIN LATERAL unnest(s.setconfig) c
                            WHERE s.setrole = r.oid AND s.setdatabase <> 0), '[]'),
      'comment', shobj_description(r.oid, 'pg_authid')) ORDER BY r.rolname)
    FROM pg_roles r WHERE r.rolname IN ($1, $2)), '[]'),
  'database', (
    SELECT json_build_object(
      'name', d.datname, 'owner', pg_get_userbyid(d.datdba), 'connection_limit', d.datconnlimit,
      'acl', (SELECT coalesce(json_agg(json_build_object(
                'grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                'privilege', a.privilege_type)), '[]')
              FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a),
      'comment', shobj_description(d.oid, 'pg_database'))
    FROM pg_database d WHERE d.datname = $3)
)::text AS doc";

/// The schema and `public`, default privileges, and whether the admin's baseline tables exist
/// (the bookkeeping table, and the one earlier versions kept in the environment's schema; each
/// only when the admin owns it): $1 schema, $2 owner.
const DATABASE_QUERY: &str = r"
SELECT json_build_object(
  'schemas', coalesce((
    SELECT json_agg(json_build_object(
      'name', n.nspname, 'owner', pg_get_userbyid(n.nspowner),
      'acl', (SELECT coalesce(json_agg(json_build_object(
                'grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                'privilege', a.privilege_type)), '[]')
              FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a),
      'comment', obj_description(n.oid, 'pg_namespace')))
    FROM pg_namespace n WHERE n.nspname IN ($1, 'public')), '[]'),
  'default_acl', coalesce((
    SELECT json_agg(json_build_object(
      'owner', pg_get_userbyid(d.defaclrole), 'type', d.defaclobjtype,
      'grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
      'privilege', a.privilege_type))
    FROM pg_default_acl d
    JOIN pg_namespace n ON n.oid = d.defaclnamespace
    CROSS JOIN LATERAL aclexplode(d.defaclacl) a
    WHERE n.nspname = $1 AND pg_get_userbyid(d.defaclrole) = $2), '[]'),
  'meta_table', EXISTS (
    SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'bulkhead_meta' AND c.relname = 'baseline' AND c.relkind = 'r'
      AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
      AND n.nspowner = c.relowner),
  'legacy_baseline_table', EXISTS (
    SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = $1 AND c.relname = 'bulkhead_baseline' AND c.relkind = 'r'
      AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user))
)::text AS doc";

#[derive(Deserialize)]
struct ServerDoc {
    roles: Vec<RoleRow>,
    database: Option<DatabaseRow>,
}

#[derive(Deserialize)]
struct RoleRow {
    name: String,
    login: bool,
    connection_limit: i32,
    superuser: bool,
    createdb: bool,
    createrole: bool,
    replication: bool,
    bypassrls: bool,
    settings: Vec<String>,
    /// `ALTER ROLE … IN DATABASE … SET` settings, as `database: key=value`.
    database_settings: Vec<String>,
    comment: Option<String>,
}

#[derive(Deserialize)]
struct AclRow {
    grantee: String,
    privilege: String,
}

#[derive(Deserialize)]
struct DatabaseRow {
    name: String,
    owner: String,
    connection_limit: i32,
    acl: Vec<AclRow>,
    comment: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct DatabaseDoc {
    schemas: Vec<SchemaRow>,
    default_acl: Vec<DefaultAclRow>,
    meta_table: bool,
    legacy_baseline_table: bool,
}

#[derive(Deserialize)]
struct SchemaRow {
    name: String,
    owner: String,
    acl: Vec<AclRow>,
    comment: Option<String>,
}

#[derive(Deserialize)]
struct DefaultAclRow {
    owner: String,
    #[serde(rename = "type")]
    object_type: String,
    grantee: String,
    privilege: String,
}

#[derive(Deserialize)]
struct BaselineRow {
    id: String,
    checksum: String,
}

fn parse<T: for<'de> Deserialize<'de>>(
    step: &str,
    target: &str,
    doc: &str,
) -> Result<T, ExecError> {
    serde_json::from_str(doc).map_err(|e| ExecError::Target {
        step: step.to_owned(),
        target: target.to_owned(),
        reason: format!("unexpected catalog answer: {e}"),
    })
}

/// Server-wide part: returns the resources and whether the environment's database exists.
pub(crate) fn read_server(
    conn: &mut PooledConn<'_>,
    names: &EnvNames,
    dedicated: bool,
    out: &mut Vec<Resource>,
) -> Result<bool, ExecError> {
    let step = "read roles and database";
    let doc = conn.run(step, |c| {
        diesel::sql_query(SERVER_QUERY)
            .bind::<Text, _>(&names.owner_role)
            .bind::<Text, _>(&names.app_role)
            .bind::<Text, _>(&names.database)
            .get_result::<Doc>(c)
    })?;
    let server: ServerDoc = parse(step, conn.target(), &doc.doc)?;
    for role in server.roles {
        out.push(role_resource(role));
    }
    let Some(database) = server.database else {
        return Ok(false);
    };
    let app_privileges = privileges_of(&database.acl, &names.app_role);
    if !app_privileges.is_empty() {
        out.push(Resource::new(
            KIND_GRANT,
            plan::grant_on_database_name(&database.name, &names.app_role),
            json!({
                "object_type": GRANT_ON_DATABASE,
                "database": database.name,
                "grantee": names.app_role,
                "privileges": app_privileges,
            }),
        ));
    }
    if dedicated {
        out.push(Resource::new(
            KIND_DATABASE,
            database.name.clone(),
            json!({
                "owner": database.owner,
                "connection_limit": database.connection_limit,
                "public_privileges": privileges_of(&database.acl, "PUBLIC"),
                // Completed by `read_database` from inside the database.
                "public_schema_privileges": [],
                "comment": comment_of(database.comment),
            }),
        ));
    }
    Ok(true)
}

/// The part inside the environment's database.
pub(crate) fn read_database(
    conn: &mut PooledConn<'_>,
    names: &EnvNames,
    dedicated: bool,
    indexes: &[Resource],
    out: &mut Vec<Resource>,
) -> Result<(), ExecError> {
    let step = "read schema, grants and baseline";
    let doc = conn.run(step, |c| {
        diesel::sql_query(DATABASE_QUERY)
            .bind::<Text, _>(&names.schema)
            .bind::<Text, _>(&names.owner_role)
            .get_result::<Doc>(c)
    })?;
    let inside: DatabaseDoc = parse(step, conn.target(), &doc.doc)?;
    let db = names.database.as_str();
    for schema in &inside.schemas {
        if schema.name == "public" {
            if dedicated
                && let Some(database) = out
                    .iter_mut()
                    .find(|r| r.kind == KIND_DATABASE && r.name == db)
            {
                database.attributes.insert(
                    "public_schema_privileges".to_owned(),
                    json!(privileges_of(&schema.acl, "PUBLIC")),
                );
            }
            continue;
        }
        out.push(Resource::new(
            KIND_SCHEMA,
            schema.name.clone(),
            json!({
                "database": db,
                "owner": schema.owner,
                "public_privileges": privileges_of(&schema.acl, "PUBLIC"),
                "comment": comment_of(schema.comment.clone()),
            }),
        ));
        let app_privileges = privileges_of(&schema.acl, &names.app_role);
        if !app_privileges.is_empty() {
            out.push(Resource::new(
                KIND_GRANT,
                plan::grant_on_schema_name(&schema.name, &names.app_role),
                json!({
                    "object_type": GRANT_ON_SCHEMA,
                    "database": db,
                    "schema": schema.name,
                    "grantee": names.app_role,
                    "privileges": app_privileges,
                }),
            ));
        }
    }

    let default_privileges = |object_type: &str| -> Vec<String> {
        let mut privileges: Vec<String> = inside
            .default_acl
            .iter()
            .filter(|row| {
                row.object_type == object_type
                    && row.grantee == names.app_role
                    && row.owner == names.owner_role
            })
            .map(|row| row.privilege.clone())
            .collect();
        privileges.sort();
        privileges.dedup();
        privileges
    };
    let (tables, sequences) = (default_privileges("r"), default_privileges("S"));
    if !tables.is_empty() || !sequences.is_empty() {
        out.push(Resource::new(
            KIND_GRANT,
            plan::default_privileges_name(&names.schema, &names.owner_role, &names.app_role),
            json!({
                "object_type": GRANT_DEFAULT_PRIVILEGES,
                "database": db,
                "schema": names.schema,
                "owner": names.owner_role,
                "grantee": names.app_role,
                "tables": tables,
                "sequences": sequences,
            }),
        ));
    }

    let mut sources = Vec::new();
    if inside.meta_table {
        sources.push(format!(
            "SELECT 0 AS rank, id, checksum FROM {}.{} WHERE schema_name = {}",
            sql::ident(META_SCHEMA)?,
            sql::ident(BASELINE_TABLE)?,
            sql::literal(&names.schema)?
        ));
    }
    if inside.legacy_baseline_table {
        sources.push(format!(
            "SELECT 1 AS rank, id, checksum FROM {}.{}",
            sql::ident(&names.schema)?,
            sql::ident(LEGACY_BASELINE_TABLE)?
        ));
    }
    if !sources.is_empty() {
        let step = "read baseline records";
        let query = format!(
            "SELECT coalesce(json_agg(json_build_object('id', id, 'checksum', checksum) ORDER BY id), \
             '[]')::text AS doc FROM (SELECT DISTINCT ON (id) id, checksum FROM ({}) r \
             ORDER BY id, rank) b",
            sources.join(" UNION ALL ")
        );
        let doc = conn.run(step, |c| diesel::sql_query(query).get_result::<Doc>(c))?;
        let rows: Vec<BaselineRow> = parse(step, conn.target(), &doc.doc)?;
        for row in rows {
            out.push(Resource::new(
                KIND_BASELINE,
                row.id,
                json!({"database": db, "schema": names.schema, "checksum": row.checksum}),
            ));
        }
    }
    read_indexes(conn, &names.schema, indexes, out)
}

/// Which of the baseline's indexes (`wanted`, by name) the schema has; each found one as its
/// resource. Indexes the tenant made are not looked at.
fn read_indexes(
    conn: &mut PooledConn<'_>,
    schema: &str,
    wanted: &[Resource],
    out: &mut Vec<Resource>,
) -> Result<(), ExecError> {
    if wanted.is_empty() {
        return Ok(());
    }
    let step = "read baseline indexes";
    let names = wanted
        .iter()
        .map(|r| sql::literal(&r.name))
        .collect::<Result<Vec<_>, _>>()?;
    let query = format!(
        "SELECT coalesce(json_agg(indexname ORDER BY indexname), '[]')::text AS doc \
         FROM pg_indexes WHERE schemaname = {} AND indexname IN ({})",
        sql::literal(schema)?,
        names.join(", ")
    );
    let doc = conn.run(step, |c| diesel::sql_query(query).get_result::<Doc>(c))?;
    let present: Vec<String> = parse(step, conn.target(), &doc.doc)?;
    out.extend(wanted.iter().filter(|r| present.contains(&r.name)).cloned());
    Ok(())
}

fn role_resource(role: RoleRow) -> Resource {
    let capabilities: Vec<&str> = [
        (role.bypassrls, "BYPASSRLS"),
        (role.createdb, "CREATEDB"),
        (role.createrole, "CREATEROLE"),
        (role.replication, "REPLICATION"),
        (role.superuser, "SUPERUSER"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    let settings: BTreeMap<String, String> = role
        .settings
        .iter()
        .filter_map(|s| s.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Resource::new(
        KIND_ROLE,
        role.name,
        json!({
            "login": role.login,
            "connection_limit": role.connection_limit,
            "capabilities": capabilities,
            "settings": settings,
            "database_settings": role.database_settings,
            "comment": comment_of(role.comment),
        }),
    )
}

/// Sorted, deduplicated privileges of `grantee` in an exploded ACL.
fn privileges_of(acl: &[AclRow], grantee: &str) -> Vec<String> {
    let mut privileges: Vec<String> = acl
        .iter()
        .filter(|row| row.grantee == grantee)
        .map(|row| row.privilege.clone())
        .collect();
    privileges.sort();
    privileges.dedup();
    privileges
}

/// An object's comment as the planner compares it: null when there is none. Bulkhead writes
/// none, so any text (such as the cost tags earlier versions wrote) shows up as a change.
fn comment_of(comment: Option<String>) -> Value {
    comment.map_or(Value::Null, Value::String)
}
