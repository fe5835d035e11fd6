//! Tests of corekvctl's parsing and output.

use std::time::Duration;

use super::output::*;
use super::txn::{parse_compare, parse_txn, split_words};
use super::*;
use crate::client::Reply;
use crate::mvcc::{
    Compare, CompareOp, CompareTarget, DeleteRangeResponse, KeyValue, PutResponse, RangeResponse,
    RequestOp, ResponseOp, TxnResponse,
};
use crate::proto::{
    GroupRevision, GroupStatus, GroupTopology, NodeAddr, RaftRole, RangeResult, ResponseHeader,
    StatusResponse, TopologyResponse,
};

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn parse(s: &str) -> Result<Invocation, UsageError> {
    parse_args(&args(s))
}

fn cmd(s: &str) -> Command {
    parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}")).command
}

fn usage_msg(s: &str) -> String {
    parse(s).expect_err(s).message
}

#[test]
fn defaults_and_global_flags() {
    let inv = parse("get foo").unwrap();
    assert_eq!(inv.endpoints, vec!["127.0.0.1:7379".to_string()]);
    assert_eq!(inv.timeout, Duration::from_secs(10));
    assert_eq!(inv.format, OutputFormat::Simple);

    let inv = parse("--endpoints 127.0.0.1:1,localhost:2 --timeout 2.5 -w json get foo").unwrap();
    assert_eq!(inv.endpoints, vec!["127.0.0.1:1", "localhost:2"]);
    assert_eq!(inv.timeout, Duration::from_millis(2500));
    assert_eq!(inv.format, OutputFormat::Json);

    // Global flags after the command, and --flag=value.
    let inv = parse("get foo --endpoints=h:9 --write-out=json --timeout=3s").unwrap();
    assert_eq!(inv.endpoints, vec!["h:9"]);
    assert_eq!(inv.format, OutputFormat::Json);
    assert_eq!(inv.timeout, Duration::from_secs(3));
}

#[test]
fn bad_usage_is_reported() {
    assert!(usage_msg("").contains("no command"));
    assert!(usage_msg("frobnicate").contains("unknown command"));
    assert!(usage_msg("get").contains("missing KEY"));
    assert!(usage_msg("get a b c").contains("too many arguments"));
    assert!(usage_msg("get a --bogus").contains("unknown flag --bogus"));
    assert!(usage_msg("get a --limit").contains("needs a value"));
    assert!(usage_msg("get a --limit x").contains("not a valid number"));
    assert!(usage_msg("get a --limit -1").contains("negative"));
    assert!(usage_msg("get a --prefix --from-key").contains("at most one"));
    assert!(usage_msg("get a z --prefix").contains("at most one"));
    assert!(usage_msg("get a --consistency x").contains("l or s"));
    assert!(usage_msg("get a --sort-by size").contains("--sort-by"));
    assert!(usage_msg("get a --order up").contains("ASCEND"));
    assert!(usage_msg("put a").contains("KEY and VALUE"));
    assert!(usage_msg("put a b --prev-kv=yes").contains("takes no value"));
    assert!(usage_msg("put a b --ignore-value").contains("KEY only"));
    assert!(usage_msg("compact").contains("one REV"));
    assert!(usage_msg("compact 0").contains("positive"));
    assert!(usage_msg("compact x").contains("not a valid revision"));
    assert!(usage_msg("compact 5 --group -1").contains("not a valid number"));
    assert!(usage_msg("status extra").contains("takes no arguments"));
    assert!(usage_msg("--endpoints nohost get a").contains("not host:port"));
    assert!(usage_msg("--endpoints h:99999 get a").contains("not host:port"));
    assert!(usage_msg("--timeout 0 get a").contains("between"));
    assert!(usage_msg("-w yaml get a").contains("simple or json"));
    // put's flags are not get's.
    assert!(usage_msg("get a --prev-kv").contains("unknown flag"));
    // The usage text names the command.
    assert!(parse("get").unwrap_err().usage.contains("corekvctl get"));
}

