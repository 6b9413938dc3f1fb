//! A reads every catalog relation it may read and finds nothing that identifies B.

use super::{Env, options, rows, run, two_tenants, value, values};
use crate::helpers::Stack;
use diesel::PgConnection;

/// What one sweep of the catalogs found.
struct Sweep {
    /// Relations read.
    read: usize,
    /// `relation: row` for each row whose text contains a needle.
    hits: Vec<String>,
    /// Relations that could not be read, with the server's answer.
    unreadable: Vec<String>,
}

/// Reads, as the session's role, every relation of `pg_catalog` and `information_schema` it
/// has SELECT on, and keeps the rows whose text contains any of `needles` (case-insensitive).
fn sweep(conn: &mut PgConnection, needles: &[String]) -> Sweep {
    run(conn, "SET statement_timeout = 0").expect("lift the statement timeout for the sweep");
    let relations = values(
        conn,
        "SELECT format('%I.%I', n.nspname, c.relname) AS v
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname IN ('pg_catalog', 'information_schema') AND c.relkind IN ('r', 'v', 'm')
            AND pg_catalog.has_table_privilege(c.oid, 'SELECT')
          ORDER BY 1",
    );
    // Hex-encoded, so the sweep's own statement (in pg_stat_activity, pg_cursors) does not
    // carry the needles.
    let patterns = needles
        .iter()
        .map(|n| {
            format!(
                "'%' || convert_from(decode('{}', 'hex'), 'UTF8') || '%'",
                hex::encode(n)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut found = Sweep {
        read: 0,
        hits: Vec::new(),
        unreadable: Vec::new(),
    };
    for relation in relations {
        let sql = format!(
            "SELECT left(t::text, 400) AS v FROM {relation} AS t WHERE t::text ILIKE ANY (ARRAY[{patterns}])"
        );
        match rows(conn, &sql) {
            Ok(matched) => {
                found.read += 1;
                found
                    .hits
                    .extend(matched.into_iter().map(|row| format!("{relation}: {row}")));
            }
            Err(error) => found.unreadable.push(format!("{relation}: {error}")),
        }
    }
    found
}

/// With B's sessions open in both its environments, A (from its shared session in the pooled
/// database and from its dedicated database) reads every catalog table and view it may:
/// `pg_shdescription`, `pg_description`, `pg_database`, `pg_roles`, `pg_namespace`,
/// `pg_stat_activity`, `pg_stat_database`, `pg_settings`, `information_schema`… No row holds
/// B's slug, environment names or cost tag values. (A control needle, B's role name, which is
/// opaque and in `pg_roles`, proves the sweep reads what it claims.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learns_nothing_about_b_from_the_catalogs() {
    let stack = Stack::start(options()).await;
    let world = two_tenants(&stack).await;
    let (a, b) = (&world.a, &world.b);
    let needles = b.identifying();
    assert_eq!(needles.len(), 6, "{needles:?}");

    // B is at work in both environments while A looks.
    let mut b_sessions: Vec<PgConnection> = [&b.shared, &b.dedicated]
        .into_iter()
        .map(Env::connect)
        .collect();
    for session in &mut b_sessions {
        run(session, "SELECT count(*) FROM orders").expect("B reads its orders");
    }

    let mut report = Vec::new();
    for (label, env) in [("A (shared)", &a.shared), ("A (dedicated)", &a.dedicated)] {
        let mut conn = env.connect();
        let control = sweep(&mut conn, std::slice::from_ref(&b.shared.names.app_role));
        assert!(
            control
                .hits
                .iter()
                .any(|h| h.starts_with("pg_catalog.pg_roles:")),
            "{label}: the sweep does not see B's (opaque) role name in pg_roles: {:?}",
            control.hits
        );
        let found = sweep(&mut conn, &needles);
        assert!(
            found.read > 100,
            "{label} read only {} relations; unreadable: {:?}",
            found.read,
            found.unreadable
        );
        // Every hit counts (the row text shown is cut at 400 characters).
        report.extend(found.hits.iter().map(|hit| format!("{label}: {hit}")));
        eprintln!(
            "{label}: read {} catalog relations; could not read {}: {:?}",
            found.read,
            found.unreadable.len(),
            found.unreadable
        );
    }
    for session in &mut b_sessions {
        assert_eq!(value(session, "SELECT 'ok' AS v"), "ok", "B's session");
    }
    assert!(
        report.is_empty(),
        "A learned who B is ({needles:?}) from the catalogs ({} rows):\n{}",
        report.len(),
        report.join("\n")
    );
}
