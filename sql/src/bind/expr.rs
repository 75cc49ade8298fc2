//! Binding and type-checking expressions.
//!
//! An expression binds in a [`Scope`] (the tables whose columns it may name, each at an offset in
//! the input row) and, inside an aggregating query, in an [`AggCtx`]: there a column may only be
//! read through a `GROUP BY` expression, and aggregate calls become slots of the aggregated row.
//!
//! Types are checked here, once, so evaluation never meets a mismatch. The rules:
//! - arithmetic on INT/FLOAT (INT op INT is INT, anything with FLOAT is FLOAT);
//! - `||` on TEXT or on BYTES; comparisons between equal types or between numbers;
//! - `AND`/`OR`/`NOT` and `WHERE` on BOOL; NULL literals fit anywhere;
//! - casts per [`crate::expr::can_cast`].
//!
//! A type error names the operands (`cannot compare column "name" (TEXT) with 5 (INT)`).
//! Expected types flow down as hints so parameters learn their type: in `id = $1`, `$1` is an INT.

use sqlparser::ast::{self, BinaryOperator, Expr as Ast, UnaryOperator};

use super::{Params, ident};
use crate::bounds::Depth;
use crate::catalog::TableSchema;
use crate::error::{Result, SqlError, SqlState};
use crate::expr::{ArithOp, CmpOp, Expr, can_cast};
use crate::plan::{AggCall, AggFunc};
use crate::types::{DataType, Value, parse_text, unhex};

/// An expression and its static type (`None`: the NULL literal, which has any type).
#[derive(Debug, Clone)]
pub struct Typed {
    /// The bound expression.
    pub expr: Expr,
    /// Its type.
    pub ty: Option<DataType>,
}

/// One table visible to expressions.
#[derive(Debug, Clone)]
struct ScopeTable {
    name: String,
    alias: Option<String>,
    columns: Vec<(String, DataType)>,
    offset: usize,
    /// Reachable only as `name.column` (the `excluded` row of `ON CONFLICT`).
    qualified_only: bool,
}

/// The tables an expression may name.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    tables: Vec<ScopeTable>,
}

impl Scope {
    /// No tables (`SELECT` without `FROM`, `VALUES`).
    pub fn empty() -> Scope {
        Scope::default()
    }

    /// One table, optionally aliased.
    pub fn table(schema: &TableSchema, alias: Option<String>) -> Scope {
        let mut scope = Scope::empty();
        scope.push(schema, alias, false);
        scope
    }

    /// `ON CONFLICT DO UPDATE`: the table, then `excluded` (the proposed row), qualified only.
    pub fn with_excluded(schema: &TableSchema, alias: Option<String>) -> Scope {
        let mut scope = Scope::table(schema, alias);
        let mut excluded = schema.clone();
        excluded.name = "excluded".into();
        scope.push(&excluded, None, true);
        scope
    }

    fn push(&mut self, schema: &TableSchema, alias: Option<String>, qualified_only: bool) {
        let offset = self.tables.iter().map(|t| t.columns.len()).sum();
        let columns = schema.columns.iter().map(|c| (c.name.clone(), c.ty)).collect();
        self.tables.push(ScopeTable { name: schema.name.clone(), alias, columns, offset, qualified_only });
    }

    fn resolve(&self, qualifier: Option<&str>, column: &str) -> Result<(usize, DataType)> {
        let candidates: Vec<&ScopeTable> = match qualifier {
            Some(q) => {
                let found: Vec<_> = self.tables.iter().filter(|t| t.alias.as_deref().unwrap_or(&t.name) == q).collect();
                if found.is_empty() {
                    return Err(SqlError::new(
                        SqlState::UndefinedTable,
                        format!("missing FROM-clause entry for table \"{q}\""),
                    ));
                }
                found
            }
            None => self.tables.iter().filter(|t| !t.qualified_only).collect(),
        };
        let mut hits = candidates.iter().filter_map(|t| {
            t.columns.iter().position(|(name, _)| name == column).map(|i| (t.offset + i, t.columns[i].1))
        });
        match (hits.next(), hits.next()) {
            (Some(hit), None) => Ok(hit),
            (Some(_), Some(_)) => {
                Err(SqlError::new(SqlState::AmbiguousColumn, format!("column reference \"{column}\" is ambiguous")))
            }
            (None, _) => Err(SqlError::new(
                SqlState::UndefinedColumn,
                match candidates.as_slice() {
                    [t] => format!("column \"{column}\" does not exist in table \"{}\"", t.name),
                    _ => format!("column \"{column}\" does not exist"),
                },
            )),
        }
    }
}

