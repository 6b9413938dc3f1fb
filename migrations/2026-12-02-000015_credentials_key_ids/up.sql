-- Which credentials key sealed each row: its id (a fingerprint of the key, see core's crypto.rs),
-- so the key can be rotated and `bulkhead reseal` can find what an older key still holds.
-- NULL marks rows sealed before key ids existed; they open with whichever configured key fits.
ALTER TABLE environment_credentials
    ADD COLUMN key_id text CONSTRAINT environment_credentials_key_id_format
        CHECK (key_id ~ '^[0-9a-f]{16}$');
