//! An in-memory cluster of real [`NodeCore`]s: simulated network, disks ([`MemEngine`]) and
//! clocks, driven by one seeded event queue. Tests use it to run the node's whole logic —
//! routing, applies, splits, merges, moves, placement — deterministically and fast; the
//! whole-cluster simulation builds its faults on top of it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use meridian_shard::paxos::NodeId;
use meridian_shard::range::NodeInfo;
use meridian_storage::{Engine, MemEngine};
use meridian_truetime::{TTInterval, Timestamp};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Input, NodeCore, NodeOptions, PeerMsg, Ready, Request, Response};

/// Where simulated time starts.
pub const START: Timestamp = Timestamp::from_millis(1_700_000_000_000);

enum Ev {
    Deliver {
        from: NodeId,
        to: NodeId,
        msgs: Vec<PeerMsg>,
    },
    Tick {
        node: NodeId,
        epoch: u64,
    },
    Synced {
        node: NodeId,
        epoch: u64,
    },
    Client {
        node: NodeId,
        id: u64,
        request: Request,
    },
    Reach {
        node: NodeId,
        peer: NodeId,
        ok: bool,
    },
    /// The node's event loop wakes up and steps every input queued since (see `batch_us`).
    Drain {
        node: NodeId,
        epoch: u64,
    },
}

impl Ev {
    /// The node that handles the event.
    fn node(&self) -> Option<NodeId> {
        match self {
            Ev::Deliver { to, .. } => Some(*to),
            Ev::Tick { node, .. }
            | Ev::Synced { node, .. }
            | Ev::Client { node, .. }
            | Ev::Reach { node, .. }
            | Ev::Drain { node, .. } => Some(*node),
        }
    }
}

struct Item {
    at: Timestamp,
    seq: u64,
    ev: Ev,
}
impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// One simulated node.
pub struct SimNode {
    /// The core; `None` while crashed.
    pub core: Option<NodeCore>,
    /// Its disk.
    pub engine: Arc<MemEngine>,
    /// Clock offset from true time.
    pub offset_ns: i64,
    busy: Option<Ready>,
    backlog: VecDeque<Input>,
    /// A `Drain` is scheduled for the backlog.
    draining: bool,
    epoch: u64,
    tick_at: Timestamp,
    info: NodeInfo,
}

/// The simulated cluster.
pub struct ClusterSim {
    /// True time.
    pub now: Timestamp,
    rng: ChaCha8Rng,
    seq: u64,
    queue: BinaryHeap<Reverse<Item>>,
    /// The nodes.
    pub nodes: BTreeMap<NodeId, SimNode>,
    /// Answers to client requests, by id.
    pub replies: BTreeMap<u64, Response>,
    next_req: u64,
    opts: NodeOptions,
    epsilon: Duration,
    /// Network delay range in microseconds.
    pub delay_us: (u64, u64),
    /// Disk sync latency range in microseconds.
    pub fsync_us: (u64, u64),
    /// Pairs that cannot talk (either direction).
    pub cut: Vec<(NodeId, NodeId)>,
    /// Probability that a batch of peer messages is lost on the way.
    pub drop_prob: f64,
    /// Probability that a batch of peer messages arrives twice (with independent delays, so
    /// also out of order).
    pub dup_prob: f64,
    /// Nodes paused (SIGSTOP) until the given true time: they process nothing before it.
    pub paused: BTreeMap<NodeId, Timestamp>,
    /// What each node last reported about reaching each other (as the shell does).
    reachable: BTreeMap<(NodeId, NodeId), bool>,
    /// Longest wake-up delay of a node's event loop in microseconds. Zero: every input is
    /// stepped and its output written at once. Above zero: inputs that arrive while the loop
    /// sleeps are stepped together before one `ready`, as the shell's loop does (a peer's message
    /// and a due tick in one batch, say).
    pub batch_us: u64,
}

/// The address a simulated node advertises.
pub fn sim_addr(id: NodeId) -> String {
    format!("sim-node-{}:7000", id.0)
}

