//! The transaction dependency graph (Adya §4.2, Elle §4.2) and its strongly connected components.
//!
//! Vertices are the transactions that certainly or observably committed. Each edge carries a
//! bitset of relations (an edge can be both rw and real-time) and, per relation, the first piece
//! of evidence found for it, so a cycle can be explained step by step. Edges are collected in
//! history order into sorted adjacency lists: the same history always yields the same graph.
//!
//! Real-time edges are a transitive reduction, computed by sweeping invocations and completions
//! in time order:
//!
//! ```text
//!   time ──►   T1 [────]            T3 [──────]
//!              T2    [───]   T4 [──]            frontier before T3's invocation: {T2, T4}
//!   edges: T1→T4, T2→T4 (T4's frontier), then T4 completes and retires T1, T2: T3 gets T4 only;
//!   T1→T3 still follows as T1→T4→T3.
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::direct::Index;
use super::{CheckOptions, EdgeCounts, MicroOp, Outcome, Txn};

/// Relation bit: write-write (version order).
pub(super) const WW: u8 = 1;
/// Relation bit: write-read (a read observed an append).
pub(super) const WR: u8 = 2;
/// Relation bit: read-write (anti-dependency: a read missed the append that came next).
pub(super) const RW: u8 = 4;
/// Relation bit: real time (one completed before the other was invoked).
pub(super) const RT: u8 = 8;
/// Every relation, in the order the cycle search tries them.
pub(super) const RELATIONS: [u8; 4] = [WW, WR, RW, RT];

/// Why an edge exists: enough to print one line of a cycle's explanation.
#[derive(Clone, Debug)]
pub(super) enum Evidence {
    /// The target appended `value` to `key` right after the source's `prev`.
    Ww {
        /// The key.
        key: u64,
        /// The source's element.
        prev: u64,
        /// The target's element.
        value: u64,
        /// `value` was never read: it was placed after the last observed element.
        inferred: bool,
    },
    /// The target read `key` in the state ending with the source's `value`.
    Wr {
        /// The key.
        key: u64,
        /// The source's element, last in the target's read.
        value: u64,
    },
    /// The source read `key` ending in `prev` (`None`: empty); the target's `value` came next.
    Rw {
        /// The key.
        key: u64,
        /// The last element the source read.
        prev: Option<u64>,
        /// The target's element, which the source did not see.
        value: u64,
        /// `value` was never read: it was placed after the last observed element.
        inferred: bool,
    },
    /// The source completed at `complete_ns`, before the target was invoked at `invoke_ns`
    /// (derived from the history's times when printed, never stored).
    Rt {
        /// The source's completion time.
        complete_ns: u64,
        /// The target's invocation time.
        invoke_ns: u64,
    },
}

/// The dependency graph over committed (or observably committed) transactions.
pub(super) struct Graph {
    /// Vertex → history index.
    txn_of: Vec<usize>,
    /// Vertex → sorted `(target, relation bits)`.
    adj: Vec<Vec<(u32, u8)>>,
    /// (source, target, data relation bit) → the first evidence found.
    evidence: HashMap<(u32, u32, u8), Evidence>,
    /// Whether real-time order is part of the graph.
    realtime: bool,
}

/// Collects edges before they are frozen into adjacency lists.
struct Builder {
    vertex_of: Vec<Option<u32>>,
    edges: BTreeMap<(u32, u32), u8>,
    evidence: HashMap<(u32, u32, u8), Evidence>,
}

impl Builder {
    /// Adds an edge between two history indices if both are vertices and distinct; real-time
    /// edges carry no stored evidence (their times are in the history).
    fn link(&mut self, from: usize, to: usize, rel: u8, why: Option<Evidence>) {
        let (Some(a), Some(b)) = (self.vertex_of[from], self.vertex_of[to]) else { return };
        if a == b {
            return;
        }
        *self.edges.entry((a, b)).or_insert(0) |= rel;
        if let Some(why) = why {
            self.evidence.entry((a, b, rel)).or_insert(why);
        }
    }
}

