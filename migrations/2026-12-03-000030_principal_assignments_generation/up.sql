-- Each principal carries the generation of its latest role-assignment change. A request waits
-- for its API process's enforcer only as far as its own principal's changes (no one else's
-- assignments decide for it), so one tenant's membership churn no longer stalls every other
-- tenant's requests behind a refresh. Kept on the principal, not only in the change log: the
-- log is forgotten after an hour, and a request must never read a forgotten change as none.
ALTER TABLE principals ADD COLUMN assignments_generation bigint NOT NULL DEFAULT 0;

UPDATE principals p SET assignments_generation = c.generation
FROM (SELECT principal_id, max(generation) AS generation FROM authz_changes GROUP BY principal_id) c
WHERE c.principal_id = p.id;

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
