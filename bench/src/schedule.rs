//! When each operation should be sent, and how its latency is counted.
//!
//! Closed loop: a fixed number of workers, each sends its next request as soon as the
//! previous one is answered; latency is the service time (send to answer).
//!
//! Open loop: requests are due at a fixed offered rate, operation `i` at
//! `start + i / rate`, whatever the server does. Workers take the next due operation, wait
//! until it is due, and send it. When all workers are busy, a due operation is sent late;
//! its latency is still counted from its *intended* send time (the schedule), not from the
//! moment it was actually sent. That is the correction for coordinated omission (Tene;
//! wrk2): a stalled server cannot hide its stall by slowing the client down. The service
//! time (actual send to answer) is kept beside it for comparison.
//!
//! Times here are offsets from the run's start in nanoseconds, so the arithmetic is exact
//! and testable without a clock.

use std::time::Duration;

/// A fixed-rate schedule: operation `i` is due at `i * 1e9 / rate` ns after the start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    rate_per_s: f64,
}

impl Schedule {
    /// A schedule offering `rate_per_s` operations per second; the rate must be positive.
    pub fn new(rate_per_s: f64) -> Schedule {
        assert!(
            rate_per_s.is_finite() && rate_per_s > 0.0,
            "open-loop rate must be positive, got {rate_per_s}"
        );
        Schedule { rate_per_s }
    }

    /// Offset from the start at which operation `index` is due.
    pub fn due(&self, index: u64) -> Duration {
        // f64 has 53 bits of mantissa: exact to the nanosecond for runs of weeks.
        Duration::from_nanos((index as f64 * 1e9 / self.rate_per_s).round() as u64)
    }

    /// The first operation due at or after `offset` (ops before it are warm-up, say).
    pub fn first_at_or_after(&self, offset: Duration) -> u64 {
        let guess = (offset.as_nanos() as f64 * self.rate_per_s / 1e9).floor() as u64;
        // Step over rounding at the boundary: the answer is guess or guess + 1.
        let mut index = guess.saturating_sub(1);
        while self.due(index) < offset {
            index += 1;
        }
        index
    }

    /// Number of operations due in `[from, until)`.
    pub fn count_between(&self, from: Duration, until: Duration) -> u64 {
        self.first_at_or_after(until)
            .saturating_sub(self.first_at_or_after(from))
    }
}

/// The latencies of one completed operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpTiming {
    /// From the intended send time to the answer: what a user of an open system sees.
    pub latency: Duration,
    /// From the actual send to the answer: what the server took.
    pub service: Duration,
}

/// Latencies of an operation intended at `intended`, sent at `sent` and answered at `done`
/// (offsets from one origin). In a closed loop `intended == sent`.
pub fn op_timing(intended: Duration, sent: Duration, done: Duration) -> OpTiming {
    assert!(
        sent >= intended,
        "an operation cannot be sent before it is due"
    );
    assert!(done >= sent, "an operation cannot finish before it is sent");
    OpTiming {
        latency: done - intended,
        service: done - sent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_are_evenly_spaced() {
        let s = Schedule::new(1000.0);
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(1), Duration::from_millis(1));
        assert_eq!(s.due(1500), Duration::from_millis(1500));
        let s = Schedule::new(3.0);
        assert_eq!(s.due(1), Duration::from_nanos(333_333_333));
        assert_eq!(s.due(3), Duration::from_secs(1));
    }

    #[test]
    fn warm_up_boundary_and_window_counts() {
        let s = Schedule::new(1000.0);
        assert_eq!(s.first_at_or_after(Duration::ZERO), 0);
        assert_eq!(s.first_at_or_after(Duration::from_millis(2)), 2);
        assert_eq!(s.first_at_or_after(Duration::from_micros(2001)), 3);
        // 1 s of warm-up then 5 s measured: exactly 5000 operations are due.
        assert_eq!(
            s.count_between(Duration::from_secs(1), Duration::from_secs(6)),
            5000
        );
        let odd = Schedule::new(7.0);
        for i in 0..100 {
            assert_eq!(odd.first_at_or_after(odd.due(i)), i, "index {i}");
        }
    }

    /// A server that stalls for 1 s under a 1000/s open loop with one worker: the ops due
    /// during the stall are sent late, and their latency must include the wait.
    #[test]
    fn a_stall_shows_up_in_open_loop_latency() {
        let s = Schedule::new(1000.0);
        let service = Duration::from_micros(100);
        let stall_at = 10u64;
        let stall = Duration::from_secs(1);
        let mut free_at = Duration::ZERO; // when the single worker is next free
        let mut latencies = Vec::new();
        let mut services = Vec::new();
        for i in 0..2000u64 {
            let intended = s.due(i);
            let sent = intended.max(free_at);
            let took = if i == stall_at { stall } else { service };
            let t = op_timing(intended, sent, sent + took);
            free_at = sent + took;
            latencies.push(t.latency);
            services.push(t.service);
        }
        // Service time sees one slow op. Corrected latency sees every op due during the
        // stall and the backlog after it: the worker gains 0.9 ms per op while catching
        // up, so latency falls from ~1 s to 10 ms over ~(1000 - 10) / 0.9 = 1100 ops.
        let slow_service = services
            .iter()
            .filter(|d| **d > Duration::from_millis(10))
            .count();
        let slow_latency = latencies
            .iter()
            .filter(|d| **d > Duration::from_millis(10))
            .count();
        assert_eq!(slow_service, 1);
        assert!(
            (1_090..=1_110).contains(&slow_latency),
            "coordinated omission not corrected: {slow_latency} slow ops"
        );
        // The op due right after the stall began waited ~999 ms before it could be sent.
        assert!(latencies[stall_at as usize + 1] > Duration::from_millis(990));
    }

    #[test]
    fn closed_loop_latency_is_service_time() {
        let t = op_timing(
            Duration::from_millis(5),
            Duration::from_millis(5),
            Duration::from_millis(7),
        );
        assert_eq!(t.latency, t.service);
        assert_eq!(t.latency, Duration::from_millis(2));
    }

    #[test]
    #[should_panic(expected = "rate must be positive")]
    fn zero_rate_is_a_bug() {
        Schedule::new(0.0);
    }
}
