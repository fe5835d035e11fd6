//! One Raft group's replica on this shard: the Raft core, its WAL, its MVCC store, the
//! wait table, and the driver loop that moves entries between them.
//!
//! The path of a write (DESIGN.md, "The path of a PUT"):
//! 1. [`Group::write`] checks leadership, the apply gap and the quota, registers a fresh
//!    request id in the wait table and queues the encoded [`ShardEntry`]; the driver
//!    proposes everything queued in one batch per loop turn.
//! 2. The driver takes each numbered `Ready`: its `messages` leave at once, its entries
//!    and hard state are appended to the WAL, its `persisted_messages` wait for
//!    durability, its committed entries are applied to the store (each one triggers its
//!    wait-table slot), its read states release batched linearizable reads. A Ready
//!    carries at most `apply_batch_bytes` of committed entries, and the driver yields
//!    after each one that had some: answers leave in batches while the rest of a large
//!    commit is applied, so a closed-loop client works while the server does.
//! 3. The flusher task group-commits the WAL (one O_DIRECT write + one fdatasync for
//!    everything appended meanwhile) and reports the durable Ready number to Raft; only
//!    then does the leader's own log count toward the quorum.
//! 4. The B+tree is committed in batches (every `btree_commit_entries` entries or
//!    `btree_commit_interval`), in two phases so that the driver never waits for the
//!    disk: the driver seals the store's writes so far (`Store::begin_commit`, sync and
//!    cheap) and hands the job to the committer task, then goes on processing Readies
//!    and applying entries on top of the sealed version while the committer writes its
//!    pages and fdatasyncs. When the job is done the committer publishes the version
//!    (`finish_commit`), records the applied index inside it as `durable_applied`, runs
//!    a step of background compaction, and compacts the WAL behind that index. At most
//!    one commit is in flight; a commit failure is fatal for the group.
//!
//! Bounded memory: nothing else would bound the pages dirtied on top of a sealed
//! version while its commit runs (a slow or stalled disk), so the version being built
//! may dirty at most `dirty_bytes_max` bytes of pages. Applying checks before each
//! entry (a map length and a comparison); at the limit it stops, and the committed
//! entries handed out by Raft meanwhile wait in the WAL (only the range
//! `applied + 1 ..= deferred_to` is remembered; compaction never reaches them, it stays
//! behind the applied index). With no commit in flight one is due at once, which
//! empties the dirty set; with one in flight the driver waits for it (a "stall",
//! counted in [`Group::apply_stalls`] and logged with its duration). Either way it goes
//! on with everything else: Readies, WAL appends, heartbeats, elections, serializable
//! reads; the growing apply gap turns new writes into `TooManyRequests`, and
//! linearizable reads wait for their index to apply (or time out). When
//! the commit finishes the driver reads the waiting entries back from the WAL (its
//! cache, or disk through `fetch_pending`) and applies them in order, a batch per loop
//! turn. The version being built plus the one in flight thus hold at most about
//! `2 * dirty_bytes_max` (plus one entry's pages).
//!
//! In a cluster (see [`super::peer`] for the transport):
//! - A write reaching a follower is answered `NotLeader{leader}` (the client retries at
//!   the leader; a retry with the same session and seq is never applied twice).
//! - A linearizable read on a follower is a ReadIndex that Raft forwards to the leader;
//!   the read is served once this replica has applied up to the index the leader
//!   confirmed. Pending reads fail with `NotLeader` when the known leader changes (or
//!   this node loses leadership), and time out after `READ_TIMEOUT` (`Unavailable`).
//! - Each group has a preferred leader (group s: member s mod N); a leader hands
//!   leadership to it once it holds the whole log, which spreads leaders over the nodes
//!   after a start and after a node returns.
//! - Membership: group 0 applies member-change entries to the node's member table;
//!   every group's leader makes its Raft configuration follow that table, one conf
//!   change at a time (`reconcile_members`, with the leader-balancing check every
//!   second): missing members join as learners, a learner the table calls a voter is
//!   promoted once within `PROMOTE_LAG_MAX` entries, removed members are removed.
//! - A Ready carrying a snapshot (received from the leader) is installed before the rest
//!   of it is processed: the received B+tree file replaces the store, the WAL records the
//!   snapshot, and Raft is told it is applied; group 0 then adopts the member table the
//!   file carries (see [`super::members`]). Snapshot files are written, renamed and
//!   removed through glommio; the leader's copy (`write_snapshot`) yields between
//!   batches.
//!
//! Everything here runs on one executor: `RefCell`s are never borrowed across an
//! `.await`. The store stays in its cell while its commit is in flight (the job owns
//! what it writes), so reads never wait for a commit; it leaves the cell only while a
//! snapshot from the leader replaces it (readers wait for `store_idle`), which first
//! waits for the commit in flight to finish.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::timer::Timer;

use super::entry::{decode_payload, MemberChange, MemberEntry, Payload, ShardEntry};
use super::members::{MemberTable, SharedMembers, MEMBERS_KEY, MEMBERS_TREE};
use super::notify::{Broadcast, Notify};
use super::wait::{IdGenerator, WaitTable};
use crate::btree::{CommitJob, Db, Options as BtreeOptions};
use crate::mvcc::{
    self, ApplyError, ApplyOutcome, BackendJob, KvError, RangeRequest, Store, StoreCommit,
    WriteRequest, WriteResponse,
};
use crate::proto::{
    ErrorCode, GroupRevision, GroupStatus, HashKvResult, ProtoError, RaftRole, RangeResult,
    Response, ResponseBody, ResponseHeader,
};
use crate::raft::{
    self, ConfChange, ConfChangeKind, ConfState, Entry, EntryKind, HardState, Message,
    ProposeError, RawNode, Role, SnapshotMeta,
};
use crate::wal::{Wal, WalOptions};

/// Where a snapshot received completely from the leader waits for its install.
pub const RECEIVED_SNAPSHOT_FILE: &str = "snapshot-recv.btree";

/// Received snapshot files kept at once (two leaders may send one each around an
/// election).
const RECEIVED_SNAPSHOTS_MAX: usize = 4;

/// How long a linearizable read waits for its ReadIndex round (a follower's request to
/// the leader may be lost with a connection).
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Pairs a snapshot copy writes between two yields of its task queue.
const SNAPSHOT_BATCH_PAIRS: usize = 1024;

/// Bytes a snapshot copy writes between two commits of the copy.
const SNAPSHOT_COMMIT_BYTES: usize = 64 << 20;

/// A learner is promoted once its log is at most this many entries behind the leader.
const PROMOTE_LAG_MAX: u64 = 100;

/// How often a leader checks whether to hand leadership to the group's preferred node.
const BALANCE_EVERY: Duration = Duration::from_secs(1);

/// How long a stopping group waits for in-flight writes to apply.
const STOP_DRAIN_MAX: Duration = Duration::from_secs(5);

/// Most bytes of committed entries read back from the WAL and applied in one turn of
/// the driver after a stall (Raft hands out as much per Ready).
const DEFERRED_BATCH_BYTES: u64 = 4 << 20;

/// What a waiting request gets back.
pub type Reply = Result<Response, ProtoError>;

/// Tunables of one group's replica.
#[derive(Clone, Debug)]
pub struct GroupOptions {
    pub tick: Duration,
    pub election_ticks: u64,
    pub heartbeat_ticks: u64,
    /// Committed − applied beyond this refuses new writes with `TooManyRequests`.
    pub apply_gap_max: u64,
    /// Most requests waiting for their entry to apply.
    pub waits_max: usize,
    /// Space quota of this group's store file.
    pub quota_bytes: u64,
    /// Commit the B+tree after this many applied entries...
    pub btree_commit_entries: u64,
    /// ...or this long after the first uncommitted apply. (400 ms: measured against
    /// 100 ms and 1 s with 100k keys under puts at 256 in flight — a longer interval
    /// rewrites each hot leaf page fewer times: ~1.5x the throughput of 100 ms and half
    /// the server CPU per put; 1 s gained nothing more and doubled p99.9. The cost is a
    /// longer WAL replay after a crash.)
    pub btree_commit_interval: Duration,
    /// Most bytes of B+tree pages the version being built may dirty (see "Bounded
    /// memory" in the module docs): there the driver stops applying until a commit
    /// seals them (at once if none is in flight). 256 MiB: above what a default batch
    /// dirties (100k puts of 256-byte values at random keys: 59-78 MiB on a 100k-key
    /// store, 226-233 MiB on a 1M-key one, nearly every leaf), so it does not change
    /// the commit cadence of a healthy disk; the version being built and the one in
    /// flight then hold at most ~2x this per group.
    pub dirty_bytes_max: u64,
    /// Most bytes of committed entries applied in one turn of the driver (one Ready);
    /// the driver yields between turns, so the answers of the first entries of a large
    /// commit leave, and the next requests come in, while the rest are applied. Without
    /// it a closed-loop client and the server took turns: the server applied and
    /// answered a whole WAL batch while the client waited, then the client answered
    /// with a whole batch while the server waited. 16 KiB (~50 puts of 256-byte
    /// values): single node, put x256, 2 rounds each: 8 KiB 142-154k puts/s, 16 KiB
    /// 143-178k, 32 KiB 136-142k, 64 KiB 115-150k, unbounded (4 MiB) 99-105k.
    pub apply_batch_bytes: u64,
    /// Compact the WAL once this many entries are durable in the B+tree and in the log...
    pub wal_compact_entries: u64,
    /// ...keeping this many behind the applied index for slow followers.
    pub wal_keep_entries: u64,
    pub wal: WalOptions,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            tick: Duration::from_millis(10),
            election_ticks: 50,
            heartbeat_ticks: 10,
            apply_gap_max: 5000,
            waits_max: 64 * 1024,
            quota_bytes: 8 << 30,
            btree_commit_entries: 100_000,
            btree_commit_interval: Duration::from_millis(400),
            dirty_bytes_max: super::config::DEFAULT_DIRTY_BYTES_MAX,
            apply_batch_bytes: super::config::DEFAULT_APPLY_BATCH_BYTES,
            wal_compact_entries: 200_000,
            wal_keep_entries: 20_000,
            wal: WalOptions::default(),
        }
    }
}

