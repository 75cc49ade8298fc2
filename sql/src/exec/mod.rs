//! The executor: runs a bound [`Plan`] inside one KV transaction.
//!
//! Everything a statement does goes through the transaction it is given, so the statement is
//! exactly as atomic and isolated as the transaction. Within a statement, writes start only after
//! every check has passed (types, NOT NULL, sizes, duplicate keys): a failing statement leaves
//! nothing in the transaction's buffer that a later statement could see — and the session aborts an
//! explicit transaction on any error anyway (PostgreSQL's rule), so no partial statement can ever
//! commit.
//!
//! Rows are read in key order, in batches of [`SCAN_BATCH_ROWS`], with at most [`ROWS_SCANNED_MAX`]
//! rows per statement: results are materialized (for sorting and aggregation), so the bound is
//! what keeps one statement's memory bounded. A query without `ORDER BY` (or ordered by a key
//! prefix) and with `LIMIT` stops reading once it has enough rows.

mod dml;
mod select;

use crate::catalog::{self, SCAN_BATCH_ROWS, TableSchema};
use crate::error::{Result, SqlError, SqlState};
use crate::keys;
use crate::kv::KvTxn;
use crate::plan::{Plan, ScanPlan};
use crate::result::ResultKind;
use crate::types::Value;

/// Most rows one statement may read.
pub const ROWS_SCANNED_MAX: usize = 1_000_000;
/// Most rows one `UPDATE` or `DELETE` may change (one transaction buffers them all).
pub const MUTATION_ROWS_MAX: usize = 100_000;

const _: () = assert!(MUTATION_ROWS_MAX <= ROWS_SCANNED_MAX, "a mutation reads the rows it changes");

/// Runs `plan` in `txn`.
pub async fn execute(txn: &mut dyn KvTxn, plan: Plan) -> Result<ResultKind> {
    match plan {
        Plan::CreateTable(schema) => {
            catalog::create_table(txn, schema).await?;
            Ok(ResultKind::command("CREATE TABLE"))
        }
        Plan::DropTable(schemas) => {
            for schema in &schemas {
                catalog::drop_table(txn, schema).await?;
            }
            Ok(ResultKind::command("DROP TABLE"))
        }
        Plan::Insert(p) => dml::insert(txn, p).await,
        Plan::Update(p) => dml::update(txn, p).await,
        Plan::Delete(p) => dml::delete(txn, p).await,
        Plan::Select(p) => select::run(txn, p).await,
        Plan::ShowTables => {
            let columns = Plan::ShowTables.columns().expect("invariant: SHOW returns rows");
            let rows = catalog::list_tables(txn).await?.into_iter().map(|n| vec![Value::Text(n)]).collect();
            Ok(ResultKind::Rows { columns, rows })
        }
        Plan::ShowColumns(schema) => {
            let columns = Plan::ShowColumns(schema.clone()).columns().expect("invariant: SHOW returns rows");
            let rows = schema
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let key_position = schema.primary_key.iter().position(|&k| k == i);
                    vec![
                        Value::Text(c.name.clone()),
                        Value::Text(c.ty.to_string()),
                        Value::Bool(c.nullable),
                        key_position.map_or(Value::Null, |p| Value::Int(p as i64 + 1)),
                    ]
                })
                .collect();
            Ok(ResultKind::Rows { columns, rows })
        }
        Plan::Explain(inner) => {
            let columns = Plan::Explain(inner.clone()).columns().expect("invariant: EXPLAIN returns rows");
            let rows = inner.explain().into_iter().map(|line| vec![Value::Text(line)]).collect();
            Ok(ResultKind::Rows { columns, rows })
        }
        Plan::Nothing(tag) => Ok(ResultKind::command(tag)),
    }
}

/// Whether a row visitor wants more rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    More,
    /// Stop: the visitor has what it needs.
    Stop,
}

/// Reads the rows of `table` that `scan` selects, in key order, and passes each (key and decoded
/// row) to `visit`. `first_batch` caps the first scan call (for `LIMIT`).
pub async fn for_each_row<F>(
    txn: &mut dyn KvTxn,
    table: &TableSchema,
    scan: &ScanPlan,
    first_batch: Option<usize>,
    mut visit: F,
) -> Result<()>
where
    F: FnMut(Vec<u8>, Vec<Value>) -> Result<Flow> + Send,
{
    let mut scanned = 0usize;
    let mut count = |n: usize| -> Result<()> {
        scanned += n;
        if scanned > ROWS_SCANNED_MAX {
            return Err(SqlError::new(
                SqlState::ProgramLimitExceeded,
                format!(
                    "statement reads more than {ROWS_SCANNED_MAX} rows of table \"{}\"; constrain the primary key in \
                     the WHERE clause or add a LIMIT",
                    table.name
                ),
            ));
        }
        Ok(())
    };
    match scan {
        ScanPlan::Gets(keys) => {
            for key in keys {
                count(1)?;
                if let Some(value) = txn.get(key).await? {
                    let row = table.decode_row(key, &value)?;
                    if visit(key.clone(), row)? == Flow::Stop {
                        return Ok(());
                    }
                }
            }
        }
        ScanPlan::Spans(spans) => {
            let mut batch = first_batch.unwrap_or(SCAN_BATCH_ROWS).clamp(1, SCAN_BATCH_ROWS);
            for (start, end) in spans {
                let mut from = start.clone();
                loop {
                    let rows = txn.scan(&from, end, batch).await?;
                    let full = rows.len() == batch;
                    count(rows.len())?;
                    if let Some((last, _)) = rows.last() {
                        from = keys::key_successor(last);
                    }
                    for (key, value) in rows {
                        let row = table.decode_row(&key, &value)?;
                        if visit(key, row)? == Flow::Stop {
                            return Ok(());
                        }
                    }
                    batch = SCAN_BATCH_ROWS;
                    if !full {
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}

/// `Key (a, b)=(1, 'x')`, PostgreSQL's way of naming a row in constraint errors.
pub fn describe_key(table: &TableSchema, row: &[Value]) -> String {
    let names: Vec<&str> = table.primary_key.iter().map(|&k| table.columns[k].name.as_str()).collect();
    let values: Vec<String> = table.primary_key.iter().map(|&k| row[k].literal()).collect();
    format!("Key ({})=({})", names.join(", "), values.join(", "))
}

/// Checks NOT NULL (including primary-key columns) before a row is encoded.
pub fn check_not_null(table: &TableSchema, row: &[Value]) -> Result<()> {
    for (c, v) in table.columns.iter().zip(row) {
        if v.is_null() && !c.nullable {
            return Err(SqlError::new(
                SqlState::NotNullViolation,
                format!("null value in column \"{}\" of table \"{}\" violates not-null constraint", c.name, table.name),
            ));
        }
    }
    Ok(())
}
