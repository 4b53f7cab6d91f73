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

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::fs::{Caller, FileKind, Filesystem, MountOptions, XattrFlags};
use tuxfs_engine::mkfs::format_device;
use tuxfs_fsck::{Mode, Options, Report, check};

const ROOT: u64 = 1;
const ME: Caller = Caller {
    uid: 1000,
    gid: 1000,
    pid: 1,
};
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
    for i in 0..24u64 {
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
    let count = env_u64("TUXFS_CORRUPTION_IMAGES").unwrap_or(2000);
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
