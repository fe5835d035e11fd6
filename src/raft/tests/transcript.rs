//! Transcript tests: scripts in `src/raft/testdata/*.txt` drive a [`Cluster`] with
//! commands (`> campaign 1`, `> stabilize`, ...) and the file holds, under each
//! command, every Ready and message it produced. The test fails when the output
//! differs; `REWRITE=1 cargo test --lib transcript` rewrites the files.
//!
//! Commands: `cluster N [pre_vote=B] [check_quorum=B] [max_msg_bytes=N]
//! [max_uncommitted_bytes=N] [max_inflight_msgs=N]`, `campaign ID`, `propose ID D...`,
//! `conf ID v+N|l+N|r-N`, `tick ID [N]`, `tick-election ID`, `tick-heartbeat ID`,
//! `deliver [drop=ID,ID]`, `process-ready [ID]`, `stabilize`, `read-index ID CTX`,
//! `transfer ID TO`, `compact ID INDEX`, `isolate ID`, `heal`, `status ID`, `log ID`,
//! `add-node ID`, `report-snapshot ID TO ok|fail`, `restart ID`. Lines starting with
//! `#` are comments.

use super::harness::Cluster;
use crate::raft::message::write_entries_string;
use crate::raft::{ConfChange, ConfChangeKind, Config, RawNode};
use std::fmt::Write;

fn parse_kv(args: &[&str], cfg: &mut Config) {
    for a in args {
        let (k, v) = a.split_once('=').expect("key=value");
        match k {
            "pre_vote" => cfg.pre_vote = v == "true",
            "check_quorum" => cfg.check_quorum = v == "true",
            "max_msg_bytes" => cfg.max_msg_bytes = v.parse().unwrap(),
            "max_uncommitted_bytes" => cfg.max_uncommitted_bytes = v.parse().unwrap(),
            "max_inflight_msgs" => cfg.max_inflight_msgs = v.parse().unwrap(),
            _ => panic!("unknown option {k}"),
        }
    }
}

fn status_line(c: &Cluster, id: u64) -> String {
    let s = c.nodes[&id].status();
    let mut out = format!(
        "n{id} {:?} t{} v{} lead{} commit{} applied{} persisted{} log[{},{}] voters{:?} learners{:?}\n",
        s.role,
        s.term,
        s.vote,
        s.leader,
        s.commit,
        s.applied,
        s.persisted,
        s.first_index,
        s.last_index,
        s.conf.voters,
        s.conf.learners
    );
    for (p, pr) in &s.progress {
        let _ = writeln!(
            out,
            "  {p}: match{} next{} {:?}{} inflight{}",
            pr.match_index,
            pr.next_index,
            pr.state,
            if pr.is_learner { " learner" } else { "" },
            pr.inflight_msgs
        );
    }
    out
}

