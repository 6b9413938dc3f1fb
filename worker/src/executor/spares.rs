//! Spare databases: made ahead on the dedicated server, closed to connections, and renamed
//! into a new dedicated environment's database (`CREATE DATABASE` copies a template and is the
//! slowest step of a dedicated environment).

use super::ExecError;
use super::actions::Context;
use super::postgres::Session;
use super::sql::ident;
use diesel::sql_types::{BigInt, Text};
use diesel::{QueryableByName, RunQueryDsl};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// Renames a spare database (made ahead by the executor, closed to connections) into the
/// environment's, in one transaction with opening it; `CREATE DATABASE` copies a template and
/// is the slowest step of a dedicated environment. Returns whether one was claimed.
pub(crate) fn claim(
    session: &mut Session<'_>,
    ctx: &Context<'_>,
    step: &str,
) -> Result<bool, ExecError> {
    let Some(prefix) = &ctx.spare_prefix else {
        return Ok(false);
    };
    #[derive(diesel::QueryableByName)]
    struct Spare {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    let server = session.server()?;
    let spares = server.run("list spare databases", |c| {
        diesel::RunQueryDsl::load::<Spare>(
            diesel::sql_query(
                "SELECT datname::text AS name FROM pg_database \
                 WHERE left(datname, length($1)) = $1 AND NOT datallowconn ORDER BY datname",
            )
            .bind::<diesel::sql_types::Text, _>(prefix),
            c,
        )
    })?;
    let db = ident(&ctx.names.database)?;
    for spare in spares {
        let sql = format!(
            "ALTER DATABASE {} RENAME TO {db};\n\
             REVOKE ALL ON DATABASE {db} FROM PUBLIC;\n\
             ALTER DATABASE {db} ALLOW_CONNECTIONS true;\n",
            ident(&spare.name)?
        );
        // Another worker may have claimed it first: try the next one.
        match server.batch(step, &sql) {
            Ok(()) => return Ok(true),
            Err(error) => {
                tracing::debug!(spare = %spare.name, %error, "spare database not claimed")
            }
        }
    }
    Ok(false)
}

/// Makes spare databases until `count` exist: closed to connections (nobody can put anything in
/// one before it is claimed), PUBLIC's rights revoked.
pub(crate) fn make(url: &str, prefix: &str, count: usize) -> Result<(), String> {
    use diesel::Connection;
    use diesel::connection::SimpleConnection;
    let mut conn = diesel::PgConnection::establish(url).map_err(|e| e.to_string())?;
    let existing = diesel::sql_query(
        "SELECT count(*) AS count FROM pg_database WHERE left(datname, length($1)) = $1",
    )
    .bind::<Text, _>(prefix)
    .get_result::<Count>(&mut conn)
    .map_err(|e| e.to_string())?;
    let missing = count.saturating_sub(usize::try_from(existing.count).unwrap_or(count));
    for _ in 0..missing {
        let name = format!("{prefix}{}", hex::encode(rand::random::<[u8; 4]>()));
        let quoted = ident(&name).map_err(|e| e.to_string())?;
        diesel::sql_query(format!("CREATE DATABASE {quoted} ALLOW_CONNECTIONS false"))
            .execute(&mut conn)
            .map_err(|e| e.to_string())?;
        conn.batch_execute(&format!(
            "REVOKE ALL ON DATABASE {quoted} FROM PUBLIC; \
             COMMENT ON DATABASE {quoted} IS 'Bulkhead spare: becomes a dedicated environment''s database'"
        ))
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}
