//! The probes that run on one of the app role's own sessions: what it may reach through the
//! catalogs, what it may create, what it is, what it learns about others, and its limits.
//! Every catalog name is schema-qualified (the session's `search_path` is `pg_catalog` too).

use super::{check, inconclusive, refused_access, server_message};
use crate::executor::postgres::CANARY_SCHEMA;
use crate::executor::{ExecError, GuaranteeCheck};
use bulkhead_core::domain::Isolation;
use bulkhead_core::plan::{EnvNames, EnvironmentSpec};
use tokio_postgres::Client;

pub(super) struct Probe<'a> {
    pub client: &'a Client,
    pub spec: &'a EnvironmentSpec,
    pub names: &'a EnvNames,
    /// Shared tier: the channel a session of another role listens on.
    pub notify_channel: Option<&'a str>,
}

impl Probe<'_> {
    fn app(&self) -> &str {
        &self.names.app_role
    }

    /// Runs every in-session probe; `canary` is the outcome of the real connection attempt to
    /// the canary database (refused, evidence), joined with the catalog's answer.
    pub async fn run(
        &self,
        canary: Option<(bool, String)>,
    ) -> Result<Vec<GuaranteeCheck>, ExecError> {
        let mut checks = vec![self.connect_privileges(canary).await?];
        if self.spec.isolation == Isolation::Shared {
            checks.push(self.schema_privileges().await?);
        }
        checks.push(self.create_on_public().await?);
        checks.push(self.role_attributes().await?);
        checks.push(self.catalog_metadata().await?);
        checks.push(self.temp_file_limit().await?);
        checks.push(self.resource_limits().await?);
        if let Some(channel) = self.notify_channel {
            let sql = format!("NOTIFY {channel}, 'bulkhead isolation probe'");
            self.client
                .batch_execute(&sql)
                .await
                .map_err(|e| inconclusive(&sql, &server_message(&e)))?;
        }
        Ok(checks)
    }

    async fn query_one(&self, what: &str, sql: &str) -> Result<tokio_postgres::Row, ExecError> {
        self.client
            .query_one(sql, &[])
            .await
            .map_err(|e| inconclusive(what, &server_message(&e)))
    }

    /// data: CONNECT on no other database of the server (one catalog query), and the canary
    /// database really refuses the role.
    async fn connect_privileges(
        &self,
        canary: Option<(bool, String)>,
    ) -> Result<GuaranteeCheck, ExecError> {
        let what = "read the role's CONNECT privileges";
        let row = self
            .query_one(
                what,
                "SELECT count(*) AS total, coalesce(pg_catalog.string_agg(datname::text, ', ' ORDER BY datname) \
                   FILTER (WHERE pg_catalog.has_database_privilege(oid, 'CONNECT')), '') AS reachable \
                 FROM pg_catalog.pg_database \
                 WHERE datallowconn AND datname <> pg_catalog.current_database()",
            )
            .await?;
        let total: i64 = row
            .try_get("total")
            .map_err(|e| inconclusive(what, &e.to_string()))?;
        let reachable: String = row
            .try_get("reachable")
            .map_err(|e| inconclusive(what, &e.to_string()))?;
        let (canary_refused, canary_evidence) =
            canary.unwrap_or((true, "canary not tried".to_owned()));
        let listed = if reachable.is_empty() {
            format!("CONNECT on none of the {total} other databases of the server")
        } else {
            format!("CONNECT on {reachable} (of {total} other databases)")
        };
        Ok(check(
            "data",
            "database_connect_privilege",
            reachable.is_empty() && canary_refused,
            format!("as {}: {listed}; {canary_evidence}", self.app()),
        ))
    }

    /// data (shared): USAGE on no other schema of the pooled database, and the canary table
    /// cannot be read.
    async fn schema_privileges(&self) -> Result<GuaranteeCheck, ExecError> {
        let what = "read the role's schema privileges";
        let row = self
            .query_one(
                what,
                &format!(
                    "SELECT coalesce(pg_catalog.string_agg(nspname::text, ', ' ORDER BY nspname), '') AS usable \
                     FROM pg_catalog.pg_namespace \
                     WHERE nspname NOT IN ('pg_catalog', 'information_schema', {}) \
                       AND nspname NOT LIKE 'pg\\_%' \
                       AND (pg_catalog.has_schema_privilege(oid, 'USAGE') \
                            OR pg_catalog.has_schema_privilege(oid, 'CREATE'))",
                    crate::executor::sql::literal(&self.names.schema)?
                ),
            )
            .await?;
        let usable: String = row
            .try_get("usable")
            .map_err(|e| inconclusive(what, &e.to_string()))?;
        let app = self.app();
        let tried = format!(
            "SELECT FROM {CANARY_SCHEMA}.secret as {app} in {}",
            self.names.database
        );
        let read = match self
            .client
            .batch_execute(&format!("SELECT count(*) FROM {CANARY_SCHEMA}.secret"))
            .await
        {
            Ok(()) => (false, format!("{tried} → rows returned")),
            Err(e) => {
                let message = server_message(&e);
                if !refused_access(&message) {
                    return Err(inconclusive(&tried, &message));
                }
                (true, format!("{tried} → refused: {message}"))
            }
        };
        let listed = if usable.is_empty() {
            "USAGE or CREATE on no other schema".to_owned()
        } else {
            format!("USAGE or CREATE on {usable}")
        };
        Ok(check(
            "data",
            "schema_privileges",
            usable.is_empty() && read.0,
            format!("{listed}; {}", read.1),
        ))
    }

    /// identity: nothing may be created in schema public. Tried inside a transaction that is
    /// rolled back, so a success leaves nothing behind.
    async fn create_on_public(&self) -> Result<GuaranteeCheck, ExecError> {
        let table = format!("public.bk_probe_{}", hex::encode(rand::random::<[u8; 6]>()));
        let tried = format!(
            "CREATE TABLE {table} as {} in {}",
            self.app(),
            self.names.database
        );
        let not_run = |e: tokio_postgres::Error| inconclusive(&tried, &server_message(&e));
        self.client.batch_execute("BEGIN").await.map_err(not_run)?;
        let created = self
            .client
            .batch_execute(&format!("CREATE TABLE {table} (x integer)"))
            .await;
        self.client
            .batch_execute("ROLLBACK")
            .await
            .map_err(not_run)?;
        match created {
            Ok(()) => Ok(check(
                "identity",
                "no_create_on_public",
                false,
                format!("{tried} → succeeded (rolled back)"),
            )),
            Err(e) => {
                let message = server_message(&e);
                if refused_access(&message) {
                    Ok(check(
                        "identity",
                        "no_create_on_public",
                        true,
                        format!("{tried} → refused: {message}"),
                    ))
                } else {
                    Err(inconclusive(&tried, &message))
                }
            }
        }
    }

    /// identity: neither role has a dangerous attribute; the app role is a member of no role,
    /// the owner role of none but `pg_database_owner` (implicit for a database's owner).
    async fn role_attributes(&self) -> Result<GuaranteeCheck, ExecError> {
        let what = "read the roles' attributes";
        let sql = format!(
            "SELECT coalesce(pg_catalog.string_agg(r.rolname || ': ' || pg_catalog.concat_ws(' ', \
               CASE WHEN r.rolsuper THEN 'SUPERUSER' END, CASE WHEN r.rolcreaterole THEN 'CREATEROLE' END, \
               CASE WHEN r.rolcreatedb THEN 'CREATEDB' END, CASE WHEN r.rolreplication THEN 'REPLICATION' END, \
               CASE WHEN r.rolbypassrls THEN 'BYPASSRLS' END, \
               (SELECT 'member of ' || pg_catalog.string_agg(b.rolname::text, ', ') FROM pg_catalog.pg_roles b \
                WHERE b.oid <> r.oid AND b.rolname <> 'pg_database_owner' \
                  AND pg_catalog.pg_has_role(r.oid, b.oid, 'MEMBER'))), '; ') \
               FILTER (WHERE r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication \
                 OR r.rolbypassrls OR EXISTS (SELECT FROM pg_catalog.pg_roles b WHERE b.oid <> r.oid \
                   AND b.rolname <> 'pg_database_owner' AND pg_catalog.pg_has_role(r.oid, b.oid, 'MEMBER'))), '') AS found, \
               count(*) AS roles \
             FROM pg_catalog.pg_roles r WHERE r.rolname IN ({}, {})",
            crate::executor::sql::literal(&self.names.app_role)?,
            crate::executor::sql::literal(&self.names.owner_role)?
        );
        let row = self.query_one(what, &sql).await?;
        let found: String = row
            .try_get("found")
            .map_err(|e| inconclusive(what, &e.to_string()))?;
        let roles: i64 = row
            .try_get("roles")
            .map_err(|e| inconclusive(what, &e.to_string()))?;
        Ok(check(
            "identity",
            "role_attributes",
            found.is_empty() && roles == 2,
            if found.is_empty() {
                format!(
                    "as {}: {} and {} have no superuser, createrole, createdb, replication or \
                     bypassrls attribute and are members of no role",
                    self.app(),
                    self.names.app_role,
                    self.names.owner_role
                )
            } else {
                format!("as {}: {found}", self.app())
            },
        ))
    }

    /// metadata: the environment's own roles, schema and database carry no comment (catalog
    /// comments are readable by every role on the server). Each environment checks its own
    /// objects, so no neighbour can make this probe fail by commenting on its own.
    async fn catalog_metadata(&self) -> Result<GuaranteeCheck, ExecError> {
        let what = "read catalog comments";
        let literal = crate::executor::sql::literal;
        let sql = format!(
            "SELECT \
               (SELECT count(*) FROM pg_catalog.pg_shdescription d JOIN pg_catalog.pg_roles r \
                  ON d.objoid = r.oid AND d.classoid = 'pg_catalog.pg_authid'::pg_catalog.regclass \
                WHERE r.rolname IN ({app}, {owner})) \
             + (SELECT count(*) FROM pg_catalog.pg_shdescription d JOIN pg_catalog.pg_database b \
                  ON d.objoid = b.oid AND d.classoid = 'pg_catalog.pg_database'::pg_catalog.regclass \
                WHERE b.datname = {database} AND b.datname ~ '^bk_[0-9a-f]{{32}}$') \
             + (SELECT count(*) FROM pg_catalog.pg_description d JOIN pg_catalog.pg_namespace n \
                  ON d.objoid = n.oid AND d.classoid = 'pg_catalog.pg_namespace'::pg_catalog.regclass \
                WHERE n.nspname = {schema}) AS commented",
            app = literal(&self.names.app_role)?,
            owner = literal(&self.names.owner_role)?,
            database = literal(&self.names.database)?,
            schema = literal(&self.names.schema)?,
        );
        let row = self.query_one(what, &sql).await?;
        let commented: i64 = row
            .try_get("commented")
            .map_err(|e| inconclusive(what, &e.to_string()))?;
        Ok(check(
            "metadata",
            "catalog_metadata",
            commented == 0,
            format!(
                "as {}: {commented} comments on this environment's roles, schema and database in \
                 pg_shdescription / pg_description (readable by every role; Bulkhead writes none, \
                 cost tags stay in the control database); object names carry only opaque ids",
                self.app()
            ),
        ))
    }

    /// compute (wall): `temp_file_limit` is the blueprint's and the role cannot change it.
    async fn temp_file_limit(&self) -> Result<GuaranteeCheck, ExecError> {
        let what = "read temp_file_limit";
        let want = self.spec.blueprint.limits.temp_file_limit_kb;
        let row = self
            .query_one(
                what,
                "SELECT setting FROM pg_catalog.pg_settings WHERE name = 'temp_file_limit'",
            )
            .await?;
        let shown: String = row
            .try_get("setting")
            .map_err(|e| inconclusive(what, &e.to_string()))?;
        let tried = "SET LOCAL temp_file_limit = -1";
        let not_run = |e: tokio_postgres::Error| inconclusive(tried, &server_message(&e));
        self.client.batch_execute("BEGIN").await.map_err(not_run)?;
        let lifted = self.client.batch_execute(tried).await;
        self.client
            .batch_execute("ROLLBACK")
            .await
            .map_err(not_run)?;
        let (cannot_lift, answer) = match lifted {
            Ok(()) => (false, "succeeded (rolled back)".to_owned()),
            Err(e) => {
                let message = server_message(&e);
                (
                    message.contains("permission denied"),
                    format!("refused: {message}"),
                )
            }
        };
        Ok(check(
            "compute",
            "temp_file_limit",
            shown == want.to_string() && cannot_lift,
            format!(
                "as {}: temp_file_limit = {shown} kB per process (blueprint {want} kB; a parallel \
                 query's workers each have their own); {tried} → {answer}",
                self.app()
            ),
        ))
    }

    /// compute (defaults): the role-level settings the tenant could lift with `SET`.
    async fn resource_limits(&self) -> Result<GuaranteeCheck, ExecError> {
        let what = "read the role's settings";
        let limits = self.spec.blueprint.limits;
        let rows = self
            .client
            .query(
                "SELECT name, setting FROM pg_catalog.pg_settings WHERE name IN \
                 ('statement_timeout', 'idle_in_transaction_session_timeout', 'work_mem') ORDER BY name",
                &[],
            )
            .await
            .map_err(|e| inconclusive(what, &server_message(&e)))?;
        let want = [
            (
                "idle_in_transaction_session_timeout",
                limits.idle_in_transaction_session_timeout_ms.to_string(),
                "ms",
            ),
            (
                "statement_timeout",
                limits.statement_timeout_ms.to_string(),
                "ms",
            ),
            ("work_mem", limits.work_mem_kb.to_string(), "kB"),
        ];
        let mut holds = rows.len() == want.len();
        let mut shown = Vec::new();
        for (row, (name, value, unit)) in rows.iter().zip(want.iter()) {
            let (got_name, got): (String, String) = (
                row.try_get("name")
                    .map_err(|e| inconclusive(what, &e.to_string()))?,
                row.try_get("setting")
                    .map_err(|e| inconclusive(what, &e.to_string()))?,
            );
            holds &= got_name == *name && got == *value;
            shown.push(format!("{got_name} = {got} {unit} (blueprint {value})"));
        }
        Ok(check(
            "compute",
            "resource_limits",
            holds,
            format!(
                "as {}: {}; defaults set on the role, which the tenant can change for its own \
                 sessions with SET",
                self.app(),
                shown.join(", ")
            ),
        ))
    }
}
