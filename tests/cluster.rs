//! Real 3-node `corekv` clusters on 127.0.0.1 (2 shards each, unpinned): writes through
//! every node, linearizable reads from every node (followers forward their ReadIndex),
//! SIGKILL of a group's leader under load (no acknowledged write lost, the node catches
//! up on restart, every replica ends with the same per-group hash and contents), a node
//! isolated with SIGSTOP, a node catching up through a snapshot, a client history under
//! faults checked for linearizability, the peer port refusing strangers, and
//! `corekvctl status` listing every node x group (a killed node's rows unreachable).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{port_base, Answer, RawConn, Server, TempDir};
use corekv::mvcc::{PutRequest, RangeRequest};
use corekv::proto::{group_for, ErrorCode, Op, Request, ResponseBody};

const SHARDS: u32 = 2;

struct Cluster {
    nodes: Vec<Server>,
    ports: Vec<u16>,
    spec: String,
    extra: Vec<String>,
    _dirs: Vec<TempDir>,
}

impl Cluster {
    fn start(tag: &str, n: usize) -> Cluster {
        Cluster::start_with(tag, n, &[])
    }

    fn start_with(tag: &str, n: usize, extra: &[&str]) -> Cluster {
        let ports: Vec<u16> = (0..n).map(|_| port_base()).collect();
        let spec = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("n{}=127.0.0.1:{}/{}", i + 1, p + 8, p))
            .collect::<Vec<_>>()
            .join(",");
        let dirs: Vec<TempDir> = (0..n)
            .map(|i| TempDir::new(&format!("{tag}-n{}", i + 1)))
            .collect();
        let mut c = Cluster {
            nodes: Vec::new(),
            ports,
            spec,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            _dirs: Vec::new(),
        };
        for (i, d) in dirs.iter().enumerate() {
            let s = c.spawn(i, &d.0);
            c.nodes.push(s);
        }
        c._dirs = dirs;
        for s in &c.nodes {
            s.wait_ready();
        }
        c
    }

    fn spawn(&self, i: usize, dir: &std::path::Path) -> Server {
        let name = format!("n{}", i + 1);
        let mut args = vec!["--name", &name, "--initial-cluster", &self.spec];
        args.extend(self.extra.iter().map(|s| s.as_str()));
        Server::spawn_with(dir, self.ports[i], SHARDS, &args)
    }

    fn restart(&mut self, i: usize) {
        let dir = self.nodes[i].data_dir.clone();
        self.nodes[i] = self.spawn(i, &dir);
        self.nodes[i].wait_ready();
    }

    fn status(&self, i: usize) -> Option<Vec<corekv::proto::GroupStatus>> {
        let mut c =
            RawConn::try_connect_within(self.nodes[i].addr(0), Duration::from_secs(2)).ok()?;
        let _ = c.stream.set_read_timeout(Some(Duration::from_secs(2)));
        match c.try_call(&Request {
            session: 0,
            seq: 0,
            op: Op::Status,
        })? {
            Ok(r) => match r.body {
                ResponseBody::Status(st) => Some(st.groups),
                _ => None,
            },
            Err(_) => None,
        }
    }

    /// The node index that leads group `g`, as its own status says.
    fn leader_of(&self, g: u32) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| {
            self.status(i)
                .is_some_and(|gs| gs[g as usize].role == corekv::proto::RaftRole::Leader)
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in &mut self.nodes {
            s.kill();
            if std::env::var_os("COREKV_KEEP_TEST_DIRS").is_none() {
                let _ = std::fs::remove_file(&s.log);
            }
        }
    }
}

/// A client that follows `NotLeader` to the group's leader and retries a write with the
/// same (session, seq), so a retry is never applied twice.
struct Client {
    ports: Vec<u16>,
    conns: HashMap<(usize, u32), RawConn>,
    hint: Vec<usize>,
    session: u64,
    seq: u64,
}

impl Client {
    fn new(c: &Cluster, session: u64, first: usize) -> Client {
        Client {
            ports: c.ports.clone(),
            conns: HashMap::new(),
            hint: vec![first; SHARDS as usize],
            session,
            seq: 0,
        }
    }

