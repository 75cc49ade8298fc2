//! Finding and classifying cycles (Elle §5, Adya §4.4).
//!
//! For each nontrivial SCC of the whole graph, each cycle kind is searched for in turn, most
//! severe first. A kind restricts which relations its edges may carry and how many rw edges it
//! needs; its search runs on the SCCs of that restricted subgraph, breadth-first over
//! `(vertex, rw count, used wr, used rt)` states so the first return to the start vertex is a
//! shortest walk of that kind through it:
//!
//! ```text
//!   kind                relations          rw     also needs
//!   G0                  ww                 0
//!   G1c                 ww wr              0      a wr
//!   G-single            ww wr rw           1
//!   G2                  ww wr rw           ≥2
//!   X-realtime          X's relations + rt as X   a real-time edge
//! ```
//!
//! Search only starts from vertices with an out-edge of the rarest required relation (every
//! qualifying cycle passes through one), those whose edge points furthest back in real time first
//! (the likeliest culprits). Real-time kinds may also close a walk with an implicit real-time step
//! decided from the clock, since the graph holds only a reduction of real-time order. A walk that
//! revisits a vertex is split into simple cycles and the one matching the kind is reported; the
//! reported kind is always recomputed from the edges actually printed, so it can never overstate
//! what the cycle shows. One cycle is reported per kind per SCC, as in Elle.
//!
//! An edge can carry several relations. A step may use wr only if its edge has no ww, and rw
//! only if it has neither ww nor wr: otherwise the same cycle, read with the stronger relation,
//! is a more severe kind, and calling it G-single would hide that (adya types edges the same way).
//! Real time is an independent fact about the clients, so an rt step may use any edge that has
//! rt. Every cycle still has an allowed reading — each edge by its strongest relation — so the
//! kinds below still cover every cycle.

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::graph::{Evidence, Graph, RELATIONS, RT, RW, WR, WW};
use super::render::txn_line;
use super::{CYCLES_PER_SCC_MAX, Report, SEARCH_STEPS_MAX, Txn, kind};

/// How many rw edges a cycle kind has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RwCount {
    Zero,
    One,
    TwoOrMore,
}

/// One kind of cycle to search for.
struct Spec {
    name: &'static str,
    mask: u8,
    rw: RwCount,
    need_wr: bool,
    need_rt: bool,
}

/// Cycle kinds, most severe first; real-time variants after all plain ones, so a cycle is only
/// blamed on real time when no data-only cycle of that kind exists.
const SPECS: [Spec; 8] = [
    Spec { name: "G0", mask: WW, rw: RwCount::Zero, need_wr: false, need_rt: false },
    Spec { name: "G1c", mask: WW | WR, rw: RwCount::Zero, need_wr: true, need_rt: false },
    Spec { name: "G-single", mask: WW | WR | RW, rw: RwCount::One, need_wr: false, need_rt: false },
    Spec { name: "G2", mask: WW | WR | RW, rw: RwCount::TwoOrMore, need_wr: false, need_rt: false },
    Spec { name: "G0-realtime", mask: WW | RT, rw: RwCount::Zero, need_wr: false, need_rt: true },
    Spec { name: "G1c-realtime", mask: WW | WR | RT, rw: RwCount::Zero, need_wr: true, need_rt: true },
    Spec { name: "G-single-realtime", mask: WW | WR | RW | RT, rw: RwCount::One, need_wr: false, need_rt: true },
    Spec { name: "G2-realtime", mask: WW | WR | RW | RT, rw: RwCount::TwoOrMore, need_wr: false, need_rt: true },
];

/// Kinds made redundant by finding another in the same SCC: any model forbidding the implied
/// kind also forbids the finder (Elle's and adya's implication tables, restricted to our kinds).
const IMPLIES: [(&str, &[&str]); 6] = [
    ("G0", &["G1c", "G0-realtime", "G1c-realtime"]),
    ("G1c", &["G1c-realtime"]),
    ("G-single", &["G2", "G-single-realtime", "G2-realtime"]),
    ("G2", &["G2-realtime"]),
    ("G0-realtime", &["G1c-realtime"]),
    ("G-single-realtime", &["G2-realtime"]),
];

