-- Every change to a role assignment, at the generation it made: API processes apply the
-- changes past their enforcer's generation one by one instead of reloading every assignment.
-- Row-level triggers write it in the transaction of the change; the generation counter's row
-- lock orders them, so a process that reads generation G sees every change up to G committed.
CREATE TABLE authz_changes (
    generation bigint PRIMARY KEY,
    principal_id uuid NOT NULL,
    -- A tenant membership (tenant_id set) or a platform role (tenant_id NULL).
    tenant_id uuid,
    role text NOT NULL,
    granted boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX authz_changes_created_at ON authz_changes (created_at);

CREATE FUNCTION record_authz_change(p uuid, t uuid, r text, g boolean) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    next bigint;
BEGIN
    UPDATE authz_generation SET generation = generation + 1 RETURNING generation INTO next;
    INSERT INTO authz_changes (generation, principal_id, tenant_id, role, granted)
        VALUES (next, p, t, r, g);
END $$;

CREATE FUNCTION memberships_authz_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was boolean := TG_OP <> 'INSERT' AND OLD.state = 'active';
    now_is boolean := TG_OP <> 'DELETE' AND NEW.state = 'active';
BEGIN
    IF was AND (NOT now_is OR OLD.role IS DISTINCT FROM NEW.role
                OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id
                OR OLD.principal_id IS DISTINCT FROM NEW.principal_id) THEN
        PERFORM record_authz_change(OLD.principal_id, OLD.tenant_id, OLD.role, false);
    END IF;
    IF now_is AND (NOT was OR OLD.role IS DISTINCT FROM NEW.role
                   OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id
                   OR OLD.principal_id IS DISTINCT FROM NEW.principal_id) THEN
        PERFORM record_authz_change(NEW.principal_id, NEW.tenant_id, NEW.role, true);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION principals_authz_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was text := CASE WHEN TG_OP <> 'INSERT' THEN OLD.platform_role END;
    now_is text := CASE WHEN TG_OP <> 'DELETE' THEN NEW.platform_role END;
BEGIN
    IF was IS DISTINCT FROM now_is THEN
        IF was IS NOT NULL THEN
            PERFORM record_authz_change(OLD.id, NULL, was, false);
        END IF;
        IF now_is IS NOT NULL THEN
            PERFORM record_authz_change(NEW.id, NULL, now_is, true);
        END IF;
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER memberships_bump_authz_generation ON memberships;
DROP TRIGGER principals_bump_authz_generation ON principals;
CREATE TRIGGER memberships_authz_change
    AFTER INSERT OR UPDATE OR DELETE ON memberships
    FOR EACH ROW EXECUTE FUNCTION memberships_authz_change();
CREATE TRIGGER principals_authz_change
    AFTER INSERT OR UPDATE OF platform_role OR DELETE ON principals
    FOR EACH ROW EXECUTE FUNCTION principals_authz_change();
