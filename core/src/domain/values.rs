//! Small validated values of the tenant and identity domain.

use super::FieldError;
use std::fmt;
use std::sync::LazyLock;

static SLUG: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^[a-z][a-z0-9-]{2,39}$").unwrap_or_else(|e| panic!("slug regex: {e}"))
});
static REGION: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^[a-z]{2}(-[a-z0-9]+){1,3}$")
        .unwrap_or_else(|e| panic!("region regex: {e}"))
});

/// A tenant slug: `^[a-z][a-z0-9-]{2,39}$`, used in URLs in place of the id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Slug(String);

impl Slug {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        if SLUG.is_match(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new(
                field,
                "must be 3 to 40 characters: a lowercase letter first, then lowercase letters, \
                 digits or '-' (pattern ^[a-z][a-z0-9-]{2,39}$)",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address, trimmed and lower-cased; checked for shape, not deliverability.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        // Lengths in characters, as the OpenAPI document's `maxLength` and pattern count them;
        // the whole length before trimming (as `maxLength` sees it), the local part's after.
        let email = raw.trim();
        let valid = raw.chars().count() <= super::patterns::EMAIL_MAX_CHARS
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && local.chars().count() <= super::patterns::EMAIL_LOCAL_MAX_CHARS
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains("..")
                    && !domain.contains('@')
            })
            && !email.chars().any(|c| {
                // Characters a mail library reads as address syntax ("x<them@evil>" would be
                // delivered to them, not to the address stored), and invisible ones.
                c.is_whitespace()
                    || c.is_control()
                    || super::patterns::EMAIL_SYNTAX.contains(&c)
                    || invisible(c).is_some()
            });
        if valid {
            Ok(Self(email.to_lowercase()))
        } else {
            Err(FieldError::new(
                field,
                "must be an email address such as ops@example.com (at most 254 characters)",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A region code such as `eu-west-1` or `us-east`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region(String);

impl Region {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        if raw.len() <= 32 && REGION.is_match(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new(
                field,
                "must be a region code such as eu-west-1: two lowercase letters, then one to \
                 three '-'-separated parts of lowercase letters and digits",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A human-facing name (tenant name, display name): 1 to 200 characters, no control characters.
pub fn parse_display_text(field: &str, raw: &str) -> Result<String, FieldError> {
    parse_display_text_of(field, raw, 200)
}

/// Human-facing text of 1 to `max_chars` characters once trimmed (a reason, a comment), without
/// control or invisible characters.
pub fn parse_display_text_of(
    field: &str,
    raw: &str,
    max_chars: usize,
) -> Result<String, FieldError> {
    let text = raw.trim();
    if text.is_empty() || text.chars().count() > max_chars || text.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {max_chars} characters without control characters"),
        ));
    }
    if let Some((at, c)) = text
        .chars()
        .enumerate()
        .find(|(_, c)| invisible(*c).is_some())
    {
        return Err(FieldError::new(
            field,
            format!(
                "contains U+{:04X} {} at character {}: invisible and direction-changing \
                 characters would make it read differently in a portal than it is; remove it",
                u32::from(c),
                invisible(c).unwrap_or("FORMAT CHARACTER"),
                at + 1
            ),
        ));
    }
    Ok(text.to_owned())
}

/// The name of a zero-width, bidirectional-control or other invisible formatting character
/// (Unicode's format characters that spoof how a name reads), or `None`.
pub(crate) fn invisible(c: char) -> Option<&'static str> {
    super::patterns::INVISIBLE
        .iter()
        .find(|(from, to, _)| (*from..=*to).contains(&c))
        .map(|(_, _, name)| *name)
}

/// Where a tenant's environments live by default.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// A schema per environment in a pooled database.
    Shared,
    /// A database per environment.
    Dedicated,
}

impl Tier {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        match raw {
            "shared" => Ok(Self::Shared),
            "dedicated" => Ok(Self::Dedicated),
            _ => Err(FieldError::new(field, "must be one of: shared, dedicated")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Dedicated => "dedicated",
        }
    }
}

/// A tenant's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantState {
    Active,
    Suspended,
    Offboarding,
    Offboarded,
}

impl TenantState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Offboarding => "offboarding",
            Self::Offboarded => "offboarded",
        }
    }

    pub fn from_db(raw: &str) -> Option<Self> {
        match raw {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            "offboarding" => Some(Self::Offboarding),
            "offboarded" => Some(Self::Offboarded),
            _ => None,
        }
    }

    /// Whether a tenant may move from `self` to `next`.
    pub fn can_become(self, next: Self) -> bool {
        use TenantState::*;
        matches!(
            (self, next),
            (Active, Suspended)
                | (Suspended, Active)
                | (Active | Suspended, Offboarding)
                | (Offboarding, Offboarded)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_pattern() {
        for ok in [
            "acme",
            "a-1",
            "acme-eu-west",
            &format!("a{}", "b".repeat(39)),
        ] {
            assert!(Slug::parse("slug", ok).is_ok(), "{ok} should be valid");
        }
        for bad in [
            "",
            "ab",
            "Acme",
            "1acme",
            "-acme",
            "acme'",
            "a,b,c",
            "acme*",
            "acmé",
            "ac me",
            "acme;drop",
            &"a".repeat(41),
            &"a".repeat(64),
        ] {
            let err = Slug::parse("slug", bad).expect_err(bad);
            assert_eq!(err.field, "slug");
        }
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        let email = Email::parse("email", "  Ops@Example.COM ").expect("valid");
        assert_eq!(email.as_str(), "ops@example.com");
        for bad in [
            "",
            "ops",
            "ops@",
            "@example.com",
            "ops@example",
            "o ps@example.com",
            "a@b@c.com",
            "ops@.com",
        ] {
            assert!(
                Email::parse("email", bad).is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn regions_are_codes() {
        assert!(Region::parse("region", "eu-west-1").is_ok());
        assert!(Region::parse("region", "us-east").is_ok());
        assert!(Region::parse("region", "EU-west").is_err());
        assert!(Region::parse("region", "europe").is_err());
    }

    #[test]
    fn tenant_states_move_forward_only() {
        use TenantState::*;
        assert!(Active.can_become(Offboarding));
        assert!(Suspended.can_become(Active));
        assert!(!Offboarding.can_become(Active));
        assert!(!Offboarded.can_become(Active));
        assert!(!Active.can_become(Offboarded));
    }

    #[test]
    fn display_text_rejects_control_characters_and_length() {
        assert_eq!(
            parse_display_text("name", "  Acme  ").as_deref(),
            Ok("Acme")
        );
        assert!(parse_display_text("name", "").is_err());
        assert!(parse_display_text("name", "a\u{0}b").is_err());
        for spoof in [
            "Acme\u{202E}gnp.exe",
            "Ac\u{200B}me",
            "\u{2067}Acme",
            "Acme\u{FEFF}",
        ] {
            let error = parse_display_text("name", spoof).expect_err(spoof);
            assert!(error.message.contains("U+"), "{}", error.message);
        }
        assert_eq!(
            parse_display_text("name", "Müller & Søn – Ærø 東京").as_deref(),
            Ok("Müller & Søn – Ærø 東京")
        );
        assert!(parse_display_text("name", &"x".repeat(201)).is_err());
    }
}
