//! Retention through the real `bulkhead worker` processes: two workers, one pass per interval
//! between them, and the rows past their age gone while the others stay.

use crate::helpers::{Options, Stack, execute, texts};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_run_retention_once_per_interval() {
    let started = Instant::now();
    let interval = 2;
    let stack = Stack::start(Options {
        workers: 2,
        worker_env: vec![(
            "BULKHEAD_RETENTION_INTERVAL_SECONDS".into(),
            interval.to_string(),
        )],
        ..Options::default()
    })
    .await;
    let mut conn = stack.control_db();
    execute(
        &mut conn,
        "INSERT INTO login_throttle (key, attempts, window_start) VALUES \
         ('login-ip:e2e-old', 9, now() - interval '1 day'), ('login-ip:e2e-new', 1, now())",
    );
    execute(
        &mut conn,
        "INSERT INTO sessions (id, principal_id, token_hash, created_at, expires_at) \
         SELECT gen_random_uuid(), id, sha256('e2e-old'::bytea), now() - interval '3 days', \
           now() - interval '2 days' FROM principals LIMIT 1",
    );
    let remaining = |conn: &mut diesel::PgConnection| {
        texts(
            conn,
            "SELECT key AS v FROM login_throttle WHERE key LIKE 'login-ip:e2e-%' \
             UNION ALL SELECT 'session' AS v FROM sessions WHERE expires_at < now() - interval '1 day' \
             ORDER BY v",
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while remaining(&mut conn) != [Some("login-ip:e2e-new".to_owned())] {
        assert!(
            Instant::now() < deadline,
            "old rows still there: {:?}\n{}",
            remaining(&mut conn),
            stack.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A few intervals more: the two workers look every second, yet between them the pass ran
    // at most once per interval since they started.
    tokio::time::sleep(Duration::from_secs(3 * interval)).await;
    let logs = stack.log_tail(100_000);
    let passes = logs.matches("retention pass").count() as u64;
    let bound = started.elapsed().as_secs() / interval + 1;
    assert!(
        (2..=bound).contains(&passes),
        "{passes} passes in {:?} (at most {bound}):\n{}",
        started.elapsed(),
        stack.log_tail(40)
    );
}
