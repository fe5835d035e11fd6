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

impl MemberTable {
    fn encode(&self) -> String {
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

    fn decode(text: &str, path: &Path) -> Result<MemberTable, String> {
        let bad = |line: &str| format!("{}: bad line '{line}'", path.display());
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
            Ok(text) => MemberTable::decode(&text, &path)?,
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
        let tmp = self.path.with_extension("tmp");
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::write(&tmp, t.encode())
            .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|_| std::fs::rename(&tmp, &self.path))
            .and_then(|_| std::fs::File::open(dir)?.sync_all())
            .map_err(|e| format!("writing {}: {e}", self.path.display()))?;
        Ok(Some(outcome.map(|_| t.list())))
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
}
