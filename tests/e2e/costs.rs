//! Metering end to end: shared and dedicated environments provisioned by the real worker, data
//! written through the handed-out credentials, `bulkhead meter --once` (and the workers' own
//! scheduled passes), then the recorded storage checked against PostgreSQL's size functions,
//! every charge against quantity × price, the tag groups against the total, the FOCUS export
//! against the FinOps Foundation's validator, and passes that fail or overlap.

use crate::helpers::{Options, Stack, admin_conn, connect_as, execute, text1, texts};
use bulkhead_core::pricing::Catalog;
use chrono::{DateTime, Utc};
use diesel::RunQueryDsl;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap_or_else(|_| panic!("decimal {text:?}"))
}

fn one(conn: &mut diesel::PgConnection, sql: &str) -> String {
    texts(conn, &format!("SELECT ({sql})::text AS v"))
        .into_iter()
        .next()
        .flatten()
        .unwrap_or_else(|| panic!("no value: {sql}"))
}

/// Size as PostgreSQL's own functions give it: a schema's tables (with indexes and TOAST),
/// sequences and materialized views, read from the `pg_tables`/`pg_sequences`/`pg_matviews`
/// views; a dedicated environment's `pg_database_size`.
fn size_of(stack: &Stack, env: &Value) -> i64 {
    let names = stack.names(env);
    if env["isolation"] == "dedicated" {
        let mut conn = admin_conn("postgres");
        return one(
            &mut conn,
            &format!("SELECT pg_database_size('{}')::text", names.database),
        )
        .parse()
        .expect("size");
    }
    let mut conn = admin_conn(&stack.pooled_database);
    let schema = names.schema;
    one(
        &mut conn,
        &format!(
            "SELECT (coalesce((SELECT sum(pg_total_relation_size(format('%I.%I', schemaname, tablename)::regclass)) \
                 FROM pg_tables WHERE schemaname = '{schema}'), 0) \
             + coalesce((SELECT sum(pg_total_relation_size(format('%I.%I', schemaname, sequencename)::regclass)) \
                 FROM pg_sequences WHERE schemaname = '{schema}'), 0) \
             + coalesce((SELECT sum(pg_total_relation_size(format('%I.%I', schemaname, matviewname)::regclass)) \
                 FROM pg_matviews WHERE schemaname = '{schema}'), 0))::bigint::text"
        ),
    )
    .parse()
    .expect("size")
}

/// Pairs of samples of one environment whose stretches overlap (metered twice): must be "0".
fn overlapping_samples(conn: &mut diesel::PgConnection) -> String {
    one(
        conn,
        "SELECT count(*)::text FROM usage_samples a JOIN usage_samples b \
         ON a.environment_id = b.environment_id AND a.id < b.id \
         AND tstzrange(a.period_start, a.period_end) && tstzrange(b.period_start, b.period_end)",
    )
}

/// The latest sample of an environment: (storage bytes, period start, period end, peak connections).
fn latest_sample(stack: &Stack, id: &str) -> (i64, String, String, i32) {
    let mut conn = stack.control_db();
    let row = text1(
        &mut conn,
        "SELECT concat_ws('|', storage_bytes, period_start, period_end, connections_peak) AS v FROM usage_samples \
         WHERE environment_id = $1::uuid ORDER BY period_end DESC LIMIT 1",
        id,
    )
    .expect("a sample");
    let parts: Vec<&str> = row.split('|').collect();
    (
        parts[0].parse().expect("bytes"),
        parts[1].into(),
        parts[2].into(),
        parts[3].parse().expect("peak"),
    )
}

