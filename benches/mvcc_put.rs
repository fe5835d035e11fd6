//! CPU cost of applying a put: the MVCC store over the real B+tree, on the simulated
//! disk (a commit copies pages into memory, so no device time is measured). This is
//! the server's per-put work below Raft and the network: read the key's current
//! state (in the in-memory key index), write the revision into the rev tree, and commit the
//! dirty pages every `COMMIT_EVERY` puts (the shard commits every 400 ms or 100k
//! entries; at ~50k puts/s that is ~20k puts per commit). Puts are applied in batches of
//! `BATCH`, each batch's keys prefetched first, as the shard applies a Raft batch.
//!
//! `cargo bench --bench mvcc_put` (release): fills 100,000 keys of 16 bytes with
//! 256-byte values, then times 400,000 puts to random keys, 3 rounds, and prints
//! µs per put. Under `cargo test` (no `--bench` argument) it runs a short smoke pass.

use corekv::btree::{Db, Options, SimDisk};
use corekv::mvcc::{PutRequest, Store, WriteRequest};
use futures_lite::future::block_on;
use std::time::Instant;

const COMMIT_EVERY: u64 = 20_000;
/// Puts applied as one batch (one Raft `Ready`'s committed entries).
const BATCH: usize = 32;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn put(key: u64, value: &[u8]) -> WriteRequest {
    WriteRequest::Put(PutRequest {
        key: format!("key{key:013}").into_bytes(),
        value: value.to_vec(),
        ..PutRequest::default()
    })
}

struct Bench {
    store: Store<Db<SimDisk>>,
    index: u64,
}

impl Bench {
    fn apply(&mut self, req: &WriteRequest) {
        self.index += 1;
        self.store.apply(self.index, req, None).expect("apply");
        if self.index.is_multiple_of(COMMIT_EVERY) {
            self.commit();
        }
    }
    fn commit(&mut self) {
        if let Some(c) = self.store.begin_commit().expect("begin commit") {
            let done = block_on(corekv::mvcc::BackendJob::run(c.job));
            self.store.finish_commit(done).expect("finish commit");
        }
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (keys, puts, rounds) = if full {
        (100_000u64, 400_000u64, 3)
    } else {
        (2_000, 4_000, 1)
    };
    let value = vec![b'v'; 256];
    for round in 0..rounds {
        let db = block_on(Db::open_disk(SimDisk::default(), Options::default())).expect("open");
        let mut b = Bench {
            store: Store::open(db).expect("store"),
            index: 0,
        };
        for k in 0..keys {
            b.apply(&put(k, &value));
        }
        b.commit();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 + round);
        let t = Instant::now();
        // As the shard applies a Raft batch: the batch's requests are decoded (fresh in
        // the CPU cache), their keys looked up first, then each is applied.
        let mut batch = Vec::with_capacity(BATCH);
        for _ in 0..puts / BATCH as u64 {
            batch.clear();
            batch.extend((0..BATCH).map(|_| put(rng.next() % keys, &value)));
            b.store.prefetch(&batch);
            for r in &batch {
                b.apply(r);
            }
        }
        b.commit();
        let us = t.elapsed().as_secs_f64() * 1e6 / puts as f64;
        println!(
            "mvcc_put round {}: {:.2} us/put ({} keys, {} puts, commit every {})",
            round + 1,
            us,
            keys,
            puts,
            COMMIT_EVERY
        );
    }
}
