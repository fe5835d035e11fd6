//! The peer transport of one shard: shard g of each node keeps one TCP connection to
//! shard g of every other node (`peer_port_base + g`) and carries only group g's Raft
//! messages, so replication never hops between cores.
//!
//! Connections are one-way: the node that has messages for a peer dials it and only
//! writes; the peer only reads (answering nothing after the handshake). So between two
//! nodes there are two connections per shard, one each way.
//!
//! - Membership ([`Transport`]): the links follow the node's member table (a shard
//!   task calls [`Transport::set_peers`] when the table changes): a new member gets a
//!   link, a removed one loses it, and only current members may connect inbound.
//! - Outbound ([`Link`]): a pump task drains the group's outbox and queues each message
//!   on its destination's link; the link's task connects (handshake `Role::Peer` with
//!   this node's id and the cluster id; a refused or silent handshake counts as a lost
//!   connection), then writes everything queued meanwhile as [`PeerFrame`]s in ONE
//!   write. On a lost connection it calls `report_unreachable`, drops what was queued
//!   (Raft resends) and reconnects with exponential backoff ([`BACKOFF_MIN`] to
//!   [`BACKOFF_MAX`]). A queue holds at most [`LINK_QUEUE_MAX`] messages; beyond that new
//!   messages are dropped (a stalled peer cannot make this node run out of memory).
//! - Inbound ([`serve_peer`]): the handshake must name this cluster and a member of
//!   it; otherwise the ack says `ClusterIdMismatch`, the refusal is logged and the
//!   connection closed. Then frames are decoded exactly like client frames (length
//!   bound before allocating, crc, rkyv validation, kind), each [`PeerFrame`]'s
//!   addressing is checked (`check_peer_addressing`; the sender must be the node that
//!   shook hands, the group must be this shard's), the embedded Raft message is
//!   validated in place, deserialized and stepped into the group; the driver is woken
//!   once per read.
//!
//! - Snapshots (`send_snapshot`, `stream_snapshot`, `receive_chunk`): an outgoing Raft
//!   `Snapshot` message makes the leader write a consistent copy of its store (the last
//!   B+tree commit, see `Group::write_snapshot`; in a low-priority task queue, yielding
//!   between batches), whose metadata replaces the one Raft chose (its index is at or
//!   after it). The link queues it as one [`Outgoing::Snapshot`]; when the link task
//!   reaches it, it reads the file [`SNAPSHOT_CHUNK_BYTES`] at a time (glommio file
//!   reads) and writes each chunk as a frame with its crc32 before reading the next (one
//!   chunk in memory, never the whole file), then the Raft message on the same
//!   connection. Raft hears `report_snapshot` once the stream is written (or failed, or
//!   was dropped with a lost connection), and the file is removed. The receiver
//!   verifies and appends chunks in order to `snapshot-recv-<from>.tmp` (one file per
//!   sender: two leaders around an election cannot mix their chunks), fdatasyncs and
//!   renames it to `snapshot-recv-<from>-<index>-<term>.btree` on the last one, and
//!   steps the Raft message only when it holds that complete file; the driver then
//!   installs it (`Group::install_snapshot`). `SnapshotAck` is not used: the follower's
//!   Raft answer is the acknowledgement. Every file operation of both sides goes
//!   through glommio (io_uring or its blocking-thread pool), never a blocking call on
//!   the shard's thread.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::io::BufferedFile;
use glommio::net::TcpStream;
use glommio::timer::Timer;

use super::group::Group;
use super::notify::Notify;
use crate::proto::messages::ArchivedSnapshotChunk;
use crate::proto::{
    access_payload, aligned_bytes, answer_hello, check_peer_addressing, deserialize, encode_frame,
    Decoder, DecoderConfig, Endpoint, ErrorCode, Hello, HelloAck, HelloStatus, Message as Frame,
    PeerFrame, Role, ServerIdentity, SnapshotChunk, DEFAULT_MAX_FRAME_BYTES, HELLO_ACK_LEN,
    HELLO_LEN, PROTOCOL_VERSION,
};
use crate::raft::{message::ArchivedMessage, Message, MessageType};

