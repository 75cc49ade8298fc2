//! From text to `sqlparser` statements, plus the two bits of syntax PostgreSQL does not have.
//!
//! ```text
//!   text ──tokenize──► tokens ──split at ';'──► per statement:
//!        rewrite  UPSERT INTO …                       → INSERT INTO …   (+ flag)
//!        remove   AS OF SYSTEM TIME '<literal>'       → (+ AsOf)
//!        ──sqlparser (PostgreSQL dialect)──► ast::Statement
//! ```
//!
//! `UPSERT` and `AS OF SYSTEM TIME` are CockroachDB syntax; rewriting tokens (which keep their
//! original line/column) keeps every error position pointing into the text the user typed.
//!
//! `AS OF SYSTEM TIME` takes a string literal, in one of two forms:
//! - a Meridian timestamp, `'1732450000.123456789'` (seconds.nanoseconds since the epoch, as
//!   printed in results) or integer nanoseconds: an exact snapshot ([`AsOf::At`]);
//! - a negative interval, `'-10s'`, `'-500ms'`, `'-1.5m'`, units `ns us ms s m h`: a snapshot at
//!   most that old ([`AsOf::Stale`], bounded staleness).
//!
//! Syntax errors carry PostgreSQL's 1-based character `position` and say
//! `syntax error at line L column C: …`. Recursion depth is bounded ([`PARSE_DEPTH_MAX`]) so a
//! hostile `((((…` is an error, not a stack overflow; and before the parser builds anything, each
//! statement's tokens are measured against the bounds of [`crate::bounds`], because a long flat
//! chain (`1 + 1 + … + 1`) parses in a loop into a tree as deep as it is long.

use std::time::Duration;

use meridian_truetime::Timestamp;
use sqlparser::ast;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer, Whitespace};

use crate::bounds;
use crate::error::{Result, SqlError, SqlState};

/// Longest SQL text accepted, in bytes.
pub const SQL_TEXT_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most statements in one `execute` call.
pub const STATEMENTS_PER_CALL_MAX: usize = 10_000;
/// Deepest expression nesting the parser accepts.
pub const PARSE_DEPTH_MAX: usize = 64;

/// The snapshot an `AS OF SYSTEM TIME` clause asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Exactly this timestamp.
    At(Timestamp),
    /// At most this old.
    Stale(Duration),
}

/// One parsed statement with Meridian's extra syntax pulled out.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The statement (`UPSERT` already turned into `INSERT`).
    pub stmt: ast::Statement,
    /// Whether the statement was written `UPSERT`.
    pub upsert: bool,
    /// The `AS OF SYSTEM TIME` clause, if any.
    pub as_of: Option<AsOf>,
    /// How deep its expressions nest, as [`crate::bounds`] counts (at most
    /// [`crate::bounds::EXPR_DEPTH_MAX`]).
    pub depth: usize,
}

/// Parses `sql` into statements. Empty statements (`;;`, comments) are skipped.
pub fn parse(sql: &str) -> Result<Vec<Parsed>> {
    if sql.len() > SQL_TEXT_BYTES_MAX {
        return Err(SqlError::new(
            SqlState::ProgramLimitExceeded,
            format!("statement text is {} bytes; the limit is {SQL_TEXT_BYTES_MAX} bytes", sql.len()),
        ));
    }
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql).tokenize_with_location().map_err(|e| {
        let (message, location) = split_location(&e.message);
        let location = location.or(Some(e.location));
        syntax_error(sql, message, location)
    })?;
    let mut statements = Vec::new();
    for chunk in tokens.split(|t| t.token == Token::SemiColon) {
        if chunk.iter().all(|t| matches!(t.token, Token::Whitespace(_) | Token::EOF)) {
            continue;
        }
        if statements.len() >= STATEMENTS_PER_CALL_MAX {
            return Err(SqlError::new(
                SqlState::ProgramLimitExceeded,
                format!("more than {STATEMENTS_PER_CALL_MAX} statements in one call; send them in several"),
            ));
        }
        statements.push(parse_one(sql, chunk.to_vec())?);
    }
    Ok(statements)
}

