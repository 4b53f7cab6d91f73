//! Reads off the FUSE workers. A READ that reaches the daemon missed the kernel's page
//! cache and may have to wait for the device; run on the worker that received it, it would
//! park that worker (one per CPU by default) and every other request would queue behind it.
//! The adapter hands reads to this pool and the worker goes back to `/dev/fuse` at once;
//! the reply is sent from the pool thread when the data is there (as fsync's is sent from
//! the writeback thread). With reads of several requests in flight together, the kernel's
//! asynchronous read-ahead reaches the device with real queue depth.
//!
//! Handing a read to another thread costs two wake-ups, which on a small machine is most of
//! a 4 KiB read's time (measured: random 4 KiB O_DIRECT reads at queue depth 1 fell from
//! 5,937 to 3,574 IOPS when every read went through the pool). So [`ReadPool::dispatch`]
//! runs a read on the worker itself while no other read runs that way: one read at a time
//! may hold a worker, never more, and every read beside it goes to the pool.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

/// One read to run, with its reply.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Threads that run reads: enough for the kernel's read-ahead in flight beside a few
/// synchronous readers; each sleeps in the device most of the time.
pub const READ_THREADS: usize = 8;

/// A fixed set of threads fed by a channel; stopped (queue drained, threads joined) by
/// [`ReadPool::stop`] or on drop.
#[derive(Debug)]
pub struct ReadPool {
    tx: Mutex<Option<Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// A read runs on a FUSE worker now (see the module doc).
    inline_busy: AtomicBool,
}

impl ReadPool {
    /// Starts `threads` threads (at least one).
    pub fn new(threads: usize) -> ReadPool {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let handles = (0..threads.max(1))
            .map(|i| {
                let rx: Receiver<Job> = rx.clone();
                std::thread::Builder::new()
                    .name(format!("tuxfs-read-{i}"))
                    .spawn(move || {
                        for job in rx {
                            job();
                        }
                    })
                    .expect("spawning a read thread")
            })
            .collect();
        ReadPool {
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(handles),
            inline_busy: AtomicBool::new(false),
        }
    }

    /// Runs `job` here when no other job runs on its caller's thread, otherwise on the pool
    /// (module doc).
    pub fn dispatch(&self, job: Job) {
        if self.inline_busy.swap(true, Ordering::Acquire) {
            return self.run(job);
        }
        // Cleared even if the job panics, so one failed read cannot send all later ones
        // through the pool.
        struct Clear<'a>(&'a AtomicBool);
        impl Drop for Clear<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _clear = Clear(&self.inline_busy);
        job();
    }

    /// Runs `job` on a pool thread, or here when the pool has stopped (the session is
    /// ending: the answer is still owed).
    pub fn run(&self, job: Job) {
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match tx {
            Some(tx) => {
                if let Err(returned) = tx.send(job) {
                    (returned.0)();
                }
            }
            None => job(),
        }
    }

    /// Lets the queued reads finish and joins the threads: after it, no read is running.
    pub fn stop(&self) {
        drop(
            self.tx
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        let threads = std::mem::take(
            &mut *self
                .threads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for ReadPool {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn one_job_runs_on_its_callers_thread_and_the_next_goes_to_the_pool() {
        let pool = Arc::new(ReadPool::new(2));
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
        let (where_tx, where_rx) = crossbeam_channel::unbounded::<(usize, bool)>();
        // A first read on a "worker" thread runs there and waits (stuck on the device).
        let worker = {
            let (pool, where_tx) = (pool.clone(), where_tx.clone());
            std::thread::spawn(move || {
                let me = std::thread::current().id();
                pool.dispatch(Box::new(move || {
                    let _ = where_tx.send((0, std::thread::current().id() == me));
                    release_rx.recv().expect("released");
                }));
            })
        };
        assert_eq!(
            where_rx.recv_timeout(Duration::from_secs(10)),
            Ok((0, true)),
            "the first read runs on its worker"
        );
        // A second one, meanwhile, goes to the pool and finishes although the first waits.
        let me = std::thread::current().id();
        let t = where_tx.clone();
        pool.dispatch(Box::new(move || {
            let _ = t.send((1, std::thread::current().id() == me));
        }));
        assert_eq!(
            where_rx.recv_timeout(Duration::from_secs(10)),
            Ok((1, false)),
            "the second read runs on the pool while the first holds its worker"
        );
        release_tx.send(()).expect("release");
        worker.join().expect("worker");
        // With nothing running inline, the next read runs on its caller again.
        let t = where_tx.clone();
        pool.dispatch(Box::new(move || {
            let _ = t.send((2, std::thread::current().id() == me));
        }));
        assert_eq!(
            where_rx.recv_timeout(Duration::from_secs(10)),
            Ok((2, true))
        );
    }

    #[test]
    fn a_waiting_job_does_not_hold_up_the_others_and_stop_runs_every_job() {
        let pool = ReadPool::new(2);
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<usize>();
        // The first job waits (a read stuck on the device)...
        let d = done_tx.clone();
        pool.run(Box::new(move || {
            release_rx.recv().expect("released");
            d.send(0).expect("send");
        }));
        // ...and later ones still run meanwhile.
        for i in 1..=3 {
            let d = done_tx.clone();
            pool.run(Box::new(move || d.send(i).expect("send")));
        }
        let mut got: Vec<usize> = (0..3)
            .map(|_| done_rx.recv_timeout(Duration::from_secs(10)).expect("ran"))
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec![1, 2, 3]);
        release_tx.send(()).expect("release");
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(10)), Ok(0));
        // After stop, jobs run on the caller: no reply is ever dropped.
        let count = Arc::new(AtomicUsize::new(0));
        for _ in 0..5 {
            let c = count.clone();
            pool.run(Box::new(move || {
                c.fetch_add(1, Ordering::SeqCst);
            }));
        }
        pool.stop();
        assert_eq!(count.load(Ordering::SeqCst), 5);
        let c = count.clone();
        pool.run(Box::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        }));
        assert_eq!(count.load(Ordering::SeqCst), 6);
    }
}
