//! The validation rules of human-readable fields as regular expressions, for the OpenAPI
//! document: what the parsers in this module tree accept, said so that a client (or a fuzzer)
//! generating values from the document sends only values the server takes. Built from the same
//! character tables the parsers use; tests compare the two over every Unicode scalar value.
//!
//! The patterns are ECMA-262 and Python `re` and Rust `regex` compatible: BMP characters are
//! written `\uXXXX`, the few characters beyond the BMP literally.

/// Control characters (Unicode `Cc`, what `char::is_control` refuses).
pub(crate) const CONTROL: &[(char, char)] = &[('\u{0}', '\u{1F}'), ('\u{7F}', '\u{9F}')];

/// What `str::trim` removes (Unicode `White_Space`, as `char::is_whitespace`).
pub(crate) const WHITESPACE: &[(char, char)] = &[
    ('\u{9}', '\u{D}'),
    (' ', ' '),
    ('\u{85}', '\u{85}'),
    ('\u{A0}', '\u{A0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200A}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202F}', '\u{202F}'),
    ('\u{205F}', '\u{205F}'),
    ('\u{3000}', '\u{3000}'),
];

/// Zero-width, bidirectional-control and other invisible formatting characters, each with the
/// name an error message gives it.
pub(crate) const INVISIBLE: &[(char, char, &str)] = &[
    ('\u{00AD}', '\u{00AD}', "SOFT HYPHEN"),
    ('\u{034F}', '\u{034F}', "COMBINING GRAPHEME JOINER"),
    ('\u{061C}', '\u{061C}', "ARABIC LETTER MARK"),
    ('\u{115F}', '\u{1160}', "HANGUL FILLER"),
    ('\u{180E}', '\u{180E}', "MONGOLIAN VOWEL SEPARATOR"),
    ('\u{200B}', '\u{200B}', "ZERO WIDTH SPACE"),
    ('\u{200C}', '\u{200C}', "ZERO WIDTH NON-JOINER"),
    ('\u{200D}', '\u{200D}', "ZERO WIDTH JOINER"),
    ('\u{200E}', '\u{200E}', "LEFT-TO-RIGHT MARK"),
    ('\u{200F}', '\u{200F}', "RIGHT-TO-LEFT MARK"),
    ('\u{202A}', '\u{202A}', "LEFT-TO-RIGHT EMBEDDING"),
    ('\u{202B}', '\u{202B}', "RIGHT-TO-LEFT EMBEDDING"),
    ('\u{202C}', '\u{202C}', "POP DIRECTIONAL FORMATTING"),
    ('\u{202D}', '\u{202D}', "LEFT-TO-RIGHT OVERRIDE"),
    ('\u{202E}', '\u{202E}', "RIGHT-TO-LEFT OVERRIDE"),
    ('\u{2060}', '\u{2064}', "INVISIBLE FORMAT CHARACTER"),
    ('\u{2066}', '\u{2066}', "LEFT-TO-RIGHT ISOLATE"),
    ('\u{2067}', '\u{2067}', "RIGHT-TO-LEFT ISOLATE"),
    ('\u{2068}', '\u{2068}', "FIRST STRONG ISOLATE"),
    ('\u{2069}', '\u{2069}', "POP DIRECTIONAL ISOLATE"),
    ('\u{206A}', '\u{206F}', "DEPRECATED FORMAT CHARACTER"),
    ('\u{3164}', '\u{3164}', "HANGUL FILLER"),
    ('\u{FEFF}', '\u{FEFF}', "ZERO WIDTH NO-BREAK SPACE"),
    ('\u{FFA0}', '\u{FFA0}', "HANGUL FILLER"),
    ('\u{FFF9}', '\u{FFFB}', "INTERLINEAR ANNOTATION CHARACTER"),
    ('\u{E0000}', '\u{E007F}', "TAG CHARACTER"),
];

/// Characters an email address may not hold besides the above: what a mail library reads as
/// address syntax (`x<them@evil>` would be delivered to them, not to the address stored).
pub(crate) const EMAIL_SYNTAX: &[char] = &['<', '>', ',', '"', '(', ')', ';', ':', '\\', '[', ']'];

pub const SLUG: &str = "^[a-z][a-z0-9-]{2,39}$";
pub const REGION: &str = "^[a-z]{2}(-[a-z0-9]+){1,3}$";
pub const REGION_MAX_CHARS: usize = 32;
pub const ENVIRONMENT_NAME: &str = "^[a-z][a-z0-9-]{1,39}$";
pub const TAG_KEY: &str = "^[a-z][a-z0-9_]{0,62}$";
pub const EMAIL_MAX_CHARS: usize = 254;
pub const EMAIL_LOCAL_MAX_CHARS: usize = 64;

fn escape(c: char) -> String {
    match u32::from(c) {
        code @ 0..=0xFFFF => format!("\\u{code:04X}"),
        _ => c.to_string(),
    }
}

fn ranges(ranges: impl IntoIterator<Item = (char, char)>) -> String {
    ranges
        .into_iter()
        .map(|(from, to)| {
            if from == to {
                escape(from)
            } else {
                format!("{}-{}", escape(from), escape(to))
            }
        })
        .collect()
}

fn unreadable() -> impl Iterator<Item = (char, char)> {
    CONTROL
        .iter()
        .copied()
        .chain(INVISIBLE.iter().map(|(from, to, _)| (*from, *to)))
}

fn whitespace() -> String {
    format!("[{}]", ranges(WHITESPACE.iter().copied()))
}

/// Any character but control and invisible ones.
fn readable() -> String {
    format!("[^{}]", ranges(unreadable()))
}

