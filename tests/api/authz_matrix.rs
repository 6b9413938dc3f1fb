//! The authorization matrix: every endpoint of the v1 contract × every role (held by a user and
//! by an API key) × the caller's own tenant, another tenant, no tenant at all, and no (or a
//! garbage) credential, asserting the exact status of each answer.
//!
//! The expected statuses are written out below from the specification of the roles, not
//! computed from `policies/policy.csv`: a route that forgets (or asks the wrong question of) its
//! authorization check, or a policy line that drifts, fails here. Every refused request is also
//! checked to have changed nothing (the rows of tenants, principals, memberships, API keys,
//! environments, jobs and the outbox are fingerprinted before and after) and, when it is a 403 or
//! a 404 for a tenant that exists, to have left exactly one `denied` row in the audit trail. A
//! coverage guard compares the matrix's list of routes with `/openapi.json`, so a new route fails
//! this test until it is added here.
//!
//! No worker runs here: every job stays queued and no environment is ever provisioned, so reading
//! credentials answers 409 to whoever may read them. Environments, jobs and outbox rows are
//! counted, so a successful call is also checked to have added exactly what it should.
//!
//! Failures are collected and reported together, each naming the caller, the scope, the method
//! and the path, with the body of the answer.

use crate::helpers::{ADMIN_EMAIL, TestApp};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::{PgConnection, RunQueryDsl};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};

const CONFLICT: &str = "https://bulkhead.dev/problems/conflict";
const FORBIDDEN: &str = "https://bulkhead.dev/problems/forbidden";
const NOT_FOUND: &str = "https://bulkhead.dev/problems/not-found";
const UNAUTHENTICATED: &str = "https://bulkhead.dev/problems/unauthenticated";

/// A bearer that is not any credential the API ever issued.
const GARBAGE_BEARER: &str = "bkt_nope";

// ---------------------------------------------------------------------------------------------
// The matrix itself: routes and expected statuses, written from the specification.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    PlatformAdmin,
    Partner,
    TenantAdmin,
    Operator,
    Approver,
    Viewer,
    Billing,
}

/// The roles a tenant member holds through a membership or an API key.
const TENANT_ROLES: [Role; 5] = [
    Role::TenantAdmin,
    Role::Operator,
    Role::Approver,
    Role::Viewer,
    Role::Billing,
];

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform_admin",
            Role::Partner => "partner",
            Role::TenantAdmin => "tenant_admin",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Viewer => "viewer",
            Role::Billing => "billing",
        }
    }
}

/// The tenant-scoped endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TenantEndpoint {
    GetTenant,
    UpdateTenant,
    DeleteTenant,
    AddMember,
    ListMembers,
    RemoveMember,
    CreateKey,
    ListKeys,
    RevokeKey,
    ListTenantAudit,
    GetQuotas,
    SetQuotas,
    GetCosts,
    ExportCosts,
    GetBudget,
    SetBudget,
    DeleteBudget,
    GetPolicy,
    SetPolicy,
    ListApprovals,
    CreateWebhook,
    ListWebhooks,
    DeleteWebhook,
    WebhookDeliveries,
    CreateEnvironment,
    ListEnvironments,
    GetEnvironment,
    UpdateEnvironment,
    DeleteEnvironment,
    Plan,
    Apply,
    DriftCheck,
    ReadCredentials,
    Isolation,
    ListJobs,
    GetJob,
    JobEvents,
    CancelJob,
    ApproveJob,
    RejectJob,
    Upgrade,
    Drift,
    Stop,
    Start,
}

/// Column order of `expected_in_own_tenant`.
const TENANT_ENDPOINTS: [TenantEndpoint; 24] = [
    TenantEndpoint::GetTenant,
    TenantEndpoint::UpdateTenant,
    TenantEndpoint::DeleteTenant,
    TenantEndpoint::AddMember,
    TenantEndpoint::ListMembers,
    TenantEndpoint::RemoveMember,
    TenantEndpoint::CreateKey,
    TenantEndpoint::ListKeys,
    TenantEndpoint::RevokeKey,
    TenantEndpoint::ListTenantAudit,
    TenantEndpoint::GetQuotas,
    TenantEndpoint::SetQuotas,
    TenantEndpoint::GetCosts,
    TenantEndpoint::ExportCosts,
    TenantEndpoint::GetBudget,
    TenantEndpoint::SetBudget,
    TenantEndpoint::DeleteBudget,
    TenantEndpoint::GetPolicy,
    TenantEndpoint::SetPolicy,
    TenantEndpoint::ListApprovals,
    TenantEndpoint::CreateWebhook,
    TenantEndpoint::ListWebhooks,
    TenantEndpoint::DeleteWebhook,
    TenantEndpoint::WebhookDeliveries,
];

/// Column order of `expected_on_environments`.
const ENVIRONMENT_ENDPOINTS: [TenantEndpoint; 20] = [
    TenantEndpoint::CreateEnvironment,
    TenantEndpoint::ListEnvironments,
    TenantEndpoint::GetEnvironment,
    TenantEndpoint::UpdateEnvironment,
    TenantEndpoint::DeleteEnvironment,
    TenantEndpoint::Plan,
    TenantEndpoint::Apply,
    TenantEndpoint::DriftCheck,
    TenantEndpoint::ReadCredentials,
    TenantEndpoint::Isolation,
    TenantEndpoint::ListJobs,
    TenantEndpoint::GetJob,
    TenantEndpoint::JobEvents,
    TenantEndpoint::CancelJob,
    TenantEndpoint::ApproveJob,
    TenantEndpoint::RejectJob,
    TenantEndpoint::Upgrade,
    TenantEndpoint::Drift,
    TenantEndpoint::Stop,
    TenantEndpoint::Start,
];

/// Every tenant-scoped endpoint.
fn tenant_endpoints() -> impl Iterator<Item = TenantEndpoint> {
    TENANT_ENDPOINTS.into_iter().chain(ENVIRONMENT_ENDPOINTS)
}

impl TenantEndpoint {
    /// Method and OpenAPI path template.
    fn route(self) -> (Method, &'static str) {
        match self {
            Self::GetTenant => (Method::GET, "/v1/tenants/{tenant}"),
            Self::UpdateTenant => (Method::PATCH, "/v1/tenants/{tenant}"),
            Self::DeleteTenant => (Method::DELETE, "/v1/tenants/{tenant}"),
            Self::AddMember => (Method::POST, "/v1/tenants/{tenant}/members"),
            Self::ListMembers => (Method::GET, "/v1/tenants/{tenant}/members"),
            Self::RemoveMember => (Method::DELETE, "/v1/tenants/{tenant}/members/{principal}"),
            Self::CreateKey => (Method::POST, "/v1/tenants/{tenant}/api-keys"),
            Self::ListKeys => (Method::GET, "/v1/tenants/{tenant}/api-keys"),
            Self::RevokeKey => (Method::DELETE, "/v1/tenants/{tenant}/api-keys/{key}"),
            Self::ListTenantAudit => (Method::GET, "/v1/tenants/{tenant}/audit-events"),
            Self::GetQuotas => (Method::GET, "/v1/tenants/{tenant}/quotas"),
            Self::SetQuotas => (Method::PUT, "/v1/tenants/{tenant}/quotas"),
            Self::GetCosts => (Method::GET, "/v1/tenants/{tenant}/costs"),
            Self::ExportCosts => (Method::GET, "/v1/tenants/{tenant}/costs/export"),
            Self::GetBudget => (Method::GET, "/v1/tenants/{tenant}/budget"),
            Self::SetBudget => (Method::PUT, "/v1/tenants/{tenant}/budget"),
            Self::DeleteBudget => (Method::DELETE, "/v1/tenants/{tenant}/budget"),
            Self::GetPolicy => (Method::GET, "/v1/tenants/{tenant}/policy"),
            Self::SetPolicy => (Method::PUT, "/v1/tenants/{tenant}/policy"),
            Self::ListApprovals => (Method::GET, "/v1/tenants/{tenant}/approvals"),
            Self::CreateWebhook => (Method::POST, "/v1/tenants/{tenant}/webhooks"),
            Self::ListWebhooks => (Method::GET, "/v1/tenants/{tenant}/webhooks"),
            Self::DeleteWebhook => (Method::DELETE, "/v1/tenants/{tenant}/webhooks/{webhook}"),
            Self::WebhookDeliveries => (
                Method::GET,
                "/v1/tenants/{tenant}/webhooks/{webhook}/deliveries",
            ),
            Self::CreateEnvironment => (Method::POST, "/v1/tenants/{tenant}/environments"),
            Self::ListEnvironments => (Method::GET, "/v1/tenants/{tenant}/environments"),
            Self::GetEnvironment => (Method::GET, "/v1/tenants/{tenant}/environments/{env}"),
            Self::UpdateEnvironment => (Method::PATCH, "/v1/tenants/{tenant}/environments/{env}"),
            Self::DeleteEnvironment => (Method::DELETE, "/v1/tenants/{tenant}/environments/{env}"),
            Self::Plan => (Method::POST, "/v1/tenants/{tenant}/environments/{env}/plan"),
            Self::Apply => (
                Method::POST,
                "/v1/tenants/{tenant}/environments/{env}/apply",
            ),
            Self::DriftCheck => (
                Method::POST,
                "/v1/tenants/{tenant}/environments/{env}/drift-check",
            ),
            Self::ReadCredentials => (
                Method::GET,
                "/v1/tenants/{tenant}/environments/{env}/credentials",
            ),
            Self::Isolation => (
                Method::GET,
                "/v1/tenants/{tenant}/environments/{env}/isolation",
            ),
            Self::ListJobs => (Method::GET, "/v1/tenants/{tenant}/jobs"),
            Self::GetJob => (Method::GET, "/v1/tenants/{tenant}/jobs/{job}"),
            Self::JobEvents => (Method::GET, "/v1/tenants/{tenant}/jobs/{job}/events"),
            Self::CancelJob => (Method::POST, "/v1/tenants/{tenant}/jobs/{job}/cancel"),
            Self::ApproveJob => (Method::POST, "/v1/tenants/{tenant}/jobs/{job}/approve"),
            Self::RejectJob => (Method::POST, "/v1/tenants/{tenant}/jobs/{job}/reject"),
            Self::Upgrade => (
                Method::POST,
                "/v1/tenants/{tenant}/environments/{env}/upgrade",
            ),
            Self::Drift => (Method::GET, "/v1/tenants/{tenant}/environments/{env}/drift"),
            Self::Stop => (Method::POST, "/v1/tenants/{tenant}/environments/{env}/stop"),
            Self::Start => (
                Method::POST,
                "/v1/tenants/{tenant}/environments/{env}/start",
            ),
        }
    }

