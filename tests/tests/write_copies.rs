//! Story: a writer streams whole blocks. Each block must be copied once, from the request
//! into its page, before the state lock is taken; under the lock the write only moves the
//! pages in, and the commit hands those very pages (with the CRCs computed when they were
//! built) to the device. Only blocks written in part, and appends (whose offset is known
//! only under the lock), are filled under the lock, and only such pages have their CRC
//! computed by the commit. Whatever path a block took, it must read back as written, after
//! the commit and after a crash, with every data CRC right (fsck reads all data).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::fs::{Caller, Filesystem, FsStats, MountOptions};
use tuxfs_tests::fixture::{fsck_clean, mem_device, mount};
use tuxfs_tests::hooked::{Call, HookedDevice};

const BS: usize = 4096;
const MIB: usize = 1 << 20;

fn options() -> MountOptions {
    MountOptions {
        commit_interval: Duration::from_secs(3600),
        dirty_limit_bytes: 64 << 20,
        ..MountOptions::default()
    }
}

/// Bytes that differ from block to block and from run to run of the test.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add((i / BS) as u8) ^ seed)
        .collect()
}

/// (blocks filled under the lock, CRCs computed under the lock at close) since `before`.
fn locked_work(before: &FsStats, after: &FsStats) -> (u64, u64) {
    (
        after.write_blocks_locked - before.write_blocks_locked,
        after.data_crcs_locked - before.data_crcs_locked,
    )
}

/// Drops `fs` (a crash), mounts `dev` again: file `ino` reads `want`; then fsck clean.
fn crash_and_check(fs: Arc<Filesystem>, dev: &Arc<MemDevice>, ino: u64, want: &[u8]) {
    drop(fs);
    let fs = mount(dev, options());
    assert_eq!(fs.read(ino, 0, want.len() as u32).expect("read"), want);
    fs.unmount().expect("unmount");
    fsck_clean(dev.as_ref());
}

#[test]
fn whole_block_writes_copy_nothing_under_the_lock() {
    let dev = mem_device(BS as u32, 8192);
    let fs = mount(&dev, options());
    let f = fs
        .create(1, b"stream", 0o644, Caller::default())
        .expect("create");
    let data = pattern(4 * MIB, 0x5a);
    let before = fs.stats();
    for (i, chunk) in data.chunks(MIB).enumerate() {
        fs.write(f.ino, (i * MIB) as u64, chunk, false)
            .expect("write");
    }
    assert_eq!(
        locked_work(&before, &fs.stats()).0,
        0,
        "a whole-block write filled pages under the state lock"
    );
    fs.sync().expect("commit");
    assert_eq!(
        locked_work(&before, &fs.stats()),
        (0, 0),
        "the commit computed data CRCs under the state lock"
    );
    assert_eq!(fs.read(f.ino, 0, data.len() as u32).expect("read"), data);
    crash_and_check(fs, &dev, f.ino, &data);
}

#[test]
fn direct_writes_build_their_pages_before_the_lock_too() {
    let dev = mem_device(BS as u32, 8192);
    let fs = mount(&dev, options());
    let f = fs
        .create(1, b"direct", 0o644, Caller::default())
        .expect("create");
    let data = pattern(2 * MIB, 0x77);
    let before = fs.stats();
    for (i, chunk) in data.chunks(MIB).enumerate() {
        fs.write_direct(f.ino, (i * MIB) as u64, chunk, false)
            .expect("direct write");
    }
    fs.sync().expect("commit");
    assert_eq!(locked_work(&before, &fs.stats()), (0, 0));
    crash_and_check(fs, &dev, f.ino, &data);
}

