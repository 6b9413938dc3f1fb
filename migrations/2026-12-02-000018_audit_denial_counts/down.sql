DROP TABLE audit_denial_counts;
