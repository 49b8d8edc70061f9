//! Postgres errors as [`StoreError`]s: which are transient, and messages that name the
//! store without its password.

use std::error::Error as StdError;

use tokio_postgres::error::SqlState;
use workcrew::batch::{StoreError, StoreErrorKind};

/// The SQLSTATE the store's functions raise for a job that does not exist.
const NO_JOB: &str = "WC404";

/// Maps a driver error: a lost or refused connection, a server shutting down or a
/// connection killed by `pg_terminate_backend` is unavailable; a lock or serialization
/// conflict or a statement timeout is busy (both transient: the job retries them); a
/// missing job is a conflict; anything else (authentication, privileges, a missing
/// database) is other, so the job fails at once with the server's reason.
pub(crate) fn pg_error(what: &str, operation: &str, e: &tokio_postgres::Error) -> StoreError {
    let (kind, detail) = match e.as_db_error() {
        Some(db) => {
            let code = db.code();
            let kind = if code.code() == NO_JOB {
                StoreErrorKind::Conflict
            } else if code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                    SqlState::IDLE_SESSION_TIMEOUT,
                ]
                .contains(code)
            {
                StoreErrorKind::Unavailable
            } else if [
                SqlState::T_R_SERIALIZATION_FAILURE,
                SqlState::T_R_DEADLOCK_DETECTED,
                SqlState::LOCK_NOT_AVAILABLE,
                SqlState::QUERY_CANCELED,
            ]
            .contains(code)
            {
                StoreErrorKind::Busy
            } else {
                StoreErrorKind::Other
            };
            let mut detail = format!("{} (SQLSTATE {})", db.message(), code.code());
            if let Some(more) = db.detail() {
                detail.push_str(": ");
                detail.push_str(more);
            }
            (kind, detail)
        }
        None => {
            let transient = e.is_closed() || chain_has_io_error(e) || is_timeout(e);
            let kind = if transient {
                StoreErrorKind::Unavailable
            } else {
                StoreErrorKind::Other
            };
            (kind, chain_text(e))
        }
    };
    let message = match kind {
        StoreErrorKind::Conflict => format!("postgres store {what}: {operation}: {detail}"),
        _ => format!("postgres store {what}: {operation} failed: {detail}"),
    };
    StoreError::new(kind, message)
}

/// An error the store itself finds: `kind`, naming the store.
pub(crate) fn store_error(
    kind: StoreErrorKind,
    what: &str,
    detail: impl std::fmt::Display,
) -> StoreError {
    StoreError::new(kind, format!("postgres store {what}: {detail}"))
}

/// A reply the store cannot read: its tables hold something this version did not write.
pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    store_error(StoreErrorKind::Corrupt, what, detail)
}

fn chain_has_io_error(e: &tokio_postgres::Error) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The driver's own connect timeout (its error kind is private; its text is not).
fn is_timeout(e: &tokio_postgres::Error) -> bool {
    e.to_string().contains("timeout")
}

/// The error and its causes, `: `-separated (the driver's top-level text alone says
/// little, e.g. "error connecting to server").
fn chain_text(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
