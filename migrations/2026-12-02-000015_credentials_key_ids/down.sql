-- Rows keep their ciphertexts; without ids they open with whichever configured key fits.
ALTER TABLE environment_credentials DROP COLUMN key_id;
