//! The node: checks the data directory's identity, starts one glommio executor per shard
//! (pinned to CPU s unless `--cpu-pinning off`), wires the cross-shard mesh, and turns
//! SIGTERM/SIGINT into a clean shutdown (stop accepting, finish in-flight requests, flush
//! the WAL, commit the B+tree, exit 0).
//!
//! With other members in `--initial-cluster`, shard s also listens for peers on
//! `listen_peer.port + s` and runs the peer transport ([`super::peer`]); every member
//! is a voter of every group from the start (node ids: position in the list + 1),
//! except with `--join CLUSTER_ID` (a node added by `MemberAdd`): its groups start from
//! the other members' configuration and it learns its own role from the log. The member
//! table ([`super::members`]) starts from `--initial-cluster` and then follows group 0's
//! member changes; a task per shard makes the peer links follow it.
//!
//! Data directory layout:
//! ```text
//! <data-dir>/member            name, node id, cluster id, shard count (text, key=value)
//! <data-dir>/members           the member table (a cluster; see `members.rs`)
//! <data-dir>/shard-<s>/wal/    the WAL segments of group s
//! <data-dir>/shard-<s>/store.btree   the B+tree of group s
//! <data-dir>/shard-<s>/snapshot-recv-<from>.tmp     a snapshot being received
//! <data-dir>/shard-<s>/snapshot-recv-<from>-<index>-<term>.btree   received, not installed
//! <data-dir>/shard-<s>/snapshot-recv.btree   the one being installed (see Group::open)
//! <data-dir>/shard-<s>/snapshot-out-<node>.btree  a snapshot being sent (removed after)
//! ```

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

use super::config::ServerConfig;
use super::group::{Group, GroupOptions};
use super::members::{Members, SharedMembers};
use super::mesh::{self, Mesh, MeshMsg};
use super::node::{NodeInfo, Shard};
use crate::proto::{fnv1a64, MemberInfo, NodeAddr};

/// How often a shard checks the member table for changes (links to add or drop).
const MEMBER_SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// The node's identity, persisted in `<data-dir>/member`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub node_id: u64,
    pub cluster_id: u64,
    pub shards: u32,
}

impl Identity {
    fn encode(&self) -> String {
        format!(
            "name={}\nnode_id={}\ncluster_id={:016x}\nshards={}\n",
            self.name, self.node_id, self.cluster_id, self.shards
        )
    }

    fn decode(text: &str, path: &Path) -> Result<Identity, String> {
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
                .ok_or_else(|| format!("{}: no '{k}=' line", path.display()))
        };
        let bad = |k: &str| format!("{}: '{k}' is not a number", path.display());
        Ok(Identity {
            name: field("name")?.to_string(),
            node_id: field("node_id")?.parse().map_err(|_| bad("node_id"))?,
            cluster_id: u64::from_str_radix(field("cluster_id")?, 16)
                .map_err(|_| bad("cluster_id"))?,
            shards: field("shards")?.parse().map_err(|_| bad("shards"))?,
        })
    }
}

/// The identity `cfg` asks for: node ids are positions in `--initial-cluster` (from 1);
/// the cluster id is a hash of the sorted member list.
pub fn identity_for(cfg: &ServerConfig) -> Identity {
    let mut members: Vec<String> = cfg
        .initial_cluster
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer))
        .collect();
    if members.is_empty() {
        members.push(format!("{}={}", cfg.name, cfg.listen_peer));
    }
    members.sort();
    let node_id = cfg
        .initial_cluster
        .iter()
        .position(|m| m.name == cfg.name)
        .map_or(1, |p| p as u64 + 1);
    Identity {
        name: cfg.name.clone(),
        node_id,
        // A node joining a running cluster is told its id.
        cluster_id: cfg
            .join_cluster
            .unwrap_or_else(|| fnv1a64(members.join(",").as_bytes())),
        shards: cfg.shards,
    }
}

