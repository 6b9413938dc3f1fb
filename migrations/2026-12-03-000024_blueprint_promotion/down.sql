DROP TABLE promotion_evidence;
ALTER TABLE jobs DROP COLUMN requester_may_approve, DROP COLUMN blueprint_version;
