//! What PostgreSQL cannot separate between tenants of one database, shown for real, and the
//! isolation view saying so (with every guarantee it claims, and re-probed on each run).

use super::{Env, JOB_WITHIN, assert_report_shape, guarantee, isolation, options, run, suffix};
use super::{two_tenants, value};
use crate::helpers::Stack;
use chrono::{DateTime, Utc};
use diesel::PgConnection;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Polls the session (one round trip makes the server deliver what is pending) until a
/// notification on `channel` arrives; its payload.
async fn hear(conn: &mut PgConnection, channel: &str, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        run(conn, "SELECT 1").expect("the listener's round trip");
        let heard = conn
            .notifications_iter()
            .filter_map(Result::ok)
            .find(|n| n.channel == channel);
        if let Some(notification) = heard {
            return Some(notification.payload);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Mechanisms of a report with status `status`, as `layer/mechanism`.
fn with_status(report: &Value, status: &str) -> Vec<String> {
    report["guarantees"]
        .as_array()
        .expect("guarantees")
        .iter()
        .filter(|g| g["status"] == status)
        .map(|g| {
            format!(
                "{}/{}",
                g["layer"].as_str().unwrap_or(""),
                g["mechanism"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn checked_at(report: &Value, layer: &str, mechanism: &str) -> DateTime<Utc> {
    let g = guarantee(report, layer, mechanism);
    g["checked_at"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("checked_at of {g}"))
}

/// The view of one environment lists what it must: the probed guarantees, verified, and the
/// gaps of its tier as `not_provided`.
fn assert_view(env: &Env, report: &Value) {
    assert_report_shape(report);
    let shared = env.value["isolation"] == "shared";
    let verified = with_status(report, "verified");
    let mut want = vec![
        "data/database_connect_privilege",
        "identity/no_create_on_public",
        "identity/role_attributes",
        "metadata/catalog_metadata",
        "compute/role_connection_limit",
        "compute/temp_file_limit",
        "compute/resource_limits",
    ];
    want.push(if shared {
        "data/schema_privileges"
    } else {
        "data/pooled_database_connect_privilege"
    });
    for mechanism in want {
        assert!(
            verified.iter().any(|v| v == mechanism),
            "{} ({}): {mechanism} not verified in {report}",
            env.name,
            env.value["isolation"]
        );
    }
    let gaps = with_status(report, "not_provided");
    let (must, must_not): (&[&str], &[&str]) = if shared {
        (
            &[
                "data/notify_channels",
                "data/advisory_locks",
                "compute/cpu_io",
            ],
            &[],
        )
    } else {
        (
            &["compute/cpu_io"],
            &["data/notify_channels", "data/advisory_locks"],
        )
    };
    for gap in must {
        assert!(
            gaps.iter().any(|g| g == gap),
            "{}: {gap} not listed as not_provided: {report}",
            env.name
        );
    }
    for gap in must_not {
        assert!(
            !gaps.iter().any(|g| g == gap),
            "{}: a dedicated database separates {gap}: {report}",
            env.name
        );
    }
}

/// B LISTENs in the pooled database with its own credentials, A NOTIFYs on that channel, and B
/// receives A's payload; A holds an advisory lock and B cannot take the same key. The views of
/// A's and B's shared environments list data/notify_channels (and advisory_locks, cpu_io) as
/// not_provided with the tier that provides them; the dedicated ones list only cpu_io; every
/// probed guarantee is verified. A drift check and an apply each probe again (checked_at moves)
/// and leave the environment ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neighbours_share_notify_and_advisory_locks_and_the_view_says_so() {
    let stack = Stack::start(options()).await;
    let world = two_tenants(&stack).await;
    let (a, b) = (&world.a, &world.b);

    // (The sessions end before the probes below count A's connections.)
    {
        let channel = format!("orders_changed_{}", suffix());
        let payload = format!("atlas says {}", suffix());
        let mut listener = b.shared.connect();
        run(&mut listener, &format!("LISTEN {channel}")).expect("B listens");
        let mut sender = a.shared.connect();
        run(&mut sender, &format!("NOTIFY {channel}, '{payload}'")).expect("A notifies");
        assert_eq!(
            hear(&mut listener, &channel, Duration::from_secs(10)).await,
            Some(payload),
            "B hears A's notification in the pooled database"
        );

        run(&mut sender, "SELECT pg_advisory_lock(8, 8)").expect("A takes an advisory lock");
        assert_eq!(
            value(
                &mut listener,
                "SELECT pg_try_advisory_lock(8, 8)::text AS v"
            ),
            "false",
            "A's advisory lock blocks B on the same key"
        );
        run(&mut sender, "SELECT pg_advisory_unlock(8, 8)").expect("A lets go");
    }

    for env in [&a.shared, &b.shared, &a.dedicated, &b.dedicated] {
        let report = isolation(&stack, env).await;
        assert_view(env, &report);
        if env.value["isolation"] == "shared" {
            let gap = guarantee(&report, "data", "notify_channels");
            assert_eq!(gap["enforcement"], "none", "{gap}");
        }
    }

    // Every run probes again: a drift check with nothing to change, then an apply.
    let env = &a.shared;
    let mut last = checked_at(&isolation(&stack, env).await, "identity", "role_attributes");
    for action in ["drift-check", "apply"] {
        let job = stack.job_action(&env.tenant, &env.id, action, None).await;
        stack
            .wait_succeeded(&env.tenant, &super::id_of(&job), JOB_WITHIN)
            .await;
        let now = stack.environment(&env.tenant, &env.id).await;
        assert_eq!(now["state"], "ready", "after {action}: {now}");
        let report = isolation(&stack, env).await;
        assert_view(env, &report);
        let probed = checked_at(&report, "identity", "role_attributes");
        assert!(
            probed > last,
            "{action} probed again: {probed} after {last}"
        );
        last = probed;
    }
}
