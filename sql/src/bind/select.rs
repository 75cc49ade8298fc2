//! Binding `SELECT`: one table (or none), `WHERE`, `GROUP BY`/`HAVING` with `COUNT`/`SUM`/`MIN`/
//! `MAX`/`AVG`, `ORDER BY` (expressions, output names, positions), `LIMIT`/`OFFSET`.
//!
//! A query aggregates when it has `GROUP BY` or `HAVING`, or an aggregate call anywhere in its
//! select list or `ORDER BY`; then every column reference outside an aggregate must match a
//! `GROUP BY` expression (PostgreSQL's rule, `42803`).

use std::borrow::Cow;

use sqlparser::ast::{self, Expr as Ast, SelectItem};

use super::expr::{AggCtx, ExprBinder, Scope, Typed};
use super::{Params, Tables, ident, table_name};
use crate::bounds::Depth;
use crate::error::{Result, SqlError, SqlState};
use crate::expr::Expr;
use crate::plan::{AggregatePlan, OrderKey, SelectPlan};
use crate::scan::plan_scan;
use crate::types::{Column, DataType, Value};

/// Whether `name` (lower case) is an aggregate function.
pub fn is_aggregate_name(name: &str) -> bool {
    matches!(name, "count" | "sum" | "min" | "max" | "avg")
}

/// Parses a minimal statement to compare unsupported clauses against (see the binder essay).
pub(super) fn template(sql: &str) -> ast::Statement {
    crate::parse::parse(sql).expect("invariant: template statements parse").remove(0).stmt
}

fn template_query() -> ast::Query {
    match template("SELECT 1 FROM t") {
        ast::Statement::Query(q) => *q,
        other => panic!("invariant: a SELECT parses as a query, got {other:?}"),
    }
}

fn template_select(q: &ast::Query) -> &ast::Select {
    match q.body.as_ref() {
        ast::SetExpr::Select(s) => s,
        other => panic!("invariant: the template is a plain SELECT, got {other:?}"),
    }
}

