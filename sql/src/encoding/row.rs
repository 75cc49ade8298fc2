//! Compact encoding of a row's non-key columns (the value of a row's key-value pair).
//!
//! ```text
//!   version (1 byte = ROW_FORMAT_V1)
//!   column count (LEB128 varint)               ┐ must match the schema: a mismatch is corruption,
//!   null bitmap (⌈count/8⌉ bytes, bit i = NULL)┘ not something to guess around
//!   each non-NULL column in order:
//!     INT    zigzag varint (1–10 bytes)
//!     FLOAT  8 bytes, IEEE bits big-endian
//!     BOOL   1 byte, 0 or 1
//!     TEXT   varint length ‖ UTF-8 bytes
//!     BYTES  varint length ‖ bytes
//! ```
//!
//! The version byte leaves room for a later format (e.g. after `ALTER TABLE`, which Meridian does
//! not have yet); a decoder that meets an unknown version says so instead of misreading. Decoding
//! checks everything it reads — lengths against the remaining input, unused bitmap bits, UTF-8,
//! trailing bytes — because the input comes from disk and the network.

use super::DecodeResult;
use crate::types::{DataType, Value};

/// The only row format so far.
pub const ROW_FORMAT_V1: u8 = 1;
/// Longest LEB128 encoding of a u64.
const VARINT_BYTES_MAX: usize = 10;

/// Encodes `values`, which must have the schema's `types` (or be NULL).
pub fn encode(values: &[&Value], types: &[DataType]) -> Vec<u8> {
    assert_eq!(values.len(), types.len(), "invariant: a row has one value per non-key column");
    let mut buf = vec![ROW_FORMAT_V1];
    put_varint(&mut buf, values.len() as u64);
    let mut bitmap = vec![0u8; values.len().div_ceil(8)];
    for (i, v) in values.iter().enumerate() {
        if v.is_null() {
            bitmap[i / 8] |= 1 << (i % 8);
        }
    }
    buf.extend_from_slice(&bitmap);
    for (value, ty) in values.iter().zip(types) {
        assert!(
            value.is_null() || value.data_type() == Some(*ty),
            "invariant: values are coerced to their column's type before encoding ({value:?} into {ty})"
        );
        match value {
            Value::Null => {}
            Value::Int(i) => put_varint(&mut buf, ((i << 1) ^ (i >> 63)) as u64),
            Value::Float(f) => buf.extend_from_slice(&f.to_bits().to_be_bytes()),
            Value::Bool(b) => buf.push(u8::from(*b)),
            Value::Text(s) => put_bytes(&mut buf, s.as_bytes()),
            Value::Bytes(b) => put_bytes(&mut buf, b),
            Value::Numeric(_) => unreachable!("invariant: no column is NUMERIC, and the value's type was checked"),
        }
    }
    buf
}

/// Decodes a row of the given column types.
pub fn decode(bytes: &[u8], types: &[DataType]) -> DecodeResult<Vec<Value>> {
    let mut input = bytes;
    let (&version, rest) = input.split_first().ok_or("row is empty")?;
    input = rest;
    if version != ROW_FORMAT_V1 {
        return Err(format!("row format version {version} is unknown (this build reads version {ROW_FORMAT_V1})"));
    }
    let count = get_varint(&mut input)?;
    if count != types.len() as u64 {
        return Err(format!("row has {count} columns but the schema has {}", types.len()));
    }
    let bitmap = take(&mut input, types.len().div_ceil(8))?;
    if !types.len().is_multiple_of(8) && bitmap.last().is_some_and(|last| last >> (types.len() % 8) != 0) {
        return Err("row has NULL bits set beyond its last column".to_string());
    }
    let mut values = Vec::with_capacity(types.len());
    for (i, ty) in types.iter().enumerate() {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            values.push(Value::Null);
            continue;
        }
        values.push(match ty {
            DataType::Int => {
                let z = get_varint(&mut input)?;
                Value::Int(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            DataType::Float => {
                let raw: [u8; 8] = take(&mut input, 8)?.try_into().expect("invariant: take returned 8 bytes");
                Value::Float(f64::from_bits(u64::from_be_bytes(raw)))
            }
            DataType::Bool => match take(&mut input, 1)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                other => return Err(format!("row has BOOL byte {other:#04x} in column {i}")),
            },
            DataType::Text => {
                let bytes = get_bytes(&mut input)?;
                Value::Text(String::from_utf8(bytes.to_vec()).map_err(|_| format!("row column {i} is not UTF-8"))?)
            }
            DataType::Bytes => Value::Bytes(get_bytes(&mut input)?.to_vec()),
            DataType::Numeric => return Err(format!("row column {i} is NUMERIC, a type no column has")),
        });
    }
    if !input.is_empty() {
        return Err(format!("row has {} trailing bytes", input.len()));
    }
    Ok(values)
}

