-- INSERT, UPSERT, INSERT … ON CONFLICT, UPDATE and DELETE, and SELECT with primary-key ranges,
-- filters, ORDER BY, LIMIT/OFFSET, GROUP BY and the aggregates COUNT, SUM, MIN, MAX and AVG.

CREATE TABLE dml_accounts (id INT PRIMARY KEY, owner TEXT, balance INT, rate FLOAT, active BOOL);
INSERT INTO dml_accounts VALUES
  (1, 'ann', 100, 1.5, TRUE),
  (2, 'bob', 250, 0.25, TRUE),
  (3, 'cy', 75, NULL, FALSE),
  (4, 'dee', 0, 2.75, TRUE),
  (5, NULL, 500, 0.5, NULL);
INSERT INTO dml_accounts (id, owner) VALUES (6, 'eve');

SELECT * FROM dml_accounts;

-- Point lookups and primary-key ranges.
SELECT owner, balance FROM dml_accounts WHERE id = 2;
SELECT id, owner FROM dml_accounts WHERE id >= 2 AND id < 5;
SELECT id FROM dml_accounts WHERE id BETWEEN 4 AND 100;
SELECT id FROM dml_accounts WHERE id IN (6, 1, 42);
SELECT id FROM dml_accounts WHERE id > 6;

-- Filters on other columns, with SQL's three-valued logic: NULL is neither true nor false.
SELECT id, owner FROM dml_accounts WHERE balance > 90 AND active;
SELECT id FROM dml_accounts WHERE NOT active;
SELECT id FROM dml_accounts WHERE owner IS NULL OR rate IS NULL;
SELECT id, balance * 2 AS doubled, balance % 7, -balance FROM dml_accounts WHERE balance <> 0 AND id <= 3;
SELECT id, owner || '!' AS shout, rate * 3 FROM dml_accounts WHERE rate < 1;

-- ORDER BY (NULLs sort last ascending, first descending), by position, LIMIT and OFFSET.
SELECT id, owner, balance FROM dml_accounts ORDER BY balance DESC, id;
SELECT owner FROM dml_accounts ORDER BY owner;
SELECT id, rate FROM dml_accounts ORDER BY 2 DESC, 1 LIMIT 3;
SELECT id FROM dml_accounts ORDER BY id LIMIT 2 OFFSET 3;
SELECT id FROM dml_accounts LIMIT 0;

-- Aggregates ignore NULLs; over no rows COUNT is 0 and the others NULL.
SELECT COUNT(*), COUNT(owner), SUM(balance), MIN(balance), MAX(owner), AVG(rate) FROM dml_accounts;
SELECT COUNT(*), SUM(balance), MIN(owner), MAX(rate) FROM dml_accounts WHERE id > 100;
SELECT active, COUNT(*), SUM(balance) AS total FROM dml_accounts GROUP BY active ORDER BY active;
SELECT active, SUM(balance) FROM dml_accounts GROUP BY active HAVING SUM(balance) > 100 ORDER BY 2 DESC;

-- Expressions without a table, string literals read as the type they meet.
SELECT 1 + 2 * 3 AS n, 7 / 2 AS int_div, 7.0 / 2 AS float_div, 'it''s' AS quoted, NULL AS nothing;
SELECT id FROM dml_accounts WHERE balance = '250';
SELECT CAST('42' AS INT) + 1 AS cast_int, CAST(3 AS TEXT) || 'x' AS cast_text, CAST(1.25 AS TEXT) AS ft;

-- UPDATE and DELETE report how many rows they touched.
UPDATE dml_accounts SET balance = balance + 10, active = TRUE WHERE owner = 'cy';
UPDATE dml_accounts SET rate = rate / 2 WHERE rate IS NOT NULL AND id < 3;
UPDATE dml_accounts SET owner = 'nobody' WHERE id = 99;
SELECT id, owner, balance, rate, active FROM dml_accounts WHERE id <= 3;

-- Changing a primary key moves the row.
UPDATE dml_accounts SET id = id + 10 WHERE id >= 5;
SELECT id, owner FROM dml_accounts WHERE id > 4;

DELETE FROM dml_accounts WHERE id >= 10 AND id < 16;
DELETE FROM dml_accounts WHERE owner = 'nobody';
SELECT COUNT(*) FROM dml_accounts;

-- UPSERT writes whole rows, inserting or replacing; ON CONFLICT DO NOTHING keeps the old row;
-- ON CONFLICT DO UPDATE changes it, with `excluded` the row that was proposed.
UPSERT INTO dml_accounts VALUES (1, 'ann', 1000, NULL, TRUE), (7, 'gus', 70, 0.5, TRUE);
INSERT INTO dml_accounts VALUES (2, 'bob?', 0, NULL, FALSE), (8, 'hal', 80, NULL, TRUE) ON CONFLICT (id) DO NOTHING;
INSERT INTO dml_accounts VALUES (3, 'cy', 5, NULL, TRUE) ON CONFLICT (id) DO UPDATE SET balance = dml_accounts.balance + excluded.balance;
SELECT * FROM dml_accounts ORDER BY id;

-- A composite key: a prefix of it is a range too.
CREATE TABLE dml_readings (sensor TEXT, at INT, value FLOAT, PRIMARY KEY (sensor, at));
INSERT INTO dml_readings VALUES ('a', 1, 0.5), ('a', 2, 0.75), ('b', 1, 10.5), ('b', 3, -2.25), ('c', 1, NULL);
SELECT * FROM dml_readings WHERE sensor = 'b';
SELECT sensor, at FROM dml_readings WHERE sensor = 'a' AND at > 1;
SELECT sensor, COUNT(*), MIN(value), MAX(value) FROM dml_readings GROUP BY sensor ORDER BY sensor DESC;

-- TEXT, BYTES and BOOL values, and what psql prints for them.
CREATE TABLE dml_blobs (k BYTES PRIMARY KEY, label TEXT, flag BOOL);
INSERT INTO dml_blobs VALUES ('\x00ff', 'hex string', TRUE), (x'0a', 'x literal', FALSE), ('abc', 'text as bytes', NULL);
SELECT * FROM dml_blobs;
SELECT label FROM dml_blobs WHERE k = '\x0a' OR flag = 'true';
INSERT INTO dml_blobs VALUES ('\x01', E'tab\there\nnewline', 'f'), ('\x02', 'ünïcødé ☃', 'yes');
SELECT label, flag FROM dml_blobs WHERE k IN ('\x01', '\x02');

DELETE FROM dml_blobs;
DELETE FROM dml_readings WHERE sensor = 'a';
SELECT COUNT(*) FROM dml_readings;

DROP TABLE dml_accounts;
DROP TABLE dml_readings;
DROP TABLE dml_blobs;
