//! Traps: A plants code where the admin's later jobs will touch it, then every kind of job
//! runs. None of A's code may ever run as anyone but A's own two roles.

use super::{Env, finished, id_of, options, run, two_tenants, value, values};
use crate::helpers::{Stack, admin_conn, execute, texts};
use serde_json::Value;

/// Objects A plants; a job that refuses to go on must name one of them.
const TRAP_OBJECTS: &[&str] = &[
    "bulkhead_baseline",
    "inventory",
    "upper",
    "leak",
    "trap",
    "character varying",
];

/// The logging machinery every trap shares: a log table and two sequences everyone may write
/// (sequences are not transactional, so a trap that ran in a transaction that was rolled back
/// still leaves its count), `trap_note` (logs who runs it and counts a breach: a superuser, a
/// role other than A's two, or an escalation that succeeded) and `trap` (what a hostile
/// function does: `RESET ROLE`, `SET ROLE postgres`, `CREATE ROLE … SUPERUSER`, `ALTER ROLE
/// <A's app role> SUPERUSER`, `SET SESSION AUTHORIZATION`, each in its own exception block,
/// each logged; then it queues a pair of deferred constraint triggers that run it again at the
/// commit of whatever transaction it ran in).
const TRAP_MACHINERY: &str = r"
CREATE TABLE @S@.trap_log (
    via text NOT NULL,
    step text NOT NULL,
    outcome text NOT NULL,
    current_role_name text NOT NULL,
    session_role_name text NOT NULL,
    is_superuser boolean NOT NULL,
    logged_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
GRANT ALL ON TABLE @S@.trap_log TO PUBLIC;
CREATE SEQUENCE @S@.trap_runs;
CREATE SEQUENCE @S@.trap_breaches;
GRANT ALL ON SEQUENCE @S@.trap_runs, @S@.trap_breaches TO PUBLIC;

CREATE FUNCTION @S@.trap_note(via text, step text, outcome text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $note$
DECLARE
    su boolean;
BEGIN
    SELECT r.rolsuper INTO su FROM pg_catalog.pg_roles r WHERE r.rolname = current_user;
    su := coalesce(su, true);
    IF su OR current_user NOT IN ('@APP@', '@OWNER@')
       OR (step IN ('CREATE ROLE', 'ALTER ROLE') AND outcome = 'succeeded') THEN
        PERFORM pg_catalog.nextval('@S@.trap_breaches');
    END IF;
    INSERT INTO @S@.trap_log (via, step, outcome, current_role_name, session_role_name, is_superuser)
    VALUES (via, step, outcome, current_user, session_user, su);
END
$note$;

CREATE FUNCTION @S@.trap(via text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $trap$
BEGIN
    PERFORM pg_catalog.nextval('@S@.trap_runs');
    PERFORM @S@.trap_note(via, 'entered', 'ran');
    BEGIN
        EXECUTE 'RESET ROLE';
        PERFORM @S@.trap_note(via, 'RESET ROLE', 'succeeded');
    EXCEPTION WHEN OTHERS THEN
        PERFORM @S@.trap_note(via, 'RESET ROLE', 'refused: ' || SQLERRM);
    END;
    BEGIN
        EXECUTE 'SET ROLE postgres';
        PERFORM @S@.trap_note(via, 'SET ROLE', 'succeeded');
    EXCEPTION WHEN OTHERS THEN
        PERFORM @S@.trap_note(via, 'SET ROLE', 'refused: ' || SQLERRM);
    END;
    BEGIN
        EXECUTE 'SET SESSION AUTHORIZATION postgres';
        PERFORM @S@.trap_note(via, 'SET SESSION AUTHORIZATION', 'succeeded');
    EXCEPTION WHEN OTHERS THEN
        PERFORM @S@.trap_note(via, 'SET SESSION AUTHORIZATION', 'refused: ' || SQLERRM);
    END;
    BEGIN
        EXECUTE 'CREATE ROLE @ESC@ SUPERUSER';
        PERFORM @S@.trap_note(via, 'CREATE ROLE', 'succeeded');
    EXCEPTION WHEN OTHERS THEN
        PERFORM @S@.trap_note(via, 'CREATE ROLE', 'refused: ' || SQLERRM);
    END;
    BEGIN
        EXECUTE 'ALTER ROLE @APP@ SUPERUSER';
        PERFORM @S@.trap_note(via, 'ALTER ROLE', 'succeeded');
    EXCEPTION WHEN OTHERS THEN
        PERFORM @S@.trap_note(via, 'ALTER ROLE', 'refused: ' || SQLERRM);
    END;
    -- Leave work for later: a deferred constraint trigger fires at the end of the transaction,
    -- as whoever is the current role then.
    IF via NOT LIKE 'deferred%' THEN
        BEGIN
            INSERT INTO @S@.trap_defer1 VALUES (via);
        EXCEPTION WHEN OTHERS THEN
            PERFORM @S@.trap_note(via, 'arm a deferred trigger', 'refused: ' || SQLERRM);
        END;
    END IF;
END
$trap$;

-- Two deferred constraint triggers: the first, fired by whatever makes deferred triggers fire
-- (SET CONSTRAINTS ALL IMMEDIATE, or the commit), defers constraints again and queues the
-- second, which so fires only at the commit, and there runs the trap.
CREATE TABLE @S@.trap_defer1 (via text);
CREATE TABLE @S@.trap_defer2 (via text);
GRANT ALL ON TABLE @S@.trap_defer1, @S@.trap_defer2 TO PUBLIC;
CREATE FUNCTION @S@.trap_defer_stage1() RETURNS trigger
LANGUAGE plpgsql VOLATILE AS $d1$
BEGIN
    PERFORM @S@.trap_note('deferred stage 1 of ' || NEW.via, 'entered', 'ran');
    SET CONSTRAINTS ALL DEFERRED;
    INSERT INTO @S@.trap_defer2 VALUES (NEW.via);
    RETURN NULL;
END
$d1$;
CREATE FUNCTION @S@.trap_defer_stage2() RETURNS trigger
LANGUAGE plpgsql VOLATILE AS $d2$
BEGIN
    PERFORM @S@.trap('deferred to the commit: ' || NEW.via);
    RETURN NULL;
END
$d2$;
CREATE CONSTRAINT TRIGGER trap_defer1 AFTER INSERT ON @S@.trap_defer1
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION @S@.trap_defer_stage1();
CREATE CONSTRAINT TRIGGER trap_defer2 AFTER INSERT ON @S@.trap_defer2
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION @S@.trap_defer_stage2();

CREATE FUNCTION @S@.trap_row() RETURNS trigger
LANGUAGE plpgsql VOLATILE AS $row$
BEGIN
    PERFORM @S@.trap(TG_OP || ' on ' || TG_TABLE_NAME);
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$row$;

-- Built-ins shadowed with more specific argument types: the version-2 migration calls
-- upper('x'::varchar) and compares varchar with =.
CREATE FUNCTION @S@.upper(v varchar) RETURNS text
LANGUAGE plpgsql VOLATILE AS $f$
BEGIN
    PERFORM @S@.trap('upper(varchar)');
    RETURN pg_catalog.upper(v::text);
END
$f$;
CREATE FUNCTION @S@.trap_eq(l varchar, r varchar) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $f$
BEGIN
    PERFORM @S@.trap('=(varchar, varchar)');
    RETURN l::text OPERATOR(pg_catalog.=) r::text;
END
$f$;
CREATE OPERATOR @S@.= (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = @S@.trap_eq);

-- A leaky function for views to read.
CREATE FUNCTION @S@.leak() RETURNS SETOF varchar
LANGUAGE plpgsql VOLATILE AS $f$
BEGIN
    PERFORM @S@.trap('leak()');
    RETURN NEXT 'seed'::varchar;
END
$f$;
";

/// Shared environment: the baseline record table and the table version 2 creates exist
/// already, as A's tables with triggers; a view over the leaky function.
const SHARED_TRAPS: &str = r"
CREATE TABLE @S@.bulkhead_baseline (
    id text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
GRANT ALL ON TABLE @S@.bulkhead_baseline TO PUBLIC;
CREATE TRIGGER bulkhead_baseline_trap BEFORE INSERT OR UPDATE OR DELETE ON @S@.bulkhead_baseline
    FOR EACH ROW EXECUTE FUNCTION @S@.trap_row();
CREATE TABLE @S@.inventory (sku varchar(40));
GRANT ALL ON TABLE @S@.inventory TO PUBLIC;
CREATE TRIGGER inventory_trap BEFORE INSERT OR UPDATE OR DELETE ON @S@.inventory
    FOR EACH ROW EXECUTE FUNCTION @S@.trap_row();
CREATE VIEW @S@.leaky AS SELECT l.sku FROM @S@.leak() AS l (sku);
GRANT ALL ON @S@.leaky TO PUBLIC;
";

/// Dedicated environment: the same names as views over the leaky function, with INSTEAD OF
/// triggers.
const DEDICATED_TRAPS: &str = r"
CREATE VIEW @S@.bulkhead_baseline AS
    SELECT NULL::text AS id, NULL::text AS checksum, NULL::timestamptz AS applied_at
      FROM @S@.leak() AS l (sku);
GRANT ALL ON @S@.bulkhead_baseline TO PUBLIC;
CREATE TRIGGER bulkhead_baseline_trap INSTEAD OF INSERT OR UPDATE OR DELETE ON @S@.bulkhead_baseline
    FOR EACH ROW EXECUTE FUNCTION @S@.trap_row();
CREATE VIEW @S@.inventory AS SELECT l.sku FROM @S@.leak() AS l (sku);
GRANT ALL ON @S@.inventory TO PUBLIC;
CREATE TRIGGER inventory_trap INSTEAD OF INSERT OR UPDATE OR DELETE ON @S@.inventory
    FOR EACH ROW EXECUTE FUNCTION @S@.trap_row();
";

fn fill(template: &str, env: &Env, escalation: &str) -> String {
    template
        .replace("@S@", &env.names.schema)
        .replace("@APP@", &env.names.app_role)
        .replace("@OWNER@", &env.names.owner_role)
        .replace("@ESC@", escalation)
}

/// Drops the role a trap that ran as superuser would have made, however the test ends.
struct DropRoleOnExit(String);

impl Drop for DropRoleOnExit {
    fn drop(&mut self) {
        let mut server = admin_conn("postgres");
        let _ = run(&mut server, &format!("DROP ROLE IF EXISTS {}", self.0));
    }
}

/// What the traps of one environment recorded, read as the server's superuser.
struct Evidence {
    log: Vec<String>,
    /// Log rows (not A's own self-test) run by a superuser or a role other than A's two.
    offending: Vec<String>,
    runs: String,
    breaches: String,
}

fn evidence(env: &Env) -> Evidence {
    let s = &env.names.schema;
    let mut conn = admin_conn(&env.names.database);
    let line = "concat_ws(' | ', via, step, outcome, 'current_user=' || current_role_name,
                'session_user=' || session_role_name,
                CASE WHEN is_superuser THEN 'SUPERUSER' ELSE 'not superuser' END)";
    let log = values(
        &mut conn,
        &format!("SELECT {line} AS v FROM {s}.trap_log ORDER BY logged_at"),
    );
    let offending = values(
        &mut conn,
        &format!(
            "SELECT {line} AS v FROM {s}.trap_log WHERE via <> 'self-test'
                AND (is_superuser OR current_role_name NOT IN ('{}', '{}')) ORDER BY logged_at",
            env.names.app_role, env.names.owner_role
        ),
    );
    let count = |conn: &mut diesel::PgConnection, sequence: &str| {
        value(
            conn,
            &format!(
                "SELECT (CASE WHEN is_called THEN last_value ELSE 0 END)::text AS v FROM {s}.{sequence}"
            ),
        )
    };
    let runs = count(&mut conn, "trap_runs");
    let breaches = count(&mut conn, "trap_breaches");
    Evidence {
        log,
        offending,
        runs,
        breaches,
    }
}

/// A job succeeded, or failed with an error that names one of the planted objects.
fn acceptable(job: &Value) -> bool {
    match job["state"].as_str() {
        Some("succeeded") => true,
        Some("failed") => {
            let error = job["error"].as_str().unwrap_or_default();
            TRAP_OBJECTS.iter().any(|name| error.contains(name))
        }
        _ => false,
    }
}

/// Runs a job action on `env`, waits for it, and records a problem unless it is acceptable.
async fn act(stack: &Stack, env: &Env, action: &str, problems: &mut Vec<String>) -> Value {
    let job = stack.job_action(&env.tenant, &env.id, action, None).await;
    let job = finished(stack, &env.tenant, &job).await;
    eprintln!(
        "{} {action}: {} {}",
        env.name,
        job["state"],
        job["error"].as_str().unwrap_or("")
    );
    if !acceptable(&job) {
        problems.push(format!(
            "{} {action}: {} with error {}",
            env.name, job["state"], job["error"]
        ));
    }
    job
}

fn superuser_roles(names: &[&str]) -> Vec<String> {
    let list = names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    texts(
        &mut admin_conn("postgres"),
        &format!("SELECT rolname::text AS v FROM pg_catalog.pg_roles WHERE rolsuper AND rolname IN ({list})"),
    )
    .into_iter()
    .flatten()
    .collect()
}

/// As A's app role, in both its environments: a baseline record table (shared: a table with
/// an INSERT trigger; dedicated: a view with an INSTEAD OF trigger), the table version 2
/// creates (`inventory`, likewise), `upper(varchar)` and `=(varchar, varchar)` shadowing
/// built-ins, a view over a leaky function; every trap logs who runs it, tries to become the
/// superuser, and leaves a deferred constraint trigger that runs it again at the commit. Then: a re-apply, a drift repair (connection limit changed by the server's
/// superuser → drift check says drifted → apply → ready), a drift check, an apply of version 2,
/// another drift check and a destroy. No trap ever ran as a superuser or as a role other than
/// A's own two, no escalation stuck (no new role, A's roles not superuser), each job succeeded
/// or failed naming a planted object, and B's environments are as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_never_run_with_more_than_a_privileges() {
    let mut opts = options();
    opts.env = vec![("BULKHEAD_JOB_MAX_ATTEMPTS".into(), "1".into())];
    let stack = Stack::start(opts).await;
    let world = two_tenants(&stack).await;
    let (a, b) = (&world.a, &world.b);
    let escalation = format!("bh_trap_{}", &stack.id[stack.id.len() - 16..]);
    let _cleanup = DropRoleOnExit(escalation.clone());

    for (env, traps) in [(&a.shared, SHARED_TRAPS), (&a.dedicated, DEDICATED_TRAPS)] {
        let mut conn = env.connect();
        let sql = fill(&format!("{TRAP_MACHINERY}{traps}"), env, &escalation);
        diesel::connection::SimpleConnection::batch_execute(&mut conn, &sql)
            .unwrap_or_else(|e| panic!("A plants its traps in {}: {e}", env.name));
        // The trap works: run by A, it logs A and escalates nowhere.
        run(
            &mut conn,
            &format!("SELECT {}.trap('self-test')", env.names.schema),
        )
        .expect("A runs its own trap");
        let seen = evidence(env);
        // The trap, and its deferred part at the commit.
        assert_eq!(seen.runs, "2", "{:#?}", seen.log);
        assert_eq!(seen.breaches, "0", "{:#?}", seen.log);
        assert!(
            seen.log
                .iter()
                .any(|l| l.starts_with("deferred to the commit: self-test | entered")),
            "{:#?}",
            seen.log
        );
        assert!(
            seen.log
                .iter()
                .any(|l| l.contains("SET ROLE | refused: permission denied to set role")),
            "{:#?}",
            seen.log
        );
    }

    let mut problems = Vec::new();
    let mut server = admin_conn("postgres");
    for env in [&a.shared, &a.dedicated] {
        // A re-apply.
        let job = act(&stack, env, "apply", &mut problems).await;
        if job["state"] == "succeeded" {
            let now = stack.environment(&env.tenant, &env.id).await;
            assert_eq!(
                now["state"], "ready",
                "{} after a re-apply: {now}",
                env.name
            );
        }
        // Drift made behind Bulkhead's back, found, and repaired.
        execute(
            &mut server,
            &format!("ALTER ROLE {} CONNECTION LIMIT 77", env.names.app_role),
        );
        let check = act(&stack, env, "drift-check", &mut problems).await;
        let drifted = stack.environment(&env.tenant, &env.id).await;
        if check["state"] == "succeeded" {
            assert_eq!(drifted["state"], "drifted", "{}: {drifted}", env.name);
        }
        let repair = act(&stack, env, "apply", &mut problems).await;
        if repair["state"] == "succeeded" {
            let now = stack.environment(&env.tenant, &env.id).await;
            assert_eq!(
                now["state"], "ready",
                "{} after the repair: {now}",
                env.name
            );
            assert_eq!(
                value(
                    &mut server,
                    &format!(
                        "SELECT rolconnlimit::text AS v FROM pg_catalog.pg_roles WHERE rolname = '{}'",
                        env.names.app_role
                    )
                ),
                "3",
                "the repair restored the connection limit"
            );
        }
        act(&stack, env, "drift-check", &mut problems).await;
        // Version 2 of the blueprint: its migration meets the planted objects.
        execute(
            &mut stack.control_db(),
            &format!(
                "UPDATE environments SET blueprint_version = 2 WHERE id = '{}'",
                env.id
            ),
        );
        act(&stack, env, "apply", &mut problems).await;
        act(&stack, env, "drift-check", &mut problems).await;
    }

    // What the traps saw, before destroy takes their logs away.
    let mut offending = Vec::new();
    for env in [&a.shared, &a.dedicated] {
        let seen = evidence(env);
        eprintln!(
            "traps in {} ran {} times, {} breaches:\n  {}",
            env.name,
            seen.runs,
            seen.breaches,
            seen.log.join("\n  ")
        );
        if seen.breaches != "0" {
            offending.push(format!(
                "{}: {} breaches counted (some in rolled-back transactions)",
                env.name, seen.breaches
            ));
        }
        offending.extend(seen.offending.iter().map(|l| format!("{}: {l}", env.name)));
    }
    let a_roles = [
        a.shared.names.app_role.as_str(),
        a.shared.names.owner_role.as_str(),
        a.dedicated.names.app_role.as_str(),
        a.dedicated.names.owner_role.as_str(),
        escalation.as_str(),
    ];
    let superusers = superuser_roles(&a_roles);
    let escalated = crate::helpers::exists("role", &escalation, None);

    for env in [&a.shared, &a.dedicated] {
        let (status, body) = stack
            .delete(&format!(
                "/v1/tenants/{}/environments/{}",
                env.tenant, env.id
            ))
            .await;
        assert_eq!(status, 202, "destroy {}: {body}", env.name);
        let job = finished(&stack, &env.tenant, &body["job"]).await;
        eprintln!("{} destroy: {} {}", env.name, job["state"], job["error"]);
        if !acceptable(&job) {
            problems.push(format!("{} destroy: {job}", env.name));
        } else if job["state"] == "succeeded" {
            assert_eq!(
                stack.leftovers(&env.value),
                Vec::<String>::new(),
                "left of {} after destroy",
                env.name
            );
        }
    }
    let escalated_after_destroy = crate::helpers::exists("role", &escalation, None);

    // B is untouched: ready, its marker row there, not a superuser, nothing to repair.
    for env in [&b.shared, &b.dedicated] {
        let now = stack.environment(&env.tenant, &env.id).await;
        assert_eq!(now["state"], "ready", "B's {}: {now}", env.name);
        let mut conn = env.connect();
        assert_eq!(
            values(&mut conn, "SELECT external_id AS v FROM orders ORDER BY id"),
            vec!["b-marker".to_owned()]
        );
        let job = stack
            .job_action(&env.tenant, &env.id, "drift-check", None)
            .await;
        let job = stack
            .wait_succeeded(&env.tenant, &id_of(&job), super::JOB_WITHIN)
            .await;
        assert_eq!(
            job["plan"]["actions"].as_array().map(Vec::len),
            Some(0),
            "B's {} needs no repair: {}",
            env.name,
            job["plan"]
        );
        let now = stack.environment(&env.tenant, &env.id).await;
        assert_eq!(
            now["state"], "ready",
            "B's {} after a drift check: {now}",
            env.name
        );
        assert!(
            superuser_roles(&[env.names.app_role.as_str(), env.names.owner_role.as_str()])
                .is_empty(),
            "B's roles became superuser"
        );
    }

    assert!(
        offending.is_empty() && superusers.is_empty() && !escalated && !escalated_after_destroy,
        "A's code ran with more than A's privileges:\n{}\nsuperuser roles of A: {superusers:?}\n\
         escalation role {escalation} made: {escalated} (after destroy: {escalated_after_destroy})",
        offending.join("\n")
    );
    assert!(problems.is_empty(), "jobs:\n{}", problems.join("\n"));
}
