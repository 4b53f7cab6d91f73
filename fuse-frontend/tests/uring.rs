//! `-o uring`: FUSE over io_uring (vendor/fuser/src/uring.rs, fuse-frontend/src/uring.rs).
//!
//! The kernel's module parameter `fuse.enable_uring` is off by default. As root these tests
//! turn it on for their duration and restore it after (tuxfs-mount itself never changes
//! it); without root or without the parameter they skip and say why (under `CI=true` a
//! skip is a failure). The same seeded workload runs on a /dev/fuse mount and on a uring
//! mount; their transcripts and final trees must be identical, and the daemon's
//! `fuse_uring_requests` figure shows the requests really came through the ring.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use common::{Mount, Rng, figures, skip, snapshot};
use tuxfs_fuse::uring::ENABLE_URING;

const MIB: u64 = 1 << 20;

/// Tests holding the parameter on, and what it was before the first of them.
static PARAM: Mutex<(usize, Option<String>)> = Mutex::new((0, None));

/// `fuse.enable_uring` held on while alive; the previous value is restored by the last.
struct UringOn;

impl UringOn {
    /// None when the test must skip (already reported).
    fn new() -> Option<UringOn> {
        let mut held = PARAM.lock().unwrap_or_else(|e| e.into_inner());
        let now = match std::fs::read_to_string(ENABLE_URING) {
            Ok(v) => v.trim().to_string(),
            Err(e) => {
                skip(&format!(
                    "this kernel has no FUSE over io_uring ({ENABLE_URING}: {e})"
                ));
                return None;
            }
        };
        if held.0 == 0 {
            if now != "Y"
                && let Err(e) = std::fs::write(ENABLE_URING, "Y")
            {
                skip(&format!(
                    "cannot turn on {ENABLE_URING} (it is {now}; root needed): {e}"
                ));
                return None;
            }
            held.1 = Some(now);
        }
        held.0 += 1;
        Some(UringOn)
    }
}

impl Drop for UringOn {
    fn drop(&mut self) {
        let mut held = PARAM.lock().unwrap_or_else(|e| e.into_inner());
        held.0 -= 1;
        if held.0 == 0
            && let Some(before) = held.1.take()
            && before != "Y"
        {
            let _ = std::fs::write(ENABLE_URING, before);
        }
    }
}

/// Records an operation's outcome: its value, or the error's kind and errno.
fn outcome<T: std::fmt::Debug>(log: &mut String, what: &str, r: std::io::Result<T>) {
    match r {
        Ok(v) => writeln!(log, "{what}: ok {v:?}").unwrap(),
        Err(e) => writeln!(log, "{what}: err {:?}", e.raw_os_error()).unwrap(),
    }
}

