//! Lock table tests: scenario scripts in `testdata/locks/` (reviewed output), a property test
//! over random schedules, and unit tests for bounds and keepalives.
//!
//! Script commands:
//!
//! ```text
//! txn a start=10 [id=N]          define transaction a (id defaults to definition order)
//! acquire a KEY|A..B|A.. S|X     ask for a lock (request ids are numbered per script)
//! release a                      commit/abort: drop a's locks, print the grants
//! prepare a                      mark_prepared
//! restore a SPAN=S|X ...         restore a prepared transaction's locks
//! leader_change                  a new leader: an empty lock table
//! touch a at=N / expired at=N timeout=N
//! holds a SPAN S|X / locks_of a
//! state                          every transaction's locks and the wait queue
//! ```
//!
//! After every command the table's invariants are checked ([`check_invariants`]).

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt::Write as _;

use proptest::prelude::*;

use super::*;

type Res<T> = std::result::Result<T, Box<dyn StdError>>;

fn ts(n: u64) -> Timestamp {
    Timestamp::from_nanos(n)
}

fn parse_span(s: &str) -> Res<Span> {
    Ok(match s.split_once("..") {
        Some((a, b)) => Span::range(a, b)?,
        None => Span::key(s),
    })
}

fn parse_mode(s: &str) -> Res<Mode> {
    match s {
        "S" => Ok(Mode::Shared),
        "X" => Ok(Mode::Exclusive),
        _ => Err(format!("mode must be S or X, not {s}").into()),
    }
}

fn mode_str(m: Mode) -> &'static str {
    match m {
        Mode::Shared => "S",
        Mode::Exclusive => "X",
    }
}

#[derive(Default)]
struct Scenario {
    table: LockTable,
    txns: BTreeMap<String, TxnMeta>,
    names: BTreeMap<TxnId, String>,
    next_req: u64,
}

impl Scenario {
    fn txn(&self, name: &str) -> Res<TxnMeta> {
        self.txns.get(name).copied().ok_or_else(|| format!("unknown transaction {name}; define it with `txn`").into())
    }

    fn name(&self, id: TxnId) -> &str {
        self.names.get(&id).map_or("?", String::as_str)
    }

    fn names(&self, ids: &[TxnId]) -> String {
        ids.iter().map(|id| self.name(*id)).collect::<Vec<_>>().join(", ")
    }

    fn state(&self, out: &mut String) -> Res<()> {
        for id in self.table.txn_ids() {
            let info = self.table.txn(id).expect("listed transaction is known");
            let locks: Vec<String> =
                self.table.locks_of(id).iter().map(|(s, m)| format!("{} {s}", mode_str(*m))).collect();
            let flags = [(info.prepared, " prepared"), (info.wounded, " wounded")]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, f)| *f)
                .collect::<String>();
            let locks = if locks.is_empty() { "no locks".to_string() } else { locks.join(", ") };
            writeln!(out, "{} start={}{flags}: {locks}", self.name(id), info.meta.start.nanos())?;
        }
        let waiting: Vec<String> = self
            .table
            .waiting()
            .map(|w| format!("{}#{} {} {}", self.name(w.txn.id), w.req, mode_str(w.mode), w.span))
            .collect();
        writeln!(out, "queue: {}", if waiting.is_empty() { "empty".to_string() } else { waiting.join(", ") })?;
        Ok(())
    }
}

impl goldenscript::Runner for Scenario {
    type Command = goldenscript::Command;

