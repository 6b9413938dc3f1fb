//! The worker runtime: consumes job messages (manual acks after the database commit, bounded
//! prefetch), claims jobs with a lease and a fencing token, keeps the lease alive with
//! heartbeats, runs the executor, retries with backoff, sweeps for expired leases and lost
//! messages, and runs the installation's retention pass when it is due. SIGTERM: stop taking
//! messages, finish the current step, give the lease back, exit.

use crate::execution::{Execution, Outcome};
use crate::executor::{Endpoint, PostgresExecutor, Targets};
use bulkhead_core::blueprint::BlueprintCatalog;
use bulkhead_core::config::Config;
use bulkhead_core::db::PgPool;
use bulkhead_core::jobs::{JobState, Operation};
use bulkhead_core::lifecycle::EnvironmentState;
use bulkhead_core::queue::{self, JobMessage, MESSAGE_VERSION, Topology};
use bulkhead_core::store::{self, StoreError};
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("blueprints: {0}")]
    Blueprints(String),
    #[error("target PostgreSQL: {0}")]
    Target(String),
    #[error("{0}")]
    Pricing(#[from] bulkhead_core::pricing::CatalogError),
}

/// Shared by every job task of this worker.
pub struct Worker {
    pub config: Config,
    pub pool: PgPool,
    pub executor: Arc<PostgresExecutor>,
    pub catalog: Arc<BlueprintCatalog>,
    /// The price catalog metering charges at (checked at start).
    pub prices: Arc<bulkhead_core::pricing::Catalog>,
    /// Notified after this worker commits outbox rows, so the relay publishes at once.
    pub wake: Arc<Notify>,
    /// Whether this worker runs its own relay (not when it shares a process with the API's).
    own_relay: bool,
    pub shutdown: watch::Receiver<bool>,
}

impl Worker {
    /// Loads blueprints and prepares the targets; fails with a message a person can act on.
    pub async fn new(
        config: Config,
        pool: PgPool,
        shutdown: watch::Receiver<bool>,
        shared_relay: Option<Arc<Notify>>,
    ) -> Result<Arc<Self>, WorkerError> {
        let catalog = match &config.worker.blueprints_dir {
            Some(dir) => BlueprintCatalog::load_dir(dir),
            None => BlueprintCatalog::builtin(),
        }
        .map_err(|e| WorkerError::Blueprints(e.to_string()))?;
        let w = &config.worker;
        let executor = Arc::new(
            PostgresExecutor::new(Targets {
                shared_admin_url: w.shared_admin_url.clone(),
                pooled_database: w.pooled_database.clone(),
                dedicated_admin_url: w.dedicated_admin_url.clone(),
                shared_endpoint: Endpoint::from_url(&w.shared_admin_url)
                    .map_err(|e| WorkerError::Target(format!("BULKHEAD_TARGET_SHARED_URL: {e}")))?,
                dedicated_endpoint: Endpoint::from_url(&w.dedicated_admin_url).map_err(|e| {
                    WorkerError::Target(format!("BULKHEAD_TARGET_DEDICATED_URL: {e}"))
                })?,
            })
            .with_spare_databases(w.spare_databases),
        );
        let prices = Arc::new(config.metering.catalog()?);
        let preparing = executor.clone();
        tokio::task::spawn_blocking(move || preparing.prepare())
            .await
            .map_err(|e| WorkerError::Target(e.to_string()))?
            .map_err(|e| WorkerError::Target(e.to_string()))?;
        Ok(Arc::new(Self {
            config,
            pool,
            executor,
            catalog: Arc::new(catalog),
            prices,
            own_relay: shared_relay.is_none(),
            wake: shared_relay.unwrap_or_else(|| Arc::new(Notify::new())),
            shutdown,
        }))
    }

    fn topology(&self) -> Topology {
        Topology::with_prefix(&self.config.queue_prefix)
    }

