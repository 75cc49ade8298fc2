-- CREATE TABLE and DROP TABLE: the five types under their PostgreSQL and CockroachDB names,
-- composite and quoted primary keys, IF [NOT] EXISTS, the catalog (SHOW TABLES, \d, \dt), and
-- the errors of each. Every error is a paragraph of its own: the harness runs
-- `meridian sql --on-error-stop`, which stops at an error.

CREATE TABLE ddl_kinds (
  id INTEGER PRIMARY KEY,
  big BIGINT, i8 INT8,
  d DOUBLE PRECISION, r REAL, f FLOAT,
  ok BOOLEAN, b BOOL,
  t TEXT NOT NULL, v VARCHAR, s STRING,
  raw BYTEA, bs BYTES
);

\d ddl_kinds

-- A composite primary key: rows are stored in (region, seq) order.
CREATE TABLE ddl_events (region TEXT, seq INT, note TEXT, PRIMARY KEY (region, seq));
INSERT INTO ddl_events VALUES ('us', 2, 'b'), ('eu', 9, 'c'), ('us', 1, 'a');
SELECT * FROM ddl_events;

\d ddl_events

-- Unquoted names fold to lower case; quoted names keep their case; `public.` is the one schema.
CREATE TABLE "DDL Mixed" ("Key" INT PRIMARY KEY, "Value" TEXT);
INSERT INTO "DDL Mixed" VALUES (1, 'one');
SELECT "Key", "Value" AS v FROM "DDL Mixed";
SELECT COUNT(*) FROM PUBLIC.DDL_EVENTS;

\dt

-- IF NOT EXISTS leaves an existing table alone, whatever columns the statement names.
CREATE TABLE IF NOT EXISTS DDL_EVENTS (x INT PRIMARY KEY);
SELECT region, seq FROM ddl_events WHERE region = 'eu';

CREATE TABLE ddl_events (id INT PRIMARY KEY);

CREATE TABLE ddl_nokey (id INT, v TEXT);

CREATE TABLE ddl_twice (id INT PRIMARY KEY, id TEXT);

CREATE TABLE ddl_two (a INT PRIMARY KEY, b INT PRIMARY KEY);

CREATE TABLE ddl_bad (a INT, PRIMARY KEY (nope));

CREATE TABLE ddl_date (id INT PRIMARY KEY, at DATE);

CREATE TABLE ddl_default (id INT PRIMARY KEY, v INT DEFAULT 0);

CREATE TABLE other.ddl_t (id INT PRIMARY KEY);

ALTER TABLE ddl_events ADD COLUMN x INT;

CREATE INDEX ddl_idx ON ddl_events (note);

DROP TABLE ddl_missing;

\d ddl_missing

-- DROP TABLE takes the rows with it: a new table of the same name starts empty.
DROP TABLE "DDL Mixed";
CREATE TABLE "DDL Mixed" ("Key" INT PRIMARY KEY);
SELECT COUNT(*) FROM "DDL Mixed";

DROP TABLE IF EXISTS ddl_missing;
DROP TABLE ddl_kinds, ddl_events;
DROP TABLE "DDL Mixed";
\dt
