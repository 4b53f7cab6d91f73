//! Story: a user runs mkfs.tuxfs on a new image path with a bad argument (block size, size
//! too small for a filesystem, label too long, a size no file on the host can have). Each
//! run fails with a clear message and leaves no file behind, so the retry with good
//! arguments simply works. An existing file is never removed by a failed run.

mod common;

use common::mkfs;

#[test]
fn a_failed_create_leaves_nothing_and_the_retry_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("new.img");
    let p = img.to_str().expect("utf-8 path");
    let long_label = "x".repeat(65);
    for (args, expect) in [
        (vec!["-s", "32M", "-b", "3000", p], "block size"),
        (vec!["-s", "32M", "-b", "131072", p], "block size"),
        (vec!["-s", "10K", p], "too small"),
        (vec!["-s", "32M", "-L", &long_label, p], "label"),
        // No host filesystem here holds a 1000 PiB file (ext4 stops at 16 TiB).
        (vec!["-s", "1000P", p], "cannot make"),
    ] {
        let (code, out) = mkfs(&args);
        assert_ne!(code, 0, "{args:?}: {out}");
        assert!(out.contains(expect), "{args:?}: {out}");
        assert!(!img.exists(), "{args:?} left {p} behind: {out}");
    }
    let (code, out) = mkfs(&["-s", "32M", "-L", "retry", p]);
    assert_eq!(code, 0, "the retry must work: {out}");
    assert!(out.contains("tuxfs created"), "{out}");
}

#[test]
fn a_failed_run_on_an_existing_file_keeps_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("mine.img");
    std::fs::write(&img, b"precious").expect("write");
    let p = img.to_str().expect("utf-8 path");
    let (code, out) = mkfs(&["-s", "32M", "-b", "3000", p]);
    assert_ne!(code, 0, "{out}");
    assert_eq!(std::fs::read(&img).expect("still there"), b"precious");
    // Too small to hold a filesystem, and not grown: refused, and kept as it was.
    let (code, out) = mkfs(&[p]);
    assert_ne!(code, 0, "{out}");
    assert_eq!(std::fs::read(&img).expect("still there"), b"precious");
}
