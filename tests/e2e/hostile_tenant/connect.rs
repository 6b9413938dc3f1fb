//! A's roles connect to their own database and to no other on the server.

use super::{Env, options, two_tenants};
use crate::helpers::{Stack, admin_conn, connect_to, texts};

/// Databases A's role may try: the ones that existed before the stack started (its worker
/// locks them down when it prepares its targets) and the ones this test knows by name.
fn other_databases(stack: &Stack, before: &[String], b: &Env, except: &str) -> Vec<String> {
    let control = stack
        .db_url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut all: Vec<String> = [
        b.names.database.clone(),
        control,
        "postgres".to_owned(),
        "template1".to_owned(),
        stack.canary_database(),
    ]
    .into_iter()
    .chain(before.iter().cloned())
    .filter(|d| d != except)
    .collect();
    all.sort();
    all.dedup();
    all
}

/// A's shared and dedicated roles, with their real passwords, are refused ("permission denied
/// for database") by B's dedicated database, the control database, `postgres`, `template1`,
/// the canary database, A's other environment's database and every database that was on the
/// server before the stack started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cannot_connect_to_any_other_database() {
    let before: Vec<String> = texts(
        &mut admin_conn("postgres"),
        "SELECT datname::text AS v FROM pg_catalog.pg_database WHERE datallowconn",
    )
    .into_iter()
    .flatten()
    .collect();
    let stack = Stack::start(options()).await;
    let world = two_tenants(&stack).await;
    let (a, b) = (&world.a, &world.b);
    let mut holes = Vec::new();
    let mut tried = 0;
    for (label, env, other_own) in [
        ("A (shared)", &a.shared, &a.dedicated.names.database),
        ("A (dedicated)", &a.dedicated, &stack.pooled_database),
    ] {
        // Its own database accepts it.
        env.connect();
        let mut targets = other_databases(&stack, &before, &b.dedicated, &env.names.database);
        targets.push(other_own.clone());
        for database in targets {
            tried += 1;
            let outcome = connect_to(&env.creds, &database);
            eprintln!(
                "{label} → {database}: {}",
                outcome
                    .as_ref()
                    .map_or_else(|e| e.trim().to_owned(), |_| "connected".to_owned())
            );
            match outcome {
                Ok(_) => holes.push(format!("{label} connected to database {database}")),
                Err(error) if error.contains("permission denied for database") => {}
                // Dropped meanwhile by another test.
                Err(error) if before.contains(&database) && error.contains("does not exist") => {}
                Err(error) => holes.push(format!(
                    "{label} → database {database}: not a privilege refusal: {error}"
                )),
            }
        }
    }
    assert!(tried >= 12, "tried only {tried} databases");
    assert!(
        holes.is_empty(),
        "A reached other databases ({} of {tried} attempts):\n{}",
        holes.len(),
        holes.join("\n")
    );
}