/// Aggregation state while binding an aggregating query's SELECT list, HAVING and ORDER BY.
#[derive(Debug, Default)]
pub struct AggCtx {
    /// `GROUP BY` expressions, bound over the table row.
    pub group_by: Vec<Expr>,
    /// Aggregate calls found so far.
    pub calls: Vec<AggCall>,
    /// Result type of each call.
    pub call_types: Vec<Option<DataType>>,
}

/// Binds expressions in one clause of a statement.
pub struct ExprBinder<'a> {
    /// Visible tables.
    pub scope: &'a Scope,
    /// Parameters.
    pub params: &'a mut Params,
    /// Set when binding over the aggregated row.
    pub agg: Option<&'a mut AggCtx>,
    /// The clause, for messages (`aggregate functions are not allowed in WHERE`).
    pub clause: &'static str,
    /// How deep [`ExprBinder::bind`] has recursed (a second line behind `bounds.rs`).
    pub(crate) depth: Depth,
}

impl ExprBinder<'_> {
    /// Binds `e`; `hint` is the type the context expects, used to type parameters.
    pub fn bind(&mut self, e: &Ast, hint: Option<DataType>) -> Result<Typed> {
        let outer = self.depth;
        self.depth = outer.enter()?;
        let bound = self.bind_here(e, hint);
        self.depth = outer;
        bound
    }

    fn bind_here(&mut self, e: &Ast, hint: Option<DataType>) -> Result<Typed> {
        if self.agg.is_some()
            && let Some(i) = self.group_match(e)
        {
            let ty = self.plain(e, None).ok().and_then(|t| t.ty);
            return Ok(Typed { expr: Expr::Column(i), ty });
        }
        match e {
            Ast::Identifier(id) => self.column(None, id),
            Ast::CompoundIdentifier(ids) => match ids.as_slice() {
                [table, column] => self.column(Some(&ident(table)?), column),
                _ => Err(SqlError::unsupported(format!("column reference {e}"))),
            },
            Ast::Value(v) => self.literal(&v.value, hint),
            Ast::Nested(inner) => self.bind(inner, hint),
            Ast::UnaryOp { op, expr } => self.unary(*op, expr, hint),
            Ast::BinaryOp { .. } => self.binary(e, hint),
            Ast::IsNull(inner) | Ast::IsNotNull(inner) => {
                let t = self.bind(inner, None)?;
                Ok(typed(Expr::IsNull(Box::new(t.expr), matches!(e, Ast::IsNotNull(_))), DataType::Bool))
            }
            Ast::Between { expr, negated, low, high } => {
                let lo = self.compare(CmpOp::GtEq, expr, low)?;
                let hi = self.compare(CmpOp::LtEq, expr, high)?;
                let both = Expr::And(Box::new(lo), Box::new(hi));
                Ok(typed(if *negated { Expr::Not(Box::new(both)) } else { both }, DataType::Bool))
            }
            Ast::In { expr, target: ast::InTarget::List(list), negated, .. } => {
                let needle = self.bind(expr, None)?;
                let mut items = Vec::with_capacity(list.len());
                for item in list {
                    let t = self.bind(item, needle.ty)?;
                    check_comparable(expr, &needle, item, &t)?;
                    items.push(t.expr);
                }
                Ok(typed(Expr::InList(Box::new(needle.expr), items, *negated), DataType::Bool))
            }
            Ast::Cast { kind: ast::CastKind::Cast | ast::CastKind::DoubleColon, expr, data_type, format: None } => {
                let to = super::ddl::map_type(data_type)?;
                let inner = self.bind(expr, is_placeholder(expr).then_some(to))?;
                if let Some(from) = inner.ty
                    && !can_cast(from, to)
                {
                    return Err(SqlError::new(SqlState::CannotCoerce, format!("cannot cast type {from} to {to}")));
                }
                Ok(typed(Expr::Cast(Box::new(inner.expr), to), to))
            }
            Ast::Function(f) => self.function(f),
            Ast::Subquery(_) | Ast::Exists { .. } | Ast::In { .. } => Err(SqlError::unsupported("subqueries")),
            Ast::Case { .. } => Err(SqlError::unsupported("CASE")),
            Ast::Like { .. } | Ast::ILike { .. } | Ast::SimilarTo { .. } => Err(SqlError::unsupported("LIKE")),
            Ast::Interval(_) | Ast::TypedString(_) => Err(SqlError::unsupported(format!("literal {e}"))),
            other => Err(SqlError::unsupported(format!("expression {other}"))),
        }
    }

    /// Binds `e` as a predicate (`WHERE`, `HAVING`): it must be BOOL.
    pub fn predicate(&mut self, e: &Ast) -> Result<Expr> {
        let t = self.bind(e, Some(DataType::Bool))?;
        match t.ty {
            None | Some(DataType::Bool) => Ok(t.expr),
            Some(ty) => Err(SqlError::new(
                SqlState::DatatypeMismatch,
                format!("argument of {} must be type BOOL, not type {ty}", self.clause),
            )),
        }
    }

    /// Binds `e` in plain mode (no aggregation), e.g. to compare it with GROUP BY expressions.
    fn plain(&mut self, e: &Ast, hint: Option<DataType>) -> Result<Typed> {
        ExprBinder { scope: self.scope, params: self.params, agg: None, clause: self.clause, depth: self.depth }
            .bind(e, hint)
    }

    fn group_match(&mut self, e: &Ast) -> Option<usize> {
        // Binding `e` here walks all of it, once per level of an enclosing chain: not without need.
        if matches!(e, Ast::Value(_)) || self.agg.as_deref().is_none_or(|a| a.group_by.is_empty()) {
            return None;
        }
        let bound = self.plain(e, None).ok()?;
        self.agg.as_deref()?.group_by.iter().position(|g| *g == bound.expr)
    }

    fn column(&mut self, qualifier: Option<&str>, id: &ast::Ident) -> Result<Typed> {
        let name = ident(id)?;
        let (index, ty) = self.scope.resolve(qualifier, &name)?;
        if self.agg.is_some() {
            return Err(SqlError::new(
                SqlState::GroupingError,
                format!("column \"{name}\" must appear in the GROUP BY clause or be used in an aggregate function"),
            ));
        }
        Ok(typed(Expr::Column(index), ty))
    }

    fn literal(&mut self, v: &ast::Value, hint: Option<DataType>) -> Result<Typed> {
        use ast::Value as V;
        let value = match v {
            V::Number(text, _) => parse_number(text, false)?,
            // A string literal has no type of its own (PostgreSQL's `unknown`): where the context
            // expects another type — a column in VALUES or SET, the other side of a comparison —
            // its text is read as that type, so '\x00ff' is BYTES and '42' an INT there.
            V::SingleQuotedString(s)
            | V::EscapedStringLiteral(s)
            | V::NationalStringLiteral(s)
            | V::UnicodeStringLiteral(s)
            | V::DollarQuotedString(ast::DollarQuotedString { value: s, .. }) => match hint.map(DataType::input) {
                Some(ty) if ty != DataType::Text => parse_text(s, ty)?,
                _ => Value::Text(s.clone()),
            },
            V::HexStringLiteral(h) => Value::Bytes(
                unhex(h).ok_or_else(|| SqlError::syntax(format!("invalid hexadecimal literal x'{h}'"), None))?,
            ),
            V::Boolean(b) => Value::Bool(*b),
            V::Null => Value::Null,
            V::Placeholder(p) => {
                let n: usize = p
                    .strip_prefix('$')
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| SqlError::unsupported(format!("parameter {p} (write $1, $2, …)")))?;
                if n > u16::MAX as usize {
                    return Err(SqlError::new(SqlState::ProgramLimitExceeded, format!("parameter ${n} is too high")));
                }
                let (expr, ty) = self.params.bind(n, hint)?;
                return Ok(Typed { expr, ty });
            }
            other => return Err(SqlError::unsupported(format!("literal {other}"))),
        };
        let ty = value.data_type();
        Ok(Typed { expr: Expr::Const(value), ty })
    }

    fn unary(&mut self, op: UnaryOperator, inner: &Ast, hint: Option<DataType>) -> Result<Typed> {
        match op {
            UnaryOperator::Minus => {
                // Fold `-<number>` so that -9223372036854775808 is a valid INT.
                if let Ast::Value(v) = inner
                    && let ast::Value::Number(text, _) = &v.value
                {
                    let value = parse_number(text, true)?;
                    let ty = value.data_type();
                    return Ok(Typed { expr: Expr::Const(value), ty });
                }
                let t = self.bind(inner, hint)?;
                check_numeric("-", inner, &t)?;
                Ok(Typed { expr: Expr::Neg(Box::new(t.expr)), ty: t.ty })
            }
            UnaryOperator::Plus => {
                let t = self.bind(inner, hint)?;
                check_numeric("+", inner, &t)?;
                Ok(t)
            }
            UnaryOperator::Not => {
                let t = self.bind(inner, Some(DataType::Bool))?;
                check_bool("NOT", inner, &t)?;
                Ok(typed(Expr::Not(Box::new(t.expr)), DataType::Bool))
            }
            other => Err(SqlError::unsupported(format!("operator {other}"))),
        }
    }

    /// Binds both sides, the second (or, if the first is a bare parameter or string literal, the
    /// first) with the other's type as hint.
    fn pair(&mut self, left: &Ast, right: &Ast, hint: Option<DataType>) -> Result<(Typed, Typed)> {
        if is_untyped(left) && !is_untyped(right) {
            let r = self.bind(right, hint)?;
            let l = self.bind(left, r.ty.or(hint))?;
            Ok((l, r))
        } else {
            let l = self.bind(left, hint)?;
            let r = self.bind(right, l.ty.or(hint))?;
            Ok((l, r))
        }
    }

    fn compare(&mut self, op: CmpOp, left: &Ast, right: &Ast) -> Result<Expr> {
        let (l, r) = self.pair(left, right, None)?;
        check_comparable(left, &l, right, &r)?;
        Ok(Expr::Cmp(op, Box::new(l.expr), Box::new(r.expr)))
    }

    /// A binary operator, or a chain of them. `sqlparser` builds `a + b + c + …` left-deep, one
    /// level per operator, so a chain is bound in a loop up its left side rather than by recursing
    /// down it (right operands, shallow in a chain, recurse as usual). The order in which operands
    /// are bound and checked, their hints, and which error comes first are those of binding each
    /// level recursively.
    fn binary(&mut self, e: &Ast, hint: Option<DataType>) -> Result<Typed> {
        // From the top down: each level's operator and operands, and the hint its parent gives it.
        let mut spine: Vec<(Binary, &Ast, &Ast, Option<DataType>)> = Vec::new();
        let mut node = e;
        let mut node_hint = hint;
        while let Ast::BinaryOp { left, op, right } = node {
            let kind = Binary::of(op)?;
            spine.push((kind, left, right, node_hint));
            node_hint = kind.left_hint(node_hint);
            // A left operand that is a GROUP BY expression is one column of the aggregated row.
            if !matches!(left.as_ref(), Ast::BinaryOp { .. }) || self.agg.is_some() && self.group_match(left).is_some()
            {
                break;
            }
            node = left;
        }
        let (kind, left, right, node_hint) = spine.pop().expect("invariant: `e` is a binary operator");
        let (l, r) = self.operands(kind, left, right, node_hint)?;
        let mut acc = combine(kind, left, l, right, r)?;
        while let Some((kind, left, right, node_hint)) = spine.pop() {
            let r = self.bind(right, kind.right_hint(acc.ty, node_hint))?;
            acc = combine(kind, left, acc, right, r)?;
        }
        Ok(acc)
    }

    /// Binds both operands of one binary operator.
    fn operands(&mut self, kind: Binary, left: &Ast, right: &Ast, hint: Option<DataType>) -> Result<(Typed, Typed)> {
        match kind {
            Binary::And | Binary::Or => {
                let l = self.bind(left, Some(DataType::Bool))?;
                let r = self.bind(right, Some(DataType::Bool))?;
                Ok((l, r))
            }
            _ => self.pair(left, right, kind.left_hint(hint)),
        }
    }

    fn function(&mut self, f: &ast::Function) -> Result<Typed> {
        let name = f.name.to_string().to_lowercase();
        if f.over.is_some() {
            return Err(SqlError::unsupported("window functions"));
        }
        if !super::is_aggregate_name(&name) {
            return Err(SqlError::new(
                SqlState::UndefinedFunction,
                format!("function {name}() is not supported; Meridian has the aggregates COUNT, SUM, MIN, MAX and AVG"),
            ));
        }
        if f.filter.is_some() || !f.within_group.is_empty() || f.null_treatment.is_some() {
            return Err(SqlError::unsupported(format!("{} with FILTER/WITHIN GROUP", name.to_uppercase())));
        }
        if self.agg.is_none() {
            return Err(SqlError::new(
                SqlState::GroupingError,
                if self.clause == "aggregate arguments" {
                    "aggregate function calls cannot be nested".to_string()
                } else {
                    format!("aggregate functions are not allowed in {}", self.clause)
                },
            ));
        }
        let ast::FunctionArguments::List(list) = &f.args else {
            return Err(SqlError::unsupported(format!("{}() without an argument list", name.to_uppercase())));
        };
        if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
            return Err(SqlError::unsupported(format!("{}(DISTINCT …) and argument clauses", name.to_uppercase())));
        }
        let (func, arg) = match (name.as_str(), list.args.as_slice()) {
            ("count", [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard)]) => (AggFunc::CountStar, None),
            (_, [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(arg))]) => {
                let func = match name.as_str() {
                    "count" => AggFunc::Count,
                    "sum" => AggFunc::Sum,
                    "min" => AggFunc::Min,
                    "max" => AggFunc::Max,
                    _ => AggFunc::Avg,
                };
                (func, Some(arg))
            }
            _ => {
                return Err(SqlError::new(
                    SqlState::UndefinedFunction,
                    format!("{}() takes exactly one argument", name.to_uppercase()),
                ));
            }
        };
        let arg = match arg {
            None => None,
            Some(a) => {
                let mut inner = ExprBinder {
                    scope: self.scope,
                    params: self.params,
                    agg: None,
                    clause: "aggregate arguments",
                    depth: self.depth,
                };
                Some((inner.bind(a, None)?, a))
            }
        };
        let arg_ty = arg.as_ref().and_then(|(t, _)| t.ty);
        let result_ty = match func {
            AggFunc::CountStar | AggFunc::Count => Some(DataType::Int),
            AggFunc::Sum | AggFunc::Avg => {
                if let Some((t, a)) = &arg {
                    check_numeric(&name.to_uppercase(), a, t)?;
                }
                match (func, arg_ty) {
                    // PostgreSQL: AVG of floats is a float, of integers a numeric (`numeric.rs`).
                    (AggFunc::Avg, Some(DataType::Float)) => Some(DataType::Float),
                    (AggFunc::Avg, _) => Some(DataType::Numeric),
                    _ => Some(arg_ty.unwrap_or(DataType::Int)),
                }
            }
            AggFunc::Min | AggFunc::Max => arg_ty,
        };
        let call = AggCall { func, arg: arg.map(|(t, _)| t.expr), arg_ty };
        let ctx = self.agg.as_deref_mut().expect("invariant: checked is_some above");
        let slot = match ctx.calls.iter().position(|c| *c == call) {
            Some(i) => i,
            None => {
                ctx.calls.push(call);
                ctx.call_types.push(result_ty);
                ctx.calls.len() - 1
            }
        };
        Ok(Typed { expr: Expr::Column(ctx.group_by.len() + slot), ty: result_ty })
    }
}

