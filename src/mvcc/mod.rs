//! etcd v3's revisioned key-value model (the state machine Raft entries are applied to),
//! on any ordered [`backend::Backend`] — the B+tree in production, [`MemBackend`] in tests.
//!
//! # Model
//! Every write entry that changes something gets the next store revision (`main`); its
//! writes get sub revisions 0, 1, ... A key keeps etcd's `create_revision`,
//! `mod_revision`, `version` and `lease`; a delete writes a tombstone, and a put after it
//! starts a new generation (version 1, new create revision). A fresh store is at
//! revision 1, so the first write gets revision 2, as in etcd. Compaction at `c` removes
//! every revision `<= c` except each key's newest one if it is not a tombstone; reads
//! below `c` then fail with `Compacted(c)` at once, while the physical removal is done in
//! bounded slices ([`Store::compact_step`]) so that no apply stalls the shard.
//!
//! # Layout (details in [`keys`] and [`index`])
//! On disk, the backend's ordered trees: `rev` (revision → kind, metadata, key and value:
//! the whole history, appended to at its right edge), `meta` (applied index, revision,
//! compacted revision, key count) and the dedup session trees. In memory, the key index
//! (etcd's `treeIndex`): every key's revisions, rebuilt by `open` with one scan of the
//! rev tree. A put reads the key's state from the index and writes one rev-tree entry;
//! a read walks the index and fetches from the rev tree only the values it returns.
//! Opening costs one pass over the history kept (compaction bounds it, as in etcd).
//!
//! # Range rules (etcd's)
//! `range_end` empty = one key, `"\0"` = every key >= key, else `[key, range_end)`.
//! `revision <= 0` reads the current revision. `count` is the number of keys in the range
//! at that revision before `limit` and before the min/max revision filters (etcd's
//! quirk). `more` = more keys passed the filters than `limit`. A non-key sort target
//! sorts ascending by default; ties keep ascending key order. The header revision is the
//! store's current revision whatever revision was read.
//!
//! # Entry points for the server
//! - [`validate_write`] / [`validate_range`]: pure checks before proposing;
//! - [`Store::apply`] for each committed entry ([`Store::advance_applied`] for entries
//!   without a KV write), [`Store::commit`] per batch, or in two phases so that applies
//!   never wait for the disk: [`Store::begin_commit`] (seals; returns the job and the
//!   applied index it makes durable), the job run in another task,
//!   [`Store::finish_commit`];
//! - [`Store::compact_step`] while [`Store::compaction_pending`], from a low-priority
//!   task between apply batches;
//! - [`Store::range`] (latest applied state), [`range_on`] (a snapshot; builds its own
//!   index, so O(history): tests and tools);
//! - [`Store::changes_since`] (watch), [`Store::hash`] (convergence checks).

pub mod backend;
pub mod btree_backend;
pub mod index;
pub mod keys;
pub mod read;
mod slot_table;
pub mod store;
pub mod types;
pub mod validate;

#[cfg(test)]
mod tests;

pub use backend::{Backend, BackendJob, MemBackend, ReadView};
pub use read::{span, HashKv, Reader, Span};
pub use store::{range_on, ApplyError, ApplyOutcome, Store, StoreCommit, StoreConfig};
pub use types::*;
pub use validate::{
    validate_delete, validate_put, validate_range, validate_txn, validate_write, Limits,
    TXN_OPS_MAX,
};