/// First reconnect delay after a failed connection.
pub const BACKOFF_MIN: Duration = Duration::from_millis(20);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// How long a connect plus handshake may take (a stopped peer's kernel accepts the
/// connection but the peer never answers).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Most messages queued for one peer.
pub const LINK_QUEUE_MAX: usize = 8192;

/// Who this shard is, for handshakes and addressing.
#[derive(Clone, Copy, Debug)]
pub struct Me {
    pub node_id: u64,
    pub cluster_id: u64,
    pub shard: u32,
    pub shard_count: u32,
}

/// The messages on their way to one peer.
pub struct Link {
    pub to: u64,
    /// The peer's address for this shard.
    pub addr: SocketAddr,
    queue: RefCell<Vec<Outgoing>>,
    wake: Notify,
    /// A snapshot for this peer is being written out or queued.
    snapshot_busy: Cell<bool>,
    /// Messages dropped because the queue was full (logged when it first happens).
    dropped: Cell<u64>,
}

impl Link {
    fn new(to: u64, addr: SocketAddr) -> Link {
        Link {
            to,
            addr,
            queue: RefCell::new(Vec::new()),
            wake: Notify::default(),
            snapshot_busy: Cell::new(false),
            dropped: Cell::new(0),
        }
    }

    /// Queues `m`; gives it back when the queue is full (it is dropped and counted).
    #[must_use]
    fn push(&self, m: Outgoing) -> Option<Outgoing> {
        let mut q = self.queue.borrow_mut();
        if q.len() >= LINK_QUEUE_MAX {
            let d = self.dropped.get() + 1;
            self.dropped.set(d);
            if d == 1 || d.is_power_of_two() {
                eprintln!(
                    "corekv: peer link to node {} ({}): queue full, {d} messages dropped",
                    self.to, self.addr
                );
            }
            return Some(m);
        }
        q.push(m);
        drop(q);
        self.wake.notify();
        None
    }
}

/// What a link sends: a Raft message, or a snapshot file to stream followed by its Raft
/// message. Not boxed: Raft messages are the hot path, and the queue holds them by
/// value.
#[allow(clippy::large_enum_variant)]
pub enum Outgoing {
    Raft(Message),
    Snapshot(SnapshotOut),
}

/// A snapshot file written for one follower, waiting to be streamed.
pub struct SnapshotOut {
    path: PathBuf,
    /// The Raft `Snapshot` message (its metadata is the file's) sent after the chunks.
    message: Message,
}

/// Size of the data in one [`SnapshotChunk`] (well under the 2 MiB frame limit).
pub const SNAPSHOT_CHUNK_BYTES: usize = 512 << 10;

/// Leader: writes a snapshot of the store for `m.to` and queues it on `link` with the
/// Raft `Snapshot` message (its metadata replaced by the snapshot's: the store's last
/// commit, at or after the index Raft asked for); the link streams it
/// ([`stream_snapshot`]) and reports the outcome to Raft.
async fn send_snapshot(group: Rc<Group>, me: Me, link: Rc<Link>, mut m: Message) {
    let to = m.to;
    let path = group.dir().join(format!("snapshot-out-{to}.btree"));
    let result = async {
        let meta = group.write_snapshot(&path).await?;
        let asked = m.snapshot.as_ref().map_or(0, |s| s.meta.index);
        if meta.index < asked {
            return Err(format!(
                "the store's last commit ({}) is behind the snapshot Raft asked for ({asked})",
                meta.index
            ));
        }
        m.snapshot = Some(crate::raft::Snapshot {
            meta,
            data: Vec::new(),
        });
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            let queued = link.push(Outgoing::Snapshot(SnapshotOut { path, message: m }));
            if let Some(Outgoing::Snapshot(snap)) = queued {
                finish_snapshot(&group, &link, snap, false).await;
            }
        }
        Err(e) => {
            eprintln!("corekv: group {}: no snapshot for node {to}: {e}", me.shard);
            let _ = glommio::io::remove(&path).await;
            group.report_snapshot(to, false);
            link.snapshot_busy.set(false);
        }
    }
}

