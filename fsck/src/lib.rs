//! fsck.tuxfs as a library: checks an image through `engine::format` and `engine::dev` only,
//! never through the mounted engine's caches, so it judges the engine independently.
//!
//! What is checked, in order:
//! 1. both superblock slots (the newest valid one is used; a bad slot is reported, and
//!    repaired from the good one with `-p` or `-y`);
//! 2. every tree reachable from the superblock: block headers and checksums, node and leaf
//!    structure, key order and key ranges, levels, and every value's codec;
//! 3. the log chain after the last unify, block by block, until a block does not verify;
//! 4. the free-space bitmap against every block something refers to (nothing used twice,
//!    nothing in use marked free, nothing marked in use that nothing refers to);
//! 5. inodes against directory entries: targets exist, types agree, link counts, parents,
//!    the tree is connected, orphans are unlinked, block counts match extents;
//! 6. with `--data`, the checksum of every data block (a bad one is reported with the
//!    file's path and byte range).
//!
//! With `-p`/`-y`, key ranges of a tree cut off by a damaged block are first looked for on
//! the device (`salvage`), and what cannot be saved is reported per file (`repair`).
//!
//! Exit codes follow fsck(8): 0 clean, 1 errors corrected, 4 errors left uncorrected,
//! 8 operational error (not a tuxfs image, no valid superblock, unreadable, truncated).

mod bitset;
mod cross;
mod history;
mod repair;
mod report;
mod salvage;
mod superblock;
mod walk;

use std::path::Path;
use std::time::{Duration, Instant};

use tuxfs_engine::dev::lock::{self, LockError};
use tuxfs_engine::dev::{BlockDevice, DeviceKind, OpenOptions, open_file};
use tuxfs_engine::format::Superblock;

pub use report::{render_human, render_json, render_json_error};

/// How much fsck may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `-n`: change nothing.
    Check,
    /// `-p`: fix only what is safe without asking.
    Preen,
    /// `-y`: fix everything fsck knows how to fix.
    Yes,
}

/// What the caller asked for.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub mode: Mode,
    /// Verify the checksum of every data block too.
    pub check_data: bool,
}

/// What repairing a finding costs, which decides whether `-p` may do it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// Nothing the user could miss is lost (bitmap, link counts, block counts, parent
    /// fields, entry types, finishing orphan cleanup, a superblock slot): `-p` and `-y`.
    Safe,
    /// Something is dropped or moved (entries of a damaged leaf, extents, xattrs, names,
    /// disconnected inodes moved to lost+found): only `-y`.
    Lossy,
    /// fsck cannot repair it (a data block whose checksum does not match: the data is
    /// gone, and the extent still says what it should have been).
    Never,
}

/// One problem found: the block it is about (when it is about one) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub block: Option<u64>,
    pub what: String,
    pub fixed: bool,
    pub fix: Fix,
}

/// Counts of what was checked.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub blocks_read: u64,
    pub tree_blocks: u64,
    pub inodes: u64,
    pub dirents: u64,
    pub extents: u64,
    pub data_blocks: u64,
    pub data_blocks_verified: u64,
    pub log_blocks: u64,
    pub log_deltas: u64,
    /// xattr spill blocks verified.
    pub xattr_blocks: u64,
    pub used_blocks: u64,
    /// Blocks a repair wrote (0 with `-n`).
    pub blocks_written: u64,
    pub elapsed: Duration,
}

/// The outcome of a check that could run.
#[derive(Debug, Clone)]
pub struct Report {
    pub superblock: Superblock,
    /// Slot the superblock was taken from.
    pub slot: u64,
    pub findings: Vec<Finding>,
    /// Things worth saying that are not errors.
    pub notes: Vec<String>,
    pub stats: Stats,
    /// Set when another process held the image lock during a read-only check: what was
    /// read may be stale, so the verdict is not authoritative (said with the verdict).
    pub stale: Option<String>,
}

impl Report {
    /// The fsck(8) exit code for this report.
    pub fn exit_code(&self) -> i32 {
        if self.findings.is_empty() {
            0
        } else if self.findings.iter().all(|f| f.fixed) {
            1
        } else {
            4
        }
    }
}

/// Why a check could not run at all (exit code 8).
#[derive(Debug)]
pub struct OperationalError(pub String);

impl std::fmt::Display for OperationalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OperationalError {}

/// Exit code for an operational error.
pub const EXIT_OPERATIONAL: i32 = 8;

