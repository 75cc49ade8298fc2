-- pgbench script of bench/compare: one bank transfer, as `meridian bench bank` makes it.
-- Two distinct uniformly random accounts in 0 .. :accounts-1 (pass -D accounts=N); both
-- balances are read, then both written from what was read, in one transaction. The cluster's
-- default isolation is SERIALIZABLE, so a transfer that raced another fails to commit with a
-- serialization error and pgbench (--max-tries) runs it again.
\set from random(0, :accounts - 1)
\set to (:from + random(1, :accounts - 1)) % :accounts
BEGIN;
SELECT balance AS a FROM accounts WHERE id = :from \gset
SELECT balance AS b FROM accounts WHERE id = :to \gset
UPDATE accounts SET balance = :a - 1 WHERE id = :from;
UPDATE accounts SET balance = :b + 1 WHERE id = :to;
COMMIT;
