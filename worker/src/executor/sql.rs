//! SQL text helpers: identifier and literal quoting, libpq URLs, and error classification.

use super::ExecError;
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

/// Percent-encodes everything but RFC 3986 unreserved characters, for URL user, password and
/// database parts.
pub(crate) fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `url` with its database (path) replaced by `database`; query parameters are kept.
pub(crate) fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    let mut out = format!("{root}/{}", url_encode(database));
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// `url` logging in as `user` with `password` instead of its own user.
pub(crate) fn with_user(url: &str, user: &str, password: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let host = rest[..authority_end]
        .rsplit_once('@')
        .map_or(&rest[..authority_end], |(_, host)| host);
    format!(
        "{}{}:{}@{host}{}",
        &url[..scheme_end],
        url_encode(user),
        url_encode(password),
        &rest[authority_end..]
    )
}

/// The URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let user_info = &authority[..at];
            let user = user_info.split(':').next().unwrap_or("");
            let redacted = if user_info.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!("{}{redacted}{}", &url[..scheme_end], &rest[at..])
        }
        None => url.to_owned(),
    }
}

/// `host:port/database` of a URL, for naming a target in messages.
pub(crate) fn target_of(url: &str) -> String {
    let redacted = redact(url);
    let without_scheme = redacted
        .split_once("://")
        .map_or(redacted.as_str(), |(_, r)| r);
    let host_part = without_scheme
        .rsplit_once('@')
        .map_or(without_scheme, |(_, h)| h);
    host_part.split('?').next().unwrap_or(host_part).to_owned()
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

    #[test]
    fn with_user_replaces_only_the_login() {
        assert_eq!(
            with_user(
                "postgres://admin:pw@db:5433/x?sslmode=require",
                "bk_o",
                "p/w"
            ),
            "postgres://bk_o:p%2Fw@db:5433/x?sslmode=require"
        );
        assert_eq!(
            with_user("postgres://127.0.0.1/x", "o", "p"),
            "postgres://o:p@127.0.0.1/x"
        );
    }
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
            with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "bh pool"),
            "postgres://u:p@h:5432/bh%20pool?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "db"), "postgres://h/db");
        assert_eq!(
            redact("postgres://u:secret@h:1/db"),
            "postgres://u:***@h:1/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(target_of("postgres://u:secret@h:1/db?x=1"), "h:1/db");
        let v6 = Endpoint::from_url("postgres://admin:pw@[::1]:6432/postgres");
        assert_eq!(
            (v6.host.as_str(), v6.port, v6.ssl_mode.as_deref()),
            ("::1", 6432, None)
        );
        let local = Endpoint::from_url("postgres://postgres@127.0.0.1/postgres?sslmode=disable");
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
