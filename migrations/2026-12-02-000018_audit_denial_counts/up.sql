-- Denials beyond a principal's per-minute allowance of individually chained audit events are
-- counted here (an upsert: no lock on the audit chain), per principal, tenant, action and
-- window, and folded into the chain as one `denied` event per row once the window closes.
CREATE TABLE audit_denial_counts (
    principal_id uuid NOT NULL,
    -- The nil UUID when the denial concerned no tenant (a platform-wide action).
    tenant_id uuid NOT NULL,
    action text NOT NULL,
    window_start timestamptz NOT NULL,
    window_end timestamptz NOT NULL,
    actor text NOT NULL,
    target text NOT NULL,
    denials bigint NOT NULL,
    last_request_id text NOT NULL,
    PRIMARY KEY (principal_id, tenant_id, action, window_start)
);
CREATE INDEX audit_denial_counts_window_end ON audit_denial_counts (window_end);
