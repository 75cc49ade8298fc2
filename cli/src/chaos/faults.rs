//! The fault loop of `meridian chaos`: one seeded RNG picks each fault, its target and how long
//! it lasts; the loop injects and heals them on schedule.
//!
//! ```text
//!   kill       SIGKILL a node; restart it from its data directory 2–6 s later
//!   pause      SIGSTOP a node; SIGCONT 1–5 s later
//!   partition  cut links through the nodes' fault-injection API for 2–8 s: isolate a node,
//!              isolate the leader of a range, split a minority from the majority, or a bridge
//!              (two halves that cannot talk, and one node that talks to both)
//!   skew       offset a node's TrueTime clock for 3–10 s: within ±ε (safe), or with
//!              --unsafe-skew-beyond-epsilon far beyond ε, at a range's leader (UNSAFE)
//!   leader     hand a range's leadership to another replica (`meridian admin transfer`)
//! ```
//!
//! At most a minority of the nodes is faulty at any moment (a partition counts its smaller
//! side), so with one replica per node every range keeps a live majority. The seed fixes the
//! choices; real processes on real time still make every run different in its interleavings.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_client::{Client, ClientError};
use meridian_proto::v1 as pb;
use meridian_shard::GroupId;
use meridian_shard::paxos::NodeId;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use super::procs::Procs;
use crate::workload;

/// How often the loop looks at its schedule.
const TICK: Duration = Duration::from_millis(100);
/// Pause between injection attempts, in milliseconds.
const GAP_MS: std::ops::Range<u64> = 1_000..3_000;
/// How long a node's status may take to come back (the fault loop must not fall behind its
/// healing schedule).
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a leader transfer may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Unsafe clock offsets are at least this large, whatever ε is.
const UNSAFE_OFFSET_MIN: Duration = Duration::from_millis(20);
/// ... and at most this large (or 50 ε): enough to reorder transactions across leaders, not so
/// much that every lease looks expired at once.
const UNSAFE_OFFSET_MAX: Duration = Duration::from_millis(250);

/// A kind of fault `--faults` can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum FaultKind {
    /// SIGKILL a node, restart it a few seconds later.
    Kill,
    /// SIGSTOP a node, SIGCONT it a few seconds later.
    Pause,
    /// Cut network links between nodes, heal a few seconds later.
    Partition,
    /// Offset a node's clock (within ε unless --unsafe-skew-beyond-epsilon).
    Skew,
    /// Transfer a range's leadership.
    Leader,
}

impl FaultKind {
    /// The name `--faults` uses.
    pub(crate) fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Skew => "skew",
            FaultKind::Leader => "leader",
        }
    }
}

/// A fault in force, and the nodes it makes faulty.
enum Fault {
    Killed(usize),
    Paused(usize),
    /// The links are in [`Chaos::cut`]; `faulty` is the smaller side.
    Partition {
        what: String,
        faulty: Vec<usize>,
    },
    Skewed(usize),
}

impl Fault {
    fn faulty(&self) -> Vec<usize> {
        match self {
            Fault::Killed(i) | Fault::Paused(i) | Fault::Skewed(i) => vec![*i],
            Fault::Partition { faulty, .. } => faulty.clone(),
        }
    }
}

struct Active {
    fault: Fault,
    heal_at: Instant,
}

/// The fault loop's state.
pub(crate) struct Chaos<'p> {
    procs: &'p mut Procs,
    client: Arc<Client>,
    rng: StdRng,
    kinds: Vec<FaultKind>,
    accounts: usize,
    epsilon: Duration,
    unsafe_skew: bool,
    t0: Instant,
    active: Vec<Active>,
    /// Cut links (node indices, smaller first).
    cut: BTreeSet<(usize, usize)>,
    /// Faults injected, by kind.
    pub injected: Vec<(FaultKind, u64)>,
    /// Nodes that died on their own, in words: each is a failed run.
    pub crashes: Vec<String>,
}