fn parse_one(sql: &str, mut tokens: Vec<TokenWithSpan>) -> Result<Parsed> {
    let significant: Vec<usize> =
        (0..tokens.len()).filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_) | Token::EOF)).collect();
    let end_location = tokens.iter().rev().find(|t| !matches!(t.token, Token::EOF)).map(|t| t.span.end);

    let upsert = significant.first().is_some_and(|&i| is_word(&tokens[i].token, "UPSERT"));
    if upsert {
        let i = significant[0];
        tokens[i].token = Token::make_keyword("INSERT");
    }

    let mut as_of = None;
    let is_word_at = |tokens: &[TokenWithSpan], k: usize, word: &str| {
        significant.get(k).is_some_and(|&i| is_word(&tokens[i].token, word))
    };
    if let Some(k) = (0..significant.len()).find(|&k| {
        is_word_at(&tokens, k, "AS")
            && is_word_at(&tokens, k + 1, "OF")
            && is_word_at(&tokens, k + 2, "SYSTEM")
            && is_word_at(&tokens, k + 3, "TIME")
    }) {
        let clause_start = tokens[significant[k]].span.start;
        let literal = significant.get(k + 4).map(|&i| &tokens[i]);
        let text = match literal.map(|t| &t.token) {
            Some(Token::SingleQuotedString(s)) => s.clone(),
            Some(Token::Number(n, _)) => n.clone(),
            _ => {
                return Err(syntax_error(
                    sql,
                    "AS OF SYSTEM TIME expects a string literal: a timestamp like '1732450000.123456789' or a \
                     negative interval like '-10s'",
                    Some(clause_start),
                ));
            }
        };
        as_of = Some(parse_as_of(&text).map_err(|e| SqlError { position: position(sql, clause_start), ..e })?);
        // Blank out the clause (keeping token positions for later errors).
        for &i in &significant[k..k + 5] {
            tokens[i].token = Token::Whitespace(Whitespace::Space);
        }
        if (k + 5..significant.len()).any(|j| {
            is_word_at(&tokens, j, "AS") && is_word_at(&tokens, j + 1, "OF") && is_word_at(&tokens, j + 2, "SYSTEM")
        }) {
            return Err(syntax_error(sql, "AS OF SYSTEM TIME may appear only once", Some(clause_start)));
        }
    }

    // Before the parser builds a tree that every later walk would recurse over (`bounds.rs`).
    let depth = bounds::check_tokens(&tokens)?;
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect).with_recursion_limit(PARSE_DEPTH_MAX).with_tokens_with_locations(tokens);
    let mut stmts = parser.parse_statements().map_err(|e| parser_error(sql, e, end_location))?;
    assert!(stmts.len() <= 1, "invariant: the text was split at every ';' token, so one chunk is one statement");
    let stmt = stmts.pop().ok_or_else(|| syntax_error(sql, "empty statement", end_location))?;
    Ok(Parsed { stmt, upsert, as_of, depth })
}

fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// Parses the literal of `AS OF SYSTEM TIME`.
pub fn parse_as_of(text: &str) -> Result<AsOf> {
    let text = text.trim();
    let bad = |why: &str| {
        SqlError::new(
            SqlState::InvalidParameterValue,
            format!(
                "AS OF SYSTEM TIME {text:?}: {why}; write a timestamp like '1732450000.123456789' (seconds since \
                 the epoch) or a negative interval like '-10s' or '-500ms'"
            ),
        )
    };
    if let Some(interval) = text.strip_prefix('-') {
        let split = interval.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(|| bad("missing unit"))?;
        let (number, unit) = interval.split_at(split);
        let number: f64 = number.parse().map_err(|_| bad("not a number"))?;
        let unit_ns = match unit.trim() {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" | "min" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad("unknown unit (use ns, us, ms, s, m or h)")),
        };
        let nanos = number * unit_ns;
        if !nanos.is_finite() || nanos > u64::MAX as f64 {
            return Err(bad("interval out of range"));
        }
        return Ok(AsOf::Stale(Duration::from_nanos(nanos as u64)));
    }
    // A number with a unit ('10s', '+5m') is an interval into the future; anything else that is
    // not a timestamp ('yesterday') is just not one.
    let unsigned = text.strip_prefix('+').unwrap_or(text);
    if unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.') && text.ends_with(|c: char| c.is_alphabetic()) {
        return Err(bad("an interval must be negative (in the past)"));
    }
    Timestamp::parse(text).map(AsOf::At).map_err(|_| bad("not a timestamp"))
}

/// Turns a `sqlparser` error into a syntax error with a position.
fn parser_error(sql: &str, err: ParserError, end: Option<Location>) -> SqlError {
    match err {
        ParserError::RecursionLimitExceeded => SqlError::new(
            SqlState::ProgramLimitExceeded,
            format!("statement is nested too deeply (more than {PARSE_DEPTH_MAX} levels)"),
        ),
        ParserError::TokenizerError(message) | ParserError::ParserError(message) => {
            let (message, location) = split_location(&message);
            // sqlparser reports no location for "found: EOF": point just past the statement.
            syntax_error(sql, message, location.or(end))
        }
    }
}

