//! bulkhead-worker: the job consumer. `runtime` takes messages and claims jobs (and runs the periodic passes), `metering` meters usage, `execution`
//! runs one claimed job, `executor` acts on the target PostgreSQL servers.

pub mod execution;
pub mod executor;
pub mod metering;
pub mod runtime;
mod sessions;
pub mod webhooks;
