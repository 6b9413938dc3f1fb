//! The PostgreSQL executor against the real local server (`TEST_DATABASE_SERVER`, default
//! `postgres://postgres@127.0.0.1:5432`). Each test has its own pooled database and unique
//! environment ids, and removes everything it made, so tests run in parallel.

use bulkhead_core::domain::Isolation;
use bulkhead_core::guarantees::GuaranteeStatus;
use bulkhead_core::plan::{Op, PlanAction};
use bulkhead_worker::executor::{ExecError, PostgresExecutor, StepAbort};
use diesel::connection::SimpleConnection;
use diesel::sql_types::Text;
use diesel::{Connection, PgConnection, RunQueryDsl};
use std::time::{Duration, Instant};

mod support;
use support::*;

#[test]
fn shared_environment_lifecycle() {
    let mut fx = Fixture::new();
    let spec = fx.spec(Isolation::Shared);
    let names = fx.exec.names(&spec);
    let pw = password();

    let started = Instant::now();
    let plan = fx.exec.plan(&spec).expect("plan");
    assert_eq!(plan.summary()["create"], 8, "{}", plan.summary());
    fx.apply(&spec, &plan, &pw).expect("apply");
    let checks = fx.exec.verify_isolation(&spec, &pw).expect("verify");
    eprintln!("shared plan+apply+verify: {:?}", started.elapsed());
    for check in &checks {
        eprintln!(
            "  {}/{} {}: {}",
            check.layer,
            check.mechanism,
            check.status.as_str(),
            check.evidence
        );
    }

    all_verified(&checks);
    for (layer, mechanism) in [
        ("data", "database_connect_privilege"),
        ("data", "schema_privileges"),
        ("identity", "no_create_on_public"),
        ("compute", "role_connection_limit"),
        ("compute", "resource_limits"),
    ] {
        assert!(
            has(&checks, layer, mechanism),
            "{layer}/{mechanism} missing: {checks:?}"
        );
    }
    let limit = checks
        .iter()
        .find(|c| c.mechanism == "role_connection_limit")
        .expect("compute check");
    assert!(
        limit.evidence.contains("too many connections for role"),
        "{}",
        limit.evidence
    );
    assert!(fx.exec.plan(&spec).expect("re-plan").is_empty());

    // The credentials work and reach exactly the environment's schema.
    let info = fx.exec.connection_info(&spec);
    assert_eq!(
        (info.database.as_str(), info.schema.as_str()),
        (fx.pooled.as_str(), names.schema.as_str())
    );
    assert_eq!(info.username, names.app_role);
    let mut app = PgConnection::establish(&fx.app_url(&spec, &pw)).expect("app connects");
    diesel::sql_query("CREATE TABLE notes (id integer PRIMARY KEY)")
        .execute(&mut app)
        .expect("create in own schema");
    diesel::sql_query("INSERT INTO orders (external_id, customer) VALUES ('o-1', 'acme')")
        .execute(&mut app)
        .expect("baseline tables are usable");
    diesel::sql_query("INSERT INTO order_lines VALUES ((SELECT id FROM orders), 1, 'sku-1', 2)")
        .execute(&mut app)
        .expect("second baseline migration applied");
    let history =
        error_text(diesel::sql_query("DELETE FROM bulkhead_meta.baseline").execute(&mut app));
    assert!(history.contains("permission denied"), "{history}");
    drop(app);

    // The password is stored as a SCRAM verifier of the given password.
    let mut admin = fx.admin(&fx.pooled);
    let stored = diesel::sql_query("SELECT rolpassword AS value FROM pg_authid WHERE rolname = $1")
        .bind::<Text, _>(&names.app_role)
        .get_result::<TextValue>(&mut admin)
        .expect("rolpassword");
    assert!(
        stored.value.starts_with("SCRAM-SHA-256$4096:") && !stored.value.contains(&pw),
        "{}",
        stored.value
    );
    assert!(scram_accepts(&stored.value, &pw), "{}", stored.value);
    assert!(!scram_accepts(&stored.value, "other"));
    // Cost tags stay in the control database: the catalogs, readable by every role, carry none.
    let commented = count(
        &mut admin,
        "SELECT count(*) AS count FROM pg_description WHERE objoid = $1::regnamespace",
        &names.schema,
    );
    assert_eq!(commented, 0);
    drop(admin);

    fx.destroy(&spec);
    assert_eq!(leftovers(&fx, &spec), (0, 0, 0));
}