/// Binds a query.
pub fn bind_query(q: &ast::Query, tables: &Tables, params: &mut Params) -> Result<SelectPlan> {
    if q.with.is_some() {
        return Err(SqlError::unsupported("WITH (common table expressions)"));
    }
    if q.fetch.is_some() {
        return Err(SqlError::unsupported("FETCH (write LIMIT)"));
    }
    if !q.locks.is_empty() {
        return Err(SqlError::unsupported("SELECT … FOR UPDATE/SHARE (read-write transactions lock what they read)"));
    }
    let tq = template_query();
    // The binder essay's catch-all, field by field rather than on a clone: the fields the binder
    // reads can be deep, and a clone of them would recurse once per level (see `bounds.rs`). The
    // pattern names every field, so a new one in `sqlparser` fails to compile until it is checked.
    let ast::Query {
        with,
        body: _,
        order_by: _,
        limit_clause: _,
        fetch,
        locks,
        for_clause,
        settings,
        format_clause,
        pipe_operators,
    } = q;
    if (with, fetch, locks, for_clause, settings, format_clause, pipe_operators)
        != (&tq.with, &tq.fetch, &tq.locks, &tq.for_clause, &tq.settings, &tq.format_clause, &tq.pipe_operators)
    {
        return Err(SqlError::unsupported(format!("this form of SELECT ({q})")));
    }
    let s = match q.body.as_ref() {
        ast::SetExpr::Select(s) => s,
        ast::SetExpr::SetOperation { op, .. } => return Err(SqlError::unsupported(format!("{op}"))),
        ast::SetExpr::Values(_) => return Err(SqlError::unsupported("VALUES as a query")),
        ast::SetExpr::Query(_) => return Err(SqlError::unsupported("parenthesized queries")),
        other => return Err(SqlError::unsupported(format!("this form of query ({other})"))),
    };
    check_select_clauses(s, template_select(&tq))?;

    // FROM: zero or one table.
    let (scope, schema) = match s.from.as_slice() {
        [] => (Scope::empty(), None),
        [from] => {
            if !from.joins.is_empty() {
                return Err(SqlError::unsupported("JOIN"));
            }
            let (schema, alias) = bind_from(&from.relation, tables, template_select(&tq))?;
            (Scope::table(schema, alias), Some(schema))
        }
        _ => return Err(SqlError::unsupported("JOIN (a FROM list of several tables)")),
    };

    let filter = match &s.selection {
        None => None,
        Some(w) => Some(
            ExprBinder { scope: &scope, params, agg: None, clause: "WHERE", depth: Depth::default() }.predicate(w)?,
        ),
    };

    // The select list, expanded (`*`), with output names.
    // Borrowed where they come from the statement: cloning a deep expression recurses per level.
    let mut items: Vec<(Cow<'_, Ast>, String)> = Vec::new();
    for item in &s.projection {
        match item {
            SelectItem::UnnamedExpr(e) => items.push((Cow::Borrowed(e), output_name(e))),
            SelectItem::ExprWithAlias { expr, alias } => items.push((Cow::Borrowed(expr), ident(alias)?)),
            SelectItem::Wildcard(options) => {
                check_wildcard(options)?;
                let schema =
                    schema.ok_or_else(|| SqlError::syntax("SELECT * with no tables specified is not valid", None))?;
                items.extend(schema.columns.iter().map(|c| (Cow::Owned(column_ast(&c.name)), c.name.clone())));
            }
            SelectItem::QualifiedWildcard(ast::SelectItemQualifiedWildcardKind::ObjectName(name), options) => {
                check_wildcard(options)?;
                let qualifier = table_name(name)?;
                let schema = schema.ok_or_else(|| {
                    SqlError::new(
                        SqlState::UndefinedTable,
                        format!("missing FROM-clause entry for table \"{qualifier}\""),
                    )
                })?;
                let visible = from_alias(s)?.unwrap_or_else(|| schema.name.clone());
                if qualifier != visible {
                    return Err(SqlError::new(
                        SqlState::UndefinedTable,
                        format!("missing FROM-clause entry for table \"{qualifier}\""),
                    ));
                }
                items.extend(schema.columns.iter().map(|c| (Cow::Owned(column_ast(&c.name)), c.name.clone())));
            }
            other => return Err(SqlError::unsupported(format!("select item {other}"))),
        }
    }

    let group_by: &[Ast] = match &s.group_by {
        ast::GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => exprs,
        _ => return Err(SqlError::unsupported("GROUP BY ALL/ROLLUP/CUBE")),
    };
    let order_by: &[ast::OrderByExpr] = match &q.order_by {
        None => &[],
        Some(ast::OrderBy { kind: ast::OrderByKind::Expressions(exprs), interpolate: None }) => exprs,
        Some(_) => return Err(SqlError::unsupported("ORDER BY ALL / INTERPOLATE")),
    };
    let aggregating = !group_by.is_empty()
        || s.having.is_some()
        || items.iter().any(|(e, _)| contains_aggregate(e))
        || order_by.iter().any(|o| contains_aggregate(&o.expr));

    let mut agg_ctx = AggCtx::default();
    if aggregating {
        for g in group_by {
            let g = positional(g, &items, "GROUP BY")?.unwrap_or(g);
            let bound = ExprBinder { scope: &scope, params, agg: None, clause: "GROUP BY", depth: Depth::default() }
                .bind(g, None)?;
            agg_ctx.group_by.push(bound.expr);
        }
    }
    let bind_output = |e: &Ast, clause: &'static str, params: &mut Params, agg: &mut AggCtx| -> Result<Typed> {
        let agg = if aggregating { Some(agg) } else { None };
        ExprBinder { scope: &scope, params, agg, clause, depth: Depth::default() }.bind(e, None)
    };

    let mut projections = Vec::with_capacity(items.len());
    let mut columns = Vec::with_capacity(items.len());
    for (e, name) in &items {
        let t = bind_output(e, "SELECT", params, &mut agg_ctx)?;
        columns.push(Column { name: name.clone(), ty: t.ty.unwrap_or(DataType::Text) });
        projections.push(t.expr);
    }
    let having = match &s.having {
        None => None,
        Some(h) => {
            let t = bind_output(h, "HAVING", params, &mut agg_ctx)?;
            if t.ty.is_some_and(|ty| ty != DataType::Bool) {
                return Err(SqlError::new(
                    SqlState::DatatypeMismatch,
                    format!("argument of HAVING must be type BOOL, not type {}", super::expr::type_name(t.ty)),
                ));
            }
            Some(t.expr)
        }
    };

    let mut order_keys = Vec::with_capacity(order_by.len());
    for o in order_by {
        if o.with_fill.is_some() || matches!(o.options.sort, Some(ast::OrderBySort::Using(_))) {
            return Err(SqlError::unsupported("ORDER BY … USING/WITH FILL"));
        }
        // A position or an output name refers to a select item (PostgreSQL prefers output names).
        positional(&o.expr, &items, "ORDER BY")?;
        let expr = match output_position(&o.expr, &items) {
            Some(i) => projections[i].clone(),
            None => bind_output(&o.expr, "ORDER BY", params, &mut agg_ctx)?.expr,
        };
        let desc = matches!(o.options.sort, Some(ast::OrderBySort::Desc));
        order_keys.push(OrderKey { expr, desc, nulls_first: o.options.nulls_first.unwrap_or(desc) });
    }

    let (limit, offset) = bind_limit(q.limit_clause.as_ref(), params)?;
    let sorted_by_scan = !aggregating
        && schema.is_some_and(|t| {
            order_keys.len() <= t.primary_key.len()
                && order_keys.iter().zip(&t.primary_key).all(|(k, &col)| !k.desc && k.expr == Expr::Column(col))
        });
    let aggregate = aggregating.then_some(AggregatePlan { group_by: agg_ctx.group_by, calls: agg_ctx.calls, having });
    Ok(SelectPlan {
        source: schema.map(|t| (t.clone(), plan_scan(t, filter.as_ref()))),
        filter,
        aggregate,
        projections,
        columns,
        order_by: order_keys,
        sorted_by_scan,
        limit,
        offset,
    })
}