#[test]
fn help_per_command() {
    match cmd("--help") {
        Command::Help(t) => assert!(t.contains("commands:")),
        other => panic!("{other:?}"),
    }
    for (c, needle) in [
        ("put", "corekvctl put"),
        ("get", "--sort-by"),
        ("del", "corekvctl del"),
        ("txn", "mod(\"key1\")"),
        ("compact", "--group"),
        ("status", "corekvctl status"),
        ("topology", "corekvctl topology"),
    ] {
        match cmd(&format!("{c} --help")) {
            Command::Help(t) => assert!(t.contains(needle), "{c}: {t}"),
            other => panic!("{c}: {other:?}"),
        }
        match cmd(&format!("{c} -h")) {
            Command::Help(t) => assert!(t.contains(needle)),
            other => panic!("{c}: {other:?}"),
        }
    }
}

#[test]
fn put_flags() {
    let Command::Put(p) = cmd("put k v") else {
        panic!()
    };
    assert_eq!(
        (p.key.as_slice(), p.value.as_slice()),
        (&b"k"[..], &b"v"[..])
    );
    assert!(!p.prev_kv && !p.ignore_value && !p.ignore_lease);
    let Command::Put(p) = cmd("put k v --prev-kv --ignore-lease") else {
        panic!()
    };
    assert!(p.prev_kv && p.ignore_lease && !p.ignore_value);
    let Command::Put(p) = cmd("put --ignore-value k") else {
        panic!()
    };
    assert!(p.ignore_value && p.value.is_empty());
    // `--` lets a value start with '-'.
    let Command::Put(p) = cmd("put k -- -5") else {
        panic!()
    };
    assert_eq!(p.value, b"-5");
}

#[test]
fn get_ranges_and_options() {
    let Command::Get(r) = cmd("get foo") else {
        panic!()
    };
    assert_eq!(
        (r.key.as_slice(), r.range_end.as_slice()),
        (&b"foo"[..], &b""[..])
    );
    assert!(!r.serializable);

    let Command::Get(r) = cmd("get a c") else {
        panic!()
    };
    assert_eq!(r.range_end, b"c");

    let Command::Get(r) = cmd("get foo --prefix") else {
        panic!()
    };
    assert_eq!(r.range_end, b"fop");

    let Command::Get(r) = cmd("get foo --from-key") else {
        panic!()
    };
    assert_eq!(r.range_end, vec![0]);

    let Command::Get(r) = parse_args(&["get".into(), "".into(), "--prefix".into()])
        .unwrap()
        .command
    else {
        panic!()
    };
    assert_eq!((r.key, r.range_end), (vec![0], vec![0]));

    let Command::Get(r) = cmd(
        "get a --prefix --limit 5 --rev 7 --keys-only --count-only --consistency s \
         --sort-by modify --order DESCEND",
    ) else {
        panic!()
    };
    assert_eq!(r.limit, 5);
    assert_eq!(r.revision, 7);
    assert!(r.keys_only && r.count_only && r.serializable);
    assert_eq!(r.sort_target, SortTarget::Mod);
    assert_eq!(r.sort_order, SortOrder::Descend);

    // A sort target alone sorts ascending (etcdctl).
    let Command::Get(r) = cmd("get a --sort-by VERSION") else {
        panic!()
    };
    assert_eq!(
        (r.sort_target, r.sort_order),
        (SortTarget::Version, SortOrder::Ascend)
    );
    let Command::Get(r) = cmd("get a --order descend") else {
        panic!()
    };
    assert_eq!(
        (r.sort_target, r.sort_order),
        (SortTarget::Key, SortOrder::Descend)
    );
}

#[test]
fn del_and_compact() {
    let Command::Del(d) = cmd("del k --prefix --prev-kv") else {
        panic!()
    };
    assert_eq!(
        (d.key.as_slice(), d.range_end.as_slice()),
        (&b"k"[..], &b"l"[..])
    );
    assert!(d.prev_kv);
    let Command::Del(d) = cmd("delete a b") else {
        panic!()
    };
    assert_eq!(d.range_end, b"b");
    assert_eq!(
        cmd("compact 42"),
        Command::Compact {
            revision: 42,
            group: None
        }
    );
    assert_eq!(
        cmd("compact 42 --group 3"),
        Command::Compact {
            revision: 42,
            group: Some(3)
        }
    );
    assert_eq!(cmd("status"), Command::Status);
    assert_eq!(cmd("topology"), Command::Topology);
    assert_eq!(cmd("txn"), Command::Txn);
}

