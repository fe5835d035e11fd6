//! A real single-node `corekv` process: KV operations over the wire, restart durability,
//! SIGKILL under load, and every bad input on a raw socket.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{port_base, RawConn, Server, TempDir};
use corekv::mvcc::{
    CompactRequest, Compare, CompareOp, CompareTarget, DeleteRangeRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};
use corekv::proto::{group_for, ErrorCode, Op, Request, ResponseBody};

fn put(key: &str, value: &str) -> Request {
    Request {
        session: 0,
        seq: 0,
        op: Op::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        }),
    }
}

fn get(key: &str) -> Request {
    Request {
        session: 0,
        seq: 0,
        op: Op::Range(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        }),
    }
}

fn value_of(ans: common::Answer) -> Option<Vec<u8>> {
    match ans.expect("range ok").body {
        ResponseBody::Range(r) => r.range.kvs.first().map(|kv| kv.value.clone()),
        other => panic!("not a range answer: {other:?}"),
    }
}

/// A connection to the shard that owns `key`.
fn conn_for(s: &Server, key: &str) -> RawConn {
    RawConn::connect(s.addr(group_for(key.as_bytes(), s.shards)))
}

#[test]
fn put_get_delete_txn_compact_and_routing() {
    let dir = TempDir::new("kv");
    let s = Server::start(&dir.0, port_base(), 2);
    // Through the owning shard and through the other one (forwarded over the mesh).
    for k in ["alpha", "beta", "gamma", "delta"] {
        let mut c = conn_for(&s, k);
        let r = c.call(&put(k, &format!("v-{k}"))).expect("put ok");
        assert_eq!(r.header.group, group_for(k.as_bytes(), 2));
        let mut other = RawConn::connect(s.addr(1 - group_for(k.as_bytes(), 2)));
        assert_eq!(
            value_of(other.call(&get(k))),
            Some(format!("v-{k}").into_bytes())
        );
    }
    // A range over every group is merged in key order.
    let mut c = RawConn::connect(s.addr(0));
    let all = c
        .call(&Request {
            session: 0,
            seq: 0,
            op: Op::Range(RangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            }),
        })
        .unwrap();
    let ResponseBody::Range(r) = all.body else {
        panic!("range")
    };
    let keys: Vec<_> = r.range.kvs.iter().map(|k| k.key.clone()).collect();
    assert_eq!(
        keys,
        [
            b"alpha".to_vec(),
            b"beta".to_vec(),
            b"delta".to_vec(),
            b"gamma".to_vec()
        ]
    );
    assert_eq!(r.groups.len(), 2);
    // Txn: compare-and-swap on one key.
    let k = "alpha";
    let mut c = conn_for(&s, k);
    let cas = |expect: &str, new: &str| Request {
        session: 0,
        seq: 0,
        op: Op::Txn(TxnRequest {
            compare: vec![Compare {
                op: CompareOp::Equal,
                target: CompareTarget::Value(expect.as_bytes().to_vec()),
                key: k.as_bytes().to_vec(),
                range_end: vec![],
            }],
            success: vec![RequestOp::Put(PutRequest {
                key: k.as_bytes().to_vec(),
                value: new.as_bytes().to_vec(),
                ..Default::default()
            })],
            failure: vec![],
        }),
    };
    let ok = c.call(&cas("v-alpha", "x")).unwrap();
    assert!(matches!(ok.body, ResponseBody::Txn(t) if t.succeeded));
    let no = c.call(&cas("v-alpha", "y")).unwrap();
    assert!(matches!(no.body, ResponseBody::Txn(t) if !t.succeeded));
    assert_eq!(value_of(c.call(&get(k))), Some(b"x".to_vec()));
    // Delete, then compact the group and read below it.
    let del = c
        .call(&Request {
            session: 0,
            seq: 0,
            op: Op::DeleteRange(DeleteRangeRequest {
                key: k.as_bytes().to_vec(),
                prev_kv: true,
                ..Default::default()
            }),
        })
        .unwrap();
    assert!(matches!(del.body, ResponseBody::DeleteRange(d) if d.deleted == 1));
    assert_eq!(value_of(c.call(&get(k))), None);
    let rev = del.header.revision;
    let g = group_for(k.as_bytes(), 2);
    c.call(&Request {
        session: 0,
        seq: 0,
        op: Op::Compact {
            group: g,
            request: CompactRequest { revision: rev },
        },
    })
    .unwrap();
    let old = c
        .call(&Request {
            session: 0,
            seq: 0,
            op: Op::Range(RangeRequest {
                key: k.as_bytes().to_vec(),
                revision: rev - 1,
                ..Default::default()
            }),
        })
        .unwrap_err();
    assert!(matches!(old.code, ErrorCode::Compacted(_)), "{old:?}");
    let future = c
        .call(&Request {
            session: 0,
            seq: 0,
            op: Op::Range(RangeRequest {
                key: k.as_bytes().to_vec(),
                revision: rev + 1000,
                ..Default::default()
            }),
        })
        .unwrap_err();
    assert!(
        matches!(future.code, ErrorCode::FutureRevision(_)),
        "{future:?}"
    );
}

