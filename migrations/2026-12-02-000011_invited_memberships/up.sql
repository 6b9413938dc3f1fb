-- A membership given to an account that already exists is `invited` until that account accepts
-- it while signed in (GET /v1/me/invitations); only `active` memberships grant anything.
ALTER TABLE memberships ADD COLUMN state text NOT NULL DEFAULT 'active'
    CHECK (state IN ('active', 'invited'));
ALTER TABLE memberships ADD COLUMN invitation_expires_at timestamptz;
CREATE INDEX memberships_pending ON memberships (principal_id) WHERE state = 'invited';
