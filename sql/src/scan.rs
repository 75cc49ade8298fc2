//! The key-range planner: from a `WHERE` clause to the narrowest set of keys or spans to read.
//!
//! Rows are stored in primary-key order (`keys.rs`), so a predicate that fixes a prefix of the key
//! columns selects one contiguous span. The planner looks only at the top-level `AND` conjuncts of
//! the filter and, for each key column in key order, collects:
//! - equalities with constants, `col = c` and `col IN (c1, c2, …)` → a set of values;
//! - bounds, `col < c`, `col <= c`, `col > c`, `col >= c` (and `BETWEEN`, which the binder splits).
//!
//! ```text
//!   PRIMARY KEY (a, b, c)
//!   a = 1 AND b IN (2, 3)        → spans [/1/2, end(/1/2)) and [/1/3, end(/1/3))
//!   a = 1 AND b = 2 AND c = 3    → get /1/2/3
//!   a = 1 AND b > 5              → span  [end(/1/5), end(/1))
//!   a >= 10                      → span  [/10, end(table))
//!   b = 2                        → the whole table (b is not a key prefix)
//! ```
//!
//! Key columns with an equality extend the prefix (a cross product over `IN` lists, at most
//! [`SCAN_POINTS_MAX`] prefixes; beyond it the planner stops extending and scans wider). The first
//! key column without an equality may contribute a range; later columns are not used. When every
//! key column is fixed the plan is point lookups. A constant NULL in any of these conjuncts, or
//! disjoint bounds, mean nothing can match and nothing is read.
//!
//! The plan only narrows what is *read*: the executor still evaluates the whole `WHERE` on every
//! row, so the planner may be conservative but never has to be exact. Left out: `OR` of key
//! ranges, reverse scans for `ORDER BY … DESC`, and secondary indexes.

use std::cmp::Ordering;

use crate::catalog::TableSchema;
use crate::encoding::key as keycode;
use crate::expr::{CmpOp, Expr};
use crate::keys::{self, prefix_end};
use crate::plan::ScanPlan;
use crate::types::{DataType, Value};

/// Most key prefixes (point lookups or spans) an `IN`-list cross product may expand to.
pub const SCAN_POINTS_MAX: usize = 1024;

/// What the conjuncts say about one key column.
#[derive(Debug, Default)]
struct ColumnConstraint {
    /// Values the column must equal (intersection of all equalities); `None` = unconstrained.
    equal: Option<Vec<Value>>,
    lower: Option<(Value, bool)>,
    upper: Option<(Value, bool)>,
    /// A conjunct compares the column with NULL: nothing matches.
    impossible: bool,
}

/// Plans the keys to read of `table` for a statement with `filter`.
pub fn plan_scan(table: &TableSchema, filter: Option<&Expr>) -> ScanPlan {
    let mut conjuncts = Vec::new();
    if let Some(f) = filter {
        split_and(f, &mut conjuncts);
    }
    let mut constraints: Vec<ColumnConstraint> =
        table.primary_key.iter().map(|_| ColumnConstraint::default()).collect();
    for conjunct in &conjuncts {
        if conjunct_is_false(conjunct) {
            return ScanPlan::Gets(Vec::new());
        }
        for (pos, &col) in table.primary_key.iter().enumerate() {
            constrain(&mut constraints[pos], conjunct, col, table.columns[col].ty);
        }
    }

    let mut prefixes = vec![keys::table_prefix(table.id)];
    for (pos, c) in constraints.iter().enumerate() {
        if c.impossible {
            return ScanPlan::Gets(Vec::new());
        }
        let Some(values) = &c.equal else {
            return ScanPlan::Spans(range_spans(&prefixes, c));
        };
        let values: Vec<&Value> = values.iter().filter(|v| within(v, &c.lower, &c.upper)).collect();
        if values.is_empty() {
            return ScanPlan::Gets(Vec::new());
        }
        if prefixes.len() * values.len() > SCAN_POINTS_MAX {
            // Too many combinations: scan each current prefix whole instead.
            return ScanPlan::Spans(prefixes.iter().map(|p| (p.clone(), prefix_end(p))).collect());
        }
        prefixes = prefixes
            .iter()
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut key = p.clone();
                    keycode::encode(&mut key, v);
                    key
                })
            })
            .collect();
        prefixes.sort();
        prefixes.dedup();
        if pos + 1 == constraints.len() {
            return ScanPlan::Gets(prefixes);
        }
    }
    unreachable!("invariant: a table has at least one primary-key column, and the loop returns at the last")
}

fn split_and<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::And(a, b) => {
            split_and(a, out);
            split_and(b, out);
        }
        other => out.push(other),
    }
}

