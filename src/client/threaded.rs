//! A `Send + Clone` handle to a [`Client`] running on its own thread.
//!
//! The thread runs one unpinned glommio executor (1 MiB of io memory). Requests travel to
//! it over one bounded flume channel (capacity `ClientConfig::channel_capacity`); each
//! carries an [`AnswerTx`]: a one-use slot (one allocation, a mutex that is never
//! contended for long) that the executor fills and that wakes the async caller's task or
//! the blocking caller's thread. The executor runs at most that many requests at once (a
//! semaphore), so memory stays bounded whatever the callers do. The thread ends when the
//! last handle is dropped (the drop joins it).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use glommio::{LocalExecutorBuilder, Placement};

use super::conn::PeerInfo;
use super::{
    into_compact, into_delete, into_put, into_range, into_status, into_topology, into_txn, Client,
    ClientConfig, ClientError, Reply,
};
use crate::mvcc::{
    CompactRequest, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    TxnRequest, TxnResponse,
};
use crate::proto::{Op, RangeResult, Response, ResponseHeader, StatusResponse, TopologyResponse};

type Outcome = Result<Response, ClientError>;

// The handle must cross threads and runtimes.
const _: fn() = || {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<ThreadedClient>();
};
type Job = (Op, AnswerTx);

/// The answer to one request, shared by its caller and the client thread.
struct Answer {
    slot: Mutex<AnswerSlot>,
    /// Signalled for a blocking caller (only when one waits: `blocking_waiter`).
    ready: Condvar,
}

#[derive(Default)]
struct AnswerSlot {
    outcome: Option<Outcome>,
    /// Set once: answered, or the sender was dropped unanswered (the client is gone).
    done: bool,
    waker: Option<Waker>,
    blocking_waiter: bool,
}

/// The client thread's end: [`AnswerTx::send`] once; dropping it unsent answers
/// [`ClientError::Closed`].
struct AnswerTx(Arc<Answer>);

/// The caller's end: a future, or [`AnswerRx::wait`] for blocking callers.
struct AnswerRx(Arc<Answer>);

fn answer_pair() -> (AnswerTx, AnswerRx) {
    let a = Arc::new(Answer {
        slot: Mutex::new(AnswerSlot::default()),
        ready: Condvar::new(),
    });
    (AnswerTx(a.clone()), AnswerRx(a))
}

impl AnswerTx {
    fn send(self, outcome: Outcome) {
        self.finish(Some(outcome));
    }