fn check_select_clauses(s: &ast::Select, template: &ast::Select) -> Result<()> {
    match &s.distinct {
        None | Some(ast::Distinct::All) => {}
        Some(_) => return Err(SqlError::unsupported("SELECT DISTINCT")),
    }
    if s.into.is_some() {
        return Err(SqlError::unsupported("SELECT INTO"));
    }
    if !s.named_window.is_empty() || s.qualify.is_some() {
        return Err(SqlError::unsupported("window functions"));
    }
    // As in `bind_query`: every field but those bound elsewhere, without cloning any.
    let ast::Select {
        select_token: _,
        optimizer_hints,
        distinct: _,
        select_modifiers,
        top,
        top_before_distinct,
        projection: _,
        exclude,
        into: _,
        from: _,
        lateral_views,
        prewhere,
        selection: _,
        connect_by,
        group_by: _,
        cluster_by,
        distribute_by,
        sort_by,
        having: _,
        named_window: _,
        qualify: _,
        window_before_qualify,
        value_table_mode,
        flavor,
    } = s;
    let t = template;
    let same = (optimizer_hints, select_modifiers, top, top_before_distinct, exclude, lateral_views, prewhere)
        == (
            &t.optimizer_hints,
            &t.select_modifiers,
            &t.top,
            &t.top_before_distinct,
            &t.exclude,
            &t.lateral_views,
            &t.prewhere,
        )
        && (connect_by, cluster_by, distribute_by, sort_by, window_before_qualify, value_table_mode, flavor)
            == (
                &t.connect_by,
                &t.cluster_by,
                &t.distribute_by,
                &t.sort_by,
                &t.window_before_qualify,
                &t.value_table_mode,
                &t.flavor,
            );
    if !same {
        return Err(SqlError::unsupported(format!("this form of SELECT ({s})")));
    }
    Ok(())
}

