//! Story: another process holds the image lock (as `tuxfs-mount` does while it serves the
//! image). `fsck.tuxfs -y` and `-p` refuse to repair under it (exit 8, saying the image is
//! in use) and change nothing; `-n` checks anyway but warns that what it read may be stale
//! and does not present its verdict as authoritative. Once the lock is released, `-y` runs.
//! (fuse-frontend/tests/fsck_mounted.rs does the same against a real mount.)

mod common;

use common::{fresh_image, fsck};
use tuxfs_engine::dev::lock::lock_image;

#[test]
fn repair_is_refused_while_the_image_is_locked_and_check_warns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("locked.img");
    let bytes = fresh_image(4096, 1000);
    std::fs::write(&image, &bytes).expect("write image");
    let path = image.to_str().expect("utf-8 path");
    let lock = lock_image(&image).expect("take the image lock");
    for mode in ["-y", "-p"] {
        let (code, out, err) = fsck(&[mode, path]);
        assert_eq!(code, 8, "{mode}: {out}{err}");
        assert!(err.contains("in use by another process"), "{mode}: {err}");
        assert!(err.contains("refusing to repair"), "{mode}: {err}");
    }
    assert_eq!(
        std::fs::read(&image).expect("read image"),
        bytes,
        "nothing changed"
    );
    let (code, out, err) = fsck(&["-n", path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("WARNING") && err.contains("may be stale"),
        "{err}"
    );
    assert!(out.contains("NOT authoritative"), "{out}");
    let (code, out, _) = fsck(&["-n", "--json", path]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("\"stale_warning\":\"") && out.contains("may be stale"),
        "{out}"
    );
    drop(lock);
    let (code, out, err) = fsck(&["-y", path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !err.contains("WARNING") && !out.contains("authoritative"),
        "{out}{err}"
    );
    let (code, out, _) = fsck(&["-n", "--json", path]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"stale_warning\":null"), "{out}");
}
