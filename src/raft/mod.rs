//! Raft consensus as a pure state machine: messages and ticks in, numbered Readies out.
//! No I/O, no clock, no global RNG; the driver does all of that.
//!
//! This module fixes the shared vocabulary — log entries, hard state, snapshot metadata
//! and the [`Storage`] trait (implemented by the WAL) — and builds on it [`RawNode`]:
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

pub mod config;
mod election;
pub mod error;
pub mod linearizability;
mod log;
mod membership;
pub mod message;
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