    fn run(&mut self, command: &goldenscript::Command, _: &goldenscript::Context) -> Res<String> {
        let mut out = String::new();
        let mut args = command.consume_args();
        match command.name.as_str() {
            "txn" => {
                let name = args.next_pos().ok_or("txn needs a name")?.to_string();
                let start: u64 = args.take_key("start").ok_or("txn needs start=")?.parse()?;
                let id: u128 = args.take_key("id").map(str::parse).transpose()?.unwrap_or(self.txns.len() as u128 + 1);
                args.reject_next()?;
                let meta = TxnMeta::new(TxnId(id), ts(start));
                self.names.insert(meta.id, name.clone());
                self.txns.insert(name, meta);
            }
            "acquire" => {
                let t = self.txn(args.next_pos().ok_or("acquire needs a transaction")?)?;
                let span = parse_span(args.next_pos().ok_or("acquire needs a span")?)?;
                let mode = parse_mode(args.next_pos().ok_or("acquire needs a mode")?)?;
                let req = match args.take_key("req") {
                    Some(r) => r.parse()?,
                    None => {
                        self.next_req += 1;
                        self.next_req
                    }
                };
                args.reject_next()?;
                let label = format!("{}#{req} {} {span}", self.name(t.id), mode_str(mode));
                match self.table.acquire(t, req, span, mode)? {
                    Acquired::Granted => writeln!(out, "{label}: granted")?,
                    Acquired::Waiting { wounded } if wounded.is_empty() => writeln!(out, "{label}: waiting")?,
                    Acquired::Waiting { wounded } => {
                        writeln!(out, "{label}: waiting, wounded {}", self.names(&wounded))?
                    }
                }
            }
            "release" => {
                let t = self.txn(args.next_pos().ok_or("release needs a transaction")?)?;
                args.reject_next()?;
                let granted = self.table.release(t.id);
                let g: Vec<String> = granted.iter().map(|(id, req)| format!("{}#{req}", self.name(*id))).collect();
                writeln!(
                    out,
                    "release {}: {}",
                    self.name(t.id),
                    if g.is_empty() { "nothing granted".to_string() } else { format!("granted {}", g.join(", ")) }
                )?;
            }
            "prepare" => {
                let t = self.txn(args.next_pos().ok_or("prepare needs a transaction")?)?;
                args.reject_next()?;
                self.table.mark_prepared(t.id)?;
                writeln!(out, "{} prepared", self.name(t.id))?;
            }
            "restore" => {
                let t = self.txn(args.next_pos().ok_or("restore needs a transaction")?)?;
                let mut spans = Vec::new();
                while let Some((span, mode)) = args.next_key() {
                    spans.push((parse_span(span)?, parse_mode(mode)?));
                }
                args.reject_next()?;
                self.table.restore(t, spans);
                writeln!(out, "{} restored", self.name(t.id))?;
            }
            "leader_change" => {
                args.reject_next()?;
                self.table = LockTable::new();
                writeln!(out, "new leader: empty lock table")?;
            }
            "touch" => {
                let t = self.txn(args.next_pos().ok_or("touch needs a transaction")?)?;
                let at: u64 = args.take_key("at").ok_or("touch needs at=")?.parse()?;
                args.reject_next()?;
                let known = self.table.touch(t.id, ts(at));
                writeln!(out, "touch {}: {}", self.name(t.id), if known { "known" } else { "unknown" })?;
            }
            "expired" => {
                let at: u64 = args.take_key("at").ok_or("expired needs at=")?.parse()?;
                let timeout: u64 = args.take_key("timeout").ok_or("expired needs timeout=")?.parse()?;
                args.reject_next()?;
                let ids = self.table.expired(ts(at), Duration::from_nanos(timeout));
                writeln!(out, "expired: [{}]", self.names(&ids))?;
            }
            "holds" => {
                let t = self.txn(args.next_pos().ok_or("holds needs a transaction")?)?;
                let span = parse_span(args.next_pos().ok_or("holds needs a span")?)?;
                let mode = parse_mode(args.next_pos().ok_or("holds needs a mode")?)?;
                args.reject_next()?;
                writeln!(out, "{}", self.table.holds(t.id, &span, mode))?;
            }
            "locks_of" => {
                let t = self.txn(args.next_pos().ok_or("locks_of needs a transaction")?)?;
                args.reject_next()?;
                let l: Vec<String> =
                    self.table.locks_of(t.id).iter().map(|(s, m)| format!("{} {s}", mode_str(*m))).collect();
                writeln!(out, "[{}]", l.join(", "))?;
            }
            "state" => {
                args.reject_next()?;
                self.state(&mut out)?;
            }
            name => return Err(format!("unknown command {name}").into()),
        }
        Ok(out)
    }

