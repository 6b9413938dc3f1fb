//! The audit chain's arithmetic: what a row's hash covers, and how a chain is checked.

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The previous-hash of the first row.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Outcome of an audited attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditResult {
    Success,
    Denied,
    Failure,
}

impl AuditResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::Failure => "failure",
        }
    }
}

/// Everything a row's hash covers, in the form it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditContent<'a> {
    pub id: Uuid,
    /// Stored with microsecond precision; hash the stored value.
    pub occurred_at: DateTime<Utc>,
    pub actor_id: Option<Uuid>,
    pub actor: &'a str,
    pub tenant_id: Option<Uuid>,
    pub action: &'a str,
    pub target: &'a str,
    pub result: &'a str,
    pub request_id: &'a str,
    pub details: &'a serde_json::Value,
}

/// `SHA-256(prev_hash ‖ canonical JSON of the content)`.
pub fn chain_hash(prev_hash: &[u8], content: &AuditContent<'_>) -> [u8; 32] {
    // serde_json orders object keys (no `preserve_order`), so this encoding is canonical.
    let canonical = serde_json::json!({
        "id": content.id,
        "occurred_at": content.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        "actor_id": content.actor_id,
        "actor": content.actor,
        "tenant_id": content.tenant_id,
        "action": content.action,
        "target": content.target,
        "result": content.result,
        "request_id": content.request_id,
        "details": content.details,
    });
    let mut digest = Sha256::new();
    digest.update(prev_hash);
    digest.update(canonical.to_string().as_bytes());
    digest.finalize().into()
}

/// Why a stored row does not fit the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// The row's `prev_hash` is not the previous row's `hash` (a row removed or reordered).
    PrevHashMismatch,
    /// The row's content no longer produces its stored `hash` (the row was edited).
    ContentMismatch,
}

/// Checks one stored row against the hash of the row before it.
pub fn check_link(
    expected_prev: &[u8],
    stored_prev: &[u8],
    stored_hash: &[u8],
    content: &AuditContent<'_>,
) -> Result<(), BreakKind> {
    if stored_prev != expected_prev {
        return Err(BreakKind::PrevHashMismatch);
    }
    if chain_hash(stored_prev, content) != stored_hash {
        return Err(BreakKind::ContentMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn content<'a>(details: &'a serde_json::Value, action: &'a str) -> AuditContent<'a> {
        AuditContent {
            id: Uuid::nil(),
            occurred_at: DateTime::from_timestamp(1_700_000_000, 123_456_000).expect("time"),
            actor_id: None,
            actor: "system",
            tenant_id: None,
            action,
            target: "tenant/acme",
            result: "success",
            request_id: "req-1",
            details,
        }
    }

    #[test]
    fn a_chain_verifies_and_an_edit_is_detected() {
        let details = json!({"slug": "acme"});
        let first = content(&details, "tenant.create");
        let h1 = chain_hash(&GENESIS_HASH, &first);
        let second = content(&details, "member.add");
        let h2 = chain_hash(&h1, &second);
        assert_eq!(
            check_link(&GENESIS_HASH, &GENESIS_HASH, &h1, &first),
            Ok(())
        );
        assert_eq!(check_link(&h1, &h1, &h2, &second), Ok(()));

        let edited = content(&details, "member.remove");
        assert_eq!(
            check_link(&h1, &h1, &h2, &edited),
            Err(BreakKind::ContentMismatch)
        );
        assert_eq!(
            check_link(&h2, &h1, &h2, &second),
            Err(BreakKind::PrevHashMismatch)
        );
    }

    #[test]
    fn key_order_in_details_does_not_change_the_hash() {
        let a: serde_json::Value = serde_json::from_str(r#"{"a":1,"b":2}"#).expect("json");
        let b: serde_json::Value = serde_json::from_str(r#"{"b":2,"a":1}"#).expect("json");
        assert_eq!(
            chain_hash(&GENESIS_HASH, &content(&a, "x.y")),
            chain_hash(&GENESIS_HASH, &content(&b, "x.y"))
        );
    }
}
