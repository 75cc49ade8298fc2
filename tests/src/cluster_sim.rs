//! # Whole-cluster simulation: bank transfers and list appends over real node cores
//!
//! One seed drives everything: the [`ClusterSim`] (real [`NodeCore`]s on in-memory disks,
//! simulated network and clocks), the clients and the faults. A run has three phases:
//!
//! ```text
//!   setup      3 nodes, every range 3 replicas, accounts and lists split over 6 ranges
//!   safety     clients run transfers, audits and list appends while faults strike:
//!              crashes (unsynced writes lost) and restarts, power loss of every node,
//!              pauses, isolated nodes, cut links, lost / duplicated / reordered messages,
//!              clock offsets within ε (and steps between them, backwards too), leader
//!              hand-offs (some right after an audit picked its timestamp), splits and
//!              merges under running transactions (clients keep stale routes), a client
//!              paused between its prepares and its commit past the coordinator's window
//!   liveness   every fault healed; the clients must commit again, then a final audit
//! ```
//!
//! The clients speak the node API directly, as `meridian-client` does over gRPC: locking reads at
//! range leaders, buffered writes, the single-range commit or two-phase commit (prepares, then
//! the coordinator's commit), lock-free read-only audits at one timestamp (the first range's
//! leader picks it; the other ranges are read at any replica, so follower reads are exercised).
//! Each client has one request in flight; a request that goes unanswered makes the transaction's
//! outcome *unknown* when it was a commit, failed otherwise.
//!
//! Checked on every seed (any failure is a violation and fails the seed):
//! - **bank**: every audit sums to the initial total with no negative balance; the final
//!   balances too (transfers move money, so unknown outcomes do not change the sum);
//! - **list append** ([`meridian_check::elle`]): the history is strictly serializable;
//! - **external consistency** ([`meridian_check::external`]): a transaction acknowledged before
//!   another began has the smaller timestamp (committed writes and audits);
//! - **snapshot repeatability**: after healing, audits read again at their timestamps see
//!   exactly what they saw (no write landed below a read already served);
//! - **no read before commit wait** (checked by [`ClusterSim`] at every answer): true time has
//!   passed the timestamp of every version a read returns;
//! - **liveness**: after healing, transfers commit again and the final audit is served;
//! - no node core panics.
//!
//! The unsafe switches ([`Unsafe`]) break one protocol rule each; `sim_bank` tests show that
//! the checkers then fail some seeds.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use meridian_check::elle::{self, MicroOp, Outcome};
use meridian_check::external;
use meridian_server::node::api::CommitRole;
use meridian_server::node::sim::{ClusterSim, START};
use meridian_server::node::{ApiError, NodeOptions, Request, Response};
use meridian_shard::GroupId;
use meridian_shard::paxos::sim::random::panic_message;
use meridian_shard::paxos::{NodeId, Options};
use meridian_shard::range::RangeDescriptor;
use meridian_truetime::Timestamp;
use meridian_txn::{TxnId, TxnMeta};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A protocol rule deliberately broken, to show the checkers catch it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unsafe {
    /// Every rule kept.
    #[default]
    None,
    /// Answer commits without commit wait (Spanner §4.1.2), with clocks apart by up to 2ε.
    SkipCommitWait,
    /// Release locks when the commit record is proposed rather than applied (strict 2PL).
    EarlyLockRelease,
    /// Nodes send messages (Paxos votes, answers) before the writes behind them are durable, so
    /// a crash loses acknowledged state.
    AckBeforePersist,
    /// Reads are answered before true time passed the versions they show (Spanner §4.1.2).
    ReadBeforeCommitWait,
    /// A leader's reads at or below `TT.now().latest` do not hold later writes above them
    /// (Spanner §4.1.3), so a clock step or a hand-off lets a write land below a served read.
    ReadsPromiseNothing,
}

impl std::str::FromStr for Unsafe {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Unsafe::None),
            "skip-commit-wait" => Ok(Unsafe::SkipCommitWait),
            "early-lock-release" => Ok(Unsafe::EarlyLockRelease),
            "ack-before-persist" => Ok(Unsafe::AckBeforePersist),
            "read-before-commit-wait" => Ok(Unsafe::ReadBeforeCommitWait),
            "reads-promise-nothing" => Ok(Unsafe::ReadsPromiseNothing),
            _ => Err(format!(
                "unknown unsafe switch {s:?}: none, skip-commit-wait, early-lock-release, ack-before-persist, \
                 read-before-commit-wait, reads-promise-nothing"
            )),
        }
    }
}

/// What one seed runs.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Nodes (every range is replicated on all of them, up to 3).
    pub nodes: usize,
    /// Bank accounts, 100 each.
    pub accounts: usize,
    /// Lists for the append workload.
    pub lists: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Simulated time with faults.
    pub safety: Duration,
    /// Simulated time after healing.
    pub liveness: Duration,
    /// Whether faults strike in the safety phase.
    pub faults: bool,
    /// The rule broken on purpose, if any.
    pub unsafe_switch: Unsafe,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 3,
            accounts: 8,
            lists: 6,
            clients: 4,
            safety: Duration::from_secs(10),
            liveness: Duration::from_secs(6),
            faults: true,
            unsafe_switch: Unsafe::None,
        }
    }
}

/// Outcome counts of one kind of transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Committed (acknowledged).
    pub ok: u64,
    /// Definitely not committed.
    pub failed: u64,
    /// Outcome unknown to the client.
    pub unknown: u64,
}

/// What one seed did and found.
#[derive(Clone, Debug, Default)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// Bank transfers.
    pub transfers: Counts,
    /// Transfers committed after healing.
    pub transfers_after_heal: u64,
    /// List-append transactions.
    pub appends: Counts,
    /// Audits that read a whole snapshot.
    pub audits: u64,
    /// Faults injected, one line each.
    pub faults: Vec<String>,
    /// Everything the checkers found; empty on a good seed.
    pub violations: Vec<String>,
}

const BALANCE: i64 = 100;
/// Longest a client waits for one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Most sends of one request (following leader hints and refreshed routes).
const ATTEMPTS_MAX: u32 = 8;
/// Most commit requests for one coordinator decision (a lost answer is asked again).
const COORDINATE_ATTEMPTS_MAX: u32 = 4;
/// Longest a range may go without serving a client once every fault healed: a request lost
/// just before healing is sent again after [`REQUEST_TIMEOUT`], plus 2 s for an election, a
/// lease, and a prepared transaction whose client left being aborted by its coordinator
/// (`COMMIT_AFTER_VOTE_MAX`). Seed 137 took 4.8 s, over the 4 s this was before.
const HEAL_SERVE_MAX: Duration = Duration::from_secs(5);
/// The driver's step of simulated time.
const STEP: Duration = Duration::from_millis(1);
/// How long coordinators remember decisions in the simulation (120 s in a real node).
const DECISION_REMEMBERED_SIM: Duration = Duration::from_secs(4);
/// Most audits re-read at their timestamps after healing (the snapshot-repeatability check).
const AUDITS_REREAD_MAX: usize = 24;
/// Bounds on the number of ranges the split and merge faults keep the workload's keys in.
const RANGES_MIN: usize = 4;
const RANGES_MAX: usize = 14;

