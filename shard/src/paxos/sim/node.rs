//! A simulated node: the shell around one [`Replica`] — durable state in a [`MemEngine`], a
//! key-value register state machine, and the outbox executed in the order the real shell uses:
//! write, sync, send, apply.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use meridian_storage::{Cf, Engine, GroupId, LogStore, MemEngine, MetaTag, Slot, WriteBatch};
use meridian_truetime::TTInterval;
use serde::{Deserialize, Serialize};

use crate::paxos::{Command, Config, Durable, Event, NodeId, Options, Outbox, ProposeError, Replica, durable};

/// The group every simulated node replicates.
pub const GROUP: GroupId = GroupId(1);

/// A write to the register map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    /// Set `key` to `value`.
    Put {
        /// Register.
        key: u64,
        /// New value.
        value: u64,
    },
    /// Set `key` to `new` if it holds `expect`.
    Cas {
        /// Register.
        key: u64,
        /// Expected current value (`None`: unset).
        expect: Option<u64>,
        /// New value.
        new: u64,
    },
}

/// A client write as it travels through the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCmd {
    /// Unique per operation across the run.
    pub op_id: u64,
    /// The write.
    pub op: KvOp,
}

/// What a client gets back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The write was applied; `Cas` reports whether it swapped.
    Written {
        /// Operation.
        op_id: u64,
        /// For a CAS: whether it took effect.
        swapped: bool,
    },
    /// A lease read.
    Read {
        /// Operation.
        op_id: u64,
        /// The register's value.
        value: Option<u64>,
    },
    /// Not proposed: ask `hint`.
    NotLeader {
        /// Operation.
        op_id: u64,
        /// Whom to ask.
        hint: Option<NodeId>,
    },
    /// Proposed, but this node stopped leading before learning the outcome.
    Unknown {
        /// Operation.
        op_id: u64,
    },
}

/// A command as a person reads it: `put 1=10 #3` for a register write, else its own text.
pub fn describe(cmd: &Command) -> String {
    match cmd {
        Command::App(bytes) => match postcard::from_bytes::<KvCmd>(bytes) {
            Ok(KvCmd { op_id, op: KvOp::Put { key, value } }) => format!("put {key}={value} #{op_id}"),
            Ok(KvCmd { op_id, op: KvOp::Cas { key, expect, new } }) => {
                let e = expect.map_or("unset".to_string(), |v| v.to_string());
                format!("cas {key}:{e}→{new} #{op_id}")
            }
            Err(_) => cmd.to_string(),
        },
        other => other.to_string(),
    }
}

#[derive(Serialize, Deserialize)]
struct SmSnapshot {
    applied: Slot,
    config: Config,
    kv: BTreeMap<u64, u64>,
}

fn applied_key() -> Vec<u8> {
    let mut k = vec![MetaTag::Applied as u8];
    k.extend_from_slice(&GROUP.0.to_be_bytes());
    k
}

fn kv_key(key: u64) -> Vec<u8> {
    let mut k = b"kv/".to_vec();
    k.extend_from_slice(&key.to_be_bytes());
    k
}

/// A write batch produced by an outbox, waiting for its sync before messages go out.
pub struct Pending {
    /// The outbox whose writes are in flight.
    pub outbox: Outbox,
}

/// One simulated node.
pub struct SimNode {
    /// Identity.
    pub id: NodeId,
    /// Disk: survives crashes, minus unsynced writes.
    pub engine: Arc<MemEngine>,
    /// The replica; `None` while crashed.
    pub replica: Option<Replica>,
    opts: Options,
    seed: u64,
    restarts: u64,
    initial_config: Config,
    /// State machine (rebuilt from disk on restart).
    pub kv: BTreeMap<u64, u64>,
    /// Every slot up to this is applied to `kv`.
    pub sm_applied: Slot,
    sm_config: Config,
    /// Client writes this node proposed and has not answered: op id → whether a slot may hold it.
    waiting: BTreeMap<u64, ()>,
    /// Replies produced while executing outboxes, for the harness to deliver.
    pub replies: VecDeque<Reply>,
    /// Every (slot, command) this node applied since start, for the checkers.
    pub applied_log: Vec<(Slot, Command)>,
    /// Events seen, for scenario output.
    pub events: Vec<Event>,
}