#[test]
fn dedicated_environment_lifecycle() {
    let mut fx = Fixture::new();
    let spec = fx.spec(Isolation::Dedicated);
    let names = fx.exec.names(&spec);
    let pw = password();

    let started = Instant::now();
    let plan = fx.exec.plan(&spec).expect("plan");
    assert_eq!(plan.summary()["create"], 10, "{}", plan.summary());
    fx.apply(&spec, &plan, &pw).expect("apply");
    let checks = fx.exec.verify_isolation(&spec, &pw).expect("verify");
    eprintln!("dedicated plan+apply+verify: {:?}", started.elapsed());
    for check in &checks {
        eprintln!(
            "  {}/{} {}: {}",
            check.layer,
            check.mechanism,
            check.status.as_str(),
            check.evidence
        );
    }
    eprintln!("{:#}", plan.summary());

    all_verified(&checks);
    for (layer, mechanism) in [
        ("data", "database_connect_privilege"),
        ("data", "pooled_database_connect_privilege"),
        ("identity", "no_create_on_public"),
        ("compute", "role_connection_limit"),
        ("compute", "resource_limits"),
    ] {
        assert!(
            has(&checks, layer, mechanism),
            "{layer}/{mechanism} missing: {checks:?}"
        );
    }
    assert!(fx.exec.plan(&spec).expect("re-plan").is_empty());

    let info = fx.exec.connection_info(&spec);
    assert_eq!(
        (info.database.as_str(), info.schema.as_str()),
        (names.database.as_str(), "app")
    );
    let mut app = PgConnection::establish(&fx.app_url(&spec, &pw)).expect("app connects");
    diesel::sql_query("CREATE TABLE notes (id integer PRIMARY KEY)")
        .execute(&mut app)
        .expect("create in app");
    diesel::sql_query("INSERT INTO orders (external_id, customer) VALUES ('o-1', 'acme')")
        .execute(&mut app)
        .expect("baseline tables are usable");
    let public =
        error_text(diesel::sql_query("CREATE TABLE public.x (id integer)").execute(&mut app));
    assert!(public.contains("permission denied"), "{public}");
    drop(app);

    let mut admin = fx.admin("postgres");
    let limit = count(
        &mut admin,
        "SELECT datconnlimit::bigint AS count FROM pg_database WHERE datname = $1",
        &names.database,
    );
    assert_eq!(limit, 13, "blueprint limit 10 plus the reserve");
    let public_connect = count(
        &mut admin,
        "SELECT count(*) AS count FROM pg_database d, aclexplode(d.datacl) a \
         WHERE d.datname = $1 AND a.grantee = 0",
        &names.database,
    );
    assert_eq!(public_connect, 0, "PUBLIC has no privilege on the database");
    drop(admin);

    fx.destroy(&spec);
    assert_eq!(leftovers(&fx, &spec), (0, 0, 0));
}

