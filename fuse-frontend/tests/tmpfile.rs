//! Story: programs use `open(dir, O_TMPFILE)` through the mount (the kernel sends
//! FUSE_TMPFILE, the vendored fuser's change 8): the file has no name and no link, is
//! written, and is linked in with `linkat(fd, "", .., AT_EMPTY_PATH)` or, as unprivileged
//! programs do, `linkat(AT_FDCWD, "/proc/self/fd/N", .., AT_SYMLINK_FOLLOW)`; the content
//! is there under the name, also after a remount. One opened with O_EXCL cannot be linked
//! (ENOENT from the kernel), and one never linked leaves nothing behind: the image is
//! fsck-clean at the end.

mod common;

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::Mount;

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path")
}

fn open_tmpfile(dir: &Path, extra: i32) -> File {
    let c = cstr(dir);
    // SAFETY: `c` is NUL-terminated and outlives the call; the descriptor it returns is
    // owned by the File from here on.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_TMPFILE | libc::O_RDWR | extra, 0o640) };
    assert!(fd >= 0, "O_TMPFILE: {}", std::io::Error::last_os_error());
    unsafe { File::from_raw_fd(fd) }
}

/// linkat with the given arguments; the errno on failure.
fn linkat(fd: i32, from: &CString, to: &Path, flags: i32) -> Result<(), i32> {
    let to = cstr(to);
    // SAFETY: both paths are NUL-terminated and outlive the call.
    let rc = unsafe { libc::linkat(fd, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

#[test]
fn tmpfiles_are_written_then_linked_in() {
    let Some(mut m) = Mount::new("tmpfile", 64 << 20) else {
        return;
    };
    let dir = m.path("d");
    std::fs::create_dir(&dir).expect("mkdir");

    let mut f = open_tmpfile(&dir, 0);
    f.write_all(b"linked with AT_EMPTY_PATH").expect("write");
    let meta = f.metadata().expect("fstat");
    assert_eq!((meta.nlink(), meta.mode() & 0o7777), (0, 0o640));
    assert_eq!(std::fs::read_dir(&dir).expect("ls").count(), 0);
    linkat(
        f.as_raw_fd(),
        &CString::new("").unwrap(),
        &dir.join("a"),
        libc::AT_EMPTY_PATH,
    )
    .expect("linkat AT_EMPTY_PATH");
    assert_eq!(f.metadata().expect("fstat").nlink(), 1);
    drop(f);

    let mut g = open_tmpfile(&dir, 0);
    g.write_all(b"linked through /proc").expect("write");
    let proc = CString::new(format!("/proc/self/fd/{}", g.as_raw_fd())).unwrap();
    linkat(
        libc::AT_FDCWD,
        &proc,
        &dir.join("b"),
        libc::AT_SYMLINK_FOLLOW,
    )
    .expect("linkat /proc");
    drop(g);

    let h = open_tmpfile(&dir, libc::O_EXCL);
    let proc = CString::new(format!("/proc/self/fd/{}", h.as_raw_fd())).unwrap();
    assert_eq!(
        linkat(
            libc::AT_FDCWD,
            &proc,
            &dir.join("c"),
            libc::AT_SYMLINK_FOLLOW
        ),
        Err(libc::ENOENT)
    );
    drop(h);

    let mut never = open_tmpfile(&dir, 0);
    never.write_all(&[5u8; 300_000]).expect("write");
    never.sync_all().expect("fsync");
    drop(never);

    let check = |m: &Mount| {
        let mut s = String::new();
        File::open(m.path("d/a"))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "linked with AT_EMPTY_PATH");
        assert_eq!(
            std::fs::read(m.path("d/b")).unwrap(),
            b"linked through /proc"
        );
        let mut names: Vec<_> = std::fs::read_dir(m.path("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
    };
    check(&m);
    m.remount();
    check(&m);
    m.finish();
}
