//! # Key spans
//!
//! What a lock or a prepared transaction covers: one point key, or a half-open key range
//! `[start, end)` in the order-preserving key space of the storage layer. An empty `end` means
//! "to the end of the key space", as in range descriptors.
//!
//! ```text
//!   key space ──a────b────c────d────e──────────────►
//!   Key(b)          ●
//!   Range[b, d)     [═════════)
//!   Range[d, "")              [═══════════════════►   (unbounded)
//! ```
//!
//! Two spans **overlap** if some key lies in both. A range whose bounded end is not above its
//! start would cover nothing; it is refused at construction ([`Span::range`]) rather than
//! silently never conflicting, so a caller bug cannot turn into a lock that protects nothing.

use std::fmt;

use crate::{Error, Result};

/// A point key or a key range `[start, end)` (empty `end` = unbounded).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Span {
    /// Exactly one key.
    Key(Vec<u8>),
    /// Every key `k` with `start <= k < end` (no upper bound if `end` is empty).
    Range {
        /// First key covered.
        start: Vec<u8>,
        /// First key not covered; empty = unbounded.
        end: Vec<u8>,
    },
}

impl Span {
    /// A span of one key.
    pub fn key(key: impl Into<Vec<u8>>) -> Span {
        Span::Key(key.into())
    }

    /// The range `[start, end)`; `end` empty means unbounded.
    ///
    /// # Errors
    /// [`Error::EmptyRange`] if `end` is bounded and not above `start`.
    pub fn range(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Result<Span> {
        let (start, end) = (start.into(), end.into());
        if !end.is_empty() && end <= start {
            return Err(Error::EmptyRange { start: escape(&start), end: escape(&end) });
        }
        Ok(Span::Range { start, end })
    }

    /// The first key the span covers.
    pub fn start(&self) -> &[u8] {
        match self {
            Span::Key(k) => k,
            Span::Range { start, .. } => start,
        }
    }

    /// Whether `key` lies in the span.
    pub fn contains_key(&self, key: &[u8]) -> bool {
        match self {
            Span::Key(k) => k.as_slice() == key,
            Span::Range { start, end } => start.as_slice() <= key && (end.is_empty() || key < end.as_slice()),
        }
    }

    /// Whether some key lies in both spans.
    pub fn overlaps(&self, other: &Span) -> bool {
        match (self, other) {
            (Span::Key(a), _) => other.contains_key(a),
            (_, Span::Key(b)) => self.contains_key(b),
            (Span::Range { start: s1, end: e1 }, Span::Range { start: s2, end: e2 }) => {
                // [s1, e1) ∩ [s2, e2) ≠ ∅  ⇔  s1 < e2 ∧ s2 < e1 (an empty end is +∞).
                (e2.is_empty() || s1 < e2) && (e1.is_empty() || s2 < e1)
            }
        }
    }
}

/// Prints a key as `foo` (printable ASCII) with other bytes escaped, a range as `[a, c)` and an
/// unbounded range as `[a, ∞)`.
impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Span::Key(k) => write!(f, "{}", escape(k)),
            Span::Range { start, end } if end.is_empty() => write!(f, "[{}, ∞)", escape(start)),
            Span::Range { start, end } => write!(f, "[{}, {})", escape(start), escape(end)),
        }
    }
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Span({self})")
    }
}

/// Printable form of a key: ASCII as is, other bytes as `\xNN`.
pub(crate) fn escape(key: &[u8]) -> String {
    key.iter().flat_map(|b| std::ascii::escape_default(*b)).map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str, e: &str) -> Span {
        Span::range(s, e).expect("valid test range")
    }

    #[test]
    fn overlap_table() {
        let k = |s: &str| Span::key(s);
        let cases: &[(Span, Span, bool)] = &[
            (k("b"), k("b"), true),
            (k("b"), k("c"), false),
            (k("b"), r("a", "c"), true),
            (k("c"), r("a", "c"), false), // end is exclusive
            (k("a"), r("a", "c"), true),  // start is inclusive
            (k("zzz"), r("a", ""), true), // unbounded
            (k(""), r("", "a"), true),
            (r("a", "c"), r("c", "e"), false), // touching ranges do not overlap
            (r("a", "d"), r("c", "e"), true),
            (r("a", ""), r("x", "y"), true),
            (r("a", ""), r("", ""), true),
            (r("m", ""), r("a", "m"), false),
        ];
        for (a, b, want) in cases {
            assert_eq!(a.overlaps(b), *want, "{a} vs {b}");
            assert_eq!(b.overlaps(a), *want, "overlap is symmetric: {b} vs {a}");
        }
    }

    #[test]
    fn empty_ranges_are_refused() {
        assert!(matches!(Span::range("b", "b"), Err(Error::EmptyRange { .. })));
        assert!(matches!(Span::range("c", "b"), Err(Error::EmptyRange { .. })));
        assert!(Span::range("b", "").is_ok(), "empty end means unbounded, not empty");
    }

    #[test]
    fn display() {
        assert_eq!(Span::key(vec![b'a', 0, 0xff]).to_string(), "a\\x00\\xff");
        assert_eq!(r("a", "c").to_string(), "[a, c)");
        assert_eq!(r("a", "").to_string(), "[a, ∞)");
    }
}