impl ClusterSim {
    /// A cluster with one bootstrapped node.
    pub fn new(seed: u64, opts: NodeOptions) -> Self {
        let mut sim = ClusterSim {
            now: START,
            rng: ChaCha8Rng::seed_from_u64(seed),
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: BTreeMap::new(),
            replies: BTreeMap::new(),
            next_req: 1,
            opts,
            epsilon: Duration::from_millis(4),
            delay_us: (100, 2_000),
            fsync_us: (50, 1_000),
            cut: Vec::new(),
            drop_prob: 0.0,
            dup_prob: 0.0,
            paused: BTreeMap::new(),
            reachable: BTreeMap::new(),
            batch_us: 0,
        };
        let engine = Arc::new(MemEngine::new());
        let info = NodeInfo { id: NodeId(1), addr: sim_addr(NodeId(1)), http_addr: None, pg_addr: None };
        let now = sim.tt_with(0);
        let core = NodeCore::bootstrap(engine.clone(), sim.opts.clone(), "sim-cluster".into(), info.clone(), now, seed)
            .expect("bootstrap on an empty engine");
        sim.add_node(NodeId(1), core, engine, info);
        sim
    }

    fn add_node(&mut self, id: NodeId, core: NodeCore, engine: Arc<MemEngine>, info: NodeInfo) {
        self.nodes.insert(
            id,
            SimNode {
                core: Some(core),
                engine,
                offset_ns: 0,
                busy: None,
                backlog: VecDeque::new(),
                draining: false,
                epoch: 0,
                tick_at: Timestamp::ZERO,
                info,
            },
        );
        self.drive(id);
    }

    /// Adds a node through the real join path (a `Join` request to an existing node).
    pub fn join(&mut self, via: NodeId) -> Result<NodeId, String> {
        let next = NodeId(self.nodes.keys().map(|n| n.0).max().unwrap_or(0) + 1);
        let info = NodeInfo { id: NodeId(0), addr: sim_addr(next), http_addr: None, pg_addr: None };
        let (node, nodes) = match self.call(via, Request::Join { info: info.clone() }, Duration::from_secs(20)) {
            Some(Response::Joined { node, nodes }) => (node, nodes),
            other => return Err(format!("join failed: {other:?}")),
        };
        let engine = Arc::new(MemEngine::new());
        NodeCore::write_joined_identity(&*engine, "sim-cluster".into(), node).map_err(|e| e.to_string())?;
        let mut core = NodeCore::open(engine.clone() as Arc<dyn Engine>, self.opts.clone(), node.0)
            .map_err(|e| e.to_string())?
            .expect("identity written");
        core.learn_nodes(nodes);
        let meta = self.nodes[&via].core.as_ref().and_then(|c| c.meta_desc.clone());
        if let Some(m) = meta {
            core.learn_meta(m);
        }
        self.add_node(node, core, engine, NodeInfo { id: node, ..info });
        Ok(node)
    }

    fn tt_with(&self, offset_ns: i64) -> TTInterval {
        let local = self.now.saturating_offset(offset_ns);
        TTInterval::new(local.saturating_sub(self.epsilon), local.saturating_add(self.epsilon))
    }

    /// Sets every node's clock uncertainty ε (TrueTime's half-width).
    pub fn set_epsilon(&mut self, epsilon: Duration) {
        self.epsilon = epsilon;
    }

    /// `TT.now()` at `node`.
    pub fn tt(&self, node: NodeId) -> TTInterval {
        self.tt_with(self.nodes[&node].offset_ns)
    }

