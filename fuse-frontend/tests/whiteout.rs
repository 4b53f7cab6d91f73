//! Story: overlayfs with a tuxfs mount as its upper layer. First `renameat2` with
//! RENAME_WHITEOUT straight on the mount: the file is at its new name and the old name is a
//! whiteout (character device 0/0, mode 0). Then `mount -t overlay` with a lower directory
//! on the host and upper and work directories on tuxfs: deleting a lower file leaves a
//! whiteout in the upper layer and hides it; renaming a lower file copies it up, and the
//! old name becomes a whiteout (overlayfs uses RENAME_WHITEOUT there). The merged view is
//! what it should be, also after the overlay is mounted again over a remounted tuxfs, and
//! the image is fsck-clean. Needs root and overlayfs (a mount failure skips the test, and
//! under CI=true fails it).

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use common::{Mount, skip};

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path")
}

/// The path is a whiteout: a character device 0/0 with mode 0.
fn is_whiteout(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0 && m.mode() & 0o7777 == 0)
}

fn mount_overlay(lower: &Path, upper: &Path, work: &Path, at: &Path) -> bool {
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let out = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(at)
        .output()
        .expect("run mount");
    if !out.status.success() {
        skip(&format!(
            "mount -t overlay failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    out.status.success()
}

fn umount(at: &Path) {
    common::unmount_with(&["umount"], at);
}

#[test]
fn overlayfs_upper_layer_on_tuxfs() {
    let Some(mut m) = Mount::new("whiteout", 64 << 20) else {
        return;
    };
    // renameat2 with RENAME_WHITEOUT on the mount itself.
    std::fs::write(m.path("a"), b"moved").expect("create");
    let (from, to) = (cstr(&m.path("a")), cstr(&m.path("b")));
    // SAFETY: both paths are NUL-terminated and outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_WHITEOUT,
        )
    };
    assert_eq!(rc, 0, "renameat2: {}", std::io::Error::last_os_error());
    assert_eq!(std::fs::read(m.path("b")).expect("read"), b"moved");
    assert!(is_whiteout(&m.path("a")), "a whiteout at the old name");

    let lower = m.scratch().join("lower");
    let merged = m.scratch().join("merged");
    std::fs::create_dir_all(lower.join("dir")).expect("lower");
    std::fs::create_dir(&merged).expect("merged");
    for name in ["gone", "renamed", "kept"] {
        std::fs::write(lower.join(name), name).expect("lower file");
    }
    let (upper, work) = (m.path("upper"), m.path("work"));
    std::fs::create_dir(&upper).expect("upper");
    std::fs::create_dir(&work).expect("work");
    if !mount_overlay(&lower, &upper, &work, &merged) {
        m.finish();
        return;
    }
    std::fs::remove_file(merged.join("gone")).expect("delete a lower file");
    std::fs::rename(merged.join("renamed"), merged.join("new")).expect("rename a lower file");
    let names = |dir: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let view = |merged: &Path| {
        assert_eq!(names(merged), ["dir", "kept", "new"]);
        assert_eq!(std::fs::read(merged.join("new")).expect("read"), b"renamed");
        assert_eq!(std::fs::read(merged.join("kept")).expect("read"), b"kept");
    };
    view(&merged);
    assert!(
        is_whiteout(&upper.join("gone")),
        "delete: whiteout in the upper layer"
    );
    assert!(
        is_whiteout(&upper.join("renamed")),
        "rename: whiteout at the old name"
    );
    assert_eq!(
        std::fs::read(upper.join("new")).expect("copied up"),
        b"renamed"
    );
    umount(&merged);

    m.remount();
    let (upper, work) = (m.path("upper"), m.path("work"));
    assert!(is_whiteout(&upper.join("gone")) && is_whiteout(&upper.join("renamed")));
    if mount_overlay(&lower, &upper, &work, &merged) {
        view(&merged);
        umount(&merged);
    }
    m.finish();
}
