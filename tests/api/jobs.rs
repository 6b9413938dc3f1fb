//! Environments and jobs through HTTP with no worker running: `Idempotency-Key` on every POST
//! (and DELETE) that creates a job, and cancel of jobs that have not started.

use crate::helpers::TestApp;
use serde_json::{Value, json};

const REUSED: &str = "https://bulkhead.dev/problems/idempotency-key-reused";

/// Sends `method path` as the admin with an optional JSON body and an `Idempotency-Key`.
async fn send_with_key(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app
        .client
        .request(method, app.url(path))
        .bearer_auth(&app.admin)
        .header("Idempotency-Key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn environment_body(name: &str) -> Value {
    json!({"name": name, "stage": "development", "cost_tags": {"business_unit": "wms"}})
}

/// Wake-up messages written to the outbox for one job.
fn wakeups(app: &TestApp, job_id: &str) -> i64 {
    let mut conn = app.db();
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::RunQueryDsl::get_result::<Count>(
        diesel::sql_query(format!(
            "SELECT count(*) AS n FROM outbox WHERE job_id = '{job_id}'::uuid"
        )),
        &mut conn,
    )
    .expect("count")
    .n
}

#[tokio::test]
async fn every_job_creating_request_honours_its_idempotency_key() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let environments = "/v1/tenants/acme/environments";
    let post = reqwest::Method::POST;

    // Create environment: a retry answers the first response and creates nothing more.
    let (status, first) = send_with_key(
        &app,
        post.clone(),
        environments,
        "create-dev",
        Some(environment_body("dev")),
    )
    .await;
    assert_eq!(status, 202, "{first}");
    let counts = (
        app.count("environments"),
        app.count("jobs"),
        app.count("outbox"),
    );
    let (status, again) = send_with_key(
        &app,
        post.clone(),
        environments,
        "create-dev",
        Some(environment_body("dev")),
    )
    .await;
    assert_eq!(
        (status, &again),
        (202, &first),
        "a replay answers the same body"
    );
    assert_eq!(
        (
            app.count("environments"),
            app.count("jobs"),
            app.count("outbox")
        ),
        counts
    );
    let (status, other) = send_with_key(
        &app,
        post.clone(),
        environments,
        "create-dev",
        Some(environment_body("qa")),
    )
    .await;
    assert_eq!(status, 422, "{other}");
    assert_eq!(other["type"], REUSED);
    assert_eq!(app.count("environments"), counts.0, "nothing written");

    // Apply, plan, drift-check and destroy: one job per key, the key bound to its request.
    let actions = [
        (
            post.clone(),
            "/v1/tenants/acme/environments/dev/apply",
            "apply",
        ),
        (
            post.clone(),
            "/v1/tenants/acme/environments/dev/plan",
            "plan",
        ),
        (
            post.clone(),
            "/v1/tenants/acme/environments/dev/drift-check",
            "drift_check",
        ),
        (
            reqwest::Method::DELETE,
            "/v1/tenants/acme/environments/dev",
            "destroy",
        ),
    ];
    for (method, path, operation) in actions {
        let key = format!("key-{operation}");
        let (status, first) = send_with_key(&app, method.clone(), path, &key, None).await;
        assert_eq!(status, 202, "{operation}: {first}");
        assert_eq!(first["job"]["operation"], operation, "{first}");
        let jobs = app.count("jobs");
        let (status, again) = send_with_key(&app, method.clone(), path, &key, None).await;
        assert_eq!((status, &again), (202, &first), "{operation} replayed");
        assert_eq!(app.count("jobs"), jobs, "{operation}: no second job");
    }
    // A key is bound to its request: on another endpoint it is refused, whatever it was first.
    for (key, elsewhere) in [
        ("create-dev", "/v1/tenants/acme/environments/dev/plan"),
        ("key-apply", "/v1/tenants/acme/environments/dev/plan"),
        ("key-plan", "/v1/tenants/acme/environments/dev/apply"),
        ("key-drift_check", "/v1/tenants/acme/environments/dev/apply"),
        ("key-destroy", "/v1/tenants/acme/environments/dev/plan"),
    ] {
        let jobs = app.count("jobs");
        let (status, reused) = send_with_key(&app, post.clone(), elsewhere, key, None).await;
        assert_eq!(status, 422, "{key} on {elsewhere}: {reused}");
        assert_eq!(reused["type"], REUSED);
        assert_eq!(app.count("jobs"), jobs);
    }
    // An apply body is part of the request: another plan_job_id under the same key is refused.
    let (status, refused) = send_with_key(
        &app,
        post.clone(),
        "/v1/tenants/acme/environments/dev/apply",
        "key-apply",
        Some(json!({"plan_job_id": uuid::Uuid::now_v7()})),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["type"], REUSED);
}

