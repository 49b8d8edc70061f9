//! Options for connecting a [`PostgresStore`].

use std::time::Duration;

use workcrew::batch::{redact_url, StoreError, StoreErrorKind};

use crate::store::PostgresStore;

/// How hard the server keeps a commit. See the [crate docs](crate#durability).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// The server's own `synchronous_commit` (`on` unless configured otherwise): a step
    /// returns once its commit is flushed to the server's disk, so nothing acknowledged is
    /// lost even if the server crashes. Default.
    #[default]
    Server,
    /// `synchronous_commit = off` on the store's connections: a step returns before its
    /// commit reaches the disk (the server flushes it within `3 × wal_writer_delay`, 600 ms
    /// by default). A server crash can lose the last such commits; the job then rolls back
    /// to an earlier consistent state: ranges processed since are run again (duplicates),
    /// none is skipped. A crash of the job's own process costs nothing more than with
    /// [`Server`](Durability::Server).
    Async,
}

/// Options for a [`PostgresStore`]; from [`PostgresStore::builder`].
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use workcrew_postgres::{Durability, PostgresStore};
///
/// # async fn example() -> Result<(), workcrew::batch::StoreError> {
/// let store = PostgresStore::builder("postgres://app@db.internal/jobs")
///     .schema("backfills")
///     .application_name("backfill-worker")
///     .durability(Durability::Async)
///     .call_timeout(Duration::from_secs(10))
///     .connect()
///     .await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until connect() is called"]
pub struct PostgresStoreBuilder {
    pub(crate) url: String,
    pub(crate) schema: String,
    pub(crate) application_name: Option<String>,
    pub(crate) durability: Durability,
    pub(crate) connect_timeout: Duration,
    pub(crate) call_timeout: Duration,
}

impl PostgresStoreBuilder {
    pub(crate) fn new(url: &str) -> Self {
        PostgresStoreBuilder {
            url: url.to_owned(),
            schema: "workcrew".to_owned(),
            application_name: None,
            durability: Durability::Server,
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(10),
        }
    }

    /// The schema that holds the store's tables and functions; created on first use.
    /// Lowercase ASCII letters, digits and `_`, starting with a letter or `_`, at most 63
    /// characters. Default: `workcrew`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The `application_name` of the store's connections, as `pg_stat_activity` shows it.
    /// Default: the URL's `application_name`, else `workcrew`.
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// How hard a commit is kept. Default: [`Durability::Server`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// How long connecting (TCP, authentication, session set-up) may take before it fails
    /// as unavailable. Default: 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one operation may wait for the server's answer before it fails as
    /// unavailable (and its connection is dropped, so the next call reconnects); also the
    /// server-side `statement_timeout` of the store's sessions. Default: 10 s.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Connects, creates the schema and applies the store's migrations if needed (once,
    /// under an advisory lock, so processes connecting at the same time are safe).
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::Unavailable`] when the server does not answer (refused, reset,
    /// or past the connect timeout); [`StoreErrorKind::Corrupt`] when the schema was
    /// migrated by a newer version of this crate; [`StoreErrorKind::Other`] for a URL that
    /// does not parse, a schema name that is not allowed, or an error from the server
    /// (authentication, a missing database, missing privileges). Messages name the URL
    /// without its password.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future closes the connection it opened; the migration, if it was
    /// running, is rolled back by the server.
    pub async fn connect(self) -> Result<PostgresStore, StoreError> {
        PostgresStore::start(self).await
    }

    /// The URL as messages show it: without a password and without query parameters (which
    /// may carry one); a `key=value` connection string as its host, port, user and database.
    pub(crate) fn describe_url(&self, config: Option<&tokio_postgres::Config>) -> String {
        if self.url.contains("://") {
            let base = self.url.split(['?', '#']).next().unwrap_or_default();
            return redact_url(base);
        }
        let Some(config) = config else {
            return "postgres connection string (unparsable)".to_owned();
        };
        let host = config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".to_owned());
        let port = config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "postgres://{}@{host}:{port}/{}",
            config.get_user().unwrap_or(""),
            config.get_dbname().unwrap_or("")
        )
    }

    /// Checks the schema name.
    pub(crate) fn checked_schema(&self) -> Result<&str, StoreError> {
        let s = self.schema.as_str();
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(s)
        } else {
            Err(StoreError::new(
                StoreErrorKind::Other,
                format!(
                    "schema {s:?} is not allowed: use 1 to 63 lowercase ASCII letters, digits \
                     and '_', starting with a letter or '_'"
                ),
            ))
        }
    }
}
