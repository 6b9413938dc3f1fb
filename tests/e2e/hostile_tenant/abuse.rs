//! A uses what any role may do in PostgreSQL to get in the way of the admin working for B:
//! advisory lock keys the admin would take, and grants to B's roles that would keep them from
//! being dropped. B's jobs must go through, first time, and leave nothing behind.

use super::{finished, id_of, options, run, two_tenants};
use crate::helpers::Stack;
use serde_json::json;

/// Advisory lock keys are database-wide and computable: if the admin serialised its catalog
/// changes with them in a database tenants connect to, a tenant holding the key would stall
/// every neighbour's provisioning (lock timeouts, retries, failed jobs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cannot_stall_the_admin_with_advisory_locks() {
    let mut stack = Stack::start(options()).await;
    let world = two_tenants(&stack).await;
    let (a, b) = (&world.a, &world.b);

    // As A, in the pooled database, held for the rest of the test: the keys earlier versions
    // took there, and a spread of small keys for good measure.
    let mut squatter = a.shared.connect();
    for key in [
        "pg_advisory_lock(hashtext('bulkhead.database_acl'), hashtext(current_database()))",
        "pg_advisory_lock(hashtext('bulkhead.meta'), 0)",
        "pg_advisory_lock(hashtext('bulkhead.prepare'), hashtext(current_database()))",
    ] {
        run(&mut squatter, &format!("SELECT {key}"))
            .unwrap_or_else(|e| panic!("A takes {key}: {e}"));
    }

    // B gets a new shared environment (grants on the pooled database, baseline migrations with
    // their bookkeeping) and loses its old one (drop roles): each job in one attempt.
    let created = stack
        .create_environment(
            &b.slug,
            json!({"name": format!("{}-more", b.shared.name), "stage": "development",
                   "isolation": "shared"}),
        )
        .await;
    let job = finished(&stack, &b.slug, &created["job"]).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1, "B's create was not held up: {job}");
    let (status, body) = stack
        .delete(&format!(
            "/v1/tenants/{}/environments/{}",
            b.slug, b.shared.id
        ))
        .await;
    assert_eq!(status, 202, "{body}");
    let job = finished(&stack, &b.slug, &body["job"]).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1, "B's destroy was not held up: {job}");

    // A worker starting now prepares the pooled database (canary, bookkeeping) all the same.
    let index = stack.spawn_worker();
    stack.wait_worker_consuming(index).await;
    drop(squatter);
    let environment = id_of(&created["environment"]);
    let ready = stack.environment(&b.slug, &environment).await;
    assert_eq!(ready["state"], "ready", "{ready}");
}

/// Any role may grant privileges on what it owns to any other role, and hold locks on other
/// roles and databases in a transaction it keeps open. A does both against B's roles; B's
/// destroy must still go through at once and leave nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cannot_pin_b_roles_with_grants() {
    let stack = Stack::start(options()).await;
    let world = two_tenants(&stack).await;
    let (a, b) = (&world.a, &world.b);

    // In A's dedicated database: a table and default privileges naming B's shared roles.
    let mut dedicated = a.dedicated.connect();
    for sql in [
        "CREATE TABLE pin_b (x integer)".to_owned(),
        format!(
            "GRANT SELECT ON pin_b TO {}, {}",
            b.shared.names.app_role, b.shared.names.owner_role
        ),
        format!(
            "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO {}",
            b.shared.names.app_role
        ),
    ] {
        run(&mut dedicated, &sql).unwrap_or_else(|e| panic!("A: {sql}: {e}"));
    }
    // In the pooled database: a table naming B's dedicated roles.
    let mut pooled = a.shared.connect();
    for sql in [
        "CREATE TABLE pin_d (x integer)".to_owned(),
        format!(
            "GRANT SELECT ON pin_d TO {}, {}",
            b.dedicated.names.app_role, b.dedicated.names.owner_role
        ),
    ] {
        run(&mut pooled, &sql).unwrap_or_else(|e| panic!("A: {sql}: {e}"));
    }
    drop((dedicated, pooled));

    // And, in a transaction A keeps open, locks on B's dedicated app role and database: a
    // GRANT to the role, a setting of A's own role for B's database.
    let mut holder = a.shared.connect();
    for sql in [
        "BEGIN".to_owned(),
        "CREATE TABLE pin_open (x integer)".to_owned(),
        format!("GRANT SELECT ON pin_open TO {}", b.dedicated.names.app_role),
        format!(
            "ALTER ROLE {} IN DATABASE {} SET work_mem = '64kB'",
            a.shared.names.app_role, b.dedicated.names.database
        ),
    ] {
        run(&mut holder, &sql).unwrap_or_else(|e| panic!("A: {sql}: {e}"));
    }

    for env in [&b.shared, &b.dedicated] {
        let (status, body) = stack
            .delete(&format!(
                "/v1/tenants/{}/environments/{}",
                env.tenant, env.id
            ))
            .await;
        assert_eq!(status, 202, "{body}");
        let job = finished(&stack, &env.tenant, &body["job"]).await;
        assert_eq!(job["state"], "succeeded", "destroy {}: {job}", env.name);
        assert_eq!(
            job["attempts"], 1,
            "destroy {} was not held up: {job}",
            env.name
        );
        assert_eq!(
            stack.leftovers(&env.value),
            Vec::<String>::new(),
            "nothing of {} is left",
            env.name
        );
    }
    // A's session that held the locks was ended for it.
    assert!(
        run(&mut holder, "SELECT 1").is_err(),
        "A's locking session outlived B's destroy"
    );
    drop(holder);
    // A's own environments are as they were.
    for env in [&a.shared, &a.dedicated] {
        let now = stack.environment(&env.tenant, &env.id).await;
        assert_eq!(now["state"], "ready", "{now}");
    }
}
