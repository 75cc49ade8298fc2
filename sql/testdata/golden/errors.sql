-- Errors: one line, what went wrong, and PostgreSQL's SQLSTATE (which drivers act on). A failed
-- statement changes nothing. Every error is a paragraph of its own because the harness runs
-- `meridian sql --on-error-stop`, which, like `psql -v ON_ERROR_STOP=1`, stops at the first error;
-- for the same reason a statement *after* an error in a transaction (25P02, "current transaction
-- is aborted") cannot be shown here: see cli/tests/sql_golden.rs, where psql shows it, and the
-- fuzz tests, which check it.

CREATE TABLE err_t (id INT PRIMARY KEY, name TEXT, n INT, ok BOOL);
INSERT INTO err_t VALUES (1, 'one', 10, TRUE), (2, 'two', 20, FALSE);

-- Syntax errors say where, by line and column of the statement as sent (so a comment sent with
-- it counts: this one is a paragraph of its own).

SELEC * FROM err_t;

SELECT * FROM err_t WHERE;

SELECT id, name
FROM err_t
WHERE id = 1 ORDER name;

SELECT (1 + 2;

INSERT INTO err_t VALUES (3, 'three', 3, TRUE) garbage;

-- Names that do not exist.
SELECT * FROM err_missing;

SELECT nope FROM err_t;

INSERT INTO err_t (id, nope) VALUES (3, 1);

UPDATE err_t SET nope = 1;

SELECT * FROM err_t WHERE other.id = 1;

-- Types: values that do not fit a column, operands that do not go together.
INSERT INTO err_t VALUES (3, 'three', TRUE, TRUE);

INSERT INTO err_t VALUES ('three', 'three', 3, TRUE);

UPDATE err_t SET ok = 'maybe';

SELECT * FROM err_t WHERE name = 1;

SELECT name + 1 FROM err_t;

SELECT * FROM err_t WHERE n;

SELECT CAST(ok AS BYTES) FROM err_t;

-- Primary keys: unique, and never NULL.
INSERT INTO err_t VALUES (1, 'uno', 1, TRUE);

INSERT INTO err_t VALUES (3, 'a', 1, TRUE), (3, 'b', 2, TRUE);

UPDATE err_t SET id = 2 WHERE id = 1;

INSERT INTO err_t VALUES (NULL, 'null key', 0, TRUE);

INSERT INTO err_t (name) VALUES ('no key');

UPDATE err_t SET id = NULL WHERE id = 1;

-- The number of values.
INSERT INTO err_t VALUES (3, 'three');

INSERT INTO err_t VALUES (3, 'three', 3, TRUE, 'extra');

-- Arithmetic: 64-bit integers do not wrap, and nothing divides by zero.
SELECT n / (id - 1) FROM err_t;

SELECT 9223372036854775807 + 1;

UPDATE err_t SET n = n * 9223372036854775807;

SELECT 99999999999999999999;

-- Grouping, ordering and limits.
SELECT name, COUNT(*) FROM err_t;

SELECT * FROM err_t WHERE COUNT(*) > 1;

SELECT * FROM err_t ORDER BY 9;

SELECT * FROM err_t LIMIT -1;

-- What Meridian does not do is refused by name, never ignored.
SELECT * FROM err_t JOIN err_t AS b ON err_t.id = b.id;

SELECT * FROM err_t WHERE id IN (SELECT id FROM err_t);

SELECT DISTINCT name FROM err_t;

SELECT * FROM err_t WHERE name LIKE 'o%';

SELECT now();

INSERT INTO err_t VALUES (3, 'three', 3, TRUE) RETURNING id;

SAVEPOINT before_change;

-- None of the statements above changed anything.
SELECT * FROM err_t;

-- An error inside a transaction fails it, and everything it did is rolled back.
BEGIN;
INSERT INTO err_t VALUES (5, 'five', 50, TRUE);
UPDATE err_t SET n = n + 1;
INSERT INTO err_t VALUES (1, 'dup', 0, TRUE);

SELECT id, n FROM err_t;

-- Writes in a read-only transaction, and transaction commands in the wrong place.
BEGIN READ ONLY;
SELECT COUNT(*) FROM err_t;
UPDATE err_t SET n = 0;

SET TRANSACTION READ ONLY;

BEGIN;
SELECT COUNT(*) FROM err_t;
SET TRANSACTION READ ONLY;

DROP TABLE err_t;
