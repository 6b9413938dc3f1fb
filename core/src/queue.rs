//! The AMQP side of jobs: the message contract, the broker topology (a durable quorum queue
//! with a delivery limit and at-least-once dead-lettering), publishing with publisher confirms,
//! and the outbox relay. The broker only wakes workers: a message carries a job id, never the job.

use crate::db::PgPool;
use crate::store::outbox;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

/// Version of [`JobMessage`]; a worker dead-letters messages of versions it does not know.
pub const MESSAGE_VERSION: u32 = 1;

/// What a message says: "job X may be ready to run". Small, versioned, and never the job itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMessage {
    pub v: u32,
    pub job_id: Uuid,
    pub operation: String,
}

/// Names of the broker objects, derived from one prefix (tests use their own prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub exchange: String,
    pub queue: String,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    /// Deliveries of one message before the broker dead-letters it (poison-message guard).
    pub delivery_limit: i64,
}

impl Topology {
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            exchange: format!("{prefix}.jobs"),
            queue: format!("{prefix}.jobs"),
            dead_letter_exchange: format!("{prefix}.jobs.dlx"),
            dead_letter_queue: format!("{prefix}.jobs.dead"),
            delivery_limit: 10,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused (nack) the message for job {0}")]
    Nacked(Uuid),
    #[error("message encoding: {0}")]
    Encoding(#[from] serde_json::Error),
    #[error("{0}")]
    Config(String),
}

/// Where the broker is and, for `amqps://` with a private CA, which CA to trust. Its `Debug`
/// shows the URL without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub url: String,
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for BrokerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerAddress")
            .field("url", &crate::dburl::redact(&self.url))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl BrokerAddress {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            url: config.amqp_url.clone(),
            ca_file: config.amqp_ca_file.clone(),
        }
    }
}

/// Connects to the broker (`amqp://`, or `amqps://` with TLS through rustls; the system's
/// roots are trusted, plus the CA file when one is given).
pub async fn connect(address: &BrokerAddress) -> Result<Connection, QueueError> {
    let properties = ConnectionProperties::default();
    let Some(ca_file) = &address.ca_file else {
        return Ok(Connection::connect(&address.url, properties).await?);
    };
    let cert_chain = std::fs::read_to_string(ca_file).map_err(|e| {
        QueueError::Config(format!(
            "BULKHEAD_AMQP_CA_FILE: cannot read {}: {e}",
            ca_file.display()
        ))
    })?;
    let runtime = lapin::runtime::default_runtime()?;
    Ok(Connection::connect_with_config(
        &address.url,
        properties,
        lapin::tcp::OwnedTLSConfig {
            identity: None,
            cert_chain: Some(cert_chain),
        },
        runtime,
    )
    .await?)
}

/// Declares the exchange, the quorum queue and the dead-letter pair. Idempotent.
pub async fn declare(channel: &Channel, topology: &Topology) -> Result<(), QueueError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            topology.dead_letter_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    let mut dead_args = FieldTable::default();
    dead_args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            topology.dead_letter_queue.as_str().into(),
            QueueDeclareOptions::durable(),
            dead_args,
        )
        .await?;
    channel
        .queue_bind(
            topology.dead_letter_queue.as_str().into(),
            topology.dead_letter_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            topology.exchange.as_str().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(topology.delivery_limit),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(topology.dead_letter_exchange.as_str().into()),
    );
    // At-least-once dead-lettering needs reject-publish overflow; it keeps a dead-lettered
    // message in the source queue until the dead-letter queue has confirmed it.
    args.insert(
        "x-dead-letter-strategy".into(),
        AMQPValue::LongString("at-least-once".into()),
    );
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    channel
        .queue_declare(
            topology.queue.as_str().into(),
            QueueDeclareOptions::durable(),
            args,
        )
        .await?;
    channel
        .queue_bind(
            topology.queue.as_str().into(),
            topology.exchange.as_str().into(),
            "job".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// A channel in confirm mode.
pub struct Publisher {
    channel: Channel,
    topology: Topology,
}

impl Publisher {
    pub async fn open(connection: &Connection, topology: Topology) -> Result<Self, QueueError> {
        let channel = connection.create_channel().await?;
        declare(&channel, &topology).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self { channel, topology })
    }

    /// Publishes persistent messages and waits for the broker's confirm of every one.
    pub async fn publish_all(&self, messages: &[JobMessage]) -> Result<(), QueueError> {
        let mut confirms = Vec::with_capacity(messages.len());
        for message in messages {
            let body = serde_json::to_vec(message)?;
            let confirm = self
                .channel
                .basic_publish(
                    self.topology.exchange.as_str().into(),
                    "job".into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type("application/json".into()),
                )
                .await?;
            confirms.push((message.job_id, confirm));
        }
        for (job_id, confirm) in confirms {
            if !confirm.await?.is_ack() {
                return Err(QueueError::Nacked(job_id));
            }
        }
        Ok(())
    }
}

