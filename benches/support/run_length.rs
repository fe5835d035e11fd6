//! How long a timed benchmark measures (`benches/raft_core.rs` and `benches/wal_cpu.rs`
//! include this file): `cargo bench` passes `--bench` and gets the full run; `cargo test
//! --all-targets` does not, and gets a short smoke pass that keeps the test gate fast.

use std::time::Duration;

pub struct RunLength {
    /// A `cargo bench` run rather than `cargo test`'s smoke pass.
    pub full: bool,
    /// Time measured per case: 2 s in a full run, 50 ms in a smoke pass.
    pub per_case: Duration,
}

impl RunLength {
    pub fn from_args() -> RunLength {
        let full = std::env::args().any(|a| a == "--bench");
        RunLength {
            full,
            per_case: if full {
                Duration::from_secs(2)
            } else {
                Duration::from_millis(50)
            },
        }
    }

    /// Appended to each result line, so that a smoke pass's numbers are not read as a
    /// measurement.
    pub fn tag(&self) -> &'static str {
        if self.full {
            ""
        } else {
            " [smoke run]"
        }
    }
}
