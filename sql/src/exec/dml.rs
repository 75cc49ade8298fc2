//! Running `INSERT`/`UPSERT`, `UPDATE` and `DELETE`.
//!
//! Each works in two phases: **compute** every new row, key and encoded value and check every
//! constraint (NOT NULL, sizes, duplicate keys — in the statement and in the table); then **write**.
//! Nothing is written unless the whole statement is valid.
//!
//! Duplicate keys *inside* one statement: a plain `INSERT` fails (`23505`), `DO NOTHING` keeps the
//! first, and `UPSERT`/`DO UPDATE` fail with `21000` ("cannot affect row a second time"), as in
//! PostgreSQL and CockroachDB — the result would otherwise depend on row order.
//!
//! An `UPDATE` that changes primary-key columns moves rows: all old keys are deleted and all new
//! keys written, so `SET id = id + 1` over consecutive ids works; a new key that collides with a
//! row the statement does not move is a `23505`.

use std::collections::{BTreeMap, BTreeSet};

use super::{Flow, MUTATION_ROWS_MAX, check_not_null, describe_key, for_each_row};
use crate::catalog::TableSchema;
use crate::error::{Result, SqlError, SqlState};
use crate::expr::Expr;
use crate::kv::KvTxn;
use crate::plan::{DeletePlan, InsertPlan, OnConflict, ScanPlan, UpdatePlan};
use crate::result::ResultKind;
use crate::types::Value;

fn duplicate(table: &TableSchema, row: &[Value]) -> SqlError {
    SqlError::new(
        SqlState::UniqueViolation,
        format!(
            "duplicate key value violates unique constraint \"{}_pkey\": {} already exists",
            table.name,
            describe_key(table, row)
        ),
    )
}

/// Runs an `INSERT`/`UPSERT`.
pub async fn insert(txn: &mut dyn KvTxn, plan: InsertPlan) -> Result<ResultKind> {
    let table = &plan.table;
    // Compute the proposed rows.
    let mut proposed: Vec<(Vec<u8>, Vec<Value>)> = Vec::with_capacity(plan.rows.len());
    let mut seen: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for exprs in &plan.rows {
        let row = exprs.iter().map(|e| e.eval(&[])).collect::<Result<Vec<_>>>()?;
        check_not_null(table, &row)?;
        let key = table.encode_key(&row)?;
        if seen.contains_key(&key) {
            match plan.on_conflict {
                OnConflict::Error => return Err(duplicate(table, &row)),
                OnConflict::DoNothing => continue,
                OnConflict::Upsert | OnConflict::DoUpdate(_) => {
                    return Err(SqlError::new(
                        SqlState::CardinalityViolation,
                        format!(
                            "UPSERT / ON CONFLICT DO UPDATE command cannot affect row a second time ({}); make the \
                             rows' keys distinct",
                            describe_key(table, &row)
                        ),
                    ));
                }
            }
        }
        seen.insert(key.clone(), proposed.len());
        proposed.push((key, row));
    }

    // Resolve conflicts with existing rows and encode everything before the first write.
    let mut writes: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(proposed.len());
    for (key, row) in proposed {
        let existing = txn.get(&key).await?;
        let row = match (existing, &plan.on_conflict) {
            (None, _) => row,
            (Some(_), OnConflict::Error) => return Err(duplicate(table, &row)),
            (Some(_), OnConflict::DoNothing) => continue,
            (Some(old), OnConflict::Upsert) => {
                let mut merged = table.decode_row(&key, &old)?;
                for &col in &plan.targets {
                    merged[col] = row[col].clone();
                }
                merged
            }
            (Some(old), OnConflict::DoUpdate(assignments)) => {
                let old = table.decode_row(&key, &old)?;
                let mut both = old.clone();
                both.extend(row.iter().cloned());
                let mut merged = old;
                for (col, e) in assignments {
                    merged[*col] = e.eval(&both)?;
                }
                merged
            }
        };
        check_not_null(table, &row)?;
        let value = table.encode_value(&row)?;
        writes.push((key, value));
    }

    for (key, value) in &writes {
        txn.put(key, value).await?;
    }
    Ok(ResultKind::command(format!("INSERT 0 {}", writes.len())))
}

/// Reads the rows a mutation's scan and filter select (at most [`MUTATION_ROWS_MAX`]).
async fn matching_rows(
    txn: &mut dyn KvTxn,
    table: &TableSchema,
    scan: &ScanPlan,
    filter: Option<&Expr>,
    verb: &str,
) -> Result<Vec<(Vec<u8>, Vec<Value>)>> {
    let mut matched = Vec::new();
    for_each_row(txn, table, scan, None, |key, row| {
        if let Some(f) = filter
            && !f.is_true(&row)?
        {
            return Ok(Flow::More);
        }
        if matched.len() >= MUTATION_ROWS_MAX {
            return Err(SqlError::new(
                SqlState::ProgramLimitExceeded,
                format!(
                    "{verb} would change more than {MUTATION_ROWS_MAX} rows of table \"{}\" in one transaction; add a \
                     WHERE on the primary key and do it in batches",
                    table.name
                ),
            ));
        }
        matched.push((key, row));
        Ok(Flow::More)
    })
    .await?;
    Ok(matched)
}

/// Runs an `UPDATE`.
pub async fn update(txn: &mut dyn KvTxn, plan: UpdatePlan) -> Result<ResultKind> {
    let table = &plan.table;
    let matched = matching_rows(txn, table, &plan.scan, plan.filter.as_ref(), "UPDATE").await?;
    let moves_rows = plan.assignments.iter().any(|(col, _)| table.is_key_column(*col));

    // (old key, new key, new encoded row, new values)
    type Updated = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<Value>);
    let mut updated: Vec<Updated> = Vec::with_capacity(matched.len());
    for (old_key, old_row) in &matched {
        let mut row = old_row.clone();
        for (col, e) in &plan.assignments {
            row[*col] = e.eval(old_row)?;
        }
        check_not_null(table, &row)?;
        let new_key = if moves_rows { table.encode_key(&row)? } else { old_key.clone() };
        let value = table.encode_value(&row)?;
        updated.push((old_key.clone(), new_key, value, row));
    }

    if moves_rows {
        let old_keys: BTreeSet<&Vec<u8>> = updated.iter().map(|(old, ..)| old).collect();
        let mut new_keys: BTreeSet<&Vec<u8>> = BTreeSet::new();
        for (_, new_key, _, row) in &updated {
            if !new_keys.insert(new_key) {
                return Err(duplicate(table, row));
            }
            if !old_keys.contains(new_key) && txn.get(new_key).await?.is_some() {
                return Err(duplicate(table, row));
            }
        }
        for old in old_keys.iter().filter(|k| !new_keys.contains(**k)) {
            txn.delete(old).await?;
        }
    }
    for (_, new_key, value, _) in &updated {
        txn.put(new_key, value).await?;
    }
    Ok(ResultKind::command(format!("UPDATE {}", updated.len())))
}

/// Runs a `DELETE`.
pub async fn delete(txn: &mut dyn KvTxn, plan: DeletePlan) -> Result<ResultKind> {
    let matched = matching_rows(txn, &plan.table, &plan.scan, plan.filter.as_ref(), "DELETE").await?;
    for (key, _) in &matched {
        txn.delete(key).await?;
    }
    Ok(ResultKind::command(format!("DELETE {}", matched.len())))
}
