//! Data walls between A and B: A cannot touch B's objects, and cannot create anything outside
//! its own schema.

use super::{in_rolled_back_tx, is_refusal, options, run, two_tenants, values};
use crate::helpers::{Stack, admin_conn};
use diesel::PgConnection;

/// How an attempt is made: inside a transaction that is rolled back (so an attempt that
/// wrongly succeeds changes nothing), or alone (statements that cannot run in a transaction).
#[derive(Clone, Copy)]
enum Mode {
    RolledBack,
    Alone,
}

/// Runs every attempt as the session's role; returns one line per attempt that was not refused
/// for lack of rights (it succeeded, or failed for another reason).
fn not_refused(
    conn: &mut PgConnection,
    who: &str,
    attempts: &[(&str, String, Mode)],
) -> Vec<String> {
    let mut holes = Vec::new();
    for (what, sql, mode) in attempts {
        let outcome = match mode {
            Mode::RolledBack => in_rolled_back_tx(conn, sql),
            Mode::Alone => run(conn, sql).map(|_| ()),
        };
        match outcome {
            Err(error) if is_refusal(&error) => {}
            Err(error) => holes.push(format!("{who}: {what}: `{sql}` → not a refusal: {error}")),
            Ok(()) => holes.push(format!("{who}: {what}: `{sql}` → succeeded")),
        }
    }
    holes
}

/// What a role must not be able to create anywhere but in its own schema.
fn outside_own_schema(sfx: &str, own_schema: &str) -> Vec<(&'static str, String, Mode)> {
    use Mode::{Alone, RolledBack};
    vec![
        (
            "create a table in public",
            "CREATE TABLE public.intruder (x integer)".into(),
            RolledBack,
        ),
        (
            "create a function in public",
            "CREATE FUNCTION public.intruder() RETURNS integer LANGUAGE sql AS 'SELECT 1'".into(),
            RolledBack,
        ),
        (
            "create a schema",
            format!("CREATE SCHEMA intruder_{sfx}"),
            RolledBack,
        ),
        (
            "create schema bulkhead_meta",
            "CREATE SCHEMA bulkhead_meta".into(),
            RolledBack,
        ),
        (
            "create a temporary table",
            "CREATE TEMPORARY TABLE scratch (x integer)".into(),
            RolledBack,
        ),
        (
            "create a database",
            format!("CREATE DATABASE intruder_{sfx}"),
            Alone,
        ),
        (
            "create a role",
            format!("CREATE ROLE intruder_{sfx}"),
            RolledBack,
        ),
        (
            "create a trusted extension",
            format!("CREATE EXTENSION pgcrypto SCHEMA {own_schema}"),
            RolledBack,
        ),
        (
            "create an untrusted extension",
            format!("CREATE EXTENSION dblink SCHEMA {own_schema}"),
            RolledBack,
        ),
        (
            "create an event trigger",
            format!(
                "CREATE EVENT TRIGGER intruder_{sfx} ON ddl_command_start EXECUTE FUNCTION pg_catalog.now()"
            ),
            RolledBack,
        ),
    ]
}

/// Privileges the session's role has on schema `bulkhead_meta` and anything in it (none may
/// be listed); empty when the schema does not exist in this database.
fn bulkhead_meta_privileges(conn: &mut PgConnection) -> Vec<String> {
    values(
        conn,
        "SELECT format('schema %s: %s', n.nspname, p.privilege) AS v
           FROM pg_catalog.pg_namespace n
          CROSS JOIN unnest(ARRAY['USAGE', 'CREATE']) AS p (privilege)
          WHERE n.nspname = 'bulkhead_meta' AND pg_catalog.has_schema_privilege(n.oid, p.privilege)
         UNION ALL
         SELECT format('relation %s: %s', c.oid::regclass, p.privilege)
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'])
                AS p (privilege)
          WHERE n.nspname = 'bulkhead_meta' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
            AND pg_catalog.has_table_privilege(c.oid, p.privilege)
         UNION ALL
         SELECT format('function %s: EXECUTE', p.oid::regprocedure)
           FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'bulkhead_meta' AND pg_catalog.has_function_privilege(p.oid, 'EXECUTE')
            AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')",
    )
}

