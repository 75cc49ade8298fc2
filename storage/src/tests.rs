//! One suite, run against every engine: `MemEngine` always, `RocksEngine` with the `rocksdb`
//! feature. An engine that passes is interchangeable with the other above the trait.

use std::sync::Arc;

use meridian_truetime::Timestamp;

use crate::mvcc::{self, GcStats};
use crate::{Cf, Direction, Engine, Error, GroupId, LogStore, MemEngine, Mvcc, Slot, Version, WriteBatch, log};

fn ts(n: u64) -> Timestamp {
    Timestamp::from_nanos(n)
}

fn collect(e: &dyn Engine, cf: Cf, start: &[u8], end: Option<&[u8]>, dir: Direction) -> Vec<(Vec<u8>, Vec<u8>)> {
    e.scan(cf, start, end, dir).expect("scan").map(|kv| kv.expect("scan item")).collect()
}

fn write(e: &dyn Engine, f: impl FnOnce(&mut WriteBatch)) {
    let mut b = WriteBatch::new();
    f(&mut b);
    e.write(b, true).expect("write");
}

pub(crate) fn basic_put_get_delete(e: Arc<dyn Engine>) {
    write(&*e, |b| {
        b.put(Cf::Data, b"k1".to_vec(), b"v1".to_vec());
        b.put(Cf::Meta, b"k1".to_vec(), b"meta".to_vec());
    });
    assert_eq!(e.get(Cf::Data, b"k1").unwrap(), Some(b"v1".to_vec()));
    assert_eq!(e.get(Cf::Meta, b"k1").unwrap(), Some(b"meta".to_vec()), "column families are separate");
    assert_eq!(e.get(Cf::Txn, b"k1").unwrap(), None);
    // Operations in one batch apply in order.
    write(&*e, |b| {
        b.put(Cf::Data, b"k2".to_vec(), b"x".to_vec());
        b.delete(Cf::Data, b"k2".to_vec());
        b.delete(Cf::Data, b"k1".to_vec());
        b.put(Cf::Data, b"k1".to_vec(), b"again".to_vec());
    });
    assert_eq!(e.get(Cf::Data, b"k2").unwrap(), None);
    assert_eq!(e.get(Cf::Data, b"k1").unwrap(), Some(b"again".to_vec()));
    // Unsynced writes are visible at once.
    let mut b = WriteBatch::new();
    b.put(Cf::Txn, b"t".to_vec(), b"1".to_vec());
    e.write(b, false).unwrap();
    assert_eq!(e.get(Cf::Txn, b"t").unwrap(), Some(b"1".to_vec()));
    e.sync().unwrap();
}

pub(crate) fn scans_in_both_directions(e: Arc<dyn Engine>) {
    // More keys than MemEngine's scan chunk, so chunk boundaries are crossed.
    let n = 700u32;
    write(&*e, |b| {
        for i in 0..n {
            b.put(Cf::Data, format!("key{i:05}").into_bytes(), i.to_be_bytes().to_vec());
        }
        b.put(Cf::Log, b"key00001".to_vec(), b"other cf".to_vec());
    });
    let all = collect(&*e, Cf::Data, b"", None, Direction::Forward);
    assert_eq!(all.len(), n as usize);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "ascending");
    let rev = collect(&*e, Cf::Data, b"", None, Direction::Reverse);
    assert_eq!(rev, all.iter().rev().cloned().collect::<Vec<_>>());
    let mid = collect(&*e, Cf::Data, b"key00100", Some(b"key00400"), Direction::Forward);
    assert_eq!(mid.len(), 300);
    assert_eq!(mid[0].0, b"key00100");
    assert_eq!(mid[299].0, b"key00399", "end is exclusive");
    let mid_rev = collect(&*e, Cf::Data, b"key00100", Some(b"key00400"), Direction::Reverse);
    assert_eq!(mid_rev, mid.iter().rev().cloned().collect::<Vec<_>>());
    assert!(collect(&*e, Cf::Data, b"key00400", Some(b"key00100"), Direction::Forward).is_empty());
    assert!(collect(&*e, Cf::Data, b"key00400", Some(b"key00400"), Direction::Reverse).is_empty());
    write(&*e, |b| b.delete_range(Cf::Data, b"key00010".to_vec(), b"key00690".to_vec()));
    assert_eq!(collect(&*e, Cf::Data, b"", None, Direction::Forward).len(), 20);
    assert_eq!(e.get(Cf::Log, b"key00001").unwrap(), Some(b"other cf".to_vec()));
}

