//! One core's world: the Raft driver loop, the wait table, apply, client connections and
//! forwarding to other shards.
//!
//! - [`config`]: the `corekv` flags.
//! - [`server`]: the node — data directory identity, one glommio executor per shard,
//!   signals and clean shutdown.
//! - [`node`]: a shard's routing of validated requests (own group, another shard over
//!   the [`mesh`], or every shard with a merge).
//! - [`group`]: one Raft group's replica and its driver loop (the path of a PUT).
//! - [`conn`]: client connections (handshake, decoding, pipelined answers).
//! - [`peer`]: the peer transport: shard g's Raft messages to and from shard g of the
//!   other nodes.
//! - [`members`]: the cluster's member table (changed through group 0's log).
//! - [`wait`], [`notify`], [`entry`]: the core-local wait table and request ids,
//!   wake-ups, and the Raft entry payload.

pub mod config;
pub mod conn;
pub mod entry;
pub mod group;
pub mod members;
pub mod mesh;
pub mod node;
pub mod notify;
pub mod peer;
pub mod server;
pub mod wait;
