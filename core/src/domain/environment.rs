//! Environment values: stage, isolation, and the environment name.

use super::FieldError;
use serde::{Deserialize, Serialize};

/// Where an environment sits in the release path; production changes are reviewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Development,
    Staging,
    Production,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Self::Development, Self::Staging, Self::Production];

    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        match raw {
            "development" => Ok(Self::Development),
            "staging" => Ok(Self::Staging),
            "production" => Ok(Self::Production),
            _ => Err(FieldError::new(
                field,
                "must be one of: development, staging, production",
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Staging => "staging",
            Self::Production => "production",
        }
    }
}

/// How an environment's data is separated from other tenants'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// A schema in a pooled database, with its own roles and grants.
    Shared,
    /// Its own database, with its own roles.
    Dedicated,
}

impl Isolation {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        match raw {
            "shared" => Ok(Self::Shared),
            "dedicated" => Ok(Self::Dedicated),
            _ => Err(FieldError::new(field, "must be one of: shared, dedicated")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Dedicated => "dedicated",
        }
    }
}

/// An environment name, unique among a tenant's live environments: `^[a-z][a-z0-9-]{1,39}$`.
pub fn parse_environment_name(field: &str, raw: &str) -> Result<String, FieldError> {
    let ok = (2..=40).contains(&raw.len())
        && raw.starts_with(|c: char| c.is_ascii_lowercase())
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(FieldError::new(
            field,
            "must be 2 to 40 characters: a lowercase letter, then lowercase letters, digits or '-'",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stages_isolations_and_names() {
        assert_eq!(Stage::parse("stage", "production"), Ok(Stage::Production));
        assert!(Stage::parse("stage", "prod").is_err());
        assert_eq!(
            Isolation::parse("isolation", "dedicated"),
            Ok(Isolation::Dedicated)
        );
        assert!(parse_environment_name("name", "prod-eu").is_ok());
        for bad in ["p", "Prod", "1prod", "prod_eu", "prod eu", &"a".repeat(41)] {
            assert!(parse_environment_name("name", bad).is_err(), "{bad}");
        }
    }
}
