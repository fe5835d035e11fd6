//! Latency histograms, their summaries and serialisation, and the client's CPU time.
//!
//! Latencies are recorded in nanoseconds in an HDR histogram (3 significant digits, range
//! 1 ns .. [`HIST_MAX_NS`]; larger values are clamped to the top, never dropped). Each
//! worker records into its own histogram; they are merged at the end of a run, and a
//! report merges the runs of several rounds the same way. A histogram travels in a JSON
//! line as base64 of HdrHistogram's V2+deflate format, which other HDR tools also read.

use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency a histogram can tell apart: 100 s (an op bounded by a timeout is less).
pub const HIST_MAX_NS: u64 = 100_000_000_000;

/// A fresh latency histogram.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("constant histogram bounds are valid")
}

/// Records one latency (clamped into the histogram's range).
pub fn record(hist: &mut Histogram<u64>, latency: Duration) {
    let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
    hist.saturating_record(ns.min(HIST_MAX_NS));
}

/// Merges `parts` into one histogram.
pub fn merge<'a>(parts: impl IntoIterator<Item = &'a Histogram<u64>>) -> Histogram<u64> {
    let mut all = new_histogram();
    for part in parts {
        // Same bounds everywhere, so adding cannot fail; a failure is a bug.
        all.add(part)
            .expect("histograms with equal bounds always merge");
    }
    all
}

/// Base64 of the V2+deflate serialisation.
pub fn encode(hist: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(hist, &mut bytes)
        .expect("serialising a histogram into memory cannot fail");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Reverses [`encode`]; the text comes from a file, so a bad one is an error.
pub fn decode(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("histogram: bad base64: {e}"))?;
    let hist: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("histogram: bad V2 encoding: {e:?}"))?;
    // Re-home into the standard bounds so it merges with everything else.
    let mut out = new_histogram();
    out.add(&hist)
        .map_err(|e| format!("histogram: values outside the standard bounds: {e:?}"))?;
    Ok(out)
}

/// Summary of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(hist: &Histogram<u64>) -> Percentiles {
        if hist.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        Percentiles {
            p50: us(hist.value_at_quantile(0.50)),
            p90: us(hist.value_at_quantile(0.90)),
            p99: us(hist.value_at_quantile(0.99)),
            p999: us(hist.value_at_quantile(0.999)),
            max: us(hist.max()),
            mean: hist.mean() / 1_000.0,
        }
    }
}

/// Points of the latency CDF: `(latency in µs, fraction of ops at or below it)`, denser in
/// the tail (five steps per halving of the remaining fraction), ending at the maximum.
pub fn cdf_points(hist: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = hist
        .iter_quantiles(5)
        .map(|v| {
            (
                v.value_iterated_to() as f64 / 1_000.0,
                v.quantile_iterated_to(),
            )
        })
        .collect();
    points.dedup_by(|b, a| a.1 == b.1);
    points
}

/// CPU seconds (user + system) this process has used so far.
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own; RUSAGE_SELF is always valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_SELF) failed");
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds (user + system) of other processes, the servers under test, read from
/// `/proc/PID/stat`. None if any of them cannot be read (it exited, or there is no /proc).
pub fn pids_cpu_seconds(pids: &[u32]) -> Option<f64> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        return None;
    }
    let mut total = 0u64;
    for pid in pids {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        total += stat_cpu_ticks(&text)?;
    }
    Some(total as f64 / ticks as f64)
}

/// utime + stime (clock ticks) from the text of `/proc/PID/stat`; None if malformed. The
/// command name in parentheses may itself hold spaces and parentheses, so fields are
/// counted from the last `)`: utime and stime are fields 14 and 15 of the line.
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist_of(values_us: &[u64]) -> Histogram<u64> {
        let mut h = new_histogram();
        for &v in values_us {
            record(&mut h, Duration::from_micros(v));
        }
        h
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let a = hist_of(&(1..=500).collect::<Vec<_>>());
        let b = hist_of(&(501..=1000).collect::<Vec<_>>());
        let merged = merge([&a, &b]);
        let whole = hist_of(&(1..=1000).collect::<Vec<_>>());
        assert_eq!(merged.len(), 1000);
        assert_eq!(Percentiles::of(&merged), Percentiles::of(&whole));
        let p = Percentiles::of(&merged);
        assert!((p.p50 - 500.0).abs() <= 1.0, "p50 {}", p.p50);
        assert!((p.p99 - 990.0).abs() <= 1.0, "p99 {}", p.p99);
        assert!((p.max - 1000.0).abs() <= 1.0, "max {}", p.max);
    }

    #[test]
    fn encode_decode_round_trip() {
        let h = hist_of(&[3, 40, 40, 500, 6_000, 70_000]);
        let back = decode(&encode(&h)).unwrap();
        assert_eq!(back.len(), h.len());
        assert_eq!(Percentiles::of(&back), Percentiles::of(&h));
    }

    #[test]
    fn bad_encodings_are_errors() {
        assert!(decode("not base64!").is_err());
        let junk = base64::engine::general_purpose::STANDARD.encode(b"definitely not hdr");
        assert!(decode(&junk).is_err());
    }

    #[test]
    fn huge_latencies_are_clamped_not_lost() {
        let mut h = new_histogram();
        record(&mut h, Duration::from_secs(10_000));
        record(&mut h, Duration::ZERO);
        assert_eq!(h.len(), 2);
        assert!(h.max() >= HIST_MAX_NS - HIST_MAX_NS / 1000);
    }

    #[test]
    fn cdf_is_monotonic_and_ends_at_the_max() {
        let h = hist_of(&(1..=10_000).collect::<Vec<_>>());
        let pts = cdf_points(&h);
        assert!(pts.len() > 20);
        for w in pts.windows(2) {
            assert!(w[0].0 <= w[1].0 && w[0].1 < w[1].1, "{w:?}");
        }
        let last = pts.last().unwrap();
        assert_eq!(last.1, 1.0);
        assert!((last.0 - 10_000.0).abs() <= 10.0);
        assert!(cdf_points(&new_histogram()).is_empty());
    }

    #[test]
    fn proc_stat_cpu_fields() {
        let line = "4242 (etcd (x) y) S 1 4242 4242 0 -1 4194560 2417 0 0 0 \
                    731 129 0 0 20 0 12 0 1234 1000000 5000 18446744073709551615";
        assert_eq!(stat_cpu_ticks(line), Some(731 + 129));
        assert_eq!(stat_cpu_ticks("4242 (etcd) S 1 2"), None);
        assert_eq!(stat_cpu_ticks("no parenthesis"), None);
        // This very process is readable and has used some CPU.
        let me = std::process::id();
        assert!(pids_cpu_seconds(&[me]).is_some());
        assert_eq!(pids_cpu_seconds(&[me, u32::MAX]), None);
    }

    #[test]
    fn empty_histogram_summary_is_zero() {
        assert_eq!(Percentiles::of(&new_histogram()), Percentiles::default());
    }
}
