//! Tests of the client's logic (retry policy, routing, answer conversion) and of its
//! connection handling against a scripted peer that speaks the real protocol over real
//! 127.0.0.1 sockets (handshake, frames, rkyv payloads from `proto`). The scripted peer
//! is not a KV store: each test's handler decides the answers, so that the client's
//! routing, request-id matching, hint following and retries can be checked exactly.
//! End-to-end tests against the real server are in `tests/client.rs`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use super::routing::{host_of, target_of};
use super::*;
use crate::mvcc::{
    Compare, CompareOp, CompareTarget, KeyValue, PutRequest, RangeRequest, RangeResponse,
    RequestOp, TxnRequest,
};
use crate::proto::{
    answer_hello, deserialize, encode_frame, group_for, Decoder, DecoderConfig, Endpoint,
    GroupRevision, GroupTopology, Message, NodeAddr, Op, Request, ServerIdentity, HELLO_LEN,
};

// ---------------------------------------------------------------- retry policy

#[test]
fn backoff_doubles_caps_and_jitters_within_a_quarter() {
    let p = RetryPolicy {
        max_attempts: 10,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
    };
    assert_eq!(p.backoff(1, 0), Duration::from_millis(10));
    assert_eq!(p.backoff(2, 0), Duration::from_millis(20));
    assert_eq!(p.backoff(4, 0), Duration::from_millis(80));
    assert_eq!(p.backoff(5, 0), Duration::from_millis(100));
    assert_eq!(p.backoff(60, 0), Duration::from_millis(100));
    // Jitter removes at most a quarter, deterministically.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for attempt in 1..12 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let full = p.backoff(attempt, 0);
        let j = p.backoff(attempt, seed);
        assert!(
            j <= full && j >= full - full / 4,
            "{attempt}: {j:?} vs {full:?}"
        );
        assert_eq!(j, p.backoff(attempt, seed));
    }
}

fn server_err(code: ErrorCode) -> ClientError {
    ClientError::Server {
        code,
        message: "m".into(),
    }
}

#[test]
fn retry_decisions() {
    let p = RetryPolicy::default();
    let budget = Duration::from_secs(10);
    let t0 = Duration::ZERO;
    let backoff = RetryAction::Backoff {
        refresh_topology: false,
    };
    let reconnect = RetryAction::Backoff {
        refresh_topology: true,
    };
    let lost = ClientError::ConnectionLost {
        addr: "a:1".into(),
        reason: "eof".into(),
    };
    assert_eq!(p.decide(&lost, 1, t0, budget), reconnect);
    let refused = ClientError::Connect {
        addr: "a:1".into(),
        reason: "refused".into(),
    };
    assert_eq!(p.decide(&refused, 1, t0, budget), reconnect);
    assert_eq!(
        p.decide(&server_err(ErrorCode::Unavailable), 1, t0, budget),
        backoff
    );
    assert_eq!(
        p.decide(&server_err(ErrorCode::TooManyRequests), 1, t0, budget),
        backoff
    );
    let ws = server_err(ErrorCode::WrongShard {
        group: 1,
        shard: 1,
        client_port: 2,
    });
    assert_eq!(p.decide(&ws, 1, t0, budget), RetryAction::Reroute);
    assert_eq!(
        p.decide(
            &server_err(ErrorCode::NotLeader { leader: 3 }),
            1,
            t0,
            budget
        ),
        RetryAction::Reroute
    );
    assert_eq!(
        p.decide(
            &server_err(ErrorCode::NotLeader { leader: 0 }),
            1,
            t0,
            budget
        ),
        RetryAction::Backoff {
            refresh_topology: true
        }
    );
    // Answers about the request itself are final.
    for code in [
        ErrorCode::EmptyKey,
        ErrorCode::Compacted(3),
        ErrorCode::InvalidArgument,
        ErrorCode::CrossGroupTxn,
        ErrorCode::Internal,
    ] {
        assert_eq!(
            p.decide(&server_err(code), 1, t0, budget),
            RetryAction::Fail
        );
    }
    let timeout = ClientError::Timeout {
        op: "put",
        after: budget,
    };
    assert_eq!(p.decide(&timeout, 1, t0, budget), RetryAction::Fail);
    // Bounded in attempts and in time.
    assert_eq!(
        p.decide(&lost, p.max_attempts, t0, budget),
        RetryAction::Fail
    );
    assert_eq!(p.decide(&lost, 1, budget, budget), RetryAction::Fail);
}