/// `bulkhead meter --once`; run again when it was skipped because a worker's scheduled pass
/// held the metering lock at that moment (the workers here meter every 3 s).
fn meter(stack: &Stack, extra: &[(&str, &str)]) -> (bool, String) {
    let mut last = (false, String::new());
    for _ in 0..10 {
        last = stack.run_bulkhead(&["meter", "--once"], extra);
        if last.0 || !last.1.contains("skipped") {
            return last;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    last
}

/// Writes rows through the environment's own credentials, into a table autovacuum leaves
/// alone (so its size holds still between the pass and the check).
fn write_rows(credentials: &Value, rows: u32) -> diesel::PgConnection {
    let mut conn = connect_as(credentials).expect("connect as the tenant");
    let schema = credentials["schema"].as_str().expect("schema");
    execute(
        &mut conn,
        &format!(
            "CREATE TABLE \"{schema}\".metered_rows (id bigint PRIMARY KEY, sku text, note text) \
             WITH (autovacuum_enabled = false, toast.autovacuum_enabled = false)"
        ),
    );
    execute(
        &mut conn,
        &format!(
            "INSERT INTO \"{schema}\".metered_rows SELECT g, 'SKU-' || g, repeat('x', 200) \
             FROM generate_series(1, {rows}) g"
        ),
    );
    conn
}

#[tokio::test]
async fn metering_measures_prices_allocates_and_exports_what_the_targets_hold() {
    let stack = Stack::start(Options {
        // The workers meter every 3 s (and count connections every second) besides the passes
        // run by hand here: the checks hold whichever pass wrote a sample.
        worker_env: vec![
            ("BULKHEAD_METERING_INTERVAL".into(), "3".into()),
            ("BULKHEAD_METERING_TICK_SECONDS".into(), "1".into()),
        ],
        ..Options::default()
    })
    .await;
    stack.create_tenant("acme", "dedicated").await;
    stack.without_approvals("acme").await;
    let web = stack
        .create_environment(
            "acme",
            json!({"name": "web", "stage": "development", "isolation": "shared",
                   "cost_tags": {"cost_center": "cc-2"}}),
        )
        .await;
    let erp = stack
        .create_environment(
            "acme",
            json!({"name": "erp", "stage": "production", "isolation": "dedicated"}),
        )
        .await;
    stack.create_tenant("globex", "shared").await;
    let edi = stack
        .create_environment("globex", json!({"name": "edi", "stage": "development"}))
        .await;
    for (tenant, created) in [("acme", &web), ("acme", &erp), ("globex", &edi)] {
        let job = created["job"]["id"].as_str().expect("job");
        stack
            .wait_succeeded(tenant, job, Duration::from_secs(60))
            .await;
    }
    let web_credentials = stack.credentials("acme", "web").await;
    let mut web_conn = write_rows(&web_credentials, 20_000);
    let mut erp_conn = write_rows(&stack.credentials("acme", "erp").await, 5_000);
    // A shared tenant cannot park storage outside its schema, where metering would not see it
    // and its neighbours would pay its share of the pooled server: no large objects there. In
    // its own database a dedicated tenant may (pg_database_size counts them).
    let large = "SELECT pg_catalog.lo_from_bytea(0, 'unmetered')::text AS v";
    let refused = diesel::sql_query(large)
        .execute(&mut web_conn)
        .expect_err("a large object in the pooled database");
    assert!(
        refused.to_string().contains("permission denied"),
        "{refused}"
    );
    diesel::sql_query(large)
        .execute(&mut erp_conn)
        .expect("a large object in its own database");

    // One pass by hand; storage equals PostgreSQL's own figure (taken before and after it).
    let mut before = Vec::new();
    for env in [&web, &erp, &edi] {
        before.push(size_of(&stack, &env["environment"]));
    }
    let (ok, out) = meter(&stack, &[]);
    assert!(ok, "bulkhead meter --once: {out}");
    assert!(out.contains("succeeded"), "{out}");
    for (i, env) in [&web, &erp, &edi].into_iter().enumerate() {
        let after = size_of(&stack, &env["environment"]);
        let id = env["environment"]["id"].as_str().expect("id");
        let (recorded, ..) = latest_sample(&stack, id);
        let (lo, hi) = (before[i].min(after), before[i].max(after));
        assert!(
            (lo..=hi).contains(&recorded),
            "{}: recorded {recorded} bytes, PostgreSQL says {} then {after}",
            env["environment"]["name"],
            before[i]
        );
    }
    let (web_bytes, ..) = latest_sample(&stack, web["environment"]["id"].as_str().expect("id"));
    assert!(
        web_bytes > 4_000_000,
        "20,000 rows of ~230 bytes are stored: {web_bytes}"
    );
    // The open session of the web app was counted.
    let (.., web_peak) = latest_sample(&stack, web["environment"]["id"].as_str().expect("id"));
    assert!(web_peak >= 1, "the app's session is counted");

    // A hostile tenant holds a lock its own size functions wait for (timeouts lifted with SET):
    // the pass still succeeds, only that environment goes unmeasured (its last size stands in).
    let schema = web_credentials["schema"].as_str().expect("schema");
    execute(&mut web_conn, "SET idle_in_transaction_session_timeout = 0");
    execute(&mut web_conn, "BEGIN");
    execute(
        &mut web_conn,
        &format!("LOCK TABLE \"{schema}\".metered_rows IN ACCESS EXCLUSIVE MODE"),
    );
    let (ok, out) = meter(&stack, &[]);
    assert!(ok, "a tenant's lock fails the pass for everyone: {out}");
    let measured = |id: &str| {
        text1(
            &mut stack.control_db(),
            "SELECT storage_measured::text AS v FROM usage_samples WHERE environment_id = $1::uuid \
             ORDER BY period_end DESC LIMIT 1",
            id,
        )
    };
    assert_eq!(
        measured(web["environment"]["id"].as_str().expect("id")).as_deref(),
        Some("false")
    );
    assert_eq!(
        measured(erp["environment"]["id"].as_str().expect("id")).as_deref(),
        Some("true")
    );
    assert_eq!(
        latest_sample(&stack, web["environment"]["id"].as_str().expect("id")).0,
        web_bytes,
        "the last measured size stands in"
    );
    execute(&mut web_conn, "ROLLBACK");
    drop(web_conn);

    // Every charge is its quantity × the catalog's price in force for its hour, exactly.
    let mut control = stack.control_db();
    assert_eq!(
        one(
            &mut control,
            "SELECT count(*)::text FROM charges WHERE cost <> quantity * list_unit_price"
        ),
        "0"
    );
    assert_ne!(one(&mut control, "SELECT count(*)::text FROM charges"), "0");
    let catalog = Catalog::builtin().expect("catalog");
    for row in texts(
        &mut control,
        "SELECT concat_ws('|', sku_id, region, hour, list_unit_price, sku_price_id) AS v FROM charges",
    ) {
        let row = row.expect("row");
        let f: Vec<&str> = row.split('|').collect();
        let hour = DateTime::parse_from_str(&format!("{}00", f[2]), "%Y-%m-%d %H:%M:%S%z")
            .expect("hour")
            .with_timezone(&Utc);
        let price = catalog
            .price_at(f[0], f[1], "EUR", hour)
            .expect("a price in force");
        assert_eq!(dec(f[3]), price.list_unit_price, "{row}");
        assert_eq!(f[4], price.id(), "{row}");
    }
    // The quantities follow the samples: environment-hours are the hours stood, and the pooled
    // server's hours are split among the shared environments to the last decimal.
    let env_hours = one(
        &mut control,
        "SELECT (SELECT sum(quantity) FROM charges WHERE sku_id LIKE 'environment-hours-%') \
              - (SELECT round(sum(standing_seconds) / 3600, 9) FROM usage_samples)",
    );
    assert!(
        dec(&env_hours).abs() < dec("0.000001"),
        "environment-hours vs time stood: {env_hours}"
    );
    let pooled = texts(
        &mut control,
        "SELECT sum(quantity)::text AS v FROM charges WHERE sku_id = 'pooled-server-hours' GROUP BY hour",
    );
    assert!(!pooled.is_empty());
    let dedicated_pooled = one(
        &mut control,
        &format!(
            "SELECT count(*)::text FROM charges WHERE sku_id = 'pooled-server-hours' AND environment_id = '{}'",
            erp["environment"]["id"].as_str().expect("id")
        ),
    );
    assert_eq!(
        dedicated_pooled, "0",
        "a dedicated environment bears none of the pooled server"
    );

    // The cost API: grouped by cost center, the groups add up to the total, which is what the
    // charges hold.
    let (status, costs) = stack
        .get("/v1/tenants/acme/costs?group_by=tag:cost_center")
        .await;
    assert_eq!(status, 200, "{costs}");
    let groups = costs["groups"].as_array().expect("groups");
    let sum: Decimal = groups
        .iter()
        .map(|g| dec(g["cost"].as_str().expect("cost")))
        .sum();
    assert_eq!(sum, dec(costs["total"].as_str().expect("total")), "{costs}");
    let keys: Vec<&Value> = groups.iter().map(|g| &g["key"]).collect();
    assert!(
        keys.contains(&&json!("cc-1")) && keys.contains(&&json!("cc-2")),
        "{costs}"
    );
    let acme_id = stack.get("/v1/tenants/acme").await.1["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let in_db = one(
        &mut control,
        &format!("SELECT coalesce(sum(cost), 0)::text FROM charges WHERE tenant_id = '{acme_id}'"),
    );
    // Passes keep running: read both again until they agree (a pass may land between the two).
    let total = dec(costs["total"].as_str().expect("total"));
    assert!(
        total > Decimal::ZERO && dec(&in_db) >= total,
        "API {total}, charges {in_db}"
    );

    // A second pass starts where the first ended: no stretch is metered twice.
    let (ok, out) = meter(&stack, &[]);
    assert!(ok, "{out}");
    assert_eq!(overlapping_samples(&mut control), "0");
    let scheduled = one(
        &mut control,
        "SELECT count(*)::text FROM meter_passes WHERE trigger = 'schedule' AND state = 'succeeded'",
    );
    assert_ne!(scheduled, "0", "the workers meter by themselves");

    // A pass that cannot reach a target fails visibly and records nothing; the next one fills
    // the stretch.
    let (ok, out) = meter(
        &stack,
        &[(
            "BULKHEAD_TARGET_DEDICATED_URL",
            "postgres://postgres@127.0.0.1:1/postgres",
        )],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("failed") && out.contains("dedicated server"),
        "{out}"
    );
    let (status, passes) = stack.get("/v1/metering/passes").await;
    assert_eq!(status, 200, "{passes}");
    let failed = passes["passes"]
        .as_array()
        .expect("passes")
        .iter()
        .find(|p| p["state"] == "failed")
        .cloned()
        .expect("the failed pass is listed");
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or("")
            .contains("dedicated server"),
        "{failed}"
    );
    let metrics = |stack: &Stack| {
        let url = stack.url("/metrics");
        let client = stack.client.clone();
        async move {
            client
                .get(url)
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text")
        }
    };
    let scraped = metrics(&stack).await;
    assert!(
        scraped.contains("bulkhead_metering_failed_passes_last_day 1"),
        "{scraped}"
    );
    assert!(
        !scraped.contains("bulkhead_metering_last_success_timestamp_seconds 0\n"),
        "{scraped}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (ok, out) = meter(&stack, &[]);
    assert!(ok, "{out}");

    assert_eq!(overlapping_samples(&mut control), "0");
    let gaps = one(
        &mut control,
        "SELECT count(*)::text FROM (SELECT period_start, lag(period_end) OVER (PARTITION BY environment_id ORDER BY period_start) AS prev \
         FROM usage_samples) s WHERE prev IS NOT NULL AND prev <> period_start",
    );
    assert_eq!(gaps, "0", "each sample starts where the previous one ended");

    // Two passes at once: one meters, the other is skipped or finds nothing new; never twice.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| meter(&stack, &[]));
        let b = s.spawn(|| meter(&stack, &[]));
        (a.join().expect("a"), b.join().expect("b"))
    });
    for (ok, out) in [&a, &b] {
        assert!(*ok || out.contains("skipped"), "{out}");
    }
    assert_eq!(overlapping_samples(&mut control), "0");

    // The platform-wide FOCUS export passes the FinOps Foundation's validator.
    let response = stack
        .client
        .get(stack.url("/v1/costs/export?format=focus"))
        .bearer_auth(&stack.admin)
        .send()
        .await
        .expect("export");
    assert_eq!(response.status().as_u16(), 200);
    let csv = response.text().await.expect("csv");
    assert!(csv.lines().count() > 10, "{csv}");
    let out = std::env::var("BULKHEAD_FOCUS_EXPORT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join(format!("bulkhead-focus-{}.csv", stack.id)));
    std::fs::write(&out, &csv).expect("write export");
    let validator = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/focus-validate");
    if validator.exists() && std::env::var("BULKHEAD_SKIP_FOCUS_VALIDATOR").is_err() {
        let result = std::process::Command::new("bash")
            .arg(&validator)
            .arg(&out)
            .output()
            .expect("run focus-validate");
        let text = String::from_utf8_lossy(&result.stdout);
        assert!(
            result.status.success(),
            "focus-validate failed:\n{text}\n{}",
            String::from_utf8_lossy(&result.stderr)
        );
    }
    if std::env::var("BULKHEAD_FOCUS_EXPORT").is_err() {
        let _ = std::fs::remove_file(&out);
    }

    // A destroyed environment gets a last sample up to its destruction, then none.
    let (status, body) = stack.delete("/v1/tenants/globex/environments/edi").await;
    assert_eq!(status, 202, "{body}");
    stack
        .wait_succeeded(
            "globex",
            body["job"]["id"].as_str().expect("job"),
            Duration::from_secs(60),
        )
        .await;
    let (ok, out) = meter(&stack, &[]);
    assert!(ok || out.contains("skipped"), "{out}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let edi_id = edi["environment"]["id"].as_str().expect("id");
    let (_, _, last_end, _) = latest_sample(&stack, edi_id);
    let destroyed_at = text1(
        &mut control,
        "SELECT max(finished_at)::text AS v FROM jobs WHERE environment_id = $1::uuid AND operation = 'destroy'",
        edi_id,
    )
    .expect("destroyed");
    assert_eq!(
        last_end, destroyed_at,
        "the last sample ends at the destruction"
    );
}
