//! etcd's revisioned key-value model on the B+tree (to be written: issue 4).
//!
//! [`types`] fixes the request and response shapes first: they are the contents of
//! Raft entries and of client frames (src/proto embeds them).

pub mod backend;
pub mod btree_backend;
pub mod types;

pub use types::*;
