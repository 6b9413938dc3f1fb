-- Housekeeping: an index for every query that runs periodically (the sweeper's, the claim's,
-- the retention deletes'), the relay's claim on outbox rows, and the row that lets one worker
-- per interval run the retention pass.
--
-- IF NOT EXISTS: on a large installation an operator may build these beforehand with
-- CREATE INDEX CONCURRENTLY (same names), so the migration does not block writers meanwhile.

-- A relay holds the rows it took while it publishes them (taken FOR UPDATE SKIP LOCKED, so
-- several relays never take the same row); a relay that died lets go when the hold ends.
ALTER TABLE outbox ADD COLUMN claimed_until timestamptz;

-- When each periodic task last started, installation-wide: a worker runs a task only if it
-- moves this row past the task's interval, so N workers run it once per interval.
CREATE TABLE housekeeping (
    task        text PRIMARY KEY,
    last_run_at timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS mail_outbox_done ON mail_outbox ((coalesce(sent_at, failed_at)))
    WHERE sent_at IS NOT NULL OR failed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at);
CREATE INDEX IF NOT EXISTS idempotency_keys_created_at ON idempotency_keys (created_at);
CREATE INDEX IF NOT EXISTS job_events_occurred_at ON job_events (occurred_at);
CREATE INDEX IF NOT EXISTS login_throttle_window_start ON login_throttle (window_start);

-- The sweeper's stranded-job query looks up each queued job's wake-ups (and deleting a job,
-- by an environment's cascade, finds its outbox rows the same way).
CREATE INDEX IF NOT EXISTS outbox_job ON outbox (job_id);
-- An environment's line of active jobs: who is first (every claim, every sweep, every wake-up
-- of the next job) and how many wait ahead. Without it each lookup walked the environment's
-- whole history of finished jobs. The predicate is spelled as the queries spell it.
CREATE INDEX IF NOT EXISTS jobs_line ON jobs (environment_id, created_at, id)
    WHERE state IN ('queued', 'planned', 'awaiting_approval', 'approved', 'running');
