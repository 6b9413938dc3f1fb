//! bulkhead-core: Bulkhead's domain types and rules, configuration, authorization policy and
//! control-database queries. No HTTP here.

pub mod audit;
pub mod authz;
pub mod blueprint;
pub mod config;
pub mod crypto;
pub mod db;
pub mod dburl;
pub mod domain;
pub mod focus;
pub mod governance;
pub mod guarantees;
pub mod indexes;
pub mod jobs;
pub mod lifecycle;
pub mod limits;
pub mod metering;
pub mod money;
pub mod password;
pub mod plan;
pub mod pricing;
pub mod queue;
pub mod reseal;
pub mod retention;
pub mod schema;
pub mod secrets;
pub mod store;
pub mod textenum;
pub mod webhooks;
