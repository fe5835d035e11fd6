//! Messages between Raft peers, snapshots, membership changes and read states.
//!
//! One [`Message`] struct with a [`MessageType`] carries every kind of message (as in
//! the Raft paper's RPCs plus pre-vote, ReadIndex and leader transfer). Fields that a
//! kind does not use are zero. All of these derive rkyv so the peer protocol can send
//! them as they are.
//!
//! A [`ConfChange`] travels inside an [`EntryKind::ConfChange`] entry encoded as 9 bytes:
//! `[kind: u8][node_id: u64 little-endian]`.

use super::types::{ConfState, Entry, EntryKind, NodeId, SnapshotMeta};
use rkyv::{Archive, Deserialize, Serialize};

/// What a [`Message`] is.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum MessageType {
    /// Leader → follower: AppendEntries. `index`/`log_term` name the entry preceding
    /// `entries`; `commit` is the leader's commit index.
    Append,
    /// Follower → leader. Accepted: `index` is the follower's last matching index.
    /// Rejected: `index` is the rejected `Append.index`, `reject_hint`/`log_term` are the
    /// first index of the conflicting term and that term (`log_term` 0: log too short,
    /// `reject_hint` is then the follower's last index + 1).
    AppendResp,
    /// Leader → follower: keeps the follower's election timer reset; `commit` is
    /// `min(match_index, commit)`; `read_round` names a ReadIndex leadership round.
    Heartbeat,
    /// Follower → leader: echoes `read_round`.
    HeartbeatResp,
    /// Candidate → voter: RequestVote; `index`/`log_term` name the candidate's last entry;
    /// `force` is set when a leader transfer asked for the election (ignores leases).
    Vote,
    VoteResp,
    /// Pre-candidate → voter: "would you vote for me in `term`?" (term not yet raised).
    PreVote,
    PreVoteResp,
    /// Leader → follower: install a snapshot. Leaves the core with `snapshot.data`
    /// empty: the driver attaches the application's snapshot data for `snapshot.meta`.
    Snapshot,
    /// Follower → leader (term 0): please confirm a read; `context` identifies it.
    ReadIndex,
    /// Leader → follower: the read `context` may be served once `index` is applied.
    ReadIndexResp,
    /// Leader → transfer target: start an election now (thesis §3.10).
    TimeoutNow,
    /// Follower → leader (term 0): please transfer leadership to node `index`.
    TransferLeader,
}

/// A snapshot: metadata plus the application's serialized state machine.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

/// One message between peers.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Message {
    pub kind: MessageType,
    pub from: NodeId,
    pub to: NodeId,
    /// Sender's term; 0 for the requests a follower forwards to its leader
    /// ([`MessageType::ReadIndex`], [`MessageType::TransferLeader`]).
    pub term: u64,
    pub log_term: u64,
    pub index: u64,
    pub entries: Vec<Entry>,
    pub commit: u64,
    pub reject: bool,
    pub reject_hint: u64,
    pub snapshot: Option<Snapshot>,
    pub context: Vec<u8>,
    pub force: bool,
    pub read_round: u64,
}

impl Message {
    /// A message of `kind` with every other field zero.
    pub fn new(kind: MessageType, from: NodeId, to: NodeId, term: u64) -> Message {
        Message {
            kind,
            from,
            to,
            term,
            log_term: 0,
            index: 0,
            entries: Vec::new(),
            commit: 0,
            reject: false,
            reject_hint: 0,
            snapshot: None,
            context: Vec::new(),
            force: false,
            read_round: 0,
        }
    }

    /// Bytes of the entries this message carries (for size limits).
    pub fn entries_bytes(&self) -> u64 {
        self.entries.iter().map(Entry::size_bytes).sum()
    }
}

impl std::fmt::Display for Message {
    /// Compact one-line form used by the transcript tests, e.g.
    /// `1->2 Append t2 prev=3/1 c3 [4/2 5/2]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}->{} {:?} t{}",
            self.from, self.to, self.kind, self.term
        )?;
        match self.kind {
            MessageType::Append => {
                write!(f, " prev={}/{} c{}", self.index, self.log_term, self.commit)?;
                write_entries(f, &self.entries)?;
            }
            MessageType::AppendResp => {
                if self.reject {
                    write!(
                        f,
                        " reject i{} hint={}/{}",
                        self.index, self.reject_hint, self.log_term
                    )?;
                } else {
                    write!(f, " i{}", self.index)?;
                }
            }
            MessageType::Heartbeat => write!(f, " c{} r{}", self.commit, self.read_round)?,
            MessageType::HeartbeatResp => write!(f, " r{}", self.read_round)?,
            MessageType::Vote | MessageType::PreVote => {
                write!(f, " last={}/{}", self.index, self.log_term)?;
                if self.force {
                    write!(f, " force")?;
                }
            }
            MessageType::VoteResp | MessageType::PreVoteResp => {
                write!(f, " {}", if self.reject { "reject" } else { "grant" })?
            }
            MessageType::Snapshot => {
                if let Some(s) = &self.snapshot {
                    write!(
                        f,
                        " snap={}/{} {:?}",
                        s.meta.index, s.meta.term, s.meta.conf_state.voters
                    )?;
                }
            }
            MessageType::ReadIndex | MessageType::ReadIndexResp => write!(
                f,
                " i{} ctx={}",
                self.index,
                String::from_utf8_lossy(&self.context)
            )?,
            MessageType::TimeoutNow => {}
            MessageType::TransferLeader => write!(f, " target={}", self.index)?,
        }
        Ok(())
    }
}