#[tokio::test]
async fn cancel_of_a_queued_job_wakes_the_next_in_line() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let accepted = app.create_environment("acme", "dev").await;
    let apply = accepted["job"]["id"].as_str().expect("id").to_owned();
    let plan = app.job_action("acme", "dev", "plan").await;
    let plan_id = plan["id"].as_str().expect("id").to_owned();
    assert_eq!(plan["queue_position"], 1, "{plan}");
    assert_eq!(wakeups(&app, &plan_id), 1);

    let cancel = format!("/v1/tenants/acme/jobs/{apply}/cancel");
    let (status, canceled) = app.post(&cancel, &app.admin, json!({})).await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["state"], "canceled");
    assert!(canceled["finished_at"].is_string(), "{canceled}");
    // The plan is first now, and has a fresh wake-up on its way.
    let (_, now) = app
        .get(&format!("/v1/tenants/acme/jobs/{plan_id}"), &app.admin)
        .await;
    assert_eq!(now["queue_position"], 0, "{now}");
    assert_eq!(wakeups(&app, &plan_id), 2);

    let (status, again) = app.post(&cancel, &app.admin, json!({})).await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["type"], "https://bulkhead.dev/problems/conflict");

    // Canceling one that is not first wakes nobody.
    let second = app.job_action("acme", "dev", "apply").await;
    let second_id = second["id"].as_str().expect("id").to_owned();
    let (status, _) = app
        .post(
            &format!("/v1/tenants/acme/jobs/{second_id}/cancel"),
            &app.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(wakeups(&app, &plan_id), 2);
}

