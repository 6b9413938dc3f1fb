//! The storage side of the job lease's fencing, against the real local server: a step with a
//! stale token changes nothing on the target, a takeover ends the paused session of an older
//! lease that holds the environment's fence (and only that), and no tenant role can read,
//! take or stall the fence.

use bulkhead_core::domain::Isolation;
use bulkhead_core::plan::EnvironmentSpec;
use bulkhead_worker::executor::{ExecError, Fence};
use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Integer, Uuid as SqlUuid};
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

mod support;
use support::*;

type Reports = Arc<Mutex<Vec<serde_json::Value>>>;

fn fence(spec: &EnvironmentSpec, token: i64, lease: Duration) -> (Arc<Fence>, Reports) {
    let reports: Reports = Arc::default();
    let sink = reports.clone();
    let fence = Fence {
        environment_id: spec.id,
        job_id: Uuid::now_v7(),
        token,
        lease,
        report: Arc::new(move |message: &str, details: serde_json::Value| {
            let mut details = details;
            details["message"] = serde_json::json!(message);
            sink.lock().expect("reports").push(details);
        }),
    };
    (Arc::new(fence), reports)
}

fn provision_fenced(fx: &Fixture, spec: &EnvironmentSpec, password: &str, fence: Arc<Fence>) {
    let plan = fx.exec.plan(spec).expect("plan");
    fx.exec
        .apply_fenced(spec, &plan, password, Some(fence), &mut |_| Ok(()))
        .expect("apply");
}

fn destroy_fenced(
    fx: &Fixture,
    spec: &EnvironmentSpec,
    fence: Arc<Fence>,
) -> Result<(), ExecError> {
    let plan = fx.exec.destroy_plan(spec).expect("destroy plan");
    fx.exec
        .apply_fenced(spec, &plan, "unused", Some(fence), &mut |_| Ok(()))
}

#[derive(QueryableByName)]
struct Token {
    #[diesel(sql_type = BigInt)]
    token: i64,
}

