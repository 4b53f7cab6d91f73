//! Story: a filesystem is created in memory, mounted through the engine API, used for the
//! common POSIX operations, unmounted, checked by fsck, mounted again and found as it was.
//! A second part drops the mount without unmounting (a crash with all writes landed) and
//! checks that recovery replays every committed delta.

use tuxfs_engine::Errno;
use tuxfs_engine::format::inode::Timestamp;
use tuxfs_engine::fs::{RenameFlags, SetAttr};
use tuxfs_engine::mkfs::{MkfsParams, format_device};
use tuxfs_tests::fixture::{
    NOW, USER as ME, UUID, fsck_clean, mem_device, mkfs_params, mount_default,
};

const ROOT: u64 = 1;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn files_directories_links_survive_remount() {
    for bs in [512u32, 4096] {
        let dev = mem_device(bs, 8192);
        let fs = mount_default(&dev);
        let a = fs.create(ROOT, b"a.txt", 0o644, ME).expect("create");
        fs.write(a.ino, 0, b"hello, world", false).expect("write");
        fs.write(a.ino, 0, b"HELLO", false).expect("overwrite");
        fs.write(a.ino, 0, b"!", true).expect("append");
        fs.release(a.ino).expect("release");
        let d = fs.mkdir(ROOT, b"dir", 0o755, ME).expect("mkdir");
        let sub = fs.mkdir(d.ino, b"sub", 0o700, ME).expect("mkdir");
        let big = fs.create(sub.ino, b"big", 0o600, ME).expect("create");
        let content = pattern(300_000, 7);
        fs.write(big.ino, 0, &content, false).expect("write big");
        fs.release(big.ino).expect("release");
        let sparse = fs.create(ROOT, b"sparse", 0o644, ME).expect("create");
        fs.write(sparse.ino, 10 << 20, b"end", false)
            .expect("sparse write");
        fs.release(sparse.ino).expect("release");
        fs.link(a.ino, d.ino, b"a-link").expect("link");
        fs.symlink(ROOT, b"sym", b"dir/sub/big", ME)
            .expect("symlink");
        fs.rename(ROOT, b"a.txt", d.ino, b"moved.txt", RenameFlags::default())
            .expect("rename");
        assert_eq!(
            fs.lookup(ROOT, b"a.txt").map_err(|e| e.errno()),
            Err(Errno::NoEntry)
        );
        assert_eq!(fs.getattr(a.ino).expect("getattr").nlink, 2);
        assert_eq!(
            fs.getattr(ROOT).expect("root").nlink,
            4,
            "root: ., lost+found, dir"
        );
        fs.sync().expect("sync");
        fs.unmount().expect("unmount");
        drop(fs);
        let report = fsck_clean(dev.as_ref());
        // root, lost+found, a.txt, dir, sub, big, sparse, sym
        assert_eq!(report.stats.inodes, 8, "{report:?}");
        assert!(
            report.stats.data_blocks_verified >= 300_000 / u64::from(bs),
            "{report:?}"
        );

        let fs = mount_default(&dev);
        let moved = fs.lookup(d.ino, b"moved.txt").expect("lookup moved");
        assert_eq!(fs.read(moved.ino, 0, 100).expect("read"), b"HELLO, world!");
        let big = fs.lookup(sub.ino, b"big").expect("lookup big");
        assert_eq!(fs.read(big.ino, 0, 400_000).expect("read big"), content);
        let sp = fs.lookup(ROOT, b"sparse").expect("sparse");
        assert_eq!(sp.size, (10 << 20) + 3);
        assert!(
            sp.blocks * 512 < 64 * 1024,
            "holes take no space: {} blocks",
            sp.blocks
        );
        assert_eq!(fs.read(sp.ino, 5 << 20, 8).expect("hole"), vec![0; 8]);
        assert_eq!(
            fs.readlink(fs.lookup(ROOT, b"sym").expect("sym").ino)
                .expect("readlink"),
            b"dir/sub/big"
        );
        let names: Vec<Vec<u8>> = fs
            .readdir(d.ino, 0, 100)
            .expect("readdir")
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names.len(), 5, "., .., sub, a-link, moved.txt: {names:?}");
        // Truncate, unlink, rmdir.
        fs.setattr(
            big.ino,
            &SetAttr {
                size: Some(1000),
                ..SetAttr::default()
            },
        )
        .expect("truncate");
        assert_eq!(fs.read(big.ino, 0, 5000).expect("read"), content[..1000]);
        fs.unlink(sub.ino, b"big").expect("unlink");
        assert_eq!(
            fs.rmdir(ROOT, b"dir").map_err(|e| e.errno()),
            Err(Errno::NotEmpty)
        );
        fs.rmdir(d.ino, b"sub").expect("rmdir");
        fs.unmount().expect("unmount");
        drop(fs);
        fsck_clean(dev.as_ref());
    }
}