    fn schedule(&mut self, after: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Item { at: self.now.saturating_add(after), seq: self.seq, ev }));
    }

    fn input(&mut self, id: NodeId, input: Input) {
        let Some(n) = self.nodes.get_mut(&id) else { return };
        if n.core.is_none() {
            return;
        }
        if n.busy.is_some() {
            n.backlog.push_back(input);
            return;
        }
        if self.batch_us > 0 {
            n.backlog.push_back(input);
            if !n.draining {
                n.draining = true;
                let (epoch, after) = (n.epoch, Duration::from_micros(self.rng.random_range(0..=self.batch_us)));
                self.schedule(after, Ev::Drain { node: id, epoch });
            }
            return;
        }
        let now = self.tt(id);
        self.nodes.get_mut(&id).expect("exists").core.as_mut().expect("up").step(now, input);
        self.drive(id);
    }

    fn drive(&mut self, id: NodeId) {
        for _ in 0..64 {
            let now = self.tt(id);
            let n = self.nodes.get_mut(&id).expect("exists");
            let Some(core) = n.core.as_mut() else { return };
            let ready = core.ready(now);
            let next = core.next_tick(now);
            let offset = n.offset_ns;
            let at = next.saturating_offset(-offset).max(self.now);
            if n.tick_at <= self.now || at < n.tick_at {
                n.tick_at = at;
                n.epoch += 1;
                let (epoch, after) = (n.epoch, at.duration_since(self.now));
                self.schedule(after, Ev::Tick { node: id, epoch });
            }
            let n = self.nodes.get_mut(&id).expect("exists");
            if !ready.batch.is_empty() {
                n.engine.write(ready.batch.clone(), false).expect("mem engine writes");
            }
            if ready.sync && !self.opts.paxos.unsafe_switches.ack_before_persist {
                let lat = Duration::from_micros(self.rng.random_range(self.fsync_us.0..=self.fsync_us.1));
                let n = self.nodes.get_mut(&id).expect("exists");
                let epoch = n.epoch;
                n.busy = Some(Ready { batch: Default::default(), sync: true, outboxes: ready.outboxes });
                self.schedule(lat, Ev::Synced { node: id, epoch });
                return;
            }
            self.release(id, ready);
            if !self.nodes[&id].core.as_ref().is_some_and(|c| c.has_work()) {
                return;
            }
        }
    }

    fn release(&mut self, id: NodeId, ready: Ready) {
        let now = self.tt(id);
        let n = self.nodes.get_mut(&id).expect("exists");
        let Some(core) = n.core.as_mut() else { return };
        let out = core.release(now, ready);
        if let Err(e) = core.check_invariants() {
            panic!("invariant violated: {e}");
        }
        for (req, resp) in out.replies {
            // Spanner §4.1.2: no reader sees a version before true time passed its timestamp.
            let newest = match &resp {
                Response::ReadAt { newest, .. } => *newest,
                Response::Value { ts, .. } | Response::TxnValue { ts, .. } => *ts,
                _ => Timestamp::ZERO,
            };
            if newest >= self.now && !self.opts.unsafe_skip_commit_wait {
                panic!(
                    "invariant violated: {id} answered a read showing a version at {newest} at true time {} (before \
                     its commit wait ended)",
                    self.now
                );
            }
            self.replies.insert(req, resp);
        }
        for (to, msgs) in out.messages {
            // Like the shell's peer tasks: report when a node stops (or starts) answering.
            let ok = self.nodes.get(&to).is_some_and(|n| n.core.is_some())
                && !self.cut.iter().any(|(a, b)| (*a == id && *b == to) || (*a == to && *b == id));
            if self.reachable.insert((id, to), ok) != Some(ok) {
                let d = Duration::from_micros(self.delay_us.1);
                self.schedule(d, Ev::Reach { node: id, peer: to, ok });
            }
            if !ok {
                continue;
            }
            if self.drop_prob > 0.0 && self.rng.random_bool(self.drop_prob.min(1.0)) {
                continue;
            }
            if self.dup_prob > 0.0 && self.rng.random_bool(self.dup_prob.min(1.0)) {
                let d = Duration::from_micros(self.rng.random_range(self.delay_us.0..=self.delay_us.1 * 4));
                self.schedule(d, Ev::Deliver { from: id, to, msgs: msgs.clone() });
            }
            let d = Duration::from_micros(self.rng.random_range(self.delay_us.0..=self.delay_us.1));
            self.schedule(d, Ev::Deliver { from: id, to, msgs });
        }
    }

    fn synced(&mut self, id: NodeId, epoch: u64) {
        let n = self.nodes.get_mut(&id).expect("exists");
        if n.epoch != epoch && n.busy.is_none() {
            return;
        }
        let Some(ready) = n.busy.take() else { return };
        n.engine.sync().expect("mem engine syncs");
        self.release(id, ready);
        let backlog: Vec<Input> = self.nodes.get_mut(&id).expect("exists").backlog.drain(..).collect();
        let now = self.tt(id);
        for i in backlog {
            if let Some(c) = self.nodes.get_mut(&id).expect("exists").core.as_mut() {
                c.step(now, i);
            }
        }
        self.drive(id);
    }

    /// The event loop of `id` wakes up: every queued input is stepped, then one `ready`.
    fn drain(&mut self, id: NodeId, epoch: u64) {
        let n = self.nodes.get_mut(&id).expect("exists");
        if n.epoch != epoch && !n.draining {
            return;
        }
        n.draining = false;
        if n.busy.is_some() || n.core.is_none() {
            return; // `synced` steps the backlog (a crash cleared it)
        }
        let backlog: Vec<Input> = n.backlog.drain(..).collect();
        let now = self.tt(id);
        for i in backlog {
            if let Some(c) = self.nodes.get_mut(&id).expect("exists").core.as_mut() {
                c.step(now, i);
            }
        }
        self.drive(id);
    }

    /// Runs events until `until` (true time).
    pub fn run_until(&mut self, until: Timestamp) {
        while let Some(Reverse(item)) = self.queue.peek() {
            if item.at > until {
                break;
            }
            let Reverse(item) = self.queue.pop().expect("peeked");
            self.now = item.at;
            if let Some(node) = item.ev.node()
                && let Some(until) = self.paused.get(&node).copied()
            {
                if self.now < until {
                    // A stopped process: everything addressed to it waits until it resumes.
                    self.seq += 1;
                    self.queue.push(Reverse(Item { at: until, seq: self.seq, ev: item.ev }));
                    continue;
                }
                self.paused.remove(&node);
            }
            match item.ev {
                Ev::Deliver { from, to, msgs } => self.input(to, Input::Peer { from, msgs }),
                Ev::Tick { node, epoch } => {
                    if self.nodes[&node].epoch == epoch {
                        self.nodes.get_mut(&node).expect("exists").tick_at = Timestamp::ZERO;
                        self.input(node, Input::Tick);
                    }
                }
                Ev::Synced { node, epoch } => self.synced(node, epoch),
                Ev::Client { node, id, request } => self.input(node, Input::Client { id, request }),
                Ev::Reach { node, peer, ok } => self.input(node, Input::PeerReachable { node: peer, reachable: ok }),
                Ev::Drain { node, epoch } => self.drain(node, epoch),
            }
        }
        self.now = self.now.max(until);
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now.saturating_add(d);
        self.run_until(until);
    }

    /// Sends `request` to `node` without waiting; [`ClusterSim::reply`] collects the answer.
    pub fn submit(&mut self, node: NodeId, request: Request) -> u64 {
        let id = self.next_req;
        self.next_req += 1;
        self.schedule(Duration::from_micros(100), Ev::Client { node, id, request });
        id
    }

    /// Runs until request `id` is answered or `timeout` passes.
    pub fn reply(&mut self, id: u64, timeout: Duration) -> Option<Response> {
        let deadline = self.now.saturating_add(timeout);
        loop {
            if let Some(r) = self.replies.remove(&id) {
                return Some(r);
            }
            if self.now >= deadline {
                return None;
            }
            let step = self.now.saturating_add(Duration::from_millis(5)).min(deadline);
            self.run_until(step);
        }
    }

    /// Sends `request` to `node` and runs until it is answered or `timeout` passes.
    pub fn call(&mut self, node: NodeId, request: Request, timeout: Duration) -> Option<Response> {
        let id = self.next_req;
        self.next_req += 1;
        self.schedule(Duration::from_micros(100), Ev::Client { node, id, request });
        let deadline = self.now.saturating_add(timeout);
        while self.now < deadline {
            let step = self.now.saturating_add(Duration::from_millis(5)).min(deadline);
            self.run_until(step);
            if let Some(r) = self.replies.remove(&id) {
                return Some(r);
            }
        }
        None
    }

    /// Crashes `node`: memory and unsynced writes are lost.
    pub fn crash(&mut self, node: NodeId) {
        let n = self.nodes.get_mut(&node).expect("exists");
        n.core = None;
        n.busy = None;
        n.backlog.clear();
        n.draining = false;
        n.epoch += 1;
        let unsynced = n.engine.unsynced_batches();
        let keep = self.rng.random_range(0..=unsynced);
        self.nodes[&node].engine.crash(keep);
    }

    /// Restarts a crashed node from its disk.
    pub fn restart(&mut self, node: NodeId) {
        let engine = self.nodes[&node].engine.clone();
        let mut core = NodeCore::open(engine as Arc<dyn Engine>, self.opts.clone(), node.0 + 1000)
            .expect("reopen")
            .expect("identity");
        let infos: Vec<NodeInfo> = self.nodes.values().map(|n| n.info.clone()).collect();
        core.learn_nodes(infos);
        if let Some(m) = self.nodes.values().filter_map(|n| n.core.as_ref()).find_map(|c| c.meta_desc.clone()) {
            core.learn_meta(m);
        }
        let n = self.nodes.get_mut(&node).expect("exists");
        n.core = Some(core);
        n.tick_at = Timestamp::ZERO;
        self.drive(node);
    }

    /// The core of a running node.
    pub fn core(&self, node: NodeId) -> &NodeCore {
        self.nodes[&node].core.as_ref().expect("node is up")
    }
}
