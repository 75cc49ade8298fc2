//! The binder: from a `sqlparser` statement to a [`Plan`], or a clear error.
//!
//! `sqlparser` accepts far more SQL than Meridian runs. The binder's job is to accept exactly the
//! SQL-lite of DESIGN.md §7 and to reject everything else *by name* ("Meridian does not support
//! JOIN", "column \"x\" does not exist in table \"t\""), never by silently ignoring a clause. Two
//! layers make that hold:
//! 1. explicit checks for the features people actually write (joins, subqueries, `DISTINCT`,
//!    `RETURNING`, constraints, …), each with its own message;
//! 2. a catch-all: the binder blanks the fields it understood in a copy of the AST node and
//!    compares the rest with the same node parsed from a minimal statement. Any difference is some
//!    clause nobody checked, and is rejected as "Meridian does not support this form of X".
//!    (`sqlparser`'s `PartialEq` ignores source spans, so the comparison is structural.)
//!
//! Binding is synchronous and pure: the session first reads the schemas the statement names
//! ([`referenced_tables`]) in the statement's transaction, then binds against them ([`Tables`]).
//!
//! Names follow PostgreSQL: unquoted identifiers fold to lower case, quoted ones keep their case;
//! a table may be written `public.t`. Parameters `$n` are bound to their values here (so the
//! planner sees constants); a parameter sent as text is parsed to the type its context needs
//! (the extended protocol's text format). When describing a statement, parameter values are
//! unknown and their types are inferred from context instead.

mod ddl;
mod dml;
mod expr;
mod select;

use std::collections::BTreeMap;

use sqlparser::ast::{self, Ident, ObjectName, ObjectNamePart};

use crate::catalog::{NAME_BYTES_MAX, TableSchema};
use crate::error::{Result, SqlError, SqlState};
use crate::parse::{AsOf, Parsed};
use crate::plan::Plan;
use crate::types::{DataType, Value, parse_text};

pub(crate) use dml::INSERT_ROWS_MAX;
pub(crate) use select::is_aggregate_name;

/// Schemas of the tables a statement names, read in its transaction. Missing tables are absent.
#[derive(Debug, Default)]
pub struct Tables {
    map: BTreeMap<String, TableSchema>,
}

impl Tables {
    /// Adds a schema.
    pub fn insert(&mut self, schema: TableSchema) {
        self.map.insert(schema.name.clone(), schema);
    }

    /// The schema of `name`, or `table "name" does not exist`.
    fn get(&self, name: &str) -> Result<&TableSchema> {
        self.map.get(name).ok_or_else(|| undefined_table(name))
    }

    fn find(&self, name: &str) -> Option<&TableSchema> {
        self.map.get(name)
    }
}

/// `table "x" does not exist` (42P01).
pub fn undefined_table(name: &str) -> SqlError {
    SqlError::new(SqlState::UndefinedTable, format!("table \"{name}\" does not exist"))
}

/// Parameter values (when executing) or inferred parameter types (when describing).
#[derive(Debug)]
pub struct Params {
    values: Option<Vec<Value>>,
    types: Vec<Option<DataType>>,
    /// Highest `$n` seen.
    used: usize,
}

impl Params {
    /// Parameters with values (the extended protocol's Bind, or none for simple queries).
    pub fn with_values(values: &[Value]) -> Params {
        Params { values: Some(values.to_vec()), types: vec![None; values.len()], used: 0 }
    }

    /// Parameters without values: bind only to learn their types.
    pub fn unknown() -> Params {
        Params { values: None, types: Vec::new(), used: 0 }
    }

    /// Inferred types of `$1..$n` (n = highest parameter used), `None` where context said nothing.
    pub fn types(&self) -> Vec<Option<DataType>> {
        let mut types = self.types.clone();
        types.resize(self.used.max(types.len()), None);
        types.truncate(self.used);
        types
    }

    /// Checks that the number of values supplied matches the parameters used.
    pub fn check_count(&self) -> Result<()> {
        match &self.values {
            Some(values) if !values.is_empty() && values.len() != self.used => Err(SqlError::new(
                SqlState::ProtocolViolation,
                format!("statement has {} parameters but {} values were supplied", self.used, values.len()),
            )),
            _ => Ok(()),
        }
    }

    /// Binds `$n` (1-based) in a context expecting `hint`: its value as a constant, or a
    /// placeholder when describing. Returns the expression and its type.
    fn bind(&mut self, n: usize, hint: Option<DataType>) -> Result<(crate::expr::Expr, Option<DataType>)> {
        use crate::expr::Expr;
        let hint = hint.map(DataType::input);
        self.used = self.used.max(n);
        if self.types.len() < n {
            self.types.resize(n, None);
        }
        let slot = &mut self.types[n - 1];
        let Some(values) = &self.values else {
            *slot = slot.or(hint);
            return Ok((Expr::Param(n - 1), *slot));
        };
        let value = values
            .get(n - 1)
            .ok_or_else(|| SqlError::new(SqlState::UndefinedParameter, format!("there is no parameter ${n}")))?;
        let value = match (value, hint) {
            (Value::Text(text), Some(ty)) if ty != DataType::Text => parse_text(text, ty)
                .map_err(|e| SqlError { message: format!("{} (parameter ${n})", e.message), ..e })?,
            (Value::Int(i), Some(DataType::Float)) => Value::Float(*i as f64),
            (v, _) => v.clone(),
        };
        let ty = value.data_type().or(hint);
        *slot = slot.or(ty);
        Ok((Expr::Const(value), ty))
    }
}

