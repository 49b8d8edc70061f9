//! How ids, spans and script replies look in Redis, and their decoding.
//!
//! # Implementation notes
//!
//! - **Ids** are stored so that byte order is id order, which is what Redis sorts
//!   by (sorted-set members of equal score; the cursor comparison): an integer is
//!   `i` and 16 hex digits of its value with the sign bit flipped (so negative ids
//!   sort first); a string is `s` and its bytes. A string `"007"` stays a string;
//!   `-1` and `i64::MAX` keep every bit (Lua numbers would not: they are doubles).
//! - **Spans** are stored as their bounds in decimal text and cut by index: range
//!   `k` is `[start + k·size, min(start + (k+1)·size, end))`, computed here in
//!   `i128`. Scripts only count ranges (`k`, `nranges`), never add ids, so a span
//!   anywhere in `i64` is exact; `nranges` must stay below 2^53 (a double's exact
//!   integers), which [`SpanShape::new`] checks.

use redis::Value;
use workcrew::batch::{Id, Ids, StoreError, StoreErrorKind};

/// The largest integer a Lua number (a double) holds exactly: 2^53.
const EXACT: u64 = 1 << 53;

/// Encodes an id for Redis (see the module docs).
pub(crate) fn encode_id(id: &Id) -> Vec<u8> {
    match id {
        Id::Int(i) => {
            let flipped = (*i as u64) ^ (1 << 63);
            format!("i{flipped:016x}").into_bytes()
        }
        Id::Str(s) => {
            let mut out = Vec::with_capacity(s.len() + 1);
            out.push(b's');
            out.extend_from_slice(s.as_bytes());
            out
        }
    }
}

/// Decodes what [`encode_id`] made.
pub(crate) fn decode_id(bytes: &[u8]) -> Result<Id, String> {
    match bytes.split_first() {
        Some((b'i', hex)) => {
            let text = std::str::from_utf8(hex).map_err(|_| "an integer id that is not hex")?;
            let flipped = u64::from_str_radix(text, 16)
                .ok()
                .filter(|_| text.len() == 16)
                .ok_or_else(|| format!("integer id {text:?} is not 16 hex digits"))?;
            Ok(Id::Int((flipped ^ (1 << 63)) as i64))
        }
        Some((b's', text)) => String::from_utf8(text.to_vec())
            .map(Id::Str)
            .map_err(|_| "a string id that is not UTF-8".to_owned()),
        _ => Err(format!(
            "an id encoded as {:?}",
            String::from_utf8_lossy(bytes)
        )),
    }
}

/// A span as the scripts see it: how many ranges it cuts into and how long the
/// last one is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SpanShape {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) size: u64,
    pub(crate) nranges: u64,
    pub(crate) lastlen: u64,
}

impl SpanShape {
    /// The shape of `[start, end)` in ranges of `size`; an error when a script
    /// could not count it exactly.
    pub(crate) fn new(start: i64, end: i64, size: u64) -> Result<SpanShape, String> {
        if size == 0 || size >= EXACT {
            return Err(format!("a range size of {size} (it must be 1 to 2^53 - 1)"));
        }
        let total = (i128::from(end) - i128::from(start)).max(0) as u128;
        let size128 = u128::from(size);
        let nranges = total.div_ceil(size128);
        if nranges >= u128::from(EXACT) {
            return Err(format!(
                "{nranges} ranges (the redis store counts at most 2^53 - 1 per job: use larger ranges)"
            ));
        }
        let lastlen = if nranges == 0 {
            0
        } else {
            total - (nranges - 1) * size128
        };
        Ok(SpanShape {
            start,
            end,
            size,
            nranges: nranges as u64,
            lastlen: lastlen as u64,
        })
    }

    /// The ids of range `k`.
    pub(crate) fn range(start: i64, size: u64, end: i64, k: u64) -> Ids {
        let lo = i128::from(start) + i128::from(k) * i128::from(size);
        let hi = (lo + i128::from(size)).min(i128::from(end));
        Ids::Span(clamp(lo), clamp(hi))
    }

    /// The next start after `cut` ranges: the span's cursor.
    pub(crate) fn cursor(start: i64, size: u64, end: i64, cut: u64) -> i64 {
        let at = i128::from(start) + i128::from(cut) * i128::from(size);
        clamp(at.min(i128::from(end.max(start))))
    }
}

fn clamp(x: i128) -> i64 {
    x.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Decodes a script's reply, naming the script in errors: a reply of the wrong
/// shape means the keys hold data this version does not understand.
pub(crate) struct Reply<'a> {
    pub(crate) what: &'a str,
    pub(crate) script: &'static str,
}

