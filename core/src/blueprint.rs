//! Blueprints: versioned, declarative files in `infra/blueprints/` that say what one kind of
//! environment is made of (isolation, limits, baseline migrations).
//!
//! A file is parsed with unknown fields denied, then checked; every error names the file and the
//! field, e.g. `infra/blueprints/shared-basic.toml: limits.connection_limit: must be from 1 to
//! 1000`. The catalog checks the files together: a (name, version) appears once, all versions of
//! a name share one isolation, and each isolation has exactly one default blueprint.

use crate::domain::Isolation;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::LazyLock;

/// Range of `limits.connection_limit`.
pub const CONNECTION_LIMIT_RANGE: std::ops::RangeInclusive<i32> = 1..=1000;
/// Range of `limits.statement_timeout_ms`: 100 ms to one hour.
pub const STATEMENT_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u32> = 100..=3_600_000;
/// Range of `limits.idle_in_transaction_session_timeout_ms`: 1 s to one day.
pub const IDLE_IN_TRANSACTION_MS_RANGE: std::ops::RangeInclusive<u32> = 1_000..=86_400_000;
/// Range of `limits.temp_file_limit_kb`: 64 kB to 1 TiB.
pub const TEMP_FILE_LIMIT_KB_RANGE: std::ops::RangeInclusive<u32> = 64..=1_073_741_824;
/// Range of `limits.work_mem_kb`: 64 kB (PostgreSQL's minimum) to 2 GiB.
pub const WORK_MEM_KB_RANGE: std::ops::RangeInclusive<u32> = 64..=2_097_152;
/// Defaults of the optional limits.
pub const DEFAULT_IDLE_IN_TRANSACTION_MS: u32 = 60_000;
pub const DEFAULT_TEMP_FILE_LIMIT_KB: u32 = 1_048_576;
pub const DEFAULT_WORK_MEM_KB: u32 = 4_096;
/// At most this many baseline migrations in one blueprint.
pub const MAX_BASELINE: usize = 200;

/// The blueprints shipped with Bulkhead, compiled in so binaries are self-contained. A new file
/// in `infra/blueprints/` must be added here too (a test checks the two agree).
const BUILTIN: &[(&str, &str)] = &[
    (
        "infra/blueprints/dedicated-basic.toml",
        include_str!("../../infra/blueprints/dedicated-basic.toml"),
    ),
    (
        "infra/blueprints/dedicated-basic-v2.toml",
        include_str!("../../infra/blueprints/dedicated-basic-v2.toml"),
    ),
    (
        "infra/blueprints/shared-basic.toml",
        include_str!("../../infra/blueprints/shared-basic.toml"),
    ),
    (
        "infra/blueprints/shared-basic-v2.toml",
        include_str!("../../infra/blueprints/shared-basic-v2.toml"),
    ),
];

/// One version of one kind of environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blueprint {
    /// `^[a-z][a-z0-9-]{1,62}$`, such as `shared-basic`.
    pub name: String,
    /// 1, 2, …; a released version never changes, a change is a new version.
    pub version: u32,
    pub isolation: Isolation,
    pub description: String,
    pub limits: Limits,
    /// Applied in order, each once, inside the environment's schema as its owner role.
    pub baseline: Vec<BaselineMigration>,
}

