//! Provisioning end to end: environments reach `ready` on the real target, their credentials
//! work and stay in their compartment, cost tags land on the objects, destroy removes
//! everything; validation, drift and stale plans.

use crate::helpers::{Options, Stack, admin_conn, connect_as, connect_to, execute, text1, texts};
use diesel::{PgConnection, RunQueryDsl};
use serde_json::{Value, json};
use std::time::Duration;

const JOB_WITHIN: Duration = Duration::from_secs(60);

fn id(value: &Value) -> String {
    value["id"].as_str().expect("id").to_owned()
}

fn run(conn: &mut PgConnection, sql: &str) -> Result<usize, String> {
    diesel::sql_query(sql)
        .execute(conn)
        .map_err(|e| e.to_string())
}

/// A count from the control database.
fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    texts(conn, sql)
        .first()
        .cloned()
        .flatten()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("count: {sql}"))
}

/// The app uses its environment: creates a table, writes, reads, and reads the baseline.
fn use_environment(credentials: &Value, table: &str) {
    let mut conn = connect_as(credentials)
        .unwrap_or_else(|e| panic!("connect with the handed-out credentials {credentials}: {e}"));
    run(
        &mut conn,
        &format!("CREATE TABLE {table} (id integer PRIMARY KEY, note text)"),
    )
    .expect("create table as the app");
    run(
        &mut conn,
        &format!("INSERT INTO {table} VALUES (1, 'one'), (2, 'two')"),
    )
    .expect("insert");
    let notes = texts(
        &mut conn,
        &format!("SELECT note AS v FROM {table} ORDER BY id"),
    );
    assert_eq!(notes, vec![Some("one".to_owned()), Some("two".to_owned())]);
    run(
        &mut conn,
        "INSERT INTO orders (external_id, customer) VALUES ('o-1', 'c-1')",
    )
    .expect("the app writes the baseline's tables");
    assert_eq!(
        count(&mut conn, "SELECT count(*)::text AS v FROM orders"),
        1
    );
}

/// The COMMENT of an object, if it has one.
fn comment(conn: &mut PgConnection, sql: &str, name: &str) -> Option<String> {
    text1(conn, sql, name)
}

const ROLE_COMMENT: &str =
    "SELECT shobj_description(oid, 'pg_authid') AS v FROM pg_roles WHERE rolname = $1";
const DATABASE_COMMENT: &str =
    "SELECT shobj_description(oid, 'pg_database') AS v FROM pg_database WHERE datname = $1";
const SCHEMA_COMMENT: &str =
    "SELECT obj_description(oid, 'pg_namespace') AS v FROM pg_namespace WHERE nspname = $1";

