//! Server configuration: the `corekv` flags, their defaults and their validation.
//!
//! Flags follow etcd's spirit. Shard `s` of a node listens for clients on
//! `listen_client.port + s` and for peers on `listen_peer.port + s`; the two port ranges
//! must not overlap and must fit below 65536, which [`ServerConfig::validate`] checks.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::wal::disk::SyncMode;

/// Default client address of shard 0 (shard `s` adds `s` to the port).
pub const DEFAULT_LISTEN_CLIENT: &str = "127.0.0.1:7379";
/// Default peer address of shard 0.
pub const DEFAULT_LISTEN_PEER: &str = "127.0.0.1:17379";
/// The most shards a node may run (keeps the default port ranges apart).
pub const SHARDS_MAX: u32 = 1024;
/// etcd's default request size limit.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1536 * 1024;
/// Default bound on the B+tree pages one group dirties while a commit is in flight.
pub const DEFAULT_DIRTY_BYTES_MAX: u64 = 256 << 20;
/// Default `--apply-batch-bytes` (see `GroupOptions::apply_batch_bytes`).
pub const DEFAULT_APPLY_BATCH_BYTES: u64 = 16 << 10;
/// Default space quota of a node's stores, all shards together.
pub const DEFAULT_QUOTA_BYTES: u64 = 8 << 30;

/// Default of `--wal-segment-bytes`.
pub const DEFAULT_WAL_SEGMENT_BYTES: u64 = 64 << 20;
/// Bounds of `--wal-segment-bytes`.
pub const WAL_SEGMENT_BYTES_MIN: u64 = 1 << 20;
pub const WAL_SEGMENT_BYTES_MAX: u64 = 1 << 30;
/// Default of `--wal-compact-entries`.
pub const DEFAULT_WAL_COMPACT_ENTRIES: u64 = 200_000;
/// Default of `--wal-keep-entries`.
pub const DEFAULT_WAL_KEEP_ENTRIES: u64 = 20_000;

/// One member of `--initial-cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    /// Peer address of the member's shard 0.
    pub peer: SocketAddr,
    /// Client port of the member's shard 0, when the entry names it
    /// (`NAME=HOST:PEERPORT/CLIENTPORT`): lets every node tell clients where the leader
    /// of a group is served. Not part of the cluster id.
    pub client_port: Option<u16>,
}

/// Everything `corekv` is started with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client: SocketAddr,
    pub listen_peer: SocketAddr,
    /// Empty: a single-node cluster of just this node.
    pub initial_cluster: Vec<Member>,
    pub shards: u32,
    pub cpu_pinning: bool,
    pub max_request_bytes: u64,
    pub quota_bytes: u64,
    /// Pages a group may dirty on top of the B+tree commit in flight before applying
    /// waits for that commit (bounds a node's memory at about 2 x this per shard).
    pub dirty_bytes_max: u64,
    /// Most bytes of committed entries a group applies before it lets its shard's other
    /// tasks run (answers leave meanwhile).
    pub apply_batch_bytes: u64,
    /// Compact a group's WAL once this many applied entries are in it...
    pub wal_compact_entries: u64,
    /// ...keeping this many behind the applied index for slow followers (a follower
    /// further behind gets a snapshot).
    pub wal_keep_entries: u64,
    /// Size of each WAL segment file (prepared ahead of use, so smaller segments start
    /// faster and larger ones are prepared less often).
    pub wal_segment_bytes: u64,
    /// How a WAL write is made durable: write + fdatasync, or an O_DSYNC write.
    pub wal_sync: SyncMode,
    /// `--join CLUSTER_ID`: this node joins a running cluster (after a MemberAdd) and
    /// takes its cluster id from here instead of hashing `--initial-cluster`.
    pub join_cluster: Option<u64>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            name: "default".into(),
            data_dir: PathBuf::from("corekv.data"),
            listen_client: DEFAULT_LISTEN_CLIENT.parse().unwrap(),
            listen_peer: DEFAULT_LISTEN_PEER.parse().unwrap(),
            initial_cluster: Vec::new(),
            shards: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            cpu_pinning: true,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            quota_bytes: DEFAULT_QUOTA_BYTES,
            dirty_bytes_max: DEFAULT_DIRTY_BYTES_MAX,
            apply_batch_bytes: DEFAULT_APPLY_BATCH_BYTES,
            wal_compact_entries: DEFAULT_WAL_COMPACT_ENTRIES,
            wal_keep_entries: DEFAULT_WAL_KEEP_ENTRIES,
            wal_segment_bytes: DEFAULT_WAL_SEGMENT_BYTES,
            wal_sync: SyncMode::Dsync,
            join_cluster: None,
        }
    }
}

