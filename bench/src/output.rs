//! Results: one JSON line per run for machines, markdown tables for people, the medians
//! over rounds, the corekv/etcd ratios and the latency-CDF series for plots.
//!
//! A JSON line is a [`RunRecord`] (schema 1). Runs are grouped into rows by
//! (workload, `topology` label, mode, in flight); within a row, each target's runs (one per
//! round) are summarised by their medians, and their histograms are merged for the CDF.
//! Latencies in records are microseconds; tables show milliseconds.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::stats::{self, Percentiles};
use crate::workload::Workload;

pub const SCHEMA: u32 = 1;

/// One run, as written to a JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub schema: u32,
    pub target: String,
    /// Free-form `key=value` labels from `--label` (the script sets topology and round).
    pub labels: BTreeMap<String, String>,
    pub workload: String,
    /// `closed` or `open`.
    pub mode: String,
    /// Offered rate of an open loop, ops/s.
    pub rate: Option<f64>,
    pub inflight: usize,
    pub conns: usize,
    pub keys: u64,
    pub key_size: usize,
    pub value_size: usize,
    pub warmup_s: f64,
    /// Measured phase, seconds.
    pub wall_s: f64,
    pub ops: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub missed: u64,
    pub not_found: u64,
    pub cas_failed: u64,
    pub range_short: u64,
    pub ops_per_s: f64,
    /// From the intended send time (open loop) or the send (closed loop).
    pub latency_us: Percentiles,
    /// From the actual send.
    pub service_us: Percentiles,
    /// Client process CPU seconds (user + system) during the measured phase.
    pub client_cpu_s: f64,
    /// `client_cpu_s / wall_s`: CPU cores the client kept busy. Close to the client's CPU
    /// count means the client, not the server, was the limit.
    pub client_busy: f64,
    pub client_threads: usize,
    /// The client threads' scheduling policy (`--client-sched`): "batch" or "normal".
    #[serde(default)]
    pub client_sched: String,
    /// CPU seconds of the server processes named by `--server-pids` during the measured
    /// phase, and that per successful operation in µs (None when not measured).
    #[serde(default)]
    pub server_cpu_s: Option<f64>,
    #[serde(default)]
    pub server_cpu_us_per_op: Option<f64>,
    pub error_sample: Option<String>,
    pub unix_time: u64,
    /// Latency histogram (ns), base64 of HdrHistogram V2+deflate.
    pub hist: String,
}

impl RunRecord {
    pub fn topology(&self) -> &str {
        self.labels
            .get("topology")
            .map(String::as_str)
            .unwrap_or("-")
    }

    /// Client CPU µs per successful operation (None without operations).
    pub fn client_us_per_op(&self) -> Option<f64> {
        (self.ops > 0).then(|| self.client_cpu_s * 1e6 / self.ops as f64)
    }

    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("a run record always serialises")
    }
}

/// Parses JSON lines; `source` names the input in errors. Blank lines are skipped.
pub fn parse_records(source: &str, text: &str) -> Result<Vec<RunRecord>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rec: RunRecord = serde_json::from_str(line)
            .map_err(|e| format!("{source}:{}: not a run record: {e}", n + 1))?;
        if rec.schema != SCHEMA {
            return Err(format!(
                "{source}:{}: schema {} (this tool reads {SCHEMA})",
                n + 1,
                rec.schema
            ));
        }
        out.push(rec);
    }
    Ok(out)
}

/// Median of `xs` (mean of the middle two for an even count); 0 for none.
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Medians over the rounds of one target in one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub rounds: usize,
    pub ops_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub client_busy: f64,
    /// Median client CPU µs per successful op (None when no run completed an op).
    pub client_us_per_op: Option<f64>,
    /// Median server CPU µs per op over the rounds that measured it.
    pub server_us_per_op: Option<f64>,
    pub errors: u64,
    /// Open loop: operations due but never sent, over all rounds.
    pub missed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RowKey {
    workload_rank: usize,
    topology_rank: usize,
    pub workload: String,
    pub topology: String,
    pub mode: String,
    pub inflight: usize,
}

