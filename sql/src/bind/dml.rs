//! Binding `INSERT`/`UPSERT`, `UPDATE` and `DELETE`.
//!
//! - `INSERT INTO t [(cols)] VALUES (…), …` — values are constant expressions (literals,
//!   parameters, arithmetic on them); columns not named are NULL. `ON CONFLICT DO NOTHING` and
//!   `ON CONFLICT (primary key) DO UPDATE SET col = expr` (with `excluded.col`) are supported.
//! - `UPSERT INTO t …` (CockroachDB): a row whose key exists has the named columns overwritten and
//!   keeps its other columns.
//! - `UPDATE t SET col = expr, … [WHERE …]` — expressions over the old row; primary-key columns may
//!   be set (the row moves: delete + insert, checked for collisions).
//! - `DELETE FROM t [WHERE …]`.
//!
//! Left out, each rejected by name: `INSERT … SELECT`, `DEFAULT`/`DEFAULT VALUES`, `RETURNING`,
//! `UPDATE … FROM`, `DELETE … USING`, `ORDER BY`/`LIMIT` on `UPDATE`/`DELETE`.

use sqlparser::ast::{self, Expr as Ast};

use super::expr::{ExprBinder, Scope, assign};
use super::select::template;
use super::{Params, Tables, ident, table_name};
use crate::bounds::Depth;
use crate::catalog::TableSchema;
use crate::error::{Result, SqlError, SqlState};
use crate::expr::Expr;
use crate::plan::{DeletePlan, InsertPlan, OnConflict, UpdatePlan};
use crate::scan::plan_scan;
use crate::types::Value;

/// Most rows in one `INSERT … VALUES`.
pub const INSERT_ROWS_MAX: usize = 100_000;

/// Binds `INSERT`/`UPSERT`.
pub fn bind_insert(i: &ast::Insert, upsert: bool, tables: &Tables, params: &mut Params) -> Result<InsertPlan> {
    if i.returning.is_some() {
        return Err(SqlError::unsupported("RETURNING"));
    }
    let ast::Statement::Insert(tmpl) = template("INSERT INTO t VALUES (1)") else {
        panic!("invariant: the INSERT template parses as an INSERT");
    };
    // The binder essay's catch-all, field by field rather than on a clone (its rows can be deep
    // and many, see `bounds.rs`); the pattern names every field, so a new one fails to compile.
    let ast::Insert {
        insert_token: _,
        optimizer_hints,
        or,
        ignore,
        into,
        table: _,
        table_alias: _,
        columns: _,
        by_name,
        overwrite,
        source: _,
        assignments,
        partitioned,
        after_columns,
        overriding,
        has_table_keyword,
        on: _,
        returning: _,
        output,
        replace_into,
        priority,
        insert_alias,
        settings,
        format_clause,
        multi_table_insert_type,
        multi_table_into_clauses,
        multi_table_when_clauses,
        multi_table_else_clause,
    } = i;
    let t = &tmpl;
    let same = (optimizer_hints, or, ignore, into, by_name, overwrite, assignments, partitioned, after_columns)
        == (
            &t.optimizer_hints,
            &t.or,
            &t.ignore,
            &t.into,
            &t.by_name,
            &t.overwrite,
            &t.assignments,
            &t.partitioned,
            &t.after_columns,
        )
        && (overriding, has_table_keyword, output, replace_into, priority, insert_alias, settings, format_clause)
            == (
                &t.overriding,
                &t.has_table_keyword,
                &t.output,
                &t.replace_into,
                &t.priority,
                &t.insert_alias,
                &t.settings,
                &t.format_clause,
            )
        && (multi_table_insert_type, multi_table_into_clauses, multi_table_when_clauses, multi_table_else_clause)
            == (
                &t.multi_table_insert_type,
                &t.multi_table_into_clauses,
                &t.multi_table_when_clauses,
                &t.multi_table_else_clause,
            );
    if !same {
        return Err(SqlError::unsupported(format!("this form of INSERT ({i})")));
    }
    let ast::TableObject::TableName(name) = &i.table else {
        return Err(SqlError::unsupported("INSERT into a table function"));
    };
    let table = tables.get(&table_name(name)?)?;
    let alias = i.table_alias.as_ref().map(|a| ident(&a.alias)).transpose()?;

    let targets: Vec<usize> = if i.columns.is_empty() {
        (0..table.columns.len()).collect()
    } else {
        let mut targets = Vec::with_capacity(i.columns.len());
        for c in &i.columns {
            let [ast::ObjectNamePart::Identifier(id)] = c.0.as_slice() else {
                return Err(SqlError::unsupported(format!("INSERT target column {c}")));
            };
            let col = column_of(table, &ident(id)?)?;
            if targets.contains(&col) {
                return Err(SqlError::syntax(
                    format!("column \"{}\" specified more than once", table.columns[col].name),
                    None,
                ));
            }
            targets.push(col);
        }
        targets
    };

    let source = i.source.as_ref().ok_or_else(|| SqlError::unsupported("INSERT … DEFAULT VALUES"))?;
    let values = match source.body.as_ref() {
        ast::SetExpr::Values(v) if source.order_by.is_none() && source.limit_clause.is_none() => v,
        ast::SetExpr::Values(_) => return Err(SqlError::unsupported("ORDER BY/LIMIT on VALUES")),
        _ => return Err(SqlError::unsupported("INSERT … SELECT (write INSERT … VALUES)")),
    };
    if values.rows.len() > INSERT_ROWS_MAX {
        return Err(SqlError::new(
            SqlState::ProgramLimitExceeded,
            format!("INSERT has {} rows; the limit is {INSERT_ROWS_MAX} per statement", values.rows.len()),
        ));
    }
    let scope = Scope::empty();
    let mut rows = Vec::with_capacity(values.rows.len());
    for row in &values.rows {
        if row.len() > targets.len() {
            return Err(SqlError::syntax("INSERT has more expressions than target columns", None));
        }
        if row.len() < targets.len() {
            return Err(SqlError::syntax("INSERT has more target columns than expressions", None));
        }
        let mut full = vec![Expr::Const(Value::Null); table.columns.len()];
        for (e, &col) in row.iter().zip(&targets) {
            let column = &table.columns[col];
            if is_default(e) {
                return Err(SqlError::unsupported("DEFAULT (columns have no defaults; omit the column for NULL)"));
            }
            let t = ExprBinder { scope: &scope, params, agg: None, clause: "VALUES", depth: Depth::default() }
                .bind(e, Some(column.ty))?;
            full[col] = assign(t, column.ty, &column.name)?;
        }
        rows.push(full);
    }

    let on_conflict = match (&i.on, upsert) {
        (None, false) => OnConflict::Error,
        (None, true) => OnConflict::Upsert,
        (Some(_), true) => return Err(SqlError::unsupported("UPSERT … ON CONFLICT")),
        (Some(ast::OnInsert::OnConflict(oc)), false) => bind_on_conflict(oc, table, alias, params)?,
        (Some(_), false) => return Err(SqlError::unsupported("ON DUPLICATE KEY UPDATE (write ON CONFLICT)")),
    };
    Ok(InsertPlan { table: table.clone(), rows, targets, on_conflict })
}

