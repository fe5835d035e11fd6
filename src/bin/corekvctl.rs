//! `corekvctl`: corekv's command line, etcdctl-like.
//!
//! Exit codes: 0 success, 1 a server or connection error (message on stderr naming the
//! error code), 2 bad usage. Parsing and formatting live in `corekv::client::cli`; this
//! file connects, runs the command through a blocking `ThreadedClient`, and prints.

use std::io::{Read, Write};
use std::process::ExitCode;

use corekv::client::cli::output as out;
use corekv::client::cli::{
    parse_args, txn::parse_txn, Command, Invocation, NodeStatus, OutputFormat,
};
use corekv::client::{ClientConfig, ClientError, ThreadedClient};
use corekv::proto::{MemberInfo, Op, ResponseBody};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let inv = match parse_args(&args) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("Error: {}\n\n{}", e.message, e.usage);
            return ExitCode::from(2);
        }
    };
    if let Command::Help(text) = &inv.command {
        println!("{text}");
        return ExitCode::SUCCESS;
    }
    // Read the txn text before connecting: bad syntax is a usage error.
    let txn = if inv.command == Command::Txn {
        let mut text = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut text) {
            eprintln!("Error: reading the txn from stdin: {e}");
            return ExitCode::from(2);
        }
        match parse_txn(&text) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("Error: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    match run(&inv, txn) {
        Ok(text) => {
            let mut stdout = std::io::stdout().lock();
            if stdout.write_all(text.as_bytes()).is_err() || stdout.flush().is_err() {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {}", describe(&e));
            ExitCode::from(1)
        }
    }
}

fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Server { code, message } => format!("{code:?}: {message}"),
        other => other.to_string(),
    }
}

fn client_config(endpoints: Vec<String>, inv: &Invocation) -> ClientConfig {
    let mut cfg = ClientConfig::with_endpoints(endpoints);
    cfg.request_timeout = inv.timeout;
    cfg.connect_timeout = inv.timeout.min(cfg.connect_timeout);
    cfg.channel_capacity = 16;
    cfg
}

/// `status` of every member: the member list from the node `client` is connected to,
/// then each member's own answer, asked in parallel at its client address (the
/// connected node's answer through `client`). A member that does not answer gets its
/// error, not a failure of the command.
fn cluster_status(
    client: &ThreadedClient,
    inv: &Invocation,
) -> Result<Vec<NodeStatus>, ClientError> {
    let c = client.blocking();
    let me = client.bootstrap_info().node_id;
    let mut members = match c.execute(Op::MemberList)?.body {
        ResponseBody::Members(list) => list.members,
        other => {
            return Err(ClientError::Protocol(format!(
                "expected a member list, got {other:?}"
            )))
        }
    };
    if !members.iter().any(|m| m.node_id == me) {
        // Not in its own table (a node being removed): list it anyway.
        members.push(MemberInfo {
            node_id: me,
            name: String::new(),
            host: String::new(),
            peer_port_base: 0,
            client_port_base: 0,
            learner: false,
        });
    }
    let asked: Vec<_> = members
        .into_iter()
        .map(|m| {
            let endpoint = match m.host.parse::<std::net::IpAddr>() {
                Ok(ip) if m.client_port_base != 0 => {
                    std::net::SocketAddr::new(ip, m.client_port_base).to_string()
                }
                _ => String::new(),
            };
            let answer = if m.node_id == me {
                Ok(c.status().map(|r| r.body).map_err(|e| describe(&e)))
            } else if endpoint.is_empty() {
                Ok(Err(format!(
                    "no client address known (host {:?}, client port {})",
                    m.host, m.client_port_base
                )))
            } else {
                let cfg = client_config(vec![endpoint.clone()], inv);
                Err(std::thread::spawn(move || {
                    let node = ThreadedClient::connect(cfg).map_err(|e| describe(&e))?;
                    let st = node.blocking().status().map_err(|e| describe(&e))?;
                    Ok(st.body)
                }))
            };
            (m, endpoint, answer)
        })
        .collect();
    Ok(asked
        .into_iter()
        .map(|(m, endpoint, answer)| {
            let status = match answer {
                Ok(st) => st,
                Err(thread) => thread
                    .join()
                    .unwrap_or_else(|_| Err("the status thread panicked".to_string())),
            };
            let status = status.and_then(|st| {
                if st.node_id == m.node_id {
                    Ok(st)
                } else {
                    Err(format!(
                        "{endpoint} answers as node {}, not node {}",
                        st.node_id, m.node_id
                    ))
                }
            });
            NodeStatus {
                node_id: m.node_id,
                name: m.name,
                endpoint,
                status,
            }
        })
        .collect())
}

fn run(inv: &Invocation, txn: Option<corekv::mvcc::TxnRequest>) -> Result<String, ClientError> {
    let client = ThreadedClient::connect(client_config(inv.endpoints.clone(), inv))?;
    let c = client.blocking();
    let json = inv.format == OutputFormat::Json;
    Ok(match &inv.command {
        Command::Put(req) => {
            let r = c.put_with(req.clone())?;
            if json {
                out::put_json(&r)
            } else {
                out::put_simple(&r.body)
            }
        }
        Command::Get(req) => {
            let r = c.range(req.clone())?;
            if json {
                out::get_json(&r)
            } else {
                out::get_simple(&r.body, req.keys_only, req.count_only)
            }
        }
        Command::Del(req) => {
            let r = c.delete_range(req.clone())?;
            if json {
                out::del_json(&r)
            } else {
                out::del_simple(&r.body)
            }
        }
        Command::Txn => {
            let r = c.txn(txn.expect("txn text read in main"))?;
            if json {
                out::txn_json(&r)
            } else {
                out::txn_simple(&r.body)
            }
        }
        Command::Compact { revision, group } => {
            let groups: Vec<u32> = match group {
                Some(g) => vec![*g],
                None => (0..client.bootstrap_info().shard_count).collect(),
            };
            let mut text = String::new();
            for g in groups {
                c.compact(g, *revision)?;
                text.push_str(&out::compact_simple(g, *revision));
            }
            text
        }
        Command::Status => {
            let info = client.bootstrap_info();
            let nodes = cluster_status(&client, inv)?;
            if json {
                out::cluster_status_json(&nodes, info.cluster_id)
            } else {
                out::cluster_status_simple(&nodes, info.cluster_id, info.shard_count)
            }
        }
        Command::Topology => {
            let r = c.topology()?;
            if json {
                out::topology_json(&r.body)
            } else {
                out::topology_simple(&r.body)
            }
        }
        Command::Member(m) => {
            use corekv::client::cli::MemberCommand;
            let op = match m {
                MemberCommand::List => Op::MemberList,
                MemberCommand::Add(a) => Op::MemberAdd(a.clone()),
                MemberCommand::Promote(id) => Op::MemberPromote { node_id: *id },
                MemberCommand::Remove(id) => Op::MemberRemove { node_id: *id },
            };
            match c.execute(op)?.body {
                ResponseBody::Members(list) => out::members_simple(&list),
                other => {
                    return Err(ClientError::Protocol(format!(
                        "expected a member list, got {other:?}"
                    )))
                }
            }
        }
        Command::Help(_) => unreachable!("handled in main"),
    })
}
