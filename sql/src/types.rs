//! SQL values and types.
//!
//! Five types (DESIGN.md §7), each with one Rust representation:
//!
//! | SQL names                                   | [`DataType`] | [`Value`]           |
//! |---------------------------------------------|--------------|---------------------|
//! | `INT`, `INTEGER`, `BIGINT`, `INT8`          | `Int`        | `Int(i64)`          |
//! | `FLOAT`, `DOUBLE PRECISION`, `REAL`         | `Float`      | `Float(f64)`        |
//! | `BOOL`, `BOOLEAN`                           | `Bool`       | `Bool(bool)`        |
//! | `TEXT`, `VARCHAR`, `STRING`                 | `Text`       | `Text(String)`      |
//! | `BYTES`, `BYTEA`                            | `Bytes`      | `Bytes(Vec<u8>)`    |
//!
//! Every integer type is 64 bits (PostgreSQL's `INT` is 32; Meridian has one integer type, like
//! CockroachDB). `REAL` is stored as a 64-bit float too.
//!
//! **Order.** [`Value::sql_cmp`] is the SQL comparison: `NULL` compares as unknown (`None`), `Int`
//! and `Float` compare numerically, `-0.0 = 0.0`, and `NaN` equals itself and is greater than every
//! other number (PostgreSQL's rule). [`Value::sort_cmp`] extends it to a total order with `NULL`
//! greatest, which `ORDER BY`, `GROUP BY` and `MIN`/`MAX` use. The key encoding
//! (`encoding::key`) preserves exactly this order — a property test checks it.

use std::cmp::Ordering;
use std::fmt;

use crate::error::{Result, SqlError, SqlState};
use crate::numeric::Numeric;

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum DataType {
    /// 64-bit signed integer.
    Int,
    /// 64-bit IEEE 754 float.
    Float,
    /// Boolean.
    Bool,
    /// UTF-8 text.
    Text,
    /// Arbitrary bytes.
    Bytes,
    /// An exact decimal: only the result of `AVG` over integers, never a column (`numeric.rs`).
    Numeric,
}

impl DataType {
    /// Whether arithmetic applies to the type.
    pub fn is_numeric(self) -> bool {
        matches!(self, DataType::Int | DataType::Float | DataType::Numeric)
    }

    /// The type a parameter or a string literal is read as where a value of this type is
    /// expected: NUMERIC has no input of its own, so it reads a FLOAT.
    pub fn input(self) -> DataType {
        if self == DataType::Numeric { DataType::Float } else { self }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataType::Int => "INT",
            DataType::Float => "FLOAT",
            DataType::Bool => "BOOL",
            DataType::Text => "TEXT",
            DataType::Bytes => "BYTES",
            DataType::Numeric => "NUMERIC",
        })
    }
}

/// A result or table column: its name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column's name (for computed columns PostgreSQL's `?column?`).
    pub name: String,
    /// The column's type.
    pub ty: DataType,
}

/// One SQL value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL: unknown, of any type.
    Null,
    /// An `INT`.
    Int(i64),
    /// A `FLOAT`.
    Float(f64),
    /// A `BOOL`.
    Bool(bool),
    /// A `TEXT`.
    Text(String),
    /// A `BYTES`.
    Bytes(Vec<u8>),
    /// A `NUMERIC` (only from `AVG` of integers).
    Numeric(Numeric),
}

impl Value {
    /// The value's type; `None` for NULL, which has every type.
    pub fn data_type(&self) -> Option<DataType> {
        match self {
            Value::Null => None,
            Value::Int(_) => Some(DataType::Int),
            Value::Float(_) => Some(DataType::Float),
            Value::Bool(_) => Some(DataType::Bool),
            Value::Text(_) => Some(DataType::Text),
            Value::Bytes(_) => Some(DataType::Bytes),
            Value::Numeric(_) => Some(DataType::Numeric),
        }
    }

