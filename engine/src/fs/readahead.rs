//! The read-ahead threads: load the read-ahead that unlocked reads hand them (without the
//! state lock), caches it under the lock (when the inode did not change meanwhile), and
//! wakes the readers that wait for it (engine::data::read).

use crate::sync::{Arc, thread};

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::Shared;
use crate::data::{Done, ReadPlan};

/// A read-ahead to run, and what to signal when it finished.
pub(crate) type Job = (ReadPlan, Arc<Done>);

/// Threads taking jobs from one queue: while one caches what it loaded, the others' loads
/// keep the device busy. Each job is one batch of up to `READAHEAD_BATCH_BYTES` (two 1 MiB
/// requests), so the threads keep every batch the window holds in flight (and streams of
/// several files): under O_DIRECT nothing else reads ahead. They wait on the device, not on
/// the CPU.
const THREADS: usize = 4;

/// The running threads: dropping `tx` (then joining) stops them once the queue is empty.
#[derive(Debug)]
pub(crate) struct Handle {
    pub tx: Sender<Job>,
    pub threads: Vec<thread::JoinHandle<()>>,
}

pub(crate) fn start(shared: Arc<Shared>) -> std::io::Result<Handle> {
    let (tx, rx) = unbounded::<Job>();
    let mut threads = Vec::with_capacity(THREADS);
    for _ in 0..THREADS {
        let (shared, rx) = (shared.clone(), rx.clone());
        threads.push(
            thread::Builder::new()
                .name("tuxfs-readahead".into())
                .spawn(move || run(&shared, &rx))?,
        );
    }
    Ok(Handle { tx, threads })
}

fn run(shared: &Shared, rx: &Receiver<Job>) {
    while let Ok((plan, done)) = rx.recv() {
        let inum = plan.inum();
        let loaded = crate::data::load(&plan);
        let st = shared.read();
        if !st.unmounted {
            // A failed read-ahead is dropped: the read of those blocks reports the error.
            let _ = crate::data::complete_read(&st, plan, loaded);
        }
        crate::data::end_readahead(&st, inum, &done);
    }
}
