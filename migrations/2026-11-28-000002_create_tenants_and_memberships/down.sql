DROP TRIGGER principals_bump_authz_generation ON principals;
DROP TABLE memberships;
DROP FUNCTION bump_authz_generation();
DROP TABLE authz_generation;
DROP TABLE tenants;
