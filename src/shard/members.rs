//! The cluster's member table, shared by the shards of one node.
//!
//! Group 0's log is the source of truth: `MemberAdd`/`Promote`/`Remove` are entries of
//! group 0 ([`super::entry::MemberEntry`]); applying one updates this table (every node
//! applies it, so every node learns new members' addresses) and persists it to
//! `<data-dir>/members` before the apply completes. `applied` is group 0's index of the
//! last change in the table: a replayed entry at or below it is skipped, so the table
//! never applies a change twice. Each group's leader then makes its Raft configuration
//! follow the table (one conf change at a time; a learner is promoted only once it has
//! caught up), and each shard's peer transport adds and drops links to follow it.
//!
//! File format (text, one `key=value` per line):
//! ```text
//! applied=<group 0 index>
//! next_id=<the id the next added member gets>
//! removed=<id>,<id>,...
//! member=<id>,<learner 0|1>,<peer port base>,<client port base>,<host>,<name>
//! ```
//! The file is replaced atomically (write a temp file, fsync, rename, fsync the
//! directory).
//!
//! Snapshots carry the table: a node that catches up on group 0 through a snapshot
//! never applies the member changes compacted out of the leader's log, so the leader
//! writes its table (the same text, under [`MEMBERS_TREE`]/[`MEMBERS_KEY`]) into the
//! snapshot's B+tree file, and the receiver adopts it when it has applied more of group
//! 0's log than its own ([`Members::adopt`] after the install; [`Members::adopt_now`]
//! at start, when a crash came between the install and the adoption). The leader's
//! table may be newer than the snapshot's index (its `applied` is later): the entries
//! between are then skipped as replays, which leaves the same table.
//!
//! Who writes the file: group 0's driver (applies and adoptions after an install, one
//! at a time) and the node's start. Applying a change writes it with blocking calls
//! under the lock (rare, and it must be durable before the apply completes); an
//! adoption after an install writes through `spawn_blocking`, off the executor.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::entry::MemberChange;
use crate::proto::{MemberInfo, MemberListResponse};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberTable {
    pub members: Vec<MemberInfo>,
    pub removed: Vec<u64>,
    pub next_id: u64,
    pub applied: u64,
    /// Bumped by every change (not persisted): lets shards notice one cheaply.
    pub version: u64,
}

/// The table and where it is persisted.
pub struct Members {
    pub table: Mutex<MemberTable>,
    path: PathBuf,
}

pub type SharedMembers = Arc<Members>;

/// The tree of a snapshot's B+tree file that holds the sender's member table (group 0).
pub const MEMBERS_TREE: &str = "corekv.members";
/// Its one key.
pub const MEMBERS_KEY: &[u8] = b"table";

/// Replaces `path` with `text` atomically: a temp file, fsync, rename, fsync of the
/// directory. Blocking.
fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path))
        .and_then(|_| std::fs::File::open(dir)?.sync_all())
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

impl MemberTable {
    /// The table as text (the `members` file's format; also what a snapshot carries).
    pub fn encode(&self) -> String {
        let mut s = format!(
            "applied={}\nnext_id={}\nremoved=",
            self.applied, self.next_id
        );
        let removed: Vec<String> = self.removed.iter().map(|r| r.to_string()).collect();
        s.push_str(&removed.join(","));
        s.push('\n');
        for m in &self.members {
            s.push_str(&format!(
                "member={},{},{},{},{},{}\n",
                m.node_id,
                u8::from(m.learner),
                m.peer_port_base,
                m.client_port_base,
                m.host,
                m.name
            ));
        }
        s
    }