// ---------------------------------------------------------------- routing

fn topo(node: u64, ports: &[u16], leaders: &[u64], nodes: Vec<NodeAddr>) -> TopologyResponse {
    TopologyResponse {
        node_id: node,
        cluster_id: 9,
        shard_count: ports.len() as u32,
        groups: ports
            .iter()
            .zip(leaders)
            .enumerate()
            .map(|(g, (&p, &l))| GroupTopology {
                group: g as u32,
                shard: g as u32,
                client_port: p,
                leader: l,
            })
            .collect(),
        nodes,
    }
}

#[test]
fn routing_from_handshake_and_topology() {
    // Connected to shard 1 at port 7001: shard g is at 7000 + g until told otherwise.
    let mut r = Routing::from_handshake("127.0.0.1:7001", 1, 1, 3).unwrap();
    assert_eq!(r.addr_for(Target::Group(0)), "127.0.0.1:7000");
    assert_eq!(r.addr_for(Target::Group(2)), "127.0.0.1:7002");
    assert_eq!(r.addr_for(Target::Any), "127.0.0.1:7001");
    assert_eq!(r.addr_for(Target::Node), "127.0.0.1:7001");

    let nodes = vec![
        NodeAddr {
            node_id: 1,
            host: "0.0.0.0".into(),
            client_port_base: 7000,
            peer_port_base: 8000,
        },
        NodeAddr {
            node_id: 2,
            host: "10.0.0.2".into(),
            client_port_base: 9000,
            peer_port_base: 9100,
        },
    ];
    r.apply_topology(&topo(1, &[7000, 7001, 7002], &[1, 2, 0], nodes))
        .unwrap();
    // Led here: our host (not the advertised 0.0.0.0); led by node 2: its address;
    // leader unknown: this node's shard.
    assert_eq!(r.addr_for(Target::Group(0)), "127.0.0.1:7000");
    assert_eq!(r.addr_for(Target::Group(1)), "10.0.0.2:9001");
    assert_eq!(r.addr_for(Target::Group(2)), "127.0.0.1:7002");

    // NotLeader hints: a known node moves the group; an unknown one teaches nothing.
    assert!(r.on_not_leader(2, 2));
    assert_eq!(r.addr_for(Target::Group(2)), "10.0.0.2:9002");
    assert!(!r.on_not_leader(2, 77));
    assert!(!r.on_not_leader(2, 0));
    assert!(!r.on_not_leader(5, 2));
    assert_eq!(r.addr_for(Target::Group(2)), "10.0.0.2:9002");
    assert!(r.on_not_leader(2, 1));
    assert_eq!(r.addr_for(Target::Group(2)), "127.0.0.1:7002");

    // WrongShard: the same host, the named port.
    assert!(r.on_wrong_shard("127.0.0.1:7000", 2, 7102));
    assert_eq!(r.addr_for(Target::Group(2)), "127.0.0.1:7102");
    assert!(!r.on_wrong_shard("127.0.0.1:7000", 3, 7103));

    // A topology that disagrees with the handshake is refused.
    let mut r2 = Routing::from_handshake("h:10", 1, 0, 2).unwrap();
    assert!(r2
        .apply_topology(&topo(1, &[10, 11, 12], &[0, 0, 0], vec![]))
        .unwrap_err()
        .contains("3 shards"));
    assert!(Routing::from_handshake("nohost", 1, 0, 2).is_err());
    assert!(Routing::from_handshake("h:1", 1, 3, 4).is_err());
    assert_eq!(host_of("[::1]:7379"), "[::1]");
}

