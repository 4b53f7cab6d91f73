//! Story: an administrator protects files with chattr through the engine's API. An
//! immutable file refuses every change (write, truncate, chmod, chown, utimes, xattrs,
//! link, unlink, rename as source and as the replaced target, open for writing) with
//! EPERM and is unchanged afterwards; an append-only file takes appends (also the
//! writeback cache's page-sized writes that repeat the old bytes) and refuses the rest; an
//! immutable directory takes no new or removed entries, an append-only one takes new
//! entries but loses none; new inodes inherit S, A, d, D, P and the project id; the flags
//! and project id survive unmount and a crash; a sync (S) file's write is durable when
//! the call returns; a read-only mount refuses chattr; and fsck finds the image clean.

use std::sync::Arc;
use std::time::Duration;

use tuxfs_engine::Errno;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::format::inode::Timestamp;
use tuxfs_engine::fs::flags::{
    FS_APPEND_FL, FS_DIRSYNC_FL, FS_IMMUTABLE_FL, FS_NOATIME_FL, FS_NODUMP_FL, FS_PROJINHERIT_FL,
    FS_SYNC_FL, FileFlags, FlagsCaller, FlagsChange, OpenIntent,
};
use tuxfs_engine::fs::{Filesystem, MountOptions, RenameFlags, SetAttr, TimeSet, XattrFlags};
use tuxfs_tests::fixture::{self, USER as ME, mem_device};

const ROOT: u64 = 1;
const ROOT_CALLER: FlagsCaller = FlagsCaller {
    uid: 0,
    fowner: true,
    linux_immutable: true,
};

fn mount(dev: &Arc<MemDevice>) -> Arc<Filesystem> {
    let opts = MountOptions {
        // Nothing is committed behind the test's back (the crash cases rely on it).
        commit_interval: Duration::from_secs(3600),
        ..MountOptions::default()
    };
    fixture::mount(dev, opts)
}

fn chattr(fs: &Filesystem, ino: u64, flags: u32) {
    let change = FlagsChange {
        flags,
        mask: u32::MAX,
        projid: None,
    };
    fs.set_file_flags(ino, change, ROOT_CALLER)
        .expect("chattr as root");
}

fn file(fs: &Filesystem, parent: u64, name: &[u8], data: &[u8]) -> u64 {
    let ino = fs.create(parent, name, 0o644, ME).expect("create").ino;
    fs.write(ino, 0, data, false).expect("write");
    fs.release(ino).expect("release");
    ino
}

fn eperm<T: std::fmt::Debug>(what: &str, r: tuxfs_engine::Result<T>) {
    match r {
        Err(e) => assert_eq!(e.errno(), Errno::Perm, "{what}: {e}"),
        Ok(v) => panic!("{what} succeeded ({v:?}) on a protected inode"),
    }
}

fn xattr() -> XattrFlags {
    XattrFlags::default()
}

#[test]
fn immutable_file_refuses_every_change() {
    let dev = mem_device(4096, 4096);
    let fs = mount(&dev);
    let f = file(&fs, ROOT, b"f", b"frozen");
    fs.setxattr(f, b"user.k", b"v", xattr()).expect("xattr");
    let other = file(&fs, ROOT, b"other", b"o");
    chattr(&fs, f, FS_IMMUTABLE_FL);
    let before = fs.getattr(f).expect("getattr");
    let at = TimeSet::At(Timestamp { sec: 5, nsec: 0 });
    eperm("write", fs.write(f, 0, b"x", false));
    eperm("append", fs.write(f, 0, b"x", true));
    for (what, set) in [
        (
            "truncate",
            SetAttr {
                size: Some(0),
                ..SetAttr::default()
            },
        ),
        (
            "chmod",
            SetAttr {
                mode: Some(0o600),
                ..SetAttr::default()
            },
        ),
        (
            "chown",
            SetAttr {
                uid: Some(7),
                ..SetAttr::default()
            },
        ),
        (
            "utimes",
            SetAttr {
                mtime: Some(at),
                ..SetAttr::default()
            },
        ),
        (
            "touch",
            SetAttr {
                atime: Some(TimeSet::Now),
                ..SetAttr::default()
            },
        ),
    ] {
        eperm(what, fs.setattr(f, &set));
    }
    eperm("setxattr", fs.setxattr(f, b"user.n", b"v", xattr()));
    eperm("removexattr", fs.removexattr(f, b"user.k"));
    eperm("link", fs.link(f, ROOT, b"f2"));
    eperm("unlink", fs.unlink(ROOT, b"f"));
    eperm(
        "rename",
        fs.rename(ROOT, b"f", ROOT, b"g", RenameFlags::default()),
    );
    eperm(
        "rename over",
        fs.rename(ROOT, b"other", ROOT, b"f", RenameFlags::default()),
    );
    let exchange = RenameFlags {
        exchange: true,
        ..RenameFlags::default()
    };
    eperm("exchange", fs.rename(ROOT, b"other", ROOT, b"f", exchange));
    for how in [
        OpenIntent {
            write: true,
            ..OpenIntent::default()
        },
        OpenIntent {
            write: true,
            append: true,
            ..OpenIntent::default()
        },
        OpenIntent {
            truncate: true,
            ..OpenIntent::default()
        },
    ] {
        eperm("open for writing", fs.check_open(f, how));
    }
    fs.check_open(f, OpenIntent::default())
        .expect("open for reading");
    assert_eq!(
        fs.getattr(f).expect("getattr"),
        before,
        "attributes changed"
    );
    // Read last: a read may move atime (relatime), which immutability does not stop.
    assert_eq!(fs.read(f, 0, 100).expect("read"), b"frozen");
    assert_eq!(fs.lookup(ROOT, b"other").expect("other").ino, other);
    // Cleared, it changes again.
    chattr(&fs, f, 0);
    fs.write(f, 0, b"thawed", false)
        .expect("write after chattr -i");
    fs.unmount().expect("unmount");
    fixture::fsck_clean(dev.as_ref());
}