#[test]
fn crash_after_commit_replays_the_log() {
    let dev = mem_device(4096, 4096);
    let fs = mount_default(&dev);
    let f = fs.create(ROOT, b"f", 0o644, ME).expect("create");
    fs.write(f.ino, 0, &pattern(50_000, 1), false)
        .expect("write");
    fs.fsync(f.ino, false).expect("fsync");
    fs.write(f.ino, 50_000, &pattern(10_000, 2), false)
        .expect("write 2");
    fs.fsync(f.ino, false).expect("fsync 2");
    fs.write(f.ino, 0, b"not synced", false)
        .expect("unsynced write");
    // Crash: drop without unmount. The last write was never committed.
    drop(fs);
    fsck_clean(dev.as_ref());
    let fs = mount_default(&dev);
    let f2 = fs.lookup(ROOT, b"f").expect("lookup");
    let data = fs.read(f2.ino, 0, 70_000).expect("read");
    let mut want = pattern(50_000, 1);
    want.extend(pattern(10_000, 2));
    assert_eq!(data, want);
    fs.unmount().expect("unmount");
    fsck_clean(dev.as_ref());
}

#[test]
fn unlinked_open_file_lives_until_release_and_orphans_are_destroyed_after_a_crash() {
    let dev = mem_device(4096, 4096);
    let fs = mount_default(&dev);
    let f = fs.create(ROOT, b"tmp", 0o644, ME).expect("create");
    fs.write(f.ino, 0, &pattern(100_000, 5), false)
        .expect("write");
    fs.unlink(ROOT, b"tmp").expect("unlink");
    assert_eq!(
        fs.read(f.ino, 0, 10).expect("still readable"),
        pattern(10, 5)
    );
    fs.sync().expect("sync");
    let free_before = fs.statfs().expect("statfs").bfree;
    drop(fs); // crash with the orphan on disk
    let fs = mount_default(&dev);
    assert!(
        fs.statfs().expect("statfs").bfree > free_before,
        "orphan's blocks were freed at mount"
    );
    assert_eq!(fs.stats().orphans_destroyed, 1);
    fs.unmount().expect("unmount");
    fsck_clean(dev.as_ref());
}

#[test]
fn many_files_in_one_directory() {
    let dev = mem_device(4096, 16384);
    let fs = mount_default(&dev);
    let d = fs.mkdir(ROOT, b"many", 0o755, ME).expect("mkdir");
    for i in 0..5000 {
        let f = fs
            .create(d.ino, format!("file-{i:05}").as_bytes(), 0o644, ME)
            .expect("create");
        fs.release(f.ino).expect("release");
    }
    fs.unmount().expect("unmount");
    fsck_clean(dev.as_ref());
    let fs = mount_default(&dev);
    let mut seen = 0;
    let mut cookie = 0;
    loop {
        let batch = fs.readdir(d.ino, cookie, 128).expect("readdir");
        let Some(last) = batch.last() else { break };
        cookie = last.offset;
        seen += batch
            .iter()
            .filter(|e| e.name != b"." && e.name != b"..")
            .count();
    }
    assert_eq!(seen, 5000);
    for i in (0..5000).step_by(7) {
        fs.lookup(d.ino, format!("file-{i:05}").as_bytes())
            .expect("lookup");
    }
    for i in 0..5000 {
        fs.unlink(d.ino, format!("file-{i:05}").as_bytes())
            .expect("unlink");
    }
    fs.rmdir(ROOT, b"many").expect("rmdir");
    fs.unmount().expect("unmount");
    fsck_clean(dev.as_ref());
}