pub(crate) fn mvcc_reads_see_the_newest_version_at_or_below_ts(e: Arc<dyn Engine>) {
    let m = Mvcc::open(e.clone()).unwrap();
    write(&*e, |b| {
        mvcc::put(b, b"a", ts(10), b"a10").unwrap();
        mvcc::delete(b, b"a", ts(20)).unwrap();
        mvcc::put(b, b"a", ts(30), b"a30").unwrap();
        mvcc::put(b, b"a\x00", ts(15), b"a0-15").unwrap();
        mvcc::put(b, b"b", ts(5), b"b5").unwrap();
        mvcc::put(b, b"", ts(1), b"empty key").unwrap();
    });
    type Case<'a> = (&'a [u8], u64, Option<&'a [u8]>);
    let table: &[Case] = &[
        (b"a", 9, None),
        (b"a", 10, Some(b"a10")),
        (b"a", 19, Some(b"a10")),
        (b"a", 20, None), // tombstone hides a10
        (b"a", 29, None),
        (b"a", 30, Some(b"a30")),
        (b"a", u64::MAX, Some(b"a30")),
        (b"a\x00", 14, None),
        (b"a\x00", 15, Some(b"a0-15")),
        (b"b", 4, None),
        (b"b", 5, Some(b"b5")),
        (b"", 1, Some(b"empty key")),
        (b"c", u64::MAX, None),
    ];
    for &(key, at, want) in table {
        assert_eq!(m.get(key, ts(at)).unwrap().as_deref(), want, "get {key:?} @ {at}");
    }
    assert_eq!(m.get_version(b"a", ts(25)).unwrap(), Some(Version { ts: ts(20), value: None }));

    let scan = |at: u64| -> Vec<(Vec<u8>, Vec<u8>)> { m.scan(b"", None, ts(at), usize::MAX).unwrap() };
    let kv = |k: &[u8], v: &[u8]| (k.to_vec(), v.to_vec());
    assert_eq!(scan(10), vec![kv(b"", b"empty key"), kv(b"a", b"a10"), kv(b"b", b"b5")]);
    assert_eq!(scan(20), vec![kv(b"", b"empty key"), kv(b"a\x00", b"a0-15"), kv(b"b", b"b5")]);
    assert_eq!(scan(40), vec![kv(b"", b"empty key"), kv(b"a", b"a30"), kv(b"a\x00", b"a0-15"), kv(b"b", b"b5")]);
    assert_eq!(m.scan(b"a", Some(b"b"), ts(40), usize::MAX).unwrap(), vec![kv(b"a", b"a30"), kv(b"a\x00", b"a0-15")]);
    assert_eq!(m.scan(b"", None, ts(40), 2).unwrap().len(), 2, "limit");
    assert_eq!(m.versions(b"a", Some(b"a\x00")).unwrap().len(), 3);
}

pub(crate) fn gc_keeps_exactly_what_reads_above_the_horizon_need(e: Arc<dyn Engine>) {
    let m = Mvcc::open(e.clone()).unwrap();
    write(&*e, |b| {
        for t in [10, 20, 30, 40] {
            mvcc::put(b, b"x", ts(t), format!("x{t}").as_bytes()).unwrap();
        }
        mvcc::put(b, b"y", ts(10), b"y10").unwrap();
        mvcc::delete(b, b"y", ts(20)).unwrap();
        mvcc::put(b, b"z", ts(50), b"z50").unwrap();
    });
    let before: Vec<_> = [25, 30, 35, 40, 60].iter().map(|&t| m.scan(b"", None, ts(t), usize::MAX).unwrap()).collect();
    let stats = m.gc(ts(30)).unwrap();
    // x: keep 30 (visible at the horizon) and 40; drop 10, 20. y: tombstone at 20 is the visible
    // version at 30, so it and y10 both go. z: newer than the horizon, untouched.
    assert_eq!(stats, GcStats { keys_scanned: 3, versions_deleted: 4 });
    let after: Vec<_> = [30, 35, 40, 60].iter().map(|&t| m.scan(b"", None, ts(t), usize::MAX).unwrap()).collect();
    assert_eq!(after, before[1..].to_vec(), "reads at or above the horizon are unchanged");
    assert_eq!(m.versions(b"", None).unwrap().len(), 3);
    match m.get(b"x", ts(29)) {
        Err(Error::BelowGcHorizon { ts: t, horizon }) => assert_eq!((t, horizon), (ts(29), ts(30))),
        other => panic!("read below horizon: {other:?}"),
    }
    assert!(matches!(m.scan(b"", None, ts(1), 10), Err(Error::BelowGcHorizon { .. })));
    // The horizon is durable and never moves back.
    let reopened = Mvcc::open(e.clone()).unwrap();
    assert_eq!(reopened.gc_horizon(), ts(30));
    reopened.gc(ts(5)).unwrap();
    assert_eq!(reopened.gc_horizon(), ts(30));
}