    /// Parses [`MemberTable::encode`]'s text; `origin` names where it came from in
    /// errors.
    pub fn decode(text: &str, origin: &str) -> Result<MemberTable, String> {
        let bad = |line: &str| format!("{origin}: bad line '{line}'");
        let mut t = MemberTable::default();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once('=').ok_or_else(|| bad(line))?;
            match k {
                "applied" => t.applied = v.parse().map_err(|_| bad(line))?,
                "next_id" => t.next_id = v.parse().map_err(|_| bad(line))?,
                "removed" => {
                    for r in v.split(',').filter(|r| !r.is_empty()) {
                        t.removed.push(r.parse().map_err(|_| bad(line))?);
                    }
                }
                "member" => {
                    let f: Vec<&str> = v.splitn(6, ',').collect();
                    if f.len() != 6 {
                        return Err(bad(line));
                    }
                    t.members.push(MemberInfo {
                        node_id: f[0].parse().map_err(|_| bad(line))?,
                        learner: f[1] == "1",
                        peer_port_base: f[2].parse().map_err(|_| bad(line))?,
                        client_port_base: f[3].parse().map_err(|_| bad(line))?,
                        host: f[4].to_string(),
                        name: f[5].to_string(),
                    });
                }
                _ => return Err(bad(line)),
            }
        }
        Ok(t)
    }

    /// Applies the change of group 0's entry `index`. An invalid change (unknown
    /// node, ...) changes nothing and says why; either way `applied` moves to `index`.
    pub fn apply(&mut self, index: u64, change: &MemberChange) -> Result<(), String> {
        assert!(index > self.applied, "member change {index} applied twice");
        self.applied = index;
        self.version += 1;
        match change {
            MemberChange::Add(a) => {
                if self.members.iter().any(|m| m.name == a.name) {
                    return Err(format!("a member named '{}' exists", a.name));
                }
                let id = self.next_id.max(1);
                self.next_id = id + 1;
                self.members.push(MemberInfo {
                    node_id: id,
                    name: a.name.clone(),
                    host: a.host.clone(),
                    peer_port_base: a.peer_port_base,
                    client_port_base: a.client_port_base,
                    learner: a.learner,
                });
                Ok(())
            }
            MemberChange::Promote(id) => match self.members.iter_mut().find(|m| m.node_id == *id) {
                Some(m) => {
                    m.learner = false;
                    Ok(())
                }
                None => Err(format!("no member {id}")),
            },
            MemberChange::Remove(id) => {
                let before = self.members.len();
                self.members.retain(|m| m.node_id != *id);
                if self.members.len() == before {
                    return Err(format!("no member {id}"));
                }
                if self.members.iter().all(|m| m.learner) {
                    return Err(format!("removing {id} would leave no voter"));
                }
                self.removed.push(*id);
                Ok(())
            }
        }
    }

    pub fn list(&self) -> MemberListResponse {
        MemberListResponse {
            members: self.members.clone(),
        }
    }

    pub fn is_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }
}