    /// Whether the value is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// SQL comparison: `None` when either side is NULL or the types do not compare (the binder
    /// rejects such comparisons before anything runs).
    pub fn sql_cmp(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Float(a), Value::Float(b)) => Some(float_cmp(*a, *b)),
            // Mixed comparisons go through f64: exact for |i| ≤ 2^53, the nearest float beyond.
            (Value::Int(a), Value::Float(b)) => Some(float_cmp(*a as f64, *b)),
            (Value::Float(a), Value::Int(b)) => Some(float_cmp(*a, *b as f64)),
            (Value::Numeric(a), Value::Numeric(b)) => Some(a.cmp_exact(*b)),
            (Value::Numeric(a), Value::Int(b)) => Some(a.cmp_exact(Numeric::from_int(*b))),
            (Value::Int(a), Value::Numeric(b)) => Some(Numeric::from_int(*a).cmp_exact(*b)),
            (Value::Numeric(a), Value::Float(b)) => Some(float_cmp(a.to_f64(), *b)),
            (Value::Float(a), Value::Numeric(b)) => Some(float_cmp(*a, b.to_f64())),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (Value::Text(a), Value::Text(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            (Value::Bytes(a), Value::Bytes(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// Total order for sorting and grouping: [`Value::sql_cmp`], with NULL equal to NULL and
    /// greater than everything (PostgreSQL's `NULLS LAST` for ascending order). Values of types that
    /// do not compare order by type, so the order stays total even on a bug.
    pub fn sort_cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Null, _) => Ordering::Greater,
            (_, Value::Null) => Ordering::Less,
            _ => self.sql_cmp(other).unwrap_or_else(|| self.data_type().cmp(&other.data_type())),
        }
    }

    /// The value as a SQL literal: `1`, `1.5`, `'it''s'`, `x'00ff'`, `TRUE`, `NULL`. Used in error
    /// messages and test output, where `NULL` and `'NULL'` must look different.
    pub fn literal(&self) -> String {
        match self {
            Value::Null => "NULL".to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) if f.is_finite() => format_float(*f),
            Value::Float(f) => format!("'{}'::FLOAT", format_float(*f)),
            Value::Bool(true) => "TRUE".to_string(),
            Value::Bool(false) => "FALSE".to_string(),
            Value::Text(s) => format!("'{}'", s.replace('\'', "''")),
            Value::Bytes(b) => format!("x'{}'", hex(b)),
            Value::Numeric(n) => n.to_string(),
        }
    }

    /// PostgreSQL's text output format (what `psql` prints and `pgwire` sends in text mode):
    /// `t`/`f` for booleans, `\x…` hex for bytes, `Infinity`/`NaN` for special floats; `None` for
    /// NULL.
    pub fn pg_text(&self) -> Option<String> {
        match self {
            Value::Null => None,
            Value::Bool(b) => Some(if *b { "t" } else { "f" }.to_string()),
            other => Some(other.to_string()),
        }
    }
}

/// Plain rendering for people: text unquoted, bytes as `\x…`, NULL as `NULL`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => f.write_str(&format_float(*x)),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Text(s) => f.write_str(s),
            Value::Bytes(b) => write!(f, "\\x{}", hex(b)),
            Value::Numeric(n) => write!(f, "{n}"),
        }
    }
}

/// SQL order of floats: numeric, `-0.0 = 0.0`, NaN equal to itself and above everything.
pub(crate) fn float_cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).expect("invariant: non-NaN floats are ordered"),
    }
}

/// PostgreSQL's `float8out` with `extra_float_digits ≥ 1` (the default since PostgreSQL 12, and
/// what `pgjdbc` and `pg_dump` ask for): the shortest digits that read back as the same float, in
/// fixed notation when the decimal exponent is in `-4..15` (printf's `%g` rule with `DBL_DIG` = 15)
/// and otherwise as `1.5e+300`, `1e-05` (signed exponent, two digits at least); `NaN`, `Infinity`,
/// `-Infinity`, and `-0` for negative zero. Used for the wire's text format and by the shell.
///
/// The digits come from the `ryu` crate: PostgreSQL's `d2s.c` is the same Ryu algorithm, so where
/// two shortest candidates are equally close (the exact value ends in 5) both pick the even one
/// (`70629844887344.62`) — Rust's own `{}` picks the upper one (`…44.63`). Meridian has no 32-bit
/// float (`REAL` is 64-bit), so `float4out`'s `FLT_DIG` = 6 rule never applies. Settings of
/// `extra_float_digits` ≤ 0 (fewer, rounded digits) are not honoured: Meridian always sends the
/// exact value.
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    } else if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    } else if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let mut buffer = ryu::Buffer::new();
    let (digits, exponent) = shortest_digits(buffer.format_finite(f.abs()));
    let sign = if f < 0.0 { "-" } else { "" };
    let (first, rest) = digits.split_at(1);
    if !(FIXED_EXPONENT_MIN..FIXED_EXPONENT_END).contains(&exponent) {
        let point = if rest.is_empty() { "" } else { "." };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{first}{point}{rest}e{exponent_sign}{:02}", exponent.unsigned_abs());
    }
    if exponent < 0 {
        let zeros = "0".repeat((-exponent - 1) as usize);
        return format!("{sign}0.{zeros}{digits}");
    }
    // `exponent + 1` digits before the point: pad with zeros, or split the digits.
    let int_len = exponent as usize + 1;
    if digits.len() <= int_len {
        format!("{sign}{digits}{}", "0".repeat(int_len - digits.len()))
    } else {
        let (int, frac) = digits.split_at(int_len);
        format!("{sign}{int}.{frac}")
    }
}

