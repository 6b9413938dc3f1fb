DROP SEQUENCE fencing_tokens;