impl Members {
    /// Loads `<data-dir>/members`, or starts from `initial` (the `--initial-cluster`
    /// members) when there is none yet.
    pub fn open(data_dir: &Path, initial: Vec<MemberInfo>) -> Result<SharedMembers, String> {
        let path = data_dir.join("members");
        let table = match std::fs::read_to_string(&path) {
            Ok(text) => MemberTable::decode(&text, &path.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MemberTable {
                next_id: initial.iter().map(|m| m.node_id).max().unwrap_or(0) + 1,
                members: initial,
                ..MemberTable::default()
            },
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        Ok(Arc::new(Members {
            table: Mutex::new(table),
            path,
        }))
    }

    pub fn snapshot(&self) -> MemberTable {
        self.table.lock().expect("member table lock").clone()
    }

    /// Whether `node_id` was removed from the cluster (without copying the table: every
    /// request asks).
    pub fn is_removed(&self, node_id: u64) -> bool {
        self.table
            .lock()
            .expect("member table lock")
            .is_removed(node_id)
    }

    /// Applies and persists a change (see [`MemberTable::apply`]); `Ok(None)` when the
    /// entry was applied before (a replay).
    pub fn apply(
        &self,
        index: u64,
        change: &MemberChange,
    ) -> Result<Option<Result<MemberListResponse, String>>, String> {
        let mut t = self.table.lock().expect("member table lock");
        if index <= t.applied {
            return Ok(None);
        }
        let outcome = t.apply(index, change);
        write_atomically(&self.path, &t.encode())?;
        Ok(Some(outcome.map(|_| t.list())))
    }

    /// Takes `newer` in place of the table when it has applied more of group 0's log
    /// (`false`: ours is as new, nothing changes), under the lock; the text to persist.
    fn replace_if_newer(&self, newer: MemberTable) -> Option<String> {
        let mut t = self.table.lock().expect("member table lock");
        if newer.applied <= t.applied {
            return None;
        }
        let version = t.version + 1;
        *t = MemberTable { version, ..newer };
        Some(t.encode())
    }

    /// Adopts the table a snapshot of group 0 carried when it is newer than ours, and
    /// persists it off the executor. Called by group 0's driver only (the file's one
    /// writer while the node runs). Returns whether it was adopted.
    pub async fn adopt(&self, newer: MemberTable) -> Result<bool, String> {
        let Some(text) = self.replace_if_newer(newer) else {
            return Ok(false);
        };
        let path = self.path.clone();
        glommio::executor()
            .spawn_blocking(move || write_atomically(&path, &text))
            .await?;
        Ok(true)
    }

    /// [`Members::adopt`] with blocking writes, for the node's start (before it serves).
    pub fn adopt_now(&self, newer: MemberTable) -> Result<bool, String> {
        let Some(text) = self.replace_if_newer(newer) else {
            return Ok(false);
        };
        write_atomically(&self.path, &text)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::MemberAddRequest;

    fn m(id: u64, learner: bool) -> MemberInfo {
        MemberInfo {
            node_id: id,
            name: format!("n{id}"),
            host: "127.0.0.1".into(),
            peer_port_base: 100 + id as u16,
            client_port_base: 200 + id as u16,
            learner,
        }
    }

    #[test]
    fn changes_persist_and_replays_are_skipped() {
        let dir = std::env::temp_dir().join(format!("corekv-members-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ms = Members::open(&dir, vec![m(1, false), m(2, false)]).unwrap();
        let add = MemberChange::Add(MemberAddRequest {
            name: "n3".into(),
            host: "127.0.0.1".into(),
            peer_port_base: 103,
            client_port_base: 203,
            learner: true,
        });
        let l = ms.apply(5, &add).unwrap().unwrap().unwrap();
        assert_eq!(l.members[2], m(3, true));
        assert_eq!(ms.apply(5, &add).unwrap(), None, "replay skipped");
        assert!(
            ms.apply(6, &add).unwrap().unwrap().is_err(),
            "same name twice"
        );
        ms.apply(7, &MemberChange::Promote(3))
            .unwrap()
            .unwrap()
            .unwrap();
        ms.apply(8, &MemberChange::Remove(1))
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(ms
            .apply(9, &MemberChange::Remove(1))
            .unwrap()
            .unwrap()
            .is_err());
        let again = Members::open(&dir, vec![]).unwrap();
        let mut want = ms.snapshot();
        want.version = 0;
        assert_eq!(again.snapshot(), want);
        assert_eq!(again.snapshot().members, vec![m(2, false), m(3, false)]);
        assert!(again.snapshot().is_removed(1));
        assert_eq!(again.snapshot().next_id, 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A node that installs a snapshot of group 0 takes the table it carries only when
    /// that table has applied more of group 0's log; the adopted table is persisted,
    /// and later entries at or below its index are skipped as replays.
    #[test]
    fn a_newer_carried_table_is_adopted_and_persisted() {
        let dir = std::env::temp_dir().join(format!("corekv-adopt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ms = Members::open(&dir, vec![m(1, false), m(2, false)]).unwrap();
        ms.apply(3, &MemberChange::Promote(2)).unwrap();
        // The leader's table: n3 added at index 10 (compacted away from the log).
        let mut leader = ms.snapshot();
        leader
            .apply(
                10,
                &MemberChange::Add(MemberAddRequest {
                    name: "n3".into(),
                    host: "127.0.0.1".into(),
                    peer_port_base: 103,
                    client_port_base: 203,
                    learner: true,
                }),
            )
            .unwrap();
        let carried = MemberTable::decode(&leader.encode(), "test").unwrap();
        assert_eq!(carried.members, leader.members);
        // An older table changes nothing.
        let mut older = carried.clone();
        older.applied = 2;
        assert!(!ms.adopt_now(older).unwrap());
        assert_eq!(ms.snapshot().members.len(), 2);
        let before = ms.snapshot().version;
        assert!(ms.adopt_now(carried.clone()).unwrap());
        assert!(ms.snapshot().version > before, "shards notice the change");
        assert_eq!(ms.snapshot().members, leader.members);
        assert!(!ms.adopt_now(carried).unwrap(), "same index: nothing new");
        // The entry at 10 arrives again from the log: a replay.
        let add3 = MemberChange::Promote(3);
        assert_eq!(ms.apply(10, &add3).unwrap(), None);
        let again = Members::open(&dir, vec![]).unwrap();
        assert_eq!(again.snapshot().members, leader.members);
        assert_eq!(
            (again.snapshot().applied, again.snapshot().next_id),
            (10, 4)
        );
        assert!(MemberTable::decode("member=1,0", "test").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
