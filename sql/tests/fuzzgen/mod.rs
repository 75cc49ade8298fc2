//! A seeded generator of SQL statements for fuzzing: statements from a small grammar over three
//! tables, and byte- and token-level mutations of them.
//!
//! Shared by `sql/tests/fuzz.rs` (many iterations over `MemKv`) and `cli/tests/sql_golden.rs` (a
//! short run against a cluster over the PostgreSQL protocol), so it depends on nothing but `std`:
//! its PRNG is splitmix64, and one seed gives the same statements on every machine and version.
//!
//! ```text
//!   next() ─┬─ 70 % statement(): INSERT/UPSERT/ON CONFLICT, UPDATE (incl. primary keys), DELETE,
//!           │                    SELECT (ranges, filters, ORDER BY, LIMIT, aggregates, GROUP BY),
//!           │                    BEGIN [READ ONLY]/COMMIT/ROLLBACK/SET TRANSACTION, CREATE/DROP of
//!           │                    the scratch table, SHOW, EXPLAIN, AS OF SYSTEM TIME, unsupported SQL
//!           └─ 30 % mutated():   1–3 edits of a statement(): insert/delete/replace/duplicate a
//!                                character, truncate, or drop/duplicate/swap/replace a token
//!   stress() ──────── long flat operator chains, deep nesting, very wide lists, around and far
//!                     past the bounds of `meridian_sql::bounds` (the runner decides how often)
//! ```
//!
//! Keys come from a small domain (0..8) so duplicate keys, conflicting upserts and primary-key
//! changes onto existing rows happen often. Values include the edges: `NULL`, the INT extremes,
//! huge and tiny floats, empty and non-ASCII text, quotes and semicolons inside literals.

#![allow(dead_code)]

/// The tables the generator uses. `fa` and `fb` are created by [`SETUP`]; `fc` is a scratch table
/// the generator itself creates and drops.
pub const TABLES: [&str; 3] = ["fa", "fb", "fc"];

/// Creates the generator's fixed tables (idempotent, so it can be re-run after a mutated
/// statement dropped one).
pub const SETUP: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS fa (k INT PRIMARY KEY, v INT, s TEXT)",
    "CREATE TABLE IF NOT EXISTS fb (k1 INT, k2 TEXT, f FLOAT, b BOOL, y BYTES, PRIMARY KEY (k1, k2))",
];

/// Most characters a mutation may insert at once (a duplicated slice).
const DUPLICATE_CHARS_MAX: usize = 16;
/// Deepest nesting of generated expressions.
const EXPR_DEPTH_MAX: u32 = 3;

/// splitmix64: small, fast, and the same sequence everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "harness: below(0) has no value to return");
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Characters a mutation inserts: SQL punctuation, quotes, comment starts, non-ASCII.
const ALPHABET: &[char] = &[
    '\'', '"', ';', '(', ')', ',', '-', '$', '\\', ' ', '\n', '\t', '0', '9', '*', '/', '.', ':', '=', '<', '|', 'E',
    'x', 'é', '💥', '\u{feff}', '%', '+', '[', '{',
];

/// Tokens a token mutation puts in.
const TOKENS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "NULL",
    "(",
    ")",
    ",",
    ";",
    "*",
    "fa",
    "fb",
    "fc",
    "k",
    "v",
    "s",
    "k1",
    "k2",
    "f",
    "b",
    "y",
    "1",
    "-1",
    "0.5",
    "'x'",
    "''",
    "$1",
    "::",
    "AS",
    "OF",
    "SYSTEM",
    "TIME",
    "'-1h'",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "--",
    "/*",
    "\"",
    "'",
    "AND",
    "OR",
    "NOT",
    "=",
    "<",
    ">=",
    "||",
    "/",
    "%",
    "9223372036854775807",
    "ORDER BY",
    "LIMIT",
    "GROUP BY",
    "COUNT(*)",
    "SUM(v)",
    "DISTINCT",
    "JOIN",
    "ON",
    "DEFAULT",
    "PRIMARY KEY",
    "INT",
    "TEXT",
    "BYTES",
    "TRUE",
    "IS",
    "IN",
    "BETWEEN",
    "CAST",
    "x'00'",
    "E'\\\\'",
    "$$",
    "DROP TABLE fa",
];

