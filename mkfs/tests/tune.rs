//! Story: an administrator renames an unmounted filesystem with tune-tuxfs, as with
//! `tune2fs -L`: the label is shown, changed (durably: the image stays fsck-clean), bad
//! labels and a UUID change are refused with one line and exit status 1 changing nothing,
//! and an image in use (its lock held, as tuxfs-mount holds it) is refused.

mod common;

use std::os::fd::AsRawFd;
use std::process::Command;

use common::fsck_clean;

fn tool(bin: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin).args(args).output().expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tune(args: &[&str]) -> (i32, String, String) {
    tool(env!("CARGO_BIN_EXE_tune-tuxfs"), args)
}

#[test]
fn label_is_shown_changed_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("fs.img");
    let p = img.to_str().expect("utf-8 path");
    let (code, _, err) = tool(
        env!("CARGO_BIN_EXE_mkfs-tuxfs"),
        &["--size", "32M", "--label", "before", p],
    );
    assert_eq!(code, 0, "{err}");

    let (code, out, _) = tune(&[p]);
    assert_eq!(code, 0);
    assert!(out.contains("label: before"), "{out}");
    assert!(out.contains("uuid: "), "{out}");

    let (code, _, err) = tune(&["-L", "après été", p]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = tune(&[p]);
    assert!(out.contains("label: après été"), "{out}");
    fsck_clean(&img);

    let long = "x".repeat(65);
    for bad in [&["-L", &long, p][..], &["-U", "random", p][..]] {
        let (code, _, err) = tune(bad);
        assert_eq!(code, 1, "{bad:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    let (_, out, _) = tune(&[p]);
    assert!(out.contains("label: après été"), "unchanged: {out}");

    let (code, _, err) = tune(&["-L", "", p]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = tune(&[p]);
    assert!(out.lines().any(|l| l == "label: "), "cleared: {out}");
    fsck_clean(&img);
}

#[test]
fn an_image_in_use_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("fs.img");
    let p = img.to_str().expect("utf-8 path");
    let (code, _, err) = tool(env!("CARGO_BIN_EXE_mkfs-tuxfs"), &["--size", "32M", p]);
    assert_eq!(code, 0, "{err}");
    let held = std::fs::File::open(&img).expect("open");
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    let (code, _, err) = tune(&["-L", "busy", p]);
    assert_eq!(code, 1);
    assert!(err.contains("in use"), "{err}");
    drop(held);
    let (code, _, err) = tune(&["-L", "free", p]);
    assert_eq!(code, 0, "{err}");
}
