-- Approvals bound to the plan (issue 11): a change of a stage whose policy needs approvals is
-- planned, then waits in `awaiting_approval` until enough distinct approvers approved its plan
-- hash (→ `approved`, then run), someone rejected it (→ `rejected`) or the wait expired
-- (→ `expired`).
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check CHECK (state IN
    ('queued', 'planned', 'awaiting_approval', 'approved', 'running',
     'succeeded', 'failed', 'canceled', 'rejected', 'expired'));
ALTER TABLE jobs
    ADD COLUMN approvals_required smallint NOT NULL DEFAULT 0
        CHECK (approvals_required BETWEEN 0 AND 10),
    ADD COLUMN reason text CHECK (char_length(reason) <= 500),
    ADD COLUMN approval_expires_at timestamptz,
    ADD COLUMN approved_at timestamptz;

-- One decision per approver and job; the plan hash it was given for is kept with it.
CREATE TABLE job_approvals (
    job_id      uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    approver_id uuid NOT NULL,
    decision    text NOT NULL CHECK (decision IN ('approved', 'rejected')),
    plan_hash   text NOT NULL,
    comment     text CHECK (char_length(comment) <= 1000),
    decided_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, approver_id)
);

-- The workers' sweep (expired waits) and a tenant's pending list.
CREATE INDEX jobs_awaiting_approval ON jobs (tenant_id, approval_expires_at)
    WHERE state = 'awaiting_approval';
CREATE INDEX jobs_awaiting_expiry ON jobs (approval_expires_at)
    WHERE state = 'awaiting_approval';
-- The sweeper's stranded-job query now looks at approved jobs too (their wake-up may be lost
-- like a queued job's).
CREATE INDEX jobs_runnable ON jobs (run_after) WHERE state IN ('queued', 'approved');