#[test]
fn targets_follow_group_for() {
    let shards = 4;
    let put = |k: &str| {
        Op::Put(PutRequest {
            key: k.into(),
            ..Default::default()
        })
    };
    for k in ["a", "foo", "user:1000", "{t}x"] {
        assert_eq!(
            target_of(&put(k), shards),
            Target::Group(group_for(k.as_bytes(), shards))
        );
    }
    let range = |k: &str, e: &[u8]| {
        Op::Range(RangeRequest {
            key: k.into(),
            range_end: e.to_vec(),
            ..Default::default()
        })
    };
    assert_eq!(
        target_of(&range("foo", b""), shards),
        Target::Group(group_for(b"foo", shards))
    );
    assert_eq!(target_of(&range("a", b"z"), shards), Target::Any);
    assert_eq!(target_of(&range("a", &[0]), shards), Target::Any);
    assert_eq!(
        target_of(&range("{t}a", b"{t}b"), shards),
        Target::Group(group_for(b"t", shards))
    );
    assert_eq!(target_of(&range("a", b"z"), 1), Target::Group(0));
    // A Txn goes to the group of its first single-group key.
    let txn = TxnRequest {
        compare: vec![Compare {
            op: CompareOp::Equal,
            target: CompareTarget::Version(0),
            key: b"a".to_vec(),
            range_end: b"z".to_vec(),
        }],
        success: vec![RequestOp::Txn(TxnRequest {
            compare: vec![],
            success: vec![],
            failure: vec![RequestOp::Put(PutRequest {
                key: b"{u}k".to_vec(),
                ..Default::default()
            })],
        })],
        failure: vec![],
    };
    assert_eq!(
        target_of(&Op::Txn(txn), shards),
        Target::Group(group_for(b"u", shards))
    );
    assert_eq!(
        target_of(&Op::Txn(TxnRequest::default()), shards),
        Target::Any
    );
    assert_eq!(
        target_of(
            &Op::Compact {
                group: 3,
                request: Default::default()
            },
            shards
        ),
        Target::Group(3)
    );
    assert_eq!(
        target_of(
            &Op::Compact {
                group: 4,
                request: Default::default()
            },
            shards
        ),
        Target::Any
    );
    assert_eq!(target_of(&Op::Status, shards), Target::Node);
    assert_eq!(target_of(&Op::Topology, shards), Target::Node);
}

#[test]
fn answers_convert_or_name_the_mismatch() {
    let h = ResponseHeader {
        group: 1,
        revision: 4,
        raft_term: 2,
        node_id: 3,
    };
    let put = Response {
        header: h,
        body: ResponseBody::Put(PutResponse { prev_kv: None }),
    };
    let r = into_put(put.clone()).unwrap();
    assert_eq!(r.header, h);
    let e = into_range(put).unwrap_err();
    assert_eq!(
        e,
        ClientError::Protocol("expected a Range answer, got Put".into())
    );
    let c = Response {
        header: h,
        body: ResponseBody::Compact,
    };
    assert_eq!(into_compact(c).unwrap(), h);
    assert_eq!(
        server_err(ErrorCode::EmptyKey).code(),
        Some(&ErrorCode::EmptyKey)
    );
    assert!(server_err(ErrorCode::EmptyKey)
        .to_string()
        .contains("EmptyKey"));
}

// ---------------------------------------------------------------- scripted peer

/// What the scripted peer does with one request.
enum Action {
    Reply(ResponseBody),
    Error(ErrorCode),
    /// Close the connection without answering.
    Close,
    /// Answer with a connection-level error frame (request id 0), then close.
    ConnectionError(ErrorCode),
    /// Never answer.
    Ignore,
}

/// One request the scripted peer received: on which shard, and what.
#[derive(Clone, Debug)]
struct Seen {
    shard: u32,
    request: Request,
}