#[test]
fn acknowledged_writes_survive_clean_restart() {
    let dir = TempDir::new("restart");
    let port = port_base();
    let mut s = Server::start(&dir.0, port, 2);
    let mut conns = [RawConn::connect(s.addr(0)), RawConn::connect(s.addr(1))];
    for i in 0..300 {
        let k = format!("key-{i}");
        let g = group_for(k.as_bytes(), 2) as usize;
        conns[g].call(&put(&k, &format!("value-{i}"))).unwrap();
    }
    assert_eq!(s.stop(), Some(0), "clean shutdown exits 0");
    let s = Server::start(&dir.0, port, 2);
    let mut conns = [RawConn::connect(s.addr(0)), RawConn::connect(s.addr(1))];
    for i in 0..300 {
        let k = format!("key-{i}");
        let g = group_for(k.as_bytes(), 2) as usize;
        assert_eq!(
            value_of(conns[g].call(&get(&k))),
            Some(format!("value-{i}").into_bytes()),
            "{k} lost across a restart"
        );
    }
}

/// SIGKILL the server while pipelined writes are in flight, 20 rounds: every write that
/// was acknowledged before the kill is there after the restart. Odd rounds make the WAL
/// durable with O_DSYNC writes (`--wal-sync dsync`), even rounds with fdatasync.
#[test]
fn acknowledged_writes_survive_sigkill_under_load() {
    let dir = TempDir::new("sigkill");
    let port = port_base();
    let mut acked: Vec<(String, String)> = Vec::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for round in 0..20 {
        let sync: &[&str] = if round % 2 == 1 {
            &["--wal-sync", "dsync"]
        } else {
            &[]
        };
        let mut s = Server::start_with(&dir.0, port, 2, sync);
        // What the previous round acknowledged last is there (all of it is checked at
        // the end).
        let mut conns = [RawConn::connect(s.addr(0)), RawConn::connect(s.addr(1))];
        for (k, v) in acked.iter().rev().take(64) {
            let g = group_for(k.as_bytes(), 2) as usize;
            assert_eq!(
                value_of(conns[g].call(&get(k))),
                Some(v.clone().into_bytes()),
                "round {round}: acknowledged {k} lost"
            );
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = Duration::from_millis(50 + rng % 250);
        let start = Instant::now();
        let mut n = 0u64;
        let mut window: std::collections::HashMap<u64, (usize, String, String)> =
            Default::default();
        // Keep 32 writes in flight on each connection until the kill.
        'load: loop {
            for (g, c) in conns.iter_mut().enumerate() {
                while window.values().filter(|w| w.0 == g).count() < 32 {
                    let k = loop {
                        let k = format!("r{round}-k{n}");
                        n += 1;
                        if group_for(k.as_bytes(), 2) as usize == g {
                            break k;
                        }
                    };
                    let v = format!("v{n}");
                    let id = c.send(&put(&k, &v));
                    window.insert(id * 2 + g as u64, (g, k, v));
                }
            }
            if start.elapsed() >= kill_after {
                s.kill();
                break 'load;
            }
            for (g, c) in conns.iter_mut().enumerate() {
                if let Some((id, ans)) = c.recv() {
                    let (_, k, v) = window.remove(&(id * 2 + g as u64)).expect("known id");
                    ans.expect("put ok");
                    acked.push((k, v));
                }
            }
        }
        assert!(!s.is_running());
    }
    let s = Server::start(&dir.0, port, 2);
    assert!(
        acked.len() > 100,
        "the load loop acknowledged only {}",
        acked.len()
    );
    check_all(&s, &acked);
}

