//! The retention pass on a real database: rows past their age, and only those, are deleted,
//! in batches, by one worker per interval; audit events are never touched.

use crate::seed;
use crate::support::TestDb;
use bulkhead_core::config::Config;
use bulkhead_core::retention::{self, Kind, RetentionConfig};
use bulkhead_core::store;
use diesel::sql_types::Text;
use diesel::{PgConnection, QueryableByName, RunQueryDsl};
use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;

const LOCKOUT: Duration = Duration::from_secs(900);

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = Text)]
    id: String,
}

fn ids(conn: &mut PgConnection, query: &str) -> BTreeSet<String> {
    diesel::sql_query(query)
        .load::<Id>(conn)
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .into_iter()
        .map(|row| row.id)
        .collect()
}

/// Default ages (30 days of sent mail, 24 h of job wake-ups, expired sessions and idempotency
/// keys, 90 days of job events, twice the 900 s lockout of throttle windows) in batches of 10.
fn config() -> RetentionConfig {
    let mut config = Config::from_lookup(|_| None)
        .expect("default config")
        .retention;
    config.batch = 10;
    config
}

/// One table: how to list its rows' ids, and the ids of the rows the pass must delete.
struct Table {
    kind: Option<Kind>,
    list: &'static str,
    old: BTreeSet<String>,
}

/// For every kind, 25 rows past their age (three batches) and rows that must stay: just
/// inside their age, or not finished (unsent mail and wake-ups, live sessions, events of a job
/// still queued). Plus audit events ten years old, which stay for ever.
fn seed_every_kind(conn: &mut PgConnection) -> Vec<Table> {
    let jobs = seed::queued_jobs(conn, 3);
    let (finished, queued) = (jobs[0], jobs[2]);
    seed::exec(
        conn,
        &format!(
            "UPDATE jobs SET state = 'succeeded', finished_at = now() \
             WHERE id IN ('{}', '{}')",
            jobs[0], jobs[1]
        ),
    );
    let principal = uuid::Uuid::now_v7();
    seed::exec(
        conn,
        &format!(
            "INSERT INTO principals (id, kind, email, display_name) \
             VALUES ('{principal}', 'user', 'p-{}@example.com', 'P')",
            principal.simple()
        ),
    );
    let mut insert = |n: usize, statement: String| -> BTreeSet<String> {
        let rows = ids(
            conn,
            &statement.replace("{series}", &format!("generate_series(1, {n}) AS i")),
        );
        assert_eq!(rows.len(), n, "{statement}");
        rows
    };
    let mail = |age: &str, sent: &str, failed: &str| {
        format!(
            "INSERT INTO mail_outbox (id, recipient, subject, body, kind, created_at, sent_at, \
             failed_at) SELECT gen_random_uuid(), 'someone@example.com', 's', 'b', 'invitation', \
             now() - interval '{age}', {sent}, {failed} FROM {{series}} RETURNING id::text AS id"
        )
    };
    let mut old_mail = insert(25, mail("40 days", "now() - interval '31 days'", "NULL"));
    old_mail.extend(insert(
        3,
        mail("40 days", "NULL", "now() - interval '31 days'"),
    ));
    insert(2, mail("40 days", "now() - interval '29 days'", "NULL"));
    insert(2, mail("40 days", "NULL", "NULL")); // still waiting to be sent

    let wakeup = |created: &str, sent: &str| {
        format!(
            "INSERT INTO outbox (job_id, payload, created_at, sent_at) \
             SELECT '{finished}', '{{}}', now() - interval '{created}', {sent} \
             FROM {{series}} RETURNING id::text AS id"
        )
    };
    let old_wakeups = insert(25, wakeup("26 hours", "now() - interval '25 hours'"));
    insert(2, wakeup("26 hours", "now() - interval '23 hours'"));
    insert(2, wakeup("10 days", "NULL")); // never published

    let session = |created: &str, expires: &str| {
        format!(
            "INSERT INTO sessions (id, principal_id, token_hash, created_at, expires_at) \
             SELECT gen_random_uuid(), '{principal}', sha256(gen_random_uuid()::text::bytea), \
             now() - interval '{created}', now() - interval '{expires}' \
             FROM {{series}} RETURNING id::text AS id"
        )
    };
    let old_sessions = insert(25, session("26 hours", "25 hours"));
    insert(2, session("26 hours", "23 hours"));
    insert(2, session("1 hour", "-1 hour")); // live

    let idempotency = |created: &str, tag: &str| {
        format!(
            "INSERT INTO idempotency_keys (principal_id, key, request_hash, response_status, \
             response_body, created_at) SELECT '{principal}', '{tag}-' || i, \
             sha256(i::text::bytea), 202, '{{}}', now() - interval '{created}' \
             FROM {{series}} RETURNING key AS id"
        )
    };
    let old_keys = insert(25, idempotency("25 hours", "old"));
    insert(2, idempotency("23 hours", "new"));

    let event = |job: uuid::Uuid, age: &str| {
        format!(
            "INSERT INTO job_events (job_id, occurred_at, kind, message) \
             SELECT '{job}', now() - interval '{age}', 'step', 'm' \
             FROM {{series}} RETURNING id::text AS id"
        )
    };
    let old_events = insert(25, event(finished, "91 days"));
    insert(2, event(finished, "89 days"));
    insert(2, event(queued, "91 days")); // its job has not finished

    let window = |age: &str, tag: &str| {
        format!(
            "INSERT INTO login_throttle (key, attempts, window_start) \
             SELECT 'login-ip:{tag}-' || i, 3, now() - interval '{age}' \
             FROM {{series}} RETURNING key AS id"
        )
    };
    let old_windows = insert(25, window("31 minutes", "old"));
    insert(2, window("29 minutes", "new"));

    insert(
        3,
        "INSERT INTO audit_events (id, occurred_at, actor, action, target, result, request_id, \
         prev_hash, hash) SELECT gen_random_uuid(), now() - interval '10 years', 'someone', \
         'tenant.create', 'tenant/x', 'success', 'r', sha256('p'::bytea), \
         sha256(gen_random_uuid()::text::bytea) FROM {series} RETURNING id::text AS id"
            .to_owned(),
    );

    let table = |kind, list, old| Table {
        kind: Some(kind),
        list,
        old,
    };
    vec![
        table(
            Kind::SentMail,
            "SELECT id::text AS id FROM mail_outbox",
            old_mail,
        ),
        table(
            Kind::JobOutbox,
            "SELECT id::text AS id FROM outbox",
            old_wakeups,
        ),
        table(
            Kind::ExpiredSessions,
            "SELECT id::text AS id FROM sessions",
            old_sessions,
        ),
        table(
            Kind::IdempotencyKeys,
            "SELECT key AS id FROM idempotency_keys",
            old_keys,
        ),
        table(
            Kind::JobEvents,
            "SELECT id::text AS id FROM job_events",
            old_events,
        ),
        table(
            Kind::LoginThrottle,
            "SELECT key AS id FROM login_throttle",
            old_windows,
        ),
        Table {
            kind: None,
            list: "SELECT id::text AS id FROM audit_events",
            old: BTreeSet::new(),
        },
    ]
}

