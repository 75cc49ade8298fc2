//! What the binder produces and the executor runs: one [`Plan`] per statement, with every name
//! resolved, every expression typed, and for reads the key spans to touch ([`ScanPlan`], built by
//! `scan.rs`).
//!
//! Row layouts the expressions index into:
//! - table statements: the table's columns in schema order;
//! - after aggregation: the `GROUP BY` values, then the aggregate results, in [`AggregatePlan`]
//!   order;
//! - `ON CONFLICT DO UPDATE`: the existing row, then the proposed (`excluded`) row.

use crate::catalog::TableSchema;
use crate::expr::Expr;
use crate::keys::pretty_key;
use crate::types::{Column, DataType};

/// A bound statement other than transaction control.
#[derive(Debug, Clone)]
pub enum Plan {
    /// `CREATE TABLE`: store this schema (its id is assigned at execution).
    CreateTable(TableSchema),
    /// `DROP TABLE`: drop these tables (those that exist; `IF EXISTS` skipped the others).
    DropTable(Vec<TableSchema>),
    /// `INSERT`/`UPSERT`.
    Insert(InsertPlan),
    /// `SELECT`.
    Select(SelectPlan),
    /// `UPDATE`.
    Update(UpdatePlan),
    /// `DELETE`.
    Delete(DeletePlan),
    /// `SHOW TABLES`.
    ShowTables,
    /// `SHOW COLUMNS FROM t`.
    ShowColumns(TableSchema),
    /// `EXPLAIN <statement>`.
    Explain(Box<Plan>),
    /// A statement with nothing to do; the tag to report (e.g. `CREATE TABLE … IF NOT EXISTS` of an
    /// existing table).
    Nothing(&'static str),
}

impl Plan {
    /// Whether running the plan writes.
    pub fn writes(&self) -> bool {
        matches!(self, Plan::CreateTable(_) | Plan::DropTable(_) | Plan::Insert(_) | Plan::Update(_) | Plan::Delete(_))
    }

    /// The statement's name for messages (`cannot execute INSERT in a read-only transaction`).
    pub fn verb(&self) -> &'static str {
        match self {
            Plan::CreateTable(_) => "CREATE TABLE",
            Plan::DropTable(_) => "DROP TABLE",
            Plan::Insert(_) => "INSERT",
            Plan::Select(_) => "SELECT",
            Plan::Update(_) => "UPDATE",
            Plan::Delete(_) => "DELETE",
            Plan::ShowTables | Plan::ShowColumns(_) => "SHOW",
            Plan::Explain(_) => "EXPLAIN",
            Plan::Nothing(tag) => tag,
        }
    }

    /// The result columns, for statements that return rows.
    pub fn columns(&self) -> Option<Vec<Column>> {
        let text = |name: &str| Column { name: name.to_string(), ty: DataType::Text };
        match self {
            Plan::Select(s) => Some(s.columns.clone()),
            Plan::ShowTables => Some(vec![text("table_name")]),
            Plan::ShowColumns(_) => Some(vec![
                text("column_name"),
                text("data_type"),
                Column { name: "nullable".into(), ty: DataType::Bool },
                Column { name: "primary_key".into(), ty: DataType::Int },
            ]),
            Plan::Explain(_) => Some(vec![text("plan")]),
            _ => None,
        }
    }

    /// Lines of `EXPLAIN` output.
    pub fn explain(&self) -> Vec<String> {
        let mut lines = vec![self.verb().to_string()];
        let scan = |table: &TableSchema, scan: &ScanPlan, filter: &Option<Expr>, lines: &mut Vec<String>| {
            lines.push(format!("table: {} (id {})", table.name, table.id));
            lines.extend(scan.describe());
            lines.push(format!("filter: {}", if filter.is_some() { "yes" } else { "no" }));
        };
        match self {
            Plan::Select(s) => {
                if let Some((table, plan)) = &s.source {
                    scan(table, plan, &s.filter, &mut lines);
                }
                if let Some(agg) = &s.aggregate {
                    lines.push(format!("aggregate: {} groups by, {} aggregates", agg.group_by.len(), agg.calls.len()));
                }
                if !s.order_by.is_empty() {
                    lines.push(if s.sorted_by_scan { "order: by key (no sort)".into() } else { "order: sort".into() });
                }
                if let Some(limit) = s.limit {
                    lines.push(format!("limit: {limit} offset {}", s.offset));
                }
            }
            Plan::Update(u) => scan(&u.table, &u.scan, &u.filter, &mut lines),
            Plan::Delete(d) => scan(&d.table, &d.scan, &d.filter, &mut lines),
            _ => {}
        }
        lines
    }
}

/// Which keys a statement reads: point lookups or spans, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanPlan {
    /// Exactly these full keys (`get` each). Empty: the WHERE can match nothing.
    Gets(Vec<Vec<u8>>),
    /// These `[start, end)` spans (empty end = unbounded), disjoint and in order.
    Spans(Vec<(Vec<u8>, Vec<u8>)>),
}