#[test]
fn tenants_cannot_reach_each_other() {
    let mut fx = Fixture::new();
    let (a, b, c) = (
        fx.spec(Isolation::Shared),
        fx.spec(Isolation::Shared),
        fx.spec(Isolation::Dedicated),
    );
    let (pw_a, pw_b, pw_c) = (password(), password(), password());
    fx.provision(&a, &pw_a);
    fx.provision(&b, &pw_b);
    fx.provision(&c, &pw_c);
    let (names_b, names_c) = (fx.exec.names(&b), fx.exec.names(&c));

    let mut app_a = PgConnection::establish(&fx.app_url(&a, &pw_a)).expect("A connects");
    let read_b = error_text(
        diesel::sql_query(format!("SELECT * FROM {}.orders", names_b.schema)).execute(&mut app_a),
    );
    assert!(read_b.contains("permission denied for schema"), "{read_b}");
    let use_b = error_text(
        diesel::sql_query(format!(
            "CREATE TABLE {}.intruder (x integer)",
            names_b.schema
        ))
        .execute(&mut app_a),
    );
    assert!(use_b.contains("permission denied"), "{use_b}");
    let become_b = error_text(
        diesel::sql_query(format!("SET ROLE {}", names_b.owner_role)).execute(&mut app_a),
    );
    assert!(become_b.contains("permission denied"), "{become_b}");
    drop(app_a);

    let endpoint = endpoint();
    let a_to_c = format!(
        "postgres://{}:{pw_a}@{}:{}/{}",
        fx.exec.names(&a).app_role,
        endpoint.host,
        endpoint.port,
        names_c.database
    );
    let refused = PgConnection::establish(&a_to_c)
        .err()
        .expect("A cannot connect to C's database")
        .to_string();
    assert!(
        refused.contains("permission denied for database"),
        "{refused}"
    );
    let c_to_pool = format!(
        "postgres://{}:{pw_c}@{}:{}/{}",
        names_c.app_role, endpoint.host, endpoint.port, fx.pooled
    );
    let refused = PgConnection::establish(&c_to_pool)
        .err()
        .expect("C cannot connect to the pool")
        .to_string();
    assert!(
        refused.contains("permission denied for database"),
        "{refused}"
    );

    all_verified(&fx.exec.verify_isolation(&a, &pw_a).expect("verify A"));
    all_verified(&fx.exec.verify_isolation(&b, &pw_b).expect("verify B"));

    // Destroying A leaves B untouched.
    fx.destroy(&a);
    assert_eq!(leftovers(&fx, &a), (0, 0, 0));
    assert!(fx.exec.plan(&b).expect("plan B").is_empty());
    let mut app_b = PgConnection::establish(&fx.app_url(&b, &pw_b)).expect("B still connects");
    diesel::sql_query("SELECT * FROM orders")
        .execute(&mut app_b)
        .expect("B still reads its data");
}

#[test]
fn dropped_app_role_is_planned_and_repaired() {
    let mut fx = Fixture::new();
    let spec = fx.spec(Isolation::Shared);
    let names = fx.exec.names(&spec);
    let pw = password();
    fx.provision(&spec, &pw);

    let mut admin = fx.admin(&fx.pooled);
    admin
        .batch_execute(&format!("DROP OWNED BY {0}; DROP ROLE {0}", names.app_role))
        .expect("drop the app role by hand");
    drop(admin);

    let plan = fx.exec.plan(&spec).expect("drift plan");
    let changes: Vec<String> = plan.actions.iter().map(PlanAction::headline).collect();
    assert!(
        changes.contains(&format!("create role {}", names.app_role)),
        "{changes:?}"
    );
    assert!(
        plan.actions.iter().all(|a| a.op == Op::Create),
        "{changes:?}"
    );
    assert_eq!(
        changes.len(),
        4,
        "the role and its three grants: {changes:?}"
    );

    let new_pw = password();
    fx.apply(&spec, &plan, &new_pw).expect("repair");
    assert!(fx.exec.plan(&spec).expect("plan").is_empty());
    let mut app = PgConnection::establish(&fx.app_url(&spec, &new_pw)).expect("app connects again");
    diesel::sql_query("INSERT INTO orders (external_id, customer) VALUES ('o-2', 'acme')")
        .execute(&mut app)
        .expect("grants repaired");
    drop(app);
    all_verified(&fx.exec.verify_isolation(&spec, &new_pw).expect("verify"));
}

