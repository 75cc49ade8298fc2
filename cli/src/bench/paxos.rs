//! `meridian bench paxos`: replicated appends through real Paxos replicas in one process.
//!
//! Each replica runs the production core on its own thread with its own RocksDB directory; the
//! shell is the minimal one the node uses: drain every queued input, step the replica, write the
//! outbox with one synced batch (group commit), then send and apply. Replicas talk over
//! in-memory channels, so the network costs nothing and the numbers isolate what Paxos and the
//! disk cost. Compare with the fdatasync floor: one synced append per fsync is what a design
//! without batching or pipelining could do.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use meridian_shard::GroupId;
use meridian_shard::paxos::{self, Command, Config, Event, Msg, NodeId, Options, Replica};
use meridian_storage::{Engine, RocksEngine, WriteBatch};
use meridian_truetime::{SimTrueTime, TrueTime};

use super::{Latency, histogram};

/// Arguments of `meridian bench paxos`.
#[derive(clap::Args)]
pub struct PaxosArgs {
    /// Replica counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,3,5")]
    replicas: Vec<usize>,
    /// Concurrent proposers to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    concurrency: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Bytes per appended command.
    #[arg(long, default_value_t = 128)]
    payload: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

const GROUP: GroupId = GroupId(1);
/// Inputs stepped before one write: bounds the batch and the latency added to the first input.
const DRAIN_MAX: usize = 10_000;

enum Input {
    Paxos { from: NodeId, msg: Msg },
    Propose { id: u64, payload: Bytes, done: Sender<()> },
}

struct Node {
    replica: Replica,
    engine: Arc<RocksEngine>,
    tt: SimTrueTime,
    inbox: Receiver<Input>,
    peers: BTreeMap<NodeId, Sender<Input>>,
    waiting: BTreeMap<u64, Sender<()>>,
    lease: Option<Sender<()>>,
}

impl Node {
    fn run(mut self, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
        let mut next_tick = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let wait = next_tick.saturating_duration_since(Instant::now()).min(Duration::from_millis(50));
            let first = match self.inbox.recv_timeout(wait) {
                Ok(i) => Some(i),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            let now = self.tt.now();
            if let Some(i) = first {
                self.step(now, i);
                let more: Vec<Input> = self.inbox.try_iter().take(DRAIN_MAX).collect();
                for i in more {
                    self.step(now, i);
                }
            }
            if Instant::now() >= next_tick {
                self.replica.tick(now);
            }
            let out = self.replica.ready(now);
            if out.needs_write() {
                let mut b = WriteBatch::new();
                paxos::persist(GROUP, &out, &mut b)?;
                self.engine.write(b, true)?;
            }
            for (to, msg) in out.messages {
                if let Some(p) = self.peers.get(&to) {
                    let _ = p.send(Input::Paxos { from: self.replica.id(), msg });
                }
            }
            for (_, cmd) in &out.apply {
                if let Command::App(p) = cmd {
                    let id = u64::from_le_bytes(p[..8].try_into().expect("payloads start with an 8-byte id"));
                    if let Some(done) = self.waiting.remove(&id) {
                        let _ = done.send(());
                    }
                }
            }
            for ev in &out.events {
                if let Event::LeaseAcquired { .. } = ev
                    && let Some(l) = self.lease.take()
                {
                    let _ = l.send(());
                }
            }
            let local_next =
                out.next_tick.map(|t| t.duration_since(self.tt.now().latest)).unwrap_or(Duration::from_millis(10));
            next_tick = Instant::now() + local_next.min(Duration::from_millis(50));
        }
        Ok(())
    }

    fn step(&mut self, now: meridian_truetime::TTInterval, input: Input) {
        match input {
            Input::Paxos { from, msg } => self.replica.receive(now, from, msg),
            Input::Propose { id, payload, done } => {
                if self.replica.propose(Command::App(payload)).is_ok() {
                    self.waiting.insert(id, done);
                }
            }
        }
    }
}

#[derive(serde::Serialize)]
struct Row {
    replicas: usize,
    concurrency: usize,
    appends_per_sec: f64,
    latency: Latency,
    vs_fsync: f64,
}

/// p50 of a 4 KiB `pwrite` + `fdatasync` in `dir`, in microseconds: one durable write.
pub(super) fn fsync_floor_us(dir: &std::path::Path) -> anyhow::Result<f64> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(dir.join("fsync-probe"))?;
    let block = vec![0u8; 4096];
    let mut h = histogram();
    for _ in 0..200 {
        let t = Instant::now();
        f.write_all_at(&block, 0)?;
        f.sync_data()?;
        h.record(t.elapsed().as_nanos() as u64).ok();
    }
    Ok(h.value_at_quantile(0.5) as f64 / 1_000.0)
}

