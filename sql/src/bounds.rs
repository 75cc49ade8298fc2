//! Bounds on a statement's shape: no input may exhaust a node's stack, or its memory, while being
//! parsed, bound, planned or evaluated.
//!
//! Every walk over a statement recurses once per level of its expression tree: `sqlparser`'s own
//! `Clone`, `PartialEq`, `Debug` and `Drop` of the AST, the binder (`bind/`), the planner
//! (`scan.rs`) and evaluation (`expr.rs`). A level costs a few hundred bytes to a few KiB of stack,
//! and a node's connections run on tokio worker threads of [`SERVER_STACK_BYTES`]; a stack
//! overflow is not a panic but an abort of the whole node. Parentheses are one way to nest, and the
//! parser counts them ([`crate::parse::PARSE_DEPTH_MAX`]). Operator chains are the other:
//! `sqlparser` parses `1 + 1 + … + 1` in a loop, without recursing, but builds a left-deep tree
//! one level per operator, so 2,000 terms are 2,000 levels:
//!
//! ```text
//!   1 + 1 + 1 + 1    ──►        +          x = 0 OR x = 1 OR x = 2  ──►        OR
//!                              / \                                             /  \
//!                             +   1                                          OR    =
//!                            / \                                            /  \
//!                           +   1                                          =    =
//!                          / \
//!                         1   1
//! ```
//!
//! So `check_tokens` measures each statement on its tokens, before the parser builds anything:
//!
//! - **Depth** ([`EXPR_DEPTH_MAX`]). Between two separators of one parenthesis level (a `,`, a
//!   clause keyword such as `WHERE`, or `WHEN`/`THEN`/`ELSE` inside `CASE … END`) the
//!   expression's tree is at most as deep as
//!   `and_or + run + 1`: `and_or` counts the `AND`/`OR` tokens, whose left-deep chain sits on
//!   top (they bind loosest), and `run` is the largest count of other operator tokens (`+`, `=`,
//!   `||`, `NOT`, `IS`, `IN`, `::`, …) between two of them. A parenthesised group, a function's
//!   arguments or a `CASE` counts its own depth plus one where it stands. The statement's depth is
//!   the deepest such path. Counting every operator token is an over-estimate (`x = 0 OR x = 1`
//!   counts its `=`s in the runs), never an under-estimate: the `AND` of `BETWEEN … AND …` is
//!   counted with its run, as the parser reads it.
//! - **Width** ([`LIST_ITEMS_MAX`]): the items of one comma-separated list — an `IN` list,
//!   `VALUES` rows, a row's values, a select list, a `CASE`'s branches. Lists are flat vectors in
//!   every walk, but each item costs memory and time.
//! - **Size** ([`STATEMENT_TOKENS_MAX`]): the tokens of one statement (whitespace and comments
//!   not counted), which bounds the AST's memory.
//!
//! Over a bound the statement is refused with SQLSTATE `54000` (program_limit_exceeded) and a
//! message naming the bound. Behind the token check, the walks over client input keep the stack
//! they use small and bounded on their own: the binder binds an operator chain in a loop up its
//! left side and counts its recursion (`Depth`), evaluation counts its recursion, the aggregate
//! finder loops over a stack of its own, and the binder's catch-all compares a statement with its
//! template field by field instead of cloning it (`sqlparser`'s derived `Clone` costs about 1 KiB
//! of stack per level).
//!
//! ## How the numbers were chosen
//! Measured in the dev build (the biggest frames): before these bounds, `SELECT 1 + 1 + …`
//! overflowed a 2 MiB thread at about 1,750 terms (the binder and the AST's clones); now the whole
//! path — parse, bind, plan, evaluate — takes about 150 bytes per level, so 14,000 levels would
//! fit in 2 MiB. `sql/tests/stack.rs` runs the deepest and widest statements the bounds allow on a
//! thread with a quarter of [`SERVER_STACK_BYTES`], and statements one past each bound on the full
//! stack. PostgreSQL 15 with its default 2 MB `max_stack_depth` stops `1 + 1 + …` between 3,000
//! and 5,000 terms ("stack depth limit exceeded"), though it flattens long `OR` chains; an
//! application with a longer list writes `x IN (…)`, a flat list.

use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::error::{Result, SqlError, SqlState};

