//! What `prepare` runs on each server so tenants reach nothing but their own: PUBLIC loses
//! CONNECT and TEMPORARY on every database not made for a tenant, and the pooled and canary
//! databases are made closed and opened only once locked down.

use super::ExecError;
use super::pool::PooledConn;
use super::sql::{ident, literal};
use diesel::RunQueryDsl;
use diesel::sql_types::Text;

#[derive(diesel::QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

/// PostgreSQL grants CONNECT and TEMPORARY on every new database to PUBLIC, so a tenant's
/// credentials would reach `postgres`, `template1`, the control database and any other database
/// on the server. Revokes both from PUBLIC on every database that accepts connections and is not
/// a tenant's own (those are managed by their environment's plan), one advisory lock per
/// database as every ACL change here takes.
pub(crate) const LOCK_DOWN_ALL: &str = "DO $bk$DECLARE d record; BEGIN
  FOR d IN SELECT datname FROM pg_catalog.pg_database
    WHERE datallowconn AND datname !~ '^bk_[0-9a-f]{32}$'
      AND EXISTS (SELECT FROM pg_catalog.aclexplode(coalesce(datacl, pg_catalog.acldefault('d', datdba))) a
                  WHERE a.grantee = 0 AND a.privilege_type IN ('CONNECT', 'TEMPORARY'))
    ORDER BY datname
  LOOP
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('bulkhead.database_acl'),
                                             pg_catalog.hashtext(d.datname));
    BEGIN
      EXECUTE pg_catalog.format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', d.datname);
    EXCEPTION
      -- Dropped meanwhile, or its row changed under another session: nothing to revoke, or
      -- the isolation probe reports the database if PUBLIC still may connect.
      WHEN invalid_catalog_name OR internal_error THEN NULL;
    END;
  END LOOP;
  -- Earlier versions wrote each environment's cost tags as COMMENTs on its roles and database,
  -- readable by every role on the server: gone at once, not only at each one's next apply.
  FOR d IN SELECT 'ROLE' AS kind, r.rolname AS name FROM pg_catalog.pg_roles r
             JOIN pg_catalog.pg_shdescription s
               ON s.objoid = r.oid AND s.classoid = 'pg_catalog.pg_authid'::pg_catalog.regclass
            WHERE r.rolname ~ '^bk_[0-9a-f]{32}_(app|owner)$'
           UNION ALL
           SELECT 'DATABASE', b.datname FROM pg_catalog.pg_database b
             JOIN pg_catalog.pg_shdescription s
               ON s.objoid = b.oid AND s.classoid = 'pg_catalog.pg_database'::pg_catalog.regclass
            WHERE b.datname ~ '^bk_[0-9a-f]{32}$'
  LOOP
    EXECUTE pg_catalog.format('COMMENT ON %s %I IS NULL', d.kind, d.name);
  END LOOP;
END$bk$";

/// Creates the databases that do not exist yet (tolerating a concurrent creator), closed to
/// connections: the caller revokes PUBLIC's rights, then allows connections.
pub(crate) fn ensure_databases(
    admin: &mut PooledConn<'_>,
    databases: &[&str],
) -> Result<(), ExecError> {
    let wanted: Vec<String> = databases.iter().map(|d| (*d).to_owned()).collect();
    let existing = admin.run("list databases", |c| {
        diesel::sql_query("SELECT datname::text AS name FROM pg_database WHERE datname = ANY($1)")
            .bind::<diesel::sql_types::Array<Text>, _>(&wanted)
            .load::<Name>(c)
    })?;
    for database in databases {
        if existing.iter().any(|e| e.name == *database) {
            continue;
        }
        // Closed until the caller has revoked PUBLIC's default CONNECT and opens it.
        let create = format!(
            "CREATE DATABASE {} ALLOW_CONNECTIONS false",
            ident(database)?
        );
        match admin.run("create database", |c| diesel::sql_query(&create).execute(c)) {
            Ok(_) => {}
            // Another worker made it meanwhile.
            Err(ExecError::Target { reason, .. })
                if reason.contains("already exists")
                    || reason.contains("pg_database_datname_index") => {}
            Err(other) => return Err(other),
        }
    }
    Ok(())
}

pub(crate) fn lock_sql(database: &str) -> Result<String, ExecError> {
    Ok(format!(
        "SELECT pg_advisory_xact_lock(hashtext('bulkhead.database_acl'), hashtext({}));\n",
        literal(database)?
    ))
}

pub(crate) fn canary_lockdown(canary: &str) -> Result<String, ExecError> {
    let mut sql = lock_sql(canary)?;
    sql.push_str(&format!(
        "REVOKE ALL ON DATABASE {0} FROM PUBLIC;\nALTER DATABASE {0} ALLOW_CONNECTIONS true;\n",
        ident(canary)?
    ));
    sql.push_str(&format!(
        "COMMENT ON DATABASE {} IS 'Bulkhead isolation canary: no tenant may connect to it';\n",
        ident(canary)?
    ));
    Ok(sql)
}