    /// The operation of the job a successful call queues.
    fn queues(self) -> Option<&'static str> {
        match self {
            Self::CreateEnvironment | Self::Apply => Some("apply"),
            Self::DeleteEnvironment => Some("destroy"),
            Self::Plan => Some("plan"),
            Self::DriftCheck => Some("drift_check"),
            _ => None,
        }
    }

    /// What a successful call adds.
    fn adds(self) -> Adds {
        match self {
            Self::CreateEnvironment => Adds {
                environments: 1,
                jobs: 1,
                outbox: Some(1),
            },
            Self::DeleteEnvironment | Self::Plan | Self::Apply | Self::DriftCheck => Adds {
                environments: 0,
                jobs: 1,
                outbox: Some(1),
            },
            // A cancel may wake the job next in line (an outbox row), and adds no job.
            Self::CancelJob => Adds {
                outbox: None,
                ..Adds::NOTHING
            },
            _ => Adds::NOTHING,
        }
    }

    /// Whether the path names an object of the tenant (a member, key, environment or job).
    fn names_an_object(self) -> bool {
        self.route().1.matches('{').count() > 1
    }

    /// Rows that change the tenant itself (a DELETE makes it offboarding, after which writes
    /// answer 409): each of their cases gets a tenant of its own.
    fn needs_fresh_tenant(self) -> bool {
        matches!(self, Self::UpdateTenant | Self::DeleteTenant)
    }
}

/// Status of each tenant endpoint (in `TENANT_ENDPOINTS` order) for a caller holding `role` in
/// the tenant it targets. Every role can read the tenant, so a missing permission is a 403.
/// In another tenant, or with no tenant at all, every endpoint answers 404.
#[rustfmt::skip]
fn expected_in_own_tenant(role: Role) -> [u16; 24] {
    match role {
        //                    GET  PATCH  DEL  +member members -member +key  keys  -key audit quotas set-quotas costs export budget +budget -budget policy set-policy approvals +hook hooks -hook deliveries
        Role::PlatformAdmin => [200, 200, 202,   201,   200,    204,   201,  200,  204,  200,  200,  200,       200,  200,   200,   200,    204,    200,   200,       200,  201,   200,   204,   200],
        Role::Partner =>       [200, 200, 202,   201,   200,    204,   201,  200,  204,  200,  200,  403,       200,  200,   200,   200,    204,    200,   403,       403,  201,   200,   204,   200],
        Role::TenantAdmin =>   [200, 200, 403,   201,   200,    204,   201,  200,  204,  200,  200,  403,       200,  200,   200,   200,    204,    200,   200,       200,  201,   200,   204,   200],
        Role::Operator =>      [200, 403, 403,   403,   200,    403,   403,  403,  403,  403,  200,  403,       403,  403,   403,   403,    403,    200,   403,       403,  403,   403,   403,   403],
        Role::Approver =>      [200, 403, 403,   403,   403,    403,   403,  403,  403,  403,  200,  403,       403,  403,   403,   403,    403,    200,   403,       200,  403,   403,   403,   403],
        Role::Viewer =>        [200, 403, 403,   403,   200,    403,   403,  403,  403,  403,  200,  403,       403,  403,   403,   403,    403,    403,   403,       403,  403,   403,   403,   403],
        Role::Billing =>       [200, 403, 403,   403,   403,    403,   403,  403,  403,  403,  200,  403,       200,  200,   200,   200,    204,    403,   403,       403,  403,   403,   403,   403],
    }
}

/// Status of each environment and job endpoint (in `ENVIRONMENT_ENDPOINTS` order) for a caller
/// holding `role` in the tenant it targets; as above, another tenant or none answers 404. The
/// environments have no credentials (nothing is provisioned), so whoever may read them gets 409.
#[rustfmt::skip]
fn expected_on_environments(role: Role) -> [u16; 20] {
    match role {
        //                    +env  envs  env  ttl  -env  plan apply drift creds isol  jobs  job events cancel approve reject upgrade drift-report stop start
        Role::PlatformAdmin => [202, 200, 200, 200, 202,  202, 202,  202,  403,  200,  200,  200, 200,  200,   409,    409,   409,    200,  409,  409],
        Role::Partner =>       [202, 200, 200, 200, 202,  202, 202,  202,  403,  200,  200,  200, 200,  200,   403,    403,   409,    200,  409,  409],
        Role::TenantAdmin =>   [202, 200, 200, 200, 202,  202, 202,  202,  409,  200,  200,  200, 200,  200,   409,    409,   409,    200,  409,  409],
        Role::Operator =>      [202, 200, 200, 403, 403,  202, 202,  202,  409,  200,  200,  200, 200,  200,   403,    403,   409,    200,  409,  409],
        Role::Approver =>      [403, 200, 200, 403, 403,  403, 403,  403,  403,  200,  200,  200, 200,  403,   409,    409,   403,    200,  403,  403],
        Role::Viewer =>        [403, 200, 200, 403, 403,  403, 403,  403,  403,  200,  200,  200, 200,  403,   403,    403,   403,    200,  403,  403],
        Role::Billing =>       [403, 403, 403, 403, 403,  403, 403,  403,  403,  403,  403,  403, 403,  403,   403,    403,   403,    403,  403,  403],
    }
}

/// Every tenant endpoint with its status for a caller holding `role` in the tenant it targets.
/// API keys never create API keys, add members, approve, reject or set the change policy,
/// whatever their role.
fn expected_in_own(role: Role, via: Via) -> Vec<(TenantEndpoint, u16)> {
    TENANT_ENDPOINTS
        .into_iter()
        .zip(expected_in_own_tenant(role))
        .chain(
            ENVIRONMENT_ENDPOINTS
                .into_iter()
                .zip(expected_on_environments(role)),
        )
        .map(move |(endpoint, status)| match (endpoint, via) {
            (
                TenantEndpoint::CreateKey
                | TenantEndpoint::AddMember
                | TenantEndpoint::ApproveJob
                | TenantEndpoint::RejectJob
                | TenantEndpoint::SetPolicy,
                Via::ApiKey,
            ) => (endpoint, 403),
            _ => (endpoint, status),
        })
        .collect()
}

/// The platform-wide endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlatformEndpoint {
    CreateTenant,
    ListTenants,
    CreatePartner,
    ListAuditTrail,
    VerifyAuditTrail,
    Me,
    PlatformCosts,
    ExportPlatformCosts,
    MeteringPasses,
    ListBlueprints,
    GetBlueprint,
}

/// Column order of `expected_on_platform`.
const PLATFORM_ENDPOINTS: [PlatformEndpoint; 11] = [
    PlatformEndpoint::CreateTenant,
    PlatformEndpoint::ListTenants,
    PlatformEndpoint::CreatePartner,
    PlatformEndpoint::ListAuditTrail,
    PlatformEndpoint::VerifyAuditTrail,
    PlatformEndpoint::Me,
    PlatformEndpoint::PlatformCosts,
    PlatformEndpoint::ExportPlatformCosts,
    PlatformEndpoint::MeteringPasses,
    PlatformEndpoint::ListBlueprints,
    PlatformEndpoint::GetBlueprint,
];

