//! Shared by the integration tests: a real `corekv` process on 127.0.0.1 with a temp
//! data directory (killed when the guard drops, even on panic), and a raw blocking
//! connection that speaks the wire protocol frame by frame.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use corekv::proto::{
    deserialize, encode_frame, Decoder, DecoderConfig, Endpoint, Hello, HelloAck, Message,
    ProtoError, Request, Response, Role, HELLO_ACK_LEN, PROTOCOL_VERSION,
};

/// `--wal-segment-bytes` of every test server.
pub const TEST_WAL_SEGMENT_BYTES: u64 = 4 << 20;

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);
static NEXT_DIR: AtomicU16 = AtomicU16::new(0);

/// A block of 16 ports no other test of this process uses: clients on base..base+8,
/// peers on base+8..base+16 (so at most 8 shards).
///
/// Ports stay below 32768, outside Linux's ephemeral range: a connect to a port nobody
/// listens on yet could otherwise "succeed" by connecting the socket to itself.
pub fn port_base() -> u16 {
    let pid_slot = (std::process::id() % 30) as u16;
    loop {
        let n = NEXT_PORT.fetch_add(1, Ordering::SeqCst) % 25;
        let base = 20000 + pid_slot * 400 + n * 16;
        // Skip blocks that something else on the machine holds right now.
        if (base..base + 16).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let base = std::env::var_os("COREKV_TEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
        let p = base.join(format!(
            "{tag}-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("COREKV_KEEP_TEST_DIRS").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server process.
pub struct Server {
    pub child: Option<Child>,
    pub data_dir: PathBuf,
    pub port: u16,
    pub shards: u32,
    pub log: PathBuf,
}

impl Server {
    pub fn start(data_dir: &Path, port: u16, shards: u32) -> Server {
        Server::start_with(data_dir, port, shards, &[])
    }

    pub fn start_with(data_dir: &Path, port: u16, shards: u32, extra: &[&str]) -> Server {
        let s = Server::spawn_with(data_dir, port, shards, extra);
        s.wait_ready();
        s
    }

    /// Starts the process without waiting for it (a cluster member cannot elect leaders
    /// before a quorum runs): call [`Server::wait_ready`] once all are started.
    pub fn spawn_with(data_dir: &Path, port: u16, shards: u32, extra: &[&str]) -> Server {
        let log = data_dir.with_extension("log");
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_corekv"))
            .arg("--data-dir")
            .arg(data_dir.join("data"))
            .args(["--listen-client", &format!("127.0.0.1:{port}")])
            .args(["--listen-peer", &format!("127.0.0.1:{}", port + 8)])
            .args(["--shards", &shards.to_string(), "--cpu-pinning", "off"])
            // Small WAL segments: every fresh shard zero-fills its first segment (and a
            // spare) before it serves, and dozens of test servers start at once here.
            .args(["--wal-segment-bytes", &TEST_WAL_SEGMENT_BYTES.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("starting corekv");
        Server {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            port,
            shards,
            log,
        }
    }

    pub fn addr(&self, shard: u32) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port + shard as u16))
    }

    pub fn wait_ready(&self) {
        // Handshake with every shard (a plain connect could reach the listening socket of
        // a predecessor that was just killed), then wait until every group has a leader.
        let deadline = Instant::now() + Duration::from_secs(30);
        for s in 0..self.shards {
            let mut c = loop {
                if let Ok(c) = RawConn::try_connect(self.addr(s)) {
                    break c;
                }
                assert!(
                    Instant::now() < deadline,
                    "corekv did not answer on {} in time; log:\n{}",
                    self.addr(s),
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            loop {
                let r = c.call(&Request {
                    session: 0,
                    seq: 0,
                    op: corekv::proto::Op::Status,
                });
                if let Ok(resp) = r {
                    if let corekv::proto::ResponseBody::Status(st) = resp.body {
                        if st.groups.iter().all(|g| g.leader != 0) {
                            break;
                        }
                    }
                }
                assert!(Instant::now() < deadline, "no leader in time");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGTERM, then wait; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: signalling a child we spawned and still own.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("corekv did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A blocking connection that speaks the protocol frame by frame.
pub struct RawConn {
    pub stream: TcpStream,
    dec: Decoder,
    next_id: u64,
}

/// What came back for one request.
pub type Answer = Result<Response, ProtoError>;

impl RawConn {
    pub fn connect(addr: SocketAddr) -> RawConn {
        Self::try_connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> std::io::Result<RawConn> {
        Self::try_connect_within(addr, Duration::from_secs(20))
    }

    /// Connects and shakes hands, waiting at most `timeout` for each read (a stopped
    /// server's kernel accepts the connection but nobody answers).
    pub fn try_connect_within(addr: SocketAddr, timeout: Duration) -> std::io::Result<RawConn> {
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            role: Role::Client,
            cluster_id: 0,
            node_id: 0,
        };
        stream.write_all(&hello.encode())?;
        let mut ack = [0u8; HELLO_ACK_LEN];
        stream.read_exact(&mut ack)?;
        HelloAck::decode(&ack).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(RawConn {
            stream,
            dec: Decoder::new(DecoderConfig::new(Endpoint::Client)),
            next_id: 1,
        })
    }

    pub fn encode(id: u64, req: &Request) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_frame(&mut buf, id, req, usize::MAX >> 1).unwrap();
        buf
    }

    pub fn send(&mut self, req: &Request) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.stream.write_all(&Self::encode(id, req)).unwrap();
        id
    }

    /// Reads the next answer: (request id, answer). `None` when the server closed.
    pub fn recv(&mut self) -> Option<(u64, Answer)> {
        loop {
            match self.dec.next_frame() {
                Ok(Some(inb)) => {
                    let id = inb.request_id;
                    return Some(match inb.message {
                        Message::Response(r) => (id, Ok(deserialize::<Response, _>(r).unwrap())),
                        Message::Error(e) => (id, Err(deserialize::<ProtoError, _>(e).unwrap())),
                        other => panic!("unexpected frame kind {:?}", other.kind()),
                    });
                }
                Ok(None) => {}
                Err(e) => panic!("server sent a bad frame: {e:?}"),
            }
            let buf = self.dec.read_buf();
            match self.stream.read(buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.dec.advance(n),
            }
        }
    }

    pub fn call(&mut self, req: &Request) -> Answer {
        let id = self.send(req);
        let (got, ans) = self.recv().expect("connection closed before an answer");
        assert_eq!(got, id, "answer to another request");
        ans
    }

    /// One request and its answer; `None` when the connection failed, closed or timed
    /// out (a cluster client then tries another node).
    pub fn try_call(&mut self, req: &Request) -> Option<Answer> {
        let id = self.next_id;
        self.next_id += 1;
        self.stream.write_all(&Self::encode(id, req)).ok()?;
        let (got, ans) = self.recv()?;
        assert_eq!(got, id, "answer to another request");
        Some(ans)
    }

    /// True when the server has closed the connection (reads EOF or a reset).
    pub fn is_closed(&mut self) -> bool {
        self.recv().is_none()
    }
}
