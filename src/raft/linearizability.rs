//! A linearizability checker for client histories (Wing & Gong's search with
//! Lowe's memoisation, as in Porcupine), generic over a sequential [`Model`].
//!
//! A history is a list of [`Operation`]s with call and return times (any clock that
//! orders the client-visible events; equal times count as concurrent). An operation
//! whose outcome is unknown (timed out, the server crashed) returns at `u64::MAX`: it
//! may take effect at any point after its call, or never affect anything observed.
//! Operations that certainly failed must be left out.
//!
//! The model may split the history into independent parts (per key for a KV store);
//! each part is checked alone, which keeps the search small.
//!
//! Search: walk the time-ordered list of call/return events; at a call, try to
//! linearize that operation now (model step legal, and the pair (set of linearized
//! operations, state) not seen before), removing it from the list; at a return of a
//! not-yet-linearized operation, backtrack. The history is linearizable iff the list
//! empties.

use std::collections::HashSet;
use std::hash::Hash;

/// A sequential specification.
pub trait Model {
    type State: Clone + Eq + Hash + std::fmt::Debug;
    type Input: Clone + std::fmt::Debug;
    type Output: Clone + std::fmt::Debug;

    fn init(&self) -> Self::State;
    /// The state after `input` returned `output` in `state`, or None if it could not.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;
    /// Independent parts of a history (default: one).
    fn partition(
        &self,
        history: Vec<Operation<Self::Input, Self::Output>>,
    ) -> Vec<Vec<Operation<Self::Input, Self::Output>>> {
        vec![history]
    }
}

/// One client operation.
#[derive(Clone, Debug)]
pub struct Operation<I, O> {
    pub client: u64,
    pub input: I,
    pub output: O,
    pub call: u64,
    /// `u64::MAX` when the outcome is unknown.
    pub ret: u64,
}

/// The verdict on a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    Linearizable,
    /// Part `partition` (in the model's partition order) has no linearization; the
    /// string lists its operations.
    Violation {
        partition: usize,
        ops: String,
    },
    /// The search exceeded its step budget on some part.
    Unknown,
}

const NONE: usize = usize::MAX;

/// Checks `history` against `model`, spending at most `max_steps` search steps per part.
pub fn check<M: Model>(
    model: &M,
    history: Vec<Operation<M::Input, M::Output>>,
    max_steps: u64,
) -> CheckResult {
    let mut unknown = false;
    for (k, part) in model.partition(history).into_iter().enumerate() {
        match check_part(model, &part, max_steps) {
            Some(true) => {}
            Some(false) => {
                let ops = part
                    .iter()
                    .map(|o| {
                        let ret = if o.ret == u64::MAX {
                            "?".to_string()
                        } else {
                            o.ret.to_string()
                        };
                        format!(
                            "  c{} [{}, {}] {:?} -> {:?}\n",
                            o.client, o.call, ret, o.input, o.output
                        )
                    })
                    .collect();
                return CheckResult::Violation { partition: k, ops };
            }
            None => unknown = true,
        }
    }
    if unknown {
        CheckResult::Unknown
    } else {
        CheckResult::Linearizable
    }
}

/// Some(true): linearizable; Some(false): not; None: out of budget.
fn check_part<M: Model>(
    model: &M,
    ops: &[Operation<M::Input, M::Output>],
    max_steps: u64,
) -> Option<bool> {
    let n = ops.len();
    if n == 0 {
        return Some(true);
    }
    // Events: 2k = call of op k, 2k+1 = return of op k; node 2n is the head sentinel.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (k, o) in ops.iter().enumerate() {
        assert!(o.call <= o.ret, "operation {k} returns before its call");
        events.push((o.call, false, k));
        events.push((o.ret, true, k));
    }
    // Calls before returns at equal times: equal times are concurrent.
    events.sort_by_key(|&(t, is_ret, k)| (t, is_ret, k));
    let head = 2 * n;
    let mut next = vec![NONE; 2 * n + 1];
    let mut prev = vec![NONE; 2 * n + 1];
    let mut last = head;
    for &(_, is_ret, k) in &events {
        let node = 2 * k + is_ret as usize;
        next[last] = node;
        prev[node] = last;
        last = node;
    }
    let lift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, node: usize| {
        let (p, nx) = (prev[node], next[node]);
        next[p] = nx;
        if nx != NONE {
            prev[nx] = p;
        }
    };
    let unlift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, node: usize| {
        let (p, nx) = (prev[node], next[node]);
        next[p] = node;
        if nx != NONE {
            prev[nx] = node;
        }
    };
    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    let mut calls: Vec<(usize, M::State)> = Vec::new();
    let mut state = model.init();
    let mut entry = next[head];
    let mut steps = 0u64;
    while next[head] != NONE {
        steps += 1;
        if steps > max_steps {
            return None;
        }
        assert!(entry != NONE, "search walked off the event list");
        let k = entry / 2;
        if entry.is_multiple_of(2) {
            let op = &ops[k];
            if let Some(new_state) = model.step(&state, &op.input, &op.output) {
                let mut lin = linearized.clone();
                lin[k / 64] |= 1 << (k % 64);
                if cache.insert((lin.clone(), new_state.clone())) {
                    calls.push((entry, std::mem::replace(&mut state, new_state)));
                    linearized = lin;
                    lift(&mut next, &mut prev, entry);
                    lift(&mut next, &mut prev, entry + 1);
                    entry = next[head];
                    continue;
                }
            }
            entry = next[entry];
        } else {
            let Some((call, old_state)) = calls.pop() else {
                return Some(false);
            };
            state = old_state;
            let kk = call / 2;
            linearized[kk / 64] &= !(1 << (kk % 64));
            unlift(&mut next, &mut prev, call + 1);
            unlift(&mut next, &mut prev, call);
            entry = next[call];
        }
    }
    Some(true)
}

