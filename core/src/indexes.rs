//! The indexes a blueprint's baseline makes, read from its SQL: each `CREATE [UNIQUE] INDEX
//! <name>` statement, so a drift check can see one dropped behind Bulkhead's back and a repair
//! can make it again (`CREATE … IF NOT EXISTS`, the statement as the blueprint wrote it).
//!
//! Statements are split at `;` outside quotes and dollar-quoted bodies; an index made inside a
//! function body or a `DO` block is not seen (nor one made `CONCURRENTLY`, which a baseline,
//! run in a transaction, cannot use).

use crate::blueprint::Blueprint;

/// One index a baseline migration makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineIndex {
    pub migration: String,
    pub name: String,
    /// The statement, as written.
    pub statement: String,
}

/// Every index the blueprint's baseline makes, in migration order.
pub fn of_blueprint(blueprint: &Blueprint) -> Vec<BaselineIndex> {
    blueprint
        .baseline
        .iter()
        .flat_map(|migration| {
            statements(&migration.sql)
                .into_iter()
                .filter_map(|statement| {
                    index_name(&statement).map(|name| BaselineIndex {
                        migration: migration.id.clone(),
                        name,
                        statement,
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The statement that makes the index again if it is missing.
pub fn restore_statement(index: &BaselineIndex) -> Option<String> {
    let words: Vec<&str> = index.statement.split_whitespace().collect();
    let at = words.iter().position(|w| w.eq_ignore_ascii_case("INDEX"))?;
    let already = words
        .get(at + 1..at + 4)
        .is_some_and(|w| w.join(" ").eq_ignore_ascii_case("IF NOT EXISTS"));
    let mut out: Vec<&str> = words[..=at].to_vec();
    if !already {
        out.extend(["IF", "NOT", "EXISTS"]);
    }
    out.extend(&words[at + 1..]);
    Some(out.join(" "))
}

/// The statements of `sql`, split at `;` outside quotes, comments and dollar quotes, each
/// without its leading comments.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = sql.char_indices().peekable();
    let mut dollar: Option<String> = None;
    let mut quote: Option<char> = None;
    while let Some((at, c)) = chars.next() {
        if let Some(tag) = &dollar {
            current.push(c);
            if c == '$' && sql[..=at].ends_with(tag.as_str()) && current.len() >= tag.len() * 2 {
                dollar = None;
            }
            continue;
        }
        if let Some(q) = quote {
            current.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                current.push(c);
            }
            '-' if chars.peek().is_some_and(|(_, n)| *n == '-') => {
                // A line comment: skipped to its end.
                for (_, n) in chars.by_ref() {
                    if n == '\n' {
                        current.push('\n');
                        break;
                    }
                }
            }
            '$' => {
                let rest = &sql[at + 1..];
                let tag_len = rest.find('$').filter(|end| {
                    rest[..*end]
                        .chars()
                        .all(|t| t.is_alphanumeric() || t == '_')
                });
                match tag_len {
                    Some(end) => {
                        let tag = format!("${}$", &rest[..end]);
                        current.push_str(&tag);
                        for _ in 0..=end {
                            chars.next();
                        }
                        dollar = Some(tag);
                    }
                    None => current.push(c),
                }
            }
            ';' => {
                let statement = current.trim().to_owned();
                if !statement.is_empty() {
                    out.push(statement);
                }
                current.clear();
            }
            _ => current.push(c),
        }
    }
    let statement = current.trim().to_owned();
    if !statement.is_empty() {
        out.push(statement);
    }
    out
}

/// The index's name if `statement` is `CREATE [UNIQUE] INDEX [IF NOT EXISTS] <name> ON …`.
fn index_name(statement: &str) -> Option<String> {
    let words: Vec<String> = statement
        .split_whitespace()
        .map(str::to_ascii_uppercase)
        .collect();
    let mut at = 0;
    if words.first()? != "CREATE" {
        return None;
    }
    at += 1;
    if words.get(at)? == "UNIQUE" {
        at += 1;
    }
    if words.get(at)? != "INDEX" {
        return None;
    }
    at += 1;
    if words.get(at)? == "CONCURRENTLY" {
        return None;
    }
    if words
        .get(at..at + 3)
        .is_some_and(|w| w.join(" ") == "IF NOT EXISTS")
    {
        at += 3;
    }
    let name = statement.split_whitespace().nth(at)?;
    if words.get(at + 1).map(String::as_str) != Some("ON") {
        return None;
    }
    // PostgreSQL folds an unquoted name to lower case and keeps a quoted one as written.
    let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(quoted) => quoted.to_owned(),
        None => name.to_lowercase(),
    };
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_indexes_outside_quotes_and_bodies() {
        let sql = "-- header; not a statement\n\
            CREATE TABLE t (a int, b text DEFAULT 'x;y');\n\
            CREATE INDEX t_a ON t (a);\n\
            create unique index if not exists t_b on t (b) WHERE b <> ';';\n\
            CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $fn$ BEGIN \
              CREATE INDEX hidden ON t (a); END $fn$;\n\
            CREATE INDEX CONCURRENTLY later ON t (b);";
        let found: Vec<(String, String)> = statements(sql)
            .iter()
            .filter_map(|s| index_name(s).map(|n| (n, s.clone())))
            .collect();
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["t_a", "t_b"]);
        assert_eq!(
            index_name("CREATE INDEX Mixed_Case ON t (a)").as_deref(),
            Some("mixed_case")
        );
        assert_eq!(
            index_name("CREATE INDEX \"Kept\" ON t (a)").as_deref(),
            Some("Kept")
        );
        assert_eq!(
            found[1].1,
            "create unique index if not exists t_b on t (b) WHERE b <> ';'"
        );
    }

    #[test]
    fn restores_with_if_not_exists_once() {
        let index = |statement: &str| BaselineIndex {
            migration: "0001_x".into(),
            name: "i".into(),
            statement: statement.into(),
        };
        assert_eq!(
            restore_statement(&index("CREATE INDEX i ON t (a) WHERE a < 10")).as_deref(),
            Some("CREATE INDEX IF NOT EXISTS i ON t (a) WHERE a < 10")
        );
        assert_eq!(
            restore_statement(&index("CREATE UNIQUE INDEX IF NOT EXISTS i ON t (a)")).as_deref(),
            Some("CREATE UNIQUE INDEX IF NOT EXISTS i ON t (a)")
        );
    }

    #[test]
    fn the_shipped_blueprints_make_their_indexes() {
        let catalog = crate::blueprint::BlueprintCatalog::builtin().expect("builtin");
        let shared = catalog.get("shared-basic", Some(2)).expect("v2");
        let names: Vec<String> = of_blueprint(shared).into_iter().map(|i| i.name).collect();
        assert!(names.contains(&"order_lines_sku".to_owned()), "{names:?}");
        assert!(
            names.contains(&"inventory_low_stock".to_owned()),
            "{names:?}"
        );
    }
}
