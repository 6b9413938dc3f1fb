//! SQL text helpers: identifier and literal quoting, connection-URL rewrites (over
//! `bulkhead_core::dburl`), and error classification.

use super::ExecError;
use bulkhead_core::dburl::ConnUrl;
use diesel::result::{ConnectionError, DatabaseErrorKind, Error as DieselError};

/// `"name"`, doubling embedded quotes. NUL cannot be sent to PostgreSQL at all.
pub(crate) fn ident(name: &str) -> Result<String, ExecError> {
    if name.is_empty() || name.contains('\0') || name.len() > 63 {
        return Err(ExecError::Target {
            step: "quote identifier".to_owned(),
            target: "(none)".to_owned(),
            reason: format!("{name:?} is not a valid identifier (1 to 63 bytes, no NUL)"),
        });
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// A string literal that means the same under any `standard_conforming_strings`: `'…'`, or
/// `E'…'` with backslashes doubled when the text has any (as PostgreSQL's `quote_literal`).
pub(crate) fn literal(text: &str) -> Result<String, ExecError> {
    if text.contains('\0') {
        return Err(ExecError::Target {
            step: "quote literal".to_owned(),
            target: "(none)".to_owned(),
            reason: "text contains a NUL character".to_owned(),
        });
    }
    let quoted = text.replace('\'', "''");
    Ok(if quoted.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    })
}

/// The SQL literal of a SCRAM-SHA-256 verifier of `password`, for `… PASSWORD <it>`: made by
/// postgres-protocol as libpq's `PQencryptPasswordConn` makes it (SASLprep, random salt, 4096
/// iterations), so the password itself never reaches the server's logs or `pg_stat_activity`.
pub(crate) fn password_verifier(password: &str) -> Result<String, ExecError> {
    literal(&postgres_protocol::password::scram_sha_256(
        password.as_bytes(),
    ))
}

/// Names a target in messages: `host[:port]/database` (see [`bulkhead_core::dburl`]).
pub(crate) use bulkhead_core::dburl::location as target_of;

/// `url` with its database (path) replaced by `database`; query parameters are kept.
pub(crate) fn with_database(url: &str, database: &str) -> Result<String, ExecError> {
    let parsed = ConnUrl::parse(url).map_err(|e| bad_url(url, &e))?;
    Ok(parsed.with_database(database).as_str().to_owned())
}

/// `url` logging in as `user` with `password` instead of its own user.
pub(crate) fn with_user(url: &str, user: &str, password: &str) -> Result<String, ExecError> {
    let parsed = ConnUrl::parse(url).map_err(|e| bad_url(url, &e))?;
    let changed = parsed
        .with_login(user, password)
        .map_err(|e| bad_url(url, &e))?;
    Ok(changed.as_str().to_owned())
}

fn bad_url(url: &str, error: &bulkhead_core::dburl::UrlError) -> ExecError {
    ExecError::Target {
        step: "build a connection URL".to_owned(),
        target: bulkhead_core::dburl::redact(url),
        reason: error.to_string(),
    }
}

/// Texts of server errors that mean "busy or gone, try again" rather than "refused".
const TRANSIENT: &[&str] = &[
    "could not connect",
    "connection refused",
    "connection to server",
    "server closed the connection",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "too many connections",
    "remaining connection slots are reserved",
    "deadlock detected",
    "could not serialize access",
    "canceling statement due to lock timeout",
    "tuple concurrently updated",
    "is being accessed by other users",
    "timeout expired",
    "no connection to the server",
];

pub(crate) fn is_transient(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    TRANSIENT.iter().any(|t| lower.contains(t))
}

/// Maps a query error of `step` on `target` to an [`ExecError`].
pub(crate) fn query_error(step: &str, target: &str, error: &DieselError) -> ExecError {
    let reason = match error {
        DieselError::DatabaseError(kind, info) => {
            let mut text = info.message().to_owned();
            if let Some(detail) = info.details() {
                text.push_str(" (");
                text.push_str(detail);
                text.push(')');
            }
            if text.starts_with(super::meta::FENCE_ERROR) {
                return ExecError::Fenced(format!("{step} on {target}: {text}"));
            }
            if matches!(
                kind,
                DatabaseErrorKind::ClosedConnection
                    | DatabaseErrorKind::UnableToSendCommand
                    | DatabaseErrorKind::SerializationFailure
            ) || is_transient(&text)
            {
                return ExecError::Unreachable(format!("{step} on {target}: {text}"));
            }
            text
        }
        other => {
            let text = other.to_string();
            if is_transient(&text) {
                return ExecError::Unreachable(format!("{step} on {target}: {text}"));
            }
            text
        }
    };
    ExecError::Target {
        step: step.to_owned(),
        target: target.to_owned(),
        reason,
    }
}

/// Maps a failure to open an admin connection to `target`.
pub(crate) fn connect_error(target: &str, error: &ConnectionError) -> ExecError {
    let text = one_line(&error.to_string());
    match error {
        ConnectionError::InvalidConnectionUrl(_) | ConnectionError::InvalidCString(_) => {
            ExecError::Target {
                step: "connect".to_owned(),
                target: target.to_owned(),
                reason: format!("invalid connection URL: {text}"),
            }
        }
        _ if text.contains("authentication failed")
            || text.contains("permission denied")
            || (text.contains("role") && text.contains("does not exist")) =>
        {
            ExecError::Target {
                step: "connect".to_owned(),
                target: target.to_owned(),
                reason: text,
            }
        }
        _ => ExecError::Unreachable(format!("connect to {target}: {text}")),
    }
}

/// A server message on one line, with runs of whitespace collapsed.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::executor::Endpoint;

    #[test]
    fn quotes_identifiers_and_literals() {
        assert_eq!(ident("bk_1").expect("valid"), "\"bk_1\"");
        assert_eq!(ident("a\"b").expect("valid"), "\"a\"\"b\"");
        assert!(ident("").is_err());
        assert!(ident("a\0").is_err());
        assert!(ident(&"a".repeat(64)).is_err());
        assert_eq!(literal("it's").expect("valid"), "'it''s'");
        assert_eq!(literal(r"a\b'").expect("valid"), r"E'a\\b'''");
        assert!(literal("a\0").is_err());
    }

    #[test]
    fn rewrites_urls() {
        assert_eq!(
            with_user(
                "postgres://admin:pw@db:5433/x?sslmode=require",
                "bk_o",
                "p/w"
            )
            .expect("url"),
            "postgres://bk_o:p%2Fw@db:5433/x?sslmode=require"
        );
        assert_eq!(
            with_database(
                "postgres://u:p@[::1]:5432/postgres?sslmode=disable",
                "bh pool"
            )
            .expect("url"),
            "postgres://u:p@[::1]:5432/bh%20pool?sslmode=disable"
        );
        assert_eq!(target_of("postgres://u:secret@h:1/db?x=1"), "h:1/db");
        let refused = with_database("postgres://u:secret@[oops/db", "x").expect_err("bad URL");
        assert!(!format!("{refused:?}").contains("secret"), "{refused:?}");
        let v6 = Endpoint::from_url("postgres://admin:pw@[::1]:6432/postgres").expect("url");
        assert_eq!(
            (v6.host.as_str(), v6.port, v6.ssl_mode.as_deref()),
            ("::1", 6432, None)
        );
        let local = Endpoint::from_url("postgres://postgres@127.0.0.1/postgres?sslmode=disable")
            .expect("url");
        assert_eq!(
            (local.host.as_str(), local.port, local.ssl_mode.as_deref()),
            ("127.0.0.1", 5432, Some("disable"))
        );
    }

    #[test]
    fn classifies_transient_errors() {
        assert!(is_transient(
            "FATAL: sorry, too many connections for role \"x\""
        ));
        assert!(is_transient("ERROR: deadlock detected"));
        assert!(!is_transient("ERROR: permission denied for schema public"));
    }
}
