-- Who set an environment's TTL (on create or by PATCH): the destroy its expiry queues is theirs,
-- so on a stage whose destroys need approval they cannot approve it themselves (a live attack
-- found the person who set a TTL approving its destroy alone).
ALTER TABLE environments ADD COLUMN expires_set_by uuid;