type Handler = Arc<dyn Fn(u32, &Request, usize) -> Action + Send + Sync>;

/// A node of `ports.len()` shards on consecutive 127.0.0.1 ports. Each connection is
/// served by a thread; all answers to the requests of one read are written in reverse
/// order, in one write (so answers come out of order).
struct Peer {
    ports: Vec<u16>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for p in &self.ports {
            // Wake the accept loops.
            let _ = TcpStream::connect(("127.0.0.1", *p));
        }
    }
}

fn consecutive_listeners(n: usize) -> Vec<TcpListener> {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = first.local_addr().unwrap().port();
        let mut ls = vec![first];
        for i in 1..n {
            match base
                .checked_add(i as u16)
                .and_then(|p| TcpListener::bind(("127.0.0.1", p)).ok())
            {
                Some(l) => ls.push(l),
                None => break,
            }
        }
        if ls.len() == n {
            return ls;
        }
    }
    panic!("no {n} consecutive free ports");
}

impl Peer {
    fn start(shards: usize, handler: Handler) -> Peer {
        let listeners = consecutive_listeners(shards);
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        for (shard, l) in listeners.into_iter().enumerate() {
            let (seen, stop, handler, count) =
                (seen.clone(), stop.clone(), handler.clone(), count.clone());
            std::thread::spawn(move || {
                for s in l.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(s) = s else { continue };
                    let (seen, handler, count) = (seen.clone(), handler.clone(), count.clone());
                    std::thread::spawn(move || {
                        serve_conn(s, shard as u32, shards as u32, &seen, &*handler, &count)
                    });
                }
            });
        }
        Peer { ports, seen, stop }
    }

    fn addr(&self, shard: usize) -> String {
        format!("127.0.0.1:{}", self.ports[shard])
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve_conn(
    mut s: TcpStream,
    shard: u32,
    shards: u32,
    seen: &Mutex<Vec<Seen>>,
    handler: &(dyn Fn(u32, &Request, usize) -> Action + Send + Sync),
    count: &AtomicUsize,
) {
    let mut hello = [0u8; HELLO_LEN];
    if s.read_exact(&mut hello).is_err() {
        return;
    }
    let me = ServerIdentity {
        cluster_id: 9,
        node_id: 1,
        shard,
        shard_count: shards,
    };
    let (ack, res) = answer_hello(&hello, &me);
    if s.write_all(&ack.encode()).is_err() || res.is_err() {
        return;
    }
    let mut dec = Decoder::new(DecoderConfig::new(Endpoint::Server));
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        dec.feed(&buf[..n]);
        let mut answers: Vec<Vec<u8>> = Vec::new();
        loop {
            let f = match dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => panic!("scripted peer: bad frame from the client: {e:?}"),
            };
            let Message::Request(r) = f.message else {
                panic!("scripted peer: not a request")
            };
            let req: Request = deserialize(r).unwrap();
            let nth = count.fetch_add(1, Ordering::SeqCst);
            seen.lock().unwrap().push(Seen {
                shard,
                request: req.clone(),
            });
            let mut out = Vec::new();
            match handler(shard, &req, nth) {
                Action::Reply(body) => {
                    let resp = Response {
                        header: ResponseHeader {
                            group: shard,
                            revision: nth as i64,
                            raft_term: 1,
                            node_id: 1,
                        },
                        body,
                    };
                    encode_frame(&mut out, f.request_id, &resp, 2 << 20).unwrap();
                }
                Action::Error(code) => {
                    let e = ProtoError::new(code, "scripted");
                    encode_frame(&mut out, f.request_id, &e, 2 << 20).unwrap();
                }
                Action::Close => {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                    return;
                }
                Action::Ignore => continue,
                Action::ConnectionError(code) => {
                    let e = ProtoError::new(code, "scripted connection error");
                    encode_frame(&mut out, 0, &e, 2 << 20).unwrap();
                    let _ = s.write_all(&out);
                    let _ = s.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
            answers.push(out);
        }
        let all: Vec<u8> = answers.into_iter().rev().flatten().collect();
        if s.write_all(&all).is_err() {
            return;
        }
    }
}

fn topology_body(ports: &[u16]) -> ResponseBody {
    ResponseBody::Topology(topo(1, ports, &vec![1; ports.len()], vec![]))
}

/// Echoes a Range's key back as a kv whose value is the key; Put → Put; Topology →
/// this node's real ports.
fn echo(ports: Vec<u16>) -> Handler {
    Arc::new(move |shard, req, _| match &req.op {
        Op::Topology => Action::Reply(topology_body(&ports)),
        Op::Put(p) => {
            if group_for(&p.key, ports.len() as u32) != shard {
                return Action::Error(ErrorCode::WrongShard {
                    group: group_for(&p.key, ports.len() as u32),
                    shard: 0,
                    client_port: 0,
                });
            }
            Action::Reply(ResponseBody::Put(PutResponse { prev_kv: None }))
        }
        Op::Range(r) => Action::Reply(ResponseBody::Range(RangeResult {
            range: RangeResponse {
                kvs: vec![KeyValue {
                    key: r.key.clone(),
                    value: r.key.clone(),
                    ..Default::default()
                }],
                more: false,
                count: 1,
            },
            groups: vec![GroupRevision {
                group: shard,
                revision: 1,
            }],
        })),
        _ => Action::Error(ErrorCode::Internal),
    })
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .expect("glommio executor")
        .run(f)
}

fn fast_cfg(endpoint: String) -> ClientConfig {
    let mut cfg = ClientConfig::with_endpoints([endpoint]);
    cfg.retry = RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    };
    cfg.connect_timeout = Duration::from_secs(5);
    cfg.request_timeout = Duration::from_secs(20);
    cfg
}