fn fence_token(conn: &mut PgConnection, environment_id: Uuid) -> Option<i64> {
    diesel::sql_query("SELECT token FROM bulkhead_meta.fence WHERE environment_id = $1")
        .bind::<SqlUuid, _>(environment_id)
        .get_result::<Token>(conn)
        .ok()
        .map(|t| t.token)
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// A session that took the environment's fence with `token` and did not commit: a worker
/// paused in the middle of a step.
fn paused_holder(fx: &Fixture, spec: &EnvironmentSpec, token: i64) -> (PgConnection, i32) {
    let mut conn = fx.admin(&fx.pooled);
    let job = Uuid::now_v7();
    conn.batch_execute(&format!(
        "SET application_name = 'bulkhead/{job}/{token}'; BEGIN; \
         SELECT bulkhead_meta.take_fence('{}', {token}, '{job}');",
        spec.id
    ))
    .expect("take the fence in an open transaction");
    let pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(&mut conn)
        .expect("pid")
        .pid;
    (conn, pid)
}

#[test]
fn a_stale_token_changes_nothing_on_the_target() {
    let mut fx = Fixture::new();
    for isolation in [Isolation::Shared, Isolation::Dedicated] {
        let spec = fx.spec(isolation);
        let pw = password();
        let (current, _) = fence(&spec, 1_000_010, Duration::from_secs(5));
        provision_fenced(&fx, &spec, &pw, current);
        let names = fx.exec.names(&spec);
        let mut home = fx.admin(&names.database);
        assert_eq!(fence_token(&mut home, spec.id), Some(1_000_010));
        if isolation == Isolation::Dedicated {
            // The server-wide steps (roles, the database itself) are fenced on the maintenance
            // database.
            assert_eq!(
                fence_token(&mut fx.admin("postgres"), spec.id),
                Some(1_000_010)
            );
        }
        let before = leftovers(&fx, &spec);
        assert_eq!(before.0, 2, "both roles exist");

        // A worker whose lease was taken over (a lower token) tries to destroy it.
        let (stale, _) = fence(&spec, 1_000_009, Duration::from_secs(5));
        let error = destroy_fenced(&fx, &spec, stale).expect_err("a stale token is refused");
        assert!(matches!(error, ExecError::Fenced(_)), "{error}");
        assert!(!error.is_retryable());
        assert_eq!(leftovers(&fx, &spec), before, "nothing changed");
        assert_eq!(fence_token(&mut home, spec.id), Some(1_000_010));
        drop(home);

        // The current holder (or a later one) may.
        let (later, _) = fence(&spec, 1_000_011, Duration::from_secs(5));
        destroy_fenced(&fx, &spec, later).expect("destroy with the current token");
        assert_eq!(leftovers(&fx, &spec), (0, 0, 0));
        // The fence row outlives the environment (a tombstone), so a worker still holding an
        // older lease cannot make it again.
        if isolation == Isolation::Shared {
            let mut pooled = fx.admin(&fx.pooled);
            assert_eq!(fence_token(&mut pooled, spec.id), Some(1_000_011));
            let (stale, _) = fence(&spec, 1_000_010, Duration::from_secs(5));
            let plan = fx.exec.plan(&spec).expect("plan");
            let error = fx
                .exec
                .apply_fenced(&spec, &plan, &pw, Some(stale), &mut |_| Ok(()))
                .expect_err("a stale apply after destroy is refused");
            assert!(matches!(error, ExecError::Fenced(_)), "{error}");
            assert_eq!(leftovers(&fx, &spec), (0, 0, 0));
        }
    }
}

#[test]
fn a_takeover_ends_the_paused_session_of_an_older_lease() {
    let mut fx = Fixture::new();
    let spec = fx.spec(Isolation::Shared);
    let pw = password();
    let (first, _) = fence(&spec, 2_000_010, Duration::from_secs(5));
    provision_fenced(&fx, &spec, &pw, first);

    // Worker 1 (token 2_000_011) is paused inside a step: its transaction holds the fence.
    let (mut paused, pid) = paused_holder(&fx, &spec, 2_000_011);
    // Worker 2 took the job over (token 2_000_012) and destroys the environment: it waits a
    // lease for the fence, then ends worker 1's session and goes on.
    let lease = Duration::from_millis(800);
    let (takeover, reports) = fence(&spec, 2_000_012, lease);
    let started = Instant::now();
    destroy_fenced(&fx, &spec, takeover).expect("the takeover finishes the destroy");
    assert!(
        started.elapsed() >= lease,
        "it waited for the paused holder first"
    );
    let reports = reports.lock().expect("reports").clone();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0]["pid"], pid);
    assert_eq!(reports[0]["stale_token"], 2_000_011);
    assert_eq!(reports[0]["ended"], true);
    assert!(
        paused.batch_execute("SELECT 1").is_err(),
        "the paused session was ended"
    );
    assert_eq!(leftovers(&fx, &spec), (0, 0, 0));
    let mut pooled = fx.admin(&fx.pooled);
    assert_eq!(fence_token(&mut pooled, spec.id), Some(2_000_012));
}

#[test]
fn a_holder_with_a_newer_lease_is_never_ended() {
    let mut fx = Fixture::new();
    let spec = fx.spec(Isolation::Shared);
    let pw = password();
    let (first, _) = fence(&spec, 3_000_010, Duration::from_secs(5));
    provision_fenced(&fx, &spec, &pw, first);

    // A newer lease (3_000_013) holds the fence; an older one (3_000_012) must not end it.
    let (mut newer, _) = paused_holder(&fx, &spec, 3_000_013);
    let (older, reports) = fence(&spec, 3_000_012, Duration::from_millis(500));
    let error = destroy_fenced(&fx, &spec, older.clone()).expect_err("it waits, then gives up");
    assert!(error.to_string().contains("lock timeout"), "{error}");
    assert!(reports.lock().expect("reports").is_empty());
    newer
        .batch_execute("COMMIT")
        .expect("the newer holder is alive");
    assert_eq!(leftovers(&fx, &spec).0, 2, "nothing was destroyed");
    // Once the newer one committed, the older token is simply stale.
    let error = destroy_fenced(&fx, &spec, older).expect_err("stale");
    assert!(matches!(error, ExecError::Fenced(_)), "{error}");
}