#[test]
fn partial_blocks_and_appends_are_filled_under_the_lock_and_stay_right() {
    let dev = mem_device(BS as u32, 8192);
    let fs = mount(&dev, options());
    let f = fs
        .create(1, b"mixed", 0o644, Caller::default())
        .expect("create");
    let mut model = vec![0u8; 2 * MIB + BS];
    // 1 MiB at offset 100: blocks 0 and 256 in part, the 255 between whole.
    let before = fs.stats();
    let a = pattern(MIB, 0x11);
    fs.write(f.ino, 100, &a, false).expect("write");
    model[100..100 + MIB].copy_from_slice(&a);
    assert_eq!(locked_work(&before, &fs.stats()).0, 2);
    // Overwrite part of a dirty page (in place), then a whole dirty page (replaced).
    let b = pattern(300, 0x22);
    fs.write(f.ino, 5000, &b, false).expect("write");
    model[5000..5300].copy_from_slice(&b);
    let c = pattern(BS, 0x33);
    fs.write(f.ino, (3 * BS) as u64, &c, false).expect("write");
    model[3 * BS..4 * BS].copy_from_slice(&c);
    assert_eq!(locked_work(&before, &fs.stats()).0, 3);
    fs.sync().expect("commit");
    // Blocks 0, 1 (changed in place) and 256 got their CRC at close; the others had one.
    assert_eq!(locked_work(&before, &fs.stats()), (3, 3));
    // Appends learn their offset under the lock: every block is filled there.
    let before = fs.stats();
    let size = fs.getattr(f.ino).expect("getattr").size as usize;
    let d = pattern(2 * BS, 0x44);
    fs.write(f.ino, 0, &d, true).expect("append");
    model.truncate(size);
    model.extend_from_slice(&d);
    assert_eq!(
        locked_work(&before, &fs.stats()).0,
        3,
        "append of 2 blocks at 100 past a block"
    );
    fs.sync().expect("commit");
    assert_eq!(fs.read(f.ino, 0, model.len() as u32).expect("read"), model);
    crash_and_check(fs, &dev, f.ino, &model);
}

/// Holds the first write submission after [`Gate::arm`] until [`Gate::release`].
#[derive(Debug, Default)]
struct Gate {
    /// (armed, holding, released)
    state: Mutex<(bool, bool, bool)>,
    changed: Condvar,
}

impl Gate {
    fn pass(&self, call: Call) {
        let mut g = self.state.lock().expect("gate");
        if call != Call::Submit || !g.0 || g.2 {
            return;
        }
        g.1 = true;
        self.changed.notify_all();
        while !g.2 {
            g = self.changed.wait(g).expect("gate");
        }
    }

    fn wait_holding(&self) {
        let mut g = self.state.lock().expect("gate");
        while !g.1 {
            g = self.changed.wait(g).expect("gate");
        }
    }

    fn set(&self, f: impl FnOnce(&mut (bool, bool, bool))) {
        f(&mut self.state.lock().expect("gate"));
        self.changed.notify_all();
    }
}

#[test]
fn a_whole_block_rewrite_of_a_page_in_flight_forks_without_a_copy() {
    // A commit is held at its submission, its pages in flight, when whole blocks of them
    // are written again: each slot gets a new page built outside the lock, the device
    // writes the old bytes, and a crash after that commit shows exactly the old bytes.
    let gate = Arc::new(Gate::default());
    let hook = gate.clone();
    let dev = Arc::new(HookedDevice::new(
        MemDevice::from_bytes(mem_device(BS as u32, 8192).snapshot()),
        Arc::new(move |call| hook.pass(call)),
    ));
    let fs = Filesystem::mount(dev.clone() as Arc<dyn BlockDevice>, options()).expect("mount");
    let f = fs
        .create(1, b"fork", 0o644, Caller::default())
        .expect("create");
    let old = pattern(16 * BS, 0x01);
    fs.write(f.ino, 0, &old, false).expect("write");
    let new = pattern(16 * BS, 0x02);
    gate.set(|g| g.0 = true);
    let before = fs.stats();
    std::thread::scope(|s| {
        let committer = s.spawn(|| fs.sync());
        gate.wait_holding();
        for i in 0..16 {
            fs.write(f.ino, (i * BS) as u64, &new[i * BS..(i + 1) * BS], false)
                .expect("rewrite");
        }
        assert_eq!(fs.read(f.ino, 0, new.len() as u32).expect("read"), new);
        gate.set(|g| g.2 = true);
        committer.join().expect("committer").expect("commit");
    });
    let after = fs.stats();
    assert_eq!(after.pages_forked - before.pages_forked, 16);
    assert_eq!(locked_work(&before, &after), (0, 0));
    assert_eq!(fs.read(f.ino, 0, new.len() as u32).expect("read"), new);
    drop(fs); // a crash right after the held commit
    let again = Arc::new(MemDevice::from_bytes(dev.inner.snapshot()));
    let fs = Filesystem::mount(again.clone() as Arc<dyn BlockDevice>, options()).expect("mount");
    assert_eq!(fs.read(f.ino, 0, old.len() as u32).expect("read"), old);
    fs.unmount().expect("unmount");
    fsck_clean(again.as_ref());
}
