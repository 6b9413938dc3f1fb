-- Tenants and who may act on them (role assignments; casbin's `g` lines come from here).
CREATE TABLE tenants (
    id         uuid PRIMARY KEY,
    slug       text NOT NULL UNIQUE CHECK (slug ~ '^[a-z][a-z0-9-]{2,39}$'),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    tier       text NOT NULL CHECK (tier IN ('shared', 'dedicated')),
    region     text NOT NULL CHECK (region ~ '^[a-z]{2}(-[a-z0-9]+){1,3}$'),
    state      text NOT NULL DEFAULT 'active'
               CHECK (state IN ('active', 'suspended', 'offboarding', 'offboarded')),
    cost_tags  jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(cost_tags) = 'object'),
    created_by uuid REFERENCES principals (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE memberships (
    principal_id uuid NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    role         text NOT NULL CHECK (role IN ('partner', 'tenant_admin', 'operator', 'approver', 'viewer', 'billing')),
    created_by   uuid REFERENCES principals (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal_id, tenant_id)
);
CREATE INDEX memberships_tenant_id ON memberships (tenant_id);

-- A counter that moves whenever role assignments change, so every API process can tell in the
-- same round trip as authentication whether its in-memory enforcer is stale.
CREATE TABLE authz_generation (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    generation bigint NOT NULL
);
INSERT INTO authz_generation (singleton, generation) VALUES (true, 1);

CREATE FUNCTION bump_authz_generation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE authz_generation SET generation = generation + 1;
    RETURN NULL;
END $$;
CREATE TRIGGER memberships_bump_authz_generation
    AFTER INSERT OR UPDATE OR DELETE ON memberships
    FOR EACH STATEMENT EXECUTE FUNCTION bump_authz_generation();
CREATE TRIGGER principals_bump_authz_generation
    AFTER INSERT OR UPDATE OF platform_role OR DELETE ON principals
    FOR EACH STATEMENT EXECUTE FUNCTION bump_authz_generation();
