-- Environments as code: environments, their jobs (with leases), job events, the outbox to the
-- broker, the resources an environment owns, isolation guarantees, and encrypted credentials.
CREATE TABLE environments (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name              text NOT NULL CHECK (name ~ '^[a-z][a-z0-9-]{1,39}$'),
    stage             text NOT NULL CHECK (stage IN ('development', 'staging', 'production')),
    isolation         text NOT NULL CHECK (isolation IN ('shared', 'dedicated')),
    blueprint         text NOT NULL,
    blueprint_version integer NOT NULL CHECK (blueprint_version > 0),
    cost_tags         jsonb NOT NULL CHECK (jsonb_typeof(cost_tags) = 'object'),
    state             text NOT NULL DEFAULT 'pending' CHECK (state IN
                        ('pending', 'provisioning', 'ready', 'drifted', 'failed', 'stopped',
                         'destroying', 'destroyed')),
    drift             jsonb,
    created_by        uuid REFERENCES principals (id) ON DELETE SET NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
-- A name is reusable once its environment is destroyed.
CREATE UNIQUE INDEX environments_live_name ON environments (tenant_id, name) WHERE state <> 'destroyed';

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    environment_id   uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    operation        text NOT NULL CHECK (operation IN ('apply', 'plan', 'destroy', 'drift_check')),
    state            text NOT NULL DEFAULT 'queued' CHECK (state IN
                       ('queued', 'planned', 'awaiting_approval', 'approved', 'running',
                        'succeeded', 'failed', 'canceled')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     integer NOT NULL DEFAULT 3 CHECK (max_attempts > 0),
    run_after        timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    lease_expires_at timestamptz,
    fencing_token    bigint NOT NULL DEFAULT 0,
    plan             jsonb,
    plan_hash        text,
    -- For an apply of a reviewed plan: the plan it must match.
    expected_plan_hash text,
    requested_by     uuid REFERENCES principals (id) ON DELETE SET NULL,
    approved_by      uuid REFERENCES principals (id) ON DELETE SET NULL,
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    CONSTRAINT jobs_lease_complete CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL)),
    CONSTRAINT jobs_running_holds_lease CHECK (state <> 'running' OR lease_owner IS NOT NULL)
);
-- One running job per environment; the rest wait in order.
CREATE UNIQUE INDEX jobs_one_running_per_environment ON jobs (environment_id) WHERE state = 'running';
CREATE INDEX jobs_environment_order ON jobs (environment_id, created_at, id);
CREATE INDEX jobs_tenant ON jobs (tenant_id, id);
CREATE INDEX jobs_active ON jobs (state, run_after) WHERE state IN ('queued', 'running');

CREATE TABLE job_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind        text NOT NULL,
    message     text NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX job_events_job ON job_events (job_id, id);

-- Messages to publish: written in the transaction that creates or requeues a job, published by
-- the relay with publisher confirms, marked sent only after the confirm. A row may be published
-- twice (two relays, a crash before marking): workers treat duplicates as no-ops.
CREATE TABLE outbox (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at    timestamptz,
    attempts   integer NOT NULL DEFAULT 0,
    last_error text
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

CREATE TABLE resources (
    id             uuid PRIMARY KEY,
    environment_id uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    kind           text NOT NULL,
    name           text NOT NULL,
    attributes     jsonb NOT NULL DEFAULT '{}',
    cost_tags      jsonb NOT NULL CHECK (jsonb_typeof(cost_tags) = 'object'),
    state          text NOT NULL CHECK (state IN ('present', 'deleted')),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (environment_id, kind, name)
);

CREATE TABLE isolation_guarantees (
    environment_id uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    layer          text NOT NULL CHECK (layer IN ('data', 'identity', 'network', 'compute', 'encryption')),
    mechanism      text NOT NULL,
    status         text NOT NULL CHECK (status IN ('declared', 'verified', 'violated')),
    evidence       text NOT NULL,
    checked_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment_id, layer, mechanism)
);

CREATE TABLE environment_credentials (
    environment_id uuid PRIMARY KEY REFERENCES environments (id) ON DELETE CASCADE,
    host           text NOT NULL,
    port           integer NOT NULL,
    database       text NOT NULL,
    schema         text NOT NULL,
    username       text NOT NULL,
    nonce          bytea NOT NULL CHECK (octet_length(nonce) = 12),
    ciphertext     bytea NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