#[test]
fn tenants_cannot_read_take_or_stall_the_fence() {
    let mut fx = Fixture::new();
    let a = fx.spec(Isolation::Shared);
    let b = fx.spec(Isolation::Shared);
    let (pw_a, pw_b) = (password(), password());
    let (fa, _) = fence(&a, 4_000_010, Duration::from_secs(5));
    let (fb, _) = fence(&b, 4_000_011, Duration::from_secs(5));
    provision_fenced(&fx, &a, &pw_a, fa);
    provision_fenced(&fx, &b, &pw_b, fb);

    // Tenant A's own credentials: no access to the fence, no way to take or lock it.
    let mut tenant = PgConnection::establish(&fx.app_url(&a, &pw_a)).expect("tenant login");
    for attempt in [
        "SELECT * FROM bulkhead_meta.fence".to_owned(),
        format!(
            "SELECT bulkhead_meta.take_fence('{}', 9223372036854775807, '{}')",
            b.id, b.id
        ),
        format!("SELECT bulkhead_meta.check_fence('{}', 4000011)", b.id),
        format!(
            "BEGIN; SELECT 1 FROM bulkhead_meta.fence WHERE environment_id = '{}' FOR UPDATE",
            b.id
        ),
    ] {
        let refused = tenant.batch_execute(&attempt);
        let _ = tenant.batch_execute("ROLLBACK");
        let text = refused.expect_err(&attempt).to_string();
        assert!(text.contains("permission denied"), "{attempt}: {text}");
    }
    // A tenant holding every advisory lock it likes does not stall B's steps: the fence is a
    // row lock only the admin can take.
    tenant
        .batch_execute("SELECT pg_advisory_lock(k) FROM generate_series(1, 64) AS k")
        .expect("advisory locks are open to every role");
    let (fb2, _) = fence(&b, 4_000_012, Duration::from_millis(500));
    destroy_fenced(&fx, &b, fb2).expect("B's destroy is not stalled by A's advisory locks");

    // Code running as A's owner role (as a baseline migration would) may check A's fence,
    // never B's, and cannot raise its own.
    let names = fx.exec.names(&a);
    let mut admin = fx.admin(&fx.pooled);
    admin
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA bulkhead_meta TO {owner}; \
             GRANT EXECUTE ON FUNCTION bulkhead_meta.check_fence(uuid, bigint) TO {owner}; \
             SET SESSION AUTHORIZATION {owner}",
            owner = names.owner_role
        ))
        .expect("become A's owner");
    let other = admin
        .batch_execute(&format!(
            "SELECT bulkhead_meta.check_fence('{}', 4000012)",
            b.id
        ))
        .expect_err("another environment's fence");
    assert!(other.to_string().contains("only the owner role"), "{other}");
    let stale = admin
        .batch_execute(&format!(
            "SELECT bulkhead_meta.check_fence('{}', 4000009)",
            a.id
        ))
        .expect_err("a stale token");
    assert!(stale.to_string().starts_with("bulkhead fence:"), "{stale}");
    admin
        .batch_execute(&format!(
            "SELECT bulkhead_meta.check_fence('{}', 4000010)",
            a.id
        ))
        .expect("its own current token");
    let raise = admin
        .batch_execute(&format!(
            "SELECT bulkhead_meta.take_fence('{}', 9223372036854775807, '{}')",
            a.id, a.id
        ))
        .expect_err("the owner cannot raise the fence");
    assert!(raise.to_string().contains("permission denied"), "{raise}");
}

/// A session of the environment's owner role (logged in with a one-time password) that an older
/// lease left behind, as a paused worker would.
fn stale_owner_session(fx: &Fixture, spec: &EnvironmentSpec) -> PgConnection {
    let names = fx.exec.names(spec);
    let mut admin = fx.admin(&fx.pooled);
    admin
        .batch_execute(&format!(
            "ALTER ROLE {owner} LOGIN PASSWORD 'stale-owner-password'; \
             GRANT CONNECT ON DATABASE {db} TO {owner}; \
             GRANT USAGE ON SCHEMA bulkhead_meta TO {owner}; \
             GRANT EXECUTE ON FUNCTION bulkhead_meta.check_fence(uuid, bigint) TO {owner}",
            owner = names.owner_role,
            db = fx.pooled
        ))
        .expect("let the owner log in");
    let info = fx.exec.connection_info(spec);
    PgConnection::establish(&format!(
        "postgres://{}:stale-owner-password@{}:{}/{}",
        names.owner_role, info.host, info.port, fx.pooled
    ))
    .expect("log in as the owner")
}

