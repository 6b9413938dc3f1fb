DROP TRIGGER principals_authz_change ON principals;
DROP TRIGGER memberships_authz_change ON memberships;
CREATE TRIGGER memberships_bump_authz_generation
    AFTER INSERT OR UPDATE OR DELETE ON memberships
    FOR EACH STATEMENT EXECUTE FUNCTION bump_authz_generation();
CREATE TRIGGER principals_bump_authz_generation
    AFTER INSERT OR UPDATE OF platform_role OR DELETE ON principals
    FOR EACH STATEMENT EXECUTE FUNCTION bump_authz_generation();
DROP FUNCTION principals_authz_change();
DROP FUNCTION memberships_authz_change();
DROP FUNCTION record_authz_change(uuid, uuid, text, boolean);
DROP TABLE authz_changes;