/// Writes ` [i/t i/t ...]` with `i/t:data` for non-empty payloads (lossy UTF-8).
pub(crate) fn write_entries(f: &mut std::fmt::Formatter<'_>, ents: &[Entry]) -> std::fmt::Result {
    if ents.is_empty() {
        return Ok(());
    }
    write!(f, " [")?;
    for (i, e) in ents.iter().enumerate() {
        if i > 0 {
            write!(f, " ")?;
        }
        write!(f, "{}/{}", e.index, e.term)?;
        match e.kind {
            EntryKind::ConfChange => match ConfChange::decode(&e.data) {
                Ok(cc) => write!(f, ":{cc}")?,
                Err(_) => write!(f, ":badcc")?,
            },
            EntryKind::Normal if !e.data.is_empty() => {
                write!(f, ":{}", String::from_utf8_lossy(&e.data))?
            }
            EntryKind::Normal => {}
        }
    }
    write!(f, "]")
}

/// `[i/t ...]` for transcripts.
#[cfg(test)]
pub(crate) fn write_entries_string(ents: &[Entry]) -> String {
    struct W<'a>(&'a [Entry]);
    impl std::fmt::Display for W<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write_entries(f, self.0)
        }
    }
    W(ents).to_string().trim_start().to_string()
}

/// A single-server membership change (Raft thesis §4.1).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
pub enum ConfChangeKind {
    /// Add `node` as a voter, or promote it from learner.
    AddVoter,
    /// Add `node` as a learner, or demote it from voter.
    AddLearner,
    /// Remove `node` (voter or learner).
    RemoveNode,
}

/// A membership change carried by an [`EntryKind::ConfChange`] entry.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
pub struct ConfChange {
    pub kind: ConfChangeKind,
    pub node: NodeId,
}

impl std::fmt::Display for ConfChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let k = match self.kind {
            ConfChangeKind::AddVoter => "v+",
            ConfChangeKind::AddLearner => "l+",
            ConfChangeKind::RemoveNode => "r-",
        };
        write!(f, "{k}{}", self.node)
    }
}

impl ConfChange {
    pub const ENCODED_BYTES: usize = 9;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::ENCODED_BYTES);
        out.push(match self.kind {
            ConfChangeKind::AddVoter => 1,
            ConfChangeKind::AddLearner => 2,
            ConfChangeKind::RemoveNode => 3,
        });
        out.extend_from_slice(&self.node.to_le_bytes());
        out
    }

    /// Decodes an entry payload; bad bytes (from disk or network) are an error.
    pub fn decode(data: &[u8]) -> Result<ConfChange, String> {
        if data.len() != Self::ENCODED_BYTES {
            return Err(format!(
                "conf change payload is {} bytes, want {}",
                data.len(),
                Self::ENCODED_BYTES
            ));
        }
        let kind = match data[0] {
            1 => ConfChangeKind::AddVoter,
            2 => ConfChangeKind::AddLearner,
            3 => ConfChangeKind::RemoveNode,
            k => return Err(format!("conf change kind byte {k} unknown")),
        };
        let node = u64::from_le_bytes(data[1..9].try_into().expect("length checked above"));
        if node == 0 {
            return Err("conf change names node 0".to_string());
        }
        Ok(ConfChange { kind, node })
    }

    /// The configuration after this change. Each change fully determines the role of
    /// `node`, so replaying a sequence of changes is idempotent.
    pub fn apply_to(&self, conf: &ConfState) -> ConfState {
        let mut c = conf.clone();
        c.voters.retain(|&v| v != self.node);
        c.learners.retain(|&v| v != self.node);
        match self.kind {
            ConfChangeKind::AddVoter => c.voters.push(self.node),
            ConfChangeKind::AddLearner => c.learners.push(self.node),
            ConfChangeKind::RemoveNode => {}
        }
        c.voters.sort_unstable();
        c.learners.sort_unstable();
        c
    }
}

/// A read confirmed by the leader: it may be served once `index` has been applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub index: u64,
    pub ctx: Vec<u8>,
}
