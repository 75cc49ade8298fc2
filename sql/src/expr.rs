//! Bound expressions and their evaluation.
//!
//! The binder (`bind/`) turns `sqlparser` expressions into [`Expr`]: names are resolved to column
//! positions in the input row, parameters to constants, and every expression has been type-checked,
//! so evaluation cannot meet a type error — only runtime errors (overflow, division by zero, a cast
//! of bad text), each with its SQLSTATE.
//!
//! SQL's three-valued logic: comparisons and arithmetic with a NULL operand give NULL; `AND`/`OR`
//! follow the truth tables (`FALSE AND NULL = FALSE`, `TRUE OR NULL = TRUE`); a `WHERE` keeps only
//! rows where the predicate is TRUE. Integer arithmetic is checked (overflow is `22003`); float
//! arithmetic that overflows to infinity from finite operands is an error too, as in PostgreSQL.

use std::cmp::Ordering;

use crate::bounds::Depth;
use crate::error::{Result, SqlError, SqlState};
use crate::types::{DataType, Value, parse_text};

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/` (integer division truncates toward zero)
    Div,
    /// `%`
    Rem,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>`, `!=`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
}

impl CmpOp {
    /// The operator with its operands swapped (`a < b` ⇔ `b > a`).
    pub fn flip(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::LtEq => CmpOp::GtEq,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::GtEq => CmpOp::LtEq,
            other => other,
        }
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Eq => ord == Ordering::Equal,
            CmpOp::NotEq => ord != Ordering::Equal,
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::LtEq => ord != Ordering::Greater,
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::GtEq => ord != Ordering::Less,
        }
    }
}

/// A bound, type-checked expression over an input row.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A constant (literals and, when executing, parameters).
    Const(Value),
    /// A parameter whose value is not known (only when describing a statement).
    Param(usize),
    /// The input row's column at this position.
    Column(usize),
    /// Unary minus.
    Neg(Box<Expr>),
    /// Logical NOT.
    Not(Box<Expr>),
    /// Arithmetic.
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    /// `||` on TEXT or BYTES.
    Concat(Box<Expr>, Box<Expr>),
    /// Comparison.
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// Logical AND.
    And(Box<Expr>, Box<Expr>),
    /// Logical OR.
    Or(Box<Expr>, Box<Expr>),
    /// `IS NULL` (or `IS NOT NULL` when the flag is set).
    IsNull(Box<Expr>, bool),
    /// `CAST(e AS ty)` / `e::ty`.
    Cast(Box<Expr>, DataType),
    /// `e [NOT] IN (list)`.
    InList(Box<Expr>, Vec<Expr>, bool),
}

impl Expr {
    /// Whether the expression reads no column (and no unknown parameter): it can be evaluated once.
    pub fn is_constant(&self) -> bool {
        match self {
            Expr::Const(_) => true,
            Expr::Param(_) | Expr::Column(_) => false,
            Expr::Neg(e) | Expr::Not(e) | Expr::IsNull(e, _) | Expr::Cast(e, _) => e.is_constant(),
            Expr::Arith(_, a, b) | Expr::Concat(a, b) | Expr::Cmp(_, a, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                a.is_constant() && b.is_constant()
            }
            Expr::InList(e, list, _) => e.is_constant() && list.iter().all(Expr::is_constant),
        }
    }

    /// Evaluates the expression over `row`.
    pub fn eval(&self, row: &[Value]) -> Result<Value> {
        self.eval_at(row, Depth::default())
    }

