//! Configuration from environment variables, with safe local defaults; every bad value is
//! reported as one line naming the variable and what it expects.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod debug;
pub mod metering;
mod secrets;
pub mod webhooks;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

/// The bootstrap platform admin, created at first start only.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapAdmin {
    pub email: String,
    pub password: String,
}

impl std::fmt::Debug for BootstrapAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapAdmin")
            .field("email", &self.email)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How mail (invitations) leaves Bulkhead.
#[derive(Clone, PartialEq, Eq)]
pub enum MailDelivery {
    /// `BULKHEAD_SMTP_URL`: `smtps://host:465` (TLS) or `smtp://host:587?tls=required`
    /// (STARTTLS), with `user:password@` when the relay wants a login; plain `smtp://` only to
    /// a relay on this machine.
    Smtp { url: String },
    /// `BULKHEAD_MAIL=log`: each mail is written to the log, clearly marked, and not delivered
    /// (development only: the log then holds one-time tokens).
    Log,
}

impl std::fmt::Debug for MailDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Smtp { url } => f
                .debug_struct("Smtp")
                .field("url", &crate::dburl::redact(url))
                .finish(),
            Self::Log => f.write_str("Log"),
        }
    }
}

/// Its `Debug` (in `config/debug.rs`) shows every URL without its password and no secret.
#[derive(Clone)]
pub struct Config {
    /// `DATABASE_URL`: the control database.
    pub database_url: String,
    /// `BULKHEAD_DB_POOL_SIZE`: size of each of the API's two control-database pools.
    pub db_pool_size: u32,
    /// `BULKHEAD_LISTEN`: address the API binds.
    pub listen: SocketAddr,
    /// `BULKHEAD_HTTP_WORKERS`: actix worker threads (default: CPU count).
    pub http_workers: usize,
    /// `BULKHEAD_TOKEN_TTL_SECONDS`: absolute lifetime of an access token.
    pub token_ttl: Duration,
    /// `BULKHEAD_TLS_CERT` + `BULKHEAD_TLS_KEY`: PEM files; HTTPS when both are set.
    pub tls: Option<TlsFiles>,
    /// `BULKHEAD_BOOTSTRAP_ADMIN_EMAIL` + `BULKHEAD_BOOTSTRAP_ADMIN_PASSWORD`.
    pub bootstrap_admin: Option<BootstrapAdmin>,
    /// `BULKHEAD_MAX_CONCURRENT_HASHES`: password hashes computed at once (19 MiB each).
    pub max_concurrent_hashes: usize,
    /// `BULKHEAD_LOGIN_MAX_FAILURES`: failures per account or client before a lockout.
    pub login_max_failures: u32,
    /// `BULKHEAD_LOGIN_LOCKOUT_SECONDS`: how long failures count and a lockout lasts.
    pub login_lockout: Duration,
    /// `BULKHEAD_MAX_BODY_BYTES`: largest JSON body accepted.
    pub max_body_bytes: usize,
    /// `AMQP_URL`: the broker (used by the outbox relay and workers).
    pub amqp_url: String,
    /// `BULKHEAD_AMQP_CA_FILE`: PEM CA bundle that signs the broker's certificate, for
    /// `amqps://` brokers not signed by a CA the system trusts.
    pub amqp_ca_file: Option<PathBuf>,
    /// `BULKHEAD_QUEUE_PREFIX`: prefix of the exchange and queue names.
    pub queue_prefix: String,
    /// `BULKHEAD_CREDENTIALS_KEY` (64 hex characters: the key that seals environment
    /// credentials) and `BULKHEAD_CREDENTIALS_KEYS` (older keys in the same form, separated by
    /// commas, that only open what they sealed until `bulkhead reseal` moved it to the current).
    pub credentials_keys: crate::crypto::Keyring,
    /// Whether the current credentials key is the built-in development key.
    pub credentials_key_is_default: bool,
    /// `BULKHEAD_METRICS_TOKEN`: when set, `/metrics` answers only `Authorization: Bearer <it>`.
    pub metrics_token: Option<String>,
    /// `BULKHEAD_SMTP_URL` / `BULKHEAD_MAIL`: how invitations are mailed; `None` when neither
    /// is set (`bulkhead api` then refuses to start; `bulkhead dev` logs mail).
    pub mail: Option<MailDelivery>,
    /// `BULKHEAD_MAIL_FROM`: the sender of Bulkhead's mail.
    pub mail_from: String,
    /// Request rate limits and tenant quota defaults (see `limits`).
    pub limits: crate::limits::Limits,
    /// Worker settings.
    pub worker: WorkerConfig,
    /// `BULKHEAD_RETAIN_*`, `BULKHEAD_RETENTION_*`: how long finished rows are kept (the
    /// workers' retention pass; see `retention.rs`).
    pub retention: crate::retention::RetentionConfig,
    /// `BULKHEAD_METERING_*`, `BULKHEAD_BILLING_*`, `BULKHEAD_PRICING_DIR` (see `config/metering.rs`).
    pub metering: metering::MeteringConfig,
    /// `BULKHEAD_WEBHOOK_*` (see `config/webhooks.rs`).
    pub webhooks: webhooks::WebhookConfig,
}

