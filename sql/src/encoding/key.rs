//! Order-preserving encoding of primary-key values, after toydb's `keycode`.
//!
//! For values `a`, `b` of one type, `encode(a) < encode(b)` (bytewise) exactly when `a < b` in SQL
//! order ([`crate::Value::sql_cmp`]), and `encode(a) == encode(b)` exactly when `a = b`. Each
//! encoding is also self-delimiting and prefix-free, so a tuple's encoding is the concatenation of
//! its columns' and tuples compare column by column — this is what lets the planner turn "the first
//! key columns equal these values" into one contiguous key span.
//!
//! ```text
//!   INT    8 bytes big-endian with the sign bit flipped
//!   FLOAT  8 bytes: IEEE bits, sign bit flipped for positives, all bits flipped for negatives;
//!          -0.0 is written as 0.0 and every NaN as the one canonical NaN (SQL: -0 = 0, NaN = NaN)
//!   BOOL   0x00 false, 0x01 true
//!   TEXT   bytes with 0x00 escaped as 0x00 0xff, then the terminator 0x00 0x00
//!   BYTES  same as TEXT
//! ```
//!
//! NULL has no encoding: primary-key columns are NOT NULL, and callers check before encoding.
//! There is no type tag: the table schema says what type each key column has.

use super::DecodeResult;
use crate::types::{DataType, Value};

const SIGN_BIT: u64 = 1 << 63;
/// Escape for a 0x00 byte inside TEXT/BYTES: 0x00 0xff.
const ESCAPE: [u8; 2] = [0x00, 0xff];
/// End of a TEXT/BYTES value: 0x00 0x00, which sorts below every escaped or plain continuation.
const TERMINATOR: [u8; 2] = [0x00, 0x00];

/// Appends the key encoding of `value` to `buf`.
///
/// Panics if `value` is NULL: the executor checks key columns for NULL (with a user-facing error)
/// before it builds a key, so a NULL here is a bug.
pub fn encode(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => panic!("invariant violated: NULL reached the key encoder; key columns are checked first"),
        Value::Int(i) => buf.extend_from_slice(&((*i as u64) ^ SIGN_BIT).to_be_bytes()),
        Value::Float(f) => buf.extend_from_slice(&encode_float(*f).to_be_bytes()),
        Value::Bool(b) => buf.push(u8::from(*b)),
        Value::Text(s) => encode_bytes(buf, s.as_bytes()),
        Value::Bytes(b) => encode_bytes(buf, b),
        Value::Numeric(_) => panic!("invariant violated: a NUMERIC reached the key encoder; no column has that type"),
    }
}

/// Decodes one value of type `ty` from the front of `input` and advances `input` past it.
pub fn decode(input: &mut &[u8], ty: DataType) -> DecodeResult<Value> {
    Ok(match ty {
        DataType::Int => Value::Int((u64::from_be_bytes(take8(input, ty)?) ^ SIGN_BIT) as i64),
        DataType::Float => Value::Float(decode_float(u64::from_be_bytes(take8(input, ty)?))),
        DataType::Bool => {
            let (&byte, rest) = input.split_first().ok_or("key ends inside a BOOL")?;
            *input = rest;
            match byte {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                other => return Err(format!("key has BOOL byte {other:#04x}; expected 0x00 or 0x01")),
            }
        }
        DataType::Text => {
            let bytes = decode_bytes(input)?;
            Value::Text(String::from_utf8(bytes).map_err(|_| "key has a TEXT value that is not UTF-8".to_string())?)
        }
        DataType::Bytes => Value::Bytes(decode_bytes(input)?),
        DataType::Numeric => return Err("key has a NUMERIC column, a type no column has".to_string()),
    })
}

fn encode_float(f: f64) -> u64 {
    let canonical = if f.is_nan() {
        f64::NAN
    } else if f == 0.0 {
        0.0
    } else {
        f
    };
    let bits = canonical.to_bits();
    if bits & SIGN_BIT != 0 { !bits } else { bits | SIGN_BIT }
}

fn decode_float(encoded: u64) -> f64 {
    f64::from_bits(if encoded & SIGN_BIT != 0 { encoded ^ SIGN_BIT } else { !encoded })
}

fn encode_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        if b == 0 {
            buf.extend_from_slice(&ESCAPE);
        } else {
            buf.push(b);
        }
    }
    buf.extend_from_slice(&TERMINATOR);
}

fn decode_bytes(input: &mut &[u8]) -> DecodeResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = *input;
    loop {
        match rest {
            [0x00, 0x00, tail @ ..] => {
                *input = tail;
                return Ok(out);
            }
            [0x00, 0xff, tail @ ..] => {
                out.push(0);
                rest = tail;
            }
            [0x00, other, ..] => return Err(format!("key has invalid escape 0x00 {other:#04x} in a TEXT/BYTES value")),
            [b, tail @ ..] if *b != 0 => {
                out.push(*b);
                rest = tail;
            }
            _ => return Err("key ends inside a TEXT/BYTES value (no terminator)".to_string()),
        }
    }
}

