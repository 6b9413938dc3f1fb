//! `JsonBody<T>`: a JSON body whose parse errors wait until the handler has authenticated and
//! authorized the caller, so an anonymous or unauthorized caller gets 401/404/403 and never
//! learns the endpoint's schema from a 400.

use crate::error::ApiError;
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::pin::Pin;

pub struct JsonBody<T>(Result<T, ApiError>);

impl<T> JsonBody<T> {
    /// The parsed body, or the 4xx problem the JSON extractor produced.
    pub fn into_inner(self) -> Result<T, ApiError> {
        self.0.map_err(|e| ApiError::Rejected(Box::new(e)))
    }
}

/// What a refused JSON body answers.
pub fn json_payload_error(error: &actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError;
    match error {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::PayloadTooLarge(*limit),
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(inner) => ApiError::Malformed(format!(
            "the JSON body does not fit this endpoint: {inner}; see /openapi.json"
        )),
        other => ApiError::Malformed(format!("the body could not be read: {other}")),
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let parsing = web::Json::<JsonObject>::from_request(req, payload);
        Box::pin(async move {
            Ok(JsonBody(
                parsing.await.map(web::Json::into_inner).map_or_else(
                    |error| {
                        // The configured error handler wraps an ApiError; rebuild it by its problem.
                        Err(error
                            .as_error::<ApiError>()
                            .map(|e| match e {
                                ApiError::PayloadTooLarge(limit) => {
                                    ApiError::PayloadTooLarge(*limit)
                                }
                                ApiError::UnsupportedMediaType => ApiError::UnsupportedMediaType,
                                other => ApiError::Malformed(other.problem().detail),
                            })
                            .unwrap_or_else(|| ApiError::Malformed(error.to_string())))
                    },
                    from_object,
                ),
            ))
        })
    }
}

type JsonObject = serde_json::Map<String, serde_json::Value>;

/// A request struct from a JSON object. Bodies are read as objects first: serde's derived
/// `Deserialize` would also take a struct's fields from an array (`[null, null]`), which the
/// document does not allow.
pub fn from_object<T: DeserializeOwned>(object: JsonObject) -> Result<T, ApiError> {
    serde_json::from_value(serde_json::Value::Object(object)).map_err(|e| {
        ApiError::Malformed(format!(
            "the JSON body does not fit this endpoint: {e}; see /openapi.json"
        ))
    })
}

/// The one `deserialize_with` for optional whole numbers (`90` and `90.0` alike); it lives in
/// `bulkhead-core`, whose request types use it too.
pub use bulkhead_core::domain::whole_number;

/// `deserialize_with` for an optional field that is not nullable: absent is `None` (with
/// `#[serde(default)]`), and an explicit `null` is kept as `Some(Value::Null)` for the
/// field's parser to refuse, as the document (which does not allow `null`) says.
pub fn present<'de, D>(deserializer: D) -> Result<Option<serde_json::Value>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    serde_json::Value::deserialize(deserializer).map(Some)
}
