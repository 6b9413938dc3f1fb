//! The probes that run on the app role's own sessions: what it may reach through the catalogs,
//! what it may create, what it is, what it leaves for others to read, and its limits.
//!
//! Everything the catalogs can answer is one query (a new backend pays for loading catalog
//! caches once, not per probe); the attempts that must really be tried (CREATE in `public`,
//! reading the canary table, lifting `temp_file_limit`, NOTIFY) run beside it on the other
//! held sessions. Every catalog name is schema-qualified (and `search_path` is `pg_catalog`).

use super::{check, inconclusive, refused_access, server_message};
use crate::executor::postgres::CANARY_SCHEMA;
use crate::executor::{ExecError, GuaranteeCheck};
use bulkhead_core::domain::Isolation;
use bulkhead_core::plan::{EnvNames, EnvironmentSpec};
use tokio_postgres::{Client, Row};

pub(super) struct Probe<'a> {
    /// The role's sessions held for the compute probe: the probes run on them side by side.
    pub clients: Vec<&'a Client>,
    pub spec: &'a EnvironmentSpec,
    pub names: &'a EnvNames,
    /// Shared tier: the channel a session of another role listens on.
    pub notify_channel: Option<&'a str>,
}

/// The catalog's answers, as the role sees them: $1 app role, $2 owner role, $3 schema,
/// $4 database.
const FACTS: &str = "SELECT
  (SELECT count(*) FROM pg_catalog.pg_database
    WHERE datallowconn AND datname <> pg_catalog.current_database()) AS databases,
  (SELECT coalesce(pg_catalog.string_agg(datname::text, ', ' ORDER BY datname), '')
     FROM pg_catalog.pg_database
    WHERE datallowconn AND datname <> pg_catalog.current_database()
      AND pg_catalog.has_database_privilege(oid, 'CONNECT')) AS reachable,
  (SELECT coalesce(pg_catalog.string_agg(nspname::text, ', ' ORDER BY nspname), '')
     FROM pg_catalog.pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema', $3) AND nspname NOT LIKE 'pg\\_%'
      AND (pg_catalog.has_schema_privilege(oid, 'USAGE')
           OR pg_catalog.has_schema_privilege(oid, 'CREATE'))) AS usable_schemas,
  (SELECT coalesce(pg_catalog.string_agg(r.rolname || ': ' || pg_catalog.concat_ws(' ',
       CASE WHEN r.rolsuper THEN 'SUPERUSER' END, CASE WHEN r.rolcreaterole THEN 'CREATEROLE' END,
       CASE WHEN r.rolcreatedb THEN 'CREATEDB' END, CASE WHEN r.rolreplication THEN 'REPLICATION' END,
       CASE WHEN r.rolbypassrls THEN 'BYPASSRLS' END,
       CASE WHEN m.member_of <> '' THEN 'member of ' || m.member_of END), '; ')
     FILTER (WHERE r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication
                OR r.rolbypassrls OR m.member_of <> ''), '')
     FROM pg_catalog.pg_roles r
     CROSS JOIN LATERAL (SELECT coalesce(pg_catalog.string_agg(b.rolname::text, ', '), '') AS member_of
                           FROM pg_catalog.pg_auth_members a JOIN pg_catalog.pg_roles b ON b.oid = a.roleid
                          WHERE a.member = r.oid) m
    WHERE r.rolname IN ($1, $2)) AS role_findings,
  (SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname IN ($1, $2)) AS roles,
  (SELECT count(*) FROM pg_catalog.pg_shdescription d JOIN pg_catalog.pg_roles r
      ON d.objoid = r.oid AND d.classoid = 'pg_catalog.pg_authid'::pg_catalog.regclass
    WHERE r.rolname IN ($1, $2))
  + (SELECT count(*) FROM pg_catalog.pg_shdescription d JOIN pg_catalog.pg_database b
      ON d.objoid = b.oid AND d.classoid = 'pg_catalog.pg_database'::pg_catalog.regclass
    WHERE b.datname = $4 AND b.datname ~ '^bk_[0-9a-f]{32}$')
  + (SELECT count(*) FROM pg_catalog.pg_description d JOIN pg_catalog.pg_namespace n
      ON d.objoid = n.oid AND d.classoid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
    WHERE n.nspname = $3) AS commented,
  pg_catalog.current_setting('temp_file_limit') AS temp_file_limit,
  pg_catalog.current_setting('statement_timeout') AS statement_timeout,
  pg_catalog.current_setting('idle_in_transaction_session_timeout')
    AS idle_in_transaction_session_timeout,
  pg_catalog.current_setting('work_mem') AS work_mem";

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
        // The CREATE probe runs in a transaction it rolls back (and that a refusal aborts): it
        // gets a session of its own when there are several; the rest are single statements.
        let Some(&first) = self.clients.first() else {
            return Err(inconclusive("probe", "no session of the role to probe on"));
        };
        let second = self.clients.get(1).copied().unwrap_or(first);
        let third = self.clients.get(2).copied();
        let attempts = async {
            let canary_read = self.read_canary(second).await?;
            let lifted = self.lift_temp_file_limit(second).await?;
            if let Some(channel) = self.notify_channel {
                let sql = format!("NOTIFY {channel}, 'bulkhead isolation probe'");
                second
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| inconclusive(&sql, &server_message(&e)))?;
            }
            Ok::<_, ExecError>((canary_read, lifted))
        };
        let facts = async {
            let what = "read the role's privileges, attributes, comments and settings";
            first
                .query_one(
                    FACTS,
                    &[
                        &self.names.app_role,
                        &self.names.owner_role,
                        &self.names.schema,
                        &self.names.database,
                    ],
                )
                .await
                .map_err(|e| inconclusive(what, &server_message(&e)))
        };
        // With three sessions everything runs side by side; with fewer, one after another
        // (the shared statements go out pipelined on the same session).
        let (public, facts, attempts) = match (third, self.clients.len()) {
            (Some(alone), _) => {
                let (public, facts, attempts) =
                    tokio::join!(self.create_on_public(alone), facts, attempts);
                (public?, facts?, attempts?)
            }
            (None, 2) => {
                // The second session tries its statements, then the CREATE, beside the query.
                let tried = async {
                    let attempts = attempts.await?;
                    Ok::<_, ExecError>((self.create_on_public(second).await?, attempts))
                };
                let (facts, tried) = tokio::join!(facts, tried);
                let (public, attempts) = tried?;
                (public, facts?, attempts)
            }
            _ => {
                let facts = facts.await?;
                let attempts = attempts.await?;
                (self.create_on_public(first).await?, facts, attempts)
            }
        };
        let (canary_read, lifted) = attempts;
        self.judge(&facts, canary, canary_read, lifted, public)
    }

    fn judge(
        &self,
        facts: &Row,
        canary: Option<(bool, String)>,
        canary_read: (bool, String),
        lifted: (bool, String),
        public: GuaranteeCheck,
    ) -> Result<Vec<GuaranteeCheck>, ExecError> {
        let get = |column: &str| -> Result<String, ExecError> {
            facts
                .try_get::<_, String>(column)
                .map_err(|e| inconclusive(&format!("read {column}"), &e.to_string()))
        };
        let count = |column: &str| -> Result<i64, ExecError> {
            facts
                .try_get::<_, i64>(column)
                .map_err(|e| inconclusive(&format!("read {column}"), &e.to_string()))
        };
        let app = self.app();
        let limits = self.spec.blueprint.limits;
        // As SHOW prints them ("30s", "4MB", "-1"), in the unit the blueprint uses.
        let setting = |name: &str| -> Result<String, ExecError> {
            let shown = get(name)?;
            Ok(in_base_unit(&shown).map_or(shown, |n| n.to_string()))
        };
        let mut checks = Vec::new();

        // data: CONNECT on no other database of the server, and the canary really refuses.
        let reachable = get("reachable")?;
        let (canary_refused, canary_evidence) =
            canary.unwrap_or((true, "canary not tried".to_owned()));
        let listed = if reachable.is_empty() {
            format!(
                "CONNECT on none of the {} other databases of the server",
                count("databases")?
            )
        } else {
            format!(
                "CONNECT on {reachable} (of {} other databases)",
                count("databases")?
            )
        };
        checks.push(check(
            "data",
            "database_connect_privilege",
            reachable.is_empty() && canary_refused,
            format!("as {app}: {listed}; {canary_evidence}"),
        ));

        // data (shared): USAGE on no other schema, and the canary table cannot be read.
        if self.spec.isolation == Isolation::Shared {
            let usable = get("usable_schemas")?;
            let listed = if usable.is_empty() {
                "USAGE or CREATE on no other schema".to_owned()
            } else {
                format!("USAGE or CREATE on {usable}")
            };
            checks.push(check(
                "data",
                "schema_privileges",
                usable.is_empty() && canary_read.0,
                format!("{listed}; {}", canary_read.1),
            ));
        }

        checks.push(public);

        // identity: no dangerous attribute, no membership.
        let found = get("role_findings")?;
        checks.push(check(
            "identity",
            "role_attributes",
            found.is_empty() && count("roles")? == 2,
            if found.is_empty() {
                format!(
                    "as {app}: {} and {} have no superuser, createrole, createdb, replication or \
                     bypassrls attribute and are members of no role",
                    self.names.app_role, self.names.owner_role
                )
            } else {
                format!("as {app}: {found}")
            },
        ));

        // metadata: nothing of this environment's is commented.
        let commented = count("commented")?;
        checks.push(check(
            "metadata",
            "catalog_metadata",
            commented == 0,
            format!(
                "as {app}: {commented} comments on this environment's roles, schema and database \
                 in pg_shdescription / pg_description (readable by every role; Bulkhead writes \
                 none, cost tags stay in the control database); object names carry only opaque ids"
            ),
        ));

        // compute (wall): temp_file_limit is the blueprint's and cannot be lifted.
        let shown = setting("temp_file_limit")?;
        let want = limits.temp_file_limit_kb;
        checks.push(check(
            "compute",
            "temp_file_limit",
            shown == want.to_string() && lifted.0,
            format!(
                "as {app}: temp_file_limit = {shown} kB per process (blueprint {want} kB; a \
                 parallel query's workers each have their own); {}",
                lifted.1
            ),
        ));

        // compute (defaults): what the tenant could change with SET.
        let mut holds = true;
        let mut shown = Vec::new();
        for (name, want, unit) in [
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
        ] {
            let got = setting(name)?;
            holds &= got == want;
            shown.push(format!("{name} = {got} {unit} (blueprint {want})"));
        }
        checks.push(check(
            "compute",
            "resource_limits",
            holds,
            format!(
                "as {app}: {}; defaults set on the role, which the tenant can change for its own \
                 sessions with SET",
                shown.join(", ")
            ),
        ));
        Ok(checks)
    }

    /// (refused, evidence) of reading the canary table (shared tier; else nothing tried).
    async fn read_canary(&self, client: &Client) -> Result<(bool, String), ExecError> {
        if self.spec.isolation != Isolation::Shared {
            return Ok((true, String::new()));
        }
        let tried = format!(
            "SELECT FROM {CANARY_SCHEMA}.secret as {} in {}",
            self.app(),
            self.names.database
        );
        match client
            .batch_execute(&format!("SELECT count(*) FROM {CANARY_SCHEMA}.secret"))
            .await
        {
            Ok(()) => Ok((false, format!("{tried} → rows returned"))),
            Err(e) => {
                let message = server_message(&e);
                if refused_access(&message) {
                    Ok((true, format!("{tried} → refused: {message}")))
                } else {
                    Err(inconclusive(&tried, &message))
                }
            }
        }
    }

    /// (cannot lift, evidence) of `SET temp_file_limit = -1`. Outside a transaction: refused,
    /// it changes nothing; were it accepted, the session is closed when the probes end.
    async fn lift_temp_file_limit(&self, client: &Client) -> Result<(bool, String), ExecError> {
        let tried = "SET temp_file_limit = -1";
        Ok(match client.batch_execute(tried).await {
            Ok(()) => (
                false,
                format!("{tried} → succeeded (the session is closed after the probes)"),
            ),
            Err(e) => {
                let message = server_message(&e);
                (
                    message.contains("permission denied"),
                    format!("{tried} → refused: {message}"),
                )
            }
        })
    }

    /// identity: nothing may be created in schema public, nor (shared tier) a large object.
    /// Tried inside transactions that are rolled back, so a success leaves nothing behind.
    async fn create_on_public(&self, client: &Client) -> Result<GuaranteeCheck, ExecError> {
        let table = format!("public.bk_probe_{}", hex::encode(rand::random::<[u8; 6]>()));
        let tried = format!(
            "CREATE TABLE {table} as {} in {}",
            self.app(),
            self.names.database
        );
        let not_run = |e: tokio_postgres::Error| inconclusive(&tried, &server_message(&e));
        let created = client
            .batch_execute(&format!("BEGIN; CREATE TABLE {table} (x integer)"))
            .await;
        client.batch_execute("ROLLBACK").await.map_err(not_run)?;
        // In the pooled database a large object would be storage outside the schema (in
        // `pg_largeobject`, unmetered, shared by all): creating one must be refused as well.
        let created = match created {
            Err(e) if self.spec.isolation == Isolation::Shared => {
                let lo = "SELECT pg_catalog.lo_from_bytea(0, 'x')";
                let large = client.batch_execute(&format!("BEGIN; {lo}")).await;
                client.batch_execute("ROLLBACK").await.map_err(not_run)?;
                match large {
                    Ok(()) => {
                        return Ok(check(
                            "identity",
                            "no_create_on_public",
                            false,
                            format!("{lo} as {} → succeeded (rolled back)", self.app()),
                        ));
                    }
                    Err(lo_error) if refused_access(&server_message(&lo_error)) => Err(e),
                    Err(lo_error) => return Err(inconclusive(lo, &server_message(&lo_error))),
                }
            }
            other => other,
        };
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
}