fn account(i: usize) -> Vec<u8> {
    format!("acct/{i:02}").into_bytes()
}

fn list(i: usize) -> Vec<u8> {
    format!("list/{i:02}").into_bytes()
}

/// Node options of one seed: `housekeeping` varies by seed, since how often a leader's periodic
/// work runs decides which interleavings with elections and applies a seed can reach.
fn node_options(u: Unsafe, housekeeping: Duration) -> NodeOptions {
    let mut paxos = Options::with_lease(Duration::from_millis(1_000));
    paxos.unsafe_switches.ack_before_persist = u == Unsafe::AckBeforePersist;
    NodeOptions {
        paxos,
        housekeeping,
        forward_timeout: Duration::from_millis(500),
        dead_after: Duration::from_secs(20),
        rebalance: false,
        // Short, so that a client paused past it (a fault below) fits in a run.
        decision_remembered: DECISION_REMEMBERED_SIM,
        unsafe_skip_commit_wait: u == Unsafe::SkipCommitWait,
        unsafe_early_lock_release: u == Unsafe::EarlyLockRelease,
        unsafe_read_before_commit_wait: u == Unsafe::ReadBeforeCommitWait,
        unsafe_reads_promise_nothing: u == Unsafe::ReadsPromiseNothing,
        ..NodeOptions::default()
    }
}

/// Runs one seed; a panic anywhere (a node core's assertion, say) is reported as a violation.
pub fn run_seed(seed: u64, cfg: &SimConfig) -> SeedReport {
    match std::panic::catch_unwind(AssertUnwindSafe(|| Run::new(seed, cfg).run())) {
        Ok(r) => r,
        Err(p) => {
            SeedReport { seed, violations: vec![format!("panic: {}", panic_message(&*p))], ..SeedReport::default() }
        }
    }
}

/// One request in flight.
struct Pending {
    id: u64,
    key: Vec<u8>,
    request: Request,
    deadline: Timestamp,
    attempts: u32,
    /// Resend at this time (after a refusal), instead of waiting for an answer.
    resend_at: Option<Timestamp>,
    /// For reads at a timestamp: try any replica first.
    any_replica: bool,
}

/// How a request ended, after retries.
enum Answer {
    Ok(Response),
    /// Refused by the node: the request did not take effect there.
    Refused(ApiError),
    /// No answer: it may or may not have taken effect.
    Lost,
}

#[derive(Clone, Debug)]
enum Kind {
    Transfer { from: usize, to: usize, amount: i64 },
    Append(Vec<MicroOp>),
    Audit,
}

#[derive(Debug)]
enum Phase {
    /// Executing op `step` of the program (reads under locks, buffered writes).
    Reading,
    /// Preparing at `participants[i]`.
    Preparing { coordinator: GroupId, participants: Vec<GroupId>, i: usize },
    /// The coordinator's (or the single range's) commit; `attempts` sent so far.
    Committing { attempts: u32, two_phase: bool },
    /// A transaction that only read: releasing its locks range by range.
    Releasing { ranges: Vec<GroupId>, i: usize },
    /// An audit: reading account `i` at `ts`.
    Auditing { i: usize, ts: Option<Timestamp>, sum: i64, balances: Vec<i64> },
}

struct Txn {
    meta: TxnMeta,
    kind: Kind,
    invoke: Timestamp,
    step: usize,
    /// Newest value of each key seen or written by this transaction.
    values: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Keys read under a lock, by range, with the leader epoch of the first read there.
    reads: BTreeMap<GroupId, (Vec<Vec<u8>>, u64)>,
    writes: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The ops as executed, with the values read (list appends).
    executed: Vec<MicroOp>,
    phase: Phase,
    /// The last commit request, to ask a coordinator again.
    commit_req: Option<(Vec<u8>, Request)>,
}

struct Client {
    txn: Option<Txn>,
    pending: Option<Pending>,
    /// A paused client sends nothing and reads no answer until then (a process stopped between
    /// a prepare and its commit, say).
    paused_until: Option<Timestamp>,
    /// A failed operation's wound-wait priority is kept when it is retried.
    retry_start: Option<Timestamp>,
}

struct Run {
    seed: u64,
    cfg: SimConfig,
    sim: ClusterSim,
    rng: ChaCha8Rng,
    descs: Vec<RangeDescriptor>,
    leaders: BTreeMap<GroupId, NodeId>,
    refresh_due: bool,
    next_txn: u128,
    next_element: u64,
    clients: Vec<Client>,
    report: SeedReport,
    elle: Vec<elle::Txn>,
    committed: Vec<external::Committed>,
    /// Faults to undo, at their end time.
    heals: Vec<(Timestamp, Heal)>,
    stopping: bool,
    healed_at: Option<Timestamp>,
    /// Requests whose answers nobody waits for (aborts).
    aborts: Vec<Pending>,
    /// When each range first answered a client after healing.
    served_after_heal: BTreeMap<GroupId, Timestamp>,
    /// Every completed audit: its timestamp and the balances it saw.
    audits_seen: Vec<(Timestamp, Vec<i64>)>,
}

#[derive(Clone, Debug)]
enum Heal {
    Restart(NodeId),
    Uncut(Vec<(NodeId, NodeId)>),
    Network,
}

fn ns(t: Timestamp) -> u64 {
    t.nanos().saturating_sub(START.nanos())
}

