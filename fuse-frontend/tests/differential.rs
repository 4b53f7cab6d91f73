//! Story: a program cannot tell tuxfs from ext4. One seeded random sequence of system
//! calls (`tuxfs_tests::differential`) runs on a fresh ext4 loop mount made here and on a
//! fresh tuxfs mount, and every return value, errno, stat field, byte, name, link target
//! and xattr must agree, operation by operation and in whole-tree comparisons; then the
//! tuxfs image is unmounted (fsck clean), mounted again, and compared once more.
//!
//! `TUXFS_DIFF_SEED` replays a run, `TUXFS_DIFF_OPS` sets its length (default 3000),
//! `TUXFS_DIFF_ENABLE` turns on features still pending (docs/TESTING.md). Needs root for
//! the loop mount and mkfs.ext4 (scripts/deps); without them the test skips, and under
//! CI=true fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Mount, have, skip, unmount_with};
use tuxfs_tests::differential::{Config, Data, Differential, Op, Pending, RESEEK_UNCACHED};

/// A fresh ext4 filesystem on a loop device, mounted in a temporary directory.
struct Ext4 {
    dir: PathBuf,
    mounted: bool,
    _tmp: tempfile::TempDir,
}

impl Ext4 {
    /// 512 MiB, 4 KiB blocks (as tuxfs's default), 256-byte inodes (nanosecond times and
    /// times before 1970, which small ext4 images otherwise lack), and `ea_inode` when
    /// `large_xattrs` (xattr values past one block, as tuxfs's spill chains allow).
    fn new(atime: &str, large_xattrs: bool) -> Option<Ext4> {
        if !have(&["mkfs.ext4", "mount", "umount"]) {
            return None;
        }
        let tmp = tempfile::Builder::new()
            .prefix("tuxfs-diff-ext4-")
            .tempdir()
            .expect("temporary directory");
        let image = tmp.path().join("ext4.img");
        let dir = tmp.path().join("mnt");
        std::fs::create_dir(&dir).expect("mountpoint");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(512 << 20))
            .expect("ext4 image");
        common::run(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-b", "4096", "-I", "256"])
                .args(if large_xattrs {
                    &["-O", "ea_inode"][..]
                } else {
                    &[][..]
                })
                .arg(&image),
        );
        let out = Command::new("mount")
            .args(["-o", &format!("loop,{atime}")])
            .arg(&image)
            .arg(&dir)
            .output()
            .expect("run mount");
        if !out.status.success() {
            skip(&format!(
                "cannot loop-mount an ext4 image here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return None;
        }
        Some(Ext4 {
            dir,
            mounted: true,
            _tmp: tmp,
        })
    }

    fn unmount(&mut self) {
        if self.mounted {
            unmount_with(&["umount"], &self.dir);
            self.mounted = false;
        }
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
        }
    }
}

fn work_dir(root: &Path) -> PathBuf {
    let w = root.join("w");
    std::fs::create_dir(&w).unwrap_or_else(|e| panic!("mkdir {}: {e}", w.display()));
    w
}

#[test]
fn tuxfs_answers_every_call_as_ext4_does() {
    let cfg = Config::from_env(
        "cargo test -p tuxfs-fuse --test differential",
        ["ext4", "tuxfs"],
    );
    // relatime pending: reads the kernel serves from its page cache never reach tuxfs, so
    // its atime follows only the reads that miss (SEMANTICS.md, atime): both sides are
    // compared mounted noatime.
    let atime = if cfg.on(Pending::Relatime) {
        "relatime"
    } else {
        "noatime"
    };
    let Some(mut ext4) = Ext4::new(atime, cfg.on(Pending::LargeXattrs)) else {
        return;
    };
    let Some(mut m) = Mount::with_options("differential", 512 << 20, &[atime]) else {
        return;
    };
    // SAFETY: umask(2) only sets the process's mask; both sides see the same one.
    unsafe { libc::umask(0o022) };
    let ops = cfg.ops;
    let mut d = Differential::new(&work_dir(&ext4.dir), &work_dir(&m.dir), cfg);
    let started = std::time::Instant::now();
    let result = d.run().and_then(|()| {
        d.close_all();
        d.compare_trees(ops)
    });
    eprintln!("{} in {:?}", d.report(), started.elapsed());
    if let Err(f) = result {
        panic!("{f}");
    }
    // What tuxfs shows must also be what it wrote: unmount (fsck clean), mount, compare.
    m.remount();
    if let Err(f) = d.compare_trees(ops + 1) {
        panic!("after the remount: {f}");
    }
    m.finish();
    ext4.unmount();
}

