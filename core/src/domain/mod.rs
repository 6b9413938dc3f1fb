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
pub use values::{Email, Region, Slug, TenantState, Tier, parse_display_text};

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
