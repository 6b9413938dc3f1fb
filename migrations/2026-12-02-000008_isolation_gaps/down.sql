DELETE FROM isolation_guarantees WHERE status = 'not_provided' OR layer = 'metadata';
ALTER TABLE isolation_guarantees DROP COLUMN provided_by, DROP COLUMN enforcement;
ALTER TABLE isolation_guarantees DROP CONSTRAINT isolation_guarantees_status_check;
ALTER TABLE isolation_guarantees ADD CONSTRAINT isolation_guarantees_status_check
    CHECK (status IN ('declared', 'verified', 'violated'));
ALTER TABLE isolation_guarantees DROP CONSTRAINT isolation_guarantees_layer_check;
ALTER TABLE isolation_guarantees ADD CONSTRAINT isolation_guarantees_layer_check
    CHECK (layer IN ('data', 'identity', 'network', 'compute', 'encryption'));
