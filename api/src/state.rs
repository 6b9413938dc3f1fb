//! Shared state of the API process: pool, enforcer, login throttle, hashing bound, metrics.

use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use bulkhead_core::authz::Authorizer;
use bulkhead_core::blueprint::BlueprintCatalog;
use bulkhead_core::config::Config;
use bulkhead_core::db::{AsyncPgPool, PgConn, PgPool};
use bulkhead_core::store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify, RwLock};

/// More changes than this behind, a process reloads every assignment instead.
const MAX_INCREMENTAL_CHANGES: i64 = 5_000;

pub struct AppState {
    pub config: Config,
    pub pool: PgPool,
    /// Async connections for the per-request lookups (bearer, route tenant): no thread handoff.
    pub request_pool: AsyncPgPool,
    pub authz: RwLock<Authorizer>,
    /// Held while reloading the enforcer, so a burst of stale requests reloads it once.
    authz_reload: Mutex<()>,
    hashing: crate::hashing::HashingSlots,
    /// Verified against when the email is unknown, so that case costs the same as a wrong password.
    pub dummy_password_hash: String,
    pub metrics: Metrics,
    /// Denials chained this minute, per principal (see `record_denial`).
    pub denials_seen: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, (i64, u32)>>,
    /// Request rate limits per principal and per client address.
    pub rate_limits: crate::ratelimit::RateLimiters,
    /// Blueprints environments may be created from.
    pub catalog: BlueprintCatalog,
    /// The price catalog (SKU descriptions and units of the cost views and the FOCUS export).
    pub prices: Arc<bulkhead_core::pricing::Catalog>,
    /// Cost exports running at once in this process (each holds a control-database connection
    /// and a blocking thread while it streams).
    pub export_slots: Arc<tokio::sync::Semaphore>,
    /// Whose exports are streaming now (one per tenant, or per caller platform-wide).
    pub export_owners:
        Arc<std::sync::Mutex<std::collections::HashSet<crate::routes::costs::ExportOwner>>>,
    /// Notified after a job commits, so the outbox relay publishes without waiting for a poll.
    pub relay_wake: Arc<Notify>,
    /// Notified after mail is queued, so the mail relay sends it without waiting for a poll.
    pub mail_wake: Arc<Notify>,
}

impl AppState {
    pub async fn new(config: Config, pool: PgPool) -> anyhow::Result<Self> {
        let authz = load_authorizer(&pool).await?;
        let request_pool =
            bulkhead_core::db::connect_async(&config.database_url, config.db_pool_size as usize)?;
        let dummy_password_hash = tokio::task::spawn_blocking(|| {
            bulkhead_core::password::hash_password("bulkhead-timing-equaliser")
        })
        .await??;
        let catalog = match &config.worker.blueprints_dir {
            Some(dir) => BlueprintCatalog::load_dir(dir),
            None => BlueprintCatalog::builtin(),
        }
        .map_err(|e| anyhow::anyhow!("blueprints: {e}"))?;
        let prices = Arc::new(
            config
                .metering
                .catalog()
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        Ok(Self {
            catalog,
            prices,
            export_slots: Arc::new(tokio::sync::Semaphore::new(
                crate::routes::costs::MAX_CONCURRENT_EXPORTS,
            )),
            export_owners: Arc::default(),
            relay_wake: Arc::new(Notify::new()),
            mail_wake: Arc::new(Notify::new()),
            hashing: crate::hashing::HashingSlots::new(config.max_concurrent_hashes),
            authz: RwLock::new(authz),
            authz_reload: Mutex::new(()),
            dummy_password_hash,
            metrics: Metrics::new()?,
            rate_limits: crate::ratelimit::RateLimiters::new(&config.limits.rate),
            denials_seen: std::sync::Mutex::default(),
            config,
            pool,
            request_pool,
        })
    }

    /// A pooled connection, for use inside `web::block`.
    pub fn conn(pool: &PgPool) -> ApiResult<PgConn> {
        pool.get()
            .map_err(|e| ApiError::from(store::StoreError::from(e)))
    }

    /// A connection for async queries on the request's own task.
    pub async fn request_conn(&self) -> ApiResult<bulkhead_core::db::AsyncPgConn> {
        self.request_pool
            .get()
            .await
            .map_err(|e| ApiError::from(store::StoreError::from(e)))
    }

    /// Runs blocking database work on the blocking pool with a pooled connection.
    pub async fn db<T, F>(&self, work: F) -> ApiResult<T>
    where
        F: FnOnce(&mut PgConn) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        actix_web::web::block(move || {
            let mut conn = Self::conn(&pool)?;
            work(&mut conn)
        })
        .await?
    }

    /// Brings the enforcer up to `seen_generation` (the caller's own principal's latest change:
    /// a change to anyone else makes nobody else wait) when it is behind: the changes since its
    /// generation are applied one by one (a membership change costs each API process one `g`
    /// line); a process that fell too far behind, or finds the log forgot changes it never
    /// applied, reloads everything.
    pub async fn refresh_authz(&self, seen_generation: i64) -> ApiResult<()> {
        if self.authz.read().await.generation() >= seen_generation {
            return Ok(());
        }
        let _refreshing = self.authz_reload.lock().await;
        let current = self.authz.read().await.generation();
        if current >= seen_generation {
            return Ok(());
        }
        let pool = self.pool.clone();
        let changes = tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(store::StoreError::from)?;
            store::principals::changes_since(&mut conn, current, MAX_INCREMENTAL_CHANGES)
        })
        .await
        .map_err(ApiError::internal)??;
        // The log must reach what the caller's lookup saw (a forgotten tail reloads too).
        let complete = changes.filter(|(changes, reached)| {
            changes.len() < MAX_INCREMENTAL_CHANGES as usize && *reached >= seen_generation
        });
        match complete {
            Some((changes, reached)) => {
                self.authz
                    .write()
                    .await
                    .apply(&changes, reached)
                    .await
                    .map_err(ApiError::internal)?;
                self.metrics
                    .authz_refreshes
                    .with_label_values(&["incremental"])
                    .inc();
            }
            _ => {
                let fresh = load_authorizer(&self.pool)
                    .await
                    .map_err(ApiError::Internal)?;
                *self.authz.write().await = fresh;
                self.metrics
                    .authz_refreshes
                    .with_label_values(&["reload"])
                    .inc();
            }
        }
        Ok(())
    }

    /// A slot to compute one password hash for a request from `address`, or 503 when none
    /// frees up within 5 s (see `HashingSlots`).
    pub async fn hashing_slot(&self, address: &str) -> ApiResult<crate::hashing::HashingSlot> {
        self.hashing
            .acquire(address, Duration::from_secs(5))
            .await
            .ok_or_else(|| ApiError::Unavailable {
                retry_after_secs: 1,
                detail: "too many logins are being checked at once; retry in a second".into(),
            })
    }
}

async fn load_authorizer(pool: &PgPool) -> anyhow::Result<Authorizer> {
    let pool = pool.clone();
    let (assignments, generation) = tokio::task::spawn_blocking(move || {
        let mut conn = pool.get()?;
        anyhow::Ok(store::principals::load_assignments(&mut conn)?)
    })
    .await??;
    Ok(Authorizer::new(&assignments, generation).await?)
}
