-- Principals (people and service accounts) and their login sessions.
CREATE TABLE principals (
    id                    uuid PRIMARY KEY,
    kind                  text NOT NULL CHECK (kind IN ('user', 'service_account')),
    email                 text UNIQUE CHECK (email = lower(email) AND length(email) <= 254),
    display_name          text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    password_hash         text,
    platform_role         text CHECK (platform_role IN ('platform_admin', 'partner')),
    invitation_token_hash bytea UNIQUE CHECK (octet_length(invitation_token_hash) = 32),
    invitation_expires_at timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    -- a user has an email; a service account has neither email nor password
    CONSTRAINT principals_user_has_email CHECK ((kind = 'user') = (email IS NOT NULL)),
    CONSTRAINT principals_service_account_no_password CHECK (kind = 'user' OR password_hash IS NULL),
    CONSTRAINT principals_service_account_no_platform_role CHECK (kind = 'user' OR platform_role IS NULL),
    -- an invitation is a token and its expiry, together
    CONSTRAINT principals_invitation_complete
        CHECK ((invitation_token_hash IS NULL) = (invitation_expires_at IS NULL))
);

CREATE TABLE sessions (
    id           uuid PRIMARY KEY,
    principal_id uuid NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    token_hash   bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    CONSTRAINT sessions_expiry_after_creation CHECK (expires_at > created_at)
);
CREATE INDEX sessions_principal_id ON sessions (principal_id);
