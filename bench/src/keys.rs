//! Key space, values and the per-operation choice of key: all deterministic from a seed.
//!
//! Format: key `i` (0 <= i < keys) is the byte `k` followed by `i` in decimal, zero-padded
//! so that the whole key is exactly `key_size` bytes (`k000000000001234` for size 16).
//! Invariants:
//! - every key of the space has the same length, and key order equals index order;
//! - block `b` (keys `100b .. 100b+99`) is exactly the set of keys that start with
//!   `range_prefix(b)`: the key without its last two digits. Only full blocks are chosen
//!   for range reads, so a range over a prefix always covers [`RANGE_KEYS`] keys when the
//!   space has been filled.
//!
//! Randomness is a SplitMix64 generator: small, seedable, and identical on every platform,
//! so a run's key sequence is reproducible from `--seed` and the worker number.

use std::fmt;

/// Number of keys covered by one range read.
pub const RANGE_KEYS: u64 = 100;
/// Digits that vary inside one range block (`RANGE_KEYS` = 10^2).
const RANGE_DIGITS: usize = 2;

/// Error for a key space that cannot hold the requested number of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpaceError(pub String);

impl fmt::Display for KeySpaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeySpaceError {}

/// The set of keys a run touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpace {
    keys: u64,
    key_size: usize,
}

impl KeySpace {
    /// A space of `keys` keys, each `key_size` bytes long.
    pub fn new(keys: u64, key_size: usize) -> Result<KeySpace, KeySpaceError> {
        if keys == 0 {
            return Err(KeySpaceError("key space: --keys must be at least 1".into()));
        }
        let digits_needed = decimal_digits(keys - 1).max(RANGE_DIGITS + 1);
        if key_size < digits_needed + 1 {
            return Err(KeySpaceError(format!(
                "key space: --key-size {key_size} is too small for {keys} keys \
                 (need at least {} bytes: 'k' and {digits_needed} digits)",
                digits_needed + 1
            )));
        }
        Ok(KeySpace { keys, key_size })
    }

    pub fn keys(&self) -> u64 {
        self.keys
    }

    pub fn key_size(&self) -> usize {
        self.key_size
    }

    /// Writes key `index` into `out` (cleared first).
    pub fn key(&self, index: u64, out: &mut Vec<u8>) {
        assert!(
            index < self.keys,
            "key index {index} outside a space of {}",
            self.keys
        );
        out.clear();
        out.push(b'k');
        let digits = self.key_size - 1;
        let text = index.to_string();
        out.resize(1 + digits - text.len(), b'0');
        out.extend_from_slice(text.as_bytes());
        debug_assert_eq!(out.len(), self.key_size);
    }

    /// Number of full range blocks; 0 when the space is smaller than one block.
    pub fn range_blocks(&self) -> u64 {
        self.keys / RANGE_KEYS
    }

    /// Writes the prefix shared by exactly the keys of block `block` into `out`.
    pub fn range_prefix(&self, block: u64, out: &mut Vec<u8>) {
        assert!(
            block < self.range_blocks(),
            "range block {block} out of bounds"
        );
        self.key(block * RANGE_KEYS, out);
        out.truncate(self.key_size - RANGE_DIGITS);
    }
}

fn decimal_digits(mut n: u64) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

/// SplitMix64: a tiny seedable generator (Steele, Lea, Flood 2014).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator for worker `worker` of a run seeded with `seed`: streams differ per worker.
    pub fn for_worker(seed: u64, worker: usize) -> Rng {
        let mut base = Rng(seed ^ (worker as u64).wrapping_mul(0xA076_1D64_78BD_642F));
        Rng(base.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; bias below 2^-64 * n, irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// A value of `size` printable bytes, derived from `seed`.
pub fn make_value(size: usize, seed: u64) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = Rng::new(seed ^ 0x005E_ED0F_7A1E);
    (0..size)
        .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_fixed_size_and_sort_like_their_index() {
        let space = KeySpace::new(100_000, 16).unwrap();
        let mut a = Vec::new();
        let mut b = Vec::new();
        space.key(0, &mut a);
        assert_eq!(a, b"k000000000000000");
        space.key(99_999, &mut b);
        assert_eq!(b, b"k000000000099999");
        let mut prev = Vec::new();
        for i in [0u64, 1, 9, 10, 99, 100, 12_345, 99_998, 99_999] {
            let mut k = Vec::new();
            space.key(i, &mut k);
            assert_eq!(k.len(), 16);
            assert!(k > prev, "key {i} does not sort after the previous one");
            prev = k;
        }
    }

    #[test]
    fn key_size_too_small_is_refused() {
        assert!(KeySpace::new(100_000, 5).is_err());
        assert!(KeySpace::new(100_000, 6).is_ok());
        assert!(KeySpace::new(0, 16).is_err());
        // Range blocks need at least three digits even for tiny spaces.
        assert!(KeySpace::new(5, 3).is_err());
        assert!(KeySpace::new(5, 4).is_ok());
    }

    #[test]
    fn a_range_prefix_covers_exactly_its_block() {
        let space = KeySpace::new(1_050, 10).unwrap();
        assert_eq!(
            space.range_blocks(),
            10,
            "the partial last block is never chosen"
        );
        let mut prefix = Vec::new();
        let mut key = Vec::new();
        for block in [0u64, 3, 9] {
            space.range_prefix(block, &mut prefix);
            let matching: Vec<u64> = (0..space.keys())
                .filter(|&i| {
                    space.key(i, &mut key);
                    key.starts_with(&prefix)
                })
                .collect();
            let want: Vec<u64> = (block * 100..block * 100 + 100).collect();
            assert_eq!(matching, want, "block {block}");
        }
    }

    #[test]
    fn rng_is_deterministic_and_uniform_enough() {
        let mut a = Rng::for_worker(42, 3);
        let mut b = Rng::for_worker(42, 3);
        let mut c = Rng::for_worker(42, 4);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        let mut counts = [0u32; 10];
        let mut r = Rng::new(7);
        for _ in 0..100_000 {
            counts[r.below(10) as usize] += 1;
        }
        for (bucket, &n) in counts.iter().enumerate() {
            assert!((9_000..11_000).contains(&n), "bucket {bucket} got {n}");
        }
    }

    #[test]
    fn values_are_printable_and_reproducible() {
        let v = make_value(256, 1);
        assert_eq!(v.len(), 256);
        assert!(v.iter().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(v, make_value(256, 1));
        assert_ne!(v, make_value(256, 2));
    }
}