// Implication-skipping can leave four kinds in one SCC (G1c, G2, G0-realtime, G-single-realtime);
// a smaller cap would hide one of them.
const _: () = assert!(CYCLES_PER_SCC_MAX >= 4);

/// Most steps of one cycle printed; longer ones show their first steps and last
/// [`CYCLE_TAIL_SHOWN`], keeping an explanation readable when a real-time chain is long.
const CYCLE_STEPS_SHOWN_MAX: usize = 32;
/// Steps printed from the end of an elided cycle.
const CYCLE_TAIL_SHOWN: usize = 8;
const _: () = assert!(CYCLE_TAIL_SHOWN < CYCLE_STEPS_SHOWN_MAX);

/// States per vertex in the search: rw count (0, 1, ≥2) × used wr × used rt.
const STATES_PER_VERTEX: usize = 12;

/// One step of a cycle: `from -rel-> to`, as graph vertices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Step {
    from: u32,
    to: u32,
    rel: u8,
}

/// Outcome of one bounded search.
enum Search {
    Found(Vec<Step>),
    NotFound,
    Exhausted,
}

/// Finds, classifies and reports cycles in every nontrivial SCC of `graph`.
pub(super) fn search(history: &[Txn], graph: &Graph, report: &mut Report) {
    search_within(history, graph, report, SEARCH_STEPS_MAX);
}

/// [`search`] with an explicit step budget, so tests can reach the fallback.
fn search_within(history: &[Txn], graph: &Graph, report: &mut Report, mut budget: u64) {
    let all: Vec<u32> = (0..graph.len() as u32).collect();
    let has_rt = report.edges.realtime > 0;
    for scc in graph.sccs(&all, WW | WR | RW | RT) {
        let mut skip: BTreeSet<&str> = BTreeSet::new();
        let mut found = 0;
        let mut exhausted = false;
        for spec in &SPECS {
            if found == CYCLES_PER_SCC_MAX || exhausted {
                break;
            }
            if skip.contains(spec.name) || (spec.need_rt && !has_rt) {
                continue;
            }
            for sub in graph.sccs(&scc, spec.mask) {
                match find(history, graph, &sub, spec, &mut budget) {
                    Search::Found(walk) => {
                        let cycle = pick(split(&walk), spec.name);
                        let name = classify(&cycle);
                        for (finder, implied) in IMPLIES {
                            if finder == name {
                                skip.extend(implied.iter().copied());
                            }
                        }
                        skip.insert(spec.name);
                        report_cycle(history, graph, &cycle, &name, None, report);
                        found += 1;
                        break;
                    }
                    Search::NotFound => {}
                    Search::Exhausted => {
                        exhausted = true;
                        break;
                    }
                }
            }
        }
        if exhausted {
            report.search_exhausted = true;
        }
        if found == 0 {
            assert!(exhausted, "every cycle has exactly one of the searched kinds, and this SCC has a cycle");
            let cycle = pick(split(&any_cycle(graph, &scc)), "");
            let name = classify(&cycle);
            let note = "the typed search ran out of budget; this is some cycle of the component, maybe not its worst";
            report_cycle(history, graph, &cycle, &name, Some(note), report);
        }
    }
}

