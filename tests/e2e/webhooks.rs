//! Signed webhooks through the real binaries (issue 11): a governed production change (a
//! create that waits for one approval) reaches a real HTTP receiver as CloudEvents, each event
//! exactly once and in order, every delivery's Standard Webhooks signature verified with the
//! secret shown at registration; a receiver that fails twice gets its event on the third try,
//! and the deliveries list shows the tries.

use crate::helpers::{Options, Stack};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WITHIN: Duration = Duration::from_secs(60);
const TENANT: &str = "signals";

/// One request the receiver got: its headers (lower-case names) and body.
#[derive(Debug, Clone)]
struct Received {
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

/// A plain HTTP/1.1 receiver on 127.0.0.1 that answers 500 to its first `fail_first`
/// requests and 204 after, closing each connection.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

async fn receiver(fail_first: usize) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let sink = got.clone();
    tokio::spawn(async move {
        let mut served = 0usize;
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            let request = loop {
                let Ok(n) = socket.read(&mut buf).await else {
                    break None;
                };
                if n == 0 {
                    break None;
                }
                raw.extend_from_slice(&buf[..n]);
                let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&raw[..end]).to_string();
                let mut headers = reqwest::header::HeaderMap::new();
                for line in head.lines().skip(1) {
                    if let Some((k, v)) = line.split_once(':')
                        && let (Ok(k), Ok(v)) = (
                            reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()),
                            reqwest::header::HeaderValue::from_str(v.trim()),
                        )
                    {
                        headers.insert(k, v);
                    }
                }
                let length: usize = headers
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if raw.len() >= end + 4 + length {
                    break Some(Received {
                        headers,
                        body: raw[end + 4..end + 4 + length].to_vec(),
                    });
                }
            };
            let Some(request) = request else { continue };
            sink.lock().expect("received").push(request);
            served += 1;
            let answer: &[u8] = if served <= fail_first {
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            } else {
                b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            };
            let _ = socket.write_all(answer).await;
            let _ = socket.shutdown().await;
        }
    });
    Receiver { url, got }
}

impl Receiver {
    fn received(&self) -> Vec<Received> {
        self.got.lock().expect("received").clone()
    }

