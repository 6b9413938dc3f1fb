DROP INDEX jobs_runnable;
DROP INDEX jobs_awaiting_expiry;
DROP INDEX jobs_awaiting_approval;
DROP TABLE job_approvals;
ALTER TABLE jobs DROP COLUMN approved_at, DROP COLUMN approval_expires_at,
    DROP COLUMN reason, DROP COLUMN approvals_required;
UPDATE jobs SET state = 'failed' WHERE state IN ('rejected', 'expired');
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check CHECK (state IN
    ('queued', 'planned', 'awaiting_approval', 'approved', 'running',
     'succeeded', 'failed', 'canceled'));
