-- Login and invitation attempts per key (account and client address, client address, account),
-- counted before any password is hashed and shared by every API replica.
CREATE TABLE login_throttle (
    key text PRIMARY KEY,
    attempts integer NOT NULL,
    window_start timestamptz NOT NULL
);
