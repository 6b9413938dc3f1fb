-- Lifecycle schedules (issue 11): jobs that stop and start an environment (its login roles
-- cannot log in while it is `stopped`), when the scheduler next looks at an environment whose
-- stage has a schedule, and every stretch an environment stood stopped (metering does not
-- charge environment-hours for it).
ALTER TABLE jobs DROP CONSTRAINT jobs_operation_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_operation_check
    CHECK (operation IN ('apply', 'plan', 'destroy', 'drift_check', 'stop', 'start'));

ALTER TABLE environments ADD COLUMN schedule_due_at timestamptz;

-- The scheduler's tick: environments whose next window edge has come.
CREATE INDEX environments_schedule_due ON environments (schedule_due_at)
    WHERE schedule_due_at IS NOT NULL;

CREATE TABLE environment_stops (
    id             uuid PRIMARY KEY,
    environment_id uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    stopped_at     timestamptz NOT NULL,
    started_at     timestamptz CHECK (started_at IS NULL OR started_at >= stopped_at),
    -- The job that stopped it, and whether the scheduler (not a person) asked for it.
    stop_job_id    uuid NOT NULL,
    scheduled      boolean NOT NULL,
    start_job_id   uuid
);

-- At most one open stop per environment; metering reads the stops of a stretch by environment.
CREATE UNIQUE INDEX environment_stops_open ON environment_stops (environment_id)
    WHERE started_at IS NULL;
CREATE INDEX environment_stops_by_environment ON environment_stops (environment_id, stopped_at);