    async fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = Instant::now() + WITHIN;
        loop {
            let got = self.received();
            if got.len() >= count {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} requests of {count} arrived: {:?}",
                got.len(),
                got.iter().map(event_type).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn event(received: &Received) -> Value {
    serde_json::from_slice(&received.body).expect("a JSON body")
}

fn event_type(received: &Received) -> String {
    event(received)["type"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn register(stack: &Stack, url: &str, events: Value) -> (String, String) {
    let (status, body) = stack
        .post(
            &format!("/v1/tenants/{TENANT}/webhooks"),
            json!({"url": url, "events": events}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    (
        body["webhook"]["id"].as_str().expect("id").to_owned(),
        body["secret"].as_str().expect("secret").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_governed_change_reaches_receivers_signed_once_and_in_order() {
    let allow = vec![
        (
            "BULKHEAD_WEBHOOK_ALLOW_PRIVATE".to_owned(),
            "true".to_owned(),
        ),
        (
            "BULKHEAD_WEBHOOK_RETRY_BASE_MS".to_owned(),
            "200".to_owned(),
        ),
    ];
    let stack = Stack::start(Options {
        workers: 1,
        env: allow,
        ..Options::default()
    })
    .await;
    stack.create_tenant(TENANT, "shared").await;
    let all = receiver(0).await;
    let flaky = receiver(2).await;
    let (all_id, all_secret) = register(&stack, &all.url, json!(["*"])).await;
    let (flaky_id, flaky_secret) =
        register(&stack, &flaky.url, json!(["approval.requested"])).await;
    let (status, listed) = stack.get(&format!("/v1/tenants/{TENANT}/webhooks")).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    assert!(
        listed.to_string().find("whsec_").is_none(),
        "the secret is shown once only"
    );

    // A production create: planned, waits for one approval (the default policy), approved by
    // an approver, applied.
    let created = stack
        .create_environment(TENANT, json!({"name": "erp-prod", "stage": "production"}))
        .await;
    let job = created["job"]["id"].as_str().expect("job").to_owned();
    let waiting = stack
        .wait_job_state(TENANT, &job, "awaiting_approval", WITHIN)
        .await;
    let approver = stack.person(TENANT, "approver").await;
    let (status, body) = stack
        .call(
            Method::POST,
            &format!("/v1/tenants/{TENANT}/jobs/{job}/approve"),
            &approver,
            Some(json!({"plan_hash": waiting["plan_hash"]})),
        )
        .await;
    assert_eq!(status, 200, "approve: {body}");
    stack.wait_succeeded(TENANT, &job, WITHIN).await;

    let expected = [
        "job.queued",
        "job.running",
        "job.awaiting_approval",
        "approval.requested",
        "approval.decided",
        "job.approved",
        "job.running",
        "environment.ready",
        "job.succeeded",
    ];
    let got = all.wait_for(expected.len()).await;
    // Nothing more arrives (each event once).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got_all = all.received();
    assert_eq!(got_all.len(), got.len(), "extra deliveries");
    let types: Vec<String> = got_all.iter().map(event_type).collect();
    let want: Vec<String> = expected
        .iter()
        .map(|t| format!("dev.bulkhead.{t}"))
        .collect();
    assert_eq!(types, want);
    let signer = standardwebhooks::Webhook::new(&all_secret).expect("secret");
    let mut ids = std::collections::HashSet::new();
    for received in &got_all {
        signer
            .verify(&received.body, &received.headers)
            .expect("a valid Standard Webhooks signature");
        assert_eq!(
            received
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/cloudevents+json")
        );
        let e = event(received);
        assert_eq!(e["specversion"], "1.0");
        assert!(
            e["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("/v1/tenants/"))
        );
        assert!(ids.insert(e["id"].clone()), "an event id twice: {e}");
        assert_eq!(
            received
                .headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok()),
            e["id"].as_str()
        );
    }
    // Another secret does not verify.
    let other = standardwebhooks::Webhook::new(&flaky_secret).expect("secret");
    assert!(other.verify(&got_all[0].body, &got_all[0].headers).is_err());
    let requested = event(&got_all[3]);
    assert_eq!(requested["data"]["plan_hash"], waiting["plan_hash"]);
    assert_eq!(event(&got_all[4])["data"]["decision"], "approved");

    // The flaky receiver: two 500s, then the same delivery (same webhook-id) on the third try.
    let tries = flaky.wait_for(3).await;
    let ids: Vec<_> = tries
        .iter()
        .map(|r| r.headers.get("webhook-id").cloned())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    for received in &tries {
        standardwebhooks::Webhook::new(&flaky_secret)
            .expect("secret")
            .verify(&received.body, &received.headers)
            .expect("signed on every try");
    }
    let deadline = Instant::now() + WITHIN;
    let delivery = loop {
        let (status, list) = stack
            .get(&format!(
                "/v1/tenants/{TENANT}/webhooks/{flaky_id}/deliveries"
            ))
            .await;
        assert_eq!(status, 200, "{list}");
        if list["items"][0]["state"] == "delivered" {
            break list["items"][0].clone();
        }
        assert!(Instant::now() < deadline, "{list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(delivery["attempts"], 3, "{delivery}");
    assert_eq!(delivery["last_status"], 204, "{delivery}");
    assert_eq!(delivery["event_type"], "approval.requested");

    // Deleted: listed no more.
    let (status, _) = stack
        .delete(&format!("/v1/tenants/{TENANT}/webhooks/{all_id}"))
        .await;
    assert_eq!(status, 204);
    let (_, listed) = stack.get(&format!("/v1/tenants/{TENANT}/webhooks")).await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
}
