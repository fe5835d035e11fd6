//! The corekv target, through the project's own client (`corekv::client`) over the
//! binary protocol.
//!
//! `ThreadedClient` is the runtime-neutral handle: each one owns a background thread
//! running a glommio executor that keeps one pipelined connection per shard and routes
//! each key to its group's shard (following `NotLeader` to the group's leader node in a
//! cluster). The driver's "connections" map onto at most [`CLIENT_THREADS_MAX`] such
//! clients, and no more than the client's CPUs (`--client-threads`), round-robin: more
//! client threads than that would only fight over the client's CPU (context switches per
//! batch), while each one already pipelines every request it is given.

use std::time::Duration;

use corekv::client::{ClientConfig, ClientError, ThreadedClient};
use corekv::mvcc::{
    Compare, CompareOp, CompareTarget, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use crate::target::{Consistency, OpError, Target};

/// Most background client threads one bench process starts.
pub const CLIENT_THREADS_MAX: usize = 2;

/// One handle onto a corekv node or cluster.
#[derive(Clone)]
pub struct CorekvTarget {
    client: ThreadedClient,
}

/// Opens `conns` handles sharing at most `threads` (and [`CLIENT_THREADS_MAX`]) clients.
pub async fn connect_many(
    endpoints: &[String],
    timeout: Duration,
    conns: usize,
    threads: usize,
) -> Result<Vec<CorekvTarget>, String> {
    let mut clients = Vec::new();
    for _ in 0..conns.min(threads).clamp(1, CLIENT_THREADS_MAX) {
        let cfg = ClientConfig {
            connect_timeout: timeout,
            request_timeout: timeout,
            ..ClientConfig::with_endpoints(endpoints.iter().cloned())
        };
        let client = ThreadedClient::connect_async(cfg)
            .await
            .map_err(|e| format!("corekv: connect to {endpoints:?}: {e}"))?;
        clients.push(client);
    }
    Ok((0..conns.max(1))
        .map(|i| CorekvTarget {
            client: clients[i % clients.len()].clone(),
        })
        .collect())
}

fn failed(op: &str, e: ClientError) -> OpError {
    match e {
        ClientError::Timeout { .. } => OpError::Timeout,
        e => OpError::Failed(format!("corekv {op}: {e}")),
    }
}

impl Target for CorekvTarget {
    fn name(&self) -> &'static str {
        "corekv"
    }

    async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), OpError> {
        self.client
            .put(key.to_vec(), value.to_vec())
            .await
            .map(drop)
            .map_err(|e| failed("put", e))
    }

    async fn get(&mut self, key: &[u8], consistency: Consistency) -> Result<bool, OpError> {
        let req = RangeRequest {
            key: key.to_vec(),
            serializable: consistency == Consistency::Serializable,
            ..Default::default()
        };
        let r = self.client.range(req).await.map_err(|e| failed("get", e))?;
        Ok(!r.body.range.kvs.is_empty())
    }

    async fn range_prefix(&mut self, prefix: &[u8]) -> Result<u64, OpError> {
        let req = RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            ..Default::default()
        };
        let r = self
            .client
            .range(req)
            .await
            .map_err(|e| failed("range", e))?;
        Ok(r.body.range.kvs.len() as u64)
    }

    async fn compare_and_swap(
        &mut self,
        key: &[u8],
        expected: &[u8],
        new: &[u8],
    ) -> Result<bool, OpError> {
        let txn = TxnRequest {
            compare: vec![Compare {
                op: CompareOp::Equal,
                target: CompareTarget::Value(expected.to_vec()),
                key: key.to_vec(),
                range_end: vec![],
            }],
            success: vec![RequestOp::Put(PutRequest {
                key: key.to_vec(),
                value: new.to_vec(),
                ..Default::default()
            })],
            failure: vec![RequestOp::Range(RangeRequest {
                key: key.to_vec(),
                ..Default::default()
            })],
        };
        let r = self.client.txn(txn).await.map_err(|e| failed("txn", e))?;
        Ok(r.body.succeeded)
    }
}

/// The smallest key after every key with this prefix (etcd's `--prefix` rule).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(prefix_end(b"abc"), b"abd");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
