//! corekv's B+tree against LMDB (heed) and redb, in one run, on the same data:
//! N keys (16-byte keys, 256-byte values; N = 1,000,000 unless given as the first
//! argument), batched inserts (1,000 per durable commit; random keys, then sequential
//! keys into a fresh file), random point reads of present keys, and range scans of 100
//! keys from random present keys. Every engine commits durably (fsync/fdatasync).
//!
//! Usage: btree-bench [N] [DIR]   (DIR defaults to a fresh directory under /tmp)
//! Last line: `btree: read <x>x lmdb, scan <y>x lmdb, insert <z>x redb`.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use corekv::btree::{Db, Options};

const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 256;
const BATCH: usize = 1000;
const SCAN_LEN: usize = 100;

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

struct Workload {
    random_keys: Vec<[u8; KEY_LEN]>,
    seq_keys: Vec<[u8; KEY_LEN]>,
    value: Vec<u8>,
    read_order: Vec<usize>,
    scan_starts: Vec<usize>,
}

fn workload(n: usize) -> Workload {
    let mut rng = Rng(42);
    let random_keys = (0..n)
        .map(|_| {
            let mut k = [0u8; KEY_LEN];
            k[..8].copy_from_slice(&rng.next().to_be_bytes());
            k[8..].copy_from_slice(&rng.next().to_be_bytes());
            k
        })
        .collect();
    let seq_keys = (0..n as u64)
        .map(|i| {
            let mut k = [0u8; KEY_LEN];
            k[8..].copy_from_slice(&i.to_be_bytes());
            k
        })
        .collect();
    let value = (0..VALUE_LEN).map(|i| i as u8).collect();
    let reads = n.min(1_000_000);
    let read_order = (0..reads)
        .map(|_| (rng.next() % n as u64) as usize)
        .collect();
    let scan_starts = (0..(n / 10).clamp(1, 100_000))
        .map(|_| (rng.next() % n as u64) as usize)
        .collect();
    Workload {
        random_keys,
        seq_keys,
        value,
        read_order,
        scan_starts,
    }
}

#[derive(Default, Clone, Copy)]
struct Result {
    insert_random: f64,
    insert_seq: f64,
    read: f64,
    scan: f64,
}

fn rate(ops: usize, t: Instant) -> f64 {
    ops as f64 / t.elapsed().as_secs_f64()
}

fn print(name: &str, r: &Result) {
    println!(
        "{name:>7}: insert random {:>9.0}/s  insert seq {:>9.0}/s  read {:>9.0}/s  scan100 {:>8.0}/s",
        r.insert_random, r.insert_seq, r.read, r.scan
    );
}

// ---- corekv ----

fn bench_corekv(w: &Arc<Workload>, dir: &Path) -> Result {
    let dir = dir.to_path_buf();
    let w = w.clone();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let opts = Options {
                max_file_bytes: 32 << 30,
                ..Options::default()
            };
            let mut r = Result::default();
            for (seq, keys) in [(false, &w.random_keys), (true, &w.seq_keys)] {
                let path = dir.join(format!("corekv-{seq}.db"));
                let mut db = Db::open(&path, opts.clone()).await.unwrap();
                let t = Instant::now();
                for chunk in keys.chunks(BATCH) {
                    for k in chunk {
                        db.put("t", k, &w.value).unwrap();
                    }
                    db.commit().await.unwrap();
                }
                let ins = rate(keys.len(), t);
                if seq {
                    r.insert_seq = ins;
                    db.close().await.unwrap();
                    continue;
                }
                r.insert_random = ins;
                let snap = db.snapshot();
                let t = Instant::now();
                let mut sum = 0u64;
                for &i in &w.read_order {
                    sum += snap
                        .get_with("t", &keys[i], |v| v[7] as u64)
                        .unwrap()
                        .unwrap();
                }
                r.read = rate(w.read_order.len(), t);
                let t = Instant::now();
                for &i in &w.scan_starts {
                    let mut n = 0;
                    snap.scan("t", &keys[i], None, false, &mut |_, v| {
                        sum += v[3] as u64;
                        n += 1;
                        n < SCAN_LEN
                    })
                    .unwrap();
                }
                r.scan = rate(w.scan_starts.len(), t);
                std::hint::black_box(sum);
                drop(snap);
                db.close().await.unwrap();
            }
            r
        })
        .unwrap()
        .join()
        .unwrap()
}

// ---- LMDB (heed) ----