/// A retry waiting between attempts of an apply that had started changing the target: canceling
/// it says the environment is `failed` (partly changed), as a cancel at a step boundary does, so
/// the next apply may start; a first attempt that never ran leaves it as it was.
#[tokio::test]
async fn cancel_of_a_waiting_retry_marks_a_partly_changed_environment_failed() {
    use bulkhead_core::lifecycle::EnvironmentState;
    use bulkhead_core::store::environments;
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let accepted = app.create_environment("acme", "dev").await;
    let env_id: uuid::Uuid = accepted["environment"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("environment id");
    let apply = accepted["job"]["id"].as_str().expect("id").to_owned();
    // The first attempt ran (the environment is provisioning) and failed: a retry waits.
    let mut db = app.db();
    environments::set_state(&mut db, env_id, EnvironmentState::Provisioning, None)
        .expect("provisioning");
    diesel::RunQueryDsl::execute(
        diesel::sql_query(format!("UPDATE jobs SET attempts = 1 WHERE id = '{apply}'")),
        &mut db,
    )
    .expect("one attempt");
    let (status, body) = app
        .post(
            &format!("/v1/tenants/acme/jobs/{apply}/cancel"),
            &app.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, env) = app
        .get("/v1/tenants/acme/environments/dev", &app.admin)
        .await;
    assert_eq!(env["state"], "failed", "{env}");
    // A job that never ran changes nothing when canceled.
    let plan = app.job_action("acme", "dev", "apply").await;
    let (status, _) = app
        .post(
            &format!(
                "/v1/tenants/acme/jobs/{}/cancel",
                plan["id"].as_str().expect("id")
            ),
            &app.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, env) = app
        .get("/v1/tenants/acme/environments/dev", &app.admin)
        .await;
    assert_eq!(env["state"], "failed", "{env}");
}

/// The jobs list shows each job's place in its own environment's line (computed for the whole
/// page at once): the same answer as reading the job alone, on every page.
#[tokio::test]
async fn the_jobs_list_shows_each_job_s_place_in_its_environment_s_line() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let id = |job: &Value| job["id"].as_str().expect("id").to_owned();
    let dev = app.create_environment("acme", "dev").await;
    let dev_apply = id(&dev["job"]);
    let stg_apply = id(&app.create_environment("acme", "stg").await["job"]);
    let dev_plan = id(&app.job_action("acme", "dev", "plan").await);
    let stg_plan = id(&app.job_action("acme", "stg", "plan").await);
    let dev_drift = id(&app.job_action("acme", "dev", "drift-check").await);
    // A finished job has no place, and the one behind it moves up.
    let (status, _) = app
        .post(
            &format!("/v1/tenants/acme/jobs/{dev_plan}/cancel"),
            &app.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let expected = [
        (&dev_apply, json!(0)),
        (&stg_apply, json!(0)),
        (&dev_plan, Value::Null),
        (&stg_plan, json!(1)),
        (&dev_drift, json!(1)),
    ];

    let (status, all) = app.get("/v1/tenants/acme/jobs", &app.admin).await;
    assert_eq!(status, 200, "{all}");
    let items = all["items"].as_array().expect("items");
    assert_eq!(items.len(), expected.len(), "{all}");
    for (job, position) in &expected {
        let listed = items
            .iter()
            .find(|item| item["id"] == ***job)
            .expect("listed");
        assert_eq!(listed["queue_position"], *position, "{listed}");
        let (_, alone) = app
            .get(&format!("/v1/tenants/acme/jobs/{job}"), &app.admin)
            .await;
        assert_eq!(*listed, alone, "the list and the job agree");
    }

    // Two at a time: the same positions on every page.
    let (mut paged, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/tenants/acme/jobs?limit=2&cursor={cursor}"),
            None => "/v1/tenants/acme/jobs?limit=2".to_owned(),
        };
        let (status, page) = app.get(&path, &app.admin).await;
        assert_eq!(status, 200, "{page}");
        paged.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(&paged, items);
    // Only one environment's jobs: the positions stay those in its own line.
    let dev = dev["environment"]["id"].as_str().expect("environment");
    let (_, only_dev) = app
        .get(
            &format!("/v1/tenants/acme/jobs?environment={dev}"),
            &app.admin,
        )
        .await;
    let positions: Vec<&Value> = only_dev["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| &item["queue_position"])
        .collect();
    assert_eq!(
        positions,
        [&json!(0), &Value::Null, &json!(1)],
        "{only_dev}"
    );
}

/// DELETE of an environment supersedes what had not started, and asking again answers the
/// destroy already on its way instead of queueing a second one.
#[tokio::test]
async fn destroy_cancels_what_had_not_started_and_is_asked_for_once() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let accepted = app.create_environment("acme", "dev").await;
    let apply = accepted["job"]["id"].clone();

    let path = "/v1/tenants/acme/environments/dev";
    let (status, first) = app.delete(path, &app.admin).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["job"]["operation"], "destroy");
    assert_eq!(first["job"]["queue_position"], 0, "nothing ahead: {first}");
    let (_, applied) = app
        .get(
            &format!("/v1/tenants/acme/jobs/{}", apply.as_str().expect("id")),
            &app.admin,
        )
        .await;
    assert_eq!(applied["state"], "canceled", "{applied}");

    let jobs = app.count("jobs");
    let (status, again) = app.delete(path, &app.admin).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["job"]["id"], first["job"]["id"], "the same destroy");
    assert_eq!(app.count("jobs"), jobs);
}

