//! Costs through the API: charges recorded by the metering store code (the path a pass writes
//! through), read back grouped by tag, environment, SKU and month, exported as FOCUS CSV, and
//! budgets with their threshold audit. Who may read what: a tenant's costs are a 404 to other
//! tenants, a partner's platform view covers only its tenants.

use crate::helpers::TestApp;
use bulkhead_core::domain::Isolation;
use bulkhead_core::metering::{self, Measurement, Metered, Pricer};
use bulkhead_core::pricing::Catalog;
use bulkhead_core::store;
use chrono::{Duration, Utc};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::str::FromStr;
use uuid::Uuid;

fn dec(v: &Value) -> Decimal {
    Decimal::from_str(v.as_str().unwrap_or_else(|| panic!("decimal string: {v}"))).expect("decimal")
}

/// Creates `name` in `tenant` with extra cost tags; its id and tags.
async fn environment(
    app: &TestApp,
    tenant: &str,
    name: &str,
    isolation: &str,
    tags: Value,
) -> (Uuid, Value) {
    let mut cost_tags = json!({"business_unit": "wms"});
    for (k, v) in tags.as_object().expect("tags") {
        cost_tags[k] = v.clone();
    }
    let (status, body) = app
        .post(
            &format!("/v1/tenants/{tenant}/environments"),
            &app.admin,
            json!({"name": name, "stage": "development", "isolation": isolation, "cost_tags": cost_tags}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let env = &body["environment"];
    (
        Uuid::from_str(env["id"].as_str().expect("id")).expect("uuid"),
        env["cost_tags"].clone(),
    )
}

/// Records one pass over `envs` (id, tenant, isolation, tags, stored bytes) that stood for the
/// last `minutes`, through the metering store code; returns the charges it wrote.
fn record(
    app: &TestApp,
    envs: &[(Uuid, Uuid, Isolation, Value, i64)],
    minutes: i64,
) -> Vec<metering::Charge> {
    let mut conn = app.db();
    let now = Utc::now();
    let month_start = metering::month_of(now)
        .0
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    let start = (now - Duration::minutes(minutes)).max(month_start);
    let catalog = Catalog::builtin().expect("catalog");
    let pricer = Pricer {
        catalog: &catalog,
        currency: "EUR",
    };
    let mut samples = Vec::new();
    for (id, tenant, isolation, tags, bytes) in envs {
        let env = Metered {
            id: *id,
            tenant_id: *tenant,
            isolation: *isolation,
            region: "eu-west-1".into(),
            cost_tags: tags.clone(),
            ready_at: Some(start),
            destroyed_at: None,
            cursor: None,
            stops: Vec::new(),
        };
        let m = Measurement {
            storage_bytes: Some(*bytes),
            ..Measurement::default()
        };
        samples.push(metering::sample(&env, &m, now).expect("a stretch to meter"));
    }
    let mut charges = Vec::new();
    for s in &samples {
        charges.extend(pricer.sample_charges(s).expect("priced"));
    }
    charges.extend(
        pricer
            .pooled_charges(&samples, start, now, "pooled-database:test")
            .expect("priced"),
    );
    let pass =
        store::metering::start_pass(&mut conn, store::metering::Trigger::Manual).expect("pass");
    let with_totals: Vec<_> = samples.into_iter().map(|s| (s, 0, 0)).collect();
    store::metering::record(&mut conn, pass, &with_totals, &charges, Some(now)).expect("recorded");
    charges
}

fn id_of(v: &Value) -> Uuid {
    Uuid::from_str(v["id"].as_str().expect("id")).expect("uuid")
}

#[tokio::test]
async fn costs_group_by_tag_environment_sku_and_month_and_add_up() {
    let app = TestApp::spawn().await;
    let acme = id_of(&app.create_tenant("acme").await);
    let globex = id_of(&app.create_tenant("globex").await);
    let (web, web_tags) = environment(
        &app,
        "acme",
        "web",
        "shared",
        json!({"cost_center": "cc-2", "project": "p1"}),
    )
    .await;
    let (erp, erp_tags) = environment(&app, "acme", "erp", "dedicated", json!({})).await;
    let (other, other_tags) = environment(&app, "globex", "edi", "shared", json!({})).await;
    let charges = record(
        &app,
        &[
            (web, acme, Isolation::Shared, web_tags, 3_000_000_000),
            (erp, acme, Isolation::Dedicated, erp_tags, 500_000_000),
            (other, globex, Isolation::Shared, other_tags, 1_000_000_000),
        ],
        210,
    );
    let acme_total: Decimal = charges
        .iter()
        .filter(|c| c.tenant_id == acme)
        .map(|c| c.cost)
        .sum();
    assert!(acme_total > Decimal::ZERO);

    // By cost center: cc-2 (web) and the tenant's cc-1 (erp) add up to the total exactly.
    let (status, body) = app
        .get(
            "/v1/tenants/acme/costs?group_by=tag:cost_center",
            &app.admin,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["currency"], "EUR");
    assert_eq!(dec(&body["total"]), acme_total, "{body}");
    let groups = body["groups"].as_array().expect("groups");
    let keys: Vec<&Value> = groups.iter().map(|g| &g["key"]).collect();
    assert_eq!(keys, [&json!("cc-1"), &json!("cc-2")], "{body}");
    let sum: Decimal = groups.iter().map(|g| dec(&g["cost"])).sum();
    assert_eq!(sum, acme_total);
    let web_cost: Decimal = charges
        .iter()
        .filter(|c| c.environment_id == web)
        .map(|c| c.cost)
        .sum();
    assert_eq!(dec(&groups[1]["cost"]), web_cost);
    assert_eq!(
        body["total_display"],
        json!(bulkhead_core::money::for_display(acme_total, "EUR").to_string())
    );

    // A tag only some environments carry: the others are their own group (key null), not dropped.
    let (_, body) = app
        .get("/v1/tenants/acme/costs?group_by=tag:project", &app.admin)
        .await;
    let groups = body["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 2, "{body}");
    assert_eq!(groups[0]["key"], "p1");
    assert!(groups[1]["key"].is_null(), "{body}");
    assert_eq!(
        dec(&groups[0]["cost"]) + dec(&groups[1]["cost"]),
        acme_total
    );

    // Two levels: environment, then SKU; the dedicated one has database-hours, the shared an
    // allocated share of the pooled server.
    let (_, body) = app
        .get(
            "/v1/tenants/acme/costs?group_by=environment&group_by=sku",
            &app.admin,
        )
        .await;
    let groups = body["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 2, "{body}");
    let by_name = |name: &str| {
        groups
            .iter()
            .find(|g| g["label"] == name)
            .unwrap_or_else(|| panic!("{name}: {body}"))
    };
    let skus = |g: &Value| -> Vec<String> {
        g["groups"]
            .as_array()
            .expect("second level")
            .iter()
            .map(|s| s["key"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert!(skus(by_name("erp")).contains(&"dedicated-database-hours".to_owned()));
    assert!(skus(by_name("web")).contains(&"pooled-server-hours".to_owned()));
    assert!(!skus(by_name("web")).contains(&"dedicated-database-hours".to_owned()));
    for g in groups {
        let inner: Decimal = g["groups"]
            .as_array()
            .expect("inner")
            .iter()
            .map(|s| dec(&s["cost"]))
            .sum();
        assert_eq!(inner, dec(&g["cost"]));
    }
    let (_, body) = app
        .get("/v1/tenants/acme/costs?group_by=month", &app.admin)
        .await;
    assert_eq!(
        body["groups"][0]["key"],
        json!(Utc::now().format("%Y-%m").to_string()),
        "{body}"
    );

    // The platform view: both tenants for the admin.
    let (status, body) = app.get("/v1/costs?group_by=tenant", &app.admin).await;
    assert_eq!(status, 200, "{body}");
    let labels: Vec<&Value> = body["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| &g["label"])
        .collect();
    assert!(
        labels.contains(&&json!("acme")) && labels.contains(&&json!("globex")),
        "{body}"
    );
    let all: Decimal = charges.iter().map(|c| c.cost).sum();
    assert_eq!(dec(&body["total"]), all);

    // The FOCUS export of acme: one row per charge, costs adding up to the same total.
    let response = app
        .client
        .get(app.url("/v1/tenants/acme/costs/export?format=focus&granularity=hour"))
        .bearer_auth(&app.admin)
        .send()
        .await
        .expect("export");
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/csv")
    );
    let text = response.text().await.expect("csv");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().expect("header").clone();
    let billed = header
        .iter()
        .position(|h| h == "BilledCost")
        .expect("BilledCost");
    let tenant_col = header
        .iter()
        .position(|h| h == "x_TenantId")
        .expect("x_TenantId");
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(
        rows.len(),
        charges.iter().filter(|c| c.tenant_id == acme).count()
    );
    assert!(rows.iter().all(|r| r[tenant_col] == acme.to_string()));
    let exported: Decimal = rows
        .iter()
        .map(|r| Decimal::from_str(&r[billed]).expect("decimal"))
        .sum();
    assert_eq!(exported, acme_total);
    // Daily (the default): fewer rows, the same money.
    let (status, body) = app.get("/v1/tenants/acme/costs/export", &app.admin).await;
    assert_eq!(status, 200);
    let mut reader = csv::Reader::from_reader(body.as_str().expect("csv").as_bytes());
    let daily: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert!(!daily.is_empty() && daily.len() <= rows.len());
    let exported: Decimal = daily
        .iter()
        .map(|r| Decimal::from_str(&r[billed]).expect("decimal"))
        .sum();
    assert_eq!(exported, acme_total);
}

#[tokio::test]
async fn cost_reads_stop_at_the_tenant_and_the_partner_line() {
    let app = TestApp::spawn().await;
    let acme = id_of(&app.create_tenant("acme").await);
    app.create_tenant("globex").await;
    let (_, admin_token) = app.member("acme", "boss@acme.test", "tenant_admin").await;
    let (_, billing) = app.member("acme", "books@acme.test", "billing").await;
    // Another tenant's costs are not there at all; the platform view is not for tenant roles.
    for path in [
        "/v1/tenants/globex/costs",
        "/v1/tenants/globex/costs/export",
        "/v1/tenants/globex/budget",
    ] {
        let (status, body) = app.get(path, &admin_token).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/tenants/globex/budget",
            &billing,
            Some(json!({"amount": "1.00", "currency": "EUR", "period": "month"})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    for path in ["/v1/costs", "/v1/costs/export", "/v1/metering/passes"] {
        let (status, body) = app.get(path, &admin_token).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    // Billing sees costs and nothing else.
    let (status, _) = app.get("/v1/tenants/acme/costs", &billing).await;
    assert_eq!(status, 200);
    for path in [
        "/v1/tenants/acme/environments",
        "/v1/tenants/acme/members",
        "/v1/tenants/acme/jobs",
        "/v1/tenants/acme/audit-events",
    ] {
        let (status, body) = app.get(path, &billing).await;
        assert_eq!(status, 403, "{path}: {body}");
    }

    // A partner's platform view covers the tenants it onboarded, not the others.
    let (_, partner) = app.partner("channel@partner.test").await;
    let (status, body) = app
        .post("/v1/tenants", &partner, json!({"slug": "initech", "name": "Initech", "tier": "shared", "region": "eu-west-1", "cost_tags": {"cost_center": "cc-9"}}))
        .await;
    assert_eq!(status, 201, "{body}");
    let initech = id_of(&body);
    let (web, web_tags) = environment(&app, "acme", "web", "shared", json!({})).await;
    let (edi, edi_tags) = environment(&app, "initech", "edi", "shared", json!({})).await;
    record(
        &app,
        &[
            (web, acme, Isolation::Shared, web_tags, 10),
            (edi, initech, Isolation::Shared, edi_tags, 10),
        ],
        30,
    );
    let (status, body) = app.get("/v1/costs?group_by=tenant", &partner).await;
    assert_eq!(status, 200, "{body}");
    let keys: Vec<&Value> = body["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| &g["key"])
        .collect();
    assert_eq!(keys, [&json!(initech.to_string())], "{body}");
    let (status, body) = app.get("/v1/costs/export", &partner).await;
    assert_eq!(status, 200);
    let text = body.as_str().expect("csv");
    assert!(
        !text.contains(&acme.to_string()),
        "a partner's export holds only its tenants"
    );
    assert!(text.contains(&initech.to_string()));
}

#[tokio::test]
async fn bad_cost_queries_and_budgets_name_the_field() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let field = |body: &Value| body["errors"][0]["field"].as_str().unwrap_or("").to_owned();
    for (query, expected) in [
        ("group_by=colour", "group_by"),
        ("group_by=tenant", "group_by"),
        ("group_by=tag:Bad-Key", "group_by"),
        ("group_by=sku&group_by=day&group_by=month", "group_by"),
        ("from=2026-12-10&to=2026-12-01", "from"),
        ("from=2025-01-01&to=2026-03-01", "to"),
        ("from=yesterday", "from"),
        ("currency=EURO", "currency"),
        ("currency=USD", "currency"),
        ("colour=red", "colour"),
    ] {
        let (status, body) = app
            .get(&format!("/v1/tenants/acme/costs?{query}"), &app.admin)
            .await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(field(&body), expected, "{query}: {body}");
    }
    let (status, body) = app.get("/v1/costs?group_by=environment", &app.admin).await;
    assert_eq!(
        (status, field(&body)),
        (422, "group_by".to_owned()),
        "{body}"
    );
    let (status, body) = app
        .get("/v1/costs/export?granularity=week", &app.admin)
        .await;
    assert_eq!(
        (status, field(&body)),
        (422, "granularity".to_owned()),
        "{body}"
    );
    for (path, expected) in [
        ("/v1/tenants/acme/costs?from=0001-01-01", "from"),
        ("/v1/tenants/acme/costs/export?group_by=sku", "group_by"),
        ("/v1/tenants/acme/costs?granularity=hour", "granularity"),
    ] {
        let (status, body) = app.get(path, &app.admin).await;
        assert_eq!(
            (status, field(&body)),
            (422, expected.to_owned()),
            "{path}: {body}"
        );
    }
    let (status, body) = app.get("/v1/costs/export?format=xlsx", &app.admin).await;
    assert_eq!((status, field(&body)), (422, "format".to_owned()), "{body}");

    let put = |body: Value| {
        app.call(
            Method::PUT,
            "/v1/tenants/acme/budget",
            &app.admin,
            Some(body),
        )
    };
    for (body, expected) in [
        (
            json!({"amount": "0", "currency": "EUR", "period": "month"}),
            "amount",
        ),
        (
            json!({"amount": "10.001", "currency": "EUR", "period": "month"}),
            "amount",
        ),
        (
            json!({"amount": "-5", "currency": "EUR", "period": "month"}),
            "amount",
        ),
        (
            json!({"amount": "1e3", "currency": "EUR", "period": "month"}),
            "amount",
        ),
        (
            json!({"amount": "10", "currency": "XYZ", "period": "month"}),
            "currency",
        ),
        (
            json!({"amount": "10", "currency": "USD", "period": "month"}),
            "currency",
        ),
        (
            json!({"amount": "10", "currency": "EUR", "period": "month", "thresholds": [0]}),
            "thresholds[0]",
        ),
        (
            json!({"amount": "10", "currency": "EUR", "period": "month", "thresholds": [50, 50]}),
            "thresholds[1]",
        ),
    ] {
        let (status, problem) = put(body.clone()).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(field(&problem), expected, "{body}: {problem}");
    }
    // A leaving tenant takes no new budget (checked under the tenant's lock, as other changes).
    app.create_tenant("leaving").await;
    let (status, body) = app.delete("/v1/tenants/leaving", &app.admin).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/tenants/leaving/budget",
            &app.admin,
            Some(json!({"amount": "10", "currency": "EUR", "period": "month"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = put(json!({"amount": "10", "currency": "EUR", "period": "week"})).await;
    assert!(status == 400 || status == 422, "{status} {body}");
    let (status, _) = app.get("/v1/tenants/acme/budget", &app.admin).await;
    assert_eq!(status, 404, "nothing was stored");
}

#[tokio::test]
async fn a_budget_shows_spend_and_audits_each_threshold_once_per_month() {
    let app = TestApp::spawn().await;
    let acme = id_of(&app.create_tenant("acme").await);
    let (web, tags) = environment(&app, "acme", "web", "shared", json!({})).await;
    let charges = record(
        &app,
        &[(web, acme, Isolation::Shared, tags, 2_000_000_000)],
        120,
    );
    let spent: Decimal = charges.iter().map(|c| c.cost).sum();
    // A budget the spend is 2/3 of: 50 % is crossed, 100 % not.
    let amount = (spent * Decimal::from(3) / Decimal::from(2))
        .round_dp(2)
        .max(Decimal::new(1, 2));
    let (status, body) = app
        .call(Method::PUT, "/v1/tenants/acme/budget", &app.admin, Some(json!({"amount": amount.to_string(), "currency": "EUR", "period": "month", "thresholds": [100, 50]})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["thresholds"], json!([50, 100]));
    assert_eq!(dec(&body["spent"]), spent, "{body}");
    assert!(dec(&body["forecast"]) >= spent, "{body}");
    let crossings = |app: &TestApp| -> i64 {
        let mut conn = app.db();
        let now = Utc::now();
        store::budgets::audit_crossings(&mut conn, now, Uuid::now_v7()).expect("checked");
        store::budgets::audit_crossings(&mut conn, now, Uuid::now_v7()).expect("checked again");
        app.count("audit_events WHERE action = 'budget.threshold_crossed'")
    };
    assert_eq!(
        crossings(&app),
        1,
        "50 % crossed, audited once however often it is checked"
    );
    let (_, body) = app.get("/v1/tenants/acme/budget", &app.admin).await;
    assert_eq!(body["crossed"], json!([50]), "{body}");
    let (_, events) = app.get("/v1/tenants/acme/audit-events", &app.admin).await;
    let crossed = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["action"] == "budget.threshold_crossed")
        .cloned()
        .expect("audited");
    assert_eq!(crossed["details"]["threshold"], 50, "{crossed}");
    assert_eq!(crossed["actor"], "system:metering");
    let (status, _) = app.delete("/v1/tenants/acme/budget", &app.admin).await;
    assert_eq!(status, 204);
    let (status, _) = app.delete("/v1/tenants/acme/budget", &app.admin).await;
    assert_eq!(status, 204, "idempotent");
    let (status, _) = app.get("/v1/tenants/acme/budget", &app.admin).await;
    assert_eq!(status, 404);
    assert_eq!(app.count("audit_events WHERE action = 'budget.delete'"), 1);
}

#[tokio::test]
async fn exports_are_limited_and_a_client_that_stops_reading_lets_go() {
    let app = TestApp::spawn().await;
    // 60,000 hourly charges (~40 MB of CSV) per tenant: more than socket buffers hold.
    let seed = |slug: &'static str| {
        let app = &app;
        async move {
            let tenant = id_of(&app.create_tenant(slug).await);
            let (web, _) = environment(app, slug, "web", "shared", json!({})).await;
            diesel::RunQueryDsl::execute(
                diesel::sql_query(format!(
                    "INSERT INTO charges (environment_id, sku_id, hour, tenant_id, sku_price_id, \
                     region, currency, quantity, list_unit_price, cost, cost_tags) \
                     SELECT '{web}', 'sku-' || (g % 10), date_trunc('hour', now()) - g / 10 * interval '1 hour', \
                     '{tenant}', 'p', 'eu-west-1', 'EUR', 1, 0.5, 0.5, '{{\"cost_center\": \"cc-1\"}}' \
                     FROM generate_series(0, 59999) g ON CONFLICT DO NOTHING"
                )),
                &mut app.db(),
            )
            .expect("seed charges");
        }
    };
    for slug in ["acme", "globex", "initech", "hooli"] {
        seed(slug).await;
    }
    let from = (Utc::now() - Duration::days(399)).date_naive();
    let start = |path: String| {
        app.client
            .get(app.url(&format!("{path}?granularity=hour&from={from}")))
            .bearer_auth(&app.admin)
            .send()
    };
    let tenant = |slug: &str| format!("/v1/tenants/{slug}/costs/export");
    let detail = |problem: &Value| problem["detail"].as_str().unwrap_or("").to_owned();
    // An export whose client reads nothing holds its tenant's turn: a second export of the
    // same tenant (from whichever key or member) waits for it.
    let acme = start(tenant("acme")).await.expect("acme");
    assert_eq!(acme.status().as_u16(), 200);
    let again = start(tenant("acme")).await.expect("acme again");
    assert_eq!(again.status().as_u16(), 503);
    assert!(again.headers().contains_key("retry-after"));
    let problem: Value = again.json().await.expect("problem");
    assert!(detail(&problem).contains("already running"), "{problem}");
    // Other tenants (and the platform-wide export) take the process's other slots...
    let globex = start(tenant("globex")).await.expect("globex");
    let initech = start(tenant("initech")).await.expect("initech");
    let platform = start("/v1/costs/export".into()).await.expect("platform");
    let statuses = [&globex, &initech, &platform].map(|r| r.status().as_u16());
    assert_eq!(statuses, [200, 200, 200]);
    // ...and one more is told to come back, not queued behind them.
    let fifth = start(tenant("hooli")).await.expect("hooli");
    assert_eq!(fifth.status().as_u16(), 503);
    let problem: Value = fifth.json().await.expect("problem");
    assert!(
        detail(&problem).contains("exports are running"),
        "{problem}"
    );
    // The clients go away: their exports end and the slots are free again.
    drop((acme, globex, initech, platform));
    let mut status = 0;
    for _ in 0..50 {
        let response = start(tenant("acme")).await.expect("again");
        status = response.status().as_u16();
        if status == 200 {
            let body = response.text().await.expect("csv");
            assert_eq!(
                body.lines().count(),
                60_001,
                "the whole export, header included"
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
}
