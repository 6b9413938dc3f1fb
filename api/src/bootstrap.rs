//! First start: creates the platform admin from configuration when none exists yet.

use bulkhead_core::audit::AuditResult;
use bulkhead_core::config::BootstrapAdmin;
use bulkhead_core::db::PgPool;
use bulkhead_core::store::{self, audit::NewAuditEvent, principals::NewPrincipal};
use uuid::Uuid;

/// What bootstrap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    Created { email: String },
    AlreadyDone,
    NotConfigured,
}

pub async fn ensure_platform_admin(
    pool: &PgPool,
    admin: Option<&BootstrapAdmin>,
) -> anyhow::Result<Bootstrap> {
    let Some(admin) = admin.cloned() else {
        return Ok(Bootstrap::NotConfigured);
    };
    let pool = pool.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = pool.get()?;
        if store::principals::any_platform_admin(&mut conn)? {
            return Ok(Bootstrap::AlreadyDone);
        }
        let hash = bulkhead_core::password::hash_password(&admin.password)?;
        use diesel::Connection;
        conn.transaction(|conn| {
            let principal = store::principals::insert(
                conn,
                &NewPrincipal {
                    id: Uuid::now_v7(),
                    kind: "user",
                    email: Some(&admin.email),
                    display_name: "Platform admin",
                    password_hash: Some(&hash),
                    platform_role: Some("platform_admin"),
                    invitation_token_hash: None,
                    invitation_expires_at: None,
                },
            )?;
            store::audit::append(
                conn,
                &NewAuditEvent {
                    actor_id: None,
                    actor: "bootstrap".into(),
                    tenant_id: None,
                    action: "principal.bootstrap".into(),
                    target: format!("principal/{}", principal.id),
                    result: AuditResult::Success,
                    request_id: "bootstrap".into(),
                    details: serde_json::json!({"email": admin.email}),
                },
            )?;
            anyhow::Ok(())
        })?;
        Ok(Bootstrap::Created { email: admin.email })
    })
    .await?
}
