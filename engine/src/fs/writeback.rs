//! The writeback scheduler: one thread per mounted filesystem that commits the open delta
//! when it has been open for the commit interval. Requests arrive over a channel.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{RecvTimeoutError, Sender, bounded};

use super::Shared;

/// Messages to the scheduler.
#[derive(Debug)]
enum Request {
    Stop,
}

/// The running scheduler.
#[derive(Debug)]
pub(crate) struct Handle {
    tx: Sender<Request>,
    thread: Option<JoinHandle<()>>,
}

impl Handle {
    /// Stops the thread and waits for it.
    pub(crate) fn stop(mut self) {
        let _ = self.tx.send(Request::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the scheduler for `shared`.
pub(crate) fn start(shared: Arc<Shared>) -> std::io::Result<Handle> {
    let (tx, rx) = bounded::<Request>(16);
    let interval = shared.opts.commit_interval;
    let thread = std::thread::Builder::new()
        .name("tuxfs-writeback".into())
        .spawn(move || {
            loop {
                match rx.recv_timeout(interval) {
                    Ok(Request::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                    Err(RecvTimeoutError::Timeout) => {
                        if let Err(e) = shared.commit_open() {
                            eprintln!("tuxfs: background commit failed: {e}");
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
