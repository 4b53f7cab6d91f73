//! Story: operations that only read run in parallel. The state lock is a reader-writer lock
//! (engine::fs `Shared`): lookup, getattr, readdir, readlink, getxattr, statfs, seek and a
//! read's plan and completion hold it shared. A device that stops one thread's read batch
//! holds a reader in the middle of loading a B+tree leaf, under the shared lock; meanwhile
//! another thread must look up, stat, list, and read files to completion (one of them the
//! very file the held reader is loading, so both load the same leaf and the second loader's
//! copy is the one kept). Before the lock was shared, every such operation waited behind the
//! held reader: the watchdog (10 s) fails the test instead of letting it hang.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::fs::{AtimeMode, AtimePolicy, Caller, Filesystem, MountOptions};
use tuxfs_tests::fixture::mem_device;
use tuxfs_tests::hooked::HookedDevice;

const BS: usize = 4096;
const FILES: usize = 300;
/// The thread whose reads the gate stops.
const HELD: &str = "held-reader";
const WATCHDOG: Duration = Duration::from_secs(10);

/// Stops the first read batch of the thread named [`HELD`] after arming, until released.
type Gate = tuxfs_tests::hooked::Gate<()>;

fn pass(gate: &Gate) {
    if std::thread::current().name() == Some(HELD) {
        gate.pass(|(), _| true);
    }
}

fn name(i: usize) -> Vec<u8> {
    format!("f{i:03}").into_bytes()
}

fn contents(i: usize) -> Vec<u8> {
    (0..2 * BS).map(|b| (b * 7 + i) as u8).collect()
}

/// A filesystem of [`FILES`] small files whose leaves are all dropped from memory (the
/// leaf cache is 0 bytes, so the commit evicts them): the next lookup of any of them reads
/// its leaf from the device. noatime: an atime update is a change, which rightly waits for
/// the held reader.
fn setup() -> (Arc<Filesystem>, Arc<Gate>, Vec<u64>) {
    let gate = Arc::new(Gate::default());
    let reads = {
        let gate = gate.clone();
        Arc::new(
            move |_: &[u64], read: &mut dyn FnMut() -> tuxfs_engine::Result<()>| {
                pass(&gate);
                read()
            },
        )
    };
    let dev = Arc::new(
        HookedDevice::new(
            MemDevice::from_bytes(mem_device(4096, 8192).snapshot()),
            Arc::new(|_| {}),
        )
        .with_read_hook(reads),
    );
    let opts = MountOptions {
        leaf_cache_bytes: 0,
        atime: AtimePolicy {
            mode: AtimeMode::NoAtime,
            nodiratime: true,
        },
        ..MountOptions::default()
    };
    let fs = Filesystem::mount(dev as Arc<dyn BlockDevice>, opts).expect("mount");
    let mut inos = Vec::new();
    for i in 0..FILES {
        let a = fs
            .create(1, &name(i), 0o644, Caller::default())
            .expect("create");
        fs.write(a.ino, 0, &contents(i), false).expect("write");
        fs.release(a.ino).expect("release");
        inos.push(a.ino);
    }
    fs.sync().expect("sync");
    assert!(
        fs.stats().leaf_evictions > 0,
        "the commit kept the leaves: {}",
        fs.stats()
    );
    (fs, gate, inos)
}

/// Holds `held` (run on the [`HELD`] thread) in its first device read, runs `others` on
/// another thread meanwhile and requires it to finish within the watchdog; then lets the
/// held reader go and returns what both returned.
fn while_held<H, O>(
    fs: &Arc<Filesystem>,
    gate: &Arc<Gate>,
    held: impl FnOnce(&Filesystem) -> H + Send + 'static,
    others: impl FnOnce(&Filesystem) -> O + Send + 'static,
) -> (H, O)
where
    H: Send + 'static,
    O: Send + 'static,
{
    gate.arm(());
    let reader = {
        let fs = fs.clone();
        std::thread::Builder::new()
            .name(HELD.into())
            .spawn(move || held(&fs))
            .expect("spawn")
    };
    if !gate.wait_holding(WATCHDOG) {
        gate.release();
        panic!("the held reader never read the device: nothing was tested");
    }
    let (tx, rx) = mpsc::channel();
    let other = {
        let fs = fs.clone();
        std::thread::spawn(move || {
            let _ = tx.send(others(&fs));
        })
    };
    let out = rx.recv_timeout(WATCHDOG);
    gate.release();
    let held = reader.join().expect("held reader");
    other.join().expect("other thread");
    match out {
        Ok(out) => (held, out),
        Err(_) => panic!(
            "operations that only read waited {WATCHDOG:?} behind a reader holding the state \
             lock shared: they do not run in parallel"
        ),
    }
}

/// getattr holding the lock shared while it loads an inode leaf: stats, lookups, a
/// listing, statfs and reads of other files (and of the same one) finish meanwhile.
#[test]
fn metadata_reads_pass_a_reader_loading_a_leaf() {
    let (fs, gate, inos) = setup();
    let far = inos[FILES - 1];
    let (first, second) = (inos[0], inos[1]);
    let (attr, (near, looked, listed, same, data)) = while_held(
        &fs,
        &gate,
        move |fs| fs.getattr(far).expect("held getattr"),
        move |fs| {
            let near = fs.getattr(first).expect("getattr");
            let looked = fs.lookup(1, &name(FILES / 2)).expect("lookup");
            let listed = fs.readdir(1, 0, 10).expect("readdir").len();
            fs.statfs().expect("statfs");
            let same = fs.getattr(far).expect("getattr of the held file");
            let data = fs.read(second, 0, (2 * BS) as u32).expect("read");
            (near, looked, listed, same, data)
        },
    );
    assert_eq!(attr.ino, far);
    assert_eq!(attr.size, (2 * BS) as u64);
    assert_eq!(same.ino, far);
    assert_eq!(near.ino, inos[0]);
    assert_eq!(looked.ino, inos[FILES / 2]);
    assert_eq!(listed, 10);
    assert_eq!(data, contents(1));
    fs.unmount().expect("unmount");
}

/// A read of one file stopped while planning (loading its inode's leaf, under the lock held
/// shared): a read of another file plans, loads and completes meanwhile, and both return
/// the bytes written.
#[test]
fn file_reads_pass_a_reader_planning() {
    let (fs, gate, inos) = setup();
    let (a, b) = (inos[FILES - 2], inos[3]);
    let (held, other) = while_held(
        &fs,
        &gate,
        move |fs| fs.read(a, 0, (2 * BS) as u32).expect("held read"),
        move |fs| fs.read(b, 0, (2 * BS) as u32).expect("read"),
    );
    assert_eq!(held, contents(FILES - 2));
    assert_eq!(other, contents(3));
    // Nothing cached by the two readers is stale: every file reads back as written.
    for (i, &ino) in inos.iter().enumerate().step_by(17) {
        assert_eq!(fs.read(ino, 0, (2 * BS) as u32).expect("read"), contents(i));
    }
    fs.unmount().expect("unmount");
}