/// Writes the snapshot file of `snap` to `stream` as chunk frames, one
/// [`SNAPSHOT_CHUNK_BYTES`] read at a time, then its Raft message. Returns the file's
/// size.
async fn stream_snapshot(
    stream: &mut TcpStream,
    snap: &SnapshotOut,
    me: Me,
    buf: &mut Vec<u8>,
) -> Result<u64, String> {
    let path = &snap.path;
    let meta = &snap
        .message
        .snapshot
        .as_ref()
        .expect("set by send_snapshot")
        .meta;
    let file = BufferedFile::open(path)
        .await
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    let streamed = async {
        let size = file
            .file_size()
            .await
            .map_err(|e| format!("size of {}: {e}", path.display()))?;
        let mut offset = 0u64;
        loop {
            let want = (size - offset).min(SNAPSHOT_CHUNK_BYTES as u64) as usize;
            let data = file
                .read_at(offset, want)
                .await
                .map_err(|e| format!("reading {} at {offset}: {e}", path.display()))?;
            if data.len() != want {
                return Err(format!(
                    "reading {} at {offset}: {} bytes, expected {want} (the file shrank?)",
                    path.display(),
                    data.len()
                ));
            }
            let last = offset + want as u64 == size;
            let chunk = SnapshotChunk {
                cluster_id: me.cluster_id,
                from_node: me.node_id,
                to_node: snap.message.to,
                group: me.shard,
                snapshot_index: meta.index,
                snapshot_term: meta.term,
                offset,
                crc: crc32fast::hash(&data),
                data: data.to_vec(),
                last,
            };
            drop(data);
            buf.clear();
            encode_frame(buf, 0, &chunk, DEFAULT_MAX_FRAME_BYTES)
                .map_err(|e| format!("encoding a snapshot chunk: {e}"))?;
            stream
                .write_all(buf)
                .await
                .map_err(|e| format!("sending the chunk at {offset}: {e}"))?;
            offset += want as u64;
            if last {
                break;
            }
        }
        buf.clear();
        encode_batch(buf, vec![snap.message.clone()], me);
        stream
            .write_all(buf)
            .await
            .map_err(|e| format!("sending the Snapshot message: {e}"))?;
        Ok(size)
    }
    .await;
    let _ = file.close().await;
    streamed
}

/// A queued snapshot is done with (streamed: `ok`; failed or dropped: not): Raft hears
/// of it, the file goes, the link may take the next snapshot.
async fn finish_snapshot(group: &Group, link: &Link, snap: SnapshotOut, ok: bool) {
    let _ = glommio::io::remove(&snap.path).await;
    group.report_snapshot(link.to, ok);
    link.snapshot_busy.set(false);
}

/// Drops everything queued on `link` (a lost connection: Raft resends), finishing any
/// snapshot among it as failed.
async fn drop_queued(group: &Group, link: &Link, rest: impl IntoIterator<Item = Outgoing>) {
    let queued = std::mem::take(&mut *link.queue.borrow_mut());
    for o in rest.into_iter().chain(queued) {
        if let Outgoing::Snapshot(snap) = o {
            finish_snapshot(group, link, snap, false).await;
        }
    }
}

/// A link and the task that drives it (dropping the task stops the link).
type LinkSlot = (Rc<Link>, glommio::Task<()>);

/// This shard's peer transport: its links (one per other member; they follow the
/// member table) and the node ids it accepts inbound connections from.
pub struct Transport {
    group: Rc<Group>,
    me: Me,
    /// Where snapshot copies are written: a low-priority task queue.
    snapshot_queue: glommio::TaskQueueHandle,
    links: RefCell<HashMap<u64, LinkSlot>>,
    members: RefCell<Vec<u64>>,
}

impl Transport {
    /// Starts the pump that drains the group's outbox onto the links; the returned
    /// task runs until dropped.
    pub fn start(group: Rc<Group>, me: Me) -> (Rc<Transport>, glommio::Task<()>) {
        let snapshot_queue = glommio::executor().create_task_queue(
            glommio::Shares::Static(50),
            glommio::Latency::NotImportant,
            &format!("peer-{}-snapshots", me.shard),
        );
        let t = Rc::new(Transport {
            group,
            me,
            snapshot_queue,
            links: RefCell::new(HashMap::new()),
            members: RefCell::new(Vec::new()),
        });
        let pump = {
            let t = t.clone();
            async move {
                loop {
                    t.group.outbox_ready().await;
                    for m in t.group.take_outbox() {
                        t.dispatch(m);
                    }
                }
            }
        };
        (t, glommio::spawn_local(pump))
    }