    /// Sends `req` to group `g` on node `node` only (no redirection).
    fn call_on(&mut self, node: usize, g: u32, req: &Request) -> Option<Answer> {
        let conn = match self.conns.entry((node, g)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let addr =
                    std::net::SocketAddr::from(([127, 0, 0, 1], self.ports[node] + g as u16));
                let c = RawConn::try_connect_within(addr, Duration::from_secs(2)).ok()?;
                c.stream
                    .set_read_timeout(Some(Duration::from_secs(3)))
                    .unwrap();
                v.insert(c)
            }
        };
        let ans = conn.try_call(req);
        if ans.is_none() {
            self.conns.remove(&(node, g));
        }
        ans
    }

    /// Sends `req` to group `g`'s leader, following redirects and retrying, for at most
    /// 30 s; panics past that.
    fn call(&mut self, g: u32, req: &Request) -> corekv::proto::Response {
        let deadline = Instant::now() + Duration::from_secs(30);
        let n = self.ports.len();
        loop {
            assert!(
                Instant::now() < deadline,
                "no answer for {req:?} within 30 s"
            );
            let node = self.hint[g as usize];
            match self.call_on(node, g, req) {
                Some(Ok(r)) => return r,
                Some(Err(e)) => match e.code {
                    ErrorCode::NotLeader { leader }
                        if leader != 0 && leader as usize - 1 != node =>
                    {
                        self.hint[g as usize] = leader as usize - 1;
                        continue;
                    }
                    ErrorCode::NotLeader { .. }
                    | ErrorCode::Unavailable
                    | ErrorCode::TooManyRequests => {}
                    _ => panic!("{req:?}: {e:?}"),
                },
                None => {}
            }
            self.hint[g as usize] = (node + 1) % n;
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn put(&mut self, key: &str, value: &str) {
        self.seq += 1;
        let req = Request {
            session: self.session,
            seq: self.seq,
            op: Op::Put(PutRequest {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                ..Default::default()
            }),
        };
        self.call(group_for(key.as_bytes(), SHARDS), &req);
    }
}

fn get(key: &str, serializable: bool) -> Request {
    Request {
        session: 0,
        seq: 0,
        op: Op::Range(RangeRequest {
            key: key.as_bytes().to_vec(),
            serializable,
            ..Default::default()
        }),
    }
}

fn value_of(r: &corekv::proto::Response) -> Option<Vec<u8>> {
    match &r.body {
        ResponseBody::Range(r) => r.range.kvs.first().map(|kv| kv.value.clone()),
        other => panic!("not a range answer: {other:?}"),
    }
}

/// Reads `key` linearizably from node `node` itself (a follower forwards its ReadIndex
/// to the leader), retrying while the group has no leader.
fn read_on(c: &mut Client, node: usize, key: &str) -> Option<Vec<u8>> {
    let g = group_for(key.as_bytes(), SHARDS);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "node {node} never served {key}");
        match c.call_on(node, g, &get(key, false)) {
            Some(Ok(r)) => return value_of(&r),
            Some(Err(e)) => assert!(
                matches!(e.code, ErrorCode::NotLeader { .. } | ErrorCode::Unavailable),
                "{e:?}"
            ),
            None => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (key, value, mod revision).
type Kv = (Vec<u8>, Vec<u8>, i64);

/// Waits until every node has applied the same index in every group, then compares
/// each group's full contents (a serializable range over all keys) across nodes.
fn assert_converged(c: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st: Vec<_> = (0..c.nodes.len()).map(|i| c.status(i)).collect();
        let same = st.iter().all(|s| s.is_some())
            && (0..SHARDS as usize).all(|g| {
                let a: Vec<u64> = st
                    .iter()
                    .map(|s| s.as_ref().unwrap()[g].applied_index)
                    .collect();
                a.iter().all(|x| *x == a[0])
            });
        if same {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not converge: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut cl = Client::new(c, 0, 0);
    for g in 0..SHARDS {
        // Every replica's own hash of the group's key-values.
        let hashes: Vec<(u32, i64)> = (0..c.nodes.len())
            .map(|node| {
                let req = Request {
                    session: 0,
                    seq: 0,
                    op: Op::HashKv {
                        group: g,
                        revision: 0,
                    },
                };
                match cl
                    .call_on(node, g, &req)
                    .expect("answer")
                    .expect("hash ok")
                    .body
                {
                    ResponseBody::HashKv(h) => (h.hash, h.revision),
                    other => panic!("not a hash: {other:?}"),
                }
            })
            .collect();
        assert!(
            hashes.iter().all(|h| *h == hashes[0]),
            "group {g}: replicas disagree: {hashes:?}"
        );
        let all = Request {
            session: 0,
            seq: 0,
            op: Op::Range(RangeRequest {
                key: vec![0],
                range_end: vec![0],
                serializable: true,
                ..Default::default()
            }),
        };
        let mut first: Option<(i64, Vec<Kv>)> = None;
        for node in 0..c.nodes.len() {
            let r = cl
                .call_on(node, g, &all)
                .expect("answer")
                .expect("range ok");
            let ResponseBody::Range(rr) = r.body else {
                panic!("not a range")
            };
            let kvs: Vec<_> = rr
                .range
                .kvs
                .into_iter()
                .filter(|kv| group_for(&kv.key, SHARDS) == g)
                .map(|kv| (kv.key, kv.value, kv.mod_revision))
                .collect();
            let rev = rr
                .groups
                .iter()
                .find(|x| x.group == g)
                .map_or(0, |x| x.revision);
            match &first {
                None => first = Some((rev, kvs)),
                Some(f) => {
                    assert_eq!(f.0, rev, "group {g}: node {node} is at another revision");
                    assert!(f.1 == kvs, "group {g}: node {node} holds other contents");
                }
            }
        }
    }
}

#[test]
fn writes_through_every_node_read_back_from_every_node() {
    let c = Cluster::start("rw", 3);
    // Leaders are spread: within a few seconds each group is led by its preferred node.
    let deadline = Instant::now() + Duration::from_secs(20);
    while (0..SHARDS).any(|g| c.leader_of(g) != Some(g as usize % 3)) {
        assert!(
            Instant::now() < deadline,
            "leaders were not spread over the nodes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut written = Vec::new();
    let started = Instant::now();
    for node in 0..3 {
        let mut cl = Client::new(&c, 100 + node as u64, node);
        for i in 0..40 {
            let (k, v) = (format!("k-{node}-{i}"), format!("v-{node}-{i}"));
            cl.put(&k, &v);
            written.push((k, v));
        }
    }
    eprintln!(
        "120 sequential puts (one in flight, redirects included) in {:?}",
        started.elapsed()
    );
    let mut cl = Client::new(&c, 0, 0);
    for node in 0..3 {
        for (k, v) in &written {
            assert_eq!(
                read_on(&mut cl, node, k),
                Some(v.clone().into_bytes()),
                "node {node}: {k}"
            );
        }
    }
    // A write answered by one node is read right away through another.
    let mut w = Client::new(&c, 7, 0);
    for i in 0..20 {
        let k = format!("fresh-{i}");
        w.put(&k, "x");
        assert_eq!(read_on(&mut cl, i % 3, &k), Some(b"x".to_vec()));
    }
    assert_converged(&c);
    check_peer_port_refusals(&c);
    // The node still replicates after refusing strangers.
    w.put("after-refusals", "y");
    assert_converged(&c);
}

/// A peer port refuses another cluster and unknown members with `ClusterIdMismatch`,
/// and closes a member's connection that sends a corrupt frame.
fn check_peer_port_refusals(c: &Cluster) {
    use corekv::proto::{Hello, HelloAck, Role, HELLO_ACK_LEN, PROTOCOL_VERSION};
    use std::io::{Read, Write};
    let cluster_id = {
        let mut conn = RawConn::connect(c.nodes[0].addr(0));
        match conn.call(&Request {
            session: 0,
            seq: 0,
            op: Op::Status,
        }) {
            Ok(r) => match r.body {
                ResponseBody::Status(st) => st.cluster_id,
                other => panic!("{other:?}"),
            },
            Err(e) => panic!("{e:?}"),
        }
    };
    let peer_port = c.ports[0] + 8;
    let shake = |cluster_id: u64, node_id: u64| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", peer_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let hello = Hello {
            version: PROTOCOL_VERSION,
            role: Role::Peer,
            cluster_id,
            node_id,
        };
        s.write_all(&hello.encode()).unwrap();
        let mut ack = [0u8; HELLO_ACK_LEN];
        s.read_exact(&mut ack).unwrap();
        (s, HelloAck::decode(&ack))
    };
    for (cid, node) in [(cluster_id ^ 1, 2), (cluster_id, 99), (cluster_id, 1)] {
        let (mut s, ack) = shake(cid, node);
        let e = ack.expect_err("a stranger is refused");
        assert_eq!(
            e.code,
            ErrorCode::ClusterIdMismatch,
            "cluster {cid:#x} node {node}"
        );
        let mut b = [0u8; 1];
        assert!(
            matches!(s.read(&mut b), Ok(0) | Err(_)),
            "connection closed"
        );
    }
    let (mut s, ack) = shake(cluster_id, 2);
    ack.expect("a member is accepted");
    // A frame whose crc does not match: the connection is closed.
    let mut frame = RawConn::encode(1, &get("x", false));
    frame[4] ^= 0xff;
    s.write_all(&frame).unwrap();
    let mut b = [0u8; 1];
    assert!(
        matches!(s.read(&mut b), Ok(0) | Err(_)),
        "connection closed"
    );
    let log = std::fs::read_to_string(&c.nodes[0].log).unwrap();
    assert!(log.contains("refused a peer connection"), "{log}");
}

/// `corekvctl status` through node `via` (index); its stdout.
fn ctl_status(c: &Cluster, via: usize, extra: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corekvctl"))
        .args(["--endpoints", &format!("127.0.0.1:{}", c.ports[via])])
        .args(["--timeout", "5", "status"])
        .args(extra)
        .output()
        .expect("running corekvctl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "corekvctl status failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The table row of node `node` (id) and group `g` in `corekvctl status` output.
fn status_row(st: &str, node: usize, g: u32) -> Option<&str> {
    st.lines().find(|l| {
        let f: Vec<&str> = l.split('|').map(str::trim).collect();
        f.len() > 3 && f[1] == node.to_string() && f[3] == g.to_string()
    })
}

#[test]
fn sigkill_a_leader_under_load_then_restart_and_catch_up() {
    let mut c = Cluster::start("kill", 3);
    let mut cl = Client::new(&c, 0xabc, 0);
    let mut acked: Vec<(String, String)> = Vec::new();
    for i in 0..150 {
        let (k, v) = (format!("a{i}"), format!("v{i}"));
        cl.put(&k, &v);
        acked.push((k, v));
    }
    // Leaders move to their preferred node (group 0: node 1) after start: wait for
    // that (bounded), so the kill hits a settled leader, not one handing over.
    let settle = Instant::now();
    while c.leader_of(0) != Some(0) && settle.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let victim = c.leader_of(0).expect("group 0 has a leader");
    let survivor = (victim + 1) % 3;
    // `corekvctl status` through any node lists every node x group.
    let st = ctl_status(&c, survivor, &[]);
    for node in 1..=3 {
        for g in 0..SHARDS {
            let row =
                status_row(&st, node, g).unwrap_or_else(|| panic!("no row {node}/{g}:\n{st}"));
            assert!(!row.contains("unreachable"), "{st}");
        }
    }
    assert!(
        st.starts_with(&"cluster 0x".to_string()) && st.contains("3 of 3 members answered"),
        "{st}"
    );
    // The project's client, bootstrapped from the victim (the worst case), knows the old
    // leader of group 0 before the kill: after it, a write must find the new leader
    // (connection refused -> topology from another endpoint) within its retry policy.
    let endpoints = std::iter::once(victim)
        .chain((0..3).filter(|&i| i != victim))
        .map(|i| format!("127.0.0.1:{}", c.ports[i]));
    let project_client = corekv::client::ThreadedClient::connect(
        corekv::client::ClientConfig::with_endpoints(endpoints),
    )
    .expect("client connects");
    let g0_key = (0..)
        .map(|i| format!("pc{i}"))
        .find(|k| group_for(k.as_bytes(), SHARDS) == 0)
        .unwrap();
    project_client
        .blocking()
        .put(g0_key.as_str(), "before")
        .expect("put before the kill");
    let killed_at = Instant::now();
    c.nodes[victim].kill();
    let r = project_client.blocking().put(g0_key.as_str(), "after");
    eprintln!(
        "SIGKILL of group 0's leader: the project's client's next write to group 0 took {:?}: \
         {:?}",
        killed_at.elapsed(),
        r.as_ref().map(|r| r.header.revision)
    );
    r.expect("the client finds group 0's new leader after its leader was killed");
    acked.push((g0_key.clone(), "after".into()));
    // Keep writing to group 0 (and 1): the first success after the kill needs a new leader.
    let mut first_ok = None;
    for i in 0..300 {
        let k = format!("b{i}");
        let v = format!("w{i}");
        cl.put(&k, &v);
        if first_ok.is_none() && group_for(k.as_bytes(), SHARDS) == 0 {
            first_ok = Some(killed_at.elapsed());
        }
        acked.push((k, v));
    }
    eprintln!(
        "SIGKILL of group 0's leader (node {}): first write to group 0 acknowledged {:?} after \
         the kill",
        victim + 1,
        first_ok.unwrap()
    );
    // The killed node's rows say unreachable (with its error below the table); the
    // others' rows are still there, a leader in each group.
    let st = ctl_status(&c, survivor, &[]);
    assert!(st.contains("2 of 3 members answered"), "{st}");
    for g in 0..SHARDS {
        let row = status_row(&st, victim + 1, g).unwrap_or_else(|| panic!("{st}"));
        assert!(row.contains("unreachable"), "{st}");
        assert!(
            (1..=3)
                .filter(|&n| n != victim + 1)
                .all(|n| status_row(&st, n, g).is_some_and(|r| !r.contains("unreachable"))),
            "{st}"
        );
        assert!(
            st.lines()
                .any(|l| l.starts_with("| ") && l.contains(" leader ") && {
                    let f: Vec<&str> = l.split('|').map(str::trim).collect();
                    f[3] == g.to_string()
                }),
            "group {g} has no leader row:\n{st}"
        );
    }
    assert!(
        st.contains(&format!(
            "node {} (n{}) at 127.0.0.1:{} unreachable: ",
            victim + 1,
            victim + 1,
            c.ports[victim]
        )),
        "{st}"
    );
    let json = ctl_status(&c, survivor, &["-w", "json"]);
    assert_eq!(json.matches("\"error\":").count(), 1, "{json}");
    assert_eq!(
        json.matches("\"lag\":").count(),
        2 * SHARDS as usize,
        "{json}"
    );
    let mut reader = Client::new(&c, 0, survivor);
    for (k, v) in &acked {
        assert_eq!(
            read_on(&mut reader, survivor, k),
            Some(v.clone().into_bytes()),
            "{k} lost"
        );
    }
    c.restart(victim);
    for i in 0..50 {
        let (k, v) = (format!("c{i}"), format!("z{i}"));
        cl.put(&k, &v);
        acked.push((k, v));
    }
    assert_converged(&c);
    for (k, v) in acked.iter().rev().take(60) {
        assert_eq!(
            read_on(&mut reader, victim, k),
            Some(v.clone().into_bytes())
        );
    }
}

#[test]
fn a_node_isolated_with_sigstop_then_resumed() {
    let c = Cluster::start("stop", 3);
    let victim = c.leader_of(0).expect("group 0 has a leader");
    let pid = c.nodes[victim].child.as_ref().unwrap().id() as i32;
    // SAFETY: signalling a child we spawned and still own.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let mut cl = Client::new(&c, 0x5709, (victim + 1) % 3);
    let mut acked = Vec::new();
    for i in 0..200 {
        let (k, v) = (format!("s{i}"), format!("v{i}"));
        cl.put(&k, &v);
        acked.push((k, v));
    }
    let other = (victim + 2) % 3;
    let mut reader = Client::new(&c, 0, other);
    for (k, v) in acked.iter().step_by(7) {
        assert_eq!(read_on(&mut reader, other, k), Some(v.clone().into_bytes()));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert_converged(&c);
    for (k, v) in acked.iter().step_by(11) {
        assert_eq!(
            read_on(&mut reader, victim, k),
            Some(v.clone().into_bytes())
        );
    }
    // Once back and caught up, the node leads its preferred group again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while (0..SHARDS).any(|g| c.leader_of(g) != Some(g as usize % 3)) {
        assert!(
            Instant::now() < deadline,
            "leadership did not return to node {}",
            victim + 1
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_node_behind_the_compacted_log_catches_up_through_a_snapshot() {
    let mut c = Cluster::start_with(
        "snap",
        3,
        &["--wal-compact-entries", "50", "--wal-keep-entries", "10"],
    );
    let mut cl = Client::new(&c, 0x5a5, 0);
    for i in 0..50 {
        cl.put(&format!("early{i}"), "e");
    }
    let down = 2;
    c.nodes[down].stop();
    // A member change while node 3 is down: compacted away below, it reaches node 3 only
    // inside group 0's snapshot. (Node 4 is never started: a learner, it counts for no
    // quorum.)
    let p4 = port_base();
    let mut admin = Client::new(&c, 0, 0);
    let added = add_learner_n4(&mut admin, p4);
    assert!(added.members.iter().any(|m| m.name == "n4"));
    let mut acked = Vec::new();
    // Enough entries, spread over several B+tree commits, for the leaders to compact
    // their logs well past what node 3 has.
    for round in 0..4 {
        for i in 0..150 {
            let (k, v) = (format!("late{round}-{i}"), format!("v{round}-{i}"));
            cl.put(&k, &v);
            acked.push((k, v));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    c.restart(down);
    assert_converged(&c);
    let log = std::fs::read_to_string(&c.nodes[down].log).unwrap();
    assert!(
        log.contains("installed a snapshot"),
        "node 3 caught up without a snapshot; log:\n{log}"
    );
    // Node 3 knows the member added while it was away, from the snapshot's table.
    assert!(
        log.contains("took the member table of the snapshot"),
        "node 3's log:\n{log}"
    );
    let members_on = |node: usize| {
        let mut conn = RawConn::connect(c.nodes[node].addr(0));
        match conn
            .call(&Request {
                session: 0,
                seq: 0,
                op: Op::MemberList,
            })
            .expect("member list")
            .body
        {
            ResponseBody::Members(m) => m.members,
            other => panic!("{other:?}"),
        }
    };
    let on_3 = members_on(down);
    assert!(
        on_3.iter()
            .any(|m| m.name == "n4" && m.learner && m.client_port_base == p4),
        "{on_3:?}"
    );
    assert_eq!(on_3, members_on(0));
    let mut reader = Client::new(&c, 0, down);
    for (k, v) in acked.iter().step_by(13) {
        assert_eq!(read_on(&mut reader, down, k), Some(v.clone().into_bytes()));
    }
    // It keeps following the log after the snapshot.
    for i in 0..30 {
        cl.put(&format!("after{i}"), "a");
    }
    assert_converged(&c);
    // And it restarts from the installed store.
    c.nodes[down].stop();
    c.restart(down);
    assert_converged(&c);
}

/// Reads `key` linearizably from any node (rotating on failures), for the history test.
fn get_any(c: &mut Client, key: &str, start: usize) -> Option<Vec<u8>> {
    let g = group_for(key.as_bytes(), SHARDS);
    let n = c.ports.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut node = start % n;
    loop {
        assert!(Instant::now() < deadline, "no node served {key}");
        match c.call_on(node, g, &get(key, false)) {
            Some(Ok(r)) => return value_of(&r),
            Some(Err(e)) => assert!(
                matches!(
                    e.code,
                    ErrorCode::NotLeader { .. }
                        | ErrorCode::Unavailable
                        | ErrorCode::TooManyRequests
                ),
                "{e:?}"
            ),
            None => {}
        }
        node = (node + 1) % n;
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Four clients put and get (linearizable reads through random nodes, followers
/// included) on a few keys while a leader is SIGKILLed and restarted and another node
/// is SIGSTOPped and resumed; the recorded history must be linearizable.
#[test]
fn client_history_under_faults_is_linearizable() {
    use corekv::raft::linearizability::{
        check, CheckResult, KvInput, KvModel, KvOutput, Operation,
    };
    let mut c = Cluster::start("lin", 3);
    let epoch = Instant::now();
    let ports = c.ports.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4u64)
        .map(|id| {
            let ports = ports.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut cl = Client {
                    ports,
                    conns: HashMap::new(),
                    hint: vec![0; SHARDS as usize],
                    session: 1000 + id,
                    seq: 0,
                };
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (id + 1).wrapping_mul(0x2545_f491);
                let mut ops = Vec::new();
                // Until the faults are over (bounded all the same).
                for i in 0..5000u64 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let key = format!("reg{}", rng % 4);
                    let call = epoch.elapsed().as_nanos() as u64;
                    let (input, output) = if rng.is_multiple_of(3) {
                        let value = format!("c{id}-{i}");
                        cl.put(&key, &value);
                        (
                            KvInput::Put {
                                key: key.clone().into_bytes(),
                                value: value.into_bytes(),
                            },
                            KvOutput::PutOk,
                        )
                    } else {
                        let v = get_any(&mut cl, &key, (rng >> 8) as usize);
                        (
                            KvInput::Get {
                                key: key.clone().into_bytes(),
                            },
                            KvOutput::Value(v),
                        )
                    };
                    let ret = epoch.elapsed().as_nanos() as u64;
                    ops.push(Operation {
                        client: id,
                        input,
                        output,
                        call,
                        ret,
                    });
                }
                ops
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let victim = c.leader_of(0).expect("group 0 has a leader");
    c.nodes[victim].kill();
    std::thread::sleep(Duration::from_millis(1500));
    c.restart(victim);
    let stopped = c.leader_of(1).expect("group 1 has a leader");
    let pid = c.nodes[stopped].child.as_ref().unwrap().id() as i32;
    // SAFETY: signalling a child we spawned and still own.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(2000));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let history: Vec<_> = clients
        .into_iter()
        .flat_map(|h| h.join().expect("client thread"))
        .collect();
    let puts = history
        .iter()
        .filter(|o| matches!(o.input, KvInput::Put { .. }))
        .count();
    eprintln!(
        "history: {} operations ({puts} puts) over {:?}",
        history.len(),
        epoch.elapsed()
    );
    assert!(history.len() > 200, "too few operations: {}", history.len());
    assert_eq!(
        check(&KvModel, history, 5_000_000),
        CheckResult::Linearizable
    );
    assert_converged(&c);
}

/// A member operation, retried while group 0 has no leader here; other errors return.
/// Adds member "n4" (client ports from `p4`, peer ports from `p4 + 8`) as a learner.
fn add_learner_n4(admin: &mut Client, p4: u16) -> corekv::proto::MemberListResponse {
    member_op(
        admin,
        Op::MemberAdd(corekv::proto::MemberAddRequest {
            name: "n4".into(),
            host: "127.0.0.1".into(),
            peer_port_base: p4 + 8,
            client_port_base: p4,
            learner: true,
        }),
    )
    .expect("member add")
}

fn member_op(
    c: &mut Client,
    op: Op,
) -> Result<corekv::proto::MemberListResponse, corekv::proto::ProtoError> {
    let req = Request {
        session: 0,
        seq: 0,
        op,
    };
    let n = c.ports.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "{req:?}: no answer in 30 s");
        let node = c.hint[0];
        match c.call_on(node, 0, &req) {
            Some(Ok(r)) => match r.body {
                ResponseBody::Members(m) => return Ok(m),
                other => panic!("not a member list: {other:?}"),
            },
            Some(Err(e)) => match e.code {
                ErrorCode::NotLeader { leader } if leader != 0 && leader as usize - 1 != node => {
                    c.hint[0] = leader as usize - 1;
                    continue;
                }
                ErrorCode::NotLeader { .. } | ErrorCode::Unavailable => {}
                _ => return Err(e),
            },
            None => {}
        }
        c.hint[0] = (node + 1) % n;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Under a steady write load: add a 4th node as a learner, start it (`--join`), let it
/// catch up, promote it, remove node 1 (which then refuses to serve). Then node 1 and
/// node 2 are killed: nodes 3 and 4 still commit writes, which needs node 4 to vote and
/// node 1 to be out of every group's configuration.
#[test]
fn membership_add_learner_promote_remove_under_load() {
    use corekv::proto::RaftRole;
    let mut c = Cluster::start("member", 3);
    let p4 = port_base();
    let mut ports = c.ports.clone();
    ports.push(p4);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (ports, stop) = (ports.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut cl = Client {
                ports,
                conns: HashMap::new(),
                hint: vec![1; SHARDS as usize],
                session: 0x3e3,
                seq: 0,
            };
            let mut acked = Vec::new();
            for i in 0..100_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let (k, v) = (format!("m{i}"), format!("v{i}"));
                cl.put(&k, &v);
                acked.push((k, v));
            }
            acked
        })
    };
    let cluster_id = {
        let mut conn = RawConn::connect(c.nodes[1].addr(0));
        match conn
            .call(&Request {
                session: 0,
                seq: 0,
                op: Op::Status,
            })
            .unwrap()
            .body
        {
            ResponseBody::Status(st) => st.cluster_id,
            other => panic!("{other:?}"),
        }
    };
    let mut admin = Client {
        ports: ports.clone(),
        conns: HashMap::new(),
        hint: vec![1; SHARDS as usize],
        session: 0,
        seq: 0,
    };
    let added = add_learner_n4(&mut admin, p4);
    let n4 = added
        .members
        .iter()
        .find(|m| m.name == "n4")
        .expect("n4 listed");
    assert_eq!((n4.node_id, n4.learner), (4, true));
    // Start node 4: it lists every member, itself last.
    let spec4 = format!("{},n4=127.0.0.1:{}/{}", c.spec, p4 + 8, p4);
    let dir4 = TempDir::new("member-n4");
    let s4 = Server::spawn_with(
        &dir4.0,
        p4,
        SHARDS,
        &[
            "--name",
            "n4",
            "--initial-cluster",
            &spec4,
            "--join",
            &format!("{cluster_id:x}"),
        ],
    );
    c.nodes.push(s4);
    c.ports.push(p4);
    c._dirs.push(dir4);
    let wait_roles = |c: &Cluster, node: usize, ok: &dyn Fn(RaftRole) -> bool, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if c.status(node)
                .is_some_and(|gs| gs.iter().all(|g| ok(g.role)))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} never became {what}",
                node + 1
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_roles(
        &c,
        3,
        &|r| r == RaftRole::Learner,
        "a learner in every group",
    );
    member_op(&mut admin, Op::MemberPromote { node_id: 4 }).expect("promote");
    wait_roles(&c, 3, &|r| r != RaftRole::Learner, "a voter in every group");
    let after = member_op(&mut admin, Op::MemberRemove { node_id: 1 }).expect("remove");
    assert!(after.members.iter().all(|m| m.node_id != 1));
    // Node 1 learns it was removed and stops serving.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut probe = Client::new(&c, 0, 0);
    loop {
        match probe.call_on(0, 0, &get("m1", true)) {
            Some(Err(e)) if e.message.contains("removed") => break,
            _ => assert!(
                Instant::now() < deadline,
                "node 1 still serves after its removal"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.join().expect("writer");
    assert!(acked.len() > 50, "only {} writes under load", acked.len());
    // Every group's configuration is {2, 3, 4} once node 1's removal is applied: then
    // nodes 3 and 4 alone are a quorum.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let nodes_ok = (1..4).all(|i| {
            c.status(i)
                .is_some_and(|gs| gs.iter().all(|g| g.leader != 1 && g.leader != 0))
        });
        if nodes_ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "groups still led by node 1 or leaderless"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Each group's leader logs the conf change that drops node 1.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs: String = (1..4)
            .map(|i| std::fs::read_to_string(&c.nodes[i].log).unwrap_or_default())
            .collect();
        if (0..SHARDS).all(|g| logs.contains(&format!("group {g}: proposed r-1"))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 1 never left the groups' configurations"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // (Committing it takes one round trip among the three voters left.)
    std::thread::sleep(Duration::from_millis(500));
    c.nodes[0].kill();
    c.nodes[1].kill();
    let mut last = Client::new(&c, 0x1a57, 2);
    for i in 0..10 {
        last.put(&format!("two-of-three-{i}"), "ok");
    }
    for (k, v) in acked.iter().step_by(17) {
        assert_eq!(
            read_on(&mut last, 3, k),
            Some(v.clone().into_bytes()),
            "{k}"
        );
    }
}
