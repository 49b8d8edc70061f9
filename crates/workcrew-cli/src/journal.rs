//! The journal: a batch job over the lines, in the store the user chose.

use std::sync::Arc;

use anyhow::{Context, Result};
use workcrew::batch::{redact_url, SqliteStore, Store};

use crate::config::StoreUrl;

/// Opens (or creates) the store.
///
/// # Errors
///
/// A store that cannot be opened or reached, naming it.
pub(crate) async fn open(url: &StoreUrl) -> Result<Arc<dyn Store>> {
    Ok(match url {
        StoreUrl::Sqlite(path) => {
            let path = path.clone();
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
                .await
                .context("opening the journal")?
                .with_context(|| "cannot open the journal")?;
            Arc::new(store)
        }
        StoreUrl::Redis(url) => Arc::new(
            workcrew_redis::RedisStore::connect(url)
                .await
                .with_context(|| format!("cannot reach the store {}", redact_url(url)))?,
        ),
        StoreUrl::Postgres(url) => Arc::new(
            workcrew_postgres::PostgresStore::connect(url)
                .await
                .with_context(|| format!("cannot reach the store {}", redact_url(url)))?,
        ),
    })
}

/// The journal's description for messages (no password).
pub(crate) fn describe(url: &StoreUrl) -> String {
    match url {
        StoreUrl::Sqlite(path) => path.display().to_string(),
        StoreUrl::Redis(url) | StoreUrl::Postgres(url) => redact_url(url),
    }
}
