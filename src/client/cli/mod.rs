//! `corekvctl`'s pure logic: command-line parsing ([`parse_args`]), etcdctl's txn text
//! syntax ([`txn`]), and etcdctl-like output ([`output`]). The binary only connects,
//! runs the parsed command through a [`crate::client::ThreadedClient`] and prints.
//!
//! Syntax: `corekvctl [--endpoints host:port[,..]] [--timeout S] [-w simple|json] CMD
//! ARGS`; flags may come before or after the command's arguments, as `--flag value` or
//! `--flag=value`; `--` ends the flags (for keys that start with `-`).
//!
//! `status` is cluster-wide: the binary asks the node it connected to for the member
//! list, then every member (at its client address) for its groups' state, and prints
//! one table of node × group ([`output::cluster_status_simple`]). A member that does not
//! answer is listed as unreachable, with its error; it does not fail the command. Each
//! row's lag is [`group_lags`]: how far that replica's applied index is behind its
//! group's commit index.

pub mod output;
pub mod txn;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::client::{prefix_range_end, DEFAULT_ENDPOINT};
use crate::mvcc::{DeleteRangeRequest, PutRequest, RangeRequest, SortOrder, SortTarget};
use crate::proto::{RaftRole, StatusResponse};

/// How answers are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Simple,
    Json,
}

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Put(PutRequest),
    Get(RangeRequest),
    Del(DeleteRangeRequest),
    /// The txn text is read from stdin.
    Txn,
    /// `group: None` = every group.
    Compact {
        revision: i64,
        group: Option<u32>,
    },
    Status,
    Topology,
    /// `member list|add|promote|remove`.
    Member(MemberCommand),
    /// Print this text and exit 0.
    Help(String),
}

/// A membership command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberCommand {
    List,
    /// NAME HOST:PEER_PORT[/CLIENT_PORT], as a learner unless `--voter`.
    Add(crate::proto::MemberAddRequest),
    Promote(u64),
    Remove(u64),
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub endpoints: Vec<String>,
    pub timeout: Duration,
    pub format: OutputFormat,
    pub command: Command,
}

/// One member's part of `corekvctl status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub node_id: u64,
    /// Its name in the member table (empty for a single node).
    pub name: String,
    /// Where it was asked: `host:port` of its shard 0's client port; empty when the
    /// member table knows no client port for it.
    pub endpoint: String,
    /// Its answer, or why there is none (connection refused, timeout, server error).
    pub status: Result<StatusResponse, String>,
}

/// The commit index each group's lag is measured against: the commit index of the
/// group's leader when the leader answered (a leader's commit index is the group's);
/// otherwise the highest commit index any answering replica reports (a lower bound of
/// the group's). A replica's lag is this minus its applied index (0 when it is ahead:
/// it may have answered later than the leader). Like etcd's `RAFT INDEX - RAFT APPLIED
/// INDEX`, but against the group's commit rather than the member's own.
pub fn group_lags(nodes: &[NodeStatus]) -> BTreeMap<u32, u64> {
    let mut highest: BTreeMap<u32, u64> = BTreeMap::new();
    let mut leaders: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for n in nodes {
        let Ok(st) = &n.status else { continue };
        for g in &st.groups {
            let h = highest.entry(g.group).or_default();
            *h = (*h).max(g.committed_index);
            if g.role == RaftRole::Leader {
                // Two leaders (an old one not yet deposed): the newer term's.
                let l = leaders.entry(g.group).or_default();
                *l = (*l).max((g.term, g.committed_index));
            }
        }
    }
    highest.extend(leaders.into_iter().map(|(g, (_, commit))| (g, commit)));
    highest
}

/// Bad usage: the message, and the help text to print after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError {
    pub message: String,
    pub usage: String,
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n\n{}", self.message, self.usage)
    }
}

pub const MAIN_USAGE: &str = "\
usage: corekvctl [--endpoints host:port[,..]] [--timeout S] [-w simple|json] COMMAND [ARGS]

