//! Story: a file server (knfsd, or anything built on `open_by_handle_at(2)`) hands out file
//! handles and expects them to keep working while the file exists, whatever the kernel
//! forgot in between: a cache drop (`echo 3 > /proc/sys/vm/drop_caches`), a `mount -o
//! remount,ro` and back, a full unmount and mount of the image. A handle to a deleted file
//! or directory must then say ESTALE, and so must a handle whose inode number was handed out
//! again to another file (after a crash lost the delta that created the first one): the
//! generation in the handle no longer matches.
//!
//! The FUSE handle is (node id, generation) and carries no mount identity, so the kernel
//! decodes it against whichever mount the caller passes: after an unmount and a new mount
//! of the same image the old handle still opens the same file (knfsd adds its own fsid,
//! which for a FUSE mount comes from the `fsid=` export option).

mod common;

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::Mount;

/// MAX_HANDLE_SZ.
const HANDLE_BYTES_MAX: usize = 128;
/// FILEID_INO64_GEN: what FUSE encodes for a handle without its parent.
const FUSE_HANDLE_TYPE: i32 = 0x81;

/// `struct file_handle` with room for the largest handle.
#[repr(C)]
#[derive(Clone, Copy)]
struct FileHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; HANDLE_BYTES_MAX],
}

impl FileHandle {
    /// The FUSE handle's fields: node id and generation (u32 words in the kernel's byte
    /// order, so host order is the right one: this is not an on-disk format).
    #[allow(clippy::host_endian_bytes)]
    fn node_and_generation(&self) -> (u64, u32) {
        assert_eq!(
            self.handle_type, FUSE_HANDLE_TYPE,
            "not a FUSE inode handle"
        );
        assert_eq!(self.handle_bytes, 12, "FUSE handle of 3 words");
        let word = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&self.f_handle[i * 4..i * 4 + 4]);
            u32::from_ne_bytes(b)
        };
        ((u64::from(word(0)) << 32) | u64::from(word(1)), word(2))
    }
}

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

/// name_to_handle_at(AT_FDCWD, path, ..., 0).
fn handle_of(path: &Path) -> FileHandle {
    let mut h = FileHandle {
        handle_bytes: HANDLE_BYTES_MAX as u32,
        handle_type: 0,
        f_handle: [0; HANDLE_BYTES_MAX],
    };
    let mut mount_id: libc::c_int = 0;
    let c = cpath(path);
    // SAFETY: a NUL-terminated path, a handle buffer whose `handle_bytes` says how much room
    // follows, and an int for the mount id, all owned here.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            c.as_ptr(),
            &mut h as *mut FileHandle,
            &mut mount_id as *mut libc::c_int,
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "name_to_handle_at {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    h
}