/// The OpenAPI document describes the job contract as it behaves: every request that creates
/// a job takes an `Idempotency-Key` and answers 202 with its schema, cancel answers 200 or 202,
/// and every route of the environments and jobs contract is there with its methods.
#[tokio::test]
async fn openapi_documents_the_job_contract() {
    let app = TestApp::spawn().await;
    let (status, document) = app.get("/openapi.json", &app.admin).await;
    assert_eq!(status, 200);
    let paths = &document["paths"];
    let env = "/v1/tenants/{tenant}/environments/{env}";
    for (path, method, schema) in [
        (
            "/v1/tenants/{tenant}/environments",
            "post",
            "EnvironmentAccepted",
        ),
        (&format!("{env}/plan")[..], "post", "JobAccepted"),
        (&format!("{env}/apply")[..], "post", "JobAccepted"),
        (&format!("{env}/drift-check")[..], "post", "JobAccepted"),
        (env, "delete", "JobAccepted"),
    ] {
        let operation = &paths[path][method];
        assert!(operation.is_object(), "{method} {path} documented");
        let headers: Vec<&str> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "header")
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(headers, ["Idempotency-Key"], "{method} {path}");
        assert_eq!(
            operation["responses"]["202"]["content"]["application/json"]["schema"]["$ref"],
            format!("#/components/schemas/{schema}"),
            "{method} {path}"
        );
    }
    let states = document["components"]["schemas"]["JobView"]["properties"]["state"]["description"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for state in [
        "queued",
        "planned",
        "awaiting_approval",
        "approved",
        "running",
        "succeeded",
        "failed",
        "canceled",
    ] {
        assert!(
            states.contains(state),
            "JobView.state lists {state}: {states}"
        );
    }
    let cancel = &paths["/v1/tenants/{tenant}/jobs/{job}/cancel"]["post"]["responses"];
    for status in ["200", "202", "409"] {
        assert!(
            cancel[status].is_object(),
            "cancel documents {status}: {cancel}"
        );
    }
    for (path, methods) in [
        ("/v1/tenants/{tenant}/environments", &["get", "post"][..]),
        (env, &["get", "delete"][..]),
        (&format!("{env}/credentials")[..], &["get"][..]),
        (&format!("{env}/isolation")[..], &["get"][..]),
        ("/v1/tenants/{tenant}/jobs", &["get"][..]),
        ("/v1/tenants/{tenant}/jobs/{job}", &["get"][..]),
        ("/v1/tenants/{tenant}/jobs/{job}/events", &["get"][..]),
    ] {
        for method in methods {
            assert!(
                paths[path][method].is_object(),
                "{method} {path} documented"
            );
        }
    }
}

/// Credentials go to the tenant's own people: a platform admin is refused (and audited) until it
/// makes itself a member, which the members list then shows.
#[tokio::test]
async fn a_platform_admin_reads_credentials_only_as_a_member() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    app.create_environment("acme", "dev").await;
    let path = "/v1/tenants/acme/environments/dev/credentials";
    let (status, refused) = app.get(path, &app.admin).await;
    assert_eq!(status, 403, "{refused}");

    let (status, member) = app
        .post(
            "/v1/tenants/acme/members",
            &app.admin,
            json!({"email": crate::helpers::ADMIN_EMAIL, "role": "tenant_admin"}),
        )
        .await;
    app.accept_membership("acme", &app.admin).await;
    assert_eq!(status, 201, "{member}");
    // Authorized now; nothing is provisioned yet (no worker runs here), hence 409, not 403.
    let (status, body) = app.get(path, &app.admin).await;
    assert_eq!(status, 409, "{body}");
    let (_, members) = app.get("/v1/tenants/acme/members", &app.admin).await;
    assert!(
        members.to_string().contains(crate::helpers::ADMIN_EMAIL),
        "{members}"
    );
}

