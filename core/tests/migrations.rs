//! The control database's migrations against the real server (`TEST_DATABASE_SERVER`, default
//! `postgres://postgres@127.0.0.1:5432`): every `down.sql` undoes its `up.sql` (run, revert all,
//! run again), and `schema.rs`, written by hand, matches the tables the migrations create.
//! Each test has its own database and drops it.

use bulkhead_core::db::{MIGRATIONS, run_migrations};
use diesel::sql_types::Text;
use diesel::{PgConnection, QueryableByName, RunQueryDsl};
use diesel_migrations::MigrationHarness;
use std::collections::{BTreeMap, BTreeSet};

mod support;
use support::TestDb;

#[derive(QueryableByName)]
struct Column {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    data_type: String,
    #[diesel(sql_type = Text)]
    is_nullable: String,
}

/// table → column → (PostgreSQL type, nullable), as the database has them.
fn database_columns(conn: &mut PgConnection) -> BTreeMap<String, BTreeMap<String, (String, bool)>> {
    let rows: Vec<Column> = diesel::sql_query(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text \
         FROM information_schema.columns WHERE table_schema = 'public' \
         AND table_name <> '__diesel_schema_migrations'",
    )
    .load(conn)
    .expect("read information_schema");
    let mut tables: BTreeMap<String, BTreeMap<String, (String, bool)>> = BTreeMap::new();
    for row in rows {
        tables
            .entry(row.table_name)
            .or_default()
            .insert(row.column_name, (row.data_type, row.is_nullable == "YES"));
    }
    tables
}

/// The PostgreSQL type (as `information_schema.columns.data_type` names it) and nullability of
/// a diesel SQL type from `schema.rs`.
fn postgres_type(diesel_type: &str) -> (String, bool) {
    let (inner, nullable) = match diesel_type
        .strip_prefix("Nullable<")
        .and_then(|t| t.strip_suffix('>'))
    {
        Some(inner) => (inner, true),
        None => (diesel_type, false),
    };
    let name = match inner {
        "Uuid" => "uuid",
        "Text" => "text",
        "Bytea" => "bytea",
        "Bool" => "boolean",
        "Int2" => "smallint",
        "Int4" => "integer",
        "Int8" => "bigint",
        "Jsonb" => "jsonb",
        "Timestamptz" => "timestamp with time zone",
        "Numeric" => "numeric",
        "Date" => "date",
        "Array<Int4>" | "Array<Text>" => "ARRAY",
        other => panic!("schema.rs uses {other}: add it to this test's type map"),
    };
    (name.to_owned(), nullable)
}

/// table → column → (PostgreSQL type, nullable), as `schema.rs` declares them.
fn declared_columns() -> BTreeMap<String, BTreeMap<String, (String, bool)>> {
    let source = include_str!("../src/schema.rs");
    let table_re = regex::Regex::new(r"^    (\w+) \(\w+(?:, \w+)*\) \{$").expect("regex");
    let column_re = regex::Regex::new(r"^        (\w+) -> (.+),$").expect("regex");
    let mut tables: BTreeMap<String, BTreeMap<String, (String, bool)>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in source.lines() {
        if let Some(caps) = table_re.captures(line) {
            current = Some(caps[1].to_owned());
            tables.entry(caps[1].to_owned()).or_default();
        } else if line == "    }" {
            current = None;
        } else if let (Some(table), Some(caps)) = (&current, column_re.captures(line)) {
            tables
                .entry(table.clone())
                .or_default()
                .insert(caps[1].to_owned(), postgres_type(&caps[2]));
        }
    }
    tables
}

#[test]
fn every_migration_reverts_and_reapplies() {
    let db = TestDb::new();
    let mut conn = db.connect();
    let migration_dirs = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations"))
        .expect("migrations folder")
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.path().join("up.sql").exists())
        })
        .count();

    let applied = run_migrations(&mut conn).expect("migrations apply");
    assert_eq!(applied.len(), migration_dirs, "{applied:?}");
    let migrated = database_columns(&mut conn);

    let reverted = conn
        .revert_all_migrations(MIGRATIONS)
        .expect("every down.sql runs");
    assert_eq!(reverted.len(), migration_dirs);
    assert!(
        database_columns(&mut conn).is_empty(),
        "tables left after reverting everything: {:?}",
        database_columns(&mut conn).keys().collect::<Vec<_>>()
    );

    let reapplied = run_migrations(&mut conn).expect("migrations apply again");
    assert_eq!(reapplied, applied);
    assert_eq!(
        database_columns(&mut conn),
        migrated,
        "the second run built the same tables"
    );
    assert!(
        run_migrations(&mut conn)
            .expect("nothing pending")
            .is_empty()
    );
}

#[test]
fn schema_rs_matches_the_migrated_database() {
    let db = TestDb::new();
    let mut conn = db.connect();
    run_migrations(&mut conn).expect("migrations apply");
    let actual = database_columns(&mut conn);
    let declared = declared_columns();
    assert!(
        declared.len() >= 10,
        "schema.rs parsed: {:?}",
        declared.keys()
    );

    let mut problems = Vec::new();
    let all_tables: BTreeSet<&String> = actual.keys().chain(declared.keys()).collect();
    for table in all_tables {
        match (declared.get(table), actual.get(table)) {
            (Some(_), None) => problems.push(format!("{table}: in schema.rs, not in the database")),
            (None, Some(_)) => problems.push(format!("{table}: in the database, not in schema.rs")),
            (Some(want), Some(have)) => {
                for (column, declared_as) in want {
                    match have.get(column) {
                        None => problems.push(format!("{table}.{column}: not in the database")),
                        Some(found) if found != declared_as => problems.push(format!(
                            "{table}.{column}: schema.rs says {declared_as:?}, the database has {found:?}"
                        )),
                        Some(_) => {}
                    }
                }
                for column in have.keys().filter(|c| !want.contains_key(*c)) {
                    problems.push(format!("{table}.{column}: not in schema.rs"));
                }
            }
            (None, None) => {}
        }
    }
    assert!(
        problems.is_empty(),
        "schema.rs and the migrations disagree:\n{}",
        problems.join("\n")
    );
}

/// PostgreSQL lets PUBLIC connect to a new database: on a server that also hosts tenants'
/// environments their credentials would reach the control database. Migrating takes that away.
#[test]
fn migrating_closes_the_control_database_to_public() {
    #[derive(QueryableByName)]
    struct Privileges {
        #[diesel(sql_type = Text)]
        v: String,
    }
    let db = TestDb::new();
    let mut conn = db.connect();
    // As a plain `CREATE DATABASE` leaves it (the fixture closes its databases at once).
    diesel::sql_query(format!(
        "GRANT CONNECT, TEMPORARY ON DATABASE {} TO PUBLIC",
        db.name
    ))
    .execute(&mut conn)
    .expect("open the database to PUBLIC");
    let public = |conn: &mut PgConnection| -> String {
        diesel::sql_query(
            "SELECT coalesce(string_agg(a.privilege_type, ',' ORDER BY a.privilege_type), '') AS v \
             FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a \
             WHERE d.datname = current_database() AND a.grantee = 0",
        )
        .get_result::<Privileges>(conn)
        .expect("read the database's ACL")
        .v
    };
    assert_eq!(
        public(&mut conn),
        "CONNECT,TEMPORARY",
        "a new database is open"
    );
    run_migrations(&mut conn).expect("migrate");
    assert_eq!(
        public(&mut conn),
        "",
        "PUBLIC keeps nothing on the control database"
    );
    run_migrations(&mut conn).expect("migrating again is a no-op");
}