#[test]
fn prefix_range_end_follows_etcd() {
    use crate::client::prefix_range_end;
    assert_eq!(prefix_range_end(b"abc"), b"abd");
    assert_eq!(prefix_range_end(b"a\xff"), b"b");
    assert_eq!(prefix_range_end(b"\xff\xff"), vec![0]);
    assert_eq!(prefix_range_end(b""), vec![0]);
    assert_eq!(prefix_range_end(b"{t}x"), b"{t}y");
}

// ---------------------------------------------------------------- txn text

#[test]
fn txn_text_full_example() {
    let text = "mod(\"key1\") > \"0\"\nvalue(\"key2\") = \"v\"\n\nput key1 \"overwrote-key1\"\nget key2\n\nput key1 \"created-key1\"\ndel key3 --prefix\n";
    let t = parse_txn(text).unwrap();
    assert_eq!(
        t.compare,
        vec![
            Compare {
                op: CompareOp::Greater,
                target: CompareTarget::Mod(0),
                key: b"key1".to_vec(),
                range_end: vec![],
            },
            Compare {
                op: CompareOp::Equal,
                target: CompareTarget::Value(b"v".to_vec()),
                key: b"key2".to_vec(),
                range_end: vec![],
            },
        ]
    );
    assert_eq!(t.success.len(), 2);
    match &t.success[0] {
        RequestOp::Put(p) => {
            assert_eq!(
                (p.key.as_slice(), p.value.as_slice()),
                (&b"key1"[..], &b"overwrote-key1"[..])
            )
        }
        other => panic!("{other:?}"),
    }
    match &t.success[1] {
        RequestOp::Range(r) => assert_eq!(r.key, b"key2"),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.failure.len(), 2);
    match &t.failure[1] {
        RequestOp::DeleteRange(d) => assert_eq!(
            (d.key.as_slice(), d.range_end.as_slice()),
            (&b"key3"[..], &b"key4"[..])
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn txn_text_sections_may_be_empty() {
    let t = parse_txn("\nput a b\n").unwrap();
    assert!(t.compare.is_empty() && t.failure.is_empty());
    assert_eq!(t.success.len(), 1);
    let t = parse_txn("version(\"a\") = \"1\"\n").unwrap();
    assert_eq!(t.compare.len(), 1);
    assert!(t.success.is_empty());
    let t = parse_txn("").unwrap();
    assert_eq!(t, crate::mvcc::TxnRequest::default());
    // CRLF line ends and trailing blank lines.
    let t = parse_txn("c(\"a\") != \"3\"\r\n\r\nget a\r\n\r\ndel a\r\n\r\n\r\n").unwrap();
    assert_eq!(t.compare[0].target, CompareTarget::Create(3));
    assert_eq!(t.compare[0].op, CompareOp::NotEqual);
    assert_eq!((t.success.len(), t.failure.len()), (1, 1));
}

#[test]
fn txn_text_errors_name_the_line() {
    let e = parse_txn("mod(\"a\") > \"0\"\nbogus\n").unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("malformed comparison"), "{e}");
    let e = parse_txn("\nput a\n").unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("KEY and VALUE"), "{e}");
    let e = parse_txn("\n\nfrob a\n").unwrap_err();
    assert_eq!(e.line, 3);
    assert!(e.message.contains("unknown request"), "{e}");
    let e = parse_txn("\nget a\n\nget b\n\nget c\n").unwrap_err();
    assert_eq!(e.line, 6);
    assert!(e.message.contains("after the failure"), "{e}");
    assert!(e.to_string().starts_with("txn line 6:"));
}

#[test]
fn compare_syntax() {
    let c = parse_compare("ver(\"k\") < \"5\"").unwrap();
    assert_eq!(
        (c.op, c.target),
        (CompareOp::Less, CompareTarget::Version(5))
    );
    let c = parse_compare("version(\"k\") == 5").unwrap();
    assert_eq!(
        (c.op, c.target),
        (CompareOp::Equal, CompareTarget::Version(5))
    );
    let c = parse_compare("m(\"k\", \"l\") > \"9\"").unwrap();
    assert_eq!(c.range_end, b"l");
    assert_eq!(c.target, CompareTarget::Mod(9));
    let c = parse_compare("lease(\"k\") = \"77\"").unwrap();
    assert_eq!(c.target, CompareTarget::Lease(77));
    let c = parse_compare("val(\"k\") = \"a \\\"quoted\\\" value\"").unwrap();
    assert_eq!(
        c.target,
        CompareTarget::Value(b"a \"quoted\" value".to_vec())
    );
    let c = parse_compare("value(\"k\") != \"\"").unwrap();
    assert_eq!(c.target, CompareTarget::Value(vec![]));

    for (bad, needle) in [
        ("mod k > 0", "malformed"),
        ("mod(k) > \"0\"", "double-quoted key"),
        ("mod(\"k\" > \"0\"", "expected ')'"),
        ("mod(\"k\") \"0\"", "missing operator"),
        ("mod(\"k\") >= \"0\"", "unknown comparison operator"),
        ("mod(\"k\") >", "missing value"),
        ("mod(\"k\") > \"x\"", "needs a number"),
        ("size(\"k\") > \"1\"", "unknown comparison target"),
        ("mod(\"k\") > \"1\" extra", "unexpected"),
        ("value(\"k) = \"v\"", "expected ')'"),
    ] {
        let e = parse_compare(bad).expect_err(bad);
        assert!(e.contains(needle), "{bad:?}: {e}");
    }
}

#[test]
fn words_split_like_a_shell() {
    assert_eq!(split_words("put a b").unwrap(), vec!["put", "a", "b"]);
    assert_eq!(
        split_words("put \"a b\" 'c \\d'").unwrap(),
        vec!["put", "a b", "c \\d"]
    );
    assert_eq!(split_words("put k \"\"").unwrap(), vec!["put", "k", ""]);
    assert_eq!(split_words("x\"y\"z").unwrap(), vec!["xyz"]);
    assert_eq!(
        split_words("put k \"tab\\there\\x41\\n\"").unwrap(),
        vec!["put", "k", "tab\thereA\n"]
    );
    assert!(split_words("put \"open")
        .unwrap_err()
        .contains("unterminated"));
    assert!(split_words("put 'open")
        .unwrap_err()
        .contains("unterminated"));
    assert!(split_words("put \"\\q\"")
        .unwrap_err()
        .contains("unknown escape"));
    assert!(split_words("put \"\\xZZ\"")
        .unwrap_err()
        .contains("bad escape"));
}

// ---------------------------------------------------------------- output

fn kv(k: &str, v: &str, rev: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        create_revision: rev,
        mod_revision: rev,
        version: 1,
        value: v.into(),
        lease: 0,
    }
}

