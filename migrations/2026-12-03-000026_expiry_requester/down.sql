ALTER TABLE environments DROP COLUMN expires_set_by;