#[test]
fn an_older_leases_owner_session_never_blocks_the_next_migrations() {
    let mut fx = Fixture::new();
    let mut spec = fx.spec(Isolation::Shared);
    let pw = password();
    let (first, _) = fence(&spec, 5_000_010, Duration::from_secs(5));
    provision_fenced(&fx, &spec, &pw, first);

    // A paused worker's owner session, in the middle of a migration: it holds the fence, and
    // the code it ran renamed the session to look like the newest lease there could be.
    let mut paused = stale_owner_session(&fx, &spec);
    paused
        .batch_execute(&format!(
            "SET application_name = 'bulkhead/{}/999999999999999999'; BEGIN; \
             SELECT bulkhead_meta.check_fence('{}', 5000010)",
            Uuid::now_v7(),
            spec.id
        ))
        .expect("hold the fence as the owner");
    spec.blueprint
        .baseline
        .push(bulkhead_core::blueprint::BaselineMigration {
            id: "0901_extra".to_owned(),
            sql: "CREATE TABLE extra (id integer);".to_owned(),
        });
    let (next, reports) = fence(&spec, 5_000_011, Duration::from_millis(800));
    provision_fenced(&fx, &spec, &pw, next);
    let reports = reports.lock().expect("reports").clone();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0]["role"], fx.exec.names(&spec).owner_role.as_str());
    assert!(
        paused.batch_execute("SELECT 1").is_err(),
        "the owner session was ended"
    );

    // An idle owner session left behind (the role may have one connection only) does not
    // keep the next run's migrations from logging in either.
    let mut idle = stale_owner_session(&fx, &spec);
    spec.blueprint
        .baseline
        .push(bulkhead_core::blueprint::BaselineMigration {
            id: "0902_more".to_owned(),
            sql: "CREATE TABLE more (id integer);".to_owned(),
        });
    let (third, _) = fence(&spec, 5_000_012, Duration::from_millis(800));
    provision_fenced(&fx, &spec, &pw, third);
    assert!(
        idle.batch_execute("SELECT 1").is_err(),
        "the idle owner session was ended"
    );
    let names = fx.exec.names(&spec);
    let mut pooled = fx.admin(&fx.pooled);
    for table in ["extra", "more"] {
        assert_eq!(
            count(
                &mut pooled,
                &format!(
                    "SELECT count(*) AS count FROM pg_tables WHERE schemaname = $1 AND tablename = '{table}'"
                ),
                &names.schema,
            ),
            1,
            "{table} migrated"
        );
    }
}

#[derive(QueryableByName)]
struct Login {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    login: bool,
}

fn can_login(fx: &Fixture, role: &str) -> bool {
    diesel::sql_query("SELECT rolcanlogin AS login FROM pg_roles WHERE rolname = $1")
        .bind::<diesel::sql_types::Text, _>(role)
        .get_result::<Login>(&mut fx.admin("postgres"))
        .expect("role")
        .login
}

#[test]
fn a_stop_under_a_stale_lease_leaves_the_logins_and_sessions_alone() {
    let mut fx = Fixture::new();
    for isolation in [Isolation::Shared, Isolation::Dedicated] {
        let spec = fx.spec(isolation);
        let pw = password();
        let (current, _) = fence(&spec, 1_000_020, Duration::from_secs(5));
        provision_fenced(&fx, &spec, &pw, current);
        let names = fx.exec.names(&spec);
        let mut session = PgConnection::establish(&fx.app_url(&spec, &pw)).expect("app logs in");

        // A worker whose lease was taken over tries to stop the environment: refused at the
        // target, before the login is touched.
        let (stale, _) = fence(&spec, 1_000_019, Duration::from_secs(5));
        let error = fx
            .exec
            .stop_logins(&spec, Some(stale))
            .expect_err("a stale stop is refused");
        assert!(matches!(error, ExecError::Fenced(_)), "{error}");
        assert!(can_login(&fx, &names.app_role));
        diesel::sql_query("SELECT 1")
            .execute(&mut session)
            .expect("the session is untouched");

        // The current holder stops it: no login, the open session ended.
        let (holder, _) = fence(&spec, 1_000_021, Duration::from_secs(5));
        let ended = fx.exec.stop_logins(&spec, Some(holder)).expect("stop");
        assert_eq!(ended, 1);
        assert!(!can_login(&fx, &names.app_role));
        assert!(diesel::sql_query("SELECT 1").execute(&mut session).is_err());
        let refused = PgConnection::establish(&fx.app_url(&spec, &pw))
            .err()
            .expect("a stopped environment refuses logins");
        assert!(
            refused.to_string().contains("not permitted to log in"),
            "{refused}"
        );
    }
}
