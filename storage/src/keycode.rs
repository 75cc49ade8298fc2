//! Order-preserving, prefix-free encoding of arbitrary byte strings.
//!
//! MVCC keys append a timestamp to a user key, so the user key must be encoded such that
//! (a) byte order of encodings equals byte order of keys, and (b) no encoding is a prefix of
//! another — otherwise `"a" ‖ ts` could sort between `"a\x00"` and `"a\x01"`. The scheme (as in
//! toydb's keycode and CockroachDB's byte encoding):
//!
//! ```text
//!   0x00  →  0x00 0xFF          (escape)
//!   end   →  0x00 0x00          (terminator; smaller than any escaped continuation)
//! ```

use crate::{Error, Result};

/// Appends the escaped form of `key` (with its terminator) to `out`.
pub fn escape_into(out: &mut Vec<u8>, key: &[u8]) {
    out.reserve(key.len() + 2);
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x00]);
}

/// The escaped form of `key`.
pub fn escape(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2);
    escape_into(&mut out, key);
    out
}

/// Decodes an escaped key from the front of `bytes`; returns the key and the bytes after its
/// terminator.
pub fn unescape(bytes: &[u8]) -> Result<(Vec<u8>, &[u8])> {
    let mut key = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != 0 {
            key.push(b);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(0x00) => return Ok((key, &bytes[i + 2..])),
            Some(0xFF) => {
                key.push(0);
                i += 2;
            }
            Some(other) => {
                return Err(Error::corrupt(
                    "escaped key",
                    format!("byte 0x{other:02x} after 0x00 at offset {}", i + 1),
                ));
            }
            None => break,
        }
    }
    Err(Error::corrupt("escaped key", format!("no terminator in {} bytes", bytes.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_order() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"\x00",
            b"\x00\x00",
            b"\x00\x01",
            b"\x00\xff",
            b"a",
            b"a\x00",
            b"a\x00b",
            b"a\x01",
            b"ab",
            b"\xff",
            b"\xff\x00",
        ];
        for (i, a) in keys.iter().enumerate() {
            let ea = escape(a);
            let (back, rest) = unescape(&ea).expect("decodes");
            assert_eq!((back.as_slice(), rest), (*a, &[][..]));
            for b in &keys[i + 1..] {
                let eb = escape(b);
                assert!(a < b, "test keys are sorted");
                assert!(ea < eb, "order: {a:?} < {b:?}");
                assert!(!eb.starts_with(&ea), "prefix-free: {a:?} vs {b:?}");
                // A suffix after the terminator never crosses into the next key.
                let mut with_suffix = ea.clone();
                with_suffix.extend_from_slice(&[0xFF; 8]);
                assert!(with_suffix < eb, "suffix stays below the next key: {a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn bad_escapes_are_errors() {
        for bad in [&b"abc"[..], b"a\x00", b"a\x00\x01", b"\x00\xff"] {
            assert!(matches!(unescape(bad), Err(Error::Corrupt { .. })), "{bad:?}");
        }
    }
}
