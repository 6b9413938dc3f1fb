//! Rows for the housekeeping tests, written with SQL so each test chooses their ages.

use diesel::sql_types::{BigInt, Uuid as SqlUuid};
use diesel::{PgConnection, QueryableByName, RunQueryDsl};
use uuid::Uuid;

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
}

#[derive(QueryableByName)]
pub struct Count {
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

/// `SELECT count(*) AS n …`
pub fn count(conn: &mut PgConnection, query: &str) -> i64 {
    diesel::sql_query(query)
        .get_result::<Count>(conn)
        .expect("count")
        .n
}

pub fn exec(conn: &mut PgConnection, statement: &str) {
    diesel::sql_query(statement)
        .execute(conn)
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// A tenant with one environment; returns (tenant, environment).
pub fn environment(conn: &mut PgConnection) -> (Uuid, Uuid) {
    let (tenant, environment) = (Uuid::now_v7(), Uuid::now_v7());
    exec(
        conn,
        &format!(
            "INSERT INTO tenants (id, slug, name, tier, region) \
             VALUES ('{tenant}', 't{}', 'Acme', 'shared', 'eu-west-1')",
            &tenant.simple().to_string()[..20]
        ),
    );
    exec(
        conn,
        &format!(
            "INSERT INTO environments (id, tenant_id, name, stage, isolation, blueprint, \
             blueprint_version, cost_tags) VALUES ('{environment}', '{tenant}', 'dev', \
             'development', 'shared', 'shared-basic', 1, '{{}}')"
        ),
    );
    (tenant, environment)
}

/// `n` queued jobs of a new environment, each with a wake-up waiting in the outbox; returns
/// their ids.
pub fn queued_jobs(conn: &mut PgConnection, n: usize) -> Vec<Uuid> {
    let (tenant, environment) = environment(conn);
    let ids: Vec<Id> = diesel::sql_query(format!(
        "INSERT INTO jobs (id, tenant_id, environment_id, operation) \
         SELECT gen_random_uuid(), '{tenant}', '{environment}', 'apply' \
         FROM generate_series(1, {n}) RETURNING id"
    ))
    .load(conn)
    .expect("jobs");
    exec(
        conn,
        &format!(
            "INSERT INTO outbox (job_id, payload) \
             SELECT id, jsonb_build_object('v', 1, 'job_id', id, 'operation', operation) \
             FROM jobs WHERE environment_id = '{environment}' ORDER BY created_at, id"
        ),
    );
    ids.into_iter().map(|row| row.id).collect()
}
