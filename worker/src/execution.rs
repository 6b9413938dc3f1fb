//! One claimed job, run to an outcome: heartbeats keep its lease, each executor step records an
//! event and checks the lease and SIGTERM, and the result is written fenced by the token.

use crate::executor::{ExecError, GuaranteeCheck};
use crate::runtime::Worker;

mod conclude;
mod drift;
mod lease;
mod review;
mod schedule;

use bulkhead_core::audit::AuditResult;
use bulkhead_core::domain::{Isolation, Stage};
use bulkhead_core::jobs::Operation;
use bulkhead_core::lifecycle::EnvironmentState;
use bulkhead_core::plan::{EnvironmentSpec, Plan};
use bulkhead_core::store::environments::{Environment, StoredCredentials};
use bulkhead_core::store::jobs::Job;
use bulkhead_core::store::{self, StoreError, audit::NewAuditEvent};
use conclude::{open, record_verification};
use diesel::Connection;
use lease::fault_pause;
use review::record_match;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How a job attempt ended, for the message: ack, or dead-letter on `Failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Requeued for another attempt after a backoff.
    Retrying,
    /// Failed for good.
    Failed,
    /// Stopped on request (not an error: the message is acked, not dead-lettered).
    Canceled,
    /// Lease given back at a step boundary because the worker is stopping.
    Released,
    /// Someone else holds the job now (our lease expired); we wrote nothing more.
    LostLease,
    /// Planned and parked to await approval; an approval queues it again.
    AwaitingApproval,
}

pub struct Execution {
    worker: Arc<Worker>,
    job: Job,
    received: Instant,
    lost: Arc<AtomicBool>,
    /// Someone asked to cancel the job: stop at the next step boundary.
    canceled: Arc<AtomicBool>,
    /// When the lease was last renewed, in milliseconds after `received`: a worker that could
    /// not renew it for a lease stops before its next step (another worker may hold it now).
    renewed_ms: Arc<AtomicU64>,
}

/// Why an attempt stopped early.
enum Stop {
    Exec(ExecError),
    Store(StoreError),
    /// Not retryable: what, where, why.
    Fatal(String),
    /// A cancel was requested before this attempt touched the target.
    Canceled,
    /// The job is no longer ours (its token moved on): nothing more is written.
    LostLease,
    /// The change is planned and parked to await approval (written already).
    Parked,
}

impl From<ExecError> for Stop {
    fn from(error: ExecError) -> Self {
        Self::Exec(error)
    }
}

impl From<StoreError> for Stop {
    fn from(error: StoreError) -> Self {
        match error {
            // The state machine refused the write: retrying would be refused the same way.
            StoreError::Transition(reason) => Self::Fatal(reason),
            other => Self::Store(other),
        }
    }
}

/// How often a running job looks for a cancel request.
const CANCEL_POLL: Duration = Duration::from_secs(1);

/// How long step events may wait to be written together: progress shows this much later.
const STEP_EVENT_LINGER: std::time::Duration = std::time::Duration::from_millis(25);

fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1e4).round() / 10.0
}

/// The worker as an audit actor for one job of one tenant.
struct WorkerAudit {
    worker_id: String,
    tenant_id: uuid::Uuid,
    job_id: uuid::Uuid,
}

impl WorkerAudit {
    fn event(
        &self,
        action: &str,
        target: String,
        result: AuditResult,
        details: serde_json::Value,
    ) -> NewAuditEvent {
        NewAuditEvent {
            actor_id: None,
            actor: format!("worker:{}", self.worker_id),
            tenant_id: Some(self.tenant_id),
            action: action.to_owned(),
            target,
            result,
            request_id: format!("job:{}", self.job_id),
            details,
        }
    }
}

impl Execution {
    pub fn new(worker: Arc<Worker>, job: Job, received: Instant) -> Self {
        // A cancel asked for during an earlier attempt (retried or released before its worker
        // saw it) still holds: this attempt stops before it touches the target.
        let canceled = job.cancel_requested_at.is_some();
        Self {
            worker,
            job,
            received,
            lost: Arc::new(AtomicBool::new(false)),
            canceled: Arc::new(AtomicBool::new(canceled)),
            renewed_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Runs `work` in a transaction that first checks, under a row lock, that the job is still
    /// running under this attempt's token: a worker that lost its lease writes nothing.
    async fn fenced_db<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut bulkhead_core::db::PgConn) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Stop> {
        let (job_id, token) = (self.job.id, self.job.fencing_token);
        let written = self
            .db(move |conn| {
                conn.transaction(|conn| {
                    if !store::jobs::hold(conn, job_id, token)? {
                        return Ok(None);
                    }
                    work(conn).map(Some)
                })
            })
            .await?;
        written.ok_or_else(|| {
            self.lost.store(true, Ordering::SeqCst);
            Stop::LostLease
        })
    }

    /// The target's half of the fencing (see `executor::Fence`): takeovers it makes are
    /// written to the job's events, fenced like every other write.
    fn fence(&self) -> Arc<crate::executor::Fence> {
        let (pool, job_id, token) = (
            self.worker.pool.clone(),
            self.job.id,
            self.job.fencing_token,
        );
        Arc::new(crate::executor::Fence {
            environment_id: self.job.environment_id,
            job_id,
            token,
            lease: self.worker.config.worker.lease,
            report: Arc::new(move |message: &str, details: serde_json::Value| {
                let written = pool.get().map_err(StoreError::from).and_then(|mut conn| {
                    conn.transaction(|conn| {
                        if store::jobs::hold(conn, job_id, token)? {
                            store::jobs::add_event(conn, job_id, "takeover", message, details)?;
                        }
                        Ok::<_, StoreError>(())
                    })
                });
                if let Err(error) = written {
                    tracing::warn!(%job_id, %error, "could not record a takeover event");
                }
            }),
        })
    }

    async fn db<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut bulkhead_core::db::PgConn) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.worker.db(work).await
    }

    pub async fn run(self) -> Outcome {
        let heartbeat = self.spawn_heartbeat();
        let (job_id, token) = (self.job.id, self.job.fencing_token);
        let claim_ms = ms(self.received);
        let queued_ms = (self.job.started_at.unwrap_or(self.job.created_at) - self.job.created_at)
            .num_microseconds()
            .map_or(0.0, |us| us as f64 / 1000.0);
        let _ = self
            .fenced_db(move |conn| {
                store::jobs::add_event(
                    conn,
                    job_id,
                    "claimed",
                    "claimed by a worker",
                    json!({"claim_ms": claim_ms, "since_created_ms": queued_ms, "token": token}),
                )
            })
            .await;
        let result = self.attempt().await;
        heartbeat.abort();
        self.conclude(result).await
    }

    async fn load_spec(&self) -> Result<(Environment, EnvironmentSpec), Stop> {
        let environment_id = self.job.environment_id;
        let environment = self
            .db(move |conn| store::environments::find(conn, environment_id))
            .await?
            .ok_or_else(|| Stop::Fatal(format!("environment {environment_id} no longer exists")))?;
        // An upgrade's apply plans for the version it brings the environment to; one that a
        // later upgrade overtook would take limits back, and is refused.
        let version = self
            .job
            .blueprint_version
            .unwrap_or(environment.blueprint_version);
        if version < environment.blueprint_version {
            return Err(Stop::Fatal(format!(
                "environment {} is at {} v{} already; this upgrade to v{version} was overtaken \
                 by a later one and changes nothing",
                environment.name, environment.blueprint, environment.blueprint_version
            )));
        }
        let blueprint = self
            .worker
            .catalog
            .get(&environment.blueprint, u32::try_from(version).ok())
            .cloned()
            .ok_or_else(|| {
                Stop::Fatal(format!(
                    "blueprint {} v{version} is not in this worker's catalog; deploy a worker \
                     that has it (BULKHEAD_BLUEPRINTS_DIR) or recreate the environment with \
                     another blueprint",
                    environment.blueprint
                ))
            })?;
        let isolation =
            Isolation::parse("isolation", &environment.isolation).unwrap_or(Isolation::Shared);
        let stage = Stage::parse("stage", &environment.stage)
            .map_err(|e| Stop::Fatal(format!("environment stage: {}", e.message)))?;
        let cost_tags: BTreeMap<String, String> = environment
            .cost_tags
            .as_object()
            .map(|tags| {
                tags.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let spec = EnvironmentSpec {
            id: environment.id,
            tenant_id: environment.tenant_id,
            isolation,
            stage,
            blueprint,
            cost_tags,
            // What a stop makes it, and what a drift check of a stopped environment expects;
            // an apply or start gives the login back, a destroy removes the roles.
            // (A plan shows what an apply would do, and an apply gives the login back.)
            stopped: match self.job.operation {
                Operation::Stop => true,
                Operation::DriftCheck => environment.state == EnvironmentState::Stopped,
                _ => false,
            },
        };
        Ok((environment, spec))
    }

    async fn plan(&self, spec: &EnvironmentSpec, destroy: bool) -> Result<Plan, Stop> {
        let (executor, spec) = (self.worker.executor.clone(), spec.clone());
        let started = Instant::now();
        let plan = tokio::task::spawn_blocking(move || {
            if destroy {
                executor.destroy_plan(&spec)
            } else {
                executor.plan(&spec)
            }
        })
        .await
        .map_err(|e| Stop::Fatal(format!("planner task: {e}")))??;
        let (job_id, token) = (self.job.id, self.job.fencing_token);
        let (summary, plan_json, hash) = (
            plan.summary(),
            serde_json::to_value(&plan).unwrap_or_default(),
            plan.hash.clone(),
        );
        let plan_ms = ms(started);
        self.fenced_db(move |conn| {
            store::jobs::record_plan(conn, job_id, token, &plan_json, &hash)?;
            store::jobs::add_event(
                conn,
                job_id,
                "planned",
                "plan computed",
                json!({"plan_ms": plan_ms, "summary": summary}),
            )
        })
        .await?;
        Ok(plan)
    }

    /// The app role's password: the stored one, or a new one sealed and stored first (so a
    /// retried apply after a crash reuses it).
    async fn password(&self, spec: &EnvironmentSpec) -> Result<String, Stop> {
        let environment_id = spec.id;
        let keys = self.worker.config.credentials_keys.clone();
        if let Some(stored) = self
            .db(move |conn| store::environments::credentials(conn, environment_id))
            .await?
        {
            return open(&keys, &stored);
        }
        let password = bulkhead_core::secrets::generate_password();
        let info = self.worker.executor.connection_info(spec);
        let sealed = keys
            .seal(&password, environment_id.as_bytes())
            .map_err(|e| Stop::Fatal(e.to_string()))?;
        let row = StoredCredentials {
            environment_id,
            host: info.host,
            port: i32::from(info.port),
            database: info.database,
            schema: info.schema,
            username: info.username,
            nonce: sealed.nonce,
            ciphertext: sealed.ciphertext,
            created_at: chrono::Utc::now(),
            key_id: sealed.key_id,
        };
        let stored = self
            .fenced_db(move |conn| {
                store::environments::store_credentials_once(conn, &row)?;
                store::environments::credentials(conn, environment_id)
            })
            .await?
            .ok_or_else(|| Stop::Fatal("credentials vanished after storing them".into()))?;
        open(&keys, &stored)
    }

    async fn attempt(&self) -> Result<(), Stop> {
        let operation = self.job.operation;
        let (environment, spec) = self.load_spec().await?;
        // A destroyed environment stays destroyed: a job that raced its destroy (asked for
        // while the destroy was being queued) must not make it again.
        if operation != Operation::Destroy && environment.state == EnvironmentState::Destroyed {
            return Err(Stop::Fatal(format!(
                "environment {} was destroyed before this {} job ran; nothing was done \
                 (create a new environment instead)",
                environment.name, self.job.operation
            )));
        }
        // A destroy retried after its environment was already destroyed (the attempt before
        // committed `destroyed`, then lost its lease or its conclusion): nothing is left to do.
        if operation == Operation::Destroy && environment.state == EnvironmentState::Destroyed {
            return Ok(());
        }
        if operation.changes_target() && self.job.awaits_review() {
            return self.await_review(&spec).await;
        }
        match operation {
            Operation::Plan => {
                self.plan(&spec, false).await?;
                Ok(())
            }
            Operation::DriftCheck => self.drift_check(&environment, &spec).await,
            Operation::Apply => self.apply(&spec).await,
            Operation::Destroy => self.destroy(&spec).await,
            Operation::Stop => self.stop(&environment, &spec).await,
            Operation::Start => self.start(&environment, &spec).await,
        }
    }

    /// The environment's resources and cost tags as the blueprint wants them: what a
    /// successful apply or start records (without reading the catalogs again).
    fn as_desired(
        &self,
        spec: &EnvironmentSpec,
    ) -> (Vec<(String, String, serde_json::Value)>, serde_json::Value) {
        let names = self.worker.executor.names(spec);
        let present = bulkhead_core::plan::desired(spec, &names)
            .into_iter()
            .map(|r| {
                (
                    r.kind,
                    r.name,
                    serde_json::to_value(r.attributes).unwrap_or_default(),
                )
            })
            .collect();
        (
            present,
            serde_json::to_value(&spec.cost_tags).unwrap_or_default(),
        )
    }

    /// Who writes this job's audit events, to move into a database closure.
    fn audit(&self, spec: &EnvironmentSpec) -> WorkerAudit {
        WorkerAudit {
            worker_id: self.worker.config.worker.id.clone(),
            tenant_id: spec.tenant_id,
            job_id: self.job.id,
        }
    }

    fn stop_if_canceled(&self) -> Result<(), Stop> {
        if self.canceled.load(Ordering::SeqCst) {
            Err(Stop::Canceled)
        } else {
            Ok(())
        }
    }

    async fn apply(&self, spec: &EnvironmentSpec) -> Result<(), Stop> {
        let environment_id = spec.id;
        let plan = self.plan(spec, false).await?;
        let matched = self.check_reviewed(&plan).await?;
        self.stop_if_canceled()?;
        // Only now does the target change: a refused stale plan leaves the environment as it was.
        let job_id = self.job.id;
        self.fenced_db(move |conn| {
            store::environments::set_state(
                conn,
                environment_id,
                EnvironmentState::Provisioning,
                None,
            )?;
            record_match(conn, job_id, matched)
        })
        .await?;
        let password = self.password(spec).await?;
        let started = Instant::now();
        let (executor, spec_owned, pw, plan_owned, fence) = (
            self.worker.executor.clone(),
            spec.clone(),
            password.clone(),
            plan.clone(),
            self.fence(),
        );
        let (mut on_step, step_log) = self.on_step(None);
        // The step events are written while verification runs; they are joined before it
        // returns (on failure, before the error), so later events stay after them.
        let step_log = tokio::task::spawn_blocking(move || {
            let applied =
                executor.apply_fenced(&spec_owned, &plan_owned, &pw, Some(fence), &mut on_step);
            drop(on_step);
            match applied {
                Ok(()) => Ok(step_log),
                Err(error) => {
                    let _ = step_log.join();
                    Err(error)
                }
            }
        })
        .await
        .map_err(|e| Stop::Fatal(format!("apply task: {e}")))??;
        let apply_ms = ms(started);
        // Only on a first attempt: the worker that takes the job over does not pause again.
        if let Some(pause) = fault_pause("verify").filter(|_| self.job.attempts == 1) {
            let job_id = self.job.id;
            self.fenced_db(move |conn| {
                store::jobs::add_event(
                    conn,
                    job_id,
                    "fault",
                    "fault injection: pausing before verify",
                    json!({"ms": pause.as_millis() as u64}),
                )
            })
            .await?;
            tokio::time::sleep(pause).await;
        }

        let started = Instant::now();
        let (executor, spec_owned) = (self.worker.executor.clone(), spec.clone());
        let checks: Vec<GuaranteeCheck> = tokio::task::spawn_blocking(move || {
            let checks = executor.verify_isolation(&spec_owned, &password);
            let _ = step_log.join();
            checks
        })
        .await
        .map_err(|e| Stop::Fatal(format!("verify task: {e}")))??;
        let verify_ms = ms(started);

        // A successful apply leaves the target as desired: record the desired resources rather
        // than reading the catalogs a third time (drift-check compares with the catalogs).
        let (present, tags) = self.as_desired(spec);
        let (job_id, audit) = (self.job.id, self.audit(spec));
        let (upgrade, blueprint, version, stage) = (
            self.job.blueprint_version,
            spec.blueprint.name.clone(),
            i32::try_from(spec.blueprint.version).unwrap_or(i32::MAX),
            spec.stage.as_str(),
        );
        self.fenced_db(move |conn| {
            store::environments::record_resources(conn, environment_id, &present, &tags)?;
            if let Some(upgraded) = upgrade {
                store::promotion::set_version(conn, environment_id, upgraded)?;
            }
            // An apply gives a stopped environment's login back: its stop ends here.
            store::stops::end(conn, environment_id, job_id)?;
            let violations = record_verification(conn, environment_id, &checks, &audit)?;
            // Ready at this version on this stage: evidence for promoting it to the next.
            if violations.is_empty() {
                store::promotion::record_ready(
                    conn,
                    audit.tenant_id,
                    environment_id,
                    &blueprint,
                    version,
                    stage,
                )?;
            }
            store::jobs::add_event(
                conn,
                job_id,
                "verified",
                "applied and verified isolation",
                json!({"apply_ms": apply_ms, "verify_ms": verify_ms, "checks": checks.len(), "violations": violations.len()}),
            )
        })
        .await?;
        Ok(())
    }

    async fn destroy(&self, spec: &EnvironmentSpec) -> Result<(), Stop> {
        let environment_id = spec.id;
        // A reviewed destroy must find the plan its approvers read before anything changes.
        let matched = match &self.job.expected_plan_hash {
            Some(_) => self.check_reviewed(&self.plan(spec, true).await?).await?,
            None => None,
        };
        self.stop_if_canceled()?;
        let job_id = self.job.id;
        self.fenced_db(move |conn| {
            store::environments::set_state(
                conn,
                environment_id,
                EnvironmentState::Destroying,
                None,
            )?;
            record_match(conn, job_id, matched)
        })
        .await?;
        let plan = self.plan(spec, true).await?;
        let (executor, spec_owned, fence) =
            (self.worker.executor.clone(), spec.clone(), self.fence());
        let (mut on_step, step_log) =
            self.on_step(fault_pause("destroy_step").filter(|_| self.job.attempts == 1));
        tokio::task::spawn_blocking(move || {
            let applied = executor.apply_fenced(&spec_owned, &plan, "", Some(fence), &mut on_step);
            drop(on_step);
            let _ = step_log.join();
            applied
        })
        .await
        .map_err(|e| Stop::Fatal(format!("destroy task: {e}")))??;
        let audit = self.audit(spec);
        self.fenced_db(move |conn| {
            conn.transaction(|conn| {
                // After the job row (`fenced_db`), the tenant row, as the API's teardown locks
                // it: the last destroy of an offboarding tenant sees all the others.
                store::tenants::lock_for_change(conn, audit.tenant_id)?;
                store::environments::record_resources(conn, environment_id, &[], &json!({}))?;
                store::environments::clear_guarantees(conn, environment_id)?;
                store::environments::delete_credentials(conn, environment_id)?;
                store::stops::end(conn, environment_id, audit.job_id)?;
                store::environments::set_state(
                    conn,
                    environment_id,
                    EnvironmentState::Destroyed,
                    Some(None),
                )?;
                if let Some(tenant) = store::tenants::complete_offboarding(conn, audit.tenant_id)? {
                    store::audit::append(
                        conn,
                        &audit.event(
                            "tenant.offboarded",
                            format!("tenant/{}", tenant.slug),
                            AuditResult::Success,
                            json!({"last_environment": environment_id}),
                        ),
                    )?;
                }
                Ok(())
            })
        })
        .await?;
        Ok(())
    }
}
