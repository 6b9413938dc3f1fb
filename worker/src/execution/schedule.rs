//! A stop or start at its worker. A stop takes the app role's login away and ends the
//! environment's sessions at the target (fenced), then records `stopped` and the stop's start;
//! a start gives the login back by applying the app role as the blueprint has it (nothing
//! else: a change found beside it needs an apply, reviewed as the stage says), probes the walls
//! and records `ready` and the stop's end. Both are audited.

use super::conclude::record_verification;
use super::{Execution, Stop, ms};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::domain::Stage;
use bulkhead_core::lifecycle::EnvironmentState;
use bulkhead_core::plan::{self, EnvironmentSpec};
use bulkhead_core::store::{self, environments::Environment};
use serde_json::json;
use std::time::Instant;

impl Execution {
    pub(super) async fn stop(
        &self,
        environment: &Environment,
        spec: &EnvironmentSpec,
    ) -> Result<(), Stop> {
        if spec.stage == Stage::Production {
            return Err(Stop::Fatal(
                "production environments are never stopped (stops and schedules are for non-production stages)"
                    .to_owned(),
            ));
        }
        let was = environment.state;
        if !matches!(
            was,
            EnvironmentState::Ready | EnvironmentState::Drifted | EnvironmentState::Stopped
        ) {
            return Err(Stop::Fatal(format!(
                "environment {} is {was}; only a ready or drifted environment can be stopped",
                environment.name
            )));
        }
        self.stop_if_canceled()?;
        let started = Instant::now();
        let (executor, spec_owned, fence) =
            (self.worker.executor.clone(), spec.clone(), self.fence());
        let ended =
            tokio::task::spawn_blocking(move || executor.stop_logins(&spec_owned, Some(fence)))
                .await
                .map_err(|e| Stop::Fatal(format!("stop task: {e}")))??;
        let stop_ms = ms(started);
        let (environment_id, job_id, scheduled, audit) =
            (spec.id, self.job.id, self.job.scheduled, self.audit(spec));
        self.fenced_db(move |conn| {
            store::environments::set_state(conn, environment_id, EnvironmentState::Stopped, None)?;
            if store::stops::begin(conn, audit.tenant_id, environment_id, job_id, scheduled)? {
                store::audit::append(
                    conn,
                    &audit.event(
                        "environment.stopped",
                        format!("environment/{environment_id}"),
                        AuditResult::Success,
                        json!({"job_id": job_id, "scheduled": scheduled, "was": was,
                               "sessions_ended": ended}),
                    ),
                )?;
            }
            store::jobs::add_event(
                conn,
                job_id,
                "stopped",
                "logins taken away; sessions ended",
                json!({"stop_ms": stop_ms, "sessions_ended": ended}),
            )
        })
        .await?;
        Ok(())
    }

    pub(super) async fn start(
        &self,
        environment: &Environment,
        spec: &EnvironmentSpec,
    ) -> Result<(), Stop> {
        let (environment_id, job_id) = (spec.id, self.job.id);
        match environment.state {
            EnvironmentState::Stopped => {}
            // Started already (by hand, or an apply gave the login back): nothing to do.
            EnvironmentState::Ready | EnvironmentState::Drifted => {
                return self
                    .fenced_db(move |conn| {
                        store::stops::end(conn, environment_id, job_id)?;
                        store::jobs::add_event(
                            conn,
                            job_id,
                            "started",
                            "already running; nothing to do",
                            json!({}),
                        )
                    })
                    .await;
            }
            other => {
                return Err(Stop::Fatal(format!(
                    "environment {} is {other}; only a stopped environment can be started",
                    environment.name
                )));
            }
        }
        let plan = self.plan(spec, false).await?;
        let names = self.worker.executor.names(spec);
        let beside: Vec<String> = plan
            .actions
            .iter()
            .filter(|a| !(a.kind == plan::KIND_ROLE && a.name == names.app_role))
            .map(|a| a.headline())
            .collect();
        if !beside.is_empty() {
            return Err(Stop::Fatal(format!(
                "the environment changed while it was stopped ({}); a start only gives the \
                 login back: apply the environment (reviewed as its stage says) to bring it \
                 back to its blueprint, which starts it too",
                beside.join("; ")
            )));
        }
        self.stop_if_canceled()?;
        let password = self.password(spec).await?;
        let started = Instant::now();
        let (executor, spec_owned, fence, pw) = (
            self.worker.executor.clone(),
            spec.clone(),
            self.fence(),
            password.clone(),
        );
        let checks = tokio::task::spawn_blocking(move || {
            executor.apply_fenced(&spec_owned, &plan, &pw, Some(fence), &mut |_| Ok(()))?;
            executor.verify_isolation(&spec_owned, &pw)
        })
        .await
        .map_err(|e| Stop::Fatal(format!("start task: {e}")))??;
        let start_ms = ms(started);
        let (present, tags) = self.as_desired(spec);
        let (scheduled, audit) = (self.job.scheduled, self.audit(spec));
        self.fenced_db(move |conn| {
            store::environments::record_resources(conn, environment_id, &present, &tags)?;
            let violations = record_verification(conn, environment_id, &checks, &audit)?;
            let since = store::stops::end(conn, environment_id, job_id)?;
            store::audit::append(
                conn,
                &audit.event(
                    "environment.started",
                    format!("environment/{environment_id}"),
                    AuditResult::Success,
                    json!({"job_id": job_id, "scheduled": scheduled, "stopped_since": since,
                           "violations": violations.len()}),
                ),
            )?;
            store::jobs::add_event(
                conn,
                job_id,
                "started",
                "login given back; isolation verified",
                json!({"start_ms": start_ms, "checks": checks.len(), "violations": violations.len()}),
            )
        })
        .await?;
        Ok(())
    }
}
