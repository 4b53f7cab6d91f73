//! Story: reads and readdir update atime by the mount's policy (engine/src/fs/atime.rs).
//! Under the default relatime a file read after it was written gets a new atime once, and
//! again only after the next write or when its atime is a day old; strictatime updates at
//! every read; noatime never; nodiratime leaves directories alone. A remount (reconfigure)
//! changes the policy at run time, a read-only mount updates nothing, and the updated
//! atime is on disk after a remount, fsck clean.

use std::sync::Arc;

use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::format::inode::Timestamp;
use tuxfs_engine::fs::{
    AtimeMode, AtimePolicy, Filesystem, MountOptions, Reconfigure, SetAttr, TimeSet,
};
use tuxfs_tests::fixture::{SUPERUSER as ME, fsck_clean, mem_device, mount};

const ROOT: u64 = 1;

fn policy(mode: AtimeMode, nodiratime: bool) -> AtimePolicy {
    AtimePolicy { mode, nodiratime }
}

fn atime(fs: &Filesystem, ino: u64) -> Timestamp {
    fs.getattr(ino).expect("getattr").atime
}

fn pause() {
    std::thread::sleep(std::time::Duration::from_millis(2));
}

fn with(dev: &Arc<MemDevice>, p: AtimePolicy) -> Arc<Filesystem> {
    mount(
        dev,
        MountOptions {
            atime: p,
            ..MountOptions::default()
        },
    )
}

#[test]
fn relatime_by_default() {
    let dev = mem_device(4096, 4096);
    let fs = mount(&dev, MountOptions::default());
    assert_eq!(fs.atime_policy(), policy(AtimeMode::RelAtime, false));
    let f = fs.create(ROOT, b"f", 0o644, ME).expect("create");
    fs.write(f.ino, 0, b"data", false).expect("write");
    let written = fs.getattr(f.ino).expect("getattr");
    pause();
    fs.read(f.ino, 0, 4).expect("read");
    let first = atime(&fs, f.ino);
    assert!(
        first > written.mtime,
        "the first read after a write updates atime"
    );
    pause();
    fs.read(f.ino, 0, 4).expect("read");
    assert_eq!(
        atime(&fs, f.ino),
        first,
        "atime after mtime and ctime: kept"
    );
    fs.write(f.ino, 0, b"more", false).expect("write");
    pause();
    fs.read(f.ino, 0, 4).expect("read");
    assert!(atime(&fs, f.ino) > first, "read after a new write");

    // A day-old atime is updated even when it is after mtime and ctime.
    let day = 24 * 60 * 60;
    let now = fs.getattr(f.ino).expect("getattr").ctime;
    let old = |s: i64| Timestamp {
        sec: now.sec - s,
        nsec: 0,
    };
    let set = |a: i64, m: i64, c: i64| {
        fs.setattr(
            f.ino,
            &SetAttr {
                atime: Some(TimeSet::At(old(a))),
                mtime: Some(TimeSet::At(old(m))),
                ctime: Some(old(c)),
                ..SetAttr::default()
            },
        )
        .expect("utimensat");
    };
    set(day - 60, day + 60, day + 60);
    fs.read(f.ino, 0, 4).expect("read");
    assert_eq!(atime(&fs, f.ino), old(day - 60), "not a day old yet");
    set(day + 60, day + 120, day + 120);
    fs.read(f.ino, 0, 4).expect("read");
    assert!(atime(&fs, f.ino) >= now, "a day old: updated");

    // Directories: readdir counts as an access.
    let d = fs.mkdir(ROOT, b"d", 0o755, ME).expect("mkdir");
    pause();
    fs.readdir(d.ino, 0, 10).expect("readdir");
    let dir_read = atime(&fs, d.ino);
    assert!(dir_read > d.atime);
    fs.unmount().expect("unmount");
    fsck_clean(dev.as_ref());
    let fs = mount(&dev, MountOptions::default());
    assert_eq!(atime(&fs, d.ino), dir_read, "on disk");
    fs.unmount().expect("unmount");
}

#[test]
fn strictatime_noatime_nodiratime_and_reconfigure() {
    let dev = mem_device(4096, 4096);
    let fs = with(&dev, policy(AtimeMode::StrictAtime, true));
    let f = fs.create(ROOT, b"f", 0o644, ME).expect("create");
    fs.write(f.ino, 0, b"data", false).expect("write");
    let d = fs.mkdir(ROOT, b"d", 0o755, ME).expect("mkdir");
    let mut last = atime(&fs, f.ino);
    for _ in 0..3 {
        pause();
        fs.read(f.ino, 0, 4).expect("read");
        let now = atime(&fs, f.ino);
        assert!(now > last, "strictatime: every read");
        last = now;
    }
    pause();
    fs.readdir(d.ino, 0, 10).expect("readdir");
    assert_eq!(atime(&fs, d.ino), d.atime, "nodiratime");

    fs.reconfigure(&Reconfigure {
        atime: Some(policy(AtimeMode::NoAtime, false)),
        ..Reconfigure::default()
    });
    fs.write(f.ino, 0, b"new!", false).expect("write");
    pause();
    fs.read(f.ino, 0, 4).expect("read");
    fs.readdir(d.ino, 0, 10).expect("readdir");
    assert_eq!(atime(&fs, f.ino), last, "noatime: never");
    assert_eq!(atime(&fs, d.ino), d.atime, "noatime: never");

    fs.reconfigure(&Reconfigure {
        atime: Some(policy(AtimeMode::RelAtime, false)),
        ..Reconfigure::default()
    });
    fs.readdir(d.ino, 0, 10).expect("readdir");
    assert!(atime(&fs, d.ino) > d.atime, "diratime again");
    fs.unmount().expect("unmount");

    // Read-only: reads work and change nothing.
    let fs = mount(
        &dev,
        MountOptions {
            read_only: true,
            atime: policy(AtimeMode::StrictAtime, false),
            ..MountOptions::default()
        },
    );
    let before = atime(&fs, f.ino);
    assert_eq!(fs.read(f.ino, 0, 4).expect("read"), b"new!");
    assert_eq!(atime(&fs, f.ino), before);
    fs.unmount().expect("unmount");
    fsck_clean(dev.as_ref());
}

/// chattr +A (FS_NOATIME_FL) keeps a file's atime even under strictatime, as the kernel's
/// S_NOATIME does on ext4.
#[test]
fn the_noatime_file_flag_keeps_atime() {
    use tuxfs_engine::fs::flags::{FS_NOATIME_FL, FlagsCaller, FlagsChange};
    let dev = mem_device(4096, 4096);
    let fs = with(&dev, policy(AtimeMode::StrictAtime, false));
    let f = fs.create(ROOT, b"f", 0o644, ME).expect("create");
    fs.write(f.ino, 0, b"data", false).expect("write");
    let change = FlagsChange {
        flags: FS_NOATIME_FL,
        mask: u32::MAX,
        projid: None,
    };
    let root = FlagsCaller {
        uid: 0,
        fowner: true,
        linux_immutable: true,
    };
    fs.set_file_flags(f.ino, change, root).expect("chattr +A");
    let before = atime(&fs, f.ino);
    pause();
    fs.read(f.ino, 0, 4).expect("read");
    assert_eq!(atime(&fs, f.ino), before, "a +A file's atime moved");
}