/// The stack of the threads statements run on: tokio's default worker stack (2 MiB), which the
/// node's runtime sets (`cli/src/cluster.rs`). The bounds below are sized to fit in a quarter of it.
pub const SERVER_STACK_BYTES: usize = 2 * 1024 * 1024;
/// Deepest expression, counting each operator of a chain as one level (see the module essay).
pub const EXPR_DEPTH_MAX: usize = 1_000;
/// Most items in one comma-separated list (`IN`, `VALUES` rows, select lists, …). As many as an
/// `INSERT` may write rows (`INSERT_ROWS_MAX`), so that bound stays the one a
/// too-large `INSERT` meets.
pub const LIST_ITEMS_MAX: usize = 100_000;
/// Most tokens in one statement (whitespace and comments not counted).
pub const STATEMENT_TOKENS_MAX: usize = 1_000_000;

const _: () = assert!(LIST_ITEMS_MAX >= crate::bind::INSERT_ROWS_MAX, "the INSERT row bound must be reachable");
const _: () = assert!(STATEMENT_TOKENS_MAX > 2 * LIST_ITEMS_MAX, "a list as long as allowed must fit in a statement");

/// `54000` with `message`.
fn limit_exceeded(message: String) -> SqlError {
    SqlError::new(SqlState::ProgramLimitExceeded, message)
}

/// The error for an expression deeper than [`EXPR_DEPTH_MAX`].
pub(crate) fn too_deep(depth: usize) -> SqlError {
    limit_exceeded(format!(
        "expression nests {depth} levels deep (each operator of a chain such as `a + b + c` or `x = 1 OR x = 2` \
         counts one level); the limit is {EXPR_DEPTH_MAX}: write long lists as `x IN (1, 2, …)`"
    ))
}

/// What closes a group of tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closer {
    /// The statement itself.
    End,
    /// `)`.
    Paren,
    /// `]`.
    Bracket,
    /// `END` of a `CASE`.
    Case,
}

/// One group (parenthesis level) of the statement while its tokens are read.
#[derive(Debug)]
struct Group {
    closer: Closer,
    /// Deepest finished segment (list item) of the group.
    depth: usize,
    /// `AND`/`OR` tokens in the current segment.
    and_or: usize,
    /// Other operator tokens since the last `AND`/`OR`, and the deepest nested group among them.
    run: usize,
    run_child: usize,
    /// Deepest `run + run_child` of the segment's finished runs.
    run_max: usize,
    /// `BETWEEN`s waiting for their `AND`.
    between_open: usize,
    /// Items of the group's list so far (separators seen + 1).
    items: usize,
}

impl Group {
    fn new(closer: Closer) -> Group {
        Group { closer, depth: 0, and_or: 0, run: 0, run_child: 0, run_max: 0, between_open: 0, items: 1 }
    }

    fn end_run(&mut self) {
        self.run_max = self.run_max.max(self.run + self.run_child);
        self.run = 0;
        self.run_child = 0;
    }

    fn end_segment(&mut self) {
        self.end_run();
        self.depth = self.depth.max(self.and_or + self.run_max + 1);
        self.and_or = 0;
        self.run_max = 0;
        self.between_open = 0;
    }

    fn separator(&mut self) -> Result<()> {
        self.end_segment();
        self.items += 1;
        if self.items > LIST_ITEMS_MAX {
            return Err(limit_exceeded(format!(
                "a list in this statement has more than {LIST_ITEMS_MAX} items (IN lists, VALUES rows, select \
                 lists and CASE branches count); the limit is {LIST_ITEMS_MAX}: split the statement"
            )));
        }
        Ok(())
    }
}

fn keyword(token: &Token) -> Option<Keyword> {
    match token {
        Token::Word(w) if w.quote_style.is_none() => Some(w.keyword),
        _ => None,
    }
}

/// Whether `token` may be an operator: every symbol but brackets and separators, and the keywords
/// `sqlparser` reads as infix or prefix operators.
fn is_operator(token: &Token) -> bool {
    match token {
        Token::Word(w) => {
            w.quote_style.is_none()
                && matches!(
                    w.keyword,
                    Keyword::NOT
                        | Keyword::XOR
                        | Keyword::IS
                        | Keyword::NOTNULL
                        | Keyword::IN
                        | Keyword::BETWEEN
                        | Keyword::OVERLAPS
                        | Keyword::LIKE
                        | Keyword::ILIKE
                        | Keyword::RLIKE
                        | Keyword::REGEXP
                        | Keyword::SIMILAR
                        | Keyword::GLOB
                        | Keyword::MATCH
                        | Keyword::MEMBER
                        | Keyword::OPERATOR
                        | Keyword::DIV
                        | Keyword::COLLATE
                        | Keyword::AT
                        | Keyword::GLOBAL
                        | Keyword::ESCAPE
                )
        }
        Token::Number(..)
        | Token::Char(_)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::TripleSingleQuotedString(_)
        | Token::TripleDoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::SingleQuotedByteStringLiteral(_)
        | Token::DoubleQuotedByteStringLiteral(_)
        | Token::TripleSingleQuotedByteStringLiteral(_)
        | Token::TripleDoubleQuotedByteStringLiteral(_)
        | Token::SingleQuotedRawStringLiteral(_)
        | Token::DoubleQuotedRawStringLiteral(_)
        | Token::TripleSingleQuotedRawStringLiteral(_)
        | Token::TripleDoubleQuotedRawStringLiteral(_)
        | Token::NationalStringLiteral(_)
        | Token::QuoteDelimitedStringLiteral(_)
        | Token::NationalQuoteDelimitedStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_)
        | Token::Placeholder(_)
        | Token::Whitespace(_)
        | Token::EOF
        | Token::Comma
        | Token::SemiColon
        | Token::LParen
        | Token::RParen
        | Token::LBracket
        | Token::RBracket
        | Token::LBrace
        | Token::RBrace => false,
        _ => true,
    }
}

