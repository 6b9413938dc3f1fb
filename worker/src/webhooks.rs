//! The webhook sender: every worker claims the oldest due delivery of each webhook (so each
//! endpoint gets its events one at a time, in order), signs its CloudEvents JSON per Standard
//! Webhooks, posts it to an address that is public after DNS resolution (checked at every
//! try, and the connection made to that very address), and records the try: delivered on a
//! 2xx, else retried with exponential backoff until the event is a day old (configurable).

use crate::runtime::Worker;
use bulkhead_core::config::webhooks::WebhookConfig;
use bulkhead_core::crypto::{Keyring, Sealed};
use bulkhead_core::store::{
    self,
    webhooks::{Due, TryOutcome},
};
use bulkhead_core::webhooks::{Event, cloud_event, is_public, retry_after};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// How often a worker looks for due deliveries.
const POLL: Duration = Duration::from_millis(250);
/// Deliveries (one per webhook) a worker tries at once.
const BATCH: i64 = 20;

/// Sends due deliveries until the worker stops.
pub async fn send_forever(worker: Arc<Worker>) {
    let mut shutdown = worker.shutdown.clone();
    while !worker.stopping() {
        match send_due(&worker).await {
            Ok(0) => {
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "webhooks: deliveries not claimed; trying again");
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// Claims and tries one batch; returns how many it tried.
pub async fn send_due(worker: &Arc<Worker>) -> Result<usize, store::StoreError> {
    let settings = worker.config.webhooks.clone();
    // Held a little longer than a try may take, so no other worker sends it meanwhile.
    let hold = settings.timeout + Duration::from_secs(30);
    let due = worker
        .db(move |conn| store::webhooks::claim_due(conn, BATCH, hold))
        .await?;
    let count = due.len();
    let mut tries = JoinSet::new();
    for delivery in due {
        let (keys, settings) = (worker.config.credentials_keys.clone(), settings.clone());
        tries.spawn(async move {
            let outcome = try_once(&delivery, &keys, &settings).await;
            (delivery, outcome)
        });
    }
    while let Some(joined) = tries.join_next().await {
        let Ok((delivery, outcome)) = joined else {
            continue;
        };
        let retry_in = retry_after(delivery.attempts, settings.retry_base);
        let give_up = settings.give_up_after;
        let (seq, logged) = (delivery.seq, outcome.clone());
        match worker
            .db(move |conn| store::webhooks::record_try(conn, seq, &outcome, retry_in, give_up))
            .await
        {
            Ok(state) => match logged {
                TryOutcome::Delivered { .. } => {}
                TryOutcome::Failed { status, error } => tracing::info!(
                    webhook.id = %delivery.webhook_id, delivery.id = %delivery.id,
                    attempt = delivery.attempts, ?status, %error, %state,
                    "webhook delivery failed"
                ),
            },
            Err(error) => tracing::warn!(%error, delivery.id = %delivery.id,
                "webhooks: a try's end not recorded; it is tried again when its claim lapses"),
        }
    }
    Ok(count)
}

/// One try of one delivery.
pub async fn try_once(delivery: &Due, keys: &Keyring, settings: &WebhookConfig) -> TryOutcome {
    let failed = |error: String| TryOutcome::Failed {
        status: None,
        error,
    };
    let sealed = Sealed {
        key_id: Some(delivery.secret_key_id.clone()),
        nonce: delivery.secret_nonce.clone(),
        ciphertext: delivery.secret_ciphertext.clone(),
    };
    let secret = match keys.open(&sealed, delivery.webhook_id.as_bytes()) {
        Ok(secret) => secret,
        Err(error) => return failed(format!("cannot open the webhook's secret: {error}")),
    };
    let url = match url::Url::parse(&delivery.url) {
        Ok(url) => url,
        Err(error) => return failed(format!("stored URL does not parse: {error}")),
    };
    let addrs = match resolve(&url).await {
        Ok(addrs) => addrs,
        Err(error) => return failed(error),
    };
    if let Some(private) = addrs
        .iter()
        .find(|a| !settings.allow_private && !is_public(a.ip()))
    {
        return failed(format!(
            "refused: {} resolves to {}, a loopback, private or link-local address",
            url.host_str().unwrap_or_default(),
            private.ip()
        ));
    }
    let event = Event {
        id: delivery.id,
        tenant_id: delivery.tenant_id,
        event_type: delivery.event_type.clone(),
        subject: delivery.subject.clone(),
        data: delivery.data.clone(),
        occurred_at: delivery.occurred_at,
    };
    let body = match serde_json::to_vec(&cloud_event(&event)) {
        Ok(body) => body,
        Err(error) => return failed(format!("event does not serialize: {error}")),
    };
    let timestamp = chrono::Utc::now().timestamp();
    let message_id = delivery.id.to_string();
    let signature = match standardwebhooks::Webhook::new(&secret)
        .and_then(|signer| signer.sign(&message_id, timestamp, &body))
    {
        Ok(signature) => signature,
        Err(error) => return failed(format!("cannot sign: {error}")),
    };
    let mut client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .user_agent("Bulkhead-Webhooks/1");
    // Connect to the addresses just checked, not to whatever a second lookup would return.
    if let Some(url::Host::Domain(name)) = url.host() {
        client = client.resolve_to_addrs(name, &addrs);
    }
    let client = match client.build() {
        Ok(client) => client,
        Err(error) => return failed(format!("http client: {error}")),
    };
    let sent = client
        .post(url)
        .header("content-type", "application/cloudevents+json")
        .header(standardwebhooks::HEADER_WEBHOOK_ID, &message_id)
        .header(
            standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
            timestamp.to_string(),
        )
        .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => TryOutcome::Delivered {
            status: i32::from(response.status().as_u16()),
        },
        Ok(response) => TryOutcome::Failed {
            status: Some(i32::from(response.status().as_u16())),
            error: format!("the endpoint answered {}", response.status()),
        },
        Err(error) => failed(format!("not delivered: {error}")),
    }
}

async fn resolve(url: &url::Url) -> Result<Vec<SocketAddr>, String> {
    let port = url
        .port_or_known_default()
        .ok_or_else(|| "the URL has no port".to_owned())?;
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(ip.into(), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(ip.into(), port)],
        Some(url::Host::Domain(name)) => tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| format!("cannot resolve {name}: {e}"))?
            .collect(),
        None => return Err("the URL has no host".to_owned()),
    };
    if addrs.is_empty() {
        return Err(format!(
            "{} resolves to no address",
            url.host_str().unwrap_or_default()
        ));
    }
    Ok(addrs)
}