/// Statement generator.
#[derive(Debug, Clone)]
pub struct Gen {
    /// The random source (public so runners can make their own choices from the same seed).
    pub rng: Rng,
    /// Whether mutations may insert a NUL character (not over the PostgreSQL protocol, whose
    /// query strings are C strings).
    allow_nul: bool,
}

impl Gen {
    /// A generator for `seed`.
    pub fn new(seed: u64, allow_nul: bool) -> Gen {
        Gen { rng: Rng::new(seed), allow_nul }
    }

    /// The next statement: from the grammar, or a mutation of one.
    pub fn next_sql(&mut self) -> String {
        if self.rng.percent(30) { self.mutated() } else { self.statement() }
    }

    /// A statement from the grammar (it may still fail: duplicate keys, overflow, a missing table).
    pub fn statement(&mut self) -> String {
        match self.rng.below(100) {
            0..=21 => self.insert(),
            22..=33 => self.update(),
            34..=41 => self.delete(),
            42..=63 => self.select(),
            64..=81 => self.transaction_control(),
            82..=89 => self.ddl(),
            _ => self.unusual(),
        }
    }

    /// A statement from the grammar with one to three random edits.
    pub fn mutated(&mut self) -> String {
        let mut sql = self.statement();
        for _ in 0..1 + self.rng.below(3) {
            sql = if self.rng.percent(50) { self.mutate_chars(&sql) } else { self.mutate_tokens(&sql) };
        }
        sql
    }

    fn mutate_chars(&mut self, sql: &str) -> String {
        let mut chars: Vec<char> = sql.chars().collect();
        let at = self.rng.below(chars.len() + 1);
        match self.rng.below(6) {
            0 if at < chars.len() => {
                chars.remove(at);
            }
            1 | 0 => {
                let c = if self.allow_nul && self.rng.percent(5) { '\0' } else { *self.rng.pick(ALPHABET) };
                chars.insert(at, c);
            }
            2 if at < chars.len() => chars[at] = *self.rng.pick(ALPHABET),
            3 if at < chars.len() => {
                let end = (at + 1 + self.rng.below(DUPLICATE_CHARS_MAX)).min(chars.len());
                let slice: Vec<char> = chars[at..end].to_vec();
                let to = self.rng.below(chars.len() + 1);
                chars.splice(to..to, slice);
            }
            4 => chars.truncate(at),
            _ if at + 1 < chars.len() => chars.swap(at, at + 1),
            _ => chars.push(*self.rng.pick(ALPHABET)),
        }
        chars.into_iter().collect()
    }

    fn mutate_tokens(&mut self, sql: &str) -> String {
        let mut tokens = tokenize(sql);
        if tokens.is_empty() {
            return self.rng.pick(TOKENS).to_string();
        }
        let i = self.rng.below(tokens.len());
        match self.rng.below(4) {
            0 => {
                tokens.remove(i);
            }
            1 => {
                let t = tokens[i].clone();
                tokens.insert(i, t);
            }
            2 => {
                let j = self.rng.below(tokens.len());
                tokens.swap(i, j);
            }
            _ => tokens[i] = self.rng.pick(TOKENS).to_string(),
        }
        tokens.join(" ")
    }

    // ----- the grammar -----

    fn key(&mut self) -> String {
        match self.rng.below(20) {
            0 => "NULL".into(),
            1 => "9223372036854775807".into(),
            2 => "-9223372036854775808".into(),
            3 => "-1".into(),
            _ => self.rng.below(8).to_string(),
        }
    }

    fn int(&mut self) -> String {
        match self.rng.below(12) {
            0 => "NULL".into(),
            1 => "9223372036854775807".into(),
            2 => "-9223372036854775808".into(),
            3 => "0".into(),
            4 => "-7".into(),
            _ => (self.rng.below(200) as i64 - 50).to_string(),
        }
    }

    fn text(&mut self) -> String {
        self.rng
            .pick(&[
                "'a'",
                "'b'",
                "'c'",
                "''",
                "'it''s'",
                "'ünï ☃'",
                "NULL",
                "'x;y'",
                "'a' || 'b'",
                "E'tab\\there'",
                "'--'",
            ])
            .to_string()
    }

