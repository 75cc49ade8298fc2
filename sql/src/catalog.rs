//! The catalog: table schemas stored as ordinary keys, read and written through the statement's own
//! transaction.
//!
//! There is no schema cache. Every statement reads the schemas it uses with `get` in its own
//! transaction, so DDL is exactly as serializable as DML: a read-write statement holds a read lock
//! (or a validated read) on the schema key, a concurrent `DROP TABLE` conflicts with it, and a
//! read-only or `AS OF SYSTEM TIME` query sees the schema of its snapshot. The cost is one extra
//! point read per table per statement, served from the meta range.
//!
//! A schema is stored as JSON with a format version (easy to inspect with `meridian kv`); decoding
//! validates it (column names unique, primary key non-empty and in range) so that a damaged entry
//! is a clear `XX001` error and never an index out of bounds later.
//!
//! `DROP TABLE` deletes the schema key and every row in one transaction, in scan batches of
//! [`SCAN_BATCH_ROWS`], and refuses tables over [`DROP_TABLE_ROWS_MAX`] rows before deleting
//! anything: one transaction's write buffer must stay bounded (Spanner §4.2.1 buffers writes at the
//! client). Left out: dropping huge tables in the background (CockroachDB's schema-change jobs),
//! `ALTER TABLE`, secondary indexes.

use crate::encoding::{key as keycode, row as rowcode};
use crate::error::{Result, SqlError, SqlState};
use crate::keys::{self, FIRST_TABLE_ID, TableId};
use crate::kv::KvTxn;
use crate::types::{DataType, Value};

/// Version of the stored schema format.
pub const SCHEMA_FORMAT_VERSION: u32 = 1;
/// Rows fetched per `scan` call when reading a table or a span.
pub const SCAN_BATCH_ROWS: usize = 1024;
/// Most rows `DROP TABLE` deletes in its one transaction.
pub const DROP_TABLE_ROWS_MAX: usize = 100_000;
/// Most tables `SHOW TABLES` lists.
pub const TABLES_MAX: usize = 10_000;
/// Longest table or column name, in bytes (PostgreSQL's NAMEDATALEN - 1).
pub const NAME_BYTES_MAX: usize = 63;
/// Most columns in a table.
pub const COLUMNS_MAX: usize = 256;
/// Most primary-key columns.
pub const KEY_COLUMNS_MAX: usize = 16;
/// Largest encoded primary key (the whole KV key). Must not exceed the storage key limit (8 KiB).
pub const KEY_BYTES_MAX: usize = 8 * 1024;
/// Largest encoded row value. Must not exceed the storage value limit (1 MiB).
pub const ROW_BYTES_MAX: usize = 1024 * 1024;

const _: () = assert!(KEY_COLUMNS_MAX <= COLUMNS_MAX, "key columns are columns");
const _: () = assert!(SCAN_BATCH_ROWS <= DROP_TABLE_ROWS_MAX, "a drop reads whole batches");

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ColumnSchema {
    /// Column name (already case-folded).
    pub name: String,
    /// Column type.
    pub ty: DataType,
    /// Whether NULL is allowed (never for primary-key columns).
    pub nullable: bool,
}

/// A table: its id, name, columns and primary key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableSchema {
    /// Stored-format version, [`SCHEMA_FORMAT_VERSION`].
    pub version: u32,
    /// Where the rows live (see `keys.rs`).
    pub id: TableId,
    /// Table name (already case-folded).
    pub name: String,
    /// Columns in declaration order.
    pub columns: Vec<ColumnSchema>,
    /// Indices into `columns` of the primary-key columns, in key order.
    pub primary_key: Vec<usize>,
}

impl TableSchema {
    /// Index of column `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Whether column `i` is part of the primary key.
    pub fn is_key_column(&self, i: usize) -> bool {
        self.primary_key.contains(&i)
    }

    /// Indices of the non-key columns, in declaration order (the row value's columns).
    pub fn value_columns(&self) -> Vec<usize> {
        (0..self.columns.len()).filter(|i| !self.is_key_column(*i)).collect()
    }

