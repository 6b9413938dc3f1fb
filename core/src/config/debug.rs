//! `Debug` for the configuration: every URL without its password, no secret at all. The
//! structs are destructured field by field, so a new field does not compile until it is
//! placed here (shown, or redacted).

use super::{Config, WorkerConfig};
use crate::dburl::redact;
use std::fmt;

/// How a secret that is set shows.
const SET: &str = "<redacted>";

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            database_url,
            db_pool_size,
            listen,
            http_workers,
            token_ttl,
            tls,
            bootstrap_admin,
            max_concurrent_hashes,
            login_max_failures,
            login_lockout,
            max_body_bytes,
            amqp_url,
            amqp_ca_file,
            queue_prefix,
            credentials_keys,
            credentials_key_is_default,
            metrics_token,
            mail,
            mail_from,
            limits,
            retention,
            metering,
            webhooks,
            worker,
        } = self;
        f.debug_struct("Config")
            .field("database_url", &redact(database_url))
            .field("db_pool_size", db_pool_size)
            .field("listen", listen)
            .field("http_workers", http_workers)
            .field("token_ttl", token_ttl)
            .field("tls", tls)
            .field("bootstrap_admin", bootstrap_admin)
            .field("max_concurrent_hashes", max_concurrent_hashes)
            .field("login_max_failures", login_max_failures)
            .field("login_lockout", login_lockout)
            .field("max_body_bytes", max_body_bytes)
            .field("amqp_url", &redact(amqp_url))
            .field("amqp_ca_file", amqp_ca_file)
            .field("queue_prefix", queue_prefix)
            .field("credentials_keys", credentials_keys)
            .field("credentials_key_is_default", credentials_key_is_default)
            .field("metrics_token", &metrics_token.as_ref().map(|_| SET))
            .field("mail", mail)
            .field("mail_from", mail_from)
            .field("limits", limits)
            .field("retention", retention)
            .field("metering", metering)
            .field("webhooks", webhooks)
            .field("worker", worker)
            .finish()
    }
}

impl fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            id,
            concurrency,
            lease,
            max_attempts,
            retry_base,
            sweep_every,
            approval_wait,
            shared_admin_url,
            pooled_database,
            dedicated_admin_url,
            blueprints_dir,
            spare_databases,
        } = self;
        f.debug_struct("WorkerConfig")
            .field("id", id)
            .field("concurrency", concurrency)
            .field("lease", lease)
            .field("max_attempts", max_attempts)
            .field("retry_base", retry_base)
            .field("sweep_every", sweep_every)
            .field("approval_wait", approval_wait)
            .field("shared_admin_url", &redact(shared_admin_url))
            .field("pooled_database", pooled_database)
            .field("dedicated_admin_url", &redact(dedicated_admin_url))
            .field("blueprints_dir", blueprints_dir)
            .field("spare_databases", spare_databases)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::collections::HashMap;

    #[test]
    fn debug_shows_no_secret_of_any_field() {
        // One distinct secret per setting; the reserved characters make the URL-encoded forms
        // differ from the plain ones, and both must stay out.
        let secrets = [
            "db/pa@ss%word1",
            "amqp:pa?ss#word2",
            "shared-pa@ssword3",
            "dedicated-pa@ssword4",
            "smtp-pa@ssword5",
            "query-password6",
            "bootstrap-password-7",
            "metrics-token-abcdef8",
        ];
        let current = "3c".repeat(32);
        let older = "4d".repeat(32);
        let e = crate::dburl::encode;
        let vars: HashMap<&str, String> = HashMap::from([
            (
                "DATABASE_URL",
                format!("postgres://bulkhead:{}@db.internal/bulkhead", e(secrets[0])),
            ),
            (
                "AMQP_URL",
                format!("amqps://bulkhead:{}@mq.internal/%2f", e(secrets[1])),
            ),
            (
                "BULKHEAD_TARGET_SHARED_URL",
                format!("postgres://admin:{}@[fd00::7]:5432/postgres", e(secrets[2])),
            ),
            (
                "BULKHEAD_TARGET_DEDICATED_URL",
                format!(
                    "postgres://admin:{}@pg2.internal/postgres?password={}",
                    e(secrets[3]),
                    e(secrets[5])
                ),
            ),
            (
                "BULKHEAD_SMTP_URL",
                format!("smtps://mailer:{}@mail.example.com:465", e(secrets[4])),
            ),
            ("BULKHEAD_BOOTSTRAP_ADMIN_EMAIL", "admin@example.com".into()),
            ("BULKHEAD_BOOTSTRAP_ADMIN_PASSWORD", secrets[6].into()),
            ("BULKHEAD_METRICS_TOKEN", secrets[7].into()),
            ("BULKHEAD_CREDENTIALS_KEY", current.clone()),
            ("BULKHEAD_CREDENTIALS_KEYS", older.clone()),
        ]);
        let config = Config::from_lookup(|name| vars.get(name).cloned()).expect("config");
        let shown = format!("{config:?}");
        let pretty = format!("{config:#?}");
        for secret in secrets
            .iter()
            .map(|s| (*s).to_owned())
            .chain(secrets.iter().map(|s| e(s)))
            .chain([current, older])
        {
            assert!(!shown.contains(&secret), "{secret} in {shown}");
            assert!(!pretty.contains(&secret), "{secret} in {pretty}");
        }
        // Key bytes in any form: 0x3c = 60, 0x4d = 77.
        assert!(
            !shown.contains("60, 60") && !shown.contains("77, 77"),
            "{shown}"
        );
        // What is not secret still shows, so the output stays useful.
        for visible in [
            "bulkhead:***@db.internal",
            "[fd00::7]",
            "mail.example.com",
            "admin@example.com",
            "metrics_token: Some(\"<redacted>\")",
        ] {
            assert!(shown.contains(visible), "{visible} not in {shown}");
        }
    }
}