/// open_by_handle_at(mount root of `mnt`, handle, flags).
fn open_handle(mnt: &Path, h: &FileHandle, flags: i32) -> std::io::Result<OwnedFd> {
    let root = std::fs::File::open(mnt).expect("open the mount root");
    let mut h = *h;
    // SAFETY: an open directory descriptor and a handle filled by name_to_handle_at.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            root.as_raw_fd(),
            &mut h as *mut FileHandle,
            flags,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Forgets every clean dentry and inode the kernel caches (the mount's included).
fn drop_caches() {
    std::fs::write("/proc/sys/vm/drop_caches", "3").expect("echo 3 > drop_caches");
}

/// The file behind `h` reads `want`, and is inode `ino`.
fn assert_opens_file(mnt: &Path, h: &FileHandle, ino: u64, want: &[u8], when: &str) {
    let fd = open_handle(mnt, h, libc::O_RDONLY)
        .unwrap_or_else(|e| panic!("open_by_handle_at of the file {when}: {e}"));
    let mut f = std::fs::File::from(fd);
    assert_eq!(f.metadata().expect("fstat").ino(), ino, "{when}");
    let mut got = Vec::new();
    f.read_to_end(&mut got).expect("read");
    assert_eq!(got, want, "content through the handle {when}");
}

/// The directory behind `h` is inode `ino` and lists `child`.
fn assert_opens_dir(mnt: &Path, h: &FileHandle, ino: u64, child: &str, when: &str) {
    let fd = open_handle(mnt, h, libc::O_RDONLY | libc::O_DIRECTORY)
        .unwrap_or_else(|e| panic!("open_by_handle_at of the directory {when}: {e}"));
    let f = std::fs::File::from(fd);
    assert_eq!(f.metadata().expect("fstat").ino(), ino, "{when}");
    let listed = std::fs::read_dir(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .expect("list through the handle")
        .any(|e| e.expect("dirent").file_name() == child);
    assert!(listed, "{child} not listed through the handle {when}");
}

fn assert_stale(mnt: &Path, h: &FileHandle, when: &str) {
    // FUSE RELEASE is asynchronous: until the kernel has evicted the unlinked inode it may
    // still find it in its own cache and open it without asking the daemon. Wait (bounded)
    // for that window to close; the answer must then be ESTALE.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline && open_handle(mnt, h, libc::O_RDONLY).is_ok() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    match open_handle(mnt, h, libc::O_RDONLY) {
        Ok(_) => panic!("a stale handle opened {when}"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{when}: {e}"),
    }
}

#[test]
fn handles_survive_cache_drops_remounts_and_a_new_mount() {
    let Some(mut m) = Mount::new("handles", 64 << 20) else {
        return;
    };
    // A directory two levels down, so decoding it walks ".." twice and finds its name by
    // listing its parent.
    std::fs::create_dir_all(m.path("a/b")).expect("mkdir");
    std::fs::write(m.path("a/b/f"), b"through a handle").expect("write");
    let file = handle_of(&m.path("a/b/f"));
    let dir = handle_of(&m.path("a/b"));
    let file_ino = std::fs::metadata(m.path("a/b/f")).expect("stat").ino();
    let dir_ino = std::fs::metadata(m.path("a/b")).expect("stat").ino();
    assert_eq!(
        file.node_and_generation().0,
        file_ino,
        "node id is the inode"
    );
    let content = b"through a handle".as_slice();

    assert_opens_file(&m.dir, &file, file_ino, content, "while cached");
    drop_caches();
    assert_opens_file(&m.dir, &file, file_ino, content, "after drop_caches");
    drop_caches();
    assert_opens_dir(&m.dir, &dir, dir_ino, "f", "after drop_caches");

    common::mount_remount(&m.dir, "ro");
    drop_caches();
    assert_opens_file(&m.dir, &file, file_ino, content, "after remount,ro");
    assert_opens_dir(&m.dir, &dir, dir_ino, "f", "after remount,ro");
    common::mount_remount(&m.dir, "rw");
    drop_caches();
    assert_opens_file(&m.dir, &file, file_ino, content, "after remount,rw");
    assert_opens_dir(&m.dir, &dir, dir_ino, "f", "after remount,rw");

    // A directory moved elsewhere: ".." follows it.
    std::fs::create_dir(m.path("c")).expect("mkdir c");
    std::fs::rename(m.path("a/b"), m.path("c/b")).expect("rename");
    drop_caches();
    assert_opens_dir(&m.dir, &dir, dir_ino, "f", "after a rename");
    assert_opens_file(&m.dir, &file, file_ino, content, "after a rename");

    // Unmount and mount again: the same handle opens the same file on the new mount.
    m.remount();
    assert_opens_file(&m.dir, &file, file_ino, content, "on a new mount");
    assert_opens_dir(&m.dir, &dir, dir_ino, "f", "on a new mount");
    m.finish();
}

#[test]
fn handles_to_deleted_files_and_directories_are_stale() {
    let Some(m) = Mount::new("handles-stale", 64 << 20) else {
        return;
    };
    std::fs::write(m.path("gone"), b"soon deleted").expect("write");
    std::fs::create_dir(m.path("gone-dir")).expect("mkdir");
    std::fs::write(m.path("kept"), b"kept").expect("write");
    let file = handle_of(&m.path("gone"));
    let dir = handle_of(&m.path("gone-dir"));
    let kept = handle_of(&m.path("kept"));
    std::fs::remove_file(m.path("gone")).expect("unlink");
    std::fs::remove_dir(m.path("gone-dir")).expect("rmdir");
    assert_stale(&m.dir, &file, "for an unlinked file");
    assert_stale(&m.dir, &dir, "for a removed directory");
    drop_caches();
    assert_stale(&m.dir, &file, "for an unlinked file after drop_caches");
    assert_stale(&m.dir, &dir, "for a removed directory after drop_caches");
    let kept_ino = std::fs::metadata(m.path("kept")).expect("stat").ino();
    assert_opens_file(&m.dir, &kept, kept_ino, b"kept", "beside deleted ones");
    m.finish();
}

#[test]
fn a_reused_inode_number_makes_the_old_handle_stale() {
    // commit=60: nothing commits by age during the test, so the crash loses the file.
    let Some(mut m) = Mount::with_options("handles-reuse", 64 << 20, &["commit=60"]) else {
        return;
    };
    std::fs::write(m.path("lost"), b"never committed").expect("write");
    let old = handle_of(&m.path("lost"));
    let (old_ino, old_generation) = old.node_and_generation();

    m.crash_and_restart();
    assert!(!m.path("lost").exists(), "the crash was to lose the file");
    std::fs::write(m.path("new"), b"another file").expect("write");
    let new = handle_of(&m.path("new"));
    let (new_ino, new_generation) = new.node_and_generation();
    assert_eq!(
        new_ino, old_ino,
        "the inode number was to be handed out again"
    );
    assert_ne!(
        new_generation, old_generation,
        "same number, same generation"
    );

    assert_stale(&m.dir, &old, "for a reused inode number");
    drop_caches();
    assert_stale(&m.dir, &old, "for a reused inode number after drop_caches");
    assert_opens_file(&m.dir, &new, new_ino, b"another file", "for the new file");
    m.finish();
}