pub const USAGE: &str = "\
corekv: a replicated, strongly consistent key-value store (etcd v3 data model),
one io_uring executor and one Raft group per shard.

Usage: corekv [FLAGS]

With no flags it serves a single-node store with its data in ./corekv.data.

Flags:
  --name NAME                 this node's name in --initial-cluster [default: default]
  --data-dir DIR              where the WAL and the B+tree files live [default: corekv.data]
  --listen-client HOST:PORT   client address of shard 0; shard s uses PORT+s
                              [default: 127.0.0.1:7379]
  --listen-peer HOST:PORT     peer address of shard 0; shard s uses PORT+s
                              [default: 127.0.0.1:17379]
  --initial-cluster N=H:P,..  every member's name and peer address (shard 0),
                              optionally with its client port: N=H:P/CLIENTPORT
                              [default: this node alone]
  --shards N                  shards (executors, Raft groups) per node, 1..=1024
                              [default: the number of cores]
  --cpu-pinning on|off        pin shard s to CPU s; off lets several nodes share a
                              small machine [default: on]
  --max-request-bytes N       largest client request accepted [default: 1572864]
  --quota-bytes N             space quota of the node's stores; past it writes get
                              NoSpace, reads and deletes still work [default: 8589934592]
  --dirty-bytes-max N         B+tree pages a shard may dirty while its previous commit
                              is still being written; past it, applying waits for
                              that commit (new writes get TooManyRequests meanwhile)
                              [default: 268435456]
  --apply-batch-bytes N       committed entries a shard applies in one go before its
                              other tasks run, so the answers of a large commit start
                              leaving while the rest is applied [default: 16384]
  --wal-compact-entries N     compact a group's WAL once N applied entries are in it
                              [default: 200000]
  --wal-segment-bytes N       size of each WAL segment file, a multiple of 4096 in
                              1 MiB..=1 GiB [default: 67108864]
  --wal-keep-entries N        entries kept behind the applied index for slow followers;
                              one further behind gets a snapshot [default: 20000]
  --wal-sync dsync|fdatasync  how a WAL write is made durable: one write to a file
                              opened O_DSYNC; or a write, then an fdatasync
                              [default: dsync]
  --join CLUSTER_ID           join a running cluster (hex id, see `member list`/status)
                              after a MemberAdd: --initial-cluster lists every member
                              ever added, in order, this one last
  -h, --help                  print this help
";

/// Why a command line was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigError {
    Help,
    Invalid(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Help => write!(f, "help requested"),
            ConfigError::Invalid(m) => write!(f, "{m}"),
        }
    }
}

fn invalid<T>(msg: String) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid(msg))
}

fn parse_num(flag: &str, v: &str) -> Result<u64, ConfigError> {
    v.parse::<u64>()
        .or_else(|_| invalid(format!("{flag}: '{v}' is not a non-negative integer")))
}

fn parse_addr(flag: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse::<SocketAddr>().or_else(|_| {
        invalid(format!(
            "{flag}: '{v}' is not HOST:PORT (an IP address and a port)"
        ))
    })
}

fn parse_cluster(v: &str) -> Result<Vec<Member>, ConfigError> {
    let mut members: Vec<Member> = Vec::new();
    for part in v.split(',').filter(|p| !p.is_empty()) {
        let Some((name, addr)) = part.split_once('=') else {
            return invalid(format!("--initial-cluster: '{part}' is not NAME=HOST:PORT"));
        };
        if name.is_empty() {
            return invalid(format!("--initial-cluster: '{part}' has an empty name"));
        }
        if members.iter().any(|m| m.name == name) {
            return invalid(format!("--initial-cluster: name '{name}' appears twice"));
        }
        let (addr, client_port) = match addr.split_once('/') {
            Some((a, c)) => match c.parse::<u16>() {
                Ok(p) => (a, Some(p)),
                Err(_) => {
                    return invalid(format!(
                        "--initial-cluster: '{part}': '{c}' is not a client port"
                    ))
                }
            },
            None => (addr, None),
        };
        members.push(Member {
            name: name.to_string(),
            peer: parse_addr("--initial-cluster", addr)?,
            client_port,
        });
    }
    Ok(members)
}

