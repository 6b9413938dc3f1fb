DROP INDEX environments_stopped;