fn put_varint(buf: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

fn get_varint(input: &mut &[u8]) -> DecodeResult<u64> {
    let mut n: u64 = 0;
    for i in 0..VARINT_BYTES_MAX {
        let (&byte, rest) = input.split_first().ok_or("row ends inside a varint")?;
        *input = rest;
        let bits = u64::from(byte & 0x7f);
        if i == VARINT_BYTES_MAX - 1 && bits > 1 {
            return Err("row has a varint over 64 bits".to_string());
        }
        n |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(n);
        }
    }
    Err("row has a varint longer than 10 bytes".to_string())
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

fn get_bytes<'a>(input: &mut &'a [u8]) -> DecodeResult<&'a [u8]> {
    let len = get_varint(input)?;
    let len = usize::try_from(len).map_err(|_| format!("row has a length of {len} bytes"))?;
    take(input, len)
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> DecodeResult<&'a [u8]> {
    if input.len() < n {
        return Err(format!("row ends early: needs {n} more bytes, has {}", input.len()));
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn typed_value() -> impl Strategy<Value = (DataType, Value)> {
        prop_oneof![
            any::<i64>().prop_map(|i| (DataType::Int, Value::Int(i))),
            any::<f64>().prop_map(|f| (DataType::Float, Value::Float(f))),
            any::<bool>().prop_map(|b| (DataType::Bool, Value::Bool(b))),
            ".{0,12}".prop_map(|s| (DataType::Text, Value::Text(s))),
            prop::collection::vec(any::<u8>(), 0..12).prop_map(|b| (DataType::Bytes, Value::Bytes(b))),
            Just((DataType::Int, Value::Null)),
            Just((DataType::Text, Value::Null)),
        ]
    }

    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
            _ => a == b,
        }
    }

    proptest! {
        #[test]
        fn round_trips(row in prop::collection::vec(typed_value(), 0..20)) {
            let types: Vec<_> = row.iter().map(|(t, _)| *t).collect();
            let values: Vec<_> = row.iter().map(|(_, v)| v).collect();
            let bytes = encode(&values, &types);
            let back = decode(&bytes, &types).unwrap();
            prop_assert_eq!(back.len(), values.len());
            for (a, b) in back.iter().zip(&values) {
                prop_assert!(same(a, b), "{:?} vs {:?}", a, b);
            }
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..40), n in 0usize..12) {
            let types = [DataType::Int, DataType::Float, DataType::Bool, DataType::Text, DataType::Bytes];
            let types: Vec<_> = (0..n).map(|i| types[i % types.len()]).collect();
            let _ = decode(&bytes, &types);
        }

        #[test]
        fn truncation_is_an_error(row in prop::collection::vec(typed_value(), 1..8), cut in any::<prop::sample::Index>()) {
            let types: Vec<_> = row.iter().map(|(t, _)| *t).collect();
            let values: Vec<_> = row.iter().map(|(_, v)| v).collect();
            let bytes = encode(&values, &types);
            let cut = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..cut], &types).is_err());
        }
    }

    #[test]
    fn corruption_is_named() {
        let types = [DataType::Int];
        let good = encode(&[&Value::Int(300)], &types);
        assert!(decode(&good, &types).is_ok());
        let mut bad_version = good.clone();
        bad_version[0] = 9;
        assert!(decode(&bad_version, &types).unwrap_err().contains("version 9"));
        assert!(decode(&good, &[DataType::Int, DataType::Int]).unwrap_err().contains("schema has 2"));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode(&trailing, &types).unwrap_err().contains("trailing"));
        assert!(decode(&[1, 1, 0b10], &types).unwrap_err().contains("beyond"));
        assert!(decode(&[1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], &types).is_err());
    }
}
