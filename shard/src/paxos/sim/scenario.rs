//! Scenario tests: a tiny command language drives a group step by step, and every message,
//! write, apply and event is printed. The expected output is checked in next to the scripts
//! (`shard/testdata/paxos/*`) and regenerated with `UPDATE_GOLDENFILES=1`, then reviewed.
//!
//! Commands (nodes are `n1`, `n2`, …):
//!
//! ```text
//! cluster nodes=3 [lease=2s] [learners=n4] [spare=1] [blank=n4] [compact=N]
//!                                           create a group (spare nodes exist, not yet members;
//!                                           blank ones lack its data and wait for a snapshot)
//! campaign n1                               start phase 1 at once (bootstrap; skips the probe)
//! tick [n1 …]                               run timers (all nodes if none given)
//! advance 500ms                             move true time
//! put n1 key=1 value=7 | cas n1 key=1 expect=7 new=8 | get n1 key=1     client requests
//! deliver [from=n1] [to=n2] [type=Accept] [count=N]  deliver queued messages (FIFO)
//! drop [from=…] [to=…] [type=…]             discard queued messages
//! stabilize [max=N]                         deliver everything until nothing is queued
//! partition n1 n2/n3 ; heal                messages across the cut are dropped when sent
//! crash n2 [keep=K] ; restart n2            crash keeps the first K unsynced batches
//! nosync n2 ; sync n2                       hold n2's writes unsynced (and its messages)
//! offset n2 3ms                             clock offset from true time (negative: -3ms)
//! assign n1 at=50ms                        the leader assigns a timestamp (raises s_max)
//! transfer n1 to=n2 ; config n1 add=n4 | promote=n4 | remove=n3
//! status [n1 …] ; log n1
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::error::Error;
use std::fmt::Write as _;
use std::time::Duration;

use meridian_storage::Slot;
use meridian_truetime::{TTInterval, Timestamp};

use super::node::{KvCmd, KvOp, Pending, SimNode, describe};
use crate::paxos::{Config, Event, Msg, NodeId, Options};

const EPSILON: Duration = Duration::from_millis(4);
const START: Timestamp = Timestamp::from_millis(1_700_000_000_000);
/// Bound on `stabilize` rounds, so a livelock fails the test instead of hanging it.
const STABILIZE_ROUNDS_MAX: usize = 1_000;

type Res<T> = Result<T, Box<dyn Error>>;

/// The scenario runner.
pub struct Scenario {
    now: Timestamp,
    nodes: BTreeMap<NodeId, SimNode>,
    offsets: BTreeMap<NodeId, i64>,
    queue: VecDeque<(NodeId, NodeId, Msg)>,
    cut: Option<(BTreeSet<NodeId>, BTreeSet<NodeId>)>,
    nosync: BTreeMap<NodeId, Vec<Pending>>,
    next_op: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            now: START,
            nodes: BTreeMap::new(),
            offsets: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: None,
            nosync: BTreeMap::new(),
            next_op: 1,
        }
    }
}

fn parse_node(s: &str) -> Res<NodeId> {
    let n = s.strip_prefix('n').ok_or_else(|| format!("expected a node like n1, got {s:?}"))?;
    Ok(NodeId(n.parse()?))
}

fn parse_duration(s: &str) -> Res<(bool, Duration)> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or("duration needs a unit (ms, s, us)")?);
    let n: u64 = num.parse()?;
    let d = match unit {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        _ => return Err(format!("unknown unit {unit:?}").into()),
    };
    Ok((neg, d))
}

/// A message as scenario output shows it: register commands decoded.
fn show_msg(m: &Msg) -> String {
    match m {
        Msg::Accept { ballot, entries, chosen, .. } => {
            let list: Vec<String> = entries.iter().map(|(s, c)| format!("{}:{}", s.0, describe(c))).collect();
            format!("Accept b={ballot} chosen={} [{}]", chosen.0, list.join(" "))
        }
        Msg::Promise { ballot, entries, more } => {
            let list: Vec<String> =
                entries.iter().map(|(s, a)| format!("{}@{}:{}", s.0, a.ballot, describe(&a.cmd))).collect();
            let more = more.map(|m| format!(" more={}", m.0)).unwrap_or_default();
            format!("Promise b={ballot} [{}]{more}", list.join(" "))
        }
        other => other.to_string(),
    }
}

