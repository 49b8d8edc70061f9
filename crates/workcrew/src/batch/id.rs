//! Ids and the ranges of ids a job hands out.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One id of a batch job: an integer or a string.
///
/// A job's ids are all of one kind; they are ordered (integers numerically,
/// strings by their bytes), and a range source must hand them out in strictly
/// increasing order. In JSON (and other self-describing formats) an `Id` is a
/// bare number or string; in binary formats such as postcard it is tagged.
///
/// # Examples
///
/// ```
/// use workcrew::batch::Id;
///
/// assert!(Id::from(9) < Id::from(10));
/// assert!(Id::from("a9") > Id::from("a10"));
/// assert_eq!(serde_json::to_string(&Id::from("user-7")).unwrap(), "\"user-7\"");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Id {
    /// An integer id.
    Int(i64),
    /// A string id.
    Str(String),
}

impl Id {
    /// The kind of this id.
    pub fn kind(&self) -> IdKind {
        match self {
            Id::Int(_) => IdKind::Int,
            Id::Str(_) => IdKind::Str,
        }
    }

    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Id::Int(i) => Some(*i),
            Id::Str(_) => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Id::Int(_) => None,
            Id::Str(s) => Some(s),
        }
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self, s.is_human_readable()) {
            (Id::Int(i), true) => s.serialize_i64(*i),
            (Id::Str(x), true) => s.serialize_str(x),
            (Id::Int(i), false) => s.serialize_newtype_variant("Id", 0, "Int", i),
            (Id::Str(x), false) => s.serialize_newtype_variant("Id", 1, "Str", x),
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// The binary form: a plain tagged enum.
        #[derive(Deserialize)]
        #[serde(rename = "Id")]
        enum Tagged {
            Int(i64),
            Str(String),
        }

        struct Bare;

        impl Visitor<'_> for Bare {
            type Value = Id;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string id")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
                Ok(Id::Int(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                i64::try_from(v)
                    .map(Id::Int)
                    .map_err(|_| E::custom(format!("id {v} does not fit in an i64")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                Ok(Id::Str(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Id, E> {
                Ok(Id::Str(v))
            }
        }

        if d.is_human_readable() {
            d.deserialize_any(Bare)
        } else {
            Ok(match Tagged::deserialize(d)? {
                Tagged::Int(i) => Id::Int(i),
                Tagged::Str(s) => Id::Str(s),
            })
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Int(i) => write!(f, "{i}"),
            Id::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl From<i64> for Id {
    fn from(i: i64) -> Self {
        Id::Int(i)
    }
}

impl From<i32> for Id {
    fn from(i: i32) -> Self {
        Id::Int(i64::from(i))
    }
}

impl From<u32> for Id {
    fn from(i: u32) -> Self {
        Id::Int(i64::from(i))
    }
}

impl From<String> for Id {
    fn from(s: String) -> Self {
        Id::Str(s)
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Id::Str(s.to_owned())
    }
}

/// Whether a job's ids are integers or strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdKind {
    /// Integer ids.
    Int,
    /// String ids.
    Str,
}

impl IdKind {
    /// `"int"` or `"str"`, as stores write it.
    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::Int => "int",
            IdKind::Str => "str",
        }
    }

    /// Parses what [`as_str`](Self::as_str) wrote.
    pub fn parse(s: &str) -> Option<IdKind> {
        match s {
            "int" => Some(IdKind::Int),
            "str" => Some(IdKind::Str),
            _ => None,
        }
    }
}

/// The ids of one range: a half-open span of integers, or an explicit sorted list.
///
/// Numeric sources make spans; a loader function and
/// [`retry_failed`](super::BatchJob::retry_failed) (which retries single ids)
/// make lists. In JSON, `{"span":[start,end]}` or `{"list":[id, ...]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ids {
    /// The integers `start..end`.
    Span(i64, i64),
    /// These ids, strictly increasing.
    List(Vec<Id>),
}

impl Ids {
    /// How many ids.
    pub fn len(&self) -> u64 {
        match self {
            Ids::Span(start, end) => end.saturating_sub(*start).max(0) as u64,
            Ids::List(ids) => ids.len() as u64,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids in order.
    pub fn iter(&self) -> IdsIter<'_> {
        match self {
            Ids::Span(start, end) => IdsIter::Span(*start..*end),
            Ids::List(ids) => IdsIter::List(ids.iter()),
        }
    }

    /// The ids after the first `n`: what is left of a range checkpointed at `n`.
    pub fn skip(&self, n: u64) -> Ids {
        match self {
            Ids::Span(start, end) => {
                let from = start.saturating_add(i64::try_from(n).unwrap_or(i64::MAX));
                Ids::Span(from.min(*end), *end)
            }
            Ids::List(ids) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX).min(ids.len());
                Ids::List(ids[n..].to_vec())
            }
        }
    }

    /// The first id, if any.
    pub fn first(&self) -> Option<Id> {
        self.iter().next()
    }

    /// The last id, if any.
    pub fn last(&self) -> Option<Id> {
        match self {
            Ids::Span(start, end) if start < end => Some(Id::Int(end - 1)),
            Ids::Span(..) => None,
            Ids::List(ids) => ids.last().cloned(),
        }
    }
}

impl fmt::Display for Ids {
    /// `[10, 20)` for a span; `[a .. b] (n ids)` for a list.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ids::Span(start, end) => write!(f, "[{start}, {end})"),
            Ids::List(ids) => match (ids.first(), ids.last()) {
                (Some(a), Some(b)) if ids.len() > 1 => {
                    write!(f, "[{a} .. {b}] ({} ids)", ids.len())
                }
                (Some(a), _) => write!(f, "[{a}]"),
                _ => f.write_str("[]"),
            },
        }
    }
}