/// A readable character that is not whitespace either.
fn visible() -> String {
    format!(
        "[^{}{}]",
        ranges(unreadable()),
        ranges(WHITESPACE.iter().copied())
    )
}

/// Display text of 1 to `max_chars` characters once surrounding whitespace is trimmed, without
/// control or invisible characters (`parse_display_text`).
pub fn display_text(max_chars: usize) -> String {
    let (ws, readable, visible) = (whitespace(), readable(), visible());
    format!(
        "^{ws}*{visible}({readable}{{0,{}}}{visible})?{ws}*$",
        max_chars.saturating_sub(2)
    )
}

/// A cost tag value: no control or invisible characters (its length is `maxLength`).
pub fn tag_value() -> String {
    format!("^{}*$", readable())
}

/// An email address as `Email::parse` takes it: a local part of 1 to 64 characters, `@`, a
/// domain of dot-separated non-empty labels (two at least); no whitespace, control, invisible
/// or address-syntax characters; surrounding whitespace is trimmed.
pub fn email() -> String {
    let refused = format!(
        "{}{}{}",
        ranges(unreadable()),
        ranges(WHITESPACE.iter().copied()),
        EMAIL_SYNTAX.iter().map(|c| escape(*c)).collect::<String>()
    );
    let local = format!("[^@{refused}]");
    let label = format!("[^@.{refused}]");
    let ws = whitespace();
    format!("^{ws}*{local}{{1,{EMAIL_LOCAL_MAX_CHARS}}}@{label}+(\\.{label}+)+{ws}*$")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CostTags, Email, parse_display_text};

    fn compiled(pattern: &str) -> regex::Regex {
        regex::Regex::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"))
    }

    /// The Basic Multilingual Plane, the tag characters and their neighbours, and a sample of
    /// the other planes (all of them take a debug build half a minute).
    fn every_char() -> impl Iterator<Item = char> {
        (0..=0xFFFF_u32)
            .chain(0xDFF00..=0xE0FFF)
            .chain((0x10000..=0x10FFFF).step_by(97))
            .filter_map(char::from_u32)
    }

    #[test]
    fn tables_agree_with_the_standard_library() {
        let within =
            |table: &[(char, char)], c: char| table.iter().any(|(a, b)| (*a..=*b).contains(&c));
        for c in (0..=0x10FFFF_u32).filter_map(char::from_u32) {
            assert_eq!(within(CONTROL, c), c.is_control(), "{c:?}");
            assert_eq!(within(WHITESPACE, c), c.is_whitespace(), "{c:?}");
        }
    }

    /// Each character alone, inside and around a name: the pattern and the parser agree.
    #[test]
    fn display_text_pattern_is_the_parser() {
        let pattern = compiled(&display_text(200));
        for c in every_char() {
            for text in [
                format!("{c}"),
                format!("a{c}b"),
                format!(" {c}a"),
                format!("a{c}"),
            ] {
                assert_eq!(
                    pattern.is_match(&text),
                    parse_display_text("name", &text).is_ok(),
                    "{text:?}"
                );
            }
        }
        for (text, ok) in [
            ("x".repeat(200), true),
            ("x".repeat(201), false),
            (format!("  {}\t\n", "x".repeat(200)), true),
            ("   ".to_owned(), false),
            (String::new(), false),
        ] {
            assert_eq!(pattern.is_match(&text), ok, "{text:?}");
            assert_eq!(parse_display_text("name", &text).is_ok(), ok, "{text:?}");
        }
    }

    #[test]
    fn tag_value_pattern_is_the_parser() {
        let pattern = compiled(&tag_value());
        let key = compiled(TAG_KEY);
        for c in every_char() {
            let text = format!("a{c}");
            let parsed = CostTags::parse("t", &serde_json::json!({ "k": text })).is_ok();
            assert_eq!(pattern.is_match(&text), parsed, "{text:?}");
            let name = format!("k{c}");
            let parsed = CostTags::parse("t", &serde_json::json!({ name.clone(): "v" })).is_ok();
            assert_eq!(key.is_match(&name), parsed, "{name:?}");
        }
    }

    #[test]
    fn email_length_is_counted_as_max_length_counts_it() {
        let at_limit = format!("ops@{}.com", "d".repeat(EMAIL_MAX_CHARS - 8));
        assert_eq!(at_limit.chars().count(), EMAIL_MAX_CHARS);
        assert!(Email::parse("email", &at_limit).is_ok());
        // Padding counts, as the document's `maxLength` sees the raw string.
        assert!(Email::parse("email", &format!(" {at_limit}")).is_err());
    }

    #[test]
    fn email_pattern_is_the_parser() {
        let pattern = compiled(&email());
        for c in every_char() {
            for text in [
                format!("o{c}s@example.com"),
                format!("ops@exa{c}mple.com"),
                format!("ops@example.c{c}m"),
                format!("{c}ops@example.com"),
            ] {
                assert_eq!(
                    pattern.is_match(&text),
                    Email::parse("email", &text).is_ok(),
                    "{text:?}"
                );
            }
        }
        for text in [
            "ops@example",
            "ops@.example.com",
            "ops@example.com.",
            "ops@example..com",
            "@example.com",
            &format!("{}@example.com", "o".repeat(64)),
            &format!("{}@example.com", "o".repeat(65)),
            "o.@x.y",
            " ops@example.com\t",
        ] {
            assert_eq!(
                pattern.is_match(text),
                Email::parse("email", text).is_ok(),
                "{text:?}"
            );
        }
    }
}