/// Splits sqlparser's `"… at Line: L, Column: C"` suffix off a message.
fn split_location(message: &str) -> (&str, Option<Location>) {
    if let Some((text, at)) = message.rsplit_once(" at Line: ")
        && let Some((line, column)) = at.split_once(", Column: ")
        && let (Ok(line), Ok(column)) = (line.trim().parse(), column.trim().parse())
    {
        return (text, Some(Location { line, column }));
    }
    (message, None)
}

fn syntax_error(sql: &str, message: &str, location: Option<Location>) -> SqlError {
    match location.filter(|l| l.line > 0) {
        Some(l) => SqlError::syntax(
            format!("syntax error at line {} column {}: {message}", l.line, l.column),
            position(sql, l),
        ),
        None => SqlError::syntax(format!("syntax error: {message}"), None),
    }
}

/// 1-based character offset of a line/column location in `sql`.
fn position(sql: &str, location: Location) -> Option<usize> {
    if location.line == 0 {
        return None;
    }
    let mut offset = 0usize;
    for (i, line) in sql.split('\n').enumerate() {
        if i as u64 + 1 == location.line {
            let column = usize::try_from(location.column).ok()?.max(1);
            return Some(offset + column);
        }
        offset += line.chars().count() + 1;
    }
    Some(offset.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_and_skips_empty_ones() {
        let parsed = parse("SELECT 1; ; -- nothing\nSELECT 'a;b';").unwrap();
        assert_eq!(parsed.len(), 2);
        assert!(parse("  ").unwrap().is_empty());
    }

    #[test]
    fn upsert_and_as_of() {
        let p = parse("upsert into t values (1)").unwrap().remove(0);
        assert!(p.upsert);
        assert!(matches!(p.stmt, ast::Statement::Insert(_)));
        let p = parse("SELECT * FROM t AS OF SYSTEM TIME '-10s' WHERE a = 1").unwrap().remove(0);
        assert_eq!(p.as_of, Some(AsOf::Stale(Duration::from_secs(10))));
        let p = parse("BEGIN AS OF SYSTEM TIME '1732450000.5'").unwrap().remove(0);
        assert_eq!(p.as_of, Some(AsOf::At(Timestamp::from_millis(1_732_450_000_500))));
        assert_eq!(parse_as_of("-500ms").unwrap(), AsOf::Stale(Duration::from_millis(500)));
        assert_eq!(parse_as_of("-1.5s").unwrap(), AsOf::Stale(Duration::from_millis(1500)));
        assert_eq!(parse_as_of("10s").unwrap_err().code, SqlState::InvalidParameterValue);
        assert_eq!(parse_as_of("-10 parsecs").unwrap_err().code, SqlState::InvalidParameterValue);
        assert_eq!(parse_as_of("yesterday").unwrap_err().code, SqlState::InvalidParameterValue);
        assert!(parse_as_of("yesterday").unwrap_err().message.contains("not a timestamp"));
        assert!(parse_as_of("+5m").unwrap_err().message.contains("must be negative"));
        assert!(parse_as_of("10s").unwrap_err().message.contains("must be negative"));
        let e = parse("SELECT * FROM t AS OF SYSTEM TIME now()").unwrap_err();
        assert_eq!(e.code, SqlState::SyntaxError);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("SELECT * FROM t WHERE a = = 1").unwrap_err();
        assert_eq!(e.code, SqlState::SyntaxError);
        assert_eq!(e.message, "syntax error at line 1 column 27: Expected: an expression, found: =");
        assert_eq!(e.position, Some(27));
        let e = parse("SELECT 1;\nSELECT 1 +").unwrap_err();
        assert!(e.message.starts_with("syntax error at line 2 column 11"), "{}", e.message);
        assert_eq!(e.position, Some(21));
        let e = parse("SELECT 'abc").unwrap_err();
        assert!(e.message.contains("Unterminated string literal"), "{}", e.message);
        assert_eq!(e.position, Some(8));
        let e = parse("SELEC 1").unwrap_err();
        assert_eq!(e.position, Some(1));
    }

    #[test]
    fn deep_nesting_is_an_error() {
        let sql = format!("SELECT {}1{}", "(".repeat(500), ")".repeat(500));
        assert_eq!(parse(&sql).unwrap_err().code, SqlState::ProgramLimitExceeded);
    }
}
