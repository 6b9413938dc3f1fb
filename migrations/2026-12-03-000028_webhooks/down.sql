DROP TRIGGER job_approvals_webhook_events ON job_approvals;
DROP TRIGGER environments_webhook_events ON environments;
DROP TRIGGER jobs_webhook_events ON jobs;
DROP FUNCTION bulkhead_approval_events();
DROP FUNCTION bulkhead_environment_events();
DROP FUNCTION bulkhead_job_events();
DROP FUNCTION bulkhead_webhook_event(uuid, text, text, jsonb);
DROP TABLE webhook_deliveries;
DROP TABLE webhooks;