    fn float(&mut self) -> String {
        self.rng
            .pick(&["1.5", "-0.25", "0.0", "1e300", "-1e-300", "NULL", "CAST('NaN' AS FLOAT)", "2", "0.1", "-3.75"])
            .to_string()
    }

    fn boolean(&mut self) -> String {
        self.rng.pick(&["TRUE", "FALSE", "NULL"]).to_string()
    }

    fn bytes(&mut self) -> String {
        self.rng.pick(&["x'00ff'", "x''", "NULL", "x'0a0b0c'", "'\\x01'"]).to_string()
    }

    /// An INT expression over `fa`'s columns (`columns`) or over constants only.
    fn int_expr(&mut self, depth: u32, columns: bool) -> String {
        if depth >= EXPR_DEPTH_MAX || self.rng.percent(50) {
            return match self.rng.below(4) {
                0 if columns => "k".into(),
                1 if columns => "v".into(),
                _ => self.int(),
            };
        }
        let op = *self.rng.pick(&["+", "-", "*", "/", "%"]);
        let (a, b) = (self.int_expr(depth + 1, columns), self.int_expr(depth + 1, columns));
        if self.rng.percent(20) { format!("({a} {op} {b})") } else { format!("{a} {op} {b}") }
    }

    /// A predicate over `fa`.
    fn pred_a(&mut self, depth: u32) -> String {
        if depth < EXPR_DEPTH_MAX && self.rng.percent(25) {
            let op = *self.rng.pick(&["AND", "OR"]);
            let (a, b) = (self.pred_a(depth + 1), self.pred_a(depth + 1));
            return format!("({a} {op} {b})");
        }
        match self.rng.below(9) {
            0 => format!("k = {}", self.key()),
            1 => format!("k >= {} AND k < {}", self.key(), self.key()),
            2 => format!("k BETWEEN {} AND {}", self.key(), self.key()),
            3 => format!("k IN ({}, {}, {})", self.key(), self.key(), self.key()),
            4 => format!("v {} {}", self.rng.pick(&["=", "<>", "<", "<=", ">", ">="]), self.int_expr(depth + 1, true)),
            5 => format!("s {} NULL", self.rng.pick(&["IS", "IS NOT"])),
            6 => format!("s = {}", self.text()),
            7 => format!("NOT ({})", self.pred_a(depth + 1)),
            _ => format!("k > {}", self.key()),
        }
    }

    /// A predicate over `fb`.
    fn pred_b(&mut self) -> String {
        match self.rng.below(6) {
            0 => format!("k1 = {}", self.key()),
            1 => format!("k1 = {} AND k2 = {}", self.key(), self.text()),
            2 => format!("k1 >= {} AND k2 > {}", self.key(), self.text()),
            3 => format!("f > {}", self.float()),
            4 => format!("b IS {}", self.rng.pick(&["NULL", "NOT NULL"])),
            _ => format!("y = {}", self.bytes()),
        }
    }

    fn row_a(&mut self) -> String {
        format!("({}, {}, {})", self.key(), self.int_expr(1, false), self.text())
    }

    fn row_b(&mut self) -> String {
        format!("({}, {}, {}, {}, {})", self.key(), self.text(), self.float(), self.boolean(), self.bytes())
    }

    fn rows(&mut self, b: bool) -> String {
        let n = 1 + self.rng.below(3);
        let rows: Vec<String> = (0..n).map(|_| if b { self.row_b() } else { self.row_a() }).collect();
        rows.join(", ")
    }

    fn insert(&mut self) -> String {
        let verb = if self.rng.percent(20) { "UPSERT" } else { "INSERT" };
        match self.rng.below(10) {
            0..=3 => format!("{verb} INTO fa VALUES {}", self.rows(false)),
            4 => format!("INSERT INTO fa (k, s) VALUES ({}, {})", self.key(), self.text()),
            5 => format!("INSERT INTO fa VALUES {} ON CONFLICT (k) DO NOTHING", self.rows(false)),
            6 => format!("INSERT INTO fa VALUES {} ON CONFLICT (k) DO UPDATE SET v = excluded.v + 1", self.rows(false)),
            7 | 8 => format!("{verb} INTO fb VALUES {}", self.rows(true)),
            _ => format!("INSERT INTO fc VALUES ({}, {})", self.key(), self.text()),
        }
    }