pub(crate) fn oversized_keys_and_values_are_refused(_e: Arc<dyn Engine>) {
    let mut b = WriteBatch::new();
    let big_key = vec![7u8; crate::KEY_SIZE_MAX + 1];
    assert!(matches!(mvcc::put(&mut b, &big_key, ts(1), b"v"), Err(Error::KeyTooLarge { .. })));
    assert!(matches!(mvcc::delete(&mut b, &big_key, ts(1)), Err(Error::KeyTooLarge { .. })));
    let big_value = vec![7u8; crate::VALUE_SIZE_MAX + 1];
    let err = mvcc::put(&mut b, b"k", ts(1), &big_value).unwrap_err();
    assert!(err.to_string().contains("limit is 1048576 bytes"), "{err}");
    assert!(b.is_empty(), "a refused write adds nothing to the batch");
    mvcc::put(&mut b, &vec![1u8; crate::KEY_SIZE_MAX], ts(1), &vec![2u8; crate::VALUE_SIZE_MAX])
        .expect("limits are inclusive");
    let big_entry = vec![0u8; crate::LOG_RECORD_SIZE_MAX + 1];
    assert!(log::put_entry(&mut b, GroupId(1), Slot(1), &big_entry).is_err());
}

pub(crate) fn corrupt_records_are_errors_that_name_the_record(e: Arc<dyn Engine>) {
    let m = Mvcc::open(e.clone()).unwrap();
    write(&*e, |b| mvcc::put(b, b"acct/7", ts(5), b"100").unwrap());
    let key = mvcc::encode_key(b"acct/7", ts(5));
    let good = e.get(Cf::Data, &key).unwrap().unwrap();
    // Flip one payload bit, then truncate: both must be named errors, never wrong data.
    let mut flipped = good.clone();
    flipped[1] ^= 0x01;
    for bad in [flipped, good[..3].to_vec(), Vec::new()] {
        write(&*e, |b| b.put(Cf::Data, key.clone(), bad));
        let err = m.get(b"acct/7", ts(9)).expect_err("corruption detected");
        let msg = err.to_string();
        assert!(msg.contains("corrupt data value of key \"acct/7\""), "{msg}");
        assert!(m.scan(b"", None, ts(9), 10).is_err());
    }
    // A data key that is not a valid encoding.
    write(&*e, |b| b.put(Cf::Data, b"zz".to_vec(), good.clone()));
    let err = m.scan(b"z", None, ts(9), 10).expect_err("bad key detected");
    assert!(err.to_string().contains("corrupt data key"), "{err}");
    // Log entries and hard state.
    write(&*e, |b| {
        log::put_entry(b, GroupId(3), Slot(9), b"entry").unwrap();
        log::put_hard_state(b, GroupId(3), b"hs").unwrap();
    });
    let ls = LogStore::new(e.clone());
    let entry_key = [3u64.to_be_bytes(), 9u64.to_be_bytes()].concat();
    write(&*e, |b| b.put(Cf::Log, entry_key, b"garbage!".to_vec()));
    let err = ls.entry(GroupId(3), Slot(9)).expect_err("corrupt entry");
    assert!(err.to_string().contains("Paxos log entry of group 3 slot 9"), "{err}");
    assert!(ls.entries(GroupId(3), Slot(0), Slot(100), usize::MAX).is_err());
    write(&*e, |b| b.put(Cf::Meta, [&[b'h'][..], &3u64.to_be_bytes()].concat(), vec![1, 2]));
    let err = ls.hard_state(GroupId(3)).expect_err("corrupt hard state");
    assert!(err.to_string().contains("hard state of group 3") && err.to_string().contains("truncated"), "{err}");
}