fn is_default(e: &Ast) -> bool {
    matches!(e, Ast::Identifier(id) if id.quote_style.is_none() && id.value.eq_ignore_ascii_case("default"))
}

fn bind_on_conflict(
    oc: &ast::OnConflict,
    table: &TableSchema,
    alias: Option<String>,
    params: &mut Params,
) -> Result<OnConflict> {
    match &oc.conflict_target {
        None => {}
        Some(ast::ConflictTarget::Columns { columns, predicate: None }) => {
            let mut cols = columns.iter().map(|c| column_of(table, &ident(c)?)).collect::<Result<Vec<_>>>()?;
            cols.sort_unstable();
            let mut key = table.primary_key.clone();
            key.sort_unstable();
            if cols != key {
                return Err(SqlError::new(
                    SqlState::InvalidColumnReference,
                    "there is no unique constraint matching the ON CONFLICT specification (name the primary-key \
                     columns)",
                ));
            }
        }
        Some(_) => {
            return Err(SqlError::unsupported("ON CONFLICT ON CONSTRAINT / WHERE (name the primary-key columns)"));
        }
    }
    match &oc.action {
        ast::OnConflictAction::DoNothing => Ok(OnConflict::DoNothing),
        ast::OnConflictAction::DoUpdate(_) if oc.conflict_target.is_none() => Err(SqlError::syntax(
            "ON CONFLICT DO UPDATE requires inference specification: name the primary-key columns",
            None,
        )),
        ast::OnConflictAction::DoUpdate(du) => {
            if du.selection.is_some() {
                return Err(SqlError::unsupported("ON CONFLICT DO UPDATE … WHERE"));
            }
            let scope = Scope::with_excluded(table, alias);
            let assignments = bind_assignments(&du.assignments, table, &scope, params)?;
            if let Some((col, _)) = assignments.iter().find(|(c, _)| table.is_key_column(*c)) {
                return Err(SqlError::unsupported(format!(
                    "ON CONFLICT DO UPDATE of primary-key column \"{}\"",
                    table.columns[*col].name
                )));
            }
            Ok(OnConflict::DoUpdate(assignments))
        }
    }
}

fn column_of(table: &TableSchema, name: &str) -> Result<usize> {
    table.column_index(name).ok_or_else(|| {
        SqlError::new(
            SqlState::UndefinedColumn,
            format!("column \"{name}\" does not exist in table \"{}\"", table.name),
        )
    })
}

