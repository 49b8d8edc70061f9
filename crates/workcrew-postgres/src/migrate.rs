//! Migrations: the store's schema, created and upgraded on first use.
//!
//! # Implementation notes
//!
//! - The schema holds a `schema_version` table with one row per applied migration.
//! - All of it runs in one transaction that first takes a transaction-scoped advisory
//!   lock keyed by the schema's name: processes that connect at once queue on the lock,
//!   and the later ones find the migrations applied. A process killed mid-migration
//!   leaves nothing behind (the transaction rolls back; the lock goes with its session).
//! - A schema migrated by a newer version of this crate is refused (its functions may
//!   not behave as this version expects), instead of being run as if it were known.
//! - Migrations are never edited once released: a change is a new numbered file.

use tokio_postgres::Client;
use workcrew::batch::{StoreError, StoreErrorKind};

use crate::error::{pg_error, store_error};

/// The migrations in order: (version, SQL with `{s}` for the schema).
const MIGRATIONS: &[(i32, &[&str])] = &[(
    1,
    &[
        include_str!("sql/001_tables.sql"),
        include_str!("sql/001_functions.sql"),
    ],
)];

/// The version this crate's statements need.
pub(crate) const LATEST: i32 = 1;

/// Creates `schema` and applies the missing migrations; returns how many were applied.
pub(crate) async fn migrate(
    client: &mut Client,
    schema: &str,
    what: &str,
) -> Result<usize, StoreError> {
    let err = |e: tokio_postgres::Error| pg_error(what, "migrating the schema", &e);
    let quoted = quote(schema);
    let tx = client.transaction().await.map_err(err)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&format!("workcrew-postgres migrations {schema}")],
    )
    .await
    .map_err(err)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {quoted};
         CREATE TABLE IF NOT EXISTS {quoted}.schema_version (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(err)?;
    let current: i32 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {quoted}.schema_version"),
            &[],
        )
        .await
        .map_err(err)?
        .get(0);
    if current > LATEST {
        return Err(store_error(
            StoreErrorKind::Corrupt,
            what,
            format!(
                "schema {schema:?} is at version {current}, newer than this workcrew-postgres \
                 knows ({LATEST}): upgrade workcrew-postgres"
            ),
        ));
    }
    let mut applied = 0;
    for (version, files) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        for sql in *files {
            tx.batch_execute(&sql.replace("{s}", &quoted))
                .await
                .map_err(|e| pg_error(what, &format!("applying migration {version}"), &e))?;
        }
        tx.execute(
            &format!("INSERT INTO {quoted}.schema_version (version) VALUES ($1)"),
            &[version],
        )
        .await
        .map_err(err)?;
        applied += 1;
    }
    tx.commit().await.map_err(err)?;
    if applied > 0 {
        tracing::info!(store = %what, schema, applied, "postgres store schema migrated");
    }
    Ok(applied)
}

/// `schema` as a quoted identifier (the builder allows only characters that need no
/// escaping; quoting keeps it from being read as a keyword).
pub(crate) fn quote(schema: &str) -> String {
    format!("\"{schema}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_up_to_the_latest() {
        let versions: Vec<i32> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        assert_eq!(versions.last(), Some(&LATEST));
        assert_eq!(versions.first(), Some(&1));
    }
}
