//! Paper tests: each checks one sentence of the Raft paper (Ongaro & Ousterhout,
//! "In Search of an Understandable Consensus Algorithm", extended version) or of
//! Ongaro's thesis, quoted in its doc comment.

use super::harness::Cluster;
use crate::raft::{
    Bugs, ConfState, Config, Entry, EntryKind, MemStorage, Message, MessageType, RaftError,
    RawNode, Role, Storage,
};

fn cluster(n: u64) -> Cluster {
    Cluster::new(n, |c| {
        c.pre_vote = false;
        c.check_quorum = false;
    })
}

fn elect(c: &mut Cluster, id: u64) {
    c.node(id).campaign();
    c.stabilize();
    assert_eq!(
        c.nodes[&id].status().role,
        Role::Leader,
        "node {id} not elected"
    );
}

fn role(c: &Cluster, id: u64) -> Role {
    c.nodes[&id].status().role
}

/// §5.2: "To begin an election, a follower increments its current term and
/// transitions to candidate state. It then votes for itself and issues RequestVote
/// RPCs in parallel to each of the other servers in the cluster."
#[test]
fn election_timeout_starts_candidacy_with_self_vote() {
    let mut c = cluster(3);
    c.tick(1, 2 * c.cfg.election_ticks);
    let rd = c.node(1).ready();
    let hs = rd.hard_state.expect("term and vote changed");
    assert_eq!((hs.term, hs.vote), (1, 1));
    assert_eq!(rd.soft_state.unwrap().role, Role::Candidate);
    let mut to: Vec<u64> = rd
        .persisted_messages
        .iter()
        .filter(|m| m.kind == MessageType::Vote && m.term == 1)
        .map(|m| m.to)
        .collect();
    to.sort();
    assert_eq!(to, vec![2, 3]);
}

/// §5.2: "A candidate wins an election if it receives votes from a majority of the
/// servers in the full cluster for the same term."
#[test]
fn candidate_wins_with_majority_of_votes() {
    let mut c = cluster(5);
    c.isolated.extend([4, 5]);
    elect(&mut c, 1); // 1, 2, 3 are a majority of 5
                      // A candidate with only itself and one other of five cannot win.
    let mut c2 = cluster(5);
    c2.isolated.extend([3, 4, 5]);
    c2.node(1).campaign();
    c2.stabilize();
    assert_eq!(role(&c2, 1), Role::Candidate);
}

/// §5.2: "Each server will vote for at most one candidate in a given term, on a
/// first-come-first-served basis."
#[test]
fn server_votes_at_most_once_per_term() {
    let mut c = cluster(3);
    let vote = |from: u64, c: &mut Cluster| {
        let mut m = Message::new(MessageType::Vote, from, 3, 1);
        m.index = 0;
        m.log_term = 0;
        c.node(3).step(m).unwrap();
        let rd = c.node(3).ready();
        rd.persisted_messages
            .into_iter()
            .find(|m| m.kind == MessageType::VoteResp)
            .map(|m| !m.reject)
            .unwrap()
    };
    assert!(vote(1, &mut c), "first candidate gets the vote");
    assert!(
        !vote(2, &mut c),
        "second candidate in the same term is refused"
    );
    assert!(
        vote(1, &mut c),
        "re-asking by the same candidate is granted again"
    );
}

/// §5.2: "If the AppendEntries RPC is from another server claiming to be leader whose
/// term is at least as large as the candidate's current term, then the candidate
/// recognizes the leader as legitimate and returns to follower state."
#[test]
fn candidate_returns_to_follower_on_append_of_same_term() {
    let mut c = cluster(3);
    c.node(2).campaign(); // candidate in term 1
    let mut m = Message::new(MessageType::Append, 1, 2, 1);
    m.commit = 0;
    c.node(2).step(m).unwrap();
    let s = c.nodes[&2].status();
    assert_eq!((s.role, s.leader, s.term), (Role::Follower, 1, 1));
}

/// §5.2: "Raft uses randomized election timeouts to ensure that split votes are rare
/// ... election timeouts are chosen randomly from a fixed interval (e.g., 150–300ms)."
/// Here: `[election_ticks, 2 * election_ticks)`, from the node's seed.
#[test]
fn election_timeouts_are_randomized_within_interval() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..40 {
        let mut cfg = Config::new(1);
        cfg.seed = seed;
        let conf = ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        };
        let mut n = RawNode::new(cfg.clone(), MemStorage::new(conf)).unwrap();
        let mut ticks = 0;
        while n.status().role == Role::Follower {
            n.tick();
            ticks += 1;
            assert!(
                ticks < 2 * cfg.election_ticks,
                "timeout beyond 2x election_ticks"
            );
        }
        assert!(ticks >= cfg.election_ticks);
        seen.insert(ticks);
    }
    assert!(seen.len() > 3, "timeouts not spread: {seen:?}");
}