/// The binary operators Meridian has, grouped by how their operands are typed.
#[derive(Debug, Clone, Copy)]
enum Binary {
    Cmp(CmpOp),
    Arith(ArithOp),
    And,
    Or,
    Concat,
}

impl Binary {
    fn of(op: &BinaryOperator) -> Result<Binary> {
        use BinaryOperator as B;
        Ok(match op {
            B::Eq => Binary::Cmp(CmpOp::Eq),
            B::NotEq => Binary::Cmp(CmpOp::NotEq),
            B::Lt => Binary::Cmp(CmpOp::Lt),
            B::LtEq => Binary::Cmp(CmpOp::LtEq),
            B::Gt => Binary::Cmp(CmpOp::Gt),
            B::GtEq => Binary::Cmp(CmpOp::GtEq),
            B::Plus => Binary::Arith(ArithOp::Add),
            B::Minus => Binary::Arith(ArithOp::Sub),
            B::Multiply => Binary::Arith(ArithOp::Mul),
            B::Divide => Binary::Arith(ArithOp::Div),
            B::Modulo => Binary::Arith(ArithOp::Rem),
            B::And => Binary::And,
            B::Or => Binary::Or,
            B::StringConcat => Binary::Concat,
            other => return Err(SqlError::unsupported(format!("operator {other}"))),
        })
    }