/// Checks one statement's tokens against [`EXPR_DEPTH_MAX`], [`LIST_ITEMS_MAX`] and
/// [`STATEMENT_TOKENS_MAX`] (see the module essay). Unbalanced brackets are left to the parser.
/// Returns the statement's depth.
pub(crate) fn check_tokens(tokens: &[TokenWithSpan]) -> Result<usize> {
    let depth = measure(tokens)?;
    if depth > EXPR_DEPTH_MAX {
        return Err(too_deep(depth));
    }
    Ok(depth)
}

/// The statement's depth as the module essay counts it; errors past the width and size bounds.
fn measure(tokens: &[TokenWithSpan]) -> Result<usize> {
    let mut groups = vec![Group::new(Closer::End)];
    let mut significant = 0usize;
    let mut previous = None;
    for t in tokens {
        let token = &t.token;
        if matches!(token, Token::Whitespace(_) | Token::EOF) {
            continue;
        }
        let previous = std::mem::replace(&mut previous, keyword(token));
        significant += 1;
        if significant > STATEMENT_TOKENS_MAX {
            return Err(limit_exceeded(format!(
                "statement has more than {STATEMENT_TOKENS_MAX} tokens; the limit is {STATEMENT_TOKENS_MAX}: split it"
            )));
        }
        let top = groups.last_mut().expect("invariant: the statement's own group is never popped");
        let closes = match token {
            Token::RParen => Some(Closer::Paren),
            Token::RBracket => Some(Closer::Bracket),
            _ if keyword(token) == Some(Keyword::END) && top.closer == Closer::Case => Some(Closer::Case),
            _ => None,
        };
        if let Some(closer) = closes {
            if top.closer == closer {
                let mut done = groups.pop().expect("invariant: a group other than the statement's is open");
                done.end_segment();
                let parent = groups.last_mut().expect("invariant: the statement's own group is never popped");
                parent.run_child = parent.run_child.max(done.depth + 1);
            }
            continue;
        }
        match token {
            Token::LParen => groups.push(Group::new(Closer::Paren)),
            Token::LBracket => groups.push(Group::new(Closer::Bracket)),
            Token::Comma => top.separator()?,
            _ => match keyword(token) {
                Some(Keyword::CASE) => groups.push(Group::new(Closer::Case)),
                Some(Keyword::WHEN | Keyword::THEN | Keyword::ELSE) if top.closer == Closer::Case => top.separator()?,
                // A clause ends the expression before it (`FROM` but in `IS [NOT] DISTINCT FROM`).
                Some(Keyword::FROM) if previous != Some(Keyword::DISTINCT) => top.end_segment(),
                Some(
                    Keyword::WHERE
                    | Keyword::GROUP
                    | Keyword::HAVING
                    | Keyword::ORDER
                    | Keyword::LIMIT
                    | Keyword::OFFSET
                    | Keyword::SET
                    | Keyword::VALUES
                    | Keyword::RETURNING,
                ) => top.end_segment(),
                Some(Keyword::AND) if top.between_open > 0 => {
                    top.between_open -= 1;
                    top.run += 1;
                }
                Some(Keyword::AND | Keyword::OR) => {
                    top.end_run();
                    top.and_or += 1;
                }
                Some(Keyword::BETWEEN) => {
                    top.between_open += 1;
                    top.run += 1;
                }
                _ if is_operator(token) => top.run += 1,
                _ => {}
            },
        }
    }
    // Groups left open (a syntax error the parser reports) still count.
    loop {
        let mut done = groups.pop().expect("invariant: the statement's own group is popped last");
        done.end_segment();
        match groups.last_mut() {
            Some(parent) => parent.run_child = parent.run_child.max(done.depth + 1),
            None => return Ok(done.depth),
        }
    }
}

