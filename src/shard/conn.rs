//! Client connections of one shard: handshake, then a read loop that decodes frames and
//! starts one task per request (many in flight, answered in any order), and a writer
//! task that sends every answer queued meanwhile in one write.
//!
//! Untrusted bytes are checked in the decoder's order (length bound before allocating,
//! checksum, rkyv validation, kind), then `proto::validate_request`. A frame that cannot
//! be trusted gets an error frame and the connection is closed; a sound frame carrying a
//! bad request gets an error frame and the connection lives. Nothing reaches Raft before
//! all of that passed.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::node::Shard;
use super::notify::{Broadcast, Notify};
use crate::proto::{
    answer_hello, deserialize, encode_frame, validate_request, Decoder, DecoderConfig, Endpoint,
    ErrorCode, Limits, Message, ProtoError, Request, Role, ServerIdentity, HELLO_LEN,
};

/// Requests one connection may have in flight; past it, the connection is not read
/// until some complete (backpressure through TCP).
pub const CONN_INFLIGHT_MAX: usize = 4096;
/// A client must complete the handshake within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of answers that make the writer flush before more are queued.
const OUTBOX_FLUSH_BYTES: usize = 256 << 10;

/// Answers waiting to be written.
#[derive(Default)]
struct Outbox {
    buf: RefCell<Vec<u8>>,
    ready: Notify,
    closed: Cell<bool>,
    /// Signalled whenever in-flight requests complete.
    done: Broadcast,
    inflight: Cell<usize>,
}

impl Outbox {
    fn push_reply(&self, id: u64, reply: Result<crate::proto::Response, ProtoError>) {
        let mut buf = self.buf.borrow_mut();
        let max = crate::proto::DEFAULT_MAX_FRAME_BYTES;
        let encoded = match &reply {
            Ok(resp) => encode_frame(&mut buf, id, resp, max).map(|_| ()),
            Err(e) => encode_frame(&mut buf, id, e, max).map(|_| ()),
        };
        if let Err(e) = encoded {
            // An answer over the frame limit (a huge range): say so instead.
            let e = ProtoError::new(
                e.code,
                format!("{}; narrow the range or set a limit", e.message),
            );
            encode_frame(&mut buf, id, &e, max).expect("a short error frame always encodes");
        }
        drop(buf);
        self.ready.notify();
    }

    fn push_error(&self, id: u64, e: &ProtoError) {
        let mut buf = self.buf.borrow_mut();
        encode_frame(&mut buf, id, e, crate::proto::DEFAULT_MAX_FRAME_BYTES)
            .expect("a short error frame always encodes");
        drop(buf);
        self.ready.notify();
    }
}

async fn write_loop(mut w: impl futures_lite::AsyncWrite + Unpin, out: Rc<Outbox>) {
    let mut spare = Vec::new();
    loop {
        if out.buf.borrow().is_empty() {
            if out.closed.get() {
                break;
            }
            out.ready.wait().await;
            continue;
        }
        std::mem::swap(&mut *out.buf.borrow_mut(), &mut spare);
        if w.write_all(&spare).await.is_err() || w.flush().await.is_err() {
            out.closed.set(true);
            break;
        }
        spare.clear();
        if spare.capacity() > 4 * OUTBOX_FLUSH_BYTES {
            spare = Vec::new();
        }
    }
    let _ = w.close().await;
}

/// Serves one client connection until it closes or breaks the protocol.
pub async fn serve_client(shard: Rc<Shard>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut hello = [0u8; HELLO_LEN];
    let got = futures_lite::future::or(
        async { stream.read_exact(&mut hello).await.is_ok() },
        async {
            glommio::timer::Timer::new(HANDSHAKE_TIMEOUT).await;
            false
        },
    )
    .await;
    if !got {
        return;
    }
    let me = ServerIdentity {
        cluster_id: shard.node.cluster_id,
        node_id: shard.node.node_id,
        shard: shard.index,
        shard_count: shard.node.shards,
    };
    let (ack, accepted) = answer_hello(&hello, &me);
    if stream.write_all(&ack.encode()).await.is_err() {
        return;
    }
    match accepted {
        Ok(h) if h.role == Role::Client => {}
        // Refused (the ack said why), or a peer dialing a client port.
        _ => return,
    }
    let (mut r, w) = futures_lite::io::split(stream);
    let out = Rc::new(Outbox::default());
    let writer = glommio::spawn_local(write_loop(w, out.clone()));
    let limits = Limits::default();
    let mut dec = Decoder::new(DecoderConfig::new(Endpoint::Server));
    'conn: loop {
        while out.inflight.get() >= CONN_INFLIGHT_MAX {
            out.done.listen().await;
        }
        let n = match r.read(dec.read_buf()).await {
            Ok(0) | Err(_) => {
                if let Err(e) = dec.finish() {
                    out.push_error(0, &e);
                }
                break;
            }
            Ok(n) => n,
        };
        dec.advance(n);
        loop {
            let started = match dec.next_frame() {
                Ok(None) => break,
                Ok(Some(inbound)) => {
                    let id = inbound.request_id;
                    let Message::Request(ar) = inbound.message else {
                        // The server endpoint's decoder admits only requests.
                        out.push_error(
                            id,
                            &ProtoError::new(ErrorCode::UnknownRequest, "not a request"),
                        );
                        continue;
                    };
                    let checked =
                        validate_request(ar, inbound.payload_len, &limits, shard.node.shards)
                            .and_then(|route| Ok((route, deserialize::<Request, _>(ar)?)));
                    match checked {
                        Ok(x) => Some((id, x)),
                        Err(e) => {
                            out.push_error(id, &e);
                            None
                        }
                    }
                }
                Err(de) => {
                    out.push_error(de.request_id.unwrap_or(0), &de.error);
                    if de.is_fatal() {
                        break 'conn;
                    }
                    None
                }
            };
            if let Some((id, (route, req))) = started {
                out.inflight.set(out.inflight.get() + 1);
                let (shard, out) = (shard.clone(), out.clone());
                glommio::spawn_local(async move {
                    let reply = shard.handle(route, req).await;
                    out.push_reply(id, reply);
                    out.inflight.set(out.inflight.get() - 1);
                    out.done.notify();
                })
                .detach();
            }
        }
    }
    // Answer what is in flight (the client may have only half-closed), then close.
    while out.inflight.get() > 0 {
        out.done.listen().await;
    }
    out.closed.set(true);
    out.ready.notify();
    writer.await;
}
