//! Tests of the Raft core: paper tests, transcript tests, simulator runs and the
//! simulator's teeth (test-only bugs it must catch).

mod harness;
mod paper;
mod sim_tests;
mod transcript;