    fn end_command(&mut self, _: &goldenscript::Command, _: &goldenscript::Context) -> Res<String> {
        check_invariants(&self.table, false);
        Ok(String::new())
    }
}

#[test]
fn scenarios() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/locks");
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata/locks exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    scripts.sort();
    assert!(!scripts.is_empty(), "no scenario scripts in {}", dir.display());
    for path in scripts {
        if let Err(e) = goldenscript::run(&mut Scenario::default(), &path) {
            panic!("scenario {} failed: {e}", path.display());
        }
    }
}

/// Every held lock, as (transaction, span, mode).
fn all_locks(t: &LockTable) -> Vec<(TxnInfo, Span, Mode)> {
    t.txn_ids()
        .flat_map(|id| {
            let info = t.txn(id).expect("listed transaction is known");
            t.locks_of(id).into_iter().map(move |(s, m)| (info.clone(), s, m))
        })
        .collect()
}

/// The lock table's safety and liveness invariants, checked from its public view:
/// 1. no two transactions hold conflicting locks;
/// 2. every waiting request is blocked (no lost wake-up): by a conflicting lock of another
///    transaction, a conflicting request of another transaction queued ahead of it, or because
///    its own transaction is wounded (about to abort);
/// 3. the wait-for relation points only to older, prepared or (unless `wounded_released`)
///    wounded transactions, so it has no cycle: the oldest waiting transaction is never blocked
///    by a younger one that is not prepared;
/// 4. prepared transactions wait for nothing and were not wounded.
fn check_invariants(t: &LockTable, wounded_released: bool) {
    let locks = all_locks(t);
    for (i, (a, sa, ma)) in locks.iter().enumerate() {
        for (b, sb, mb) in &locks[i + 1..] {
            assert!(
                a.meta.id == b.meta.id || !(sa.overlaps(sb) && ma.conflicts_with(*mb)),
                "invariant 1: {} holds {ma:?} {sa} and {} holds {mb:?} {sb}",
                a.meta.id,
                b.meta.id
            );
        }
    }
    let waiting: Vec<WaitInfo> = t.waiting().collect();
    for (i, w) in waiting.iter().enumerate() {
        let conflicts = |txn: TxnId, span: &Span, mode: Mode| {
            txn != w.txn.id && span.overlaps(&w.span) && mode.conflicts_with(w.mode)
        };
        let holders: Vec<&TxnInfo> =
            locks.iter().filter(|(h, s, m)| conflicts(h.meta.id, s, *m)).map(|l| &l.0).collect();
        let ahead: Vec<&WaitInfo> = waiting[..i].iter().filter(|q| conflicts(q.txn.id, &q.span, q.mode)).collect();
        let wounded = t.txn(w.txn.id).expect("a waiter's transaction is known").wounded;
        assert!(
            !holders.is_empty() || !ahead.is_empty() || wounded,
            "invariant 2: {}#{} waits for nothing",
            w.txn.id,
            w.req
        );
        for h in holders {
            assert!(
                h.meta.is_older_than(&w.txn) || h.prepared || (h.wounded && !wounded_released),
                "invariant 3: {} waits for younger, unprepared, unwounded holder {}",
                w.txn.id,
                h.meta.id
            );
        }
        for q in ahead {
            assert!(q.txn.is_older_than(&w.txn), "invariant 3: {} queued behind younger {}", w.txn.id, q.txn.id);
        }
    }
    for id in t.txn_ids() {
        let info = t.txn(id).expect("listed transaction is known");
        assert!(!info.prepared || (info.waits == 0 && !info.wounded), "invariant 4: prepared {id} {info:?}");
    }
}

#[derive(Clone, Debug)]
enum Op {
    Acquire { txn: usize, span: Span, mode: Mode },
    Release { txn: usize },
    Prepare { txn: usize },
    LeaderChange,
}

const KEYS: &[&str] = &["a", "b", "c", "d", "e"];