/// Publishes outbox rows: immediately when `wake` is notified (the API notifies it right after a
/// job commits, so no polling interval sits in the request's latency), and every `poll` as a
/// backstop for rows written by other processes. With the broker down it keeps the rows and
/// retries with backoff; nothing is lost and nothing is marked sent before its confirm.
pub async fn run_relay(
    pool: PgPool,
    broker: BrokerAddress,
    topology: Topology,
    wake: Arc<Notify>,
    poll: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    while !*shutdown.borrow() {
        let connection = match connect(&broker).await {
            Ok(connection) => connection,
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "outbox relay: broker unreachable");
                sleep_or_shutdown(backoff, &mut shutdown).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let publisher = match Publisher::open(&connection, topology.clone()).await {
            Ok(publisher) => publisher,
            Err(error) => {
                tracing::warn!(%error, "outbox relay: cannot open a channel");
                sleep_or_shutdown(backoff, &mut shutdown).await;
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        tracing::info!("outbox relay connected");
        loop {
            if *shutdown.borrow() {
                return;
            }
            match relay_batch(&pool, &publisher).await {
                Ok(0) => {
                    tokio::select! {
                        () = wake.notified() => {}
                        () = tokio::time::sleep(poll) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Ok(_) => {}
                Err(RelayError::Broker(error)) => {
                    tracing::warn!(%error, "outbox relay: publish failed; reconnecting");
                    break;
                }
                Err(RelayError::Database(error)) => {
                    tracing::warn!(%error, "outbox relay: control database unavailable");
                    sleep_or_shutdown(Duration::from_secs(1), &mut shutdown).await;
                }
            }
        }
        let _ = connection.close(0, "reconnecting".into()).await;
    }
}

async fn sleep_or_shutdown(delay: Duration, shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        _ = shutdown.changed() => {}
    }
}

enum RelayError {
    Broker(QueueError),
    Database(String),
}

/// Takes up to 100 unsent rows no other relay holds, publishes them, and marks them sent
/// after the broker's confirms; returns how many.
async fn relay_batch(pool: &PgPool, publisher: &Publisher) -> Result<usize, RelayError> {
    let fetch_pool = pool.clone();
    let rows = tokio::task::spawn_blocking(move || {
        let mut conn = fetch_pool.get().map_err(|e| e.to_string())?;
        outbox::take_unsent(&mut conn, 100).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| RelayError::Database(e.to_string()))?
    .map_err(RelayError::Database)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let messages: Vec<JobMessage> = rows
        .iter()
        .filter_map(|row| serde_json::from_value(row.payload.clone()).ok())
        .collect();
    let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
    if let Err(error) = publisher.publish_all(&messages).await {
        let (mark_pool, ids, reason) = (pool.clone(), ids.clone(), error.to_string());
        let _ = tokio::task::spawn_blocking(move || {
            let mut conn = mark_pool.get().map_err(|e| e.to_string())?;
            outbox::record_failure(&mut conn, &ids, &reason).map_err(|e| e.to_string())
        })
        .await;
        return Err(RelayError::Broker(error));
    }
    let mark_pool = pool.clone();
    let count = ids.len();
    tokio::task::spawn_blocking(move || {
        let mut conn = mark_pool.get().map_err(|e| e.to_string())?;
        outbox::mark_sent(&mut conn, &ids).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| RelayError::Database(e.to_string()))?
    .map_err(RelayError::Database)?;
    Ok(count)
}
