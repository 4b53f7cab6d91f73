//! The writeback scheduler: one thread per mounted filesystem, the only one that commits
//! while the filesystem is mounted (mount and unmount commit themselves). It commits the
//! open delta when it has been open for the commit interval, and on request: fsync/sync
//! callers, writers past the dirty limit and operations under space pressure send a
//! `Commit` over the channel and wait for the answer. Every request already queued when a
//! commit starts is answered by that one commit (group commit).

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};

use super::Shared;
use crate::{Errno, Result};

/// Messages to the scheduler.
#[derive(Debug)]
pub(crate) enum Request {
    Stop,
    /// Commit the open delta and answer when it is durable.
    Commit(Sender<std::result::Result<(), Errno>>),
    /// The commit interval changed: wait with the new one from now on.
    Wake,
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
    tx.send(Request::Commit(reply_tx)).map_err(|_| Errno::Io)?;
    match reply_rx.recv() {
        Ok(answer) => answer.map_err(Into::into),
        Err(_) => Err(Errno::Io.into()),
    }
}

/// Commits once for every request queued now; answers all of them. Returns whether a Stop
/// was among them.
fn serve(
    shared: &Shared,
    first: Sender<std::result::Result<(), Errno>>,
    rx: &Receiver<Request>,
) -> bool {
    let mut replies = vec![first];
    let mut stop = false;
    while let Ok(req) = rx.try_recv() {
        match req {
            Request::Commit(r) => replies.push(r),
            Request::Stop => stop = true,
            Request::Wake => {}
        }
    }
    let answer = shared.commit_open().map_err(|e| e.errno());
    if let Err(e) = &answer {
        crate::events::report(
            crate::events::Level::Error,
            &format!("commit failed: {e:?}"),
        );
    }
    for r in replies {
        let _ = r.send(answer);
    }
    stop
}

/// Starts the scheduler for `shared`.
pub(crate) fn start(shared: Arc<Shared>) -> std::io::Result<Handle> {
    let (tx, rx) = bounded::<Request>(QUEUE_MAX);
    let thread = std::thread::Builder::new()
        .name("tuxfs-writeback".into())
        .spawn(move || {
            loop {
                let interval = std::time::Duration::from_millis(
                    shared
                        .commit_interval_ms
                        .load(std::sync::atomic::Ordering::Relaxed),
                );
                match rx.recv_timeout(interval) {
                    Ok(Request::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                    Ok(Request::Wake) => {}
                    Ok(Request::Commit(reply)) => {
                        if serve(&shared, reply, &rx) {
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
