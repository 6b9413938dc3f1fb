DROP INDEX environments_expiring;
ALTER TABLE environments DROP COLUMN expires_at;