impl SimNode {
    /// A fresh node in a group of `config`.
    pub fn new(id: NodeId, opts: Options, seed: u64, config: Config) -> Self {
        let replica = Replica::new(id, opts.clone(), seed, config.clone());
        SimNode {
            id,
            engine: Arc::new(MemEngine::new()),
            replica: Some(replica),
            opts,
            seed,
            restarts: 0,
            initial_config: config.clone(),
            kv: BTreeMap::new(),
            sm_applied: Slot(0),
            sm_config: config,
            waiting: BTreeMap::new(),
            replies: VecDeque::new(),
            applied_log: Vec::new(),
            events: Vec::new(),
        }
    }

    /// A node that joins without the group's data (as a node shell creates a new replica): its
    /// replica accepts nothing until the leader sends it a snapshot.
    pub fn blank(id: NodeId, opts: Options, seed: u64, config: Config) -> Self {
        let mut node = SimNode::new(id, opts.clone(), seed, config.clone());
        let durable = Durable { config, awaiting_snapshot: true, ..Default::default() };
        node.replica = Some(Replica::restart(id, opts, seed, durable));
        node
    }

    /// The replica, which must be up.
    ///
    /// # Panics
    /// If the node is crashed: the harness must not step a crashed node.
    pub fn replica(&mut self) -> &mut Replica {
        self.replica.as_mut().expect("harness invariant: a crashed node is never stepped")
    }

    /// Whether the node is running.
    pub fn is_up(&self) -> bool {
        self.replica.is_some()
    }

    /// Crashes the node: memory is lost and so are unsynced writes beyond the first
    /// `keep_unsynced` batches. Clients waiting on it get nothing (their ops stay unknown).
    pub fn crash(&mut self, keep_unsynced: usize) {
        self.replica = None;
        self.engine.crash(keep_unsynced);
        self.waiting.clear();
        self.kv.clear();
    }

    /// Restarts a crashed node from its disk.
    pub fn restart(&mut self) {
        assert!(self.replica.is_none(), "harness invariant: restart only a crashed node");
        self.restarts += 1;
        let logs = LogStore::new(self.engine.clone() as Arc<dyn Engine>);
        let (hard_state, log) = durable::load(GROUP, &logs).expect("simulated disk is never corrupt");
        // State machine: its applied slot, membership and registers, all from disk.
        let (applied, config, kv) = match self.engine.get(Cf::Meta, &applied_key()).expect("mem engine reads") {
            None => (Slot(0), self.initial_config.clone(), BTreeMap::new()),
            Some(raw) => {
                let snap: SmSnapshot = postcard::from_bytes(&raw).expect("state machine metadata decodes");
                (snap.applied, snap.config, snap.kv)
            }
        };
        self.kv = kv;
        self.sm_applied = applied;
        self.sm_config = config.clone();
        let seed = self.seed ^ self.restarts.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.replica = Some(Replica::restart(
            self.id,
            self.opts.clone(),
            seed,
            Durable { hard_state, log, applied, config, awaiting_snapshot: false },
        ));
    }

    /// A client write arrives.
    pub fn client_write(&mut self, cmd: KvCmd) {
        let op_id = cmd.op_id;
        let bytes = Bytes::from(postcard::to_allocvec(&cmd).expect("commands encode"));
        match self.replica().propose(Command::App(bytes)) {
            Ok(()) => {
                self.waiting.insert(op_id, ());
            }
            Err(ProposeError::NotLeader { hint }) => self.replies.push_back(Reply::NotLeader { op_id, hint }),
            Err(_) => self.replies.push_back(Reply::NotLeader { op_id, hint: None }),
        }
    }

    /// A client read arrives: served from the state machine under the leader's lease, or
    /// refused.
    pub fn client_read(&mut self, now: TTInterval, op_id: u64, key: u64) {
        let r = self.replica();
        if r.can_serve_lease_read(now) {
            let value = self.kv.get(&key).copied();
            self.replies.push_back(Reply::Read { op_id, value });
        } else {
            let hint = r.leader_hint().filter(|h| *h != self.id);
            self.replies.push_back(Reply::NotLeader { op_id, hint });
        }
    }

