-- An environment may expire (issue 11: ephemeral environments for CI pipelines and previews):
-- once `expires_at` passes, a worker queues its destroy. The index serves the workers' sweep.
ALTER TABLE environments ADD COLUMN expires_at timestamptz;
CREATE INDEX environments_expiring ON environments (expires_at)
    WHERE expires_at IS NOT NULL AND state <> 'destroyed';