fn bind_from<'t>(
    relation: &ast::TableFactor,
    tables: &'t Tables,
    template: &ast::Select,
) -> Result<(&'t crate::catalog::TableSchema, Option<String>)> {
    match relation {
        ast::TableFactor::Table {
            name,
            alias,
            args,
            with_hints,
            version,
            with_ordinality,
            partitions,
            json_path,
            sample,
            index_directives,
            inheritance,
        } => {
            // As in `bind_query`, field by field: a table function's arguments can be deep.
            let ast::TableFactor::Table {
                args: t_args,
                with_hints: t_with_hints,
                version: t_version,
                with_ordinality: t_with_ordinality,
                partitions: t_partitions,
                json_path: t_json_path,
                sample: t_sample,
                index_directives: t_index_directives,
                inheritance: t_inheritance,
                ..
            } = &template.from[0].relation
            else {
                panic!("invariant: the template SELECT reads a table");
            };
            let same = (args, with_hints, version, with_ordinality, partitions)
                == (t_args, t_with_hints, t_version, t_with_ordinality, t_partitions)
                && (json_path, sample, index_directives, inheritance)
                    == (t_json_path, t_sample, t_index_directives, t_inheritance);
            if !same {
                return Err(SqlError::unsupported(format!("this form of table reference ({relation})")));
            }
            let alias = match alias {
                None => None,
                Some(a) if a.columns.is_empty() => Some(ident(&a.name)?),
                Some(_) => return Err(SqlError::unsupported("column aliases in FROM")),
            };
            Ok((tables.get(&table_name(name)?)?, alias))
        }
        ast::TableFactor::Derived { .. } => Err(SqlError::unsupported("subqueries in FROM")),
        ast::TableFactor::NestedJoin { .. } => Err(SqlError::unsupported("JOIN")),
        ast::TableFactor::TableFunction { .. } | ast::TableFactor::Function { .. } => {
            Err(SqlError::unsupported("table functions"))
        }
        other => Err(SqlError::unsupported(format!("table reference {other}"))),
    }
}

fn from_alias(s: &ast::Select) -> Result<Option<String>> {
    match s.from.first().map(|f| &f.relation) {
        Some(ast::TableFactor::Table { alias: Some(a), .. }) => Ok(Some(ident(&a.name)?)),
        _ => Ok(None),
    }
}

fn check_wildcard(options: &ast::WildcardAdditionalOptions) -> Result<()> {
    let plain = options.opt_ilike.is_none()
        && options.opt_exclude.is_none()
        && options.opt_except.is_none()
        && options.opt_replace.is_none()
        && options.opt_rename.is_none()
        && options.opt_alias.is_none();
    if !plain {
        return Err(SqlError::unsupported("* with EXCLUDE/EXCEPT/REPLACE/RENAME"));
    }
    Ok(())
}

fn column_ast(name: &str) -> Ast {
    Ast::Identifier(ast::Ident::with_quote('"', name))
}

/// PostgreSQL's output column name for an unaliased expression.
fn output_name(e: &Ast) -> String {
    match e {
        Ast::Identifier(id) => ident(id).unwrap_or_else(|_| id.value.clone()),
        Ast::CompoundIdentifier(ids) => ids.last().and_then(|id| ident(id).ok()).unwrap_or_else(|| "?column?".into()),
        Ast::Function(f) => f.name.to_string().to_lowercase(),
        Ast::Cast { expr, .. } | Ast::Nested(expr) => output_name(expr),
        _ => "?column?".to_string(),
    }
}