/// §5.3: "A log entry is committed once the leader that created the entry has
/// replicated it on a majority of the servers."
#[test]
fn entry_committed_once_on_majority() {
    let mut c = cluster(5);
    elect(&mut c, 1);
    c.isolated.extend([4, 5]);
    let idx = c.node(1).propose(vec![b"x".to_vec()]).unwrap();
    c.stabilize();
    assert_eq!(c.nodes[&1].status().commit, idx, "1,2,3 hold it: committed");
    c.isolated.insert(3);
    let idx2 = c.node(1).propose(vec![b"y".to_vec()]).unwrap();
    c.stabilize();
    assert!(
        c.nodes[&1].status().commit < idx2,
        "only 1,2 hold it: not committed"
    );
}

/// §5.3: "If the follower does not find an entry in its log with the same index and
/// term, then it refuses the new entries."
#[test]
fn follower_refuses_append_without_matching_previous_entry() {
    let mut c = cluster(3);
    elect(&mut c, 1);
    let mut m = Message::new(MessageType::Append, 1, 2, 1);
    m.index = 5;
    m.log_term = 1;
    m.entries = vec![Entry {
        term: 1,
        index: 6,
        kind: EntryKind::Normal,
        data: b"z".to_vec().into(),
    }];
    c.node(2).step(m).unwrap();
    let rd = c.node(2).ready();
    let resp = rd
        .persisted_messages
        .iter()
        .find(|m| m.kind == MessageType::AppendResp)
        .unwrap();
    assert!(resp.reject);
    assert_eq!(
        (resp.reject_hint, resp.log_term),
        (2, 0),
        "log too short: hint last+1"
    );
    assert!(rd.entries.is_empty());
}

/// Figure 2, AppendEntries receiver: "If an existing entry conflicts with a new one
/// (same index but different terms), delete the existing entry and all that follow it."
#[test]
fn follower_deletes_conflicting_suffix() {
    let mut c = cluster(3);
    elect(&mut c, 1);
    // Node 2 holds 2/1 and 3/1 (uncommitted); a term-2 leader sends 2/2.
    let ents = |t: u64, from: u64, n: u64| -> Vec<Entry> {
        (from..from + n)
            .map(|i| Entry {
                term: t,
                index: i,
                kind: EntryKind::Normal,
                data: vec![b'a' + i as u8].into(),
            })
            .collect()
    };
    let mut m = Message::new(MessageType::Append, 1, 2, 1);
    m.index = 1;
    m.log_term = 1;
    m.entries = ents(1, 2, 2);
    c.node(2).step(m).unwrap();
    c.process_ready(2);
    let mut m = Message::new(MessageType::Append, 3, 2, 2);
    m.index = 1;
    m.log_term = 1;
    m.entries = ents(2, 2, 1);
    c.node(2).step(m).unwrap();
    c.process_ready(2);
    let log: Vec<(u64, u64)> = c.log(2).iter().map(|e| (e.index, e.term)).collect();
    assert_eq!(log, vec![(1, 1), (2, 2)]);
}

/// Figure 3, Leader Append-Only: "a leader never overwrites or deletes entries in its
/// log; it only appends new entries." A stale-term append is rejected by the leader.
#[test]
fn leader_never_overwrites_its_log() {
    let mut c = cluster(3);
    elect(&mut c, 1);
    c.node(1).propose(vec![b"x".to_vec()]).unwrap();
    c.process_ready(1);
    let before = c.log(1);
    let mut m = Message::new(MessageType::Append, 2, 1, 1);
    m.index = 1;
    m.log_term = 1;
    m.entries = vec![Entry {
        term: 1,
        index: 2,
        kind: EntryKind::Normal,
        data: b"other".to_vec().into(),
    }];
    c.node(1).step(m).unwrap();
    c.process_ready(1);
    assert_eq!(c.log(1), before);
    assert_eq!(role(&c, 1), Role::Leader);
}