    /// Checks the invariants every stored schema keeps; the message says which one fails.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.version != SCHEMA_FORMAT_VERSION {
            return Err(format!("schema format version {} is unknown", self.version));
        }
        if self.columns.is_empty() || self.columns.len() > COLUMNS_MAX {
            return Err(format!("{} columns (1 to {COLUMNS_MAX} allowed)", self.columns.len()));
        }
        for (i, c) in self.columns.iter().enumerate() {
            if self.columns[..i].iter().any(|d| d.name == c.name) {
                return Err(format!("column {:?} appears twice", c.name));
            }
        }
        if self.primary_key.is_empty() || self.primary_key.len() > KEY_COLUMNS_MAX {
            return Err(format!("{} primary-key columns (1 to {KEY_COLUMNS_MAX} allowed)", self.primary_key.len()));
        }
        for (i, &k) in self.primary_key.iter().enumerate() {
            if k >= self.columns.len() || self.primary_key[..i].contains(&k) {
                return Err(format!("primary key column index {k} is out of range or repeated"));
            }
            if self.columns[k].nullable {
                return Err(format!("primary key column {:?} is nullable", self.columns[k].name));
            }
        }
        Ok(())
    }

    /// The KV key of the row `row` (all columns, in schema order). Errors if the key is too large.
    pub fn encode_key(&self, row: &[Value]) -> Result<Vec<u8>> {
        let mut key = keys::table_prefix(self.id);
        for &k in &self.primary_key {
            keycode::encode(&mut key, &row[k]);
        }
        if key.len() > KEY_BYTES_MAX {
            return Err(SqlError::new(
                SqlState::ProgramLimitExceeded,
                format!(
                    "primary key of table {:?} is {} bytes encoded; the limit is {KEY_BYTES_MAX} bytes",
                    self.name,
                    key.len()
                ),
            ));
        }
        Ok(key)
    }

    /// The KV value of the row `row` (all columns, in schema order). Errors if the row is too large.
    pub fn encode_value(&self, row: &[Value]) -> Result<Vec<u8>> {
        let cols = self.value_columns();
        let values: Vec<&Value> = cols.iter().map(|&i| &row[i]).collect();
        let types: Vec<DataType> = cols.iter().map(|&i| self.columns[i].ty).collect();
        let bytes = rowcode::encode(&values, &types);
        if bytes.len() > ROW_BYTES_MAX {
            return Err(SqlError::new(
                SqlState::ProgramLimitExceeded,
                format!(
                    "row of table {:?} is {} bytes encoded; the limit is {ROW_BYTES_MAX} bytes (1 MiB)",
                    self.name,
                    bytes.len()
                ),
            ));
        }
        Ok(bytes)
    }

    /// Decodes a stored row (key and value) into all columns in schema order.
    pub fn decode_row(&self, key: &[u8], value: &[u8]) -> Result<Vec<Value>> {
        let corrupt = |detail: String| {
            SqlError::new(
                SqlState::DataCorrupted,
                format!("corrupt row in table {:?} at key {}: {detail}", self.name, keys::pretty_key(key)),
            )
        };
        let prefix = keys::table_prefix(self.id);
        let mut rest = key.strip_prefix(&prefix[..]).ok_or_else(|| corrupt("key is outside the table".into()))?;
        let mut row = vec![Value::Null; self.columns.len()];
        for &k in &self.primary_key {
            row[k] = keycode::decode(&mut rest, self.columns[k].ty).map_err(corrupt)?;
        }
        if !rest.is_empty() {
            return Err(corrupt(format!("key has {} bytes after the primary key", rest.len())));
        }
        let cols = self.value_columns();
        let types: Vec<DataType> = cols.iter().map(|&i| self.columns[i].ty).collect();
        for (i, v) in cols.into_iter().zip(rowcode::decode(value, &types).map_err(corrupt)?) {
            row[i] = v;
        }
        Ok(row)
    }
}

/// Reads the schema of table `name`, if it exists.
pub async fn get_table(txn: &mut dyn KvTxn, name: &str) -> Result<Option<TableSchema>> {
    match txn.get(&keys::table_schema_key(name)).await? {
        None => Ok(None),
        Some(bytes) => decode_schema(name, &bytes).map(Some),
    }
}

