//! The limits every client and node agrees on, in one place.
//!
//! Each limit is part of the wire contract: a client checks it early, so the user gets a
//! friendly error before anything is sent, and a node enforces it again on every write path
//! (single-range write, transaction commit, two-phase-commit prepare), so no client can get
//! around it. The sizes nest, checked below at compile time:
//!
//! ```text
//!   key 8 KiB + value 1 MiB  ≤  transaction 16 MiB  ≤  gRPC message 64 MiB  (one commit request)
//! ```
//!
//! Why these values: a key is copied into every lock-table entry, index block and MVCC version,
//! so keys stay small (Spanner's directories keep keys short for the same reason); a value must
//! fit in one Paxos log record with room to spare; a transaction's writes travel in one commit
//! request and one Paxos entry per range, and are buffered at the client until commit, so 16 MiB
//! bounds both memory and the time one commit holds its locks.

use std::time::Duration;

/// Largest key in bytes.
pub const KEY_SIZE_MAX: usize = 8 * 1024;
/// Largest value in bytes.
pub const VALUE_SIZE_MAX: usize = 1024 * 1024;
/// Most writes (puts and deletes) in one transaction or write request.
pub const TXN_WRITES_MAX: usize = 10_000;
/// Most key and value bytes written by one transaction or write request.
pub const TXN_BYTES_MAX: usize = 16 << 20;
/// Largest gRPC message a client or node sends or accepts (tonic's `max_decoding_message_size`).
pub const GRPC_MESSAGE_MAX: usize = 64 << 20;
/// Longest after its first sending that a coordinator's commit may be sent again (a client
/// retrying after a lost answer). A coordinator remembers each decision for at least twice
/// this (`meridian_server`'s `DECISION_REMEMBERED`), so a repeated commit always meets the
/// decision it repeats instead of being decided afresh; one sent later is refused as of
/// unknown outcome.
pub const COMMIT_RESEND_MAX: Duration = Duration::from_secs(60);

const _: () = assert!(KEY_SIZE_MAX + VALUE_SIZE_MAX <= TXN_BYTES_MAX, "one write must fit in a transaction");
const _: () = assert!(
    TXN_BYTES_MAX * 2 <= GRPC_MESSAGE_MAX,
    "a full transaction's commit request, with its framing and reads, must fit in one message"
);

/// Checks a batch of writes (`None` deletes) against the value, count and byte limits; the
/// error says which limit was exceeded and by how much. Keys are checked where their other rules
/// (reserved prefixes) live.
pub fn check_writes<'a>(writes: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>) -> Result<(), String> {
    let (mut count, mut bytes) = (0usize, 0usize);
    for (k, v) in writes {
        let vlen = v.map_or(0, <[u8]>::len);
        if vlen > VALUE_SIZE_MAX {
            return Err(format!(
                "value of key {:?} is {vlen} bytes; the limit is {VALUE_SIZE_MAX} bytes (1 MiB): store large objects \
                 in pieces",
                String::from_utf8_lossy(&k[..k.len().min(64)])
            ));
        }
        count += 1;
        bytes += k.len() + vlen;
        if count > TXN_WRITES_MAX {
            return Err(format!(
                "a transaction writes at most {TXN_WRITES_MAX} keys; split the work into several transactions"
            ));
        }
        if bytes > TXN_BYTES_MAX {
            return Err(format!(
                "a transaction writes at most {TXN_BYTES_MAX} bytes (16 MiB) of keys and values; split the work into \
                 several transactions"
            ));
        }
    }
    Ok(())
}

/// How long the caller waits, from gRPC's `grpc-timeout` header: up to 8 digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`), as tonic's `Request::set_timeout` writes it. `None` without
/// the header or if it is malformed (tonic's own timeout then ignores it too).
pub fn grpc_timeout(meta: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let v = meta.get("grpc-timeout")?.to_str().ok()?;
    let unit = v.chars().last()?;
    let digits = &v[..v.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3_600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_is_enforced_exactly_at_its_value() {
        let big = vec![0u8; VALUE_SIZE_MAX];
        assert_eq!(check_writes([(&b"k"[..], Some(&big[..]))]), Ok(()));
        let bigger = vec![0u8; VALUE_SIZE_MAX + 1];
        let e = check_writes([(&b"k"[..], Some(&bigger[..]))]).expect_err("value over the limit");
        assert!(e.contains("1048577 bytes") && e.contains("limit is 1048576"), "{e}");

        let keys: Vec<Vec<u8>> = (0..=TXN_WRITES_MAX).map(|i| format!("k{i}").into_bytes()).collect();
        assert_eq!(check_writes(keys[..TXN_WRITES_MAX].iter().map(|k| (k.as_slice(), None))), Ok(()));
        let e = check_writes(keys.iter().map(|k| (k.as_slice(), None))).expect_err("too many writes");
        assert!(e.contains("at most 10000 keys"), "{e}");

        // 17 values of 1 MiB: under the count, over the bytes.
        let e = check_writes(keys[..17].iter().map(|k| (k.as_slice(), Some(&big[..])))).expect_err("too many bytes");
        assert!(e.contains("16777216 bytes"), "{e}");
        assert_eq!(check_writes(keys[..15].iter().map(|k| (k.as_slice(), Some(&big[..])))), Ok(()));
    }
}