/// Linearizable reads, batched: every read that arrives while no ReadIndex round is
/// being started joins the next round; one round serves them all.
#[derive(Default)]
struct Reads {
    /// Read ids not yet handed to Raft.
    new: Vec<u64>,
    /// ReadIndex context → the read ids of that round.
    inflight: HashMap<u64, Vec<u64>>,
    /// Read index → the read ids that may be served once it is applied.
    ready: BTreeMap<u64, Vec<u64>>,
    next_ctx: u64,
}

/// One replica of one Raft group, owned by one shard.
pub struct Group {
    pub index: u32,
    pub node_id: u64,
    opts: GroupOptions,
    raft: RefCell<RawNode<Wal>>,
    wal: Wal,
    /// `None` only while a received snapshot replaces it.
    store: RefCell<Option<Store<Db>>>,
    store_idle: Broadcast,
    /// The sealed store commit waiting for the committer task.
    commit_job: RefCell<Option<StoreCommit<CommitJob>>>,
    commit_wake: Notify,
    /// A store commit is sealed and not finished yet.
    committing: Cell<bool>,
    /// Notified whenever `committing` becomes false.
    commit_idle: Broadcast,
    waits: WaitTable<Reply>,
    read_waits: WaitTable<Result<(), ProtoError>>,
    reads: RefCell<Reads>,
    ids: RefCell<IdGenerator>,
    proposals: RefCell<Vec<(u64, Vec<u8>)>>,
    /// Messages that may leave only once their Ready is durable.
    held: RefCell<Vec<(u64, Vec<Message>)>>,
    outbox: RefCell<Vec<Message>>,
    /// Set whenever `outbox` gains messages (the peer transport's pump waits on it).
    outbox_wake: Notify,
    wake: Notify,
    flush_wake: Notify,
    role: Cell<Role>,
    leader: Cell<u64>,
    term: Cell<u64>,
    commit: Cell<u64>,
    applied: Cell<u64>,
    /// The newest hard state Raft handed out, and one whose only change was the commit
    /// index and that was therefore not written on its own (see `handle_readies`).
    last_hard_state: Cell<HardState>,
    lazy_hard_state: Cell<Option<HardState>>,
    /// WAL Ready numbers continue across restarts; Raft numbers its Readies from 1 in
    /// each run. WAL number = `ready_base` + Raft number.
    ready_base: u64,
    applied_since_commit: Cell<u64>,
    first_uncommitted_apply: Cell<Option<Instant>>,
    /// The last committed entry Raft handed out; `applied + 1 ..= deferred_to` wait in
    /// the WAL while the dirty pages are at `dirty_bytes_max` (see "Bounded memory").
    deferred_to: Cell<u64>,
    /// Since when applying waits for the commit in flight (a stall), if it does.
    stalled_since: Cell<Option<Instant>>,
    /// Stalls so far.
    apply_stalls: Cell<u64>,
    /// Test failpoint: the committer holds each job (before its I/O) while set.
    #[cfg(test)]
    hold_commits: Cell<bool>,
    #[cfg(test)]
    hold_released: Broadcast,
    stopping: Cell<bool>,
    fatal: RefCell<Option<String>>,
    failed: Broadcast,
    solo: bool,
    preferred_leader: Cell<u64>,
    /// The replica's directory (store file, received snapshots).
    dir: PathBuf,
    /// The applied index inside the last B+tree commit (what a snapshot of the store
    /// holds).
    durable_applied: Cell<u64>,
    /// Snapshot files received completely from leaders, not installed yet: (index,
    /// term, path); at most `RECEIVED_SNAPSHOTS_MAX`, the oldest dropped first.
    received_snapshots: RefCell<Vec<(u64, u64, PathBuf)>>,
    /// The node's member table (set in a cluster): group 0 applies member changes to
    /// it, every group's leader makes its configuration follow it.
    members: RefCell<Option<SharedMembers>>,
}

fn err(code: ErrorCode, message: impl Into<String>) -> ProtoError {
    ProtoError::new(code, message)
}

impl Group {
    /// Opens (or creates) the replica's WAL and store in `dir` and its Raft node.
    /// `voters` is the initial membership, used only when the log is brand new.
    pub async fn open(
        dir: &Path,
        index: u32,
        node_id: u64,
        voters: Vec<u64>,
        opts: GroupOptions,
    ) -> Result<Rc<Group>, String> {
        let wal_dir = dir.join("wal");
        let (wal, rec) = Wal::open(&wal_dir, opts.wal.clone()).await.map_err(|e| {
            format!(
                "group {index}: opening the WAL in {}: {e}",
                wal_dir.display()
            )
        })?;
        let fresh = rec.snapshot.index == 0
            && rec.entries.is_empty()
            && rec.snapshot.conf_state.voters.is_empty();
        if fresh {
            let meta = SnapshotMeta {
                index: 0,
                term: 0,
                conf_state: ConfState {
                    voters: voters.clone(),
                    ..ConfState::default()
                },
            };
            wal.compact(meta)
                .await
                .map_err(|e| format!("group {index}: writing the initial membership: {e}"))?;
        }
        let db_path = dir.join("store.btree");
        let db_opts = BtreeOptions {
            max_file_bytes: opts.quota_bytes.max(64 << 20),
            ..BtreeOptions::default()
        };
        let open_store = || async {
            // A predecessor killed a moment ago may still hold the file's lock while the
            // kernel tears down its io_uring: wait for it, a bounded time.
            let started = Instant::now();
            let db = loop {
                match Db::open(&db_path, db_opts.clone()).await {
                    Err(e)
                        if e.to_string().contains("is it open elsewhere")
                            && started.elapsed() < Duration::from_secs(10) =>
                    {
                        glommio::timer::sleep(Duration::from_millis(50)).await;
                    }
                    r => break r,
                }
            }
            .map_err(|e| format!("group {index}: opening {}: {e}", db_path.display()))?;
            Store::open(db).map_err(|e| format!("group {index}: opening the store: {e}"))
        };
        let mut store = open_store().await?;
        let received = dir.join(RECEIVED_SNAPSHOT_FILE);
        if store.applied_index() < rec.snapshot.index && received.exists() {
            // A crash during a snapshot install, after the WAL recorded the snapshot and
            // before the received store replaced ours: finish the install.
            drop(store);
            rename_durably(&received, &db_path, dir)
                .await
                .map_err(|e| format!("group {index}: finishing the install: {e}"))?;
            store = open_store().await?;
            if store.applied_index() != rec.snapshot.index {
                return Err(format!(
                    "group {index}: {} holds applied index {}, the WAL's snapshot is at {}",
                    received.display(),
                    store.applied_index(),
                    rec.snapshot.index
                ));
            }
            eprintln!(
                "corekv: group {index}: finished installing the snapshot at index {}",
                rec.snapshot.index
            );
        }
        let applied = store.applied_index();
        if applied < rec.snapshot.index {
            return Err(format!(
                "group {index}: the store has applied up to {applied} but the WAL starts after \
                 {}: the entries between are lost (a snapshot from a peer is needed)",
                rec.snapshot.index
            ));
        }
        // The commit index in the WAL's hard state may lag the store's applied index
        // (a hard state that only moves the commit index is written lazily, see
        // `hard_state_to_write`), but everything applied was committed: record that
        // before Raft starts, which requires applied <= commit.
        let mut hard_state = rec.hard_state;
        if applied > hard_state.commit {
            let last = rec.entries.last().map_or(rec.snapshot.index, |e| e.index);
            if applied > last {
                return Err(format!(
                    "group {index}: the store has applied up to {applied} but the WAL ends at                      {last}: acknowledged log entries are missing"
                ));
            }
            hard_state.commit = applied;
            wal.append(rec.last_ready, Some(hard_state), &[])
                .map_err(|e| format!("group {index}: recording the commit index: {e}"))?;
            wal.flush()
                .await
                .map_err(|e| format!("group {index}: recording the commit index: {e}"))?;
        }
        let mut cfg = raft::Config::new(node_id);
        cfg.election_ticks = opts.election_ticks;
        cfg.heartbeat_ticks = opts.heartbeat_ticks;
        cfg.applied = applied;
        cfg.max_committed_bytes_per_ready = opts.apply_batch_bytes;
        cfg.seed = node_id
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(u64::from(index))
            ^ now_us();
        let node = RawNode::new(cfg, wal.clone())
            .map_err(|e| format!("group {index}: starting Raft: {e}"))?;
        let solo = node.conf_state().voters == [node_id];
        Ok(Rc::new(Group {
            index,
            node_id,
            raft: RefCell::new(node),
            wal,
            store: RefCell::new(Some(store)),
            store_idle: Broadcast::default(),
            commit_job: RefCell::new(None),
            commit_wake: Notify::default(),
            committing: Cell::new(false),
            commit_idle: Broadcast::default(),
            waits: WaitTable::new(opts.waits_max),
            read_waits: WaitTable::new(opts.waits_max),
            reads: RefCell::new(Reads::default()),
            ids: RefCell::new(IdGenerator::new(
                (node_id << 10) | u64::from(index),
                now_us(),
            )),
            proposals: RefCell::new(Vec::new()),
            held: RefCell::new(Vec::new()),
            outbox: RefCell::new(Vec::new()),
            outbox_wake: Notify::default(),
            wake: Notify::default(),
            flush_wake: Notify::default(),
            role: Cell::new(Role::Follower),
            leader: Cell::new(0),
            term: Cell::new(hard_state.term),
            commit: Cell::new(hard_state.commit),
            applied: Cell::new(applied),
            ready_base: rec.last_ready,
            last_hard_state: Cell::new(hard_state),
            lazy_hard_state: Cell::new(None),
            applied_since_commit: Cell::new(0),
            first_uncommitted_apply: Cell::new(None),
            deferred_to: Cell::new(applied),
            stalled_since: Cell::new(None),
            apply_stalls: Cell::new(0),
            #[cfg(test)]
            hold_commits: Cell::new(false),
            #[cfg(test)]
            hold_released: Broadcast::default(),
            stopping: Cell::new(false),
            fatal: RefCell::new(None),
            failed: Broadcast::default(),
            solo,
            preferred_leader: Cell::new(0),
            dir: dir.to_path_buf(),
            durable_applied: Cell::new(applied),
            received_snapshots: RefCell::new(Vec::new()),
            members: RefCell::new(None),
            opts,
        }))
    }

