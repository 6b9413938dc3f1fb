//! Connection URLs (libpq `postgres://`, and AMQP and SMTP URLs for redaction), read and
//! rewritten through the `url` crate only: parts are percent-encoded on the way in and decoded
//! on the way out, IPv6 hosts keep their brackets, and passwords never reach a message.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use std::net::IpAddr;
use url::{Host, Url};

/// Why a text is not a usable connection URL. Never holds the text itself (it may carry a
/// password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a URL: {0}")]
    Parse(#[from] url::ParseError),
    #[error("the URL has no host to put a login in front of")]
    NoHost,
    #[error("{0:?} is not a host name or IP address")]
    BadHost(String),
}

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`) is percent-encoded:
/// safe in a user, a password, a path segment and a query value alike.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What stands for a password in redacted URLs.
const HIDDEN: &str = "***";

/// `text` percent-encoded for any part of a URL.
pub fn encode(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

/// A percent-encoded part decoded as libpq does (`+` stays `+`); invalid UTF-8 is replaced.
pub fn decode(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// A parsed connection URL. Its `Debug` shows it redacted; [`ConnUrl::as_str`] is the real one.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnUrl(Url);

impl std::fmt::Debug for ConnUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ConnUrl").field(&self.redacted()).finish()
    }
}

impl std::str::FromStr for ConnUrl {
    type Err = UrlError;

    fn from_str(text: &str) -> Result<Self, UrlError> {
        Self::parse(text)
    }
}

impl ConnUrl {
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        Ok(Self(Url::parse(text)?))
    }

    /// A `postgres://` URL logging in as `user` with `password` to `database` on `host:port`,
    /// every part percent-encoded; `host` may be a name, an IPv4 or an IPv6 address (bare or
    /// bracketed). `params` become the query (`options`, `sslmode`…).
    pub fn postgres(
        user: &str,
        password: &str,
        host: &str,
        port: u16,
        database: &str,
        params: &[(&str, &str)],
    ) -> Result<Self, UrlError> {
        let mut url = Url::parse("postgres://localhost")?;
        match host.parse::<IpAddr>() {
            Ok(address) => url
                .set_ip_host(address)
                .map_err(|()| UrlError::BadHost(host.to_owned()))?,
            Err(_) => url.set_host(Some(host))?,
        }
        url.set_port(Some(port))
            .map_err(|()| UrlError::BadHost(host.to_owned()))?;
        let url = Self(url).with_database(database);
        let url = url.with_login(user, password)?;
        Ok(url.with_params(params))
    }

    /// The URL as it is, password included.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn scheme(&self) -> &str {
        self.0.scheme()
    }

    /// The host, decoded, an IPv6 address without brackets; `None` when the URL has none
    /// (libpq then uses its local socket).
    pub fn host(&self) -> Option<String> {
        match self.0.host()? {
            Host::Ipv6(address) => Some(address.to_string()),
            Host::Ipv4(address) => Some(address.to_string()),
            Host::Domain("") => None,
            Host::Domain(domain) => Some(decode(domain)),
        }
    }

    pub fn port(&self) -> Option<u16> {
        self.0.port()
    }

    /// The login's user, decoded (empty when the URL names none).
    pub fn user(&self) -> String {
        decode(self.0.username())
    }

    /// The login's password, decoded.
    pub fn password(&self) -> Option<String> {
        self.0.password().map(decode)
    }

    /// The database: the path without its leading `/`, decoded.
    pub fn database(&self) -> String {
        decode(self.0.path().trim_start_matches('/'))
    }

    /// Query parameters in order, decoded as libpq decodes them (`+` is a plus, not a space).
    pub fn params(&self) -> Vec<(String, String)> {
        self.0
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(key), decode(value))
            })
            .collect()
    }

    /// The last value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<String> {
        self.params()
            .into_iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    /// The same URL with `params` as its whole query (none when empty).
    pub fn with_params<K: AsRef<str>, V: AsRef<str>>(&self, params: &[(K, V)]) -> Self {
        let mut url = self.0.clone();
        if params.is_empty() {
            url.set_query(None);
        } else {
            let query = params
                .iter()
                .map(|(k, v)| format!("{}={}", encode(k.as_ref()), encode(v.as_ref())))
                .collect::<Vec<_>>()
                .join("&");
            url.set_query(Some(&query));
        }
        Self(url)
    }

    /// The same server and parameters, another database.
    pub fn with_database(&self, database: &str) -> Self {
        let mut url = self.0.clone();
        url.set_path(&format!("/{}", encode(database)));
        Self(url)
    }

    /// The same URL logging in as `user` with `password` instead.
    pub fn with_login(&self, user: &str, password: &str) -> Result<Self, UrlError> {
        let mut url = self.0.clone();
        // `url` would leave a `%` as it is; encoded first, every byte round-trips.
        url.set_username(&encode(user))
            .and_then(|()| url.set_password(Some(&encode(password))))
            .map_err(|()| UrlError::NoHost)?;
        Ok(Self(url))
    }

    /// The URL with its password (in the login or a `password` parameter) replaced by `***`.
    pub fn redacted(&self) -> String {
        let mut url = self.0.clone();
        if url.password().is_some() {
            // Only fails for URLs without a host, which cannot carry a login password.
            let _ = url.set_password(Some(HIDDEN));
        }
        let query = url.query().unwrap_or_default();
        if query
            .split('&')
            .any(|pair| is_secret_param(&decode(pair.split('=').next().unwrap_or_default())))
        {
            let shown = query
                .split('&')
                .map(|pair| {
                    let key = pair.split('=').next().unwrap_or_default();
                    if is_secret_param(&decode(key)) {
                        format!("{key}={HIDDEN}")
                    } else {
                        pair.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("&");
            url.set_query(Some(&shown));
        }
        url.into()
    }

    /// `host[:port]/database`: where a URL points, for naming a target in messages.
    pub fn location(&self) -> String {
        let host = self.0.host_str().unwrap_or_default();
        match self.0.port() {
            Some(port) => format!("{host}:{port}{}", self.0.path()),
            None => format!("{host}{}", self.0.path()),
        }
    }
}

fn is_secret_param(key: &str) -> bool {
    matches!(key, "password" | "sslpassword")
}

/// `text` without its password, for messages and logs. A text that does not parse is not
/// shown at all: it may still hold a password.
pub fn redact(text: &str) -> String {
    match ConnUrl::parse(text) {
        Ok(url) => url.redacted(),
        Err(_) => "<a URL that does not parse>".to_owned(),
    }
}

/// `host[:port]/database` of `text`, for naming a target in messages.
pub fn location(text: &str) -> String {
    match ConnUrl::parse(text) {
        Ok(url) => url.location(),
        Err(_) => "<a URL that does not parse>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> ConnUrl {
        ConnUrl::parse(text).expect(text)
    }

    #[test]
    fn logins_with_reserved_characters_round_trip() {
        let user = "a@b:c/d?e#f%g h";
        let password = "p@ss:w/o?r#d%41+~";
        let base = url("postgres://admin:secret@db.internal:5433/postgres?sslmode=require");
        let changed = base.with_login(user, password).expect("login");
        assert_eq!(changed.user(), user);
        assert_eq!(changed.password().as_deref(), Some(password));
        assert_eq!(changed.host().as_deref(), Some("db.internal"));
        assert_eq!(changed.port(), Some(5433));
        assert_eq!(changed.param("sslmode").as_deref(), Some("require"));
        // What libpq-compatible clients read from it is the same login.
        let read: tokio_postgres::Config = changed.as_str().parse().expect("tokio-postgres");
        assert_eq!(read.get_user(), Some(user));
        assert_eq!(read.get_password(), Some(password.as_bytes()));
        assert_eq!(read.get_dbname(), Some("postgres"));
    }

    #[test]
    fn built_urls_encode_every_part_and_bracket_ipv6() {
        let built = ConnUrl::postgres(
            "bk_app",
            "pw/with@and%",
            "::1",
            6432,
            "bh pool",
            &[("options", "-csearch_path=bk_1")],
        )
        .expect("build");
        assert_eq!(
            built.as_str(),
            "postgres://bk_app:pw%2Fwith%40and%25@[::1]:6432/bh%20pool?options=-csearch_path%3Dbk_1"
        );
        assert_eq!(built.host().as_deref(), Some("::1"));
        assert_eq!(built.database(), "bh pool");
        let read: tokio_postgres::Config = built.as_str().parse().expect("tokio-postgres");
        assert_eq!(read.get_password(), Some("pw/with@and%".as_bytes()));
        assert_eq!(read.get_ports(), [6432]);
        for host in ["[::1]", "10.0.0.7", "pg-pool-1.internal"] {
            let built = ConnUrl::postgres("u", "p", host, 5432, "db", &[]).expect(host);
            assert_eq!(
                built.as_str(),
                format!("postgres://u:p@{host}:5432/db"),
                "{host}"
            );
        }
        assert!(ConnUrl::postgres("u", "p", "bad host/", 5432, "db", &[]).is_err());
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets() {
        let v6 = url("postgres://admin:pw@[::1]:6432/postgres");
        assert_eq!(v6.host().as_deref(), Some("::1"));
        assert_eq!(v6.port(), Some(6432));
        assert_eq!(v6.location(), "[::1]:6432/postgres");
        assert_eq!(
            v6.with_database("other").as_str(),
            "postgres://admin:pw@[::1]:6432/other"
        );
        assert_eq!(
            v6.with_login("o", "p").expect("login").as_str(),
            "postgres://o:p@[::1]:6432/postgres"
        );
        assert_eq!(v6.redacted(), "postgres://admin:***@[::1]:6432/postgres");
    }

    #[test]
    fn redaction_hides_passwords_only() {
        assert_eq!(
            redact("postgres://u:secret@h:1/db"),
            "postgres://u:***@h:1/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact("smtps://user:hunter2@mail.example.com:465"),
            "smtps://user:***@mail.example.com:465"
        );
        assert_eq!(
            redact("postgres://h/db?sslmode=require&password=hunter2"),
            "postgres://h/db?sslmode=require&password=***"
        );
        let encoded = redact("postgres://u:p%40ss%2Fword@h/db");
        assert!(!encoded.contains("ss"), "{encoded}");
        // Not parseable: nothing of it is shown.
        assert_eq!(
            redact("postgres://u:hunter2@[oops/db"),
            "<a URL that does not parse>"
        );
        assert_eq!(
            format!("{:?}", url("postgres://u:hunter2@h/db")),
            "ConnUrl(\"postgres://u:***@h/db\")"
        );
    }

    #[test]
    fn rewrites_keep_the_rest() {
        let base = url("postgres://u:p@h:5432/postgres?sslmode=disable");
        assert_eq!(
            base.with_database("bh pool").as_str(),
            "postgres://u:p@h:5432/bh%20pool?sslmode=disable"
        );
        assert_eq!(
            url("postgres://h").with_database("db").as_str(),
            "postgres://h/db"
        );
        assert_eq!(
            url("postgres://127.0.0.1/x")
                .with_login("o", "p")
                .expect("login")
                .as_str(),
            "postgres://o:p@127.0.0.1/x"
        );
        assert_eq!(location("postgres://u:secret@h:1/db?x=1"), "h:1/db");
        assert_eq!(url("postgres://u@h/db").host().as_deref(), Some("h"));
        assert_eq!(url("postgres:///db").host(), None);
        // libpq's multi-host lists are not URLs: refused, not half-read.
        assert!(ConnUrl::parse("postgres://h1:5432,h2:5432/db").is_err());
        let query = url("postgres://h/db?a=1&sslrootcert=%2Fetc%2Fca+1.pem&b");
        assert_eq!(
            query.params(),
            [
                ("a".to_owned(), "1".to_owned()),
                ("sslrootcert".to_owned(), "/etc/ca+1.pem".to_owned()),
                ("b".to_owned(), String::new()),
            ]
        );
        assert_eq!(
            query.with_params(&[("sslmode", "require")]).as_str(),
            "postgres://h/db?sslmode=require"
        );
        assert_eq!(
            query.with_params::<&str, &str>(&[]).as_str(),
            "postgres://h/db"
        );
    }
}
