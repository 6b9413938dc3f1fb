//! `ApiError`: every failure a handler can return, mapped to a status and an RFC 9457
//! problem+json body with a stable `type`. 5xx bodies are opaque; details go to the log.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use bulkhead_core::db::StoreError;
use bulkhead_core::domain::FieldError;
use serde::Serialize;
use std::fmt;

/// Base of every problem `type` URI.
pub const PROBLEM_BASE: &str = "https://bulkhead.dev/problems/";

#[derive(Debug)]
pub enum ApiError {
    /// The body or a parameter could not be read (malformed JSON, wrong type, bad cursor).
    Malformed(String),
    /// Fields parsed but are not acceptable; each says what to change.
    Validation(Vec<FieldError>),
    Unauthenticated(&'static str),
    Forbidden(String),
    /// Missing, or not visible to the caller: the same answer either way.
    NotFound(String),
    Conflict(String),
    /// The path exists, not with this method: 405 with `Allow` (e.g. `GET, DELETE`).
    MethodNotAllowed {
        detail: String,
        allow: String,
    },
    /// The environment is not `ready` for what was asked (its credentials): 409 `conflict`.
    NotReady(String),
    IdempotencyKeyReused,
    PayloadTooLarge(usize),
    UnsupportedMediaType,
    TooManyRequests {
        retry_after_secs: u64,
        detail: String,
    },
    Unavailable {
        retry_after_secs: u64,
        detail: String,
    },
    /// Over a request rate limit: 429 with `Retry-After` and the `RateLimit` headers.
    RateLimited {
        retry_after_secs: u64,
        detail: String,
        standing: crate::ratelimit::Standing,
    },
    /// Over a tenant quota: 409 naming the quota and its value.
    QuotaExceeded {
        quota: bulkhead_core::limits::Quota,
        limit: i64,
        detail: String,
    },
    Internal(anyhow::Error),
    /// A body the JSON extractor refused, answered once the caller is authorized.
    Rejected(Box<ApiError>),
}

/// The RFC 9457 body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::problem)]
pub struct Problem {
    /// Stable URI naming the kind of problem; clients branch on this.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    /// What happened and what to do about it.
    pub detail: String,
    /// Field-level problems, for `validation-failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// For `quota-exceeded`: which quota (`environments`, `queued_jobs`, `api_keys`, `members`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<bulkhead_core::limits::Quota>,
    /// For `quota-exceeded`: the quota's value for this tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self::Internal(error.into())
    }

    /// (type slug, title)
    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            Self::Malformed(_) => ("malformed-request", "The request could not be read"),
            Self::Validation(_) => ("validation-failed", "Some fields are not valid"),
            Self::Unauthenticated(_) => ("unauthenticated", "Authentication required"),
            Self::Forbidden(_) => ("forbidden", "Not allowed"),
            Self::NotFound(_) => ("not-found", "Not found"),
            Self::Conflict(_) => ("conflict", "Conflicts with the current state"),
            Self::MethodNotAllowed { .. } => ("method-not-allowed", "Method not allowed"),
            // The type clients already branch on for this 409; the title says which conflict.
            Self::NotReady(_) => ("conflict", "The environment is not ready"),
            Self::IdempotencyKeyReused => (
                "idempotency-key-reused",
                "Idempotency-Key was used with another request",
            ),
            Self::PayloadTooLarge(_) => ("payload-too-large", "Request body too large"),
            Self::UnsupportedMediaType => ("unsupported-media-type", "Send JSON"),
            Self::TooManyRequests { .. } => ("too-many-requests", "Too many attempts"),
            Self::Unavailable { .. } => ("service-unavailable", "Temporarily unavailable"),
            Self::RateLimited { .. } => ("rate-limited", "Too many requests"),
            Self::QuotaExceeded { .. } => ("quota-exceeded", "A tenant quota is reached"),
            Self::Internal(_) => ("internal-error", "Internal error"),
            Self::Rejected(inner) => inner.kind(),
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::Malformed(detail)
            | Self::Forbidden(detail)
            | Self::NotFound(detail)
            | Self::Conflict(detail)
            | Self::NotReady(detail)
            | Self::MethodNotAllowed { detail, .. } => detail.clone(),
            Self::TooManyRequests { detail, .. }
            | Self::Unavailable { detail, .. }
            | Self::RateLimited { detail, .. }
            | Self::QuotaExceeded { detail, .. } => detail.clone(),
            Self::Validation(errors) => format!(
                "{} field(s) need changing: {}",
                errors.len(),
                errors
                    .iter()
                    .map(|e| format!("{} {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Self::Unauthenticated(detail) => (*detail).to_owned(),
            Self::IdempotencyKeyReused => "this Idempotency-Key was already used with a different \
                request body; send a new key for a new request, or the original body to get the \
                original response"
                .to_owned(),
            Self::PayloadTooLarge(limit) => {
                format!("the body is larger than {limit} bytes; send a smaller JSON document")
            }
            Self::UnsupportedMediaType => {
                "send the body as JSON with Content-Type: application/json".to_owned()
            }
            Self::Internal(_) => "an unexpected error occurred; it has been logged with this \
                request's id (X-Request-Id)"
                .to_owned(),
            Self::Rejected(inner) => inner.detail(),
        }
    }

    pub fn problem(&self) -> Problem {
        let (slug, title) = self.kind();
        Problem {
            kind: format!("{PROBLEM_BASE}{slug}"),
            title,
            status: self.status_code().as_u16(),
            detail: self.detail(),
            errors: match self {
                Self::Validation(errors) => Some(errors.clone()),
                _ => None,
            },
            quota: match self {
                Self::QuotaExceeded { quota, .. } => Some(*quota),
                _ => None,
            },
            limit: match self {
                Self::QuotaExceeded { limit, .. } => Some(*limit),
                _ => None,
            },
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Internal(error) => write!(f, "internal error: {error:#}"),
            other => write!(f, "{}", other.detail()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::Validation(_) | Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) | Self::NotReady(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } | Self::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::QuotaExceeded { .. } => StatusCode::CONFLICT,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Rejected(inner) => inner.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Rejected(inner) = self {
            return inner.error_response();
        }
        if let Self::Internal(error) = self {
            tracing::error!(error = format!("{error:#}"), "request failed");
        }
        let mut response = HttpResponse::build(self.status_code());
        response.content_type("application/problem+json");
        match self {
            Self::TooManyRequests {
                retry_after_secs, ..
            }
            | Self::Unavailable {
                retry_after_secs, ..
            } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            Self::RateLimited {
                retry_after_secs,
                standing,
                ..
            } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
                for (name, value) in standing.headers() {
                    response.insert_header((name, value));
                }
            }
            Self::MethodNotAllowed { allow, .. } => {
                response.insert_header((header::ALLOW, allow.as_str()));
            }
            Self::Unauthenticated(_) => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"bulkhead\""),
                ));
            }
            _ => {}
        }
        response.json(self.problem())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::NotFound("not found".to_owned()),
            StoreError::Conflict(constraint) => {
                Self::Conflict(format!("a conflicting record exists ({constraint})"))
            }
            StoreError::Transition(detail) => Self::Conflict(detail),
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "control database unavailable");
                Self::Unavailable {
                    retry_after_secs: 2,
                    detail: "the control database is unavailable; retry shortly".to_owned(),
                }
            }
            StoreError::Database(error) => Self::Internal(error.into()),
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(error: diesel::result::Error) -> Self {
        StoreError::from(error).into()
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(error: actix_web::error::BlockingError) -> Self {
        Self::Internal(anyhow::anyhow!("blocking task failed: {error}"))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
