//! Story: people use a tuxfs image (directories, files with data, hard links, symlinks,
//! xattrs, sparse files, a file unlinked while open), sync now and then, and either
//! unmount cleanly or lose power with deltas still in the log. Then the disk goes bad:
//! bits flip, blocks read back as zeros, two blocks trade places, or a block reads back as
//! it was at an older moment of the same image (a stale copy from a snapshot taken earlier).
//! For each damaged image, fsck must judge it, repair it, and leave something the engine
//! mounts.
//!
//! Invariants checked, for every damaged image:
//! - `fsck -n` neither panics nor hangs (each case runs in its own thread with a deadline)
//!   and changes nothing;
//! - when a superblock survives, `fsck -y` repairs it and then `fsck -n` exits 0;
//! - the damaged image itself, mounted by the engine, mounts or refuses with an error and
//!   can be walked (readdir, getattr, read, readlink, listxattr) without a panic;
//! - the repaired image mounts, every directory and file can be walked, it unmounts, and
//!   `fsck -n` is then still clean.
//!
//! Not covered: damage to data blocks is only caught with `--data` (not used here, as the
//! repair cannot bring data back); the FUSE layer; device I/O errors.
//!
//! Replay: the run prints `TUXFS_SEED=<base>`; every failure prints its case seed, which
//! `TUXFS_CASE_SEED=<case>` replays alone. `TUXFS_CORRUPTION_IMAGES` sets how many damaged
//! images a run makes (default 2000).

mod common;
mod damage_map;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::format::TreeId;
use tuxfs_engine::fs::{Caller, FileKind, Filesystem, MountOptions, XattrFlags};
use tuxfs_engine::mkfs::format_device;
use tuxfs_fsck::{Mode, Options, Report, check};

const ROOT: u64 = 1;
const ME: Caller = Caller {
    uid: 1000,
    gid: 1000,
    pid: 1,
};
/// Damaged images of the random suite in the default run.
const DEFAULT_IMAGES: u64 = 2000;
/// A case that takes longer than this has hung.
const DEADLINE: Duration = Duration::from_secs(60);

/// splitmix64: small, seeded, portable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One image as it evolved: snapshots after each sync, the last one is the final state.
struct Base {
    name: &'static str,
    block_size: u32,
    snapshots: Vec<Vec<u8>>,
}

