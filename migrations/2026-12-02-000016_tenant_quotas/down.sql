DROP INDEX IF EXISTS api_keys_tenant_live_idx;
DROP INDEX IF EXISTS jobs_tenant_active_idx;
DROP TABLE tenant_quotas;
