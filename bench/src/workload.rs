//! Workloads: which operation a worker sends next, and on which key.
//!
//! | name | operation |
//! |---|---|
//! | `fill` | put every key of the space exactly once, in index order (loads the data) |
//! | `put` | put a uniformly random key |
//! | `get` | linearizable get of a uniformly random key |
//! | `get-serializable` | serializable get of a uniformly random key |
//! | `range` | linearizable range over the prefix of a random 100-key block |
//! | `mix` | 90% linearizable get, 10% put, uniformly random keys |
//! | `cas` | Txn: if value(key) == V then put(key, V) else get(key); random key |
//!
//! Every loaded key holds the run's value V, so after `fill` each `cas` swaps (and writes).

use std::fmt;
use std::str::FromStr;

use crate::keys::{KeySpace, Rng};
use crate::target::Consistency;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    Fill,
    Put,
    Get,
    GetSerializable,
    Range,
    Mix,
    Cas,
}

impl Workload {
    pub const ALL: [Workload; 7] = [
        Workload::Fill,
        Workload::Put,
        Workload::Get,
        Workload::GetSerializable,
        Workload::Range,
        Workload::Mix,
        Workload::Cas,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Fill => "fill",
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::GetSerializable => "get-serializable",
            Workload::Range => "range",
            Workload::Mix => "mix",
            Workload::Cas => "cas",
        }
    }

    /// Whether the workload expects the key space to be filled first.
    pub fn reads_loaded_keys(self) -> bool {
        matches!(
            self,
            Workload::Get
                | Workload::GetSerializable
                | Workload::Range
                | Workload::Mix
                | Workload::Cas
        )
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Workload, String> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
                format!("unknown workload {s:?} (known: {})", names.join(", "))
            })
    }
}

/// One operation to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put { key: u64 },
    Get { key: u64, consistency: Consistency },
    Range { block: u64 },
    Cas { key: u64 },
}

/// Chooses operation number `index` of a run for a worker drawing from `rng`.
///
/// `fill` is the only workload that uses `index` (it must cover each key once); the others
/// draw keys from the worker's generator.
pub fn choose(workload: Workload, space: &KeySpace, index: u64, rng: &mut Rng) -> Op {
    let random_key = |rng: &mut Rng| rng.below(space.keys());
    match workload {
        Workload::Fill => {
            assert!(
                index < space.keys(),
                "fill index {index} past the key space"
            );
            Op::Put { key: index }
        }
        Workload::Put => Op::Put {
            key: random_key(rng),
        },
        Workload::Get => Op::Get {
            key: random_key(rng),
            consistency: Consistency::Linearizable,
        },
        Workload::GetSerializable => Op::Get {
            key: random_key(rng),
            consistency: Consistency::Serializable,
        },
        Workload::Range => {
            assert!(
                space.range_blocks() > 0,
                "range workload needs at least 100 keys (checked when parsing arguments)"
            );
            Op::Range {
                block: rng.below(space.range_blocks()),
            }
        }
        Workload::Mix => {
            if rng.below(10) == 0 {
                Op::Put {
                    key: random_key(rng),
                }
            } else {
                Op::Get {
                    key: random_key(rng),
                    consistency: Consistency::Linearizable,
                }
            }
        }
        Workload::Cas => Op::Cas {
            key: random_key(rng),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for w in Workload::ALL {
            assert_eq!(w.name().parse::<Workload>().unwrap(), w);
        }
        let err = "gets".parse::<Workload>().unwrap_err();
        assert!(err.contains("get-serializable"), "{err}");
    }

    #[test]
    fn fill_covers_each_key_once_in_order() {
        let space = KeySpace::new(1000, 8).unwrap();
        let mut rng = Rng::new(1);
        for i in 0..1000 {
            assert_eq!(
                choose(Workload::Fill, &space, i, &mut rng),
                Op::Put { key: i }
            );
        }
    }

    #[test]
    fn mix_is_ninety_ten_and_deterministic() {
        let space = KeySpace::new(100_000, 16).unwrap();
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..20_000u64)
                .map(|i| choose(Workload::Mix, &space, i, &mut rng))
                .collect::<Vec<_>>()
        };
        let ops = run(9);
        assert_eq!(ops, run(9));
        let puts = ops.iter().filter(|op| matches!(op, Op::Put { .. })).count();
        assert!((1_800..2_200).contains(&puts), "{puts} puts of 20000");
        assert!(ops.iter().all(|op| match op {
            Op::Put { key } => *key < 100_000,
            Op::Get { key, consistency } =>
                *key < 100_000 && *consistency == Consistency::Linearizable,
            _ => false,
        }));
    }

    #[test]
    fn random_keys_cover_the_space() {
        let space = KeySpace::new(1_000, 8).unwrap();
        let mut rng = Rng::new(3);
        let mut seen = vec![false; 1_000];
        for i in 0..20_000 {
            match choose(Workload::Get, &space, i, &mut rng) {
                Op::Get { key, .. } => seen[key as usize] = true,
                other => panic!("get workload chose {other:?}"),
            }
        }
        assert!(
            seen.iter().all(|&s| s),
            "some keys never chosen in 20000 draws"
        );
    }

    #[test]
    fn range_blocks_stay_in_bounds() {
        let space = KeySpace::new(1_050, 8).unwrap();
        let mut rng = Rng::new(5);
        for i in 0..5_000 {
            match choose(Workload::Range, &space, i, &mut rng) {
                Op::Range { block } => assert!(block < 10),
                other => panic!("range workload chose {other:?}"),
            }
        }
    }
}
