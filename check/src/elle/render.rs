//! Printing histories: compact text for explanations, and export to the JSON history format that
//! elle-cli and adya read, so a suspicious history can be checked by an independent tool.
//!
//! The export is Jepsen's: one `invoke` op and one completion op (`ok`, `fail` or `info`) per
//! transaction, all sorted by time. At equal times invocations come first, so the exported
//! real-time order is exactly ours (an edge needs completion strictly before invocation).
//! Jepsen pairs an invocation with the next completion *on the same process*, so a process may
//! have one transaction open at a time; where ours overlap — typically a client that moved on
//! after an `Unknown` outcome — the later transaction is given a fresh process number above all
//! real ones, as Jepsen itself does after an indeterminate op. A transaction with no completion
//! time gets its completion at the end of the history.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{MicroOp, Outcome, Txn};

/// Most trailing elements of a list shown in explanations; the tail is what version orders and
/// anti-dependencies are about.
const LIST_SHOWN_MAX: usize = 8;

/// Most micro-ops of one transaction shown in explanations.
const OPS_SHOWN_MAX: usize = 16;

/// A list, eliding all but its last [`LIST_SHOWN_MAX`] elements.
pub(super) fn list(v: &[u64]) -> String {
    let shown = &v[v.len().saturating_sub(LIST_SHOWN_MAX)..];
    let body: Vec<String> = shown.iter().map(u64::to_string).collect();
    if shown.len() < v.len() {
        format!("[…{} more, {}]", v.len() - shown.len(), body.join(", "))
    } else {
        format!("[{}]", body.join(", "))
    }
}

/// One line describing transaction `i`: name, process, outcome, times and micro-ops.
pub(super) fn txn_line(history: &[Txn], i: usize) -> String {
    let t = &history[i];
    let outcome = match t.outcome {
        Outcome::Ok => "ok",
        Outcome::Fail => "fail",
        Outcome::Unknown => "unknown",
    };
    let times = match t.complete_ns {
        Some(c) => format!("{}..{} ns", t.invoke_ns, c),
        None => format!("{}.. ns, never completed", t.invoke_ns),
    };
    let mut ops: Vec<String> = t
        .ops
        .iter()
        .take(OPS_SHOWN_MAX)
        .map(|op| match op {
            MicroOp::Append { key, value } => format!("append({key}, {value})"),
            MicroOp::Read { key, value: Some(v) } => format!("read({key}) = {}", list(v)),
            MicroOp::Read { key, value: None } => format!("read({key}) = ?"),
        })
        .collect();
    if t.ops.len() > OPS_SHOWN_MAX {
        ops.push(format!("…{} more", t.ops.len() - OPS_SHOWN_MAX));
    }
    format!("T{i} (process {}, {outcome}, {times}): [{}]", t.process, ops.join(", "))
}

/// Micro-ops as Jepsen values: `["append", k, v]`, `["r", k, [..]]`, or `["r", k, null]` when the
/// read's value is not known (always, in an invocation).
fn mops(t: &Txn, with_reads: bool) -> Value {
    let ops: Vec<Value> = t
        .ops
        .iter()
        .map(|op| match op {
            MicroOp::Append { key, value } => json!(["append", key, value]),
            MicroOp::Read { key, value: Some(v) } if with_reads => json!(["r", key, v]),
            MicroOp::Read { key, .. } => json!(["r", key, null]),
        })
        .collect();
    Value::Array(ops)
}

/// elle-cli / Jepsen JSON export: a JSON array of op maps with `"type"` (`"invoke"`, `"ok"`,
/// `"fail"`, `"info"`), `"f": "txn"`, `"process"`, `"time"` (ns), `"index"` and `"value"` as
/// `[["append", k, v], ["r", k, [..] or null]]` — one invocation and one completion per
/// transaction, in real-time order. See the module docs for process renumbering.
pub fn to_elle_json(history: &[Txn]) -> Value {
    let end = history.iter().map(|t| t.complete_ns.unwrap_or(t.invoke_ns).max(t.invoke_ns)).max().unwrap_or(0);
    // (time, phase: 0 invoke, 1 completion, 2 completion placed at the end; txn).
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * history.len());
    for (i, t) in history.iter().enumerate() {
        events.push((t.invoke_ns, 0, i));
        match t.complete_ns {
            // A completion before its invocation is malformed; keep the pair in order anyway.
            Some(c) => events.push((c.max(t.invoke_ns), 1, i)),
            None => events.push((end, 2, i)),
        }
    }
    events.sort_unstable();
    let mut fresh = history.iter().map(|t| t.process).max().map_or(0, |p| p + 1);
    let mut open: BTreeMap<u64, usize> = BTreeMap::new();
    let mut process_of = vec![0u64; history.len()];
    let mut ops = Vec::with_capacity(events.len());
    for (index, (time, phase, i)) in events.into_iter().enumerate() {
        let t = &history[i];
        let value = if phase == 0 {
            let mut p = t.process;
            if open.contains_key(&p) {
                p = fresh;
                fresh += 1;
            }
            open.insert(p, i);
            process_of[i] = p;
            ("invoke", mops(t, false))
        } else {
            let p = process_of[i];
            assert_eq!(open.remove(&p), Some(i), "a completion closes the invocation its process has open");
            match t.outcome {
                Outcome::Ok => ("ok", mops(t, true)),
                Outcome::Fail => ("fail", mops(t, false)),
                Outcome::Unknown => ("info", mops(t, false)),
            }
        };
        ops.push(json!({
            "index": index,
            "type": value.0,
            "f": "txn",
            "process": process_of[i],
            "time": time,
            "value": value.1,
        }));
    }
    Value::Array(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_shows_the_tail_of_long_reads() {
        let long: Vec<u64> = (0..20).collect();
        assert_eq!(list(&long), "[…12 more, 12, 13, 14, 15, 16, 17, 18, 19]");
        assert_eq!(list(&[1, 2]), "[1, 2]");
        assert_eq!(list(&[]), "[]");
    }
}