/// What a worker needs: how much it runs at once, its lease, retries, and its targets.
#[derive(Clone)]
pub struct WorkerConfig {
    /// `BULKHEAD_WORKER_ID`: name in leases and logs (default: host-pid).
    pub id: String,
    /// `BULKHEAD_WORKER_CONCURRENCY`: jobs run at once (the AMQP prefetch).
    pub concurrency: u16,
    /// `BULKHEAD_LEASE_SECONDS`: how long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// `BULKHEAD_JOB_MAX_ATTEMPTS`: attempts before a job fails for good.
    pub max_attempts: i32,
    /// `BULKHEAD_RETRY_BASE_MS`: first retry delay; doubles per attempt.
    pub retry_base: Duration,
    /// `BULKHEAD_SWEEP_MS`: how often the sweeper looks for expired leases and lost messages.
    pub sweep_every: Duration,
    /// `BULKHEAD_APPROVAL_WAIT_HOURS` (1 to 720; default 24): how long a planned change waits
    /// for its approvals before it is `expired`.
    pub approval_wait: Duration,
    /// `BULKHEAD_TARGET_SHARED_URL`: admin URL (maintenance database) of the pooled server.
    pub shared_admin_url: String,
    /// `BULKHEAD_TARGET_POOLED_DATABASE`: the pooled database shared-tier schemas live in.
    pub pooled_database: String,
    /// `BULKHEAD_TARGET_DEDICATED_URL`: admin URL (maintenance database) for dedicated databases.
    pub dedicated_admin_url: String,
    /// `BULKHEAD_BLUEPRINTS_DIR`: load blueprints from here instead of the built-in ones.
    pub blueprints_dir: Option<PathBuf>,
    /// `BULKHEAD_TARGET_SPARE_DATABASES`: empty databases kept ready (closed to connections)
    /// on the dedicated server, renamed into new dedicated environments to skip CREATE DATABASE.
    pub spare_databases: usize,
}

pub const DEFAULT_DATABASE_URL: &str =
    "postgres://postgres@127.0.0.1:5432/bulkhead?sslmode=disable";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const DEFAULT_TARGET_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable";
