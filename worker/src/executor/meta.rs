//! The admin-only bookkeeping schema (`bulkhead_meta`) in each database Bulkhead manages, and
//! the ownership guards the admin runs before it touches an object a tenant could have made.
//! No role a tenant can log in as has any privilege on it: an environment's owner role (which
//! logs in only while its baseline migrations run) may call `record_baseline`, which records
//! for the schema the calling login owns and nothing else.
//!
//! The admin never writes to, reads from or resolves names in anything a tenant role can create
//! or alter: its sessions pin `search_path` to `pg_catalog`, its bookkeeping lives in a schema
//! only it owns and no tenant role has any privilege on, and each guard below raises (ending the
//! step's transaction) when an object it is about to touch has an unexpected owner.

use super::ExecError;
use super::sql::{ident, literal};
use bulkhead_core::plan::{BASELINE_TABLE, META_SCHEMA};

/// Makes the bookkeeping schema and its baseline table when missing, after checking that a
/// schema of that name, if any, is the admin's. Two steps racing on `CREATE … IF NOT EXISTS`
/// end in a unique violation for one, which runs it again (`PooledConn::batch_retrying`): no
/// advisory lock, since tenants connect to these databases and could hold the key.
pub(crate) fn ensure_sql() -> Result<String, ExecError> {
    let schema = ident(META_SCHEMA)?;
    let table = format!("{schema}.{}", ident(BASELINE_TABLE)?);
    let name = literal(META_SCHEMA)?;
    Ok(format!(
        "DO $bk$BEGIN\n\
         IF NOT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = {name} \
                        AND nspowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)) \
            OR to_regclass({table_literal}) IS NULL THEN\n\
           {guard}\n\
           CREATE SCHEMA IF NOT EXISTS {schema};\n\
           REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;\n\
           CREATE TABLE IF NOT EXISTS {table} (\n\
             schema_name text NOT NULL, id text NOT NULL, checksum text NOT NULL,\n\
             applied_at timestamptz NOT NULL DEFAULT pg_catalog.now(),\n\
             PRIMARY KEY (schema_name, id));\n\
           REVOKE ALL ON TABLE {table} FROM PUBLIC;\n\
         END IF;\n\
         IF to_regclass({fence_literal}) IS NULL THEN\n\
           CREATE TABLE IF NOT EXISTS {schema}.fence (\n\
             environment_id uuid PRIMARY KEY, token bigint NOT NULL, job_id uuid NOT NULL,\n\
             updated_at timestamptz NOT NULL DEFAULT pg_catalog.now());\n\
           REVOKE ALL ON TABLE {schema}.fence FROM PUBLIC;\n\
         END IF;\n\
         IF to_regprocedure({take_literal}) IS NULL THEN\n\
           CREATE OR REPLACE FUNCTION {schema}.take_fence(p_env uuid, p_token bigint, p_job uuid)\n\
             RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS {take_body};\n\
           REVOKE ALL ON FUNCTION {schema}.take_fence(uuid, bigint, uuid) FROM PUBLIC;\n\
         END IF;\n\
         IF to_regprocedure({check_literal}) IS NULL THEN\n\
           CREATE OR REPLACE FUNCTION {schema}.check_fence(p_env uuid, p_token bigint)\n\
             RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS {check_body};\n\
           REVOKE ALL ON FUNCTION {schema}.check_fence(uuid, bigint) FROM PUBLIC;\n\
         END IF;\n\
         IF to_regprocedure({record_literal}) IS NULL THEN\n\
           CREATE OR REPLACE FUNCTION {schema}.record_baseline(p_schema text, p_id text, p_checksum text)\n\
             RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS {record_body};\n\
           REVOKE ALL ON FUNCTION {schema}.record_baseline(text, text, text) FROM PUBLIC;\n\
         END IF;\n\
         END$bk$;\n",
        record_literal = literal(&format!("{META_SCHEMA}.record_baseline(text, text, text)"))?,
        record_body = literal(RECORD_BODY)?,
        fence_literal = literal(&format!("{META_SCHEMA}.fence"))?,
        take_literal = literal(&format!("{META_SCHEMA}.take_fence(uuid, bigint, uuid)"))?,
        take_body = literal(TAKE_FENCE_BODY)?,
        check_literal = literal(&format!("{META_SCHEMA}.check_fence(uuid, bigint)"))?,
        check_body = literal(CHECK_FENCE_BODY)?,
        table_literal = literal(&format!("{META_SCHEMA}.{BASELINE_TABLE}"))?,
        guard = owner_check_body("schema", META_SCHEMA, &[])?,
    ))
}

/// `bulkhead_meta.record_baseline(schema, id, checksum)`: how a baseline migration, running in
/// a session that logged in as the environment's owner role, records itself in the same
/// transaction. Only the role that owns `schema` and logged in (`session_user`) may record for
/// it; the table itself stays closed to every tenant role.
const RECORD_BODY: &str = "BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
                 WHERE n.nspname = p_schema AND r.rolname = session_user) THEN
    RAISE EXCEPTION 'only the owner of schema % records its baseline', p_schema
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  INSERT INTO bulkhead_meta.baseline (schema_name, id, checksum) VALUES (p_schema, p_id, p_checksum);
END";

/// The start of every error the fence raises; [`super::sql::query_error`] maps it to
/// [`super::ExecError::Fenced`].
pub(crate) const FENCE_ERROR: &str = "bulkhead fence:";

