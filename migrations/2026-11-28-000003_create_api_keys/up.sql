-- API keys: each key is its own service-account principal with one role in one tenant.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    principal_id uuid NOT NULL UNIQUE REFERENCES principals (id) ON DELETE CASCADE,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    role         text NOT NULL CHECK (role IN ('tenant_admin', 'operator', 'approver', 'viewer', 'billing')),
    prefix       text NOT NULL CHECK (prefix ~ '^bk_[0-9a-f]{8}$'),
    secret_hash  bytea NOT NULL UNIQUE CHECK (octet_length(secret_hash) = 32),
    created_by   uuid REFERENCES principals (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    CONSTRAINT api_keys_expiry_after_creation CHECK (expires_at IS NULL OR expires_at > created_at)
);
CREATE INDEX api_keys_tenant_id ON api_keys (tenant_id, id);
