//! The webhook sender: every worker claims the oldest due delivery of each webhook (so each
//! endpoint gets its events one at a time, in order; at most four of a tenant's at once, and a
//! slot is claimed again as soon as its try ends), signs its CloudEvents JSON per Standard
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
use tokio::sync::Semaphore;

/// How often a worker looks for due deliveries.
const POLL: Duration = Duration::from_millis(250);
/// Tries a worker runs at once; a slot is claimed again as soon as its try ends.
const SLOTS: usize = 20;
/// Tries of one tenant in flight at once (across workers), so one tenant's slow endpoints
/// cannot take every slot.
const PER_TENANT: i64 = 4;

/// Sends due deliveries until the worker stops, then waits for the tries in flight.
pub async fn send_forever(worker: Arc<Worker>) {
    let slots = Arc::new(Semaphore::new(SLOTS));
    let mut shutdown = worker.shutdown.clone();
    while !worker.stopping() {
        let free = slots.available_permits();
        let claimed = if free == 0 {
            Ok(0)
        } else {
            claim_and_send(&worker, &slots, free).await
        };
        match claimed {
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
    let _ = slots.acquire_many(SLOTS as u32).await;
}

/// Claims up to `free` due deliveries and starts a try for each (each records its own end);
/// returns how many it claimed.
async fn claim_and_send(
    worker: &Arc<Worker>,
    slots: &Arc<Semaphore>,
    free: usize,
) -> Result<usize, store::StoreError> {
    let settings = worker.config.webhooks.clone();
    // Held a little longer than a try may take (lookup and request), so no other worker
    // sends it meanwhile.
    let hold = settings.timeout * 2 + Duration::from_secs(30);
    let due = worker
        .db(move |conn| store::webhooks::claim_due(conn, free as i64, PER_TENANT, hold))
        .await?;
    let count = due.len();
    for delivery in due {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let worker = worker.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let settings = worker.config.webhooks.clone();
            let outcome = try_once(&delivery, &worker.config.credentials_keys, &settings).await;
            let retry_in = retry_after(delivery.attempts, settings.retry_base);
            let (seq, logged) = (delivery.seq, outcome.clone());
            let recorded = worker
                .db(move |conn| {
                    store::webhooks::record_try(
                        conn,
                        seq,
                        &outcome,
                        retry_in,
                        settings.give_up_after,
                    )
                })
                .await;
            match (recorded, logged) {
                (Ok(_), TryOutcome::Delivered { .. }) => {}
                (Ok(state), TryOutcome::Failed { status, error }) => tracing::info!(
                    webhook.id = %delivery.webhook_id, delivery.id = %delivery.id,
                    attempt = delivery.attempts, ?status, %error, ?state,
                    "webhook delivery failed"
                ),
                (Err(error), _) => tracing::warn!(%error, delivery.id = %delivery.id,
                    "webhooks: a try's end not recorded; it is tried again when its claim lapses"),
            }
        });
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
    // What the tenant reads on the delivery stays general (no resolved addresses, no resolver
    // messages: they would map the installation's network); the log has the details.
    let addrs = match tokio::time::timeout(settings.timeout, resolve(&url)).await {
        Ok(Ok(addrs)) => addrs,
        Ok(Err(error)) => {
            tracing::info!(webhook.id = %delivery.webhook_id, %error, "webhook host not resolved");
            return failed("not delivered: the host name did not resolve".to_owned());
        }
        Err(_) => return failed("not delivered: resolving the host name timed out".to_owned()),
    };
    if let Some(private) = addrs
        .iter()
        .find(|a| !settings.allow_private && !is_public(a.ip()))
    {
        tracing::warn!(webhook.id = %delivery.webhook_id, address = %private.ip(),
            "webhook refused: its host resolves to a non-public address");
        return failed(
            "refused: the host resolves to a loopback, private, link-local or otherwise \
             non-public address; webhooks go to public addresses only"
                .to_owned(),
        );
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
    // No proxy from the environment: a proxy would resolve the name again itself.
    let mut client = reqwest::Client::builder()
        .no_proxy()
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
        Err(error) if error.is_timeout() => {
            failed("not delivered: the request timed out".to_owned())
        }
        Err(error) if error.is_connect() => failed("not delivered: could not connect".to_owned()),
        Err(error) => {
            tracing::info!(webhook.id = %delivery.webhook_id, %error, "webhook request failed");
            failed("not delivered: the request failed".to_owned())
        }
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
