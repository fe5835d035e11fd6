//! corekv: a replicated, strongly consistent key-value store with etcd v3's data model,
//! built as an io_uring thread-per-core server. See README.md and docs/ for the design.

pub mod btree;
pub mod client;
pub mod mvcc;
pub mod proto;
pub mod raft;
pub mod shard;
pub mod wal;