fn msg_type(m: &Msg) -> &'static str {
    match m {
        Msg::Probe { .. } => "Probe",
        Msg::ProbeOk { .. } => "ProbeOk",
        Msg::Prepare { .. } => "Prepare",
        Msg::Promise { .. } => "Promise",
        Msg::Accept { .. } => "Accept",
        Msg::Accepted { .. } => "Accepted",
        Msg::Reject { .. } => "Reject",
        Msg::Snapshot { .. } => "Snapshot",
        Msg::TimeoutNow { .. } => "TimeoutNow",
        Msg::Release { .. } => "Release",
    }
}

impl Scenario {
    fn tt(&self, id: NodeId) -> TTInterval {
        let local = self.now.saturating_offset(self.offsets.get(&id).copied().unwrap_or(0));
        TTInterval::new(local.saturating_sub(EPSILON), local.saturating_add(EPSILON))
    }

    fn node(&mut self, id: NodeId) -> Res<&mut SimNode> {
        self.nodes.get_mut(&id).ok_or_else(|| format!("no node {id}").into())
    }

    fn up(&mut self, id: NodeId) -> Res<&mut SimNode> {
        let n = self.node(id)?;
        if !n.is_up() {
            return Err(format!("{id} is down").into());
        }
        Ok(n)
    }

    fn cut_between(&self, a: NodeId, b: NodeId) -> bool {
        match &self.cut {
            Some((x, y)) => (x.contains(&a) && y.contains(&b)) || (y.contains(&a) && x.contains(&b)),
            None => false,
        }
    }

    /// Drains `id`'s outbox: prints writes, then (unless `nosync`) syncs and releases.
    fn flush(&mut self, id: NodeId, out: &mut String) -> Res<()> {
        let now = self.tt(id);
        let node = self.up(id)?;
        let outbox = node.replica().ready(now);
        if outbox.is_empty() {
            return Ok(());
        }
        if let Some(hs) = &outbox.hard_state {
            let vote = hs
                .vote
                .map(|v| format!(" vote={}@{}", v.ballot, v.end.duration_since(START).as_millis()))
                .unwrap_or_default();
            writeln!(out, "{id} persist promised={}{vote}", hs.promised)?;
        }
        if !outbox.entries.is_empty() {
            let list: Vec<String> =
                outbox.entries.iter().map(|(s, a)| format!("{}@{}:{}", s.0, a.ballot, describe(&a.cmd))).collect();
            writeln!(out, "{id} persist [{}]", list.join(" "))?;
        }
        if let Some(b) = outbox.truncate_below {
            writeln!(out, "{id} truncate below {}", b.0)?;
        }
        if let Some(s) = &outbox.snapshot {
            writeln!(out, "{id} install snapshot at slot {} {}", s.slot.0, s.config)?;
        }
        let before_persist = outbox.send_before_persist;
        let pending = node.write_phase(outbox);
        if self.nosync.contains_key(&id) {
            self.nosync.get_mut(&id).expect("checked").push(pending);
            return Ok(());
        }
        let node = self.up(id)?;
        if !before_persist {
            node.sync();
        }
        self.release(id, pending, out)
    }

    fn release(&mut self, id: NodeId, pending: Pending, out: &mut String) -> Res<()> {
        let now = self.tt(id);
        let node = self.up(id)?;
        let events_before = node.events.len();
        let applied_before = node.applied_log.len();
        let messages = node.release_phase(now, pending);
        for (slot, cmd) in &node.applied_log[applied_before..] {
            writeln!(out, "{id} apply {}:{}", slot.0, describe(cmd))?;
        }
        for ev in &node.events[events_before..] {
            match ev {
                Event::LeaseAcquired { ballot, end } => writeln!(
                    out,
                    "{id} event: lease acquired at {ballot} until +{}ms",
                    end.duration_since(START).as_millis()
                )?,
                ev => writeln!(out, "{id} event: {ev}")?,
            }
        }
        while let Some(r) = node.replies.pop_front() {
            writeln!(out, "{id} reply {r:?}")?;
        }
        for (to, msg) in messages {
            if self.cut_between(id, to) {
                writeln!(out, "{id} → {to} {}  (dropped: partition)", show_msg(&msg))?;
            } else {
                writeln!(out, "{id} → {to} {}", show_msg(&msg))?;
                self.queue.push_back((id, to, msg));
            }
        }
        // A snapshot built during release goes out with the next outbox.
        if self.nodes.get(&id).is_some_and(|n| n.is_up()) {
            let now = self.tt(id);
            let n = self.up(id)?;
            let more = n.replica().ready(now);
            if !more.is_empty() {
                let pending = n.write_phase(more);
                n.sync();
                return self.release(id, pending, out);
            }
        }
        Ok(())
    }