/// Regression (found by the suite): utimensat with a time before 1970 and a non-zero
/// nanosecond part came back one second and `1e9 - nsec` off, because the vendored fuser
/// turned the kernel's timespec into a `SystemTime` by subtracting the nanoseconds
/// (vendor/fuser/TUXFS_CHANGES.md, 8).
#[test]
fn times_before_1970_keep_their_nanoseconds() {
    let Some(m) = Mount::new("diff-1969", 64 << 20) else {
        return;
    };
    let f = m.path("f");
    std::fs::write(&f, b"x").expect("write");
    for (sec, nsec) in [
        (-1_000_000_000, 5),
        (-1, 999_999_999),
        (-86_400, 1),
        (-7, 0),
    ] {
        tuxfs_tests::differential::sys::utimensat(&f, [(sec, nsec), (sec + 1, nsec)], false)
            .expect("utimensat");
        let st = tuxfs_tests::differential::sys::stat(&f, false).expect("stat");
        assert_eq!(
            (st.st_atime, st.st_atime_nsec, st.st_mtime, st.st_mtime_nsec),
            (sec, nsec, sec + 1, nsec),
            "utimensat({sec}.{nsec:09})"
        );
    }
    m.finish();
}

/// Found by the long setting (seed 573339150864817569, op 77,088): ext4 answers SEEK_HOLE
/// and SEEK_DATA over an unwritten extent from its page cache, so a read of the extent's
/// zeros (the program's, or the tree comparison's) turns it into data there
/// (`mapping_seek_hole_data`), while tuxfs, which cannot see the kernel's page cache,
/// answers "hole" before and after. The suite asks ext4 again with its clean pages dropped
/// (a named, counted rule); then both agree, and the file positions stay paired.
#[test]
fn seek_over_cached_unwritten_blocks_is_asked_of_ext4_again() {
    let Some(mut ext4) = Ext4::new("noatime", false) else {
        return;
    };
    let Some(m) = Mount::with_options("diff-seek-cached", 64 << 20, &["noatime"]) else {
        return;
    };
    let cfg = Config {
        seed: 0,
        ops: 0,
        enabled: Pending::ALL.to_vec(),
        replay: "cargo test -p tuxfs-fuse --test differential seek_over_cached".into(),
        names: ["ext4".into(), "tuxfs".into()],
        compare_atime: true,
    };
    let mut d = Differential::new(&work_dir(&ext4.dir), &work_dir(&m.dir), cfg);
    let data = |len| Data { len, seed: 1 };
    let seek = |off, whence| Op::Lseek {
        slot: 0,
        off,
        whence,
    };
    let ops = [
        Op::Open {
            slot: 0,
            path: "f".into(),
            flags: libc::O_RDWR | libc::O_CREAT,
            mode: 0o644,
        },
        Op::Pwrite {
            slot: 0,
            off: 0,
            data: data(4096),
        },
        // Blocks 1 and 2 unwritten; the size becomes 12,288.
        Op::Fallocate {
            slot: 0,
            mode: 0,
            off: 4096,
            len: 8192,
        },
        Op::Fsync {
            slot: 0,
            data_only: false,
        },
        seek(0, libc::SEEK_HOLE),
        // The zeros of blocks 1 and 2 into both kernels' page caches.
        Op::Pread {
            slot: 0,
            off: 0,
            len: 12288,
        },
        seek(0, libc::SEEK_HOLE),
        Op::Pread {
            slot: 0,
            off: 4096,
            len: 8192,
        },
        seek(4096, libc::SEEK_DATA),
        // Both positions are where the SEEK_HOLE put them (4096).
        Op::Read { slot: 0, len: 10 },
    ];
    for (i, op) in ops.into_iter().enumerate() {
        if let Err(f) = d.apply(i, op) {
            panic!("{f}");
        }
    }
    // ext4 gave 12,288 and 4096 where tuxfs gave 4096 and ENXIO: two answers asked again.
    assert_eq!(
        d.summary.adjusted.get(RESEEK_UNCACHED),
        Some(&2),
        "{}",
        d.report()
    );
    d.close_all();
    m.finish();
    ext4.unmount();
}
