-- A tenant's change policy per stage (issue 11): approvals, drift checks, schedules, TTLs and
-- the promotion order, as the JSON `bulkhead_core::governance::TenantPolicy` writes. A tenant
-- without a row has the default policy.
CREATE TABLE tenant_policies (
    tenant_id  uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    policy     jsonb NOT NULL CHECK (jsonb_typeof(policy) = 'object'),
    updated_by uuid REFERENCES principals (id) ON DELETE SET NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
