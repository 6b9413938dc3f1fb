//! Blueprint upgrades and their promotion evidence (`promotion_evidence`): the first time a
//! version was ready on a stage of a tenant, and an environment taking its upgraded version.

use super::StoreError;
use crate::domain::Stage;
use crate::schema::{environments, promotion_evidence};
use diesel::prelude::*;
use uuid::Uuid;

/// Records that `environment` is ready at `version` of `blueprint` on `stage` (kept once, the
/// first time, per tenant, blueprint, version and stage).
pub fn record_ready(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    environment_id: Uuid,
    blueprint: &str,
    version: i32,
    stage: &str,
) -> Result<(), StoreError> {
    diesel::insert_into(promotion_evidence::table)
        .values((
            promotion_evidence::tenant_id.eq(tenant_id),
            promotion_evidence::blueprint.eq(blueprint),
            promotion_evidence::version.eq(version),
            promotion_evidence::stage.eq(stage),
            promotion_evidence::environment_id.eq(environment_id),
        ))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(())
}

/// The stages and versions of `blueprint` that have been ready in the tenant.
pub fn ready_at(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    blueprint: &str,
) -> Result<Vec<(Stage, i32)>, StoreError> {
    let rows: Vec<(String, i32)> = promotion_evidence::table
        .filter(promotion_evidence::tenant_id.eq(tenant_id))
        .filter(promotion_evidence::blueprint.eq(blueprint))
        .select((promotion_evidence::stage, promotion_evidence::version))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(stage, version)| Stage::parse("stage", &stage).ok().map(|s| (s, version)))
        .collect())
}

/// The environment takes the version its upgrade applied, if that is later than its own (an
/// upgrade queued behind a later one does not take it back).
pub fn set_version(
    conn: &mut PgConnection,
    environment_id: Uuid,
    version: i32,
) -> Result<(), StoreError> {
    diesel::update(
        environments::table
            .find(environment_id)
            .filter(environments::blueprint_version.lt(version)),
    )
    .set((
        environments::blueprint_version.eq(version),
        environments::updated_at.eq(chrono::Utc::now()),
    ))
    .execute(conn)?;
    Ok(())
}