    /// Writes the outbox's durable changes (unsynced) and returns it for the release phase.
    pub fn write_phase(&mut self, outbox: Outbox) -> Pending {
        let mut batch = WriteBatch::new();
        if let Some(snap) = &outbox.snapshot {
            let s: SmSnapshot = postcard::from_bytes(&snap.data).expect("snapshots decode");
            assert_eq!(s.applied, snap.slot, "snapshot invariant: data is at the slot it claims");
            batch.delete_range(Cf::Data, b"kv/".to_vec(), b"kv0".to_vec());
            for (k, v) in &s.kv {
                batch.put(Cf::Data, kv_key(*k), v.to_be_bytes().to_vec());
            }
            batch.put(Cf::Meta, applied_key(), snap.data.to_vec());
            self.kv = s.kv;
            self.sm_applied = s.applied;
            self.sm_config = s.config;
        }
        durable::persist(GROUP, &outbox, &mut batch).expect("simulated writes are within limits");
        if !batch.is_empty() {
            self.engine.write(batch, false).expect("mem engine writes");
        }
        Pending { outbox }
    }

    /// Makes every write so far durable.
    pub fn sync(&mut self) {
        self.engine.sync().expect("mem engine syncs");
    }

    /// After the sync: applies chosen commands, answers clients, builds snapshots, records
    /// events. Returns the messages to send.
    pub fn release_phase(&mut self, now: TTInterval, pending: Pending) -> Vec<(NodeId, crate::paxos::Msg)> {
        let Pending { outbox } = pending;
        let mut batch = WriteBatch::new();
        for (slot, cmd) in &outbox.apply {
            assert_eq!(slot.0, self.sm_applied.0 + 1, "apply invariant: slots are applied in order without gaps");
            self.sm_applied = *slot;
            self.applied_log.push((*slot, cmd.clone()));
            match cmd {
                Command::App(bytes) => {
                    let c: KvCmd = postcard::from_bytes(bytes).expect("commands decode");
                    let swapped = match c.op {
                        KvOp::Put { key, value } => {
                            self.kv.insert(key, value);
                            batch.put(Cf::Data, kv_key(key), value.to_be_bytes().to_vec());
                            true
                        }
                        KvOp::Cas { key, expect, new } => {
                            if self.kv.get(&key).copied() == expect {
                                self.kv.insert(key, new);
                                batch.put(Cf::Data, kv_key(key), new.to_be_bytes().to_vec());
                                true
                            } else {
                                false
                            }
                        }
                    };
                    if self.waiting.remove(&c.op_id).is_some() {
                        self.replies.push_back(Reply::Written { op_id: c.op_id, swapped });
                    }
                }
                Command::Config(c) => self.sm_config = c.clone(),
                Command::Noop => {}
            }
        }
        if !outbox.apply.is_empty() {
            let meta = SmSnapshot { applied: self.sm_applied, config: self.sm_config.clone(), kv: self.kv.clone() };
            batch.put(Cf::Meta, applied_key(), postcard::to_allocvec(&meta).expect("encodes"));
            self.engine.write(batch, false).expect("mem engine writes");
        }
        for ev in &outbox.events {
            if let Event::SteppedDown { .. } = ev {
                // Proposals in flight may still be chosen by the next leader: unknown outcome.
                for op_id in std::mem::take(&mut self.waiting).into_keys() {
                    self.replies.push_back(Reply::Unknown { op_id });
                }
            }
        }
        self.events.extend(outbox.events.iter().cloned());
        for to in &outbox.build_snapshot_for {
            let snap = SmSnapshot { applied: self.sm_applied, config: self.sm_config.clone(), kv: self.kv.clone() };
            let data = Bytes::from(postcard::to_allocvec(&snap).expect("encodes"));
            let applied = self.sm_applied;
            self.replica().snapshot_ready(now, *to, applied, data);
        }
        outbox.messages
    }
}