fn span_strategy() -> impl Strategy<Value = Span> {
    prop_oneof![
        4 => (0..KEYS.len()).prop_map(|i| Span::key(KEYS[i])),
        1 => (0..KEYS.len(), 1..=KEYS.len()).prop_map(|(i, len)| {
            let end = if i + len >= KEYS.len() { "" } else { KEYS[i + len] };
            Span::range(KEYS[i], end).expect("non-empty by construction")
        }),
    ]
}

fn op_strategy(txns: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..txns, span_strategy(), prop_oneof![Just(Mode::Shared), Just(Mode::Exclusive)])
            .prop_map(|(txn, span, mode)| Op::Acquire { txn, span, mode }),
        3 => (0..txns).prop_map(|txn| Op::Release { txn }),
        1 => (0..txns).prop_map(|txn| Op::Prepare { txn }),
        1 => Just(Op::LeaderChange),
    ]
}

/// Runs a schedule against the table, acting as the caller: wounded transactions are aborted
/// either at once (`eager_abort`) or only when the schedule releases them.
fn run_schedule(starts: &[u64], ops: &[Op], eager_abort: bool) {
    // Some starts repeat: ties are broken by id.
    let metas: Vec<TxnMeta> =
        starts.iter().enumerate().map(|(i, &s)| TxnMeta::new(TxnId(i as u128 + 1), ts(s))).collect();
    let mut table = LockTable::with_limits(Limits { locks_per_txn_max: 8, waiters_max: 16, txns_max: 16 });
    let mut req = 0;
    let mut waiting: BTreeMap<(TxnId, u64), (Span, Mode)> = BTreeMap::new();
    for op in ops {
        let mut granted = Vec::new();
        match op {
            Op::Acquire { txn, span, mode } => {
                req += 1;
                match table.acquire(metas[*txn], req, span.clone(), *mode) {
                    Ok(Acquired::Granted) => {
                        assert!(table.holds(metas[*txn].id, span, *mode), "granted means held");
                    }
                    Ok(Acquired::Waiting { wounded }) => {
                        waiting.insert((metas[*txn].id, req), (span.clone(), *mode));
                        for w in wounded {
                            assert!(metas[*txn].is_older_than(&table.txn(w).expect("wounded is known").meta));
                            if eager_abort {
                                waiting.retain(|(t, _), _| *t != w);
                                granted.extend(table.release(w));
                            }
                        }
                    }
                    Err(
                        Error::Wounded { .. }
                        | Error::Prepared { .. }
                        | Error::TooLarge { .. }
                        | Error::TooManyWaiters { .. }
                        | Error::TooManyTxns { .. },
                    ) => {}
                    Err(e) => panic!("unexpected error {e}"),
                }
            }
            Op::Release { txn } => {
                let id = metas[*txn].id;
                waiting.retain(|(t, _), _| *t != id);
                granted.extend(table.release(id));
            }
            Op::Prepare { txn } => {
                let _ = table.mark_prepared(metas[*txn].id);
            }
            Op::LeaderChange => {
                // The new leader keeps only prepared transactions, from their records.
                let mut next = LockTable::with_limits(table.limits);
                for id in table.txn_ids() {
                    let info = table.txn(id).expect("listed transaction is known");
                    if info.prepared {
                        next.restore(info.meta, table.locks_of(id));
                        assert!(next.txn(id).expect("restored").prepared);
                    }
                }
                waiting.clear();
                table = next;
            }
        }
        for (id, r) in granted {
            let (span, mode) = waiting.remove(&(id, r)).expect("a grant answers a waiting request");
            assert!(table.holds(id, &span, mode), "granted waiter holds its lock");
        }
        check_invariants(&table, eager_abort);
        let queued: Vec<(TxnId, u64)> = table.waiting().map(|w| (w.txn.id, w.req)).collect();
        let expected: Vec<(TxnId, u64)> = waiting.keys().copied().collect();
        let mut queued_sorted = queued.clone();
        queued_sorted.sort();
        assert_eq!(queued_sorted, expected, "the queue holds exactly the requests not yet granted");
    }
    // Releasing everything, oldest first, grants or drops every request and empties the table.
    let mut ids: Vec<TxnMeta> = table.txn_ids().map(|id| table.txn(id).expect("known").meta).collect();
    ids.sort();
    for m in ids {
        table.release(m.id);
        check_invariants(&table, eager_abort);
    }
    assert!(table.is_empty() && table.waiting().next().is_none(), "table empty after releasing everything");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn random_schedules_keep_invariants(
        starts in prop::collection::vec(0u64..4, 2..6),
        ops in prop::collection::vec(op_strategy(6), 1..80),
        eager_abort in any::<bool>(),
    ) {
        let n = starts.len();
        let ops: Vec<Op> = ops
            .into_iter()
            .map(|op| match op {
                Op::Acquire { txn, span, mode } => Op::Acquire { txn: txn % n, span, mode },
                Op::Release { txn } => Op::Release { txn: txn % n },
                Op::Prepare { txn } => Op::Prepare { txn: txn % n },
                Op::LeaderChange => Op::LeaderChange,
            })
            .collect();
        run_schedule(&starts, &ops, eager_abort);
    }
}