    fn update(&mut self) -> String {
        match self.rng.below(6) {
            0 | 1 => format!("UPDATE fa SET v = {} WHERE {}", self.int_expr(0, true), self.pred_a(0)),
            2 => format!("UPDATE fa SET s = {}, v = {}", self.text(), self.int_expr(1, true)),
            3 => format!("UPDATE fa SET k = {} WHERE {}", self.int_expr(1, true), self.pred_a(0)),
            4 => format!("UPDATE fb SET f = f * 2, b = NOT b WHERE {}", self.pred_b()),
            _ => format!("UPDATE fb SET k2 = {}, y = {} WHERE {}", self.text(), self.bytes(), self.pred_b()),
        }
    }

    fn delete(&mut self) -> String {
        match self.rng.below(4) {
            0 => "DELETE FROM fa".into(),
            1 => format!("DELETE FROM fb WHERE {}", self.pred_b()),
            _ => format!("DELETE FROM fa WHERE {}", self.pred_a(0)),
        }
    }

    fn select(&mut self) -> String {
        let order = match self.rng.below(4) {
            0 => " ORDER BY v DESC, k".to_string(),
            1 => " ORDER BY s, 1".to_string(),
            _ => String::new(),
        };
        let limit = if self.rng.percent(30) { format!(" LIMIT {}", self.rng.below(4)) } else { String::new() };
        match self.rng.below(9) {
            0..=2 => format!("SELECT * FROM fa WHERE {}{order}{limit}", self.pred_a(0)),
            3 => format!("SELECT k, v * 2, s || '!' AS t FROM fa{order}{limit}"),
            4 => format!("SELECT COUNT(*), SUM(v), MIN(s), MAX(v), AVG(v) FROM fa WHERE {}", self.pred_a(0)),
            5 => "SELECT s, COUNT(*), SUM(v) FROM fa GROUP BY s HAVING COUNT(*) > 0 ORDER BY s".into(),
            6 => format!("SELECT * FROM fb WHERE {} ORDER BY k1 DESC, k2", self.pred_b()),
            7 => format!("SELECT {}, {}, {}", self.int_expr(0, false), self.text(), self.float()),
            _ => format!("SELECT COUNT(*) FROM fa AS OF SYSTEM TIME '-{}h'", 1 + self.rng.below(3)),
        }
    }

    fn transaction_control(&mut self) -> String {
        self.rng
            .pick(&[
                "BEGIN",
                "BEGIN",
                "BEGIN READ ONLY",
                "START TRANSACTION",
                "BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                "COMMIT",
                "COMMIT",
                "END",
                "ROLLBACK",
                "ABORT",
                "SET TRANSACTION READ ONLY",
                "BEGIN READ ONLY AS OF SYSTEM TIME '-1h'",
            ])
            .to_string()
    }

    fn ddl(&mut self) -> String {
        self.rng
            .pick(&[
                "CREATE TABLE fc (id INT PRIMARY KEY, t TEXT)",
                "CREATE TABLE IF NOT EXISTS fc (id INT PRIMARY KEY, t TEXT)",
                "DROP TABLE fc",
                "DROP TABLE IF EXISTS fc",
                "SHOW TABLES",
                "SHOW COLUMNS FROM fb",
                SETUP[0],
                SETUP[1],
            ])
            .to_string()
    }

    fn unusual(&mut self) -> String {
        self.rng
            .pick(&[
                "SELECT * FROM fa JOIN fb ON fa.k = fb.k1",
                "SELECT * FROM fa WHERE k IN (SELECT k1 FROM fb)",
                "SELECT DISTINCT s FROM fa",
                "SAVEPOINT sp",
                "TRUNCATE fa",
                "ALTER TABLE fa ADD COLUMN z INT",
                "SELECT * FROM nowhere",
                "SELECT nothing FROM fa",
                "EXPLAIN SELECT * FROM fa WHERE k = 3",
                "SELECT CAST(s AS INT) FROM fa",
                "SELECT 1 / 0",
                "SELECT 9223372036854775807 + 1",
                "INSERT INTO fa VALUES (1, 2)",
                "INSERT INTO fa VALUES (1, 2, 'x', 4)",
                "UPDATE fa SET nope = 1",
                "SET application_name = 'fuzz'",
                "",
                ";;",
                "-- only a comment",
                "SELECT ((((((((((1))))))))))",
            ])
            .to_string()
    }
}