/// The wall clock's time of day in UTC, `HH:MM:SS.mmm`.
fn utc_time_of_day() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (secs, millis) = (now.as_secs() % 86_400, now.subsec_millis());
    format!("{:02}:{:02}:{:02}.{millis:03}", secs / 3600, secs / 60 % 60, secs % 60)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl<'p> Chaos<'p> {
    /// A fault loop over `procs`, whose clock for printing starts at `t0`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        procs: &'p mut Procs,
        client: Arc<Client>,
        seed: u64,
        kinds: Vec<FaultKind>,
        accounts: usize,
        epsilon: Duration,
        unsafe_skew: bool,
        t0: Instant,
    ) -> Chaos<'p> {
        let injected = kinds.iter().map(|k| (*k, 0)).collect();
        Chaos {
            procs,
            client,
            rng: StdRng::seed_from_u64(seed),
            kinds,
            accounts,
            epsilon,
            unsafe_skew,
            t0,
            active: Vec::new(),
            cut: BTreeSet::new(),
            injected,
            crashes: Vec::new(),
        }
    }

    /// Faults injected in all.
    pub fn total(&self) -> u64 {
        self.injected.iter().map(|(_, n)| n).sum()
    }

    /// Prints one event, timed from the start of the workload and by the wall clock (UTC, as in
    /// the nodes' logs).
    fn say(&self, what: &str) {
        println!("[{:>8.2}s {}] {what}", self.t0.elapsed().as_secs_f64(), utc_time_of_day());
    }

    fn count(&mut self, kind: FaultKind) {
        if let Some((_, n)) = self.injected.iter_mut().find(|(k, _)| *k == kind) {
            *n += 1;
        }
    }

    fn name(&self, i: usize) -> String {
        self.procs.nodes[i].id.to_string()
    }

    fn names(&self, nodes: &[usize]) -> String {
        nodes.iter().map(|i| self.name(*i)).collect::<Vec<_>>().join(",")
    }

    fn minority(&self) -> usize {
        (self.procs.nodes.len() - 1) / 2
    }

    fn faulty(&self) -> BTreeSet<usize> {
        self.active.iter().flat_map(|a| a.fault.faulty()).collect()
    }

    /// Nodes that are up and in no fault, in index order.
    fn healthy(&self) -> Vec<usize> {
        let faulty = self.faulty();
        (0..self.procs.nodes.len()).filter(|i| !faulty.contains(i) && self.procs.nodes[*i].is_up()).collect()
    }

    /// How many more nodes may become faulty.
    fn budget(&self) -> usize {
        self.minority().saturating_sub(self.faulty().len())
    }

    fn hold(&mut self, fault: Fault, ms: std::ops::Range<u64>) -> Duration {
        let d = Duration::from_millis(self.rng.random_range(ms));
        self.active.push(Active { fault, heal_at: Instant::now() + d });
        d
    }

    /// Injects and heals faults until `duration` has passed since `t0`, then heals everything.
    pub async fn run(&mut self, duration: Duration) -> anyhow::Result<()> {
        let end = self.t0 + duration;
        let mut next = Instant::now() + Duration::from_millis(self.rng.random_range(GAP_MS));
        // Bounded twice: by time, and by ticks (each tick sleeps TICK).
        let ticks_max = duration.as_millis() / TICK.as_millis() + 1;
        for _ in 0..ticks_max {
            let now = Instant::now();
            if now >= end {
                break;
            }
            self.restart_crashed().await?;
            self.heal_due(now).await?;
            if now >= next {
                self.inject_one().await?;
                next = Instant::now() + Duration::from_millis(self.rng.random_range(GAP_MS));
            }
            tokio::time::sleep(TICK).await;
        }
        self.heal_all().await
    }

    /// Records and restarts nodes that exited on their own: a node dies only when we kill it,
    /// so any other exit is a bug (an assertion, a panic) and fails the run.
    pub async fn restart_crashed(&mut self) -> anyhow::Result<()> {
        for (i, status) in self.procs.reap_exited() {
            let log = self.procs.log_path(i);
            let what = format!("node {} exited on its own ({status}); its log: {}", self.name(i), log.display());
            self.say(&format!("CRASH  {what}"));
            for line in super::procs::tail(&log, 10).lines() {
                println!("    | {line}");
            }
            self.crashes.push(what);
            self.procs.restart(i).await?;
            self.push_partition(i).await;
            self.say(&format!("       {} restarted", self.name(i)));
        }
        Ok(())
    }

    async fn heal_due(&mut self, now: Instant) -> anyhow::Result<()> {
        let (due, keep): (Vec<Active>, Vec<Active>) =
            std::mem::take(&mut self.active).into_iter().partition(|a| a.heal_at <= now);
        self.active = keep;
        for a in due {
            self.heal(a.fault).await?;
        }
        Ok(())
    }

    /// Heals every fault, then makes sure no node keeps a partition or a clock offset.
    pub async fn heal_all(&mut self) -> anyhow::Result<()> {
        let mut all = std::mem::take(&mut self.active);
        // Wake paused nodes first: the others' healing may need them.
        all.sort_by_key(|a| !matches!(a.fault, Fault::Paused(_)));
        for a in all {
            self.heal(a.fault).await?;
        }
        self.restart_crashed().await?;
        for i in 0..self.procs.nodes.len() {
            for attempt in 0..3 {
                let healed = async {
                    self.procs.set_partition(i, &[]).await?;
                    self.procs.set_clock_offset(i, 0).await
                };
                match healed.await {
                    Ok(_) => break,
                    Err(e) if attempt == 2 => {
                        self.say(&format!("warning: could not clear faults at {}: {e:#}", self.name(i)))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        }
        self.say("healed: every node up, no partition, no clock offset");
        Ok(())
    }

    async fn heal(&mut self, fault: Fault) -> anyhow::Result<()> {
        match fault {
            Fault::Killed(i) => {
                if !self.procs.is_running(i) {
                    self.procs.restart(i).await?;
                }
                self.push_partition(i).await;
                self.say(&format!("heal   kill {}: restarted", self.name(i)));
            }
            Fault::Paused(i) => {
                self.procs.resume(i)?;
                self.push_partition(i).await;
                self.say(&format!("heal   pause {}: SIGCONT", self.name(i)));
            }
            Fault::Partition { what, .. } => {
                self.cut.clear();
                for i in 0..self.procs.nodes.len() {
                    self.push_partition(i).await;
                }
                self.say(&format!("heal   partition ({what})"));
            }
            Fault::Skewed(i) => {
                match self.procs.set_clock_offset(i, 0).await {
                    Ok(_) => self.say(&format!("heal   skew {}: clock offset 0", self.name(i))),
                    // heal_all clears every offset again at the end.
                    Err(e) => self.say(&format!("heal   skew {}: FAILED to reset the clock ({e:#})", self.name(i))),
                }
            }
        }
        Ok(())
    }

    /// Tells node `i` which peers it is cut off from now, if it can listen.
    async fn push_partition(&self, i: usize) {
        if !self.procs.nodes[i].is_up() {
            return; // told when it resumes or restarts
        }
        let blocked: Vec<NodeId> = self
            .cut
            .iter()
            .filter_map(|&(a, b)| {
                if a == i {
                    Some(b)
                } else if b == i {
                    Some(a)
                } else {
                    None
                }
            })
            .map(|j| self.procs.nodes[j].id)
            .collect();
        if let Err(e) = self.procs.set_partition(i, &blocked).await {
            // The other side of each link drops the traffic too.
            self.say(&format!("warning: could not set the partition at {}: {e:#}", self.name(i)));
        }
    }

    /// Injects one fault of a kind that fits the budget now, if any.
    async fn inject_one(&mut self) -> anyhow::Result<()> {
        let mut kinds = self.kinds.clone();
        kinds.shuffle(&mut self.rng);
        for kind in kinds {
            let done = match kind {
                FaultKind::Kill => self.kill().await,
                FaultKind::Pause => self.pause()?,
                FaultKind::Partition => self.partition().await,
                FaultKind::Skew => self.skew().await,
                FaultKind::Leader => self.leader().await,
            };
            if done {
                self.count(kind);
                return Ok(());
            }
        }
        Ok(())
    }

    /// A random healthy node, if the budget allows one more faulty node.
    fn victim(&mut self) -> Option<usize> {
        if self.budget() == 0 {
            return None;
        }
        self.healthy().choose(&mut self.rng).copied()
    }

    async fn kill(&mut self) -> bool {
        let Some(i) = self.victim() else { return false };
        self.procs.kill(i).await;
        let d = self.hold(Fault::Killed(i), 2_000..6_000);
        self.say(&format!("fault  kill {} (SIGKILL; restart in {:.1} s)", self.name(i), d.as_secs_f64()));
        true
    }

    fn pause(&mut self) -> anyhow::Result<bool> {
        let Some(i) = self.victim() else { return Ok(false) };
        self.procs.pause(i)?;
        let d = self.hold(Fault::Paused(i), 1_000..5_000);
        self.say(&format!("fault  pause {} (SIGSTOP for {:.1} s)", self.name(i), d.as_secs_f64()));
        Ok(true)
    }

    /// The node holding the lease of the range that holds `key`, among nodes that answer
    /// within [`STATUS_TIMEOUT`] (asked all at once), with that range as it sees it.
    async fn leader_of(&self, key: &[u8]) -> Option<(usize, pb::RangeDescriptor)> {
        let mut asks = tokio::task::JoinSet::new();
        for (i, n) in self.procs.nodes.iter().enumerate().filter(|(_, n)| n.is_up()) {
            let (client, addr, key) = (self.client.clone(), n.addr.clone(), key.to_vec());
            asks.spawn(async move {
                let s = tokio::time::timeout(STATUS_TIMEOUT, client.node_status(&addr)).await.ok()?.ok()?;
                let holds = |r: &pb::RangeDescriptor| {
                    r.start.as_slice() <= key.as_slice() && (r.end.is_empty() || key.as_slice() < r.end.as_slice())
                };
                let led = s.groups.into_iter().find(|g| g.lease_end > 0 && g.range.as_ref().is_some_and(holds))?;
                Some((i, led.range?))
            });
        }
        while let Some(answer) = asks.join_next().await {
            if let Ok(Some(found)) = answer {
                return Some(found);
            }
        }
        None
    }

    fn random_account_key(&mut self) -> Vec<u8> {
        workload::acct(self.rng.random_range(0..self.accounts))
    }

    async fn partition(&mut self) -> bool {
        if self.active.iter().any(|a| matches!(a.fault, Fault::Partition { .. })) || self.budget() == 0 {
            return false;
        }
        let n = self.procs.nodes.len();
        let healthy = self.healthy();
        let mut shapes = vec!["isolate", "isolate-leader"];
        if self.budget() >= self.minority() && healthy.len() >= self.minority() && self.minority() >= 2 {
            shapes.push("split");
            if n >= 5 {
                shapes.push("bridge");
            }
        }
        let shape = *shapes.choose(&mut self.rng).expect("two shapes at least");
        let everyone: Vec<usize> = (0..n).collect();
        let (what, side, other): (String, Vec<usize>, Vec<usize>) = match shape {
            "isolate" | "isolate-leader" => {
                let target = if shape == "isolate" {
                    healthy.choose(&mut self.rng).copied()
                } else {
                    let key = self.random_account_key();
                    self.leader_of(&key).await.map(|(l, _)| l).filter(|l| healthy.contains(l))
                };
                let Some(t) = target else {
                    self.say(&format!("skip   partition {shape}: no healthy target"));
                    return false;
                };
                let rest: Vec<usize> = everyone.iter().copied().filter(|j| *j != t).collect();
                let what = if shape == "isolate" { "isolate" } else { "isolate the leader" };
                (format!("{what} {} | {}", self.name(t), self.names(&rest)), vec![t], rest)
            }
            "split" => {
                let mut side = healthy.clone();
                side.shuffle(&mut self.rng);
                side.truncate(self.minority());
                side.sort_unstable();
                let rest: Vec<usize> = everyone.iter().copied().filter(|j| !side.contains(j)).collect();
                (format!("minority {} | majority {}", self.names(&side), self.names(&rest)), side, rest)
            }
            _ => {
                // Bridge: one side of `minority` healthy nodes, a bridge node that talks to
                // everyone, and the other side.
                let mut side = healthy.clone();
                side.shuffle(&mut self.rng);
                side.truncate(self.minority());
                side.sort_unstable();
                let rest: Vec<usize> = everyone.iter().copied().filter(|j| !side.contains(j)).collect();
                let bridges: Vec<usize> = rest.iter().copied().filter(|j| healthy.contains(j)).collect();
                let Some(&bridge) = bridges.choose(&mut self.rng) else { return false };
                let other: Vec<usize> = rest.iter().copied().filter(|j| *j != bridge).collect();
                let what = format!(
                    "bridge {} | {} | {} (the middle node talks to both)",
                    self.names(&side),
                    self.name(bridge),
                    self.names(&other)
                );
                (what, side, other)
            }
        };
        for &a in &side {
            for &b in &other {
                self.cut.insert((a.min(b), a.max(b)));
            }
        }
        for i in 0..n {
            self.push_partition(i).await;
        }
        let d = self.hold(Fault::Partition { what: what.clone(), faulty: side }, 2_000..8_000);
        self.say(&format!("fault  partition {what} for {:.1} s", d.as_secs_f64()));
        true
    }

    async fn skew(&mut self) -> bool {
        if self.budget() == 0 {
            return false;
        }
        let eps = self.epsilon.as_nanos() as i64;
        let (target, offset_ns) = if self.unsafe_skew {
            // Beyond ε, and at a leader: its timestamps then disagree with every other leader's.
            let key = self.random_account_key();
            let leader = self.leader_of(&key).await.map(|(l, _)| l).filter(|l| self.healthy().contains(l));
            let Some(t) = leader.or_else(|| self.healthy().choose(&mut self.rng).copied()) else { return false };
            let lo = UNSAFE_OFFSET_MIN.max(self.epsilon * 5).as_nanos() as i64;
            let hi = UNSAFE_OFFSET_MAX.max(self.epsilon * 50).as_nanos() as i64;
            let magnitude = self.rng.random_range(lo..=hi);
            (t, if self.rng.random_bool(0.5) { magnitude } else { -magnitude })
        } else {
            let Some(t) = self.healthy().choose(&mut self.rng).copied() else { return false };
            (t, self.rng.random_range(-eps..=eps))
        };
        match self.procs.set_clock_offset(target, offset_ns).await {
            Ok(_) => {
                let d = self.hold(Fault::Skewed(target), 3_000..10_000);
                let offset = ms(Duration::from_nanos(offset_ns.unsigned_abs()));
                let sign = if offset_ns < 0 { "-" } else { "+" };
                let label = if self.unsafe_skew {
                    format!(
                        "UNSAFE skew {} clock {sign}{offset:.3} ms, BEYOND ε = {:.0} ms,",
                        self.name(target),
                        ms(self.epsilon)
                    )
                } else {
                    format!(
                        "skew {} clock {sign}{offset:.3} ms (within ε = {:.0} ms)",
                        self.name(target),
                        ms(self.epsilon)
                    )
                };
                self.say(&format!("fault  {label} for {:.1} s", d.as_secs_f64()));
                true
            }
            Err(e) => {
                self.say(&format!("fault  skew {} not injected: {e:#}", self.name(target)));
                false
            }
        }
    }

    async fn leader(&mut self) -> bool {
        let key = self.random_account_key();
        // Asked of the leader itself, not through the meta range, which may be down.
        let Some((from, range)) = self.leader_of(&key).await else { return false };
        let healthy = self.healthy();
        let voters: Vec<usize> = healthy
            .iter()
            .copied()
            .filter(|i| *i != from && range.voters.contains(&self.procs.nodes[*i].id.0))
            .collect();
        let Some(&to) = voters.choose(&mut self.rng) else { return false };
        let req = pb::TransferLeaderRequest { group: range.id, to_node: self.procs.nodes[to].id.0 };
        let asked = async {
            let mut admin = self.client.admin_at(&self.procs.nodes[from].addr)?;
            admin
                .transfer_leader(req)
                .await
                .map(|r| r.into_inner())
                .map_err(|s| ClientError::Transport(s.message().into()))
        };
        let what = format!("leader of range {} {} -> {}", GroupId(range.id), self.name(from), self.name(to));
        match tokio::time::timeout(ADMIN_TIMEOUT, asked).await {
            Ok(Ok(pb::AdminResponse { detail, error: None })) => {
                self.say(&format!("fault  {what} ({detail})"));
                true
            }
            Ok(Ok(pb::AdminResponse { error: Some(e), .. })) => {
                self.say(&format!("fault  {what} refused: {}", e.message));
                false
            }
            Ok(Err(e)) => {
                self.say(&format!("fault  {what} failed: {e}"));
                false
            }
            Err(_) => {
                self.say(&format!("fault  {what} timed out"));
                false
            }
        }
    }

    /// Faults injected, as `3 kill, 2 pause, …`.
    pub fn summary(&self) -> String {
        self.injected.iter().map(|(k, n)| format!("{n} {}", k.name())).collect::<Vec<_>>().join(", ")
    }
}
