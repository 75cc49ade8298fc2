-- Snapshot reads. BEGIN READ ONLY reads one consistent snapshot without taking locks;
-- AS OF SYSTEM TIME reads the database as it was (CockroachDB's spelling): a Meridian timestamp
-- like '1732450000.123456789', or a negative interval like '-10s' for a snapshot at most that
-- old. Timestamps differ from run to run, so this script only reads up to an hour back (the
-- versions a cluster keeps), before the table — and the test's cluster — existed.

CREATE TABLE snap_items (id INT PRIMARY KEY, name TEXT, qty INT);
INSERT INTO snap_items VALUES (1, 'apple', 3), (2, 'pear', 0), (3, 'plum', 12);

BEGIN READ ONLY;
SELECT * FROM snap_items WHERE qty > 0;
SELECT SUM(qty) FROM snap_items;
COMMIT;

-- START TRANSACTION READ ONLY is the same.
START TRANSACTION READ ONLY;
SELECT name FROM snap_items WHERE id = 2;
COMMIT;

-- An hour ago the table did not exist.
SELECT * FROM snap_items AS OF SYSTEM TIME '-1h';

SELECT 1 AS one AS OF SYSTEM TIME '-1h';

BEGIN READ ONLY AS OF SYSTEM TIME '-1h';
SELECT 'a snapshot of the past' AS note;
COMMIT;

-- A transaction AS OF SYSTEM TIME is read-only, and every statement reads its snapshot.
BEGIN AS OF SYSTEM TIME '-30m';
SELECT COUNT(*) FROM snap_items;

BEGIN READ ONLY AS OF SYSTEM TIME '-1h';
CREATE TABLE snap_items (id INT PRIMARY KEY);

-- What AS OF SYSTEM TIME accepts.
SELECT * FROM snap_items AS OF SYSTEM TIME '+1h';

SELECT * FROM snap_items AS OF SYSTEM TIME 'yesterday';

SELECT * FROM snap_items AS OF SYSTEM TIME '-10 parsecs';

SELECT * FROM snap_items AS OF SYSTEM TIME now();

UPDATE snap_items SET qty = 0 AS OF SYSTEM TIME '-1h';

BEGIN READ WRITE AS OF SYSTEM TIME '-1h';

BEGIN;
SELECT * FROM snap_items AS OF SYSTEM TIME '-1h';

-- Reading now sees everything committed, and writes still work.
UPDATE snap_items SET qty = qty + 1;
SELECT * FROM snap_items;

DROP TABLE snap_items;
