//! The differential suite: one seeded random sequence of system calls runs on a directory of
//! a kernel filesystem (the *reference*, ext4 in the FUSE test) and on a tuxfs mount (the
//! *subject*), and every result must agree.
//!
//! Invariants checked, after every operation: the return value or errno; bytes read; stat
//! fields (type, mode, nlink, uid, gid, size, rdev, times by class, see [`TimeClass`]);
//! readdir name sets; readlink targets; xattr values, sizes and name sets. Every
//! [`CHECK_EVERY`] operations and at the end (quiescent points: open files are fsynced
//! first, which does not change what a program sees): the whole trees, with every file's
//! bytes (data ranges whole, holes at their edges, see [`tree::plan`]), st_blocks by
//! [`tree::blocks_agree`] (tuxfs: ext4's data and preallocated blocks, without ext4's metadata blocks), xattrs and link targets. One operation in [`TIMED_ONE_IN`] is
//! *timed*: the suite sleeps past the kernel's coarse clock tick first, then checks
//! whether mtime and ctime of the paths involved (and their parents) changed, on both
//! sides alike.
//!
//! Not compared, each for a named reason (docs/TESTING.md, "Differential suite"):
//! inode numbers and st_dev (numbering is the filesystem's own); a directory's st_size and
//! st_blocks (SEMANTICS.md, "Deviations from ext4": the block size and 0); st_blocks of
//! symlinks (ext4 puts targets of 60 bytes or more in a block, tuxfs keeps up to 512 in
//! the inode); st_blocks of files outside quiescent points (the kernel's writeback cache
//! has not sent the pages to tuxfs yet); the order of listxattr names and of readdir
//! (each filesystem's own); lseek on a directory (a directory offset is a cookie whose
//! values are each filesystem's own). Features another change is bringing are listed in
//! [`DIFF_OPS_PENDING`]: off by default, each turned on by deleting its line (or, to try
//! it first, `TUXFS_DIFF_ENABLE=name,...`).

mod ops;
pub mod sys;
pub mod tree;

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use ops::{Data, Generator, Op, POOL, SLOTS, Special};

use crate::rng;

/// Replays a run.
pub const SEED_ENV: &str = "TUXFS_DIFF_SEED";
/// Operations per run.
pub const OPS_ENV: &str = "TUXFS_DIFF_OPS";
/// Comma-separated pending features to turn on before they are merged.
pub const ENABLE_ENV: &str = "TUXFS_DIFF_ENABLE";
/// Operations in the default run (about 20 s through a mount on the 2-core test machine).
pub const OPS_DEFAULT: usize = 3000;
/// The block size of both sides (mkfs.ext4 -b 4096 and tuxfs's default).
pub const BLOCK_SIZE: i64 = 4096;
/// Whole trees are compared every this many operations.
pub const CHECK_EVERY: usize = 25;
/// A long run prints a line every this many operations.
const PROGRESS_EVERY: usize = 10_000;
/// One operation in this many has its timestamps checked for change.
pub const TIMED_ONE_IN: u64 = 12;
/// Longer than the kernel's coarse clock tick (4 ms at HZ=250, 10 ms at HZ=100).
const TICK: Duration = Duration::from_millis(12);
/// Operations shown with a failure (`TUXFS_DIFF_HISTORY` shows more).
const HISTORY: usize = 24;
/// Sets how many of the last operations a failure shows.
pub const HISTORY_ENV: &str = "TUXFS_DIFF_HISTORY";

/// A behaviour being built by another change right now: its operations and checks are off
/// until it is merged, so the suite never reports what is known not to exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// fallocate(2) in every mode (SEMANTICS.md: "fallocate is refused with EOPNOTSUPP").
    Fallocate,
    /// lseek SEEK_DATA / SEEK_HOLE (SEMANTICS.md: "the whole file is reported as data").
    SeekHole,
    /// xattr values up to 64 KiB and many per inode (SEMANTICS.md: "ENOSPC when they
    /// outgrow the inode record").
    LargeXattrs,
    /// Namespace checks: EOPNOTSUPP for unknown prefixes, EINVAL for `user.`, `trusted.`
    /// and `security.` as on ext4.
    XattrNamespaces,
    /// RENAME_WHITEOUT (SEMANTICS.md: "RENAME_WHITEOUT: EINVAL").
    RenameWhiteout,
    /// O_TMPFILE.
    TmpFile,
    /// Set-group-ID directories pass on their group and bit (SEMANTICS.md, "Deviations
    /// from ext4"). While pending, the suite drops S_ISGID from chmod of a directory.
    SetgidDirs,
    /// setxattr of the value a name already has leaves ctime alone, as on ext4
    /// (`ext4_xattr_value_same`); tuxfs stamps ctime. While pending, such a setxattr is
    /// not timed (its result and the trees are still compared).
    XattrSameValue,
    /// syncfs(2) never fails. Today it gives ENOENT after a file written through the
    /// writeback cache is closed and unlinked: the engine frees the inode at once, and the
    /// kernel's later SETATTR of the cached mtime and ctime (write_inode) finds it gone.
    /// Found by stress-ng's `io` stressor (scripts/external-suites).
    Syncfs,
    /// relatime. While pending the reference is mounted `noatime`, which is what tuxfs
    /// does today (SEMANTICS.md: "atime is never updated on access").
    Relatime,
}

