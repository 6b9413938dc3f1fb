//! The core tests' fixture: a database of its own on the real server (`TEST_DATABASE_SERVER`,
//! default `postgres://postgres@127.0.0.1:5432`), dropped when the test ends.
#![allow(dead_code)]

use diesel::{Connection, PgConnection, RunQueryDsl};

pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_SERVER")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// A database made for one test (empty: no migrations), dropped when it ends.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub fn new() -> Self {
        let name = format!("bh_core_{}", uuid::Uuid::now_v7().simple());
        let mut admin =
            PgConnection::establish(&format!("{}/postgres?sslmode=disable", server_url()))
                .expect("connect to the server");
        // Closed to PUBLIC before anyone may connect: other tests' isolation probes would see
        // a database every tenant role may connect to.
        for statement in [
            format!("CREATE DATABASE {name} ALLOW_CONNECTIONS false"),
            format!("REVOKE CONNECT, TEMPORARY ON DATABASE {name} FROM PUBLIC"),
            format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"),
        ] {
            diesel::sql_query(statement)
                .execute(&mut admin)
                .expect("create the test database");
        }
        Self { name }
    }

    /// A new database with every migration applied.
    pub fn migrated() -> Self {
        let db = Self::new();
        bulkhead_core::db::run_migrations(&mut db.connect()).expect("migrations apply");
        db
    }

    pub fn url(&self) -> String {
        format!("{}/{}?sslmode=disable", server_url(), self.name)
    }

    pub fn connect(&self) -> PgConnection {
        PgConnection::establish(&self.url()).expect("connect to the test database")
    }

    /// A pool of the kind the binaries use (statement and idle-transaction timeouts set).
    pub fn pool(&self, size: u32) -> bulkhead_core::db::PgPool {
        bulkhead_core::db::connect(&self.url(), size).expect("pool")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) =
            PgConnection::establish(&format!("{}/postgres?sslmode=disable", server_url()))
        {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin);
        }
    }
}