/// Breadth-first search for a walk of kind `spec` inside `sub`, one start vertex at a time.
///
/// Besides the graph's edges, a real-time kind may close its walk with an implicit step
/// `v -rt-> start` whenever `v` completed before `start` was invoked: the graph keeps only a
/// transitive reduction of real time, and going the long way round its chain of frontier edges
/// would make the printed cycle needlessly long.
fn find(history: &[Txn], graph: &Graph, sub: &[u32], spec: &Spec, budget: &mut u64) -> Search {
    let local: HashMap<u32, u32> = sub.iter().enumerate().map(|(i, &v)| (v, i as u32)).collect();
    let starts = starts(history, graph, sub, &local, spec);
    let n = sub.len() * STATES_PER_VERTEX;
    // `seen[s] == epoch` marks state `s` visited in the current start's search.
    let mut seen = vec![0u32; n];
    let mut parent: Vec<(u32, u8)> = vec![(0, 0); n];
    let mut queue = VecDeque::new();
    let accepts = |rw: u8, wr: bool, rt: bool| {
        let rw_ok = match spec.rw {
            RwCount::Zero => rw == 0,
            RwCount::One => rw == 1,
            RwCount::TwoOrMore => rw == 2,
        };
        rw_ok && (wr || !spec.need_wr) && (rt || !spec.need_rt)
    };
    for (epoch, &start) in (1u32..).zip(&starts) {
        let s = local[&start];
        let init = state(s, 0, false, false);
        seen[init] = epoch;
        queue.clear();
        queue.push_back(init);
        while let Some(st) = queue.pop_front() {
            let (v, rw, wr, rt) = decode(st);
            let from = sub[v as usize];
            if spec.mask & RT != 0 && v != s && graph.precedes_in_real_time(history, from, start) {
                *budget = budget.saturating_sub(1);
                if accepts(rw, wr, true) {
                    return Search::Found(walk(&parent, sub, init, st, Step { from, to: start, rel: RT }));
                }
            }
            for &(w, rels) in graph.out(from) {
                let Some(&wl) = local.get(&w) else { continue };
                for rel in RELATIONS.into_iter().filter(|&r| rels & spec.mask & r != 0 && usable(r, rels)) {
                    if *budget == 0 {
                        return Search::Exhausted;
                    }
                    *budget -= 1;
                    let rw2 = (rw + u8::from(rel == RW)).min(2);
                    if spec.rw == RwCount::One && rw2 > 1 {
                        continue;
                    }
                    let (wr2, rt2) = (wr || rel == WR, rt || rel == RT);
                    if wl == s {
                        if accepts(rw2, wr2, rt2) {
                            return Search::Found(walk(&parent, sub, init, st, Step { from, to: w, rel }));
                        }
                        // Never pass through the start: the walk would just be two cycles.
                        continue;
                    }
                    let next = state(wl, rw2, wr2, rt2);
                    if seen[next] != epoch {
                        seen[next] = epoch;
                        parent[next] = (st as u32, rel);
                        queue.push_back(next);
                    }
                }
            }
        }
    }
    Search::NotFound
}

/// The walk from `init` to state `st` (following `parent`), closed by `last`.
fn walk(parent: &[(u32, u8)], sub: &[u32], init: usize, st: usize, last: Step) -> Vec<Step> {
    let mut steps = vec![last];
    let mut at = st;
    while at != init {
        let (prev, rel) = parent[at];
        let (pv, ..) = decode(prev as usize);
        let (av, ..) = decode(at);
        steps.push(Step { from: sub[pv as usize], to: sub[av as usize], rel });
        at = prev as usize;
    }
    steps.reverse();
    steps
}

