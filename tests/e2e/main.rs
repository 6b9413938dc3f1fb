//! End-to-end tests: the real `bulkhead api` and `bulkhead worker` binaries against the local
//! PostgreSQL and RabbitMQ. Every test starts its own `Stack` (control database, queue prefix,
//! pooled target database) and leaves nothing behind.

mod helpers;
#[path = "../support/kit.rs"]
mod kit;
mod proxy;
#[path = "../support/smtp.rs"]
mod smtp;

mod approvals;
mod costs;
mod drift;
mod fencing;
mod generated_client;
mod hostile_tenant;
mod housekeeping;
mod lifetime;
mod promotion;
mod provisioning;
mod reseal;
mod resilience;
mod schedules;
mod startup;
mod webhooks;
