//! Binding `CREATE TABLE`, `DROP TABLE`, `SHOW TABLES`, `SHOW COLUMNS FROM t`, and SQL type names.
//!
//! `CREATE TABLE name (col type [NOT NULL | NULL | PRIMARY KEY], …, [PRIMARY KEY (a, b)])` with
//! `IF NOT EXISTS`. Every table needs a primary key (rows are stored by it; there is no hidden
//! row id), and primary-key columns are NOT NULL. Constraints other than the primary key, column
//! defaults, `CREATE TABLE AS`, and length-limited types (`VARCHAR(10)`) are rejected by name —
//! accepting a constraint and not enforcing it would be worse than refusing it.

use sqlparser::ast::{self, ColumnOption, DataType as AstType, TableConstraint};

use super::select::template;
use super::{Tables, ident, table_name, undefined_table};
use crate::catalog::{COLUMNS_MAX, ColumnSchema, KEY_COLUMNS_MAX, SCHEMA_FORMAT_VERSION, TableSchema};
use crate::error::{Result, SqlError, SqlState};
use crate::keys::TableId;
use crate::plan::Plan;
use crate::types::DataType;

/// Maps a SQL type name to a Meridian type, or says which types exist.
pub fn map_type(ty: &AstType) -> Result<DataType> {
    let unsupported = || {
        SqlError::unsupported(format!(
            "type {ty} (Meridian has INT/BIGINT, FLOAT/DOUBLE PRECISION/REAL, BOOL, TEXT/VARCHAR/STRING and \
             BYTES/BYTEA)"
        ))
    };
    Ok(match ty {
        AstType::Int(None)
        | AstType::Integer(None)
        | AstType::BigInt(None)
        | AstType::Int8(None)
        | AstType::Int4(None)
        | AstType::Int64
        | AstType::SmallInt(None)
        | AstType::Int2(None) => DataType::Int,
        AstType::Float(ast::ExactNumberInfo::None)
        | AstType::Double(ast::ExactNumberInfo::None)
        | AstType::DoublePrecision
        | AstType::Real
        | AstType::Float4
        | AstType::Float8
        | AstType::Float64 => DataType::Float,
        AstType::Bool | AstType::Boolean => DataType::Bool,
        AstType::Text | AstType::Varchar(None) | AstType::String(None) | AstType::CharacterVarying(None) => {
            DataType::Text
        }
        AstType::Bytea | AstType::Bytes(None) => DataType::Bytes,
        AstType::Varchar(Some(_)) | AstType::String(Some(_)) | AstType::CharacterVarying(Some(_)) => {
            return Err(SqlError::unsupported(format!("length limit in {ty} (write TEXT)")));
        }
        AstType::Custom(name, modifiers) if modifiers.is_empty() => match name.to_string().to_lowercase().as_str() {
            "int" | "integer" | "bigint" | "int8" | "int64" => DataType::Int,
            "float" | "float8" | "double" => DataType::Float,
            "bool" | "boolean" => DataType::Bool,
            "text" | "string" | "varchar" => DataType::Text,
            "bytes" | "bytea" => DataType::Bytes,
            _ => return Err(unsupported()),
        },
        _ => return Err(unsupported()),
    })
}

/// Deepest `CREATE TABLE` (as `bounds.rs` counts depth) bound. Meridian's takes no expressions,
/// so its depth is a few levels of parentheses; a deeper one holds some unsupported expression
/// (`DEFAULT`, `CHECK`, options), and the catch-all below clones the statement, which recurses
/// once per level of it.
const CREATE_TABLE_DEPTH_MAX: usize = 32;

