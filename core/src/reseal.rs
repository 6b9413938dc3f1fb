//! Re-sealing stored environment credentials with the current key after a key rotation
//! (`bulkhead reseal`): batch by batch, each in its own short transaction; idempotent, so it
//! can be stopped and run again.

use crate::crypto::Keyring;
use crate::db::StoreError;
use crate::store::environments as store;
use diesel::{Connection, PgConnection};
use uuid::Uuid;

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Rows sealed with the current key before the run (left as they were).
    pub already_current: i64,
    /// Rows this run moved to the current key.
    pub resealed: u64,
    /// Rows none of the configured keys opens (or that could not be written), with the reason.
    pub failed: Vec<(Uuid, String)>,
    /// Rows still not on the current key after the run: the failed ones, and rows another
    /// transaction held (a destroy deleting them, another reseal) or that were written with an
    /// older key meanwhile (a process not yet restarted with the new key). Run it again.
    pub remaining: i64,
    pub batches: u64,
}

/// Opens every row not sealed with `keys`' current key and seals it again with that key,
/// `batch_size` rows per transaction. A row no key opens is reported and left as it is.
pub fn reseal_all(
    conn: &mut PgConnection,
    keys: &Keyring,
    batch_size: usize,
) -> Result<ResealReport, StoreError> {
    let current = keys.current().id();
    let limit = i64::try_from(batch_size.max(1)).unwrap_or(i64::MAX);
    let mut report = ResealReport {
        already_current: store::count_credentials_sealed_with(conn, current, true)?,
        ..ResealReport::default()
    };
    let mut after = Uuid::nil();
    loop {
        let (seen, last, resealed, failed) = conn.transaction(|conn| {
            let rows = store::credentials_to_reseal(conn, current, after, limit)?;
            let mut resealed = 0u64;
            let mut failed = Vec::new();
            for row in &rows {
                let associated = row.environment_id.as_bytes();
                let sealed = keys
                    .open(&row.sealed(), associated)
                    .and_then(|password| keys.seal(&password, associated));
                match sealed {
                    Ok(sealed) => {
                        store::replace_sealed(conn, row.environment_id, &sealed)?;
                        resealed += 1;
                    }
                    Err(e) => failed.push((row.environment_id, e.to_string())),
                }
            }
            let last = rows.last().map(|row| row.environment_id);
            Ok::<_, StoreError>((rows.len(), last, resealed, failed))
        })?;
        let Some(last) = last else { break };
        report.batches += 1;
        report.resealed += resealed;
        report.failed.extend(failed);
        after = last;
        if seen < batch_size {
            break;
        }
    }
    report.remaining = store::count_credentials_sealed_with(conn, current, false)?;
    Ok(report)
}