fn options() -> MountOptions {
    MountOptions {
        commit_interval: Duration::from_secs(3600),
        // Small, so that some images have unified several times and some have long logs.
        unify_log_blocks: 24,
        ..MountOptions::default()
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng(seed);
    (0..len).map(|_| r.next() as u8).collect()
}

/// Builds an image through the engine; `clean` unmounts at the end, otherwise the mount is
/// dropped with deltas in the log (and a file unlinked while open on the orphan list).
fn build(name: &'static str, block_size: u32, blocks: u64, clean: bool) -> Base {
    build_with(name, block_size, blocks, clean, 24)
}

/// [`build`] with `file_count` files (at least 24).
fn build_with(
    name: &'static str,
    block_size: u32,
    blocks: u64,
    clean: bool,
    file_count: u64,
) -> Base {
    let dev = Arc::new(MemDevice::new((u64::from(block_size) * blocks) as usize));
    format_device(dev.as_ref(), &common::params(block_size, blocks), false).expect("mkfs");
    let mut snapshots = vec![dev.snapshot()];
    let fs = Filesystem::mount(dev.clone() as Arc<dyn BlockDevice>, options()).expect("mount");
    let bs = block_size as usize;
    let mut r = Rng(0x7475_7866_7321);
    let mut dirs = vec![ROOT];
    for i in 0..6 {
        let parent = dirs[r.below(dirs.len() as u64) as usize];
        let d = fs
            .mkdir(parent, format!("dir{i}").as_bytes(), 0o755, ME)
            .expect("mkdir");
        dirs.push(d.ino);
    }
    let mut files = Vec::new();
    for i in 0..file_count.max(24) {
        let parent = dirs[r.below(dirs.len() as u64) as usize];
        let f = fs
            .create(parent, format!("file{i}").as_bytes(), 0o644, ME)
            .expect("create");
        let len = match i % 4 {
            0 => 0,
            1 => 100,
            2 => bs * 3 + 7,
            _ => bs * 12,
        };
        fs.write(f.ino, 0, &pattern(len, i), false).expect("write");
        fs.release(f.ino).expect("release");
        files.push((parent, f.ino));
        if i % 6 == 5 {
            fs.sync().expect("sync");
            snapshots.push(dev.snapshot());
        }
    }
    // Hard links, symlinks (short: inline; long: in data blocks), xattrs, a sparse file.
    for (k, &(_, ino)) in files.iter().enumerate().take(4) {
        let to = dirs[(k + 1) % dirs.len()];
        fs.link(ino, to, format!("link{k}").as_bytes())
            .expect("link");
    }
    fs.symlink(ROOT, b"short", b"dir0/file1", ME)
        .expect("symlink");
    let long = vec![b'x'; 1000];
    fs.symlink(dirs[1], b"long", &long, ME).expect("symlink");
    for &(_, ino) in files.iter().step_by(3) {
        fs.setxattr(ino, b"user.note", b"some value", XattrFlags::default())
            .expect("setxattr");
    }
    fs.setxattr(dirs[2], b"user.dir", &[7; 40], XattrFlags::default())
        .expect("setxattr");
    let sparse = fs.create(ROOT, b"sparse", 0o644, ME).expect("create");
    fs.write(sparse.ino, 40 * bs as u64, b"far away", false)
        .expect("sparse write");
    fs.write(sparse.ino, 3, b"near", false).expect("write");
    fs.release(sparse.ino).expect("release");
    fs.sync().expect("sync");
    snapshots.push(dev.snapshot());
    // Change things so older snapshots hold stale copies of live blocks.
    for &(parent, _) in files.iter().skip(20) {
        let _ = fs.unlink(parent, b"file20");
    }
    fs.rename(ROOT, b"sparse", dirs[3], b"moved", Default::default())
        .expect("rename");
    fs.write(files[7].1, 5, b"rewritten", false)
        .expect("rewrite");
    let open = fs
        .create(dirs[4], b"open-unlinked", 0o600, ME)
        .expect("create");
    fs.write(open.ino, 0, &pattern(3 * bs, 99), false)
        .expect("write");
    fs.sync().expect("sync");
    fs.unlink(dirs[4], b"open-unlinked").expect("unlink");
    fs.sync().expect("sync");
    snapshots.push(dev.snapshot());
    if clean {
        fs.release(open.ino).expect("release");
        fs.unmount().expect("unmount");
    } else {
        for i in 0..3u64 {
            let f = fs
                .create(dirs[5], format!("late{i}").as_bytes(), 0o644, ME)
                .expect("create");
            fs.write(f.ino, 0, &pattern(bs * 2, 50 + i), false)
                .expect("write");
            fs.release(f.ino).expect("release");
            fs.sync().expect("sync");
        }
    }
    drop(fs);
    snapshots.push(dev.snapshot());
    Base {
        name,
        block_size,
        snapshots,
    }
}

fn fsck(image: Vec<u8>, mode: Mode) -> (Result<Report, String>, Vec<u8>) {
    let dev = MemDevice::from_bytes(image);
    let r = check(
        &dev,
        &Options {
            mode,
            check_data: false,
        },
    )
    .map_err(|e| e.to_string());
    (r, dev.snapshot())
}

/// Mounts `image` and walks everything; returns the image after unmount, or the mount
/// error. `must` says the walk itself must not fail (a repaired image).
fn mount_and_walk(image: Vec<u8>, must: bool) -> Result<Vec<u8>, String> {
    let dev = Arc::new(MemDevice::from_bytes(image));
    let fs = Filesystem::mount(dev.clone() as Arc<dyn BlockDevice>, options())
        .map_err(|e| format!("mount: {e}"))?;
    let mut todo = vec![ROOT];
    let mut seen = 0usize;
    while let Some(dir) = todo.pop() {
        let entries = match fs.readdir(dir, 0, usize::MAX) {
            Ok(e) => e,
            Err(e) if !must => {
                let _ = e;
                continue;
            }
            Err(e) => return Err(format!("readdir {dir}: {e}")),
        };
        for e in entries {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            seen += 1;
            if seen > 100_000 {
                return Err("directory walk does not end".into());
            }
            let attr = match fs.getattr(e.ino) {
                Ok(a) => a,
                Err(err) if !must => {
                    let _ = err;
                    continue;
                }
                Err(err) => return Err(format!("getattr {}: {err}", e.ino)),
            };
            let _ = fs.listxattr(e.ino);
            match attr.kind {
                FileKind::Directory => todo.push(e.ino),
                FileKind::Symlink => {
                    let _ = fs.readlink(e.ino);
                }
                FileKind::Regular => {
                    // Data damage is EIO, which is allowed; a panic is not.
                    let _ = fs.read(e.ino, 0, attr.size.min(1 << 20) as u32);
                }
                _ => {}
            }
        }
    }
    let result = fs.unmount().map_err(|e| format!("unmount: {e}"));
    drop(fs);
    match result {
        Ok(()) => Ok(dev.snapshot()),
        Err(e) if must => Err(e),
        Err(_) => Ok(dev.snapshot()),
    }
}

/// Blocks of `image` that are not all zeros.
fn nonzero(image: &[u8], bs: usize) -> Vec<usize> {
    image
        .chunks(bs)
        .enumerate()
        .filter(|(_, b)| b.iter().any(|&x| x != 0))
        .map(|(i, _)| i)
        .collect()
}

/// Applies 1..=3 seeded damages to the final state of `base`; returns what was done.
fn damage(base: &Base, r: &mut Rng) -> (Vec<u8>, String) {
    let bs = base.block_size as usize;
    let last = base.snapshots.len() - 1;
    let mut image = base.snapshots[last].clone();
    let live = nonzero(&image, bs);
    let mut what = Vec::new();
    for _ in 0..1 + r.below(3) {
        let b = live[r.below(live.len() as u64) as usize];
        let at = b * bs;
        match r.below(4) {
            0 => {
                let bits = 1 + r.below(8);
                for _ in 0..bits {
                    let i = r.below(bs as u64 * 8) as usize;
                    image[at + i / 8] ^= 1 << (i % 8);
                }
                what.push(format!("flip {bits} bits in block {b}"));
            }
            1 => {
                image[at..at + bs].fill(0);
                what.push(format!("zero block {b}"));
            }
            2 => {
                let c = live[r.below(live.len() as u64) as usize];
                let (x, y) = (b.min(c), b.max(c));
                if x != y {
                    let (lo, hi) = image.split_at_mut(y * bs);
                    lo[x * bs..x * bs + bs].swap_with_slice(&mut hi[..bs]);
                }
                what.push(format!("swap blocks {x} and {y}"));
            }
            _ => {
                // A block as it was in an older snapshot (one that differs, if any).
                let s = r.below(last as u64) as usize;
                let old = &base.snapshots[s];
                let differing: Vec<usize> = live
                    .iter()
                    .copied()
                    .filter(|&c| old[c * bs..c * bs + bs] != image[c * bs..c * bs + bs])
                    .collect();
                let c = if differing.is_empty() {
                    b
                } else {
                    differing[r.below(differing.len() as u64) as usize]
                };
                image[c * bs..c * bs + bs].copy_from_slice(&old[c * bs..c * bs + bs]);
                what.push(format!("block {c} from snapshot {s}"));
            }
        }
    }
    (image, what.join(", "))
}

fn findings(r: &Report) -> String {
    format!("{:#?}", r.findings)
}

/// One damaged image through every invariant. Err describes a violation.
fn one_case(base: &Base, seed: u64) -> Result<(), String> {
    let mut r = Rng(seed);
    let (image, what) = damage(base, &mut r);
    let ctx = |m: String| format!("{} ({what}): {m}", base.name);
    let (checked, after_n) = fsck(image.clone(), Mode::Check);
    if after_n != image {
        return Err(ctx("fsck -n wrote to the image".into()));
    }
    // The engine on the damaged image: mount or refuse, never panic.
    let _ = mount_and_walk(image.clone(), false);
    let (repaired, fixed) = fsck(image, Mode::Yes);
    let (Ok(before), Ok(repaired)) = (checked, repaired) else {
        // No superblock survives: -n and -y must agree that nothing can be done.
        let (c, y) = fsck_codes(&after_n);
        return if c == 8 && y == 8 {
            Ok(())
        } else {
            Err(ctx(format!(
                "operational error in only one mode: -n {c}, -y {y}"
            )))
        };
    };
    match repaired.exit_code() {
        0 if before.exit_code() == 0 => {}
        1 => {}
        code => {
            return Err(ctx(format!(
                "fsck -y exit {code} (fsck -n said {}): {}",
                before.exit_code(),
                findings(&repaired)
            )));
        }
    }
    if std::env::var_os("TUXFS_CASE_SEED").is_some() {
        println!(
            "fsck -n: {}\nfsck -y: {}",
            findings(&before),
            findings(&repaired)
        );
        println!("{}", tuxfs_fsck::render_human("before", &before, true));
    }
    let (after, _) = fsck(fixed.clone(), Mode::Check);
    let after = after.map_err(|e| ctx(format!("fsck -n after -y: {e}")))?;
    if after.exit_code() != 0 {
        return Err(ctx(format!("not clean after -y: {}", findings(&after))));
    }
    let unmounted = mount_and_walk(fixed, true).map_err(|e| ctx(format!("repaired image: {e}")))?;
    let (last, _) = fsck(unmounted, Mode::Check);
    if std::env::var_os("TUXFS_CASE_SEED").is_some()
        && let Ok(l) = &last
    {
        println!("{}", tuxfs_fsck::render_human("after mount", l, true));
    }
    let last = last.map_err(|e| ctx(format!("fsck -n after mount: {e}")))?;
    if last.exit_code() != 0 {
        return Err(ctx(format!(
            "not clean after mount and unmount: {}",
            findings(&last)
        )));
    }
    Ok(())
}

fn fsck_codes(image: &[u8]) -> (i32, i32) {
    let code = |m| match fsck(image.to_vec(), m).0 {
        Ok(r) => r.exit_code(),
        Err(_) => 8,
    };
    (code(Mode::Check), code(Mode::Yes))
}

/// Runs `case` in its own thread; Err on panic or when it outlives the deadline.
fn bounded(bases: &Arc<Vec<Base>>, seed: u64) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let bases = bases.clone();
    std::thread::spawn(move || {
        let base = &bases[(seed % bases.len() as u64) as usize];
        let _ = tx.send(one_case(base, seed));
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("hung for {DEADLINE:?}")),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("panicked".into()),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn case_seed(base: u64, i: u64) -> u64 {
    let mut r = Rng(base ^ i.wrapping_mul(0xA24B_AED4_963E_E407));
    r.next()
}

#[test]
fn damaged_images_are_repaired_and_mount() {
    let started = Instant::now();
    let bases = Arc::new(vec![
        build("512-byte blocks, clean unmount", 512, 1500, true),
        build("512-byte blocks, log after crash", 512, 1500, false),
        build("4096-byte blocks, clean unmount", 4096, 400, true),
        build("4096-byte blocks, log after crash", 4096, 400, false),
    ]);
    for b in bases.iter() {
        let last = b.snapshots.last().expect("snapshots");
        let (r, _) = fsck(last.clone(), Mode::Check);
        let r = r.expect("fsck runs");
        assert!(
            r.findings.is_empty(),
            "{}: undamaged image is not clean: {}",
            b.name,
            findings(&r)
        );
    }
    let built = started.elapsed();
    if let Some(seed) = env_u64("TUXFS_CASE_SEED") {
        println!("replaying case seed={seed}");
        bounded(&bases, seed).unwrap_or_else(|e| panic!("case seed={seed}: {e}"));
        return;
    }
    let base_seed = env_u64("TUXFS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let count = env_u64("TUXFS_CORRUPTION_IMAGES").unwrap_or(DEFAULT_IMAGES);
    println!("TUXFS_SEED={base_seed} TUXFS_CORRUPTION_IMAGES={count}");
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4)) as u64;
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let bases = bases.clone();
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for i in (w..count).step_by(workers as usize) {
                    let seed = case_seed(base_seed, i);
                    if let Err(e) = bounded(&bases, seed) {
                        failures.push(format!("TUXFS_CASE_SEED={seed}: {e}"));
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("worker"))
        .collect();
    println!(
        "{count} damaged images in {:.1} s (images built in {:.1} s), {} failures",
        started.elapsed().as_secs_f64(),
        built.as_secs_f64(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "TUXFS_SEED={base_seed}: {} of {count} damaged images failed:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The damage kinds of the per-block suite, in the order of `damage`.
const KINDS: [&str; 4] = ["flipped bits", "zeroed", "swapped", "stale"];

/// One damage of the per-block suite: `kind` applied to `block` (and, when swapped, to the
/// block it trades places with).
#[derive(Debug, Clone, Copy)]
struct Target {
    base: usize,
    kind: usize,
    block: damage_map::TreeBlock,
    partner: Option<damage_map::TreeBlock>,
}

/// What one damaged image kept: bytes of file content that read back correct, of all.
struct Kept {
    correct: u64,
    total: u64,
    /// A damaged block was written by a delta in the log.
    logged: bool,
}

/// One cell of the table: bytes correct, bytes in all, cases.
type Cell = (u64, u64, u64);

/// A base image with what the per-block suite needs to know about it.
struct Known {
    base: Base,
    files: Vec<damage_map::FileContent>,
    blocks: Vec<damage_map::TreeBlock>,
    fs_id: u64,
}

fn level_name(level: u8) -> &'static str {
    if level == 0 { "leaf" } else { "interior node" }
}

/// Applies `t` to the final image; None when it changes nothing (no older copy differs).
fn damage_block(k: &Known, t: &Target, r: &mut Rng) -> Option<Vec<u8>> {
    let bs = k.base.block_size as usize;
    let last = k.base.snapshots.len() - 1;
    let mut image = k.base.snapshots[last].clone();
    let at = t.block.block as usize * bs;
    match t.kind {
        0 => {
            for _ in 0..1 + r.below(8) {
                let i = r.below(bs as u64 * 8) as usize;
                image[at + i / 8] ^= 1 << (i % 8);
            }
        }
        1 => image[at..at + bs].fill(0),
        2 => {
            let other = t.partner?.block as usize * bs;
            let (x, y) = (at.min(other), at.max(other));
            let (lo, hi) = image.split_at_mut(y);
            lo[x..x + bs].swap_with_slice(&mut hi[..bs]);
        }
        _ => {
            // The newest older copy of the block that differs from the current one.
            let old = k.base.snapshots[..last]
                .iter()
                .rev()
                .find(|s| s[at..at + bs] != image[at..at + bs])?;
            image[at..at + bs].copy_from_slice(&old[at..at + bs]);
        }
    }
    Some(image)
}

/// Damages one tree block, repairs with `-y`, and compares every file with the content
/// the image was made with. Err names a broken promise.
fn block_case(k: &Known, t: &Target, seed: u64) -> Result<Option<Kept>, String> {
    let mut r = Rng(seed);
    let Some(image) = damage_block(k, t, &mut r) else {
        return Ok(None);
    };
    let what = format!(
        "{}: {} {} {} of the {}{}",
        k.base.name,
        KINDS[t.kind],
        level_name(t.block.level),
        t.block.block,
        t.block.tree.name(),
        t.partner
            .map(|p| format!(" (with {} {})", level_name(p.level), p.block))
            .unwrap_or_default()
    );
    let (repaired, fixed) = fsck(image, Mode::Yes);
    let repaired = repaired.map_err(|e| format!("{what}: fsck -y: {e}"))?;
    if repaired.exit_code() > 1 {
        return Err(format!(
            "{what}: fsck -y exit {}: {}",
            repaired.exit_code(),
            findings(&repaired)
        ));
    }
    let (after, _) = fsck(fixed.clone(), Mode::Check);
    let after = after.map_err(|e| format!("{what}: fsck -n after -y: {e}"))?;
    if after.exit_code() != 0 {
        return Err(format!("{what}: not clean after -y: {}", findings(&after)));
    }
    // What the damaged leaves described may be lost; nothing else may, unless a damaged
    // block belongs to a delta in the log, which recovery then drops.
    let bs = k.base.block_size;
    let last = k.base.snapshots.last().expect("snapshots");
    let mut allowed = std::collections::BTreeSet::new();
    let mut logged = false;
    for b in [Some(t.block), t.partner].into_iter().flatten() {
        if b.level == 0 {
            allowed.extend(damage_map::described(last, bs, k.fs_id, b));
            logged |= b.logged;
        }
    }
    let dev = Arc::new(MemDevice::from_bytes(fixed));
    let fs = Filesystem::mount(dev as Arc<dyn BlockDevice>, options())
        .map_err(|e| format!("{what}: mount after -y: {e}"))?;
    let mut kept = Kept {
        correct: 0,
        total: 0,
        logged,
    };
    let mut broken = Vec::new();
    for f in &k.files {
        let good = damage_map::correct_bytes(&fs, f);
        kept.correct += good;
        kept.total += f.bytes.len() as u64;
        if good != f.bytes.len() as u64 && !logged && !f.chain.iter().any(|i| allowed.contains(i)) {
            broken.push(format!(
                "{} ({good} of {} bytes)",
                damage_map::show(&f.path),
                f.bytes.len()
            ));
        }
    }
    drop(fs);
    if !broken.is_empty() {
        return Err(format!(
            "{what}: files the damaged block did not describe lost data: {}; fsck -y said: {}",
            broken.join(", "),
            findings(&repaired)
        ));
    }
    Ok(Some(kept))
}

/// Every tree block of every base, damaged each way in turn.
fn targets(known: &[Known], r: &mut Rng, every_leaf_kind: bool) -> Vec<Target> {
    let mut out = Vec::new();
    for (base, k) in known.iter().enumerate() {
        for &block in &k.blocks {
            // Interior nodes are damaged every way; leaves one way from the seed, or every
            // way in a long run.
            let one = r.below(KINDS.len() as u64) as usize;
            for kind in 0..KINDS.len() {
                if block.level == 0 && !every_leaf_kind && kind != one {
                    continue;
                }
                // Swapped with another block of the same tree and level when there is one.
                let partner = (kind == 2)
                    .then(|| {
                        let same: Vec<_> = k
                            .blocks
                            .iter()
                            .filter(|b| {
                                b.block != block.block
                                    && b.tree == block.tree
                                    && b.level == block.level
                            })
                            .collect();
                        let level: Vec<_> = k
                            .blocks
                            .iter()
                            .filter(|b| {
                                b.block != block.block && (b.level == 0) == (block.level == 0)
                            })
                            .collect();
                        let pool: Vec<_> = if !same.is_empty() {
                            same
                        } else if !level.is_empty() {
                            level
                        } else {
                            k.blocks.iter().filter(|b| b.block != block.block).collect()
                        };
                        (!pool.is_empty()).then(|| *pool[r.below(pool.len() as u64) as usize])
                    })
                    .flatten();
                out.push(Target {
                    base,
                    kind,
                    block,
                    partner,
                });
            }
        }
    }
    out
}

/// Story: one tree block goes bad, in each of the four ways, for every block of every tree
/// of the four base images. After `fsck -y`, every file is read back and compared with the
/// content the image was made with. Prints the share of file bytes that read back correct
/// per tree, level and kind of damage, and asserts: a damaged interior node (of any tree)
/// loses no file data; a damaged leaf loses at most the files it described (their inode,
/// their extents, their names or the names of a directory above them). Replay:
/// `TUXFS_SEED=<printed>` (cases are numbered in a fixed order from the seed).
#[test]
fn salvage_keeps_file_data() {
    let started = Instant::now();
    let bases = vec![
        build("512-byte blocks, clean unmount", 512, 1500, true),
        build("512-byte blocks, log after crash", 512, 1500, false),
        build("4096-byte blocks, clean unmount", 4096, 400, true),
        build("4096-byte blocks, log after crash", 4096, 400, false),
        // Trees of two levels of interior nodes; with a crash, the log's leaves lie inside
        // the subtrees of damaged nodes.
        build_with("512-byte blocks, 80 files", 512, 3000, true, 80),
        build_with(
            "512-byte blocks, 80 files, log after crash",
            512,
            3000,
            false,
            80,
        ),
    ];
    let known: Vec<Known> = bases
        .into_iter()
        .map(|base| {
            let last = base.snapshots.last().expect("snapshots");
            Known {
                files: damage_map::contents(last, options()),
                blocks: damage_map::tree_blocks(last),
                fs_id: damage_map::superblock(last).fs_id(),
                base,
            }
        })
        .collect();
    let base_seed = env_u64("TUXFS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("salvage_keeps_file_data: TUXFS_SEED={base_seed}");
    // A long run (more damaged images than the default) damages every leaf every way.
    let long = env_u64("TUXFS_CORRUPTION_IMAGES").is_some_and(|n| n > DEFAULT_IMAGES);
    let all = targets(&known, &mut Rng(base_seed), long);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let results: Vec<(Target, Result<Option<Kept>, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (all, known) = (&all, &known);
                s.spawn(move || {
                    let mut out = Vec::new();
                    for (i, t) in all.iter().enumerate().skip(w).step_by(workers) {
                        let seed = case_seed(base_seed, i as u64);
                        let r = std::panic::catch_unwind(|| block_case(&known[t.base], t, seed))
                            .unwrap_or_else(|_| Err(format!("case {i} panicked")));
                        out.push((*t, r));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker"))
            .collect()
    });
    // The table: per tree and level, per kind of damage, bytes correct and cases.
    let mut table: BTreeMap<(u8, u8), [Cell; 4]> = BTreeMap::new();
    let mut failures = Vec::new();
    for (t, r) in &results {
        match r {
            Ok(Some(kept)) => {
                let row = table
                    .entry((
                        t.block.tree as u8,
                        u8::from(t.block.level == 0) + u8::from(kept.logged),
                    ))
                    .or_default();
                row[t.kind].0 += kept.correct;
                row[t.kind].1 += kept.total;
                row[t.kind].2 += 1;
            }
            Ok(None) => {}
            Err(e) => failures.push(e.clone()),
        }
    }
    println!("file bytes correct after fsck -y, one damaged tree block (cases):");
    println!(
        "{:<34} {:>16} {:>16} {:>16} {:>16}",
        "block", KINDS[0], KINDS[1], KINDS[2], KINDS[3]
    );
    for ((tree, leaf), row) in &table {
        let tree = TreeId::ALL
            .into_iter()
            .find(|t| *t as u8 == *tree)
            .map_or("?", |t| t.name());
        let cells: Vec<String> = row
            .iter()
            .map(|(c, t, n)| {
                if *n == 0 {
                    "-".to_string()
                } else {
                    format!("{:.2}% ({n})", 100.0 * *c as f64 / (*t).max(1) as f64)
                }
            })
            .collect();
        println!(
            "{:<34} {:>16} {:>16} {:>16} {:>16}",
            format!(
                "{tree} {}",
                ["interior", "leaf", "leaf (in the log)"][usize::from(*leaf).min(2)]
            ),
            cells[0],
            cells[1],
            cells[2],
            cells[3]
        );
    }
    println!(
        "{} cases in {:.1} s, {} failures",
        results.len(),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(
        table.keys().any(|(_, leaf)| *leaf == 0),
        "no base image has an interior node: the suite would prove nothing about them"
    );
    assert!(
        failures.is_empty(),
        "TUXFS_SEED={base_seed}: {} of {} cases failed:\n{}",
        failures.len(),
        results.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Found by the random suite (case seed 18206900192363142433): the newest superblock slot
/// damaged, so the older one (from mkfs, no log) wins, while the newer history's log
/// blocks of deltas 2 and 3 are still on the device. The repaired image was clean, but its
/// first mount numbered deltas from 2 again, allocated the same blocks, and the next fsck
/// took the old delta 3 for the witness of a damaged delta 2. fsck must number past every
/// log block of the lost history (fsck/src/history.rs).
#[test]
fn a_damaged_newer_slot_does_not_let_new_deltas_reuse_numbers() {
    let base = build("512-byte blocks, log after crash", 512, 1500, false);
    let seed = 18206900192363142433;
    one_case(&base, seed).unwrap_or_else(|e| panic!("case seed={seed}: {e}"));
}