fn bind_assignments(
    assignments: &[ast::Assignment],
    table: &TableSchema,
    scope: &Scope,
    params: &mut Params,
) -> Result<Vec<(usize, Expr)>> {
    let mut out: Vec<(usize, Expr)> = Vec::with_capacity(assignments.len());
    for a in assignments {
        let ast::AssignmentTarget::ColumnName(name) = &a.target else {
            return Err(SqlError::unsupported("SET (a, b) = (…)"));
        };
        let id = match name.0.as_slice() {
            [ast::ObjectNamePart::Identifier(id)] => id,
            _ => return Err(SqlError::unsupported(format!("SET of qualified column {name}"))),
        };
        let col = column_of(table, &ident(id)?)?;
        if out.iter().any(|(c, _)| *c == col) {
            return Err(SqlError::syntax(
                format!("multiple assignments to same column \"{}\"", table.columns[col].name),
                None,
            ));
        }
        let column = &table.columns[col];
        if is_default(&a.value) {
            return Err(SqlError::unsupported("SET col = DEFAULT (columns have no defaults)"));
        }
        let t = ExprBinder { scope, params, agg: None, clause: "SET", depth: Depth::default() }
            .bind(&a.value, Some(column.ty))?;
        out.push((col, assign(t, column.ty, &column.name)?));
    }
    Ok(out)
}

/// The single table of an `UPDATE`/`DELETE`, with its alias.
fn target_table<'t>(
    t: &ast::TableWithJoins,
    tables: &'t Tables,
    verb: &str,
) -> Result<(&'t TableSchema, Option<String>)> {
    if !t.joins.is_empty() {
        return Err(SqlError::unsupported(format!("JOIN in {verb}")));
    }
    match &t.relation {
        ast::TableFactor::Table { name, alias, args: None, with_hints, version: None, partitions, .. }
            if with_hints.is_empty() && partitions.is_empty() =>
        {
            let alias = match alias {
                None => None,
                Some(a) if a.columns.is_empty() => Some(ident(&a.name)?),
                Some(_) => return Err(SqlError::unsupported("column aliases")),
            };
            Ok((tables.get(&table_name(name)?)?, alias))
        }
        other => Err(SqlError::unsupported(format!("{verb} of {other}"))),
    }
}

/// Binds `UPDATE`.
pub fn bind_update(u: &ast::Update, tables: &Tables, params: &mut Params) -> Result<UpdatePlan> {
    if u.from.is_some() {
        return Err(SqlError::unsupported("UPDATE … FROM"));
    }
    if u.returning.is_some() || u.output.is_some() {
        return Err(SqlError::unsupported("RETURNING"));
    }
    if !u.order_by.is_empty() || u.limit.is_some() {
        return Err(SqlError::unsupported("ORDER BY/LIMIT in UPDATE"));
    }
    if u.or.is_some() || u.on_cluster.is_some() || u.settings.is_some() || !u.optimizer_hints.is_empty() {
        return Err(SqlError::unsupported(format!("this form of UPDATE ({u})")));
    }
    let (table, alias) = target_table(&u.table, tables, "UPDATE")?;
    let scope = Scope::table(table, alias);
    let assignments = bind_assignments(&u.assignments, table, &scope, params)?;
    let filter = match &u.selection {
        None => None,
        Some(w) => Some(
            ExprBinder { scope: &scope, params, agg: None, clause: "WHERE", depth: Depth::default() }.predicate(w)?,
        ),
    };
    Ok(UpdatePlan { table: table.clone(), scan: plan_scan(table, filter.as_ref()), filter, assignments })
}

/// Binds `DELETE`.
pub fn bind_delete(d: &ast::Delete, tables: &Tables, params: &mut Params) -> Result<DeletePlan> {
    if d.returning.is_some() || d.output.is_some() {
        return Err(SqlError::unsupported("RETURNING"));
    }
    if d.using.is_some() || !d.tables.is_empty() {
        return Err(SqlError::unsupported("DELETE … USING / multi-table DELETE"));
    }
    if !d.order_by.is_empty() || d.limit.is_some() {
        return Err(SqlError::unsupported("ORDER BY/LIMIT in DELETE"));
    }
    if d.on_cluster.is_some() || d.settings.is_some() || !d.optimizer_hints.is_empty() {
        return Err(SqlError::unsupported(format!("this form of DELETE ({d})")));
    }
    let (ast::FromTable::WithFromKeyword(from) | ast::FromTable::WithoutKeyword(from)) = &d.from;
    let [t] = from.as_slice() else {
        return Err(SqlError::unsupported("DELETE from several tables"));
    };
    let (table, alias) = target_table(t, tables, "DELETE")?;
    let scope = Scope::table(table, alias);
    let filter = match &d.selection {
        None => None,
        Some(w) => Some(
            ExprBinder { scope: &scope, params, agg: None, clause: "WHERE", depth: Depth::default() }.predicate(w)?,
        ),
    };
    Ok(DeletePlan { table: table.clone(), scan: plan_scan(table, filter.as_ref()), filter })
}