fn header(group: u32, revision: i64) -> ResponseHeader {
    ResponseHeader {
        group,
        revision,
        raft_term: 2,
        node_id: 1,
    }
}

#[test]
fn simple_output_like_etcdctl() {
    assert_eq!(put_simple(&PutResponse { prev_kv: None }), "OK\n");
    assert_eq!(
        put_simple(&PutResponse {
            prev_kv: Some(kv("k", "old", 3))
        }),
        "OK\nk\nold\n"
    );
    let r = RangeResult {
        range: RangeResponse {
            kvs: vec![kv("a", "1", 2), kv("b", "2", 3)],
            more: false,
            count: 2,
        },
        groups: vec![],
    };
    assert_eq!(get_simple(&r, false, false), "a\n1\nb\n2\n");
    assert_eq!(get_simple(&r, true, false), "a\nb\n");
    assert_eq!(get_simple(&r, false, true), "2\n");
    assert_eq!(get_simple(&RangeResult::default(), false, false), "");
    assert_eq!(
        del_simple(&DeleteRangeResponse {
            deleted: 1,
            prev_kvs: vec![kv("a", "1", 2)]
        }),
        "1\na\n1\n"
    );
    let t = TxnResponse {
        succeeded: false,
        responses: vec![
            ResponseOp::Put(PutResponse { prev_kv: None }),
            ResponseOp::Range(RangeResponse {
                kvs: vec![kv("k", "v", 4)],
                more: false,
                count: 1,
            }),
            ResponseOp::DeleteRange(DeleteRangeResponse {
                deleted: 0,
                prev_kvs: vec![],
            }),
        ],
    };
    assert_eq!(txn_simple(&t), "FAILURE\n\nOK\n\nk\nv\n\n0\n");
    assert_eq!(
        txn_simple(&TxnResponse {
            succeeded: true,
            responses: vec![]
        }),
        "SUCCESS\n"
    );
    assert_eq!(compact_simple(1, 9), "compacted group 1 at revision 9\n");
}