    fn dispatch(&self, m: Message) {
        let me = self.me;
        let link = self.links.borrow().get(&m.to).map(|(l, _)| l.clone());
        match link {
            Some(l) if m.kind == MessageType::Snapshot => {
                if l.snapshot_busy.replace(true) {
                    return;
                }
                let g = self.group.clone();
                let spawned = glommio::spawn_local_into(
                    send_snapshot(g, me, l.clone(), m),
                    self.snapshot_queue,
                );
                match spawned {
                    Ok(task) => {
                        task.detach();
                    }
                    Err(e) => {
                        eprintln!("corekv: group {}: starting a snapshot: {e}", me.shard);
                        l.snapshot_busy.set(false);
                    }
                }
            }
            Some(l) => {
                // A full queue drops it (counted by the link); Raft resends.
                let _ = l.push(Outgoing::Raft(m));
            }
            None => eprintln!(
                "corekv: group {}: a {:?} for unknown node {} dropped",
                me.shard, m.kind, m.to
            ),
        }
    }

    /// Makes the links follow `peers` (every other member and its address for this
    /// shard): new members get a link, removed ones lose theirs (its task is dropped),
    /// a changed address replaces the link. `members` are the ids accepted inbound.
    pub fn set_peers(&self, peers: &[(u64, SocketAddr)], members: Vec<u64>) {
        let mut links = self.links.borrow_mut();
        links.retain(|id, (l, _)| peers.iter().any(|(p, a)| p == id && *a == l.addr));
        for &(id, addr) in peers {
            if id == self.me.node_id || links.contains_key(&id) {
                continue;
            }
            let l = Rc::new(Link::new(id, addr));
            let task = glommio::spawn_local(link_loop(self.group.clone(), self.me, l.clone()));
            links.insert(id, (l, task));
        }
        *self.members.borrow_mut() = members;
    }

    fn is_member(&self, id: u64) -> bool {
        self.members.borrow().contains(&id)
    }
}

/// Dials `addr` and shakes hands as a peer; the stream is ready for frames.
async fn dial(addr: SocketAddr, me: Me) -> Result<TcpStream, String> {
    let attempt = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = s.set_nodelay(true);
        let hello = Hello {
            version: PROTOCOL_VERSION,
            role: Role::Peer,
            cluster_id: me.cluster_id,
            node_id: me.node_id,
        };
        s.write_all(&hello.encode())
            .await
            .map_err(|e| format!("sending the hello: {e}"))?;
        let mut ack = [0u8; HELLO_ACK_LEN];
        s.read_exact(&mut ack)
            .await
            .map_err(|e| format!("reading the ack: {e}"))?;
        let ack = HelloAck::decode(&ack).map_err(|e| format!("handshake refused: {e}"))?;
        if ack.shard != me.shard {
            return Err(format!(
                "the peer says it is shard {}, not shard {}",
                ack.shard, me.shard
            ));
        }
        Ok(s)
    };
    futures_lite::future::or(attempt, async {
        Timer::new(HANDSHAKE_TIMEOUT).await;
        Err(format!("no handshake within {HANDSHAKE_TIMEOUT:?}"))
    })
    .await
}

/// Encodes `msgs` as peer frames appended to `buf`. A message too large for one frame
/// is dropped (logged): Raft's `max_msg_bytes` keeps appends far below the limit.
fn encode_batch(buf: &mut Vec<u8>, msgs: Vec<Message>, me: Me) {
    for m in msgs {
        let raft_message = match rkyv::to_bytes::<rkyv::rancor::Error>(&m) {
            Ok(b) => b.to_vec(),
            Err(e) => {
                eprintln!(
                    "corekv: group {}: serializing a {:?}: {e}",
                    me.shard, m.kind
                );
                continue;
            }
        };
        let pf = PeerFrame {
            cluster_id: me.cluster_id,
            from_node: me.node_id,
            to_node: m.to,
            group: me.shard,
            raft_message,
        };
        if let Err(e) = encode_frame(buf, 0, &pf, DEFAULT_MAX_FRAME_BYTES) {
            eprintln!(
                "corekv: group {}: a {:?} to node {} dropped: {e}",
                me.shard, m.kind, m.to
            );
        }
    }
}