/// Listener ports are only known after `Peer::start`, so handlers that need them read
/// them from here.
fn ports_cell() -> Arc<Mutex<Vec<u16>>> {
    Arc::new(Mutex::new(Vec::new()))
}

#[test]
fn requests_go_to_their_groups_shard() {
    let cell = ports_cell();
    let c2 = cell.clone();
    let peer = Peer::start(
        3,
        Arc::new(move |shard, req, nth| echo(c2.lock().unwrap().clone())(shard, req, nth)),
    );
    *cell.lock().unwrap() = peer.ports.clone();
    run(async {
        // Bootstrap from shard 2: the client still finds shards 0 and 1.
        let c = Client::connect(fast_cfg(peer.addr(2))).await.unwrap();
        assert_eq!(c.shard_count(), 3);
        let keys: Vec<String> = (0..30).map(|i| format!("key-{i}")).collect();
        for k in &keys {
            let r = c.put(k.as_str(), "v").await.unwrap();
            assert_eq!(r.header.group, group_for(k.as_bytes(), 3));
            let g = c.get(k.as_str()).await.unwrap();
            assert_eq!(g.body.range.kvs[0].key, k.as_bytes());
        }
        assert_eq!(c.open_connections().len(), 3);
    });
    // Every put reached the shard of its group directly (no WrongShard detour).
    let seen = peer.seen();
    let puts: Vec<&Seen> = seen
        .iter()
        .filter(|s| matches!(s.request.op, Op::Put(_)))
        .collect();
    assert_eq!(puts.len(), 30);
    for s in puts {
        let Op::Put(p) = &s.request.op else {
            unreachable!()
        };
        assert_eq!(s.shard, group_for(&p.key, 3));
    }
}

