//! Story: a request that waits for a commit does not hold a FUSE worker. The adapter is
//! mounted in this process with a single worker thread, over an engine whose device stops
//! at its next flush until the test lets it go. An fsync is started and reaches that flush
//! (it is parked, waiting for its commit to become durable); while it stays parked another
//! thread's stats, a create, a write and a read through the same mount all complete. Then
//! the flush is released and the fsync returns success.
//!
//! If the fsync held the only worker, nothing else would be served until the flush
//! returned: the other thread's requests would not complete within the timeout and the test
//! fails (after releasing the flush, so that the mount can be cleaned up).

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use fuser::MountOption;
use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::format::inode::Timestamp;
use tuxfs_engine::fs::{Filesystem, MountOptions};
use tuxfs_engine::mkfs::{MkfsParams, format_device};
use tuxfs_fuse::adapter::{Adapter, Timeouts};
use tuxfs_tests::hooked::{Call, HookedDevice};

/// Stats the other thread makes while the fsync is parked.
const STATS: usize = 50;
/// Bounds every wait, so that a broken build fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(30);

/// Where a flush stops while the gate is closed.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    closed: bool,
    /// A flush is waiting at the closed gate.
    waiting: bool,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self) {
        self.lock().closed = true;
    }

    fn open(&self) {
        self.lock().closed = false;
        self.changed.notify_all();
    }

    /// Called by the device: waits while the gate is closed.
    fn pass(&self) {
        let mut st = self.lock();
        if st.closed {
            st.waiting = true;
            self.changed.notify_all();
        }
        while st.closed {
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.waiting = false;
    }

    /// Waits until a flush waits at the gate; false after `PATIENCE`.
    fn wait_for_flush(&self) -> bool {
        let st = self.lock();
        let (st, _) = self
            .changed
            .wait_timeout_while(st, PATIENCE, |s| !s.waiting)
            .unwrap_or_else(|p| p.into_inner());
        st.waiting
    }
}

/// Opens the gate when dropped: a failing test must not leave the mount hung.
struct OpenOnDrop(Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

fn fuse_usable() -> bool {
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok()
        // SAFETY: geteuid has no preconditions.
        && unsafe { libc::geteuid() } == 0;
    if !usable {
        let why = "this test mounts in-process: it needs /dev/fuse and root";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true and the FUSE test cannot run: {why}");
        }
        eprintln!("SKIPPED: {why}");
    }
    usable
}

fn engine(gate: &Arc<Gate>) -> Arc<Filesystem> {
    let inner = MemDevice::new(64 << 20);
    let params = MkfsParams {
        block_size: 4096,
        block_count: (64 << 20) / 4096,
        label: "inflight".into(),
        uuid: [4; 16],
        hash_seed: [2; 16],
        now: Timestamp {
            sec: 1_763_000_000,
            nsec: 0,
        },
        uid: 0,
        gid: 0,
    };
    format_device(&inner, &params, false).expect("mkfs");
    // Flushes pass through the gate.
    let gate = Arc::clone(gate);
    let dev = HookedDevice::new(
        inner,
        Arc::new(move |call| {
            if call == Call::Flush {
                gate.pass();
            }
        }),
    );
    let opts = MountOptions {
        // Only the fsync commits during the test.
        commit_interval: Duration::from_secs(3600),
        ..MountOptions::default()
    };
    Filesystem::mount(Arc::new(dev) as Arc<dyn BlockDevice>, opts).expect("engine mount")
}

/// Mounts `fs` on `dir` in this process with one worker; attributes are not cached, so
/// every stat is a request.
fn mount(fs: &Arc<Filesystem>, dir: &Path) -> fuser::BackgroundSession {
    let no_cache = Timeouts {
        attr: Duration::ZERO,
        entry: Duration::ZERO,
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("tuxfs-inflight".into()),
        MountOption::DefaultPermissions,
        MountOption::RW,
    ];
    config.n_threads = Some(1);
    fuser::Session::new(Adapter::new(Arc::clone(fs), no_cache), dir, &config)
        .expect("FUSE mount")
        .spawn()
        .expect("session thread")
}

#[test]
fn a_parked_fsync_leaves_the_only_worker_serving() {
    if !fuse_usable() {
        return;
    }
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = tmp.path().join("mnt");
    std::fs::create_dir(&dir).expect("mountpoint");
    let gate = Arc::new(Gate::default());
    let fs = engine(&gate);
    let session = mount(&fs, &dir);

    std::fs::write(dir.join("other"), b"served while an fsync waits").expect("other");
    let synced = std::fs::File::create(dir.join("synced")).expect("create synced");
    synced
        .write_all_at(&[7u8; 100_000], 0)
        .expect("write synced");

    let release = OpenOnDrop(Arc::clone(&gate));
    gate.close();
    let fsync_done = Arc::new(AtomicBool::new(false));
    let fsync = {
        let done = Arc::clone(&fsync_done);
        std::thread::spawn(move || {
            let out = synced.sync_all();
            done.store(true, Ordering::SeqCst);
            out
        })
    };
    assert!(
        gate.wait_for_flush(),
        "the fsync's commit never reached the device flush"
    );

    let (tx, rx) = channel();
    let others = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            for _ in 0..STATS {
                std::fs::metadata(dir.join("other")).expect("stat");
            }
            std::fs::write(dir.join("new"), b"created meanwhile").expect("create new");
            let read = std::fs::read(dir.join("other")).expect("read other");
            let _ = tx.send(read);
        })
    };
    let served = rx.recv_timeout(PATIENCE);
    let fsync_was_parked = !fsync_done.load(Ordering::SeqCst);
    drop(release);
    let fsynced = fsync.join().expect("fsync thread");
    others.join().expect("other thread");
    assert_eq!(
        served.as_deref().ok(),
        Some(&b"served while an fsync waits"[..]),
        "requests were not served while the fsync waited for its commit"
    );
    assert!(
        fsync_was_parked,
        "the fsync returned before its flush was released"
    );
    fsynced.expect("fsync succeeds once the flush completes");

    session.umount_and_join().expect("unmount");
    fs.unmount().expect("engine unmount");
}