/// A reads, writes, alters, drops, truncates, locks and references B's table and sequence in
/// the pooled database, changes B's schema and B's database; creates in `public`, in B's
/// schema, in a new schema (`bulkhead_meta` too), a temporary table, a database, a role, an
/// extension. Every attempt is refused for lack of rights, from A's shared and dedicated
/// sessions alike; B's data is intact afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cannot_touch_b_or_create_outside_its_schema() {
    use Mode::{Alone, RolledBack};
    let stack = Stack::start(options()).await;
    let world = two_tenants(&stack).await;
    let (a, b) = (&world.a, &world.b);
    let sfx = super::suffix();
    let bs = &b.shared.names.schema;
    let b_db = &b.dedicated.names.database;
    let pooled = &stack.pooled_database;

    let mut conn = a.shared.connect();
    // A works in its own schema: the refusals below are walls, not a broken session.
    run(&mut conn, "CREATE TABLE mine (id bigint PRIMARY KEY)").expect("A creates in its schema");
    run(&mut conn, "INSERT INTO mine VALUES (1)").expect("A writes its own table");

    let against_b: Vec<(&str, String, Mode)> = vec![
        (
            "read B's table",
            format!("SELECT count(*) FROM {bs}.orders"),
            RolledBack,
        ),
        (
            "write B's table",
            format!("INSERT INTO {bs}.orders (external_id, customer) VALUES ('a', 'a')"),
            RolledBack,
        ),
        (
            "update B's table",
            format!("UPDATE {bs}.orders SET customer = 'a'"),
            RolledBack,
        ),
        (
            "delete from B's table",
            format!("DELETE FROM {bs}.orders"),
            RolledBack,
        ),
        (
            "truncate B's table",
            format!("TRUNCATE {bs}.orders"),
            RolledBack,
        ),
        (
            "alter B's table",
            format!("ALTER TABLE {bs}.orders ADD COLUMN spy text"),
            RolledBack,
        ),
        (
            "rename B's table",
            format!("ALTER TABLE {bs}.orders RENAME TO taken"),
            RolledBack,
        ),
        (
            "drop B's table",
            format!("DROP TABLE {bs}.orders CASCADE"),
            RolledBack,
        ),
        (
            "lock B's table",
            format!("LOCK TABLE {bs}.orders IN ACCESS EXCLUSIVE MODE"),
            RolledBack,
        ),
        (
            "reference B's table",
            format!("CREATE TABLE fk_to_b (id bigint REFERENCES {bs}.orders (id))"),
            RolledBack,
        ),
        (
            "read B's sequence",
            format!("SELECT last_value FROM {bs}.orders_id_seq"),
            RolledBack,
        ),
        (
            "advance B's sequence",
            format!("SELECT nextval('{bs}.orders_id_seq')"),
            RolledBack,
        ),
        (
            "set B's sequence",
            format!("SELECT setval('{bs}.orders_id_seq', 1000000)"),
            RolledBack,
        ),
        (
            "alter B's sequence",
            format!("ALTER SEQUENCE {bs}.orders_id_seq RESTART"),
            RolledBack,
        ),
        (
            "create in B's schema",
            format!("CREATE TABLE {bs}.intruder (x integer)"),
            RolledBack,
        ),
        (
            "create a function in B's schema",
            format!("CREATE FUNCTION {bs}.intruder() RETURNS integer LANGUAGE sql AS 'SELECT 1'"),
            RolledBack,
        ),
        (
            "rename B's schema",
            format!("ALTER SCHEMA {bs} RENAME TO taken_{sfx}"),
            RolledBack,
        ),
        (
            "drop B's schema",
            format!("DROP SCHEMA {bs} CASCADE"),
            RolledBack,
        ),
        (
            "comment on B's schema",
            format!("COMMENT ON SCHEMA {bs} IS 'taken'"),
            RolledBack,
        ),
        (
            "alter the pooled database",
            format!("ALTER DATABASE {pooled} SET work_mem = '1GB'"),
            RolledBack,
        ),
        (
            "alter B's database",
            format!("ALTER DATABASE {b_db} CONNECTION LIMIT 0"),
            RolledBack,
        ),
        (
            "rename B's database",
            format!("ALTER DATABASE {b_db} RENAME TO taken_{sfx}"),
            Alone,
        ),
        ("drop B's database", format!("DROP DATABASE {b_db}"), Alone),
    ];
    let mut holes = not_refused(&mut conn, "A (shared)", &against_b);
    holes.extend(not_refused(
        &mut conn,
        "A (shared)",
        &outside_own_schema(&sfx, &a.shared.names.schema),
    ));
    for privilege in bulkhead_meta_privileges(&mut conn) {
        holes.push(format!("A (shared) holds {privilege} in {pooled}"));
    }

    let mut dedicated = a.dedicated.connect();
    run(&mut dedicated, "CREATE TABLE mine (id bigint PRIMARY KEY)")
        .expect("A creates in its dedicated schema");
    holes.extend(not_refused(
        &mut dedicated,
        "A (dedicated)",
        &outside_own_schema(&sfx, "app"),
    ));
    for privilege in bulkhead_meta_privileges(&mut dedicated) {
        holes.push(format!(
            "A (dedicated) holds {privilege} in {}",
            a.dedicated.names.database
        ));
    }

    // Whatever wrongly succeeded outside a rolled-back transaction goes again.
    let _ = run(
        &mut admin_conn("postgres"),
        &format!("DROP DATABASE IF EXISTS intruder_{sfx}"),
    );

    // B's data is as B left it.
    for env in [&b.shared, &b.dedicated] {
        let mut b_conn = env.connect();
        assert_eq!(
            values(
                &mut b_conn,
                "SELECT external_id AS v FROM orders ORDER BY id"
            ),
            vec!["b-marker".to_owned()],
            "B's orders in {}",
            env.name
        );
    }
    assert!(holes.is_empty(), "A got past a wall:\n{}", holes.join("\n"));
}