pub(crate) fn paxos_log_append_read_truncate(e: Arc<dyn Engine>) {
    let ls = LogStore::new(e.clone());
    let (g1, g2) = (GroupId(1), GroupId(u64::MAX));
    assert_eq!(ls.last_slot(g1).unwrap(), None);
    write(&*e, |b| {
        for s in 1..=10u64 {
            log::put_entry(b, g1, Slot(s), format!("g1-{s}").as_bytes()).unwrap();
            log::put_entry(b, g2, Slot(s * 100), format!("g2-{s}").as_bytes()).unwrap();
        }
        log::put_hard_state(b, g1, b"ballot 3").unwrap();
        log::put_hard_state(b, g2, b"ballot 9").unwrap();
    });
    assert_eq!((ls.first_slot(g1).unwrap(), ls.last_slot(g1).unwrap()), (Some(Slot(1)), Some(Slot(10))));
    assert_eq!((ls.first_slot(g2).unwrap(), ls.last_slot(g2).unwrap()), (Some(Slot(100)), Some(Slot(1000))));
    let got = ls.entries(g1, Slot(3), Slot(6), usize::MAX).unwrap();
    assert_eq!(got, vec![(Slot(3), b"g1-3".to_vec()), (Slot(4), b"g1-4".to_vec()), (Slot(5), b"g1-5".to_vec())]);
    assert_eq!(ls.entries(g1, Slot(1), Slot(11), 5).unwrap().len(), 2, "stops once max_bytes is exceeded");
    assert_eq!(ls.entries(g1, Slot(1), Slot(11), 0).unwrap().len(), 1, "always returns one entry");
    // Overwrite a slot (a higher ballot's accept).
    write(&*e, |b| log::put_entry(b, g1, Slot(4), b"g1-4'").unwrap());
    assert_eq!(ls.entry(g1, Slot(4)).unwrap(), Some(b"g1-4'".to_vec()));
    write(&*e, |b| {
        log::truncate_prefix(b, g1, Slot(4));
        log::truncate_suffix(b, g1, Slot(8));
        log::truncate_suffix(b, g2, Slot(500));
    });
    let slots: Vec<u64> =
        ls.entries(g1, Slot(0), Slot(u64::MAX), usize::MAX).unwrap().iter().map(|(s, _)| s.0).collect();
    assert_eq!(slots, vec![4, 5, 6, 7]);
    assert_eq!(ls.last_slot(g2).unwrap(), Some(Slot(400)), "the last group's suffix truncation works");
    assert_eq!(ls.hard_state(g1).unwrap(), Some(b"ballot 3".to_vec()));
    assert_eq!(ls.groups().unwrap(), vec![g1, g2]);
    write(&*e, |b| log::delete_group(b, g1));
    assert_eq!(ls.groups().unwrap(), vec![g2]);
    assert_eq!(ls.last_slot(g1).unwrap(), None);
    assert_eq!(ls.last_slot(g2).unwrap(), Some(Slot(400)));
}

macro_rules! engine_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;
            engine_suite!(@tests $make;
                basic_put_get_delete, scans_in_both_directions,
                mvcc_reads_see_the_newest_version_at_or_below_ts,
                gc_keeps_exactly_what_reads_above_the_horizon_need,
                oversized_keys_and_values_are_refused,
                corrupt_records_are_errors_that_name_the_record,
                paxos_log_append_read_truncate);
        }
    };
    (@tests $make:expr; $($t:ident),*) => {
        $(
            #[test]
            fn $t() {
                let (engine, _guard) = $make;
                super::$t(engine);
            }
        )*
    };
}

engine_suite!(mem, (Arc::new(MemEngine::new()) as Arc<dyn Engine>, ()));

#[cfg(feature = "rocksdb")]
engine_suite!(rocks, {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = crate::RocksEngine::open(dir.path(), &Default::default()).expect("open rocksdb");
    (Arc::new(engine) as Arc<dyn Engine>, dir)
});

#[test]
fn mem_engine_crash_loses_a_suffix_of_whole_unsynced_batches() {
    let e = MemEngine::new();
    let batch = |i: u32| {
        let mut b = WriteBatch::new();
        for j in 0..3 {
            b.put(Cf::Data, format!("b{i}/{j}").into_bytes(), vec![1]);
        }
        b
    };
    e.write(batch(0), true).unwrap();
    for i in 1..=4 {
        e.write(batch(i), false).unwrap();
    }
    assert_eq!(e.unsynced_batches(), 4);
    e.crash(2); // the log kept b1 and b2 but not b3, b4
    let present =
        |i: u32| (0..3).filter(|j| e.get(Cf::Data, format!("b{i}/{j}").as_bytes()).unwrap().is_some()).count();
    assert_eq!((0..5).map(present).collect::<Vec<_>>(), vec![3, 3, 3, 0, 0]);
    assert_eq!(e.unsynced_batches(), 0);
    e.write(batch(9), false).unwrap();
    e.sync().unwrap();
    e.crash(0);
    assert_eq!(present(9), 3, "sync made it durable");
}

#[test]
fn mem_engine_counts_one_sync_for_many_unsynced_writes() {
    let e = MemEngine::new();
    for i in 0..10u8 {
        let mut b = WriteBatch::new();
        b.put(Cf::Log, vec![i], vec![i]);
        e.write(b, false).unwrap();
    }
    e.sync().unwrap();
    e.sync().unwrap(); // nothing pending: no extra sync
    assert_eq!(e.syncs(), 1);
}