commands:
  put KEY VALUE         write a key
  get KEY [RANGE_END]   read a key or a range
  del KEY [RANGE_END]   delete a key or a range
  txn                   run a transaction read from stdin (etcdctl's syntax)
  compact REV           compact history below REV
  status                show every group of every member (node x group table)
  topology              show shards, ports and leaders
  member list|add|promote|remove   show or change the cluster's members

global flags:
  --endpoints   comma-separated host:port list (default 127.0.0.1:7379)
  --timeout     seconds per request, retries included (default 10)
  -w, --write-out  simple (default) or json

'corekvctl COMMAND --help' describes a command.";

const PUT_USAGE: &str = "\
usage: corekvctl put KEY VALUE [--prev-kv] [--ignore-value] [--ignore-lease]
  --prev-kv       print the previous key-value
  --ignore-value  keep the current value (give no VALUE)
  --ignore-lease  keep the current lease
Prints OK.";

const GET_USAGE: &str = "\
usage: corekvctl get KEY [RANGE_END] [flags]
  --prefix            every key starting with KEY
  --from-key          every key >= KEY
  --limit N           at most N keys
  --rev R             read at revision R
  --keys-only         keys without values
  --count-only        only the number of keys
  --consistency l|s   linearizable (default) or serializable
  --sort-by KEY|VERSION|CREATE|MODIFY|VALUE
  --order ASCEND|DESCEND
  -w simple|json
Prints each key then its value on the next line.";

const DEL_USAGE: &str = "\
usage: corekvctl del KEY [RANGE_END] [--prefix] [--from-key] [--prev-kv]
Prints the number of keys deleted (then the deleted pairs with --prev-kv).";

const TXN_USAGE: &str = "\
usage: corekvctl txn < FILE
Reads from stdin, as etcdctl: compares, a blank line, success requests, a blank line,
failure requests. For example:
  mod(\"key1\") > \"0\"
  value(\"key2\") = \"v\"

  put key1 \"overwrote-key1\"
  get key2

  put key1 \"created-key1\"
Compare targets: ver|version, c|create, m|mod, val|value, lease; operators = != < >.
Requests: put KEY VALUE, get KEY [RANGE_END] [flags], del KEY [RANGE_END] [flags].
All keys must belong to one group (share a {hash tag}).";

const COMPACT_USAGE: &str = "\
usage: corekvctl compact REV [--group G]
Compacts the history of group G (every group when not given) below revision REV.";

const STATUS_USAGE: &str = "\
usage: corekvctl status [-w simple|json]
Asks the node behind the first answering endpoint for the member list, then every
member for its groups. One row per node and group: role, term, leader, commit and
applied index, lag (the group's commit index - this replica's applied index; the
group's commit is its leader's, or the highest reported when the leader does not
answer), revision, db and wal size. A member that does not answer is listed as
unreachable, with its error.";

const TOPOLOGY_USAGE: &str = "\
usage: corekvctl topology
Shards of the node, their client ports and leaders, and the known members.";

const MEMBER_USAGE: &str = "\
usage: corekvctl member list
       corekvctl member add NAME HOST:PEER_PORT[/CLIENT_PORT] [--voter]
       corekvctl member promote NODE_ID
       corekvctl member remove NODE_ID
add joins a node as a learner (a voter with --voter); start it with --join and an
--initial-cluster that lists every member, itself last. promote makes a caught-up learner
a voter; remove takes a member out (it stops serving).";

fn usage_of(cmd: &str) -> &'static str {
    match cmd {
        "put" => PUT_USAGE,
        "get" => GET_USAGE,
        "del" | "delete" => DEL_USAGE,
        "txn" => TXN_USAGE,
        "compact" => COMPACT_USAGE,
        "status" => STATUS_USAGE,
        "topology" => TOPOLOGY_USAGE,
        "member" => MEMBER_USAGE,
        _ => MAIN_USAGE,
    }
}

/// A flag a command accepts: its long name and whether it takes a value.
type FlagSpec = (&'static str, bool);

const GLOBAL_FLAGS: &[FlagSpec] = &[
    ("endpoints", true),
    ("timeout", true),
    ("write-out", true),
    ("help", false),
];
const PUT_FLAGS: &[FlagSpec] = &[
    ("prev-kv", false),
    ("ignore-value", false),
    ("ignore-lease", false),
];
const GET_FLAGS: &[FlagSpec] = &[
    ("prefix", false),
    ("from-key", false),
    ("limit", true),
    ("rev", true),
    ("keys-only", false),
    ("count-only", false),
    ("consistency", true),
    ("sort-by", true),
    ("order", true),
];
const DEL_FLAGS: &[FlagSpec] = &[("prefix", false), ("from-key", false), ("prev-kv", false)];
const COMPACT_FLAGS: &[FlagSpec] = &[("group", true)];

/// Flags and positional arguments of one command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub positional: Vec<String>,
    /// (flag, value) in order; value is `None` for switches.
    pub flags: Vec<(&'static str, Option<String>)>,
}

impl Parsed {
    fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| *n == name)
    }
    /// The last value given for `name`.
    fn value(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// Splits `args` into flags (from `specs`) and positional arguments. `-w` is
/// `--write-out`, `-h` is `--help`.
pub fn split_flags(args: &[String], specs: &[&[FlagSpec]]) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    let mut i = 0;
    let mut only_positional = false;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if only_positional || !a.starts_with('-') || a == "-" {
            out.positional.push(a.clone());
            continue;
        }
        if a == "--" {
            only_positional = true;
            continue;
        }
        let (name, inline) = match a.strip_prefix("--") {
            Some(rest) => match rest.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (rest.to_string(), None),
            },
            None => match &a[1..] {
                "w" => ("write-out".to_string(), None),
                "h" => ("help".to_string(), None),
                other => return Err(format!("unknown flag -{other}")),
            },
        };
        let spec = specs
            .iter()
            .flat_map(|s| s.iter())
            .find(|(n, _)| *n == name)
            .ok_or_else(|| format!("unknown flag --{name}"))?;
        let value = if spec.1 {
            match inline {
                Some(v) => Some(v),
                None => {
                    let v = args
                        .get(i)
                        .ok_or_else(|| format!("flag --{name} needs a value"))?;
                    i += 1;
                    Some(v.clone())
                }
            }
        } else {
            if inline.is_some() {
                return Err(format!("flag --{name} takes no value"));
            }
            None
        };
        out.flags.push((spec.0, value));
    }
    Ok(out)
}

