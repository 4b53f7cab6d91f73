//! Story: an administrator mounts an image, copies a real source tree onto it, and checks it
//! against the original after a remount; tries to mount the same image twice; stops the
//! daemon with SIGTERM; mounts in the background as fstab would; and gets one clear line,
//! with exit status 1, for every mistake.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Mount, TUXFS_MOUNT, fsck_clean, is_mountpoint, run};
use tuxfs_fuse::daemon;

const MIB: u64 = 1 << 20;

#[test]
fn a_copied_source_tree_matches_after_remount() {
    let source = Path::new("/usr/include/linux");
    if !source.is_dir() {
        eprintln!("SKIPPED: {} is not there to copy", source.display());
        return;
    }
    let Some(mut m) = Mount::new("cp-a", 512 * MIB) else {
        return;
    };
    run(Command::new("cp").arg("-a").arg(source).arg(m.path("")));
    run(Command::new("diff")
        .arg("-r")
        .arg(source)
        .arg(m.path("linux")));
    m.remount_and_verify();
    run(Command::new("diff")
        .arg("-r")
        .arg(source)
        .arg(m.path("linux")));
    m.finish();
}

#[test]
fn a_second_mount_of_the_same_image_is_refused() {
    let Some(m) = Mount::new("twice", 64 * MIB) else {
        return;
    };
    let other = m.scratch().join("other-mnt");
    std::fs::create_dir(&other).unwrap();
    let out = Command::new(TUXFS_MOUNT)
        .arg("-f")
        .arg(&m.image)
        .arg(&other)
        .output()
        .expect("run a second tuxfs-mount");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "second mount: {stderr}");
    assert!(stderr.contains("already in use"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "more than one line: {stderr}");
    assert!(!is_mountpoint(&other));
    m.finish();
}

#[test]
fn sigterm_unmounts_cleanly() {
    let Some(mut m) = Mount::new("sigterm", 64 * MIB) else {
        return;
    };
    std::fs::create_dir(m.path("d")).unwrap();
    std::fs::write(m.path("d/f"), vec![9u8; 100_000]).unwrap();
    let before = common::snapshot(&m.dir);
    m.signal(libc::SIGTERM);
    m.wait_exit();
    assert!(!is_mountpoint(&m.dir), "SIGTERM left the mount behind");
    fsck_clean(&m.image);
    m.remount();
    common::assert_same(&before, &common::snapshot(&m.dir));
    m.finish();
}

#[test]
fn background_mount_returns_when_up_and_exits_after_umount() {
    if std::fs::metadata("/dev/fuse").is_err() {
        common::skip("/dev/fuse is missing");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image");
    let dir = tmp.path().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    common::mkfs(&image, 64 * MIB);
    let out = Command::new(TUXFS_MOUNT)
        .arg(&image)
        .arg(&dir)
        .arg("-o")
        .arg("rw,nosuid,nodev,defaults,_netdev")
        .output()
        .expect("run tuxfs-mount");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("not permitted") {
        common::skip(&format!("mounting is not permitted here: {stderr}"));
        return;
    }
    assert!(out.status.success(), "daemon mode failed: {stderr}");
    assert!(is_mountpoint(&dir), "exit 0 but nothing is mounted");
    std::fs::write(dir.join("hello"), b"world").unwrap();
    run(Command::new("umount").arg(&dir));
    // The daemon holds the image lock until it has committed and exited.
    let start = Instant::now();
    while daemon::lock_image(&image).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the daemon did not exit after umount"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    fsck_clean(&image);
    let Some(m) = Mount::adopt(tmp, image, dir.clone()) else {
        return;
    };
    assert_eq!(std::fs::read(dir.join("hello")).unwrap(), b"world");
    m.finish();
}

#[test]
fn an_image_that_is_not_tuxfs_is_refused_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("zeros");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    let dir = tmp.path().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    for foreground in [true, false] {
        let mut cmd = Command::new(TUXFS_MOUNT);
        if foreground {
            cmd.arg("-f");
        }
        let out = cmd.arg(&image).arg(&dir).output().expect("run tuxfs-mount");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "foreground={foreground}: {stderr}"
        );
        let lines: Vec<_> = stderr.lines().filter(|l| !l.contains("io_uring")).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].starts_with("tuxfs-mount: "), "{stderr}");
        assert!(!is_mountpoint(&dir));
    }
}

#[test]
fn usage_mistakes_are_reported_with_exit_status_1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    let image = tmp.path().join("image");
    common::mkfs(&image, 64 * MIB);
    let cases: [(&[&str], &str); 3] = [
        (&["-f", "/nonexistent/image", "MNT"], "does not exist"),
        (&["-f", "IMG", "/nonexistent/dir"], "mountpoint"),
        (&["-f", "IMG", "IMG"], "not a directory"),
    ];
    for (args, want) in cases {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                a.replace("MNT", dir.to_str().unwrap())
                    .replace("IMG", image.to_str().unwrap())
            })
            .collect();
        let out = Command::new(TUXFS_MOUNT).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
    let out = Command::new(TUXFS_MOUNT)
        .args(["-o", "no_such_option"])
        .arg(&image)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_option"));
}

/// Story: an administrator asks a running mount for its figures with SIGUSR1 and reads them
/// from the file named by `-o stats=FILE`; the unmount writes them once more.
#[test]
fn sigusr1_and_unmount_write_the_figures() {
    let out = tempfile::tempdir().expect("tempdir");
    let stats = out.path().join("tuxfs.stats");
    let option = format!("stats={}", stats.display());
    let Some(m) = Mount::with_options("stats", 64 * MIB, &[option.as_str()]) else {
        return;
    };
    std::fs::write(m.path("f"), vec![7u8; 100_000]).expect("write");
    std::fs::File::open(m.path("f"))
        .and_then(|f| f.sync_all())
        .expect("fsync");
    m.signal(libc::SIGUSR1);
    let start = Instant::now();
    let text = loop {
        if let Ok(t) = std::fs::read_to_string(&stats) {
            break t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no figures after SIGUSR1"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let value = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    assert!(value(&text, "deltas_committed") >= 1, "{text}");
    assert!(value(&text, "bytes_written") >= 100_000, "{text}");
    let unifies_before = value(&text, "unifies");
    m.finish();
    let text = std::fs::read_to_string(&stats).expect("figures after unmount");
    assert!(
        value(&text, "unifies") > unifies_before,
        "the unmount's unify is counted:\n{text}"
    );
}