/// Writes `msgs` to `stream`: Raft messages batched into one write, a snapshot streamed
/// where it stands in the queue. On a failed write, the error and what was not sent.
async fn send_queued(
    group: &Group,
    link: &Link,
    stream: &mut TcpStream,
    msgs: Vec<Outgoing>,
    me: Me,
    buf: &mut Vec<u8>,
) -> Result<(), (String, Vec<Outgoing>)> {
    let mut msgs = msgs.into_iter();
    let mut batch = Vec::new();
    loop {
        let snap = match msgs.next() {
            Some(Outgoing::Raft(m)) => {
                batch.push(m);
                continue;
            }
            Some(Outgoing::Snapshot(s)) => Some(s),
            None => None,
        };
        if !batch.is_empty() {
            buf.clear();
            encode_batch(buf, std::mem::take(&mut batch), me);
            if let Err(e) = stream.write_all(buf).await {
                let unsent = snap.map(Outgoing::Snapshot).into_iter().chain(msgs);
                return Err((e.to_string(), unsent.collect()));
            }
        }
        let Some(snap) = snap else {
            return Ok(());
        };
        let to = snap.message.to;
        let index = snap.message.snapshot.as_ref().map_or(0, |s| s.meta.index);
        match stream_snapshot(stream, &snap, me, buf).await {
            Ok(size) => {
                eprintln!(
                    "corekv: group {}: sent node {to} a snapshot at index {index} ({size} bytes)",
                    me.shard
                );
                finish_snapshot(group, link, snap, true).await;
            }
            Err(e) => {
                finish_snapshot(group, link, snap, false).await;
                return Err((format!("snapshot {index}: {e}"), msgs.collect()));
            }
        }
    }
}