/// Checks (and with `Preen`/`Yes` repairs) the filesystem on `dev`.
///
/// Repair is all or nothing per run: when `-y` is given, or `-p` and every finding is
/// [`Fix::Safe`], the repaired state is written as a fresh metadata set (see `repair`),
/// and the image is then checked again; anything that check still finds is reported as
/// left uncorrected. With `-p` and any finding that would lose something, nothing but a
/// damaged superblock slot is changed, and the exit code says to run fsck by hand.
pub fn check(dev: &dyn BlockDevice, opts: &Options) -> Result<Report, OperationalError> {
    let start = Instant::now();
    let chosen = superblock::select(dev, opts.mode)?;
    let mut checker = walk::Checker::new(dev, chosen.superblock.clone(), *opts);
    checker.slot_damaged = !chosen.findings.is_empty();
    checker.findings.extend(chosen.findings);
    checker.stats.blocks_read += chosen.blocks_read;
    checker.run()?;
    let mut report = Report {
        superblock: chosen.superblock.clone(),
        slot: chosen.slot,
        findings: Vec::new(),
        notes: Vec::new(),
        stats: Stats::default(),
        stale: None,
    };
    let needs = checker
        .findings
        .iter()
        .any(|f| !f.fixed && f.fix != Fix::Never);
    let allowed = match opts.mode {
        Mode::Check => false,
        Mode::Preen => checker
            .findings
            .iter()
            .all(|f| f.fixed || f.fix != Fix::Lossy),
        Mode::Yes => true,
    };
    if needs && !allowed && opts.mode == Mode::Preen {
        checker.notes.push(
            "some repairs would drop or move something: run fsck.tuxfs -y (nothing else was changed)"
                .into(),
        );
    }
    if needs && allowed {
        let state = repair::repaired_state(&mut checker);
        match repair::write(
            dev,
            &chosen.superblock,
            chosen.slot,
            &checker.referenced,
            &state,
        ) {
            Ok(written) => {
                for f in checker.findings.iter_mut().filter(|f| f.fix != Fix::Never) {
                    f.fixed = true;
                }
                checker.stats.blocks_written = written.blocks_written;
                report.superblock = written.superblock;
                report.slot = written.slot;
                recheck(dev, opts, &mut checker)?;
            }
            Err(repair::RepairError::NoSpace(why)) => {
                checker.finding(None, format!("cannot repair: {why}"));
            }
            Err(repair::RepairError::Io(why)) => {
                return Err(OperationalError(format!("repair failed: {why}")));
            }
        }
    }
    report.findings = checker.findings;
    report.notes = checker.notes;
    report.stats = checker.stats;
    report.stats.elapsed = start.elapsed();
    Ok(report)
}

/// Checks (and with `Preen`/`Yes` repairs) the image file or block device at `path`, as
/// the `fsck.tuxfs` command does.
///
/// `-p`/`-y` take the image lock `tuxfs-mount` holds ([`tuxfs_engine::dev::lock`]) and
/// keep it for the whole repair: a repair under a mount would be overwritten by its next
/// commit, and the mount would then crash onto metadata it never wrote. When another
/// process holds the lock they refuse (an operational error naming the mount). `-n` runs
/// anyway but sets [`Report::stale`]: what it read may be stale, so its verdict is not
/// authoritative.
pub fn check_path(path: &Path, opts: &Options) -> Result<Report, OperationalError> {
    let mut _lock = None;
    let mut stale = None;
    if opts.mode == Mode::Check {
        if lock::image_in_use(path).unwrap_or(false) {
            stale = Some(format!(
                "{} is in use by another process ({}): what fsck read may be stale, and a clean \
                 result proves nothing; unmount it and run fsck.tuxfs again",
                path.display(),
                in_use_by(path)
            ));
        }
    } else {
        match lock::lock_image(path) {
            Ok(l) => _lock = Some(l),
            Err(LockError::InUse) => {
                return Err(OperationalError(format!(
                    "in use by another process ({}); refusing to repair it: unmount it first \
                     (fsck.tuxfs -n can check it, with a warning)",
                    in_use_by(path)
                )));
            }
            // Not lockable: a path that cannot be opened is reported by the open below.
            Err(LockError::Io(_)) => {}
        }
    }
    let open = OpenOptions {
        read_only: opts.mode == Mode::Check,
        kind: DeviceKind::Auto,
        ..OpenOptions::default()
    };
    let dev = open_file(path, &open).map_err(|e| OperationalError(format!("cannot open: {e}")))?;
    let mut report = check(dev.as_ref(), opts)?;
    report.stale = stale;
    Ok(report)
}

/// Who holds the image, as well as this process can tell: the mountpoints whose source is
/// the image, or else that some process holds its lock.
fn in_use_by(path: &Path) -> String {
    let mounts = lock::mounts_of(path);
    if mounts.is_empty() {
        "its lock is held, by tuxfs-mount or another fsck.tuxfs".into()
    } else {
        let list: Vec<String> = mounts.iter().map(|m| m.display().to_string()).collect();
        format!("mounted at {}", list.join(", "))
    }
}

/// Checks the repaired image (read-only) and adds what is still wrong as uncorrected.
fn recheck(
    dev: &dyn BlockDevice,
    opts: &Options,
    checker: &mut walk::Checker<'_>,
) -> Result<(), OperationalError> {
    let again = Options {
        mode: Mode::Check,
        check_data: opts.check_data,
    };
    let chosen = superblock::select(dev, Mode::Check)?;
    let mut after = walk::Checker::new(dev, chosen.superblock, again);
    after.findings.extend(chosen.findings);
    after.run()?;
    checker.stats.blocks_read += after.stats.blocks_read + chosen.blocks_read;
    for mut f in after.findings {
        if f.fix == Fix::Never && checker.findings.iter().any(|g| g.what == f.what) {
            continue;
        }
        f.what = format!("after repair: {}", f.what);
        f.fixed = false;
        checker.findings.push(f);
    }
    Ok(())
}
