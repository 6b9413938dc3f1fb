//! The sweep's session check: sessions of a stopped environment's roles that appeared after
//! its stop looked (see `executor::logins`) are ended every tick and audited, and so are
//! sessions in the pooled database whose role a destroy dropped.

use crate::runtime::Worker;
use bulkhead_core::audit::AuditResult;
use bulkhead_core::store::{self, audit::NewAuditEvent};
use serde_json::json;

impl Worker {
    pub(crate) async fn end_stray_sessions(&self) {
        let stopped = match self.db(|conn| store::stops::stopped_idle(conn)).await {
            Ok(stopped) => stopped,
            Err(error) => {
                tracing::warn!(%error, "sweep: stopped environments not read; next sweep");
                return;
            }
        };
        let targets: Vec<_> = stopped.iter().map(|(id, _, tier)| (*id, *tier)).collect();
        let executor = self.executor.clone();
        let ended = match tokio::task::spawn_blocking(move || executor.end_stray_sessions(&targets))
            .await
        {
            Ok(Ok(ended)) => ended,
            Ok(Err(error)) => {
                tracing::warn!(%error, "sweep: stray sessions not ended; next sweep");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "sweep: session task failed");
                return;
            }
        };
        if ended.orphaned > 0 {
            tracing::warn!(
                sessions = ended.orphaned,
                "sweep: ended sessions in the pooled database whose role no longer exists"
            );
        }
        if ended.stopped.is_empty() {
            return;
        }
        let actor = format!("worker:{}", self.config.worker.id);
        let events: Vec<NewAuditEvent> = ended
            .stopped
            .iter()
            .filter_map(|(environment, count)| {
                let tenant = stopped.iter().find(|(id, ..)| id == environment)?.1;
                tracing::warn!(environment.id = %environment, sessions = count,
                    "sweep: ended sessions of a stopped environment");
                Some(NewAuditEvent {
                    actor_id: None,
                    actor: actor.clone(),
                    tenant_id: Some(tenant),
                    action: "environment.session_ended".to_owned(),
                    target: format!("environment/{environment}"),
                    result: AuditResult::Failure,
                    details: json!({"sessions_ended": count,
                        "why": "a session of a stopped environment's role appeared after its stop"}),
                    request_id: "sweep".to_owned(),
                })
            })
            .collect();
        let written = self
            .db(move |conn| {
                for event in &events {
                    store::audit::append(conn, event)?;
                }
                Ok(())
            })
            .await;
        if let Err(error) = written {
            tracing::warn!(%error, "sweep: ended sessions not audited");
        }
    }
}