    /// Evaluates at `depth` below the top. The recursion is as deep as the expression, which the
    /// binder bounds; the counter is a second line (`bounds.rs`). Each operator's work is in a
    /// function of its own so that the frame repeated per level stays small.
    fn eval_at(&self, row: &[Value], depth: Depth) -> Result<Value> {
        let depth = depth.enter()?;
        match self {
            Expr::Const(v) => Ok(v.clone()),
            Expr::Param(n) => Err(SqlError::internal(format!("parameter ${} evaluated without a value", n + 1))),
            Expr::Column(i) => {
                row.get(*i).cloned().ok_or_else(|| SqlError::internal(format!("column {i} outside the row")))
            }
            Expr::Neg(e) => neg(e.eval_at(row, depth)?),
            Expr::Not(e) => not(e.eval_at(row, depth)?),
            Expr::Arith(op, a, b) => arith(*op, a.eval_at(row, depth)?, b.eval_at(row, depth)?),
            Expr::Concat(a, b) => concat(a.eval_at(row, depth)?, b.eval_at(row, depth)?),
            Expr::Cmp(op, a, b) => compare(*op, &a.eval_at(row, depth)?, &b.eval_at(row, depth)?),
            Expr::And(a, b) => logic(a.eval_at(row, depth)?, b.eval_at(row, depth)?, false),
            Expr::Or(a, b) => logic(a.eval_at(row, depth)?, b.eval_at(row, depth)?, true),
            Expr::IsNull(e, negated) => Ok(Value::Bool(e.eval_at(row, depth)?.is_null() != *negated)),
            Expr::Cast(e, ty) => cast(e.eval_at(row, depth)?, *ty),
            Expr::InList(e, list, negated) => in_list(e.eval_at(row, depth)?, list, *negated, row, depth),
        }
    }

    /// Evaluates a predicate: whether it is TRUE (NULL and FALSE both reject the row).
    pub fn is_true(&self, row: &[Value]) -> Result<bool> {
        Ok(truth(self.eval(row)?)? == Some(true))
    }
}

#[inline(never)]
fn neg(v: Value) -> Result<Value> {
    match v {
        Value::Null => Ok(Value::Null),
        Value::Int(i) => Ok(Value::Int(i.checked_neg().ok_or_else(int_overflow)?)),
        Value::Float(f) => Ok(Value::Float(-f)),
        other => Err(type_bug("-", &other)),
    }
}

#[inline(never)]
fn not(v: Value) -> Result<Value> {
    match v {
        Value::Null => Ok(Value::Null),
        Value::Bool(b) => Ok(Value::Bool(!b)),
        other => Err(type_bug("NOT", &other)),
    }
}

#[inline(never)]
fn concat(a: Value, b: Value) -> Result<Value> {
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => Ok(Value::Null),
        (Value::Text(x), Value::Text(y)) => Ok(Value::Text(x + &y)),
        (Value::Bytes(mut x), Value::Bytes(y)) => {
            x.extend_from_slice(&y);
            Ok(Value::Bytes(x))
        }
        (other, _) => Err(type_bug("||", &other)),
    }
}

#[inline(never)]
fn compare(op: CmpOp, a: &Value, b: &Value) -> Result<Value> {
    Ok(match a.sql_cmp(b) {
        None => Value::Null,
        Some(ord) => Value::Bool(op.holds(ord)),
    })
}

/// `AND` (`dominant` false) and `OR` (`dominant` true): an operand equal to `dominant` decides;
/// otherwise a NULL operand makes the result unknown.
#[inline(never)]
fn logic(a: Value, b: Value, dominant: bool) -> Result<Value> {
    let (a, b) = (truth(a)?, truth(b)?);
    Ok(if a == Some(dominant) || b == Some(dominant) {
        Value::Bool(dominant)
    } else if a.is_some() && b.is_some() {
        Value::Bool(!dominant)
    } else {
        Value::Null
    })
}

#[inline(never)]
fn in_list(needle: Value, list: &[Expr], negated: bool, row: &[Value], depth: Depth) -> Result<Value> {
    if needle.is_null() {
        return Ok(Value::Null);
    }
    let mut saw_null = false;
    for item in list {
        match needle.sql_cmp(&item.eval_at(row, depth)?) {
            Some(Ordering::Equal) => return Ok(Value::Bool(!negated)),
            None => saw_null = true,
            Some(_) => {}
        }
    }
    Ok(if saw_null { Value::Null } else { Value::Bool(negated) })
}

fn truth(v: Value) -> Result<Option<bool>> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(b)),
        other => Err(type_bug("a condition", &other)),
    }
}

