//! Story: atime through the mount. The kernel keeps no atime for FUSE; the daemon updates
//! it when a READ or READDIR reaches it. A file is written and fsynced, its cached pages are
//! dropped (`posix_fadvise(DONTNEED)`), so the next read reaches the daemon: under the
//! default relatime its atime moves once, and a second uncached read does not move it
//! again; `ls` of a new directory moves the directory's atime. On a mount with
//! `strictatime,nodiratime` every uncached read moves it and directories keep theirs; with
//! `noatime` nothing moves. `stat` sees the new value at once (the kernel invalidates its
//! cached atime after a read), and it is on the image after a remount.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::Mount;

fn atime(path: &Path) -> (i64, i64) {
    let m = std::fs::metadata(path).expect("stat");
    (m.atime(), m.atime_nsec())
}

/// Reads the whole file after dropping its (clean) cached pages, so the read reaches the
/// daemon.
fn uncached_read(path: &Path) {
    let mut f = File::open(path).expect("open");
    // SAFETY: plain syscall on a descriptor this function owns.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "fadvise");
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).expect("read");
    assert_eq!(buf.len(), 10_000);
}

fn written(m: &Mount, name: &str) -> std::path::PathBuf {
    let path = m.path(name);
    let mut f = File::create(&path).expect("create");
    f.write_all(&[3u8; 10_000]).expect("write");
    f.sync_all().expect("fsync");
    path
}

fn pause() {
    std::thread::sleep(std::time::Duration::from_millis(20));
}

/// Sets the atime of `path` to the epoch plus `sec` (utimensat, mtime untouched): its
/// ctime becomes now.
fn set_atime(path: &Path, sec: i64) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    let times = [
        libc::timespec {
            tv_sec: sec,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    ];
    // SAFETY: `c` is NUL-terminated and `times` holds the two entries utimensat reads.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(rc, 0, "utimensat: {}", std::io::Error::last_os_error());
}

#[test]
fn relatime_by_default() {
    let Some(mut m) = Mount::new("atime-rel", 64 << 20) else {
        return;
    };
    let f = written(&m, "f");
    // The kernel may itself have read pages around the write (that counts as an access):
    // start from an atime before mtime and ctime.
    set_atime(&f, 1_000_000_000);
    pause();
    uncached_read(&f);
    let first = atime(&f);
    assert!(
        first.0 > 1_000_000_000,
        "relatime: atime before mtime is updated"
    );
    pause();
    uncached_read(&f);
    assert_eq!(atime(&f), first, "relatime: not again");
    let d = m.path("d");
    std::fs::create_dir(&d).expect("mkdir");
    let dir_before = atime(&d);
    pause();
    assert_eq!(std::fs::read_dir(&d).expect("ls").count(), 0);
    let dir_read = atime(&d);
    assert!(dir_read > dir_before, "readdir updates a directory's atime");
    m.remount();
    assert_eq!(atime(&m.path("f")), first);
    assert_eq!(atime(&m.path("d")), dir_read);
    m.finish();
}

#[test]
fn strictatime_nodiratime_and_noatime() {
    let Some(m) = Mount::with_options("atime-strict", 64 << 20, &["strictatime", "nodiratime"])
    else {
        return;
    };
    let f = written(&m, "f");
    let mut last = atime(&f);
    for _ in 0..2 {
        pause();
        uncached_read(&f);
        let now = atime(&f);
        assert!(
            now > last,
            "strictatime: every read that reaches the daemon"
        );
        last = now;
    }
    let d = m.path("d");
    std::fs::create_dir(&d).expect("mkdir");
    let dir_before = atime(&d);
    pause();
    std::fs::read_dir(&d).expect("ls").for_each(drop);
    assert_eq!(atime(&d), dir_before, "nodiratime");
    m.finish();

    let Some(m) = Mount::with_options("atime-none", 64 << 20, &["noatime"]) else {
        return;
    };
    let f = written(&m, "f");
    let before = atime(&f);
    pause();
    uncached_read(&f);
    assert_eq!(atime(&f), before, "noatime");
    m.finish();
}