/// For `ORDER BY n` / `GROUP BY n`: the n-th select item's expression.
fn positional<'a>(e: &Ast, items: &'a [(Cow<'_, Ast>, String)], clause: &str) -> Result<Option<&'a Ast>> {
    let Ast::Value(v) = e else { return Ok(None) };
    let ast::Value::Number(text, _) = &v.value else { return Ok(None) };
    let n: usize = text.parse().map_err(|_| {
        SqlError::new(SqlState::InvalidColumnReference, format!("{clause} position {text} is not in select list"))
    })?;
    match n.checked_sub(1).and_then(|i| items.get(i)) {
        Some((item, _)) => Ok(Some(item)),
        None => {
            Err(SqlError::new(SqlState::InvalidColumnReference, format!("{clause} position {n} is not in select list")))
        }
    }
}

/// For `ORDER BY`: the select item a position or an output name refers to.
fn output_position(e: &Ast, items: &[(Cow<'_, Ast>, String)]) -> Option<usize> {
    match e {
        Ast::Value(v) => match &v.value {
            ast::Value::Number(text, _) => text.parse::<usize>().ok()?.checked_sub(1).filter(|i| *i < items.len()),
            _ => None,
        },
        Ast::Identifier(id) => {
            let name = ident(id).ok()?;
            let mut hits = items.iter().enumerate().filter(|(_, (_, n))| *n == name);
            match (hits.next(), hits.next()) {
                (Some((i, _)), None) => Some(i),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether an expression calls an aggregate (outside subqueries, which are rejected anyway). A loop
/// over a stack of its own rather than recursion: this runs before the binder's depth counter.
fn contains_aggregate(e: &Ast) -> bool {
    let mut todo = vec![e];
    while let Some(e) = todo.pop() {
        match e {
            Ast::Function(f) => {
                if is_aggregate_name(&f.name.to_string().to_lowercase()) {
                    return true;
                }
                if let ast::FunctionArguments::List(l) = &f.args {
                    todo.extend(l.args.iter().filter_map(|a| match a {
                        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x)) => Some(x),
                        _ => None,
                    }));
                }
            }
            Ast::Nested(x)
            | Ast::UnaryOp { expr: x, .. }
            | Ast::IsNull(x)
            | Ast::IsNotNull(x)
            | Ast::Cast { expr: x, .. } => todo.push(x),
            Ast::BinaryOp { left, right, .. } => todo.extend([left.as_ref(), right.as_ref()]),
            Ast::Between { expr, low, high, .. } => todo.extend([expr.as_ref(), low.as_ref(), high.as_ref()]),
            Ast::In { expr, target: ast::InTarget::List(list), .. } => {
                todo.push(expr);
                todo.extend(list);
            }
            _ => {}
        }
    }
    false
}

/// `LIMIT`/`OFFSET`: constant non-negative integers (literals or parameters).
fn bind_limit(clause: Option<&ast::LimitClause>, params: &mut Params) -> Result<(Option<u64>, u64)> {
    let (limit, offset) = match clause {
        None => return Ok((None, 0)),
        Some(ast::LimitClause::LimitOffset { limit, offset, limit_by }) if limit_by.is_empty() => {
            (limit.as_ref(), offset.as_ref().map(|o| &o.value))
        }
        Some(_) => return Err(SqlError::unsupported("LIMIT a, b / LIMIT BY (write LIMIT n OFFSET m)")),
    };
    let mut count = |e: Option<&Ast>, clause: &'static str| -> Result<Option<u64>> {
        let Some(e) = e else { return Ok(None) };
        let scope = Scope::empty();
        let t = ExprBinder { scope: &scope, params: &mut *params, agg: None, clause, depth: Depth::default() }
            .bind(e, Some(DataType::Int))?;
        if !t.expr.is_constant() {
            // Only when describing: the parameter's value is not known yet.
            return Ok(None);
        }
        match t.expr.eval(&[])? {
            Value::Null => Ok(None),
            Value::Int(n) if n >= 0 => Ok(Some(n as u64)),
            Value::Int(_) => {
                Err(SqlError::new(SqlState::InvalidParameterValue, format!("{clause} must not be negative")))
            }
            other => Err(SqlError::new(
                SqlState::DatatypeMismatch,
                format!("argument of {clause} must be type INT, not {}", other.literal()),
            )),
        }
    };
    Ok((count(limit, "LIMIT")?, count(offset, "OFFSET")?.unwrap_or(0)))
}