#[test]
fn pipelined_answers_out_of_order_reach_their_callers() {
    let cell = ports_cell();
    let c2 = cell.clone();
    let peer = Peer::start(
        1,
        Arc::new(move |shard, req, nth| echo(c2.lock().unwrap().clone())(shard, req, nth)),
    );
    *cell.lock().unwrap() = peer.ports.clone();
    run(async {
        let c = Client::connect(fast_cfg(peer.addr(0))).await.unwrap();
        let n = 500;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let c = c.clone();
                glommio::spawn_local(async move {
                    let key = format!("k{i}");
                    let r = c.get(key.as_str()).await.unwrap();
                    assert_eq!(r.body.range.kvs[0].value, key.as_bytes());
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        assert_eq!(c.open_connections().len(), 1);
    });
    // Requests were batched: the peer saw them all, reads with session 0.
    let seen = peer.seen();
    assert_eq!(
        seen.iter()
            .filter(|s| matches!(s.request.op, Op::Range(_)))
            .count(),
        500
    );
    assert!(seen
        .iter()
        .filter(|s| matches!(s.request.op, Op::Range(_)))
        .all(|s| s.request.session == 0 && s.request.seq == 0));
}

#[test]
fn wrong_shard_hints_are_followed_once() {
    // The topology swaps the ports of groups 0 and 1; each shard refuses keys of the
    // other group with WrongShard naming the right port.
    let cell = ports_cell();
    let c2 = cell.clone();
    let peer = Peer::start(
        2,
        Arc::new(move |shard, req, _| {
            let ports = c2.lock().unwrap().clone();
            match &req.op {
                Op::Topology => Action::Reply(topology_body(&[ports[1], ports[0]])),
                Op::Put(p) => {
                    let g = group_for(&p.key, 2);
                    if g != shard {
                        Action::Error(ErrorCode::WrongShard {
                            group: g,
                            shard: g,
                            client_port: ports[g as usize],
                        })
                    } else {
                        Action::Reply(ResponseBody::Put(PutResponse { prev_kv: None }))
                    }
                }
                _ => Action::Error(ErrorCode::Internal),
            }
        }),
    );
    *cell.lock().unwrap() = peer.ports.clone();
    run(async {
        let c = Client::connect(fast_cfg(peer.addr(0))).await.unwrap();
        for i in 0..40 {
            let k = format!("w{i}");
            let r = c.put(k.as_str(), "v").await.unwrap();
            assert_eq!(r.header.group, group_for(k.as_bytes(), 2));
        }
    });
    let seen = peer.seen();
    let puts = seen
        .iter()
        .filter(|s| matches!(s.request.op, Op::Put(_)))
        .count();
    // 40 puts, plus one detour per group.
    assert_eq!(puts, 42);
}

#[test]
fn a_lost_write_is_retried_with_its_session_and_seq() {
    // The first put closes the connection unanswered; the retry is answered.
    let cell = ports_cell();
    let c2 = cell.clone();
    let closed_once = Arc::new(AtomicBool::new(false));
    let peer = Peer::start(
        1,
        Arc::new(move |_, req, _| match &req.op {
            Op::Topology => Action::Reply(topology_body(&c2.lock().unwrap())),
            Op::Put(_) if !closed_once.swap(true, Ordering::SeqCst) => Action::Close,
            Op::Put(_) => Action::Reply(ResponseBody::Put(PutResponse { prev_kv: None })),
            _ => Action::Error(ErrorCode::Internal),
        }),
    );
    *cell.lock().unwrap() = peer.ports.clone();
    run(async {
        let c = Client::connect(fast_cfg(peer.addr(0))).await.unwrap();
        c.put("a", "1").await.unwrap();
        // Its session was retired (an attempt was lost): none idle.
        assert_eq!(c.idle_sessions(), 0);
        c.put("b", "2").await.unwrap();
        assert_eq!(c.idle_sessions(), 1);
        c.put("c", "3").await.unwrap();
        assert_eq!(c.idle_sessions(), 1);
    });
    let puts: Vec<Request> = peer
        .seen()
        .into_iter()
        .filter(|s| matches!(s.request.op, Op::Put(_)))
        .map(|s| s.request)
        .collect();
    assert_eq!(puts.len(), 4);
    // Attempt and retry: the same (session, seq).
    assert_eq!(puts[0], puts[1]);
    assert!(puts[0].session != 0 && puts[0].seq == 1);
    // The next write uses a fresh session; the one after reuses it with seq + 1.
    assert_ne!(puts[2].session, puts[0].session);
    assert_eq!(
        (puts[3].session, puts[3].seq),
        (puts[2].session, puts[2].seq + 1)
    );
}

#[test]
fn server_errors_are_final_and_unavailable_is_retried_within_bounds() {
    let cell = ports_cell();
    let c2 = cell.clone();
    let peer = Peer::start(
        1,
        Arc::new(move |_, req, _| match &req.op {
            Op::Topology => Action::Reply(topology_body(&c2.lock().unwrap())),
            Op::Put(p) if p.key.is_empty() => Action::Error(ErrorCode::EmptyKey),
            Op::Put(_) => Action::Error(ErrorCode::Unavailable),
            _ => Action::Error(ErrorCode::Internal),
        }),
    );
    *cell.lock().unwrap() = peer.ports.clone();
    run(async {
        let c = Client::connect(fast_cfg(peer.addr(0))).await.unwrap();
        let e = c.put("", "v").await.unwrap_err();
        assert_eq!(e.code(), Some(&ErrorCode::EmptyKey));
        let e = c.put("k", "v").await.unwrap_err();
        assert_eq!(e.code(), Some(&ErrorCode::Unavailable));
        // Server answers: the session's outcomes are known, so it is kept.
        assert_eq!(c.idle_sessions(), 1);
    });
    let puts: Vec<Request> = peer
        .seen()
        .into_iter()
        .filter(|s| matches!(s.request.op, Op::Put(_)))
        .map(|s| s.request)
        .collect();
    // 1 (EmptyKey, not retried) + max_attempts (4) for Unavailable, all with one seq.
    assert_eq!(puts.len(), 5);
    assert!(puts[1..].iter().all(|r| r.seq == puts[1].seq));
}

#[test]
fn connecting_to_nothing_fails_with_the_address() {
    // Bind then drop: the port is (very likely) closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let e = run(async { Client::connect(fast_cfg(addr.clone())).await.err().unwrap() });
    match e {
        ClientError::Connect { addr: a, .. } => assert_eq!(a, addr),
        other => panic!("{other:?}"),
    }
    let e = ThreadedClient::connect(fast_cfg(addr.clone()))
        .err()
        .unwrap();
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
}

#[test]
fn threaded_client_serves_threads_and_async_callers() {
    let cell = ports_cell();
    let c2 = cell.clone();
    let peer = Peer::start(
        2,
        Arc::new(move |shard, req, nth| echo(c2.lock().unwrap().clone())(shard, req, nth)),
    );
    *cell.lock().unwrap() = peer.ports.clone();
    let client = ThreadedClient::connect(fast_cfg(peer.addr(0))).unwrap();
    assert_eq!(client.bootstrap_info().shard_count, 2);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let c = client.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let k = format!("t{t}-{i}");
                    c.blocking().put(k.as_str(), "v").unwrap();
                    let r = c.blocking().get(k.as_str()).unwrap();
                    assert_eq!(r.body.range.kvs[0].key, k.as_bytes());
                }
            })
        })
        .collect();
    // An async caller on another executor (futures-lite's block_on here).
    let r = futures_lite::future::block_on(client.get("async-key")).unwrap();
    assert_eq!(r.body.range.kvs[0].value, b"async-key");
    for t in threads {
        t.join().unwrap();
    }
    let e = client.blocking().status().unwrap_err();
    assert_eq!(e.code(), Some(&ErrorCode::Internal));
    drop(client);
    assert_eq!(
        peer.seen()
            .iter()
            .filter(|s| matches!(s.request.op, Op::Put(_)))
            .count(),
        200
    );
}