fn meta(id: u128, start: u64) -> TxnMeta {
    TxnMeta::new(TxnId(id), ts(start))
}

#[test]
fn bounds_are_enforced_and_errors_change_nothing() {
    let mut t = LockTable::with_limits(Limits { locks_per_txn_max: 2, waiters_max: 1, txns_max: 3 });
    let (a, b, c, d) = (meta(1, 1), meta(2, 2), meta(3, 3), meta(4, 4));
    assert_eq!(t.acquire(a, 1, Span::key("x"), Mode::Exclusive), Ok(Acquired::Granted));
    assert_eq!(t.acquire(a, 2, Span::key("y"), Mode::Exclusive), Ok(Acquired::Granted));
    assert_eq!(t.acquire(a, 3, Span::key("z"), Mode::Exclusive), Err(Error::TooLarge { txn: a.id, max: 2 }));
    assert!(t.acquire(a, 4, Span::key("x"), Mode::Shared).is_ok(), "re-acquiring a held lock needs no room");
    assert_eq!(t.acquire(b, 5, Span::key("x"), Mode::Shared), Ok(Acquired::Waiting { wounded: vec![] }));
    assert_eq!(t.acquire(c, 6, Span::key("y"), Mode::Shared), Err(Error::TooManyWaiters { max: 1 }));
    assert!(t.txn(c.id).is_none(), "a refused request registers nothing");
    assert_eq!(t.acquire(c, 7, Span::key("q"), Mode::Shared), Ok(Acquired::Granted));
    assert_eq!(t.acquire(d, 8, Span::key("r"), Mode::Shared), Err(Error::TooManyTxns { max: 3 }));
    assert!(matches!(
        t.acquire(d, 9, Span::Range { start: b"b".to_vec(), end: b"a".to_vec() }, Mode::Shared),
        Err(Error::EmptyRange { .. })
    ));
    assert_eq!(t.acquire(b, 5, Span::key("x"), Mode::Shared), Ok(Acquired::Waiting { wounded: vec![] }), "idempotent");
    assert_eq!(t.counts(), (3, 3, 1));
    assert!(Error::TooManyWaiters { max: 1 }.retryable() && !Error::TooLarge { txn: a.id, max: 2 }.retryable());
}

#[test]
fn prepare_rules() {
    let mut t = LockTable::new();
    let (old, young) = (meta(1, 1), meta(2, 2));
    assert_eq!(t.mark_prepared(old.id), Err(Error::Unknown { txn: old.id }), "no locks here: cannot prepare");
    t.acquire(young, 1, Span::key("k"), Mode::Shared).expect("free");
    t.acquire(old, 2, Span::key("j"), Mode::Shared).expect("free");
    t.acquire(old, 3, Span::key("k"), Mode::Exclusive).expect("queues");
    assert_eq!(t.mark_prepared(old.id), Err(Error::StillWaiting { txn: old.id }));
    assert_eq!(t.mark_prepared(young.id), Err(Error::Wounded { txn: young.id }), "the wound came first");
    assert_eq!(t.acquire(young, 4, Span::key("z"), Mode::Shared), Err(Error::Wounded { txn: young.id }));
    assert_eq!(t.release(young.id), vec![(old.id, 3)]);
    t.mark_prepared(old.id).expect("all granted");
    assert_eq!(t.acquire(old, 5, Span::key("z"), Mode::Shared), Err(Error::Prepared { txn: old.id }));
    assert_eq!(t.acquire(old, 6, Span::key("k"), Mode::Shared), Ok(Acquired::Granted), "covered by its X lock");
}

