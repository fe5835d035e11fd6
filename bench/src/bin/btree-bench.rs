//! corekv's B+tree against LMDB (heed) and redb, in one run, on the same data:
//! N keys (16-byte keys, 256-byte values; N = 1,000,000 unless given as the first
//! argument), batched inserts (1,000 per durable commit; random keys, then sequential
//! keys into fresh files), random point reads of present keys, and range scans of 100
//! keys from random present keys. Every engine commits durably (fsync/fdatasync).
//!
//! The machine this runs on is shared and noisy, so the engines run *interleaved*: each
//! phase is cut into blocks (20 commits, 20,000 reads, 2,000 scans) and every block runs
//! on each engine in turn (rotating who goes first), each engine's time summed over its
//! blocks. Noise then falls on all engines alike.
//!
//! Usage: btree-bench [N] [DIR]   (DIR defaults to a fresh directory under /tmp)
//! Last line: `btree: read <x>x lmdb, scan <y>x lmdb, insert <z>x redb`.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corekv::btree::{Db, Options};
use heed::types::Bytes;

const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 256;
const BATCH: usize = 1000;
const SCAN_LEN: usize = 100;
const COMMITS_PER_BLOCK: usize = 20;
const READS_PER_BLOCK: usize = 20_000;
const SCANS_PER_BLOCK: usize = 2_000;

type Key = [u8; KEY_LEN];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("t");

#[allow(clippy::large_enum_variant)] // three values, built once
enum Engine {
    Corekv(Db),
    Lmdb(heed::Env, heed::Database<Bytes, Bytes>),
    Redb(redb::Database),
}

const NAMES: [&str; 3] = ["corekv", "lmdb", "redb"];

async fn open(which: usize, dir: &Path, tag: &str) -> Engine {
    match which {
        0 => {
            // BTREE_BENCH_WRITE_POOL=0: io_uring writes instead of the blocking pool.
            let write_pool = std::env::var("BTREE_BENCH_WRITE_POOL").map_or(true, |v| v != "0");
            let opts = Options {
                max_file_bytes: 32 << 30,
                write_pool,
                ..Options::default()
            };
            Engine::Corekv(
                Db::open(dir.join(format!("corekv-{tag}.db")), opts)
                    .await
                    .unwrap(),
            )
        }
        1 => {
            let path = dir.join(format!("lmdb-{tag}"));
            std::fs::create_dir_all(&path).unwrap();
            // SAFETY (heed's contract): this process opens each environment once.
            let env = unsafe {
                heed::EnvOpenOptions::new()
                    .map_size(32 << 30)
                    .max_dbs(1)
                    .open(&path)
                    .unwrap()
            };
            let mut wtxn = env.write_txn().unwrap();
            let db = env.create_database(&mut wtxn, None).unwrap();
            wtxn.commit().unwrap();
            Engine::Lmdb(env, db)
        }
        _ => Engine::Redb(redb::Database::create(dir.join(format!("redb-{tag}.db"))).unwrap()),
    }
}

impl Engine {
    /// One durable commit of `keys`.
    async fn insert_batch(&mut self, keys: &[Key], value: &[u8]) {
        match self {
            Engine::Corekv(db) => {
                for k in keys {
                    db.put("t", k, value).unwrap();
                }
                db.commit().await.unwrap();
            }
            Engine::Lmdb(env, db) => {
                let mut wtxn = env.write_txn().unwrap();
                for k in keys {
                    db.put(&mut wtxn, k, value).unwrap();
                }
                wtxn.commit().unwrap();
            }
            Engine::Redb(db) => {
                let wtxn = db.begin_write().unwrap();
                {
                    let mut table = wtxn.open_table(TABLE).unwrap();
                    for k in keys {
                        table.insert(&k[..], value).unwrap();
                    }
                }
                wtxn.commit().unwrap();
            }
        }
    }

    /// Point reads inside one read transaction; returns a checksum of value bytes.
    fn reads(&self, keys: &[Key], order: &[usize]) -> u64 {
        let mut sum = 0u64;
        match self {
            Engine::Corekv(db) => {
                let snap = db.snapshot();
                for &i in order {
                    sum += snap
                        .get_with("t", &keys[i], |v| v[7] as u64)
                        .unwrap()
                        .unwrap();
                }
            }
            Engine::Lmdb(env, db) => {
                let rtxn = env.read_txn().unwrap();
                for &i in order {
                    sum += db.get(&rtxn, &keys[i]).unwrap().unwrap()[7] as u64;
                }
            }
            Engine::Redb(db) => {
                let rtxn = db.begin_read().unwrap();
                let table = rtxn.open_table(TABLE).unwrap();
                for &i in order {
                    sum += table.get(&keys[i][..]).unwrap().unwrap().value()[7] as u64;
                }
            }
        }
        sum
    }

    /// Scans of SCAN_LEN entries from each start key, in one read transaction.
    fn scans(&self, keys: &[Key], starts: &[usize]) -> u64 {
        let mut sum = 0u64;
        match self {
            Engine::Corekv(db) => {
                let snap = db.snapshot();
                for &i in starts {
                    let mut n = 0;
                    snap.scan("t", &keys[i], None, false, &mut |_, v| {
                        sum += v[3] as u64;
                        n += 1;
                        n < SCAN_LEN
                    })
                    .unwrap();
                }
            }
            Engine::Lmdb(env, db) => {
                let rtxn = env.read_txn().unwrap();
                for &i in starts {
                    let range = (Bound::Included(&keys[i][..]), Bound::Unbounded);
                    for e in db.range(&rtxn, &range).unwrap().take(SCAN_LEN) {
                        sum += e.unwrap().1[3] as u64;
                    }
                }
            }
            Engine::Redb(db) => {
                let rtxn = db.begin_read().unwrap();
                let table = rtxn.open_table(TABLE).unwrap();
                for &i in starts {
                    for e in table.range(&keys[i][..]..).unwrap().take(SCAN_LEN) {
                        sum += e.unwrap().1.value()[3] as u64;
                    }
                }
            }
        }
        sum
    }

