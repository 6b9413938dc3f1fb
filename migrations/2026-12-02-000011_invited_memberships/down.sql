DROP INDEX memberships_pending;
ALTER TABLE memberships DROP COLUMN invitation_expires_at;
ALTER TABLE memberships DROP COLUMN state;