fn parse_num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.parse()
        .map_err(|e| format!("--{flag} {v:?}: not a valid number: {e}"))
}

/// The key and range end of `get`/`del` from `KEY [RANGE_END]`, `--prefix`, `--from-key`.
fn key_range(p: &Parsed) -> Result<(Vec<u8>, Vec<u8>), String> {
    let key = p
        .positional
        .first()
        .ok_or("missing KEY")?
        .as_bytes()
        .to_vec();
    if p.positional.len() > 2 {
        return Err(format!("too many arguments: {:?}", &p.positional[2..]));
    }
    let explicit_end = p.positional.get(1).map(|s| s.as_bytes().to_vec());
    let prefix = p.has("prefix");
    let from_key = p.has("from-key");
    let modes = usize::from(prefix) + usize::from(from_key) + usize::from(explicit_end.is_some());
    if modes > 1 {
        return Err("give at most one of RANGE_END, --prefix, --from-key".into());
    }
    if prefix {
        // etcd: an empty prefix is every key.
        if key.is_empty() {
            return Ok((vec![0], vec![0]));
        }
        let end = prefix_range_end(&key);
        return Ok((key, end));
    }
    if from_key {
        let key = if key.is_empty() { vec![0] } else { key };
        return Ok((key, vec![0]));
    }
    Ok((key, explicit_end.unwrap_or_default()))
}

/// `put KEY VALUE [flags]` (also a txn line's put).
pub fn parse_put(p: &Parsed) -> Result<PutRequest, String> {
    let ignore_value = p.has("ignore-value");
    let want = if ignore_value { 1 } else { 2 };
    if p.positional.len() != want {
        return Err(if ignore_value {
            format!(
                "put --ignore-value takes KEY only, got {} arguments",
                p.positional.len()
            )
        } else {
            format!(
                "put takes KEY and VALUE, got {} arguments",
                p.positional.len()
            )
        });
    }
    Ok(PutRequest {
        key: p.positional[0].as_bytes().to_vec(),
        value: p
            .positional
            .get(1)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default(),
        lease: 0,
        prev_kv: p.has("prev-kv"),
        ignore_value,
        ignore_lease: p.has("ignore-lease"),
    })
}