impl Reply<'_> {
    pub(crate) fn corrupt(&self, detail: impl std::fmt::Display) -> StoreError {
        StoreError::new(
            StoreErrorKind::Corrupt,
            format!(
                "redis store {}: unreadable reply of the {} script: {detail}",
                self.what, self.script
            ),
        )
    }

    pub(crate) fn array(&self, v: Value) -> Result<Vec<Value>, StoreError> {
        match v {
            Value::Array(items) => Ok(items),
            other => Err(self.corrupt(format!("expected an array, got {other:?}"))),
        }
    }

    /// An array of exactly `N` items.
    pub(crate) fn tuple<const N: usize>(&self, v: Value) -> Result<[Value; N], StoreError> {
        let items = self.array(v)?;
        let len = items.len();
        items
            .try_into()
            .map_err(|_| self.corrupt(format!("expected {N} items, got {len}")))
    }

    pub(crate) fn int(&self, v: &Value) -> Result<i64, StoreError> {
        match v {
            Value::Int(i) => Ok(*i),
            Value::BulkString(b) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| self.corrupt(format!("expected an integer, got {v:?}"))),
            other => Err(self.corrupt(format!("expected an integer, got {other:?}"))),
        }
    }

    pub(crate) fn uint(&self, v: &Value) -> Result<u64, StoreError> {
        let i = self.int(v)?;
        u64::try_from(i).map_err(|_| self.corrupt(format!("expected a count, got {i}")))
    }

    /// A bulk string, or `None` for nil.
    pub(crate) fn opt_bytes<'v>(&self, v: &'v Value) -> Result<Option<&'v [u8]>, StoreError> {
        match v {
            Value::Nil => Ok(None),
            Value::BulkString(b) => Ok(Some(b)),
            Value::SimpleString(s) => Ok(Some(s.as_bytes())),
            other => Err(self.corrupt(format!("expected a string, got {other:?}"))),
        }
    }

    pub(crate) fn string(&self, v: &Value) -> Result<String, StoreError> {
        match self.opt_bytes(v)? {
            Some(b) => String::from_utf8(b.to_vec()).map_err(|_| self.corrupt("text not UTF-8")),
            None => Err(self.corrupt("expected a string, got nil")),
        }
    }

    pub(crate) fn opt_string(&self, v: &Value) -> Result<Option<String>, StoreError> {
        match v {
            Value::Nil => Ok(None),
            _ => self.string(v).map(Some),
        }
    }

    pub(crate) fn id(&self, v: &Value) -> Result<Id, StoreError> {
        let bytes = self
            .opt_bytes(v)?
            .ok_or_else(|| self.corrupt("expected an id, got nil"))?;
        decode_id(bytes).map_err(|e| self.corrupt(e))
    }

    pub(crate) fn ids(&self, v: Value) -> Result<Vec<Id>, StoreError> {
        self.array(v)?.iter().map(|x| self.id(x)).collect()
    }

    /// A span's `{ start, size, end }`, or `None` for nil.
    pub(crate) fn span(&self, v: &Value) -> Result<Option<(i64, u64, i64)>, StoreError> {
        match v {
            Value::Nil => Ok(None),
            Value::Array(items) if items.len() == 3 => Ok(Some((
                self.int(&items[0])?,
                self.uint(&items[1])?,
                self.int(&items[2])?,
            ))),
            other => Err(self.corrupt(format!("expected a span, got {other:?}"))),
        }
    }

    /// A range's ids: span index `k` (with the job's span) or a list.
    pub(crate) fn range_ids(
        &self,
        span: Option<(i64, u64, i64)>,
        k: &Value,
        list: Value,
    ) -> Result<Ids, StoreError> {
        match (k, span) {
            (Value::Nil, _) => Ok(Ids::List(self.ids(list)?)),
            (k, Some((start, size, end))) => Ok(SpanShape::range(start, size, end, self.uint(k)?)),
            (_, None) => Err(self.corrupt("a span range in a job without a span")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sort_by_bytes() {
        let ids = [
            Id::Int(i64::MIN),
            Id::Int(-1),
            Id::Int(0),
            Id::Int(9),
            Id::Int(10),
            Id::Int(i64::MAX),
            Id::from(""),
            Id::from("007"),
            Id::from("a-10"),
            Id::from("a-9"),
            Id::from("é"),
        ];
        let encoded: Vec<Vec<u8>> = ids.iter().map(encode_id).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(sorted, encoded, "byte order is id order");
        for (id, bytes) in ids.iter().zip(&encoded) {
            assert_eq!(&decode_id(bytes).unwrap(), id);
        }
        assert_eq!(decode_id(b"s007").unwrap(), Id::from("007"));
        assert!(decode_id(b"i12").is_err());
        assert!(decode_id(b"x").is_err());
    }

    #[test]
    fn spans_are_cut_exactly_anywhere_in_i64() {
        let shape = SpanShape::new(10, 22, 5).unwrap();
        assert_eq!((shape.nranges, shape.lastlen), (3, 2));
        assert_eq!(SpanShape::range(10, 5, 22, 2), Ids::Span(20, 22));
        assert_eq!(SpanShape::cursor(10, 5, 22, 3), 22);
        assert_eq!(SpanShape::cursor(10, 5, 22, 0), 10);
        let big = i64::MAX - 250;
        let shape = SpanShape::new(big, i64::MAX, 100).unwrap();
        assert_eq!((shape.nranges, shape.lastlen), (3, 50));
        assert_eq!(
            SpanShape::range(big, 100, i64::MAX, 2),
            Ids::Span(big + 200, i64::MAX)
        );
        let empty = SpanShape::new(5, 5, 10).unwrap();
        assert_eq!((empty.nranges, empty.lastlen), (0, 0));
        assert_eq!(
            SpanShape::cursor(5, 10, 3, 0),
            5,
            "an inverted span stays at its start"
        );
        assert!(
            SpanShape::new(i64::MIN, i64::MAX, 1).is_err(),
            "2^64 ranges"
        );
        assert!(SpanShape::new(0, 10, 0).is_err());
    }
}