/// Iterator over the ids of an [`Ids`].
#[derive(Clone, Debug)]
pub enum IdsIter<'a> {
    /// Over a span.
    #[doc(hidden)]
    Span(std::ops::Range<i64>),
    /// Over a list.
    #[doc(hidden)]
    List(std::slice::Iter<'a, Id>),
}

impl Iterator for IdsIter<'_> {
    type Item = Id;

    fn next(&mut self) -> Option<Id> {
        match self {
            IdsIter::Span(r) => r.next().map(Id::Int),
            IdsIter::List(it) => it.next().cloned(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            IdsIter::Span(r) => r.size_hint(),
            IdsIter::List(it) => it.size_hint(),
        }
    }
}

/// Why a loaded list of ids cannot be a range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrderError {
    /// Ids not strictly increasing.
    #[error("ids not strictly increasing: {prev} at position {} then {next}", .index - 1)]
    NotIncreasing {
        /// Position of `next` in the loaded list.
        index: usize,
        /// The id before it.
        prev: Id,
        /// The offending id.
        next: Id,
    },
    /// The first id is not after the cursor.
    #[error("first id {first} is not after the last id already handed out, {cursor}")]
    BeforeCursor {
        /// The loaded list's first id.
        first: Id,
        /// The job's cursor.
        cursor: Id,
    },
    /// Integer and string ids mixed, or a kind other than the job's.
    #[error("id {id} at position {index} is not of the job's kind ({})", .expected.as_str())]
    WrongKind {
        /// Position in the loaded list.
        index: usize,
        /// The offending id.
        id: Id,
        /// The job's id kind.
        expected: IdKind,
    },
}

/// Checks that `ids` are all of `kind`, strictly increasing, and after `cursor`.
pub(crate) fn check_order(ids: &[Id], cursor: Option<&Id>, kind: IdKind) -> Result<(), OrderError> {
    for (index, id) in ids.iter().enumerate() {
        if id.kind() != kind {
            return Err(OrderError::WrongKind {
                index,
                id: id.clone(),
                expected: kind,
            });
        }
    }
    if let (Some(first), Some(cursor)) = (ids.first(), cursor) {
        if first <= cursor {
            return Err(OrderError::BeforeCursor {
                first: first.clone(),
                cursor: cursor.clone(),
            });
        }
    }
    for (i, pair) in ids.windows(2).enumerate() {
        if pair[0] >= pair[1] {
            return Err(OrderError::NotIncreasing {
                index: i + 1,
                prev: pair[0].clone(),
                next: pair[1].clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spans_skip_and_count() {
        let ids = Ids::Span(10, 20);
        assert_eq!(ids.len(), 10);
        assert_eq!(ids.skip(3), Ids::Span(13, 20));
        assert_eq!(ids.skip(30), Ids::Span(20, 20));
        assert!(ids.skip(30).is_empty());
        assert_eq!(ids.last(), Some(Id::Int(19)));
        assert_eq!(ids.to_string(), "[10, 20)");
    }

    #[test]
    fn json_forms() {
        assert_eq!(
            serde_json::to_string(&Ids::Span(1, 5)).unwrap(),
            r#"{"span":[1,5]}"#
        );
        let list = Ids::List(vec![Id::from(3), Id::from(9)]);
        assert_eq!(serde_json::to_string(&list).unwrap(), r#"{"list":[3,9]}"#);
        let back: Ids = serde_json::from_str(r#"{"list":["a","b"]}"#).unwrap();
        assert_eq!(back, Ids::List(vec![Id::from("a"), Id::from("b")]));
    }

    #[test]
    fn ids_round_trip_in_postcard_too() {
        let ids = Ids::List(vec![Id::from(-3), Id::from(7)]);
        let bytes = postcard::to_allocvec(&ids).unwrap();
        assert_eq!(postcard::from_bytes::<Ids>(&bytes).unwrap(), ids);
        let strs = Ids::List(vec![Id::from("a"), Id::from("b")]);
        let bytes = postcard::to_allocvec(&strs).unwrap();
        assert_eq!(postcard::from_bytes::<Ids>(&bytes).unwrap(), strs);
        let err = serde_json::from_str::<Id>("18446744073709551615").unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }

    #[test]
    fn order_errors_name_the_place() {
        let ids = [Id::from(1), Id::from(5), Id::from(5)];
        let err = check_order(&ids, None, IdKind::Int).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ids not strictly increasing: 5 at position 1 then 5"
        );
        let err = check_order(&[Id::from(3)], Some(&Id::from(3)), IdKind::Int).unwrap_err();
        assert!(matches!(err, OrderError::BeforeCursor { .. }), "{err}");
        let err = check_order(&[Id::from("a")], None, IdKind::Int).unwrap_err();
        assert!(
            matches!(err, OrderError::WrongKind { index: 0, .. }),
            "{err}"
        );
        assert!(check_order(&[Id::from("a"), Id::from("b")], None, IdKind::Str).is_ok());
    }

    proptest! {
        #[test]
        fn skip_then_iterate_is_the_tail(start in -1000i64..1000, len in 0i64..200, n in 0u64..300) {
            let span = Ids::Span(start, start + len);
            let list = Ids::List(span.iter().collect());
            let a: Vec<Id> = span.skip(n).iter().collect();
            let b: Vec<Id> = list.skip(n).iter().collect();
            let c: Vec<Id> = span.iter().skip(n as usize).collect();
            prop_assert_eq!(&a, &c);
            prop_assert_eq!(&b, &c);
            prop_assert_eq!(span.skip(n).len() as usize, c.len());
        }
    }
}