    /// The hint for the left operand (and, through [`ExprBinder::pair`], the right one's
    /// fallback), given the hint for the whole.
    fn left_hint(self, hint: Option<DataType>) -> Option<DataType> {
        match self {
            Binary::Cmp(_) => None,
            Binary::Arith(_) => hint.filter(|t| t.is_numeric()),
            Binary::And | Binary::Or => Some(DataType::Bool),
            Binary::Concat => hint.filter(|t| matches!(t, DataType::Text | DataType::Bytes)),
        }
    }

    /// The hint for the right operand once the left one has type `left`.
    fn right_hint(self, left: Option<DataType>, hint: Option<DataType>) -> Option<DataType> {
        match self {
            Binary::And | Binary::Or => Some(DataType::Bool),
            _ => left.or(self.left_hint(hint)),
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Binary::Cmp(_) => "a comparison",
            Binary::Arith(ArithOp::Add) => "+",
            Binary::Arith(ArithOp::Sub) => "-",
            Binary::Arith(ArithOp::Mul) => "*",
            Binary::Arith(ArithOp::Div) => "/",
            Binary::Arith(ArithOp::Rem) => "%",
            Binary::And => "AND",
            Binary::Or => "OR",
            Binary::Concat => "||",
        }
    }
}

/// Type-checks a binary operator's bound operands and builds it.
fn combine(kind: Binary, left: &Ast, l: Typed, right: &Ast, r: Typed) -> Result<Typed> {
    match kind {
        Binary::Cmp(_) => check_comparable(left, &l, right, &r)?,
        Binary::Arith(_) => {
            check_numeric(kind.symbol(), left, &l)?;
            check_numeric(kind.symbol(), right, &r)?;
        }
        Binary::And | Binary::Or => {
            check_bool(kind.symbol(), left, &l)?;
            check_bool(kind.symbol(), right, &r)?;
        }
        Binary::Concat => {}
    }
    let (a, b) = (Box::new(l.expr), Box::new(r.expr));
    match kind {
        Binary::Cmp(op) => Ok(typed(Expr::Cmp(op, a, b), DataType::Bool)),
        Binary::Arith(op) => {
            // Arithmetic on a NUMERIC (an AVG) is done in FLOAT (`numeric.rs`).
            let inexact = |t: Option<DataType>| matches!(t, Some(DataType::Float | DataType::Numeric));
            let ty = match (l.ty, r.ty) {
                _ if inexact(l.ty) || inexact(r.ty) => Some(DataType::Float),
                (None, None) => None,
                _ => Some(DataType::Int),
            };
            Ok(Typed { expr: Expr::Arith(op, a, b), ty })
        }
        Binary::And => Ok(typed(Expr::And(a, b), DataType::Bool)),
        Binary::Or => Ok(typed(Expr::Or(a, b), DataType::Bool)),
        Binary::Concat => {
            let ty = match (l.ty, r.ty) {
                (Some(x), Some(y)) if x == y && matches!(x, DataType::Text | DataType::Bytes) => Some(x),
                (Some(x @ (DataType::Text | DataType::Bytes)), None)
                | (None, Some(x @ (DataType::Text | DataType::Bytes))) => Some(x),
                (None, None) => Some(DataType::Text),
                _ => {
                    return Err(mismatch(format!(
                        "cannot apply || to {} ({}) and {} ({})",
                        label(left),
                        type_name(l.ty),
                        label(right),
                        type_name(r.ty)
                    )));
                }
            };
            Ok(Typed { expr: Expr::Concat(a, b), ty })
        }
    }
}