impl ServerConfig {
    /// Parses the arguments after the program name.
    pub fn from_args<I: IntoIterator<Item = String>>(args: I) -> Result<Self, ConfigError> {
        let mut cfg = ServerConfig::default();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            if arg == "-h" || arg == "--help" {
                return Err(ConfigError::Help);
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let known = [
                "--name",
                "--data-dir",
                "--listen-client",
                "--listen-peer",
                "--initial-cluster",
                "--shards",
                "--cpu-pinning",
                "--max-request-bytes",
                "--quota-bytes",
                "--dirty-bytes-max",
                "--apply-batch-bytes",
                "--wal-compact-entries",
                "--wal-segment-bytes",
                "--wal-keep-entries",
                "--wal-sync",
                "--join",
            ];
            if !known.contains(&flag.as_str()) {
                return invalid(format!("unknown flag '{arg}' (see --help)"));
            }
            let value = match inline.or_else(|| it.next()) {
                Some(v) => v,
                None => return invalid(format!("{flag} needs a value")),
            };
            match flag.as_str() {
                "--name" if value.is_empty() => return invalid("--name: empty".into()),
                "--name" => cfg.name = value,
                "--data-dir" => cfg.data_dir = PathBuf::from(value),
                "--listen-client" => cfg.listen_client = parse_addr(&flag, &value)?,
                "--listen-peer" => cfg.listen_peer = parse_addr(&flag, &value)?,
                "--initial-cluster" => cfg.initial_cluster = parse_cluster(&value)?,
                "--shards" => cfg.shards = parse_num(&flag, &value)? as u32,
                "--cpu-pinning" => {
                    cfg.cpu_pinning = match value.as_str() {
                        "on" | "true" => true,
                        "off" | "false" => false,
                        _ => return invalid(format!("--cpu-pinning: '{value}' is not on|off")),
                    }
                }
                "--max-request-bytes" => cfg.max_request_bytes = parse_num(&flag, &value)?,
                "--quota-bytes" => cfg.quota_bytes = parse_num(&flag, &value)?,
                "--dirty-bytes-max" => cfg.dirty_bytes_max = parse_num(&flag, &value)?,
                "--apply-batch-bytes" => cfg.apply_batch_bytes = parse_num(&flag, &value)?,
                "--wal-compact-entries" => cfg.wal_compact_entries = parse_num(&flag, &value)?,
                "--wal-keep-entries" => cfg.wal_keep_entries = parse_num(&flag, &value)?,
                "--wal-segment-bytes" => cfg.wal_segment_bytes = parse_num(&flag, &value)?,
                "--wal-sync" => {
                    cfg.wal_sync = match SyncMode::from_name(&value) {
                        Some(m) => m,
                        None => {
                            return invalid(format!("--wal-sync: '{value}' is not fdatasync|dsync"))
                        }
                    }
                }
                "--join" => {
                    cfg.join_cluster = Some(u64::from_str_radix(&value, 16).or_else(|_| {
                        invalid(format!("--join: '{value}' is not a hex cluster id"))
                    })?)
                }
                _ => unreachable!("flag list and match disagree"),
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the combination of flags.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(WAL_SEGMENT_BYTES_MIN..=WAL_SEGMENT_BYTES_MAX).contains(&self.wal_segment_bytes)
            || !self.wal_segment_bytes.is_multiple_of(4096)
        {
            return invalid(format!(
                "--wal-segment-bytes: {} is not a multiple of 4096 in {WAL_SEGMENT_BYTES_MIN}..={WAL_SEGMENT_BYTES_MAX}",
                self.wal_segment_bytes
            ));
        }
        if self.shards == 0 || self.shards > SHARDS_MAX {
            return invalid(format!(
                "--shards: {} is not in 1..={SHARDS_MAX}",
                self.shards
            ));
        }
        let range = |a: &SocketAddr| a.port() as u32..a.port() as u32 + self.shards;
        let (c, p) = (range(&self.listen_client), range(&self.listen_peer));
        if c.end > 65536 || p.end > 65536 {
            return invalid(format!(
                "ports: {} shards starting at client port {} / peer port {} run past 65535",
                self.shards, c.start, p.start
            ));
        }
        if c.start < p.end && p.start < c.end {
            return invalid(format!(
                "ports: client ports {}..{} overlap peer ports {}..{}",
                c.start, c.end, p.start, p.end
            ));
        }
        if !self.initial_cluster.is_empty()
            && !self.initial_cluster.iter().any(|m| m.name == self.name)
        {
            return invalid(format!(
                "--initial-cluster does not name this node ('{}'; set --name)",
                self.name
            ));
        }
        if self.max_request_bytes < 1024 || self.max_request_bytes > (64 << 20) {
            return invalid("--max-request-bytes: must be in 1024..=67108864".into());
        }
        Ok(())
    }

    /// Client address of shard `s`.
    pub fn client_addr(&self, s: u32) -> SocketAddr {
        let mut a = self.listen_client;
        a.set_port(a.port() + s as u16);
        a
    }

    /// Peer address of shard `s`.
    pub fn peer_addr(&self, s: u32) -> SocketAddr {
        let mut a = self.listen_peer;
        a.set_port(a.port() + s as u16);
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ServerConfig, ConfigError> {
        ServerConfig::from_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn no_flags_is_single_node_in_local_folder() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("corekv.data"));
        assert!(c.initial_cluster.is_empty());
        assert!(c.cpu_pinning);
        assert_eq!(c.max_request_bytes, 1536 * 1024);
        assert_eq!(c.dirty_bytes_max, 256 << 20);
        assert_eq!(c.apply_batch_bytes, 16 << 10);
    }

    #[test]
    fn flags_in_both_spellings() {
        let c = parse(&[
            "--shards",
            "4",
            "--listen-client=127.0.0.1:9000",
            "--cpu-pinning",
            "off",
            "--name",
            "b",
            "--initial-cluster",
            "a=127.0.0.1:9100,b=127.0.0.1:9200",
        ])
        .unwrap();
        assert_eq!(c.shards, 4);
        assert_eq!(c.wal_sync, SyncMode::Dsync);
        assert_eq!(c.client_addr(3).port(), 9003);
        assert!(!c.cpu_pinning);
        assert_eq!(c.initial_cluster.len(), 2);
        assert_eq!(c.initial_cluster[1].peer.port(), 9200);
        assert_eq!(c.initial_cluster[1].client_port, None);
        let c = parse(&[
            "--name",
            "a",
            "--initial-cluster",
            "a=127.0.0.1:9100/9000,b=127.0.0.1:9200",
            "--wal-compact-entries",
            "50",
            "--wal-keep-entries=10",
            "--dirty-bytes-max=1048576",
            "--apply-batch-bytes",
            "4096",
            "--wal-sync=fdatasync",
        ])
        .unwrap();
        assert_eq!(c.wal_sync, SyncMode::Fdatasync);
        assert_eq!(c.dirty_bytes_max, 1 << 20);
        assert_eq!(c.apply_batch_bytes, 4096);
        assert_eq!(c.initial_cluster[0].client_port, Some(9000));
        assert_eq!(c.initial_cluster[0].peer.port(), 9100);
        assert_eq!((c.wal_compact_entries, c.wal_keep_entries), (50, 10));
    }

    #[test]
    fn bad_flags_are_refused_with_a_reason() {
        for (args, needle) in [
            (&["--bogus"][..], "unknown flag"),
            (&["--shards"][..], "needs a value"),
            (&["--shards", "0"][..], "--shards"),
            (&["--shards", "x"][..], "not a non-negative integer"),
            (&["--listen-client", "localhost"][..], "HOST:PORT"),
            (&["--cpu-pinning", "maybe"][..], "on|off"),
            (&["--wal-sync", "fsync"][..], "fdatasync|dsync"),
            (
                &["--initial-cluster", "a=127.0.0.1:1/x", "--name", "a"][..],
                "not a client port",
            ),
            (
                &[
                    "--initial-cluster",
                    "a=127.0.0.1:1,a=127.0.0.1:2",
                    "--name",
                    "a",
                ][..],
                "twice",
            ),
            (
                &["--initial-cluster", "x=127.0.0.1:1"][..],
                "does not name this node",
            ),
            (
                &[
                    "--shards",
                    "8",
                    "--listen-client",
                    "127.0.0.1:100",
                    "--listen-peer",
                    "127.0.0.1:104",
                ][..],
                "overlap",
            ),
            (
                &["--listen-client", "127.0.0.1:65535", "--shards", "2"][..],
                "past 65535",
            ),
        ] {
            match parse(args) {
                Err(ConfigError::Invalid(m)) => assert!(m.contains(needle), "{args:?}: {m}"),
                other => panic!("{args:?}: expected an error, got {other:?}"),
            }
        }
        assert_eq!(parse(&["--help"]), Err(ConfigError::Help));
    }

    #[test]
    fn default_port_ranges_never_overlap() {
        for shards in [1, 2, 16, SHARDS_MAX] {
            let c = ServerConfig {
                shards,
                ..ServerConfig::default()
            };
            c.validate().unwrap();
        }
    }
}