/// A key-value register per key: put overwrites, get returns the latest value.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvModel;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvInput {
    Put { key: Vec<u8>, value: Vec<u8> },
    Get { key: Vec<u8> },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOutput {
    PutOk,
    Value(Option<Vec<u8>>),
}

impl KvInput {
    pub fn key(&self) -> &[u8] {
        match self {
            KvInput::Put { key, .. } | KvInput::Get { key } => key,
        }
    }
}

impl Model for KvModel {
    type State = Option<Vec<u8>>;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> Self::State {
        None
    }

    fn step(&self, state: &Self::State, input: &KvInput, output: &KvOutput) -> Option<Self::State> {
        match (input, output) {
            (KvInput::Put { value, .. }, KvOutput::PutOk) => Some(Some(value.clone())),
            (KvInput::Get { .. }, KvOutput::Value(v)) if v == state => Some(state.clone()),
            _ => None,
        }
    }

    fn partition(
        &self,
        history: Vec<Operation<KvInput, KvOutput>>,
    ) -> Vec<Vec<Operation<KvInput, KvOutput>>> {
        let mut parts: std::collections::BTreeMap<Vec<u8>, Vec<Operation<KvInput, KvOutput>>> =
            Default::default();
        for op in history {
            parts.entry(op.input.key().to_vec()).or_default().push(op);
        }
        parts.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(c: u64, k: &str, v: &str, call: u64, ret: u64) -> Operation<KvInput, KvOutput> {
        Operation {
            client: c,
            input: KvInput::Put {
                key: k.into(),
                value: v.into(),
            },
            output: KvOutput::PutOk,
            call,
            ret,
        }
    }

    fn get(c: u64, k: &str, v: Option<&str>, call: u64, ret: u64) -> Operation<KvInput, KvOutput> {
        Operation {
            client: c,
            input: KvInput::Get { key: k.into() },
            output: KvOutput::Value(v.map(|s| s.as_bytes().to_vec())),
            call,
            ret,
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![put(1, "x", "a", 0, 1), get(2, "x", Some("a"), 2, 3)];
        assert_eq!(check(&KvModel, h, 1000), CheckResult::Linearizable);
    }

    #[test]
    fn stale_read_after_write_returned_is_a_violation() {
        // put(x=b) returned before get started, yet get saw the older value.
        let h = vec![
            put(1, "x", "a", 0, 1),
            put(1, "x", "b", 2, 3),
            get(2, "x", Some("a"), 4, 5),
        ];
        assert!(matches!(
            check(&KvModel, h, 1000),
            CheckResult::Violation { .. }
        ));
    }

    #[test]
    fn concurrent_ops_may_take_either_order() {
        let h = vec![
            put(1, "x", "a", 0, 10),
            get(2, "x", None, 1, 2),
            get(3, "x", Some("a"), 3, 4),
            get(2, "x", Some("a"), 5, 6),
        ];
        assert_eq!(check(&KvModel, h, 1000), CheckResult::Linearizable);
    }

    #[test]
    fn read_flipping_back_is_a_violation() {
        // Once a read saw "a", a later read may not see the initial value again.
        let h = vec![
            put(1, "x", "a", 0, 10),
            get(2, "x", Some("a"), 1, 2),
            get(3, "x", None, 3, 4),
        ];
        assert!(matches!(
            check(&KvModel, h, 1000),
            CheckResult::Violation { .. }
        ));
    }

    #[test]
    fn unknown_outcome_put_may_apply_late_or_never() {
        let h = vec![
            put(1, "x", "a", 0, u64::MAX),
            get(2, "x", None, 1, 2),
            get(2, "x", Some("a"), 5, 6),
            put(3, "y", "z", 7, u64::MAX),
            get(2, "y", None, 8, 9),
        ];
        assert_eq!(check(&KvModel, h, 1000), CheckResult::Linearizable);
    }

    #[test]
    fn keys_are_checked_independently() {
        let h = vec![
            put(1, "x", "a", 0, 1),
            put(1, "y", "b", 2, 3),
            get(2, "y", Some("b"), 4, 5),
            get(2, "x", Some("b"), 6, 7),
        ];
        match check(&KvModel, h, 1000) {
            CheckResult::Violation { ops, .. } => assert!(ops.contains("Get")),
            other => panic!("expected violation, got {other:?}"),
        }
    }
}