#[test]
fn connect_falls_back_to_the_next_endpoint() {
    let cell = ports_cell();
    let c2 = cell.clone();
    let peer = Peer::start(
        1,
        Arc::new(move |shard, req, nth| echo(c2.lock().unwrap().clone())(shard, req, nth)),
    );
    *cell.lock().unwrap() = peer.ports.clone();
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = fast_cfg(format!("127.0.0.1:{dead}"));
    cfg.endpoints.push(peer.addr(0));
    run(async {
        let c = Client::connect(cfg).await.unwrap();
        assert_eq!(c.routing().addr_for(Target::Node), peer.addr(0));
        c.get("x").await.unwrap();
    });
}

#[test]
fn a_connection_level_error_closes_and_the_read_is_retried() {
    let cell = ports_cell();
    let c2 = cell.clone();
    let failed_once = Arc::new(AtomicBool::new(false));
    let peer = Peer::start(
        1,
        Arc::new(move |shard, req, nth| match &req.op {
            Op::Range(_) if !failed_once.swap(true, Ordering::SeqCst) => {
                Action::ConnectionError(ErrorCode::BadChecksum)
            }
            _ => echo(c2.lock().unwrap().clone())(shard, req, nth),
        }),
    );
    *cell.lock().unwrap() = peer.ports.clone();
    run(async {
        let c = Client::connect(fast_cfg(peer.addr(0))).await.unwrap();
        let r = c.get("k").await.unwrap();
        assert_eq!(r.body.range.kvs[0].key, b"k");
        assert_eq!(c.open_connections().len(), 1);
    });
    let reads = peer
        .seen()
        .iter()
        .filter(|s| matches!(s.request.op, Op::Range(_)))
        .count();
    assert_eq!(reads, 2);
}