/// The worker stores an environment's password before its first apply runs; the API hands it
/// out only once the environment is `ready` (its walls verified), and no answer about
/// credentials may be cached on the way.
#[tokio::test]
async fn credentials_wait_for_ready_and_are_never_cached() {
    use bulkhead_core::store::environments::{self, StoredCredentials};
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let created = app.create_environment("acme", "dev").await;
    let id: uuid::Uuid = created["environment"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("environment id");
    let (status, member) = app
        .post(
            "/v1/tenants/acme/members",
            &app.admin,
            json!({"email": crate::helpers::ADMIN_EMAIL, "role": "tenant_admin"}),
        )
        .await;
    app.accept_membership("acme", &app.admin).await;
    assert_eq!(status, 201, "{member}");

    // As the worker does before the first apply: sealed with the deployment's key. A password
    // with URL-reserved characters and an IPv6 host must survive the URL handed out.
    let password = "s3cret-p@ss:w/o?r#d%41";
    let config = bulkhead_core::config::Config::from_lookup(|_| None).expect("config");
    let sealed = config
        .credentials_keys
        .seal(password, id.as_bytes())
        .expect("seal");
    let mut db = app.db();
    environments::store_credentials_once(
        &mut db,
        &StoredCredentials {
            environment_id: id,
            host: "::1".into(),
            port: 5432,
            database: "bk_pool".into(),
            schema: format!("bk_{}", id.simple()),
            username: format!("bk_{}_app", id.simple()),
            nonce: sealed.nonce,
            ciphertext: sealed.ciphertext,
            created_at: chrono::Utc::now(),
            key_id: sealed.key_id,
        },
    )
    .expect("store credentials");

    let read = || async {
        let response = app
            .client
            .get(app.url("/v1/tenants/acme/environments/dev/credentials"))
            .bearer_auth(&app.admin)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let cache = response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Value = response.json().await.expect("json body");
        (status, cache, kind, body)
    };
    // A path the state machine allows from `pending`, through every state that is not ready.
    use bulkhead_core::lifecycle::EnvironmentState::{self, *};
    let path: [EnvironmentState; 5] = [Pending, Provisioning, Failed, Provisioning, Drifted];
    for state in path {
        if state != Pending {
            environments::set_state(&mut db, id, state, None).expect("state");
        }
        let (status, cache, kind, body) = read().await;
        assert_eq!(status, 409, "{state}: {body}");
        assert_eq!(cache.as_deref(), Some("no-store"), "{state}");
        assert_eq!(kind.as_deref(), Some("application/problem+json"));
        assert_eq!(body["title"], "The environment is not ready");
        assert_eq!(body["type"], "https://bulkhead.dev/problems/conflict");
        assert_eq!(
            body["detail"],
            format!("environment is {state}; credentials are available once it is ready")
        );
        assert!(!body.to_string().contains("s3cret"), "{body}");
    }
    environments::set_state(&mut db, id, Ready, None).expect("ready");
    // The table is the one source: a write it does not allow (ready → destroyed without a
    // destroy) is refused and changes nothing.
    let refused = environments::set_state(&mut db, id, Destroyed, None);
    assert!(
        matches!(
            refused,
            Err(bulkhead_core::store::StoreError::Transition(_))
        ),
        "{refused:?}"
    );
    let (status, cache, _, body) = read().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(cache.as_deref(), Some("no-store"));
    assert_eq!(body["password"], password);
    let url = body["url"].as_str().expect("url");
    assert_eq!(
        url,
        format!(
            "postgres://bk_{0}_app:s3cret-p%40ss%3Aw%2Fo%3Fr%23d%2541@[::1]:5432/bk_pool\
             ?options=-csearch_path%3Dbk_{0}",
            id.simple()
        )
    );
    let parsed = bulkhead_core::dburl::ConnUrl::parse(url).expect("a URL");
    assert_eq!(parsed.password().as_deref(), Some(password));
    assert_eq!(parsed.host().as_deref(), Some("::1"));
}

/// The isolation view's schema carries the three statuses, the enforcement and the gaps'
/// `provided_by`; credentials document their 409 and `Cache-Control: no-store`.
#[tokio::test]
async fn openapi_documents_the_isolation_truth() {
    let app = TestApp::spawn().await;
    let (status, document) = app.get("/openapi.json", &app.admin).await;
    assert_eq!(status, 200);
    let schemas = &document["components"]["schemas"];
    let view = &schemas["GuaranteeView"]["properties"];
    for field in [
        "layer",
        "mechanism",
        "status",
        "enforcement",
        "evidence",
        "provided_by",
        "checked_at",
    ] {
        assert!(view[field].is_object(), "GuaranteeView.{field}: {view}");
    }
    let values = |name: &str| -> Vec<String> {
        schemas[name]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is an enum: {}", schemas[name]))
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        values("GuaranteeStatus"),
        ["verified", "violated", "not_provided"]
    );
    assert_eq!(values("Enforcement"), ["wall", "default", "none"]);
    let credentials = &document["paths"]["/v1/tenants/{tenant}/environments/{env}/credentials"]["get"]
        ["responses"];
    for status in ["200", "409"] {
        assert!(
            credentials[status]["headers"]["Cache-Control"].is_object(),
            "credentials {status} documents Cache-Control: {credentials}"
        );
    }
}
