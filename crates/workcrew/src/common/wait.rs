//! Waiting on things that may be absent: an optional deadline, an optional
//! cancellation token. An absent one never fires, so either can sit in a
//! `select!` branch unconditionally.

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Sleeps until `at`; forever if `None`.
pub(crate) async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits for `token` to be cancelled; forever if `None`.
pub(crate) async fn cancelled_opt(token: Option<&CancellationToken>) {
    match token {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}