#[test]
fn an_unanswered_write_times_out_and_retires_its_session() {
    let cell = ports_cell();
    let c2 = cell.clone();
    let peer = Peer::start(
        1,
        Arc::new(move |shard, req, nth| match &req.op {
            Op::Put(p) if p.key == b"black-hole" => Action::Ignore,
            _ => echo(c2.lock().unwrap().clone())(shard, req, nth),
        }),
    );
    *cell.lock().unwrap() = peer.ports.clone();
    run(async {
        let mut cfg = fast_cfg(peer.addr(0));
        cfg.request_timeout = Duration::from_millis(200);
        let c = Client::connect(cfg).await.unwrap();
        c.put("k", "v").await.unwrap();
        assert_eq!(c.idle_sessions(), 1);
        let e = c.put("black-hole", "v").await.unwrap_err();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
        // Its outcome is unknown: the session is not reused.
        assert_eq!(c.idle_sessions(), 0);
        // The connection still works.
        c.put("k2", "v").await.unwrap();
        assert_eq!(c.idle_sessions(), 1);
    });
}

/// After the bootstrap node is replaced (it stopped answering), its id no longer means
/// "here": a hint naming it routes to its member address, not to the new bootstrap.
#[test]
fn routing_after_switching_bootstrap() {
    let mut r = Routing::from_handshake("127.0.0.1:7000", 1, 0, 2).unwrap();
    let nodes = vec![
        NodeAddr {
            node_id: 1,
            host: "127.0.0.1".into(),
            client_port_base: 7000,
            peer_port_base: 8000,
        },
        NodeAddr {
            node_id: 2,
            host: "127.0.0.1".into(),
            client_port_base: 7100,
            peer_port_base: 8100,
        },
    ];
    r.set_bootstrap("127.0.0.1:7100");
    r.apply_topology(&topo(2, &[7100, 7101], &[1, 0], nodes))
        .unwrap();
    assert_eq!(r.addr_for(Target::Group(0)), "127.0.0.1:7000");
    assert_eq!(r.addr_for(Target::Group(1)), "127.0.0.1:7101");
    assert!(r.on_not_leader(1, 1));
    assert_eq!(r.addr_for(Target::Group(1)), "127.0.0.1:7001");
}
