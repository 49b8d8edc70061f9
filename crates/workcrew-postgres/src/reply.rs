//! The JSON the store's functions take and return, and its translation to and from the
//! `Store` trait's types.
//!
//! Ids travel as bare JSON numbers and strings (workcrew's `Id` serialises that way in
//! self-describing formats), so an id keeps its kind: `"007"` stays a string.

use serde::Deserialize;
use workcrew::batch::{
    Finish, FinishOutcome, Id, Ids, JobStatus, Lease, Millis, Origin, StoreError, StoreErrorKind,
};

use crate::error::{corrupt, store_error};

/// A step's finish list as the parallel arrays `workcrew_step` takes: entry `i` of each
/// belongs to the `i`-th finish.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct FinishArrays<'a> {
    pub(crate) ranges: Vec<i64>,
    pub(crate) fences: Vec<i64>,
    pub(crate) kinds: Vec<&'static str>,
    pub(crate) errors: Vec<Option<&'a str>>,
    pub(crate) retry_at: Vec<Option<Millis>>,
    /// The failed ids of a done range as a JSON array; `None` when there are none.
    pub(crate) failed: Vec<Option<String>>,
}

/// A step's finish list, as `workcrew_step` takes it.
pub(crate) fn encode_finish<'a>(
    what: &str,
    finish: &'a [Finish],
) -> Result<FinishArrays<'a>, StoreError> {
    let mut out = FinishArrays::default();
    for f in finish {
        let (kind, error, retry_at, failed) = match &f.outcome {
            FinishOutcome::Done { failed } if failed.is_empty() => ("done", None, None, None),
            FinishOutcome::Done { failed } => {
                let json = serde_json::to_string(failed).map_err(|e| {
                    store_error(
                        StoreErrorKind::Other,
                        what,
                        format!("range {}: encoding its failed ids: {e}", f.range),
                    )
                })?;
                ("done", None, None, Some(json))
            }
            FinishOutcome::Failed {
                error,
                retry_at: Some(at),
            } => ("retry", Some(error.as_str()), Some(*at), None),
            FinishOutcome::Failed {
                error,
                retry_at: None,
            } => ("park", Some(error.as_str()), None, None),
            FinishOutcome::Release => ("release", None, None, None),
            other => {
                return Err(store_error(
                    StoreErrorKind::Other,
                    what,
                    format!("range {}: outcome {other:?} is not supported", f.range),
                ))
            }
        };
        out.ranges.push(to_i64(f.range));
        out.fences.push(to_i64(f.fence));
        out.kinds.push(kind);
        out.errors.push(error);
        out.retry_at.push(retry_at);
        out.failed.push(failed);
    }
    Ok(out)
}

/// What `workcrew_step` returns.
#[derive(Deserialize)]
pub(crate) struct StepOut {
    pub(crate) finished: Vec<bool>,
    pub(crate) claimed: Vec<LeaseOut>,
    pub(crate) status: Option<StatusOut>,
}

/// A claimed range in a step's reply.
#[derive(Deserialize)]
pub(crate) struct LeaseOut {
    range: i64,
    fence: i64,
    start: Option<i64>,
    end: Option<i64>,
    ids: Option<Vec<Id>>,
    checkpoint: i64,
    attempt: i64,
    origin: String,
    previous_owner: Option<String>,
}

/// The job's state in a step's reply.
#[derive(Deserialize)]
pub(crate) struct StatusOut {
    exhausted: bool,
    open: i64,
    next_ready: Option<Millis>,
}

impl LeaseOut {
    /// The lease, expiring at `expires` (the step's `now + lease_ms`).
    pub(crate) fn into_lease(self, what: &str, expires: Millis) -> Result<Lease, StoreError> {
        let origin = match self.origin.as_str() {
            "new" => Origin::New,
            "pending" => Origin::Pending,
            "expired" => Origin::Expired {
                previous_owner: self.previous_owner.unwrap_or_default(),
            },
            other => {
                return Err(corrupt(
                    what,
                    format!("range {}: unknown claim origin {other:?}", self.range),
                ))
            }
        };
        Ok(Lease {
            range: to_u64(self.range),
            fence: to_u64(self.fence),
            ids: range_ids(what, self.range, self.start, self.end, self.ids)?,
            checkpoint: to_u64(self.checkpoint),
            attempt: u32::try_from(self.attempt).unwrap_or(u32::MAX),
            expires,
            origin,
        })
    }
}

impl StatusOut {
    pub(crate) fn into_status(self) -> JobStatus {
        JobStatus {
            exhausted: self.exhausted,
            open: to_u64(self.open),
            next_ready: self.next_ready,
        }
    }
}

/// A range's ids from its columns: a span, or a list.
pub(crate) fn range_ids(
    what: &str,
    range: i64,
    start: Option<i64>,
    end: Option<i64>,
    ids: Option<Vec<Id>>,
) -> Result<Ids, StoreError> {
    match (start, end, ids) {
        (Some(s), Some(e), _) => Ok(Ids::Span(s, e)),
        (_, _, Some(list)) => Ok(Ids::List(list)),
        _ => Err(corrupt(
            what,
            format!("range {range} has neither a span nor a list of ids"),
        )),
    }
}

