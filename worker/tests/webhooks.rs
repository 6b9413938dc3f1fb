//! The webhook sender's wall, against a real listener: a webhook whose host name resolves to
//! a loopback address (registered as a name, so the API's check of literal addresses let it
//! through) is refused at delivery, after DNS resolution, and nothing reaches the listener;
//! with `BULKHEAD_WEBHOOK_ALLOW_PRIVATE` the same delivery is made and correctly signed.

use bulkhead_core::config::DEV_CREDENTIALS_KEY;
use bulkhead_core::config::webhooks::WebhookConfig;
use bulkhead_core::crypto::Keyring;
use bulkhead_core::store::webhooks::{Due, TryOutcome};
use bulkhead_worker::webhooks::try_once;
use std::io::{Read, Write};
use std::time::Duration;
use uuid::Uuid;

fn due(url: &str, keys: &Keyring, secret: &str) -> Due {
    let webhook_id = Uuid::now_v7();
    let sealed = keys.seal(secret, webhook_id.as_bytes()).expect("seal");
    Due {
        seq: 1,
        id: Uuid::now_v7(),
        webhook_id,
        tenant_id: Uuid::now_v7(),
        event_type: "job.succeeded".into(),
        subject: "jobs/x".into(),
        data: serde_json::json!({"job_id": "x"}),
        occurred_at: chrono::Utc::now(),
        attempts: 1,
        url: url.to_owned(),
        secret_nonce: sealed.nonce,
        secret_ciphertext: sealed.ciphertext,
        secret_key_id: sealed.key_id.unwrap_or_default(),
    }
}

fn settings(allow_private: bool) -> WebhookConfig {
    WebhookConfig {
        allow_private,
        retry_base: Duration::from_millis(100),
        give_up_after: Duration::from_secs(3600),
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_resolves_to_loopback_is_refused_at_every_delivery() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let keys = Keyring::from_hex(&DEV_CREDENTIALS_KEY.replace(' ', ""), None).expect("keys");
    let secret = bulkhead_core::webhooks::new_secret();
    // A name (so the API's check of literal addresses lets it through) that the resolver
    // maps to loopback: the machine's own host name, or one of the usual aliases.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = [
        hostname.trim(),
        "localhost.localdomain",
        "ip6-localhost",
        "localhost.",
    ]
    .into_iter()
    .find(|name| {
        use std::net::ToSocketAddrs;
        !name.is_empty()
            && (*name, port)
                .to_socket_addrs()
                .is_ok_and(|mut addrs| addrs.any(|a| a.ip().is_loopback()))
    })
    .expect("a host name that resolves to loopback on this machine");
    let url = format!("http://{name}:{port}/hook");
    assert!(bulkhead_core::webhooks::validate(&url, &["*".to_owned()], false).is_ok());
    let delivery = due(&url, &keys, &secret);

    let refused = try_once(&delivery, &keys, &settings(false)).await;
    match &refused {
        TryOutcome::Failed {
            status: None,
            error,
        } => {
            assert!(
                error.contains("refused") && error.contains("loopback"),
                "{error}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(listener.accept().is_err(), "nothing may reach the listener");

    // Allowed (development and tests): delivered, and the signature verifies.
    listener.set_nonblocking(false).expect("blocking");
    let server = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().expect("a delivery");
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&raw).contains("\r\n\r\n") || !raw.ends_with(b"}") {
            let n = socket.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        socket
            .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .expect("answer");
        String::from_utf8_lossy(&raw).to_string()
    });
    let delivered = try_once(&delivery, &keys, &settings(true)).await;
    assert_eq!(delivered, TryOutcome::Delivered { status: 204 });
    let request = server.join().expect("server");
    let (head, body) = request.split_once("\r\n\r\n").expect("a request");
    let mut headers = reqwest::header::HeaderMap::new();
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(
                reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()).expect("name"),
                reqwest::header::HeaderValue::from_str(v.trim()).expect("value"),
            );
        }
    }
    standardwebhooks::Webhook::new(&secret)
        .expect("secret")
        .verify(body.as_bytes(), &headers)
        .expect("signed");
}
