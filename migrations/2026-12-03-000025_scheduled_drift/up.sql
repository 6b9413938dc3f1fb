-- Drift checks on a schedule (issue 11): when an environment's next scheduled drift check is
-- due (its stage's interval, the first one spread over the interval by environment id), and
-- which jobs the scheduler queued (a scheduled check that finds drift on a `repair` stage
-- queues the repair).
ALTER TABLE environments ADD COLUMN drift_check_due_at timestamptz;
ALTER TABLE jobs ADD COLUMN scheduled boolean NOT NULL DEFAULT false;

-- Environments standing today: first checks spread over six hours (the shortest default
-- interval); after it, each follows its stage's interval.
UPDATE environments
SET drift_check_due_at = now() + make_interval(secs => (abs(hashtext(id::text)) % 21600)::double precision)
WHERE state <> 'destroyed';

-- The scheduler's tick: due environments that can be checked, oldest due first.
CREATE INDEX environments_drift_due ON environments (drift_check_due_at)
    WHERE state IN ('ready', 'drifted');
