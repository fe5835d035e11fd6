//! The compaction policy of the WAL benchmarks (`src/bin/wal-bench.rs` and
//! `benches/wal_cpu.rs` include this file), so that both load the log alike.

use corekv::raft::types::{ConfState, SnapshotMeta, Storage};
use corekv::wal::{Disk, Wal};

/// Once the log retains more than this many entries, it is compacted...
const RETAINED_MAX: u64 = 100_000;
/// ...to this many entries behind its end.
const KEEP: u64 = 20_000;

/// Compacts `wal` to 20,000 entries behind its end once it retains more than
/// 100,000, as a state machine taking snapshots would, so that segments are recycled.
pub async fn compact_if_due<D: Disk>(wal: &Wal<D>) {
    let (first, last) = (wal.first_index().unwrap(), wal.last_index().unwrap());
    if last > first + RETAINED_MAX {
        let meta = SnapshotMeta {
            index: last - KEEP,
            term: 1,
            conf_state: ConfState::default(),
        };
        wal.compact(meta).await.unwrap();
    }
}