#[test]
fn append_only_file_takes_appends_only() {
    let dev = mem_device(4096, 4096);
    let fs = mount(&dev);
    let f = file(&fs, ROOT, b"log", b"line 1\n");
    chattr(&fs, f, FS_APPEND_FL);
    fs.write(f, 0, b"line 2\n", true).expect("O_APPEND write");
    fs.write(f, 14, b"line 3\n", false)
        .expect("write at the end");
    // The writeback cache writes the whole page: old bytes unchanged, new ones after.
    fs.write(f, 0, b"line 1\nline 2\nline 3\nline 4\n", false)
        .expect("page write repeating the old bytes");
    eperm(
        "overwrite",
        fs.write(f, 0, b"LINE 1\nline 2\nline 3\nline 4\nline 5\n", false),
    );
    eperm("overwrite in the middle", fs.write(f, 7, b"x", false));
    eperm(
        "truncate",
        fs.setattr(
            f,
            &SetAttr {
                size: Some(0),
                ..SetAttr::default()
            },
        ),
    );
    eperm(
        "chmod",
        fs.setattr(
            f,
            &SetAttr {
                mode: Some(0o600),
                ..SetAttr::default()
            },
        ),
    );
    let mtime = TimeSet::At(Timestamp { sec: 9, nsec: 0 });
    fs.setattr(
        f,
        &SetAttr {
            mtime: Some(mtime),
            ..SetAttr::default()
        },
    )
    .expect("the writeback cache's mtime after an append");
    eperm("unlink", fs.unlink(ROOT, b"log"));
    eperm(
        "rename",
        fs.rename(ROOT, b"log", ROOT, b"old", RenameFlags::default()),
    );
    eperm("link", fs.link(f, ROOT, b"log2"));
    eperm("setxattr", fs.setxattr(f, b"user.n", b"v", xattr()));
    let write = OpenIntent {
        write: true,
        ..OpenIntent::default()
    };
    eperm("open for writing without O_APPEND", fs.check_open(f, write));
    let trunc = OpenIntent {
        write: true,
        append: true,
        truncate: true,
    };
    eperm("open with O_TRUNC", fs.check_open(f, trunc));
    fs.check_open(
        f,
        OpenIntent {
            append: true,
            ..write
        },
    )
    .expect("open with O_APPEND");
    assert_eq!(
        fs.read(f, 0, 100).expect("read"),
        b"line 1\nline 2\nline 3\nline 4\n"
    );
    fs.unmount().expect("unmount");
    fixture::fsck_clean(dev.as_ref());
}