impl Blueprint {
    /// `name@version`, as shown to people.
    pub fn key(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// What one environment may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Concurrent connections of the app role (and, plus a small reserve, of a dedicated database).
    pub connection_limit: i32,
    /// `statement_timeout` of the app role (a default: the tenant can `SET` it).
    pub statement_timeout_ms: u32,
    /// `idle_in_transaction_session_timeout` of the app role (a default).
    #[serde(default = "default_idle_in_transaction_ms")]
    pub idle_in_transaction_session_timeout_ms: u32,
    /// `temp_file_limit` of the app role, in kB (a wall: only a superuser may change it).
    #[serde(default = "default_temp_file_limit_kb")]
    pub temp_file_limit_kb: u32,
    /// `work_mem` of the app role, in kB (a default).
    #[serde(default = "default_work_mem_kb")]
    pub work_mem_kb: u32,
}

fn default_idle_in_transaction_ms() -> u32 {
    DEFAULT_IDLE_IN_TRANSACTION_MS
}

fn default_temp_file_limit_kb() -> u32 {
    DEFAULT_TEMP_FILE_LIMIT_KB
}

fn default_work_mem_kb() -> u32 {
    DEFAULT_WORK_MEM_KB
}

/// One SQL migration of the environment's baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineMigration {
    /// `^[0-9]{4}_[a-z0-9_]{1,58}$`, strictly increasing within a blueprint, such as `0001_orders`.
    pub id: String,
    /// Statements run in one transaction; no transaction control, no `CONCURRENTLY`.
    pub sql: String,
}

/// A blueprint file that failed to load: which file, which field, and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlueprintError {
    pub file: String,
    pub field: String,
    pub message: String,
}

impl BlueprintError {
    fn new(file: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for BlueprintError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.field, self.message)
    }
}

impl std::error::Error for BlueprintError {}

/// Every loaded blueprint, sorted by name then version, and the default name of each isolation.
#[derive(Debug, Clone)]
pub struct BlueprintCatalog {
    blueprints: Vec<Blueprint>,
    defaults: BTreeMap<&'static str, String>,
}