/// Creates the data directory and its identity file, or checks that an existing one
/// belongs to this node, this cluster and this shard count.
pub fn prepare_data_dir(cfg: &ServerConfig) -> Result<Identity, String> {
    let want = identity_for(cfg);
    let dir = &cfg.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join("member");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let have = Identity::decode(&text, &path)?;
            if have.name != want.name {
                return Err(format!(
                    "{} belongs to member '{}', not '{}' (wrong --name or --data-dir)",
                    dir.display(),
                    have.name,
                    want.name
                ));
            }
            if have.cluster_id != want.cluster_id || have.node_id != want.node_id {
                return Err(format!(
                    "{} belongs to another cluster (cluster id {:016x}, node id {}; this \
                     --initial-cluster gives {:016x}, {})",
                    dir.display(),
                    have.cluster_id,
                    have.node_id,
                    want.cluster_id,
                    want.node_id
                ));
            }
            if have.shards != want.shards {
                return Err(format!(
                    "{} was created with --shards {}; it cannot be opened with --shards {}",
                    dir.display(),
                    have.shards,
                    want.shards
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = dir.join("member.tmp");
            std::fs::write(&tmp, want.encode())
                .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|_| std::fs::rename(&tmp, &path))
                .and_then(|_| std::fs::File::open(dir)?.sync_all())
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    }
    for s in 0..cfg.shards {
        let d = shard_dir(dir, s);
        std::fs::create_dir_all(d.join("wal"))
            .map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    Ok(want)
}

fn shard_dir(data_dir: &Path, s: u32) -> PathBuf {
    data_dir.join(format!("shard-{s}"))
}

/// Blocks SIGTERM and SIGINT in the calling thread (threads spawned later inherit the
/// mask) and starts a thread that waits for them and calls `on_signal`.
fn watch_signals(on_signal: impl FnOnce() + Send + 'static) {
    // SAFETY: plain libc calls on a locally owned, initialised sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        std::thread::Builder::new()
            .name("corekv-signals".into())
            .spawn(move || {
                let mut sig = 0;
                libc::sigwait(&set, &mut sig);
                eprintln!("corekv: signal {sig}: shutting down");
                on_signal();
            })
            .expect("spawning the signal thread");
    }
}

/// Binds a listening socket on this executor. Unlike `glommio::net::TcpListener::bind`,
/// without SO_REUSEPORT: a second server started on the same port must fail to start,
/// not silently take half of the first one's connections.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::unix::io::{FromRawFd, IntoRawFd};
    let sk = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sk.set_reuse_address(true)?;
    sk.bind(&addr.into())?;
    sk.listen(1024)?;
    // SAFETY: the fd is a bound, listening TCP socket that we own and hand over.
    Ok(unsafe { TcpListener::from_raw_fd(sk.into_raw_fd()) })
}

