-- Usage metering and charges (issue 10). Samples are append-only measurements; charges are
-- derived from them (hourly, per environment and SKU) with daily rollups for fast reads.

-- One metering pass: job-like status, so a failed or missed pass is visible with its error.
CREATE TABLE meter_passes (
    id uuid PRIMARY KEY,
    trigger text NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    state text NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'skipped')),
    started_at timestamptz NOT NULL DEFAULT now(),
    measured_at timestamptz,
    finished_at timestamptz,
    environments integer NOT NULL DEFAULT 0,
    samples integer NOT NULL DEFAULT 0,
    charges integer NOT NULL DEFAULT 0,
    error text
);
CREATE INDEX meter_passes_started_idx ON meter_passes (started_at DESC);

-- Per environment: up to when it has been metered, and the last measured values (storage for
-- the final period of a destroyed environment; cumulative counters to turn into deltas).
CREATE TABLE meter_cursors (
    environment_id uuid PRIMARY KEY REFERENCES environments (id) ON DELETE CASCADE,
    metered_until timestamptz NOT NULL,
    storage_bytes bigint NOT NULL,
    rows_read_total bigint NOT NULL,
    rows_written_total bigint NOT NULL
);

-- Installation-wide cursors (the pooled server's fixed cost) and connection tallies between
-- passes (peak and sum over ticks, per environment).
CREATE TABLE meter_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pooled_metered_until timestamptz,
    ticks integer NOT NULL DEFAULT 0
);
INSERT INTO meter_state DEFAULT VALUES;
CREATE TABLE meter_connection_tallies (
    environment_id uuid PRIMARY KEY REFERENCES environments (id) ON DELETE CASCADE,
    peak integer NOT NULL,
    total bigint NOT NULL
);

CREATE TABLE usage_samples (
    id bigserial PRIMARY KEY,
    pass_id uuid NOT NULL REFERENCES meter_passes (id),
    environment_id uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    isolation text NOT NULL,
    region text NOT NULL,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    standing_seconds numeric NOT NULL,
    storage_bytes bigint NOT NULL,
    storage_measured boolean NOT NULL,
    connections_peak integer NOT NULL,
    connections_avg numeric NOT NULL,
    rows_read bigint NOT NULL,
    rows_written bigint NOT NULL,
    cost_tags jsonb NOT NULL,
    CHECK (period_end > period_start),
    -- Two passes that overlap cannot both meter the same stretch of an environment.
    UNIQUE (environment_id, period_start)
);
CREATE INDEX usage_samples_tenant_idx ON usage_samples (tenant_id, period_end);
CREATE FUNCTION usage_samples_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'usage_samples is append-only';
END $$;
CREATE TRIGGER usage_samples_append_only BEFORE UPDATE ON usage_samples
    FOR EACH ROW EXECUTE FUNCTION usage_samples_append_only();

-- Charges per environment, SKU and hour: quantity × the unit price in force, exact.
CREATE TABLE charges (
    environment_id uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    sku_id text NOT NULL,
    hour timestamptz NOT NULL,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    sku_price_id text NOT NULL,
    region text NOT NULL,
    currency text NOT NULL,
    quantity numeric NOT NULL,
    list_unit_price numeric NOT NULL,
    cost numeric NOT NULL,
    allocation_method text,
    allocated_from text,
    cost_tags jsonb NOT NULL,
    PRIMARY KEY (environment_id, sku_id, hour)
);
CREATE INDEX charges_tenant_hour_idx ON charges (tenant_id, hour);
CREATE INDEX charges_hour_idx ON charges (hour);

-- Daily rollups: per environment (group_by=environment) and per tag set (everything else).
CREATE TABLE charges_daily (
    environment_id uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    sku_id text NOT NULL,
    day date NOT NULL,
    tags_digest text NOT NULL,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    currency text NOT NULL,
    unit text NOT NULL,
    -- One price per SKU, region and day (prices take effect at 00:00 UTC), so a day's cost is
    -- still quantity × this price; the daily FOCUS export reads these rows.
    region text NOT NULL,
    sku_price_id text NOT NULL,
    list_unit_price numeric NOT NULL,
    allocation_method text,
    allocated_from text,
    cost_tags jsonb NOT NULL,
    quantity numeric NOT NULL,
    cost numeric NOT NULL,
    PRIMARY KEY (environment_id, sku_id, day, tags_digest)
);
CREATE INDEX charges_daily_tenant_idx ON charges_daily (tenant_id, day);
CREATE TABLE charges_daily_tags (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    sku_id text NOT NULL,
    day date NOT NULL,
    tags_digest text NOT NULL,
    currency text NOT NULL,
    unit text NOT NULL,
    cost_tags jsonb NOT NULL,
    quantity numeric NOT NULL,
    cost numeric NOT NULL,
    PRIMARY KEY (tenant_id, day, sku_id, tags_digest)
);
CREATE INDEX charges_daily_tags_day_idx ON charges_daily_tags (day);

-- Budgets: one monthly budget per tenant; a threshold crossing is recorded (and audited) once
-- per period and threshold.
CREATE TABLE budgets (
    tenant_id uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    amount numeric NOT NULL CHECK (amount > 0),
    currency text NOT NULL,
    period text NOT NULL CHECK (period IN ('month')),
    thresholds integer[] NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by uuid REFERENCES principals (id) ON DELETE SET NULL
);
CREATE TABLE budget_crossings (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    period_start date NOT NULL,
    threshold integer NOT NULL,
    crossed_at timestamptz NOT NULL DEFAULT now(),
    spent numeric NOT NULL,
    PRIMARY KEY (tenant_id, period_start, threshold)
);

-- The metering pass finds each environment's start and end among its jobs.
CREATE INDEX IF NOT EXISTS jobs_environment_op_idx ON jobs (environment_id, operation)
    WHERE state = 'succeeded';