/// Binds `CREATE TABLE`; `depth` is the statement's, as `bounds.rs` measured it.
pub fn bind_create_table(c: &ast::CreateTable, depth: usize, tables: &Tables) -> Result<Plan> {
    if c.query.is_some() {
        return Err(SqlError::unsupported("CREATE TABLE … AS"));
    }
    if c.temporary {
        return Err(SqlError::unsupported("TEMPORARY tables"));
    }
    if c.like.is_some() {
        return Err(SqlError::unsupported("CREATE TABLE … LIKE"));
    }
    if depth > CREATE_TABLE_DEPTH_MAX {
        return Err(SqlError::unsupported(format!(
            "expressions in CREATE TABLE (this one nests {depth} levels deep; Meridian supports columns with a \
             type, NOT NULL and PRIMARY KEY)"
        )));
    }
    let ast::Statement::CreateTable(tmpl) = template("CREATE TABLE t (a INT)") else {
        panic!("invariant: the CREATE TABLE template parses as one");
    };
    let mut rest = c.clone();
    rest.name = tmpl.name.clone();
    rest.columns = tmpl.columns.clone();
    rest.constraints = Vec::new();
    rest.if_not_exists = false;
    if rest != tmpl {
        return Err(SqlError::unsupported(format!(
            "this form of CREATE TABLE ({c}); Meridian supports columns with a type, NOT NULL and PRIMARY KEY"
        )));
    }
    let name = table_name(&c.name)?;
    if tables.find(&name).is_some() {
        if c.if_not_exists {
            return Ok(Plan::Nothing("CREATE TABLE"));
        }
        return Err(SqlError::new(SqlState::DuplicateTable, format!("table \"{name}\" already exists")));
    }
    if c.columns.len() > COLUMNS_MAX {
        return Err(SqlError::new(
            SqlState::ProgramLimitExceeded,
            format!("tables can have at most {COLUMNS_MAX} columns"),
        ));
    }

    let mut columns: Vec<ColumnSchema> = Vec::with_capacity(c.columns.len());
    let mut primary_key: Option<Vec<usize>> = None;
    let multiple_keys = || {
        SqlError::new(
            SqlState::InvalidTableDefinition,
            format!("multiple primary keys for table \"{name}\" are not allowed"),
        )
    };
    for (i, col) in c.columns.iter().enumerate() {
        let col_name = ident(&col.name)?;
        if columns.iter().any(|c| c.name == col_name) {
            return Err(SqlError::new(
                SqlState::DuplicateColumn,
                format!("column \"{col_name}\" specified more than once"),
            ));
        }
        let ty = map_type(&col.data_type)?;
        let mut nullable = true;
        for option in &col.options {
            match &option.option {
                ColumnOption::NotNull => nullable = false,
                ColumnOption::Null => {}
                ColumnOption::PrimaryKey(_) => {
                    if primary_key.replace(vec![i]).is_some() {
                        return Err(multiple_keys());
                    }
                }
                ColumnOption::Unique(_) => {
                    return Err(SqlError::unsupported("UNIQUE constraints (only the PRIMARY KEY is unique)"));
                }
                ColumnOption::Default(_) => return Err(SqlError::unsupported("DEFAULT values")),
                ColumnOption::Check(_) => return Err(SqlError::unsupported("CHECK constraints")),
                ColumnOption::ForeignKey(_) => return Err(SqlError::unsupported("foreign keys")),
                other => return Err(SqlError::unsupported(format!("column option {other}"))),
            }
        }
        columns.push(ColumnSchema { name: col_name, ty, nullable });
    }
    for constraint in &c.constraints {
        match constraint {
            TableConstraint::PrimaryKey(pk) => {
                if pk.index_type.is_some() || !pk.include.is_empty() || !pk.index_options.is_empty() {
                    return Err(SqlError::unsupported("PRIMARY KEY index options"));
                }
                let mut key = Vec::with_capacity(pk.columns.len());
                for ic in &pk.columns {
                    let ast::Expr::Identifier(id) = &ic.column.expr else {
                        return Err(SqlError::unsupported(format!("PRIMARY KEY on expression {}", ic.column.expr)));
                    };
                    if matches!(ic.column.options.sort, Some(ast::OrderBySort::Desc)) {
                        return Err(SqlError::unsupported("descending PRIMARY KEY columns"));
                    }
                    let col_name = ident(id)?;
                    let index = columns.iter().position(|c| c.name == col_name).ok_or_else(|| {
                        SqlError::new(
                            SqlState::UndefinedColumn,
                            format!("column \"{col_name}\" named in key does not exist in table \"{name}\""),
                        )
                    })?;
                    if key.contains(&index) {
                        return Err(SqlError::new(
                            SqlState::DuplicateColumn,
                            format!("column \"{col_name}\" appears twice in primary key constraint"),
                        ));
                    }
                    key.push(index);
                }
                if primary_key.replace(key).is_some() {
                    return Err(multiple_keys());
                }
            }
            TableConstraint::Unique(_) => {
                return Err(SqlError::unsupported("UNIQUE constraints (only the PRIMARY KEY is unique)"));
            }
            TableConstraint::ForeignKey(_) => return Err(SqlError::unsupported("foreign keys")),
            TableConstraint::Check(_) => return Err(SqlError::unsupported("CHECK constraints")),
            other => return Err(SqlError::unsupported(format!("table constraint {other}"))),
        }
    }
    let primary_key = primary_key.filter(|k| !k.is_empty()).ok_or_else(|| {
        SqlError::new(
            SqlState::InvalidTableDefinition,
            format!(
                "table \"{name}\" needs a PRIMARY KEY: rows are stored in primary-key order (add PRIMARY KEY (col, \
                 …))"
            ),
        )
    })?;
    if primary_key.len() > KEY_COLUMNS_MAX {
        return Err(SqlError::new(
            SqlState::ProgramLimitExceeded,
            format!("a primary key can have at most {KEY_COLUMNS_MAX} columns"),
        ));
    }
    for &k in &primary_key {
        columns[k].nullable = false;
    }
    let schema = TableSchema { version: SCHEMA_FORMAT_VERSION, id: TableId(0), name, columns, primary_key };
    assert!(schema.validate().is_ok(), "invariant: a bound schema is valid: {:?}", schema.validate());
    Ok(Plan::CreateTable(schema))
}