fn take8(input: &mut &[u8], ty: DataType) -> DecodeResult<[u8; 8]> {
    let (head, rest) = input.split_first_chunk::<8>().ok_or_else(|| format!("key ends inside an {ty} value"))?;
    *input = rest;
    Ok(*head)
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use proptest::prelude::*;

    use super::*;

    fn enc(values: &[Value]) -> Vec<u8> {
        let mut buf = Vec::new();
        for v in values {
            encode(&mut buf, v);
        }
        buf
    }

    fn value_of(ty: DataType) -> BoxedStrategy<Value> {
        match ty {
            DataType::Int => {
                prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), -3i64..3].prop_map(Value::Int).boxed()
            }
            DataType::Float => prop_oneof![
                any::<f64>(),
                Just(f64::NAN),
                Just(-f64::NAN),
                Just(0.0),
                Just(-0.0),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY),
                -2.0f64..2.0
            ]
            .prop_map(Value::Float)
            .boxed(),
            DataType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
            DataType::Text => "[a\\x00\\u{ff}é]{0,4}|.{0,8}".prop_map(Value::Text).boxed(),
            DataType::Bytes => prop::collection::vec(prop_oneof![Just(0u8), Just(0xffu8), any::<u8>()], 0..6)
                .prop_map(Value::Bytes)
                .boxed(),
            DataType::Numeric => unreachable!("harness: no key column is NUMERIC, so `data_type` never picks it"),
        }
    }

    fn data_type() -> impl Strategy<Value = DataType> {
        prop_oneof![
            Just(DataType::Int),
            Just(DataType::Float),
            Just(DataType::Bool),
            Just(DataType::Text),
            Just(DataType::Bytes)
        ]
    }

    /// Two tuples of one random schema.
    fn tuple_pair() -> impl Strategy<Value = (Vec<DataType>, Vec<Value>, Vec<Value>)> {
        prop::collection::vec(data_type(), 1..4).prop_flat_map(|types| {
            let a: Vec<_> = types.iter().map(|t| value_of(*t)).collect();
            let b: Vec<_> = types.iter().map(|t| value_of(*t)).collect();
            (Just(types), a, b)
        })
    }

    fn sql_tuple_cmp(a: &[Value], b: &[Value]) -> Ordering {
        for (x, y) in a.iter().zip(b) {
            match x.sql_cmp(y).expect("same types compare") {
                Ordering::Equal => continue,
                other => return other,
            }
        }
        Ordering::Equal
    }

    proptest! {
        #[test]
        fn round_trips((types, a, _b) in tuple_pair()) {
            let bytes = enc(&a);
            let mut input = &bytes[..];
            for (ty, expected) in types.iter().zip(&a) {
                let got = decode(&mut input, *ty).unwrap();
                prop_assert_eq!(got.sql_cmp(expected), Some(Ordering::Equal), "{:?} vs {:?}", got, expected);
            }
            prop_assert!(input.is_empty());
        }

        #[test]
        fn byte_order_is_sql_order((_types, a, b) in tuple_pair()) {
            prop_assert_eq!(enc(&a).cmp(&enc(&b)), sql_tuple_cmp(&a, &b), "{:?} vs {:?}", a, b);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..24), ty in data_type()) {
            let mut input = &bytes[..];
            let _ = decode(&mut input, ty);
        }
    }

    #[test]
    fn known_orders() {
        let ints = [i64::MIN, -1, 0, 1, i64::MAX].map(|i| enc(&[Value::Int(i)]));
        assert!(ints.windows(2).all(|w| w[0] < w[1]));
        let floats =
            [f64::NEG_INFINITY, -1.5, -0.0, 1e-300, 2.0, f64::INFINITY, f64::NAN].map(|f| enc(&[Value::Float(f)]));
        assert!(floats.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(enc(&[Value::Float(-0.0)]), enc(&[Value::Float(0.0)]));
        let texts = ["", "\0", "\0\0", "a", "a\0", "ab", "b"].map(|s| enc(&[Value::Text(s.into())]));
        assert!(texts.windows(2).all(|w| w[0] < w[1]), "{texts:?}");
    }

    #[test]
    fn bad_bytes_are_errors() {
        assert!(decode(&mut &[1u8, 2][..], DataType::Int).is_err());
        assert!(decode(&mut &[2u8][..], DataType::Bool).is_err());
        assert!(decode(&mut &[b'a', 0, 7][..], DataType::Text).is_err());
        assert!(decode(&mut &[b'a'][..], DataType::Bytes).is_err());
        assert!(decode(&mut &[0xc3, 0, 0][..], DataType::Text).is_err());
    }
}
