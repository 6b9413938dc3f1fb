//! Roles: tenant roles held through memberships and API keys, and platform roles held by users.

use super::FieldError;
use serde::{Deserialize, Serialize};

/// Every role casbin knows, as written in `policies/policy.csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    PlatformAdmin,
    Partner,
    TenantAdmin,
    Operator,
    Approver,
    Viewer,
    Billing,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::PlatformAdmin,
        Role::Partner,
        Role::TenantAdmin,
        Role::Operator,
        Role::Approver,
        Role::Viewer,
        Role::Billing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PlatformAdmin => "platform_admin",
            Self::Partner => "partner",
            Self::TenantAdmin => "tenant_admin",
            Self::Operator => "operator",
            Self::Approver => "approver",
            Self::Viewer => "viewer",
            Self::Billing => "billing",
        }
    }

    pub fn from_db(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == raw)
    }
}

/// A role that a membership grants within one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantRole {
    /// A partner granted this tenant (only platform admins grant it).
    Partner,
    TenantAdmin,
    Operator,
    Approver,
    Viewer,
    Billing,
}

impl TenantRole {
    pub const ALL: [TenantRole; 6] = [
        TenantRole::Partner,
        TenantRole::TenantAdmin,
        TenantRole::Operator,
        TenantRole::Approver,
        TenantRole::Viewer,
        TenantRole::Billing,
    ];

    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == raw)
            .ok_or_else(|| {
                FieldError::new(
                    field,
                    "must be one of: tenant_admin, operator, approver, viewer, billing, partner",
                )
            })
    }

    /// Roles an API key may carry: partner grants belong to partner users, not keys.
    pub fn parse_for_api_key(field: &str, raw: &str) -> Result<Self, FieldError> {
        match Self::parse(field, raw) {
            Ok(Self::Partner) | Err(_) => Err(FieldError::new(
                field,
                "must be one of: tenant_admin, operator, approver, viewer, billing",
            )),
            Ok(role) => Ok(role),
        }
    }

    pub fn as_str(self) -> &'static str {
        self.role().as_str()
    }

    pub fn from_db(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == raw)
    }

    pub fn role(self) -> Role {
        match self {
            Self::Partner => Role::Partner,
            Self::TenantAdmin => Role::TenantAdmin,
            Self::Operator => Role::Operator,
            Self::Approver => Role::Approver,
            Self::Viewer => Role::Viewer,
            Self::Billing => Role::Billing,
        }
    }
}

/// A role a user holds across the platform rather than in one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlatformRole {
    /// Sees and manages every tenant.
    PlatformAdmin,
    /// Onboards tenants; sees only those it created or was granted.
    Partner,
}

impl PlatformRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PlatformAdmin => "platform_admin",
            Self::Partner => "partner",
        }
    }

    pub fn from_db(raw: &str) -> Option<Self> {
        match raw {
            "platform_admin" => Some(Self::PlatformAdmin),
            "partner" => Some(Self::Partner),
            _ => None,
        }
    }

    pub fn role(self) -> Role {
        match self {
            Self::PlatformAdmin => Role::PlatformAdmin,
            Self::Partner => Role::Partner,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::from_db(role.as_str()), Some(role));
        }
        for role in TenantRole::ALL {
            assert_eq!(TenantRole::from_db(role.as_str()), Some(role));
        }
    }

    #[test]
    fn api_keys_cannot_be_partners_or_platform_admins() {
        assert!(TenantRole::parse_for_api_key("role", "partner").is_err());
        assert!(TenantRole::parse_for_api_key("role", "platform_admin").is_err());
        assert_eq!(
            TenantRole::parse_for_api_key("role", "operator"),
            Ok(TenantRole::Operator)
        );
    }
}
