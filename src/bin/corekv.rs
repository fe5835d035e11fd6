//! The corekv server. `corekv --help` lists the flags; with none it serves a single-node
//! store with its data in ./corekv.data.

use corekv::shard::config::{ConfigError, ServerConfig, USAGE};

/// mimalloc instead of glibc's allocator: a put allocates a dozen small buffers (request,
/// Raft entry, WAL cache, rev record, reply) that live for a few milliseconds, and glibc's
/// free lists spent a fifth of the server's CPU on them (single node, put x256: ~30%
/// more puts per second with mimalloc in an A/B run).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