impl Gen {
    /// A statement shaped to find the limits of a node's stack and memory (issue 17): a long flat
    /// chain of one operator (`+`, `AND`, `OR`, `||`, comparisons, casts, `IS NULL`), chains inside
    /// parentheses, a `CASE` with many branches, or a very wide `IN` list, select list or
    /// `VALUES`. Lengths cluster around `depth_max` and `list_max` (the bounds of
    /// `meridian_sql::bounds`, passed in so this file depends on nothing) and far beyond them.
    pub fn stress(&mut self, depth_max: usize, list_max: usize) -> String {
        // Chain lengths: short, at the bound, past it, or (rarely: slow to tokenize) far past it.
        let terms = match self.rng.below(10) {
            0..=1 => 1 + self.rng.below(50),
            2..=5 => depth_max.saturating_sub(3) + self.rng.below(7),
            6..=8 => depth_max * 2 + self.rng.below(depth_max),
            _ => 20_000,
        };
        // Wide lists: small, medium, or (rarely: megabytes of text) just past the bound.
        let items = match self.rng.below(20) {
            0..=9 => 1 + self.rng.below(100),
            10..=18 => 1_000 + self.rng.below(2_000),
            _ => list_max + 1 + self.rng.below(3),
        };
        let chain = |first: &str, sep: &str, item: &str, n: usize| {
            let mut s = String::with_capacity((first.len() + sep.len() + item.len()) * n);
            s.push_str(first);
            for _ in 1..n {
                s.push_str(sep);
                s.push_str(item);
            }
            s
        };
        let list = |item: &dyn Fn(usize) -> String, n: usize| (0..n).map(item).collect::<Vec<_>>().join(", ");
        match self.rng.below(14) {
            0 => format!("SELECT {}", chain("1", " + ", "1", terms)),
            1 => format!("SELECT * FROM fa WHERE {}", chain("k = 0", " OR ", "k = 1", terms)),
            2 => format!("SELECT * FROM fa WHERE {}", chain("k >= 0", " AND ", "v IS NULL", terms)),
            3 => format!("SELECT {}", chain("'a'", " || ", "'b'", terms)),
            4 => format!("SELECT s{} FROM fa", " || s".repeat(terms - 1)),
            5 => format!("SELECT * FROM fa WHERE {}", chain("1 < 2", " = ", "TRUE", terms)),
            6 => format!("SELECT 1{}", "::INT".repeat(terms)),
            7 => format!("SELECT v{} FROM fa", " IS NULL".repeat(terms)),
            8 => {
                let depth = 1 + self.rng.below(70);
                let ops = terms / depth + 1;
                let mut e = String::from("k");
                for _ in 0..depth {
                    e = format!("({e}{})", " + k".repeat(ops));
                }
                format!("UPDATE fa SET v = {e} WHERE k = {}", self.key())
            }
            9 => format!("SELECT * FROM fa WHERE k IN ({})", list(&|i| i.to_string(), items)),
            10 => format!("SELECT {} FROM fa", list(&|_| "k".to_string(), items)),
            11 => format!("INSERT INTO fa VALUES {}", list(&|i| format!("({}, {i}, 'w')", 1_000 + i), items)),
            12 => format!(
                "SELECT CASE {} END FROM fa",
                (0..items).map(|i| format!("WHEN k = {i} THEN {i}")).collect::<Vec<_>>().join(" ")
            ),
            _ => format!("SELECT {}{}{}", "(".repeat(terms), "1", ")".repeat(terms)),
        }
    }
}

/// Splits SQL into rough tokens: words, numbers, quoted strings, single punctuation characters.
/// Whitespace is dropped (the mutator joins tokens with spaces).
pub fn tokenize(sql: &str) -> Vec<String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.') {
                i += 1;
            }
            tokens.push(chars[start..i].iter().collect());
        } else if c == '\'' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i = (i + 1).min(chars.len());
            tokens.push(chars[start..i].iter().collect());
        } else {
            tokens.push(c.to_string());
            i += 1;
        }
    }
    tokens
}
