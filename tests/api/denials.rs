//! A flood of refused requests is audited without taking the audit chain's lock for each one:
//! past a principal's allowance, denials are counted and folded into the chain as one event per
//! window, and every denial is accounted for.

use crate::helpers::TestApp;
use diesel::RunQueryDsl;
use diesel::sql_types::{BigInt, Uuid as SqlUuid};
use serde_json::json;

#[derive(diesel::QueryableByName)]
struct Tally {
    #[diesel(sql_type = BigInt)]
    single: i64,
    #[diesel(sql_type = BigInt)]
    aggregated: i64,
    #[diesel(sql_type = BigInt)]
    aggregated_denials: i64,
    #[diesel(sql_type = BigInt)]
    pending: i64,
}

fn tally(app: &TestApp, principal: &str) -> Tally {
    diesel::sql_query(
        "SELECT \
           (SELECT count(*) FROM audit_events WHERE actor_id = $1 AND result = 'denied' \
              AND NOT details ? 'aggregated') AS single, \
           (SELECT count(*) FROM audit_events WHERE actor_id = $1 AND result = 'denied' \
              AND details ? 'aggregated') AS aggregated, \
           (SELECT coalesce(sum((details->>'denials')::bigint), 0)::bigint FROM audit_events \
              WHERE actor_id = $1 AND details ? 'aggregated') AS aggregated_denials, \
           (SELECT coalesce(sum(denials), 0)::bigint FROM audit_denial_counts \
              WHERE principal_id = $1) AS pending",
    )
    .bind::<SqlUuid, _>(uuid::Uuid::parse_str(principal).expect("uuid"))
    .get_result(&mut app.db())
    .expect("tally")
}

#[tokio::test]
async fn a_flood_of_denials_is_counted_then_folded_into_the_chain() {
    let app = TestApp::spawn_with(|config| {
        config.limits.denials.chained_per_minute = 3;
        config.limits.denials.window_seconds = 1;
    })
    .await;
    app.create_tenant("acme").await;
    let (principal, viewer) = app.member("acme", "viewer@acme.test", "viewer").await;
    for _ in 0..12 {
        let (status, body) = app
            .post(
                "/v1/tenants/acme/api-keys",
                &viewer,
                json!({"name": "mine", "role": "viewer"}),
            )
            .await;
        assert_eq!(status, 403, "{body}");
    }
    // A minute may turn during the flood (the allowance is per minute): at least three and
    // fewer than all twelve were chained one by one.
    let early = tally(&app, &principal);
    assert!((3..12).contains(&early.single), "{}", early.single);

    // Within a few windows the folder has put the rest into the chain.
    let mut folded = tally(&app, &principal);
    for _ in 0..50 {
        if folded.pending == 0 && folded.aggregated > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        folded = tally(&app, &principal);
    }
    assert_eq!(folded.pending, 0, "every counted denial is folded");
    assert!(folded.aggregated >= 1);
    assert_eq!(
        folded.single + folded.aggregated_denials,
        12,
        "every denial is accounted for"
    );
    let (status, report) = app.get("/v1/audit-events/verify", &app.admin).await;
    assert_eq!(status, 200);
    assert_eq!(report["valid"], true, "{report}");
    // The tenant's admins see the folded event in their trail, with its count.
    let (_, trail) = app
        .get("/v1/tenants/acme/audit-events?limit=200", &app.admin)
        .await;
    let aggregated = trail["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["details"]["aggregated"] == true)
        .cloned()
        .expect("a folded event in the tenant's trail");
    assert_eq!(aggregated["action"], "api_key.create");
    assert_eq!(aggregated["result"], "denied");
}
