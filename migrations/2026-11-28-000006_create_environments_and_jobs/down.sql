DROP TABLE environment_credentials;
DROP TABLE isolation_guarantees;
DROP TABLE resources;
DROP TABLE outbox;
DROP TABLE job_events;
DROP TABLE jobs;
DROP TABLE environments;