    async fn close(self) {
        if let Engine::Corekv(db) = self {
            db.close().await.unwrap();
        }
    }
}

/// Rotating order of engines for block `b`.
fn order(b: usize) -> [usize; 3] {
    [b % 3, (b + 1) % 3, (b + 2) % 3]
}

async fn load(engines: &mut [Engine], keys: &[Key], value: &[u8]) -> [Duration; 3] {
    let mut t = [Duration::ZERO; 3];
    for (b, block) in keys.chunks(BATCH * COMMITS_PER_BLOCK).enumerate() {
        for e in order(b) {
            let start = Instant::now();
            for batch in block.chunks(BATCH) {
                engines[e].insert_batch(batch, value).await;
            }
            t[e] += start.elapsed();
        }
    }
    t
}

fn per_sec(ops: usize, t: Duration) -> f64 {
    ops as f64 / t.as_secs_f64()
}

fn dir_size(p: &Path) -> u64 {
    if p.is_dir() {
        std::fs::read_dir(p)
            .unwrap()
            .flatten()
            .map(|e| dir_size(&e.path()))
            .sum()
    } else {
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }
}

async fn bench(n: usize, dir: PathBuf) {
    let mut rng = Rng(42);
    let random_keys: Vec<Key> = (0..n)
        .map(|_| {
            let mut k = [0u8; KEY_LEN];
            k[..8].copy_from_slice(&rng.next().to_be_bytes());
            k[8..].copy_from_slice(&rng.next().to_be_bytes());
            k
        })
        .collect();
    let seq_keys: Vec<Key> = (0..n as u64)
        .map(|i| {
            let mut k = [0u8; KEY_LEN];
            k[8..].copy_from_slice(&i.to_be_bytes());
            k
        })
        .collect();
    let value: Vec<u8> = (0..VALUE_LEN).map(|i| i as u8).collect();
    let reads: Vec<usize> = (0..n.min(1_000_000))
        .map(|_| (rng.next() % n as u64) as usize)
        .collect();
    let scans: Vec<usize> = (0..(n / 10).clamp(1, 100_000))
        .map(|_| (rng.next() % n as u64) as usize)
        .collect();

    let mut seq = Vec::new();
    for e in 0..3 {
        seq.push(open(e, &dir, "seq").await);
    }
    let t_seq = load(&mut seq, &seq_keys, &value).await;
    for e in seq {
        e.close().await;
    }
    let mut engines = Vec::new();
    for e in 0..3 {
        engines.push(open(e, &dir, "random").await);
    }
    let t_rand = load(&mut engines, &random_keys, &value).await;

    let mut t_read = [Duration::ZERO; 3];
    let mut sums = [0u64; 3];
    for (b, block) in reads.chunks(READS_PER_BLOCK).enumerate() {
        for e in order(b) {
            let start = Instant::now();
            sums[e] += engines[e].reads(&random_keys, block);
            t_read[e] += start.elapsed();
        }
    }
    assert!(
        sums.iter().all(|&s| s == sums[0]),
        "engines read different values"
    );
    let mut t_scan = [Duration::ZERO; 3];
    let mut sums = [0u64; 3];
    for (b, block) in scans.chunks(SCANS_PER_BLOCK).enumerate() {
        for e in order(b) {
            let start = Instant::now();
            sums[e] += engines[e].scans(&random_keys, block);
            t_scan[e] += start.elapsed();
        }
    }
    assert!(
        sums.iter().all(|&s| s == sums[0]),
        "engines scanned different values"
    );
    for e in engines {
        e.close().await;
    }

    let mut rates = [[0f64; 4]; 3];
    for e in 0..3 {
        rates[e] = [
            per_sec(n, t_rand[e]),
            per_sec(n, t_seq[e]),
            per_sec(reads.len(), t_read[e]),
            per_sec(scans.len(), t_scan[e]),
        ];
        let files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|f| f.file_name().to_string_lossy().starts_with(NAMES[e]))
            .map(|f| {
                format!(
                    "{} {:.0} MiB",
                    f.file_name().to_string_lossy(),
                    dir_size(&f.path()) as f64 / (1 << 20) as f64
                )
            })
            .collect();
        println!(
            "{:>7}: insert random {:>8.0}/s  insert seq {:>8.0}/s  read {:>9.0}/s  scan100 {:>8.0}/s  [{}]",
            NAMES[e],
            rates[e][0],
            rates[e][1],
            rates[e][2],
            rates[e][3],
            files.join(", ")
        );
    }
    let [c, l, r] = rates;
    let (ins_r, ins_s) = (c[0] / r[0], c[1] / r[1]);
    println!("insert vs redb: random {ins_r:.2}x, sequential {ins_s:.2}x (reported: the lower)");
    println!(
        "btree: read {:.2}x lmdb, scan {:.2}x lmdb, insert {:.2}x redb",
        c[2] / l[2],
        c[3] / l[3],
        ins_r.min(ins_s)
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(1_000_000, |a| a.parse().expect("N"));
    let dir: PathBuf = args.next().map_or_else(
        || std::env::temp_dir().join(format!("btree-bench-{}", std::process::id())),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "btree-bench: {n} keys of {KEY_LEN} B, values of {VALUE_LEN} B, {BATCH} inserts per durable commit, {SCAN_LEN}-key scans, engines interleaved, dir {}",
        dir.display()
    );
    let d = dir.clone();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || bench(n, d))
        .unwrap()
        .join()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
