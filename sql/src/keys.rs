//! Where SQL keeps things in the key space. Every key SQL reads or writes is built here.
//!
//! ```text
//!   0x00 0x02 "table/" name          → table schema (JSON, see catalog.rs)     ┐ system key space,
//!   0x00 0x02 "next_table_id"        → next table id (u32, big-endian)          ┘ in the meta range
//!   0x10 table_id(u32 BE) pk…        → one row: non-key columns (encoding::row)
//! ```
//!
//! Invariants:
//! - The catalog lives under [`SYSTEM_PREFIX`] (`0x00 0x02`), which sorts before every user key,
//!   so it falls into the meta range; the store must let SQL write it (see the crate essay).
//! - A row key is [`TABLE_ROWS_PREFIX`], the table id in big-endian (so one table's rows are one
//!   contiguous span, and tables sort by id), then the primary-key columns in the order-preserving
//!   encoding of `encoding::key`. That encoding is prefix-free, so "all rows whose key starts with
//!   these column values" is exactly the span `[prefix, prefix_end(prefix))`.
//! - Table ids come from a counter and are never reused, so a dropped table's leftovers (none, if
//!   `DROP TABLE` finished) could never be read as rows of a new table.

/// Start of the system key space in which the catalog lives (the meta range).
pub const SYSTEM_PREFIX: [u8; 2] = [0x00, 0x02];
/// Catalog keys of table schemas: `SYSTEM_PREFIX ‖ CATALOG_TABLE_TAG ‖ name`.
pub const CATALOG_TABLE_TAG: &[u8] = b"table/";
/// Catalog key of the table-id counter: `SYSTEM_PREFIX ‖ NEXT_TABLE_ID_TAG`.
pub const NEXT_TABLE_ID_TAG: &[u8] = b"next_table_id";
/// First byte of every user row key.
pub const TABLE_ROWS_PREFIX: u8 = 0x10;

const _: () = assert!(SYSTEM_PREFIX[0] < TABLE_ROWS_PREFIX, "the catalog must sort before all table rows");

/// A table's identity inside the key space. Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct TableId(pub u32);

impl std::fmt::Display for TableId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The id given to the first table created.
pub const FIRST_TABLE_ID: TableId = TableId(1);

/// Catalog key holding the schema of table `name`.
pub fn table_schema_key(name: &str) -> Vec<u8> {
    [&SYSTEM_PREFIX[..], CATALOG_TABLE_TAG, name.as_bytes()].concat()
}

/// Span `[start, end)` of all table-schema keys (for `SHOW TABLES`).
pub fn table_schemas_span() -> (Vec<u8>, Vec<u8>) {
    let start = [&SYSTEM_PREFIX[..], CATALOG_TABLE_TAG].concat();
    let end = prefix_end(&start);
    (start, end)
}

/// The table name a key from [`table_schemas_span`] belongs to, if it is one.
pub fn table_name_of_schema_key(key: &[u8]) -> Option<&str> {
    let rest = key.strip_prefix(&SYSTEM_PREFIX[..])?.strip_prefix(CATALOG_TABLE_TAG)?;
    std::str::from_utf8(rest).ok()
}

/// Catalog key of the table-id counter.
pub fn next_table_id_key() -> Vec<u8> {
    [&SYSTEM_PREFIX[..], NEXT_TABLE_ID_TAG].concat()
}

/// Prefix of every row key of table `id`.
pub fn table_prefix(id: TableId) -> Vec<u8> {
    let mut key = Vec::with_capacity(5);
    key.push(TABLE_ROWS_PREFIX);
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

/// Span `[start, end)` of every row of table `id`.
pub fn table_span(id: TableId) -> (Vec<u8>, Vec<u8>) {
    let start = table_prefix(id);
    let end = prefix_end(&start);
    (start, end)
}

/// The smallest key greater than every key that starts with `prefix`; empty ("unbounded") when no
/// such key exists (the prefix is all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    end
}

/// The smallest key greater than `key` (for paging a scan after the last key returned).
pub fn key_successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// A short human form of a key for logs and test output: `/t1/800000000000002a`,
/// `/system/table/accounts`.
pub fn pretty_key(key: &[u8]) -> String {
    if key.is_empty() {
        return "∞".to_string();
    }
    if let Some(rest) = key.strip_prefix(&SYSTEM_PREFIX[..]) {
        return format!("/system/{}", String::from_utf8_lossy(rest));
    }
    if key.len() >= 5 && key[0] == TABLE_ROWS_PREFIX {
        let id = u32::from_be_bytes([key[1], key[2], key[3], key[4]]);
        return format!("/t{id}/{}", crate::types::hex(&key[5..]));
    }
    format!("0x{}", crate::types::hex(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_tight_upper_bound() {
        assert_eq!(prefix_end(&[1, 2]), vec![1, 3]);
        assert_eq!(prefix_end(&[1, 0xff]), vec![2]);
        assert_eq!(prefix_end(&[0xff, 0xff]), Vec::<u8>::new());
        assert!(key_successor(&[1, 2]) > vec![1, 2]);
    }

    #[test]
    fn table_spans_are_disjoint_and_ordered() {
        let (s1, e1) = table_span(TableId(1));
        let (s2, _) = table_span(TableId(2));
        assert!(s1 < e1 && e1 <= s2);
        let (_, emax) = table_span(TableId(u32::MAX));
        assert_eq!(emax, vec![TABLE_ROWS_PREFIX + 1]);
        assert!(table_schema_key("zzz") < table_prefix(TableId(0)));
        let (cs, ce) = table_schemas_span();
        assert!(cs <= table_schema_key("a") && table_schema_key("a") < ce);
        assert!(next_table_id_key() < cs || next_table_id_key() >= ce);
        assert_eq!(table_name_of_schema_key(&table_schema_key("acct")), Some("acct"));
        assert_eq!(pretty_key(&table_schema_key("acct")), "/system/table/acct");
        assert_eq!(pretty_key(&[0x10, 0, 0, 0, 1, 0xab]), "/t1/ab");
    }
}