/// Start vertices: sources of an in-component edge carrying the rarest relation the kind
/// requires (every qualifying cycle has such an edge), or every vertex if it requires none.
/// Those whose edge points furthest back in real time come first: in a correct database no
/// dependency runs from a transaction to one that completed before it began, so such an edge is
/// the likeliest culprit, and the shortest cycle through it the most telling.
fn starts(history: &[Txn], graph: &Graph, sub: &[u32], local: &HashMap<u32, u32>, spec: &Spec) -> Vec<u32> {
    let mut required = Vec::new();
    if spec.rw != RwCount::Zero {
        required.push(RW);
    }
    if spec.need_wr {
        required.push(WR);
    }
    if spec.need_rt {
        required.push(RT);
    }
    // (vertex, how far back in real time its furthest edge of relation `rel` points, in ns).
    let sources = |rel: u8| -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        for &v in sub {
            let invoke = history[graph.txn(v)].invoke_ns;
            let mut back = None;
            for &(w, rels) in graph.out(v) {
                if rels & rel != 0 && usable(rel, rels) && local.contains_key(&w) {
                    let done = graph.completed_ns(history, w).filter(|c| *c < invoke);
                    back = back.max(Some(done.map_or(0, |c| invoke - c)));
                }
            }
            if let Some(back) = back {
                out.push((v, back));
            }
        }
        out
    };
    let mut candidates = if required.is_empty() {
        sources(spec.mask)
    } else {
        required.into_iter().map(sources).min_by_key(Vec::len).expect("required is not empty")
    };
    candidates.sort_by_key(|&(v, back)| (std::cmp::Reverse(back), v));
    candidates.into_iter().map(|(v, _)| v).collect()
}

/// Whether a step may read an edge carrying `rels` as relation `rel`: data relations only as the
/// edge's strongest one (ww > wr > rw), real time always.
fn usable(rel: u8, rels: u8) -> bool {
    match rel {
        WR => rels & WW == 0,
        RW => rels & (WW | WR) == 0,
        _ => true,
    }
}

fn state(v: u32, rw: u8, wr: bool, rt: bool) -> usize {
    v as usize * STATES_PER_VERTEX + usize::from(rw) * 4 + usize::from(wr) * 2 + usize::from(rt)
}

fn decode(s: usize) -> (u32, u8, bool, bool) {
    let r = s % STATES_PER_VERTEX;
    ((s / STATES_PER_VERTEX) as u32, (r / 4) as u8, r & 2 != 0, r & 1 != 0)
}

/// Some shortest cycle through the SCC's first vertex, over any relation: the fallback when the
/// typed search ran out of budget. Linear in the component's size.
fn any_cycle(graph: &Graph, scc: &[u32]) -> Vec<Step> {
    let inside: BTreeSet<u32> = scc.iter().copied().collect();
    let start = scc[0];
    let mut parent: HashMap<u32, (u32, u8)> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &(w, rels) in graph.out(v) {
            if !inside.contains(&w) {
                continue;
            }
            let rel = RELATIONS.into_iter().find(|r| rels & r != 0).expect("an edge carries some relation");
            if w == start {
                let mut steps = vec![Step { from: v, to: w, rel }];
                let mut at = v;
                while at != start {
                    let (p, prel) = parent[&at];
                    steps.push(Step { from: p, to: at, rel: prel });
                    at = p;
                }
                steps.reverse();
                return steps;
            }
            if w != start && !parent.contains_key(&w) {
                parent.insert(w, (v, rel));
                queue.push_back(w);
            }
        }
    }
    unreachable!("a nontrivial strongly connected component has a cycle through each vertex")
}

/// Splits a closed walk into simple cycles.
fn split(walk: &[Step]) -> Vec<Vec<Step>> {
    let mut out = Vec::new();
    let mut stack: Vec<Step> = Vec::new();
    // Vertex → stack length when the walk stood on it.
    let mut at: HashMap<u32, usize> = HashMap::from([(walk[0].from, 0)]);
    for &step in walk {
        stack.push(step);
        if let Some(&i) = at.get(&step.to) {
            let cycle = stack.split_off(i);
            for s in &cycle[1..] {
                at.remove(&s.from);
            }
            out.push(cycle);
        } else {
            at.insert(step.to, stack.len());
        }
    }
    assert!(stack.is_empty(), "a closed walk splits into cycles with nothing left over");
    out
}

/// The simple cycle matching `name`, or else the first one.
fn pick(cycles: Vec<Vec<Step>>, name: &str) -> Vec<Step> {
    let i = cycles.iter().position(|c| classify(c) == name).unwrap_or(0);
    cycles.into_iter().nth(i).expect("a closed walk contains at least one cycle")
}

