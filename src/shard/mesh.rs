//! Cross-shard calls inside one node: a request that reached the wrong shard, the parts
//! of a range over several groups, and Status are sent to the owning shard over bounded
//! channels (one inbox per shard) and answered the same way. This is the slow path: a hop
//! between cores costs tens of microseconds, which is why the shard-aware client sends
//! each request straight to its group's shard.

use std::cell::Cell;

use super::group::Reply;
use super::wait::WaitTable;
use crate::proto::{ErrorCode, ProtoError, Request};

/// Inbox capacity of each shard.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

/// What one shard asks another.
#[derive(Debug)]
pub enum Call {
    /// Serve this request as its group's shard.
    Execute(Request),
    /// Report the group's status (answered as a `Status` response with one group).
    Status,
}

/// A message between two shards of one node.
#[derive(Debug)]
pub enum MeshMsg {
    Call { from: u32, token: u64, call: Call },
    Reply { token: u64, reply: Reply },
}

/// Creates the inboxes of `shards` shards: element `s` is (every shard's sender to s,
/// s's receiver).
pub fn channels(shards: u32) -> Vec<(flume::Sender<MeshMsg>, flume::Receiver<MeshMsg>)> {
    (0..shards)
        .map(|_| flume::bounded(MESH_CHANNEL_CAPACITY))
        .collect()
}

/// One shard's end of the mesh.
pub struct Mesh {
    pub shard: u32,
    peers: Vec<flume::Sender<MeshMsg>>,
    pending: WaitTable<Reply>,
    next_token: Cell<u64>,
}

impl Mesh {
    pub fn new(shard: u32, peers: Vec<flume::Sender<MeshMsg>>) -> Mesh {
        Mesh {
            shard,
            peers,
            pending: WaitTable::new(usize::MAX),
            next_token: Cell::new(1),
        }
    }

    /// Sends `call` to shard `to` and waits for its answer.
    pub async fn call(&self, to: u32, call: Call) -> Reply {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        let waiter = self
            .pending
            .register(token)
            .expect("the mesh's wait table is unbounded");
        let msg = MeshMsg::Call {
            from: self.shard,
            token,
            call,
        };
        if self.peers[to as usize].send_async(msg).await.is_err() {
            self.pending.cancel(token);
            return Err(ProtoError::new(
                ErrorCode::Unavailable,
                format!("shard {to} has stopped"),
            ));
        }
        waiter.await.unwrap_or_else(|| {
            Err(ProtoError::new(
                ErrorCode::Unavailable,
                format!("shard {to} stopped before answering"),
            ))
        })
    }

    /// Delivers a reply that arrived in this shard's inbox.
    pub fn deliver(&self, token: u64, reply: Reply) {
        self.pending.trigger(token, reply);
    }

    /// Answers a call from shard `to`.
    pub async fn reply(&self, to: u32, token: u64, reply: Reply) {
        // A stopped peer no longer waits for anything: nothing to do then.
        let _ = self.peers[to as usize]
            .send_async(MeshMsg::Reply { token, reply })
            .await;
    }
}