impl Graph {
    /// Builds ww, wr and rw edges from the index, and real-time edges if asked.
    pub fn build(history: &[Txn], index: &Index, opts: CheckOptions) -> Graph {
        let in_graph = |t: &Txn| match t.outcome {
            Outcome::Ok => true,
            Outcome::Fail => false,
            Outcome::Unknown => t.ops.iter().any(|op| match op {
                MicroOp::Append { key, value } => index.observed(*key, *value),
                MicroOp::Read { .. } => false,
            }),
        };
        let mut txn_of = Vec::new();
        let mut vertex_of = vec![None; history.len()];
        for (i, t) in history.iter().enumerate() {
            if in_graph(t) {
                vertex_of[i] = Some(u32::try_from(txn_of.len()).expect("fewer than 2^32 transactions"));
                txn_of.push(i);
            }
        }
        let mut b = Builder { vertex_of, edges: BTreeMap::new(), evidence: HashMap::new() };
        for &i in &txn_of {
            let t = &history[i];
            for op in &t.ops {
                match op {
                    MicroOp::Read { key, value: Some(v) } if t.outcome == Outcome::Ok => {
                        let Some(&last) = v.last() else { continue };
                        if let Some(&w) = index.writer.get(&(*key, last)) {
                            b.link(w, i, WR, Some(Evidence::Wr { key: *key, value: last }));
                        }
                    }
                    MicroOp::Read { .. } => {}
                    MicroOp::Append { key, value } => {
                        let (key, value) = (*key, *value);
                        let (prev, inferred) = index.previous(key, value);
                        // A garbage element (no writer) was already reported and links nothing.
                        if let Some((p, &w)) = prev.and_then(|p| Some((p, index.writer.get(&(key, p))?))) {
                            b.link(w, i, WW, Some(Evidence::Ww { key, prev: p, value, inferred }));
                        }
                        for &r in index.readers_of(key, prev) {
                            b.link(r, i, RW, Some(Evidence::Rw { key, prev, value, inferred }));
                        }
                    }
                }
            }
        }
        if opts.realtime {
            realtime(history, &txn_of, &mut b);
        }
        let mut adj = vec![Vec::new(); txn_of.len()];
        for ((a, c), rels) in b.edges {
            adj[a as usize].push((c, rels));
        }
        Graph { txn_of, adj, evidence: b.evidence, realtime: opts.realtime }
    }

    /// Number of vertices.
    pub fn len(&self) -> usize {
        self.txn_of.len()
    }

    /// History index of vertex `v`.
    pub fn txn(&self, v: u32) -> usize {
        self.txn_of[v as usize]
    }

    /// Out-edges of `v`, sorted by target.
    pub fn out(&self, v: u32) -> &[(u32, u8)] {
        &self.adj[v as usize]
    }

    /// Why the edge `from -rel-> to` exists (for real time: the two times).
    pub fn evidence(&self, history: &[Txn], from: u32, to: u32, rel: u8) -> Evidence {
        if rel == RT {
            let complete_ns = self.completed_ns(history, from).expect("only Ok transactions precede in real time");
            return Evidence::Rt { complete_ns, invoke_ns: history[self.txn(to)].invoke_ns };
        }
        self.evidence.get(&(from, to, rel)).expect("every linked data relation records its evidence").clone()
    }

    /// When vertex `v` is known to have committed by: its completion time, if it is `Ok`.
    /// (An `Unknown` transaction's completion bounds nothing: it may commit later.)
    pub fn completed_ns(&self, history: &[Txn], v: u32) -> Option<u64> {
        let t = &history[self.txn(v)];
        if t.outcome == Outcome::Ok { t.complete_ns } else { None }
    }

    /// Whether real time orders `a` before `b` — `a` completed before `b` was invoked — in a
    /// graph that includes real time. Decided from the clock, so it holds even where the reduced
    /// edges only connect the two through a chain.
    pub fn precedes_in_real_time(&self, history: &[Txn], a: u32, b: u32) -> bool {
        self.realtime && self.completed_ns(history, a).is_some_and(|c| c < history[self.txn(b)].invoke_ns)
    }

    /// Edge counts by relation (an edge with two relations counts in both).
    pub fn edge_counts(&self) -> EdgeCounts {
        let mut c = EdgeCounts::default();
        for &(_, rels) in self.adj.iter().flatten() {
            c.ww += usize::from(rels & WW != 0);
            c.wr += usize::from(rels & WR != 0);
            c.rw += usize::from(rels & RW != 0);
            c.realtime += usize::from(rels & RT != 0);
        }
        c
    }