impl ScanPlan {
    /// Human-readable lines for `EXPLAIN`.
    pub fn describe(&self) -> Vec<String> {
        match self {
            ScanPlan::Gets(keys) if keys.is_empty() => vec!["scan: none (the WHERE matches no key)".into()],
            ScanPlan::Gets(keys) => keys.iter().map(|k| format!("get {}", pretty_key(k))).collect(),
            ScanPlan::Spans(spans) => {
                spans.iter().map(|(s, e)| format!("scan [{}, {})", pretty_key(s), pretty_key(e))).collect()
            }
        }
    }
}

/// `INSERT` and `UPSERT`.
#[derive(Debug, Clone)]
pub struct InsertPlan {
    /// The table.
    pub table: TableSchema,
    /// Rows to insert: one constant expression per column in schema order (NULL where not given),
    /// already converted to the column's type.
    pub rows: Vec<Vec<Expr>>,
    /// The columns the statement named (all when it named none).
    pub targets: Vec<usize>,
    /// What to do when a row's key exists.
    pub on_conflict: OnConflict,
}

/// What `INSERT` does with a row whose primary key exists.
#[derive(Debug, Clone)]
pub enum OnConflict {
    /// Fail the statement (`23505`).
    Error,
    /// `ON CONFLICT DO NOTHING`: skip the row.
    DoNothing,
    /// `UPSERT`: overwrite the named columns, keep the others.
    Upsert,
    /// `ON CONFLICT (key) DO UPDATE SET col = expr`: expressions over existing ++ excluded row.
    DoUpdate(Vec<(usize, Expr)>),
}

/// `SELECT`.
#[derive(Debug, Clone)]
pub struct SelectPlan {
    /// The table and what to read of it; `None` for `SELECT` without `FROM` (one empty row).
    pub source: Option<(TableSchema, ScanPlan)>,
    /// `WHERE`, over the table row.
    pub filter: Option<Expr>,
    /// Grouping and aggregates, if the query aggregates.
    pub aggregate: Option<AggregatePlan>,
    /// Output expressions, over the table row (or the aggregated row).
    pub projections: Vec<Expr>,
    /// Output columns.
    pub columns: Vec<Column>,
    /// `ORDER BY`, over the same row as `projections`.
    pub order_by: Vec<OrderKey>,
    /// The scan already returns rows in `ORDER BY` order (a primary-key prefix, ascending).
    pub sorted_by_scan: bool,
    /// `LIMIT`.
    pub limit: Option<u64>,
    /// `OFFSET`.
    pub offset: u64,
}

/// `GROUP BY`, aggregates and `HAVING`.
#[derive(Debug, Clone)]
pub struct AggregatePlan {
    /// Grouping expressions over the table row (none: one group over all rows).
    pub group_by: Vec<Expr>,
    /// Aggregate calls, over the table row.
    pub calls: Vec<AggCall>,
    /// `HAVING`, over the aggregated row.
    pub having: Option<Expr>,
}

/// Aggregate functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    /// `COUNT(*)`
    CountStar,
    /// `COUNT(x)`: non-NULL values.
    Count,
    /// `SUM(x)`
    Sum,
    /// `MIN(x)`
    Min,
    /// `MAX(x)`
    Max,
    /// `AVG(x)`
    Avg,
}

/// One aggregate call.
#[derive(Debug, Clone, PartialEq)]
pub struct AggCall {
    /// The function.
    pub func: AggFunc,
    /// Its argument (none for `COUNT(*)`).
    pub arg: Option<Expr>,
    /// The argument's type (for `SUM`'s result type).
    pub arg_ty: Option<DataType>,
}

/// One `ORDER BY` key.
#[derive(Debug, Clone)]
pub struct OrderKey {
    /// What to sort by.
    pub expr: Expr,
    /// `DESC`.
    pub desc: bool,
    /// Whether NULLs come first (default: last for ASC, first for DESC, as in PostgreSQL).
    pub nulls_first: bool,
}

/// `UPDATE`.
#[derive(Debug, Clone)]
pub struct UpdatePlan {
    /// The table.
    pub table: TableSchema,
    /// The keys to read.
    pub scan: ScanPlan,
    /// `WHERE`, over the table row.
    pub filter: Option<Expr>,
    /// `SET column = expression` over the old row, converted to the column's type.
    pub assignments: Vec<(usize, Expr)>,
}

/// `DELETE`.
#[derive(Debug, Clone)]
pub struct DeletePlan {
    /// The table.
    pub table: TableSchema,
    /// The keys to read.
    pub scan: ScanPlan,
    /// `WHERE`, over the table row.
    pub filter: Option<Expr>,
}
