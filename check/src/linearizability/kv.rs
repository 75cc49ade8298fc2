//! A map of registers, the sequential specification of Meridian's key-value interface as the
//! simulation drives it.
//!
//! Keys are independent objects, so [`KvModel`] partitions per key and each key is searched
//! alone with a state of at most one entry. The state is still a map so that the model stays
//! correct when a caller (or the checker's fallback) checks several keys together.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Model, Operation};

/// The state of [`KvModel`]: present keys and their values; a missing key reads as `None`.
pub type KvState = BTreeMap<u64, u64>;

/// A map of registers: `Put(key, value) -> ()`, `Get(key) -> Option<value>`, plus
/// `Cas { key, expect: Option<value>, new } -> bool`. Partitioned per key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KvModel;

/// A request to [`KvModel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvInput {
    /// Set `key` to `value`.
    Put {
        /// The register.
        key: u64,
        /// Its new value.
        value: u64,
    },
    /// Read `key`.
    Get {
        /// The register.
        key: u64,
    },
    /// Set `key` to `new` iff its value is `expect` (`None`: absent); say whether it did.
    Cas {
        /// The register.
        key: u64,
        /// The value required for the swap; `None` requires the key to be absent.
        expect: Option<u64>,
        /// The value written if the swap happens.
        new: u64,
    },
}

impl KvInput {
    /// The register the request touches.
    pub fn key(&self) -> u64 {
        match *self {
            KvInput::Put { key, .. } | KvInput::Get { key } | KvInput::Cas { key, .. } => key,
        }
    }
}

/// A response from [`KvModel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvOutput {
    /// The put happened.
    Put,
    /// The value read; `None` if the key was absent.
    Get(Option<u64>),
    /// Whether the swap happened.
    Cas(bool),
}

impl KvModel {
    /// The state after `input` and the output the spec returns, from `state`: the reference
    /// implementation, usable to generate expected histories.
    pub fn apply(state: &KvState, input: &KvInput) -> (KvState, KvOutput) {
        match *input {
            KvInput::Put { key, value } => {
                let mut next = state.clone();
                next.insert(key, value);
                (next, KvOutput::Put)
            }
            KvInput::Get { key } => (state.clone(), KvOutput::Get(state.get(&key).copied())),
            KvInput::Cas { key, expect, new } => {
                let swapped = state.get(&key).copied() == expect;
                let mut next = state.clone();
                if swapped {
                    next.insert(key, new);
                }
                (next, KvOutput::Cas(swapped))
            }
        }
    }
}

fn show(value: Option<u64>) -> String {
    value.map_or_else(|| "nil".to_string(), |v| v.to_string())
}

impl Model for KvModel {
    type State = KvState;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> KvState {
        KvState::new()
    }

    fn step(&self, state: &KvState, input: &KvInput, output: &KvOutput) -> Option<KvState> {
        let (next, expected) = KvModel::apply(state, input);
        (expected == *output).then_some(next)
    }

    fn step_unknown(&self, state: &KvState, input: &KvInput) -> Option<KvState> {
        Some(KvModel::apply(state, input).0)
    }

    fn is_read_only(&self, input: &KvInput, output: &KvOutput) -> bool {
        matches!((input, output), (KvInput::Get { .. }, _) | (KvInput::Cas { .. }, KvOutput::Cas(false)))
    }

    fn partition(&self, ops: &[Operation<KvInput, KvOutput>]) -> Vec<Vec<usize>> {
        let mut by_key: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            by_key.entry(op.input.key()).or_default().push(i);
        }
        by_key.into_values().collect()
    }

    fn describe(&self, input: &KvInput, output: Option<&KvOutput>) -> String {
        let request = match *input {
            KvInput::Put { key, value } => format!("put({key}, {value})"),
            KvInput::Get { key } => format!("get({key})"),
            KvInput::Cas { key, expect, new } => format!("cas({key}, {} => {new})", show(expect)),
        };
        let response = match output {
            None => "?".to_string(),
            Some(KvOutput::Put) => "ok".to_string(),
            Some(KvOutput::Get(value)) => show(*value),
            Some(KvOutput::Cas(swapped)) => swapped.to_string(),
        };
        format!("{request} -> {response}")
    }
}
