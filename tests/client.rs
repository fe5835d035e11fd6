//! The Rust client against a real `corekv` process (one node, two shards).

mod common;

use std::time::{Duration, Instant};

use common::{port_base, Server, TempDir};
use corekv::client::{Client, ClientConfig, ClientError, RetryPolicy, ThreadedClient};
use corekv::mvcc::{
    Compare, CompareOp, CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    ResponseOp, TxnRequest,
};
use corekv::proto::{group_for, ErrorCode, RaftRole, MULTI_GROUP};
use glommio::{LocalExecutorBuilder, Placement};

/// A one-node server in its own temp dir (the server is killed before the dir goes).
struct Node {
    server: Server,
    dir: TempDir,
}

impl Node {
    fn start(tag: &str) -> Node {
        let dir = TempDir::new(tag);
        let server = Server::start(&dir.0, port_base(), SHARDS);
        Node { server, dir }
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.server.port)
    }
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .expect("glommio executor")
        .run(f)
}

fn cfg(s: &Node) -> ClientConfig {
    let mut c = ClientConfig::with_endpoints([s.endpoint()]);
    c.request_timeout = Duration::from_secs(30);
    c.retry = RetryPolicy {
        max_attempts: 200,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(200),
    };
    c
}

const SHARDS: u32 = 2;