/// What `workcrew_open` returns: the job as stored.
#[derive(Deserialize)]
pub(crate) struct OpenOut {
    pub(crate) created: bool,
    pub(crate) source: String,
    pub(crate) start: Option<i64>,
    pub(crate) end: Option<i64>,
    pub(crate) size: Option<i64>,
    pub(crate) kind: String,
    pub(crate) cursor_int: Option<i64>,
    pub(crate) cursor_str: Option<String>,
}

/// What `workcrew_append` returns: one of the four shapes.
#[derive(Deserialize)]
pub(crate) struct AppendOut {
    pub(crate) range: Option<i64>,
    pub(crate) fence: Option<i64>,
    #[serde(default)]
    pub(crate) moved: bool,
    pub(crate) cursor_int: Option<i64>,
    pub(crate) cursor_str: Option<String>,
    #[serde(default)]
    pub(crate) not_after: bool,
    #[serde(default)]
    pub(crate) empty: bool,
}

/// What `workcrew_retry_failed` returns.
#[derive(Deserialize)]
pub(crate) struct RetriedOut {
    pub(crate) ranges: i64,
    pub(crate) ids: i64,
}

/// Reads a function's JSON reply.
pub(crate) fn decode<'a, T: Deserialize<'a>>(
    what: &str,
    function: &str,
    text: &'a str,
) -> Result<T, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| corrupt(what, format!("unreadable reply from {function}: {e}")))
}

/// A cursor from its two columns.
pub(crate) fn cursor(int: Option<i64>, text: Option<String>) -> Option<Id> {
    int.map(Id::Int).or(text.map(Id::Str))
}

/// An id as its two columns (`int`, `str`).
pub(crate) fn id_columns(id: Option<&Id>) -> (Option<i64>, Option<&str>) {
    match id {
        Some(Id::Int(i)) => (Some(*i), None),
        Some(Id::Str(s)) => (None, Some(s.as_str())),
        None => (None, None),
    }
}

/// A count or number from the server, never negative.
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A count or number for the server, capped at `i64::MAX`.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use workcrew::batch::FailedId;

    #[test]
    fn finish_lists_encode_every_outcome() {
        let finish = vec![
            Finish {
                range: 1,
                fence: 2,
                outcome: FinishOutcome::Done {
                    failed: vec![FailedId::new(7, "x"), FailedId::new("007", "y")],
                },
            },
            Finish {
                range: 3,
                fence: 4,
                outcome: FinishOutcome::Failed {
                    error: "boom".into(),
                    retry_at: Some(99),
                },
            },
            Finish {
                range: 5,
                fence: 6,
                outcome: FinishOutcome::Failed {
                    error: "dead".into(),
                    retry_at: None,
                },
            },
            Finish {
                range: 7,
                fence: 8,
                outcome: FinishOutcome::Release,
            },
            Finish {
                range: 9,
                fence: 10,
                outcome: FinishOutcome::Done { failed: vec![] },
            },
        ];
        let a = encode_finish("s", &finish).unwrap();
        assert_eq!(a.ranges, [1, 3, 5, 7, 9]);
        assert_eq!(a.fences, [2, 4, 6, 8, 10]);
        assert_eq!(a.kinds, ["done", "retry", "park", "release", "done"]);
        assert_eq!(a.errors, [None, Some("boom"), Some("dead"), None, None]);
        assert_eq!(a.retry_at, [None, Some(99), None, None, None]);
        let failed: serde_json::Value =
            serde_json::from_str(a.failed[0].as_deref().unwrap()).unwrap();
        assert_eq!(failed[0]["id"], 7);
        assert_eq!(failed[1]["id"], "007", "a string id stays a string");
        assert_eq!(a.failed[1..], [None, None, None, None]);
    }

    #[test]
    fn leases_decode_spans_lists_and_origins() {
        let out: StepOut = decode(
            "s",
            "step",
            r#"{"finished":[true],"status":null,"claimed":[
                {"range":0,"fence":9,"start":10,"end":20,"checkpoint":0,"attempt":1,"origin":"new"},
                {"range":4,"fence":11,"start":null,"end":null,"ids":[3,"b"],"checkpoint":1,
                 "attempt":2,"origin":"expired","previous_owner":"a"}]}"#,
        )
        .unwrap();
        let leases: Vec<Lease> = out
            .claimed
            .into_iter()
            .map(|l| l.into_lease("s", 5).unwrap())
            .collect();
        assert_eq!(leases[0].ids, Ids::Span(10, 20));
        assert_eq!(leases[0].origin, Origin::New);
        assert_eq!(
            leases[1].ids,
            Ids::List(vec![Id::Int(3), Id::Str("b".into())])
        );
        assert_eq!(
            leases[1].origin,
            Origin::Expired {
                previous_owner: "a".into()
            }
        );
        assert_eq!((leases[1].expires, leases[1].attempt), (5, 2));
    }

    #[test]
    fn unreadable_replies_are_corrupt() {
        let err = decode::<StepOut>("pg", "workcrew_step", "{nope")
            .err()
            .unwrap();
        assert_eq!(err.kind(), StoreErrorKind::Corrupt);
        assert!(err.to_string().contains("workcrew_step"), "{err}");
        let bad = LeaseOut {
            range: 1,
            fence: 1,
            start: None,
            end: None,
            ids: None,
            checkpoint: 0,
            attempt: 1,
            origin: "new".into(),
            previous_owner: None,
        };
        let err = bad.into_lease("pg", 0).unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Corrupt, "{err}");
    }
}