#[test]
fn dedicated_drift_is_repaired() {
    let mut fx = Fixture::new();
    let spec = fx.spec(Isolation::Dedicated);
    let names = fx.exec.names(&spec);
    let pw = password();
    fx.provision(&spec, &pw);

    let mut inside = fx.admin(&names.database);
    diesel::sql_query("GRANT USAGE, CREATE ON SCHEMA public TO PUBLIC")
        .execute(&mut inside)
        .expect("drift inside");
    drop(inside);
    // Tests run side by side on one server: while PUBLIC may connect, nobody may, or every
    // other test's isolation probe would (rightly) report this database open to its tenant.
    let mut admin = fx.admin("postgres");
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {0} ALLOW_CONNECTIONS false; \
             GRANT CONNECT ON DATABASE {0} TO PUBLIC; ALTER DATABASE {0} CONNECTION LIMIT 500; \
             ALTER ROLE {1} CONNECTION LIMIT 99 CREATEDB; COMMENT ON ROLE {1} IS 'edited by hand'",
            names.database, names.app_role
        ))
        .expect("drift");
    drop(admin);

    let plan = fx.exec.plan(&spec).expect("drift plan");
    let changes: Vec<String> = plan.actions.iter().map(PlanAction::headline).collect();
    assert_eq!(
        changes,
        [
            format!("update role {}", names.app_role),
            format!("update database {}", names.database)
        ]
    );
    let detail = &plan.actions[0].detail;
    assert!(
        detail.contains(r#"capabilities: ["CREATEDB"] → []"#),
        "{detail}"
    );
    assert!(detail.contains("connection_limit: 99 → 10"), "{detail}");
    assert!(
        plan.actions[1]
            .detail
            .contains(r#"public_privileges: ["CONNECT"] → []"#),
        "{}",
        plan.actions[1].detail
    );
    fx.apply(&spec, &plan, &pw).expect("repair");
    assert!(fx.exec.plan(&spec).expect("plan").is_empty());
    all_verified(&fx.exec.verify_isolation(&spec, &pw).expect("verify"));
}

#[test]
fn stale_plan_is_refused() {
    let mut fx = Fixture::new();
    let spec = fx.spec(Isolation::Shared);
    let names = fx.exec.names(&spec);
    let pw = password();
    let plan = fx.exec.plan(&spec).expect("plan");

    let mut admin = fx.admin(&fx.pooled);
    diesel::sql_query(format!("CREATE ROLE {}", names.owner_role))
        .execute(&mut admin)
        .expect("someone else acts first");
    drop(admin);

    let error = fx.apply(&spec, &plan, &pw).expect_err("stale");
    assert!(matches!(error, ExecError::StalePlan(_)), "{error}");
    assert!(!error.is_retryable());
    assert_eq!(leftovers(&fx, &spec), (1, 0, 0), "nothing was applied");

    let mut tampered = fx.exec.plan(&spec).expect("fresh plan");
    tampered.actions.truncate(1);
    let error = fx.apply(&spec, &tampered, &pw).expect_err("tampered");
    assert!(matches!(error, ExecError::StalePlan(_)), "{error}");

    fx.provision(&spec, &pw);
}

/// Catalog comments are readable by every role on the server: cost tags never go there, and a
/// comment an earlier version wrote (the tags as JSON) is drift the next apply removes.
#[test]
fn identifying_comments_are_drift_and_removed() {
    let mut fx = Fixture::new();
    let mut spec = fx.spec(Isolation::Shared);
    let names = fx.exec.names(&spec);
    let pw = password();
    fx.provision(&spec, &pw);
    spec.cost_tags
        .insert("cost_center".to_owned(), "cc-2001".to_owned());
    assert!(
        fx.exec.plan(&spec).expect("plan").is_empty(),
        "tags never reach the target"
    );

    // The schema's comment: only this pooled database's own preparation would touch it.
    let old = r#"'{"cost_center": "cc-2001", "business_unit": "acme-wms"}'"#;
    fx.admin(&fx.pooled)
        .batch_execute(&format!("COMMENT ON SCHEMA {} IS {old}", names.schema))
        .expect("comment as an earlier version did");
    let metadata = fx
        .exec
        .verify_isolation(&spec, &pw)
        .expect("verify")
        .into_iter()
        .find(|c| c.mechanism == "catalog_metadata")
        .expect("metadata probe");
    assert_eq!(metadata.status, GuaranteeStatus::Violated, "{metadata:?}");

    let plan = fx.exec.plan(&spec).expect("plan");
    let changes: Vec<String> = plan.actions.iter().map(PlanAction::headline).collect();
    assert_eq!(changes, [format!("update schema {}", names.schema)]);
    fx.apply(&spec, &plan, &pw).expect("apply");
    assert!(fx.exec.plan(&spec).expect("plan").is_empty());
    all_verified(&fx.exec.verify_isolation(&spec, &pw).expect("verify"));

    // Role comments are server-wide: a worker preparing its targets strips them from every
    // environment's roles at once, not only at each one's next apply. (Tests side by side
    // prepare too; whichever strips it, it must be gone.)
    fx.admin(&fx.pooled)
        .batch_execute(&format!("COMMENT ON ROLE {} IS {old}", names.app_role))
        .expect("comment as an earlier version did");
    let again = PostgresExecutor::new(fx.exec.targets().clone());
    again.prepare().expect("prepare");
    let comments = count(
        &mut fx.admin(&fx.pooled),
        "SELECT count(*) AS count FROM pg_shdescription d JOIN pg_roles r ON r.oid = d.objoid \
         WHERE r.rolname LIKE $1",
        &format!("bk_{}%", spec.id.simple()),
    );
    assert_eq!(comments, 0);
}

#[test]
fn interrupted_apply_resumes_from_a_new_plan() {
    let mut fx = Fixture::new();
    for isolation in [Isolation::Dedicated, Isolation::Shared] {
        let spec = fx.spec(isolation);
        let pw = password();
        let plan = fx.exec.plan(&spec).expect("plan");
        let total = plan.actions.len();

        // Stop right after the third step (the database of a dedicated environment).
        let mut done = 0;
        let error = fx
            .exec
            .apply(&spec, &plan, &pw, &mut |_| {
                done += 1;
                if done == 3 { Err(StepAbort) } else { Ok(()) }
            })
            .expect_err("aborted");
        assert!(matches!(error, ExecError::Aborted));
        assert!(error.is_retryable());

        let rest = fx.exec.plan(&spec).expect("re-plan");
        assert_eq!(rest.actions.len(), total - 3, "{}", rest.summary());
        assert!(
            fx.apply(&spec, &plan, &pw).is_err(),
            "the old plan is stale now"
        );
        fx.apply(&spec, &rest, &pw).expect("finish");
        assert!(fx.exec.plan(&spec).expect("plan").is_empty());
        all_verified(&fx.exec.verify_isolation(&spec, &pw).expect("verify"));

        // Destroy can be interrupted too.
        let destroy = fx.exec.destroy_plan(&spec).expect("destroy plan");
        let error = fx
            .exec
            .apply(&spec, &destroy, &pw, &mut |_| Err(StepAbort))
            .expect_err("aborted");
        assert!(matches!(error, ExecError::Aborted));
        fx.destroy(&spec);
        assert_eq!(leftovers(&fx, &spec), (0, 0, 0));
    }
}

#[test]
fn prepare_is_idempotent_across_executors() {
    let fx = Fixture::new();
    let other = PostgresExecutor::new(fx.exec.targets().clone());
    std::thread::scope(|s| {
        let one = s.spawn(|| other.prepare());
        let two = s.spawn(|| PostgresExecutor::new(fx.exec.targets().clone()).prepare());
        one.join().expect("thread").expect("prepare");
        two.join().expect("thread").expect("prepare");
    });
    fx.exec.prepare().expect("again");
}

#[test]
fn spare_databases_are_claimed_and_removed() {
    let mut fx = Fixture::with_spares(2);
    fx.exec.wait_for_spares();
    let prefix = fx.exec.spare_prefix();
    let spares = |fx: &Fixture| {
        let mut admin = fx.admin("postgres");
        count(
            &mut admin,
            "SELECT count(*) AS count FROM pg_database WHERE left(datname, length($1)) = $1",
            &prefix,
        )
    };
    assert_eq!(spares(&fx), 2);

    let spec = fx.spec(Isolation::Dedicated);
    let pw = password();
    fx.provision(&spec, &pw);
    assert_eq!(
        spares(&fx),
        1,
        "one spare became the environment's database"
    );
    all_verified(&fx.exec.verify_isolation(&spec, &pw).expect("verify"));
    let mut app = PgConnection::establish(&fx.app_url(&spec, &pw)).expect("app connects");
    diesel::sql_query("INSERT INTO orders (external_id, customer) VALUES ('o-1', 'acme')")
        .execute(&mut app)
        .expect("baseline applied in the claimed database");
    drop(app);
    fx.exec.wait_for_spares();
    assert_eq!(spares(&fx), 2, "refilled");

    fx.destroy(&spec);
    assert_eq!(leftovers(&fx, &spec), (0, 0, 0));
    fx.exec.drop_prepared().expect("drop prepared");
    assert_eq!(spares(&fx), 0, "spares removed with the rest");
}

/// Prints p50 of plan + apply + verify for fresh environments (`--nocapture` shows them). The
/// dedicated runs go once with `CREATE DATABASE` and once with spare databases.
#[test]
fn provisioning_timings() {
    let mut fx = Fixture::new();
    let mut with_spares = Fixture::with_spares(2);
    with_spares.exec.wait_for_spares();
    for (label, isolation, runs) in [
        ("shared", Isolation::Shared, 7),
        ("dedicated", Isolation::Dedicated, 5),
        ("dedicated+spares", Isolation::Dedicated, 5),
    ] {
        let fx = if label == "dedicated+spares" {
            &mut with_spares
        } else {
            &mut fx
        };
        let mut times: Vec<Duration> = Vec::new();
        let mut phases = Vec::new();
        for _ in 0..runs {
            let spec = fx.spec(isolation);
            let pw = password();
            let t0 = Instant::now();
            let plan = fx.exec.plan(&spec).expect("plan");
            let t1 = Instant::now();
            fx.apply(&spec, &plan, &pw).expect("apply");
            let t2 = Instant::now();
            all_verified(&fx.exec.verify_isolation(&spec, &pw).expect("verify"));
            let t3 = Instant::now();
            times.push(t3 - t0);
            phases.push((t1 - t0, t2 - t1, t3 - t2));
            // Between jobs the background refill has time to finish.
            fx.exec.wait_for_spares();
        }
        let mut sorted = times.clone();
        sorted.sort();
        eprintln!(
            "{label}: p50 {:?}, min {:?}, max {:?}; per run (plan, apply, verify): {phases:?}",
            sorted[sorted.len() / 2],
            sorted[0],
            sorted[sorted.len() - 1]
        );
    }
}

/// Isolation broken by hand behind the executor's back: the probes report each broken layer
/// as violated with the server's answer, and the intact ones stay verified.
#[test]
fn probes_report_violations() {
    let mut fx = Fixture::new();
    let spec = fx.spec(Isolation::Shared);
    let names = fx.exec.names(&spec);
    let pw = password();
    fx.provision(&spec, &pw);
    all_verified(&fx.exec.verify_isolation(&spec, &pw).expect("verify"));

    let canary = fx.exec.canary_database();
    let app = format!("\"{}\"", names.app_role);
    fx.admin("postgres")
        .batch_execute(&format!("GRANT CONNECT ON DATABASE \"{canary}\" TO {app}"))
        .expect("grant connect on the canary database");
    fx.admin(&fx.pooled)
        .batch_execute(&format!("GRANT CREATE ON SCHEMA public TO {app}"))
        .expect("grant create on public");

    let checks = fx.exec.verify_isolation(&spec, &pw).expect("verify");
    let status = |layer: &str, mechanism: &str| {
        checks
            .iter()
            .find(|c| c.layer == layer && c.mechanism == mechanism)
            .map(|c| (c.status.as_str(), c.evidence.clone()))
            .expect("check present")
    };
    let (connect, evidence) = status("data", "database_connect_privilege");
    assert_eq!(connect, "violated", "{evidence}");
    assert!(evidence.ends_with("→ accepted"), "{evidence}");
    let (create, evidence) = status("identity", "no_create_on_public");
    assert_eq!(create, "violated", "{evidence}");
    assert!(
        evidence.ends_with("→ succeeded (rolled back)"),
        "{evidence}"
    );
    let (schemas, evidence) = status("data", "schema_privileges");
    assert_eq!(schemas, "violated", "{evidence}");
    assert!(evidence.contains("CREATE on public"), "{evidence}");
    for (layer, mechanism) in [
        ("compute", "role_connection_limit"),
        ("compute", "resource_limits"),
    ] {
        let (verified, evidence) = status(layer, mechanism);
        assert_eq!(verified, "verified", "{layer}/{mechanism}: {evidence}");
    }
    // The probe's own table did not stay behind in public.
    let mut pooled = fx.admin(&fx.pooled);
    assert_eq!(
        count(
            &mut pooled,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE $1",
            "bk_probe_%",
        ),
        0
    );
    pooled
        .batch_execute(&format!("REVOKE CREATE ON SCHEMA public FROM {app}"))
        .expect("revoke create");
    fx.admin("postgres")
        .batch_execute(&format!(
            "REVOKE CONNECT ON DATABASE \"{canary}\" FROM {app}"
        ))
        .expect("revoke connect");
    all_verified(
        &fx.exec
            .verify_isolation(&spec, &pw)
            .expect("verify after repair"),
    );
}

/// After the first apply, a new migration runs in a session that logged in as the owner role:
/// the tables it makes are the owner's, its record is in the admin-only bookkeeping, and the
/// role cannot log in afterwards — also when a crashed run had left it able to (drift on the
/// role, repaired in the same apply before the migration's session connects).
#[test]
fn later_migrations_run_as_the_owner_login_and_leave_it_closed() {
    let mut fx = Fixture::new();
    let mut spec = fx.spec(Isolation::Shared);
    let names = fx.exec.names(&spec);
    let pw = password();
    fx.provision(&spec, &pw);

    fx.admin(&fx.pooled)
        .batch_execute(&format!(
            "ALTER ROLE {} LOGIN PASSWORD 'left-by-a-crash'",
            names.owner_role
        ))
        .expect("a crashed run's leftover");
    spec.blueprint.version = 2;
    spec.blueprint.baseline.push(bulkhead_core::blueprint::BaselineMigration {
        id: "0003_inventory".to_owned(),
        sql: "CREATE TABLE inventory (sku text PRIMARY KEY, who text NOT NULL DEFAULT session_user);\n\
              INSERT INTO inventory (sku) VALUES ('first');"
            .to_owned(),
    });
    let plan = fx.exec.plan(&spec).expect("plan");
    let changes: Vec<String> = plan.actions.iter().map(PlanAction::headline).collect();
    assert_eq!(
        changes,
        [
            format!("update role {}", names.owner_role),
            "create baseline 0003_inventory".to_owned()
        ]
    );
    fx.apply(&spec, &plan, &pw).expect("apply");
    assert!(fx.exec.plan(&spec).expect("plan").is_empty());

    let mut admin = fx.admin(&fx.pooled);
    let who = diesel::sql_query(format!(
        "SELECT who || ' ' || pg_get_userbyid(c.relowner) AS value FROM {}.inventory, pg_class c \
         WHERE c.oid = '{}.inventory'::regclass",
        names.schema, names.schema
    ))
    .get_result::<TextValue>(&mut admin)
    .expect("the migration's row");
    assert_eq!(
        who.value,
        format!("{} {}", names.owner_role, names.owner_role),
        "the migration's session logged in as the owner role and made the table"
    );
    let recorded = count(
        &mut admin,
        "SELECT count(*) AS count FROM bulkhead_meta.baseline WHERE schema_name = $1",
        &names.schema,
    );
    assert_eq!(recorded, 3);
    let can_login = diesel::sql_query(
        "SELECT (rolcanlogin OR rolpassword IS NOT NULL)::text AS value FROM pg_authid WHERE rolname = $1",
    )
    .bind::<Text, _>(&names.owner_role)
    .get_result::<TextValue>(&mut admin)
    .expect("owner role");
    assert_eq!(can_login.value, "false", "the owner role may not log in");
    all_verified(&fx.exec.verify_isolation(&spec, &pw).expect("verify"));
}

/// A schema that is made again (a repair after it was dropped) is not a first apply: the owner
/// role existed, and code that once ran as it may have set default privileges. The migrations
/// then run as the owner login, not in the admin's session, and the re-made schema carries no
/// grant those default privileges would hand out.
#[test]
fn a_remade_schema_migrates_as_the_owner_and_drops_planted_grants() {
    let mut fx = Fixture::new();
    let mut spec = fx.spec(Isolation::Shared);
    let names = fx.exec.names(&spec);
    let pw = password();
    spec.blueprint
        .baseline
        .push(bulkhead_core::blueprint::BaselineMigration {
            id: "0003_who".to_owned(),
            sql: "CREATE TABLE who (name text NOT NULL DEFAULT session_user);\n\
              INSERT INTO who DEFAULT VALUES;"
                .to_owned(),
        });
    fx.provision(&spec, &pw);
    let who = |fx: &Fixture| {
        diesel::sql_query(format!("SELECT name AS value FROM {}.who", names.schema))
            .get_result::<TextValue>(&mut fx.admin(&fx.pooled))
            .expect("who ran the migration")
            .value
    };
    // A brand-new environment: no tenant code could be waiting, the admin's session ran it.
    assert_eq!(who(&fx), "postgres");

    let other = format!("rv_other_{}", spec.id.simple());
    fx.admin(&fx.pooled)
        .batch_execute(&format!(
            "CREATE ROLE {other}; \
             ALTER DEFAULT PRIVILEGES FOR ROLE {owner} GRANT USAGE, CREATE ON SCHEMAS TO {other}; \
             DROP SCHEMA {schema} CASCADE; \
             DELETE FROM bulkhead_meta.baseline WHERE schema_name = '{schema}';",
            owner = names.owner_role,
            schema = names.schema
        ))
        .expect("what code running as the owner, and a dropped schema, leave behind");
    let plan = fx.exec.plan(&spec).expect("plan");
    assert!(
        plan.actions
            .iter()
            .any(|a| a.op == Op::Create && a.kind == "schema"),
        "{}",
        plan.summary()
    );
    fx.apply(&spec, &plan, &pw).expect("repair");
    assert_eq!(
        who(&fx),
        names.owner_role,
        "the re-made schema's migrations ran as the owner login"
    );
    let mut admin = fx.admin(&fx.pooled);
    let planted = count(
        &mut admin,
        "SELECT count(*) AS count FROM pg_namespace n, aclexplode(n.nspacl) a \
         WHERE n.nspname = $1 AND pg_get_userbyid(a.grantee) LIKE 'rv_other_%'",
        &names.schema,
    );
    assert_eq!(planted, 0, "the planted default privilege granted nothing");
    admin
        .batch_execute(&format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} REVOKE ALL ON SCHEMAS FROM {other}; \
             DROP ROLE {other};",
            owner = names.owner_role
        ))
        .expect("clean up");
    all_verified(&fx.exec.verify_isolation(&spec, &pw).expect("verify"));
}