fn typed(expr: Expr, ty: DataType) -> Typed {
    Typed { expr, ty: Some(ty) }
}

fn is_placeholder(e: &Ast) -> bool {
    matches!(e, Ast::Value(v) if matches!(v.value, ast::Value::Placeholder(_)))
}

/// A parameter or a string literal: an operand whose type comes from the other side.
fn is_untyped(e: &Ast) -> bool {
    use ast::Value as V;
    is_placeholder(e)
        || matches!(e, Ast::Value(v) if matches!(
            v.value,
            V::SingleQuotedString(_)
                | V::EscapedStringLiteral(_)
                | V::NationalStringLiteral(_)
                | V::UnicodeStringLiteral(_)
                | V::DollarQuotedString(_)
        ))
}

/// Parses a numeric literal: INT if it has no fraction or exponent, else FLOAT.
fn parse_number(text: &str, negative: bool) -> Result<Value> {
    let signed = if negative { format!("-{text}") } else { text.to_string() };
    if text.contains(['.', 'e', 'E']) {
        let f: f64 = signed
            .parse()
            .map_err(|_| SqlError::new(SqlState::InvalidTextRepresentation, format!("invalid number {signed}")))?;
        if !f.is_finite() {
            return Err(SqlError::new(SqlState::NumericValueOutOfRange, format!("value out of range: {signed}")));
        }
        return Ok(Value::Float(f));
    }
    signed.parse::<i64>().map(Value::Int).map_err(|_| {
        if text.bytes().all(|b| b.is_ascii_digit()) {
            SqlError::new(
                SqlState::NumericValueOutOfRange,
                format!("integer out of range: {signed} (INT is 64 bits; write a FLOAT like {signed}.0)"),
            )
        } else {
            SqlError::new(SqlState::InvalidTextRepresentation, format!("invalid number {signed}"))
        }
    })
}

