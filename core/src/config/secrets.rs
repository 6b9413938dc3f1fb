//! The secret settings, read and checked: the credentials keys (`BULKHEAD_CREDENTIALS_KEY`,
//! `BULKHEAD_CREDENTIALS_KEYS`) and the metrics token (`BULKHEAD_METRICS_TOKEN`).

use super::{ConfigError, DEV_CREDENTIALS_KEY};
use crate::crypto::{CryptoError, Keyring};

/// The current key (the built-in development key when unset) and the older ones.
pub(super) fn credentials_keys(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Keyring, ConfigError> {
    Keyring::from_hex(
        &get("BULKHEAD_CREDENTIALS_KEY").unwrap_or_else(|| DEV_CREDENTIALS_KEY.replace(' ', "")),
        get("BULKHEAD_CREDENTIALS_KEYS").as_deref(),
    )
    .map_err(|e| ConfigError {
        var: match e {
            CryptoError::BadOlderKey(_) => "BULKHEAD_CREDENTIALS_KEYS",
            _ => "BULKHEAD_CREDENTIALS_KEY",
        },
        problem: e.to_string(),
    })
}

/// The token `/metrics` wants, if any: long enough not to be guessed, and fit for a header.
pub(super) fn metrics_token(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, ConfigError> {
    match get("BULKHEAD_METRICS_TOKEN") {
        Some(token) if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) => {
            Err(ConfigError {
                var: "BULKHEAD_METRICS_TOKEN",
                problem: "expected at least 16 printable characters without spaces \
                          (for example from `openssl rand -hex 32`)"
                    .into(),
            })
        }
        token => Ok(token),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError, DEV_CREDENTIALS_KEY};

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn older_credentials_keys_are_checked() {
        let err = config(&[("BULKHEAD_CREDENTIALS_KEYS", "abc")]).expect_err("bad old key");
        assert_eq!(err.var, "BULKHEAD_CREDENTIALS_KEYS");
        let err = config(&[("BULKHEAD_CREDENTIALS_KEY", "abc")]).expect_err("bad key");
        assert_eq!(err.var, "BULKHEAD_CREDENTIALS_KEY");
        let dev = DEV_CREDENTIALS_KEY.replace(' ', "");
        let new = "ab".repeat(32);
        let rotated = config(&[
            ("BULKHEAD_CREDENTIALS_KEY", &new),
            ("BULKHEAD_CREDENTIALS_KEYS", &dev),
        ])
        .expect("rotated");
        assert_eq!(rotated.credentials_keys.older_ids().len(), 1);
        assert!(!rotated.credentials_key_is_default);
    }

    #[test]
    fn a_metrics_token_is_long_enough_or_refused() {
        for bad in ["short", "a token with spaces in it"] {
            let err = config(&[("BULKHEAD_METRICS_TOKEN", bad)]).expect_err(bad);
            assert_eq!(err.var, "BULKHEAD_METRICS_TOKEN");
            assert!(!err.to_string().contains(bad), "{err}");
        }
        assert_eq!(config(&[]).expect("defaults").metrics_token, None);
        let set = config(&[("BULKHEAD_METRICS_TOKEN", "0123456789abcdef")]).expect("token");
        assert_eq!(set.metrics_token.as_deref(), Some("0123456789abcdef"));
    }
}
