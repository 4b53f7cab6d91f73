//! Story: an administrator runs tuxfs-mount as a daemon with `-o log=FILE` and later reads
//! in FILE when it was mounted and unmounted and which file hit a data checksum error (a
//! daemon's stderr is /dev/null, so FILE and syslog are the only places such lines can be
//! read). Mistakes in the options that name files, or a cache larger than the machine can
//! hold, are refused before anything is mounted, with one clear line.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::{Mount, Rng, TUXFS_MOUNT, is_mountpoint, run};

const MIB: u64 = 1 << 20;
const BLOCK_BYTES: usize = 4096;

/// The byte offset of the 4 KiB-aligned block of `image` whose content is `block`.
fn find_block(image: &Path, block: &[u8]) -> Option<u64> {
    let bytes = std::fs::read(image).expect("read the image");
    bytes
        .chunks_exact(BLOCK_BYTES)
        .position(|b| b == block)
        .map(|i| (i * BLOCK_BYTES) as u64)
}

/// Lines of `log` containing `what`.
fn lines_with<'a>(log: &'a str, what: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(what)).collect()
}

#[test]
fn the_log_file_gets_mounts_unmounts_and_checksum_errors() {
    let out = tempfile::tempdir().expect("tempdir");
    let log_path = out.path().join("tuxfs.log");
    let option = format!("log={}", log_path.display());
    let Some(mut m) = Mount::with_options("log-file", 64 * MIB, &[option.as_str()]) else {
        return;
    };
    let mut rng = Rng::from_env("log-file");
    let block = rng.bytes(BLOCK_BYTES);
    std::fs::write(m.path("victim"), &block).expect("write");
    m.unmount();

    // Damage the file's one data block on the unmounted image.
    let at = find_block(&m.image, &block).expect("the file's block is in the image");
    let image = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&m.image)
        .expect("open the image");
    image.write_all_at(&[block[0] ^ 0xff], at).expect("corrupt");
    image.sync_all().expect("sync");
    drop(image);

    m.remount();
    let err = std::fs::read(m.path("victim")).expect_err("a damaged block reads as EIO");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // fsck would rightly call this image damaged: unmount without it.
    run(Command::new("umount").arg(&m.dir));
    m.wait_exit();

    let log = std::fs::read_to_string(&log_path).expect("the log file");
    assert_eq!(lines_with(&log, "info: mounted").len(), 2, "{log}");
    assert_eq!(lines_with(&log, "everything committed").len(), 2, "{log}");
    let bad = lines_with(&log, "error: data checksum mismatch");
    assert!(!bad.is_empty(), "{log}");
    for line in log.lines() {
        // 2026-11-29T21:30:00Z tuxfs-mount[PID]: LEVEL: MESSAGE
        let (stamp, rest) = line.split_once(' ').expect("a timestamp");
        assert_eq!(stamp.len(), 20, "{line}");
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{line}"
        );
        assert!(rest.starts_with("tuxfs-mount["), "{line}");
    }
    // With -f the same lines went to stderr too.
    assert!(m.log().contains("data checksum mismatch"), "{}", m.log());
}

/// Runs tuxfs-mount with `args` (IMG and MNT replaced) and asserts it failed with one line
/// containing `want` and mounted nothing.
fn refused(args: &[&str], image: &Path, dir: &Path, want: &str) {
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("IMG", image.to_str().unwrap())
                .replace("MNT", dir.to_str().unwrap())
        })
        .collect();
    let out = Command::new(TUXFS_MOUNT).args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} was accepted");
    assert!(stderr.contains(want), "{args:?}: {stderr}");
    let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
    assert!(!is_mountpoint(dir), "{args:?} mounted");
}

#[test]
fn files_the_options_name_are_checked_before_mounting() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    let image = tmp.path().join("image");
    common::mkfs(&image, 64 * MIB);
    let existing = tmp.path().join("existing.log");
    std::fs::write(&existing, b"x").unwrap();
    let log_writes_existing = format!("log_writes={}", existing.display());
    let cases: [(&[&str], &str); 6] = [
        (
            &["-f", "-o", "stats=/nonexistent/dir/figures", "IMG", "MNT"],
            "stats=/nonexistent/dir/figures: cannot write the figures there",
        ),
        // Daemonised, the parent reports the same line.
        (
            &["-o", "stats=/nonexistent/dir/figures", "IMG", "MNT"],
            "stats=/nonexistent/dir/figures: cannot write the figures there",
        ),
        (
            &["-f", "-o", "log=/nonexistent/dir/log", "IMG", "MNT"],
            "log=/nonexistent/dir/log: cannot open for appending",
        ),
        (
            &["-f", "-o", "log_writes=/nonexistent/dir/w", "IMG", "MNT"],
            "log_writes=/nonexistent/dir/w: cannot create it",
        ),
        (
            &["-f", "-o", &log_writes_existing, "IMG", "MNT"],
            "already exists",
        ),
        (
            &["-f", "-o", "cache=100T", "IMG", "MNT"],
            "more than half of this machine's memory",
        ),
    ];
    for (args, want) in cases {
        refused(args, &image, &dir, want);
    }
    // Nothing was left behind, and the image still mounts.
    assert_eq!(std::fs::read(&existing).unwrap(), b"x");
    let Some(m) = Mount::adopt(tmp, image, dir) else {
        return;
    };
    m.finish();
}

/// A tmpfs mounted for one test, unmounted (retried briefly, then lazily) on drop.
struct SmallTmpfs(std::path::PathBuf);

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        // The loop device a fuseblk mount held detaches a moment after its unmount.
        for _ in 0..100 {
            let ok = Command::new("umount").arg(&self.0).output();
            if ok.is_ok_and(|o| o.status.success()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

/// Story: the disk under a sparse image fills up; the daemon's writes fail, the filesystem
/// turns read-only, and the log file says so (and the unmount line says what was lost).
#[test]
fn the_switch_to_read_only_after_a_write_failure_is_logged() {
    if std::fs::metadata("/dev/fuse").is_err() {
        common::skip("/dev/fuse is missing");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&small)
        .output()
        .expect("run mount");
    if !out.status.success() {
        common::skip(&format!(
            "cannot mount a tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
        return;
    }
    let _small = SmallTmpfs(small.clone());
    let image = small.join("image");
    common::mkfs(&image, 64 * MIB);
    let dir = tmp.path().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    let log_path = tmp.path().join("tuxfs.log");
    let mount = Command::new(TUXFS_MOUNT)
        .arg("-o")
        .arg(format!("log={}", log_path.display()))
        .arg(&image)
        .arg(&dir)
        .output()
        .expect("run tuxfs-mount");
    assert!(
        mount.status.success(),
        "{}",
        String::from_utf8_lossy(&mount.stderr)
    );
    // More than the tmpfs holds; the write or the fsync fails once the image cannot grow.
    let written = std::fs::write(dir.join("f"), vec![b'a'; 24 << 20])
        .and_then(|()| std::fs::File::open(dir.join("f"))?.sync_all());
    assert!(written.is_err(), "24 MiB fit in a 16 MiB tmpfs");
    run(Command::new("umount").arg(&dir));
    let log = std::fs::read_to_string(&log_path).expect("the log file");
    assert!(
        log.contains("error: write failed, the filesystem is now read-only"),
        "{log}"
    );
    assert!(log.contains("after a write failure"), "{log}");
    assert!(!log.contains("everything committed"), "{log}");
}