impl Pending {
    pub const ALL: [Pending; 10] = [
        Pending::Fallocate,
        Pending::SeekHole,
        Pending::LargeXattrs,
        Pending::XattrNamespaces,
        Pending::RenameWhiteout,
        Pending::TmpFile,
        Pending::SetgidDirs,
        Pending::XattrSameValue,
        Pending::Syncfs,
        Pending::Relatime,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Pending::Fallocate => "fallocate",
            Pending::SeekHole => "seek_hole",
            Pending::LargeXattrs => "large_xattrs",
            Pending::XattrNamespaces => "xattr_namespaces",
            Pending::RenameWhiteout => "rename_whiteout",
            Pending::TmpFile => "tmpfile",
            Pending::SetgidDirs => "setgid_dirs",
            Pending::XattrSameValue => "xattr_same_value",
            Pending::Syncfs => "syncfs",
            Pending::Relatime => "relatime",
        }
    }
}

/// The pending switch: every feature listed here is OFF. Delete a line when its feature
/// is merged, and the suite tests it from then on.
pub const DIFF_OPS_PENDING: &[Pending] = &[Pending::Relatime];

/// What one run does.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    pub ops: usize,
    /// Pending features turned on.
    pub enabled: Vec<Pending>,
    /// The command that replays this run, shown with a failure.
    pub replay: String,
    /// Names of the two sides, for messages.
    pub names: [String; 2],
    /// Compare atime. True for a reference mounted as tuxfs behaves (`noatime` while
    /// relatime is pending, SEMANTICS.md "atime is never updated on access"); false only
    /// for the harness's self-test on the host's relatime filesystem, where the harness's
    /// own reads move atime.
    pub compare_atime: bool,
}

impl Config {
    /// From `TUXFS_DIFF_SEED` (or `TUXFS_SEED`; else the clock), `TUXFS_DIFF_OPS` and
    /// `TUXFS_DIFF_ENABLE`; prints the seed line. Panics on a malformed variable, so a
    /// typo never turns a replay into another run.
    pub fn from_env(replay_command: &str, names: [&str; 2]) -> Config {
        let seed = match std::env::var(SEED_ENV) {
            Ok(s) => rng::parse_seed(&s)
                .unwrap_or_else(|| panic!("{SEED_ENV}={s:?} is not a u64 (decimal or 0x hex)")),
            Err(_) => rng::seed_from_env().unwrap_or_else(rng::clock_seed),
        };
        let ops = match std::env::var(OPS_ENV) {
            Ok(s) => s
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{OPS_ENV}={s:?} is not a count")),
            Err(_) => OPS_DEFAULT,
        };
        let mut enabled: Vec<Pending> = Pending::ALL
            .into_iter()
            .filter(|p| !DIFF_OPS_PENDING.contains(p))
            .collect();
        if let Ok(list) = std::env::var(ENABLE_ENV) {
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let p = Pending::ALL
                    .into_iter()
                    .find(|p| p.name() == name)
                    .unwrap_or_else(|| panic!("{ENABLE_ENV}: unknown feature {name:?}"));
                if !enabled.contains(&p) {
                    enabled.push(p);
                }
            }
        }
        let on: Vec<&str> = enabled.iter().map(|p| p.name()).collect();
        let replay = format!("{SEED_ENV}={seed} {OPS_ENV}={ops} {replay_command}");
        eprintln!(
            "differential: seed={seed} ops={ops} pending features on: [{}] (replay: {replay})",
            on.join(",")
        );
        Config {
            seed,
            ops,
            enabled,
            replay,
            names: names.map(str::to_string),
            compare_atime: true,
        }
    }

    pub fn on(&self, p: Pending) -> bool {
        self.enabled.contains(&p)
    }
}

/// The run's start, by which times are classed.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    start_sec: i64,
    /// False when the reference updates atime on reads ([`Config::compare_atime`]).
    atime: bool,
}

/// A timestamp as compared: one set explicitly (before the run started) must be equal to
/// the nanosecond; one set by the filesystem must be recent on both sides (the two sides
/// run a moment apart, so the values differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeClass {
    Set(i64, i64),
    Recent,
    /// After now: a clock running ahead on one side.
    Future,
    /// atime on a reference that updates it on reads (the harness's own self-test).
    NotCompared,
}

impl TimeClass {
    fn of(sec: i64, nsec: i64, clock: &RunClock) -> TimeClass {
        if sec < clock.start_sec - 60 {
            TimeClass::Set(sec, nsec)
        } else if sec
            <= std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(i64::MAX, |d| d.as_secs() as i64 + 1)
        {
            TimeClass::Recent
        } else {
            TimeClass::Future
        }
    }
}

/// The stat fields compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// 'f', 'd', 'l', 'p' FIFO, 's' socket, 'c', 'b'.
    pub kind: char,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    /// None for directories (deviation: tuxfs gives the block size).
    pub size: Option<i64>,
    pub rdev: u64,
    pub atime: TimeClass,
    pub mtime: TimeClass,
    pub ctime: TimeClass,
}

impl Attr {
    pub fn of(st: &libc::stat, clock: &RunClock) -> Attr {
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => 'f',
            libc::S_IFDIR => 'd',
            libc::S_IFLNK => 'l',
            libc::S_IFIFO => 'p',
            libc::S_IFSOCK => 's',
            libc::S_IFCHR => 'c',
            _ => 'b',
        };
        Attr {
            kind,
            mode: st.st_mode & 0o7777,
            nlink: st.st_nlink,
            uid: st.st_uid,
            gid: st.st_gid,
            size: (kind != 'd').then_some(st.st_size),
            rdev: st.st_rdev,
            atime: if clock.atime {
                TimeClass::of(st.st_atime, st.st_atime_nsec, clock)
            } else {
                TimeClass::NotCompared
            },
            mtime: TimeClass::of(st.st_mtime, st.st_mtime_nsec, clock),
            ctime: TimeClass::of(st.st_ctime, st.st_ctime_nsec, clock),
        }
    }
}

