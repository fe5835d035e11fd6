//! The corekv server. `corekv --help` lists the flags; with none it serves a single-node
//! store with its data in ./corekv.data.

use corekv::shard::config::{ConfigError, ServerConfig, USAGE};

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