/// Development-only key: anyone with this source can read credentials sealed with it.
pub const DEV_CREDENTIALS_KEY: &str =
    "6275 6c6b 6865 6164 2d64 6576 2d6f 6e6c 792d 6e6f 742d 6120 7365 6372 6574 2121";

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup`, so tests can supply their own environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);

        let database_url = url_setting(
            &get,
            "DATABASE_URL",
            DEFAULT_DATABASE_URL,
            &["postgres", "postgresql"],
            "a PostgreSQL URL such as postgres://postgres@127.0.0.1:5432/bulkhead",
        )?;
        let amqp_url = url_setting(
            &get,
            "AMQP_URL",
            DEFAULT_AMQP_URL,
            &["amqp", "amqps"],
            "an AMQP URL such as amqp://guest:guest@127.0.0.1:5672/%2f",
        )?;

        let listen_raw = get("BULKHEAD_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen_raw.parse().map_err(|_| ConfigError {
            var: "BULKHEAD_LISTEN",
            problem: format!("expected host:port such as 127.0.0.1:8080, got {listen_raw:?}"),
        })?;

        let tls = match (get("BULKHEAD_TLS_CERT"), get("BULKHEAD_TLS_KEY")) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
            }),
            (Some(_), None) => {
                return Err(ConfigError {
                    var: "BULKHEAD_TLS_KEY",
                    problem:
                        "BULKHEAD_TLS_CERT is set, so the private key's PEM file is needed too"
                            .into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError {
                    var: "BULKHEAD_TLS_CERT",
                    problem:
                        "BULKHEAD_TLS_KEY is set, so the certificate chain's PEM file is needed too"
                            .into(),
                });
            }
        };

        let bootstrap_admin = match (
            get("BULKHEAD_BOOTSTRAP_ADMIN_EMAIL"),
            lookup("BULKHEAD_BOOTSTRAP_ADMIN_PASSWORD").filter(|v| !v.is_empty()),
        ) {
            (None, None) => None,
            (Some(email), Some(password)) => {
                let email =
                    crate::domain::Email::parse("email", &email).map_err(|e| ConfigError {
                        var: "BULKHEAD_BOOTSTRAP_ADMIN_EMAIL",
                        problem: e.message,
                    })?;
                crate::domain::check_password_policy("password", &password).map_err(|e| {
                    ConfigError {
                        var: "BULKHEAD_BOOTSTRAP_ADMIN_PASSWORD",
                        problem: format!("the password {}", e.message),
                    }
                })?;
                Some(BootstrapAdmin {
                    email: email.as_str().to_owned(),
                    password,
                })
            }
            (Some(_), None) => {
                return Err(ConfigError {
                    var: "BULKHEAD_BOOTSTRAP_ADMIN_PASSWORD",
                    problem: "BULKHEAD_BOOTSTRAP_ADMIN_EMAIL is set, so its password is needed too (12+ characters)".into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError {
                    var: "BULKHEAD_BOOTSTRAP_ADMIN_EMAIL",
                    problem: "BULKHEAD_BOOTSTRAP_ADMIN_PASSWORD is set, so the admin's email is needed too".into(),
                });
            }
        };

        let mail = match (get("BULKHEAD_SMTP_URL"), get("BULKHEAD_MAIL").as_deref()) {
            (Some(url), None | Some("smtp")) => {
                let parsed = crate::dburl::ConnUrl::parse(&url)
                    .ok()
                    .filter(|parsed| matches!(parsed.scheme(), "smtp" | "smtps"))
                    .ok_or_else(|| ConfigError {
                        var: "BULKHEAD_SMTP_URL",
                        problem: "must be smtps://host[:port] (TLS) or \
                                  smtp://host[:port]?tls=required (STARTTLS), with \
                                  user:password@ if the relay wants a login"
                            .into(),
                    })?;
                // Plain `smtp://` sends invitation tokens unencrypted: only to this machine.
                let local = matches!(
                    parsed.host().as_deref(),
                    Some("127.0.0.1" | "localhost" | "::1")
                );
                let starttls = parsed.param("tls").as_deref() == Some("required");
                if parsed.scheme() == "smtp" && !starttls && !local {
                    return Err(ConfigError {
                        var: "BULKHEAD_SMTP_URL",
                        problem: "smtp:// without ?tls=required sends invitation tokens in \
                                  plain text; use smtps://host:465 or \
                                  smtp://host:587?tls=required (plain smtp:// only to a relay \
                                  on this machine)"
                            .into(),
                    });
                }
                Some(MailDelivery::Smtp { url })
            }
            (None, Some("log")) => Some(MailDelivery::Log),
            (None, None) => None,
            (Some(_), Some("log")) => {
                return Err(ConfigError {
                    var: "BULKHEAD_MAIL",
                    problem: "is log, but BULKHEAD_SMTP_URL is set too; unset one of them".into(),
                });
            }
            (None, Some("smtp")) => {
                return Err(ConfigError {
                    var: "BULKHEAD_SMTP_URL",
                    problem: "BULKHEAD_MAIL is smtp, so the relay's URL is needed \
                              (smtp://host:587 or smtps://host:465)"
                        .into(),
                });
            }
            (_, Some(_)) => {
                return Err(ConfigError {
                    var: "BULKHEAD_MAIL",
                    problem: "must be smtp (with BULKHEAD_SMTP_URL) or log".into(),
                });
            }
        };
        let mail_from = get("BULKHEAD_MAIL_FROM")
            .unwrap_or_else(|| "Bulkhead <no-reply@bulkhead.local>".to_owned());

        Ok(Self {
            limits: crate::limits::Limits::from_lookup(&get)?,
            mail,
            mail_from,
            database_url,
            db_pool_size: number(&get, "BULKHEAD_DB_POOL_SIZE", 16, 1, 1000)?,
            listen,
            http_workers: number(&get, "BULKHEAD_HTTP_WORKERS", cpus as u64, 1, 256)? as usize,
            token_ttl: Duration::from_secs(number(
                &get,
                "BULKHEAD_TOKEN_TTL_SECONDS",
                900,
                10,
                86_400,
            )?),
            tls,
            bootstrap_admin,
            max_concurrent_hashes: number(
                &get,
                "BULKHEAD_MAX_CONCURRENT_HASHES",
                cpus as u64,
                1,
                64,
            )? as usize,
            login_max_failures: number(&get, "BULKHEAD_LOGIN_MAX_FAILURES", 5, 1, 1000)?,
            login_lockout: Duration::from_secs(number(
                &get,
                "BULKHEAD_LOGIN_LOCKOUT_SECONDS",
                900,
                1,
                86_400,
            )?),
            max_body_bytes: number(&get, "BULKHEAD_MAX_BODY_BYTES", 65_536, 1_024, 10_485_760)?
                as usize,
            amqp_url,
            amqp_ca_file: get("BULKHEAD_AMQP_CA_FILE").map(PathBuf::from),
            queue_prefix: {
                let prefix = get("BULKHEAD_QUEUE_PREFIX").unwrap_or_else(|| "bulkhead".to_owned());
                let ok = (1..=64).contains(&prefix.len())
                    && prefix.bytes().all(|b| {
                        b.is_ascii_lowercase()
                            || b.is_ascii_digit()
                            || matches!(b, b'-' | b'_' | b'.')
                    });
                if !ok {
                    return Err(ConfigError {
                        var: "BULKHEAD_QUEUE_PREFIX",
                        problem: "expected 1 to 64 characters of a-z, 0-9, '-', '_', '.'".into(),
                    });
                }
                prefix
            },
            credentials_key_is_default: get("BULKHEAD_CREDENTIALS_KEY").is_none(),
            credentials_keys: secrets::credentials_keys(&get)?,
            metrics_token: secrets::metrics_token(&get)?,
            worker: WorkerConfig {
                id: get("BULKHEAD_WORKER_ID").unwrap_or_else(|| {
                    format!(
                        "{}-{}",
                        std::fs::read_to_string("/etc/hostname")
                            .map(|h| h.trim().to_owned())
                            .unwrap_or_else(|_| "worker".to_owned()),
                        std::process::id()
                    )
                }),
                concurrency: number(&get, "BULKHEAD_WORKER_CONCURRENCY", 4, 1, 256)?,
                lease: Duration::from_secs(number(&get, "BULKHEAD_LEASE_SECONDS", 30, 2, 600)?),
                max_attempts: number(&get, "BULKHEAD_JOB_MAX_ATTEMPTS", 3, 1, 20)?,
                retry_base: Duration::from_millis(number(
                    &get,
                    "BULKHEAD_RETRY_BASE_MS",
                    1000,
                    10,
                    600_000,
                )?),
                sweep_every: Duration::from_millis(number(
                    &get,
                    "BULKHEAD_SWEEP_MS",
                    1000,
                    50,
                    60_000,
                )?),
                approval_wait: Duration::from_secs(
                    3600 * number::<u64>(&get, "BULKHEAD_APPROVAL_WAIT_HOURS", 24, 1, 720)?,
                ),
                shared_admin_url: postgres_url(&get, "BULKHEAD_TARGET_SHARED_URL")?,
                pooled_database: {
                    let name = get("BULKHEAD_TARGET_POOLED_DATABASE")
                        .unwrap_or_else(|| "bulkhead_pool".to_owned());
                    let ok = (1..=63).contains(&name.len())
                        && name.starts_with(|c: char| c.is_ascii_lowercase())
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                    if !ok {
                        return Err(ConfigError {
                            var: "BULKHEAD_TARGET_POOLED_DATABASE",
                            problem: "expected a database name of a-z, 0-9 and '_' (at most 63)"
                                .into(),
                        });
                    }
                    name
                },
                dedicated_admin_url: postgres_url(&get, "BULKHEAD_TARGET_DEDICATED_URL")?,
                blueprints_dir: get("BULKHEAD_BLUEPRINTS_DIR").map(PathBuf::from),
                spare_databases: number(&get, "BULKHEAD_TARGET_SPARE_DATABASES", 0, 0, 16)?,
            },
            retention: crate::retention::RetentionConfig::from_lookup(&get)?,
            metering: metering::MeteringConfig::from_lookup(&get)?,
            webhooks: webhooks::WebhookConfig::from_lookup(&get)?,
        })
    }
}