fn int_overflow() -> SqlError {
    SqlError::new(SqlState::NumericValueOutOfRange, "integer out of range")
}

fn type_bug(op: &str, v: &Value) -> SqlError {
    SqlError::internal(format!("{op} applied to {} after type checking", v.literal()))
}

#[inline(never)]
fn arith(op: ArithOp, a: Value, b: Value) -> Result<Value> {
    let division_by_zero = || SqlError::new(SqlState::DivisionByZero, "division by zero");
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => Ok(Value::Null),
        (Value::Int(x), Value::Int(y)) => {
            let result = match op {
                ArithOp::Add => x.checked_add(y),
                ArithOp::Sub => x.checked_sub(y),
                ArithOp::Mul => x.checked_mul(y),
                ArithOp::Div if y == 0 => return Err(division_by_zero()),
                ArithOp::Div => x.checked_div(y),
                ArithOp::Rem if y == 0 => return Err(division_by_zero()),
                // i64::MIN % -1 overflows in Rust, but its value is 0, as PostgreSQL says.
                ArithOp::Rem if y == -1 => Some(0),
                ArithOp::Rem => x.checked_rem(y),
            };
            result.map(Value::Int).ok_or_else(int_overflow)
        }
        (a, b) => {
            let (Some(x), Some(y)) = (as_float(&a), as_float(&b)) else {
                return Err(type_bug("arithmetic", &a));
            };
            let result = match op {
                ArithOp::Add => x + y,
                ArithOp::Sub => x - y,
                ArithOp::Mul => x * y,
                ArithOp::Div if y == 0.0 => return Err(division_by_zero()),
                ArithOp::Div => x / y,
                ArithOp::Rem if y == 0.0 => return Err(division_by_zero()),
                ArithOp::Rem => x % y,
            };
            if result.is_infinite() && x.is_finite() && y.is_finite() {
                return Err(SqlError::new(SqlState::NumericValueOutOfRange, "value out of range: overflow"));
            }
            Ok(Value::Float(result))
        }
    }
}

fn as_float(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Numeric(n) => Some(n.to_f64()),
        _ => None,
    }
}

/// Whether `CAST(x AS to)` is allowed for an `x` of type `from`.
pub fn can_cast(from: DataType, to: DataType) -> bool {
    use DataType::*;
    from == to
        || matches!(
            (from, to),
            (Int, Float) | (Float, Int) | (Int, Bool) | (Bool, Int) | (Numeric, Int | Float) | (_, Text) | (Text, _)
        )
}

