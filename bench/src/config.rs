//! Command line: `corekv-bench [run] OPTIONS` and `corekv-bench report OPTIONS`.
//!
//! Options are `--name value` or `--name=value`; lists are comma-separated; durations are
//! `250ms`, `10s`, `2m` or plain seconds. Every value is checked here, so the driver can
//! assert instead of validating.

use std::time::Duration;

use crate::keys::KeySpace;
use crate::workload::Workload;

pub const USAGE: &str = "\
corekv-bench: drive etcd and corekv with the same workload

usage: corekv-bench [run] [options]
       corekv-bench report --input FILE [--input FILE ...] [--md FILE] [--cdf FILE] [--ratio-line]
                           [--median-ops WORKLOAD:TOPOLOGY:INFLIGHT:TARGET]

run options (defaults in brackets):
  --target etcd|corekv        server kind [etcd]
  --endpoints A,B,...         host:port of the servers [127.0.0.1:2379]
  --workload W,...            fill, put, get (linearizable), get-serializable,
                              range (100-key prefix), mix (90% get / 10% put), cas [put]
  --inflight N,...            requests in flight; each value is one run [64]
  --conns N                   client connections (at most the in-flight count) [16]
  --mode closed|open          closed: fixed in flight; open: fixed offered rate [closed]
  --rate OPS                  open loop: offered ops/s (latency counted from the
                              intended send time: no coordinated omission)
  --duration D | --ops N      length of the measured phase [10s]
  --warmup D                  unrecorded warm-up before each run [1s]
  --fill                      write every key once before the first run
  --keys N                    key space [100000]
  --key-size B                key bytes [16]
  --value-size B              value bytes [256]
  --timeout D                 per-request timeout (counts as an error) [5s]
  --seed N                    seed of key choice and values [1]
  --client-threads N          tokio worker threads [available CPUs]
  --client-sched batch|normal scheduling policy of every client thread [batch]: with
                              SCHED_BATCH a thread that wakes another on the same CPU
                              (the workers and a client's I/O thread) is not preempted
                              by it, so requests and answers cross in batches instead
                              of one context switch each; the same for every target
  --label K=V                 add a label to every record (repeatable)
  --json FILE                 append JSON lines to FILE instead of stdout
  --progress D                progress line on stderr every D, 0 = off [5s]
  --server-pids P,...         measure these server processes' CPU time (/proc)

report options:
  --input FILE                JSON lines from runs (repeatable)
  --md FILE                   write the markdown table of medians there (else stdout)
  --cdf FILE                  write merged latency-CDF series (JSON) for plotting
  --ratio-line                print the open-loop p99 comparisons, then the corekv/etcd
                              ratio line last
  --median-ops W:T:N:TARGET   print only the median closed-loop ops/s of that row and
                              target (e.g. put:single:256:etcd); fails if there is none
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Etcd,
    Corekv,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunArgs {
    pub target: TargetKind,
    pub endpoints: Vec<String>,
    pub workloads: Vec<Workload>,
    pub inflight: Vec<usize>,
    pub conns: usize,
    /// Open-loop offered rate; None for a closed loop.
    pub rate: Option<f64>,
    pub duration: Option<Duration>,
    pub ops: Option<u64>,
    pub warmup: Duration,
    pub fill: bool,
    pub space: KeySpace,
    pub value_size: usize,
    pub timeout: Duration,
    pub seed: u64,
    pub client_threads: Option<usize>,
    /// Run the client's threads under SCHED_BATCH (`--client-sched batch`).
    pub sched_batch: bool,
    pub labels: Vec<(String, String)>,
    pub json: Option<String>,
    pub progress: Option<Duration>,
    pub server_pids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportArgs {
    pub inputs: Vec<String>,
    pub md: Option<String>,
    pub cdf: Option<String>,
    pub ratio_line: bool,
    /// `(workload, topology, in flight, target)` whose median ops/s to print.
    pub median_ops: Option<(String, String, usize, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run(Box<RunArgs>),
    Report(ReportArgs),
    Help,
}

/// Parses a duration: `250ms`, `10s`, `2m`, `1.5` (seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (use 250ms, 10s, 2m)"))?;
    if !v.is_finite() || v < 0.0 || v * scale > 1e6 {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

fn parse_num<T: std::str::FromStr>(name: &str, s: &str) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("--{name}: {s:?} is not a valid number"))
}

/// Splits `--name=value` / `--name value` pairs.
fn pairs(args: &[String]) -> Result<Vec<(String, Option<String>)>, String> {
    const FLAGS: [&str; 3] = ["fill", "ratio-line", "help"];
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let name = arg
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {arg:?} (options start with --)"))?;
        if let Some((n, v)) = name.split_once('=') {
            out.push((n.to_string(), Some(v.to_string())));
        } else if FLAGS.contains(&name) {
            out.push((name.to_string(), None));
        } else {
            let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            out.push((name.to_string(), Some(v.clone())));
        }
    }
    Ok(out)
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    match args.first().map(String::as_str) {
        Some("report") => parse_report(&args[1..]),
        Some("run") => parse_run(&args[1..]),
        Some("help" | "--help" | "-h") => Ok(Command::Help),
        _ => parse_run(args),
    }
}

fn parse_report(args: &[String]) -> Result<Command, String> {
    let mut r = ReportArgs {
        inputs: Vec::new(),
        md: None,
        cdf: None,
        ratio_line: false,
        median_ops: None,
    };
    for (name, value) in pairs(args)? {
        let v = value.unwrap_or_default();
        match name.as_str() {
            "input" => r.inputs.push(v),
            "md" => r.md = Some(v),
            "cdf" => r.cdf = Some(v),
            "ratio-line" => r.ratio_line = true,
            "median-ops" => r.median_ops = Some(parse_row(&v)?),
            "help" => return Ok(Command::Help),
            other => return Err(format!("report: unknown option --{other}")),
        }
    }
    if r.inputs.is_empty() {
        return Err("report: give at least one --input FILE".into());
    }
    Ok(Command::Report(r))
}

/// `WORKLOAD:TOPOLOGY:INFLIGHT:TARGET` of `--median-ops`.
fn parse_row(v: &str) -> Result<(String, String, usize, String), String> {
    match v.split(':').collect::<Vec<_>>()[..] {
        [w, t, n, target] if !w.is_empty() && !t.is_empty() && !target.is_empty() => Ok((
            w.to_string(),
            t.to_string(),
            parse_num("median-ops", n)?,
            target.to_string(),
        )),
        _ => Err(format!(
            "--median-ops: {v:?} is not WORKLOAD:TOPOLOGY:INFLIGHT:TARGET"
        )),
    }
}

fn parse_run(args: &[String]) -> Result<Command, String> {
    let mut target = TargetKind::Etcd;
    let mut endpoints = vec!["127.0.0.1:2379".to_string()];
    let mut workloads = vec![Workload::Put];
    let mut inflight = vec![64];
    let mut conns = 16;
    let mut mode = "closed".to_string();
    let mut rate = None;
    let mut duration = None;
    let mut ops = None;
    let mut warmup = Duration::from_secs(1);
    let mut fill = false;
    let mut keys = 100_000u64;
    let mut key_size = 16usize;
    let mut value_size = 256usize;
    let mut timeout = Duration::from_secs(5);
    let mut seed = 1u64;
    let mut client_threads = None;
    let mut sched_batch = true;
    let mut labels = Vec::new();
    let mut json = None;
    let mut progress = Some(Duration::from_secs(5));
    let mut server_pids = Vec::new();

    for (name, value) in pairs(args)? {
        let v = value.unwrap_or_default();
        match name.as_str() {
            "target" => {
                target = match v.as_str() {
                    "etcd" => TargetKind::Etcd,
                    "corekv" => TargetKind::Corekv,
                    _ => return Err(format!("--target: unknown target {v:?} (etcd, corekv)")),
                }
            }
            "endpoints" => {
                endpoints = v
                    .split(',')
                    .filter(|e| !e.is_empty())
                    .map(String::from)
                    .collect()
            }
            "workload" => {
                workloads = v
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--workload: {e}"))?
            }
            "inflight" => {
                inflight = v
                    .split(',')
                    .map(|n| parse_num::<usize>("inflight", n))
                    .collect::<Result<_, _>>()?
            }
            "conns" => conns = parse_num("conns", &v)?,
            "mode" => mode = v,
            "rate" => rate = Some(parse_num::<f64>("rate", &v)?),
            "duration" => duration = Some(parse_duration(&v)?),
            "ops" => ops = Some(parse_num("ops", &v)?),
            "warmup" => warmup = parse_duration(&v)?,
            "fill" => fill = true,
            "keys" => keys = parse_num("keys", &v)?,
            "key-size" => key_size = parse_num("key-size", &v)?,
            "value-size" => value_size = parse_num("value-size", &v)?,
            "timeout" => timeout = parse_duration(&v)?,
            "seed" => seed = parse_num("seed", &v)?,
            "client-threads" => client_threads = Some(parse_num("client-threads", &v)?),
            "client-sched" => {
                sched_batch = match v.as_str() {
                    "batch" => true,
                    "normal" => false,
                    _ => return Err(format!("--client-sched: {v:?} is not batch or normal")),
                }
            }
            "label" => {
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--label: {v:?} is not key=value"))?;
                labels.push((k.to_string(), val.to_string()));
            }
            "json" => json = Some(v),
            "progress" => {
                let d = parse_duration(&v)?;
                progress = (!d.is_zero()).then_some(d);
            }
            "server-pids" => {
                server_pids = v
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| parse_num::<u32>("server-pids", p))
                    .collect::<Result<_, _>>()?
            }
            "help" => return Ok(Command::Help),
            other => return Err(format!("unknown option --{other} (see --help)")),
        }
    }

    if endpoints.is_empty() {
        return Err("--endpoints: give at least one host:port".into());
    }
    if inflight.is_empty() || inflight.contains(&0) || inflight.iter().any(|&n| n > 100_000) {
        return Err("--inflight: each value must be in 1..=100000".into());
    }
    if conns == 0 || conns > 10_000 {
        return Err("--conns must be in 1..=10000".into());
    }
    match (mode.as_str(), rate) {
        ("closed", None) => {}
        ("closed", Some(_)) => return Err("--rate needs --mode open".into()),
        ("open", Some(r)) if r.is_finite() && r > 0.0 && r <= 1e8 => {}
        ("open", _) => return Err("--mode open needs --rate OPS (0 < OPS <= 1e8)".into()),
        _ => return Err(format!("--mode: {mode:?} is not closed or open")),
    }
    if duration.is_some() && ops.is_some() {
        return Err("give --duration or --ops, not both".into());
    }
    if ops == Some(0) || duration == Some(Duration::ZERO) {
        return Err("the measured phase must not be empty".into());
    }
    if duration.is_none() && ops.is_none() {
        duration = Some(Duration::from_secs(10));
    }
    if timeout.is_zero() {
        return Err("--timeout must be positive".into());
    }
    if value_size == 0 || value_size > 16 << 20 {
        return Err("--value-size must be in 1..=16 MiB".into());
    }
    if client_threads == Some(0) {
        return Err("--client-threads must be at least 1".into());
    }
    let space = KeySpace::new(keys, key_size).map_err(|e| e.to_string())?;
    if workloads.contains(&Workload::Range) && space.range_blocks() == 0 {
        return Err("--workload range needs --keys of at least 100".into());
    }
    Ok(Command::Run(Box::new(RunArgs {
        target,
        endpoints,
        workloads,
        inflight,
        conns,
        rate,
        duration,
        ops,
        warmup,
        fill,
        space,
        value_size,
        timeout,
        seed,
        client_threads,
        sched_batch,
        labels,
        json,
        progress,
        server_pids,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn run(s: &str) -> RunArgs {
        match parse(&args(s)).unwrap() {
            Command::Run(r) => *r,
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let r = run("");
        assert_eq!(r.target, TargetKind::Etcd);
        assert_eq!(r.endpoints, vec!["127.0.0.1:2379"]);
        assert_eq!(r.workloads, vec![Workload::Put]);
        assert_eq!(r.space, KeySpace::new(100_000, 16).unwrap());
        assert_eq!(r.value_size, 256);
        assert_eq!(r.duration, Some(Duration::from_secs(10)));
        assert_eq!(r.rate, None);
        assert!(r.sched_batch);
        assert!(!run("--client-sched normal").sched_batch);
    }

    #[test]
    fn full_command_line() {
        let r = run(
            "run --target=etcd --endpoints a:1,b:2,c:3 --workload put,get,mix \
                     --inflight 1,64,256 --mode open --rate 5000 --ops 1000 --warmup 500ms \
                     --fill --keys 1000 --key-size 8 --value-size 64 --label topology=single \
                     --label round=2 --json out.jsonl --progress 0 --server-pids 12,34",
        );
        assert_eq!(r.endpoints.len(), 3);
        assert_eq!(
            r.workloads,
            vec![Workload::Put, Workload::Get, Workload::Mix]
        );
        assert_eq!(r.inflight, vec![1, 64, 256]);
        assert_eq!(r.rate, Some(5000.0));
        assert_eq!(r.ops, Some(1000));
        assert_eq!(r.duration, None);
        assert_eq!(r.warmup, Duration::from_millis(500));
        assert!(r.fill);
        assert_eq!(r.labels[1], ("round".to_string(), "2".to_string()));
        assert_eq!(r.json.as_deref(), Some("out.jsonl"));
        assert_eq!(r.progress, None);
        assert_eq!(r.server_pids, vec![12, 34]);
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        let cases = [
            ("--workload gett", "unknown workload"),
            ("--inflight 0", "--inflight"),
            ("--mode open", "needs --rate"),
            ("--rate 10", "needs --mode open"),
            ("--duration 5s --ops 10", "not both"),
            ("--keys 50 --workload range", "at least 100"),
            ("--key-size 3", "too small"),
            ("--duration fast", "bad duration"),
            ("--label round", "key=value"),
            ("--bogus 1", "unknown option"),
            ("--conns", "needs a value"),
            ("stray", "unexpected argument"),
            ("--target redis", "unknown target"),
            ("--client-sched fifo", "not batch or normal"),
        ];
        for (line, want) in cases {
            let err = parse(&args(line)).unwrap_err();
            assert!(err.contains(want), "{line:?}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn report_command() {
        let c = parse(&args(
            "report --input a --input b --md t.md --cdf c.json --ratio-line",
        ))
        .unwrap();
        assert_eq!(
            c,
            Command::Report(ReportArgs {
                inputs: vec!["a".into(), "b".into()],
                md: Some("t.md".into()),
                cdf: Some("c.json".into()),
                ratio_line: true,
                median_ops: None,
            })
        );
        assert!(parse(&args("report")).is_err());
        match parse(&args("report --input a --median-ops put:single:256:etcd")).unwrap() {
            Command::Report(r) => assert_eq!(
                r.median_ops,
                Some(("put".into(), "single".into(), 256, "etcd".into()))
            ),
            other => panic!("{other:?}"),
        }
        for bad in ["put:single:256", "put:single:many:etcd", ":single:1:etcd"] {
            let err = parse(&args(&format!("report --input a --median-ops {bad}"))).unwrap_err();
            assert!(err.contains("--median-ops"), "{bad}: {err}");
        }
    }
}
