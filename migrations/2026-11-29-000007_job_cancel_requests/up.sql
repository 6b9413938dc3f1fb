-- A running job cannot be stopped mid-statement: a cancel request is recorded here, and the
-- worker holding the job stops at its next step boundary and marks it canceled.
ALTER TABLE jobs ADD COLUMN cancel_requested_at timestamptz;
ALTER TABLE jobs ADD CONSTRAINT jobs_cancel_only_once_started
    CHECK (cancel_requested_at IS NULL OR started_at IS NOT NULL);
