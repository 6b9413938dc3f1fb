-- Past its failure limit an account's password is checked at most once per slot, whatever the
-- number of addresses guessing at once: the next free slot lives on the account's window.
ALTER TABLE login_throttle ADD COLUMN next_slot_at timestamptz;

-- Addresses an account logged in from successfully: they skip the slot queue an attack from
-- elsewhere builds up, so the owner still gets in. Kept 90 days after the last success.
CREATE TABLE login_known_addresses (
    account_digest text NOT NULL,
    address text NOT NULL,
    last_success_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_digest, address)
);
CREATE INDEX login_known_addresses_last_success ON login_known_addresses (last_success_at);