/// A depth counter for a recursive walk: [`Depth::enter`] on the way down fails with `54000` past
/// [`EXPR_DEPTH_MAX`] plus room for the parenthesis levels the token check counts separately.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Depth(usize);

/// Levels a walk may go beyond [`EXPR_DEPTH_MAX`]: what parentheses, function calls and casts add
/// to the operators the token check counts.
const WALK_SLACK: usize = 4 * crate::parse::PARSE_DEPTH_MAX;
/// Deepest a walk over client input may recurse.
pub(crate) const WALK_DEPTH_MAX: usize = EXPR_DEPTH_MAX + WALK_SLACK;

impl Depth {
    /// One level further down, or `54000` if that is too deep.
    pub(crate) fn enter(self) -> Result<Depth> {
        if self.0 >= WALK_DEPTH_MAX {
            return Err(limit_exceeded(format!(
                "expression nests more than {WALK_DEPTH_MAX} levels deep; the limit is {EXPR_DEPTH_MAX} operators \
                 and parentheses: write long lists as `x IN (1, 2, …)`"
            )));
        }
        Ok(Depth(self.0 + 1))
    }
}

#[cfg(test)]
mod tests {
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::tokenizer::Tokenizer;

    use super::*;

    fn check(sql: &str) -> Result<usize> {
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location().expect("tokenizes");
        check_tokens(&tokens)
    }

    fn depth(sql: &str) -> usize {
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location().expect("tokenizes");
        measure(&tokens).expect("within the width and size bounds")
    }

    #[test]
    fn operator_chains_count_one_level_per_operator() {
        assert_eq!(depth("SELECT 1"), 1);
        assert_eq!(depth("SELECT 1 + 1 + 1"), 3);
        // `AND`/`OR` bind loosest: their chain, then the deepest operand between two of them.
        assert_eq!(depth("SELECT x FROM t WHERE x = 0 OR x = 1 OR x = 2"), 2 + 1 + 1);
        assert_eq!(depth("SELECT x FROM t WHERE x = 0 OR x = 1 + 1 + 1 AND y = 2"), 2 + 3 + 1);
        // A comma ends an item; the deepest item counts.
        assert_eq!(depth("SELECT 1 + 1, 1 + 1 + 1 + 1"), 4);
        // So does a clause, but not the FROM of IS DISTINCT FROM.
        assert_eq!(depth("SELECT 1 + 1 + 1 FROM t WHERE x = 1"), 3);
        assert_eq!(depth("SELECT x FROM t WHERE x IS DISTINCT FROM 1 IS DISTINCT FROM 2"), 2 + 1);
        // A group counts its depth plus one where it stands.
        assert_eq!(depth("SELECT 1 + (1 + 1 + 1)"), 1 + (3 + 1) + 1);
        assert_eq!(depth("SELECT x FROM t WHERE x IN (1, 2 + 2, 3)"), 1 + (2 + 1) + 1);
        // BETWEEN's AND belongs to its run, as the parser reads it; the next AND is a conjunction.
        assert_eq!(depth("SELECT x FROM t WHERE x BETWEEN 1 AND 2"), 3);
        assert_eq!(depth("SELECT x FROM t WHERE x BETWEEN 1 AND 2 AND y = 1"), 1 + 2 + 1);
        // CASE branches are items of the CASE's own group.
        assert_eq!(depth("SELECT CASE WHEN x = 1 THEN 1 + 1 + 1 ELSE 2 END"), (3 + 1) + 1);
        // An unclosed group still counts (the parser then reports the syntax error).
        assert_eq!(depth("SELECT (1 + 1"), (1 + 1) + 1 + 1);
    }

    #[test]
    fn over_the_bounds_is_54000_naming_the_bound() {
        let plus = format!("SELECT 1{}", " + 1".repeat(EXPR_DEPTH_MAX));
        let e = check(&plus).expect_err("too deep");
        assert_eq!(e.code, SqlState::ProgramLimitExceeded);
        assert!(e.message.contains(&format!("the limit is {EXPR_DEPTH_MAX}")), "{}", e.message);
        check(&format!("SELECT 1{}", " + 1".repeat(EXPR_DEPTH_MAX - 1))).expect("at the limit");
        let list = format!("SELECT * FROM t WHERE x IN (0{})", ", 1".repeat(LIST_ITEMS_MAX));
        let e = check(&list).expect_err("too wide");
        assert_eq!(e.code, SqlState::ProgramLimitExceeded);
        assert!(e.message.contains(&format!("the limit is {LIST_ITEMS_MAX}")), "{}", e.message);
        check(&format!("SELECT * FROM t WHERE x IN (0{})", ", 1".repeat(LIST_ITEMS_MAX - 1))).expect("at the limit");
    }
}