/// A setting as SHOW prints it, in the base unit of its kind (kB for memory, ms for time):
/// "4MB" → 4096, "30s" → 30000, "1min" → 60000, "-1" → -1. `None` for other text.
fn in_base_unit(shown: &str) -> Option<i64> {
    let split = shown
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(shown.len());
    let (number, unit) = shown.split_at(split);
    let number: i64 = number.parse().ok()?;
    let factor = match unit {
        "" | "kB" | "ms" => 1,
        "MB" => 1024,
        "GB" => 1024 * 1024,
        "TB" => 1024 * 1024 * 1024,
        "s" => 1000,
        "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    number.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    #[test]
    fn settings_as_show_prints_them_come_back_in_base_units() {
        for (shown, want) in [
            ("4MB", Some(4096)),
            ("1GB", Some(1_048_576)),
            ("64kB", Some(64)),
            ("30s", Some(30_000)),
            ("500ms", Some(500)),
            ("1min", Some(60_000)),
            ("2h", Some(7_200_000)),
            ("1d", Some(86_400_000)),
            ("-1", Some(-1)),
            ("0", Some(0)),
            ("lots", None),
        ] {
            assert_eq!(super::in_base_unit(shown), want, "{shown}");
        }
    }

    #[test]
    fn the_catalog_query_names_every_column_judge_reads() {
        for column in [
            "databases",
            "reachable",
            "usable_schemas",
            "role_findings",
            "roles",
            "commented",
            "temp_file_limit",
            "statement_timeout",
            "idle_in_transaction_session_timeout",
            "work_mem",
        ] {
            assert!(
                super::FACTS.contains(&format!("AS {column}")),
                "{column} missing"
            );
        }
    }
}