#[test]
fn protected_directories_keep_their_entries() {
    let dev = mem_device(4096, 4096);
    let fs = mount(&dev);
    let frozen = fs.mkdir(ROOT, b"frozen", 0o755, ME).expect("mkdir").ino;
    let log = fs.mkdir(ROOT, b"log", 0o755, ME).expect("mkdir").ino;
    file(&fs, frozen, b"a", b"a");
    file(&fs, log, b"a", b"a");
    chattr(&fs, frozen, FS_IMMUTABLE_FL);
    chattr(&fs, log, FS_APPEND_FL);
    // Immutable: nothing comes or goes.
    eperm("create", fs.create(frozen, b"new", 0o644, ME));
    eperm("mkdir", fs.mkdir(frozen, b"sub", 0o755, ME));
    eperm("symlink", fs.symlink(frozen, b"s", b"t", ME));
    eperm("unlink", fs.unlink(frozen, b"a"));
    eperm(
        "rename out",
        fs.rename(frozen, b"a", ROOT, b"a", RenameFlags::default()),
    );
    let x = file(&fs, ROOT, b"x", b"x");
    eperm(
        "rename in",
        fs.rename(ROOT, b"x", frozen, b"x", RenameFlags::default()),
    );
    eperm("link in", fs.link(x, frozen, b"x"));
    // Append-only (the kernel's rule, as ext4): entries come, none go.
    let n = fs
        .create(log, b"new", 0o644, ME)
        .expect("create in +a dir")
        .ino;
    fs.release(n).expect("release");
    fs.rename(ROOT, b"x", log, b"x", RenameFlags::default())
        .expect("rename into +a dir");
    eperm("unlink", fs.unlink(log, b"a"));
    eperm(
        "rename out",
        fs.rename(log, b"a", ROOT, b"a", RenameFlags::default()),
    );
    eperm(
        "rename within",
        fs.rename(log, b"a", log, b"b", RenameFlags::default()),
    );
    let names: Vec<_> = fs
        .readdir(log, 0, 100)
        .expect("readdir")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names.len(), 5, "{names:?}"); // . .. a new x
    fs.unmount().expect("unmount");
    fixture::fsck_clean(dev.as_ref());
}

#[test]
fn new_inodes_inherit_flags_and_project_and_flags_survive_remount_and_crash() {
    let dev = mem_device(4096, 4096);
    let fs = mount(&dev);
    let d = fs.mkdir(ROOT, b"proj", 0o755, ME).expect("mkdir").ino;
    let change = FlagsChange {
        flags: FS_PROJINHERIT_FL | FS_DIRSYNC_FL | FS_NODUMP_FL | FS_NOATIME_FL,
        mask: u32::MAX,
        projid: Some(4242),
    };
    fs.set_file_flags(d, change, ROOT_CALLER)
        .expect("chattr +PDdA -p 4242");
    let f = file(&fs, d, b"f", b"data");
    let sub = fs.mkdir(d, b"sub", 0o755, ME).expect("mkdir").ino;
    let want_f = FileFlags {
        flags: FS_NODUMP_FL | FS_NOATIME_FL,
        projid: 4242,
    };
    let want_sub = FileFlags {
        flags: change.flags,
        projid: 4242,
    };
    assert_eq!(
        fs.file_flags(f).expect("flags"),
        want_f,
        "a file takes no D or P"
    );
    assert_eq!(fs.file_flags(sub).expect("flags"), want_sub);
    // Another project's file cannot be linked or moved in (EXDEV: the caller copies).
    let outsider = file(&fs, ROOT, b"outsider", b"o");
    let e = fs
        .link(outsider, d, b"o")
        .expect_err("link across projects");
    assert_eq!(e.errno(), Errno::CrossDevice);
    let e = fs
        .rename(ROOT, b"outsider", d, b"o", RenameFlags::default())
        .expect_err("rename across projects");
    assert_eq!(e.errno(), Errno::CrossDevice);
    chattr(&fs, f, FS_IMMUTABLE_FL | FS_NODUMP_FL | FS_NOATIME_FL);
    fs.unmount().expect("unmount");
    fixture::fsck_clean(dev.as_ref());
    let fs = mount(&dev);
    let frozen = FileFlags {
        flags: FS_IMMUTABLE_FL | FS_NODUMP_FL | FS_NOATIME_FL,
        projid: 4242,
    };
    assert_eq!(fs.file_flags(f).expect("flags"), frozen);
    assert_eq!(fs.file_flags(d).expect("flags"), want_sub);
    // A flags change the log holds survives a crash.
    chattr(&fs, f, FS_NODUMP_FL);
    fs.sync().expect("sync");
    drop(fs);
    let fs = mount(&dev);
    let after = FileFlags {
        flags: FS_NODUMP_FL,
        projid: 4242,
    };
    assert_eq!(fs.file_flags(f).expect("flags after the crash"), after);
    fs.unmount().expect("unmount");
    fixture::fsck_clean(dev.as_ref());
}

#[test]
fn a_sync_files_write_is_durable_when_it_returns() {
    let dev = mem_device(4096, 4096);
    let fs = mount(&dev);
    let s = file(&fs, ROOT, b"s", b"");
    let plain = file(&fs, ROOT, b"plain", b"");
    chattr(&fs, s, FS_SYNC_FL);
    fs.sync().expect("sync");
    fs.write(s, 0, b"synchronous", false).expect("write");
    fs.write(plain, 0, b"buffered", false).expect("write");
    // A crash: only what was committed survives (commit interval one hour).
    drop(fs);
    let fs = mount(&dev);
    assert_eq!(fs.read(s, 0, 100).expect("read"), b"synchronous");
    assert_eq!(
        fs.read(plain, 0, 100).expect("read"),
        b"",
        "the control was committed"
    );
    fs.unmount().expect("unmount");
}

