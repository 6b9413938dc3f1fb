//! Domain values parsed once at the edge: slugs, emails, regions, roles, tiers, cost tags, passwords.

mod cost_tags;
mod environment;
mod password_policy;
pub mod patterns;
mod role;
mod values;

pub use cost_tags::{CostTags, MAX_TAGS, MAX_VALUE_CHARS as MAX_TAG_VALUE_CHARS};
pub use environment::{Isolation, Stage, parse_environment_name};
pub use password_policy::{
    MAX_CHARS as PASSWORD_MAX_CHARS, MIN_CHARS as PASSWORD_MIN_CHARS, check_password_policy,
};
pub use role::{PlatformRole, Role, TenantRole};
pub use values::{
    Email, Region, Slug, TenantState, Tier, parse_display_text, parse_display_text_of,
};

/// `deserialize_with` for an optional whole-number field: JSON does not tell `90` from `90.0`
/// (JSON Schema's `integer` takes both), so neither does the server. `null` is absent;
/// fractions and numbers out of the field's range are refused as a malformed body.
pub fn whole_number<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    use serde::Deserialize;
    use serde::de::Error;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let whole = number.as_i64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && (-9.2e18..=9.2e18).contains(f))
            // In range and whole: the conversion is exact.
            .map(|f| f as i64)
    });
    whole
        .and_then(|n| T::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("expected a whole number in range, not {number}")))
}

/// One field that failed validation: which field, and a sentence saying what to change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON path of the field, such as `slug` or `cost_tags.cost_center`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Collects field errors so a client learns every problem in one round trip.
#[derive(Debug, Default)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the parsed value, or records the error and returns `None`.
    pub fn check<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.errors.push(error);
                None
            }
        }
    }

    pub fn push(&mut self, error: FieldError) {
        self.errors.push(error);
    }

    /// `Ok(())` when nothing failed, else every recorded error.
    pub fn finish(self) -> Result<(), Vec<FieldError>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }
}