/// Runs grouped into rows and targets.
#[derive(Debug)]
pub struct Summary<'a> {
    pub targets: Vec<String>,
    pub rows: BTreeMap<RowKey, BTreeMap<String, Vec<&'a RunRecord>>>,
}

impl<'a> Summary<'a> {
    /// Groups `records`. Rows follow the workload list's order, then topologies in order of
    /// first appearance, then in-flight counts; `etcd` is the first target column.
    pub fn new(records: &'a [RunRecord]) -> Summary<'a> {
        let mut topologies: Vec<&str> = Vec::new();
        let mut targets: Vec<String> = Vec::new();
        for r in records {
            if !topologies.contains(&r.topology()) {
                topologies.push(r.topology());
            }
            if !targets.contains(&r.target) {
                targets.push(r.target.clone());
            }
        }
        targets.sort_by_key(|t| t != "etcd");
        let mut rows: BTreeMap<RowKey, BTreeMap<String, Vec<&RunRecord>>> = BTreeMap::new();
        for r in records {
            let workload_rank = Workload::ALL
                .iter()
                .position(|w| w.name() == r.workload)
                .unwrap_or(usize::MAX);
            let key = RowKey {
                workload_rank,
                topology_rank: topologies.iter().position(|t| *t == r.topology()).unwrap(),
                workload: r.workload.clone(),
                topology: r.topology().to_string(),
                mode: r.mode.clone(),
                inflight: r.inflight,
            };
            rows.entry(key)
                .or_default()
                .entry(r.target.clone())
                .or_default()
                .push(r);
        }
        Summary { targets, rows }
    }

    pub fn cell(runs: &[&RunRecord]) -> Cell {
        let m = |f: fn(&RunRecord) -> f64| median(&runs.iter().map(|r| f(r)).collect::<Vec<_>>());
        Cell {
            rounds: runs.len(),
            ops_per_s: m(|r| r.ops_per_s),
            p50_us: m(|r| r.latency_us.p50),
            p99_us: m(|r| r.latency_us.p99),
            p999_us: m(|r| r.latency_us.p999),
            client_busy: m(|r| r.client_busy),
            client_us_per_op: {
                let xs: Vec<f64> = runs.iter().filter_map(|r| r.client_us_per_op()).collect();
                (!xs.is_empty()).then(|| median(&xs))
            },
            server_us_per_op: {
                let xs: Vec<f64> = runs.iter().filter_map(|r| r.server_cpu_us_per_op).collect();
                (!xs.is_empty()).then(|| median(&xs))
            },
            errors: runs.iter().map(|r| r.errors).sum(),
            missed: runs.iter().map(|r| r.missed).sum(),
        }
    }

    /// The median cell of `target` in the row matching `workload`/`topology`/`inflight`
    /// (closed loop).
    pub fn find(
        &self,
        workload: &str,
        topology: &str,
        inflight: usize,
        target: &str,
    ) -> Option<Cell> {
        self.rows
            .iter()
            .find(|(k, _)| {
                k.workload == workload
                    && k.topology == topology
                    && k.inflight == inflight
                    && k.mode == "closed"
            })
            .and_then(|(_, by_target)| by_target.get(target))
            .map(|runs| Summary::cell(runs))
    }

    fn has_ratio(&self) -> bool {
        self.targets.iter().any(|t| t == "etcd") && self.targets.iter().any(|t| t == "corekv")
    }
}

fn ms(us: f64) -> String {
    let v = us / 1_000.0;
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn ratio(num: f64, den: f64) -> String {
    if den > 0.0 && num > 0.0 {
        format!("{:.2}", num / den)
    } else {
        "n/a".to_string()
    }
}

/// The markdown table of medians over rounds: one row per (workload, topology, mode,
/// in flight), per target ops/s, p50/p99/p99.9 latency (ms), client busy (cores), rounds
/// and errors; with a corekv/etcd ratio for ops/s and p99 once both targets are present.
/// `fill` runs (loading) are left out.
pub fn markdown_table(records: &[RunRecord]) -> String {
    let kept: Vec<RunRecord> = records
        .iter()
        .filter(|r| r.workload != Workload::Fill.name())
        .cloned()
        .collect();
    let summary = Summary::new(&kept);
    let mut head = vec!["workload", "topology", "mode", "in flight"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    for t in &summary.targets {
        for col in [
            "ops/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "client busy",
            "client CPU µs/op",
            "server CPU µs/op",
            "rounds",
            "errors",
        ] {
            head.push(format!("{t} {col}"));
        }
    }
    if summary.has_ratio() {
        head.push("corekv/etcd ops/s".into());
        head.push("corekv/etcd p99".into());
    }
    let mut out = String::new();
    writeln!(out, "| {} |", head.join(" | ")).unwrap();
    writeln!(out, "|{}", "---|".repeat(head.len())).unwrap();
    for (key, by_target) in &summary.rows {
        let mut cols = vec![
            key.workload.clone(),
            key.topology.clone(),
            key.mode.clone(),
            key.inflight.to_string(),
        ];
        let mut cells = BTreeMap::new();
        for t in &summary.targets {
            match by_target.get(t) {
                Some(runs) => {
                    let c = Summary::cell(runs);
                    cols.extend([
                        format!("{:.0}", c.ops_per_s),
                        ms(c.p50_us),
                        ms(c.p99_us),
                        ms(c.p999_us),
                        format!("{:.2}", c.client_busy),
                        c.client_us_per_op
                            .map_or("-".to_string(), |us| format!("{us:.1}")),
                        c.server_us_per_op
                            .map_or("-".to_string(), |us| format!("{us:.0}")),
                        c.rounds.to_string(),
                        if c.missed > 0 {
                            format!("{} (+{} unsent)", c.errors, c.missed)
                        } else {
                            c.errors.to_string()
                        },
                    ]);
                    cells.insert(t.as_str(), c);
                }
                None => cols.extend(std::iter::repeat_n("-".to_string(), 9)),
            }
        }
        if summary.has_ratio() {
            match (cells.get("corekv"), cells.get("etcd")) {
                (Some(c), Some(e)) => {
                    cols.push(ratio(c.ops_per_s, e.ops_per_s));
                    cols.push(ratio(c.p99_us, e.p99_us));
                }
                _ => cols.extend(["n/a".to_string(), "n/a".to_string()]),
            }
        }
        writeln!(out, "| {} |", cols.join(" | ")).unwrap();
    }
    out
}

/// `ratio put256 single=<x> cluster=<y> get256 single=<z> cluster=<w>`: corekv ops/s over
/// etcd ops/s (medians) at 256 in flight, `n/a` where either number is missing.
pub fn ratio_line(records: &[RunRecord]) -> String {
    let summary = Summary::new(records);
    let one = |workload: &str, topology: &str| match (
        summary.find(workload, topology, 256, "corekv"),
        summary.find(workload, topology, 256, "etcd"),
    ) {
        (Some(c), Some(e)) => ratio(c.ops_per_s, e.ops_per_s),
        _ => "n/a".to_string(),
    };
    format!(
        "ratio put256 single={} cluster={} get256 single={} cluster={}",
        one("put", "single"),
        one("put", "cluster"),
        one("get", "single"),
        one("get", "cluster")
    )
}

/// The headline rows round by round: for put and get at 256 in flight (closed loop),
/// each round's corekv and etcd ops/s and their ratio. The script alternates the
/// targets within a round, so a round's two numbers ran minutes apart on the same
/// machine; their spread says how far the medians can be trusted. Empty when no
/// round has both targets.
pub fn paired_rounds(records: &[RunRecord]) -> String {
    let mut rows = Vec::new();
    for workload in ["put", "get"] {
        for topology in ["single", "cluster"] {
            // round -> (corekv, etcd)
            let mut by_round: BTreeMap<u64, (Option<f64>, Option<f64>)> = BTreeMap::new();
            for r in records.iter().filter(|r| {
                r.workload == workload
                    && r.mode == "closed"
                    && r.inflight == 256
                    && r.topology() == topology
            }) {
                let Some(round) = r.labels.get("round").and_then(|v| v.parse().ok()) else {
                    continue;
                };
                let pair = by_round.entry(round).or_default();
                match r.target.as_str() {
                    "corekv" => pair.0 = Some(r.ops_per_s),
                    "etcd" => pair.1 = Some(r.ops_per_s),
                    _ => {}
                }
            }
            for (round, pair) in by_round {
                if let (Some(c), Some(e)) = pair {
                    rows.push(format!(
                        "| {workload} | {topology} | {round} | {c:.0} | {e:.0} | {} |",
                        ratio(c, e)
                    ));
                }
            }
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\n### Round by round, 256 in flight\n\n\
         | workload | topology | round | corekv ops/s | etcd ops/s | corekv/etcd |\n\
         |---|---|---|---|---|---|\n",
    );
    for row in rows {
        out.push_str(&row);
        out.push('\n');
    }
    out
}

/// The median closed-loop ops/s of `target` in the row (`workload`, `topology`,
/// `inflight`), if there were such runs.
pub fn median_ops(
    records: &[RunRecord],
    workload: &str,
    topology: &str,
    inflight: usize,
    target: &str,
) -> Option<f64> {
    Summary::new(records)
        .find(workload, topology, inflight, target)
        .map(|c| c.ops_per_s)
}

/// One line per open-loop row that has both corekv and etcd runs:
/// `open put single rate=8000/s p99 corekv=1.20ms etcd=30.1ms corekv/etcd=0.04`
/// (medians over rounds; the offered rate is the median of the runs' rates).
pub fn open_lines(records: &[RunRecord]) -> Vec<String> {
    let summary = Summary::new(records);
    let mut out = Vec::new();
    for (key, by_target) in &summary.rows {
        if key.mode != "open" {
            continue;
        }
        let (Some(c), Some(e)) = (by_target.get("corekv"), by_target.get("etcd")) else {
            continue;
        };
        let rates: Vec<f64> = c.iter().chain(e.iter()).filter_map(|r| r.rate).collect();
        let (c, e) = (Summary::cell(c), Summary::cell(e));
        out.push(format!(
            "open {} {} rate={:.0}/s p99 corekv={}ms etcd={}ms corekv/etcd={} unsent corekv={} etcd={}",
            key.workload,
            key.topology,
            median(&rates),
            ms(c.p99_us),
            ms(e.p99_us),
            ratio(c.p99_us, e.p99_us),
            c.missed,
            e.missed
        ));
    }
    out
}

/// One line of a CDF plot: the merged histogram of one target's rounds in one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CdfSeries {
    pub workload: String,
    pub topology: String,
    pub mode: String,
    pub inflight: usize,
    pub target: String,
    pub rounds: usize,
    pub ops: u64,
    /// `(latency µs, fraction at or below)`.
    pub points: Vec<(f64, f64)>,
}

/// CDF series for every (row, target), histograms merged over rounds; `fill` left out.
pub fn cdf_series(records: &[RunRecord]) -> Result<Vec<CdfSeries>, String> {
    let summary = Summary::new(records);
    let mut out = Vec::new();
    for (key, by_target) in &summary.rows {
        if key.workload == Workload::Fill.name() {
            continue;
        }
        for (target, runs) in by_target {
            let hists = runs
                .iter()
                .map(|r| stats::decode(&r.hist))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    format!(
                        "{} {} {} in flight {target}: {e}",
                        key.workload, key.topology, key.inflight
                    )
                })?;
            let merged = stats::merge(&hists);
            out.push(CdfSeries {
                workload: key.workload.clone(),
                topology: key.topology.clone(),
                mode: key.mode.clone(),
                inflight: key.inflight,
                target: target.clone(),
                rounds: runs.len(),
                ops: merged.len(),
                points: stats::cdf_points(&merged),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record(
        target: &str,
        workload: &str,
        topology: &str,
        inflight: usize,
        ops_per_s: f64,
        p99_us: f64,
        round: u32,
    ) -> RunRecord {
        let mut hist = stats::new_histogram();
        // 99 fast ops at p99/2 and one slow one, so the histogram has 100 ops.
        for _ in 0..99 {
            stats::record(&mut hist, Duration::from_secs_f64(p99_us / 2e6));
        }
        stats::record(&mut hist, Duration::from_secs_f64(p99_us / 1e6));
        RunRecord {
            schema: SCHEMA,
            target: target.into(),
            labels: [
                ("topology".to_string(), topology.to_string()),
                ("round".to_string(), round.to_string()),
            ]
            .into_iter()
            .collect(),
            workload: workload.into(),
            mode: "closed".into(),
            rate: None,
            inflight,
            conns: 16.min(inflight),
            keys: 100_000,
            key_size: 16,
            value_size: 256,
            warmup_s: 1.0,
            wall_s: 10.0,
            ops: 100,
            errors: 0,
            timeouts: 0,
            missed: 0,
            not_found: 0,
            cas_failed: 0,
            range_short: 0,
            ops_per_s,
            latency_us: Percentiles {
                p50: p99_us / 2.0,
                p90: p99_us / 2.0,
                p99: p99_us,
                p999: p99_us,
                max: p99_us,
                mean: p99_us / 2.0,
            },
            service_us: Percentiles::default(),
            client_cpu_s: 5.0,
            client_busy: 0.5,
            client_threads: 2,
            client_sched: "batch".into(),
            server_cpu_s: None,
            server_cpu_us_per_op: None,
            error_sample: None,
            unix_time: 1,
            hist: stats::encode(&hist),
        }
    }

    fn with_server_cpu(mut r: RunRecord, us_per_op: f64) -> RunRecord {
        r.server_cpu_us_per_op = Some(us_per_op);
        r.server_cpu_s = Some(us_per_op * r.ops as f64 / 1e6);
        r
    }

    /// Every line of a markdown table has as many cells as its header.
    fn assert_same_width(table: &str) {
        let widths: Vec<usize> = table.lines().map(|l| l.matches('|').count()).collect();
        assert!(
            widths.iter().all(|&w| w == widths[0]),
            "{widths:?}\n{table}"
        );
    }

    #[test]
    fn json_lines_round_trip() {
        let a = record("etcd", "put", "single", 64, 1000.0, 2000.0, 1);
        let b = record("etcd", "get", "cluster", 1, 500.0, 900.0, 2);
        let text = format!("{}\n\n{}\n", a.to_json_line(), b.to_json_line());
        assert_eq!(parse_records("x.jsonl", &text).unwrap(), vec![a, b]);
    }

    #[test]
    fn bad_json_lines_name_file_and_line() {
        let good = record("etcd", "put", "single", 64, 1000.0, 2000.0, 1).to_json_line();
        let err = parse_records("runs.jsonl", &format!("{good}\n{{\"schema\":1}}\n")).unwrap_err();
        assert!(err.starts_with("runs.jsonl:2:"), "{err}");
        let future = good.replace("\"schema\":1", "\"schema\":9");
        let err = parse_records("runs.jsonl", &future).unwrap_err();
        assert!(err.contains("schema 9"), "{err}");
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn table_shows_medians_over_rounds_without_fill() {
        let recs = vec![
            record("etcd", "fill", "single", 256, 9.0, 9.0, 1),
            with_server_cpu(
                record("etcd", "put", "single", 256, 1000.0, 3000.0, 1),
                50.0,
            ),
            with_server_cpu(
                record("etcd", "put", "single", 256, 3000.0, 1000.0, 2),
                60.0,
            ),
            record("etcd", "put", "single", 256, 2000.0, 2000.0, 3),
            record("etcd", "put", "single", 1, 700.0, 1500.0, 1),
            record("etcd", "get", "single", 1, 900.0, 800.0, 1),
        ];
        let table = markdown_table(&recs);
        assert_same_width(&table);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2 + 3, "{table}");
        assert!(lines[0].starts_with("| workload | topology | mode | in flight | etcd ops/s |"));
        assert!(
            !lines[0].contains("corekv"),
            "no ratio columns without corekv"
        );
        // Rows in workload order (put before get), then in-flight order.
        assert_eq!(
            lines[2],
            "| put | single | closed | 1 | 700 | 0.750 | 1.50 | 1.50 | 0.50 | 50000.0 | - | 1 | 0 |"
        );
        assert_eq!(
            lines[3],
            "| put | single | closed | 256 | 2000 | 1.00 | 2.00 | 2.00 | 0.50 | 50000.0 | 55 | 3 | 0 |"
        );
        assert!(lines[4].starts_with("| get | single | closed | 1 | 900 |"));
        assert!(!table.contains("fill"));

        let mut open = record("etcd", "put", "single", 64, 100.0, 1000.0, 1);
        open.mode = "open".into();
        open.errors = 2;
        open.missed = 40;
        let table = markdown_table(&[open]);
        assert!(table
            .lines()
            .nth(2)
            .unwrap()
            .starts_with("| put | single | open | 64 |"));
        assert!(table.contains("| 1 | 2 (+40 unsent) |"), "{table}");
    }

    #[test]
    fn paired_rounds_list_each_round_with_both_targets() {
        // A round with one target only, and rows that are not headline rows...
        let mut recs = vec![
            record("corekv", "put", "cluster", 256, 70_000.0, 900.0, 3),
            record("etcd", "put", "cluster", 64, 4_000.0, 9000.0, 1),
            record("corekv", "put", "cluster", 64, 40_000.0, 900.0, 1),
        ];
        assert_eq!(paired_rounds(&recs), "");
        // ...then two rounds with both.
        for (round, corekv, etcd) in [(1, 60_000.0, 5_000.0), (2, 54_000.0, 6_000.0)] {
            recs.push(record("etcd", "put", "cluster", 256, etcd, 9000.0, round));
            recs.push(record(
                "corekv", "put", "cluster", 256, corekv, 900.0, round,
            ));
        }
        let text = paired_rounds(&recs);
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| put")).collect();
        assert_eq!(
            rows,
            [
                "| put | cluster | 1 | 60000 | 5000 | 12.00 |",
                "| put | cluster | 2 | 54000 | 6000 | 9.00 |"
            ]
        );
        recs.push(record("etcd", "get", "single", 256, 8_000.0, 900.0, 1));
        recs.push(record("corekv", "get", "single", 256, 80_000.0, 90.0, 1));
        let text = paired_rounds(&recs);
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("| put") || l.starts_with("| get"))
            .collect();
        assert_eq!(rows.len(), 3, "{text}");
        assert_eq!(rows[2], "| get | single | 1 | 80000 | 8000 | 10.00 |");
    }

    #[test]
    fn ratios_appear_once_corekv_is_there() {
        let mut recs = vec![
            record("etcd", "put", "single", 256, 20_000.0, 4000.0, 1),
            record("etcd", "put", "cluster", 256, 10_000.0, 8000.0, 1),
            record("etcd", "get", "single", 256, 8_000.0, 9000.0, 1),
        ];
        assert_eq!(
            ratio_line(&recs),
            "ratio put256 single=n/a cluster=n/a get256 single=n/a cluster=n/a"
        );
        recs.push(record("corekv", "put", "single", 256, 50_000.0, 1000.0, 1));
        recs.push(record("corekv", "get", "single", 256, 80_000.0, 900.0, 1));
        assert_eq!(
            ratio_line(&recs),
            "ratio put256 single=2.50 cluster=n/a get256 single=10.00 cluster=n/a"
        );
        let table = markdown_table(&recs);
        assert_same_width(&table);
        let head = table.lines().next().unwrap();
        assert!(head.contains("| etcd ops/s |") && head.contains("| corekv ops/s |"));
        assert!(
            head.find("etcd ops/s") < head.find("corekv ops/s"),
            "etcd comes first"
        );
        assert!(
            head.ends_with("| corekv/etcd ops/s | corekv/etcd p99 |"),
            "{head}"
        );
        let put_single = table
            .lines()
            .find(|l| l.starts_with("| put | single"))
            .unwrap();
        assert!(put_single.ends_with("| 2.50 | 0.25 |"), "{put_single}");
        let put_cluster = table
            .lines()
            .find(|l| l.starts_with("| put | cluster"))
            .unwrap();
        assert!(put_cluster.ends_with("| n/a | n/a |"), "{put_cluster}");
        assert!(
            put_cluster.contains("| - | - |"),
            "missing corekv cells are dashes"
        );
    }

    #[test]
    fn open_loop_lines_and_median_ops() {
        let open = |target: &str, p99_us: f64, round: u32| {
            let mut r = record(target, "put", "single", 1024, 8000.0, p99_us, round);
            r.mode = "open".into();
            r.rate = Some(8000.0);
            r
        };
        let mut recs = vec![
            record("etcd", "put", "single", 256, 10_000.0, 9000.0, 1),
            record("etcd", "put", "single", 256, 12_000.0, 9000.0, 2),
            record("etcd", "put", "single", 256, 30_000.0, 9000.0, 3),
            open("etcd", 40_000.0, 1),
        ];
        assert!(open_lines(&recs).is_empty(), "no line without corekv");
        recs.push(open("corekv", 2_000.0, 1));
        recs.push(open("corekv", 4_000.0, 2));
        assert_eq!(
            open_lines(&recs),
            vec![
                "open put single rate=8000/s p99 corekv=3.00ms etcd=40.0ms corekv/etcd=0.07 unsent corekv=0 etcd=0"
            ]
        );
        assert_eq!(
            median_ops(&recs, "put", "single", 256, "etcd"),
            Some(12_000.0)
        );
        assert_eq!(median_ops(&recs, "put", "cluster", 256, "etcd"), None);
        assert_eq!(
            median_ops(&recs, "put", "single", 1024, "etcd"),
            None,
            "open runs are not closed-loop rows"
        );
    }

    #[test]
    fn cdf_series_merge_rounds() {
        let recs = vec![
            record("etcd", "put", "single", 64, 1.0, 2000.0, 1),
            record("etcd", "put", "single", 64, 1.0, 4000.0, 2),
            record("etcd", "put", "cluster", 64, 1.0, 4000.0, 1),
            record("etcd", "fill", "single", 64, 1.0, 4000.0, 1),
        ];
        let series = cdf_series(&recs).unwrap();
        assert_eq!(series.len(), 2);
        let single = &series[0];
        assert_eq!(
            (single.topology.as_str(), single.rounds, single.ops),
            ("single", 2, 200)
        );
        let max = single.points.last().unwrap();
        assert_eq!(max.1, 1.0);
        assert!((max.0 - 4000.0).abs() < 5.0, "{max:?}");
        let mut broken = recs[0].clone();
        broken.hist = "%%%".into();
        assert!(cdf_series(&[broken])
            .unwrap_err()
            .contains("put single 64 in flight etcd"));
    }
}
