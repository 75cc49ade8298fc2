//! Running `SELECT`: scan → filter → (group and aggregate → having) → project → sort → offset/limit.
//!
//! Groups are kept in a `BTreeMap` ordered by the SQL sort order of their key, so output without
//! `ORDER BY` is deterministic (by group key; for plain queries, by primary key).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::{Flow, for_each_row};
use crate::error::{Result, SqlError, SqlState};
use crate::expr::Expr;
use crate::kv::KvTxn;
use crate::numeric::Numeric;
use crate::plan::{AggCall, AggFunc, AggregatePlan, OrderKey, SelectPlan};
use crate::result::ResultKind;
use crate::types::{DataType, Value};

/// A row on its way out: its sort keys and its projected values.
type OutRow = (Vec<Value>, Vec<Value>);

/// Runs a `SELECT`.
pub async fn run(txn: &mut dyn KvTxn, plan: SelectPlan) -> Result<ResultKind> {
    let wanted = plan.limit.map(|l| l.saturating_add(plan.offset));
    let early_stop = plan.aggregate.is_none() && (plan.order_by.is_empty() || plan.sorted_by_scan);
    let mut out: Vec<OutRow> = Vec::new();
    let mut groups: BTreeMap<GroupKey, Vec<Acc>> = BTreeMap::new();

    let mut visit = |row: Vec<Value>| -> Result<Flow> {
        if let Some(filter) = &plan.filter
            && !filter.is_true(&row)?
        {
            return Ok(Flow::More);
        }
        match &plan.aggregate {
            Some(agg) => {
                let key = GroupKey(agg.group_by.iter().map(|g| g.eval(&row)).collect::<Result<_>>()?);
                let accs = groups.entry(key).or_insert_with(|| agg.calls.iter().map(Acc::new).collect());
                for (acc, call) in accs.iter_mut().zip(&agg.calls) {
                    acc.add(call, &row)?;
                }
            }
            None => out.push(project(&plan.projections, &plan.order_by, &row)?),
        }
        let enough = early_stop && wanted.is_some_and(|w| out.len() as u64 >= w);
        Ok(if enough { Flow::Stop } else { Flow::More })
    };

    if wanted != Some(0) || plan.aggregate.is_some() {
        match &plan.source {
            None => {
                visit(Vec::new())?;
            }
            Some((table, scan)) => {
                let first_batch =
                    if early_stop { wanted.map(|w| usize::try_from(w).unwrap_or(usize::MAX)) } else { None };
                for_each_row(txn, table, scan, first_batch, |_, row| visit(row)).await?;
            }
        }
    }

    if let Some(agg) = &plan.aggregate {
        if agg.group_by.is_empty() && groups.is_empty() {
            // Aggregates over no rows still produce one row (COUNT(*) = 0, SUM = NULL).
            groups.insert(GroupKey(Vec::new()), agg.calls.iter().map(Acc::new).collect());
        }
        out = finish_groups(agg, groups, &plan)?;
    }

    if !plan.order_by.is_empty() && !plan.sorted_by_scan {
        out.sort_by(|a, b| compare_keys(&plan.order_by, &a.0, &b.0));
    }
    let offset = usize::try_from(plan.offset).unwrap_or(usize::MAX);
    let limit = plan.limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let rows = out.into_iter().skip(offset).take(limit).map(|(_, values)| values).collect();
    Ok(ResultKind::Rows { columns: plan.columns, rows })
}

fn project(projections: &[Expr], order_by: &[OrderKey], row: &[Value]) -> Result<OutRow> {
    let values = projections.iter().map(|p| p.eval(row)).collect::<Result<Vec<_>>>()?;
    let keys = order_by.iter().map(|k| k.expr.eval(row)).collect::<Result<Vec<_>>>()?;
    Ok((keys, values))
}

fn finish_groups(agg: &AggregatePlan, groups: BTreeMap<GroupKey, Vec<Acc>>, plan: &SelectPlan) -> Result<Vec<OutRow>> {
    let mut out = Vec::with_capacity(groups.len());
    for (key, accs) in groups {
        let mut row = key.0;
        for acc in accs {
            row.push(acc.finish()?);
        }
        if let Some(having) = &agg.having
            && !having.is_true(&row)?
        {
            continue;
        }
        out.push(project(&plan.projections, &plan.order_by, &row)?);
    }
    Ok(out)
}