/// What kind of statement this is, decided before any transaction starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `BEGIN` / `START TRANSACTION` with its access mode (`None` = default) and snapshot.
    Begin {
        /// `READ ONLY` (`Some(true)`), `READ WRITE` (`Some(false)`), or unspecified.
        read_only: Option<bool>,
        /// `AS OF SYSTEM TIME`.
        as_of: Option<AsOf>,
    },
    /// `COMMIT` / `END`.
    Commit,
    /// `ROLLBACK` / `ABORT`.
    Rollback,
    /// `SET TRANSACTION READ ONLY|READ WRITE` (other modes are accepted and ignored).
    SetTransaction {
        /// The access mode, if given.
        read_only: Option<bool>,
    },
    /// `SET variable = value`: accepted and ignored (drivers send these on connect).
    SetVariable,
    /// A statement that reads and writes nothing but may run in a read-only transaction
    /// (`SELECT`, `SHOW`, `EXPLAIN`).
    Read,
    /// A statement that writes.
    Write,
}

/// Classifies a parsed statement; rejects unsupported transaction syntax.
pub fn classify(parsed: &Parsed) -> Result<Kind> {
    use ast::Statement as S;
    let kind = match &parsed.stmt {
        S::StartTransaction { modes, modifier, statements, exception, has_end_keyword, .. } => {
            if modifier.is_some() || !statements.is_empty() || exception.is_some() || *has_end_keyword {
                return Err(SqlError::unsupported(format!("this form of BEGIN ({})", parsed.stmt)));
            }
            Kind::Begin { read_only: access_mode(modes), as_of: parsed.as_of }
        }
        S::Commit { chain: false, modifier: None, .. } => Kind::Commit,
        S::Rollback { chain: false, savepoint: None } => Kind::Rollback,
        S::Rollback { savepoint: Some(_), .. } | S::Savepoint { .. } | S::ReleaseSavepoint { .. } => {
            return Err(SqlError::unsupported("SAVEPOINT"));
        }
        S::Commit { .. } | S::Rollback { .. } => return Err(SqlError::unsupported("COMMIT/ROLLBACK AND CHAIN")),
        S::Set(ast::Set::SetTransaction { modes, snapshot: None, session: false }) => {
            Kind::SetTransaction { read_only: access_mode(modes) }
        }
        S::Set(ast::Set::SetTransaction { .. }) => {
            return Err(SqlError::unsupported("SET SESSION CHARACTERISTICS / SET TRANSACTION SNAPSHOT"));
        }
        S::Set(ast::Set::SingleAssignment { .. } | ast::Set::SetNames { .. } | ast::Set::SetTimeZone { .. }) => {
            Kind::SetVariable
        }
        S::Query(_) | S::ShowTables { .. } | S::ShowColumns { .. } | S::Explain { .. } => Kind::Read,
        S::Insert(_) | S::Update(_) | S::Delete(_) | S::CreateTable(_) | S::Drop { .. } => Kind::Write,
        other => return Err(SqlError::unsupported(statement_name(other))),
    };
    if parsed.as_of.is_some() && !matches!(kind, Kind::Read | Kind::Begin { .. }) {
        return Err(SqlError::unsupported("AS OF SYSTEM TIME on a statement other than SELECT or BEGIN"));
    }
    if parsed.as_of.is_some() && matches!(kind, Kind::Begin { read_only: Some(false), .. }) {
        return Err(SqlError::new(
            SqlState::InvalidParameterValue,
            "AS OF SYSTEM TIME makes a transaction read-only; it cannot be READ WRITE",
        ));
    }
    Ok(kind)
}

fn access_mode(modes: &[ast::TransactionMode]) -> Option<bool> {
    modes.iter().rev().find_map(|m| match m {
        ast::TransactionMode::AccessMode(ast::TransactionAccessMode::ReadOnly) => Some(true),
        ast::TransactionMode::AccessMode(ast::TransactionAccessMode::ReadWrite) => Some(false),
        // Every transaction is serializable; a weaker isolation level asked for is upgraded (the
        // SQL standard allows running at a stronger level).
        ast::TransactionMode::IsolationLevel(_) => None,
    })
}

/// A short name for an unsupported statement: its leading keywords (`ALTER TABLE`, `TRUNCATE`).
fn statement_name(stmt: &ast::Statement) -> String {
    let text = stmt.to_string();
    // sqlparser prints keywords in upper case; the first word is always a keyword.
    let keyword = |w: &&str| w.chars().all(|c| c.is_ascii_uppercase() || c == '_');
    let mut all = text.split_whitespace();
    let words: Vec<&str> = all.next().into_iter().chain(all.take(1).filter(keyword)).collect();
    let name = words.join(" ");
    if name.is_empty() { "this statement".to_string() } else { name }
}

