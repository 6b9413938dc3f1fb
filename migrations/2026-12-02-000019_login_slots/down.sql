DROP TABLE login_known_addresses;
ALTER TABLE login_throttle DROP COLUMN next_slot_at;
