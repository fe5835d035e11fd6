//! One client connection to one shard of one node, on a glommio executor.
//!
//! Opening: TCP connect (bounded by the connect timeout), `Hello` as a client, the
//! server's `HelloAck` (which names its node, the shard behind the port and the shard
//! count). Then two tasks share the socket:
//!
//! - the writer waits until frames are queued in `out`, swaps the queue with its own
//!   buffer and sends everything with one `write_all`: requests queued while the
//!   previous write was in flight leave together;
//! - the reader reads straight into the [`Decoder`]'s buffer and completes, for every
//!   frame, the pending request with its id (a `Response`, or an `Error` frame as
//!   [`ClientError::Server`]).
//!
//! Invariants: request ids are allocated from a counter starting at 1 (0 is the
//! protocol's "about the connection" id), so an id is never reused on one connection;
//! at most `max_in_flight` requests are pending (a semaphore); every pending request is
//! completed exactly once. After a fatal error (I/O error, end of stream, a frame that
//! cannot be trusted, an error frame with id 0) the connection is closed: every pending
//! request and every later call fails with [`ClientError::ConnectionLost`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_lite::io::{split, AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use glommio::task::JoinHandle;

use super::ClientError;
use crate::proto::{
    deserialize, encode_frame, Decoder, DecoderConfig, Endpoint, Hello, HelloAck, Message,
    ProtoError, Request, Response, Role, HELLO_ACK_LEN, PROTOCOL_VERSION,
};

/// Settings of one connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnConfig {
    pub connect_timeout: Duration,
    pub max_in_flight: usize,
    pub max_frame_bytes: usize,
}

/// What the server said about itself in the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub node_id: u64,
    pub cluster_id: u64,
    pub shard: u32,
    pub shard_count: u32,
}

type Outcome = Result<Response, ClientError>;

/// Where the reader puts the outcome of one request for its caller.
#[derive(Default)]
struct Slot {
    outcome: Option<Outcome>,
    waker: Option<Waker>,
}

type SlotRef = Rc<RefCell<Slot>>;

fn complete(slot: &SlotRef, outcome: Outcome) {
    let mut s = slot.borrow_mut();
    assert!(
        s.outcome.is_none(),
        "a request was completed twice on one connection"
    );
    s.outcome = Some(outcome);
    if let Some(w) = s.waker.take() {
        w.wake();
    }
}

/// Waits for a slot's outcome.
struct SlotFuture<'a>(&'a SlotRef);

impl Future for SlotFuture<'_> {
    type Output = Outcome;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut s = self.0.borrow_mut();
        match s.outcome.take() {
            Some(o) => Poll::Ready(o),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Hashes a request id (a counter) with one multiplication: ids are not chosen by the
/// server, so SipHash's flooding resistance buys nothing here.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// State shared by the connection handle and its two tasks.
struct Shared {
    addr: String,
    max_frame_bytes: usize,
    next_id: Cell<u64>,
    pending: RefCell<IdMap<SlotRef>>,
    /// Frames encoded but not yet handed to the writer.
    out: RefCell<Vec<u8>>,
    writer_waker: RefCell<Option<Waker>>,
    /// Set once: why the connection is closed.
    closed: RefCell<Option<String>>,
}

impl Shared {
    fn lost(&self, reason: &str) -> ClientError {
        ClientError::ConnectionLost {
            addr: self.addr.clone(),
            reason: reason.to_string(),
        }
    }

    /// Closes the connection (first reason wins) and fails every pending request.
    fn close(&self, reason: String) {
        {
            let mut c = self.closed.borrow_mut();
            if c.is_none() {
                *c = Some(reason);
            }
        }
        let reason = self.closed.borrow().clone().expect("set above");
        let pending: Vec<SlotRef> = self.pending.borrow_mut().drain().map(|(_, s)| s).collect();
        for slot in pending {
            complete(&slot, Err(self.lost(&reason)));
        }
        if let Some(w) = self.writer_waker.borrow_mut().take() {
            w.wake();
        }
    }

    fn finish(&self, id: u64, outcome: Outcome) {
        // A request that timed out was removed: its late answer is dropped.
        let slot = self.pending.borrow_mut().remove(&id);
        if let Some(slot) = slot {
            complete(&slot, outcome);
        }
    }
}

/// An open connection. Dropping it stops its tasks (pending calls then fail).
pub struct Conn {
    shared: Rc<Shared>,
    in_flight: Semaphore,
    info: PeerInfo,
    reader: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shared.close("connection dropped by the client".into());
        if let Some(t) = self.reader.take() {
            t.cancel();
        }
        if let Some(t) = self.writer.take() {
            t.cancel();
        }
    }
}

