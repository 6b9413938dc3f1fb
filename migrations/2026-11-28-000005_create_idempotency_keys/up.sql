-- Saved responses for POSTs sent with an Idempotency-Key, per principal.
CREATE TABLE idempotency_keys (
    principal_id    uuid NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    key             text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash    bytea NOT NULL CHECK (octet_length(request_hash) = 32),
    response_status smallint NOT NULL,
    response_body   jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal_id, key)
);
