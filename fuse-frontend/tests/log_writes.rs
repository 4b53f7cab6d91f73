//! Story: a fresh image is mounted with `-o log_writes=FILE`, and a program creates
//! directories and files, renames them, unlinks some, overwrites part of a big file, and
//! fsyncs along the way, all through the real mount. After the unmount, the write log is
//! replayed with `tuxfs-replay` at every flush point: each of those images is one a power
//! cut could have left, and fsck must find every one clean (a flush point holds only
//! completed writes, so not even a torn superblock slot is allowed). At the flush point that
//! each fsync produced, the engine, mounting the replayed image, must show exactly the tree
//! the program had built when that fsync returned; the last event leaves the image byte for
//! byte as the mount did. A few seeded crash subsets (writes after a flush partly lost) are
//! replayed and checked with fsck too.
//!
//! Replay the crash subsets with `TUXFS_SEED=<seed>`.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::{Mount, Rng, run};
use tuxfs_engine::dev::replay::scan_log;
use tuxfs_engine::dev::{BlockDevice, OpenOptions, open_file};
use tuxfs_engine::format::ROOT_INUM;
use tuxfs_engine::fs::{FileKind, Filesystem, MountOptions};

const MIB: u64 = 1 << 20;
const REPLAY: &str = env!("CARGO_BIN_EXE_tuxfs-replay");
/// Crash subsets replayed between flush points.
const SUBSET_ROUNDS: u64 = 6;

/// The workload's view of the tree under `w/`: files with their bytes, and directories.
type Model = BTreeMap<PathBuf, Option<Vec<u8>>>;

/// What an fsync made durable: the tree as it was, and how many events the log held when
/// the fsync returned (its flush record is among them).
#[derive(Debug)]
struct Checkpoint {
    events: usize,
    model: Model,
}

/// Drives the workload through the mount, keeping the model and the checkpoints.
struct Workload<'a> {
    mount: &'a Mount,
    log: &'a Path,
    model: Model,
    checkpoints: Vec<Checkpoint>,
}

impl Workload<'_> {
    fn mkdir(&mut self, rel: &str) {
        std::fs::create_dir(self.mount.path(rel)).expect("mkdir");
        self.model.insert(PathBuf::from(rel), None);
    }

    fn write(&mut self, rel: &str, data: &[u8]) {
        std::fs::write(self.mount.path(rel), data).expect("write");
        self.model.insert(PathBuf::from(rel), Some(data.to_vec()));
    }

    fn rename(&mut self, from: &str, to: &str) {
        std::fs::rename(self.mount.path(from), self.mount.path(to)).expect("rename");
        let moved: Vec<(PathBuf, Option<Vec<u8>>)> = self
            .model
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, v)| (p.clone(), v.clone()))
            .collect();
        for (path, value) in moved {
            self.model.remove(&path);
            let rest = path.strip_prefix(from).expect("prefix");
            let target = if rest.as_os_str().is_empty() {
                PathBuf::from(to)
            } else {
                Path::new(to).join(rest)
            };
            self.model.insert(target, value);
        }
    }

    fn unlink(&mut self, rel: &str) {
        std::fs::remove_file(self.mount.path(rel)).expect("unlink");
        self.model.remove(Path::new(rel));
    }

    /// Overwrites `data.len()` bytes at `offset` of an existing file.
    fn patch(&mut self, rel: &str, offset: u64, data: &[u8]) {
        let mut f = File::options()
            .write(true)
            .open(self.mount.path(rel))
            .expect("open");
        f.seek(SeekFrom::Start(offset)).expect("seek");
        f.write_all(data).expect("patch");
        let Some(Some(bytes)) = self.model.get_mut(Path::new(rel)) else {
            panic!("{rel} is not a file of the model");
        };
        bytes[offset as usize..offset as usize + data.len()].copy_from_slice(data);
    }

    /// fsyncs a file or directory and records what is durable now.
    fn fsync(&mut self, rel: &str) {
        File::open(self.mount.path(rel))
            .and_then(|f| f.sync_all())
            .expect("fsync");
        // The flush behind this fsync wrote and synced its record before the fsync returned;
        // a record being appended right now reads as a torn tail and is not counted.
        let events = scan_log(self.log).expect("scan the live log").events.len();
        self.checkpoints.push(Checkpoint {
            events,
            model: self.model.clone(),
        });
    }
}

fn workload(w: &mut Workload<'_>, rng: &mut Rng) {
    w.mkdir("w");
    w.mkdir("w/a");
    w.mkdir("w/a/b");
    w.write("w/a/first", &rng.bytes(100_000));
    w.fsync("w/a/first");
    w.write("w/a/b/big", &rng.bytes(3 * MIB as usize));
    w.fsync("w/a/b/big");
    w.rename("w/a/first", "w/a/b/moved");
    w.fsync("w/a/b");
    for i in 0..20 {
        let len = rng.below(20_000) as usize;
        w.write(&format!("w/a/small-{i}"), &rng.bytes(len));
    }
    for i in (0..20).step_by(3) {
        w.unlink(&format!("w/a/small-{i}"));
    }
    w.fsync("w/a");
    w.patch("w/a/b/big", MIB + 123, &rng.bytes(200_000));
    w.fsync("w/a/b/big");
    w.mkdir("w/c");
    w.rename("w/a/b", "w/c/b2");
    w.write(
        "w/c/last",
        b"written after the last fsync: only the unmount commits it",
    );
}

