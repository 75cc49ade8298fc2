//! Running many simulation seeds on every core.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

/// Calls `run(seed)` for every seed of `seeds`, on `threads` threads (at least one), each seed
/// once; returns when all are done. Each seed is deterministic on its own, so the order in
/// which threads pick them does not matter.
pub fn for_each_seed(seeds: Range<u64>, threads: usize, run: impl Fn(u64) + Sync) {
    let next = AtomicU64::new(seeds.start);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= seeds.end {
                        break;
                    }
                    run(seed);
                }
            });
        }
    });
}

/// The threads to run seeds on: one per core.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