#[test]
fn read_only_mount_refuses_chattr_and_unknown_flags_change_nothing() {
    let dev = mem_device(4096, 4096);
    let fs = mount(&dev);
    let f = file(&fs, ROOT, b"f", b"x");
    chattr(&fs, f, FS_NODUMP_FL);
    let change = FlagsChange {
        flags: FS_NODUMP_FL | 0x0008_0000, // FS_EXTENT_FL: not stored by tuxfs
        mask: u32::MAX,
        projid: None,
    };
    let e = fs
        .set_file_flags(f, change, ROOT_CALLER)
        .expect_err("unknown flag");
    assert_eq!(e.errno(), Errno::NotSupported);
    assert_eq!(fs.file_flags(f).expect("flags").flags, FS_NODUMP_FL);
    fs.unmount().expect("unmount");
    let ro = fixture::mount(
        &dev,
        MountOptions {
            read_only: true,
            ..MountOptions::default()
        },
    );
    assert_eq!(ro.file_flags(f).expect("flags").flags, FS_NODUMP_FL);
    let e = ro
        .set_file_flags(
            f,
            FlagsChange {
                flags: 0,
                mask: u32::MAX,
                projid: None,
            },
            ROOT_CALLER,
        )
        .expect_err("read-only");
    assert_eq!(e.errno(), Errno::ReadOnly);
    ro.unmount().expect("unmount");
}

#[test]
fn a_dirsync_directorys_entries_are_durable_when_the_call_returns() {
    let dev = mem_device(4096, 4096);
    let fs = mount(&dev);
    let d = fs.mkdir(ROOT, b"d", 0o755, ME).expect("mkdir").ino;
    let plain = fs.mkdir(ROOT, b"plain", 0o755, ME).expect("mkdir").ino;
    file(&fs, d, b"old", b"");
    chattr(&fs, d, FS_DIRSYNC_FL);
    fs.sync().expect("sync");
    file(&fs, d, b"new", b"");
    fs.unlink(d, b"old").expect("unlink");
    file(&fs, plain, b"buffered", b"");
    // A crash: only what was committed survives (commit interval one hour).
    drop(fs);
    let fs = mount(&dev);
    fs.lookup(d, b"new")
        .expect("the create in the dirsync directory survived");
    let gone = fs.lookup(d, b"old").expect_err("the unlink survived");
    assert_eq!(gone.errno(), Errno::NoEntry);
    // The control: the create in the plain directory was not committed.
    let e = fs.lookup(plain, b"buffered").expect_err("control");
    assert_eq!(e.errno(), Errno::NoEntry);
    fs.unmount().expect("unmount");
}

#[test]
fn fallocate_and_copy_file_range_respect_the_flags() {
    const KEEP_SIZE: u32 = 0x01;
    const PUNCH_HOLE: u32 = 0x02;
    const ZERO_RANGE: u32 = 0x10;
    let dev = mem_device(4096, 4096);
    let fs = mount(&dev);
    let frozen = file(&fs, ROOT, b"frozen", b"frozen bytes");
    let log = file(&fs, ROOT, b"log", b"appended so far");
    let src = file(&fs, ROOT, b"src", b"source bytes");
    chattr(&fs, frozen, FS_IMMUTABLE_FL);
    chattr(&fs, log, FS_APPEND_FL);
    // Immutable: no mode at all, and no copy into it (vfs_fallocate, generic_copy_file_checks).
    for mode in [0, KEEP_SIZE, PUNCH_HOLE | KEEP_SIZE, ZERO_RANGE] {
        eperm("fallocate immutable", fs.fallocate(frozen, 0, 4096, mode));
    }
    eperm(
        "copy into immutable",
        fs.copy_file_range(src, 0, frozen, 0, 6, 0),
    );
    // Append-only: allocation changes no byte and is allowed; punch and zero are not.
    fs.fallocate(log, 0, 8192, KEEP_SIZE)
        .expect("preallocate an append-only file");
    eperm(
        "punch append-only",
        fs.fallocate(log, 0, 4096, PUNCH_HOLE | KEEP_SIZE),
    );
    eperm("zero append-only", fs.fallocate(log, 0, 4096, ZERO_RANGE));
    assert_eq!(
        fs.read(frozen, 0, 64).expect("read"),
        b"frozen bytes",
        "the immutable file is unchanged"
    );
    assert_eq!(fs.read(log, 0, 64).expect("read"), b"appended so far");
}