/// mkfs --force --uuid <the old UUID> over an image whose log still holds deltas: the new
/// filesystem must not replay any of the old one's blocks (the block id mixes in the hash
/// seed, which every mkfs draws afresh).
#[test]
fn reformat_with_the_same_uuid_does_not_revive_the_old_log() {
    let dev = mem_device(4096, 4096);
    let fs = mount_default(&dev);
    for i in 0..20 {
        let f = fs
            .create(ROOT, format!("old-{i}").as_bytes(), 0o644, ME)
            .expect("create");
        fs.write(f.ino, 0, &pattern(5000, i as u8), false)
            .expect("write");
        fs.release(f.ino).expect("release");
        fs.sync().expect("sync");
    }
    drop(fs); // crash: the log holds the deltas
    let p = MkfsParams {
        uuid: UUID,         // the same UUID as mem_device gives
        hash_seed: [4; 16], // a new seed, as every real mkfs draws
        now: Timestamp {
            sec: NOW.sec + 1,
            nsec: 0,
        },
        ..mkfs_params(4096, 4096)
    };
    format_device(dev.as_ref(), &p, false).expect("mkfs again");
    for _ in 0..3 {
        let fs = mount_default(&dev);
        let names: Vec<Vec<u8>> = fs
            .readdir(ROOT, 0, 100)
            .expect("readdir")
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(
            names,
            vec![b".".to_vec(), b"..".to_vec(), b"lost+found".to_vec()],
            "old files came back"
        );
        fs.unmount().expect("unmount");
        fsck_clean(dev.as_ref());
    }
}

/// A file deleted and the space used again at once, without a sync in between: the frees
/// of the open delta become allocatable when it commits, so the ENOSPC the second write
/// first meets must turn into a commit and a successful retry, not an error.
#[test]
fn space_freed_by_a_delete_is_usable_before_any_sync() {
    let dev = mem_device(4096, 2048);
    let fs = mount_default(&dev);
    let size = 1200 * 4096;
    let a = fs.create(ROOT, b"a", 0o644, ME).expect("create a");
    fs.write(a.ino, 0, &pattern(size, 1), false)
        .expect("write a");
    fs.release(a.ino).expect("release");
    fs.sync().expect("sync");
    fs.unlink(ROOT, b"a").expect("unlink a");
    let b = fs.create(ROOT, b"b", 0o644, ME).expect("create b");
    fs.write(b.ino, 0, &pattern(size, 2), false)
        .expect("write b into the space a freed");
    fs.release(b.ino).expect("release");
    assert!(fs.stats().space_pressure_commits >= 1);
    assert_eq!(
        fs.read(b.ino, 0, size as u32).expect("read b"),
        pattern(size, 2)
    );
    // A write that cannot fit even after committing still gets ENOSPC.
    let c = fs.create(ROOT, b"c", 0o644, ME).expect("create c");
    assert_eq!(
        fs.write(c.ino, 0, &pattern(size, 3), false)
            .map_err(|e| e.errno()),
        Err(Errno::NoSpace)
    );
    fs.release(c.ino).expect("release");
    fs.unmount().expect("unmount");
    fsck_clean(dev.as_ref());
}

/// The kernel's last SETATTR of a freed inode (times it cached, written back after the
/// last release) succeeds on the inode's tombstone; any other change is ENOENT, and so is
/// everything after the kernel forgets the node.
#[test]
fn a_freed_inode_takes_the_kernels_last_time_update_until_forgotten() {
    use tuxfs_engine::fs::TimeSet;
    let dev = tuxfs_tests::fixture::mem_device(4096, 4096);
    let fs = tuxfs_tests::fixture::mount(&dev, Default::default());
    let ino = fs
        .create(1, b"gone", 0o644, tuxfs_tests::fixture::USER)
        .expect("create")
        .ino;
    fs.write(ino, 0, b"bytes", false).expect("write");
    fs.release(ino).expect("release");
    fs.unlink(1, b"gone").expect("unlink");
    let times = SetAttr {
        mtime: Some(TimeSet::At(Timestamp { sec: 7, nsec: 0 })),
        ctime: Some(Timestamp { sec: 8, nsec: 0 }),
        ..SetAttr::default()
    };
    let attr = fs
        .setattr(ino, &times)
        .expect("the kernel's time write-back");
    assert_eq!((attr.nlink, attr.mtime.sec, attr.ctime.sec), (0, 7, 8));
    let chmod = SetAttr {
        mode: Some(0o600),
        ..SetAttr::default()
    };
    let e = fs.setattr(ino, &chmod).expect_err("chmod of a freed inode");
    assert_eq!(e.errno(), Errno::NoEntry);
    assert_eq!(
        fs.getattr(ino).expect_err("getattr").errno(),
        Errno::NoEntry
    );
    fs.forget(ino);
    let e = fs.setattr(ino, &times).expect_err("after forget");
    assert_eq!(e.errno(), Errno::NoEntry);
}