    pub(crate) fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Runs the relay, the sweeper and the consumer until shutdown.
    pub async fn run(self: Arc<Self>) {
        let relay = self.own_relay.then(|| {
            tokio::spawn(queue::run_relay(
                self.pool.clone(),
                queue::BrokerAddress::from_config(&self.config),
                self.topology(),
                self.wake.clone(),
                Duration::from_millis(500),
                self.shutdown.clone(),
            ))
        });
        let sweeper = tokio::spawn(self.clone().sweep_forever());
        let housekeeper = tokio::spawn(self.clone().housekeep_forever());
        let meter = tokio::spawn(self.clone().meter_forever());
        let webhooks = tokio::spawn(crate::webhooks::send_forever(self.clone()));
        let mut in_flight = JoinSet::new();
        self.clone().consume_forever(&mut in_flight).await;
        tracing::info!(
            jobs = in_flight.len(),
            "worker stopping: waiting for running jobs to reach a step boundary"
        );
        while in_flight.join_next().await.is_some() {}
        let _ = sweeper.await;
        let _ = housekeeper.await;
        let _ = meter.await;
        let _ = webhooks.await;
        if let Some(relay) = relay {
            let _ = relay.await;
        }
        tracing::info!("worker stopped");
    }

    async fn consume_forever(self: Arc<Self>, in_flight: &mut JoinSet<()>) {
        let mut shutdown = self.shutdown.clone();
        let mut backoff = Duration::from_millis(200);
        while !self.stopping() {
            let session = async {
                let connection =
                    queue::connect(&queue::BrokerAddress::from_config(&self.config)).await?;
                let channel = connection
                    .create_channel()
                    .await
                    .map_err(queue::QueueError::from)?;
                queue::declare(&channel, &self.topology()).await?;
                channel
                    .basic_qos(self.config.worker.concurrency, BasicQosOptions::default())
                    .await
                    .map_err(queue::QueueError::from)?;
                let tag = format!(
                    "{}-{}",
                    self.config.worker.id,
                    uuid::Uuid::now_v7().simple()
                );
                let consumer = channel
                    .basic_consume(
                        self.topology().queue.as_str().into(),
                        tag.as_str().into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(queue::QueueError::from)?;
                Ok::<_, queue::QueueError>((connection, channel, consumer, tag))
            };
            let (connection, channel, mut consumer, tag) = match session.await {
                Ok(session) => session,
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "worker: broker unreachable");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(200);
            tracing::info!(consumer = %tag, "worker consuming");
            loop {
                tokio::select! {
                    next = consumer.next() => match next {
                        Some(Ok(delivery)) => {
                            let worker = self.clone();
                            in_flight.spawn(async move { worker.handle(delivery).await });
                        }
                        Some(Err(error)) => {
                            tracing::warn!(%error, "worker: consumer failed; reconnecting");
                            break;
                        }
                        None => {
                            tracing::warn!("worker: consumer closed; reconnecting");
                            break;
                        }
                    },
                    Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                    _ = shutdown.changed() => {
                        // Stop taking messages; unacked prefetched ones go back to the queue.
                        let _ = channel
                            .basic_cancel(tag.as_str().into(), lapin::options::BasicCancelOptions::default())
                            .await;
                        break;
                    }
                }
            }
            if self.stopping() {
                // Let running jobs reach a step boundary and ack before the connection closes.
                while in_flight.join_next().await.is_some() {}
                let _ = channel.close(200, "shutdown".into()).await;
                let _ = connection.close(200, "shutdown".into()).await;
                return;
            }
        }
    }

    /// Runs blocking database work for a job task.
    pub(crate) async fn db<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut bulkhead_core::db::PgConn) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get()?;
            work(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }

