//! Authorization: casbin RBAC with domains over the global policy in `policies/`, with role
//! assignments loaded from the control database.

use crate::domain::Role;
use casbin::function_map::{OperatorFunction, dynamic_to_str};
use casbin::rhai::Dynamic;
use casbin::{CoreApi, DefaultModel, Enforcer, MgmtApi, RbacApi, StringAdapter};
use uuid::Uuid;

/// The model and role → permission policy, compiled in from `policies/`.
pub const MODEL: &str = include_str!("../../policies/model.conf");
pub const POLICY: &str = include_str!("../../policies/policy.csv");

/// Domain of platform-wide actions (creating tenants, reading the whole audit trail).
pub const PLATFORM_DOMAIN: &str = "platform";
/// Domain of roles that hold in every tenant (platform_admin).
pub const EVERY_DOMAIN: &str = "*";

/// What a permission is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Object {
    Tenant,
    Member,
    ApiKey,
    Environment,
    Job,
    Credentials,
    /// One tenant's audit events.
    Audit,
    /// The whole platform's audit trail and its verification (platform domain).
    AuditTrail,
    Cost,
    /// The installation's metering passes (platform domain).
    Metering,
    /// A tenant's change policy (approvals, drift checks, schedules, promotion order).
    Policy,
}

impl Object {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Member => "member",
            Self::ApiKey => "api_key",
            Self::Environment => "environment",
            Self::Job => "job",
            Self::Credentials => "credentials",
            Self::Audit => "audit",
            Self::AuditTrail => "audit_trail",
            Self::Cost => "cost",
            Self::Metering => "metering",
            Self::Policy => "policy",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Read,
    Create,
    Update,
    Delete,
    Approve,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Approve => "approve",
        }
    }
}

/// Where a permission is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Domain {
    Tenant(Uuid),
    Platform,
    Everywhere,
}

impl Domain {
    fn to_casbin(self) -> String {
        match self {
            Self::Tenant(id) => id.to_string(),
            Self::Platform => PLATFORM_DOMAIN.to_owned(),
            Self::Everywhere => EVERY_DOMAIN.to_owned(),
        }
    }
}

/// The matcher's `grants(p.perms, r.perm)`: whether a role's permission list (`*`, or
/// `|object:action|…|`) includes the requested `|object:action|`.
fn grants(perms: Dynamic, perm: Dynamic) -> Dynamic {
    let perms = dynamic_to_str(&perms);
    (perms == "*" || perms.contains(dynamic_to_str(&perm).as_ref())).into()
}

/// One role held by one principal in one domain (a casbin `g` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub principal_id: Uuid,
    pub role: Role,
    pub domain: Domain,
}