#[test]
fn prepared_holders_blocking_older_requests_are_named() {
    // Across groups: `young` prepared here, `old` asks for its key. Wound-wait wounds `young`
    // through its coordinator, so the table must name it; a younger waiter or an unprepared
    // holder (wounded locally instead) is not named.
    let mut t = LockTable::new();
    let (old, young, younger) = (meta(1, 1), meta(2, 2), meta(3, 3));
    t.acquire(young, 1, Span::key("k"), Mode::Exclusive).expect("free");
    t.mark_prepared(young.id).expect("nothing waits");
    assert!(t.prepared_blockers(None).is_empty(), "nobody waits yet");
    t.acquire(younger, 2, Span::key("k"), Mode::Shared).expect("queues");
    assert!(t.prepared_blockers(None).is_empty(), "a younger waiter waits as wound-wait says");
    assert_eq!(
        t.acquire(old, 3, Span::range("a", "z").expect("span"), Mode::Shared),
        Ok(Acquired::Waiting { wounded: vec![] })
    );
    assert_eq!(t.prepared_blockers(Some(old.id)), [young.id].into());
    assert_eq!(t.prepared_blockers(None), [young.id].into());
    assert!(t.prepared_blockers(Some(younger.id)).is_empty());
    t.release(young.id);
    assert!(t.prepared_blockers(None).is_empty(), "released: nothing blocks");
}

#[test]
fn keepalive_expiry() {
    let mut t = LockTable::new();
    let (a, b, c) = (meta(1, 1), meta(2, 2), meta(3, 3));
    for (m, k) in [(a, "a"), (b, "b"), (c, "c")] {
        t.acquire(m, 0, Span::key(k), Mode::Exclusive).expect("free");
    }
    let timeout = Duration::from_nanos(100);
    assert!(t.touch(a.id, ts(1000)));
    assert!(!t.touch(TxnId(99), ts(1000)), "unknown transaction: the caller learns it was aborted");
    assert_eq!(t.expired(ts(1050), timeout), vec![], "b and c start their idle time at this sweep");
    t.mark_prepared(c.id).expect("holds its locks");
    t.touch(b.id, ts(1100));
    assert_eq!(t.expired(ts(1101), timeout), vec![a.id], "a idle 101 > 100");
    assert_eq!(t.expired(ts(1200), timeout), vec![a.id], "b idle exactly 100: not yet");
    assert_eq!(t.expired(ts(1201), timeout), vec![a.id, b.id], "c is prepared: never expires");
    t.touch(b.id, ts(10)); // a late, out-of-order keepalive does not move time back
    assert_eq!(t.txn(b.id).expect("known").last_active, Some(ts(1100)));
}

#[test]
#[should_panic(expected = "restore every prepared record before granting new locks")]
fn restore_over_a_conflicting_lock_is_a_bug() {
    let mut t = LockTable::new();
    t.acquire(meta(1, 1), 1, Span::key("k"), Mode::Shared).expect("free");
    t.restore(meta(2, 2), vec![(Span::key("k"), Mode::Exclusive)]);
}

#[test]
fn priority_is_fixed_at_first_sight() {
    let mut t = LockTable::new();
    t.acquire(meta(1, 50), 1, Span::key("a"), Mode::Exclusive).expect("free");
    t.acquire(meta(2, 40), 2, Span::key("b"), Mode::Exclusive).expect("free");
    // Transaction 1 claims to be older now; it is still ranked by start 50, so it waits for the
    // older transaction 2 instead of wounding it.
    assert_eq!(t.acquire(meta(1, 10), 3, Span::key("b"), Mode::Shared), Ok(Acquired::Waiting { wounded: vec![] }));
    assert_eq!(t.txn(TxnId(1)).expect("known").meta.start, ts(50));
}
