//! Story: four writers rewrite the same sixteen pages of a file without pause while another
//! thread commits again and again over a device whose flush is slow. Page forking must let
//! the writers go on: pages are forked (copied) instead of waited for, and no writer is
//! throttled while dirty data stays under the limit. After the last commit the filesystem
//! is dropped (a crash): the file must read back exactly as that commit left it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::fs::{Caller, Filesystem, MountOptions};
use tuxfs_tests::fixture::{fsck_clean, mem_device};
use tuxfs_tests::hooked::{Call, HookedDevice};

const PAGES: u64 = 16;
const BS: u64 = 4096;

fn options() -> MountOptions {
    MountOptions {
        commit_interval: Duration::from_secs(3600),
        dirty_limit_bytes: 64 << 20,
        ..MountOptions::default()
    }
}

#[test]
fn writers_fork_pages_under_commit_and_never_wait() {
    // A flush that takes a while, like a disk with a deep write cache.
    let dev = Arc::new(HookedDevice::new(
        MemDevice::from_bytes(mem_device(4096, 8192).snapshot()),
        Arc::new(|call| {
            if call == Call::Flush {
                std::thread::sleep(Duration::from_millis(15));
            }
        }),
    ));
    let fs = Filesystem::mount(dev.clone() as Arc<dyn BlockDevice>, options()).expect("mount");
    let f = fs
        .create(1, b"hot", 0o644, Caller::default())
        .expect("create");
    fs.write(f.ino, 0, &vec![0u8; (PAGES * BS) as usize], false)
        .expect("first write");
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4u8 {
        let (fs, stop) = (fs.clone(), stop.clone());
        writers.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let page = (i * 7 + u64::from(w)) % PAGES;
                let fill = vec![w.wrapping_mul(50).wrapping_add(i as u8); BS as usize];
                fs.write(f.ino, page * BS, &fill, false).expect("rewrite");
                i += 1;
            }
            i
        }));
    }
    for _ in 0..20 {
        fs.sync().expect("commit");
    }
    stop.store(true, Ordering::Relaxed);
    let rewrites: u64 = writers.into_iter().map(|t| t.join().expect("writer")).sum();
    // The last commit: what a crash after it must show.
    fs.sync().expect("last commit");
    let committed = fs.read(f.ino, 0, (PAGES * BS) as u32).expect("read");
    let stats = fs.stats();
    println!(
        "rewrites {rewrites}, deltas {}, pages forked {}, throttled {} us",
        stats.deltas_committed, stats.pages_forked, stats.writer_throttle_us
    );
    assert!(
        stats.pages_forked > 0,
        "writers rewrote pages under commit, yet nothing was forked"
    );
    assert_eq!(
        stats.writer_throttle_us, 0,
        "a writer under the dirty limit waited for writeback"
    );
    drop(fs); // crash after the last commit
    let image = dev.inner.snapshot();
    let again = Arc::new(MemDevice::from_bytes(image));
    let fs = Filesystem::mount(again.clone() as Arc<dyn BlockDevice>, options()).expect("remount");
    let hot = fs.lookup(1, b"hot").expect("lookup");
    assert!(
        fs.read(hot.ino, 0, (PAGES * BS) as u32).expect("read") == committed,
        "data differs from the last commit"
    );
    fs.unmount().expect("unmount");
    fsck_clean(again.as_ref());
}