impl BlueprintCatalog {
    /// Loads every `*.toml` file of `dir` (not recursive), in file-name order.
    pub fn load_dir(dir: &Path) -> Result<Self, BlueprintError> {
        let shown = dir.display().to_string();
        let entries = std::fs::read_dir(dir).map_err(|e| {
            BlueprintError::new(&shown, "directory", format!("cannot be read: {e}"))
        })?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| {
                BlueprintError::new(&shown, "directory", format!("cannot be listed: {e}"))
            })?;
            let path = entry.path();
            if path.extension().is_some_and(|ext| ext == "toml") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let file = path.display().to_string();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| BlueprintError::new(&file, "file", format!("cannot be read: {e}")))?;
            files.push((file, text));
        }
        Self::from_sources(&shown, files.iter().map(|(f, t)| (f.as_str(), t.as_str())))
    }

    /// The blueprints of `infra/blueprints/`, compiled into the binary.
    pub fn builtin() -> Result<Self, BlueprintError> {
        Self::from_sources("infra/blueprints", BUILTIN.iter().copied())
    }

    /// Parses and checks `(file name, TOML text)` pairs; `origin` names the set in errors that
    /// belong to no single file (such as a missing default).
    pub fn from_sources<'a>(
        origin: &str,
        sources: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, BlueprintError> {
        let mut blueprints: Vec<(String, bool, Blueprint)> = Vec::new();
        for (file, text) in sources {
            let (blueprint, is_default) = parse_file(file, text)?;
            if let Some((other, _, _)) = blueprints
                .iter()
                .find(|(_, _, b)| b.name == blueprint.name && b.version == blueprint.version)
            {
                return Err(BlueprintError::new(
                    file,
                    "version",
                    format!(
                        "{} is already defined by {other}; a new version needs a new number",
                        blueprint.key()
                    ),
                ));
            }
            if let Some((other, _, b)) = blueprints
                .iter()
                .find(|(_, _, b)| b.name == blueprint.name && b.isolation != blueprint.isolation)
            {
                return Err(BlueprintError::new(
                    file,
                    "isolation",
                    format!(
                        "must be {} like {} in {other}: all versions of a blueprint share one isolation",
                        b.isolation.as_str(),
                        b.key()
                    ),
                ));
            }
            blueprints.push((file.to_owned(), is_default, blueprint));
        }

        let mut defaults: BTreeMap<&'static str, String> = BTreeMap::new();
        for (file, is_default, blueprint) in &blueprints {
            if !is_default {
                continue;
            }
            let isolation = blueprint.isolation.as_str();
            match defaults.get(isolation) {
                Some(name) if *name != blueprint.name => {
                    return Err(BlueprintError::new(
                        file,
                        "default",
                        format!(
                            "{name} is already the default for isolation {isolation}; exactly one \
                             blueprint per isolation may be the default"
                        ),
                    ));
                }
                _ => {
                    defaults.insert(isolation, blueprint.name.clone());
                }
            }
        }
        for isolation in [Isolation::Shared, Isolation::Dedicated] {
            if !defaults.contains_key(isolation.as_str()) {
                return Err(BlueprintError::new(
                    origin,
                    "default",
                    format!(
                        "no blueprint with isolation = \"{}\" has default = true; exactly one must",
                        isolation.as_str()
                    ),
                ));
            }
        }

        let mut blueprints: Vec<Blueprint> = blueprints.into_iter().map(|(_, _, b)| b).collect();
        blueprints.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
        Ok(Self {
            blueprints,
            defaults,
        })
    }

    /// The blueprint `name` at `version`, or its latest version when `version` is `None`.
    pub fn get(&self, name: &str, version: Option<u32>) -> Option<&Blueprint> {
        let mut matching = self.blueprints.iter().filter(|b| b.name == name);
        match version {
            Some(v) => matching.find(|b| b.version == v),
            None => matching.max_by_key(|b| b.version),
        }
    }

    /// The latest version of the default blueprint of `isolation`.
    pub fn default_for(&self, isolation: Isolation) -> Option<&Blueprint> {
        let name = self.defaults.get(isolation.as_str())?;
        self.get(name, None)
    }

    /// Every blueprint, sorted by name then version.
    pub fn all(&self) -> &[Blueprint] {
        &self.blueprints
    }

    /// Whether `name` is the default blueprint of its isolation.
    pub fn is_default(&self, name: &str) -> bool {
        self.defaults.values().any(|default| default == name)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlueprintFile {
    name: String,
    version: u32,
    isolation: Isolation,
    #[serde(default)]
    default: bool,
    description: String,
    limits: LimitsFile,
    #[serde(default)]
    baseline: Vec<BaselineFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    connection_limit: i32,
    statement_timeout_ms: u32,
    #[serde(default = "default_idle_in_transaction_ms")]
    idle_in_transaction_session_timeout_ms: u32,
    #[serde(default = "default_temp_file_limit_kb")]
    temp_file_limit_kb: u32,
    #[serde(default = "default_work_mem_kb")]
    work_mem_kb: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BaselineFile {
    id: String,
    sql: String,
}

static NAME: LazyLock<Option<regex::Regex>> =
    LazyLock::new(|| regex::Regex::new(r"^[a-z][a-z0-9-]{1,62}$").ok());
static MIGRATION_ID: LazyLock<Option<regex::Regex>> =
    LazyLock::new(|| regex::Regex::new(r"^[0-9]{4}_[a-z0-9_]{1,58}$").ok());
/// Statements that cannot run inside the transaction a migration is applied in.
static NON_TRANSACTIONAL: LazyLock<Option<regex::Regex>> = LazyLock::new(|| {
    regex::Regex::new(
        r"(?i)\b(COMMIT|ROLLBACK|SAVEPOINT|START\s+TRANSACTION|BEGIN\s*(;|$|TRANSACTION\b|WORK\b)|CONCURRENTLY|VACUUM|CREATE\s+DATABASE|DROP\s+DATABASE)",
    )
    .ok()
});

fn matches(re: &LazyLock<Option<regex::Regex>>, text: &str) -> bool {
    re.as_ref().is_some_and(|re| re.is_match(text))
}

fn find<'t>(re: &LazyLock<Option<regex::Regex>>, text: &'t str) -> Option<&'t str> {
    re.as_ref().and_then(|re| re.find(text)).map(|m| m.as_str())
}