/// The workload: creates, writes, fsyncs, renames, unlinks, listings, concurrent reads
/// (answered by the daemon's read pool, from other threads than the ring's), and some
/// errors; returns what every step saw.
fn workload(root: &Path, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let mut log = String::new();
    let a = root.join("a");
    let b = root.join("a/b");
    outcome(&mut log, "mkdir a", std::fs::create_dir(&a));
    outcome(&mut log, "mkdir a/b", std::fs::create_dir(&b));
    outcome(&mut log, "mkdir a again", std::fs::create_dir(&a));
    let mut contents = BTreeMap::new();
    for i in 0..150 {
        let len = rng.below(20_000) as usize;
        let data = rng.bytes(len);
        let path = a.join(format!("f{i}"));
        let r = std::fs::File::create(&path).and_then(|f| {
            f.write_all_at(&data, 0)?;
            if i % 10 == 0 {
                f.sync_all()?;
            }
            Ok(())
        });
        outcome(&mut log, &format!("create f{i} ({len})"), r);
        contents.insert(i, data);
    }
    for i in (0..150).step_by(3) {
        let r = std::fs::rename(a.join(format!("f{i}")), b.join(format!("g{i}")));
        outcome(&mut log, &format!("rename f{i}"), r);
    }
    for i in (1..150).step_by(4) {
        let r = std::fs::remove_file(a.join(format!("f{i}")));
        outcome(&mut log, &format!("unlink f{i}"), r);
    }
    outcome(
        &mut log,
        "unlink missing",
        std::fs::remove_file(a.join("missing")),
    );
    outcome(&mut log, "rmdir non-empty", std::fs::remove_dir(&b));
    for dir in [&a, &b] {
        let mut names: Vec<(String, u64)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        names.sort();
        writeln!(log, "{}: {names:?}", dir.display()).unwrap();
    }
    // Concurrent 4 KiB reads of a 4 MiB file from 8 threads.
    let big = rng.bytes(4 << 20);
    let path = root.join("big");
    std::fs::write(&path, &big).unwrap();
    std::fs::File::open(&path).unwrap().sync_all().unwrap();
    let seeds: Vec<u64> = (0..8).map(|_| rng.next_u64()).collect();
    let bad = std::thread::scope(|s| {
        let handles: Vec<_> = seeds
            .iter()
            .map(|&seed| {
                let (path, big) = (&path, &big);
                s.spawn(move || {
                    let mut rng = Rng::new(seed);
                    let f = std::fs::File::open(path).unwrap();
                    let mut buf = vec![0u8; 4096];
                    let mut bad = 0;
                    for _ in 0..200 {
                        let off = rng.below((4 << 20) / 4096) as usize * 4096;
                        f.read_exact_at(&mut buf, off as u64).unwrap();
                        bad += usize::from(buf[..] != big[off..off + 4096]);
                    }
                    bad
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum::<usize>()
    });
    writeln!(log, "concurrent reads wrong: {bad}").unwrap();
    for (i, data) in &contents {
        for p in [a.join(format!("f{i}")), b.join(format!("g{i}"))] {
            if let Ok(read) = std::fs::read(&p) {
                writeln!(log, "{}: same {}", p.display(), read == *data).unwrap();
            }
        }
    }
    log.replace(&root.display().to_string(), "ROOT")
}

/// Mounts with `extra` (and a stats file), runs the workload, and returns its transcript,
/// the final tree, and the `fuse_uring_requests` figure.
fn run(name: &str, extra: &[&str], seed: u64) -> Option<(String, common::Snapshot, u64)> {
    let out = tempfile::tempdir().unwrap();
    let stats = out.path().join("figures");
    let option = format!("stats={}", stats.display());
    let mut options = vec![option.as_str()];
    options.extend_from_slice(extra);
    let mut m = Mount::with_options(name, 64 * MIB, &options)?;
    let log = workload(&m.dir, seed);
    let through_ring = figures(&m, &stats)
        .get("fuse_uring_requests")
        .copied()
        .unwrap_or(0);
    m.remount();
    let tree = snapshot(&m.dir);
    m.finish();
    Some((log, tree, through_ring))
}

#[test]
fn a_uring_mount_serves_the_workload_through_the_ring_as_dev_fuse_does() {
    let Some(_on) = UringOn::new() else {
        return;
    };
    let seed = Rng::from_env("uring workload").next_u64();
    let Some((uring_log, uring_tree, ring)) = run("uring", &["uring"], seed) else {
        return;
    };
    assert!(
        ring > 500,
        "only {ring} requests came through the ring (replay with the TUXFS_SEED printed above)"
    );
    if std::env::var("TUXFS_TEST_URING").is_ok_and(|v| v == "1") {
        // Every mount uses the ring then: there is no /dev/fuse mount to compare with.
        return;
    }
    let Some((dev_log, dev_tree, none)) = run("devfuse", &[], seed) else {
        return;
    };
    assert_eq!(none, 0, "a mount without -o uring used the ring");
    assert_eq!(
        uring_log, dev_log,
        "the workload saw different results (replay with the TUXFS_SEED printed above)"
    );
    common::assert_same(&dev_tree, &uring_tree);
}

#[test]
fn unmount_waits_for_the_final_commit_through_the_ring() {
    let Some(_on) = UringOn::new() else {
        return;
    };
    // DESTROY arrives through the ring on a fuseblk mount; the daemon must answer it only
    // after committing, so the data is there once umount returns (checked by fsck and
    // the reread after the remount).
    let Some(mut m) = Mount::with_options("uring-destroy", 64 * MIB, &["uring"]) else {
        return;
    };
    let data = Rng::new(7).bytes(3 << 20);
    std::fs::write(m.path("f"), &data).unwrap();
    m.remount();
    assert!(std::fs::read(m.path("f")).unwrap() == data);
    m.finish();
}

#[test]
fn with_the_module_parameter_off_uring_is_refused_with_what_to_set() {
    // Waits until no other test here holds the parameter on, and holds the lock so that
    // none turns it on meanwhile.
    let held = loop {
        let held = PARAM.lock().unwrap_or_else(|e| e.into_inner());
        if held.0 == 0 {
            break held;
        }
        drop(held);
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let Ok(before) = std::fs::read_to_string(ENABLE_URING) else {
        skip(&format!("this kernel has no {ENABLE_URING}"));
        return;
    };
    if let Err(e) = std::fs::write(ENABLE_URING, "N") {
        skip(&format!("cannot set {ENABLE_URING} (root needed): {e}"));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (image, dir) = (tmp.path().join("image"), tmp.path().join("mnt"));
    std::fs::create_dir(&dir).unwrap();
    common::mkfs(&image, 64 * MIB);
    let out = std::process::Command::new(common::TUXFS_MOUNT)
        .args(["-f", "-o", "uring"])
        .arg(&image)
        .arg(&dir)
        .output()
        .expect("run tuxfs-mount");
    let _ = std::fs::write(ENABLE_URING, before.trim());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mounted with the ring off: {stderr}");
    assert!(
        stderr.contains("enable_uring is N") && stderr.contains("echo Y >"),
        "{stderr}"
    );
    assert!(!common::is_mountpoint(&dir));
    drop(held);
}