    /// Asks the driver loop to finish: it stops taking writes, flushes and commits.
    pub fn stop(&self) {
        self.stopping.set(true);
        self.wake.notify();
    }

    /// Resolves once the group has failed (a storage error): the node must stop.
    pub async fn failed(&self) {
        while self.fatal.borrow().is_none() {
            self.failed.listen().await;
        }
    }

    pub fn is_leader(&self) -> bool {
        self.role.get() == Role::Leader
    }

    fn not_leader(&self) -> ProtoError {
        err(
            ErrorCode::NotLeader {
                leader: self.leader.get(),
            },
            format!(
                "group {} is not led by this node (leader: {})",
                self.index,
                self.leader.get()
            ),
        )
    }

    fn check_serving(&self) -> Result<(), ProtoError> {
        if let Some(f) = &*self.fatal.borrow() {
            return Err(err(
                ErrorCode::Unavailable,
                format!("group {} stopped: {f}", self.index),
            ));
        }
        if self.stopping.get() {
            return Err(err(ErrorCode::Unavailable, "the server is shutting down"));
        }
        Ok(())
    }

    fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            group: self.index,
            revision,
            raft_term: self.term.get(),
            node_id: self.node_id,
        }
    }

    /// Runs `f` on the store, waiting while a received snapshot replaces it.
    async fn with_store<R>(&self, f: impl FnOnce(&Store<Db>) -> R) -> R {
        loop {
            if let Some(s) = self.store.borrow().as_ref() {
                return f(s);
            }
            self.store_idle.listen().await;
        }
    }

    /// Proposes one write and waits for it to be applied.
    pub async fn write(&self, session: u64, seq: u64, write: WriteRequest) -> Reply {
        self.check_serving()?;
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let gap = self.commit.get().saturating_sub(self.applied.get());
        if gap > self.opts.apply_gap_max {
            return Err(err(
                ErrorCode::TooManyRequests,
                format!(
                    "group {}: {gap} committed entries wait to be applied",
                    self.index
                ),
            ));
        }
        if !matches!(
            write,
            WriteRequest::DeleteRange(_) | WriteRequest::Compact(_)
        ) {
            let size = self.with_store(|s| s.backend().size_bytes()).await;
            if size >= self.opts.quota_bytes {
                return Err(err(
                    ErrorCode::NoSpace,
                    format!(
                        "group {}: store is {size} bytes, quota {}: only deletes and compaction \
                         are accepted",
                        self.index, self.opts.quota_bytes
                    ),
                ));
            }
        }
        let id = self.ids.borrow_mut().next_id();
        let Some(waiter) = self.waits.register(id) else {
            return Err(err(
                ErrorCode::TooManyRequests,
                format!(
                    "group {}: {} writes in flight",
                    self.index,
                    self.waits.len()
                ),
            ));
        };
        let entry = ShardEntry {
            request_id: id,
            session,
            seq,
            write,
        };
        self.proposals.borrow_mut().push((id, entry.encode()));
        self.wake.notify();
        waiter.await.unwrap_or_else(|| {
            Err(err(
                ErrorCode::Unavailable,
                format!(
                    "group {}: leadership changed before the write was applied; its outcome is \
                     unknown (retry with the same session and seq to find out)",
                    self.index
                ),
            ))
        })
    }

    /// This replica's hash of its key-values at `revision` (0 = current), from its own
    /// store: no ReadIndex, so that every node's replica can be compared.
    pub async fn hash(&self, revision: i64) -> Reply {
        self.check_serving()?;
        let h = self
            .with_store(|s| s.hash(revision))
            .await
            .map_err(ProtoError::from)?;
        Ok(Response {
            header: self.header(h.revision),
            body: ResponseBody::HashKv(HashKvResult {
                hash: h.hash,
                revision: h.revision,
                compact_revision: h.compact_revision,
            }),
        })
    }

    /// Serves a range: linearizable (a batched ReadIndex round) unless `serializable`.
    pub async fn range(&self, req: &RangeRequest) -> Reply {
        self.check_serving()?;
        mvcc::validate_range(req, &mvcc::Limits::default()).map_err(ProtoError::from)?;
        if !req.serializable {
            // A follower's ReadIndex is forwarded by Raft to the leader; it needs one.
            if !self.is_leader() && self.leader.get() == 0 {
                return Err(self.not_leader());
            }
            let id = self.ids.borrow_mut().next_id();
            let Some(waiter) = self.read_waits.register(id) else {
                return Err(err(ErrorCode::TooManyRequests, "too many reads in flight"));
            };
            self.reads.borrow_mut().new.push(id);
            self.wake.notify();
            let timed_out = async {
                Timer::new(READ_TIMEOUT).await;
                None
            };
            match futures_lite::future::or(async { Some(waiter.await) }, timed_out).await {
                Some(Some(r)) => r?,
                Some(None) => return Err(self.not_leader()),
                None => {
                    self.read_waits.cancel(id);
                    return Err(err(
                        ErrorCode::Unavailable,
                        format!(
                            "group {}: the leader did not confirm the read within {READ_TIMEOUT:?}",
                            self.index
                        ),
                    ));
                }
            }
        }
        let (rev, resp) = self
            .with_store(|s| s.range(req))
            .await
            .map_err(ProtoError::from)?;
        Ok(Response {
            header: self.header(rev),
            body: ResponseBody::Range(RangeResult {
                range: resp,
                groups: vec![GroupRevision {
                    group: self.index,
                    revision: rev,
                }],
            }),
        })
    }

    /// This replica's state for `Status`.
    pub async fn status(&self) -> GroupStatus {
        let st = self.raft.borrow().status();
        let (revision, compact_revision, db_size_bytes) = self
            .with_store(|s| {
                (
                    s.revision(),
                    s.compacted_revision(),
                    s.backend().size_bytes(),
                )
            })
            .await;
        GroupStatus {
            group: self.index,
            role: match st.role {
                Role::Leader => RaftRole::Leader,
                Role::Candidate => RaftRole::Candidate,
                Role::PreCandidate => RaftRole::PreCandidate,
                Role::Follower if st.conf.learners.contains(&self.node_id) => RaftRole::Learner,
                Role::Follower => RaftRole::Follower,
            },
            leader: st.leader,
            term: st.term,
            revision,
            compact_revision,
            committed_index: st.commit,
            applied_index: st.applied,
            db_size_bytes,
            wal_size_bytes: self.wal.size_bytes(),
        }
    }

    pub fn leader(&self) -> u64 {
        self.leader.get()
    }

    /// Messages Raft wants sent (the peer transport drains this; a single node has none).
    pub fn take_outbox(&self) -> Vec<Message> {
        std::mem::take(&mut *self.outbox.borrow_mut())
    }

    /// Resolves once `take_outbox` has something (or something arrived since the last
    /// call): for the one task that sends this group's messages.
    pub async fn outbox_ready(&self) {
        self.outbox_wake.wait().await
    }

    /// Hands a message from a peer to Raft and wakes the driver. A message Raft refuses
    /// (e.g. from a node it does not know) is logged and dropped.
    pub fn step(&self, m: Message) {
        let (kind, from) = (m.kind, m.from);
        if let Err(e) = self.raft.borrow_mut().step(m) {
            eprintln!(
                "corekv: group {}: dropped a {kind:?} from node {from}: {e}",
                self.index
            );
        }
        self.wake.notify();
    }

    /// Wakes the driver (after a batch of [`Group::step`]s).
    pub fn wake(&self) {
        self.wake.notify();
    }

    /// The connection to `to` was lost: stop pipelining to it until it answers.
    pub fn report_unreachable(&self, to: u64) {
        self.raft.borrow_mut().report_unreachable(to);
        self.wake.notify();
    }

    /// A snapshot for `to` was delivered (`ok`) or could not be.
    pub fn report_snapshot(&self, to: u64, ok: bool) {
        self.raft.borrow_mut().report_snapshot(to, ok);
        self.wake.notify();
    }

    /// Sets the node that should lead this group when it is healthy (0: none); the
    /// leader hands leadership to it once it has caught up, which spreads the groups'
    /// leaders over the nodes.
    pub fn set_preferred_leader(&self, node: u64) {
        self.preferred_leader.set(node);
    }

    /// Leader only: transfers leadership to the preferred node once it holds the whole
    /// log (checked every `BALANCE_EVERY`).
    fn balance_leadership(&self) {
        let want = self.preferred_leader.get();
        if want == 0 || want == self.node_id || !self.is_leader() {
            return;
        }
        if let Some(m) = self.members.borrow().as_ref() {
            let t = m.snapshot();
            if t.is_removed(want) || !t.members.iter().any(|m| m.node_id == want && !m.learner) {
                return;
            }
        }
        let mut raft = self.raft.borrow_mut();
        let st = raft.status();
        if st.lead_transferee != 0 || !st.conf.voters.contains(&want) {
            return;
        }
        let caught_up = st
            .progress
            .get(&want)
            .is_some_and(|p| p.match_index == st.last_index);
        if caught_up {
            eprintln!(
                "corekv: group {}: handing leadership to its preferred node {want}",
                self.index
            );
            raft.transfer_leader(want);
        }
    }

    fn fail(&self, what: String) -> String {
        eprintln!("corekv: group {}: {what}", self.index);
        *self.fatal.borrow_mut() = Some(what.clone());
        self.failed.notify();
        self.waits.cancel_all();
        self.read_waits.cancel_all();
        what
    }

    /// The driver loop: ticks, proposals, reads, Readies, B+tree commits. Returns when
    /// stopped (after a final flush and commit) or on a storage failure.
    pub async fn run(self: Rc<Self>) -> Result<(), String> {
        let flusher = {
            let g = self.clone();
            glommio::spawn_local(async move { g.flush_loop().await })
        };
        let committer = {
            let g = self.clone();
            glommio::spawn_local(async move { g.commit_loop().await })
        };
        // Spare WAL segments are prepared (zero-filled or recycled) in a low-priority
        // queue, so a group commit never waits for a new segment.
        let background = glommio::executor().create_task_queue(
            glommio::Shares::Static(50),
            glommio::Latency::NotImportant,
            &format!("group-{}-background", self.index),
        );
        let spare = {
            let g = self.clone();
            glommio::spawn_local_into(
                async move {
                    let e = g.wal.run_background().await;
                    g.fail(format!("preparing WAL segments: {e}"));
                    g.wake.notify();
                },
                background,
            )
            .map_err(|e| format!("starting the WAL's background task: {e}"))?
        };
        if self.solo {
            self.raft.borrow_mut().campaign();
        }
        let mut next_tick = Instant::now() + self.opts.tick;
        let mut next_balance = Instant::now() + BALANCE_EVERY;
        let mut stop_since = None;
        let result = loop {
            if let Some(f) = self.fatal.borrow().clone() {
                break Err(f);
            }
            if self.stopping.get() {
                let since = *stop_since.get_or_insert_with(Instant::now);
                let drained = self.waits.is_empty() && self.proposals.borrow().is_empty();
                if drained || since.elapsed() >= STOP_DRAIN_MAX {
                    break Ok(());
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                self.raft.borrow_mut().tick();
                next_tick = now + self.opts.tick;
            }
            if now >= next_balance {
                self.reconcile_members();
                self.balance_leadership();
                next_balance = now + BALANCE_EVERY;
            }
            self.propose_queued();
            self.start_reads();
            match self.handle_readies() {
                Err(e) => break Err(self.fail(e)),
                Ok(None) => {}
                Ok(Some(rd)) => {
                    let installed = self.install_snapshot(&rd).await;
                    if let Err(e) = installed.and_then(|_| self.process_ready(rd)) {
                        break Err(self.fail(e));
                    }
                    continue;
                }
            }
            // Before applying what waits: sealing empties the dirty set it waits on.
            if !self.committing.get() && self.btree_commit_due() {
                if let Err(e) = self.begin_store_commit() {
                    break Err(self.fail(e));
                }
            }
            let more = match self.apply_deferred() {
                Ok(more) => more,
                Err(e) => break Err(self.fail(e)),
            };
            // Entries a follower needs (or the deferred applies) that fell out of the
            // WAL's cache: load them, so the next attempt finds them.
            if let Err(e) = self.wal.fetch_pending().await {
                break Err(self.fail(format!("reading the WAL: {e}")));
            }
            if more || self.raft.borrow().has_ready() {
                futures_lite::future::yield_now().await;
                continue;
            }
            let timeout = next_tick.saturating_duration_since(Instant::now());
            futures_lite::future::or(self.wake.wait(), async {
                Timer::new(timeout).await;
            })
            .await;
        };
        // Final flush (with the newest commit index) and commit, so a restart replays
        // little.
        if let Some(hs) = self.lazy_hard_state.take() {
            let n = self.wal.last_ready();
            if let Err(e) = self.wal.append(n, Some(hs), &[]) {
                eprintln!(
                    "corekv: group {}: writing the final hard state: {e}",
                    self.index
                );
            }
        }
        self.flush_wake.notify();
        let flushed = self.wal.flush().await.map_err(|e| e.to_string());
        let committed = if result.is_ok() && flushed.is_ok() {
            self.final_commit().await
        } else {
            Ok(())
        };
        self.waits.cancel_all();
        self.read_waits.cancel_all();
        drop(committer);
        drop(flusher);
        drop(spare);
        result.and(flushed.map(|_| ())).and(committed)
    }

    fn propose_queued(&self) {
        let queued = std::mem::take(&mut *self.proposals.borrow_mut());
        if queued.is_empty() {
            return;
        }
        let (ids, batch): (Vec<u64>, Vec<Vec<u8>>) = queued.into_iter().unzip();
        let result = self.raft.borrow_mut().propose(batch);
        if let Err(e) = result {
            let perr = self.propose_error(e);
            for id in ids {
                self.waits.trigger(id, Err(perr.clone()));
            }
        }
    }

    /// The client's view of a proposal or ReadIndex that Raft refused.
    fn propose_error(&self, e: ProposeError) -> ProtoError {
        match e {
            ProposeError::NotLeader { leader } => err(
                ErrorCode::NotLeader { leader },
                format!("group {} is not led by this node", self.index),
            ),
            ProposeError::TooManyUncommitted { .. } => err(
                ErrorCode::TooManyRequests,
                format!("group {}: {e}", self.index),
            ),
            other => err(
                ErrorCode::Unavailable,
                format!("group {}: {other}", self.index),
            ),
        }
    }

    fn start_reads(&self) {
        let mut reads = self.reads.borrow_mut();
        if reads.new.is_empty() {
            return;
        }
        let ctx = reads.next_ctx;
        reads.next_ctx += 1;
        let batch = std::mem::take(&mut reads.new);
        match self
            .raft
            .borrow_mut()
            .read_index(ctx.to_le_bytes().to_vec())
        {
            Ok(()) => {
                reads.inflight.insert(ctx, batch);
            }
            Err(e) => {
                let perr = self.propose_error(e);
                for id in batch {
                    self.read_waits.trigger(id, Err(perr.clone()));
                }
            }
        }
    }

    /// Handles every Ready Raft has, except one carrying a snapshot: that one is
    /// returned for the caller to install (which needs `.await`) and then hand to
    /// [`Group::process_ready`].
    fn handle_readies(&self) -> Result<Option<raft::Ready>, String> {
        loop {
            let rd = {
                let mut raft = self.raft.borrow_mut();
                if !raft.has_ready() {
                    return Ok(None);
                }
                raft.ready()
            };
            if rd.snapshot.is_some() {
                return Ok(Some(rd));
            }
            // Raft had committed entries to hand out but could not read them (evicted
            // from the WAL's cache; the WAL noted the range): go and fetch them
            // instead of asking again and again.
            let empty = ready_is_empty(&rd);
            let applied_some = !rd.committed_entries.is_empty();
            self.process_ready(rd)?;
            // After a batch of applied entries, back to the loop, which yields: the
            // answers of this batch leave (and new requests come in and are proposed)
            // while the next batch waits its turn.
            if empty || applied_some {
                return Ok(None);
            }
        }
    }

    fn process_ready(&self, rd: raft::Ready) -> Result<(), String> {
        {
            if let Some(ss) = rd.soft_state {
                let was_leader = self.is_leader();
                let old_leader = self.leader.get();
                self.role.set(ss.role);
                self.leader.set(ss.leader);
                if was_leader && ss.role != Role::Leader {
                    self.lost_leadership();
                } else if old_leader != ss.leader {
                    // A follower's forwarded reads died with the old leader's term.
                    self.fail_reads();
                }
            }
            if let Some(hs) = rd.hard_state {
                self.term.set(hs.term);
                self.commit.set(self.commit.get().max(hs.commit));
            }
            if !rd.messages.is_empty() {
                self.outbox.borrow_mut().extend(rd.messages);
                self.outbox_wake.notify();
            }
            let hard_state = self.hard_state_to_write(rd.hard_state, !rd.entries.is_empty());
            self.wal
                .append(self.ready_base + rd.number, hard_state, &rd.entries)
                .map_err(|e| format!("WAL append: {e}"))?;
            if !rd.persisted_messages.is_empty() {
                self.held
                    .borrow_mut()
                    .push((rd.number, rd.persisted_messages));
            }
            self.flush_wake.notify();
            if let Some(last) = rd.committed_entries.last() {
                self.commit.set(self.commit.get().max(last.index));
            }
            self.apply_committed(&rd.committed_entries)?;
            {
                let mut reads = self.reads.borrow_mut();
                for rs in rd.read_states {
                    let Ok(ctx) = <[u8; 8]>::try_from(rs.ctx.as_slice()) else {
                        continue;
                    };
                    if let Some(ids) = reads.inflight.remove(&u64::from_le_bytes(ctx)) {
                        reads.ready.entry(rs.index).or_default().extend(ids);
                    }
                }
            }
            self.serve_reads();
        }
        Ok(())
    }

    /// Installs the snapshot of `rd` (a follower behind the leader's compacted log): the
    /// received store file replaces ours (rename, fsync of the directory, reopen), the
    /// WAL records the snapshot and drops its entries, and Raft learns that everything
    /// up to the snapshot index is applied.
    ///
    /// Crash safety: the WAL records the snapshot first; a crash before the rename
    /// leaves the received file in place and [`Group::open`] finishes the install.
    async fn install_snapshot(&self, rd: &raft::Ready) -> Result<(), String> {
        let snap = rd.snapshot.as_ref().expect("called with a snapshot");
        let meta = snap.meta.clone();
        let (path, older) = {
            let mut rs = self.received_snapshots.borrow_mut();
            let Some(at) = rs
                .iter()
                .position(|(i, t, _)| *i == meta.index && *t == meta.term)
            else {
                // The transport steps a Snapshot message only when its file is here.
                return Err(format!(
                    "Raft installs snapshot ({}, {}) but no such file was received",
                    meta.index, meta.term
                ));
            };
            let (_, _, path) = rs.remove(at);
            // Older ones are useless now.
            let older: Vec<PathBuf> = rs
                .extract_if(.., |(i, _, _)| *i <= meta.index)
                .map(|(_, _, p)| p)
                .collect();
            (path, older)
        };
        for p in older {
            let _ = glommio::io::remove(p).await;
        }
        // Under the name `Group::open` looks for, before the WAL records the snapshot.
        let received = self.dir.join(RECEIVED_SNAPSHOT_FILE);
        rename_durably(&path, &received, &self.dir).await?;
        let path = received;
        // The commit in flight finishes with the store it belongs to (and no new one
        // starts: the driver is here).
        self.wait_commit_idle().await;
        let old = loop {
            if let Some(s) = self.store.borrow_mut().take() {
                break s;
            }
            self.store_idle.listen().await;
        };
        drop(old);
        self.wal
            .compact(meta.clone())
            .await
            .map_err(|e| format!("recording snapshot {} in the WAL: {e}", meta.index))?;
        let db_path = self.dir.join("store.btree");
        let swapped = rename_durably(&path, &db_path, &self.dir).await;
        let reopened = match swapped {
            Err(e) => Err(format!("installing snapshot {}: {e}", meta.index)),
            Ok(()) => match Db::open(
                &db_path,
                BtreeOptions {
                    max_file_bytes: self.opts.quota_bytes.max(64 << 20),
                    ..BtreeOptions::default()
                },
            )
            .await
            {
                Err(e) => Err(format!("reopening {}: {e}", db_path.display())),
                Ok(db) => Store::open(db).map_err(|e| format!("opening the store: {e}")),
            },
        };
        let store = reopened?;
        let applied = store.applied_index();
        if applied != meta.index {
            return Err(format!(
                "snapshot file of index {} holds applied index {applied}",
                meta.index
            ));
        }
        // Group 0's snapshot carries the member table of the changes it compacted away.
        let carried = self.carried_members(&store)?;
        *self.store.borrow_mut() = Some(store);
        self.store_idle.notify();
        self.durable_applied.set(applied);
        self.applied_since_commit.set(0);
        self.first_uncommitted_apply.set(None);
        self.applied.set(self.applied.get().max(applied));
        self.deferred_to.set(self.deferred_to.get().max(applied));
        self.commit.set(self.commit.get().max(applied));
        self.raft.borrow_mut().advance_apply(applied);
        eprintln!(
            "corekv: group {}: installed a snapshot from the leader at index {} (term {})",
            self.index, meta.index, meta.term
        );
        let members = self.members.borrow().clone();
        if let (Some(table), Some(members)) = (carried, members) {
            let applied = table.applied;
            if members.adopt(table).await? {
                eprintln!(
                    "corekv: group {}: took the member table of the snapshot (member changes \
                     up to index {applied})",
                    self.index
                );
            }
        }
        Ok(())
    }

    /// The member table a snapshot of group 0 carries in `store` (see
    /// [`super::members`]); `None` for other groups or a file without one.
    fn carried_members(&self, store: &Store<Db>) -> Result<Option<MemberTable>, String> {
        if self.index != 0 {
            return Ok(None);
        }
        let what = format!(
            "the member table in {}",
            self.dir.join("store.btree").display()
        );
        match store.backend().get(MEMBERS_TREE, MEMBERS_KEY) {
            Err(e) => Err(format!("reading {what}: {e}")),
            Ok(None) => Ok(None),
            Ok(Some(bytes)) => {
                let text = String::from_utf8(bytes).map_err(|_| format!("{what}: not UTF-8"))?;
                MemberTable::decode(&text, &what).map(Some)
            }
        }
    }

    /// Leader: writes a consistent copy of the store as of its last commit to `path` (a
    /// fresh B+tree holding every tree of that committed version; group 0's also holds
    /// this node's member table, see [`super::members`]) and returns the snapshot's
    /// metadata (the commit's applied index, its term and configuration).
    ///
    /// The copy goes in batches of `SNAPSHOT_BATCH_PAIRS` pairs; after each the task
    /// yields its task queue (the shard's clients and its Raft driver run between
    /// batches), and every `SNAPSHOT_COMMIT_BYTES` the copy is committed, so its dirty
    /// pages never hold the whole store in memory.
    pub async fn write_snapshot(&self, path: &Path) -> Result<SnapshotMeta, String> {
        let (snap, trees, index) = self
            .with_store(|s| {
                let db = s.backend();
                (db.snapshot(), db.tree_names(), self.durable_applied.get())
            })
            .await;
        let meta = {
            let raft = self.raft.borrow();
            match (raft.term_of(index), raft.conf_state_at(index)) {
                (Some(term), Some(conf_state)) => SnapshotMeta {
                    index,
                    term,
                    conf_state,
                },
                _ => return Err(format!("no term or configuration known at index {index}")),
            }
        };
        // A leftover of an earlier attempt (absent is the usual case).
        let _ = glommio::io::remove(path).await;
        let mut out = Db::open(
            path,
            BtreeOptions {
                max_file_bytes: self.opts.quota_bytes.max(64 << 20),
                ..BtreeOptions::default()
            },
        )
        .await
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
        let mut uncommitted_bytes = 0usize;
        for t in trees.iter().filter(|t| *t != MEMBERS_TREE) {
            // Resume each batch just after the last key copied.
            let mut from: Vec<u8> = Vec::new();
            loop {
                let mut copied = 0usize;
                let mut last: Option<Vec<u8>> = None;
                let mut failed = None;
                snap.scan(t, &from, None, false, &mut |k, v| {
                    if let Err(e) = out.put(t, k, v) {
                        failed = Some(e.to_string());
                        return false;
                    }
                    copied += 1;
                    uncommitted_bytes += k.len() + v.len();
                    if copied == SNAPSHOT_BATCH_PAIRS {
                        last = Some(k.to_vec());
                        return false;
                    }
                    true
                })
                .map_err(|e| format!("reading tree {t} of the store: {e}"))?;
                if let Some(e) = failed {
                    return Err(format!("writing tree {t} to {}: {e}", path.display()));
                }
                if uncommitted_bytes >= SNAPSHOT_COMMIT_BYTES {
                    out.commit()
                        .await
                        .map_err(|e| format!("committing {}: {e}", path.display()))?;
                    uncommitted_bytes = 0;
                }
                glommio::executor().yield_task_queue_now().await;
                match last {
                    Some(mut k) => {
                        k.push(0);
                        from = k;
                    }
                    None => break,
                }
            }
        }
        if self.index == 0 {
            if let Some(m) = self.members.borrow().as_ref() {
                out.put(MEMBERS_TREE, MEMBERS_KEY, m.snapshot().encode().as_bytes())
                    .map_err(|e| format!("writing the member table to {}: {e}", path.display()))?;
            }
        }
        out.commit()
            .await
            .map_err(|e| format!("committing {}: {e}", path.display()))?;
        out.close()
            .await
            .map_err(|e| format!("closing {}: {e}", path.display()))?;
        Ok(meta)
    }

    /// The replica's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records a snapshot file received completely (the Raft `Snapshot` message that
    /// follows it may then be stepped).
    pub async fn set_received_snapshot(&self, index: u64, term: u64, path: PathBuf) {
        let dropped = {
            let mut rs = self.received_snapshots.borrow_mut();
            rs.retain(|(_, _, p)| *p != path);
            let dropped = (rs.len() >= RECEIVED_SNAPSHOTS_MAX).then(|| rs.remove(0).2);
            rs.push((index, term, path));
            dropped
        };
        if let Some(old) = dropped {
            let _ = glommio::io::remove(old).await;
        }
    }

    /// Whether the received snapshot file is the one of (`index`, `term`).
    pub fn has_received_snapshot(&self, index: u64, term: u64) -> bool {
        self.received_snapshots
            .borrow()
            .iter()
            .any(|(i, t, _)| *i == index && *t == term)
    }

    /// A hard state that differs from the last one only in its commit index is not worth
    /// an fdatasync of its own: it rides along with the next append. Losing it in a crash
    /// only makes the restarted node learn its commit index again, which Raft allows (the
    /// commit index is volatile state in the paper's Figure 2). Term and vote changes are
    /// always written before the Ready counts as durable.
    fn hard_state_to_write(&self, hs: Option<HardState>, has_entries: bool) -> Option<HardState> {
        let written = match hs {
            Some(hs) => {
                let last = self.last_hard_state.replace(hs);
                if hs.term == last.term && hs.vote == last.vote && !has_entries {
                    self.lazy_hard_state.set(Some(hs));
                    return None;
                }
                Some(hs)
            }
            None if has_entries => self.lazy_hard_state.get(),
            None => return None,
        };
        self.lazy_hard_state.set(None);
        written
    }

    fn lost_leadership(&self) {
        self.fail_reads();
        // Writes already proposed may still commit under the next leader: their
        // outcome is unknown, which `write` reports.
        self.waits.cancel_all();
    }

    /// Fails every pending linearizable read with `NotLeader` (the client retries).
    fn fail_reads(&self) {
        let reads = std::mem::take(&mut *self.reads.borrow_mut());
        let next_ctx = reads.next_ctx;
        self.reads.borrow_mut().next_ctx = next_ctx;
        let ids: Vec<u64> = reads
            .inflight
            .into_values()
            .flatten()
            .chain(reads.ready.into_values().flatten())
            .chain(reads.new)
            .collect();
        for id in ids {
            self.read_waits.trigger(id, Err(self.not_leader()));
        }
    }

    fn serve_reads(&self) {
        let applied = self.applied.get();
        let mut reads = self.reads.borrow_mut();
        let later = reads.ready.split_off(&(applied + 1));
        let now = std::mem::replace(&mut reads.ready, later);
        drop(reads);
        for id in now.into_values().flatten() {
            self.read_waits.trigger(id, Ok(()));
        }
    }

    /// Applies the committed entries of a Ready, or leaves them waiting in the WAL
    /// behind those already waiting there (see "Bounded memory" in the module docs).
    fn apply_committed(&self, entries: &[Entry]) -> Result<(), String> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let waiting = self.deferred_to.get() > self.applied.get();
        self.deferred_to.set(self.deferred_to.get().max(last.index));
        if waiting {
            return Ok(());
        }
        self.apply(entries)
    }

    /// Applies a batch of the committed entries waiting in the WAL, unless the dirty
    /// pages are still at the limit. Returns whether the driver should come back at
    /// once: more entries wait and applying may go on (after the commit that is due
    /// now, if none is in flight), or the WAL is loading them from disk.
    fn apply_deferred(&self) -> Result<bool, String> {
        use crate::raft::{Storage, StorageError};
        let (lo, hi) = (self.applied.get() + 1, self.deferred_to.get());
        if lo > hi {
            return Ok(false);
        }
        if self.dirty_at_limit() {
            return Ok(!self.committing.get());
        }
        let entries = match self.wal.entries(lo, hi + 1, DEFERRED_BATCH_BYTES) {
            Ok(entries) => entries,
            Err(StorageError::TemporarilyUnavailable) => return Ok(true),
            Err(e) => {
                return Err(format!(
                    "reading committed entries {lo}..={hi} back from the WAL: {e}"
                ))
            }
        };
        assert_eq!(
            entries.first().map(|e| e.index),
            Some(lo),
            "group {}: the WAL returned other entries than {lo}..={hi}",
            self.index
        );
        if let Some(since) = self.stalled_since.take() {
            eprintln!(
                "corekv: group {}: applying resumed after a stall of {:?} ({} committed \
                 entries waited)",
                self.index,
                since.elapsed(),
                hi + 1 - lo
            );
        }
        self.apply(&entries)?;
        Ok(self.deferred_to.get() > self.applied.get()
            && !(self.committing.get() && self.dirty_at_limit()))
    }

    /// Whether the version being built has dirtied `dirty_bytes_max` (applying stops).
    fn dirty_at_limit(&self) -> bool {
        self.store
            .borrow()
            .as_ref()
            .is_some_and(|s| s.backend().dirty_bytes() >= self.opts.dirty_bytes_max)
    }

    /// Applying stopped at the dirty limit (before entry `next`). With a commit in
    /// flight that is a stall: counted and logged; without one a commit is due at once.
    fn note_apply_limit(&self, next: u64, dirty: u64) {
        if !self.committing.get() || self.stalled_since.get().is_some() {
            return;
        }
        self.stalled_since.set(Some(Instant::now()));
        self.apply_stalls.set(self.apply_stalls.get() + 1);
        eprintln!(
            "corekv: group {}: applying stalls at entry {next}: the next version has {} KiB of \
             dirty pages (limit {} KiB) while the previous one is being committed; committed \
             entries wait in the WAL",
            self.index,
            dirty >> 10,
            self.opts.dirty_bytes_max >> 10
        );
    }

    /// How many times applying has waited for a commit in flight because the next
    /// version reached `dirty_bytes_max` (see "Bounded memory").
    pub fn apply_stalls(&self) -> u64 {
        self.apply_stalls.get()
    }

    /// Applies `entries` in order, stopping early at the dirty limit (the rest stays in
    /// the WAL, `deferred_to` covers it).
    fn apply(&self, entries: &[Entry]) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut slot = self.store.borrow_mut();
        let store = slot
            .as_mut()
            .expect("the driver applies only while it holds the store");
        let mut last = None;
        // Decode the whole batch first and let the store look its keys up in one go:
        // those lookups are cache misses that, back to back, overlap one another; each
        // apply then finds its key's state in the CPU cache.
        let decoded: Vec<_> = entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::Normal if !e.data.is_empty() => Some(decode_payload(&e.data)),
                _ => None,
            })
            .collect();
        store.prefetch(decoded.iter().filter_map(|d| match d {
            Some(Ok(Payload::Write(se))) => Some(&se.write),
            _ => None,
        }));
        for (e, decoded) in entries.iter().zip(decoded) {
            let dirty = store.backend().dirty_bytes();
            if dirty >= self.opts.dirty_bytes_max {
                self.note_apply_limit(e.index, dirty);
                break;
            }
            last = Some(e.index);
            match decoded {
                Some(Ok(Payload::Member(me))) => {
                    let reply = self.apply_member(e.index, &me)?;
                    advance(store, e.index)?;
                    if let Some(r) = reply {
                        self.waits.trigger(me.request_id, r);
                    }
                }
                Some(Ok(Payload::Write(se))) => {
                    let outcome = store.apply(e.index, &se.write, se.dedup());
                    match outcome {
                        Ok(o) => {
                            let reply = self.write_reply(o);
                            self.waits.trigger(se.request_id, reply);
                        }
                        Err(ApplyError::AlreadyApplied { .. }) => {}
                        Err(ApplyError::Storage(m)) => {
                            return Err(format!("applying entry {}: {m}", e.index))
                        }
                    }
                }
                Some(Err(m)) => {
                    eprintln!(
                        "corekv: group {}: entry {}: {m}; skipped",
                        self.index, e.index
                    );
                    advance(store, e.index)?;
                }
                None => advance(store, e.index)?,
            }
        }
        let Some(last) = last else {
            return Ok(());
        };
        let count = last + 1 - entries[0].index;
        self.applied.set(self.applied.get().max(last));
        self.applied_since_commit
            .set(self.applied_since_commit.get() + count);
        if self.first_uncommitted_apply.get().is_none() {
            self.first_uncommitted_apply.set(Some(Instant::now()));
        }
        drop(slot);
        self.raft.borrow_mut().advance_apply(last);
        Ok(())
    }

    /// Applies a member change of group 0's entry `index` to the member table. `None`:
    /// a replay of a change the table already has.
    fn apply_member(&self, index: u64, me: &MemberEntry) -> Result<Option<Reply>, String> {
        let Some(members) = self.members.borrow().clone() else {
            return Ok(Some(Err(err(
                ErrorCode::InvalidArgument,
                "this node runs alone: no members to change",
            ))));
        };
        let applied = members
            .apply(index, &me.change)
            .map_err(|e| format!("applying member change {index}: {e}"))?;
        Ok(applied.map(|outcome| {
            eprintln!(
                "corekv: group {}: member change at {index}: {:?}: {:?}",
                self.index,
                me.change,
                outcome.as_ref().map(|_| "applied")
            );
            outcome
                .map(|list| Response {
                    header: self.header(0),
                    body: ResponseBody::Members(list),
                })
                .map_err(|m| err(ErrorCode::InvalidArgument, m))
        }))
    }

    /// Gives the group the node's member table (in a cluster). Group 0 first adopts the
    /// table its store carries when that is newer: a snapshot installed just before a
    /// crash, whose table was not persisted yet. Call before the driver runs (a failure
    /// to read or persist that table fails the group).
    pub fn set_members(&self, m: SharedMembers) {
        let carried = match self.store.borrow().as_ref() {
            Some(store) => self.carried_members(store),
            None => Ok(None),
        };
        let adopted = carried.and_then(|c| match c {
            Some(table) => {
                let applied = table.applied;
                m.adopt_now(table).map(|a| a.then_some(applied))
            }
            None => Ok(None),
        });
        match adopted {
            Ok(Some(applied)) => eprintln!(
                "corekv: group {}: took the member table of the installed snapshot (member \
                 changes up to index {applied})",
                self.index
            ),
            Ok(None) => {}
            Err(e) => {
                self.fail(format!("adopting the snapshot's member table: {e}"));
            }
        }
        *self.members.borrow_mut() = Some(m);
    }

    /// Proposes a member change (group 0's leader) and waits for it to apply.
    pub async fn propose_member(&self, change: MemberChange) -> Reply {
        self.check_serving()?;
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let id = self.ids.borrow_mut().next_id();
        let Some(waiter) = self.waits.register(id) else {
            return Err(err(ErrorCode::TooManyRequests, "too many writes in flight"));
        };
        let entry = MemberEntry {
            request_id: id,
            change,
        };
        self.proposals.borrow_mut().push((id, entry.encode()));
        self.wake.notify();
        waiter.await.unwrap_or_else(|| {
            Err(err(
                ErrorCode::Unavailable,
                "leadership changed before the member change applied; its outcome is unknown \
                 (list the members to find out)",
            ))
        })
    }

    /// Leader only: makes the group's Raft configuration follow the member table, one
    /// change at a time: add missing members as learners, promote a member the table
    /// calls a voter once its log is within `PROMOTE_LAG_MAX` of ours, remove members
    /// the table no longer has (handing leadership away first when it is this node).
    fn reconcile_members(&self) {
        let Some(members) = self.members.borrow().clone() else {
            return;
        };
        if !self.is_leader() {
            return;
        }
        let table = members.snapshot();
        let mut raft = self.raft.borrow_mut();
        let st = raft.status();
        let conf = &st.conf;
        let in_conf = |id: u64| conf.voters.contains(&id) || conf.learners.contains(&id);
        let change = if let Some(m) = table.members.iter().find(|m| !in_conf(m.node_id)) {
            Some(ConfChange {
                kind: ConfChangeKind::AddLearner,
                node: m.node_id,
            })
        } else if let Some(m) = table.members.iter().find(|m| {
            !m.learner
                && conf.learners.contains(&m.node_id)
                && st
                    .progress
                    .get(&m.node_id)
                    .is_some_and(|p| p.match_index + PROMOTE_LAG_MAX >= st.last_index)
        }) {
            Some(ConfChange {
                kind: ConfChangeKind::AddVoter,
                node: m.node_id,
            })
        } else {
            conf.voters
                .iter()
                .chain(&conf.learners)
                .find(|id| table.is_removed(**id))
                .map(|&id| ConfChange {
                    kind: ConfChangeKind::RemoveNode,
                    node: id,
                })
        };
        let Some(cc) = change else {
            return;
        };
        if cc.kind == ConfChangeKind::RemoveNode && cc.node == self.node_id {
            if let Some(&to) = conf.voters.iter().find(|&&v| v != self.node_id) {
                raft.transfer_leader(to);
            }
            return;
        }
        match raft.propose_conf_change(cc) {
            Ok(_) => eprintln!("corekv: group {}: proposed {cc}", self.index),
            Err(ProposeError::ConfChangePending) => {}
            Err(e) => eprintln!("corekv: group {}: conf change {cc}: {e}", self.index),
        }
    }

    fn write_reply(&self, o: ApplyOutcome) -> Reply {
        let body = match o.response.map_err(ProtoError::from)? {
            WriteResponse::Put(p) => ResponseBody::Put(p),
            WriteResponse::DeleteRange(d) => ResponseBody::DeleteRange(d),
            WriteResponse::Txn(t) => ResponseBody::Txn(t),
            WriteResponse::Compact(_) => ResponseBody::Compact,
        };
        Ok(Response {
            header: self.header(o.revision),
            body,
        })
    }

    fn btree_commit_due(&self) -> bool {
        let n = self.applied_since_commit.get();
        n >= self.opts.btree_commit_entries
            || self.dirty_at_limit()
            || (n > 0
                && self
                    .first_uncommitted_apply
                    .get()
                    .is_some_and(|t| t.elapsed() >= self.opts.btree_commit_interval))
    }

    /// Seals the store's writes so far as a B+tree commit and hands its job to the
    /// committer task (nothing to do if nothing changed). Sync: the driver goes on.
    fn begin_store_commit(&self) -> Result<(), String> {
        assert!(!self.committing.get(), "one store commit at a time");
        let sealed = {
            let mut slot = self.store.borrow_mut();
            let Some(store) = slot.as_mut() else {
                return Ok(());
            };
            store
                .begin_commit()
                .map_err(|e| format!("committing the store: {e}"))?
        };
        self.applied_since_commit.set(0);
        self.first_uncommitted_apply.set(None);
        if let Some(c) = sealed {
            self.committing.set(true);
            *self.commit_job.borrow_mut() = Some(c);
            self.commit_wake.notify();
        }
        Ok(())
    }

    /// The committer: runs each sealed commit's I/O while the driver goes on, then
    /// finishes it (see [`Group::finish_store_commit`]). A failure is fatal.
    async fn commit_loop(self: Rc<Self>) {
        loop {
            let Some(c) = self.commit_job.borrow_mut().take() else {
                self.commit_wake.wait().await;
                continue;
            };
            #[cfg(test)]
            while self.hold_commits.get() {
                self.hold_released.listen().await;
            }
            let done = c.job.run().await;
            let r = self.finish_store_commit(done).await;
            self.committing.set(false);
            self.commit_idle.notify();
            self.wake.notify();
            if let Err(e) = r {
                self.fail(e);
                return;
            }
        }
    }

    /// Publishes a finished B+tree commit (the applied index inside it becomes
    /// `durable_applied`, what a snapshot of the store holds), runs a step of
    /// background compaction, and compacts the WAL behind the durable applied index.
    async fn finish_store_commit(
        &self,
        done: <CommitJob as BackendJob>::Done,
    ) -> Result<(), String> {
        let (durable_applied, more) = {
            let mut slot = self.store.borrow_mut();
            let store = slot
                .as_mut()
                .expect("the store stays in place while its commit is in flight");
            let applied = store
                .finish_commit(done)
                .map_err(|e| format!("committing the store: {e}"))?;
            self.durable_applied.set(applied);
            (applied, store.compact_step(1000).unwrap_or(false))
        };
        if more && self.applied_since_commit.get() == 0 {
            // More to compact: commit again soon, even without new applies.
            self.applied_since_commit.set(1);
            self.first_uncommitted_apply.set(Some(Instant::now()));
        }
        self.compact_wal(durable_applied).await
    }

    async fn wait_commit_idle(&self) {
        while self.committing.get() {
            self.commit_idle.listen().await;
        }
    }

    /// At stop: waits for the commit in flight, then commits everything applied since.
    async fn final_commit(&self) -> Result<(), String> {
        self.wait_commit_idle().await;
        if let Some(f) = self.fatal.borrow().clone() {
            return Err(f);
        }
        self.begin_store_commit()?;
        self.wait_commit_idle().await;
        match self.fatal.borrow().clone() {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    async fn compact_wal(&self, durable_applied: u64) -> Result<(), String> {
        use crate::raft::Storage;
        let first = self.wal.first_index().map_err(|e| e.to_string())?;
        if durable_applied < first + self.opts.wal_compact_entries + self.opts.wal_keep_entries {
            return Ok(());
        }
        let upto = durable_applied - self.opts.wal_keep_entries;
        let meta = {
            let raft = self.raft.borrow();
            let (Some(term), Some(conf_state)) = (raft.term_of(upto), raft.conf_state_at(upto))
            else {
                return Ok(());
            };
            SnapshotMeta {
                index: upto,
                term,
                conf_state,
            }
        };
        self.wal
            .compact(meta)
            .await
            .map_err(|e| format!("compacting the WAL to {upto}: {e}"))
    }

    /// Group-commits the WAL whenever something was appended, and reports durability.
    async fn flush_loop(self: Rc<Self>) {
        loop {
            let last = self.wal.last_ready();
            if last <= self.wal.durable_ready() {
                if self.fatal.borrow().is_some() {
                    return;
                }
                self.flush_wake.wait().await;
                continue;
            }
            if let Err(e) = self.wal.wait_durable(last).await {
                self.fail(format!("WAL write: {e}"));
                self.wake.notify();
                return;
            }
            let durable = self.wal.durable_ready().saturating_sub(self.ready_base);
            self.raft.borrow_mut().on_persisted(durable);
            let mut held = self.held.borrow_mut();
            let split = held.partition_point(|(n, _)| *n <= durable);
            let ready: Vec<Message> = held.drain(..split).flat_map(|(_, m)| m).collect();
            drop(held);
            if !ready.is_empty() {
                self.outbox.borrow_mut().extend(ready);
                self.outbox_wake.notify();
            }
            self.wake.notify();
        }
    }
}

/// Renames `from` to `to` (both in `dir`) and makes the rename durable (fdatasync of
/// the directory), through glommio: nothing blocks the executor.
async fn rename_durably(from: &Path, to: &Path, dir: &Path) -> Result<(), String> {
    glommio::io::rename(from, to)
        .await
        .map_err(|e| format!("renaming {} to {}: {e}", from.display(), to.display()))?;
    let d = glommio::io::Directory::open(dir)
        .await
        .map_err(|e| format!("opening directory {}: {e}", dir.display()))?;
    let synced = d.sync().await;
    let _ = d.close().await;
    synced.map_err(|e| format!("fsync of directory {}: {e}", dir.display()))
}

fn advance(store: &mut Store<Db>, index: u64) -> Result<(), String> {
    match store.advance_applied(index) {
        Ok(()) | Err(ApplyError::AlreadyApplied { .. }) => Ok(()),
        Err(ApplyError::Storage(m)) => Err(format!("recording applied index {index}: {m}")),
    }
}

/// Whether `rd` hands out nothing at all (what Raft wanted to hand out was not
/// readable yet).
fn ready_is_empty(rd: &raft::Ready) -> bool {
    rd.soft_state.is_none()
        && rd.hard_state.is_none()
        && rd.entries.is_empty()
        && rd.snapshot.is_none()
        && rd.messages.is_empty()
        && rd.persisted_messages.is_empty()
        && rd.committed_entries.is_empty()
        && rd.read_states.is_empty()
}

/// Microseconds since the Unix epoch (request ids, the Raft seed).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl From<KvError> for Reply {
    fn from(e: KvError) -> Reply {
        Err(ProtoError::from(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::PutRequest;

    /// A temp directory removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "corekv-group-{tag}-{}-{:x}",
                std::process::id(),
                now_us()
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn put(key: &str, value: &[u8]) -> WriteRequest {
        WriteRequest::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.to_vec(),
            ..PutRequest::default()
        })
    }

    fn serializable_get(key: &str) -> RangeRequest {
        RangeRequest {
            key: key.as_bytes().to_vec(),
            serializable: true,
            ..RangeRequest::default()
        }
    }

    /// The value of `key` in `g`'s store, read without a ReadIndex round.
    async fn stored(g: &Group, key: &str) -> Option<Vec<u8>> {
        match g.range(&serializable_get(key)).await.unwrap().body {
            ResponseBody::Range(r) => r.range.kvs.into_iter().next().map(|kv| kv.value),
            other => panic!("range answered {other:?}"),
        }
    }

    /// Waits (yielding to the group's tasks) until `cond` holds; a bound, not a timing
    /// assertion: it only turns a hang into a failure.
    async fn until(what: &str, cond: impl Fn() -> bool) {
        let started = Instant::now();
        while !cond() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "timed out waiting until {what}"
            );
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Runs `test` on a fresh executor (the group's tasks need one) and waits for it.
    fn on_executor<F>(test: impl FnOnce() -> F + Send + 'static)
    where
        F: std::future::Future<Output = ()> + 'static,
    {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(test)
            .unwrap()
            .join()
            .unwrap();
    }

    /// Opens the single-member group in `path`, starts its driver and waits until the
    /// group leads.
    async fn start_solo(
        path: &Path,
        opts: GroupOptions,
    ) -> (Rc<Group>, glommio::Task<Result<(), String>>) {
        let g = Group::open(path, 0, 1, vec![1], opts).await.unwrap();
        let driver = glommio::spawn_local(g.clone().run());
        until("the group leads", || g.is_leader()).await;
        (g, driver)
    }

    fn dirty_bytes(g: &Group) -> u64 {
        g.store.borrow().as_ref().unwrap().backend().dirty_bytes()
    }

    fn value_of(i: usize) -> Vec<u8> {
        let mut v = vec![b'a' + (i % 26) as u8; 700];
        v[..8].copy_from_slice(&(i as u64).to_le_bytes());
        v
    }

    /// A burst of writes bigger than the WAL's entry cache: by the time they commit the
    /// first ones were evicted, so Raft cannot hand them out until the WAL fetches them
    /// from disk. The driver must let that fetch run (it used to spin on empty Readies,
    /// growing without bound) and then apply everything.
    #[test]
    fn committed_entries_evicted_from_the_wal_cache_are_fetched_and_applied() {
        const WRITES: usize = 300;
        let dir = TempDir::new("small-cache");
        let path = dir.0.clone();
        let opts = GroupOptions {
            tick: Duration::from_millis(5),
            wal: WalOptions {
                segment_bytes: 1 << 20,
                cache_bytes_max: 16 << 10,
                fetch_bytes_max: 16 << 10,
                ..WalOptions::default()
            },
            ..GroupOptions::default()
        };
        on_executor(move || async move {
            let (g, driver) = start_solo(&path, opts).await;
            let answered = Rc::default();
            for w in spawn_puts(&g, 0..WRITES, &answered) {
                w.await.unwrap().unwrap();
            }
            assert_eq!(g.applied.get(), g.commit.get());
            for i in (0..WRITES).step_by(29) {
                let v = stored(&g, &format!("key{i:04}")).await;
                assert_eq!(v, Some(value_of(i)), "key{i:04}");
            }
            g.stop();
            driver.await.unwrap();
        });
    }

    /// A large commit is applied a batch per turn of the driver, and the answers of the
    /// first batches reach their requests before the last entries are applied.
    #[test]
    fn answers_leave_between_apply_batches() {
        const WRITES: usize = 200;
        let dir = TempDir::new("apply-batches");
        let path = dir.0.clone();
        let opts = GroupOptions {
            apply_batch_bytes: 1,
            ..GroupOptions::default()
        };
        on_executor(move || async move {
            let (g, driver) = start_solo(&path, opts).await;
            let answered = Rc::default();
            for w in spawn_puts(&g, 0..WRITES, &answered) {
                w.await.unwrap().unwrap();
            }
            let last = g.applied.get();
            let early = answered.borrow().iter().filter(|&&a| a < last).count();
            assert!(
                early > 0,
                "every answer arrived only after the last entry ({last}) was applied"
            );
            for i in (0..WRITES).step_by(17) {
                let v = stored(&g, &format!("key{i:04}")).await;
                assert_eq!(v, Some(value_of(i)), "key{i:04}");
            }
            g.stop();
            driver.await.unwrap();
        });
    }

    /// Spawns puts of `key{i}` for every `i` in `range`; each, once answered, records
    /// the group's applied index at that moment in `answered`.
    fn spawn_puts(
        g: &Rc<Group>,
        range: std::ops::Range<usize>,
        answered: &Rc<RefCell<Vec<u64>>>,
    ) -> Vec<glommio::task::JoinHandle<Reply>> {
        range
            .map(|i| {
                let (g, answered) = (g.clone(), answered.clone());
                glommio::spawn_local(async move {
                    let r = g
                        .write(0, 0, put(&format!("key{i:04}"), &value_of(i)))
                        .await;
                    answered.borrow_mut().push(g.applied.get());
                    r
                })
                .detach()
            })
            .collect()
    }

    /// A B+tree commit held back (a stalled disk): the next version's dirty pages stop
    /// at `dirty_bytes_max`, the committed entries wait in the WAL (the first ones fall
    /// out of its cache), Raft goes on committing, serializable reads are served, new
    /// writes get TooManyRequests once the apply gap is too big; released, every
    /// waiting entry is read back from the WAL and applied in order, and the data
    /// survives a restart.
    #[test]
    fn applying_stops_at_the_dirty_limit_while_a_commit_is_held() {
        const LIMIT: u64 = 64 << 10;
        const WAVE: usize = 300;
        let dir = TempDir::new("dirty-limit");
        let path = dir.0.clone();
        let opts = GroupOptions {
            tick: Duration::from_millis(5),
            dirty_bytes_max: LIMIT,
            // Only the held commit, the dirty limit and the stop commit.
            btree_commit_entries: u64::MAX,
            btree_commit_interval: Duration::from_secs(3600),
            apply_gap_max: 400,
            wal: WalOptions {
                segment_bytes: 1 << 20,
                // Holds one wave of writes (Raft reads entries from it as they
                // commit), not two: the first wave's waiting entries are read back
                // from the segment files (`fetch_pending`).
                cache_bytes_max: 256 << 10,
                fetch_bytes_max: 16 << 10,
                ..WalOptions::default()
            },
            ..GroupOptions::default()
        };
        on_executor(move || async move {
            let (g, driver) = start_solo(&path, opts.clone()).await;
            g.write(0, 0, put("first", b"v")).await.unwrap();
            // Hold the committer, then seal what is applied: that commit is now
            // "in flight" on a disk that does not answer.
            g.hold_commits.set(true);
            g.begin_store_commit().unwrap();
            assert!(g.committing.get());
            let applied_before = g.applied.get();

            let answered = Rc::default();
            let mut writers = spawn_puts(&g, 0..WAVE, &answered);
            // Raft commits every write (the WAL is not held) ...
            until("the first wave is committed", || {
                g.commit.get() >= applied_before + WAVE as u64
            })
            .await;
            until("applying stalls", || g.apply_stalls() == 1).await;
            // ... but applying stopped at the limit, within one entry's pages.
            let applied = g.applied.get();
            let dirty = dirty_bytes(&g);
            assert!(
                applied > applied_before,
                "some writes applied before the limit"
            );
            assert!(applied < applied_before + WAVE as u64);
            assert!(
                (LIMIT..LIMIT + (32 << 10)).contains(&dirty),
                "dirty bytes {dirty} vs limit {LIMIT}"
            );
            assert_eq!(g.deferred_to.get(), g.commit.get());
            // A second wave is accepted (the gap is below `apply_gap_max`) and
            // committed, and applies nothing.
            writers.extend(spawn_puts(&g, WAVE..2 * WAVE, &answered));
            until("the second wave is committed", || {
                g.commit.get() >= applied_before + 2 * WAVE as u64
            })
            .await;
            // Many more loop turns (ticks, heartbeats) change nothing.
            glommio::timer::sleep(Duration::from_millis(100)).await;
            assert_eq!(g.applied.get(), applied);
            assert_eq!(dirty_bytes(&g), dirty);
            assert_eq!(g.apply_stalls(), 1);
            assert_eq!(answered.borrow().len(), (applied - applied_before) as usize);
            // Serializable reads are served; new writes are turned away.
            assert_eq!(stored(&g, "first").await.as_deref(), Some(&b"v"[..]));
            assert_eq!(stored(&g, &format!("key{:04}", 2 * WAVE - 1)).await, None);
            let refused = g.write(0, 0, put("late", b"x")).await.unwrap_err();
            assert!(
                matches!(refused.code, ErrorCode::TooManyRequests),
                "{refused:?}"
            );

            // The disk answers: everything waiting applies, in order.
            g.hold_commits.set(false);
            g.hold_released.notify();
            for w in writers {
                w.await.unwrap().unwrap();
            }
            until("everything is applied", || {
                g.applied.get() == g.commit.get()
            })
            .await;
            for i in 0..2 * WAVE {
                let v = stored(&g, &format!("key{i:04}")).await;
                assert_eq!(v, Some(value_of(i)), "key{i:04}");
            }
            // etcd's revisions: 1 for the empty store, +1 per put ("late" was not).
            let revision = g.with_store(|s| s.revision()).await;
            assert_eq!(revision, 2 + 2 * WAVE as i64);
            g.stop();
            driver.await.unwrap();
            drop(g);

            // A restart finds every write (the store's commit and the WAL agree).
            let g = Group::open(&path, 0, 1, vec![1], opts).await.unwrap();
            assert_eq!(g.with_store(|s| s.revision()).await, 2 + 2 * WAVE as i64);
            for i in (0..2 * WAVE).step_by(37) {
                let v = stored(&g, &format!("key{i:04}")).await;
                assert_eq!(v, Some(value_of(i)), "key{i:04} after a restart");
            }
        });
    }
}
