-- Signed webhooks (issue 11): a tenant's endpoints, and one delivery row per event per
-- endpoint, written by triggers in the transaction that makes the change (a job's or an
-- environment's state, an approval decision), so no event is lost or sent for a change that
-- rolled back; workers send them in order per endpoint, with retries, from this outbox.
CREATE TABLE webhooks (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url               text NOT NULL CHECK (char_length(url) <= 2000),
    events            text[] NOT NULL CHECK (cardinality(events) BETWEEN 1 AND 32),
    -- The signing secret, sealed with the credentials key (AAD: the webhook id).
    secret_nonce      bytea NOT NULL CHECK (octet_length(secret_nonce) = 12),
    secret_ciphertext bytea NOT NULL,
    secret_key_id     text NOT NULL,
    created_by        uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz
);
CREATE INDEX webhooks_by_tenant ON webhooks (tenant_id) WHERE deleted_at IS NULL;

CREATE TABLE webhook_deliveries (
    seq             bigserial PRIMARY KEY,
    id              uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    webhook_id      uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    tenant_id       uuid NOT NULL,
    event_type      text NOT NULL,
    subject         text NOT NULL,
    data            jsonb NOT NULL,
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claimed_until   timestamptz,
    last_status     integer,
    last_error      text,
    delivered_at    timestamptz
);
-- The sender's pick: the oldest pending delivery of each endpoint.
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook_id, seq) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_listed ON webhook_deliveries (webhook_id, seq DESC);

-- Queues an event for every live endpoint of the tenant that subscribed to it (or to `*`).
CREATE FUNCTION bulkhead_webhook_event(tenant uuid, kind text, subj text, payload jsonb)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO webhook_deliveries (webhook_id, tenant_id, event_type, subject, data)
    SELECT w.id, tenant, kind, subj, payload FROM webhooks w
    WHERE w.tenant_id = tenant AND w.deleted_at IS NULL
      AND (kind = ANY (w.events) OR '*' = ANY (w.events))
    ORDER BY w.id
$$;

CREATE FUNCTION bulkhead_job_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.state IS NOT DISTINCT FROM NEW.state THEN
        RETURN NULL;
    END IF;
    PERFORM bulkhead_webhook_event(NEW.tenant_id, 'job.' || NEW.state, 'jobs/' || NEW.id,
        jsonb_build_object('job_id', NEW.id, 'environment_id', NEW.environment_id,
            'operation', NEW.operation, 'state', NEW.state,
            'previous_state', CASE WHEN TG_OP = 'UPDATE' THEN OLD.state END,
            'scheduled', NEW.scheduled, 'requested_by', NEW.requested_by, 'error', NEW.error));
    IF NEW.state = 'awaiting_approval' THEN
        PERFORM bulkhead_webhook_event(NEW.tenant_id, 'approval.requested', 'jobs/' || NEW.id,
            jsonb_build_object('job_id', NEW.id, 'environment_id', NEW.environment_id,
                'operation', NEW.operation, 'plan_hash', NEW.plan_hash,
                'approvals_required', NEW.approvals_required,
                'approval_expires_at', NEW.approval_expires_at, 'reason', NEW.reason));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_webhook_events AFTER INSERT OR UPDATE OF state ON jobs
    FOR EACH ROW EXECUTE FUNCTION bulkhead_job_events();

CREATE FUNCTION bulkhead_environment_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind text;
BEGIN
    IF OLD.state IS NOT DISTINCT FROM NEW.state THEN
        RETURN NULL;
    END IF;
    kind := CASE
        WHEN NEW.state = 'ready' AND OLD.state = 'stopped' THEN 'environment.started'
        WHEN NEW.state IN ('ready', 'failed', 'drifted', 'stopped', 'destroyed') THEN 'environment.' || NEW.state
    END;
    IF kind IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM bulkhead_webhook_event(NEW.tenant_id, kind, 'environments/' || NEW.id,
        jsonb_build_object('environment_id', NEW.id, 'name', NEW.name, 'stage', NEW.stage,
            'state', NEW.state, 'previous_state', OLD.state,
            'blueprint', NEW.blueprint, 'blueprint_version', NEW.blueprint_version));
    RETURN NULL;
END
$$;
CREATE TRIGGER environments_webhook_events AFTER UPDATE OF state ON environments
    FOR EACH ROW EXECUTE FUNCTION bulkhead_environment_events();

CREATE FUNCTION bulkhead_approval_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bulkhead_webhook_event(j.tenant_id, 'approval.decided', 'jobs/' || j.id,
        jsonb_build_object('job_id', j.id, 'environment_id', j.environment_id,
            'decision', NEW.decision, 'plan_hash', NEW.plan_hash, 'decided_by', NEW.approver_id, 'comment', NEW.comment))
    FROM jobs j WHERE j.id = NEW.job_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER job_approvals_webhook_events AFTER INSERT ON job_approvals
    FOR EACH ROW EXECUTE FUNCTION bulkhead_approval_events();