fn run_command(c: &mut Option<Cluster>, line: &str) -> String {
    let parts: Vec<&str> = line.split_whitespace().collect();
    let (cmd, args) = (parts[0], &parts[1..]);
    let num = |i: usize| -> u64 { args[i].parse().expect("number") };
    if cmd == "cluster" {
        let n = num(0);
        *c = Some(Cluster::new(n, |cfg| parse_kv(&args[1..], cfg)));
        return String::new();
    }
    let cl = c.as_mut().expect("`cluster` first");
    match cmd {
        "campaign" => cl.node(num(0)).campaign(),
        "propose" => {
            let batch = args[1..].iter().map(|a| a.as_bytes().to_vec()).collect();
            match cl.node(num(0)).propose(batch) {
                Ok(i) => cl.out.push_str(&format!("index {i}\n")),
                Err(e) => cl.out.push_str(&format!("error: {e}\n")),
            }
        }
        "conf" => {
            let spec = args[1];
            let node = spec[2..].parse().unwrap();
            let kind = match &spec[..2] {
                "v+" => ConfChangeKind::AddVoter,
                "l+" => ConfChangeKind::AddLearner,
                "r-" => ConfChangeKind::RemoveNode,
                k => panic!("conf kind {k}"),
            };
            match cl
                .node(num(0))
                .propose_conf_change(ConfChange { kind, node })
            {
                Ok(i) => cl.out.push_str(&format!("index {i}\n")),
                Err(e) => cl.out.push_str(&format!("error: {e}\n")),
            }
        }
        "tick" => {
            let n = if args.len() > 1 { num(1) } else { 1 };
            cl.tick(num(0), n);
        }
        "tick-election" => {
            let n = 2 * cl.cfg.election_ticks;
            cl.tick(num(0), n);
        }
        "tick-heartbeat" => {
            let n = cl.cfg.heartbeat_ticks;
            cl.tick(num(0), n);
        }
        "deliver" => {
            let drop: Vec<u64> = args
                .iter()
                .filter_map(|a| a.strip_prefix("drop="))
                .flat_map(|l| l.split(',').map(|x| x.parse::<u64>().unwrap()))
                .collect();
            cl.deliver(&drop);
        }
        "process-ready" => {
            if args.is_empty() {
                cl.process_all();
            } else {
                cl.process_ready(num(0));
            }
        }
        "stabilize" => cl.stabilize(),
        "read-index" => {
            if let Err(e) = cl.node(num(0)).read_index(args[1].as_bytes().to_vec()) {
                cl.out.push_str(&format!("error: {e}\n"));
            }
        }
        "transfer" => cl.node(num(0)).transfer_leader(num(1)),
        "compact" => {
            let (id, idx) = (num(0), num(1));
            let conf = cl.nodes[&id].conf_state_at(idx).expect("conf at index");
            cl.node(id).storage_mut().compact(idx, conf, Vec::new());
        }
        "isolate" => {
            cl.isolated.insert(num(0));
        }
        "heal" => cl.isolated.clear(),
        "status" => {
            let s = status_line(cl, num(0));
            cl.out.push_str(&s);
        }
        "log" => {
            let l = cl.log(num(0));
            let s = format!("n{} log {}\n", num(0), write_entries_string(&l));
            cl.out.push_str(&s);
        }
        "add-node" => {
            let boot = cl.boot.clone();
            cl.add_node(num(0), boot)
        }
        "report-snapshot" => {
            let ok = args[2] == "ok";
            cl.node(num(0)).report_snapshot(num(1), ok);
        }
        "restart" => {
            let id = num(0);
            let node = cl.nodes.remove(&id).unwrap();
            let storage = node.into_storage();
            let mut cfg = cl.cfg.clone();
            cfg.id = id;
            cfg.seed = id + 100;
            cfg.applied = storage.snapshot().meta.index;
            cl.nodes
                .insert(id, RawNode::new(cfg, storage).expect("restart"));
            cl.applied.insert(id, Vec::new());
        }
        _ => panic!("unknown command {cmd}"),
    }
    cl.take_out()
}

fn run_file(path: &std::path::Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    let mut cluster = None;
    for line in text.lines() {
        if line.starts_with('#') || (line.is_empty() && !out.ends_with("\n\n")) {
            if line.starts_with('#') {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        if let Some(cmd) = line.strip_prefix("> ") {
            if !out.is_empty() && !out.ends_with("\n\n") && !out.ends_with("#\n") {
                // keep commands visually grouped
            }
            out.push_str(line);
            out.push('\n');
            out.push_str(&run_command(&mut cluster, cmd));
        }
    }
    if out == text {
        return Ok(());
    }
    if std::env::var("REWRITE").is_ok() {
        std::fs::write(path, &out).unwrap();
        return Ok(());
    }
    let diff_at = out
        .lines()
        .zip(text.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(out.lines().count().min(text.lines().count()));
    Err(format!(
        "{}: output differs from line {} on:\n--- got\n{}\n--- want\n{}",
        path.display(),
        diff_at + 1,
        out.lines()
            .skip(diff_at)
            .take(8)
            .collect::<Vec<_>>()
            .join("\n"),
        text.lines()
            .skip(diff_at)
            .take(8)
            .collect::<Vec<_>>()
            .join("\n"),
    ))
}

#[test]
fn transcripts() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/raft/testdata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "expected at least 8 transcripts");
    let errs: Vec<String> = files.iter().filter_map(|f| run_file(f).err()).collect();
    assert!(errs.is_empty(), "{}", errs.join("\n\n"));
}