    fn deliver(&mut self, filter: &Filter, limit: usize, out: &mut String) -> Res<usize> {
        let mut delivered = 0;
        let mut kept = VecDeque::new();
        let queue = std::mem::take(&mut self.queue);
        let mut batch = Vec::new();
        for (from, to, msg) in queue {
            if delivered < limit && filter.matches(from, to, &msg) {
                delivered += 1;
                batch.push((from, to, msg));
            } else {
                kept.push_back((from, to, msg));
            }
        }
        self.queue = kept;
        for (from, to, msg) in batch {
            let up = self.nodes.get(&to).is_some_and(|n| n.is_up());
            if !up {
                writeln!(out, "{from} → {to} {}  (lost: {to} is down)", show_msg(&msg))?;
                continue;
            }
            let now = self.tt(to);
            self.up(to)?.replica().receive(now, from, msg);
            self.flush(to, out)?;
        }
        Ok(delivered)
    }

    fn status(&self, id: NodeId) -> String {
        let n = &self.nodes[&id];
        let Some(r) = &n.replica else { return format!("{id}: down") };
        let now = self.tt(id);
        let lease = match r.lease_end(now) {
            Some(end) => format!(" lease_until=+{}ms", end.duration_since(START).as_millis()),
            None => String::new(),
        };
        let kv: Vec<String> = n.kv.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "{id}: {:?} promised={} chosen={} applied={} log=[{}..{}] {}{lease} kv={{{}}}",
            r.role(),
            r.promised(),
            r.chosen().0,
            n.sm_applied.0,
            r.log_start().0,
            r.last_slot().0,
            r.config(),
            kv.join(",")
        )
    }
}

/// Argument access over goldenscript's consumer.
struct Args<'a>(goldenscript::ArgumentConsumer<'a>);

impl<'a> Args<'a> {
    fn pos(&mut self) -> Option<&'a str> {
        self.0.next_pos()
    }
    fn key(&mut self, k: &str) -> Option<&'a str> {
        self.0.take_key(k)
    }
    fn parse<T: std::str::FromStr>(&mut self, k: &str) -> Res<Option<T>>
    where
        T::Err: Error + 'static,
    {
        self.key(k).map(|v| v.parse::<T>().map_err(|e| Box::new(e) as Box<dyn Error>)).transpose()
    }
    fn rest_pos(&mut self) -> Vec<&'a str> {
        std::iter::from_fn(|| self.0.next_pos()).collect()
    }
    fn done(&self) -> Res<()> {
        self.0.reject_next()
    }
}

#[derive(Default)]
struct Filter {
    from: Option<NodeId>,
    to: Option<NodeId>,
    kind: Option<String>,
}

impl Filter {
    fn matches(&self, from: NodeId, to: NodeId, msg: &Msg) -> bool {
        self.from.is_none_or(|f| f == from)
            && self.to.is_none_or(|t| t == to)
            && self.kind.as_deref().is_none_or(|k| k == msg_type(msg))
    }
}

fn config_arg(cfg: &Config, key: &str, node: NodeId) -> Res<Config> {
    let mut next = cfg.clone();
    match key {
        "add" => {
            next.learners.insert(node);
        }
        "promote" => {
            next.learners.remove(&node);
            next.voters.insert(node);
        }
        "remove" => {
            next.learners.remove(&node);
            next.voters.remove(&node);
        }
        _ => return Err(format!("unknown config change {key}").into()),
    }
    Ok(next)
}

impl goldenscript::Runner for Scenario {
    type Command = goldenscript::Command;

