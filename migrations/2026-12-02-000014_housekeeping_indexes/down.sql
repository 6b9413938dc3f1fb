DROP INDEX login_throttle_window_start;
DROP INDEX job_events_occurred_at;
DROP INDEX idempotency_keys_created_at;
DROP INDEX sessions_expires_at;
DROP INDEX mail_outbox_done;
DROP INDEX outbox_sent;
DROP TABLE housekeeping;
ALTER TABLE outbox DROP COLUMN claimed_until;