impl Run {
    fn new(seed: u64, cfg: &SimConfig) -> Run {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_ba4c);
        let housekeeping = Duration::from_millis(rng.random_range(5..=300));
        let mut sim = ClusterSim::new(seed, node_options(cfg.unsafe_switch, housekeeping));
        sim.batch_us = if rng.random_bool(0.25) { 0 } else { rng.random_range(50..=500) };
        Run {
            seed,
            cfg: cfg.clone(),
            sim,
            rng,
            descs: Vec::new(),
            leaders: BTreeMap::new(),
            refresh_due: true,
            next_txn: 1,
            next_element: 1,
            clients: (0..cfg.clients)
                .map(|_| Client { txn: None, pending: None, paused_until: None, retry_start: None })
                .collect(),
            audits_seen: Vec::new(),
            report: SeedReport { seed, ..SeedReport::default() },
            elle: Vec::new(),
            committed: Vec::new(),
            heals: Vec::new(),
            stopping: false,
            healed_at: None,
            aborts: Vec::new(),
            served_after_heal: BTreeMap::new(),
        }
    }

    fn violation(&mut self, v: String) {
        // A few of each kind: one broken rule can fail every audit.
        let kind = v.split(':').next().unwrap_or_default().to_string();
        if self.report.violations.iter().filter(|x| x.starts_with(&kind)).count() < 3 {
            self.report.violations.push(v);
        }
    }

    fn run(mut self) -> SeedReport {
        if let Err(e) = self.setup() {
            self.violation(format!("setup: {e}"));
            return self.report;
        }
        let safety_end = self.sim.now.saturating_add(self.cfg.safety);
        let mut next_fault = self.sim.now.saturating_add(Duration::from_millis(300));
        while self.sim.now < safety_end {
            if self.cfg.faults && self.sim.now >= next_fault {
                self.inject_fault();
                next_fault = self.sim.now.saturating_add(Duration::from_millis(self.rng.random_range(200..1_500)));
            }
            self.heal_due(false);
            self.step();
        }
        self.heal_due(true);
        self.healed_at = Some(self.sim.now);
        let liveness_end = self.sim.now.saturating_add(self.cfg.liveness);
        while self.sim.now < liveness_end {
            self.step();
        }
        self.check_ranges_served();
        // Let every transaction in flight finish, bounded.
        self.stopping = true;
        let drain_end = self.sim.now.saturating_add(REQUEST_TIMEOUT * (ATTEMPTS_MAX + 4));
        while self.sim.now < drain_end && self.clients.iter().any(|c| c.txn.is_some()) {
            self.step();
        }
        if self.clients.iter().any(|c| c.txn.is_some()) {
            self.violation("liveness: transactions still unfinished long after every fault healed".into());
        }
        if self.report.transfers_after_heal == 0 {
            self.violation("liveness: no transfer committed after every fault healed".into());
        }
        self.final_checks();
        self.report
    }

    /// Liveness after healing: every range of the workload served a client request within
    /// [`HEAL_SERVE_MAX`] (an election, a lease, catch-up, and a client that gave up a prepared
    /// transaction reaching its coordinator).
    fn check_ranges_served(&mut self) {
        let healed = self.healed_at.expect("healed");
        let keys: Vec<Vec<u8>> = (0..self.cfg.accounts).map(account).chain((0..self.cfg.lists).map(list)).collect();
        let mut checked = BTreeSet::new();
        for key in keys {
            let Some(gid) = self.range_of(&key) else { continue };
            if !checked.insert(gid) {
                continue;
            }
            let first = self.served_after_heal.get(&gid).map(|t| t.duration_since(healed));
            if first.is_none_or(|d| d > HEAL_SERVE_MAX) {
                let k = String::from_utf8_lossy(&key).into_owned();
                let replicas = format!(
                    "{}; the meta range's: {}; clients: {}",
                    self.replicas_of(&key),
                    self.replicas_of(&[0x00, 0x02]),
                    self.clients_state()
                );
                self.violation(format!(
                    "liveness: range {gid} (key {k}) first served a client {first:?} after every fault healed; \
                     its replicas: {replicas}"
                ));
            }
        }
    }

    /// What each client is doing (for diagnosing a liveness violation).
    fn clients_state(&self) -> String {
        let mut out = Vec::new();
        for (i, c) in self.clients.iter().enumerate() {
            let txn = c.txn.as_ref().map(|t| format!("{:?} step {} {:?}", t.kind, t.step, t.phase));
            let pending = c.pending.as_ref().map(|p| {
                let mut r = format!("{:?}", p.request);
                r.truncate(160);
                format!(
                    "{r} key {} attempts {} resend_at {:?} deadline {:?}",
                    String::from_utf8_lossy(&p.key),
                    p.attempts,
                    p.resend_at,
                    p.deadline
                )
            });
            out.push(format!("c{i}: txn {txn:?} pending {pending:?} paused {:?}", c.paused_until));
        }
        out.join("; ")
    }

    /// Every live node's replica of the range holding `key`, as its status shows it (for
    /// diagnosing a liveness violation).
    fn replicas_of(&self, key: &[u8]) -> String {
        let mut out = Vec::new();
        for n in self.sim.nodes.keys().copied().filter(|n| self.up(*n)) {
            for g in self.sim.core(n).status(self.sim.tt(n)).groups.into_iter().filter(|g| g.desc.contains(key)) {
                out.push(format!(
                    "{n}: {} [{}, {}) gen {} {} ballot {} leader {:?} lease {:?} chosen {} applied {} prepared {}",
                    g.desc.id,
                    String::from_utf8_lossy(&g.desc.start),
                    String::from_utf8_lossy(&g.desc.end),
                    g.desc.generation,
                    g.role,
                    g.ballot,
                    g.leader,
                    g.lease_end,
                    g.chosen,
                    g.applied,
                    g.prepared_count
                ));
            }
        }
        out.join("; ")
    }

    // ----- set-up -----

    fn setup(&mut self) -> Result<(), String> {
        self.sim.run_for(Duration::from_secs(1));
        for _ in 1..self.cfg.nodes {
            self.sim.join(NodeId(1))?;
        }
        let want = self.cfg.nodes.min(3);
        let mut replicated = false;
        for _ in 0..200 {
            self.sim.run_for(Duration::from_millis(200));
            self.refresh();
            if !self.descs.is_empty()
                && self.descs.iter().all(|d| d.config.voters.len() == want && d.config.learners.is_empty())
            {
                replicated = true;
                break;
            }
        }
        if !replicated {
            return Err(format!("ranges never reached {want} voters"));
        }
        let mut splits = vec![b"list/".to_vec(), list(self.cfg.lists / 2)];
        for i in (2..self.cfg.accounts).step_by(2) {
            splits.push(account(i));
        }
        for k in splits {
            match self.call(&k, Request::Split { key: k.clone() }) {
                Some(Response::Done { .. }) => {}
                other => return Err(format!("split at {}: {other:?}", String::from_utf8_lossy(&k))),
            }
            self.sim.run_for(Duration::from_millis(500));
        }
        for i in 0..self.cfg.accounts {
            let w = Request::Write { writes: vec![(account(i), Some(BALANCE.to_string().into_bytes()))] };
            match self.call(&account(i), w) {
                Some(Response::Written { .. }) => {}
                other => return Err(format!("initial balance of account {i}: {other:?}")),
            }
        }
        self.sim.run_for(Duration::from_secs(1));
        self.refresh();
        Ok(())
    }

    /// A blocking call to the leader of `key`'s range, following hints and refreshing routes.
    fn call(&mut self, key: &[u8], request: Request) -> Option<Response> {
        for _ in 0..40 {
            let Some((_, target)) = self.locate(key) else {
                // The meta index has not caught up with a split yet.
                self.sim.run_for(Duration::from_millis(100));
                self.refresh();
                continue;
            };
            let answer = self.sim.call(target, request.clone(), REQUEST_TIMEOUT);
            if let Some(Response::Error(e)) = &answer {
                self.learn_route(e);
            }
            match answer {
                Some(Response::Error(ApiError::NotLeader { group, leader: Some(l), .. })) if self.up(l) => {
                    self.leaders.insert(group, l);
                }
                Some(Response::Error(e)) if e.is_retryable() => {
                    self.refresh();
                    self.sim.run_for(Duration::from_millis(100));
                }
                None => {
                    self.refresh();
                }
                other => return other,
            }
        }
        None
    }

    // ----- routing -----

    fn up(&self, n: NodeId) -> bool {
        self.sim.nodes.get(&n).is_some_and(|s| s.core.is_some())
    }

    fn refresh(&mut self) {
        let live: Vec<NodeId> = self.sim.nodes.keys().copied().filter(|n| self.up(*n)).collect();
        if live.is_empty() {
            return;
        }
        let n = live[self.rng.random_range(0..live.len())];
        if let Some(Response::Ranges { descs, leaders, .. }) =
            self.sim.call(n, Request::ClusterView, Duration::from_millis(500))
        {
            self.descs = descs;
            for (g, h) in leaders {
                self.leaders.insert(g, h.node);
            }
        }
        self.refresh_due = false;
    }

    /// The range of `key` and where to send a request for its leader.
    fn locate(&mut self, key: &[u8]) -> Option<(GroupId, NodeId)> {
        let d = self.descs.iter().find(|d| d.contains(key))?;
        let gid = d.id;
        let voters: Vec<NodeId> = d.config.voters.iter().copied().collect();
        let target = self
            .leaders
            .get(&gid)
            .copied()
            .filter(|n| self.up(*n))
            .or_else(|| voters.iter().copied().find(|n| self.up(*n)))?;
        Some((gid, target))
    }

    /// A refusal that carries the range as the node knows it (after a split or merge the client's
    /// routes are stale): replace every older route it overlaps, as `meridian-client` does.
    fn learn_route(&mut self, e: &ApiError) {
        let d = match e {
            ApiError::NotLeader { desc: Some(d), .. }
            | ApiError::KeyOutOfRange { desc: Some(d), .. }
            | ApiError::RangeChanged { desc: Some(d), .. } => d,
            _ => return,
        };
        if self.descs.iter().any(|o| o.overlaps(&d.start, &d.end) && o.generation > d.generation) {
            return;
        }
        self.descs.retain(|o| !o.overlaps(&d.start, &d.end));
        self.descs.push((**d).clone());
        self.descs.sort_by(|a, b| a.start.cmp(&b.start));
    }

    fn any_replica(&mut self, key: &[u8]) -> Option<NodeId> {
        let d = self.descs.iter().find(|d| d.contains(key))?;
        let live: Vec<NodeId> = d.config.voters.iter().copied().filter(|n| self.up(*n)).collect();
        (!live.is_empty()).then(|| live[self.rng.random_range(0..live.len())])
    }

    fn send(&mut self, key: Vec<u8>, request: Request, any_replica: bool) -> Pending {
        let mut p = Pending {
            id: 0,
            key,
            request,
            deadline: Timestamp::ZERO,
            attempts: 0,
            resend_at: Some(self.sim.now),
            any_replica,
        };
        self.resend(&mut p);
        p
    }

    fn resend(&mut self, p: &mut Pending) {
        p.attempts += 1;
        p.resend_at = None;
        p.deadline = self.sim.now.saturating_add(REQUEST_TIMEOUT);
        let target = if p.any_replica && p.attempts == 1 { self.any_replica(&p.key) } else { None };
        let target = target.or_else(|| self.locate(&p.key).map(|(_, n)| n));
        p.id = match target {
            Some(n) => self.sim.submit(n, p.request.clone()),
            None => 0, // nothing to send to: times out, then retried
        };
    }

    /// Advances request `p`: `None` while it is in flight.
    fn poll(&mut self, p: &mut Pending) -> Option<Answer> {
        if let Some(at) = p.resend_at {
            if self.sim.now >= at {
                self.resend(p);
            }
            return None;
        }
        let Some(r) = self.sim.replies.remove(&p.id) else {
            if self.sim.now < p.deadline {
                return None;
            }
            self.refresh_due = true;
            // Reads and refusals can be sent again; a commit's fate is now unknown.
            let idempotent =
                matches!(p.request, Request::TxnGet { .. } | Request::Read { .. } | Request::TxnAbort { .. });
            if idempotent && p.attempts < ATTEMPTS_MAX {
                self.resend(p);
                return None;
            }
            return Some(Answer::Lost);
        };
        if let Response::Error(e) = &r {
            self.learn_route(e);
        }
        let retry = match &r {
            Response::Error(ApiError::NotLeader { group, leader: Some(l), .. }) if self.up(*l) => {
                self.leaders.insert(*group, *l);
                true
            }
            Response::Error(
                ApiError::NotLeader { .. }
                | ApiError::NoLeader { .. }
                | ApiError::KeyOutOfRange { .. }
                | ApiError::RangeNotFound(_)
                | ApiError::Unavailable(_)
                | ApiError::Timeout(_),
            ) => {
                self.refresh_due = true;
                true
            }
            _ => false,
        };
        if retry && p.attempts < ATTEMPTS_MAX {
            let backoff = Duration::from_millis(20 << p.attempts.min(4));
            p.resend_at = Some(self.sim.now.saturating_add(backoff));
            return None;
        }
        if !matches!(r, Response::Error(_))
            && self.healed_at.is_some()
            && let Some(gid) = self.range_of(&p.key)
        {
            self.served_after_heal.entry(gid).or_insert(self.sim.now);
        }
        Some(match r {
            Response::Error(ApiError::Timeout(_)) | Response::Error(ApiError::Ambiguous(_)) => Answer::Lost,
            Response::Error(e) => Answer::Refused(e),
            other => Answer::Ok(other),
        })
    }

    // ----- faults -----

    fn inject_fault(&mut self) {
        let now = self.sim.now;
        let nodes: Vec<NodeId> = self.sim.nodes.keys().copied().collect();
        let down = nodes.iter().any(|n| !self.up(*n))
            || !self.sim.cut.is_empty()
            || self.sim.paused.values().any(|t| *t > now);
        let n = nodes[self.rng.random_range(0..nodes.len())];
        let lasting = Duration::from_millis(self.rng.random_range(500..3_000));
        let eps_ns = 4_000_000i64;
        let line = match self.rng.random_range(0..12) {
            0 | 1 if !down => {
                self.sim.crash(n);
                self.heals.push((now.saturating_add(lasting), Heal::Restart(n)));
                format!("crash {n} for {lasting:?}")
            }
            2 if !down => {
                self.sim.paused.insert(n, now.saturating_add(lasting));
                format!("pause {n} for {lasting:?}")
            }
            3 if !down => {
                let cut: Vec<(NodeId, NodeId)> = nodes.iter().filter(|m| **m != n).map(|m| (n, *m)).collect();
                self.sim.cut.extend(cut.iter().copied());
                self.heals.push((now.saturating_add(lasting), Heal::Uncut(cut)));
                format!("isolate {n} for {lasting:?}")
            }
            4 if !down => {
                let m = nodes[self.rng.random_range(0..nodes.len())];
                if m == n {
                    return;
                }
                self.sim.cut.push((n, m));
                self.heals.push((now.saturating_add(lasting), Heal::Uncut(vec![(n, m)])));
                format!("cut {n}–{m} for {lasting:?}")
            }
            5 => {
                let off = self.rng.random_range(-eps_ns..=eps_ns);
                let off = if self.cfg.unsafe_switch == Unsafe::SkipCommitWait { off.signum() * eps_ns } else { off };
                if let Some(s) = self.sim.nodes.get_mut(&n) {
                    s.offset_ns = off;
                }
                format!("clock of {n} off by {:.1} ms", off as f64 / 1e6)
            }
            6 => {
                self.sim.drop_prob = self.rng.random_range(0.0..0.1);
                self.sim.dup_prob = self.rng.random_range(0.0..0.05);
                self.heals.push((now.saturating_add(lasting), Heal::Network));
                format!(
                    "lose {:.0}% and duplicate {:.0}% of messages for {lasting:?}",
                    self.sim.drop_prob * 100.0,
                    self.sim.dup_prob * 100.0
                )
            }
            7 if !down && self.rng.random_bool(0.3) => {
                // Power loss: every node at once; only what was synced survives.
                for m in &nodes {
                    self.sim.crash(*m);
                    self.heals.push((now.saturating_add(lasting / 2), Heal::Restart(*m)));
                }
                format!("power loss: every node down for {:?}", lasting / 2)
            }
            8 => {
                // A leader hands its range to another replica (what the balancer and operators
                // do): the new leader takes over prepared transactions and locks at once.
                let Some((&group, &from)) =
                    self.leaders.iter().nth(self.rng.random_range(0..self.leaders.len().max(1)))
                else {
                    return;
                };
                let to = nodes[self.rng.random_range(0..nodes.len())];
                if to == from || !self.up(from) {
                    return;
                }
                self.sim.submit(from, Request::TransferLeader { group, to });
                format!("hand {group} from {from} to {to}")
            }
            9 => {
                // Split a range of the workload at one of its keys: transactions and audits in
                // flight meet a range that changed under them, clients a stale route cache.
                let keys: Vec<Vec<u8>> =
                    (0..self.cfg.accounts).map(account).chain((0..self.cfg.lists).map(list)).collect();
                let k = keys[self.rng.random_range(0..keys.len())].clone();
                if self.descs.len() >= RANGES_MAX || self.descs.iter().any(|d| d.start == k) {
                    return;
                }
                let Some((_, leader)) = self.locate(&k) else { return };
                self.sim.submit(leader, Request::Split { key: k.clone() });
                self.refresh_due = true;
                format!("split at {}", String::from_utf8_lossy(&k))
            }
            10 => {
                // Merge a range into its left neighbour (both have every node's replica).
                if self.descs.len() <= RANGES_MIN {
                    return;
                }
                let user: Vec<RangeDescriptor> =
                    self.descs.iter().filter(|d| d.start.as_slice() >= b"acct/".as_slice()).cloned().collect();
                if user.len() < 2 {
                    return;
                }
                let left = user[self.rng.random_range(0..user.len() - 1)].clone();
                let Some((_, leader)) = self.locate(&left.start) else { return };
                self.sim.submit(leader, Request::Merge { group: left.id });
                self.refresh_due = true;
                format!("merge {} with its right neighbour", left.id)
            }
            11 => {
                // A client stops between its prepares and its commit for longer than the
                // coordinator's window for repeating a commit.
                let c = self.rng.random_range(0..self.clients.len());
                let in_commit = self.clients[c].txn.as_ref().is_some_and(|t| {
                    matches!(t.phase, Phase::Preparing { .. } | Phase::Committing { two_phase: true, .. })
                });
                if !in_commit {
                    return;
                }
                let pause = DECISION_REMEMBERED_SIM / 2 + Duration::from_millis(self.rng.random_range(100..3_000));
                self.clients[c].paused_until = Some(now.saturating_add(pause));
                format!("pause client {c} in two-phase commit for {pause:?}")
            }
            _ => return,
        };
        let at = ns(now) as f64 / 1e9;
        self.report.faults.push(format!("{at:.3}s {line}"));
    }

    /// Hands the leadership of `key`'s range to another live node (no answer awaited).
    fn hand_off_range_of(&mut self, key: &[u8]) {
        let Some((group, from)) = self.locate(key) else { return };
        let others: Vec<NodeId> = self.sim.nodes.keys().copied().filter(|n| *n != from && self.up(*n)).collect();
        if others.is_empty() {
            return;
        }
        let to = others[self.rng.random_range(0..others.len())];
        self.sim.submit(from, Request::TransferLeader { group, to });
        let at = ns(self.sim.now) as f64 / 1e9;
        self.report.faults.push(format!("{at:.3}s hand {group} from {from} to {to} right after an audit's first read"));
    }

    /// Snapshot repeatability (Spanner §4.1.3: a read at `t` sees every write at or below `t`,
    /// now and later): after healing, some audits are read again at their timestamps; each
    /// must see exactly the balances it saw then. A write that landed below a read already
    /// served (a leader's clock stepping back, a hand-off, a split or merge losing a promise)
    /// shows up here even when the totals still add up.
    fn reread_audits(&mut self) {
        let audits = std::mem::take(&mut self.audits_seen);
        let step = (audits.len() / AUDITS_REREAD_MAX).max(1);
        for (ts, seen) in audits.iter().step_by(step).take(AUDITS_REREAD_MAX) {
            let mut again = Vec::new();
            for i in 0..self.cfg.accounts {
                let request = Request::Read { start: account(i), end: None, limit: 1, ts: Some(*ts) };
                match self.call(&account(i), request) {
                    Some(Response::ReadAt { rows, .. }) => {
                        match parse_balance(rows.into_iter().next().map(|(_, v)| v).as_deref()) {
                            Some(b) => again.push(b),
                            None => break,
                        }
                    }
                    // Not served (e.g. below the GC horizon): nothing to compare.
                    _ => break,
                }
            }
            if again.len() == seen.len() && again != *seen {
                self.violation(format!("snapshot: the audit at {ts} saw {seen:?}, a read at {ts} now sees {again:?}"));
            }
        }
    }

    fn heal_due(&mut self, all: bool) {
        let now = self.sim.now;
        if all {
            // A paused client resumes with everything else (its pause may have outlived the
            // coordinator's window by then, which is the point of that fault).
            for c in &mut self.clients {
                c.paused_until = None;
            }
        }
        let (due, keep): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.heals).into_iter().partition(|(t, _)| all || *t <= now);
        self.heals = keep;
        for (_, h) in due {
            match h {
                Heal::Restart(n) => {
                    if !self.up(n) {
                        self.sim.restart(n);
                    }
                }
                Heal::Uncut(pairs) => self.sim.cut.retain(|p| !pairs.contains(p)),
                Heal::Network => {
                    self.sim.drop_prob = 0.0;
                    self.sim.dup_prob = 0.0;
                }
            }
        }
        if all {
            self.sim.paused.clear();
            self.sim.cut.clear();
            for n in self.sim.nodes.keys().copied().collect::<Vec<_>>() {
                if !self.up(n) {
                    self.sim.restart(n);
                }
            }
        }
    }

    // ----- clients -----

    fn step(&mut self) {
        self.sim.run_for(STEP);
        // Aborts go on (following leaders) until some node answers them.
        for mut p in std::mem::take(&mut self.aborts) {
            if self.poll(&mut p).is_none() {
                self.aborts.push(p);
            }
        }
        if self.refresh_due {
            self.refresh();
        }
        for i in 0..self.clients.len() {
            self.advance(i);
        }
    }

    fn new_txn(&mut self, client: usize) -> Option<Txn> {
        if self.stopping {
            return None;
        }
        let kind = match self.rng.random_range(0..10) {
            0..=4 => {
                let from = self.rng.random_range(0..self.cfg.accounts);
                let mut to = self.rng.random_range(0..self.cfg.accounts - 1);
                if to >= from {
                    to += 1;
                }
                Kind::Transfer { from, to, amount: self.rng.random_range(1..=30) }
            }
            5..=7 => {
                let mut ops = Vec::new();
                for _ in 0..self.rng.random_range(1..=4) {
                    let key = self.rng.random_range(0..self.cfg.lists) as u64;
                    if self.rng.random_bool(0.5) {
                        ops.push(MicroOp::Read { key, value: None });
                    } else {
                        ops.push(MicroOp::Append { key, value: self.next_element });
                        self.next_element += 1;
                    }
                }
                Kind::Append(ops)
            }
            _ => Kind::Audit,
        };
        let id = TxnId(u128::from(self.seed) << 64 | self.next_txn);
        self.next_txn += 1;
        let start = self.clients[client].retry_start.take().unwrap_or(self.sim.now);
        let phase = match kind {
            Kind::Audit => Phase::Auditing { i: 0, ts: None, sum: 0, balances: Vec::new() },
            _ => Phase::Reading,
        };
        Some(Txn {
            meta: TxnMeta { id, start },
            kind,
            invoke: self.sim.now,
            step: 0,
            values: BTreeMap::new(),
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
            executed: Vec::new(),
            phase,
            commit_req: None,
        })
    }

    fn advance(&mut self, c: usize) {
        if self.clients[c].paused_until.is_some_and(|t| self.sim.now < t) {
            return;
        }
        if self.clients[c].txn.is_none() {
            let Some(t) = self.new_txn(c) else { return };
            self.clients[c].txn = Some(t);
        }
        let answer = match self.clients[c].pending.take() {
            Some(mut p) => match self.poll(&mut p) {
                None => {
                    self.clients[c].pending = Some(p);
                    return;
                }
                Some(a) => Some(a),
            },
            None => None,
        };
        let mut txn = self.clients[c].txn.take().expect("set above");
        // `None`: the transaction finished (and was recorded).
        if let Some(p) = self.next(c, &mut txn, answer) {
            self.clients[c].pending = Some(p);
            self.clients[c].txn = Some(txn);
        }
    }

    /// Takes `answer` to the transaction's last request (if any) and sends its next request;
    /// `None` when the transaction is over.
    fn next(&mut self, c: usize, t: &mut Txn, answer: Option<Answer>) -> Option<Pending> {
        let mut answer = answer;
        match &mut t.phase {
            Phase::Auditing { .. } => self.audit_step(c, t, answer),
            Phase::Reading => {
                if let Some(a) = answer.take() {
                    let key = self.program_key(t).expect("a read was in flight");
                    match a {
                        Answer::Ok(Response::TxnValue { value, epoch, .. }) => {
                            let Some((gid, _)) = self.locate(&key) else {
                                return self.finish_failed(c, t, "no route");
                            };
                            let e = t.reads.entry(gid).or_insert((Vec::new(), epoch));
                            if e.1 != epoch {
                                return self.finish_failed(c, t, "the range's leader changed between reads");
                            }
                            e.0.push(key.clone());
                            t.values.insert(key, value);
                        }
                        _ => return self.finish_failed(c, t, "a locking read failed"),
                    }
                }
                if let Some(key) = self.program_key(t) {
                    return Some(self.send(key.clone(), Request::TxnGet { txn: t.meta, key }, false));
                }
                self.start_commit(c, t)
            }
            Phase::Preparing { coordinator, participants, i } => {
                if let Some(a) = answer.take() {
                    match a {
                        // The participant reports its prepare timestamp to the coordinator itself.
                        Answer::Ok(Response::Prepared { .. }) => *i += 1,
                        _ => return self.finish_failed(c, t, "a participant did not prepare"),
                    }
                }
                let (coordinator, participants, i) = (*coordinator, participants.clone(), *i);
                if i < participants.len() {
                    let g = participants[i];
                    let (reads, epoch) = t.reads.get(&g).cloned().unwrap_or_default();
                    let writes = self.writes_in(t, g);
                    let key = reads.first().cloned().or(writes.first().map(|w| w.0.clone()))?;
                    let request = Request::TxnCommit {
                        txn: t.meta,
                        reads,
                        read_spans: Vec::new(),
                        read_epoch: Some(epoch),
                        writes,
                        role: CommitRole::Prepare { coordinator },
                        range: Some(g),
                    };
                    return Some(self.send(key, request, false));
                }
                t.phase = Phase::Committing { attempts: 0, two_phase: true };
                // The client's clock is true time; every resend carries the first sending's time.
                let role = CommitRole::Coordinate { participants, first_sent: Some(self.sim.now) };
                self.send_commit(t, coordinator, role)
            }
            Phase::Committing { attempts, two_phase } => {
                let a = answer.take().expect("a commit was in flight");
                let (attempts, two_phase) = (*attempts, *two_phase);
                match a {
                    Answer::Ok(Response::Written { ts }) => self.finish_ok(c, t, Some(ts)),
                    Answer::Refused(e @ (ApiError::Aborted(_) | ApiError::Invalid(_))) => {
                        self.finish_failed(c, t, &format!("aborted: {e}"))
                    }
                    Answer::Refused(e) if !two_phase => self.finish_failed(c, t, &format!("refused: {e}")),
                    // A coordinator's decision is logged: asking again gets it (or, if the
                    // request never arrived, a fresh attempt, whose own answer counts).
                    _ if two_phase && attempts < COORDINATE_ATTEMPTS_MAX => {
                        let Phase::Committing { attempts, .. } = &mut t.phase else { unreachable!() };
                        *attempts += 1;
                        let (key, request) = t.commit_req.clone()?;
                        Some(self.send(key, request, false))
                    }
                    _ => self.finish_unknown(c, t),
                }
            }
            Phase::Releasing { ranges, i } => {
                if let Some(a) = answer.take() {
                    match a {
                        Answer::Ok(Response::Written { .. }) => *i += 1,
                        _ => return self.finish_failed(c, t, "a read-only commit failed"),
                    }
                }
                let (ranges, i) = (ranges.clone(), *i);
                if i == ranges.len() {
                    return self.finish_ok(c, t, None);
                }
                let (reads, epoch) = t.reads[&ranges[i]].clone();
                let request = Request::TxnCommit {
                    txn: t.meta,
                    reads: reads.clone(),
                    read_spans: Vec::new(),
                    read_epoch: Some(epoch),
                    writes: Vec::new(),
                    role: CommitRole::Single,
                    range: Some(ranges[i]),
                };
                Some(self.send(reads[0].clone(), request, false))
            }
        }
    }

    // ----- transaction bodies -----

    /// Runs the transaction's program as far as the values it holds allow; returns the key it
    /// must read next under a lock, or `None` when the program is done.
    fn program_key(&self, t: &mut Txn) -> Option<Vec<u8>> {
        match t.kind.clone() {
            Kind::Transfer { from, to, .. } => {
                [account(from), account(to)].into_iter().find(|k| !t.values.contains_key(k))
            }
            Kind::Append(ops) => {
                while let Some(op) = ops.get(t.step) {
                    let (MicroOp::Read { key, .. } | MicroOp::Append { key, .. }) = op;
                    let k = list(*key as usize);
                    let Some(current) = t.values.get(&k) else { return Some(k) };
                    let mut elems = parse_list(current.as_deref());
                    match op {
                        MicroOp::Read { key, .. } => {
                            t.executed.push(MicroOp::Read { key: *key, value: Some(elems) });
                        }
                        MicroOp::Append { value, .. } => {
                            elems.push(*value);
                            let v = encode_list(&elems);
                            t.values.insert(k.clone(), Some(v.clone()));
                            t.writes.insert(k, v);
                            t.executed.push(op.clone());
                        }
                    }
                    t.step += 1;
                }
                None
            }
            Kind::Audit => None,
        }
    }

    fn range_of(&mut self, key: &[u8]) -> Option<GroupId> {
        self.locate(key).map(|(g, _)| g)
    }

    fn write_ranges(&mut self, t: &Txn) -> BTreeSet<GroupId> {
        t.writes.keys().filter_map(|k| self.range_of(k)).collect()
    }

    fn writes_in(&mut self, t: &Txn, g: GroupId) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let writes: Vec<(Vec<u8>, Vec<u8>)> = t.writes.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        writes.into_iter().filter(|(k, _)| self.range_of(k) == Some(g)).map(|(k, v)| (k, Some(v))).collect()
    }

    fn start_commit(&mut self, c: usize, t: &mut Txn) -> Option<Pending> {
        if let Kind::Transfer { from, to, amount } = t.kind {
            let bal = |k: Vec<u8>| parse_balance(t.values.get(&k).cloned().flatten().as_deref());
            let (a, b) = (bal(account(from)), bal(account(to)));
            if let (Some(a), Some(b)) = (a, b)
                && a >= amount
            {
                t.writes.insert(account(from), (a - amount).to_string().into_bytes());
                t.writes.insert(account(to), (b + amount).to_string().into_bytes());
            }
        }
        let write_ranges = self.write_ranges(t);
        let mut all: BTreeSet<GroupId> = t.reads.keys().copied().collect();
        all.extend(write_ranges.iter().copied());
        if t.writes.is_empty() {
            if t.reads.is_empty() {
                return self.finish_ok(c, t, None);
            }
            t.phase = Phase::Releasing { ranges: t.reads.keys().copied().collect(), i: 0 };
            return self.next(c, t, None);
        }
        if all.len() == 1 {
            let g = *all.first().expect("one range");
            t.phase = Phase::Committing { attempts: 0, two_phase: false };
            return self.send_commit(t, g, CommitRole::Single);
        }
        // Spanner §4.2.1: the coordinator is one of the participants (here the range of the
        // first key written); the others prepare first.
        let first = t.writes.keys().next().cloned().expect("writes");
        let coordinator = self.range_of(&first)?;
        let participants: Vec<GroupId> = all.into_iter().filter(|g| *g != coordinator).collect();
        t.phase = Phase::Preparing { coordinator, participants, i: 0 };
        self.next(c, t, None)
    }

    fn send_commit(&mut self, t: &mut Txn, g: GroupId, role: CommitRole) -> Option<Pending> {
        let (reads, epoch) = match t.reads.get(&g) {
            Some((r, e)) => (r.clone(), Some(*e)),
            None => (Vec::new(), None),
        };
        let writes = self.writes_in(t, g);
        let key = writes.first().map(|w| w.0.clone()).or(reads.first().cloned())?;
        let request = Request::TxnCommit {
            txn: t.meta,
            reads,
            read_spans: Vec::new(),
            read_epoch: epoch,
            writes,
            role,
            range: Some(g),
        };
        t.commit_req = Some((key.clone(), request.clone()));
        Some(self.send(key, request, false))
    }

    fn audit_step(&mut self, c: usize, t: &mut Txn, answer: Option<Answer>) -> Option<Pending> {
        let Phase::Auditing { i, ts, sum, balances } = &mut t.phase else { unreachable!("an audit") };
        if let Some(a) = answer {
            match a {
                Answer::Ok(Response::ReadAt { rows, read_ts, .. }) => {
                    let value = rows.into_iter().find(|(k, _)| *k == account(*i)).map(|(_, v)| v);
                    let Some(b) = parse_balance(value.as_deref()) else {
                        let v = format!("bank: audit at {read_ts} found no balance for account {i}");
                        self.violation(v);
                        return self.finish_abandoned(c);
                    };
                    if ts.is_none() && self.cfg.faults && self.healed_at.is_none() && self.rng.random_bool(0.1) {
                        // A hand-off within 2ε of the read that picked the snapshot: the new
                        // leader of the next account's range must not write below it.
                        self.hand_off_range_of(&account(1));
                    }
                    *ts = Some(ts.unwrap_or(read_ts));
                    *sum += b;
                    balances.push(b);
                    *i += 1;
                }
                _ => return self.finish_abandoned(c), // unavailable: not a violation
            }
        }
        if *i < self.cfg.accounts {
            let request = Request::Read { start: account(*i), end: None, limit: 1, ts: *ts };
            let any = ts.is_some();
            return Some(self.send(account(*i), request, any));
        }
        let (ts, sum, balances) = (ts.expect("read"), *sum, balances.clone());
        let total = BALANCE * self.cfg.accounts as i64;
        if sum != total || balances.iter().any(|b| *b < 0) {
            self.violation(format!("bank: audit at {ts} saw total {sum} (expected {total}), balances {balances:?}"));
        }
        self.report.audits += 1;
        self.audits_seen.push((ts, balances));
        let id = format!("audit {}", t.meta.id);
        self.committed.push(external::Committed {
            id,
            invoke_ns: ns(t.invoke),
            ack_ns: ns(self.sim.now),
            ts: ts.nanos(),
        });
        None
    }

    fn finish_abandoned(&mut self, _c: usize) -> Option<Pending> {
        None
    }

    fn program_ops(t: &Txn) -> Vec<MicroOp> {
        match &t.kind {
            Kind::Append(ops) => ops
                .iter()
                .map(|op| match op {
                    MicroOp::Read { key, .. } => MicroOp::Read { key: *key, value: None },
                    a => a.clone(),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn finish_ok(&mut self, c: usize, t: &mut Txn, ts: Option<Timestamp>) -> Option<Pending> {
        let now = self.sim.now;
        match &t.kind {
            Kind::Transfer { .. } => {
                self.report.transfers.ok += 1;
                if self.healed_at.is_some() {
                    self.report.transfers_after_heal += 1;
                }
            }
            Kind::Append(_) => {
                self.report.appends.ok += 1;
                self.elle.push(elle::Txn {
                    process: c as u64,
                    invoke_ns: ns(t.invoke),
                    complete_ns: Some(ns(now)),
                    outcome: Outcome::Ok,
                    ops: t.executed.clone(),
                });
            }
            Kind::Audit => {}
        }
        if let Some(ts) = ts {
            let id = format!("txn {} ({:?})", t.meta.id, t.kind);
            self.committed.push(external::Committed { id, invoke_ns: ns(t.invoke), ack_ns: ns(now), ts: ts.nanos() });
        }
        None
    }

    fn finish_failed(&mut self, c: usize, t: &mut Txn, _why: &str) -> Option<Pending> {
        // Every key the transaction may have locked, with the range it was in then (a split or
        // merge since may have moved it, and the locks stay where they were taken), including
        // a request whose answer was lost; the abort of a range it never reached is harmless.
        let program: Vec<Vec<u8>> = match &t.kind {
            Kind::Transfer { from, to, .. } => vec![account(*from), account(*to)],
            Kind::Append(ops) => ops
                .iter()
                .map(|(MicroOp::Read { key, .. } | MicroOp::Append { key, .. })| list(*key as usize))
                .collect(),
            Kind::Audit => Vec::new(),
        };
        let mut aborts: BTreeSet<(Vec<u8>, Option<GroupId>)> = BTreeSet::new();
        for k in program.into_iter().chain(t.writes.keys().cloned()) {
            let read_in = t.reads.iter().find(|(_, (keys, _))| keys.contains(&k)).map(|(g, _)| *g);
            aborts.insert((k.clone(), read_in.or_else(|| self.range_of(&k))));
        }
        for (key, range) in aborts {
            let request = Request::TxnAbort { txn: t.meta, key: key.clone(), range };
            let p = self.send(key, request, false);
            self.aborts.push(p);
        }
        match &t.kind {
            Kind::Transfer { .. } => self.report.transfers.failed += 1,
            Kind::Append(_) => {
                self.report.appends.failed += 1;
                self.elle.push(elle::Txn {
                    process: c as u64,
                    invoke_ns: ns(t.invoke),
                    complete_ns: Some(ns(self.sim.now)),
                    outcome: Outcome::Fail,
                    ops: Self::program_ops(t),
                });
            }
            Kind::Audit => {}
        }
        self.clients[c].retry_start = Some(t.meta.start);
        None
    }

    fn finish_unknown(&mut self, c: usize, t: &mut Txn) -> Option<Pending> {
        match &t.kind {
            Kind::Transfer { .. } => self.report.transfers.unknown += 1,
            Kind::Append(_) => {
                self.report.appends.unknown += 1;
                self.elle.push(elle::Txn {
                    process: c as u64,
                    invoke_ns: ns(t.invoke),
                    complete_ns: None,
                    outcome: Outcome::Unknown,
                    ops: Self::program_ops(t),
                });
            }
            Kind::Audit => {}
        }
        None
    }

    // ----- the verdict -----

    fn final_checks(&mut self) {
        let total = BALANCE * self.cfg.accounts as i64;
        let mut balances = Vec::new();
        for i in 0..self.cfg.accounts {
            match self.call(&account(i), Request::Get { key: account(i) }) {
                Some(Response::Value { value, .. }) => match parse_balance(value.as_deref()) {
                    Some(b) => balances.push(b),
                    None => self.violation(format!("bank: account {i} has no balance at the end")),
                },
                other => {
                    self.violation(format!("liveness: final read of account {i} not served: {other:?}"));
                    return;
                }
            }
        }
        let sum: i64 = balances.iter().sum();
        if balances.len() == self.cfg.accounts && (sum != total || balances.iter().any(|b| *b < 0)) {
            self.violation(format!("bank: final total {sum} (expected {total}), balances {balances:?}"));
        }
        self.reread_audits();
        let report = elle::check(&self.elle, elle::CheckOptions::strict_serializable());
        if !report.is_valid() {
            let text = report.to_string();
            let first = text.lines().next().unwrap_or_default();
            self.violation(format!("list-append: {first}"));
        }
        if let Err(v) = external::check(&self.committed) {
            self.violation(v.to_string());
        }
    }
}

fn parse_balance(v: Option<&[u8]>) -> Option<i64> {
    std::str::from_utf8(v?).ok()?.parse().ok()
}

fn parse_list(v: Option<&[u8]>) -> Vec<u64> {
    let Some(v) = v else { return Vec::new() };
    let s = String::from_utf8_lossy(v);
    s.split(',').filter(|e| !e.is_empty()).filter_map(|e| e.parse().ok()).collect()
}

fn encode_list(elems: &[u64]) -> Vec<u8> {
    elems.iter().map(u64::to_string).collect::<Vec<_>>().join(",").into_bytes()
}
