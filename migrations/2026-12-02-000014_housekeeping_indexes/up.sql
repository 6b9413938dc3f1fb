-- Housekeeping: the relay's claim on outbox rows.

-- A relay holds the rows it took while it publishes them (taken FOR UPDATE SKIP LOCKED, so
-- several relays never take the same row); a relay that died lets go when the hold ends.
ALTER TABLE outbox ADD COLUMN claimed_until timestamptz;
