//! `corekvctl` against a real `corekv` process: output, exit codes, stdin txns.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::{port_base, Server, TempDir};

/// A one-node server in its own temp dir (the server is killed before the dir goes).
struct Node {
    server: Server,
    _dir: TempDir,
}

impl Node {
    fn start(tag: &str) -> Node {
        let dir = TempDir::new(tag);
        let server = Server::start(&dir.0, port_base(), SHARDS);
        Node { server, _dir: dir }
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.server.port)
    }
}

/// Shards per node in these tests.
const SHARDS: u32 = 2;

fn ctl(server: Option<&Node>, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corekvctl"));
    if let Some(s) = server {
        cmd.args(["--endpoints", &s.endpoint(), "--timeout", "20"]);
    }
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn corekvctl");
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

fn ok(server: &Node, args: &[&str]) -> String {
    let out = ctl(Some(server), args, None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "corekvctl {args:?}: stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn usage_errors_exit_2_without_a_server() {
    for args in [
        &["frobnicate"][..],
        &["get"],
        &["put", "k"],
        &["get", "k", "--limit", "x"],
        &["--endpoints", "nohost", "get", "k"],
        &[],
    ] {
        let out = ctl(None, args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
    }
    let out = ctl(None, &["get", "--help"], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--sort-by"));
    // A txn text error is bad usage too (and is found before connecting).
    let out = ctl(None, &["txn"], Some("bogus(\n"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("txn line 1"));
}

#[test]
fn unreachable_endpoint_exits_1() {
    let port = port_base();
    let out = Command::new(env!("CARGO_BIN_EXE_corekvctl"))
        .args([
            "--endpoints",
            &format!("127.0.0.1:{port}"),
            "--timeout",
            "2",
            "get",
            "k",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("connecting to 127.0.0.1"));
}

#[test]
fn put_get_del_like_etcdctl() {
    let s = Node::start("ctl-kv");
    assert_eq!(ok(&s, &["put", "foo", "bar"]), "OK\n");
    assert_eq!(ok(&s, &["get", "foo"]), "foo\nbar\n");
    assert_eq!(
        ok(&s, &["put", "foo", "baz", "--prev-kv"]),
        "OK\nfoo\nbar\n"
    );
    ok(&s, &["put", "foo2", "x"]);
    ok(&s, &["put", "fop", "y"]);
    assert_eq!(ok(&s, &["get", "foo", "--prefix"]), "foo\nbaz\nfoo2\nx\n");
    assert_eq!(
        ok(&s, &["get", "foo", "--prefix", "--keys-only"]),
        "foo\nfoo2\n"
    );
    assert_eq!(ok(&s, &["get", "foo", "--prefix", "--count-only"]), "2\n");
    assert_eq!(
        ok(&s, &["get", "foo", "--from-key", "--limit", "1"]),
        "foo\nbaz\n"
    );
    assert_eq!(
        ok(
            &s,
            &[
                "get",
                "f",
                "--prefix",
                "--sort-by",
                "KEY",
                "--order",
                "DESCEND"
            ]
        ),
        "fop\ny\nfoo2\nx\nfoo\nbaz\n"
    );
    assert_eq!(ok(&s, &["get", "foo", "--consistency", "s"]), "foo\nbaz\n");
    let json = ok(&s, &["get", "foo", "-w", "json"]);
    assert!(json.contains("\"key\":\"Zm9v\""), "{json}");
    assert!(json.contains("\"value\":\"YmF6\""), "{json}");
    assert_eq!(ok(&s, &["get", "missing"]), "");
    assert_eq!(ok(&s, &["del", "foo", "--prev-kv"]), "1\nfoo\nbaz\n");
    assert_eq!(ok(&s, &["del", "foo"]), "0\n");
    // A delete range stays inside one group: share a hash tag.
    // (the prefix must hold the whole tag: `{g}` alone ends at `{g~`, which spans groups).
    ok(&s, &["put", "{g}xa", "1"]);
    ok(&s, &["put", "{g}xb", "2"]);
    assert_eq!(ok(&s, &["del", "{g}x", "--prefix"]), "2\n");
}

#[test]
fn server_errors_exit_1_naming_the_code() {
    let s = Node::start("ctl-errors");
    let out = ctl(Some(&s), &["get", "b", "a"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("InvalidRange"), "{err}");
    let out = ctl(Some(&s), &["compact", "1000", "--group", "0"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FutureRevision"));
    let out = ctl(Some(&s), &["put", "--ignore-value", "nokey"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KeyNotFound"));
}

#[test]
fn txn_from_stdin() {
    let s = Node::start("ctl-txn");
    ok(&s, &["put", "{u}k1", "5"]);
    let text = "value(\"{u}k1\") = \"5\"\n\nput {u}k1 \"six\"\nget {u}k1\n\nput {u}k1 \"zero\"\n";
    let out = ctl(Some(&s), &["txn"], Some(text));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "SUCCESS\n\nOK\n\n{u}k1\nsix\n"
    );
    let out = ctl(Some(&s), &["txn"], Some(text));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "FAILURE\n\nOK\n");
    assert_eq!(ok(&s, &["get", "{u}k1"]), "{u}k1\nzero\n");
    // mod/version compares with numbers.
    let out = ctl(
        Some(&s),
        &["txn"],
        Some("version(\"{u}k1\") > \"1\"\nmod(\"{u}k1\") > \"0\"\n\ndel {u}k1\n"),
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "SUCCESS\n\n1\n");
}

#[test]
fn status_topology_compact() {
    let s = Node::start("ctl-admin");
    ok(&s, &["put", "a", "1"]);
    ok(&s, &["put", "a", "2"]);
    let st = ok(&s, &["status"]);
    // A single node: one member, a row per group, each led by it with no lag.
    assert!(
        st.contains("1 of 1 members answered") && st.contains("LAG"),
        "{st}"
    );
    let rows: Vec<Vec<&str>> = st
        .lines()
        .map(|l| l.split('|').map(str::trim).collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && (f[3] == "0" || f[3] == "1"))
        .collect();
    assert_eq!(rows.len(), 2, "{st}");
    assert!(rows.iter().all(|f| f[4] == "leader" && f[9] == "0"), "{st}");
    let json = ok(&s, &["status", "-w", "json"]);
    assert!(
        json.contains("\"lag\":0") && !json.contains("\"error\""),
        "{json}"
    );
    let topo = ok(&s, &["topology"]);
    assert!(topo.contains("shards 2"), "{topo}");
    assert!(topo.contains(&s.server.port.to_string()), "{topo}");
    let json = ok(&s, &["topology", "-w", "json"]);
    assert!(json.contains("\"shard_count\":2"), "{json}");
    // Compact a's group at its current revision - 1.
    let json = ok(&s, &["get", "a", "-w", "json"]);
    let rev: i64 = json
        .split("\"revision\":")
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no revision in {json}"));
    let g = corekv::proto::group_for(b"a", SHARDS).to_string();
    assert_eq!(
        ok(&s, &["compact", &(rev - 1).to_string(), "--group", &g]),
        format!("compacted group {g} at revision {}\n", rev - 1)
    );
}
