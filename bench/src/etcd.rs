//! The etcd v3 target, through the `etcd-client` crate (gRPC over tonic).
//!
//! Each [`connect`] call builds its own gRPC channel (its own HTTP/2 connection to each
//! endpoint); requests are balanced over the endpoints, so on a cluster followers forward
//! writes to the leader as they do for any etcd client.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp};

use crate::target::{Consistency, OpError, Target};

/// One connection to an etcd cluster.
#[derive(Clone)]
pub struct EtcdTarget {
    kv: KvClient,
}

/// Opens one connection to `endpoints` (`host:port` or `http://host:port`).
pub async fn connect(endpoints: &[String], timeout: Duration) -> Result<EtcdTarget, String> {
    let options = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout);
    let client = Client::connect(endpoints, Some(options))
        .await
        .map_err(|e| format!("etcd: connect to {endpoints:?}: {e}"))?;
    Ok(EtcdTarget {
        kv: client.kv_client(),
    })
}

fn failed(op: &str, e: etcd_client::Error) -> OpError {
    OpError::Failed(format!("etcd {op}: {e}"))
}

impl Target for EtcdTarget {
    fn name(&self) -> &'static str {
        "etcd"
    }

    async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), OpError> {
        self.kv
            .put(key, value, None)
            .await
            .map(drop)
            .map_err(|e| failed("put", e))
    }

    async fn get(&mut self, key: &[u8], consistency: Consistency) -> Result<bool, OpError> {
        let options = match consistency {
            Consistency::Linearizable => None,
            Consistency::Serializable => Some(GetOptions::new().with_serializable()),
        };
        let resp = self
            .kv
            .get(key, options)
            .await
            .map_err(|e| failed("get", e))?;
        Ok(!resp.kvs().is_empty())
    }

    async fn range_prefix(&mut self, prefix: &[u8]) -> Result<u64, OpError> {
        let resp = self
            .kv
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| failed("range", e))?;
        Ok(resp.kvs().len() as u64)
    }

    async fn compare_and_swap(
        &mut self,
        key: &[u8],
        expected: &[u8],
        new: &[u8],
    ) -> Result<bool, OpError> {
        let txn = Txn::new()
            .when([Compare::value(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::put(key, new, None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.kv.txn(txn).await.map_err(|e| failed("txn", e))?;
        Ok(resp.succeeded())
    }
}