/// Reads every key back (pipelined, 256 in flight per shard) and compares.
fn check_all(s: &Server, expected: &[(String, String)]) {
    let mut conns = [RawConn::connect(s.addr(0)), RawConn::connect(s.addr(1))];
    for chunk in expected.chunks(512) {
        let mut sent = std::collections::HashMap::new();
        for (k, v) in chunk {
            let g = group_for(k.as_bytes(), 2) as usize;
            let id = conns[g].send(&get(k));
            sent.insert((g, id), (k, v));
        }
        for (g, c) in conns.iter_mut().enumerate() {
            while sent.keys().any(|(sg, _)| *sg == g) {
                let (id, ans) = c.recv().expect("answer");
                let (k, v) = sent.remove(&(g, id)).expect("known id");
                assert_eq!(
                    value_of(ans),
                    Some(v.clone().into_bytes()),
                    "acknowledged {k} lost"
                );
            }
        }
    }
}

/// Every bad input gets its error (or the connection is closed), nothing is persisted,
/// and the server keeps serving every other connection.
#[test]
fn bad_input_on_a_raw_socket() {
    let dir = TempDir::new("bad");
    let s = Server::start(&dir.0, port_base(), 2);
    let mut good = RawConn::connect(s.addr(0));
    let healthy = |c: &mut RawConn| {
        c.call(&put("{h}k", "ok")).expect("the server still serves");
    };
    let err_of = |req: &Request| -> ErrorCode {
        let g = match &req.op {
            Op::Put(p) if !p.key.is_empty() => group_for(&p.key, 2),
            _ => 0,
        };
        let mut c = RawConn::connect(s.addr(g));
        let e = c.call(req).expect_err("must be refused");
        healthy(&mut c); // a refused request does not break the connection
        e.code
    };
    // Empty key.
    assert_eq!(err_of(&put("", "v")), ErrorCode::EmptyKey);
    // A request over the 1.5 MiB limit in a frame under the 2 MiB frame limit.
    assert_eq!(
        err_of(&put("{big}k", &"x".repeat(1600 << 10))),
        ErrorCode::RequestTooLarge
    );
    // A frame over the frame limit: an error frame, then the connection is closed (the
    // server stops reading, so the rest of our write may fail: that is fine).
    let mut c = RawConn::connect(s.addr(0));
    let _ = c
        .stream
        .write_all(&RawConn::encode(1, &put("k", &"x".repeat(3 << 20))));
    match c.recv() {
        Some((_, Err(e))) => assert_eq!(e.code, ErrorCode::FrameTooLarge, "{e:?}"),
        None => {} // reset before the error frame could be read
        other => panic!("oversized frame accepted: {other:?}"),
    }
    assert!(c.is_closed(), "connection kept after an oversized frame");
    // Txn with too many ops, and with the same key twice.
    let ops = |n: usize, same: bool| {
        (0..n)
            .map(|i| {
                RequestOp::Put(PutRequest {
                    key: if same {
                        b"{t}k".to_vec()
                    } else {
                        format!("{{t}}k{i}").into_bytes()
                    },
                    value: b"v".to_vec(),
                    ..Default::default()
                })
            })
            .collect::<Vec<_>>()
    };
    let txn = |success| Request {
        session: 0,
        seq: 0,
        op: Op::Txn(TxnRequest {
            compare: vec![],
            success,
            failure: vec![],
        }),
    };
    assert_eq!(err_of(&txn(ops(129, false))), ErrorCode::TooManyOps);
    assert_eq!(err_of(&txn(ops(2, true))), ErrorCode::DuplicateKey);
    // A Txn over two groups.
    let cross = Request {
        session: 0,
        seq: 0,
        op: Op::Txn(TxnRequest {
            compare: vec![],
            success: ["a", "b", "c", "d", "e", "f"]
                .iter()
                .map(|k| {
                    RequestOp::Put(PutRequest {
                        key: k.as_bytes().to_vec(),
                        value: b"v".to_vec(),
                        ..Default::default()
                    })
                })
                .collect(),
            failure: vec![],
        }),
    };
    assert_eq!(err_of(&cross), ErrorCode::CrossGroupTxn);
    // range_end before key.
    let bad_range = Request {
        session: 0,
        seq: 0,
        op: Op::Range(RangeRequest {
            key: b"{r}z".to_vec(),
            range_end: b"{r}a".to_vec(),
            ..Default::default()
        }),
    };
    assert_eq!(err_of(&bad_range), ErrorCode::InvalidRange);
    // A lease that does not exist.
    let leased = Request {
        session: 0,
        seq: 0,
        op: Op::Put(PutRequest {
            key: b"{l}k".to_vec(),
            value: b"v".to_vec(),
            lease: 77,
            ..Default::default()
        }),
    };
    assert!(matches!(err_of(&leased), ErrorCode::LeaseNotFound(77)));

    // Frame-level garbage: each on its own connection, which is closed.
    let frame = RawConn::encode(9, &put("{g}k", "v"));
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    cases.push((
        "garbage",
        b"this is not a frame at all, not even close....".to_vec(),
    ));
    let mut huge = frame.clone();
    huge[0..4].copy_from_slice(&(64u32 << 20).to_le_bytes());
    cases.push(("length over the limit", huge));
    let mut tiny = frame.clone();
    tiny[0..4].copy_from_slice(&8u32.to_le_bytes());
    cases.push(("length under the header", tiny));
    let mut crc = frame.clone();
    let last = crc.len() - 9;
    crc[last] ^= 0x40;
    cases.push(("bad checksum", crc));
    for (what, bytes) in cases {
        let mut c = RawConn::connect(s.addr(0));
        let _ = c.stream.write_all(&bytes);
        // Error frames, then EOF: `recv` returning None is the close.
        while let Some((_, ans)) = c.recv() {
            assert!(ans.is_err(), "{what}: accepted");
        }
    }
    // Truncated frame then EOF: nothing applied.
    {
        let mut c = RawConn::connect(s.addr(group_for(b"{g}trunc", 2)));
        let f = RawConn::encode(1, &put("{g}trunc", "never"));
        c.stream.write_all(&f[..f.len() - 5]).unwrap();
        c.stream.shutdown(std::net::Shutdown::Write).unwrap();
        while c.recv().is_some() {}
    }
    // A sound frame (checksum recomputed) whose archive is invalid: every payload byte
    // 0xff, so the operation's enum tag is out of range and its pointers leave the buffer.
    {
        let mut f = RawConn::encode(5, &put("{g}inv", "value"));
        let payload_len = u32::from_le_bytes(f[20..24].try_into().unwrap()) as usize;
        for b in &mut f[24..24 + payload_len] {
            *b = 0xff;
        }
        let crc = crc32fast::hash(&f[8..]);
        f[4..8].copy_from_slice(&crc.to_le_bytes());
        let mut c = RawConn::connect(s.addr(group_for(b"{g}inv", 2)));
        c.stream.write_all(&f).unwrap();
        let (id, ans) = c.recv().expect("an error frame");
        assert_eq!(id, 5);
        assert_eq!(ans.unwrap_err().code, ErrorCode::InvalidMessage);
        healthy(&mut c);
    }
    // An unknown frame kind.
    {
        let mut f = RawConn::encode(6, &put("{g}kind", "value"));
        f[16..18].copy_from_slice(&999u16.to_le_bytes());
        let crc = crc32fast::hash(&f[8..]);
        f[4..8].copy_from_slice(&crc.to_le_bytes());
        let mut c = RawConn::connect(s.addr(0));
        c.stream.write_all(&f).unwrap();
        let (_, ans) = c.recv().expect("an error frame");
        assert_eq!(ans.unwrap_err().code, ErrorCode::UnknownRequest);
    }
    // Nothing of the refused writes was persisted.
    for k in [
        "{g}trunc", "{g}inv", "{g}kind", "{g}k", "k", "{l}k", "{t}k", "{t}k0",
    ] {
        let mut c = conn_for(&s, k);
        assert_eq!(value_of(c.call(&get(k))), None, "{k} was persisted");
    }
    healthy(&mut good);
}
