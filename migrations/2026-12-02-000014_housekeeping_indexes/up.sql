-- Housekeeping: the relay's claim on outbox rows, the row that lets one worker per interval
-- run the retention pass, and an index for each retention delete (oldest rows first).
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
