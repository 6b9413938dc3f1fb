//! The lease while an attempt runs: heartbeats (and cancel requests), and the step boundary
//! where a worker that lost or could not renew its lease, was asked to cancel, or is stopping
//! ends the attempt. Step events are written fenced by the token.

use super::{CANCEL_POLL, Execution, STEP_EVENT_LINGER, ms};
use crate::executor::StepAbort;
use bulkhead_core::plan::PlanAction;
use bulkhead_core::store::{self, StoreError};
use diesel::Connection;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Fault injection for the e2e tests: `BULKHEAD_FAULT_PAUSE=<point>:<ms>` (points `verify`:
/// before an apply's verification, `destroy_step`: after a destroy's first step; first attempts
/// only) makes the worker write a `fault` event and then pause there, so a test can `SIGSTOP` it at a known
/// point. Unset (as in production) it does nothing.
pub(super) fn fault_pause(point: &str) -> Option<Duration> {
    let value = std::env::var("BULKHEAD_FAULT_PAUSE").ok()?;
    let (at, ms) = value.split_once(':')?;
    if at != point {
        return None;
    }
    ms.parse().ok().map(Duration::from_millis)
}

impl Execution {
    /// Extends the lease every third of its length (flags the job as lost if that fails) and,
    /// in between, looks once a second for a cancel request. A job that finishes within a second
    /// costs neither.
    pub(super) fn spawn_heartbeat(&self) -> tokio::task::JoinHandle<()> {
        let (pool, lost, canceled, renewed_ms, received) = (
            self.worker.pool.clone(),
            self.lost.clone(),
            self.canceled.clone(),
            self.renewed_ms.clone(),
            self.received,
        );
        let (job_id, token, lease) = (
            self.job.id,
            self.job.fencing_token,
            self.worker.config.worker.lease,
        );
        let tick = CANCEL_POLL.min(lease / 3);
        tokio::spawn(async move {
            let mut last_beat = Instant::now();
            loop {
                tokio::time::sleep(tick).await;
                let beat = last_beat.elapsed() + tick > lease / 3;
                let pool = pool.clone();
                // One statement per tick: the heartbeat reports a cancel request too.
                let checked = tokio::task::spawn_blocking(move || {
                    let mut conn = pool.get()?;
                    Ok::<_, StoreError>(if beat {
                        match store::jobs::heartbeat(&mut conn, job_id, token, lease)? {
                            Some(cancel) => (true, cancel),
                            None => (false, false),
                        }
                    } else {
                        (
                            true,
                            store::jobs::cancel_requested(&mut conn, job_id, token)?,
                        )
                    })
                })
                .await;
                if beat {
                    last_beat = Instant::now();
                    if matches!(checked, Ok(Ok((true, _)))) {
                        let at = u64::try_from(received.elapsed().as_millis()).unwrap_or(u64::MAX);
                        renewed_ms.store(at, Ordering::SeqCst);
                    }
                }
                match checked {
                    Ok(Ok((false, _))) => {
                        tracing::warn!(%job_id, "lease lost: another worker owns this job now");
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    Ok(Ok((true, true))) if !canceled.swap(true, Ordering::SeqCst) => {
                        tracing::info!(%job_id, "cancel requested: stopping at the next step");
                    }
                    _ => {}
                }
            }
        })
    }

    /// The step callback: queues an event per action for a writer thread (so bookkeeping does
    /// not sit between two steps on the target) and stops at the boundary when the lease is lost
    /// or the worker is stopping. Join the returned writer after the apply, before any later
    /// event, so events stay in order.
    pub(super) fn on_step(
        &self,
        pause_after_first_step: Option<Duration>,
    ) -> (
        impl FnMut(&PlanAction) -> Result<(), StepAbort> + Send + 'static,
        std::thread::JoinHandle<()>,
    ) {
        let (pool, lost, canceled, shutdown, renewed_ms) = (
            self.worker.pool.clone(),
            self.lost.clone(),
            self.canceled.clone(),
            self.worker.shutdown.clone(),
            self.renewed_ms.clone(),
        );
        let (job_id, token, received) = (self.job.id, self.job.fencing_token, self.received);
        let lease_ms =
            u64::try_from(self.worker.config.worker.lease.as_millis()).unwrap_or(u64::MAX);
        let (sender, receiver) = std::sync::mpsc::channel::<(String, serde_json::Value)>();
        let writer = std::thread::spawn(move || {
            let mut conn = None;
            // Steps arriving within STEP_EVENT_LINGER of the first go in one statement (one
            // commit per batch instead of one per step); the end of the apply flushes at once.
            while let Ok(first) = receiver.recv() {
                let mut batch = vec![first];
                let deadline = Instant::now() + STEP_EVENT_LINGER;
                while let Ok(next) =
                    receiver.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                {
                    batch.push(next);
                }
                if conn.is_none() {
                    conn = pool.get().ok();
                }
                if let Some(conn) = conn.as_mut() {
                    let _ = conn.transaction(|conn| {
                        if store::jobs::hold(conn, job_id, token)? {
                            store::jobs::add_events(conn, job_id, "step", &batch)?;
                        }
                        Ok::<_, StoreError>(())
                    });
                }
            }
        });
        let mut last = Instant::now();
        let mut pause = pause_after_first_step;
        let fault_pool = self.worker.pool.clone();
        let step = move |action: &PlanAction| {
            let step_ms = ms(last);
            last = Instant::now();
            if let Some(pause) = pause.take() {
                if let Ok(mut conn) = fault_pool.get() {
                    let _ = conn.transaction(|conn| {
                        if store::jobs::hold(conn, job_id, token)? {
                            store::jobs::add_event(
                                conn,
                                job_id,
                                "fault",
                                "fault injection: pausing after the first step",
                                json!({"ms": pause.as_millis() as u64}),
                            )?;
                        }
                        Ok::<_, StoreError>(())
                    });
                }
                std::thread::sleep(pause);
            }
            let _ = sender.send((
                action.detail.clone(),
                json!({"op": action.op, "kind": action.kind, "name": action.name, "ms": step_ms}),
            ));
            // Not renewed for a lease: another worker may hold the job now; stop before the
            // next step (the target's fence refuses it anyway).
            let now_ms = u64::try_from(received.elapsed().as_millis()).unwrap_or(u64::MAX);
            if now_ms.saturating_sub(renewed_ms.load(Ordering::SeqCst)) >= lease_ms {
                lost.store(true, Ordering::SeqCst);
            }
            if lost.load(Ordering::SeqCst) || canceled.load(Ordering::SeqCst) || *shutdown.borrow()
            {
                Err(StepAbort)
            } else {
                Ok(())
            }
        };
        (step, writer)
    }
}