    /// Nontrivial strongly connected components of the subgraph induced by `members` and the
    /// edges carrying any relation in `mask`. Each component is sorted; components are ordered by
    /// their smallest vertex. Tarjan's algorithm, iterative so a long path cannot overflow the stack.
    pub fn sccs(&self, members: &[u32], mask: u8) -> Vec<Vec<u32>> {
        const UNSEEN: u32 = u32::MAX;
        let local: HashMap<u32, u32> = members.iter().enumerate().map(|(i, &v)| (v, i as u32)).collect();
        let n = members.len();
        let mut index = vec![UNSEEN; n];
        let mut low = vec![0u32; n];
        let mut on_stack = vec![false; n];
        let mut stack: Vec<u32> = Vec::new();
        let mut out = Vec::new();
        let mut next = 0u32;
        for root in 0..n as u32 {
            if index[root as usize] != UNSEEN {
                continue;
            }
            // Frames: (local vertex, position in its adjacency list).
            let mut calls: Vec<(u32, usize)> = vec![(root, 0)];
            index[root as usize] = next;
            low[root as usize] = next;
            next += 1;
            stack.push(root);
            on_stack[root as usize] = true;
            while let Some(&(v, resume)) = calls.last() {
                let edges = self.out(members[v as usize]);
                let mut child = None;
                let mut pos = resume;
                while pos < edges.len() {
                    let (w, rels) = edges[pos];
                    pos += 1;
                    let Some(&w) = local.get(&w).filter(|_| rels & mask != 0) else { continue };
                    if index[w as usize] == UNSEEN {
                        child = Some(w);
                        break;
                    }
                    if on_stack[w as usize] {
                        low[v as usize] = low[v as usize].min(index[w as usize]);
                    }
                }
                calls.last_mut().expect("the loop holds a frame").1 = pos;
                if let Some(w) = child {
                    index[w as usize] = next;
                    low[w as usize] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w as usize] = true;
                    calls.push((w, 0));
                    continue;
                }
                calls.pop();
                if let Some(&(parent, _)) = calls.last() {
                    low[parent as usize] = low[parent as usize].min(low[v as usize]);
                }
                if low[v as usize] == index[v as usize] {
                    let mut component = Vec::new();
                    loop {
                        let w = stack.pop().expect("v is on the stack until its component is popped");
                        on_stack[w as usize] = false;
                        component.push(members[w as usize]);
                        if w == v {
                            break;
                        }
                    }
                    if component.len() > 1 {
                        component.sort_unstable();
                        out.push(component);
                    }
                }
            }
        }
        out.sort_unstable_by_key(|c| c[0]);
        out
    }
}

/// Adds the transitive reduction of real-time order: sweep events by time; each invocation links
/// from the frontier of completions not yet superseded; a completion retires the frontier its own
/// invocation saw (those reach later transactions through it) and joins the frontier.
fn realtime(history: &[Txn], txn_of: &[usize], b: &mut Builder) {
    // (time, 0 = invoke / 1 = complete, txn). Invocations sort first at equal times, so an edge
    // needs completion strictly before invocation.
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * txn_of.len());
    for &i in txn_of {
        let t = &history[i];
        events.push((t.invoke_ns, 0, i));
        if t.outcome == Outcome::Ok {
            let c = t.complete_ns.expect("malformed() rejects Ok transactions without completion time");
            events.push((c, 1, i));
        }
    }
    events.sort_unstable();
    let mut frontier: BTreeSet<usize> = BTreeSet::new();
    let mut saw: HashMap<usize, Vec<usize>> = HashMap::new();
    for (_, phase, i) in events {
        if phase == 0 {
            for &f in &frontier {
                b.link(f, i, RT, None);
            }
            if history[i].outcome == Outcome::Ok {
                saw.insert(i, frontier.iter().copied().collect());
            }
        } else {
            let retired = saw.remove(&i).expect("an Ok transaction is invoked before it completes");
            for f in retired {
                frontier.remove(&f);
            }
            frontier.insert(i);
        }
    }
}