/// The kind of a cycle, from the relations its steps use.
fn classify(cycle: &[Step]) -> String {
    let rw = cycle.iter().filter(|s| s.rel == RW).count();
    let wr = cycle.iter().any(|s| s.rel == WR);
    let rt = cycle.iter().any(|s| s.rel == RT);
    let base = match (rw, wr) {
        (0, false) => kind::G0,
        (0, true) => kind::G1C,
        (1, _) => kind::G_SINGLE,
        _ => kind::G2,
    };
    if rt { format!("{base}{}", kind::REALTIME_SUFFIX) } else { base.to_string() }
}

fn rel_label(rel: u8, evidence: &Evidence) -> String {
    match evidence {
        Evidence::Ww { key, .. } | Evidence::Wr { key, .. } | Evidence::Rw { key, .. } => {
            let name = match rel {
                WW => "ww",
                WR => "wr",
                _ => "rw",
            };
            format!("{name}(k={key})")
        }
        Evidence::Rt { .. } => "rt".to_string(),
    }
}

fn why(a: usize, b: usize, evidence: &Evidence) -> String {
    match *evidence {
        Evidence::Ww { key, prev, value, inferred: false } => {
            format!("T{b} appended {value} to key {key} right after T{a}'s {prev}")
        }
        Evidence::Ww { key, prev, value, inferred: true } => format!(
            "T{b} appended {value} to key {key}; no read shows {value}, so it follows {prev}, the last element \
             any read showed, which T{a} appended"
        ),
        Evidence::Wr { key, value } => format!("T{b} read key {key} ending in {value}, which T{a} appended"),
        Evidence::Rw { key, prev, value, inferred } => {
            let read = prev.map_or("empty".to_string(), |p| format!("ending in {p}"));
            let next = if inferred {
                format!("no read shows {value}, so it follows every element any read showed")
            } else {
                format!("{value} came next")
            };
            format!("T{a} read key {key} {read}, missing T{b}'s append of {value}: {next}")
        }
        Evidence::Rt { complete_ns, invoke_ns } => {
            format!("T{a} completed at {complete_ns} ns, before T{b} was invoked at {invoke_ns} ns")
        }
    }
}

fn description(name: &str) -> &'static str {
    let base = name.strip_suffix(kind::REALTIME_SUFFIX).unwrap_or(name);
    let realtime = base.len() != name.len();
    match (base, realtime) {
        ("G0", false) => "a cycle of write-write dependencies (write cycle)",
        ("G1c", false) => "a cycle of ww and wr dependencies (circular information flow)",
        ("G-single", false) => "a cycle with exactly one anti-dependency (e.g. read skew, lost update)",
        ("G2", false) => "a cycle with two or more anti-dependencies (write skew / G2-item)",
        ("G0", true) => "a write cycle through real-time order: not strictly serializable",
        ("G1c", true) => "a ww/wr cycle through real-time order: not strictly serializable",
        ("G-single", true) => "one anti-dependency against real-time order (stale read): not strictly serializable",
        _ => "anti-dependencies against real-time order: not strictly serializable",
    }
}

