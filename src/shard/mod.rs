//! One core's world: the Raft driver loop, the wait table, apply, client and peer
//! connections, forwarding to other shards (being assembled: issue 5).

pub mod config;
pub mod wait;
