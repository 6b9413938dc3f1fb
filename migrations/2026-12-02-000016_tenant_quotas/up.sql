-- Per-tenant quota overrides set by a platform admin; NULL = the installation's default
-- (BULKHEAD_QUOTA_*). A row exists only for tenants with at least one override.
CREATE TABLE tenant_quotas (
    tenant_id uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    environments bigint CHECK (environments BETWEEN 0 AND 100000),
    queued_jobs bigint CHECK (queued_jobs BETWEEN 0 AND 100000),
    api_keys bigint CHECK (api_keys BETWEEN 0 AND 100000),
    members bigint CHECK (members BETWEEN 0 AND 100000),
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by uuid REFERENCES principals (id) ON DELETE SET NULL
);

-- The quota counts run inside the creating transaction: keep them on indexes (active jobs are
-- counted over `jobs_tenant`, a tenant's live keys over this one).
CREATE INDEX IF NOT EXISTS api_keys_tenant_live_idx ON api_keys (tenant_id)
    WHERE revoked_at IS NULL;