async fn link_loop(group: Rc<Group>, me: Me, link: Rc<Link>) {
    let mut backoff = BACKOFF_MIN;
    let mut logged_down = false;
    let mut buf = Vec::new();
    loop {
        while link.queue.borrow().is_empty() {
            link.wake.wait().await;
        }
        let mut stream = match dial(link.addr, me).await {
            Ok(s) => {
                if logged_down {
                    eprintln!(
                        "corekv: group {}: connected to node {} at {}",
                        me.shard, link.to, link.addr
                    );
                }
                logged_down = false;
                backoff = BACKOFF_MIN;
                s
            }
            Err(e) => {
                if !logged_down {
                    eprintln!(
                        "corekv: group {}: node {} at {} unreachable: {e}",
                        me.shard, link.to, link.addr
                    );
                    logged_down = true;
                }
                drop_queued(&group, &link, []).await;
                group.report_unreachable(link.to);
                Timer::new(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        loop {
            while link.queue.borrow().is_empty() {
                link.wake.wait().await;
            }
            let msgs = std::mem::take(&mut *link.queue.borrow_mut());
            if let Err((e, unsent)) =
                send_queued(&group, &link, &mut stream, msgs, me, &mut buf).await
            {
                eprintln!(
                    "corekv: group {}: connection to node {} lost: {e}",
                    me.shard, link.to
                );
                drop_queued(&group, &link, unsent).await;
                group.report_unreachable(link.to);
                break;
            }
        }
        let _ = stream.close().await;
    }
}

/// Serves one inbound peer connection until it closes or sends something that cannot
/// be trusted. Only members of `t`'s table may connect.
pub async fn serve_peer(t: Rc<Transport>, mut stream: TcpStream) {
    let (group, me) = (t.group.clone(), t.me);
    let peer_addr = stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let mut hello = [0u8; HELLO_LEN];
    let got = futures_lite::future::or(async { stream.read_exact(&mut hello).await.ok() }, async {
        Timer::new(HANDSHAKE_TIMEOUT).await;
        None
    })
    .await;
    if got.is_none() {
        return;
    }
    let ident = ServerIdentity {
        cluster_id: me.cluster_id,
        node_id: me.node_id,
        shard: me.shard,
        shard_count: me.shard_count,
    };
    let (mut ack, result) = answer_hello(&hello, &ident);
    let from = match result {
        Ok(h) if h.role == Role::Peer && h.node_id != me.node_id && t.is_member(h.node_id) => {
            Some(h.node_id)
        }
        Ok(h) => {
            ack.status = HelloStatus::ClusterIdMismatch;
            eprintln!(
                "corekv: group {}: refused a peer connection from {peer_addr}: node {} ({:?}) \
                 is not another member of this cluster",
                me.shard, h.node_id, h.role
            );
            None
        }
        Err(e) => {
            eprintln!(
                "corekv: group {}: refused a peer connection from {peer_addr}: {e}",
                me.shard
            );
            None
        }
    };
    if stream.write_all(&ack.encode()).await.is_err() {
        return;
    }
    let Some(from) = from else {
        let _ = stream.close().await;
        return;
    };
    let mut dec = Decoder::new(DecoderConfig::new(Endpoint::Peer));
    let mut scratch = rkyv::util::AlignedVec::<16>::new();
    let mut recv: Option<SnapshotRecv> = None;
    loop {
        let n = match stream.read(dec.read_buf()).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        dec.advance(n);
        let mut stepped = false;
        loop {
            let m = match dec.next_frame() {
                Ok(None) => break,
                Ok(Some(inbound)) => match inbound.message {
                    Frame::Raft(pf) => {
                        let checked = check_peer_addressing(
                            pf.cluster_id.to_native(),
                            pf.from_node.to_native(),
                            pf.to_node.to_native(),
                            me.cluster_id,
                            me.node_id,
                        );
                        match checked {
                            Err(e) if e.code == ErrorCode::ClusterIdMismatch => {
                                eprintln!("corekv: group {}: {}; closing", me.shard, e.message);
                                return;
                            }
                            Err(e) => {
                                eprintln!("corekv: group {}: {}; dropped", me.shard, e.message);
                                continue;
                            }
                            Ok(()) => {}
                        }
                        if pf.from_node.to_native() != from || pf.group.to_native() != me.shard {
                            eprintln!(
                                "corekv: group {}: a frame from node {} for group {} on the \
                                 connection of node {from}; dropped",
                                me.shard, pf.from_node, pf.group
                            );
                            continue;
                        }
                        let bytes = aligned_bytes(pf.raft_message.as_slice(), &mut scratch);
                        match access_payload::<ArchivedMessage>(bytes)
                            .and_then(deserialize::<Message, _>)
                        {
                            Ok(m) => m,
                            Err(e) => {
                                eprintln!(
                                    "corekv: group {}: a bad Raft message from node {from}: \
                                     {e}; dropped",
                                    me.shard
                                );
                                continue;
                            }
                        }
                    }
                    Frame::SnapshotChunk(c) => {
                        if let Err(e) = check_peer_addressing(
                            c.cluster_id.to_native(),
                            c.from_node.to_native(),
                            c.to_node.to_native(),
                            me.cluster_id,
                            me.node_id,
                        ) {
                            eprintln!("corekv: group {}: {}; closing", me.shard, e.message);
                            return;
                        }
                        if c.from_node.to_native() != from || c.group.to_native() != me.shard {
                            eprintln!(
                                "corekv: group {}: a snapshot chunk for group {} from node {} \
                                 on node {from}'s connection; dropped",
                                me.shard, c.group, c.from_node
                            );
                            continue;
                        }
                        if let Err(e) = receive_chunk(&group, &mut recv, c).await {
                            eprintln!(
                                "corekv: group {}: snapshot from node {from}: {e}; dropped",
                                me.shard
                            );
                            recv = None;
                        }
                        continue;
                    }
                    other => {
                        eprintln!(
                            "corekv: group {}: node {from} sent a {:?} frame, not handled; \
                             dropped",
                            me.shard,
                            other.kind()
                        );
                        continue;
                    }
                },
                Err(de) => {
                    eprintln!(
                        "corekv: group {}: bad frame from node {from} ({peer_addr}): {}",
                        me.shard, de.error
                    );
                    if de.is_fatal() {
                        if stepped {
                            group.wake();
                        }
                        return;
                    }
                    continue;
                }
            };
            if m.from != from || m.to != me.node_id {
                eprintln!(
                    "corekv: group {}: a {:?} from {} to {} on node {from}'s connection; dropped",
                    me.shard, m.kind, m.from, m.to
                );
                continue;
            }
            if m.kind == MessageType::Snapshot {
                let (index, term) = m
                    .snapshot
                    .as_ref()
                    .map_or((0, 0), |s| (s.meta.index, s.meta.term));
                if !group.has_received_snapshot(index, term) {
                    eprintln!(
                        "corekv: group {}: a Snapshot message ({index}, {term}) from node {from} \
                         without its file; dropped",
                        me.shard
                    );
                    continue;
                }
            }
            group.step(m);
            stepped = true;
        }
        if stepped {
            group.wake();
        }
    }
}

/// A snapshot file being received on one connection.
struct SnapshotRecv {
    from: u64,
    index: u64,
    term: u64,
    next_offset: u64,
    file: BufferedFile,
    path: PathBuf,
}

/// Appends one verified chunk to the snapshot file being received; the last chunk
/// fdatasyncs it, renames it to `snapshot-recv-<from>-<index>-<term>.btree` and tells
/// the group. Chunks must come in order from offset 0 (one connection carries them in
/// order); anything else restarts the transfer. Every file call goes through glommio.
async fn receive_chunk(
    group: &Group,
    recv: &mut Option<SnapshotRecv>,
    c: &ArchivedSnapshotChunk,
) -> Result<(), String> {
    let (index, term, offset) = (
        c.snapshot_index.to_native(),
        c.snapshot_term.to_native(),
        c.offset.to_native(),
    );
    let from = c.from_node.to_native();
    let data = c.data.as_slice();
    let crc = crc32fast::hash(data);
    if crc != c.crc.to_native() {
        return Err(format!(
            "chunk at offset {offset} of snapshot {index}: crc32 {:#010x}, data gives {crc:#010x}",
            c.crc.to_native()
        ));
    }
    if offset == 0 {
        if let Some(old) = recv.take() {
            let _ = old.file.close().await;
        }
        let path = group.dir().join(format!("snapshot-recv-{from}.tmp"));
        let file = BufferedFile::create(&path)
            .await
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        *recv = Some(SnapshotRecv {
            from,
            index,
            term,
            next_offset: 0,
            file,
            path,
        });
    }
    let Some(r) = recv.as_mut() else {
        return Err(format!(
            "chunk at offset {offset} of snapshot {index} without its start"
        ));
    };
    if r.index != index || r.term != term || r.next_offset != offset {
        return Err(format!(
            "chunk ({index}, {term}) at offset {offset}, expected ({}, {}) at {}",
            r.index, r.term, r.next_offset
        ));
    }
    let written = r
        .file
        .write_at(data.to_vec(), offset)
        .await
        .map_err(|e| format!("writing {} at {offset}: {e}", r.path.display()))?;
    if written != data.len() {
        return Err(format!(
            "writing {} at {offset}: {written} of {} bytes written",
            r.path.display(),
            data.len()
        ));
    }
    r.next_offset += data.len() as u64;
    if c.last {
        let r = recv.take().expect("checked above");
        let synced = r.file.fdatasync().await;
        let _ = r.file.close().await;
        synced.map_err(|e| format!("fdatasync {}: {e}", r.path.display()))?;
        let done = group
            .dir()
            .join(format!("snapshot-recv-{}-{index}-{term}.btree", r.from));
        glommio::io::rename(&r.path, &done)
            .await
            .map_err(|e| format!("renaming {} to {}: {e}", r.path.display(), done.display()))?;
        group.set_received_snapshot(index, term, done).await;
    }
    Ok(())
}
