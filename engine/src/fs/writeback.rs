//! The writeback scheduler: one thread per mounted filesystem, the only one that commits
//! while the filesystem is mounted (mount and unmount commit themselves). It commits the
//! open delta when it has been open for the commit interval, and on request: fsync/sync
//! callers, writers past the dirty limit and operations under space pressure send a
//! `Commit` over the channel and wait for the answer, or (`fsync_then`) leave a callback
//! that this thread runs when the answer is known, so the caller's thread is not parked.
//! Every request already queued when a commit starts is answered by that one commit (group
//! commit); a batch whose every request names a delta already durable commits nothing.

use crate::sync::Arc;
use crate::sync::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};

use super::Shared;
use crate::{Errno, Result};

/// Messages to the scheduler.
#[derive(Debug)]
pub(crate) enum Request {
    Stop,
    /// Commit the open delta and answer when it is durable.
    Commit(Answer),
    /// The commit interval changed: wait with the new one from now on.
    Wake,
    /// Answer when delta `target` is durable, committing the open delta if it is not yet.
    CommitUpTo {
        target: u64,
        answer: Answer,
    },
}

/// Called on the writeback thread with a commit's outcome. It must not block for long:
/// other requests wait behind it.
pub(crate) type Done = Box<dyn FnOnce(std::result::Result<(), Errno>) + Send>;

/// Where a commit's outcome goes: a waiting caller, or a callback.
pub(crate) enum Answer {
    Channel(Sender<std::result::Result<(), Errno>>),
    Callback(Done),
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Answer::Channel(_) => "Answer::Channel",
            Answer::Callback(_) => "Answer::Callback",
        })
    }
}

impl Answer {
    fn send(self, outcome: std::result::Result<(), Errno>) {
        match self {
            Answer::Channel(tx) => {
                let _ = tx.send(outcome);
            }
            Answer::Callback(done) => done(outcome),
        }
    }
}

/// Requests the channel holds before senders wait: bounds memory under a storm of fsyncs.
const QUEUE_MAX: usize = 1024;

/// The running scheduler.
#[derive(Debug)]
pub(crate) struct Handle {
    tx: Sender<Request>,
    thread: Option<JoinHandle<()>>,
}

impl Handle {
    /// A sender for commit requests.
    pub(crate) fn sender(&self) -> Sender<Request> {
        self.tx.clone()
    }

    /// Stops the thread and waits for it.
    pub(crate) fn stop(mut self) {
        let _ = self.tx.send(Request::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Wakes the scheduler so it waits with the current commit interval (a full queue means it
/// is busy and reads the interval again soon anyway).
pub(crate) fn wake(tx: &Sender<Request>) {
    let _ = tx.try_send(Request::Wake);
}

/// Asks the scheduler to commit the open delta and waits until it is durable.
pub(crate) fn request_commit(tx: &Sender<Request>) -> Result<()> {
    let (reply_tx, reply_rx) = bounded(1);
    tx.send(Request::Commit(Answer::Channel(reply_tx)))
        .map_err(|_| Errno::Io)?;
    match reply_rx.recv() {
        Ok(answer) => answer.map_err(Into::into),
        Err(_) => Err(Errno::Io.into()),
    }
}

/// Asks the scheduler to make delta `target` durable and returns at once; `done` runs on
/// the writeback thread with the outcome (EIO when the scheduler has stopped). Sending
/// waits only when the queue is full.
pub(crate) fn request_commit_then(tx: &Sender<Request>, target: u64, done: Done) {
    let request = Request::CommitUpTo {
        target,
        answer: Answer::Callback(done),
    };
    if let Err(crossbeam_channel::SendError(request)) = tx.send(request) {
        request.refuse();
    }
}

impl Request {
    /// Answers a request that will never be served with EIO.
    fn refuse(self) {
        match self {
            Request::Stop | Request::Wake => {}
            Request::Commit(answer) | Request::CommitUpTo { answer, .. } => {
                answer.send(Err(Errno::Io))
            }
        }
    }
}

/// Commits once for every request queued now; answers all of them. Returns whether a Stop
/// was among them.
fn serve(shared: &Shared, first: Request, rx: &Receiver<Request>) -> bool {
    let mut replies = Vec::new();
    let mut stop = false;
    // The newest delta some request needs durable; None when one needs the open delta.
    let mut needed = Some(0u64);
    for req in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
        match req {
            Request::Commit(r) => {
                needed = None;
                replies.push(r);
            }
            Request::CommitUpTo { target, answer } => {
                needed = needed.map(|n| n.max(target));
                replies.push(answer);
            }
            Request::Stop => stop = true,
            Request::Wake => {}
        }
    }
    let covered = needed.is_some_and(|n| {
        let st = shared.lock();
        st.durable_delta >= n && st.failed.is_none() && !st.unmounted
    });
    let answer = if covered {
        Ok(())
    } else {
        shared.commit_open().map_err(|e| e.errno())
    };
    if let Err(e) = &answer {
        crate::events::report(
            crate::events::Level::Error,
            &format!("commit failed: {e:?}"),
        );
    }
    for r in replies {
        r.send(answer);
    }
    stop
}

/// Starts the scheduler for `shared`.
pub(crate) fn start(shared: Arc<Shared>) -> std::io::Result<Handle> {
    let (tx, rx) = bounded::<Request>(QUEUE_MAX);
    let thread = thread::Builder::new()
        .name("tuxfs-writeback".into())
        .spawn(move || {
            loop {
                let interval = std::time::Duration::from_millis(
                    shared
                        .commit_interval_ms
                        .load(std::sync::atomic::Ordering::Relaxed),
                );
                match rx.recv_timeout(interval) {
                    Ok(Request::Stop) | Err(RecvTimeoutError::Disconnected) => {
                        // Whoever queued after the Stop is answered, not left waiting.
                        while let Ok(req) = rx.try_recv() {
                            req.refuse();
                        }
                        return;
                    }
                    Ok(Request::Wake) => {}
                    Ok(req) => {
                        if serve(&shared, req, &rx) {
                            while let Ok(req) = rx.try_recv() {
                                req.refuse();
                            }
                            return;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        if let Err(e) = shared.commit_open() {
                            crate::events::report(
                                crate::events::Level::Error,
                                &format!("background commit failed: {e}"),
                            );
                        }
                    }
                }
            }
        })?;
    Ok(Handle {
        tx,
        thread: Some(thread),
    })
}