/// How an operand is named in messages: `column "x"` or its SQL text.
pub fn label(e: &Ast) -> String {
    match e {
        Ast::Identifier(id) => format!("column \"{}\"", id.value),
        Ast::CompoundIdentifier(ids) => format!("column \"{}\"", ids.last().map(|i| i.value.as_str()).unwrap_or("")),
        other => other.to_string(),
    }
}

/// A type name for messages; the NULL literal's type is "unknown".
pub fn type_name(ty: Option<DataType>) -> String {
    ty.map_or_else(|| "unknown".to_string(), |t| t.to_string())
}

fn mismatch(message: String) -> SqlError {
    SqlError::new(SqlState::DatatypeMismatch, message)
}

fn check_comparable(left: &Ast, l: &Typed, right: &Ast, r: &Typed) -> Result<()> {
    match (l.ty, r.ty) {
        (Some(a), Some(b)) if a != b && !(a.is_numeric() && b.is_numeric()) => {
            Err(mismatch(format!("cannot compare {} ({a}) with {} ({b})", label(left), label(right))))
        }
        _ => Ok(()),
    }
}

fn check_numeric(op: &str, e: &Ast, t: &Typed) -> Result<()> {
    match t.ty {
        Some(ty) if !ty.is_numeric() => {
            Err(mismatch(format!("cannot apply {op} to {} of type {ty}: it needs INT or FLOAT", label(e))))
        }
        _ => Ok(()),
    }
}

