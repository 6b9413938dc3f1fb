DROP INDEX environments_drift_due;
ALTER TABLE jobs DROP COLUMN scheduled;
ALTER TABLE environments DROP COLUMN drift_check_due_at;