impl Assignment {
    fn to_rule(&self) -> Vec<String> {
        vec![
            self.principal_id.to_string(),
            self.role.as_str().to_owned(),
            self.domain.to_casbin(),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
#[error("authorization policy: {0}")]
pub struct AuthzError(#[from] casbin::Error);

/// The enforcer and the assignment generation it was loaded at.
pub struct Authorizer {
    enforcer: Enforcer,
    generation: i64,
}

impl Authorizer {
    /// Builds an enforcer from the compiled-in policy and the given assignments.
    pub async fn new(assignments: &[Assignment], generation: i64) -> Result<Self, AuthzError> {
        Self::with_policy(MODEL, POLICY, assignments, generation).await
    }

    pub async fn with_policy(
        model: &str,
        policy: &str,
        assignments: &[Assignment],
        generation: i64,
    ) -> Result<Self, AuthzError> {
        let model = DefaultModel::from_str(model).await?;
        let mut enforcer = Enforcer::new(model, StringAdapter::new(policy)).await?;
        // Assignments live in the control database; casbin must never try to write them back.
        enforcer.enable_auto_save(false);
        enforcer.add_function("grants", OperatorFunction::Arg2(grants));
        let rules: Vec<Vec<String>> = assignments.iter().map(Assignment::to_rule).collect();
        if !rules.is_empty() {
            enforcer.add_grouping_policies(rules).await?;
        }
        Ok(Self {
            enforcer,
            generation,
        })
    }

    /// Whether `principal` may do `action` on `object` in `domain`. An evaluation error denies.
    pub fn allows(&self, principal: Uuid, domain: Domain, object: Object, action: Action) -> bool {
        self.enforcer
            .enforce((
                principal.to_string(),
                domain.to_casbin(),
                format!("|{}:{}|", object.as_str(), action.as_str()),
            ))
            .unwrap_or_else(|error| {
                tracing::error!(%error, "casbin evaluation failed; denying");
                false
            })
    }

    /// Applies assignment changes in order (each adds or removes one `g` line) and moves to
    /// `generation`: what a membership change costs every API process, instead of a reload.
    pub async fn apply(
        &mut self,
        changes: &[crate::store::principals::AssignmentChange],
        generation: i64,
    ) -> Result<(), AuthzError> {
        for change in changes {
            let rule = change.assignment.to_rule();
            if change.granted {
                self.enforcer.add_grouping_policy(rule).await?;
            } else {
                self.enforcer.remove_grouping_policy(rule).await?;
            }
        }
        self.generation = self.generation.max(generation);
        Ok(())
    }

    /// Whether `principal` holds any role in `domain` (is one of a tenant's own members or
    /// keys, say), whatever its permissions there.
    pub fn holds_role_in(&self, principal: Uuid, domain: Domain) -> bool {
        !self
            .enforcer
            .get_roles_for_user(&principal.to_string(), Some(&domain.to_casbin()))
            .is_empty()
    }

    /// The assignment generation this enforcer reflects.
    pub fn generation(&self) -> i64 {
        self.generation
    }

    /// The first permission of `role` that `principal` does not hold in `domain`, if any: a
    /// grant of `role` by `principal` would give more than it holds.
    pub fn lacks_any_of(&self, principal: Uuid, domain: Domain, role: Role) -> Option<String> {
        role_permissions(role)
            .into_iter()
            .find(|permission| !self.allows_permission(principal, domain, permission))
    }

    fn allows_permission(&self, principal: Uuid, domain: Domain, permission: &str) -> bool {
        self.enforcer
            .enforce((
                principal.to_string(),
                domain.to_casbin(),
                format!("|{permission}|"),
            ))
            .unwrap_or(false)
    }
}

/// The permissions (`object:action`) the compiled-in policy gives `role`.
pub fn role_permissions(role: Role) -> Vec<String> {
    POLICY
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ',').map(str::trim);
            (fields.next() == Some("p") && fields.next() == Some(role.as_str()))
                .then(|| fields.next())
                .flatten()
        })
        .flat_map(|perms| {
            perms
                .split('|')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_permissions_come_from_the_policy() {
        let admin = role_permissions(Role::TenantAdmin);
        assert!(admin.contains(&"credentials:read".to_owned()), "{admin:?}");
        assert!(admin.contains(&"api_key:create".to_owned()));
        assert!(!role_permissions(Role::PlatformAdmin).contains(&"credentials:read".to_owned()));
        assert_eq!(
            role_permissions(Role::Billing),
            ["tenant:read", "cost:read", "cost:update"]
        );
    }

    async fn authorizer(assignments: &[Assignment]) -> Authorizer {
        Authorizer::new(assignments, 1).await.expect("policy loads")
    }

    #[tokio::test]
    async fn roles_hold_only_in_their_tenant() {
        let (alice, acme, globex) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let authz = authorizer(&[Assignment {
            principal_id: alice,
            role: Role::Viewer,
            domain: Domain::Tenant(acme),
        }])
        .await;
        assert!(authz.allows(alice, Domain::Tenant(acme), Object::Tenant, Action::Read));
        assert!(!authz.allows(alice, Domain::Tenant(acme), Object::Tenant, Action::Update));
        assert!(!authz.allows(alice, Domain::Tenant(globex), Object::Tenant, Action::Read));
        assert!(!authz.allows(alice, Domain::Platform, Object::Tenant, Action::Create));
    }

    /// A permission added for any role must be added for platform_admin too (its line is a list,
    /// not `*`), with the one deliberate exception.
    #[test]
    fn platform_admin_holds_every_permission_but_reading_credentials() {
        let lines: Vec<(&str, Vec<&str>)> = POLICY
            .lines()
            .filter_map(|line| line.strip_prefix("p, "))
            .filter_map(|line| line.split_once(", "))
            .map(|(role, perms)| (role, perms.split('|').filter(|p| !p.is_empty()).collect()))
            .collect();
        let admin: Vec<&str> = lines
            .iter()
            .find(|(role, _)| *role == "platform_admin")
            .map(|(_, perms)| perms.clone())
            .expect("a platform_admin line");
        for (role, perms) in &lines {
            for perm in perms {
                if *perm == "credentials:read" {
                    assert!(!admin.contains(perm));
                } else {
                    assert!(
                        admin.contains(perm),
                        "{role} has {perm}, platform_admin does not"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn platform_admin_holds_everywhere_and_partner_only_where_granted() {
        let (admin, partner, acme, globex) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        let authz = authorizer(&[
            Assignment {
                principal_id: admin,
                role: Role::PlatformAdmin,
                domain: Domain::Everywhere,
            },
            Assignment {
                principal_id: partner,
                role: Role::Partner,
                domain: Domain::Platform,
            },
            Assignment {
                principal_id: partner,
                role: Role::Partner,
                domain: Domain::Tenant(acme),
            },
        ])
        .await;
        assert!(authz.allows(
            admin,
            Domain::Tenant(globex),
            Object::Member,
            Action::Delete
        ));
        assert!(authz.allows(admin, Domain::Platform, Object::AuditTrail, Action::Read));
        assert!(
            !authz.allows(
                admin,
                Domain::Tenant(globex),
                Object::Credentials,
                Action::Read
            ),
            "credentials go to the tenant's own people"
        );
        assert!(authz.allows(partner, Domain::Platform, Object::Tenant, Action::Create));
        assert!(!authz.allows(partner, Domain::Platform, Object::AuditTrail, Action::Read));
        assert!(authz.allows(
            partner,
            Domain::Tenant(acme),
            Object::Tenant,
            Action::Delete
        ));
        assert!(!authz.allows(
            partner,
            Domain::Tenant(globex),
            Object::Tenant,
            Action::Read
        ));
    }

    #[tokio::test]
    async fn the_role_matrix_matches_the_design() {
        let tenant = Uuid::now_v7();
        let cases = [
            (Role::TenantAdmin, Object::Credentials, Action::Read, true),
            (Role::TenantAdmin, Object::Tenant, Action::Delete, false),
            (Role::Operator, Object::Member, Action::Create, false),
            (Role::Operator, Object::Job, Action::Create, true),
            (Role::Approver, Object::Job, Action::Approve, true),
            (Role::Approver, Object::Credentials, Action::Read, false),
            (Role::Viewer, Object::Job, Action::Create, false),
            (Role::Billing, Object::Cost, Action::Read, true),
            (Role::Billing, Object::Member, Action::Read, false),
        ];
        for (role, object, action, expected) in cases {
            let principal = Uuid::now_v7();
            let authz = authorizer(&[Assignment {
                principal_id: principal,
                role,
                domain: Domain::Tenant(tenant),
            }])
            .await;
            assert_eq!(
                authz.allows(principal, Domain::Tenant(tenant), object, action),
                expected,
                "{role:?} {object:?} {action:?}"
            );
        }
    }
}
