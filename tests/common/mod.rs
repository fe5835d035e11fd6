//! Shared by the integration tests: a real `corekv` process on 127.0.0.1 with a temp
//! data dir, killed (and its dir removed) when the guard drops, even on panic.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Shards per node in these tests.
pub const SHARDS: u16 = 2;

/// A running server.
pub struct Server {
    child: Option<Child>,
    pub dir: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
    /// Keep the data dir when the guard drops (for a restart by a new guard).
    keep_dir: bool,
}

/// `n` consecutive free ports on 127.0.0.1 (bound and released: another process could
/// take them meanwhile, which only fails the test, never silently passes it).
pub fn free_ports(n: u16) -> u16 {
    for _ in 0..200 {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = first.local_addr().unwrap().port();
        if base.checked_add(n).is_none() {
            continue;
        }
        let rest: Vec<_> = (1..n)
            .map_while(|i| TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if rest.len() == usize::from(n - 1) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

/// A fresh, unique temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "corekv-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Server {
    /// Starts a one-node server with [`SHARDS`] shards in a new temp dir.
    pub fn start(tag: &str) -> Server {
        let dir = temp_dir(tag);
        let client_port = free_ports(SHARDS);
        let peer_port = free_ports(SHARDS);
        Server::start_in(dir, client_port, peer_port)
    }

    /// Starts a server on an existing data dir and ports (a restart).
    pub fn start_in(dir: PathBuf, client_port: u16, peer_port: u16) -> Server {
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        // COREKV_BIN overrides the binary under test (e.g. a release build).
        let bin = std::env::var("COREKV_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_corekv").to_string());
        let child = Command::new(bin)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen-client", &format!("127.0.0.1:{client_port}")])
            .args(["--listen-peer", &format!("127.0.0.1:{peer_port}")])
            .args(["--shards", &SHARDS.to_string()])
            .args(["--cpu-pinning", "off"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn corekv");
        let mut s = Server {
            child: Some(child),
            dir,
            client_port,
            peer_port,
            keep_dir: false,
        };
        s.wait_ready();
        s
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Waits (bounded) until every shard's client port accepts connections.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for shard in 0..SHARDS {
            loop {
                if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    panic!(
                        "corekv exited with {status} before listening:\n{}",
                        self.log()
                    );
                }
                if TcpStream::connect(("127.0.0.1", self.client_port + shard)).is_ok() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "corekv did not listen on port {} within 60 s:\n{}",
                    self.client_port + shard,
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// SIGKILLs the process and returns its dir and ports for a restart.
    pub fn kill(mut self) -> (PathBuf, u16, u16) {
        self.keep_dir = true;
        self.stop();
        (self.dir.clone(), self.client_port, self.peer_port)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if !self.keep_dir {
            if std::thread::panicking() {
                eprintln!("corekv log:\n{}", self.log());
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