/// Names of the tables a statement reads or writes, for the session to fetch before binding.
pub fn referenced_tables(stmt: &ast::Statement) -> Vec<String> {
    use ast::Statement as S;
    let mut names = Vec::new();
    let mut add = |name: &ObjectName| {
        if let Ok(n) = table_name(name) {
            names.push(n);
        }
    };
    let from_table = |t: &ast::TableWithJoins, add: &mut dyn FnMut(&ObjectName)| {
        if let ast::TableFactor::Table { name, .. } = &t.relation {
            add(name);
        }
    };
    match stmt {
        S::Query(q) => {
            if let ast::SetExpr::Select(s) = q.body.as_ref() {
                for t in &s.from {
                    from_table(t, &mut add);
                }
            }
        }
        S::Insert(i) => {
            if let ast::TableObject::TableName(name) = &i.table {
                add(name);
            }
        }
        S::Update(u) => from_table(&u.table, &mut add),
        S::Delete(d) => {
            let (ast::FromTable::WithFromKeyword(ts) | ast::FromTable::WithoutKeyword(ts)) = &d.from;
            for t in ts {
                from_table(t, &mut add);
            }
        }
        S::CreateTable(c) => add(&c.name),
        S::Drop { names: ns, .. } => ns.iter().for_each(&mut add),
        S::ShowColumns { show_options, .. } => {
            if let Some(ast::ShowStatementIn { parent_name: Some(name), .. }) = &show_options.show_in {
                add(name);
            }
        }
        S::Explain { statement, .. } => return referenced_tables(statement),
        _ => {}
    }
    names.sort();
    names.dedup();
    names
}

/// Binds a statement of kind [`Kind::Read`] or [`Kind::Write`] against `tables`.
pub fn bind(parsed: &Parsed, tables: &Tables, params: &mut Params, read_only: bool) -> Result<Plan> {
    let plan = bind_statement(&parsed.stmt, parsed.upsert, parsed.depth, tables, params)?;
    if read_only && plan.writes() {
        return Err(SqlError::new(
            SqlState::ReadOnlySqlTransaction,
            format!("cannot execute {} in a read-only transaction", plan.verb()),
        ));
    }
    params.check_count()?;
    Ok(plan)
}

fn bind_statement(
    stmt: &ast::Statement,
    upsert: bool,
    depth: usize,
    tables: &Tables,
    params: &mut Params,
) -> Result<Plan> {
    use ast::Statement as S;
    match stmt {
        S::Query(q) => select::bind_query(q, tables, params).map(Plan::Select),
        S::Insert(i) => dml::bind_insert(i, upsert, tables, params).map(Plan::Insert),
        S::Update(u) => dml::bind_update(u, tables, params).map(Plan::Update),
        S::Delete(d) => dml::bind_delete(d, tables, params).map(Plan::Delete),
        S::CreateTable(c) => ddl::bind_create_table(c, depth, tables),
        S::Drop { .. } => ddl::bind_drop(stmt, tables),
        S::ShowTables { .. } | S::ShowColumns { .. } => ddl::bind_show(stmt, tables),
        S::Explain { statement, analyze: false, verbose: false, format: None, .. } => {
            if matches!(statement.as_ref(), S::Explain { .. }) {
                return Err(SqlError::unsupported("EXPLAIN EXPLAIN"));
            }
            Ok(Plan::Explain(Box::new(bind_statement(statement, false, depth, tables, params)?)))
        }
        S::Explain { .. } => Err(SqlError::unsupported("EXPLAIN with options")),
        other => Err(SqlError::unsupported(statement_name(other))),
    }
}

/// A case-folded identifier (PostgreSQL: unquoted folds to lower case). Errors if too long.
pub(crate) fn ident(id: &Ident) -> Result<String> {
    let name = if id.quote_style.is_some() { id.value.clone() } else { id.value.to_lowercase() };
    if name.len() > NAME_BYTES_MAX {
        return Err(SqlError::new(
            SqlState::NameTooLong,
            format!("identifier \"{name}\" is {} bytes; the limit is {NAME_BYTES_MAX}", name.len()),
        ));
    }
    if name.is_empty() {
        return Err(SqlError::syntax("zero-length identifier", None));
    }
    Ok(name)
}

/// A table name: `t` or `public.t`.
pub(crate) fn table_name(name: &ObjectName) -> Result<String> {
    let parts: Vec<&Ident> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(id) => Ok(id),
            ObjectNamePart::Function(_) => Err(SqlError::unsupported(format!("table name {name}"))),
        })
        .collect::<Result<_>>()?;
    match parts.as_slice() {
        [table] => ident(table),
        [schema, table] if ident(schema)? == "public" => ident(table),
        _ => Err(SqlError::unsupported(format!(
            "qualified table name {name} (Meridian has one schema; write the table name alone)"
        ))),
    }
}