fn decode_schema(name: &str, bytes: &[u8]) -> Result<TableSchema> {
    let schema: TableSchema = serde_json::from_slice(bytes).map_err(|e| {
        SqlError::new(SqlState::DataCorrupted, format!("corrupt catalog entry for table {name:?}: {e}"))
    })?;
    schema.validate().map_err(|e| {
        SqlError::new(SqlState::DataCorrupted, format!("corrupt catalog entry for table {name:?}: {e}"))
    })?;
    if schema.name != name {
        return Err(SqlError::new(
            SqlState::DataCorrupted,
            format!("corrupt catalog entry for table {name:?}: it describes table {:?}", schema.name),
        ));
    }
    Ok(schema)
}

/// Creates a table from `draft` (whose `id` is ignored): allocates the next id and stores the
/// schema. The caller has checked that no table `draft.name` exists, in this transaction.
pub async fn create_table(txn: &mut dyn KvTxn, mut draft: TableSchema) -> Result<TableSchema> {
    let counter_key = keys::next_table_id_key();
    let id = match txn.get(&counter_key).await? {
        None => FIRST_TABLE_ID,
        Some(bytes) => {
            let raw: [u8; 4] = bytes.as_slice().try_into().map_err(|_| {
                SqlError::new(SqlState::DataCorrupted, format!("corrupt table-id counter: {} bytes", bytes.len()))
            })?;
            TableId(u32::from_be_bytes(raw))
        }
    };
    let next = id.0.checked_add(1).ok_or_else(|| {
        SqlError::new(SqlState::ProgramLimitExceeded, "all 2^32 table ids have been used; no table can be created")
    })?;
    txn.put(&counter_key, &next.to_be_bytes()).await?;
    draft.id = id;
    draft.version = SCHEMA_FORMAT_VERSION;
    assert!(draft.validate().is_ok(), "invariant: the binder builds valid schemas: {:?}", draft.validate());
    let bytes = serde_json::to_vec(&draft).expect("invariant: a schema always serializes to JSON");
    txn.put(&keys::table_schema_key(&draft.name), &bytes).await?;
    Ok(draft)
}

/// Deletes table `schema` and all its rows. Refuses (before deleting anything) if the table has more
/// than [`DROP_TABLE_ROWS_MAX`] rows.
pub async fn drop_table(txn: &mut dyn KvTxn, schema: &TableSchema) -> Result<()> {
    let (start, end) = keys::table_span(schema.id);
    let mut row_keys = Vec::new();
    let mut from = start;
    loop {
        let batch = txn.scan(&from, &end, SCAN_BATCH_ROWS).await?;
        let full = batch.len() == SCAN_BATCH_ROWS;
        if let Some((last, _)) = batch.last() {
            from = keys::key_successor(last);
        }
        row_keys.extend(batch.into_iter().map(|(k, _)| k));
        if row_keys.len() > DROP_TABLE_ROWS_MAX {
            return Err(SqlError::new(
                SqlState::ProgramLimitExceeded,
                format!(
                    "table {:?} has more than {DROP_TABLE_ROWS_MAX} rows, more than one transaction may delete; \
                     delete its rows in smaller batches (DELETE FROM {} WHERE …) and then drop it",
                    schema.name, schema.name
                ),
            ));
        }
        if !full {
            break;
        }
    }
    for key in &row_keys {
        txn.delete(key).await?;
    }
    txn.delete(&keys::table_schema_key(&schema.name)).await?;
    Ok(())
}

/// Names of all tables, in name order (at most [`TABLES_MAX`]).
pub async fn list_tables(txn: &mut dyn KvTxn) -> Result<Vec<String>> {
    let (mut from, end) = keys::table_schemas_span();
    let mut names = Vec::new();
    loop {
        let batch = txn.scan(&from, &end, SCAN_BATCH_ROWS).await?;
        let full = batch.len() == SCAN_BATCH_ROWS;
        if let Some((last, _)) = batch.last() {
            from = keys::key_successor(last);
        }
        for (key, _) in batch {
            let name = keys::table_name_of_schema_key(&key).ok_or_else(|| {
                SqlError::new(SqlState::DataCorrupted, format!("corrupt catalog key {}", keys::pretty_key(&key)))
            })?;
            names.push(name.to_string());
        }
        if names.len() > TABLES_MAX {
            return Err(SqlError::new(
                SqlState::ProgramLimitExceeded,
                format!("more than {TABLES_MAX} tables; SHOW TABLES lists at most {TABLES_MAX}"),
            ));
        }
        if !full {
            return Ok(names);
        }
    }
}