#[test]
fn the_pass_deletes_exactly_the_rows_past_their_age() {
    let db = TestDb::migrated();
    let mut conn = db.connect();
    let tables = seed_every_kind(&mut conn);
    let before: Vec<BTreeSet<String>> = tables.iter().map(|t| ids(&mut conn, t.list)).collect();

    let report = retention::run_if_due(&mut conn, &config(), LOCKOUT, &|| true)
        .expect("pass")
        .expect("due: it never ran");
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(!report.unfinished, "{report:?}");
    for (table, before) in tables.iter().zip(&before) {
        let after = ids(&mut conn, table.list);
        let kept: BTreeSet<String> = before.difference(&table.old).cloned().collect();
        assert_eq!(after, kept, "{}: exactly the old rows are gone", table.list);
        assert!(
            table.old.is_subset(before) && after.len() >= 2,
            "{}",
            table.list
        );
        if let Some(kind) = table.kind {
            assert_eq!(report.deleted(kind), table.old.len(), "{kind:?}");
        }
    }

    // Run within the interval: another worker (or this one) finds nothing to do.
    assert_eq!(
        retention::run_if_due(&mut conn, &config(), LOCKOUT, &|| true).expect("pass"),
        None
    );
    seed::exec(
        &mut conn,
        "UPDATE housekeeping SET last_run_at = now() - interval '601 seconds'",
    );
    let again = retention::run_if_due(&mut conn, &config(), LOCKOUT, &|| true)
        .expect("pass")
        .expect("due again after the interval");
    assert_eq!(again.total(), 0, "{again:?}");
}

/// However many workers look at once, one runs the pass per interval.
#[test]
fn one_claim_per_interval_wins() {
    let db = TestDb::migrated();
    let racers = 8;
    let barrier = Arc::new(Barrier::new(racers));
    let claims: Vec<_> = (0..racers)
        .map(|_| {
            let (mut conn, barrier) = (db.connect(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store::housekeeping::claim(&mut conn, retention::TASK, Duration::from_secs(600))
                    .expect("claim")
            })
        })
        .collect();
    let won = claims
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .filter(|won| *won)
        .count();
    assert_eq!(won, 1);
    // Each task has its own interval.
    let mut conn = db.connect();
    assert!(
        store::housekeeping::claim(&mut conn, "another", Duration::from_secs(600)).expect("claim")
    );
}

/// A worker that is stopping ends the pass between two batches; the next pass goes on.
#[test]
fn a_stopping_worker_ends_the_pass_between_batches() {
    let db = TestDb::migrated();
    let mut conn = db.connect();
    let tables = seed_every_kind(&mut conn);
    let old: usize = tables.iter().map(|t| t.old.len()).sum();
    let asked = std::cell::Cell::new(0);
    let once = || {
        asked.set(asked.get() + 1);
        asked.get() == 1
    };
    let report = retention::run(&mut conn, &config(), LOCKOUT, &once);
    assert_eq!(report.total(), 10, "one batch: {report:?}");
    assert!(report.unfinished);
    let rest = retention::run(&mut conn, &config(), LOCKOUT, &|| true);
    assert_eq!(rest.total(), old - 10, "{rest:?}");
    assert!(!rest.unfinished);
}