/// Smallest decimal exponent [`format_float`] writes in fixed notation (printf's `%g`: -4).
const FIXED_EXPONENT_MIN: i32 = -4;
/// First decimal exponent [`format_float`] writes in scientific notation (`DBL_DIG`).
const FIXED_EXPONENT_END: i32 = 15;

/// The significant digits of a positive decimal number as `ryu` writes it (`1.0`, `0.001`,
/// `1.5e-7`, `1e16`, `123.45`), without leading or trailing zeros, and the decimal exponent of
/// the first one: `1.5e-7` → (`"15"`, -7), `120.0` → (`"12"`, 2).
fn shortest_digits(text: &str) -> (String, i32) {
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().expect("invariant: ryu writes a decimal exponent")),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = format!("{int}{frac}");
    assert!(
        !all.is_empty() && all.bytes().all(|b| b.is_ascii_digit()),
        "invariant: ryu writes digits, a point and an exponent, not {text:?}"
    );
    let leading = all.len() - all.trim_start_matches('0').len();
    let digits = all.trim_start_matches('0').trim_end_matches('0').to_string();
    assert!(!digits.is_empty(), "invariant: a finite non-zero float has a non-zero digit: {text:?}");
    (digits, int.len() as i32 - 1 - leading as i32 + exponent)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// Parses PostgreSQL's text input format of `ty` (casts from TEXT, parameters sent as text).
