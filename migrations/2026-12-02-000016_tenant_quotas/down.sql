DROP INDEX IF EXISTS api_keys_tenant_live_idx;
DROP TABLE tenant_quotas;