    async fn handle(self: Arc<Self>, delivery: Delivery) {
        let message = serde_json::from_slice::<JobMessage>(&delivery.data)
            .ok()
            .filter(|m| m.v == MESSAGE_VERSION);
        let Some(message) = message else {
            tracing::error!("worker: unreadable job message; dead-lettering it");
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: false,
                    ..BasicNackOptions::default()
                })
                .await;
            return;
        };
        let job_id = message.job_id;
        let (worker_id, lease) = (self.config.worker.id.clone(), self.config.worker.lease);
        let received = Instant::now();
        let claimed = self
            .db(move |conn| store::jobs::claim(conn, job_id, &worker_id, lease))
            .await;
        let job = match claimed {
            Ok(Some(job)) => job,
            Ok(None) => {
                // Finished, running elsewhere, not its turn, or not due: the row is the truth, and
                // whoever makes it runnable again queues a fresh message.
                tracing::debug!(%job_id, "worker: nothing to claim; acking");
                let _ = delivery.ack(BasicAckOptions::default()).await;
                return;
            }
            Err(error) => {
                tracing::warn!(%job_id, %error, "worker: cannot claim (database); returning the message");
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await;
                return;
            }
        };
        let span = tracing::info_span!("job", job.id = %job.id, environment.id = %job.environment_id, tenant.id = %job.tenant_id, operation = %job.operation);
        let outcome = tracing::Instrument::instrument(
            Execution::new(self.clone(), job, received).run(),
            span,
        )
        .await;
        let final_failure = matches!(outcome, Outcome::Failed);
        let acked = if final_failure {
            // Failed for good: the message goes to the dead-letter queue for inspection.
            delivery
                .nack(BasicNackOptions {
                    requeue: false,
                    ..BasicNackOptions::default()
                })
                .await
        } else {
            delivery.ack(BasicAckOptions::default()).await
        };
        if let Err(error) = acked {
            tracing::warn!(%job_id, %error, "worker: ack failed (the message may come again; it will change nothing)");
        }
    }

    async fn sweep_forever(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        let redeliver_after = (self.config.worker.lease * 2).max(Duration::from_secs(5));
        while !self.stopping() {
            let swept = self.db(move |conn| sweep_once(conn, redeliver_after)).await;
            match swept {
                Ok(0) => {}
                Ok(count) => {
                    tracing::info!(count, "sweeper requeued jobs");
                    self.wake.notify_one();
                }
                Err(error) => tracing::warn!(%error, "sweeper: control database unavailable"),
            }
            // Environments whose TTL passed get their destroy queued (issue 11).
            let (actor, max_attempts) = (
                format!("worker:{}", self.config.worker.id),
                self.config.worker.max_attempts,
            );
            let expired = self
                .db(move |conn| store::expiry::queue_expired(conn, &actor, max_attempts, 50))
                .await;
            match expired {
                Ok(expired) if expired.is_empty() => {}
                Ok(expired) => {
                    for e in &expired {
                        tracing::info!(environment.id = %e.environment_id, tenant.id = %e.tenant_id, job.id = %e.job_id, "environment expired; destroy queued");
                    }
                    self.wake.notify_one();
                }
                Err(error) => {
                    tracing::warn!(%error, "sweeper: expired environments not queued; next sweep")
                }
            }
            // Changes whose approval wait ended are `expired` (issue 11).
            let actor = format!("worker:{}", self.config.worker.id);
            match self
                .db(move |conn| store::jobs::expire_waits(conn, &actor, 50))
                .await
            {
                Ok(ended) => {
                    for job in &ended {
                        tracing::info!(job.id = %job.id, tenant.id = %job.tenant_id, "approval wait ended; job expired");
                    }
                    if !ended.is_empty() {
                        self.wake.notify_one();
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "sweeper: approval waits not ended; next sweep")
                }
            }
            // Scheduled drift checks that are due (issue 11).
            let max_attempts = self.config.worker.max_attempts;
            match self
                .db(move |conn| {
                    store::scheduler::queue_due_drift_checks(
                        conn,
                        max_attempts,
                        store::scheduler::TICK_LIMIT,
                    )
                })
                .await
            {
                Ok(tick) => {
                    for (environment, error) in &tick.failed {
                        tracing::warn!(environment.id = %environment, %error, "scheduler: drift check not scheduled; put off an hour");
                    }
                    if !tick.queued.is_empty() {
                        tracing::info!(
                            queued = tick.queued.len(),
                            put_off = tick.put_off,
                            "scheduled drift checks queued"
                        );
                        self.wake.notify_one();
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "scheduler: drift checks not queued; next sweep")
                }
            }
            // Environments at an edge of their stage's schedule are stopped or started.
            match self
                .db(move |conn| {
                    store::scheduler::lifecycle::queue_due_changes(
                        conn,
                        max_attempts,
                        store::scheduler::TICK_LIMIT,
                    )
                })
                .await
            {
                Ok(tick) => {
                    for (environment, error) in &tick.failed {
                        tracing::warn!(environment.id = %environment, %error, "scheduler: schedule not applied; put off an hour");
                    }
                    for (environment, job, operation) in &tick.queued {
                        tracing::info!(environment.id = %environment, job.id = %job, %operation, "scheduled stop or start queued");
                    }
                    if !tick.queued.is_empty() {
                        self.wake.notify_one();
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "scheduler: stops and starts not queued; next sweep")
                }
            }
            self.end_stray_sessions().await;
            tokio::select! {
                () = tokio::time::sleep(self.config.worker.sweep_every) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// The sweeper's housekeeping half: the retention pass, when it is due for the
    /// installation (the `housekeeping` row lets one worker run it per interval, however many
    /// run). On a task of its own, so a long pass never delays a lease sweep; it looks every
    /// tenth of the interval (1 s – 1 min) and ends between two batches on shutdown.
    async fn housekeep_forever(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        let retention = self.config.retention.clone();
        let look_every =
            (retention.every / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
        while !self.stopping() {
            let (settings, lockout, stop) = (
                retention.clone(),
                self.config.login_lockout,
                self.shutdown.clone(),
            );
            let ran = self
                .db(move |conn| {
                    bulkhead_core::retention::run_if_due(conn, &settings, lockout, &|| {
                        !*stop.borrow()
                    })
                })
                .await;
            match ran {
                Ok(None) => {}
                Ok(Some(report)) => {
                    let deleted: Vec<String> = report
                        .deleted
                        .iter()
                        .filter(|(_, n)| *n > 0)
                        .map(|(kind, n)| format!("{}={n}", kind.as_str()))
                        .collect();
                    tracing::info!(
                        deleted = %deleted.join(" "),
                        unfinished = report.unfinished,
                        "retention pass"
                    );
                    for (kind, error) in &report.failed {
                        tracing::warn!(kind = kind.as_str(), %error, "retention: could not delete; next pass");
                    }
                }
                Err(error) => tracing::warn!(%error, "retention: control database unavailable"),
            }
            tokio::select! {
                () = tokio::time::sleep(look_every) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

impl Worker {
    /// Counts connections every tick and runs the metering pass when it is due for the
    /// installation (the `housekeeping` row `metering`: one worker per interval, however many
    /// run; the pass itself also holds the metering lock). A failed pass is recorded with its
    /// error and logged; the next one meters the stretch it left.
    async fn meter_forever(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        let settings = self.config.metering.clone();
        let targets = crate::metering::MeterTargets::from_config(&self.config.worker);
        while !self.stopping() {
            let (pool, t, s, prices) = (
                self.pool.clone(),
                targets.clone(),
                settings.clone(),
                self.prices.clone(),
            );
            let ran = tokio::task::spawn_blocking(move || {
                if let Err(error) = crate::metering::tick(&pool, &t) {
                    tracing::warn!(%error, "metering: could not count connections");
                }
                let mut conn = pool.get().map_err(|e| e.to_string())?;
                let due = store::housekeeping::claim(&mut conn, "metering", s.every)
                    .map_err(|e| e.to_string())?;
                drop(conn);
                if !due {
                    return Ok(None);
                }
                crate::metering::run_pass(
                    &pool,
                    &t,
                    &s,
                    &prices,
                    store::metering::Trigger::Schedule,
                )
                .map(Some)
                .map_err(|e| e.to_string())
            })
            .await;
            match ran {
                Ok(Ok(Some(report))) => match report.error {
                    None => {
                        tracing::info!(pass = %report.id, samples = report.counts.samples, charges = report.counts.charges, "metering pass")
                    }
                    Some(error) => {
                        tracing::warn!(pass = %report.id, state = report.state.as_str(), %error, "metering pass did not run")
                    }
                },
                Ok(Ok(None)) => {}
                Ok(Err(error)) => tracing::warn!(%error, "metering: control database unavailable"),
                Err(error) => tracing::warn!(%error, "metering: pass panicked"),
            }
            tokio::select! {
                () = tokio::time::sleep(settings.tick.min(settings.every)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// One sweep: requeue (or fail) jobs whose lease expired, and re-send wake-ups for runnable jobs
/// whose message is missing. Returns how many jobs it touched.
pub fn sweep_once(
    conn: &mut bulkhead_core::db::PgConn,
    redeliver_after: Duration,
) -> Result<usize, StoreError> {
    use diesel::Connection;
    let mut touched = 0;
    for stale in store::jobs::expired_leases(conn)? {
        let swept = conn.transaction(|conn| {
            let owner = stale.lease_owner.clone().unwrap_or_default();
            let (id, token) = (stale.id, stale.fencing_token);
            // Listed a moment ago; its worker may have renewed the lease since.
            if !store::jobs::lock_expired(conn, id, token)? {
                return Ok(());
            }
            // Ended here (kind, reason, environment states that broke), or requeued.
            let ended = if stale.cancel_requested {
                // Asked to stop, and its worker is gone: do not run it again.
                let reason = format!(
                    "canceled by request; the worker {owner} stopped heartbeating before it \
                     could stop the job itself"
                );
                store::jobs::finish(conn, id, token, JobState::Canceled, Some(&reason))?
                    .then_some(("canceled", reason, &EnvironmentState::MIDWAY[..]))
            } else if stale.attempts >= stale.max_attempts {
                let reason = format!(
                    "the worker {owner} stopped heartbeating during attempt {} of {}; no attempts left",
                    stale.attempts, stale.max_attempts
                );
                store::jobs::give_up(conn, id, token, &reason)?
                    .then_some(("failed", reason, &EnvironmentState::CHANGING[..]))
            } else {
                if store::jobs::requeue(conn, id, token, Duration::ZERO, None)? {
                    store::jobs::add_event(
                        conn,
                        id,
                        "lease_expired",
                        &format!("the lease of worker {owner} expired; requeued"),
                        serde_json::json!({"attempts": stale.attempts}),
                    )?;
                    store::outbox::enqueue(conn, id, &stale.operation)?;
                    touched += 1;
                }
                None
            };
            if let Some((kind, reason, broken)) = ended {
                // Only an apply or a destroy was changing the environment.
                if Operation::from_db(&stale.operation).is_some_and(Operation::changes_target) {
                    store::environments::mark_failed_if_in(conn, stale.environment_id, broken)?;
                }
                store::jobs::add_event(conn, id, kind, &reason, serde_json::json!({}))?;
                store::jobs::wake_next(conn, stale.environment_id)?;
                touched += 1;
            }
            Ok::<_, StoreError>(())
        });
        // One job that cannot be swept now does not hold back the others.
        if let Err(error) = swept {
            tracing::warn!(job_id = %stale.id, %error, "sweeper: could not settle an expired lease; next sweep");
        }
    }
    for stranded in store::jobs::stranded(conn, redeliver_after)? {
        store::outbox::enqueue(conn, stranded.id, &stranded.operation)?;
        touched += 1;
    }
    Ok(touched)
}
