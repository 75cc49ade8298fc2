-- Transactions: BEGIN … COMMIT applies everything or nothing, ROLLBACK discards, and statements
-- inside a transaction see its own writes. DDL is transactional too.

CREATE TABLE txn_accounts (id INT PRIMARY KEY, owner TEXT, balance INT);
INSERT INTO txn_accounts VALUES (1, 'ann', 100), (2, 'bob', 100), (3, 'cy', 100);

-- A transfer: both updates commit together; the transaction sees its own writes.
BEGIN;
UPDATE txn_accounts SET balance = balance - 30 WHERE id = 1;
UPDATE txn_accounts SET balance = balance + 30 WHERE id = 2;
SELECT id, balance FROM txn_accounts;
COMMIT;

SELECT id, owner, balance FROM txn_accounts;
SELECT SUM(balance) FROM txn_accounts;

-- ROLLBACK discards inserts, deletes and even a table created inside the transaction.
BEGIN;
INSERT INTO txn_accounts VALUES (4, 'dee', 100);
DELETE FROM txn_accounts WHERE id = 1;
CREATE TABLE txn_scratch (id INT PRIMARY KEY);
INSERT INTO txn_scratch VALUES (1), (2);
SELECT COUNT(*) FROM txn_accounts;
SELECT COUNT(*) FROM txn_scratch;
ROLLBACK;

SELECT id, owner, balance FROM txn_accounts;

SELECT * FROM txn_scratch;

-- START TRANSACTION … END and ABORT are other spellings of BEGIN … COMMIT and ROLLBACK.
START TRANSACTION;
CREATE TABLE txn_log (seq INT PRIMARY KEY, what TEXT);
INSERT INTO txn_log VALUES (1, 'created with its first row');
END;

START TRANSACTION ISOLATION LEVEL SERIALIZABLE;
INSERT INTO txn_log VALUES (2, 'aborted');
ABORT;

SELECT * FROM txn_log;

-- Read, then write what was read, in one transaction.
BEGIN;
SELECT balance FROM txn_accounts WHERE id = 3;
UPDATE txn_accounts SET balance = balance * 2 WHERE id = 3;
INSERT INTO txn_log VALUES (3, 'doubled cy');
SELECT balance FROM txn_accounts WHERE id = 3;
COMMIT;

SELECT * FROM txn_log;

-- An error fails the transaction and rolls back what it did before the error.
BEGIN;
UPDATE txn_accounts SET balance = 0 WHERE id = 1;
INSERT INTO txn_log VALUES (4, 'never logged');
INSERT INTO txn_accounts VALUES (2, 'dup', 0);

SELECT id, balance FROM txn_accounts;
SELECT COUNT(*) FROM txn_log;

-- A statement that fails half-way changes no row at all (bob's row divides by zero).
UPDATE txn_accounts SET balance = 1000 / (balance - 130);

SELECT id, balance FROM txn_accounts;

-- BEGIN READ ONLY: a lock-free snapshot; it reads like any transaction but may not write.
BEGIN READ ONLY;
SELECT SUM(balance) FROM txn_accounts;
SELECT COUNT(*) FROM txn_log;
COMMIT;

BEGIN;
SET TRANSACTION READ ONLY;
SELECT COUNT(*) FROM txn_accounts;
DELETE FROM txn_accounts;

BEGIN TRANSACTION READ WRITE;
DELETE FROM txn_log WHERE seq = 1;
COMMIT;

SELECT seq FROM txn_log;

-- PostgreSQL only warns about these: a BEGIN inside a transaction, and COMMIT or ROLLBACK
-- outside one. An empty transaction commits nothing.
BEGIN;
BEGIN;
SELECT COUNT(*) FROM txn_log;
COMMIT;
COMMIT;
ROLLBACK;
BEGIN;
COMMIT;

DROP TABLE txn_accounts;
DROP TABLE txn_log;