/// How long a start waits for its port while a predecessor still holds it.
const BIND_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// [`listen`], retrying while the address is in use: a process that was just killed may
/// keep its listening socket for a moment (its io_uring is torn down asynchronously),
/// and a restart right after a crash must not fail for that.
async fn listen_retrying(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let start = std::time::Instant::now();
    loop {
        match listen(addr) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && start.elapsed() < BIND_RETRY_MAX =>
            {
                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// Every member of the cluster: node ids are positions in `--initial-cluster` (from 1).
/// Another member's client port is known only when its entry names it
/// (`NAME=HOST:PEERPORT/CLIENTPORT`); 0 otherwise.
fn members_of(cfg: &ServerConfig, id: &Identity) -> Result<Vec<NodeAddr>, String> {
    if cfg.initial_cluster.is_empty() {
        return Ok(vec![NodeAddr {
            node_id: id.node_id,
            host: cfg.listen_client.ip().to_string(),
            client_port_base: cfg.listen_client.port(),
            peer_port_base: cfg.listen_peer.port(),
        }]);
    }
    let mut out = Vec::new();
    for (i, m) in cfg.initial_cluster.iter().enumerate() {
        let me = m.name == cfg.name;
        if me && m.peer.port() != cfg.listen_peer.port() {
            return Err(format!(
                "--initial-cluster names {} as this node's peer address, but --listen-peer is {}",
                m.peer, cfg.listen_peer
            ));
        }
        out.push(NodeAddr {
            node_id: i as u64 + 1,
            host: m.peer.ip().to_string(),
            client_port_base: if me {
                cfg.listen_client.port()
            } else {
                m.client_port.unwrap_or(0)
            },
            peer_port_base: m.peer.port(),
        });
    }
    Ok(out)
}

/// Runs the node until a signal stops it or a shard fails. Blocks the calling thread.
pub fn run(cfg: ServerConfig) -> Result<(), String> {
    let id = prepare_data_dir(&cfg)?;
    let members = members_of(&cfg, &id)?;
    // A node joining a running cluster starts its groups from the configuration of the
    // other members (it is not a voter; it learns its role from the log or a snapshot).
    let voters: Vec<u64> = members
        .iter()
        .map(|m| m.node_id)
        .filter(|&n| cfg.join_cluster.is_none() || n != id.node_id)
        .collect();
    let table = if cfg.initial_cluster.is_empty() {
        None
    } else {
        let initial = cfg
            .initial_cluster
            .iter()
            .zip(&members)
            .map(|(c, m)| MemberInfo {
                node_id: m.node_id,
                name: c.name.clone(),
                host: m.host.clone(),
                peer_port_base: m.peer_port_base,
                client_port_base: m.client_port_base,
                learner: cfg.join_cluster.is_some() && m.node_id == id.node_id,
            })
            .collect();
        Some(Members::open(&cfg.data_dir, initial)?)
    };
    let node = NodeInfo {
        node_id: id.node_id,
        cluster_id: id.cluster_id,
        shards: cfg.shards,
        client_port_base: cfg.listen_client.port(),
        members,
    };
    let chans = mesh::channels(cfg.shards);
    let senders: Vec<flume::Sender<MeshMsg>> = chans.iter().map(|(s, _)| s.clone()).collect();
    let (stop_tx, stop_rx) = flume::bounded::<()>(cfg.shards as usize);
    watch_signals({
        let n = cfg.shards;
        move || {
            for _ in 0..n {
                let _ = stop_tx.send(());
            }
        }
    });
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let io_memory = ((6usize << 20) / cfg.shards as usize).clamp(64 << 10, 1 << 20);
    let mut handles = Vec::new();
    for (s, (_, inbox)) in chans.into_iter().enumerate() {
        let s = s as u32;
        let placement = if cfg.cpu_pinning {
            Placement::Fixed(s as usize % cpus)
        } else {
            Placement::Unbound
        };
        let (cfg, node, senders, stop_rx) =
            (cfg.clone(), node.clone(), senders.clone(), stop_rx.clone());
        let voters = voters.clone();
        let members = table.clone();
        // glommio's preempt timer stays at its default (100 ms). With 200 us, a client
        // socket's readable data sometimes went unread until some other event came (1
        // put x256 run in ~7: 34 KB in the server's receive queue, the shard idle for
        // seconds, until a new connection woke it); 10 runs at the default never did.
        let h = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{s}"))
            .io_memory(io_memory)
            .spawn(move || async move {
                run_shard(cfg, s, node, (voters, members), senders, inbox, stop_rx).await
            })
            .map_err(|e| format!("starting the executor of shard {s}: {e}"))?;
        handles.push(h);
    }
    let mut first_err = None;
    for (s, h) in handles.into_iter().enumerate() {
        let r = h
            .join()
            .map_err(|e| format!("shard {s} panicked: {e:?}"))
            .and_then(|r| r);
        if let Err(e) = r {
            eprintln!("corekv: shard {s}: {e}");
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

async fn run_shard(
    cfg: ServerConfig,
    s: u32,
    node: NodeInfo,
    (voters, members): (Vec<u64>, Option<SharedMembers>),
    senders: Vec<flume::Sender<MeshMsg>>,
    inbox: flume::Receiver<MeshMsg>,
    stop_rx: flume::Receiver<()>,
) -> Result<(), String> {
    let opts = GroupOptions {
        quota_bytes: cfg.quota_bytes / u64::from(cfg.shards),
        dirty_bytes_max: cfg.dirty_bytes_max.max(1),
        apply_batch_bytes: cfg.apply_batch_bytes.max(1),
        wal_compact_entries: cfg.wal_compact_entries.max(1),
        wal_keep_entries: cfg.wal_keep_entries,
        wal: crate::wal::WalOptions {
            segment_bytes: cfg.wal_segment_bytes,
            sync_mode: cfg.wal_sync,
            ..crate::wal::WalOptions::default()
        },
        ..GroupOptions::default()
    };
    let started = std::time::Instant::now();
    let group = Group::open(
        &shard_dir(&cfg.data_dir, s),
        s,
        node.node_id,
        voters.clone(),
        opts,
    )
    .await?;
    let opened = std::time::Instant::now();
    let addr = cfg.client_addr(s);
    let listener = listen_retrying(addr)
        .await
        .map_err(|e| format!("listening for clients on {addr}: {e}"))?;
    let bound = std::time::Instant::now();
    let shard = Rc::new(Shard {
        members: members.clone(),
        index: s,
        group: group.clone(),
        mesh: Mesh::new(s, senders),
        node,
    });
    let driver = glommio::spawn_local(group.clone().run());
    // Replication: shard s talks to shard s of every other member.
    let mut peer_tasks = Vec::new();
    if let Some(table) = members.clone() {
        let me = super::peer::Me {
            node_id: shard.node.node_id,
            cluster_id: shard.node.cluster_id,
            shard: s,
            shard_count: cfg.shards,
        };
        group.set_members(table.clone());
        // Spread the groups' leaders: group s prefers member s mod N (of the voters at
        // start).
        if !voters.is_empty() {
            let mut all = voters.clone();
            all.push(me.node_id);
            all.sort_unstable();
            all.dedup();
            group.set_preferred_leader(all[s as usize % all.len()]);
        }
        let (transport, pump) = super::peer::Transport::start(group.clone(), me);
        peer_tasks.push(pump);
        // The links follow the member table.
        {
            let transport = transport.clone();
            peer_tasks.push(glommio::spawn_local(async move {
                let mut seen = u64::MAX;
                loop {
                    let t = table.snapshot();
                    if t.version != seen {
                        seen = t.version;
                        let peers: Vec<(u64, std::net::SocketAddr)> = t
                            .members
                            .iter()
                            .filter(|m| m.node_id != me.node_id)
                            .filter_map(|m| {
                                let ip: std::net::IpAddr = m.host.parse().ok()?;
                                Some((
                                    m.node_id,
                                    std::net::SocketAddr::new(ip, m.peer_port_base + s as u16),
                                ))
                            })
                            .collect();
                        let ids = t.members.iter().map(|m| m.node_id).collect();
                        transport.set_peers(&peers, ids);
                    }
                    glommio::timer::sleep(MEMBER_SYNC_EVERY).await;
                }
            }));
        }
        let paddr = cfg.peer_addr(s);
        let plistener = listen_retrying(paddr)
            .await
            .map_err(|e| format!("listening for peers on {paddr}: {e}"))?;
        peer_tasks.push(glommio::spawn_local(async move {
            loop {
                match plistener.accept().await {
                    Ok(stream) => {
                        glommio::spawn_local(super::peer::serve_peer(transport.clone(), stream))
                            .detach();
                    }
                    Err(e) => eprintln!("corekv: shard {s}: accepting a peer: {e}"),
                }
            }
        }));
    }
    // Calls and replies from the other shards.
    let mesh_task = {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Ok(msg) = inbox.recv_async().await {
                match msg {
                    MeshMsg::Reply { token, reply } => shard.mesh.deliver(token, reply),
                    MeshMsg::Call { from, token, call } => {
                        let shard = shard.clone();
                        glommio::spawn_local(async move {
                            let reply = match call {
                                mesh::Call::Execute(req) => shard.execute_local(req).await,
                                mesh::Call::Status => {
                                    shard
                                        .execute_local(crate::proto::Request {
                                            session: 0,
                                            seq: 0,
                                            op: crate::proto::Op::Status,
                                        })
                                        .await
                                }
                            };
                            shard.mesh.reply(from, token, reply).await;
                        })
                        .detach();
                    }
                }
            }
        })
    };
    eprintln!(
        "corekv: shard {s} serving clients on {addr} (node {}, data in {}; opened in {:?}, \
         port bound after {:?})",
        shard.node.node_id,
        cfg.data_dir.display(),
        opened - started,
        bound - started,
    );
    let accept = {
        let shard = shard.clone();
        async move {
            loop {
                match listener.accept().await {
                    Ok(stream) => {
                        glommio::spawn_local(super::conn::serve_client(shard.clone(), stream))
                            .detach();
                    }
                    Err(e) => eprintln!("corekv: shard {s}: accept: {e}"),
                }
            }
        }
    };
    // Serve until stopped (signal) or the group fails (storage failure).
    futures_lite::future::or(
        futures_lite::future::or(accept, async {
            let _ = stop_rx.recv_async().await;
        }),
        group.failed(),
    )
    .await;
    // The listener is closed now; the driver finishes in-flight writes, flushes the WAL
    // and commits the store.
    group.stop();
    let result = driver.await;
    drop(peer_tasks);
    drop(mesh_task);
    result
}