fn measure(replicas: usize, concurrency: usize, seconds: f64, payload: usize) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir()?;
    let ids: Vec<NodeId> = (1..=replicas as u64).map(NodeId).collect();
    let config = Config::voters(ids.iter().copied());
    let mut senders = BTreeMap::new();
    let mut receivers = Vec::new();
    for id in &ids {
        let (tx, rx) = mpsc::channel();
        senders.insert(*id, tx);
        receivers.push((*id, rx));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (lease_tx, lease_rx) = mpsc::channel();
    let mut handles = Vec::new();
    for (id, rx) in receivers {
        let engine = Arc::new(RocksEngine::open(dir.path().join(format!("n{}", id.0)), &Default::default())?);
        let mut replica = Replica::new(id, Options::default(), id.0, config.clone());
        let tt = SimTrueTime::system(Duration::from_millis(1));
        if id == ids[0] {
            replica.campaign(tt.now());
        }
        let node = Node {
            replica,
            engine,
            tt,
            inbox: rx,
            peers: senders.iter().filter(|(p, _)| **p != id).map(|(p, s)| (*p, s.clone())).collect(),
            waiting: BTreeMap::new(),
            lease: (id == ids[0]).then(|| lease_tx.clone()),
        };
        let stop = stop.clone();
        handles.push(std::thread::spawn(move || node.run(stop)));
    }
    lease_rx.recv_timeout(Duration::from_secs(30)).map_err(|_| anyhow::anyhow!("no leader lease within 30 s"))?;
    let leader = senders[&ids[0]].clone();
    let barrier = Arc::new(Barrier::new(concurrency + 1));
    let d = Duration::from_secs_f64(seconds);
    let clients: Vec<_> = (0..concurrency)
        .map(|c| {
            let (leader, barrier) = (leader.clone(), barrier.clone());
            std::thread::spawn(move || -> (u64, hdrhistogram::Histogram<u64>) {
                let mut h = histogram();
                let mut n = 0u64;
                barrier.wait();
                let start = Instant::now();
                while start.elapsed() < d {
                    let id = (c as u64) << 40 | n;
                    let mut p = vec![0u8; payload.max(8)];
                    p[..8].copy_from_slice(&id.to_le_bytes());
                    let (tx, rx) = mpsc::channel();
                    let t = Instant::now();
                    if leader.send(Input::Propose { id, payload: Bytes::from(p), done: tx }).is_err()
                        || rx.recv_timeout(Duration::from_secs(10)).is_err()
                    {
                        break;
                    }
                    h.record(t.elapsed().as_nanos() as u64).ok();
                    n += 1;
                }
                (n, h)
            })
        })
        .collect();
    barrier.wait();
    let mut total = 0;
    let mut h = histogram();
    for c in clients {
        let (n, hc) = c.join().map_err(|_| anyhow::anyhow!("client thread panicked"))?;
        total += n;
        h.add(&hc).ok();
    }
    stop.store(true, Ordering::Relaxed);
    drop(senders);
    for hnd in handles {
        hnd.join().map_err(|_| anyhow::anyhow!("replica thread panicked"))??;
    }
    Ok(Row { replicas, concurrency, appends_per_sec: total as f64 / seconds, latency: Latency::of(&h), vs_fsync: 0.0 })
}

pub fn run(args: PaxosArgs) -> anyhow::Result<()> {
    let probe = tempfile::tempdir()?;
    let floor_us = fsync_floor_us(probe.path())?;
    eprintln!("fdatasync floor: {floor_us:.0} µs → {:.0} synced appends/s alone", 1e6 / floor_us);
    let mut rows = Vec::new();
    for &r in &args.replicas {
        for &c in &args.concurrency {
            eprintln!("measuring {r} replica(s), {c} concurrent proposer(s)…");
            let mut row = measure(r, c, args.seconds, args.payload)?;
            row.vs_fsync = row.appends_per_sec * floor_us / 1e6;
            rows.push(row);
        }
    }
    println!("fdatasync floor (p50): {floor_us:.0} µs");
    println!();
    println!("| replicas | concurrency | appends/s | p50 ms | p99 ms | × 1/fsync |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.1} |",
            r.replicas,
            r.concurrency,
            r.appends_per_sec,
            r.latency.p50_us / 1e3,
            r.latency.p99_us / 1e3,
            r.vs_fsync
        );
    }
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}
