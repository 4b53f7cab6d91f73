//! Story: commit is a freeze. A commit is held in the middle of its I/O by a device that
//! stops a chosen write submission or flush until the test lets it go. Meanwhile the
//! frontend must go on in the next delta: read the delta being written, overwrite it,
//! create a file, stat, look up and list. Once the held commit completes, a crash right
//! after it must show exactly that delta: none of what the frontend did meanwhile leaked
//! into its leaves or pages. The same holds when the held commit also unifies.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::fs::{Caller, Filesystem, MountOptions};
use tuxfs_tests::fixture::{fsck_clean, mem_device};
use tuxfs_tests::hooked::{Call, HookedDevice};

/// Which device call the gate stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The first write submission after arming.
    Submit,
    /// The `n`th flush after arming (1 = the next one).
    Flush(u32),
}

/// Stops one chosen device call (the hook of a [`HookedDevice`]) until released.
type Gate = tuxfs_tests::hooked::Gate<Stop>;

/// The hook: holds the call `stop` names (flushes counted since arming).
fn pass(gate: &Gate, call: Call) {
    gate.pass(|stop, flushes| match (stop, call) {
        (Stop::Submit, Call::Submit) => true,
        (Stop::Flush(n), Call::Flush) => {
            *flushes += 1;
            *flushes == n
        }
        _ => false,
    });
}

const BS: usize = 4096;

/// How long the test holds a commit after the frontend finished.
const HELD_MS: u64 = 300;

fn options(unify_log_blocks: u64) -> MountOptions {
    MountOptions {
        commit_interval: Duration::from_secs(3600),
        unify_log_blocks,
        ..MountOptions::default()
    }
}

/// Holds a commit at `stop`, runs frontend operations meanwhile (each must finish within
/// 10 s), lets the commit go, then crashes and checks the image shows exactly the held
/// delta.
fn frontend_goes_on(stop: Stop, unify_log_blocks: u64) {
    let gate = Arc::new(Gate::default());
    let hook = {
        let gate = gate.clone();
        Arc::new(move |call| pass(&gate, call))
    };
    let dev = Arc::new(HookedDevice::new(
        MemDevice::from_bytes(mem_device(4096, 8192).snapshot()),
        hook,
    ));
    let opts = options(unify_log_blocks);
    let fs = Filesystem::mount(dev.clone() as Arc<dyn BlockDevice>, opts.clone()).expect("mount");
    let a = fs
        .create(1, b"a", 0o644, Caller::default())
        .expect("create");
    let old = vec![0xa5u8; 8 * BS];
    fs.write(a.ino, 0, &old, false).expect("write");
    let unifies_before = fs.stats().unifies;

    gate.arm(stop);
    let committer = {
        let fs = fs.clone();
        std::thread::spawn(move || fs.sync())
    };
    assert!(
        gate.wait_holding(Duration::from_secs(10)),
        "the commit never reached the gate"
    );

    // The frontend, in the next delta, while the commit is held.
    let (tx, rx) = mpsc::channel();
    let worker = {
        let fs = fs.clone();
        std::thread::spawn(move || {
            let step = |what: &str| tx.send(what.to_string()).expect("send");
            let read = fs.read(a.ino, 0, (8 * BS) as u32).expect("read");
            assert!(read == vec![0xa5u8; 8 * BS], "read of the frozen delta");
            step("read");
            fs.write(a.ino, BS as u64, &[0x5au8; BS], false)
                .expect("overwrite");
            step("write");
            let b = fs
                .create(1, b"b", 0o644, Caller::default())
                .expect("create");
            fs.write(b.ino, 0, b"new", false).expect("write b");
            step("create");
            assert_eq!(fs.getattr(a.ino).expect("stat").size, (8 * BS) as u64);
            assert_eq!(fs.lookup(1, b"b").expect("lookup").ino, b.ino);
            let names: Vec<Vec<u8>> = fs
                .readdir(1, 0, 64)
                .expect("readdir")
                .into_iter()
                .map(|e| e.name)
                .collect();
            assert!(names.contains(&b"a".to_vec()) && names.contains(&b"b".to_vec()));
            step("stat");
            let mid = fs.read(a.ino, 0, (2 * BS) as u32).expect("read again");
            assert!(mid[..BS] == [0xa5u8; BS] && mid[BS..] == [0x5au8; BS]);
            step("done");
        })
    };
    let mut done = Vec::new();
    while done.last().map(String::as_str) != Some("done") {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(step) => done.push(step),
            Err(_) => {
                gate.release();
                panic!(
                    "the frontend waited for a commit held at {stop:?}; it got through {done:?}"
                );
            }
        }
    }
    worker.join().expect("frontend");
    // Held for at least HELD_MS: the commit's latency shows it, its time under the state
    // lock must not.
    std::thread::sleep(Duration::from_millis(HELD_MS));
    gate.release();
    committer.join().expect("committer").expect("commit");
    let stats = fs.stats();
    if unify_log_blocks <= 1 {
        assert!(
            stats.unifies > unifies_before,
            "the held commit was to unify"
        );
    } else {
        assert!(
            stats.commit_latency_us_last >= HELD_MS * 1000
                && stats.commit_locked_us_last < HELD_MS * 1000,
            "a commit held {HELD_MS} ms: latency {} us, under the state lock {} us",
            stats.commit_latency_us_last,
            stats.commit_locked_us_last
        );
    }

    // A crash right after the held commit: exactly its delta, nothing of the next one.
    let image = dev.inner.snapshot();
    drop(fs);
    let again = Arc::new(MemDevice::from_bytes(image));
    fsck_clean(again.as_ref());
    let fs = Filesystem::mount(again.clone() as Arc<dyn BlockDevice>, opts).expect("remount");
    let a = fs.lookup(1, b"a").expect("a survived");
    assert!(
        fs.read(a.ino, 0, (8 * BS) as u32).expect("read") == old,
        "the held delta's data changed"
    );
    assert!(
        fs.lookup(1, b"b").is_err(),
        "a file created after the freeze leaked into the held delta"
    );
    fs.unmount().expect("unmount");
    fsck_clean(again.as_ref());
}

#[test]
fn frontend_goes_on_while_a_commit_submits() {
    frontend_goes_on(Stop::Submit, 256);
}

#[test]
fn frontend_goes_on_while_a_commit_flushes() {
    frontend_goes_on(Stop::Flush(1), 256);
}

#[test]
fn frontend_goes_on_while_a_commit_unifies() {
    // Every commit unifies: the second flush is the unify's, the third its superblock's.
    frontend_goes_on(Stop::Flush(2), 1);
    frontend_goes_on(Stop::Flush(3), 1);
}