/// A constant conjunct that is not TRUE (e.g. `WHERE false`, `WHERE NULL`) matches nothing.
fn conjunct_is_false(e: &Expr) -> bool {
    e.is_constant() && matches!(e.eval(&[]), Ok(Value::Bool(false) | Value::Null))
}

/// The constant `e` as a value of the key column's type, if it is one.
fn constant_for(e: &Expr, ty: DataType) -> Option<Value> {
    if !e.is_constant() {
        return None;
    }
    match (e.eval(&[]).ok()?, ty) {
        (Value::Null, _) => Some(Value::Null),
        (Value::Int(i), DataType::Float) => Some(Value::Float(i as f64)),
        (v, ty) if v.data_type() == Some(ty) => Some(v),
        _ => None,
    }
}

fn constrain(c: &mut ColumnConstraint, conjunct: &Expr, col: usize, ty: DataType) {
    match conjunct {
        Expr::Cmp(op, a, b) => {
            let (op, other) = match (a.as_ref(), b.as_ref()) {
                (Expr::Column(i), other) if *i == col => (*op, other),
                (other, Expr::Column(i)) if *i == col => (op.flip(), other),
                _ => return,
            };
            let Some(value) = constant_for(other, ty) else { return };
            if value.is_null() {
                c.impossible = true;
                return;
            }
            match op {
                CmpOp::Eq => intersect(c, vec![value]),
                CmpOp::NotEq => {}
                CmpOp::Lt => tighten(&mut c.upper, value, false, Ordering::Less),
                CmpOp::LtEq => tighten(&mut c.upper, value, true, Ordering::Less),
                CmpOp::Gt => tighten(&mut c.lower, value, false, Ordering::Greater),
                CmpOp::GtEq => tighten(&mut c.lower, value, true, Ordering::Greater),
            }
        }
        Expr::InList(e, list, false) if matches!(e.as_ref(), Expr::Column(i) if *i == col) => {
            let mut values = Vec::new();
            for item in list {
                match constant_for(item, ty) {
                    Some(Value::Null) => {}
                    Some(v) => values.push(v),
                    None => return,
                }
            }
            intersect(c, values);
        }
        _ => {}
    }
}

fn intersect(c: &mut ColumnConstraint, mut values: Vec<Value>) {
    values.sort_by(Value::sort_cmp);
    values.dedup_by(|a, b| a.sort_cmp(b) == Ordering::Equal);
    c.equal = Some(match c.equal.take() {
        None => values,
        Some(old) => old.into_iter().filter(|v| values.iter().any(|w| v.sort_cmp(w) == Ordering::Equal)).collect(),
    });
}

/// Keeps the tighter of the current bound and `(value, inclusive)`; `tighter` is the ordering a
/// tighter bound has relative to a looser one (Less for upper bounds, Greater for lower).
fn tighten(bound: &mut Option<(Value, bool)>, value: Value, inclusive: bool, tighter: Ordering) {
    let replace = match bound {
        None => true,
        Some((old, old_inclusive)) => match value.sort_cmp(old) {
            Ordering::Equal => *old_inclusive && !inclusive,
            ord => ord == tighter,
        },
    };
    if replace {
        *bound = Some((value, inclusive));
    }
}

fn within(v: &Value, lower: &Option<(Value, bool)>, upper: &Option<(Value, bool)>) -> bool {
    let lower_ok = lower.as_ref().is_none_or(|(lo, inc)| match v.sort_cmp(lo) {
        Ordering::Greater => true,
        Ordering::Equal => *inc,
        Ordering::Less => false,
    });
    let upper_ok = upper.as_ref().is_none_or(|(hi, inc)| match v.sort_cmp(hi) {
        Ordering::Less => true,
        Ordering::Equal => *inc,
        Ordering::Greater => false,
    });
    lower_ok && upper_ok
}

/// One span per prefix, narrowed by the column's bounds; empty spans are dropped.
fn range_spans(prefixes: &[Vec<u8>], c: &ColumnConstraint) -> Vec<(Vec<u8>, Vec<u8>)> {
    let with = |p: &Vec<u8>, v: &Value| {
        let mut key = p.clone();
        keycode::encode(&mut key, v);
        key
    };
    prefixes
        .iter()
        .map(|p| {
            let start = match &c.lower {
                None => p.clone(),
                Some((v, true)) => with(p, v),
                Some((v, false)) => prefix_end(&with(p, v)),
            };
            let end = match &c.upper {
                None => prefix_end(p),
                Some((v, true)) => prefix_end(&with(p, v)),
                Some((v, false)) => with(p, v),
            };
            (start, end)
        })
        .filter(|(start, end)| end.is_empty() || start < end)
        .collect()
}