/// `bulkhead_meta.take_fence(environment, token, job)`, the storage side of the job lease's
/// fencing (admin sessions only): locks the environment's fence row for the rest of the
/// transaction (a concurrent step of the same environment waits here), refuses a token lower
/// than the highest one seen, and raises the row to this one.
const TAKE_FENCE_BODY: &str = "DECLARE held bigint;
BEGIN
  INSERT INTO bulkhead_meta.fence (environment_id, token, job_id) VALUES (p_env, p_token, p_job)
    ON CONFLICT (environment_id) DO NOTHING;
  SELECT token INTO held FROM bulkhead_meta.fence WHERE environment_id = p_env FOR UPDATE;
  IF held > p_token THEN
    RAISE EXCEPTION 'bulkhead fence: token % of job % is stale; environment % is held by token %',
      p_token, p_job, p_env, held USING ERRCODE = 'BKFEN';
  ELSIF held < p_token THEN
    UPDATE bulkhead_meta.fence SET token = p_token, job_id = p_job, updated_at = pg_catalog.now()
      WHERE environment_id = p_env;
  END IF;
END";

/// `bulkhead_meta.check_fence(environment, token)`: the owner role's half, for the baseline
/// migrations that run in a session logged in as it. Locks the fence row like `take_fence`
/// and refuses any token but the current one; it never raises the row (code running as the
/// owner cannot lock its own environment out with a huge token), and only the environment's
/// own owner role may call it.
const CHECK_FENCE_BODY: &str = "DECLARE held bigint;
BEGIN
  IF session_user <> 'bk_' || pg_catalog.replace(p_env::text, '-', '') || '_owner' THEN
    RAISE EXCEPTION 'only the owner role of environment % checks its fence', p_env
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  SELECT token INTO held FROM bulkhead_meta.fence WHERE environment_id = p_env FOR UPDATE;
  IF held IS DISTINCT FROM p_token THEN
    RAISE EXCEPTION 'bulkhead fence: token % is stale; environment % is held by token %',
      p_token, p_env, held USING ERRCODE = 'BKFEN';
  END IF;
END";

/// Lets `owner_role` call `record_baseline` (USAGE on the schema, EXECUTE on the function),
/// once: the grant stays until the role is dropped (`DROP OWNED BY`).
pub(crate) fn grant_record_sql(owner_role: &str) -> Result<String, ExecError> {
    let schema = ident(META_SCHEMA)?;
    let role = ident(owner_role)?;
    Ok(format!(
        "DO $bk$BEGIN IF NOT pg_catalog.has_function_privilege({owner}, {function}, 'EXECUTE') \
           OR NOT pg_catalog.has_function_privilege({owner}, {check}, 'EXECUTE') \
           OR NOT pg_catalog.has_schema_privilege({owner}, {schema_literal}, 'USAGE') THEN\n\
           GRANT USAGE ON SCHEMA {schema} TO {role};\n\
           GRANT EXECUTE ON FUNCTION {schema}.record_baseline(text, text, text) TO {role};\n\
           GRANT EXECUTE ON FUNCTION {schema}.check_fence(uuid, bigint) TO {role};\n\
         END IF; END$bk$;\n",
        owner = literal(owner_role)?,
        function = literal(&format!("{META_SCHEMA}.record_baseline(text, text, text)"))?,
        check = literal(&format!("{META_SCHEMA}.check_fence(uuid, bigint)"))?,
        schema_literal = literal(META_SCHEMA)?,
    ))
}

/// PL/pgSQL statements raising when the schema or database `name` exists and is owned by
/// a role other than the admin (`current_user`) or one of `allowed`.
fn owner_check_body(kind: &str, name: &str, allowed: &[&str]) -> Result<String, ExecError> {
    let (catalog, name_col, owner_col) = match kind {
        "database" => ("pg_catalog.pg_database", "datname", "datdba"),
        _ => ("pg_catalog.pg_namespace", "nspname", "nspowner"),
    };
    let name_expr = literal(name)?;
    let mut roles = vec!["current_user".to_owned()];
    for role in allowed {
        roles.push(literal(role)?);
    }
    Ok(format!(
        "IF EXISTS (SELECT FROM {catalog} WHERE {name_col} = {name_expr} AND {owner_col} NOT IN \
           (SELECT oid FROM pg_catalog.pg_roles WHERE rolname IN ({roles}))) THEN \
           RAISE EXCEPTION 'unexpected object: % % is owned by %, not by Bulkhead; refusing to touch it \
(someone made it before Bulkhead did; inspect it and drop it, then retry)', {kind_lit}, {name_lit}, \
           (SELECT pg_catalog.pg_get_userbyid({owner_col}) FROM {catalog} WHERE {name_col} = {name_expr}); \
         END IF;",
        roles = roles.join(", "),
        kind_lit = literal(kind)?,
        name_lit = literal(name)?,
    ))
}

/// A statement raising when `kind` (`schema` or `database`) `name` exists with an owner
/// other than the admin or one of `allowed`.
pub(crate) fn expect_owner(kind: &str, name: &str, allowed: &[&str]) -> Result<String, ExecError> {
    Ok(format!(
        "DO $bk$BEGIN {} END$bk$;\n",
        owner_check_body(kind, name, allowed)?
    ))
}