/// `get KEY [RANGE_END] [flags]` (also a txn line's get).
pub fn parse_get(p: &Parsed) -> Result<RangeRequest, String> {
    let (key, range_end) = key_range(p)?;
    let mut req = RangeRequest {
        key,
        range_end,
        ..RangeRequest::default()
    };
    if let Some(v) = p.value("limit") {
        req.limit = parse_num("limit", v)?;
        if req.limit < 0 {
            return Err(format!("--limit {v}: must not be negative"));
        }
    }
    if let Some(v) = p.value("rev") {
        req.revision = parse_num("rev", v)?;
        if req.revision < 0 {
            return Err(format!("--rev {v}: must not be negative"));
        }
    }
    req.keys_only = p.has("keys-only");
    req.count_only = p.has("count-only");
    req.serializable = match p.value("consistency") {
        None | Some("l") => false,
        Some("s") => true,
        Some(other) => return Err(format!("--consistency {other:?}: expected l or s")),
    };
    if let Some(v) = p.value("sort-by") {
        req.sort_target = match v.to_ascii_uppercase().as_str() {
            "KEY" => SortTarget::Key,
            "VERSION" => SortTarget::Version,
            "CREATE" => SortTarget::Create,
            "MODIFY" => SortTarget::Mod,
            "VALUE" => SortTarget::Value,
            _ => {
                return Err(format!(
                    "--sort-by {v:?}: expected KEY, VERSION, CREATE, MODIFY or VALUE"
                ))
            }
        };
        // etcdctl: a sort target without an order sorts ascending.
        req.sort_order = SortOrder::Ascend;
    }
    if let Some(v) = p.value("order") {
        req.sort_order = match v.to_ascii_uppercase().as_str() {
            "ASCEND" => SortOrder::Ascend,
            "DESCEND" => SortOrder::Descend,
            _ => return Err(format!("--order {v:?}: expected ASCEND or DESCEND")),
        };
    }
    Ok(req)
}

/// `del KEY [RANGE_END] [flags]` (also a txn line's del).
pub fn parse_del(p: &Parsed) -> Result<DeleteRangeRequest, String> {
    let (key, range_end) = key_range(p)?;
    Ok(DeleteRangeRequest {
        key,
        range_end,
        prev_kv: p.has("prev-kv"),
    })
}

/// Parses a whole command line (without the program name).
pub fn parse_args(args: &[String]) -> Result<Invocation, UsageError> {
    let usage_err = |cmd: &str, message: String| UsageError {
        message,
        usage: usage_of(cmd).to_string(),
    };
    // The command is the first positional argument; global flags may precede it.
    let all: &[&[FlagSpec]] = &[
        GLOBAL_FLAGS,
        PUT_FLAGS,
        GET_FLAGS,
        DEL_FLAGS,
        COMPACT_FLAGS,
        MEMBER_FLAGS,
    ];
    let pre = split_flags(args, all).map_err(|m| usage_err("", m))?;
    let cmd = pre.positional.first().cloned().unwrap_or_default();
    let specs: &[FlagSpec] = match cmd.as_str() {
        "put" => PUT_FLAGS,
        "get" => GET_FLAGS,
        "del" | "delete" => DEL_FLAGS,
        "compact" => COMPACT_FLAGS,
        "member" => MEMBER_FLAGS,
        "txn" | "status" | "topology" | "" => &[],
        other => return Err(usage_err("", format!("unknown command {other:?}"))),
    };
    let p = split_flags(args, &[GLOBAL_FLAGS, specs]).map_err(|m| usage_err(&cmd, m))?;
    if p.has("help") {
        return Ok(Invocation {
            endpoints: vec![],
            timeout: Duration::ZERO,
            format: OutputFormat::Simple,
            command: Command::Help(usage_of(&cmd).to_string()),
        });
    }
    if cmd.is_empty() {
        return Err(usage_err("", "no command given".into()));
    }
    let endpoints: Vec<String> = match p.value("endpoints") {
        Some(v) => v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        None => vec![DEFAULT_ENDPOINT.to_string()],
    };
    if endpoints.is_empty() {
        return Err(usage_err(&cmd, "--endpoints names no endpoint".into()));
    }
    if let Some(bad) = endpoints.iter().find(|e| {
        e.rsplit_once(':')
            .is_none_or(|(h, port)| h.is_empty() || port.parse::<u16>().is_err())
    }) {
        return Err(usage_err(
            &cmd,
            format!("--endpoints: {bad:?} is not host:port"),
        ));
    }
    let timeout = match p.value("timeout") {
        Some(v) => {
            let secs: f64 =
                parse_num("timeout", v.trim_end_matches('s')).map_err(|m| usage_err(&cmd, m))?;
            if !(secs > 0.0 && secs <= 86_400.0) {
                return Err(usage_err(
                    &cmd,
                    format!("--timeout {v}: must be between 0 and 86400 seconds"),
                ));
            }
            Duration::from_secs_f64(secs)
        }
        None => Duration::from_secs(10),
    };
    let format = match p.value("write-out") {
        None | Some("simple") => OutputFormat::Simple,
        Some("json") => OutputFormat::Json,
        Some(other) => {
            return Err(usage_err(
                &cmd,
                format!("-w {other:?}: expected simple or json"),
            ))
        }
    };
    // Positional arguments after the command itself.
    let rest = Parsed {
        positional: p.positional[1..].to_vec(),
        flags: p.flags,
    };
    let no_args = |rest: &Parsed| {
        if rest.positional.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{cmd} takes no arguments, got {:?}",
                rest.positional
            ))
        }
    };
    let command = match cmd.as_str() {
        "put" => parse_put(&rest).map(Command::Put),
        "get" => parse_get(&rest).map(Command::Get),
        "del" | "delete" => parse_del(&rest).map(Command::Del),
        "txn" => no_args(&rest).map(|_| Command::Txn),
        "status" => no_args(&rest).map(|_| Command::Status),
        "topology" => no_args(&rest).map(|_| Command::Topology),
        "compact" => parse_compact(&rest),
        "member" => parse_member(&rest).map(Command::Member),
        _ => unreachable!("command checked above"),
    }
    .map_err(|m| usage_err(&cmd, m))?;
    Ok(Invocation {
        endpoints,
        timeout,
        format,
        command,
    })
}

