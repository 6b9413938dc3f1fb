//! `Idempotency-Key` for POSTs that create tenants or jobs: the same key with the same request
//! returns the saved response; the same key with another request answers 422.

use crate::error::{ApiError, ApiResult};
use actix_web::HttpRequest;
use bulkhead_core::store;
use diesel::PgConnection;
use uuid::Uuid;

/// What a key may be, as the OpenAPI document states it: 1 to 255 visible ASCII characters or
/// spaces, neither first nor last a space (HTTP drops those anyway).
pub const KEY_PATTERN: &str = "^[!-~]([ -~]{0,253}[!-~])?$";

/// The request's key, if it sent one.
pub fn key(req: &HttpRequest) -> ApiResult<Option<String>> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let raw = value.as_bytes();
    let start = raw.iter().position(|b| *b != b' ').unwrap_or(raw.len());
    let end = raw
        .iter()
        .rposition(|b| *b != b' ')
        .map_or(start, |last| last + 1);
    let bytes = &raw[start..end];
    if bytes.is_empty() || bytes.len() > 255 || !bytes.iter().all(|b| (b' '..=b'~').contains(b)) {
        return Err(ApiError::validation(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters or spaces, such as a UUID",
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// What identifies "the same request": method, path and body.
pub fn request_hash(req: &HttpRequest, body: &serde_json::Value) -> Vec<u8> {
    let canonical = format!("{} {}\n{}", req.method(), req.path(), body);
    bulkhead_core::secrets::sha256(canonical.as_bytes()).to_vec()
}

/// Runs `work` in the caller's transaction unless `key` already has a saved response.
pub fn once(
    conn: &mut PgConnection,
    principal_id: Uuid,
    key: Option<&str>,
    request_hash: &[u8],
    work: impl FnOnce(&mut PgConnection) -> ApiResult<(u16, serde_json::Value)>,
) -> ApiResult<(u16, serde_json::Value)> {
    if let Some(key) = key
        && let Some(saved) = store::idempotency::lock_and_get(conn, principal_id, key)?
    {
        if saved.request_hash != request_hash {
            return Err(ApiError::IdempotencyKeyReused);
        }
        return Ok((u16::try_from(saved.status).unwrap_or(200), saved.body));
    }
    let (status, body) = work(conn)?;
    if let Some(key) = key {
        store::idempotency::save(
            conn,
            principal_id,
            key,
            request_hash,
            i16::try_from(status).unwrap_or(200),
            &body,
        )?;
    }
    Ok((status, body))
}

/// The HTTP response for a (possibly replayed) result.
pub fn respond(status: u16, body: serde_json::Value) -> ApiResult<actix_web::HttpResponse> {
    let status = actix_web::http::StatusCode::from_u16(status).map_err(ApiError::internal)?;
    Ok(actix_web::HttpResponse::build(status).json(body))
}