impl PlatformEndpoint {
    /// Method and OpenAPI path template.
    fn route(self) -> (Method, &'static str) {
        match self {
            Self::CreateTenant => (Method::POST, "/v1/tenants"),
            Self::ListTenants => (Method::GET, "/v1/tenants"),
            Self::CreatePartner => (Method::POST, "/v1/partners"),
            Self::ListAuditTrail => (Method::GET, "/v1/audit-events"),
            Self::VerifyAuditTrail => (Method::GET, "/v1/audit-events/verify"),
            Self::Me => (Method::GET, "/v1/me"),
            Self::PlatformCosts => (Method::GET, "/v1/costs"),
            Self::ExportPlatformCosts => (Method::GET, "/v1/costs/export"),
            Self::MeteringPasses => (Method::GET, "/v1/metering/passes"),
            Self::ListBlueprints => (Method::GET, "/v1/blueprints"),
            Self::GetBlueprint => (Method::GET, "/v1/blueprints/{name}"),
        }
    }
}

/// Status of each platform endpoint (in `PLATFORM_ENDPOINTS` order) for a caller with `role`
/// (`None`: an authenticated user who holds no role anywhere).
#[rustfmt::skip]
fn expected_on_platform(role: Option<Role>) -> [u16; 11] {
    match role {
        //                         +tenant tenants +partner trail verify  me  costs export passes blueprints blueprint
        Some(Role::PlatformAdmin) => [201,   200,    201,    200,   200,  200,  200,  200,   200,   200,       200],
        Some(Role::Partner) =>       [201,   200,    403,    403,   403,  200,  200,  200,   403,   200,       200],
        Some(Role::TenantAdmin | Role::Operator | Role::Approver | Role::Viewer | Role::Billing)
        | None =>                    [403,   200,    403,    403,   403,  200,  403,  403,   403,   200,       200],
    }
}

/// Routes under /v1 that are how one authenticates, or how one answers a membership offered to
/// oneself (only the offered account can; `invitations.rs` tries it as someone else), not
/// something a role authorizes.
const OUTSIDE_THE_MATRIX: [&str; 6] = [
    "/v1/auth/login",
    "/v1/auth/accept-invitation",
    "/v1/auth/logout",
    "/v1/me/invitations",
    "/v1/me/invitations/{tenant}/accept",
    "/v1/me/invitations/{tenant}/decline",
];