async fn audit_actions(stack: &Stack, tenant: &str, action: &str) -> Vec<Value> {
    let (status, page) = stack
        .get(&format!("/v1/tenants/{tenant}/audit-events?limit=200"))
        .await;
    assert_eq!(status, 200, "audit events: {page}");
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

/// A shared-tier tenant `tenant` with a `dev` environment that has reached `ready`.
async fn ready_shared_dev(stack: &Stack, tenant: &str) -> Value {
    stack.create_tenant(tenant, "shared").await;
    let accepted = stack
        .create_environment(tenant, json!({"name": "dev", "stage": "development"}))
        .await;
    stack
        .wait_succeeded(tenant, &id(&accepted["job"]), JOB_WITHIN)
        .await;
    stack
        .wait_environment(tenant, &id(&accepted["environment"]), "ready", JOB_WITHIN)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_and_dedicated_reach_ready() {
    let stack = Stack::start(Options::default()).await;
    stack.create_tenant("acme", "shared").await;
    stack.create_tenant("globex", "dedicated").await;
    let a = stack
        .create_environment("acme", json!({"name": "dev", "stage": "development"}))
        .await;
    let b = stack
        .create_environment("globex", json!({"name": "main", "stage": "staging"}))
        .await;
    // A dedicated-tier tenant may still have a schema in the pooled database.
    let c = stack
        .create_environment(
            "globex",
            json!({"name": "sandbox", "stage": "development", "isolation": "shared"}),
        )
        .await;
    let cases = [
        ("acme", &a, "shared"),
        ("globex", &b, "dedicated"),
        ("globex", &c, "shared"),
    ];
    for (tenant, accepted, isolation) in &cases {
        assert_eq!(accepted["environment"]["state"], "pending", "{accepted}");
        assert_eq!(
            accepted["environment"]["isolation"], *isolation,
            "{accepted}"
        );
        assert_eq!(accepted["job"]["operation"], "apply");
        stack
            .wait_succeeded(tenant, &id(&accepted["job"]), JOB_WITHIN)
            .await;
    }
    let mut envs = Vec::new();
    for (tenant, accepted, _) in &cases {
        let env = stack
            .wait_environment(tenant, &id(&accepted["environment"]), "ready", JOB_WITHIN)
            .await;
        envs.push(env);
    }
    let (env_a, env_b, env_c) = (&envs[0], &envs[1], &envs[2]);

    // Credentials work, and every read is audited.
    let creds_a = stack.credentials("acme", &id(env_a)).await;
    let creds_b = stack.credentials("globex", &id(env_b)).await;
    let creds_c = stack.credentials("globex", &id(env_c)).await;
    let names_a = stack.names(env_a);
    let names_b = stack.names(env_b);
    let names_c = stack.names(env_c);
    assert_eq!(creds_a["username"], names_a.app_role.as_str());
    assert_eq!(creds_a["database"], stack.pooled_database.as_str());
    assert_eq!(creds_a["schema"], names_a.schema.as_str());
    assert_eq!(creds_b["database"], names_b.database.as_str());
    assert_eq!(creds_b["schema"], "app");
    use_environment(&creds_a, "widgets");
    use_environment(&creds_b, "widgets");
    use_environment(&creds_c, "secrets_of_globex");

    // Tenant A's credentials stay in A's compartment.
    {
        let mut conn_a = connect_as(&creds_a).expect("connect as A");
        for table in ["orders", "secrets_of_globex"] {
            let error = run(
                &mut conn_a,
                &format!("SELECT * FROM {}.{table}", names_c.schema),
            )
            .expect_err("A must not read B's schema");
            assert!(
                error.contains("permission denied"),
                "A reading {table} of B: {error}"
            );
        }
        let error = run(&mut conn_a, "CREATE TABLE public.intruder (x integer)")
            .expect_err("A must not create in public");
        assert!(error.contains("permission denied"), "{error}");
    }
    let error = connect_to(&creds_a, &names_b.database)
        .map(|_| ())
        .expect_err("A must not connect to B's dedicated database");
    assert!(
        error.contains("permission denied"),
        "A connecting to B's database: {error}"
    );
    let error = connect_to(&creds_b, &stack.pooled_database)
        .map(|_| ())
        .expect_err("B's dedicated app role must not connect to the pooled database");
    assert!(
        error.contains("permission denied"),
        "B connecting to the pooled database: {error}"
    );

    // Isolation guarantees: verified, with evidence.
    for (tenant, env) in [("acme", env_a), ("globex", env_b), ("globex", env_c)] {
        let (status, isolation) = stack
            .get(&format!(
                "/v1/tenants/{tenant}/environments/{}/isolation",
                id(env)
            ))
            .await;
        assert_eq!(status, 200, "{isolation}");
        let guarantees = isolation["guarantees"].as_array().expect("guarantees");
        let layers: Vec<&str> = guarantees
            .iter()
            .filter_map(|g| g["layer"].as_str())
            .collect();
        for layer in ["data", "identity", "metadata", "compute"] {
            assert!(layers.contains(&layer), "no {layer} guarantee: {isolation}");
        }
        for guarantee in guarantees {
            // Every wall and default holds; the tier's gaps are listed as such, with where
            // they are provided.
            match guarantee["status"].as_str() {
                Some("verified") => assert_ne!(guarantee["enforcement"], "none", "{guarantee}"),
                Some("not_provided") => {
                    assert_eq!(guarantee["enforcement"], "none", "{guarantee}");
                    assert!(guarantee["provided_by"].is_string(), "{guarantee}");
                }
                _ => panic!("not verified: {guarantee}"),
            }
            assert!(
                guarantee["evidence"].as_str().is_some_and(|e| e.len() > 10),
                "evidence: {guarantee}"
            );
        }
    }

    // One audit event per credentials read.
    let reads_a = audit_actions(&stack, "acme", "credentials.read").await;
    assert_eq!(reads_a.len(), 1, "{reads_a:?}");
    assert_eq!(reads_a[0]["target"], format!("environment/{}", id(env_a)));
    let reads_b = audit_actions(&stack, "globex", "credentials.read").await;
    assert_eq!(reads_b.len(), 2, "{reads_b:?}");
    stack.credentials("acme", &id(env_a)).await;
    assert_eq!(
        audit_actions(&stack, "acme", "credentials.read")
            .await
            .len(),
        2
    );
    assert_eq!(
        reads_a[0]["actor"], "ops@acme.test",
        "read by the tenant's operator: {reads_a:?}"
    );
    // The platform admin is not one of the tenant's people: refused, and the refusal audited.
    let (status, refused) = stack
        .get(&format!(
            "/v1/tenants/acme/environments/{}/credentials",
            id(env_a)
        ))
        .await;
    assert_eq!(status, 403, "{refused}");
    let denied: Vec<Value> = audit_actions(&stack, "acme", "credentials.read")
        .await
        .into_iter()
        .filter(|e| e["result"] == "denied")
        .collect();
    assert_eq!(denied.len(), 1, "the refusal is audited: {denied:?}");

    // Cost tags: on the environment and its resource rows in the control database, never in a
    // catalog comment on the target (readable by every role on the server).
    for (tenant, env, name, stage) in [
        ("acme", env_a, "dev", "development"),
        ("globex", env_b, "main", "staging"),
        ("globex", env_c, "sandbox", "development"),
    ] {
        let tags = &env["cost_tags"];
        let expected = json!({"tenant": tenant, "environment": name, "stage": stage,
            "region": "eu-west-1", "business_unit": "wms", "cost_center": "cc-1"});
        for (key, value) in expected.as_object().expect("object") {
            assert_eq!(&tags[key], value, "cost tag {key} of {name}: {tags}");
        }
        let names = stack.names(env);
        let mut server = admin_conn("postgres");
        for role in [&names.app_role, &names.owner_role] {
            assert_eq!(
                comment(&mut server, ROLE_COMMENT, role),
                None,
                "comment on role {role}"
            );
        }
        if env["isolation"] == "dedicated" {
            assert_eq!(
                comment(&mut server, DATABASE_COMMENT, &names.database),
                None,
                "comment on database {}",
                names.database
            );
        }
        // Every resource row the control database keeps carries the final tags.
        #[derive(diesel::QueryableByName)]
        struct ResourceTags {
            #[diesel(sql_type = diesel::sql_types::Text)]
            kind: String,
            #[diesel(sql_type = diesel::sql_types::Jsonb)]
            cost_tags: Value,
        }
        let rows: Vec<ResourceTags> = diesel::sql_query(
            "SELECT kind, cost_tags FROM resources WHERE environment_id = $1 AND state = 'present'",
        )
        .bind::<diesel::sql_types::Uuid, _>(
            uuid::Uuid::parse_str(env["id"].as_str().expect("id")).expect("uuid"),
        )
        .load(&mut stack.control_db())
        .expect("resource rows");
        assert!(
            rows.len() >= 4,
            "{name}: expected roles, schema, grants…, got {}",
            rows.len()
        );
        for row in &rows {
            assert_eq!(
                &row.cost_tags, tags,
                "{name}: tags of its {} resource row",
                row.kind
            );
        }
        let mut database = admin_conn(&names.database);
        assert_eq!(
            comment(&mut database, SCHEMA_COMMENT, &names.schema),
            None,
            "comment on schema {} in {}",
            names.schema,
            names.database
        );
    }

    // Destroy, with the apps still connected: nothing of the environments remains.
    let mut live = [&creds_a, &creds_b, &creds_c].map(|c| connect_as(c).expect("app session"));
    for (tenant, env) in [("acme", env_a), ("globex", env_b), ("globex", env_c)] {
        let (status, body) = stack
            .delete(&format!("/v1/tenants/{tenant}/environments/{}", id(env)))
            .await;
        assert_eq!(status, 202, "destroy: {body}");
        assert_eq!(body["job"]["operation"], "destroy", "{body}");
        stack
            .wait_succeeded(tenant, &id(&body["job"]), JOB_WITHIN)
            .await;
        stack
            .wait_environment(tenant, &id(env), "destroyed", JOB_WITHIN)
            .await;
        assert_eq!(
            stack.leftovers(env),
            Vec::<String>::new(),
            "left after destroy"
        );
        let (status, body) = stack
            .call(
                reqwest::Method::GET,
                &format!("/v1/tenants/{tenant}/environments/{}/credentials", id(env)),
                &stack.operator(tenant).await,
                None,
            )
            .await;
        assert_eq!(
            status, 409,
            "credentials of a destroyed environment: {body}"
        );
    }
    for conn in &mut live {
        assert!(
            run(conn, "SELECT 1").is_err(),
            "an app session outlived its environment"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_tags_required() {
    let stack = Stack::start(Options {
        no_workers: true,
        ..Options::default()
    })
    .await;
    stack
        .create_tenant_with_tags("untagged", "shared", json!({}))
        .await;
    let (status, problem) = stack
        .post(
            "/v1/tenants/untagged/environments",
            json!({"name": "dev", "stage": "development"}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {problem}"))
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert!(fields.contains(&"cost_tags.business_unit"), "{problem}");
    assert!(fields.contains(&"cost_tags.cost_center"), "{problem}");
    for filled_in in ["tenant", "environment", "stage", "region"] {
        assert!(
            !fields.contains(&format!("cost_tags.{filled_in}").as_str()),
            "{problem}"
        );
    }
    // Nothing was written.
    let mut control = stack.control_db();
    for table in ["environments", "jobs", "job_events", "outbox"] {
        assert_eq!(
            count(
                &mut control,
                &format!("SELECT count(*)::text AS v FROM {table}")
            ),
            0,
            "rows in {table} after a refused create"
        );
    }
    // The same request with the tags goes through.
    let accepted = stack
        .create_environment(
            "untagged",
            json!({"name": "dev", "stage": "development",
                   "cost_tags": {"business_unit": "edi", "cost_center": "cc-9"}}),
        )
        .await;
    assert_eq!(accepted["environment"]["cost_tags"]["cost_center"], "cc-9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_detected_and_repaired() {
    let stack = Stack::start(Options::default()).await;
    let env = ready_shared_dev(&stack, "initech").await;
    let before = stack.credentials("initech", &id(&env)).await;
    let names = stack.names(&env);

    // Someone drops the app role by hand.
    {
        let mut pooled = admin_conn(&stack.pooled_database);
        execute(&mut pooled, &format!("DROP OWNED BY {}", names.app_role));
        execute(&mut pooled, &format!("DROP ROLE {}", names.app_role));
    }
    assert!(connect_as(&before).is_err(), "the app role is gone");

    let job = stack
        .job_action("initech", "dev", "drift-check", None)
        .await;
    stack.wait_succeeded("initech", &id(&job), JOB_WITHIN).await;
    let drifted = stack.environment("initech", "dev").await;
    assert_eq!(drifted["state"], "drifted", "{drifted}");
    let report = drifted["drift"].to_string();
    assert!(
        report.contains(&format!("create role {}", names.app_role)),
        "the drift report names the role: {report}"
    );

    // Apply repairs it, with the same password.
    let job = stack.job_action("initech", "dev", "apply", None).await;
    stack.wait_succeeded("initech", &id(&job), JOB_WITHIN).await;
    let repaired = stack
        .wait_environment("initech", "dev", "ready", JOB_WITHIN)
        .await;
    assert!(repaired["drift"].is_null(), "{repaired}");
    let after = stack.credentials("initech", &id(&env)).await;
    assert_eq!(
        after["password"], before["password"],
        "the password survives the repair"
    );
    use_environment(&before, "after_repair");

    // Nothing left to do.
    let job = stack
        .job_action("initech", "dev", "drift-check", None)
        .await;
    let job = stack.wait_succeeded("initech", &id(&job), JOB_WITHIN).await;
    assert_eq!(
        job["plan"]["actions"].as_array().map(Vec::len),
        Some(0),
        "drift check after repair: {}",
        job["plan"]
    );
    let env = stack.environment("initech", "dev").await;
    assert_eq!(env["state"], "ready", "{env}");
}

/// Isolation broken behind Bulkhead's back (the app role may connect to the canary database):
/// the next apply's probes find it, the environment is marked with the violation, the
/// isolation report shows it with the server's answer, and the audit trail records it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_violation_marked_and_audited() {
    let stack = Stack::start(Options::default()).await;
    let env = ready_shared_dev(&stack, "umbrella").await;
    let names = stack.names(&env);
    let guarantee = |report: &Value, mechanism: &str| -> Value {
        report["guarantees"]
            .as_array()
            .expect("guarantees")
            .iter()
            .find(|g| g["mechanism"] == mechanism)
            .cloned()
            .unwrap_or_else(|| panic!("no {mechanism} in {report}"))
    };
    let (status, report) = stack
        .get("/v1/tenants/umbrella/environments/dev/isolation")
        .await;
    assert_eq!(status, 200, "{report}");
    let connect = guarantee(&report, "database_connect_privilege");
    assert_eq!(connect["status"], "verified", "{connect}");
    // "as role: CONNECT on none of …; connect to database <canary> at host:port as role → refused: …"
    let canary = connect["evidence"]
        .as_str()
        .and_then(|e| e.split("connect to database ").nth(1))
        .and_then(|e| e.split_whitespace().next())
        .expect("canary database in the evidence")
        .to_owned();

    let mut server = admin_conn("postgres");
    execute(
        &mut server,
        &format!("GRANT CONNECT ON DATABASE {canary} TO {}", names.app_role),
    );
    let job = stack.job_action("umbrella", "dev", "apply", None).await;
    stack
        .wait_succeeded("umbrella", &id(&job), JOB_WITHIN)
        .await;
    let marked = stack.environment("umbrella", "dev").await;
    assert_eq!(marked["state"], "drifted", "{marked}");
    assert!(
        marked["drift"]["isolation_violations"]
            .to_string()
            .contains("database_connect_privilege"),
        "{marked}"
    );
    let (_, report) = stack
        .get("/v1/tenants/umbrella/environments/dev/isolation")
        .await;
    let connect = guarantee(&report, "database_connect_privilege");
    assert_eq!(connect["status"], "violated", "{connect}");
    assert!(
        connect["evidence"]
            .as_str()
            .is_some_and(|e| e.ends_with("→ accepted")),
        "{connect}"
    );
    assert_eq!(
        guarantee(&report, "no_create_on_public")["status"],
        "verified"
    );
    let audited = audit_actions(&stack, "umbrella", "environment.isolation_violated").await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert!(
        audited[0]["details"].to_string().contains(&canary),
        "{audited:?}"
    );

    // Repaired by hand, the next apply verifies again and the environment is ready.
    execute(
        &mut server,
        &format!(
            "REVOKE CONNECT ON DATABASE {canary} FROM {}",
            names.app_role
        ),
    );
    let job = stack.job_action("umbrella", "dev", "apply", None).await;
    stack
        .wait_succeeded("umbrella", &id(&job), JOB_WITHIN)
        .await;
    stack
        .wait_environment("umbrella", "dev", "ready", JOB_WITHIN)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_plan_refused() {
    let stack = Stack::start(Options::default()).await;
    let env = ready_shared_dev(&stack, "umbrella").await;
    let names = stack.names(&env);

    let plan_job = stack.job_action("umbrella", "dev", "plan", None).await;
    let plan_job = stack
        .wait_succeeded("umbrella", &id(&plan_job), JOB_WITHIN)
        .await;
    assert!(plan_job["plan"]["actions"].is_array(), "{plan_job}");
    assert!(plan_job["plan_hash"].is_string(), "{plan_job}");

    // The target changes after the review: a baseline record disappears.
    let mut pooled = admin_conn(&stack.pooled_database);
    let table = "bulkhead_meta.baseline";
    let mine = format!("schema_name = '{}'", names.schema);
    execute(
        &mut pooled,
        &format!("DELETE FROM {table} WHERE {mine} AND id = '0002_order_lines'"),
    );

    let apply = stack
        .job_action(
            "umbrella",
            "dev",
            "apply",
            Some(json!({"plan_job_id": id(&plan_job)})),
        )
        .await;
    let apply = stack.wait_job("umbrella", &id(&apply), JOB_WITHIN).await;
    assert_eq!(apply["state"], "failed", "{apply}");
    let error = apply["error"].as_str().unwrap_or_default();
    assert!(error.contains("stale plan"), "error: {error}");
    assert_eq!(apply["attempts"], 1, "a stale plan is not retried: {apply}");
    // Nothing was applied: the record is still missing.
    let left = texts(
        &mut pooled,
        &format!("SELECT id AS v FROM {table} WHERE {mine} ORDER BY id"),
    );
    assert_eq!(
        left,
        vec![
            Some("0001_orders".to_owned()),
            Some("0004_inventory".to_owned())
        ]
    );
}

/// Offboarding a tenant tears down every environment it has: ready ones (shared and
/// dedicated) and one whose apply was only just queued. The last destroy marks the tenant
/// `offboarded`, and nothing of it is left on the targets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_destroys_every_environment() {
    let stack = Stack::start(Options::default()).await;
    let dev = ready_shared_dev(&stack, "umbrella").await;
    let credentials = stack.credentials("umbrella", &id(&dev)).await;
    let vault = stack
        .create_environment(
            "umbrella",
            json!({"name": "vault", "stage": "staging", "isolation": "dedicated"}),
        )
        .await;
    stack
        .wait_succeeded("umbrella", &id(&vault["job"]), JOB_WITHIN)
        .await;
    let vault = stack
        .wait_environment("umbrella", &id(&vault["environment"]), "ready", JOB_WITHIN)
        .await;
    // Its apply may be queued, running or done when the tenant goes: it ends destroyed anyway.
    let late = stack
        .create_environment("umbrella", json!({"name": "late", "stage": "development"}))
        .await["environment"]
        .clone();

    let (status, tenant) = stack.delete("/v1/tenants/umbrella").await;
    assert_eq!(status, 202, "{tenant}");
    assert_eq!(tenant["state"], "offboarding", "{tenant}");

    let deadline = std::time::Instant::now() + JOB_WITHIN;
    loop {
        let (status, tenant) = stack.get("/v1/tenants/umbrella").await;
        assert_eq!(status, 200, "{tenant}");
        if tenant["state"] == "offboarded" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tenant not offboarded within {JOB_WITHIN:?}: {tenant}\n{}",
            stack.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for env in [&dev, &vault, &late] {
        let now = stack.environment("umbrella", &id(env)).await;
        assert_eq!(now["state"], "destroyed", "{now}");
        assert_eq!(
            stack.leftovers(env),
            Vec::<String>::new(),
            "left of {} after offboarding",
            env["name"]
        );
    }
    assert!(
        connect_as(&credentials).is_err(),
        "the offboarded tenant's credentials no longer work"
    );
    let offboarded = audit_actions(&stack, "umbrella", "tenant.offboarded").await;
    assert_eq!(offboarded.len(), 1, "audited once: {offboarded:?}");
    assert!(
        offboarded[0]["actor"]
            .as_str()
            .unwrap_or_default()
            .starts_with("worker:"),
        "{offboarded:?}"
    );
    let (status, refused) = stack
        .post(
            "/v1/tenants/umbrella/environments",
            json!({"name": "again", "stage": "development"}),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
}
