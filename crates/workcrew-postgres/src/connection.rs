//! One connection to the server: the client, its driver task and its prepared statements.
//!
//! # Implementation notes
//!
//! - `tokio-postgres` splits a connection into a `Client` (cheap handle; queries from many
//!   tasks are pipelined on the one socket) and a driver future that does the I/O. The
//!   driver runs in a task owned by the [`Conn`]: dropping the last handle to the `Conn`
//!   aborts it, which closes the socket, so a connection to a server that stopped
//!   answering never lingers.
//! - Every statement of `queries.sql` is prepared once per connection, so a call is one
//!   Bind/Execute round trip.
//! - The session is set up before first use: `statement_timeout` (the store's call
//!   timeout: a statement whose caller gave up does not run on), read committed (the
//!   functions' locking relies on it, whatever the server's default), and
//!   `synchronous_commit = off` when asked.

use std::collections::HashMap;

use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls, Statement};

/// A connection ready for the store's statements.
pub(crate) struct Conn {
    pub(crate) client: Client,
    pub(crate) st: Statements,
    _driver: AbortOnDrop,
}

/// The prepared statements, one per `-- name:` block of `queries.sql`.
pub(crate) struct Statements {
    pub(crate) now: Statement,
    pub(crate) open: Statement,
    pub(crate) step: Statement,
    pub(crate) append: Statement,
    pub(crate) checkpoint: Statement,
    pub(crate) renew: Statement,
    pub(crate) progress: Statement,
    pub(crate) reset: Statement,
    pub(crate) retry_failed: Statement,
    pub(crate) failed_ranges: Statement,
    pub(crate) failed_ids: Statement,
    pub(crate) acquire: Statement,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A connected client whose statements are not prepared yet (migrations run first).
pub(crate) struct Raw {
    pub(crate) client: Client,
    driver: AbortOnDrop,
}

/// Connects and sets the session up; `what` names the store in the driver's log lines.
pub(crate) async fn connect(
    config: &tokio_postgres::Config,
    session: &str,
    what: &str,
) -> Result<Raw, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    let what = what.to_owned();
    let driver = AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(store = %what, error = %e, "postgres connection lost");
        }
    }));
    client.batch_execute(session).await?;
    Ok(Raw { client, driver })
}

impl Raw {
    /// Prepares the store's statements (pipelined: one wait for all of them).
    pub(crate) async fn prepare(
        self,
        sql: &HashMap<&'static str, String>,
    ) -> Result<Conn, tokio_postgres::Error> {
        let client = &self.client;
        let prepare = |name: &str| {
            let text = sql.get(name).map_or("", String::as_str);
            client.prepare(text)
        };
        let (now, open, step, append, checkpoint, renew) = futures::try_join!(
            prepare("now"),
            prepare("open"),
            prepare("step"),
            prepare("append"),
            prepare("checkpoint"),
            prepare("renew"),
        )?;
        let (progress, reset, retry_failed, failed_ranges, failed_ids, acquire) = futures::try_join!(
            prepare("progress"),
            prepare("reset"),
            prepare("retry_failed"),
            prepare("failed_ranges"),
            prepare("failed_ids"),
            prepare("acquire"),
        )?;
        Ok(Conn {
            client: self.client,
            st: Statements {
                now,
                open,
                step,
                append,
                checkpoint,
                renew,
                progress,
                reset,
                retry_failed,
                failed_ranges,
                failed_ids,
                acquire,
            },
            _driver: self.driver,
        })
    }
}

/// Splits `queries.sql` into its named statements, with the schema in place.
pub(crate) fn parse_queries(text: &'static str, schema: &str) -> HashMap<&'static str, String> {
    let mut out = HashMap::new();
    for block in text.split("-- name: ").skip(1) {
        let (name, body) = block.split_once('\n').unwrap_or((block, ""));
        let body: String = body
            .lines()
            .filter(|line| !line.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        out.insert(name.trim(), body.trim().replace("{s}", schema));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_is_in_the_file() {
        let sql = parse_queries(crate::store::QUERIES, "\"s\"");
        for name in [
            "now",
            "open",
            "step",
            "append",
            "checkpoint",
            "renew",
            "progress",
            "reset",
            "retry_failed",
            "failed_ranges",
            "failed_ids",
            "acquire",
        ] {
            let text = sql
                .get(name)
                .unwrap_or_else(|| panic!("no statement {name}"));
            assert!(!text.is_empty(), "{name} is empty");
            assert!(!text.contains("{s}"), "{name} keeps a placeholder");
        }
        assert_eq!(sql.len(), 12, "no statement is left unprepared");
    }
}