/// What an operation returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Err(String),
    Done,
    Count(i64),
    Bytes(Vec<u8>),
    Names(Vec<Vec<u8>>),
    Attr(Attr),
    /// The slot holds no open file (on this side).
    NoFd,
    /// Not run, for the named reason (the same on both sides, decided by the reference).
    Skipped(&'static str),
}

fn out<T>(r: sys::SysResult<T>, f: impl FnOnce(T) -> Outcome) -> Outcome {
    match r {
        Ok(v) => f(v),
        Err(e) => Outcome::Err(sys::errno_name(e)),
    }
}

fn done(r: sys::SysResult<()>) -> Outcome {
    out(r, |()| Outcome::Done)
}

/// One side: its work directory and its open files.
#[derive(Debug)]
pub struct Side {
    pub root: PathBuf,
    fds: Vec<Option<OwnedFd>>,
}

impl Side {
    pub fn new(root: &Path) -> Side {
        Side {
            root: root.to_path_buf(),
            fds: (0..SLOTS).map(|_| None).collect(),
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// Runs `op` here. `clock` classes times.
    fn exec(&mut self, op: &Op, clock: &RunClock) -> Outcome {
        if let Some(slot) = op.slot()
            && !matches!(op, Op::Open { .. } | Op::TmpFile { .. })
            && self.fds[slot].is_none()
        {
            return Outcome::NoFd;
        }
        let fd = |s: &Side, slot: usize| -> OwnedFd {
            s.fds[slot]
                .as_ref()
                .and_then(|f| f.try_clone().ok())
                .expect("open slot")
        };
        match op {
            Op::Open {
                slot,
                path,
                flags,
                mode,
            } => self.open_into(*slot, path, flags | libc::O_NONBLOCK, *mode),
            Op::TmpFile {
                slot,
                dir,
                flags,
                mode,
            } => self.open_into(*slot, dir, flags | libc::O_TMPFILE, *mode),
            Op::Close { slot } => {
                self.fds[*slot] = None;
                Outcome::Done
            }
            Op::Read { slot, len } => out(sys::read(&fd(self, *slot), *len), Outcome::Bytes),
            Op::Pread { slot, off, len } => {
                out(sys::pread(&fd(self, *slot), *off, *len), Outcome::Bytes)
            }
            Op::Write { slot, data } => out(sys::write(&fd(self, *slot), &data.bytes()), |n| {
                Outcome::Count(n as i64)
            }),
            Op::Pwrite { slot, off, data } => {
                out(sys::pwrite(&fd(self, *slot), *off, &data.bytes()), |n| {
                    Outcome::Count(n as i64)
                })
            }
            Op::Lseek { slot, off, whence } => {
                let f = fd(self, *slot);
                out(sys::lseek(&f, *off, *whence), Outcome::Count)
            }
            Op::Ftruncate { slot, len } => done(sys::ftruncate(&fd(self, *slot), *len)),
            Op::Fsync { slot, data_only } => done(sys::fsync(&fd(self, *slot), *data_only)),
            Op::Fstat { slot } => out(sys::fstat(fd(self, *slot).as_raw_fd()), |st| {
                Outcome::Attr(Attr::of(&st, clock))
            }),
            Op::Fallocate {
                slot,
                mode,
                off,
                len,
            } => done(sys::fallocate(&fd(self, *slot), *mode, *off, *len)),
            Op::LinkFd { slot, path } => {
                let proc = PathBuf::from(format!("/proc/self/fd/{}", fd(self, *slot).as_raw_fd()));
                done(link_empty_path(&proc, &self.p(path)))
            }
            Op::Truncate { path, len } => done(sys::truncate(&self.p(path), *len)),
            Op::Stat { path, follow } => out(sys::stat(&self.p(path), *follow), |st| {
                Outcome::Attr(Attr::of(&st, clock))
            }),
            Op::Mkdir { path, mode } => done(sys::mkdir(&self.p(path), *mode)),
            Op::Rmdir { path } => done(sys::rmdir(&self.p(path))),
            Op::Unlink { path } => done(sys::unlink(&self.p(path))),
            Op::Rename { from, to, flags } => done(sys::rename(&self.p(from), &self.p(to), *flags)),
            Op::Link { from, to } => done(sys::link(&self.p(from), &self.p(to))),
            Op::Symlink { target, path } => done(sys::symlink(target.as_bytes(), &self.p(path))),
            Op::Readlink { path } => out(sys::readlink(&self.p(path)), Outcome::Bytes),
            Op::Chmod { path, mode } => done(sys::chmod(&self.p(path), *mode)),
            Op::Chown { path, uid, gid } => done(sys::lchown(&self.p(path), *uid, *gid)),
            Op::Utimens {
                path,
                times,
                nofollow,
            } => done(sys::utimensat(&self.p(path), *times, *nofollow)),
            Op::Mknod { path, kind, mode } => {
                let ty = match kind {
                    Special::Fifo => libc::S_IFIFO,
                    Special::Socket => libc::S_IFSOCK,
                };
                done(sys::mknod(&self.p(path), ty | mode))
            }
            Op::SetXattr {
                path,
                name,
                value,
                flags,
            } => done(sys::lsetxattr(
                &self.p(path),
                name.as_bytes(),
                &value.bytes(),
                *flags,
            )),
            Op::GetXattr { path, name, size } => out(
                sys::lgetxattr(&self.p(path), name.as_bytes(), *size),
                Outcome::Bytes,
            ),
            Op::ListXattr { path, size } => {
                out(sys::llistxattr(&self.p(path), *size), Outcome::Names)
            }
            Op::RemoveXattr { path, name } => {
                done(sys::lremovexattr(&self.p(path), name.as_bytes()))
            }
            Op::Readdir { path } => out(sys::readdir(&self.p(path)), Outcome::Names),
            Op::Syncfs => done(sys::syncfs(&self.root)),
        }
    }

    /// open(2) into `slot`, closing what it held first.
    fn open_into(&mut self, slot: usize, rel: &str, flags: i32, mode: u32) -> Outcome {
        self.fds[slot] = None;
        match sys::open(&self.p(rel), flags, mode) {
            Ok(f) => {
                self.fds[slot] = Some(f);
                Outcome::Done
            }
            Err(e) => Outcome::Err(sys::errno_name(e)),
        }
    }

    /// fsyncs every open file (errors ignored: FIFOs and sockets refuse it alike), so the
    /// subject's writeback cache has handed every page to the filesystem.
    fn settle(&self) {
        for f in self.fds.iter().flatten() {
            let _ = sys::fsync(f, false);
        }
    }

    /// Closes every open file.
    pub fn close_all(&mut self) {
        for f in &mut self.fds {
            *f = None;
        }
    }

    /// The inode, mtime and ctime of `rel` (lstat).
    fn times(&self, rel: &str) -> Option<Stamp> {
        sys::stat(&self.p(rel), false).ok().map(|st| stamp(&st))
    }
}

/// linkat(AT_FDCWD, "/proc/self/fd/N", AT_FDCWD, to, AT_SYMLINK_FOLLOW): names an open file.
fn link_empty_path(proc: &Path, to: &Path) -> sys::SysResult<()> {
    use std::os::unix::ffi::OsStrExt;
    let a = std::ffi::CString::new(proc.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
    let b = std::ffi::CString::new(to.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
    // SAFETY: NUL-terminated paths we own.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(())
    }
}

/// A difference, with everything needed to understand and replay it.
#[derive(Debug)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Counts shown at the end of a run.
#[derive(Debug, Default)]
pub struct Summary {
    pub ops: usize,
    pub ok: usize,
    pub errors: BTreeMap<String, usize>,
    pub tree_checks: usize,
    pub timed: usize,
    /// Adjustments and skips made for named reasons, with counts.
    pub adjusted: BTreeMap<&'static str, usize>,
}

/// The run: two sides, the generator and the history.
#[derive(Debug)]
pub struct Differential {
    pub cfg: Config,
    generator: Generator,
    /// Decides which operations are timed; separate from the generator so that timing does
    /// not change the operations of a seed.
    timing: rng::Rng,
    pub sides: [Side; 2],
    clock: RunClock,
    history: VecDeque<(usize, Op)>,
    history_max: usize,
    pub summary: Summary,
}

const ADJ_SETGID: &str =
    "S_ISGID dropped from chmod of a directory (pending setgid_dirs; SEMANTICS.md, Deviations)";
const SKIP_SAME_SIZE: &str = "truncate(2) to the current size not run (with the writeback cache the \
     kernel keeps mtime and ctime; SEMANTICS.md, Timestamps)";
const SKIP_FIFO_WRITE: &str = "write(2) to a FIFO not run (the kernel moves a FIFO's mtime and ctime \
     in its own cache only; SEMANTICS.md, Timestamps)";
const SKIP_UNLINKED_SPECIAL: &str = "fstat of an unlinked FIFO or socket not run (the engine counts \
     opens the kernel never sends for special files; SEMANTICS.md, Unlinked open files)";
const UNTIMED_SAME_XATTR: &str = "setxattr of the same value not timed (pending xattr_same_value: \
     ext4 leaves ctime alone, tuxfs stamps it)";
const SKIP_COLLAPSE_INSERT: &str = "fallocate COLLAPSE_RANGE / INSERT_RANGE not run (the kernel's \
     FUSE module answers EOPNOTSUPP before the daemon sees them; SEMANTICS.md, Space management)";
const SKIP_CHOWN_NOOP_SETID: &str = "chown(-1, -1) of a set-id non-directory not run (FUSE sends \
     no kill flag when no id changes; ext4 clears S_ISUID/S_ISGID; SEMANTICS.md, Deviations)";
const UNTIMED_WHITEOUT: &str = "renameat2(RENAME_WHITEOUT) not timed (ext4 stamps the source \
     directory's mtime and ctime even when the rename then fails, e.g. ENOTEMPTY)";
const RESTORED_WHITEOUT: &str = "source directory times put back on ext4 after a failed \
     RENAME_WHITEOUT (ext4 stamps it even when the rename fails)";
const SKIP_EXT4_XATTR_FULL: &str = "setxattr that fills ext4's xattr space (ENOSPC there) not run \
     on tuxfs, which holds up to 64 KiB of names per inode (SEMANTICS.md, Extended attributes)";
const SKIP_DIR_SEEK: &str =
    "lseek on a directory not run (a directory offset is each filesystem's own cookie)";
pub const RESEEK_UNCACHED: &str = "SEEK_DATA / SEEK_HOLE asked of ext4 again, and then equal, after \
     dropping its clean cached pages of the file (ext4 counts the cached zero pages of an \
     unwritten extent as data, a FUSE daemon cannot see the kernel's page cache; SEMANTICS.md, \
     Space management)";

impl Differential {
    /// A run over two empty directories: `reference` (the kernel filesystem) and
    /// `subject` (tuxfs).
    pub fn new(reference: &Path, subject: &Path, cfg: Config) -> Differential {
        let start_sec = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Differential {
            generator: Generator::new(cfg.seed, &cfg.enabled),
            timing: rng::Rng::stream(cfg.seed, 1),
            clock: RunClock {
                start_sec,
                atime: cfg.compare_atime,
            },
            sides: [Side::new(reference), Side::new(subject)],
            history: VecDeque::new(),
            history_max: std::env::var(HISTORY_ENV)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(HISTORY),
            summary: Summary::default(),
            cfg,
        }
    }

    fn fail(&self, index: usize, what: &str) -> Failure {
        let mut s = format!(
            "differential: seed {} op #{index}: {what}\nlast operations:\n",
            self.cfg.seed
        );
        for (i, op) in &self.history {
            s.push_str(&format!("  #{i}: {op:?}\n"));
        }
        s.push_str(&format!("replay: {}\n", self.cfg.replay));
        Failure(s)
    }

    /// Adjusts an operation for a pending feature, by a named rule (counted).
    fn adjust(&mut self, op: Op) -> Op {
        if let Op::Chmod { path, mode } = &op
            && !self.cfg.on(Pending::SetgidDirs)
            && mode & libc::S_ISGID != 0
            && sys::stat(&self.sides[0].p(path), true)
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        {
            *self.summary.adjusted.entry(ADJ_SETGID).or_default() += 1;
            return Op::Chmod {
                path: path.clone(),
                mode: mode & !libc::S_ISGID,
            };
        }
        op
    }

    /// Why the operation is not run on either side, if it is not.
    fn skip_reason(&self, op: &Op) -> Option<&'static str> {
        if let Op::Lseek { slot, .. } = op
            && let Some(f) = &self.sides[0].fds[*slot]
            && sys::fstat(f.as_raw_fd()).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        {
            return Some(SKIP_DIR_SEEK);
        }
        let slot_mode = op
            .slot()
            .and_then(|slot| self.sides[0].fds[slot].as_ref())
            .and_then(|f| sys::fstat(f.as_raw_fd()).ok())
            .map(|st| (st.st_mode & libc::S_IFMT, st.st_nlink));
        if let Op::Chown {
            path,
            uid: u32::MAX,
            gid: u32::MAX,
        } = op
            && sys::stat(&self.sides[0].p(path), true).is_ok_and(|st| {
                st.st_mode & libc::S_IFMT != libc::S_IFDIR
                    && st.st_mode & (libc::S_ISUID | libc::S_ISGID) != 0
            })
        {
            return Some(SKIP_CHOWN_NOOP_SETID);
        }
        if let Op::Fallocate { mode, .. } = op
            && mode & (libc::FALLOC_FL_COLLAPSE_RANGE | libc::FALLOC_FL_INSERT_RANGE) != 0
        {
            return Some(SKIP_COLLAPSE_INSERT);
        }
        if let (Op::Write { .. }, Some((libc::S_IFIFO, _))) = (op, slot_mode) {
            return Some(SKIP_FIFO_WRITE);
        }
        if let (Op::Fstat { .. }, Some((kind, 0))) = (op, slot_mode)
            && special(kind)
        {
            return Some(SKIP_UNLINKED_SPECIAL);
        }
        if let Op::Truncate { path, len } = op
            && sys::stat(&self.sides[0].p(path), true)
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_size == *len)
        {
            return Some(SKIP_SAME_SIZE);
        }
        None
    }

    /// A setxattr of the value the name has already (on the reference), while
    /// [`Pending::XattrSameValue`] is pending.
    fn same_xattr_value(&self, op: &Op) -> bool {
        let Op::SetXattr {
            path, name, value, ..
        } = op
        else {
            return false;
        };
        !self.cfg.on(Pending::XattrSameValue)
            && sys::lgetxattr(&self.sides[0].p(path), name.as_bytes(), 70_000)
                .is_ok_and(|v| v == value.bytes())
    }

    /// Paths whose times a timed operation watches: its own and their parents.
    fn watched(op: &Op) -> Vec<String> {
        let mut w: Vec<String> = Vec::new();
        for p in op.paths() {
            w.push(p.to_string());
            let parent = p.rsplit_once('/').map_or("", |(a, _)| a).to_string();
            w.push(parent);
        }
        w.sort();
        w.dedup();
        w
    }

    /// The reference's file position before a SEEK_DATA / SEEK_HOLE (for
    /// [`Differential::seek_again_uncached`]); None for any other operation.
    fn seek_position(&self, op: &Op) -> Option<i64> {
        let Op::Lseek { slot, whence, .. } = op else {
            return None;
        };
        if *whence != libc::SEEK_DATA && *whence != libc::SEEK_HOLE {
            return None;
        }
        sys::lseek(self.sides[0].fds[*slot].as_ref()?, 0, libc::SEEK_CUR).ok()
    }

    /// The reference's answer to a SEEK_DATA / SEEK_HOLE asked again from file position
    /// `pos`, after dropping its clean cached pages of the file. ext4 reports an unwritten
    /// extent as data where its page cache holds the extent's (zero) pages
    /// (`mapping_seek_hole_data`), e.g. after any read of them, the tree comparison's
    /// included; tuxfs cannot see the kernel's page cache and answers "hole" there
    /// (SEMANTICS.md, Space management). Dropping clean pages changes no other answer:
    /// dirty pages stay, and written, delayed and unmapped blocks answer from ext4's
    /// extent tree.
    fn seek_again_uncached(&mut self, op: &Op, pos: i64) -> Option<Outcome> {
        let f = self.sides[0].fds[op.slot()?].as_ref()?;
        sys::drop_clean_pages(f).ok()?;
        sys::lseek(f, pos, libc::SEEK_SET).ok()?;
        let clock = self.clock;
        Some(self.sides[0].exec(op, &clock))
    }

    /// Runs the next operation on both sides and compares.
    pub fn step(&mut self, index: usize) -> Result<(), Failure> {
        let op = self.generator.next_op();
        self.apply(index, op)
    }

    /// Runs `op` on both sides and compares ([`Differential::step`] with a given
    /// operation: tests run fixed sequences through it).
    pub fn apply(&mut self, index: usize, op: Op) -> Result<(), Failure> {
        let op = self.adjust(op);
        self.history.push_back((index, op.clone()));
        if self.history.len() > self.history_max {
            self.history.pop_front();
        }
        self.summary.ops += 1;
        if let Some(why) = self.skip_reason(&op) {
            *self.summary.adjusted.entry(why).or_default() += 1;
            return Ok(());
        }
        let mut timed = self.timing.chance(1, TIMED_ONE_IN);
        if timed && self.same_xattr_value(&op) {
            *self.summary.adjusted.entry(UNTIMED_SAME_XATTR).or_default() += 1;
            timed = false;
        }
        if timed
            && let Op::Rename { flags, .. } = &op
            && flags & libc::RENAME_WHITEOUT != 0
        {
            *self.summary.adjusted.entry(UNTIMED_WHITEOUT).or_default() += 1;
            timed = false;
        }
        let watched = Self::watched(&op);
        let mut before = Vec::new();
        let mut held: Vec<Option<OwnedFd>> = Vec::new();
        if timed {
            std::thread::sleep(TICK);
            // An unlinked FIFO or socket is not watched (SKIP_UNLINKED_SPECIAL).
            let watch_slot = op
                .slot()
                .and_then(|slot| self.sides[0].fds[slot].as_ref())
                .and_then(|f| sys::fstat(f.as_raw_fd()).ok())
                .is_some_and(|st| !(special(st.st_mode & libc::S_IFMT) && st.st_nlink == 0));
            for side in &self.sides {
                let h = op
                    .slot()
                    .filter(|_| watch_slot)
                    .and_then(|slot| side.fds[slot].as_ref())
                    .and_then(|f| f.try_clone().ok());
                before.push(Self::times_of(side, &watched, h.as_ref()));
                held.push(h);
            }
        }
        let clock = self.clock;
        // ext4 stamps the source directory of a RENAME_WHITEOUT even when the rename then
        // fails: its times are put back on the reference after a failure (a named rule).
        let whiteout_source = match &op {
            Op::Rename { from, flags, .. } if flags & libc::RENAME_WHITEOUT != 0 => {
                let parent = from.rsplit_once('/').map_or("", |(a, _)| a).to_string();
                sys::stat(&self.sides[0].p(&parent), true)
                    .ok()
                    .map(|st| (parent, st))
            }
            _ => None,
        };
        let seek_from = self.seek_position(&op);
        let first = self.sides[0].exec(&op, &clock);
        if matches!(op, Op::SetXattr { .. }) && matches!(&first, Outcome::Err(e) if e == "ENOSPC") {
            // ext4 holds about one block of xattr entries per inode; tuxfs holds more
            // (SEMANTICS.md, Extended attributes), so the set is not run on tuxfs.
            *self
                .summary
                .adjusted
                .entry(SKIP_EXT4_XATTR_FULL)
                .or_default() += 1;
            return Ok(());
        }
        let second = self.sides[1].exec(&op, &clock);
        let mut results = [first, second];
        let mut again = None;
        if results[0] != results[1]
            && let Some(pos) = seek_from
        {
            again = self.seek_again_uncached(&op, pos);
            if again.as_ref() == Some(&results[1]) {
                *self.summary.adjusted.entry(RESEEK_UNCACHED).or_default() += 1;
                results[0] = results[1].clone();
            }
        }
        if let (Some((parent, st)), Outcome::Err(_), Outcome::Err(_)) =
            (&whiteout_source, &results[0], &results[1])
        {
            let times = [
                (st.st_atime, st.st_atime_nsec),
                (st.st_mtime, st.st_mtime_nsec),
            ];
            if sys::utimensat(&self.sides[0].p(parent), times, false).is_ok() {
                *self.summary.adjusted.entry(RESTORED_WHITEOUT).or_default() += 1;
            }
        }
        if results[0] != results[1] {
            let again = again.map_or(String::new(), |a| {
                format!(
                    "\n  {} again, its clean cached pages dropped: {a:?}",
                    self.cfg.names[0]
                )
            });
            return Err(self.fail(
                index,
                &format!(
                    "{op:?}\n  {}: {:?}\n  {}: {:?}{again}",
                    self.cfg.names[0], results[0], self.cfg.names[1], results[1]
                ),
            ));
        }
        match &results[0] {
            Outcome::Err(e) => *self.summary.errors.entry(e.clone()).or_default() += 1,
            _ => self.summary.ok += 1,
        }
        if timed {
            self.summary.timed += 1;
            let after: Vec<_> = self
                .sides
                .iter()
                .zip(&held)
                .map(|(s, h)| Self::times_of(s, &watched, h.as_ref()))
                .collect();
            let changes: Vec<Vec<String>> =
                (0..2).map(|i| changed(&before[i], &after[i])).collect();
            if changes[0] != changes[1] {
                return Err(self.fail(
                    index,
                    &format!(
                        "{op:?} returned {:?} on both, but times changed differently \
                         (label: [mtime changed, ctime changed]):\n  {}: {:?}\n  {}: {:?}",
                        results[0], self.cfg.names[0], changes[0], self.cfg.names[1], changes[1]
                    ),
                ));
            }
        }
        if (index + 1).is_multiple_of(CHECK_EVERY) {
            self.compare_trees(index)?;
        }
        Ok(())
    }

    /// mtime and ctime of the watched paths and of `held`, the file that was in the
    /// operation's slot before it ran (a duplicate descriptor, so the file is still
    /// watched after Close or an Open that replaced it).
    fn times_of(
        side: &Side,
        watched: &[String],
        held: Option<&OwnedFd>,
    ) -> Vec<(String, Option<Stamp>)> {
        let mut v: Vec<_> = watched
            .iter()
            .map(|w| (format!("path {w:?}"), side.times(w)))
            .collect();
        if let Some(f) = held {
            let t = sys::fstat(f.as_raw_fd()).ok().map(|st| stamp(&st));
            v.push(("the file in the slot".to_string(), t));
        }
        v
    }

    /// Runs `cfg.ops` operations, then a final tree comparison.
    pub fn run(&mut self) -> Result<(), Failure> {
        let started = std::time::Instant::now();
        for i in 0..self.cfg.ops {
            self.step(i)?;
            if (i + 1).is_multiple_of(PROGRESS_EVERY) {
                eprintln!(
                    "differential: {} operations in {:?}",
                    i + 1,
                    started.elapsed()
                );
            }
        }
        self.compare_trees(self.cfg.ops)
    }

    /// Compares both whole trees (after fsyncing open files on both sides).
    pub fn compare_trees(&mut self, index: usize) -> Result<(), Failure> {
        self.summary.tree_checks += 1;
        for s in &self.sides {
            s.settle();
        }
        let plans = tree::plans(&self.sides[0].root)
            .map_err(|e| self.fail(index, &format!("reference tree: {e}")))?;
        let mut snaps = Vec::new();
        for s in &self.sides {
            snaps.push(
                tree::snapshot(&s.root, &self.clock, &plans)
                    .map_err(|e| self.fail(index, &format!("tree walk: {e}")))?,
            );
        }
        let mut diffs = Vec::new();
        for (path, r) in &snaps[0] {
            let Some(s) = snaps[1].get(path) else {
                diffs.push(format!("{path:?}: only on {}", self.cfg.names[0]));
                continue;
            };
            let same_blocks = match (r.blocks, s.blocks, r.data_sectors) {
                (Some(a), Some(b), Some(data)) => tree::blocks_agree(
                    a,
                    b,
                    data,
                    BLOCK_SIZE,
                    tree::xattr_blocks(&r.xattrs, BLOCK_SIZE),
                ),
                (a, b, _) => a == b,
            };
            let (mut r2, mut s2) = (r.clone(), s.clone());
            r2.blocks = None;
            s2.blocks = None;
            // The subject's data sectors are computed from the reference's plan too.
            s2.data_sectors = r2.data_sectors;
            if r2 != s2 || !same_blocks {
                diffs.push(format!(
                    "{path:?}:\n    {}: {}\n    {}: {}",
                    self.cfg.names[0],
                    show(r),
                    self.cfg.names[1],
                    show(s)
                ));
            }
        }
        for path in snaps[1].keys().filter(|p| !snaps[0].contains_key(*p)) {
            diffs.push(format!("{path:?}: only on {}", self.cfg.names[1]));
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(self.fail(
                index,
                &format!(
                    "the trees differ after this operation:\n  {}",
                    diffs.join("\n  ")
                ),
            ))
        }
    }

    /// Closes every open file on both sides.
    pub fn close_all(&mut self) {
        for s in &mut self.sides {
            s.close_all();
        }
    }

    /// One paragraph of counts.
    pub fn report(&self) -> String {
        let s = &self.summary;
        let mut t = format!(
            "differential: seed {} ops {} (ok {}, errors {:?}), {} tree checks, {} timed",
            self.cfg.seed, s.ops, s.ok, s.errors, s.tree_checks, s.timed
        );
        for (why, n) in &s.adjusted {
            t.push_str(&format!("\n  {n} x {why}"));
        }
        t
    }
}

/// Inode number, mtime and ctime.
type Stamp = (u64, (i64, i64), (i64, i64));

fn stamp(st: &libc::stat) -> Stamp {
    (
        st.st_ino,
        (st.st_mtime, st.st_mtime_nsec),
        (st.st_ctime, st.st_ctime_nsec),
    )
}

/// A FIFO, socket or device: files the kernel opens without asking the daemon.
fn special(kind: u32) -> bool {
    matches!(
        kind,
        libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | libc::S_IFBLK
    )
}

/// Which of the watched items had their mtime / ctime changed by the operation (items that
/// did not exist before or after are shown as such).
fn changed(before: &[(String, Option<Stamp>)], after: &[(String, Option<Stamp>)]) -> Vec<String> {
    before
        .iter()
        .zip(after)
        .map(|((label, b), (_, a))| match (b, a) {
            // Another inode now (rename over it, exchange): its times are not comparable
            // with the old one's (ext4 stamps two inodes made in one clock tick alike).
            (Some(b), Some(a)) if b.0 != a.0 => format!("{label}: another inode"),
            (Some(b), Some(a)) => format!("{label}: [{}, {}]", b.1 != a.1, b.2 != a.2),
            (b, a) => format!("{label}: existed {} -> {}", b.is_some(), a.is_some()),
        })
        .collect()
}

fn show(n: &tree::Node) -> String {
    let content = n.content.as_ref().map(|c| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in c {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        format!("{} probed bytes, fnv {h:#x}", c.len())
    });
    format!(
        "{:?} blocks {:?} content {:?} target {:?} xattrs {:?}",
        n.attr,
        n.blocks,
        content,
        n.target
            .as_ref()
            .map(|t| String::from_utf8_lossy(t).into_owned()),
        n.xattrs
            .iter()
            .map(|(k, v)| format!("{}={}B", String::from_utf8_lossy(k), v.len()))
            .collect::<Vec<_>>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(seed: u64, ops: usize) -> Config {
        Config {
            seed,
            ops,
            enabled: Vec::new(),
            replay: format!("{SEED_ENV}={seed} cargo test -p tuxfs-tests --lib differential"),
            names: ["left".into(), "right".into()],
            compare_atime: false,
        }
    }

    /// Two directories of the same host filesystem never differ: the harness itself makes
    /// no difference (a harness that reported noise would be useless).
    #[test]
    fn the_same_filesystem_agrees_with_itself() {
        let tmp = tempfile_dir();
        let (a, b) = (tmp.join("a"), tmp.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let mut d = Differential::new(&a, &b, cfg(11, 400));
        let r = d.run();
        d.close_all();
        std::fs::remove_dir_all(&tmp).unwrap();
        r.unwrap_or_else(|f| panic!("{f}"));
        assert!(d.summary.tree_checks >= 400 / CHECK_EVERY);
        assert!(d.summary.ok > 50, "{}", d.report());
        assert!(d.summary.errors.len() > 3, "{}", d.report());
    }

    /// One byte changed behind the harness's back on one side is found at the next tree
    /// comparison, named with the path, the seed and the replay command.
    #[test]
    fn a_changed_byte_is_reported() {
        let tmp = tempfile_dir();
        let (a, b) = (tmp.join("a"), tmp.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("c"), b"same").unwrap();
        std::fs::write(b.join("c"), b"same").unwrap();
        let mut d = Differential::new(&a, &b, cfg(5, 100));
        d.compare_trees(0).unwrap();
        std::fs::write(b.join("zz"), b"").unwrap();
        let err = d.compare_trees(1).unwrap_err().0;
        assert!(err.contains("\"zz\": only on right"), "{err}");
        std::fs::remove_file(b.join("zz")).unwrap();
        std::fs::write(b.join("c"), b"samf").unwrap();
        let err = d.compare_trees(2).unwrap_err().0;
        assert!(err.contains("\"c\":"), "{err}");
        assert!(err.contains("seed 5 op #2"), "{err}");
        assert!(err.contains("TUXFS_DIFF_SEED=5"), "{err}");
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    /// SEEK_DATA / SEEK_HOLE answers that differ are asked of the reference again with its
    /// clean cached pages dropped (RESEEK_UNCACHED); a difference that does not come from
    /// the reference's cache still fails, with that second answer in the report, and the
    /// rule is not counted.
    #[test]
    fn a_seek_difference_not_from_the_cache_is_reported() {
        let tmp = tempfile_dir();
        let (a, b) = (tmp.join("a"), tmp.join("b"));
        for dir in [&a, &b] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("f"), [7u8; 4096]).unwrap();
        }
        // Behind the harness's back: data at 8192 on the right only.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(b.join("f"))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"x", 8192).unwrap();
        drop(f);
        std::fs::OpenOptions::new()
            .write(true)
            .open(a.join("f"))
            .unwrap()
            .set_len(8193)
            .unwrap();
        let mut d = Differential::new(&a, &b, cfg(7, 10));
        let open = Op::Open {
            slot: 0,
            path: "f".into(),
            flags: libc::O_RDONLY,
            mode: 0,
        };
        d.apply(0, open).unwrap_or_else(|f| panic!("{f}"));
        let seek = Op::Lseek {
            slot: 0,
            off: 4096,
            whence: libc::SEEK_DATA,
        };
        let err = d.apply(1, seek).unwrap_err().0;
        d.close_all();
        std::fs::remove_dir_all(&tmp).unwrap();
        assert!(
            err.contains("left again, its clean cached pages dropped: Err(\"ENXIO\")"),
            "{err}"
        );
        assert!(err.contains("right: Count(8192)"), "{err}");
        assert!(!d.summary.adjusted.contains_key(RESEEK_UNCACHED));
    }

    #[test]
    fn a_seed_gives_the_same_operations() {
        let mut g1 = Generator::new(9, &Pending::ALL);
        let mut g2 = Generator::new(9, &Pending::ALL);
        let mut kinds = std::collections::BTreeSet::new();
        for _ in 0..3000 {
            let (a, b) = (g1.next_op(), g2.next_op());
            assert_eq!(a, b);
            kinds.insert(
                format!("{a:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap()
                    .to_string(),
            );
        }
        // Every kind of operation comes up, pending ones included when enabled.
        assert_eq!(kinds.len(), 32, "{kinds:?}");
        let mut g = Generator::new(9, &[]);
        for _ in 0..3000 {
            let op = g.next_op();
            assert!(
                !matches!(op, Op::Fallocate { .. } | Op::TmpFile { .. }),
                "a pending operation while its feature is off: {op:?}"
            );
        }
    }

    fn tempfile_dir() -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "tuxfs-diff-unit-{}-{}",
            std::process::id(),
            rng::clock_seed()
        ));
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}
