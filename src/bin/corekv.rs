//! The corekv server. `corekv --help` lists the flags; with none it serves a single-node
//! store with its data in ./corekv.data.

use corekv::shard::config::{ConfigError, ServerConfig, USAGE};

/// jemalloc instead of glibc's allocator: a put allocates a dozen short-lived buffers
/// (request, Raft entry, WAL cache run, rev record, reply), and glibc's free lists took a
/// fifth of the server's CPU. A/B on this 2-core machine, single node, put x256, 3 rounds:
/// 85-94k vs 67-78k puts/s, server CPU 6 vs 9 us per put; the open-loop p99 stayed at
/// glibc's level (mimalloc, tried before, gave the throughput but tripled that p99).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let cfg = match ServerConfig::from_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(ConfigError::Help) => {
            print!("{USAGE}");
            return;
        }
        Err(ConfigError::Invalid(m)) => {
            eprintln!("corekv: {m}");
            std::process::exit(2);
        }
    };
    if let Err(e) = corekv::shard::server::run(cfg) {
        eprintln!("corekv: {e}");
        std::process::exit(1);
    }
}