fn bench_lmdb(w: &Workload, dir: &Path) -> Result {
    use heed::types::Bytes;
    let mut r = Result::default();
    for (seq, keys) in [(false, &w.random_keys), (true, &w.seq_keys)] {
        let path = dir.join(format!("lmdb-{seq}"));
        std::fs::create_dir_all(&path).unwrap();
        // SAFETY (heed's contract): this process opens the environment once.
        let env = unsafe {
            heed::EnvOpenOptions::new()
                .map_size(32 << 30)
                .max_dbs(1)
                .open(&path)
                .unwrap()
        };
        let mut wtxn = env.write_txn().unwrap();
        let db: heed::Database<Bytes, Bytes> = env.create_database(&mut wtxn, None).unwrap();
        wtxn.commit().unwrap();
        let t = Instant::now();
        for chunk in keys.chunks(BATCH) {
            let mut wtxn = env.write_txn().unwrap();
            for k in chunk {
                db.put(&mut wtxn, k, &w.value).unwrap();
            }
            wtxn.commit().unwrap();
        }
        let ins = rate(keys.len(), t);
        if seq {
            r.insert_seq = ins;
            continue;
        }
        r.insert_random = ins;
        let rtxn = env.read_txn().unwrap();
        let t = Instant::now();
        let mut sum = 0u64;
        for &i in &w.read_order {
            sum += db.get(&rtxn, &keys[i]).unwrap().unwrap()[7] as u64;
        }
        r.read = rate(w.read_order.len(), t);
        let t = Instant::now();
        for &i in &w.scan_starts {
            let range = (Bound::Included(&keys[i][..]), Bound::Unbounded);
            for e in db.range(&rtxn, &range).unwrap().take(SCAN_LEN) {
                sum += e.unwrap().1[3] as u64;
            }
        }
        r.scan = rate(w.scan_starts.len(), t);
        std::hint::black_box(sum);
    }
    r
}

// ---- redb ----

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("t");

fn bench_redb(w: &Workload, dir: &Path) -> Result {
    let mut r = Result::default();
    for (seq, keys) in [(false, &w.random_keys), (true, &w.seq_keys)] {
        let db = redb::Database::create(dir.join(format!("redb-{seq}.db"))).unwrap();
        let t = Instant::now();
        for chunk in keys.chunks(BATCH) {
            let wtxn = db.begin_write().unwrap();
            {
                let mut table = wtxn.open_table(TABLE).unwrap();
                for k in chunk {
                    table.insert(&k[..], &w.value[..]).unwrap();
                }
            }
            wtxn.commit().unwrap();
        }
        let ins = rate(keys.len(), t);
        if seq {
            r.insert_seq = ins;
            continue;
        }
        r.insert_random = ins;
        let rtxn = db.begin_read().unwrap();
        let table = rtxn.open_table(TABLE).unwrap();
        let t = Instant::now();
        let mut sum = 0u64;
        for &i in &w.read_order {
            sum += table.get(&keys[i][..]).unwrap().unwrap().value()[7] as u64;
        }
        r.read = rate(w.read_order.len(), t);
        let t = Instant::now();
        for &i in &w.scan_starts {
            for e in table.range(&keys[i][..]..).unwrap().take(SCAN_LEN) {
                sum += e.unwrap().1.value()[3] as u64;
            }
        }
        r.scan = rate(w.scan_starts.len(), t);
        std::hint::black_box(sum);
    }
    r
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
        "btree-bench: {n} keys of {KEY_LEN} B, values of {VALUE_LEN} B, {BATCH} inserts per durable commit, {SCAN_LEN}-key scans, dir {}",
        dir.display()
    );
    let w = Arc::new(workload(n));
    let corekv = bench_corekv(&w, &dir);
    print("corekv", &corekv);
    let lmdb = bench_lmdb(&w, &dir);
    print("lmdb", &lmdb);
    let redb = bench_redb(&w, &dir);
    print("redb", &redb);
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let len = std::fs::metadata(entry.path())
            .map(|m| m.len())
            .unwrap_or(0);
        let len = if entry.path().is_dir() {
            std::fs::read_dir(entry.path())
                .unwrap()
                .flatten()
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        } else {
            len
        };
        println!(
            "  file {}: {:.1} MiB",
            entry.file_name().to_string_lossy(),
            len as f64 / (1 << 20) as f64
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    let ins_r = corekv.insert_random / redb.insert_random;
    let ins_s = corekv.insert_seq / redb.insert_seq;
    println!("insert vs redb: random {ins_r:.2}x, sequential {ins_s:.2}x (reported: the lower)");
    println!(
        "btree: read {:.2}x lmdb, scan {:.2}x lmdb, insert {:.2}x redb",
        corekv.read / lmdb.read,
        corekv.scan / lmdb.scan,
        ins_r.min(ins_s)
    );
}
