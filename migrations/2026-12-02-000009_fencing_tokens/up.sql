-- Fencing tokens come from one sequence for every job: a later claim of any job of an
-- environment holds a higher token than every earlier one, which is what the target's fence
-- (bulkhead_meta.fence, one row per environment) compares.
CREATE SEQUENCE fencing_tokens AS bigint;
SELECT setval('fencing_tokens', greatest(1, (SELECT coalesce(max(fencing_token), 0) + 1 FROM jobs)));