/// Every (method, OpenAPI path template) the matrix exercises.
fn matrix_routes() -> BTreeSet<(String, String)> {
    tenant_endpoints()
        .map(|e| e.route())
        .chain(PLATFORM_ENDPOINTS.iter().map(|e| e.route()))
        .map(|(method, path)| (method.to_string(), path.to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Who calls, and on what.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct TenantRef {
    slug: String,
    id: String,
}

impl TenantRef {
    fn from_json(body: &Value) -> TenantRef {
        TenantRef {
            slug: body["slug"].as_str().expect("tenant slug").to_owned(),
            id: body["id"].as_str().expect("tenant id").to_owned(),
        }
    }

    fn get(&self, kind: RefKind) -> &str {
        match kind {
            RefKind::Slug => &self.slug,
            RefKind::Id => &self.id,
        }
    }
}

/// How a request names its tenant.
#[derive(Debug, Clone, Copy)]
enum RefKind {
    Slug,
    Id,
}

impl RefKind {
    fn label(self) -> &'static str {
        match self {
            RefKind::Slug => "by slug",
            RefKind::Id => "by id",
        }
    }
}

/// An environment (made by the admin) and the apply job its creation queued.
#[derive(Debug, Clone)]
struct EnvRef {
    name: String,
    id: String,
    job: String,
}

impl EnvRef {
    /// A request names an environment by name where it names its tenant by slug, else by id.
    fn get(&self, kind: RefKind) -> &str {
        match kind {
            RefKind::Slug => &self.name,
            RefKind::Id => &self.id,
        }
    }
}

/// The body that creates an environment named `name`.
fn environment_body(name: &str) -> Value {
    json!({"name": name, "stage": "development",
           "cost_tags": {"business_unit": "bu", "cost_center": "cc"}})
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    User,
    ApiKey,
}

/// A caller holding one role.
#[derive(Debug)]
struct Subject {
    role: Role,
    via: Via,
    /// Access token or API key secret.
    token: String,
    /// Its own tenant (where it holds `role`; for the platform admin, any tenant).
    home: TenantRef,
    /// For users, to grant them the same role in a fresh tenant.
    email: Option<String>,
    /// A field of `GET /v1/me` that identifies it, and its value.
    me: (&'static str, String),
}

impl Subject {
    fn label(&self) -> String {
        let via = match self.via {
            Via::User => "user",
            Via::ApiKey => "api key",
        };
        format!("{} {via}", self.role.as_str())
    }
}

/// Everyone who calls in one TestApp.
struct Cast {
    home: TenantRef,
    away: TenantRef,
    /// The platform admin, the partner, a user and an API key per tenant role.
    subjects: Vec<Subject>,
    /// A user who held a role in `home`, and whose membership was removed: holds none now.
    nobody_token: String,
    nobody_id: String,
}

impl Cast {
    async fn assemble(m: &mut Matrix) -> Cast {
        let home = m.admin_tenant("home").await;
        let away = m.admin_tenant("away").await;
        let mut subjects = vec![Subject {
            role: Role::PlatformAdmin,
            via: Via::User,
            token: m.app.admin.clone(),
            home: home.clone(),
            email: Some(ADMIN_EMAIL.to_owned()),
            me: ("email", ADMIN_EMAIL.to_owned()),
        }];

        let partner_email = "partner@matrix.test".to_owned();
        let (partner_id, partner_token) = m.app.partner(&partner_email).await;
        // A partner is granted the tenants it onboards.
        let partner_home = m.partner_tenant(&partner_token).await;
        subjects.push(Subject {
            role: Role::Partner,
            via: Via::User,
            token: partner_token,
            home: partner_home,
            email: Some(partner_email),
            me: ("id", partner_id),
        });

        for role in TENANT_ROLES {
            let email = format!("{}@matrix.test", role.as_str().replace('_', "-"));
            let (id, token) = m.app.member(&home.slug, &email, role.as_str()).await;
            subjects.push(Subject {
                role,
                via: Via::User,
                token,
                home: home.clone(),
                email: Some(email),
                me: ("id", id),
            });
        }
        for role in TENANT_ROLES {
            let (key_id, secret) = m.app.api_key(&home.slug, role.as_str()).await;
            subjects.push(Subject {
                role,
                via: Via::ApiKey,
                token: secret,
                home: home.clone(),
                email: None,
                me: ("api_key_id", key_id),
            });
        }

        let (nobody_id, nobody_token) = m
            .app
            .member(&home.slug, "nobody@matrix.test", "viewer")
            .await;
        let path = format!("/v1/tenants/{}/members/{nobody_id}", home.slug);
        let (status, body) = m
            .send(Method::DELETE, &path, Some(&m.app.admin), None)
            .await;
        assert_eq!(status, 204, "remove the membership of nobody: {body}");

        Cast {
            home,
            away,
            subjects,
            nobody_token,
            nobody_id,
        }
    }
}

/// Where a tenant-scoped request goes, relative to the caller.
enum Scope<'a> {
    /// A tenant where the subject holds its role.
    Own(&'a Subject),
    /// A tenant where the subject holds nothing.
    Other(&'a Subject),
    /// A tenant where the subject holds its role, in a path naming a member, API key,
    /// environment or job of another tenant.
    ForeignObject(&'a Subject),
    /// The caller holds no role in any tenant.
    NoTenant,
    /// No Authorization header (`None`) or a garbage bearer.
    Unauthenticated(Option<&'static str>),
}

// ---------------------------------------------------------------------------------------------
// The harness: one TestApp, a direct connection for snapshots, collected failures.
// ---------------------------------------------------------------------------------------------

/// The rows a refused request must not change, and the audit counts it must (not) change.
#[derive(Debug, Clone, PartialEq, Eq, diesel::QueryableByName)]
struct Snapshot {
    #[diesel(sql_type = BigInt)]
    denied: i64,
    #[diesel(sql_type = BigInt)]
    audited: i64,
    #[diesel(sql_type = BigInt)]
    tenants: i64,
    #[diesel(sql_type = BigInt)]
    principals: i64,
    #[diesel(sql_type = BigInt)]
    memberships: i64,
    #[diesel(sql_type = BigInt)]
    api_keys: i64,
    #[diesel(sql_type = BigInt)]
    revoked_keys: i64,
    #[diesel(sql_type = Text)]
    tenant_rows: String,
    #[diesel(sql_type = Text)]
    membership_rows: String,
    #[diesel(sql_type = Text)]
    api_key_rows: String,
    #[diesel(sql_type = Text)]
    principal_rows: String,
    #[diesel(sql_type = BigInt)]
    environments: i64,
    #[diesel(sql_type = BigInt)]
    jobs: i64,
    #[diesel(sql_type = BigInt)]
    job_events: i64,
    #[diesel(sql_type = BigInt)]
    outbox: i64,
    /// How many jobs are in each state, e.g. `canceled=1 queued=4`.
    #[diesel(sql_type = Text)]
    job_states: String,
    #[diesel(sql_type = Text)]
    environment_rows: String,
    #[diesel(sql_type = Text)]
    job_rows: String,
    #[diesel(sql_type = Text)]
    outbox_rows: String,
    #[diesel(sql_type = Text)]
    quota_rows: String,
    #[diesel(sql_type = Text)]
    budget_rows: String,
    #[diesel(sql_type = Text)]
    policy_rows: String,
    #[diesel(sql_type = Text)]
    webhook_rows: String,
    /// The target tenant's `name|state|updated_at`.
    #[diesel(sql_type = Nullable<Text>)]
    target: Option<String>,
}

const SNAPSHOT_SQL: &str = "SELECT \
    (SELECT count(*) FROM audit_events WHERE result = 'denied') AS denied, \
    (SELECT count(*) FROM audit_events WHERE result <> 'denied') AS audited, \
    (SELECT count(*) FROM tenants) AS tenants, \
    (SELECT count(*) FROM principals) AS principals, \
    (SELECT count(*) FROM memberships) AS memberships, \
    (SELECT count(*) FROM api_keys) AS api_keys, \
    (SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL) AS revoked_keys, \
    (SELECT md5(coalesce(string_agg(concat_ws('|', id, slug, name, tier, region, state, \
        cost_tags, updated_at), ',' ORDER BY id), '')) FROM tenants) AS tenant_rows, \
    (SELECT md5(coalesce(string_agg(concat_ws('|', principal_id, tenant_id, role), ',' \
        ORDER BY principal_id, tenant_id), '')) FROM memberships) AS membership_rows, \
    (SELECT md5(coalesce(string_agg(concat_ws('|', id, tenant_id, role, revoked_at, \
        expires_at), ',' ORDER BY id), '')) FROM api_keys) AS api_key_rows, \
    (SELECT md5(coalesce(string_agg(concat_ws('|', id, kind, email, platform_role, \
        password_hash, invitation_token_hash), ',' ORDER BY id), '')) FROM principals) \
        AS principal_rows, \
    (SELECT count(*) FROM environments) AS environments, \
    (SELECT count(*) FROM jobs) AS jobs, \
    (SELECT count(*) FROM job_events) AS job_events, \
    (SELECT count(*) FROM outbox) AS outbox, \
    (SELECT coalesce(string_agg(state || '=' || n, ' ' ORDER BY state), '') FROM \
        (SELECT state, count(*) AS n FROM jobs GROUP BY state) AS s) AS job_states, \
    (SELECT md5(coalesce(string_agg(concat_ws('|', id, tenant_id, name, stage, isolation, \
        blueprint, blueprint_version, cost_tags, state, drift, created_by, updated_at, \
        expires_at), ',' \
        ORDER BY id), '')) FROM environments) AS environment_rows, \
    (SELECT md5(coalesce(string_agg(concat_ws('|', id, tenant_id, environment_id, operation, \
        state, attempts, max_attempts, run_after, lease_owner, lease_expires_at, fencing_token, \
        plan_hash, expected_plan_hash, requested_by, approved_by, error, updated_at, \
        started_at, finished_at), ',' ORDER BY id), '')) FROM jobs) AS job_rows, \
    (SELECT md5(coalesce(string_agg(concat_ws('|', id, job_id, payload, sent_at, attempts, \
        last_error), ',' ORDER BY id), '')) FROM outbox) AS outbox_rows, \
    (SELECT md5(coalesce(string_agg(concat_ws('|', tenant_id, environments, queued_jobs, \
        api_keys, members, updated_at), ',' ORDER BY tenant_id), '')) FROM tenant_quotas) \
        AS quota_rows, \
    (SELECT md5(coalesce(string_agg(concat_ws('|', tenant_id, amount, currency, thresholds, \
        updated_at), ',' ORDER BY tenant_id), '')) FROM budgets) AS budget_rows, \
    (SELECT md5(coalesce(string_agg(concat_ws('|', tenant_id, policy, updated_by, \
        updated_at), ',' ORDER BY tenant_id), '')) FROM tenant_policies) AS policy_rows, \
    (SELECT md5(coalesce(string_agg(concat_ws('|', id, tenant_id, url, events, deleted_at), ',' \
        ORDER BY id), '')) FROM webhooks) AS webhook_rows, \
    (SELECT concat_ws('|', name, state, updated_at) FROM tenants WHERE slug = $1) AS target";

impl Snapshot {
    fn state(&self) -> [(&'static str, String); 22] {
        [
            ("tenants", self.tenants.to_string()),
            ("principals", self.principals.to_string()),
            ("memberships", self.memberships.to_string()),
            ("api_keys", self.api_keys.to_string()),
            ("revoked api_keys", self.revoked_keys.to_string()),
            ("tenant rows", self.tenant_rows.clone()),
            ("membership rows", self.membership_rows.clone()),
            ("api_key rows", self.api_key_rows.clone()),
            ("principal rows", self.principal_rows.clone()),
            ("environments", self.environments.to_string()),
            ("jobs", self.jobs.to_string()),
            ("job events", self.job_events.to_string()),
            ("outbox", self.outbox.to_string()),
            ("job states", self.job_states.clone()),
            ("environment rows", self.environment_rows.clone()),
            ("job rows", self.job_rows.clone()),
            ("outbox rows", self.outbox_rows.clone()),
            ("quota rows", self.quota_rows.clone()),
            ("budget rows", self.budget_rows.clone()),
            ("policy rows", self.policy_rows.clone()),
            ("webhook rows", self.webhook_rows.clone()),
            (
                "target tenant",
                self.target.clone().unwrap_or_else(|| "-".into()),
            ),
        ]
    }

    /// What changed between `self` and `after`, outside the audit trail.
    fn changes(&self, after: &Snapshot) -> Vec<String> {
        self.state()
            .into_iter()
            .zip(after.state())
            .filter(|(before, after)| before.1 != after.1)
            .map(|((name, before), (_, after))| format!("{name}: {before} -> {after}"))
            .collect()
    }
}

/// Rows a successful call adds.
#[derive(Debug, Clone, Copy)]
struct Adds {
    environments: i64,
    jobs: i64,
    /// `None`: not checked.
    outbox: Option<i64>,
}

impl Adds {
    const NOTHING: Adds = Adds {
        environments: 0,
        jobs: 0,
        outbox: Some(0),
    };

    /// How `after` differs from `expected` added to `before`.
    fn problems(self, before: &Snapshot, after: &Snapshot) -> Vec<String> {
        let mut problems = Vec::new();
        let mut compare = |what: &str, before: i64, after: i64, expected: Option<i64>| {
            if let Some(expected) = expected
                && after - before != expected
            {
                problems.push(format!(
                    "{} {what} were added, expected {expected}",
                    after - before
                ));
            }
        };
        compare(
            "environments",
            before.environments,
            after.environments,
            Some(self.environments),
        );
        compare("jobs", before.jobs, after.jobs, Some(self.jobs));
        compare("outbox rows", before.outbox, after.outbox, self.outbox);
        problems
    }
}

/// For a 404 on a tenant that exists: the same request naming a tenant that does not.
struct Twin {
    path: String,
    /// The reference of the real tenant in the request.
    reference: String,
    /// The made-up reference in `path`.
    made_up: String,
}

struct Case {
    /// Caller and scope.
    label: String,
    method: Method,
    path: String,
    body: Option<Value>,
    auth: Option<String>,
    expected: u16,
    /// Slug of the tenant the request is about, to snapshot its row.
    target: Option<String>,
    twin: Option<Twin>,
    /// What it adds when it succeeds.
    adds: Adds,
    /// A 403 or 404 is the caller's authorization failing, so audited as one denied event
    /// (false where the tenant may be used and the object in the path is not in it).
    denial: bool,
}

struct Matrix {
    conn: PgConnection,
    app: TestApp,
    seq: u32,
    cases: usize,
    failures: Vec<String>,
    /// By tenant id: the environment the reads and job-creating cases of that tenant use.
    standing: HashMap<String, EnvRef>,
}

impl Matrix {
    async fn spawn() -> Matrix {
        let app = TestApp::spawn().await;
        Matrix {
            conn: app.db(),
            app,
            seq: 0,
            cases: 0,
            failures: Vec::new(),
            standing: HashMap::new(),
        }
    }

    fn unique(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}-{}", self.seq)
    }

    /// Sends a request with an optional bearer and JSON body; returns status and body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self.app.client.request(method, self.app.url(path));
        if let Some(token) = auth {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    fn snapshot(&mut self, target: Option<&str>) -> Snapshot {
        diesel::sql_query(SNAPSHOT_SQL)
            .bind::<Nullable<Text>, _>(target)
            .get_result(&mut self.conn)
            .expect("snapshot")
    }

    async fn admin_tenant(&mut self, prefix: &str) -> TenantRef {
        let slug = self.unique(prefix);
        TenantRef::from_json(&self.app.create_tenant(&slug).await)
    }

    /// A tenant onboarded by the partner holding `token` (so granted to it).
    async fn partner_tenant(&mut self, token: &str) -> TenantRef {
        let body = json!({"slug": self.unique("partnered"), "name": "N", "tier": "shared",
                          "region": "eu-west-1"});
        let (status, body) = self
            .send(Method::POST, "/v1/tenants", Some(token), Some(&body))
            .await;
        assert_eq!(status, 201, "the partner onboards a tenant: {body}");
        TenantRef::from_json(&body)
    }

    /// Adds a new user to `tenant` as a viewer (as the admin); returns its principal id.
    async fn fresh_member(&mut self, tenant: &TenantRef) -> String {
        let email = format!("{}@matrix.test", self.unique("target"));
        let path = format!("/v1/tenants/{}/members", tenant.slug);
        let body = json!({"email": email, "role": "viewer"});
        let (status, body) = self
            .send(Method::POST, &path, Some(&self.app.admin), Some(&body))
            .await;
        assert_eq!(status, 201, "add a member to remove: {body}");
        body["member"]["principal_id"]
            .as_str()
            .expect("principal id")
            .to_owned()
    }

    /// A new environment in `tenant` (created by the admin), with its queued apply job.
    async fn fresh_environment(&mut self, tenant: &TenantRef) -> EnvRef {
        let name = self.unique("env");
        let path = format!("/v1/tenants/{}/environments", tenant.slug);
        let (status, body) = self
            .send(
                Method::POST,
                &path,
                Some(&self.app.admin),
                Some(&environment_body(&name)),
            )
            .await;
        assert_eq!(status, 202, "create the environment {name}: {body}");
        EnvRef {
            name,
            id: body["environment"]["id"]
                .as_str()
                .expect("environment id")
                .to_owned(),
            job: body["job"]["id"].as_str().expect("job id").to_owned(),
        }
    }

    /// The environment of `tenant` that its reads and job-creating cases use (made once).
    async fn standing_environment(&mut self, tenant: &TenantRef) -> EnvRef {
        if let Some(environment) = self.standing.get(&tenant.id) {
            return environment.clone();
        }
        let environment = self.fresh_environment(tenant).await;
        self.standing.insert(tenant.id.clone(), environment.clone());
        environment
    }

    /// A webhook of `tenant`, written straight to the database (no limit, never delivered).
    fn fresh_webhook(&mut self, tenant: &TenantRef) -> String {
        #[derive(diesel::QueryableByName)]
        struct Id {
            #[diesel(sql_type = diesel::sql_types::Text)]
            id: String,
        }
        diesel::RunQueryDsl::get_result::<Id>(
            diesel::sql_query(format!(
                "INSERT INTO webhooks (id, tenant_id, url, events, secret_nonce, secret_ciphertext, \
                 secret_key_id) VALUES (gen_random_uuid(), '{}', 'https://hooks.example.com/m', \
                 '{{*}}', '\\x000000000000000000000000', '\\x00', 'k') RETURNING id::text AS id",
                tenant.id
            )),
            &mut self.conn,
        )
        .expect("a webhook")
        .id
    }

    /// A new queued plan job on the standing environment of `tenant` (queued by the admin).
    async fn fresh_job(&mut self, tenant: &TenantRef) -> String {
        let environment = self.standing_environment(tenant).await;
        let path = format!(
            "/v1/tenants/{}/environments/{}/plan",
            tenant.slug, environment.id
        );
        let (status, body) = self
            .send(Method::POST, &path, Some(&self.app.admin), None)
            .await;
        assert_eq!(status, 202, "queue a plan job to cancel: {body}");
        assert_eq!(body["job"]["state"], "queued", "a fresh job: {body}");
        body["job"]["id"].as_str().expect("job id").to_owned()
    }

    /// A tenant of its own where `subject` holds its role, and the credential to use there.
    async fn fresh_own_tenant(&mut self, subject: &Subject) -> (TenantRef, String) {
        match (subject.role, subject.via) {
            (Role::PlatformAdmin, _) => (self.admin_tenant("fresh").await, subject.token.clone()),
            (Role::Partner, _) => (
                self.partner_tenant(&subject.token).await,
                subject.token.clone(),
            ),
            (role, Via::User) => {
                let tenant = self.admin_tenant("fresh").await;
                let path = format!("/v1/tenants/{}/members", tenant.slug);
                let email = subject.email.as_deref().expect("a user has an email");
                let body = json!({"email": email, "role": role.as_str()});
                let (status, body) = self
                    .send(Method::POST, &path, Some(&self.app.admin), Some(&body))
                    .await;
                assert_eq!(status, 201, "grant {email} {role:?}: {body}");
                // An existing account accepts the membership it was offered.
                self.app
                    .accept_membership(&tenant.slug, &subject.token)
                    .await;
                (tenant, subject.token.clone())
            }
            (role, Via::ApiKey) => {
                let tenant = self.admin_tenant("fresh").await;
                let (_, secret) = self.app.api_key(&tenant.slug, role.as_str()).await;
                (tenant, secret)
            }
        }
    }

    /// Sends one case and checks its answer and its effects; returns the answer.
    async fn check(&mut self, case: Case) -> (u16, Value) {
        let before = self.snapshot(case.target.as_deref());
        let (status, body) = self
            .send(
                case.method.clone(),
                &case.path,
                case.auth.as_deref(),
                case.body.as_ref(),
            )
            .await;
        let after = self.snapshot(case.target.as_deref());
        self.cases += 1;

        let mut problems = Vec::new();
        if status != case.expected {
            problems.push(format!("answered {status}, expected {}", case.expected));
        }
        let changes = before.changes(&after);
        let problem_type = body["type"].as_str().unwrap_or("(none)");
        let is_read = case.method == Method::GET;
        match case.expected {
            // Success checks only when it did succeed (else the status says it all).
            200..=299 if status == case.expected => {
                if after.denied != before.denied {
                    problems.push("a success was audited as denied".to_owned());
                }
                if is_read && !changes.is_empty() {
                    problems.push(format!("a read changed rows: {}", changes.join(", ")));
                }
                if !is_read && changes.is_empty() {
                    problems.push("a successful write changed nothing".to_owned());
                }
                problems.extend(case.adds.problems(&before, &after));
            }
            // An authorized request the current state refuses (credentials not provisioned yet):
            // not a denial, and nothing is changed or audited.
            409 => {
                if problem_type != CONFLICT {
                    problems.push(format!("problem type {problem_type}, expected {CONFLICT}"));
                }
                if !changes.is_empty() {
                    problems.push(format!("a refused request changed: {}", changes.join(", ")));
                }
                if after.denied != before.denied || after.audited != before.audited {
                    problems.push(format!(
                        "{} denied and {} other audit events were added, expected none",
                        after.denied - before.denied,
                        after.audited - before.audited
                    ));
                }
            }
            401 | 403 | 404 => {
                let expected_type = match case.expected {
                    401 => UNAUTHENTICATED,
                    403 => FORBIDDEN,
                    _ => NOT_FOUND,
                };
                if problem_type != expected_type {
                    problems.push(format!(
                        "problem type {problem_type}, expected {expected_type}"
                    ));
                }
                if !changes.is_empty() {
                    problems.push(format!("a refused request changed: {}", changes.join(", ")));
                }
                if case.expected != 401 && case.denial {
                    // Each refusal of a tenant that exists (or of a platform action) is audited
                    // as one denied event, and nothing else is audited.
                    if after.denied != before.denied + 1 {
                        problems.push(format!(
                            "{} denied audit events were added, expected 1",
                            after.denied - before.denied
                        ));
                    }
                    if after.audited != before.audited {
                        problems.push(format!(
                            "{} non-denied audit events were added by a refused request",
                            after.audited - before.audited
                        ));
                    }
                }
            }
            _ => {}
        }
        if let Some(twin) = &case.twin {
            // A tenant the caller may not see must be indistinguishable from one that does not
            // exist: the same caller sending the same request (method, path shape, body) for a
            // made-up reference gets a 404 whose body, once the made-up reference in `detail` is
            // replaced by the real one, equals this body exactly.
            let (twin_status, twin_body) = self
                .send(
                    case.method.clone(),
                    &twin.path,
                    case.auth.as_deref(),
                    case.body.as_ref(),
                )
                .await;
            if twin_status != 404 {
                problems.push(format!(
                    "the made-up tenant {} answered {twin_status}, not 404: {}",
                    twin.made_up,
                    shorten(&twin_body)
                ));
            }
            let mut expected_body = twin_body.clone();
            if let Some(detail) = twin_body["detail"].as_str() {
                expected_body["detail"] = json!(detail.replace(&twin.made_up, &twin.reference));
            }
            if body != expected_body {
                problems.push(format!(
                    "the 404 differs from that of a missing tenant, which would be \
                     {expected_body}"
                ));
            }
        }
        if !problems.is_empty() {
            self.failures.push(format!(
                "[{}] {} {}: {}\n        body: {}",
                case.label,
                case.method,
                case.path,
                problems.join("; "),
                shorten(&body)
            ));
        }
        (status, body)
    }

    /// One tenant-scoped case: prepares fresh targets as needed, then checks it.
    async fn tenant_case(
        &mut self,
        cast: &Cast,
        scope: Scope<'_>,
        endpoint: TenantEndpoint,
        kind: RefKind,
        expected: u16,
    ) {
        let fresh = endpoint.needs_fresh_tenant();
        // The tenant holding the object in the path, when it is not the tenant in the path.
        let mut owner = None;
        let (label, tenant, auth) = match scope {
            Scope::Own(subject) => {
                let (tenant, token) = if fresh {
                    self.fresh_own_tenant(subject).await
                } else {
                    (subject.home.clone(), subject.token.clone())
                };
                (
                    format!("{}, own tenant {}", subject.label(), kind.label()),
                    tenant,
                    Some(token),
                )
            }
            Scope::ForeignObject(subject) => {
                assert!(
                    !fresh && endpoint.names_an_object(),
                    "{endpoint:?} names no object"
                );
                owner = Some(cast.away.clone());
                (
                    format!(
                        "{}, own tenant {}, object of another tenant",
                        subject.label(),
                        kind.label()
                    ),
                    subject.home.clone(),
                    Some(subject.token.clone()),
                )
            }
            Scope::Other(subject) => (
                format!("{}, other tenant {}", subject.label(), kind.label()),
                if fresh {
                    self.admin_tenant("other").await
                } else {
                    cast.away.clone()
                },
                Some(subject.token.clone()),
            ),
            Scope::NoTenant => (
                format!("user with no tenant, {}", kind.label()),
                if fresh {
                    self.admin_tenant("unheld").await
                } else {
                    cast.home.clone()
                },
                Some(cast.nobody_token.clone()),
            ),
            Scope::Unauthenticated(bearer) => (
                match bearer {
                    None => format!("no Authorization header, {}", kind.label()),
                    Some(bearer) => format!("bearer {bearer}, {}", kind.label()),
                },
                if fresh {
                    self.admin_tenant("anon").await
                } else {
                    cast.home.clone()
                },
                bearer.map(str::to_owned),
            ),
        };
        let foreign = owner.is_some();
        let holder = owner.unwrap_or_else(|| tenant.clone());
        let mut about = About::default();
        let (suffix, body) = match endpoint {
            TenantEndpoint::GetTenant | TenantEndpoint::DeleteTenant => (String::new(), None),
            TenantEndpoint::UpdateTenant => (String::new(), Some(json!({"name": "Renamed"}))),
            TenantEndpoint::AddMember => {
                let email = format!("{}@matrix.test", self.unique("invitee"));
                (
                    "/members".to_owned(),
                    Some(json!({"email": email, "role": "viewer"})),
                )
            }
            TenantEndpoint::ListMembers => ("/members".to_owned(), None),
            TenantEndpoint::RemoveMember => {
                let principal = self.fresh_member(&holder).await;
                about.object = Some(principal.clone());
                (format!("/members/{principal}"), None)
            }
            TenantEndpoint::CreateKey => (
                "/api-keys".to_owned(),
                Some(json!({"name": "k", "role": "viewer"})),
            ),
            TenantEndpoint::ListKeys => ("/api-keys".to_owned(), None),
            TenantEndpoint::RevokeKey => {
                let (key, _) = self.app.api_key(&holder.slug, "viewer").await;
                about.object = Some(key.clone());
                (format!("/api-keys/{key}"), None)
            }
            TenantEndpoint::ListTenantAudit => ("/audit-events".to_owned(), None),
            TenantEndpoint::GetQuotas => ("/quotas".to_owned(), None),
            TenantEndpoint::SetQuotas => ("/quotas".to_owned(), Some(json!({"environments": 500}))),
            TenantEndpoint::GetCosts => ("/costs?group_by=tag:cost_center".to_owned(), None),
            TenantEndpoint::ExportCosts => ("/costs/export".to_owned(), None),
            TenantEndpoint::SetBudget => ("/budget".to_owned(), Some(budget_body())),
            TenantEndpoint::GetPolicy => ("/policy".to_owned(), None),
            TenantEndpoint::SetPolicy => ("/policy".to_owned(), Some(policy_body())),
            TenantEndpoint::ListApprovals => ("/approvals".to_owned(), None),
            TenantEndpoint::CreateWebhook => {
                // A tenant may hold ten: the cases before this one leave none behind.
                diesel::RunQueryDsl::execute(
                    diesel::sql_query(format!(
                        "DELETE FROM webhooks WHERE tenant_id = '{}'",
                        holder.id
                    )),
                    &mut self.conn,
                )
                .expect("clear webhooks");
                (
                    "/webhooks".to_owned(),
                    Some(json!({"url": "https://hooks.example.com/matrix", "events": ["*"]})),
                )
            }
            TenantEndpoint::ListWebhooks => ("/webhooks".to_owned(), None),
            TenantEndpoint::DeleteWebhook | TenantEndpoint::WebhookDeliveries => {
                let webhook = self.fresh_webhook(&holder);
                about.object = Some(webhook.clone());
                let suffix = if endpoint == TenantEndpoint::DeleteWebhook {
                    format!("/webhooks/{webhook}")
                } else {
                    format!("/webhooks/{webhook}/deliveries")
                };
                (suffix, None)
            }
            TenantEndpoint::GetBudget | TenantEndpoint::DeleteBudget => {
                // A budget to read or remove, set by the admin.
                let path = format!("/v1/tenants/{}/budget", holder.slug);
                let (status, body) = self
                    .send(
                        Method::PUT,
                        &path,
                        Some(&self.app.admin),
                        Some(&budget_body()),
                    )
                    .await;
                assert_eq!(status, 200, "set a budget to read or remove: {body}");
                ("/budget".to_owned(), None)
            }
            TenantEndpoint::CreateEnvironment => {
                let name = self.unique("env");
                let body = environment_body(&name);
                about.name = Some(name);
                ("/environments".to_owned(), Some(body))
            }
            TenantEndpoint::ListEnvironments
            | TenantEndpoint::GetEnvironment
            | TenantEndpoint::UpdateEnvironment
            | TenantEndpoint::DeleteEnvironment
            | TenantEndpoint::Plan
            | TenantEndpoint::Apply
            | TenantEndpoint::DriftCheck
            | TenantEndpoint::ReadCredentials
            | TenantEndpoint::Isolation
            | TenantEndpoint::ListJobs
            | TenantEndpoint::GetJob
            | TenantEndpoint::JobEvents
            | TenantEndpoint::CancelJob
            | TenantEndpoint::ApproveJob
            | TenantEndpoint::RejectJob
            | TenantEndpoint::Upgrade
            | TenantEndpoint::Drift
            | TenantEndpoint::Stop
            | TenantEndpoint::Start => {
                // A new environment per destroy and a new queued job per cancel; the rest use
                // the tenant's standing environment and its (forever queued) apply job.
                let environment = if endpoint == TenantEndpoint::DeleteEnvironment {
                    self.fresh_environment(&holder).await
                } else {
                    self.standing_environment(&holder).await
                };
                let job = if endpoint == TenantEndpoint::CancelJob {
                    self.fresh_job(&holder).await
                } else {
                    environment.job.clone()
                };
                // The documented path template, filled in.
                let template = endpoint
                    .route()
                    .1
                    .trim_start_matches("/v1/tenants/{tenant}");
                if template.contains("{env}") {
                    about.object = Some(environment.get(kind).to_owned());
                } else if template.contains("{job}") {
                    about.object = Some(job.clone());
                }
                let suffix = template
                    .replace("{env}", environment.get(kind))
                    .replace("{job}", &job);
                about.environment = Some(environment);
                about.job = Some(job);
                let body = match endpoint {
                    TenantEndpoint::UpdateEnvironment => Some(json!({"ttl_hours": 48})),
                    // The standing job is queued (no worker plans it): a decision is a 409.
                    TenantEndpoint::ApproveJob => Some(json!({"plan_hash": "a".repeat(64)})),
                    TenantEndpoint::RejectJob => Some(json!({"comment": "no"})),
                    // The standing environment is at the latest version already: a 409.
                    TenantEndpoint::Upgrade => Some(json!({"blueprint_version": 2})),
                    _ => None,
                };
                (suffix, body)
            }
        };
        let reference = tenant.get(kind).to_owned();
        let twin = if expected == 404 && foreign {
            // Another tenant's object must look exactly like one that does not exist.
            let object = about
                .object
                .clone()
                .expect("a foreign case names an object");
            let made_up = if uuid::Uuid::try_parse(&object).is_ok() {
                uuid::Uuid::now_v7().to_string()
            } else {
                self.unique("gone")
            };
            Some(Twin {
                path: format!(
                    "/v1/tenants/{reference}{}",
                    suffix.replacen(&object, &made_up, 1)
                ),
                reference: object,
                made_up,
            })
        } else if expected == 404 {
            let made_up = match kind {
                RefKind::Slug => self.unique("missing"),
                RefKind::Id => uuid::Uuid::now_v7().to_string(),
            };
            Some(Twin {
                path: format!("/v1/tenants/{made_up}{suffix}"),
                reference: reference.clone(),
                made_up,
            })
        } else {
            None
        };
        let (status, answer) = self
            .check(Case {
                label: label.clone(),
                method: endpoint.route().0,
                path: format!("/v1/tenants/{reference}{suffix}"),
                body,
                auth,
                expected,
                target: Some(tenant.slug.clone()),
                twin,
                adds: endpoint.adds(),
                denial: !foreign,
            })
            .await;
        if status == expected && (200..300).contains(&status) {
            let problems = answer_problems(endpoint, &tenant, &about, &answer);
            if !problems.is_empty() {
                let (method, _) = endpoint.route();
                self.fail(
                    &label,
                    format!(
                        "{method} /v1/tenants/{reference}{suffix}: {}\n        body: {}",
                        problems.join("; "),
                        shorten(&answer)
                    ),
                );
            }
        }
    }

    fn fail(&mut self, label: &str, message: String) {
        self.failures.push(format!("[{label}] {message}"));
    }

    fn finish(self, what: &str) {
        eprintln!("{what}: {} cases checked", self.cases);
        assert!(
            self.failures.is_empty(),
            "{} of {} {what} cases failed:\n{}",
            self.failures.len(),
            self.cases,
            self.failures.join("\n")
        );
    }
}

/// What a tenant-scoped case is about besides its tenant, to check a successful answer against.
#[derive(Debug, Default)]
struct About {
    /// The environment in the path (for a list: one that must be listed).
    environment: Option<EnvRef>,
    /// The job in the path (for a list: one that must be listed).
    job: Option<String>,
    /// The name a create asks for.
    name: Option<String>,
    /// How the path names its member, key, environment or job.
    object: Option<String>,
}

/// What is wrong with the body of a successful answer of `endpoint` in `tenant`.
fn answer_problems(
    endpoint: TenantEndpoint,
    tenant: &TenantRef,
    about: &About,
    body: &Value,
) -> Vec<String> {
    fn expect(problems: &mut Vec<String>, what: &str, found: &Value, wanted: Value) {
        if *found != wanted {
            problems.push(format!("{what} is {found}, expected {wanted}"));
        }
    }
    /// The `field` of every item of a list answer.
    fn listed<'a>(body: &'a Value, field: &str) -> Vec<&'a Value> {
        body["items"]
            .as_array()
            .map(|items| items.iter().map(|item| &item[field]).collect())
            .unwrap_or_default()
    }
    let mut problems = Vec::new();
    let p = &mut problems;
    let environment_id = json!(about.environment.as_ref().map(|e| e.id.clone()));
    let job_id = json!(about.job);
    let job = &body["job"];
    match endpoint {
        TenantEndpoint::CreateEnvironment => {
            let environment = &body["environment"];
            expect(
                p,
                "environment.name",
                &environment["name"],
                json!(about.name),
            );
            expect(
                p,
                "environment.tenant_id",
                &environment["tenant_id"],
                json!(tenant.id),
            );
            expect(
                p,
                "environment.state",
                &environment["state"],
                json!("pending"),
            );
            expect(
                p,
                "job.environment_id",
                &job["environment_id"],
                environment["id"].clone(),
            );
        }
        TenantEndpoint::DeleteEnvironment
        | TenantEndpoint::Plan
        | TenantEndpoint::Apply
        | TenantEndpoint::DriftCheck => {
            expect(
                p,
                "job.environment_id",
                &job["environment_id"],
                environment_id,
            );
        }
        TenantEndpoint::ListEnvironments => {
            let tenants = listed(body, "tenant_id");
            if tenants.iter().any(|t| **t != json!(tenant.id)) {
                p.push(format!("lists environments of other tenants: {tenants:?}"));
            }
            if !listed(body, "id").contains(&&environment_id) {
                p.push(format!("does not list the environment {environment_id}"));
            }
        }
        TenantEndpoint::UpdateEnvironment => {
            expect(p, "id", &body["id"], environment_id.clone());
            if !body["expires_at"].is_string() {
                p.push(format!("no expires_at after setting a TTL: {body}"));
            }
        }
        TenantEndpoint::GetEnvironment => {
            expect(p, "id", &body["id"], environment_id);
            expect(p, "tenant_id", &body["tenant_id"], json!(tenant.id));
        }
        TenantEndpoint::Isolation => {
            expect(p, "environment_id", &body["environment_id"], environment_id);
        }
        TenantEndpoint::ListJobs => {
            if !listed(body, "id").contains(&&job_id) {
                p.push(format!("does not list the job {job_id}"));
            }
        }
        TenantEndpoint::GetJob => {
            expect(p, "id", &body["id"], job_id);
            expect(p, "environment_id", &body["environment_id"], environment_id);
            expect(p, "operation", &body["operation"], json!("apply"));
            expect(p, "state", &body["state"], json!("queued"));
        }
        TenantEndpoint::JobEvents => {
            let kinds = listed(body, "kind");
            expect(
                p,
                "the first event's kind",
                kinds.first().copied().unwrap_or(&Value::Null),
                json!("queued"),
            );
        }
        TenantEndpoint::CancelJob => {
            expect(p, "id", &body["id"], job_id);
            expect(p, "state", &body["state"], json!("canceled"));
        }
        TenantEndpoint::GetTenant
        | TenantEndpoint::UpdateTenant
        | TenantEndpoint::DeleteTenant
        | TenantEndpoint::AddMember
        | TenantEndpoint::ListMembers
        | TenantEndpoint::RemoveMember
        | TenantEndpoint::CreateKey
        | TenantEndpoint::ListKeys
        | TenantEndpoint::RevokeKey
        | TenantEndpoint::ListTenantAudit
        | TenantEndpoint::ReadCredentials
        | TenantEndpoint::ListWebhooks
        | TenantEndpoint::DeleteWebhook
        | TenantEndpoint::WebhookDeliveries => {}
        TenantEndpoint::CreateWebhook => {
            if !body["secret"]
                .as_str()
                .is_some_and(|s| s.starts_with("whsec_"))
            {
                p.push(format!("no whsec_ secret: {body}"));
            }
        }
        TenantEndpoint::GetCosts => {
            expect(p, "currency", &body["currency"], json!("EUR"));
            expect(p, "group_by", &body["group_by"], json!(["tag:cost_center"]));
        }
        TenantEndpoint::ExportCosts => {
            if !body
                .as_str()
                .is_some_and(|csv| csv.starts_with("BilledCost,"))
            {
                p.push(format!("expected a FOCUS CSV, got {body}"));
            }
        }
        TenantEndpoint::GetBudget | TenantEndpoint::SetBudget => {
            expect(p, "amount", &body["amount"], json!("100.00"));
            expect(p, "period", &body["period"], json!("month"));
        }
        TenantEndpoint::DeleteBudget => {}
        // Nothing awaits approval (no worker plans here): an empty list, and decisions are 409s.
        TenantEndpoint::ListApprovals => {
            expect(p, "items", &body["items"], json!([]));
        }
        TenantEndpoint::ApproveJob
        | TenantEndpoint::RejectJob
        | TenantEndpoint::Upgrade
        | TenantEndpoint::Stop
        | TenantEndpoint::Start => {}
        // Never checked (no worker here): no differences, the next scheduled check named.
        TenantEndpoint::Drift => {
            expect(p, "environment_id", &body["environment_id"], environment_id);
            expect(p, "differences", &body["differences"], json!([]));
            if !body["next_check_at"].is_string() {
                p.push(format!("no next_check_at: {body}"));
            }
        }
        TenantEndpoint::GetPolicy => {
            // The default or what an earlier case set: the whole policy either way.
            expect(
                p,
                "promotion_order",
                &body["promotion_order"],
                json!(["development", "staging", "production"]),
            );
        }
        TenantEndpoint::SetPolicy => {
            expect(
                p,
                "production approvals",
                &body["stages"]["production"]["approvals_required"],
                json!(2),
            );
            expect(p, "customized", &body["customized"], json!(true));
        }
        TenantEndpoint::GetQuotas | TenantEndpoint::SetQuotas => {
            let quotas = body["quotas"].as_array().map_or(0, Vec::len);
            if quotas != 4 {
                p.push(format!("expected the four quotas, got {body}"));
            }
        }
    }
    if let Some(operation) = endpoint.queues() {
        expect(p, "job.operation", &job["operation"], json!(operation));
        expect(p, "job.state", &job["state"], json!("queued"));
    }
    problems
}

fn policy_body() -> Value {
    json!({"stages": {"production": {"approvals_required": 2}}})
}

fn budget_body() -> Value {
    json!({"amount": "100.00", "currency": "EUR", "period": "month"})
}

/// A body for a failure message: long lists are cut, the rest is kept whole.
fn shorten(body: &Value) -> String {
    const MAX: usize = 600;
    let text = body.to_string();
    if text.chars().count() <= MAX {
        return text;
    }
    let cut: String = text.chars().take(MAX).collect();
    format!("{cut}… ({} characters)", text.chars().count())
}

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tenant_endpoints_answer_every_caller_as_specified() {
    let mut m = Matrix::spawn().await;
    let cast = Cast::assemble(&mut m).await;
    let kinds = [RefKind::Slug, RefKind::Id];

    for subject in &cast.subjects {
        let expected = expected_in_own(subject.role, subject.via);
        for kind in kinds {
            for &(endpoint, status) in &expected {
                m.tenant_case(&cast, Scope::Own(subject), endpoint, kind, status)
                    .await;
            }
            // A member, key, environment or job of another tenant, named in a path of one's own
            // tenant, is not found there (where the endpoint is allowed at all).
            for &(endpoint, status) in &expected {
                if status != 403 && endpoint.names_an_object() {
                    m.tenant_case(&cast, Scope::ForeignObject(subject), endpoint, kind, 404)
                        .await;
                }
            }
            // The platform admin holds every tenant: it has no "other" tenant.
            if subject.role != Role::PlatformAdmin {
                for endpoint in tenant_endpoints() {
                    m.tenant_case(&cast, Scope::Other(subject), endpoint, kind, 404)
                        .await;
                }
            }
        }
    }
    for kind in kinds {
        for endpoint in tenant_endpoints() {
            m.tenant_case(&cast, Scope::NoTenant, endpoint, kind, 404)
                .await;
        }
    }
    for bearer in [None, Some(GARBAGE_BEARER)] {
        for endpoint in tenant_endpoints() {
            m.tenant_case(
                &cast,
                Scope::Unauthenticated(bearer),
                endpoint,
                RefKind::Slug,
                401,
            )
            .await;
        }
    }
    m.finish("tenant-scoped");
}

/// Which tenants `GET /v1/tenants` must list for a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sees {
    All,
    PartnerTenants,
    Home,
    Nothing,
}

struct PlatformCaller {
    label: String,
    auth: Option<String>,
    expected: [u16; 11],
    me: Option<(&'static str, String)>,
    sees: Sees,
}

#[tokio::test]
async fn platform_endpoints_answer_every_caller_as_specified() {
    let mut m = Matrix::spawn().await;

    // Coverage guard: every documented route under /v1 is in the matrix, and vice versa.
    let (status, doc) = m.send(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200, "GET /openapi.json: {doc}");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("openapi paths") {
        if !path.starts_with("/v1/") || OUTSIDE_THE_MATRIX.contains(&path.as_str()) {
            continue;
        }
        for method in item.as_object().expect("openapi path item").keys() {
            if [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ]
            .contains(&method.as_str())
            {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let covered = matrix_routes();
    for (method, path) in documented.difference(&covered) {
        m.fail(
            "coverage",
            format!("{method} {path} is in /openapi.json but not in the authorization matrix"),
        );
    }
    for (method, path) in covered.difference(&documented) {
        m.fail(
            "coverage",
            format!("{method} {path} is in the matrix but not in /openapi.json"),
        );
    }

    let cast = Cast::assemble(&mut m).await;
    let mut all_tenants: BTreeSet<String> = BTreeSet::new();
    let mut partner_tenants: BTreeSet<String> = BTreeSet::new();
    all_tenants.insert(cast.home.id.clone());
    all_tenants.insert(cast.away.id.clone());
    for subject in &cast.subjects {
        all_tenants.insert(subject.home.id.clone());
        if subject.role == Role::Partner {
            partner_tenants.insert(subject.home.id.clone());
        }
    }

    let mut callers: Vec<PlatformCaller> = cast
        .subjects
        .iter()
        .map(|s| PlatformCaller {
            label: s.label(),
            auth: Some(s.token.clone()),
            expected: expected_on_platform(Some(s.role)),
            me: Some(s.me.clone()),
            sees: match s.role {
                Role::PlatformAdmin => Sees::All,
                Role::Partner => Sees::PartnerTenants,
                _ => Sees::Home,
            },
        })
        .collect();
    callers.push(PlatformCaller {
        label: "user with no tenant".into(),
        auth: Some(cast.nobody_token.clone()),
        expected: expected_on_platform(None),
        me: Some(("id", cast.nobody_id.clone())),
        sees: Sees::Nothing,
    });
    for bearer in [None, Some(GARBAGE_BEARER)] {
        callers.push(PlatformCaller {
            label: match bearer {
                None => "no Authorization header".into(),
                Some(bearer) => format!("bearer {bearer}"),
            },
            auth: bearer.map(str::to_owned),
            expected: [401; 11],
            me: None,
            sees: Sees::Nothing,
        });
    }

    for caller in &callers {
        for (endpoint, expected) in PLATFORM_ENDPOINTS.into_iter().zip(caller.expected) {
            let (method, path) = endpoint.route();
            let body = match endpoint {
                // Listed below, once every tenant of this app exists.
                PlatformEndpoint::ListTenants => continue,
                PlatformEndpoint::CreateTenant => Some(json!({"slug": m.unique("made"),
                    "name": "N", "tier": "shared", "region": "eu-west-1"})),
                PlatformEndpoint::CreatePartner => {
                    Some(json!({"email": format!("{}@matrix.test", m.unique("partner"))}))
                }
                PlatformEndpoint::ListAuditTrail
                | PlatformEndpoint::VerifyAuditTrail
                | PlatformEndpoint::Me
                | PlatformEndpoint::PlatformCosts
                | PlatformEndpoint::ExportPlatformCosts
                | PlatformEndpoint::MeteringPasses
                | PlatformEndpoint::ListBlueprints => None,
                PlatformEndpoint::GetBlueprint => {
                    // The catalog's shared default, by name.
                    let (status, body) = m
                        .check(Case {
                            label: caller.label.clone(),
                            method: method.clone(),
                            path: "/v1/blueprints/shared-basic".to_owned(),
                            body: None,
                            auth: caller.auth.clone(),
                            expected,
                            target: None,
                            twin: None,
                            adds: Adds::NOTHING,
                            denial: true,
                        })
                        .await;
                    if status == 200 && body["name"] != json!("shared-basic") {
                        m.fail(&caller.label, format!("GET a blueprint: {body}"));
                    }
                    continue;
                }
            };
            let (status, body) = m
                .check(Case {
                    label: caller.label.clone(),
                    method: method.clone(),
                    path: path.to_owned(),
                    body,
                    auth: caller.auth.clone(),
                    expected,
                    target: None,
                    twin: None,
                    adds: Adds::NOTHING,
                    denial: true,
                })
                .await;
            match endpoint {
                PlatformEndpoint::CreateTenant if status == 201 => {
                    let id = body["id"].as_str().expect("tenant id").to_owned();
                    if caller.sees == Sees::PartnerTenants {
                        partner_tenants.insert(id.clone());
                    }
                    all_tenants.insert(id);
                }
                PlatformEndpoint::Me if status == 200 => {
                    if let Some((field, value)) = &caller.me
                        && body[*field] != json!(value)
                    {
                        m.fail(
                            &caller.label,
                            format!("GET /v1/me: {field} is {}, expected {value}", body[*field]),
                        );
                    }
                    if caller.sees == Sees::Nothing && body["memberships"] != json!([]) {
                        m.fail(
                            &caller.label,
                            format!("GET /v1/me: memberships of a user with no tenant: {body}"),
                        );
                    }
                }
                _ => {}
            }
        }
    }

    let home = BTreeSet::from([cast.home.id.clone()]);
    let nothing = BTreeSet::new();
    for caller in &callers {
        let expected = caller.expected[1];
        let (status, body) = m
            .check(Case {
                label: caller.label.clone(),
                method: Method::GET,
                path: "/v1/tenants?limit=200".to_owned(),
                body: None,
                auth: caller.auth.clone(),
                expected,
                target: None,
                twin: None,
                adds: Adds::NOTHING,
                denial: true,
            })
            .await;
        if status != 200 || expected != 200 {
            continue;
        }
        let listed: BTreeSet<String> = body["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|t| t["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let wanted = match caller.sees {
            Sees::All => &all_tenants,
            Sees::PartnerTenants => &partner_tenants,
            Sees::Home => &home,
            Sees::Nothing => &nothing,
        };
        if &listed != wanted || !body["next_cursor"].is_null() {
            m.fail(
                &caller.label,
                format!(
                    "GET /v1/tenants listed {listed:?} (next_cursor {}), expected exactly \
                     {wanted:?}",
                    body["next_cursor"]
                ),
            );
        }
    }
    m.finish("platform");
}
