DROP TABLE environment_stops;
DROP INDEX environments_schedule_due;
ALTER TABLE environments DROP COLUMN schedule_due_at;
DELETE FROM jobs WHERE operation IN ('stop', 'start');
ALTER TABLE jobs DROP CONSTRAINT jobs_operation_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_operation_check
    CHECK (operation IN ('apply', 'plan', 'destroy', 'drift_check'));
