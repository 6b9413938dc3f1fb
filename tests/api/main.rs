//! Integration tests of the HTTP API against the real local PostgreSQL: every test gets its
//! own database, so they run in parallel and leave nothing behind.

mod helpers;
#[path = "../support/kit.rs"]
mod kit;
#[path = "../support/smtp.rs"]
mod smtp;

mod approvals;
mod audit;
mod authz_matrix;
mod bad_input;
mod blueprints;
mod contract;
mod costs;
mod denials;
mod enforcer;
mod fuzz_findings;
mod grants;
mod https;
mod identity;
mod invitations;
mod jobs;
mod lifetime;
mod login_floods;
mod metrics;
mod policy;
mod quotas;
mod rate_limits;
mod removal_races;
mod scheduler;
mod tenants;
mod throttle;
mod upgrade;
mod webhooks;