pub(crate) fn parse_text(text: &str, ty: DataType) -> Result<Value> {
    let bad =
        || SqlError::new(SqlState::InvalidTextRepresentation, format!("invalid input syntax for type {ty}: {text:?}"));
    let trimmed = text.trim();
    Ok(match ty {
        DataType::Int => Value::Int(trimmed.parse().map_err(|_| {
            if !trimmed.is_empty() && trimmed.trim_start_matches(['-', '+']).bytes().all(|b| b.is_ascii_digit()) {
                SqlError::new(
                    SqlState::NumericValueOutOfRange,
                    format!("value {trimmed:?} is out of range for type INT"),
                )
            } else {
                bad()
            }
        })?),
        DataType::Float => Value::Float(match trimmed.to_ascii_lowercase().as_str() {
            "infinity" | "+infinity" | "inf" => f64::INFINITY,
            "-infinity" | "-inf" => f64::NEG_INFINITY,
            "nan" => f64::NAN,
            lower if lower.contains("inf") || lower.contains("nan") => return Err(bad()),
            _ => trimmed.parse().map_err(|_| bad())?,
        }),
        DataType::Bool => Value::Bool(match trimmed.to_ascii_lowercase().as_str() {
            "t" | "true" | "yes" | "y" | "on" | "1" => true,
            "f" | "false" | "no" | "n" | "off" | "0" => false,
            _ => return Err(bad()),
        }),
        DataType::Text => Value::Text(text.to_string()),
        DataType::Bytes => match text.strip_prefix("\\x") {
            Some(digits) => Value::Bytes(unhex(digits).ok_or_else(bad)?),
            None => Value::Bytes(text.as_bytes().to_vec()),
        },
        DataType::Numeric => return parse_text(text, ty.input()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_compare_like_postgres() {
        assert_eq!(float_cmp(-0.0, 0.0), Ordering::Equal);
        assert_eq!(float_cmp(f64::NAN, f64::NAN), Ordering::Equal);
        assert_eq!(float_cmp(f64::NAN, f64::INFINITY), Ordering::Greater);
        assert_eq!(float_cmp(f64::NEG_INFINITY, -1e308), Ordering::Less);
    }

    #[test]
    fn floats_print_like_postgres() {
        let cases = [
            (2.0, "2"),
            (1.5, "1.5"),
            (-0.25, "-0.25"),
            (-0.0, "-0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e14, "100000000000000"),
            (123456789012345.6, "123456789012345.6"),
            (1e15, "1e+15"),
            (1.2345678901234568e17, "1.2345678901234568e+17"),
            (1e300 * 10.0, "1e+301"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-1.5e-300, "-1.5e-300"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (f64::NEG_INFINITY, "-Infinity"),
            (0.0, "0"),
            (1.0, "1"),
            (0.1, "0.1"),
            (-1.0, "-1"),
            (100.0, "100"),
            (1e16, "1e+16"),
            (999999999999999.0, "999999999999999"),
            (-1e15, "-1e+15"),
            (1.5e15, "1.5e+15"),
            (0.00012345, "0.00012345"),
            (1e-4, "0.0001"),
            (-1e-4, "-0.0001"),
            (1.5e-7, "1.5e-07"),
            (1e100, "1e+100"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (f64::MIN, "-1.7976931348623157e+308"),
            (9007199254740991.0, "9.007199254740991e+15"),
            (1.2345678901234568e20, "1.2345678901234568e+20"),
            (f64::INFINITY, "Infinity"),
            (f64::NAN, "NaN"),
            (-f64::NAN, "NaN"),
            // Two shortest candidates equally close (the exact value is 70629844887344.625): Ryu,
            // and so PostgreSQL, takes the even one; Rust's `{}` prints 70629844887344.63.
            (565_038_759_098_757.0 / 8.0, "70629844887344.62"),
            (-2.2434502514498593e15, "-2.2434502514498592e+15"),
        ];
        for (f, text) in cases {
            assert_eq!(format_float(f), text, "{f:?}");
            if f.is_finite() {
                assert_eq!(parse_text(text, DataType::Float).unwrap(), Value::Float(f), "{text} reads back");
            }
        }
    }

    /// Against Rust's own shortest formatting over many floats: the same number of digits (both
    /// are shortest), the same value when read back, and different digits only where two
    /// candidates are equally close — then ours ends in the even digit, one below Rust's.
    #[test]
    fn float_digits_are_shortest_and_round_half_even() {
        use rand::{Rng, SeedableRng};
        const SAMPLES: usize = 200_000;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let mut ties = 0;
        for i in 0..SAMPLES {
            let f = if i % 2 == 0 {
                f64::from_bits(rng.random())
            } else {
                // Integers over small powers of two: exact values with few digits, where ties live.
                (rng.random_range(0u64..1 << 53) as f64) / f64::from(1u32 << rng.random_range(0..12))
            };
            if !f.is_finite() || f == 0.0 {
                continue;
            }
            let text = format_float(f);
            assert_eq!(text.parse::<f64>().map(f64::to_bits), Ok(f.to_bits()), "{text} reads back as {f:e}");
            let ours = shortest_digits(text.trim_start_matches('-'));
            let std = shortest_digits(&format!("{:e}", f.abs()));
            assert_eq!((ours.0.len(), ours.1), (std.0.len(), std.1), "{f:e}: ours {text}");
            if ours != std {
                ties += 1;
                let (o, s) = (ours.0.as_bytes(), std.0.as_bytes());
                let last = o.len() - 1;
                assert_eq!(o[..last], s[..last], "{f:e}: only the last digit may differ");
                assert!(o[last] % 2 == 0 && s[last] == o[last] + 1, "{f:e}: ours {text} rounds half to even");
            }
        }
        assert!(ties > 0, "no tie among {SAMPLES} samples: the rounding check ran on nothing");
    }

    #[test]
    fn null_sorts_last_and_compares_unknown() {
        assert_eq!(Value::Null.sql_cmp(&Value::Int(1)), None);
        assert_eq!(Value::Null.sort_cmp(&Value::Int(1)), Ordering::Greater);
        assert_eq!(Value::Int(2).sql_cmp(&Value::Float(1.5)), Some(Ordering::Greater));
        assert_eq!(Value::Text("a".into()).sql_cmp(&Value::Int(1)), None);
    }

    #[test]
    fn literals_are_unambiguous() {
        assert_eq!(Value::Text("it's".into()).literal(), "'it''s'");
        assert_eq!(Value::Text("NULL".into()).literal(), "'NULL'");
        assert_eq!(Value::Null.literal(), "NULL");
        assert_eq!(Value::Bytes(vec![0, 255]).literal(), "x'00ff'");
        assert_eq!(Value::Float(1.0).literal(), "1");
        assert_eq!(Value::Float(f64::NAN).literal(), "'NaN'::FLOAT");
        assert_eq!(Value::Bool(true).pg_text().as_deref(), Some("t"));
        assert_eq!(Value::Bytes(vec![1]).pg_text().as_deref(), Some("\\x01"));
    }

    #[test]
    fn text_input_formats() {
        assert_eq!(parse_text(" 42 ", DataType::Int).unwrap(), Value::Int(42));
        assert_eq!(parse_text("abc", DataType::Int).unwrap_err().code, SqlState::InvalidTextRepresentation);
        assert_eq!(
            parse_text("99999999999999999999", DataType::Int).unwrap_err().code,
            SqlState::NumericValueOutOfRange
        );
        assert_eq!(parse_text("t", DataType::Bool).unwrap(), Value::Bool(true));
        assert_eq!(parse_text("\\x00ff", DataType::Bytes).unwrap(), Value::Bytes(vec![0, 255]));
        assert_eq!(parse_text("\\x0", DataType::Bytes).unwrap_err().code, SqlState::InvalidTextRepresentation);
        assert!(matches!(parse_text("-Infinity", DataType::Float).unwrap(), Value::Float(f) if f == f64::NEG_INFINITY));
        assert_eq!(parse_text("infinityx", DataType::Float).unwrap_err().code, SqlState::InvalidTextRepresentation);
    }
}