/// Converts `v` to `ty` (the binder has checked [`can_cast`]).
#[inline(never)]
pub fn cast(v: Value, ty: DataType) -> Result<Value> {
    let out_of_range = || SqlError::new(SqlState::NumericValueOutOfRange, format!("value out of range for type {ty}"));
    Ok(match (v, ty) {
        (Value::Null, _) => Value::Null,
        (Value::Int(i), DataType::Float) => Value::Float(i as f64),
        (Value::Float(f), DataType::Int) => {
            let rounded = f.round_ties_even();
            // 2^63 is the first float above i64::MAX; everything in [-2^63, 2^63) converts exactly.
            if !(-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&rounded) {
                return Err(out_of_range());
            }
            Value::Int(rounded as i64)
        }
        (Value::Int(i), DataType::Bool) => Value::Bool(i != 0),
        (Value::Numeric(n), DataType::Int) => Value::Int(n.round().ok_or_else(out_of_range)?),
        (Value::Numeric(n), DataType::Float) => Value::Float(n.to_f64()),
        (Value::Bool(b), DataType::Int) => Value::Int(i64::from(b)),
        (Value::Text(s), ty) => parse_text(&s, ty)?,
        (v, DataType::Text) => Value::Text(v.to_string()),
        (v, ty) if v.data_type() == Some(ty) => v,
        (v, ty) => return Err(SqlError::internal(format!("cast of {} to {ty} after type checking", v.literal()))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(v: Value) -> Box<Expr> {
        Box::new(Expr::Const(v))
    }

    #[test]
    fn evaluation_counts_its_depth_as_a_second_line() {
        use crate::bounds::{EXPR_DEPTH_MAX, WALK_DEPTH_MAX};
        let chain = |depth: usize| {
            let mut e = Expr::Const(Value::Int(1));
            for _ in 0..depth {
                e = Expr::Arith(ArithOp::Add, Box::new(e), c(Value::Int(1)));
            }
            e
        };
        let e = chain(WALK_DEPTH_MAX + 10).eval(&[]).expect_err("too deep to evaluate");
        assert_eq!(e.code, SqlState::ProgramLimitExceeded);
        assert!(e.message.contains(&format!("the limit is {EXPR_DEPTH_MAX}")), "{}", e.message);
        assert_eq!(
            chain(EXPR_DEPTH_MAX).eval(&[]).expect("the bound evaluates"),
            Value::Int(EXPR_DEPTH_MAX as i64 + 1)
        );
    }

    #[test]
    fn three_valued_logic() {
        let and = Expr::And(c(Value::Bool(false)), c(Value::Null));
        assert_eq!(and.eval(&[]).unwrap(), Value::Bool(false));
        let or = Expr::Or(c(Value::Null), c(Value::Bool(true)));
        assert_eq!(or.eval(&[]).unwrap(), Value::Bool(true));
        let cmp = Expr::Cmp(CmpOp::Eq, c(Value::Null), c(Value::Null));
        assert_eq!(cmp.eval(&[]).unwrap(), Value::Null);
        assert!(!cmp.is_true(&[]).unwrap());
        let not_in = Expr::InList(c(Value::Int(1)), vec![Expr::Const(Value::Int(2)), Expr::Const(Value::Null)], true);
        assert_eq!(not_in.eval(&[]).unwrap(), Value::Null);
    }

    #[test]
    fn arithmetic_errors() {
        let e = |op, a, b| Expr::Arith(op, c(a), c(b)).eval(&[]);
        assert_eq!(
            e(ArithOp::Add, Value::Int(i64::MAX), Value::Int(1)).unwrap_err().code,
            SqlState::NumericValueOutOfRange
        );
        assert_eq!(e(ArithOp::Div, Value::Int(1), Value::Int(0)).unwrap_err().code, SqlState::DivisionByZero);
        assert_eq!(
            e(ArithOp::Div, Value::Int(i64::MIN), Value::Int(-1)).unwrap_err().code,
            SqlState::NumericValueOutOfRange
        );
        assert_eq!(e(ArithOp::Rem, Value::Int(i64::MIN), Value::Int(-1)).unwrap(), Value::Int(0));
        assert_eq!(e(ArithOp::Div, Value::Int(-7), Value::Int(2)).unwrap(), Value::Int(-3));
        assert_eq!(
            e(ArithOp::Mul, Value::Float(1e308), Value::Int(10)).unwrap_err().code,
            SqlState::NumericValueOutOfRange
        );
        assert_eq!(e(ArithOp::Add, Value::Int(1), Value::Float(0.5)).unwrap(), Value::Float(1.5));
        assert_eq!(Expr::Neg(c(Value::Int(i64::MIN))).eval(&[]).unwrap_err().code, SqlState::NumericValueOutOfRange);
    }

    #[test]
    fn casts() {
        assert_eq!(cast(Value::Float(2.5), DataType::Int).unwrap(), Value::Int(2));
        assert_eq!(cast(Value::Float(1e19), DataType::Int).unwrap_err().code, SqlState::NumericValueOutOfRange);
        assert_eq!(cast(Value::Float(f64::NAN), DataType::Int).unwrap_err().code, SqlState::NumericValueOutOfRange);
        assert_eq!(cast(Value::Text("12".into()), DataType::Int).unwrap(), Value::Int(12));
        assert_eq!(cast(Value::Int(12), DataType::Text).unwrap(), Value::Text("12".into()));
        assert_eq!(cast(Value::Bytes(vec![1]), DataType::Text).unwrap(), Value::Text("\\x01".into()));
        assert!(!can_cast(DataType::Bytes, DataType::Int));
        assert!(can_cast(DataType::Text, DataType::Bytes));
    }
}