fn parse_file(file: &str, text: &str) -> Result<(Blueprint, bool), BlueprintError> {
    let raw: BlueprintFile = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
    let err = |field: &str, message: String| BlueprintError::new(file, field, message);

    if !matches(&NAME, &raw.name) {
        return Err(err(
            "name",
            format!(
                "\"{}\" must be 2 to 63 characters: a lowercase letter, then lowercase letters, \
                 digits or '-'",
                raw.name
            ),
        ));
    }
    if raw.version < 1 {
        return Err(err("version", "must be at least 1".to_owned()));
    }
    let description = raw.description.trim();
    if description.is_empty() || description.chars().count() > 500 {
        return Err(err(
            "description",
            "must be 1 to 500 characters saying what the environment is for".to_owned(),
        ));
    }
    if !CONNECTION_LIMIT_RANGE.contains(&raw.limits.connection_limit) {
        return Err(err(
            "limits.connection_limit",
            format!(
                "must be from {} to {}",
                CONNECTION_LIMIT_RANGE.start(),
                CONNECTION_LIMIT_RANGE.end()
            ),
        ));
    }
    if !STATEMENT_TIMEOUT_MS_RANGE.contains(&raw.limits.statement_timeout_ms) {
        return Err(err(
            "limits.statement_timeout_ms",
            format!(
                "must be from {} to {} (milliseconds)",
                STATEMENT_TIMEOUT_MS_RANGE.start(),
                STATEMENT_TIMEOUT_MS_RANGE.end()
            ),
        ));
    }
    for (field, value, range, unit) in [
        (
            "limits.idle_in_transaction_session_timeout_ms",
            raw.limits.idle_in_transaction_session_timeout_ms,
            IDLE_IN_TRANSACTION_MS_RANGE,
            "milliseconds",
        ),
        (
            "limits.temp_file_limit_kb",
            raw.limits.temp_file_limit_kb,
            TEMP_FILE_LIMIT_KB_RANGE,
            "kB",
        ),
        (
            "limits.work_mem_kb",
            raw.limits.work_mem_kb,
            WORK_MEM_KB_RANGE,
            "kB",
        ),
    ] {
        if !range.contains(&value) {
            return Err(err(
                field,
                format!("must be from {} to {} ({unit})", range.start(), range.end()),
            ));
        }
    }
    if raw.baseline.len() > MAX_BASELINE {
        return Err(err(
            "baseline",
            format!(
                "has {} migrations; at most {MAX_BASELINE} are allowed",
                raw.baseline.len()
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut previous: Option<&str> = None;
    for (index, migration) in raw.baseline.iter().enumerate() {
        let at = |field: &str| format!("baseline[{index}].{field}");
        if !matches(&MIGRATION_ID, &migration.id) {
            return Err(err(
                &at("id"),
                format!(
                    "\"{}\" must be four digits, '_', then lowercase letters, digits or '_' (at \
                     most 63 characters), such as 0001_orders",
                    migration.id
                ),
            ));
        }
        if !seen.insert(migration.id.as_str()) {
            return Err(err(
                &at("id"),
                format!(
                    "\"{}\" is used by an earlier migration; ids must be unique",
                    migration.id
                ),
            ));
        }
        if let Some(previous) = previous
            && migration.id.as_str() <= previous
        {
            return Err(err(
                &at("id"),
                format!(
                    "\"{}\" must sort after \"{previous}\": migrations are listed in the order \
                     they apply",
                    migration.id
                ),
            ));
        }
        previous = Some(migration.id.as_str());
        if migration.sql.trim().is_empty() {
            return Err(err(&at("sql"), "must not be empty".to_owned()));
        }
        if let Some(found) = find(&NON_TRANSACTIONAL, &migration.sql) {
            return Err(err(
                &at("sql"),
                format!(
                    "contains \"{}\": a migration runs inside one transaction, so it may not \
                     control transactions, create or drop databases, vacuum or build indexes \
                     CONCURRENTLY",
                    found.trim()
                ),
            ));
        }
    }

    let blueprint = Blueprint {
        name: raw.name,
        version: raw.version,
        isolation: raw.isolation,
        description: description.to_owned(),
        limits: Limits {
            connection_limit: raw.limits.connection_limit,
            statement_timeout_ms: raw.limits.statement_timeout_ms,
            idle_in_transaction_session_timeout_ms: raw
                .limits
                .idle_in_transaction_session_timeout_ms,
            temp_file_limit_kb: raw.limits.temp_file_limit_kb,
            work_mem_kb: raw.limits.work_mem_kb,
        },
        baseline: raw
            .baseline
            .into_iter()
            .map(|m| BaselineMigration {
                id: m.id,
                sql: m.sql,
            })
            .collect(),
    };
    Ok((blueprint, raw.default))
}

/// Turns a TOML or shape error into a file/field error: the field is the dotted path of the key
/// the error points at (`limits.connection_limit`, `baseline[1].id`), found from its position.
fn toml_error(file: &str, text: &str, error: &toml::de::Error) -> BlueprintError {
    let message = error.message().trim().to_owned();
    let Some(span) = error.span() else {
        return BlueprintError::new(file, "(document)", message);
    };
    let start = span.start.min(text.len());
    let before = text.get(..start).unwrap_or("");
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");

    // The table the position is in: the last header above it, with an index for arrays.
    let mut table = String::new();
    let mut array_counts: BTreeMap<String, usize> = BTreeMap::new();
    for header in text.lines().take(line_no).map(str::trim) {
        if let Some(name) = header.strip_prefix("[[").and_then(|h| h.split("]]").next()) {
            let name = name.trim().to_owned();
            let count = array_counts.entry(name.clone()).or_insert(0);
            table = format!("{name}[{}]", *count);
            *count += 1;
        } else if let Some(name) = header.strip_prefix('[').and_then(|h| h.split(']').next()) {
            table = name.trim().to_owned();
        }
    }
    // The key: named in the message (unknown or missing field), else the key on that line.
    let named = ["unknown field `", "missing field `", "duplicate key `"]
        .iter()
        .find_map(|prefix| message.split(prefix).nth(1))
        .and_then(|rest| rest.split('`').next())
        .map(str::to_owned);
    let on_line = line
        .split_once('=')
        .map(|(key, _)| key.trim().trim_matches('"').to_owned())
        .filter(|key| !key.is_empty() && !key.starts_with('['));
    let key = named.or(on_line);
    let field = match (table.is_empty(), key) {
        (true, Some(key)) => key,
        (false, Some(key)) => format!("{table}.{key}"),
        (false, None) => table,
        (true, None) => format!("line {line_no}"),
    };
    let message = message.replace('\n', " ");
    BlueprintError::new(file, field, format!("{message} (line {line_no})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARED: &str = r#"
name = "shared-basic"
version = 1
isolation = "shared"
default = true
description = "Schema in the pooled database."

[limits]
connection_limit = 5
statement_timeout_ms = 30000

[[baseline]]
id = "0001_orders"
sql = "CREATE TABLE orders (id bigint PRIMARY KEY);"

[[baseline]]
id = "0002_order_lines"
sql = "CREATE TABLE order_lines (order_id bigint REFERENCES orders (id));"
"#;

    const DEDICATED: &str = r#"
name = "dedicated-basic"
version = 1
isolation = "dedicated"
default = true
description = "Own database."

[limits]
connection_limit = 10
statement_timeout_ms = 60000
"#;

    fn load(files: &[(&str, &str)]) -> Result<BlueprintCatalog, BlueprintError> {
        BlueprintCatalog::from_sources("test", files.iter().copied())
    }

    fn error_of(shared_text: &str) -> String {
        load(&[
            ("bp/shared.toml", shared_text),
            ("bp/dedicated.toml", DEDICATED),
        ])
        .expect_err("must fail")
        .to_string()
    }

    #[test]
    fn builtin_blueprints_load_and_have_defaults() {
        let catalog = BlueprintCatalog::builtin().expect("builtin blueprints are valid");
        let shared = catalog
            .default_for(Isolation::Shared)
            .expect("shared default");
        // The latest version: version 2 adds the inventory baseline.
        assert_eq!((shared.name.as_str(), shared.version), ("shared-basic", 2));
        assert!(shared.baseline.iter().any(|m| m.id == "0004_inventory"));
        assert!(shared.baseline.len() >= 2);
        let dedicated = catalog
            .default_for(Isolation::Dedicated)
            .expect("dedicated default");
        assert_eq!(dedicated.name, "dedicated-basic");
        assert_eq!(dedicated.isolation, Isolation::Dedicated);
        assert_eq!(catalog.all().len(), 4);
        assert_eq!(
            catalog.get("dedicated-basic", Some(1)).map(|b| b.version),
            Some(1)
        );
    }

    #[test]
    fn builtin_list_matches_the_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/blueprints");
        let from_dir = BlueprintCatalog::load_dir(&dir).expect("directory loads");
        let builtin = BlueprintCatalog::builtin().expect("builtin loads");
        assert_eq!(
            from_dir.all(),
            builtin.all(),
            "add new files to BUILTIN in blueprint.rs"
        );
    }

    #[test]
    fn get_picks_a_version_or_the_latest() {
        let v2 = SHARED
            .replace("version = 1", "version = 2")
            .replace("default = true", "");
        let catalog =
            load(&[("a.toml", SHARED), ("b.toml", &v2), ("c.toml", DEDICATED)]).expect("valid");
        assert_eq!(
            catalog.get("shared-basic", None).map(|b| b.version),
            Some(2)
        );
        assert_eq!(
            catalog.get("shared-basic", Some(1)).map(|b| b.version),
            Some(1)
        );
        assert!(catalog.get("shared-basic", Some(3)).is_none());
        assert!(catalog.get("nope", None).is_none());
        assert_eq!(
            catalog.default_for(Isolation::Shared).map(|b| b.version),
            Some(2)
        );
    }

    #[test]
    fn optional_limits_take_their_defaults() {
        let catalog = load(&[("bp/shared.toml", SHARED), ("bp/dedicated.toml", DEDICATED)])
            .expect("valid without the optional limits");
        let shared = catalog
            .get("shared-basic", Some(1))
            .expect("shared-basic@1");
        assert_eq!(shared.limits.temp_file_limit_kb, DEFAULT_TEMP_FILE_LIMIT_KB);
        assert_eq!(shared.limits.work_mem_kb, DEFAULT_WORK_MEM_KB);
        assert_eq!(
            shared.limits.idle_in_transaction_session_timeout_ms,
            DEFAULT_IDLE_IN_TRANSACTION_MS
        );
    }

    #[test]
    fn range_errors_name_file_and_field() {
        assert_eq!(
            error_of(&SHARED.replace("connection_limit = 5", "connection_limit = 0")),
            "bp/shared.toml: limits.connection_limit: must be from 1 to 1000"
        );
        assert_eq!(
            error_of(&SHARED.replace("statement_timeout_ms = 30000", "statement_timeout_ms = 5")),
            "bp/shared.toml: limits.statement_timeout_ms: must be from 100 to 3600000 (milliseconds)"
        );
        let with = |line: &str| {
            SHARED.replace(
                "statement_timeout_ms = 30000",
                &format!("statement_timeout_ms = 30000\n{line}"),
            )
        };
        assert_eq!(
            error_of(&with("temp_file_limit_kb = 0")),
            "bp/shared.toml: limits.temp_file_limit_kb: must be from 64 to 1073741824 (kB)"
        );
        assert_eq!(
            error_of(&with("work_mem_kb = 1")),
            "bp/shared.toml: limits.work_mem_kb: must be from 64 to 2097152 (kB)"
        );
        assert_eq!(
            error_of(&with("idle_in_transaction_session_timeout_ms = 10")),
            "bp/shared.toml: limits.idle_in_transaction_session_timeout_ms: must be from 1000 to 86400000 (milliseconds)"
        );
        assert_eq!(
            error_of(&SHARED.replace("version = 1", "version = 0")),
            "bp/shared.toml: version: must be at least 1"
        );
        assert!(
            error_of(&SHARED.replace("\"shared-basic\"", "\"Shared_Basic\""))
                .starts_with("bp/shared.toml: name: \"Shared_Basic\" must be")
        );
    }

    #[test]
    fn unknown_and_missing_fields_name_their_path() {
        let unknown = error_of(&SHARED.replace("connection_limit = 5", "connection_limt = 5"));
        assert!(
            unknown.starts_with("bp/shared.toml: limits.connection_limt: unknown field"),
            "{unknown}"
        );
        let top = error_of(&SHARED.replace("default = true", "default = true\ncolour = \"red\""));
        assert!(
            top.starts_with("bp/shared.toml: colour: unknown field"),
            "{top}"
        );
        let in_array = error_of(&SHARED.replace(
            "id = \"0002_order_lines\"",
            "id = \"0002_order_lines\"\nchecksum = \"x\"",
        ));
        assert!(
            in_array.starts_with("bp/shared.toml: baseline[1].checksum: unknown field"),
            "{in_array}"
        );
        let wrong_type =
            error_of(&SHARED.replace("connection_limit = 5", "connection_limit = \"5\""));
        assert!(
            wrong_type.starts_with("bp/shared.toml: limits.connection_limit: "),
            "{wrong_type}"
        );
        let negative = error_of(&SHARED.replace("version = 1", "version = -1"));
        assert!(
            negative.starts_with("bp/shared.toml: version: "),
            "{negative}"
        );
        let isolation = error_of(&SHARED.replace("\"shared\"", "\"pooled\""));
        assert!(
            isolation.starts_with("bp/shared.toml: isolation: "),
            "{isolation}"
        );
        let missing =
            error_of(&SHARED.replace("description = \"Schema in the pooled database.\"", ""));
        assert!(
            missing.starts_with("bp/shared.toml: description: missing field"),
            "{missing}"
        );
        let missing_limit = error_of(&SHARED.replace("connection_limit = 5\n", ""));
        assert!(
            missing_limit.starts_with("bp/shared.toml: limits.connection_limit: missing field"),
            "{missing_limit}"
        );
        let syntax = error_of(&SHARED.replace("version = 1", "version = = 1"));
        assert!(syntax.starts_with("bp/shared.toml: version: "), "{syntax}");
    }

    #[test]
    fn baseline_errors_name_the_migration() {
        let unordered = SHARED
            .replace("\"0001_orders\"", "\"0003_orders\"")
            .replace("\"0002_order_lines\"", "\"0002_lines\"");
        assert!(
            error_of(&unordered)
                .starts_with("bp/shared.toml: baseline[1].id: \"0002_lines\" must sort after")
        );
        let duplicate = SHARED.replace("\"0002_order_lines\"", "\"0001_orders\"");
        assert!(
            error_of(&duplicate)
                .starts_with("bp/shared.toml: baseline[1].id: \"0001_orders\" is used")
        );
        let bad_id = SHARED.replace("\"0001_orders\"", "\"orders\"");
        assert!(
            error_of(&bad_id).starts_with("bp/shared.toml: baseline[0].id: \"orders\" must be")
        );
        let empty = SHARED.replace("\"CREATE TABLE orders (id bigint PRIMARY KEY);\"", "\"  \"");
        assert_eq!(
            error_of(&empty),
            "bp/shared.toml: baseline[0].sql: must not be empty"
        );
        let concurrently = SHARED.replace(
            "\"CREATE TABLE orders (id bigint PRIMARY KEY);\"",
            "\"CREATE INDEX CONCURRENTLY i ON t (x);\"",
        );
        assert!(
            error_of(&concurrently)
                .starts_with("bp/shared.toml: baseline[0].sql: contains \"CONCURRENTLY\"")
        );
        let commit = SHARED.replace(
            "\"CREATE TABLE orders (id bigint PRIMARY KEY);\"",
            "\"CREATE TABLE t (x int); COMMIT;\"",
        );
        assert!(
            error_of(&commit).starts_with("bp/shared.toml: baseline[0].sql: contains \"COMMIT\"")
        );
        let plpgsql = SHARED.replace(
            "\"CREATE TABLE orders (id bigint PRIMARY KEY);\"",
            "\"CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$;\"",
        );
        assert!(load(&[("a.toml", &plpgsql), ("b.toml", DEDICATED)]).is_ok());
    }

    #[test]
    fn catalog_checks_defaults_and_duplicates() {
        let no_default = DEDICATED.replace("default = true", "");
        assert_eq!(
            load(&[("a.toml", SHARED), ("b.toml", &no_default)])
                .expect_err("no dedicated default")
                .to_string(),
            "test: default: no blueprint with isolation = \"dedicated\" has default = true; \
             exactly one must"
        );
        let second = SHARED.replace("shared-basic", "shared-other");
        let two_defaults = load(&[
            ("a.toml", SHARED),
            ("b.toml", &second),
            ("c.toml", DEDICATED),
        ])
        .expect_err("two shared defaults")
        .to_string();
        assert!(two_defaults.starts_with("b.toml: default: shared-basic is already the default"));
        let duplicate = load(&[
            ("a.toml", SHARED),
            ("b.toml", SHARED),
            ("c.toml", DEDICATED),
        ])
        .expect_err("duplicate version")
        .to_string();
        assert!(
            duplicate.starts_with("b.toml: version: shared-basic@1 is already defined by a.toml")
        );
        let v2_dedicated = SHARED
            .replace("version = 1", "version = 2")
            .replace("\"shared\"", "\"dedicated\"")
            .replace("default = true", "");
        let mixed = load(&[
            ("a.toml", SHARED),
            ("b.toml", &v2_dedicated),
            ("c.toml", DEDICATED),
        ])
        .expect_err("isolation changes between versions")
        .to_string();
        assert!(
            mixed.starts_with("b.toml: isolation: must be shared"),
            "{mixed}"
        );
    }

    #[test]
    fn load_dir_reports_the_file_path() {
        let dir = std::env::temp_dir().join(format!("bk-blueprints-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join("shared.toml"),
            SHARED.replace("connection_limit = 5", "connection_limit = 5000"),
        )
        .expect("write");
        std::fs::write(dir.join("dedicated.toml"), DEDICATED).expect("write");
        std::fs::write(dir.join("notes.md"), "ignored").expect("write");
        let error = BlueprintCatalog::load_dir(&dir).expect_err("invalid limit");
        assert_eq!(error.file, dir.join("shared.toml").display().to_string());
        assert_eq!(error.field, "limits.connection_limit");
        std::fs::write(dir.join("shared.toml"), SHARED).expect("write");
        let catalog = BlueprintCatalog::load_dir(&dir).expect("valid now");
        assert_eq!(catalog.all().len(), 2);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn blueprints_round_trip_through_json() {
        let catalog = BlueprintCatalog::builtin().expect("builtin");
        let blueprint = catalog.get("shared-basic", Some(1)).expect("present");
        let json = serde_json::to_string(blueprint).expect("serialize");
        let back: Blueprint = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(&back, blueprint);
    }
}
