-- Every worker's sweep ends the sessions of stopped environments' roles that slipped past the
-- stop (issue 11): it reads the stopped environments each tick.
CREATE INDEX environments_stopped ON environments (id) WHERE state = 'stopped';