    fn run(&mut self, command: &goldenscript::Command, _: &goldenscript::Context) -> Result<String, Box<dyn Error>> {
        let mut out = String::new();
        let mut args = Args(command.consume_args());
        match command.name.as_str() {
            "cluster" => {
                let n: u64 = args.parse("nodes")?.ok_or("cluster needs nodes=N")?;
                let lease = match args.key("lease") {
                    Some(a) => parse_duration(a)?.1,
                    None => Duration::from_secs(2),
                };
                let learners: BTreeSet<NodeId> = match args.key("learners") {
                    Some(a) => a.split(',').map(parse_node).collect::<Res<_>>()?,
                    None => BTreeSet::new(),
                };
                let spare: u64 = args.parse("spare")?.unwrap_or(0);
                let blank: BTreeSet<NodeId> = match args.key("blank") {
                    Some(a) => a.split(',').map(parse_node).collect::<Res<_>>()?,
                    None => BTreeSet::new(),
                };
                let mut opts = Options::with_lease(lease);
                opts.compact_threshold = args.parse("compact")?.unwrap_or(opts.compact_threshold);
                opts.compact_keep = opts.compact_keep.min(opts.compact_threshold / 2);
                args.done()?;
                let ids: Vec<NodeId> = (1..=n).map(NodeId).collect();
                let config = Config {
                    voters: ids.iter().copied().filter(|i| !learners.contains(i)).collect(),
                    learners: learners.clone(),
                };
                // Spare nodes exist but are not members until a configuration change adds them.
                for id in ids.iter().copied().chain((n + 1..=n + spare).map(NodeId)) {
                    let node = if blank.contains(&id) { SimNode::blank } else { SimNode::new };
                    self.nodes.insert(id, node(id, opts.clone(), id.0, config.clone()));
                }
                writeln!(
                    out,
                    "{config}, lease {lease:?}{}",
                    if spare > 0 { format!(", {spare} spare node(s)") } else { String::new() }
                )?;
            }
            "campaign" => {
                let id = parse_node(args.pos().ok_or("campaign needs a node")?)?;
                args.done()?;
                let now = self.tt(id);
                self.up(id)?.replica().campaign(now);
                self.flush(id, &mut out)?;
            }
            "tick" => {
                let ids: Vec<NodeId> = args.rest_pos().into_iter().map(parse_node).collect::<Res<_>>()?;
                args.done()?;
                let ids = if ids.is_empty() { self.nodes.keys().copied().collect() } else { ids };
                for id in ids {
                    if !self.nodes[&id].is_up() {
                        continue;
                    }
                    let now = self.tt(id);
                    self.up(id)?.replica().tick(now);
                    self.flush(id, &mut out)?;
                }
            }
            "advance" => {
                let (_, d) = parse_duration(args.pos().ok_or("advance needs a duration")?)?;
                args.done()?;
                self.now = self.now.saturating_add(d);
                writeln!(out, "t=+{}ms", self.now.duration_since(START).as_millis())?;
            }
            "put" | "cas" | "get" => {
                let id = parse_node(args.pos().ok_or("needs a node")?)?;
                let key: u64 = args.parse("key")?.ok_or("needs key=")?;
                let op_id = self.next_op;
                self.next_op += 1;
                let now = self.tt(id);
                match command.name.as_str() {
                    "get" => {
                        args.done()?;
                        self.up(id)?.client_read(now, op_id, key);
                    }
                    name => {
                        let op = if name == "put" {
                            KvOp::Put { key, value: args.parse("value")?.ok_or("needs value=")? }
                        } else {
                            KvOp::Cas {
                                key,
                                expect: args.parse("expect")?,
                                new: args.parse("new")?.ok_or("needs new=")?,
                            }
                        };
                        args.done()?;
                        self.up(id)?.client_write(KvCmd { op_id, op });
                    }
                }
                let node = self.up(id)?;
                while let Some(r) = node.replies.pop_front() {
                    writeln!(out, "{id} reply {r:?}")?;
                }
                self.flush(id, &mut out)?;
            }
            "deliver" | "drop" => {
                let filter = Filter {
                    from: args.key("from").map(parse_node).transpose()?,
                    to: args.key("to").map(parse_node).transpose()?,
                    kind: args.key("type").map(str::to_string),
                };
                let count: usize = args.parse("count")?.unwrap_or(usize::MAX);
                args.done()?;
                if command.name == "deliver" {
                    self.deliver(&filter, count, &mut out)?;
                } else {
                    let before = self.queue.len();
                    self.queue.retain(|(f, t, m)| !filter.matches(*f, *t, m));
                    writeln!(out, "dropped {} message(s)", before - self.queue.len())?;
                }
            }
            "stabilize" => {
                let max: usize = args.parse("max")?.unwrap_or(STABILIZE_ROUNDS_MAX);
                args.done()?;
                let mut rounds = 0;
                while !self.queue.is_empty() {
                    rounds += 1;
                    if rounds > max {
                        return Err(format!("not stable after {max} rounds").into());
                    }
                    self.deliver(&Filter::default(), usize::MAX, &mut out)?;
                }
            }
            "partition" => {
                // Two sides, nodes of a side joined by '/': `partition n1 n2/n3`.
                let sides: Vec<BTreeSet<NodeId>> = args
                    .rest_pos()
                    .into_iter()
                    .map(|side| side.split('/').map(parse_node).collect::<Res<BTreeSet<NodeId>>>())
                    .collect::<Res<_>>()?;
                args.done()?;
                let [left, right]: [BTreeSet<NodeId>; 2] =
                    sides.try_into().map_err(|_| "partition needs two sides, e.g. partition n1 n2/n3")?;
                writeln!(out, "partition {left:?} | {right:?}")?;
                self.cut = Some((left, right));
            }
            "heal" => {
                args.done()?;
                self.cut = None;
                writeln!(out, "healed")?;
            }
            "crash" => {
                let id = parse_node(args.pos().ok_or("crash needs a node")?)?;
                let keep: usize = args.parse("keep")?.unwrap_or(0);
                args.done()?;
                let lost = self.nosync.remove(&id).map(|p| p.len()).unwrap_or(0);
                let node = self.node(id)?;
                let unsynced = node.engine.unsynced_batches();
                node.crash(keep);
                writeln!(
                    out,
                    "{id} crashed: {unsynced} unsynced batch(es), kept {}; {lost} held outbox(es) lost",
                    keep.min(unsynced)
                )?;
            }
            "restart" => {
                let id = parse_node(args.pos().ok_or("restart needs a node")?)?;
                args.done()?;
                self.node(id)?.restart();
                writeln!(out, "{}", self.status(id))?;
            }
            "nosync" => {
                let id = parse_node(args.pos().ok_or("nosync needs a node")?)?;
                args.done()?;
                self.nosync.entry(id).or_default();
            }
            "sync" => {
                let id = parse_node(args.pos().ok_or("sync needs a node")?)?;
                args.done()?;
                let held = self.nosync.remove(&id).unwrap_or_default();
                self.up(id)?.sync();
                for p in held {
                    self.release(id, p, &mut out)?;
                }
            }
            "offset" => {
                let id = parse_node(args.pos().ok_or("offset needs a node")?)?;
                let (neg, d) = parse_duration(args.pos().ok_or("offset needs a duration")?)?;
                args.done()?;
                let ns = i64::try_from(d.as_nanos())?;
                self.offsets.insert(id, if neg { -ns } else { ns });
            }
            "assign" => {
                // The leader assigns a timestamp (as the transaction layer would), `at` ms after
                // the start of the scenario in true-time terms.
                let id = parse_node(args.pos().ok_or("assign needs a node")?)?;
                let (_, at) = parse_duration(args.key("at").ok_or("assign needs at=")?)?;
                args.done()?;
                let ts = START.saturating_add(at);
                let now = self.tt(id);
                let r = self.up(id)?.replica();
                if r.can_assign(now, ts) {
                    r.note_assigned(ts);
                    writeln!(out, "{id} assigned +{}ms (s_max)", at.as_millis())?;
                } else {
                    writeln!(out, "{id} cannot assign +{}ms: no lease covering it", at.as_millis())?;
                }
            }
            "transfer" => {
                let id = parse_node(args.pos().ok_or("transfer needs a node")?)?;
                let to = parse_node(args.key("to").ok_or("transfer needs to=")?)?;
                args.done()?;
                let now = self.tt(id);
                if let Err(e) = self.up(id)?.replica().transfer_leadership(now, to) {
                    writeln!(out, "{id} error: {e}")?;
                }
                self.flush(id, &mut out)?;
            }
            "config" => {
                let id = parse_node(args.pos().ok_or("config needs a node")?)?;
                let (key, value) = args.0.next_key().ok_or("config needs add=|promote=|remove=")?;
                let node_arg = parse_node(value)?;
                let current = self.up(id)?.replica().config().clone();
                let next = config_arg(&current, key, node_arg)?;
                if let Err(e) = self.up(id)?.replica().change_config(next) {
                    writeln!(out, "{id} error: {e}")?;
                }
                self.flush(id, &mut out)?;
            }
            "status" => {
                let ids: Vec<NodeId> = args.rest_pos().into_iter().map(parse_node).collect::<Res<_>>()?;
                args.done()?;
                let ids = if ids.is_empty() { self.nodes.keys().copied().collect() } else { ids };
                for id in ids {
                    writeln!(out, "{}", self.status(id))?;
                }
            }
            "log" => {
                let id = parse_node(args.pos().ok_or("log needs a node")?)?;
                args.done()?;
                let node = self.up(id)?;
                let r = node.replica();
                let (start, last) = (r.log_start().0, r.last_slot().0);
                for s in start..=last {
                    match r.entry(Slot(s)) {
                        Some(a) => writeln!(out, "{}@{}: {}", s, a.ballot, describe(&a.cmd))?,
                        None => writeln!(out, "{s}: (empty)")?,
                    }
                }
            }
            name => return Err(format!("unknown command {name}").into()),
        }
        Ok(out)
    }
}
