//! Story: `Filesystem::fsync_then` is fsync without a waiting caller, for the FUSE frontend
//! (a worker hands its reply over and goes on serving). It answers with what `fsync` would
//! have, once the changes made before the call are durable: a crash right after the answer
//! keeps them. It answers at once, on the caller's thread, when nothing needs committing,
//! and otherwise from the writeback thread, so the caller is never parked.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::thread::ThreadId;
use std::time::Duration;

use tuxfs_engine::Errno;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::fs::{Filesystem, MountOptions};
use tuxfs_tests::fixture::{self, USER as ME, mem_device};

const ROOT: u64 = 1;
/// Long enough that a test never passes through an error of the harness.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

fn mount(dev: &Arc<MemDevice>) -> Arc<Filesystem> {
    let opts = MountOptions {
        // The scheduler must not commit on its own during the test.
        commit_interval: Duration::from_secs(3600),
        ..MountOptions::default()
    };
    fixture::mount(dev, opts)
}

type Outcome = (Result<(), Errno>, ThreadId);

/// Calls fsync_then and returns where its answer will arrive.
fn fsync_then(fs: &Filesystem, ino: u64) -> Receiver<Outcome> {
    let (tx, rx) = channel();
    fs.fsync_then(ino, false, move |r| {
        let _ = tx.send((r.map_err(|e| e.errno()), std::thread::current().id()));
    });
    rx
}

#[test]
fn answer_comes_from_the_writeback_thread_once_the_data_is_durable() {
    let dev = mem_device(4096, 4096);
    let fs = mount(&dev);
    let f = fs.create(ROOT, b"f", 0o644, ME).expect("create");
    fs.write(f.ino, 0, b"durable before the answer", false)
        .expect("write");
    let before = fs.stats().deltas_committed;
    let (outcome, thread) = fsync_then(&fs, f.ino)
        .recv_timeout(ANSWER_TIMEOUT)
        .expect("answered");
    assert_eq!(outcome, Ok(()));
    assert_ne!(
        thread,
        std::thread::current().id(),
        "a commit was needed: the caller must not have run it"
    );
    assert_eq!(fs.stats().deltas_committed, before + 1);
    // Crash right after the answer: the write is there.
    drop(fs);
    let fs = mount(&dev);
    let f = fs.lookup(ROOT, b"f").expect("lookup after crash");
    assert_eq!(
        fs.read(f.ino, 0, 100).expect("read"),
        b"durable before the answer"
    );
    fs.unmount().expect("unmount");
}

#[test]
fn nothing_to_commit_answers_at_once_on_the_callers_thread() {
    let dev = mem_device(4096, 4096);
    let fs = mount(&dev);
    let f = fs.create(ROOT, b"f", 0o644, ME).expect("create");
    fs.sync().expect("sync");
    let before = fs.stats().deltas_committed;
    let rx = fsync_then(&fs, f.ino);
    let (outcome, thread) = rx.try_recv().expect("answered before returning");
    assert_eq!(outcome, Ok(()));
    assert_eq!(thread, std::thread::current().id());
    assert_eq!(fs.stats().deltas_committed, before, "nothing was committed");
    fs.unmount().expect("unmount");
}

#[test]
fn many_waiting_fsyncs_share_commits_and_all_get_answers() {
    let dev = mem_device(4096, 4096);
    let fs = mount(&dev);
    let f = fs.create(ROOT, b"f", 0o644, ME).expect("create");
    let before = fs.stats().deltas_committed;
    let mut answers = Vec::new();
    for i in 0..64u64 {
        fs.write(f.ino, i * 10, b"0123456789", false)
            .expect("write");
        answers.push(fsync_then(&fs, f.ino));
    }
    for rx in answers {
        let (outcome, _) = rx.recv_timeout(ANSWER_TIMEOUT).expect("answered");
        assert_eq!(outcome, Ok(()));
    }
    let commits = fs.stats().deltas_committed - before;
    assert!(
        (1..=64).contains(&commits),
        "{commits} commits for 64 fsyncs"
    );
    drop(fs);
    let fs = mount(&dev);
    let f = fs.lookup(ROOT, b"f").expect("lookup after crash");
    assert_eq!(fs.getattr(f.ino).expect("getattr").size, 640);
    fs.unmount().expect("unmount");
}

#[test]
fn errors_are_answered_not_lost() {
    let dev = mem_device(4096, 4096);
    let fs = mount(&dev);
    let (outcome, thread) = fsync_then(&fs, 999_999)
        .recv_timeout(ANSWER_TIMEOUT)
        .expect("answered");
    assert!(
        outcome.is_err(),
        "an inode that does not exist: {outcome:?}"
    );
    assert_eq!(thread, std::thread::current().id());
    let f = fs.create(ROOT, b"f", 0o644, ME).expect("create");
    fs.unmount().expect("unmount");
    let (outcome, _) = fsync_then(&fs, f.ino)
        .recv_timeout(ANSWER_TIMEOUT)
        .expect("answered after unmount");
    assert_eq!(outcome, Err(Errno::Io));
}
