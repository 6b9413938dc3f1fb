-- The isolation view tells the whole truth: gaps a tier has (`not_provided`, with where it is
-- provided), whether a guarantee is a wall or a default the tenant can lift with SET, and the
-- metadata layer (what a tenant learns about others from the catalogs).
ALTER TABLE isolation_guarantees DROP CONSTRAINT isolation_guarantees_layer_check;
ALTER TABLE isolation_guarantees ADD CONSTRAINT isolation_guarantees_layer_check
    CHECK (layer IN ('data', 'identity', 'metadata', 'network', 'compute', 'encryption'));
ALTER TABLE isolation_guarantees DROP CONSTRAINT isolation_guarantees_status_check;
ALTER TABLE isolation_guarantees ADD CONSTRAINT isolation_guarantees_status_check
    CHECK (status IN ('declared', 'verified', 'violated', 'not_provided'));
ALTER TABLE isolation_guarantees
    ADD COLUMN enforcement text NOT NULL DEFAULT 'wall' CHECK (enforcement IN ('wall', 'default', 'none')),
    ADD COLUMN provided_by text;
-- The old compute/statement_timeout entry claimed a wall the tenant can lift with SET; the next
-- verification records compute/resource_limits (a default) instead.
DELETE FROM isolation_guarantees WHERE layer = 'compute' AND mechanism = 'statement_timeout';
