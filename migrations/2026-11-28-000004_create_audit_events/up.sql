-- Append-only audit trail; each row hashes the previous row's hash with its own content.
CREATE TABLE audit_events (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          uuid NOT NULL UNIQUE,
    occurred_at timestamptz NOT NULL,
    actor_id    uuid,
    actor       text NOT NULL,
    tenant_id   uuid,
    action      text NOT NULL CHECK (action ~ '^[a-z_]+\.[a-z_]+$'),
    target      text NOT NULL,
    result      text NOT NULL CHECK (result IN ('success', 'denied', 'failure')),
    request_id  text NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}',
    prev_hash   bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash        bytea NOT NULL UNIQUE CHECK (octet_length(hash) = 32)
);
CREATE INDEX audit_events_tenant_seq ON audit_events (tenant_id, seq);

-- Rows are never changed or removed by the application; make a stray UPDATE/DELETE loud.
-- (A superuser can still disable the trigger: that is what `verify` is for.)
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END $$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