/// Resolves `host:port` (the first address).
pub fn resolve(addr: &str) -> Result<SocketAddr, ClientError> {
    let mut addrs = addr.to_socket_addrs().map_err(|e| ClientError::Connect {
        addr: addr.to_string(),
        reason: format!("resolving: {e}"),
    })?;
    addrs.next().ok_or_else(|| ClientError::Connect {
        addr: addr.to_string(),
        reason: "resolves to no address".into(),
    })
}

impl Conn {
    /// Connects to `addr` (`host:port`), does the handshake and starts the reader and
    /// writer tasks on the current glommio executor.
    pub async fn open(addr: &str, cfg: ConnConfig) -> Result<Conn, ClientError> {
        assert!(cfg.max_in_flight > 0, "max_in_flight must be positive");
        let sock = resolve(addr)?;
        let connect_err = |e: String| ClientError::Connect {
            addr: addr.to_string(),
            reason: e,
        };
        let mut stream = TcpStream::connect_timeout(sock, cfg.connect_timeout)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| connect_err(format!("setting TCP_NODELAY: {e}")))?;
        let info = with_timeout(
            cfg.connect_timeout,
            "handshake",
            handshake(&mut stream, addr),
        )
        .await??;
        let shared = Rc::new(Shared {
            addr: addr.to_string(),
            max_frame_bytes: cfg.max_frame_bytes,
            next_id: Cell::new(1),
            pending: RefCell::new(IdMap::default()),
            out: RefCell::new(Vec::new()),
            writer_waker: RefCell::new(None),
            closed: RefCell::new(None),
        });
        let (rd, wr) = split(stream);
        let reader =
            glommio::spawn_local(read_loop(shared.clone(), rd, cfg.max_frame_bytes)).detach();
        let writer = glommio::spawn_local(write_loop(shared.clone(), wr)).detach();
        Ok(Conn {
            shared,
            in_flight: Semaphore::new(cfg.max_in_flight as u64),
            info,
            reader: Some(reader),
            writer: Some(writer),
        })
    }

    /// What the server said in the handshake.
    pub fn info(&self) -> PeerInfo {
        self.info
    }

    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// Whether the connection is closed (it then fails every call).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.borrow().is_some()
    }

    /// Sends `req` and waits for its answer (at most `timeout`).
    pub async fn call(&self, req: &Request, timeout: Duration) -> Outcome {
        let _permit = self
            .in_flight
            .acquire_permit(1)
            .await
            .map_err(|e| self.shared.lost(&format!("in-flight semaphore: {e}")))?;
        if let Some(reason) = self.shared.closed.borrow().as_ref() {
            return Err(self.shared.lost(reason));
        }
        let id = self.shared.next_id.get();
        self.shared.next_id.set(id + 1);
        {
            let mut out = self.shared.out.borrow_mut();
            encode_frame(&mut out, id, req, self.shared.max_frame_bytes)
                .map_err(|e| ClientError::Encode(e.to_string()))?;
        }
        let slot: SlotRef = Rc::default();
        let previous = self.shared.pending.borrow_mut().insert(id, slot.clone());
        assert!(previous.is_none(), "request id {id} reused while pending");
        if let Some(w) = self.shared.writer_waker.borrow_mut().take() {
            w.wake();
        }
        let result = with_timeout(timeout, "request", SlotFuture(&slot)).await;
        if result.is_err() {
            self.shared.pending.borrow_mut().remove(&id);
        }
        result?
    }
}

/// Runs `f` for at most `after`.
pub async fn with_timeout<T>(
    after: Duration,
    op: &'static str,
    f: impl Future<Output = T>,
) -> Result<T, ClientError> {
    futures_lite::future::or(async { Ok(f.await) }, async {
        glommio::timer::sleep(after).await;
        Err(ClientError::Timeout { op, after })
    })
    .await
}