fn compare_keys(order: &[OrderKey], a: &[Value], b: &[Value]) -> Ordering {
    for (k, (x, y)) in order.iter().zip(a.iter().zip(b)) {
        let ord = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => {
                if k.nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (false, true) => {
                if k.nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (false, false) => {
                let ord = x.sort_cmp(y);
                if k.desc { ord.reverse() } else { ord }
            }
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// A group's key, ordered by SQL sort order (NULLs group together, last).
#[derive(Debug)]
struct GroupKey(Vec<Value>);

impl PartialEq for GroupKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for GroupKey {}

impl PartialOrd for GroupKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for GroupKey {
    fn cmp(&self, other: &Self) -> Ordering {
        for (a, b) in self.0.iter().zip(&other.0) {
            match a.sort_cmp(b) {
                Ordering::Equal => continue,
                ord => return ord,
            }
        }
        self.0.len().cmp(&other.0.len())
    }
}

/// An aggregate's running state.
#[derive(Debug)]
enum Acc {
    Count(i64),
    SumInt(Option<i64>),
    SumFloat(Option<f64>),
    Min(Option<Value>),
    Max(Option<Value>),
    /// AVG of floats: their sum and count.
    AvgFloat(f64, i64),
    /// AVG of integers: their exact sum and count (a NUMERIC at the end).
    AvgInt(i128, i64),
}

impl Acc {
    fn new(call: &AggCall) -> Acc {
        match call.func {
            AggFunc::CountStar | AggFunc::Count => Acc::Count(0),
            AggFunc::Sum if call.arg_ty == Some(DataType::Float) => Acc::SumFloat(None),
            AggFunc::Sum => Acc::SumInt(None),
            AggFunc::Min => Acc::Min(None),
            AggFunc::Max => Acc::Max(None),
            AggFunc::Avg if call.arg_ty == Some(DataType::Float) => Acc::AvgFloat(0.0, 0),
            AggFunc::Avg => Acc::AvgInt(0, 0),
        }
    }

    fn add(&mut self, call: &AggCall, row: &[Value]) -> Result<()> {
        let value = match &call.arg {
            None => {
                if let Acc::Count(n) = self {
                    *n += 1;
                }
                return Ok(());
            }
            Some(arg) => arg.eval(row)?,
        };
        if value.is_null() {
            return Ok(());
        }
        match (self, value) {
            (Acc::Count(n), _) => *n += 1,
            (Acc::SumInt(sum), Value::Int(i)) => {
                *sum =
                    Some(sum.unwrap_or(0).checked_add(i).ok_or_else(|| {
                        SqlError::new(SqlState::NumericValueOutOfRange, "integer out of range in SUM")
                    })?)
            }
            (Acc::SumFloat(sum), Value::Float(f)) => *sum = Some(sum.unwrap_or(0.0) + f),
            (Acc::SumFloat(sum), Value::Int(i)) => *sum = Some(sum.unwrap_or(0.0) + i as f64),
            (Acc::Min(best), v) => {
                if best.as_ref().is_none_or(|b| v.sort_cmp(b) == Ordering::Less) {
                    *best = Some(v);
                }
            }
            (Acc::Max(best), v) => {
                if best.as_ref().is_none_or(|b| v.sort_cmp(b) == Ordering::Greater) {
                    *best = Some(v);
                }
            }
            (Acc::AvgInt(sum, n), Value::Int(i)) => {
                // |sum| < 2^63 · ROWS_SCANNED_MAX, far inside i128.
                *sum += i128::from(i);
                *n += 1;
            }
            (Acc::AvgFloat(sum, n), Value::Int(i)) => {
                *sum += i as f64;
                *n += 1;
            }
            (Acc::AvgFloat(sum, n), Value::Float(f)) => {
                *sum += f;
                *n += 1;
            }
            (acc, v) => return Err(SqlError::internal(format!("aggregate {acc:?} fed {}", v.literal()))),
        }
        Ok(())
    }

    fn finish(self) -> Result<Value> {
        Ok(match self {
            Acc::Count(n) => Value::Int(n),
            Acc::SumInt(s) => s.map_or(Value::Null, Value::Int),
            Acc::SumFloat(s) => s.map_or(Value::Null, Value::Float),
            Acc::Min(v) | Acc::Max(v) => v.unwrap_or(Value::Null),
            Acc::AvgFloat(_, 0) | Acc::AvgInt(_, 0) => Value::Null,
            Acc::AvgFloat(sum, n) => Value::Float(sum / n as f64),
            Acc::AvgInt(sum, n) => Value::Numeric(Numeric::avg(sum, n)?),
        })
    }
}
