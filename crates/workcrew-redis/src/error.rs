//! Redis errors as store errors: which are transient, which are the job's, and
//! text without a password.

use redis::{ErrorKind, RedisError, ServerErrorKind};
use workcrew::batch::{StoreError, StoreErrorKind};

/// Error codes the store's scripts raise (the first word of the error reply).
const NO_JOB: &str = "WCNOJOB";
const CONFLICT: &str = "WCCONFLICT";
const CORRUPT: &str = "WCCORRUPT";

/// What a failed call means for the job.
pub(crate) fn kind_of(e: &RedisError) -> StoreErrorKind {
    let transient_server = matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
        )
    );
    // BUSY: another script runs past the time limit; the server serves again once it ends.
    // OOM: the server is over its `maxmemory` and refused the whole script (scripts declare
    // flags, so nothing of it ran); it may take writes again once memory is freed.
    if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || transient_server
        || matches!(e.code(), Some("BUSY" | "OOM"))
    {
        return StoreErrorKind::Unavailable;
    }
    match e.code() {
        Some(NO_JOB | CONFLICT) => StoreErrorKind::Conflict,
        // WRONGTYPE: one of the job's keys holds another kind of value (not ours).
        Some(CORRUPT | "WRONGTYPE") => StoreErrorKind::Corrupt,
        _ => StoreErrorKind::Other,
    }
}

/// The store error for `e`, met while doing `operation` on `job` (if any) in the
/// store described as `what`; `secret` (the URL's password, if any) is masked
/// from the text in case an error quotes it.
pub(crate) fn store_error(
    what: &str,
    secret: Option<&str>,
    operation: &str,
    job: Option<&str>,
    e: &RedisError,
) -> StoreError {
    let kind = kind_of(e);
    let detail = match (e.code(), e.detail()) {
        (Some(NO_JOB), _) => match job {
            Some(job) => {
                format!("no job {job:?} (never opened, reset, or the server lost its data)")
            }
            None => "no such job".to_owned(),
        },
        (Some(CONFLICT | CORRUPT), Some(detail)) => script_detail(detail),
        _ => e.to_string(),
    };
    let job = job.map(|j| format!(" job {j:?}:")).unwrap_or_default();
    let text = format!("redis store {what}:{job} {operation}: {detail}");
    StoreError::new(kind, mask(&text, secret))
}

/// The message of a script's error reply, without the script's location Redis
/// appends to errors raised with `error()`.
fn script_detail(detail: &str) -> String {
    match detail.find(" script: ") {
        Some(at) => detail[..at].to_owned(),
        None => detail.to_owned(),
    }
}

/// `text` with every occurrence of `secret` replaced by `***`.
pub(crate) fn mask(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() => text.replace(s, "***"),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_failures_are_transient_and_script_codes_are_the_jobs() {
        let refused: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        assert_eq!(kind_of(&refused), StoreErrorKind::Unavailable);
        let reset: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset").into();
        assert_eq!(kind_of(&reset), StoreErrorKind::Unavailable);
        let conflict = redis::make_extension_error("WCCONFLICT".into(), Some("x".into()));
        assert_eq!(kind_of(&conflict), StoreErrorKind::Conflict);
        let err = store_error("redis://h", None, "step", Some("j"), &conflict);
        assert_eq!(err.to_string(), "redis store redis://h: job \"j\": step: x");
        let no_job = redis::make_extension_error("WCNOJOB".into(), None);
        let err = store_error("redis://h", None, "step", Some("j"), &no_job);
        assert_eq!(err.kind(), StoreErrorKind::Conflict);
        assert!(err.to_string().contains("no job \"j\""), "{err}");
        let corrupt = redis::make_extension_error(
            "WCCORRUPT".into(),
            Some("range 1 is bad script: abc, on @user_script:9.".into()),
        );
        let err = store_error("redis://h", None, "step", Some("j"), &corrupt);
        assert_eq!(err.kind(), StoreErrorKind::Corrupt);
        assert!(err.to_string().ends_with("step: range 1 is bad"), "{err}");
    }

    #[test]
    fn a_quoted_password_is_masked() {
        assert_eq!(
            mask("auth hunter2 failed", Some("hunter2")),
            "auth *** failed"
        );
        assert_eq!(mask("x", Some("")), "x");
    }
}
