CREATE OR REPLACE FUNCTION record_authz_change(p uuid, t uuid, r text, g boolean) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    next bigint;
BEGIN
    UPDATE authz_generation SET generation = generation + 1 RETURNING generation INTO next;
    INSERT INTO authz_changes (generation, principal_id, tenant_id, role, granted)
        VALUES (next, p, t, r, g);
    UPDATE principals SET assignments_generation = next WHERE id = p;
END $$;