#[test]
fn base64_and_json_strings() {
    for (input, want) in [
        (&b""[..], ""),
        (b"f", "Zg=="),
        (b"fo", "Zm8="),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg=="),
        (b"fooba", "Zm9vYmE="),
        (b"foobar", "Zm9vYmFy"),
        (b"\xff\x00\xfe", "/wD+"),
    ] {
        assert_eq!(base64(input), want);
    }
    assert_eq!(json_str("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
}

#[test]
fn json_output_shapes() {
    let r = Reply {
        header: header(0, 5),
        body: RangeResult {
            range: RangeResponse {
                kvs: vec![kv("foo", "bar", 5)],
                more: true,
                count: 3,
            },
            groups: vec![GroupRevision {
                group: 0,
                revision: 5,
            }],
        },
    };
    assert_eq!(
        get_json(&r),
        "{\"header\":{\"group\":0,\"revision\":5,\"raft_term\":2,\"node_id\":1},\
         \"kvs\":[{\"key\":\"Zm9v\",\"create_revision\":5,\"mod_revision\":5,\"version\":1,\"value\":\"YmFy\"}],\
         \"more\":true,\"count\":3,\"groups\":[{\"group\":0,\"revision\":5}]}\n"
    );
    let p = Reply {
        header: header(1, 7),
        body: PutResponse { prev_kv: None },
    };
    assert_eq!(
        put_json(&p),
        "{\"header\":{\"group\":1,\"revision\":7,\"raft_term\":2,\"node_id\":1}}\n"
    );
    let multi = Reply {
        header: header(crate::proto::MULTI_GROUP, 0),
        body: DeleteRangeResponse {
            deleted: 2,
            prev_kvs: vec![],
        },
    };
    assert!(del_json(&multi).starts_with("{\"header\":{\"group\":\"all\""));
    let t = Reply {
        header: header(0, 9),
        body: TxnResponse {
            succeeded: true,
            responses: vec![
                ResponseOp::Put(PutResponse { prev_kv: None }),
                ResponseOp::DeleteRange(DeleteRangeResponse {
                    deleted: 1,
                    prev_kvs: vec![],
                }),
            ],
        },
    };
    assert_eq!(
        txn_json(&t),
        "{\"header\":{\"group\":0,\"revision\":9,\"raft_term\":2,\"node_id\":1},\"succeeded\":true,\
         \"responses\":[{\"response_put\":{}},{\"response_delete_range\":{\"deleted\":1}}]}\n"
    );
}

#[test]
fn status_and_topology_tables() {
    let s = StatusResponse {
        node_id: 1,
        cluster_id: 0xabc,
        groups: vec![
            GroupStatus {
                group: 1,
                role: RaftRole::Follower,
                leader: 0,
                term: 3,
                revision: 10,
                compact_revision: 0,
                committed_index: 20,
                applied_index: 19,
                db_size_bytes: 1_234_567,
                wal_size_bytes: 512,
            },
            GroupStatus {
                group: 0,
                role: RaftRole::Leader,
                leader: 1,
                term: 2,
                revision: 7,
                compact_revision: 3,
                committed_index: 11,
                applied_index: 11,
                db_size_bytes: 20_480,
                wal_size_bytes: 64 << 20,
            },
        ],
    };
    let out = status_simple(&s);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "node 1 cluster 0xabc");
    assert!(lines[2].contains("GROUP") && lines[2].contains("RAFT APPLIED"));
    // Sorted by group; every row as wide as the header.
    assert!(lines[4].starts_with("| 0 ") && lines[4].contains("leader"));
    assert!(lines[5].starts_with("| 1 ") && lines[5].contains("unknown"));
    assert!(lines[4].contains("20 kB") && lines[4].contains("67 MB"));
    assert!(lines[5].contains("1.2 MB") && lines[5].contains("512 B"));
    assert!(lines.iter().skip(1).all(|l| l.len() == lines[1].len()));
    assert!(status_json(&s).contains("\"role\":\"follower\",\"leader\":0"));

    let t = TopologyResponse {
        node_id: 1,
        cluster_id: 7,
        shard_count: 2,
        groups: vec![
            GroupTopology {
                group: 0,
                shard: 0,
                client_port: 7379,
                leader: 1,
            },
            GroupTopology {
                group: 1,
                shard: 1,
                client_port: 7380,
                leader: 0,
            },
        ],
        nodes: vec![NodeAddr {
            node_id: 1,
            host: "127.0.0.1".into(),
            client_port_base: 7379,
            peer_port_base: 7479,
        }],
    };
    let out = topology_simple(&t);
    assert!(out.starts_with("node 1 cluster 0x7 shards 2\n"));
    assert!(
        out.contains("| 1     | 1     | 7380        | unknown |"),
        "{out}"
    );
    assert!(out.contains("127.0.0.1"));
    assert!(topology_json(&t).contains("\"nodes\":[{\"node_id\":1,\"host\":\"127.0.0.1\""));
}

#[test]
fn human_bytes_units() {
    assert_eq!(human_bytes(0), "0 B");
    assert_eq!(human_bytes(999), "999 B");
    assert_eq!(human_bytes(1000), "1.0 kB");
    assert_eq!(human_bytes(25_000), "25 kB");
    assert_eq!(human_bytes(3_500_000_000), "3.5 GB");
}

#[test]
fn txn_op_lines_take_command_flags() {
    let op = txn::parse_op_line("get k --prefix --limit 2 --keys-only").unwrap();
    match op {
        RequestOp::Range(r) => {
            assert_eq!(r.range_end, b"l");
            assert_eq!(r.limit, 2);
            assert!(r.keys_only);
        }
        other => panic!("{other:?}"),
    }
    match txn::parse_op_line("put \"{t}a\" \"hello world\" --prev-kv").unwrap() {
        RequestOp::Put(p) => {
            assert_eq!(p.key, b"{t}a");
            assert_eq!(p.value, b"hello world");
            assert!(p.prev_kv);
        }
        other => panic!("{other:?}"),
    }
    assert!(txn::parse_op_line("get k --endpoints x:1").is_err());
}

#[test]
fn member_commands_parse_and_refuse_bad_input() {
    use super::{parse_args, Command, MemberCommand};
    let parse = |a: &[&str]| parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let cmd = |a: &[&str]| parse(a).map(|i| i.command);
    assert_eq!(
        cmd(&["member", "list"]),
        Ok(Command::Member(MemberCommand::List))
    );
    assert_eq!(
        cmd(&["member", "promote", "4"]),
        Ok(Command::Member(MemberCommand::Promote(4)))
    );
    assert_eq!(
        cmd(&["member", "remove", "2"]),
        Ok(Command::Member(MemberCommand::Remove(2)))
    );
    match cmd(&["member", "add", "d", "127.0.0.1:9100/9000"]) {
        Ok(Command::Member(MemberCommand::Add(a))) => {
            assert_eq!((a.name.as_str(), a.host.as_str()), ("d", "127.0.0.1"));
            assert_eq!(
                (a.peer_port_base, a.client_port_base, a.learner),
                (9100, 9000, true)
            );
        }
        other => panic!("{other:?}"),
    }
    match cmd(&["member", "add", "d", "127.0.0.1:9100", "--voter"]) {
        Ok(Command::Member(MemberCommand::Add(a))) => assert!(!a.learner),
        other => panic!("{other:?}"),
    }
    for bad in [
        &["member"][..],
        &["member", "promote", "0"],
        &["member", "remove", "x"],
        &["member", "add", "d", "localhost:1"],
        &["member", "add", "d", "127.0.0.1:99999"],
        &["member", "frobnicate"],
    ] {
        assert!(parse(bad).is_err(), "{bad:?} accepted");
    }
}

fn group(group: u32, role: RaftRole, term: u64, commit: u64, applied: u64) -> GroupStatus {
    GroupStatus {
        group,
        role,
        leader: if role == RaftRole::Leader { 1 } else { 0 },
        term,
        revision: 5,
        compact_revision: 0,
        committed_index: commit,
        applied_index: applied,
        db_size_bytes: 4096,
        wal_size_bytes: 8192,
    }
}

fn node(id: u64, status: Result<Vec<GroupStatus>, &str>) -> NodeStatus {
    NodeStatus {
        node_id: id,
        name: format!("n{id}"),
        endpoint: format!("127.0.0.1:{}", 7000 + id),
        status: status
            .map(|groups| StatusResponse {
                node_id: id,
                cluster_id: 9,
                groups,
            })
            .map_err(String::from),
    }
}

#[test]
fn lag_is_against_the_leaders_commit_or_the_highest_known() {
    let nodes = vec![
        node(
            1,
            Ok(vec![
                group(0, RaftRole::Leader, 3, 100, 98),
                group(1, RaftRole::Follower, 3, 40, 30),
            ]),
        ),
        // A stale leader of group 0 (older term) with a higher commit is not the base.
        node(
            2,
            Ok(vec![
                group(0, RaftRole::Leader, 2, 120, 120),
                group(1, RaftRole::Follower, 3, 50, 45),
            ]),
        ),
        node(3, Err("connect: connection refused")),
    ];
    let lags = group_lags(&nodes);
    // Group 0: the newer leader's commit; group 1 (leader unreachable): the highest.
    assert_eq!(lags.get(&0), Some(&100));
    assert_eq!(lags.get(&1), Some(&50));
    assert_eq!(group_lags(&[node(1, Err("x"))]).len(), 0);
}

#[test]
fn cluster_status_table_lists_every_node_and_group() {
    let nodes = vec![
        node(3, Err("connect: connection refused")),
        node(
            1,
            Ok(vec![
                group(1, RaftRole::Follower, 3, 40, 30),
                group(0, RaftRole::Leader, 3, 100, 98),
            ]),
        ),
        node(
            2,
            Ok(vec![
                group(0, RaftRole::Follower, 3, 100, 90),
                group(1, RaftRole::Leader, 3, 45, 45),
            ]),
        ),
    ];
    let out = cluster_status_simple(&nodes, 0xab, 2);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "cluster 0xab: 2 of 3 members answered");
    assert!(
        lines[2].contains("NODE") && lines[2].contains("LAG"),
        "{out}"
    );
    let fields = |l: &str| -> Vec<String> { l.split('|').map(|f| f.trim().to_string()).collect() };
    let rows: Vec<Vec<String>> = lines[4..10].iter().map(|l| fields(l)).collect();
    // Sorted by node then group: node, name, group, role, term, leader, commit,
    // applied, lag.
    assert_eq!(
        rows[0][1..10],
        ["1", "n1", "0", "leader", "3", "1", "100", "98", "2"]
    );
    assert_eq!(
        rows[1][1..10],
        ["1", "n1", "1", "follower", "3", "unknown", "40", "30", "15"]
    );
    assert_eq!(
        rows[2][1..10],
        ["2", "n2", "0", "follower", "3", "unknown", "100", "90", "10"]
    );
    assert_eq!(
        rows[3][1..10],
        ["2", "n2", "1", "leader", "3", "1", "45", "45", "0"]
    );
    assert_eq!(rows[4][1..5], ["3", "n3", "0", "unreachable"]);
    assert_eq!(rows[5][1..5], ["3", "n3", "1", "unreachable"]);
    assert!(rows[5][5..13].iter().all(|f| f == "-"), "{out}");
    assert_eq!(
        lines.last().unwrap(),
        &"node 3 (n3) at 127.0.0.1:7003 unreachable: connect: connection refused"
    );
    assert!(
        lines[1..11].iter().all(|l| l.len() == lines[1].len()),
        "{out}"
    );

    let json = cluster_status_json(&nodes, 0xab);
    assert!(json.starts_with("{\"cluster_id\":171,\"members\":[{\"node_id\":1,\"name\":\"n1\""));
    assert!(
        json.contains(
            "\"raft_commit\":40,\"raft_applied\":30,\"db_size\":4096,\"wal_size\":8192,\"lag\":15}"
        ),
        "{json}"
    );
    assert!(json.contains("{\"node_id\":3,\"name\":\"n3\",\"endpoint\":\"127.0.0.1:7003\",\"error\":\"connect: connection refused\"}"), "{json}");
}