/// §5.4.1: "Raft determines which of two logs is more up-to-date by comparing the index
/// and term of the last entries in the logs ... the voter denies its vote if its own
/// log is more up-to-date than that of the candidate."
#[test]
fn voter_denies_candidate_with_stale_log() {
    for (bugs, expect_grant) in [
        (Bugs::default(), false),
        (
            Bugs {
                vote_ignores_log: true,
                ..Default::default()
            },
            true,
        ),
    ] {
        let mut c = Cluster::new(3, |cfg| {
            cfg.pre_vote = false;
            cfg.check_quorum = false;
            cfg.bugs = bugs;
        });
        elect(&mut c, 1);
        c.node(1).propose(vec![b"x".to_vec()]).unwrap();
        c.stabilize(); // everyone has 2/1
        let mut m = Message::new(MessageType::Vote, 3, 2, 5);
        m.index = 1; // candidate's last entry 1/1 is behind 2/1
        m.log_term = 1;
        c.node(2).step(m).unwrap();
        let rd = c.node(2).ready();
        let r = rd
            .persisted_messages
            .iter()
            .find(|m| m.kind == MessageType::VoteResp)
            .unwrap();
        assert_eq!(!r.reject, expect_grant, "bugs {bugs:?}");
    }
}

/// §5.4.2 (Figure 8): "Raft never commits log entries from previous terms by counting
/// replicas. Only log entries from the leader's current term are committed by counting
/// replicas." Node 1 (term 3) brings node 3 up to its term-1 entry 2: a majority holds
/// it, yet it stays uncommitted until the term-3 entry is replicated. With the
/// `commit_old_term` bug it commits at once.
#[test]
fn leader_does_not_commit_older_term_entry_by_counting() {
    for bug in [false, true] {
        let mut c = Cluster::new(3, |cfg| {
            cfg.pre_vote = false;
            cfg.check_quorum = false;
            cfg.max_msg_bytes = 1; // one entry per Append
            cfg.bugs.commit_old_term = bug;
        });
        elect(&mut c, 1);
        c.isolated.insert(1);
        c.node(1).propose(vec![b"e".to_vec()]).unwrap(); // 2/1 only on node 1
        c.process_ready(1);
        c.deliver(&[]);
        // Node 2 wins term 2 with node 3 but its entry never leaves it.
        c.tick(2, 2 * c.cfg.election_ticks);
        c.process_all();
        c.deliver(&[]);
        c.process_all();
        c.deliver(&[]);
        c.process_all();
        assert_eq!(role(&c, 2), Role::Leader);
        c.isolated.clear();
        c.isolated.insert(2);
        c.mailbox.clear();
        // Node 1 (still leading term 1 in isolation) hears of term 2 and steps down.
        let mut hb = Message::new(MessageType::Heartbeat, 2, 1, 2);
        hb.commit = 1;
        c.node(1).step(hb).unwrap();
        c.process_all();
        c.mailbox.clear();
        // Node 1 campaigns until it wins (term 3), with node 3's vote.
        while role(&c, 1) != Role::Leader {
            c.node(1).campaign();
            c.process_all();
            c.deliver(&[]);
            c.process_all();
            c.deliver(&[]);
            c.process_all();
        }
        let term = c.nodes[&1].status().term;
        assert!(term >= 3, "term {term}: {}", c.out);
        // Replicate one message at a time until node 3 acknowledges 2/1 only.
        for _ in 0..10 {
            c.process_all();
            let acks_two = c.mailbox.iter().any(|m| {
                m.kind == MessageType::AppendResp && m.from == 3 && !m.reject && m.index == 2
            });
            c.deliver(&[]);
            if acks_two {
                c.process_all();
                break;
            }
        }
        let commit = c.nodes[&1].status().commit;
        if bug {
            assert_eq!(
                commit, 2,
                "with the bug the older-term entry commits by counting"
            );
        } else {
            assert_eq!(
                commit, 1,
                "older-term entry 2/1 must not commit by counting"
            );
            c.stabilize();
            assert_eq!(
                c.nodes[&1].status().commit,
                3,
                "commits with the term-3 entry"
            );
        }
    }
}