const MEMBER_FLAGS: &[FlagSpec] = &[("voter", false)];

fn parse_member(p: &Parsed) -> Result<MemberCommand, String> {
    let args: Vec<&str> = p.positional.iter().map(String::as_str).collect();
    let node_id = |v: &str| {
        v.parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{v:?} is not a node id (a positive integer)"))
    };
    match args.as_slice() {
        ["list"] => Ok(MemberCommand::List),
        ["add", name, addr] => {
            let (host_port, client) = match addr.split_once('/') {
                Some((hp, c)) => (hp, Some(c)),
                None => (*addr, None),
            };
            let (host, peer) = host_port
                .rsplit_once(':')
                .ok_or_else(|| format!("{addr:?} is not HOST:PEER_PORT[/CLIENT_PORT]"))?;
            if host.parse::<std::net::IpAddr>().is_err() {
                return Err(format!("{host:?} is not an IP address"));
            }
            let port = |v: &str| {
                v.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("{v:?} is not a port"))
            };
            Ok(MemberCommand::Add(crate::proto::MemberAddRequest {
                name: name.to_string(),
                host: host.to_string(),
                peer_port_base: port(peer)?,
                client_port_base: client.map(port).transpose()?.unwrap_or(0),
                learner: !p.has("voter"),
            }))
        }
        ["promote", id] => node_id(id).map(MemberCommand::Promote),
        ["remove", id] => node_id(id).map(MemberCommand::Remove),
        _ => Err(
            "expected: member list | add NAME HOST:PORT[/CLIENT_PORT] | promote ID | \
                  remove ID"
                .into(),
        ),
    }
}

fn parse_compact(p: &Parsed) -> Result<Command, String> {
    if p.positional.len() != 1 {
        return Err(format!(
            "compact takes one REV, got {} arguments",
            p.positional.len()
        ));
    }
    let revision: i64 = p.positional[0]
        .parse()
        .map_err(|e| format!("REV {:?}: not a valid revision: {e}", p.positional[0]))?;
    if revision <= 0 {
        return Err(format!("REV {revision}: must be positive"));
    }
    let group = match p.value("group") {
        Some(v) => Some(parse_num::<u32>("group", v)?),
        None => None,
    };
    Ok(Command::Compact { revision, group })
}

/// Parses one txn request line's words (`put`/`get`/`del` with their flags).
pub fn parse_txn_op_words(words: &[String]) -> Result<crate::mvcc::RequestOp, String> {
    use crate::mvcc::RequestOp;
    let (cmd, rest) = words.split_first().ok_or("empty request")?;
    match cmd.as_str() {
        "put" => parse_put(&split_flags(rest, &[PUT_FLAGS])?).map(RequestOp::Put),
        "get" => parse_get(&split_flags(rest, &[GET_FLAGS])?).map(RequestOp::Range),
        "del" | "delete" => {
            parse_del(&split_flags(rest, &[DEL_FLAGS])?).map(RequestOp::DeleteRange)
        }
        other => Err(format!(
            "unknown request {other:?} (expected put, get or del)"
        )),
    }
}

#[cfg(test)]
mod tests;
