//! `corekvctl`: corekv's command line, etcdctl-like.
//!
//! Exit codes: 0 success, 1 a server or connection error (message on stderr naming the
//! error code), 2 bad usage. Parsing and formatting live in `corekv::client::cli`; this
//! file connects, runs the command through a blocking `ThreadedClient`, and prints.

use std::io::{Read, Write};
use std::process::ExitCode;

use corekv::client::cli::output as out;
use corekv::client::cli::{parse_args, txn::parse_txn, Command, Invocation, OutputFormat};
use corekv::client::{ClientConfig, ClientError, ThreadedClient};

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
            match &e {
                ClientError::Server { code, message } => {
                    eprintln!("Error: {code:?}: {message}")
                }
                other => eprintln!("Error: {other}"),
            }
            ExitCode::from(1)
        }
    }
}

fn run(inv: &Invocation, txn: Option<corekv::mvcc::TxnRequest>) -> Result<String, ClientError> {
    let mut cfg = ClientConfig::with_endpoints(inv.endpoints.clone());
    cfg.request_timeout = inv.timeout;
    cfg.connect_timeout = inv.timeout.min(cfg.connect_timeout);
    cfg.channel_capacity = 16;
    let client = ThreadedClient::connect(cfg)?;
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
            let r = c.status()?;
            if json {
                out::status_json(&r.body)
            } else {
                out::status_simple(&r.body)
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
            use corekv::proto::{Op, ResponseBody};
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