    fn finish(&self, outcome: Option<Outcome>) {
        let (waker, notify) = {
            let mut s = self.0.slot.lock().unwrap_or_else(|p| p.into_inner());
            if s.done {
                return;
            }
            s.done = true;
            s.outcome = outcome;
            (s.waker.take(), s.blocking_waiter)
        };
        if notify {
            self.0.ready.notify_one();
        }
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for AnswerTx {
    fn drop(&mut self) {
        self.finish(None);
    }
}

impl AnswerRx {
    fn take(s: &mut AnswerSlot) -> Outcome {
        s.outcome.take().unwrap_or(Err(ClientError::Closed))
    }

    /// Blocks the calling thread until the answer is there.
    fn wait(self) -> Outcome {
        let mut s = self.0.slot.lock().unwrap_or_else(|p| p.into_inner());
        s.blocking_waiter = true;
        while !s.done {
            s = self.0.ready.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        Self::take(&mut s)
    }
}

impl Future for AnswerRx {
    type Output = Outcome;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut s = self.0.slot.lock().unwrap_or_else(|p| p.into_inner());
        if s.done {
            return Poll::Ready(Self::take(&mut s));
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

struct Shared {
    tx: Option<flume::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    info: PeerInfo,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the channel ends the executor's loop; then wait for the thread.
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A client usable from any thread and any async runtime. Clones share one background
/// client (one connection pool).
#[derive(Clone)]
pub struct ThreadedClient {
    shared: Arc<Shared>,
}

impl ThreadedClient {
    /// Starts the background thread and connects (blocking until connected or failed).
    pub fn connect(cfg: ClientConfig) -> Result<ThreadedClient, ClientError> {
        let (ready_rx, shared) = Self::start(cfg)?;
        let ready = ready_rx.recv().map_err(|_| ClientError::Closed);
        Self::finish_start(ready, shared)
    }

    /// [`ThreadedClient::connect`] for async callers (any runtime).
    pub async fn connect_async(cfg: ClientConfig) -> Result<ThreadedClient, ClientError> {
        let (ready_rx, shared) = Self::start(cfg)?;
        let ready = ready_rx.recv_async().await.map_err(|_| ClientError::Closed);
        Self::finish_start(ready, shared)
    }

    #[allow(clippy::type_complexity)]
    fn start(
        cfg: ClientConfig,
    ) -> Result<(flume::Receiver<Result<PeerInfo, ClientError>>, Shared), ClientError> {
        let cap = cfg.channel_capacity.max(1);
        let (tx, rx) = flume::bounded::<Job>(cap);
        let (ready_tx, ready_rx) = flume::bounded(1);
        let thread = std::thread::Builder::new()
            .name("corekv-client".into())
            .spawn(move || {
                let ex = match LocalExecutorBuilder::new(Placement::Unbound)
                    .io_memory(1 << 20)
                    .name("corekv-client")
                    .make()
                {
                    Ok(ex) => ex,
                    Err(e) => {
                        let _ = ready_tx.send(Err(ClientError::Connect {
                            addr: String::new(),
                            reason: format!("starting the client's glommio executor: {e}"),
                        }));
                        return;
                    }
                };
                ex.run(serve(cfg, rx, ready_tx, cap));
            })
            .map_err(|e| ClientError::Connect {
                addr: String::new(),
                reason: format!("spawning the client thread: {e}"),
            })?;
        Ok((
            ready_rx,
            Shared {
                tx: Some(tx),
                thread: Some(thread),
                info: PeerInfo {
                    node_id: 0,
                    cluster_id: 0,
                    shard: 0,
                    shard_count: 0,
                },
            },
        ))
    }

    fn finish_start(
        ready: Result<Result<PeerInfo, ClientError>, ClientError>,
        mut shared: Shared,
    ) -> Result<ThreadedClient, ClientError> {
        // On error `shared` drops here: the channel closes and the thread is joined.
        shared.info = ready??;
        Ok(ThreadedClient {
            shared: Arc::new(shared),
        })
    }

    /// The bootstrap node's handshake.
    pub fn bootstrap_info(&self) -> PeerInfo {
        self.shared.info
    }

    fn sender(&self) -> &flume::Sender<Job> {
        self.shared.tx.as_ref().expect("sender lives until drop")
    }

    /// Sends `op` and waits for its answer (async, any runtime).
    pub async fn execute(&self, op: Op) -> Outcome {
        let (tx, rx) = answer_pair();
        self.sender()
            .send_async((op, tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await
    }

    /// Sends `op` and waits for its answer, blocking the calling thread.
    pub fn execute_blocking(&self, op: Op) -> Outcome {
        let (tx, rx) = answer_pair();
        self.sender()
            .send((op, tx))
            .map_err(|_| ClientError::Closed)?;
        rx.wait()
    }

    /// The same operations as blocking calls.
    pub fn blocking(&self) -> BlockingClient<'_> {
        BlockingClient(self)
    }

    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<Reply<PutResponse>, ClientError> {
        into_put(self.execute(Op::Put(put_req(key, value))).await?)
    }
    pub async fn put_with(&self, req: PutRequest) -> Result<Reply<PutResponse>, ClientError> {
        into_put(self.execute(Op::Put(req)).await?)
    }
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Reply<RangeResult>, ClientError> {
        into_range(self.execute(Op::Range(get_req(key))).await?)
    }
    pub async fn range(&self, req: RangeRequest) -> Result<Reply<RangeResult>, ClientError> {
        into_range(self.execute(Op::Range(req)).await?)
    }
    pub async fn delete(
        &self,
        key: impl Into<Vec<u8>>,
    ) -> Result<Reply<DeleteRangeResponse>, ClientError> {
        into_delete(self.execute(Op::DeleteRange(del_req(key))).await?)
    }
    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<Reply<DeleteRangeResponse>, ClientError> {
        into_delete(self.execute(Op::DeleteRange(req)).await?)
    }
    pub async fn txn(&self, req: TxnRequest) -> Result<Reply<TxnResponse>, ClientError> {
        into_txn(self.execute(Op::Txn(req)).await?)
    }
    pub async fn compact(&self, group: u32, revision: i64) -> Result<ResponseHeader, ClientError> {
        into_compact(self.execute(compact_op(group, revision)).await?)
    }
    pub async fn status(&self) -> Result<Reply<StatusResponse>, ClientError> {
        into_status(self.execute(Op::Status).await?)
    }
    pub async fn topology(&self) -> Result<Reply<TopologyResponse>, ClientError> {
        into_topology(self.execute(Op::Topology).await?)
    }
}

fn put_req(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..PutRequest::default()
    }
}
fn get_req(key: impl Into<Vec<u8>>) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        ..RangeRequest::default()
    }
}
fn del_req(key: impl Into<Vec<u8>>) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: key.into(),
        ..DeleteRangeRequest::default()
    }
}
fn compact_op(group: u32, revision: i64) -> Op {
    Op::Compact {
        group,
        request: CompactRequest { revision },
    }
}

/// Blocking view of a [`ThreadedClient`]: every call blocks the calling thread until the
/// answer arrives. Do not use it from inside an async task.
pub struct BlockingClient<'a>(&'a ThreadedClient);

impl BlockingClient<'_> {
    pub fn execute(&self, op: Op) -> Outcome {
        self.0.execute_blocking(op)
    }
    pub fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<Reply<PutResponse>, ClientError> {
        into_put(self.execute(Op::Put(put_req(key, value)))?)
    }
    pub fn put_with(&self, req: PutRequest) -> Result<Reply<PutResponse>, ClientError> {
        into_put(self.execute(Op::Put(req))?)
    }
    pub fn get(&self, key: impl Into<Vec<u8>>) -> Result<Reply<RangeResult>, ClientError> {
        into_range(self.execute(Op::Range(get_req(key)))?)
    }
    pub fn range(&self, req: RangeRequest) -> Result<Reply<RangeResult>, ClientError> {
        into_range(self.execute(Op::Range(req))?)
    }
    pub fn delete(
        &self,
        key: impl Into<Vec<u8>>,
    ) -> Result<Reply<DeleteRangeResponse>, ClientError> {
        into_delete(self.execute(Op::DeleteRange(del_req(key)))?)
    }
    pub fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<Reply<DeleteRangeResponse>, ClientError> {
        into_delete(self.execute(Op::DeleteRange(req))?)
    }
    pub fn txn(&self, req: TxnRequest) -> Result<Reply<TxnResponse>, ClientError> {
        into_txn(self.execute(Op::Txn(req))?)
    }
    pub fn compact(&self, group: u32, revision: i64) -> Result<ResponseHeader, ClientError> {
        into_compact(self.execute(compact_op(group, revision))?)
    }
    pub fn status(&self) -> Result<Reply<StatusResponse>, ClientError> {
        into_status(self.execute(Op::Status)?)
    }
    pub fn topology(&self) -> Result<Reply<TopologyResponse>, ClientError> {
        into_topology(self.execute(Op::Topology)?)
    }
}

