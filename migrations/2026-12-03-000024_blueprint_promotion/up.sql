-- Blueprint upgrades and promotion (issue 11). An apply job may carry the blueprint version it
-- brings its environment to (an upgrade); the environment takes that version when the apply
-- succeeds.
ALTER TABLE jobs ADD COLUMN blueprint_version integer CHECK (blueprint_version > 0);

-- Whether a reviewed job's requester may approve it, as the policy said when it was asked for
-- (a later policy change applies to later jobs, as the number of approvals does).
ALTER TABLE jobs ADD COLUMN requester_may_approve boolean NOT NULL DEFAULT false;

-- Promotion evidence: the first time a blueprint version was ready on an environment of a
-- stage in a tenant. A version may be upgraded to on a stage only once it is here for the
-- stage before it in the tenant's promotion order. Kept after the environment is destroyed.
CREATE TABLE promotion_evidence (
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    blueprint      text NOT NULL,
    version        integer NOT NULL CHECK (version > 0),
    stage          text NOT NULL,
    environment_id uuid NOT NULL,
    first_ready_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, blueprint, version, stage)
);

-- What is ready today counts as evidence already.
INSERT INTO promotion_evidence (tenant_id, blueprint, version, stage, environment_id, first_ready_at)
SELECT DISTINCT ON (tenant_id, blueprint, blueprint_version, stage)
       tenant_id, blueprint, blueprint_version, stage, id, updated_at
FROM environments WHERE state IN ('ready', 'drifted')
ORDER BY tenant_id, blueprint, blueprint_version, stage, updated_at;
