//! Logins under a distributed attack: guesses from many addresses at once get no more password
//! checks than guesses from one (the account's slots are taken in turn), and the owner still
//! gets in from an address it used before. (One address holding at most half the hashing slots
//! is tested in `api/src/hashing.rs`.)

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};
use crate::throttle::login;
use std::net::IpAddr;

/// A client whose requests come from 127.0.0.`n`.
fn from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, n]))
        .build()
        .expect("client")
}

/// The app's base URL over IPv4 (the source addresses above are IPv4).
fn base(app: &TestApp) -> String {
    app.base.replace("localhost", "127.0.0.1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guesses_from_many_addresses_get_no_more_checks_than_from_one() {
    let app = TestApp::spawn_with(|config| config.login_max_failures = 2).await;
    let base = base(&app);
    // The owner has logged in from 127.0.0.9 before.
    assert_eq!(
        login(&from(9), &base, ADMIN_EMAIL, ADMIN_PASSWORD).await,
        200
    );

    // Forty addresses guess at once, one guess each: no address and no pair reaches its own
    // limit, only the account does.
    let guesses: Vec<_> = (10..50)
        .map(|n| {
            let base = base.clone();
            tokio::spawn(
                async move { login(&from(n), &base, ADMIN_EMAIL, "guess-guess-guess-1").await },
            )
        })
        .collect();
    let mut statuses = Vec::new();
    for guess in guesses {
        statuses.push(guess.await.expect("guess"));
    }
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    // Two within the limit, then slots 250 ms, 500 ms, 1 s, … apart within the next 10 s.
    assert!(
        (3..=12).contains(&checked),
        "the account's slots bound the checks: {statuses:?}"
    );
    assert_eq!(checked + refused, 40, "{statuses:?}");

    // The owner, from the address it used before, is not queued behind the attack.
    assert_eq!(
        login(&from(9), &base, ADMIN_EMAIL, ADMIN_PASSWORD).await,
        200
    );
}
