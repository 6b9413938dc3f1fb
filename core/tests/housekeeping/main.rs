//! Housekeeping against the real PostgreSQL and RabbitMQ: the outbox relay publishes each job
//! once however many relays run, the retention pass deletes exactly the rows past their age
//! (once per interval per installation, in small batches), and every query that runs
//! periodically is planned over an index on a seeded database.

#[path = "../support/mod.rs"]
mod support;

mod indexes;
mod relay;
mod retention;
mod seed;