fn postgres_url(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<String, ConfigError> {
    url_setting(
        get,
        var,
        DEFAULT_TARGET_URL,
        &["postgres", "postgresql"],
        "a PostgreSQL admin URL such as postgres://postgres@127.0.0.1:5432/postgres",
    )
}

/// `var`'s URL, or `default`: it must parse (see [`crate::dburl`]) and have one of `schemes`.
/// Messages never repeat the URL (it may hold a password).
fn url_setting(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: &str,
    schemes: &[&str],
    expected: &str,
) -> Result<String, ConfigError> {
    let url = get(var).unwrap_or_else(|| default.to_owned());
    match crate::dburl::ConnUrl::parse(&url) {
        Ok(parsed) if schemes.contains(&parsed.scheme()) => Ok(url),
        Ok(_) => Err(ConfigError {
            var,
            problem: format!("expected {expected}"),
        }),
        Err(e) => Err(ConfigError {
            var,
            problem: format!("{e}; expected {expected}"),
        }),
    }
}

pub(crate) fn number<T>(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = get(var) else {
        return Ok(default);
    };
    match raw.trim().parse::<T>() {
        Ok(value) if value >= min && value <= max => Ok(value),
        _ => Err(ConfigError {
            var,
            problem: format!("expected a whole number from {min} to {max}, got {raw:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn mail_must_be_chosen_and_never_sends_tokens_in_plain_text_off_the_machine() {
        assert_eq!(config(&[]).expect("defaults").mail, None);
        assert_eq!(
            config(&[("BULKHEAD_MAIL", "log")]).expect("log").mail,
            Some(MailDelivery::Log)
        );
        for url in [
            "smtps://u:p@mail.example.com:465",
            "smtp://u:p@mail.example.com:587?tls=required",
            "smtp://127.0.0.1:2525",
        ] {
            let mail = config(&[("BULKHEAD_SMTP_URL", url)]).expect(url).mail;
            assert_eq!(
                mail,
                Some(MailDelivery::Smtp {
                    url: url.to_owned()
                })
            );
        }
        for url in ["smtp://mail.example.com:587", "http://mail.example.com"] {
            let err = config(&[("BULKHEAD_SMTP_URL", url)]).expect_err(url);
            assert_eq!(err.var, "BULKHEAD_SMTP_URL");
        }
        let err = config(&[
            ("BULKHEAD_SMTP_URL", "smtps://m:465"),
            ("BULKHEAD_MAIL", "log"),
        ])
        .expect_err("both");
        assert_eq!(err.var, "BULKHEAD_MAIL");
        // The password never shows in Debug output.
        let shown = format!(
            "{:?}",
            MailDelivery::Smtp {
                url: "smtps://user:hunter2hunter2@mail.example.com:465".into()
            }
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn defaults_are_local() {
        let config = config(&[]).expect("defaults");
        assert_eq!(config.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.token_ttl, Duration::from_secs(900));
        assert!(config.tls.is_none());
        assert!(config.bootstrap_admin.is_none());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = config(&[("BULKHEAD_LISTEN", "nowhere")]).expect_err("bad listen");
        assert_eq!(err.var, "BULKHEAD_LISTEN");
        assert!(
            err.to_string()
                .starts_with("BULKHEAD_LISTEN: expected host:port")
        );
        let err = config(&[("BULKHEAD_TOKEN_TTL_SECONDS", "0")]).expect_err("ttl");
        assert_eq!(err.var, "BULKHEAD_TOKEN_TTL_SECONDS");
        let err = config(&[("DATABASE_URL", "mysql://x")]).expect_err("url");
        assert_eq!(err.var, "DATABASE_URL");
        let err = config(&[("BULKHEAD_TLS_CERT", "cert.pem")]).expect_err("tls");
        assert_eq!(err.var, "BULKHEAD_TLS_KEY");
    }

    #[test]
    fn urls_must_parse_and_errors_never_echo_them() {
        let err = config(&[(
            "BULKHEAD_TARGET_SHARED_URL",
            "postgres://admin:hunter2@[oops/postgres",
        )])
        .expect_err("unparseable");
        assert_eq!(err.var, "BULKHEAD_TARGET_SHARED_URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        // Only this machine may get plain smtp://, whatever the name starts with.
        let err = config(&[("BULKHEAD_SMTP_URL", "smtp://localhost.example.com:25")])
            .expect_err("not local");
        assert_eq!(err.var, "BULKHEAD_SMTP_URL");
        assert!(config(&[("BULKHEAD_SMTP_URL", "smtp://[::1]:2525")]).is_ok());
    }

    #[test]
    fn bootstrap_admin_needs_both_halves_and_a_good_password() {
        let err = config(&[("BULKHEAD_BOOTSTRAP_ADMIN_EMAIL", "admin@example.com")])
            .expect_err("no password");
        assert_eq!(err.var, "BULKHEAD_BOOTSTRAP_ADMIN_PASSWORD");
        let err = config(&[
            ("BULKHEAD_BOOTSTRAP_ADMIN_EMAIL", "admin@example.com"),
            ("BULKHEAD_BOOTSTRAP_ADMIN_PASSWORD", "short"),
        ])
        .expect_err("weak");
        assert_eq!(err.var, "BULKHEAD_BOOTSTRAP_ADMIN_PASSWORD");
        let ok = config(&[
            ("BULKHEAD_BOOTSTRAP_ADMIN_EMAIL", "Admin@Example.com"),
            ("BULKHEAD_BOOTSTRAP_ADMIN_PASSWORD", "plum-river-lantern-42"),
        ])
        .expect("valid");
        assert_eq!(
            ok.bootstrap_admin.map(|a| a.email).as_deref(),
            Some("admin@example.com")
        );
    }
}
