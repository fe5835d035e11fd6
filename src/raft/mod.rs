//! Raft consensus as a pure state machine: messages and ticks in, numbered Readies out.
//! No I/O, no clock, no global RNG; the driver does all of that.
//!
//! This module fixes the shared vocabulary — log entries (whose data is a [`Payload`]:
//! shared bytes, so the log, Ready, messages and the WAL's cache hold one copy), hard
//! state, snapshot metadata and the [`Storage`] trait (implemented by the WAL) — and
//! builds on it [`RawNode`]:
//! elections with pre-vote and check-quorum, replication with flow control, ReadIndex,
//! leader transfer, snapshots and single-server membership changes.
//!
//! # The driver loop
//!
//! ```
//! use corekv::raft::{Config, ConfState, MemStorage, RawNode};
//!
//! let conf = ConfState { voters: vec![1], ..Default::default() };
//! let mut node = RawNode::new(Config::new(1), MemStorage::new(conf)).unwrap();
//! node.campaign(); // a single voter elects itself at once
//! let mut applied = Vec::new();
//! for _round in 0..4 {
//!     // 1. Inputs: ticks from a timer, messages from peers (`node.step(m)`), proposals.
//!     node.tick();
//!     if node.status().role == corekv::raft::Role::Leader && applied.is_empty() {
//!         node.propose(vec![b"put x=1".to_vec()]).unwrap();
//!     }
//!     // 2. Outputs.
//!     while node.has_ready() {
//!         let rd = node.ready();
//!         // 2a. `rd.messages` may be sent now (the leader's appends go out while its
//!         //     own disk write runs).
//!         assert!(rd.messages.is_empty()); // single node: no peers
//!         // 2b. Persist snapshot, entries and hard state (group commit may merge
//!         //     several Readies), then report the highest durable Ready number.
//!         if let Some(s) = rd.snapshot.clone() { node.storage_mut().apply_snapshot(s); }
//!         node.storage_mut().append(&rd.entries);
//!         if let Some(hs) = rd.hard_state { node.storage_mut().set_hard_state(hs); }
//!         node.on_persisted(rd.number);
//!         // 2c. Only now may `rd.persisted_messages` leave (vote grants, acks).
//!         // 2d. Apply committed entries in order, then say how far.
//!         for e in &rd.committed_entries {
//!             if !e.data.is_empty() { applied.push(e.data.clone()); }
//!         }
//!         if let Some(e) = rd.committed_entries.last() { node.advance_apply(e.index); }
//!         // 2e. Serve `rd.read_states` once applied up to their index.
//!     }
//! }
//! assert_eq!(applied, vec![b"put x=1".to_vec()]);
//! ```

//!
//! # Contracts the driver keeps
//!
//! - **Durability.** `on_persisted(n)` only after every Ready `<= n` is durable
//!   (entries, hard state, snapshot). `persisted_messages` (vote requests and grants,
//!   append acknowledgements) leave only after that; the leader counts its own new
//!   entries toward commit only from then on (thesis §10.2.1).
//! - **Storage reads.** The core reads the log through [`Storage`] only; entries become
//!   readable there when the driver persists them. `TemporarilyUnavailable` from
//!   `entries()` means "not now": nothing is sent and the next heartbeat answer or
//!   acknowledgement retries.
//! - **Compaction.** The driver compacts its storage at or below the applied index
//!   whenever it has a snapshot of the state machine there; the core reads
//!   `first_index()` afresh each time, so no call is needed. A follower behind the
//!   first index gets a `MessageType::Snapshot` whose `snapshot.data` the driver fills
//!   with its latest snapshot, and reports the outcome with `report_snapshot`. A
//!   follower installs a received snapshot from `Ready::snapshot`, then calls
//!   `advance_apply(snapshot index)`.
//! - **Membership.** A node joining a running cluster starts from the cluster's
//!   bootstrap configuration (it learns later changes from the log) or with an empty
//!   log and receives a snapshot. `conf_state_at(applied)` gives the configuration to
//!   store in a snapshot.
//!
//! # Testing
//!
//! Paper tests, transcript tests (`src/raft/testdata/*.txt`), the deterministic
//! simulator [`sim`] with its linearizability checker [`linearizability`], and
//! test-only [`Bugs`](config) switches that the simulator must catch.

pub mod config;
mod election;
pub mod error;
pub mod linearizability;
mod log;
mod membership;
pub mod message;
pub mod payload;
pub mod progress;
#[allow(clippy::module_inception)]
mod raft;
pub mod raw_node;
mod read_index;
mod replication;
pub mod rng;
pub mod sim;
pub mod storage;
pub mod types;

#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "raft-bugs"))]
pub use config::Bugs;
pub use config::Config;
pub use error::{ProposeError, RaftError};
pub use message::{ConfChange, ConfChangeKind, Message, MessageType, ReadState, Snapshot};
pub use progress::ProgressState;
pub use raft::Role;
pub use raw_node::{ProgressStatus, RawNode, Ready, SoftState, Status};
pub use rng::Rng;
pub use storage::MemStorage;
pub use types::*;
