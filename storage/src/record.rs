//! Checksummed record framing for every value Meridian stores.
//!
//! ```text
//!   ┌──────┬──────────────┬───────────────────────┐
//!   │ kind │ payload …    │ crc32(kind ‖ payload) │
//!   │ 1 B  │              │ 4 B little-endian     │
//!   └──────┴──────────────┴───────────────────────┘
//! ```
//!
//! RocksDB checksums its own blocks, but a checksum on each record also catches corruption
//! above the engine (a bad write path, `MemEngine` fault injection) and lets the error name the
//! exact record. Decoding never panics: short input and checksum mismatches are errors.

use crate::{Error, Result};

/// Size of the framing around a payload.
pub const RECORD_OVERHEAD: usize = 5;

/// Frames `payload` as a record of `kind`.
pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + RECORD_OVERHEAD);
    out.push(kind);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks and unframes a record; `what` names it in errors.
pub fn decode<'a>(bytes: &'a [u8], what: &dyn Fn() -> String) -> Result<(u8, &'a [u8])> {
    if bytes.len() < RECORD_OVERHEAD {
        return Err(Error::corrupt(
            what(),
            format!("truncated record: {} bytes, at least {RECORD_OVERHEAD} expected", bytes.len()),
        ));
    }
    let (body, crc_bytes) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(crc_bytes.try_into().expect("split_at leaves exactly 4 bytes"));
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(Error::corrupt(
            what(),
            format!("checksum mismatch (stored 0x{stored:08x}, computed 0x{computed:08x})"),
        ));
    }
    Ok((body[0], &body[1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for payload in [&b""[..], b"x", &[0u8; 1000]] {
            let rec = encode(7, payload);
            assert_eq!(decode(&rec, &|| "r".into()).expect("decodes"), (7, payload));
        }
    }

    #[test]
    fn every_single_bit_flip_and_truncation_is_detected() {
        let rec = encode(1, b"hello, meridian");
        for i in 0..rec.len() * 8 {
            let mut bad = rec.clone();
            bad[i / 8] ^= 1 << (i % 8);
            let err = decode(&bad, &|| "the record".into()).expect_err("flip must be caught");
            assert!(err.to_string().contains("corrupt the record"), "{err}");
        }
        for len in 0..rec.len() {
            assert!(decode(&rec[..len], &|| "r".into()).is_err(), "truncated to {len}");
        }
    }
}