async fn handshake(stream: &mut TcpStream, addr: &str) -> Result<PeerInfo, ClientError> {
    let herr = |reason: String| ClientError::Handshake {
        addr: addr.to_string(),
        reason,
    };
    // An I/O failure during the handshake (a node restarting resets connections) is a
    // connection failure, retried like one; a refused or malformed ack is final.
    let ioerr = |reason: String| ClientError::Connect {
        addr: addr.to_string(),
        reason: format!("handshake: {reason}"),
    };
    let hello = Hello {
        version: PROTOCOL_VERSION,
        role: Role::Client,
        cluster_id: 0,
        node_id: 0,
    };
    stream
        .write_all(&hello.encode())
        .await
        .map_err(|e| ioerr(format!("sending hello: {e}")))?;
    stream
        .flush()
        .await
        .map_err(|e| ioerr(format!("sending hello: {e}")))?;
    let mut ack = [0u8; HELLO_ACK_LEN];
    stream
        .read_exact(&mut ack)
        .await
        .map_err(|e| ioerr(format!("reading the {HELLO_ACK_LEN}-byte ack: {e}")))?;
    let ack = HelloAck::decode(&ack).map_err(|e| herr(e.to_string()))?;
    if ack.shard_count == 0 || ack.shard >= ack.shard_count {
        return Err(herr(format!(
            "ack names shard {} of {} shards",
            ack.shard, ack.shard_count
        )));
    }
    Ok(PeerInfo {
        node_id: ack.node_id,
        cluster_id: ack.cluster_id,
        shard: ack.shard,
        shard_count: ack.shard_count,
    })
}

async fn write_loop(shared: Rc<Shared>, mut wr: WriteHalf<TcpStream>) {
    let mut batch = Vec::new();
    loop {
        // Wait for queued frames or the close.
        let closed = futures_lite::future::poll_fn(|cx| {
            if shared.closed.borrow().is_some() {
                return Poll::Ready(true);
            }
            let mut out = shared.out.borrow_mut();
            if out.is_empty() {
                *shared.writer_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            } else {
                std::mem::swap(&mut *out, &mut batch);
                Poll::Ready(false)
            }
        })
        .await;
        if closed {
            let _ = wr.close().await;
            return;
        }
        let res = match wr.write_all(&batch).await {
            Ok(()) => wr.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            shared.close(format!("writing {} bytes: {e}", batch.len()));
            return;
        }
        batch.clear();
        if batch.capacity() > 4 << 20 {
            batch = Vec::new();
        }
    }
}

async fn read_loop(shared: Rc<Shared>, mut rd: ReadHalf<TcpStream>, max_frame_bytes: usize) {
    let mut cfg = DecoderConfig::new(Endpoint::Client);
    cfg.max_frame_bytes = max_frame_bytes;
    let mut decoder = Decoder::new(cfg);
    loop {
        if shared.closed.borrow().is_some() {
            return;
        }
        let n = match rd.read(decoder.read_buf()).await {
            Ok(n) => n,
            Err(e) => {
                shared.close(format!("reading: {e}"));
                return;
            }
        };
        if n == 0 {
            let reason = match decoder.finish() {
                Ok(()) => "the server closed the connection".to_string(),
                Err(e) => format!("the server closed the connection: {e}"),
            };
            shared.close(reason);
            return;
        }
        decoder.advance(n);
        if let Err(reason) = drain_frames(&shared, &mut decoder) {
            shared.close(reason);
            return;
        }
    }
}

/// Completes the requests answered by every whole frame in `decoder`. `Err` = the
/// connection must be closed, with this reason.
fn drain_frames(shared: &Shared, decoder: &mut Decoder) -> Result<(), String> {
    loop {
        let frame = match decoder.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(e) => match e.request_id {
                // A sound frame with a bad payload: only that request fails.
                Some(id) if !e.is_fatal() && id != 0 => {
                    shared.finish(
                        id,
                        Err(ClientError::Protocol(format!(
                            "answer to request {id}: {}",
                            e.error
                        ))),
                    );
                    continue;
                }
                _ => return Err(format!("bad frame from the server: {}", e.error)),
            },
        };
        let id = frame.request_id;
        match frame.message {
            Message::Response(r) => {
                let outcome = deserialize::<Response, _>(r)
                    .map_err(|e| ClientError::Protocol(format!("answer to request {id}: {e}")));
                shared.finish(id, outcome);
            }
            Message::Error(e) => {
                let err: ProtoError = deserialize(e).map_err(|e| e.to_string())?;
                if id == 0 {
                    return Err(format!("the server reports: {err}"));
                }
                if err.code.is_fatal() {
                    let reason = format!("the server reports: {err}");
                    shared.finish(id, Err(ClientError::server(err)));
                    return Err(reason);
                }
                shared.finish(id, Err(ClientError::server(err)));
            }
            other => {
                // The decoder only admits Response and Error on a client endpoint.
                unreachable!("client decoder admitted a {:?} frame", other.kind());
            }
        }
    }
}