/// Binds `DROP TABLE [IF EXISTS] a, b [CASCADE | RESTRICT]` (nothing depends on a table, so both
/// are no-ops).
pub fn bind_drop(stmt: &ast::Statement, tables: &Tables) -> Result<Plan> {
    let ast::Statement::Drop { object_type, if_exists, names, purge, temporary, table, .. } = stmt else {
        panic!("invariant: bind_drop is called with a DROP statement");
    };
    if *object_type != ast::ObjectType::Table {
        return Err(SqlError::unsupported(format!("DROP {object_type}")));
    }
    if *purge || *temporary || table.is_some() {
        return Err(SqlError::unsupported(format!("this form of DROP TABLE ({stmt})")));
    }
    let mut drops: Vec<TableSchema> = Vec::new();
    for name in names {
        let name = table_name(name)?;
        match tables.find(&name) {
            Some(schema) if !drops.iter().any(|d| d.name == name) => drops.push(schema.clone()),
            Some(_) => {}
            None if *if_exists => {}
            None => return Err(undefined_table(&name)),
        }
    }
    if drops.is_empty() {
        return Ok(Plan::Nothing("DROP TABLE"));
    }
    Ok(Plan::DropTable(drops))
}

/// Binds `SHOW TABLES` and `SHOW COLUMNS FROM t`.
pub fn bind_show(stmt: &ast::Statement, tables: &Tables) -> Result<Plan> {
    match stmt {
        ast::Statement::ShowTables {
            terse: false,
            history: false,
            extended: false,
            full: false,
            external: false,
            show_options,
        } if show_options.show_in.is_none()
            && show_options.starts_with.is_none()
            && show_options.limit.is_none()
            && show_options.limit_from.is_none()
            && show_options.filter_position.is_none() =>
        {
            Ok(Plan::ShowTables)
        }
        ast::Statement::ShowColumns { extended: false, full: false, show_options } => {
            let name = match show_options {
                ast::ShowStatementOptions {
                    show_in: Some(ast::ShowStatementIn { parent_name: Some(name), parent_type: None, .. }),
                    starts_with: None,
                    limit: None,
                    limit_from: None,
                    filter_position: None,
                } => table_name(name)?,
                _ => return Err(SqlError::unsupported(format!("this form of SHOW COLUMNS ({stmt})"))),
            };
            Ok(Plan::ShowColumns(tables.get(&name)?.clone()))
        }
        other => Err(SqlError::unsupported(format!("this form of SHOW ({other})"))),
    }
}
