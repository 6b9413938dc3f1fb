DROP TABLE tenant_policies;