/// Thesis §10.2.1: the leader may send entries to followers while writing them to its
/// own disk, "the leader counts itself in the majority only after its own entries are
/// durable". A follower's acknowledgement leaves only after its write is durable.
#[test]
fn leader_counts_itself_only_once_durable() {
    let mut c = cluster(3);
    elect(&mut c, 1);
    let idx = c.node(1).propose(vec![b"x".to_vec()]).unwrap();
    let rd = c.node(1).ready(); // not persisted yet
    assert_eq!(rd.entries.len(), 1);
    assert!(
        rd.messages.iter().any(|m| m.kind == MessageType::Append),
        "appends leave at once"
    );
    // Node 2 acknowledges; node 3 is silent. Leader + node 2 would be a majority, but
    // the leader's own copy is not durable yet.
    c.mailbox
        .extend(rd.messages.into_iter().filter(|m| m.to == 2));
    c.deliver(&[]);
    let rd2 = c.node(2).ready();
    assert!(rd2
        .messages
        .iter()
        .all(|m| m.kind != MessageType::AppendResp));
    let ack = rd2
        .persisted_messages
        .into_iter()
        .find(|m| m.kind == MessageType::AppendResp)
        .unwrap();
    c.node(2).storage_mut().append(&rd2.entries);
    c.node(2).on_persisted(rd2.number);
    c.node(1).step(ack).unwrap();
    assert!(
        c.nodes[&1].status().commit < idx,
        "leader's own write not durable yet"
    );
    c.node(1).storage_mut().append(&rd.entries);
    c.node(1).on_persisted(rd.number);
    assert_eq!(c.nodes[&1].status().commit, idx);
}

/// Thesis §6.2 (check-quorum): "a leader steps down if an election timeout elapses
/// without a successful round of heartbeats to a majority of its cluster."
#[test]
fn leader_without_quorum_steps_down() {
    let mut c = Cluster::new(3, |cfg| {
        cfg.pre_vote = false;
        cfg.check_quorum = true;
    });
    elect(&mut c, 1);
    c.isolated.insert(1);
    for _ in 0..2 * c.cfg.election_ticks {
        c.tick(1, 1);
        c.process_all();
        c.deliver(&[]);
    }
    assert_eq!(role(&c, 1), Role::Follower);
}

/// Storage contract: `TemporarilyUnavailable` means "not now": the leader sends nothing
/// and retries later, without panicking.
#[test]
fn temporarily_unavailable_entries_are_retried() {
    let mut c = cluster(3);
    elect(&mut c, 1);
    c.isolated.insert(3);
    for k in 0..5 {
        c.node(1).propose(vec![vec![b'a' + k]]).unwrap();
        c.stabilize();
    }
    c.node(1).storage_mut().compact(
        1,
        ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        },
        vec![],
    );
    c.node(1).storage_mut().set_unavailable_every(1); // every read fails for now
    c.isolated.clear();
    for _ in 0..3 {
        c.tick(1, 1);
        c.stabilize();
    }
    assert!(
        c.nodes[&3].status().last_index < 6,
        "nothing could be read yet"
    );
    c.node(1).storage_mut().set_unavailable_every(0);
    c.tick(1, 1);
    c.stabilize();
    assert_eq!(
        c.nodes[&3].status().last_index,
        c.nodes[&1].status().last_index
    );
}

/// Untrusted input: a malformed message is an error, never a panic, and changes nothing.
#[test]
fn malformed_messages_are_refused() {
    let mut c = cluster(3);
    elect(&mut c, 1);
    let mut m = Message::new(MessageType::Append, 1, 2, 1);
    m.index = 1;
    m.log_term = 1;
    m.entries = vec![Entry {
        term: 1,
        index: 7,
        kind: EntryKind::Normal,
        data: vec![].into(),
    }];
    assert!(matches!(
        c.node(2).step(m),
        Err(RaftError::InvalidMessage(_))
    ));
    let m = Message::new(MessageType::Snapshot, 1, 2, 1);
    assert!(matches!(
        c.node(2).step(m),
        Err(RaftError::InvalidMessage(_))
    ));
    let m = Message::new(MessageType::Heartbeat, 1, 9, 1);
    assert!(matches!(
        c.node(2).step(m),
        Err(RaftError::InvalidMessage(_))
    ));
    let m = Message::new(MessageType::Append, 1, 2, 0);
    assert!(matches!(
        c.node(2).step(m),
        Err(RaftError::InvalidMessage(_))
    ));
    let mut m = Message::new(MessageType::Heartbeat, 1, 2, 1);
    m.commit = 99; // beyond node 2's log
    assert!(matches!(
        c.node(2).step(m),
        Err(RaftError::InvalidMessage(_))
    ));
    assert_eq!(c.nodes[&2].status().last_index, 1);
    // Storage state that contradicts itself is an error at start-up.
    let mut st = MemStorage::new(ConfState {
        voters: vec![1],
        ..Default::default()
    });
    st.set_hard_state(crate::raft::HardState {
        term: 1,
        vote: 1,
        commit: 5,
    });
    assert!(matches!(
        RawNode::new(Config::new(1), st),
        Err(RaftError::Corrupt(_))
    ));
    assert_eq!(MemStorage::default().last_index(), Ok(0));
}