#[test]
fn kv_operations_round_trip() {
    let server = Node::start("client-kv");
    run(async {
        let c = Client::connect(cfg(&server)).await.unwrap();
        assert_eq!(c.shard_count(), SHARDS);
        let topo = c.topology().await.unwrap().body;
        assert_eq!(topo.shard_count, SHARDS);
        assert_eq!(topo.groups.len(), SHARDS as usize);

        // Puts land in their key's group; each group counts its own revisions.
        let mut last_rev = [0i64; SHARDS as usize];
        for i in 0..20 {
            let k = format!("key-{i}");
            let r = c.put(k.as_str(), format!("v{i}")).await.unwrap();
            let g = group_for(k.as_bytes(), SHARDS);
            assert_eq!(r.header.group, g);
            assert!(r.header.revision > last_rev[g as usize]);
            last_rev[g as usize] = r.header.revision;
        }
        let r = c.get("key-3").await.unwrap();
        assert_eq!(r.body.range.kvs.len(), 1);
        assert_eq!(r.body.range.kvs[0].value, b"v3");
        assert_eq!(r.body.range.kvs[0].version, 1);

        // prev_kv on overwrite.
        let r = c
            .put_with(PutRequest {
                key: b"key-3".to_vec(),
                value: b"new".to_vec(),
                prev_kv: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(r.body.prev_kv.unwrap().value, b"v3");

        // A range over every group: merged by the server.
        let all = c
            .range(RangeRequest {
                key: b"key-".to_vec(),
                range_end: b"key.".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.body.range.count, 20);
        assert_eq!(all.body.range.kvs.len(), 20);
        assert_eq!(all.header.group, MULTI_GROUP);
        assert_eq!(all.body.groups.len(), SHARDS as usize);
        let keys: Vec<&[u8]> = all.body.range.kvs.iter().map(|kv| &kv.key[..]).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "merged range is in key order");

        // Delete one key; a delete range must stay in one group (hash tag).
        let d = c.delete("key-3").await.unwrap();
        assert_eq!(d.body.deleted, 1);
        assert!(c.get("key-3").await.unwrap().body.range.kvs.is_empty());
        let e = c
            .delete_range(DeleteRangeRequest {
                key: b"key-".to_vec(),
                range_end: b"key.".to_vec(),
                prev_kv: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(&ErrorCode::InvalidArgument), "{e}");
        for i in 0..5 {
            c.put(format!("{{t}}k{i}"), "v").await.unwrap();
        }
        let d = c
            .delete_range(DeleteRangeRequest {
                key: b"{t}k".to_vec(),
                range_end: b"{t}l".to_vec(),
                prev_kv: true,
            })
            .await
            .unwrap();
        assert_eq!(d.body.deleted, 5);
        assert_eq!(d.body.prev_kvs.len(), 5);
        assert_eq!(d.header.group, group_for(b"t", SHARDS));

        // Status names every group of the node.
        let st = c.status().await.unwrap().body;
        assert_eq!(st.groups.len(), SHARDS as usize);
        assert!(st.groups.iter().all(|g| g.role == RaftRole::Leader));
    });
}

#[test]
fn txn_in_one_group_and_refused_across_groups() {
    let server = Node::start("client-txn");
    run(async {
        let c = Client::connect(cfg(&server)).await.unwrap();
        c.put("{acct}alice", "10").await.unwrap();
        let txn = TxnRequest {
            compare: vec![Compare {
                op: CompareOp::Equal,
                target: CompareTarget::Value(b"10".to_vec()),
                key: b"{acct}alice".to_vec(),
                range_end: vec![],
            }],
            success: vec![
                RequestOp::Put(PutRequest {
                    key: b"{acct}alice".to_vec(),
                    value: b"5".to_vec(),
                    ..Default::default()
                }),
                RequestOp::Put(PutRequest {
                    key: b"{acct}bob".to_vec(),
                    value: b"5".to_vec(),
                    ..Default::default()
                }),
            ],
            failure: vec![RequestOp::Range(RangeRequest {
                key: b"{acct}alice".to_vec(),
                ..Default::default()
            })],
        };
        let r = c.txn(txn.clone()).await.unwrap();
        assert!(r.body.succeeded);
        assert_eq!(r.header.group, group_for(b"acct", SHARDS));
        // Run again: the compare now fails and the failure branch reads.
        let r = c.txn(txn).await.unwrap();
        assert!(!r.body.succeeded);
        match &r.body.responses[0] {
            ResponseOp::Range(g) => assert_eq!(g.kvs[0].value, b"5"),
            other => panic!("{other:?}"),
        }

        // Two keys of different groups in one txn.
        let (a, b) = (0..100)
            .map(|i| format!("x{i}"))
            .fold((None, None), |(a, b), k| {
                match group_for(k.as_bytes(), SHARDS) {
                    0 if a.is_none() => (Some(k), b),
                    1 if b.is_none() => (a, Some(k)),
                    _ => (a, b),
                }
            });
        let cross = TxnRequest {
            compare: vec![],
            success: vec![
                RequestOp::Put(PutRequest {
                    key: a.unwrap().into_bytes(),
                    value: b"1".to_vec(),
                    ..Default::default()
                }),
                RequestOp::Put(PutRequest {
                    key: b.unwrap().into_bytes(),
                    value: b"1".to_vec(),
                    ..Default::default()
                }),
            ],
            failure: vec![],
        };
        let e = c.txn(cross).await.unwrap_err();
        assert_eq!(e.code(), Some(&ErrorCode::CrossGroupTxn), "{e}");
    });
}

#[test]
fn bad_requests_get_their_error_codes() {
    let server = Node::start("client-errors");
    run(async {
        let c = Client::connect(cfg(&server)).await.unwrap();
        let e = c.put("", "v").await.unwrap_err();
        assert_eq!(e.code(), Some(&ErrorCode::EmptyKey), "{e}");
        let e = c
            .range(RangeRequest {
                key: b"b".to_vec(),
                range_end: b"a".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(&ErrorCode::InvalidRange), "{e}");
        let r = c.put("k", "v").await.unwrap();
        let g = r.header.group;
        let e = c.compact(g, r.header.revision + 100).await.unwrap_err();
        assert!(
            matches!(e.code(), Some(ErrorCode::FutureRevision(_))),
            "{e}"
        );
        c.put("k", "v2").await.unwrap();
        c.compact(g, r.header.revision).await.unwrap();
        let e = c
            .range(RangeRequest {
                key: b"k".to_vec(),
                revision: r.header.revision - 1,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(e.code(), Some(ErrorCode::Compacted(_))), "{e}");
        let e = c.compact(SHARDS + 5, 1).await.unwrap_err();
        assert!(matches!(e, ClientError::Server { .. }), "{e}");
    });
}

#[test]
fn pipelined_writes_then_reads() {
    let server = Node::start("client-pipeline");
    let n = 4000usize;
    let (put_s, get_s) = run(async {
        let c = Client::connect(cfg(&server)).await.unwrap();
        let t0 = Instant::now();
        // Bounded: 256 tasks, each doing its share in order.
        let workers = 256;
        let tasks: Vec<_> = (0..workers)
            .map(|w| {
                let c = c.clone();
                glommio::spawn_local(async move {
                    for i in (w..n).step_by(workers) {
                        c.put(format!("p{i:05}"), format!("{i}")).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        let put_s = t0.elapsed();
        let t1 = Instant::now();
        let tasks: Vec<_> = (0..workers)
            .map(|w| {
                let c = c.clone();
                glommio::spawn_local(async move {
                    for i in (w..n).step_by(workers) {
                        let r = c.get(format!("p{i:05}")).await.unwrap();
                        assert_eq!(r.body.range.kvs[0].value, format!("{i}").as_bytes());
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        let get_s = t1.elapsed();
        assert_eq!(c.open_connections().len(), SHARDS as usize);
        (put_s, get_s)
    });
    eprintln!(
        "pipelined, 256 in flight, 1 node x {SHARDS} shards, test profile: {n} puts in {:.3}s ({:.0}/s), {n} gets in {:.3}s ({:.0}/s)",
        put_s.as_secs_f64(),
        n as f64 / put_s.as_secs_f64(),
        get_s.as_secs_f64(),
        n as f64 / get_s.as_secs_f64()
    );
}

#[test]
fn client_survives_a_server_restart() {
    let server = Node::start("client-restart");
    let client = ThreadedClient::connect(cfg(&server)).unwrap();
    for i in 0..50 {
        client
            .blocking()
            .put(format!("r{i}"), format!("{i}"))
            .unwrap();
    }
    let mut server = server;
    server.server.kill();
    // The client retries (reconnects with backoff) while the server restarts.
    let reader = {
        let c = client.clone();
        std::thread::spawn(move || c.blocking().get("r7"))
    };
    std::thread::sleep(Duration::from_millis(300));
    server.server = Server::start(&server.dir.0, server.server.port, SHARDS);
    let r = reader.join().unwrap().unwrap();
    assert_eq!(r.body.range.kvs[0].value, b"7");
    client.blocking().put("after", "restart").unwrap();
    for i in 0..50 {
        let r = client.blocking().get(format!("r{i}")).unwrap();
        assert_eq!(r.body.range.kvs[0].value, format!("{i}").as_bytes());
    }
}

#[test]
fn threaded_client_on_tokio() {
    let server = Node::start("client-tokio");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let c = ThreadedClient::connect_async(cfg(&server)).await.unwrap();
        let mut handles = Vec::new();
        for t in 0..8 {
            let c = c.clone();
            handles.push(tokio::spawn(async move {
                for i in 0..50 {
                    let k = format!("tokio-{t}-{i}");
                    c.put(k.as_str(), "v").await.unwrap();
                    let r = c.get(k.as_str()).await.unwrap();
                    assert_eq!(r.body.range.kvs[0].value, b"v");
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let all = c
            .range(RangeRequest {
                key: b"tokio-".to_vec(),
                range_end: b"tokio.".to_vec(),
                count_only: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.body.range.count, 400);
    });
}

/// Not a test: prints throughput at several depths, native and threaded. Run with
/// `cargo test --release --test client throughput -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, run by hand"]
fn throughput_report() {
    let server = Node::start("client-throughput");
    let n = 2_000usize;
    for depth in [1usize, 16, 256] {
        let (put_s, get_s) = run(async {
            let c = Client::connect(cfg(&server)).await.unwrap();
            let phase = |write: bool| {
                let c = c.clone();
                async move {
                    let t = Instant::now();
                    let tasks: Vec<_> = (0..depth)
                        .map(|w| {
                            let c = c.clone();
                            glommio::spawn_local(async move {
                                for i in (w..n).step_by(depth) {
                                    let k = format!("t{depth}-{i:06}");
                                    if write {
                                        c.put(k, "0123456789abcdef").await.unwrap();
                                    } else {
                                        c.get(k).await.unwrap();
                                    }
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await;
                    }
                    t.elapsed()
                }
            };
            let p = phase(true).await;
            let g = phase(false).await;
            (p, g)
        });
        eprintln!(
            "native  depth {depth:>3}: {:>7.0} puts/s {:>7.0} gets/s",
            n as f64 / put_s.as_secs_f64(),
            n as f64 / get_s.as_secs_f64()
        );
    }
    // Threaded handle: 8 OS threads, blocking calls.
    let c = ThreadedClient::connect(cfg(&server)).unwrap();
    for write in [true, false] {
        let t = Instant::now();
        let threads: Vec<_> = (0..8)
            .map(|w| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in (w..n).step_by(8) {
                        let k = format!("th-{i:06}");
                        if write {
                            c.blocking().put(k, "0123456789abcdef").unwrap();
                        } else {
                            c.blocking().get(k).unwrap();
                        }
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        eprintln!(
            "threaded 8 blocking threads: {:>7.0} {}/s",
            n as f64 / t.elapsed().as_secs_f64(),
            if write { "puts" } else { "gets" }
        );
    }
}