fn report_cycle(history: &[Txn], graph: &Graph, cycle: &[Step], name: &str, note: Option<&str>, report: &mut Report) {
    let txns: Vec<usize> = cycle.iter().map(|s| graph.txn(s.from)).collect();
    // Long cycles (a giant component, a long real-time chain) show their head and tail only.
    let elided = cycle.len().saturating_sub(CYCLE_STEPS_SHOWN_MAX);
    let head = if elided > 0 { CYCLE_STEPS_SHOWN_MAX - CYCLE_TAIL_SHOWN } else { cycle.len() };
    let mut drawn = format!("T{}", txns[0]);
    let (mut because, mut listed) = (String::new(), String::new());
    for (i, s) in cycle.iter().enumerate() {
        if i == head && elided > 0 {
            drawn.push_str(&format!(" … {elided} more steps … T{}", graph.txn(s.from)));
            because.push_str(&format!("\n    … {elided} more steps"));
        }
        if i >= head && i < head + elided {
            continue;
        }
        let (a, b) = (graph.txn(s.from), graph.txn(s.to));
        let ev = graph.evidence(history, s.from, s.to, s.rel);
        let label = rel_label(s.rel, &ev);
        drawn.push_str(&format!(" -{label}-> T{b}"));
        because.push_str(&format!("\n    T{a} -{label}-> T{b}: {}", why(a, b, &ev)));
        listed.push_str(&format!("\n    {}", txn_line(history, a)));
    }
    let mut text = format!("{name}: {}\n  {drawn}\n  where{listed}\n  because{because}", description(name));
    if let Some(note) = note {
        text.push_str(&format!("\n  note: {note}"));
    }
    report.push(name, txns, text);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(from: u32, to: u32) -> Step {
        Step { from, to, rel: WW }
    }

    #[test]
    fn split_separates_a_figure_eight() {
        // 0 → 1 → 2 → 1 → 0: cycles 1→2→1 and 0→1→0.
        let walk = [step(0, 1), step(1, 2), step(2, 1), step(1, 0)];
        let cycles = split(&walk);
        assert_eq!(cycles, vec![vec![step(1, 2), step(2, 1)], vec![step(0, 1), step(1, 0)]]);
    }

    #[test]
    fn spec_names_are_the_exported_kind_names() {
        let bases = [kind::G0, kind::G1C, kind::G_SINGLE, kind::G2];
        for spec in &SPECS {
            let base = spec.name.strip_suffix(kind::REALTIME_SUFFIX).unwrap_or(spec.name);
            assert!(bases.contains(&base), "{} is not an exported kind", spec.name);
            assert_eq!(spec.need_rt, base != spec.name, "{}: only -realtime kinds need rt", spec.name);
        }
        for (finder, implied) in IMPLIES {
            assert!(SPECS.iter().any(|s| s.name == finder));
            assert!(implied.iter().all(|i| SPECS.iter().any(|s| s.name == *i)));
        }
    }

    #[test]
    fn an_exhausted_search_still_reports_a_classified_cycle_per_scc() {
        use super::super::direct::Index;
        use super::super::tests::catalog;
        use super::super::{CheckOptions, Report};
        for case in catalog() {
            let expected = super::super::check(&case.history, CheckOptions::default());
            let mut report = Report::new(case.history.len());
            if super::super::direct::malformed(&case.history, &mut report) {
                continue;
            }
            let index = Index::build(&case.history, &mut report);
            let graph = Graph::build(&case.history, &index, CheckOptions::default());
            report.edges = graph.edge_counts();
            search_within(&case.history, &graph, &mut report, 0);
            let is_cycle = |a: &&super::super::Anomaly| SPECS.iter().any(|s| s.name == a.kind);
            let cycles: Vec<_> = report.anomalies.iter().filter(is_cycle).collect();
            let expected_cycles = expected.anomalies.iter().filter(is_cycle).count();
            assert_eq!(report.search_exhausted, expected_cycles > 0, "{}", case.name);
            // One fallback cycle per SCC; these small histories have one SCC at most.
            assert_eq!(cycles.len(), usize::from(expected_cycles > 0), "{}", case.name);
            for c in cycles {
                assert!(c.explanation.contains("ran out of budget"), "{}", c.explanation);
            }
        }
    }

    #[test]
    fn state_encoding_round_trips() {
        for v in [0u32, 1, 77] {
            for rw in 0..3u8 {
                for wr in [false, true] {
                    for rt in [false, true] {
                        assert_eq!(decode(state(v, rw, wr, rt)), (v, rw, wr, rt));
                    }
                }
            }
        }
    }
}