/// The background executor's main task: connect, report, then serve jobs until every
/// handle is gone.
async fn serve(
    cfg: ClientConfig,
    rx: flume::Receiver<Job>,
    ready: flume::Sender<Result<PeerInfo, ClientError>>,
    max_running: usize,
) {
    let client = match Client::connect(cfg).await {
        Ok(c) => {
            let _ = ready.send(Ok(c.bootstrap_info()));
            c
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let running = std::rc::Rc::new(glommio::sync::Semaphore::new(max_running as u64));
    while let Ok((op, reply)) = rx.recv_async().await {
        let Ok(permit) = running.clone().acquire_static_permit(1).await else {
            return;
        };
        let c = client.clone();
        glommio::spawn_local(async move {
            let outcome = c.execute(op).await;
            // The caller may have given up (dropped its future): nothing to do then.
            reply.send(outcome);
            drop(permit);
        })
        .detach();
    }
}

#[cfg(test)]
mod answer_tests {
    use super::*;

    fn ok() -> Outcome {
        Err(ClientError::Protocol("the answer".into()))
    }

    #[test]
    fn an_answer_reaches_an_async_waiter_once() {
        let (tx, rx) = answer_pair();
        let waiter = std::thread::spawn(move || futures_lite::future::block_on(rx));
        tx.send(ok());
        assert_eq!(waiter.join().unwrap(), ok());
    }

    #[test]
    fn an_answer_sent_before_the_wait_is_kept() {
        let (tx, rx) = answer_pair();
        tx.send(ok());
        assert_eq!(futures_lite::future::block_on(rx), ok());
        let (tx, rx) = answer_pair();
        tx.send(ok());
        assert_eq!(rx.wait(), ok());
    }

    #[test]
    fn a_blocking_waiter_is_woken_from_another_thread() {
        let (tx, rx) = answer_pair();
        let sender = std::thread::spawn(move || tx.send(ok()));
        assert_eq!(rx.wait(), ok());
        sender.join().unwrap();
    }

    #[test]
    fn dropping_the_sender_unanswered_answers_closed() {
        let (tx, rx) = answer_pair();
        drop(tx);
        assert_eq!(futures_lite::future::block_on(rx), Err(ClientError::Closed));
        let (tx, rx) = answer_pair();
        let dropper = std::thread::spawn(move || drop(tx));
        assert_eq!(rx.wait(), Err(ClientError::Closed));
        dropper.join().unwrap();
    }
}