fn check_bool(op: &str, e: &Ast, t: &Typed) -> Result<()> {
    match t.ty {
        Some(ty) if ty != DataType::Bool => {
            Err(mismatch(format!("argument of {op} must be type BOOL, not type {ty} ({})", label(e))))
        }
        _ => Ok(()),
    }
}

/// Converts a bound expression of type `from` to a column of type `to` (INT widens to FLOAT), or
/// says which column refused it.
pub fn assign(t: Typed, to: DataType, column: &str) -> Result<Expr> {
    match t.ty {
        None => Ok(t.expr),
        Some(from) if from == to => Ok(t.expr),
        Some(DataType::Int) if to == DataType::Float => Ok(Expr::Cast(Box::new(t.expr), DataType::Float)),
        Some(from) => {
            Err(mismatch(format!("column \"{column}\" is of type {to} but the expression is of type {from}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounds::{EXPR_DEPTH_MAX, WALK_DEPTH_MAX};

    fn one() -> Ast {
        Ast::Value(ast::Value::Number("1".into(), false).into())
    }

    /// `1 + (1 + (1 + …))` without the parentheses, `depth` levels: a shape the parser never
    /// builds from text that passes `bounds.rs` — only the binder's own counter stands in its way.
    fn right_deep(depth: usize) -> Ast {
        let mut e = one();
        for _ in 0..depth {
            e = Ast::BinaryOp { left: Box::new(one()), op: BinaryOperator::Plus, right: Box::new(e) };
        }
        e
    }

    fn bind(e: &Ast) -> Result<Typed> {
        let scope = Scope::empty();
        let mut params = Params::with_values(&[]);
        ExprBinder { scope: &scope, params: &mut params, agg: None, clause: "SELECT", depth: Depth::default() }
            .bind(e, None)
    }

    #[test]
    fn the_binder_counts_its_depth_as_a_second_line() {
        let e = bind(&right_deep(WALK_DEPTH_MAX + 10)).expect_err("too deep for the binder");
        assert_eq!(e.code, SqlState::ProgramLimitExceeded);
        assert!(e.message.contains(&format!("the limit is {EXPR_DEPTH_MAX}")), "{}", e.message);
        let t = bind(&right_deep(EXPR_DEPTH_MAX)).expect("the depth bound itself binds");
        assert_eq!(t.expr.eval(&[]).expect("evaluates"), Value::Int(EXPR_DEPTH_MAX as i64 + 1));
    }

    #[test]
    fn left_deep_chains_bind_without_recursing_and_keep_their_checks() {
        // Five times deeper than a statement may be, and deeper than the recursive binder could go
        // on a test thread's 2 MiB: bound in a loop.
        let mut e = one();
        for _ in 0..5 * EXPR_DEPTH_MAX {
            e = Ast::BinaryOp { left: Box::new(e), op: BinaryOperator::Plus, right: Box::new(one()) };
        }
        let t = bind(&e).expect("a left-deep chain binds in a loop");
        assert_eq!(t.ty, Some(DataType::Int));
        // The type check of every level still runs: a BOOL operand deep in the chain is found.
        let mut e = Ast::Value(ast::Value::Boolean(true).into());
        for _ in 0..100 {
            e = Ast::BinaryOp { left: Box::new(e), op: BinaryOperator::Plus, right: Box::new(one()) };
        }
        let err = bind(&e).expect_err("BOOL + INT");
        assert!(err.message.contains("cannot apply + to true of type BOOL"), "{err:?}");
        assert_eq!(err.code, SqlState::DatatypeMismatch, "{err:?}");
    }
}