/// The tree under `w/` in `image`, read through the engine (mount runs recovery).
fn engine_tree(image: &Path) -> Model {
    let dev = open_file(image, &OpenOptions::default()).expect("open the replayed image");
    let dev: Arc<dyn BlockDevice> = Arc::from(dev);
    let fs = Filesystem::mount(dev, MountOptions::default()).expect("mount the replayed image");
    let mut out = Model::new();
    if let Ok(w) = fs.lookup(ROOT_INUM, b"w") {
        out.insert(PathBuf::from("w"), None);
        walk(&fs, w.ino, Path::new("w"), &mut out);
    }
    fs.unmount().expect("unmount the replayed image");
    out
}

fn walk(fs: &Filesystem, dir: u64, rel: &Path, out: &mut Model) {
    let mut cookie = 0;
    loop {
        let entries = fs.readdir(dir, cookie, 64).expect("readdir");
        let Some(last) = entries.last() else {
            return;
        };
        cookie = last.offset;
        for e in entries {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            let path = rel.join(String::from_utf8(e.name.clone()).expect("utf-8 name"));
            match e.kind {
                FileKind::Directory => {
                    out.insert(path.clone(), None);
                    walk(fs, e.ino, &path, out);
                }
                FileKind::Regular => {
                    let size = fs.getattr(e.ino).expect("getattr").size;
                    let mut data = Vec::with_capacity(size as usize);
                    while (data.len() as u64) < size {
                        let piece = fs.read(e.ino, data.len() as u64, MIB as u32).expect("read");
                        assert!(!piece.is_empty(), "{}: short file", path.display());
                        data.extend_from_slice(&piece);
                    }
                    out.insert(path, Some(data));
                }
                other => panic!("{}: unexpected {other:?}", path.display()),
            }
        }
    }
}

fn assert_tree(what: &str, want: &Model, got: &Model) {
    let names = |m: &Model| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "{what}: names differ");
    for (path, data) in want {
        assert!(
            got.get(path) == Some(data),
            "{what}: {} has other contents",
            path.display()
        );
    }
}

/// Runs `tuxfs-replay LOG --at AT --out OUT [--crash-subset SEED]`.
fn replay(log: &Path, at: usize, seed: Option<u64>, out: &Path) -> String {
    let mut cmd = Command::new(REPLAY);
    cmd.arg(log)
        .arg("--at")
        .arg(at.to_string())
        .arg("--out")
        .arg(out);
    if let Some(seed) = seed {
        cmd.arg("--crash-subset").arg(seed.to_string());
    }
    run(&mut cmd)
}

#[test]
fn every_flush_point_of_a_real_mount_is_clean() {
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("writes.log");
    let option = format!("log_writes={}", log.display());
    let Some(mut mount) = Mount::with_options("logw", 64 * MIB, &[&option]) else {
        return;
    };
    let mut rng = Rng::from_env("log_writes");
    let mut w = Workload {
        mount: &mount,
        log: &log,
        model: Model::new(),
        checkpoints: Vec::new(),
    };
    workload(&mut w, &mut rng);
    let (final_model, checkpoints) = (w.model, w.checkpoints);
    mount.unmount();

    let scan = scan_log(&log).expect("scan");
    assert_eq!(scan.tail, None, "a clean unmount leaves no torn tail");
    let points = scan.flush_points();
    eprintln!(
        "{} events, {} flush points, {} fsync checkpoints",
        scan.events.len(),
        points.len(),
        checkpoints.len()
    );
    assert!(points.len() >= checkpoints.len(), "{points:?}");
    let listing = run(Command::new(REPLAY).arg(&log).arg("--list"));
    let joined: Vec<String> = points.iter().map(usize::to_string).collect();
    assert!(
        listing.contains(&format!("flush points {}\n", joined.join(" "))),
        "{listing}"
    );

    let image = logs.path().join("replayed");
    for &p in &points {
        replay(&log, p, None, &image);
        common::fsck_clean(&image);
    }

    for (i, c) in checkpoints.iter().enumerate() {
        let p = scan.flush_point_before(c.events);
        assert!(p > 0, "checkpoint {i}: no flush before it");
        replay(&log, p, None, &image);
        let got = engine_tree(&image);
        assert_tree(&format!("fsync {i} (flush point {p})"), &c.model, &got);
    }

    // The whole log rebuilds the live image exactly, and the last flush point holds the
    // final tree.
    replay(&log, scan.events.len(), None, &image);
    let rebuilt = std::fs::read(&image).expect("read rebuilt image");
    let live = std::fs::read(&mount.image).expect("read live image");
    assert!(
        rebuilt == live,
        "the replayed log differs from the live image"
    );
    let last = *points.last().expect("a flush point");
    replay(&log, last, None, &image);
    assert_tree("last flush point", &final_model, &engine_tree(&image));

    // Crash subsets: writes after a flush partly lost (no torn write), then fsck.
    for round in 0..SUBSET_ROUNDS {
        let at = rng.below(scan.events.len() as u64 + 1) as usize;
        let seed = rng.next_u64();
        let said = replay(&log, at, Some(seed), &image);
        eprintln!("crash subset {round}: {said}");
        common::fsck_clean(&image);
    }
}
