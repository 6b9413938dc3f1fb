ALTER TABLE jobs DROP CONSTRAINT jobs_cancel_only_once_started;
ALTER TABLE jobs DROP COLUMN cancel_requested_at;
