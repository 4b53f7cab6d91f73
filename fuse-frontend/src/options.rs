//! The command line of `tuxfs-mount` and its `-o` mount options.
//!
//! Two forms, the second being what `mount.fuse3` (and so `/etc/fstab`) runs:
//!
//! ```text
//! tuxfs-mount [-f] [--create SIZE] [-o OPT[,OPT...]]... IMAGE MOUNTPOINT
//! tuxfs-mount IMAGE MOUNTPOINT -o OPT[,OPT...]
//! ```
//!
//! Options are comma-separated and `-o` may be repeated; a later option overrides an
//! earlier one (`ro` then `rw` is `rw`). Unknown options are refused, except those that only
//! mean something to mount(8) or fstab, which are accepted and ignored.
//!
//! # Crash injection on a real mount: `log_writes=FILE`
//!
//! Wraps the device in [`tuxfs_engine::dev::logwrites::LogWritesDevice`]: at mount, before
//! any write, the image is copied (sparse) to `FILE.base`; from then on every write and
//! flush the engine sends to the image is also appended, in order, to `FILE` (format
//! `TUXRLOG1`, see `tuxfs_engine::dev::record`), which is made durable at every flush.
//! `tuxfs-replay FILE --list` shows the events and flush points, and `tuxfs-replay FILE --at
//! N --out IMAGE [--crash-subset SEED]` rebuilds the image a power cut at event N could
//! have left. Neither file may exist beforehand (an earlier run's log is never
//! overwritten), so this option does not suit a permanent fstab entry. A relative `FILE` is
//! taken relative to the directory `tuxfs-mount` was started in. It costs a copy of the
//! image's used blocks at mount, a second copy of every write, and one `fdatasync` of the
//! log per flush; it is a debugging aid, not for production.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use fuser::{MountOption, SessionACL};

use crate::adapter::{Caching, Timeouts};

/// Seconds a timeout option may ask for at most (a day): anything larger is a typo.
const TIMEOUT_SECONDS_MAX: f64 = 86_400.0;
/// Commit interval bounds in seconds.
const COMMIT_SECONDS_MAX: u64 = 3_600;
/// FUSE worker threads at most.
pub const THREADS_MAX: usize = 64;

/// The raw command line.
#[derive(Debug, Parser)]
#[command(
    name = "tuxfs-mount",
    version,
    about = "Mount a tuxfs image through FUSE",
    after_help = "Options for -o: ro, rw, commit=SECONDS, allow_other (default for a root mount), \
                  noallow_other, allow_root, \
                  default_permissions (always on), threads=N (default: one per CPU), \
                  attr_timeout=SECONDS, entry_timeout=SECONDS (default 60: the daemon is the \
                  image's only writer), nowriteback_cache, nokeep_cache, nocache_symlinks, \
                  max_background=N (default 64), dirty_ratio=PERCENT (the mount's share of \
                  the kernel's dirty-page budget, default 20; the kernel's own for FUSE is 1), \
                  fsname=NAME, subtype=NAME, dev, nodev, suid, nosuid, \
                  exec, noexec, sync, async, dirsync (a root mount defaults to suid,dev); \
                  relatime (default), strictatime, noatime, atime, nodiratime, diratime: when reads \
                  and readdir reaching the daemon update atime (a remount can change them); \
                  fstab-only options (defaults, auto, noauto, user, users, nouser, nofail, \
                  _netdev, x-*, lazytime, ...) are accepted and ignored.\n\
                  log_writes=FILE (debugging, crash injection): copy the image to FILE.base \
                  at mount and append every write and flush to FILE; rebuild crash images \
                  with `tuxfs-replay FILE`. Neither file may exist.\n\
                  cache=SIZE: memory for data and metadata (default: 1/32 of RAM, between \
                  64M and 512M); dirty data and the delta in flight stay under SIZE/4 each, \
                  loaded leaves are cut back to SIZE/4 after each commit.\n\
                  stats=FILE: on SIGUSR1 and at unmount, write the filesystem's figures \
                  (deltas committed, bytes written, pages forked, writer throttle time, unifies, \
                  commit latency, FUSE requests received per opcode as `fuse_NAME`) to FILE \
                  as `name value` lines; with -f also to stderr.\n\
                  discard: discard (punch out of the image file) the blocks each commit frees, \
                  once the commit is durable; `fstrim MOUNTPOINT` does it for all free space.\n\
                  remount: change a running mount instead of mounting (what mount(8) passes \
                  for `mount -o remount,...`): ro/rw, commit=, cache= and the kernel's flags.\n\
                  direct_io=on|off: open the image with O_DIRECT (default on; buffered, with \
                  a logged line, where its filesystem refuses O_DIRECT or the block size is \
                  below the alignment it needs).\n\
                  nofuseblk: mount plain fuse even as root (no loop device; umount then \
                  returns before the final commit: wait for the daemon to exit).\n\
                  log=FILE: append the daemon's messages (mount, unmount, checksum errors, \
                  the switch to read-only after a write failure) to FILE as timestamped \
                  lines; they always go to syslog (LOG_DAEMON) too, and with -f to stderr.\n\
                  Unmount with `umount MOUNTPOINT`, `fusermount3 -u MOUNTPOINT`, or SIGTERM."
)]
pub struct Cli {
    /// Stay in the foreground (do not daemonise).
    #[arg(short = 'f', long = "foreground")]
    pub foreground: bool,
    /// Mount options, comma-separated; may be repeated.
    #[arg(short = 'o', value_name = "OPTIONS", action = clap::ArgAction::Append)]
    pub options: Vec<String>,
    /// Create IMAGE with a new filesystem of SIZE bytes (K, M, G, T suffixes) when it does
    /// not exist.
    #[arg(long, value_name = "SIZE")]
    pub create: Option<String>,
    /// mount(8) helper convention (`mount.TYPE SPEC DIR [-sfnv] [-o OPTS] [-t TYPE]`):
    /// -n (no mtab), -s (sloppy), -v (verbose) and -t are accepted and ignored.
    #[arg(short = 'n', hide = true)]
    pub no_mtab: bool,
    #[arg(short = 's', hide = true)]
    pub sloppy: bool,
    #[arg(short = 'v', hide = true)]
    pub verbose: bool,
    #[arg(short = 't', hide = true, value_name = "TYPE")]
    pub fs_type: Option<String>,
    /// The image file (or block device) holding the filesystem.
    pub image: PathBuf,
    /// The directory to mount on.
    pub mountpoint: PathBuf,
}

/// Everything the mount needs, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub foreground: bool,
    /// `--create`: the size of a new image, when IMAGE does not exist.
    pub create_size: Option<u64>,
    pub image: PathBuf,
    pub mountpoint: PathBuf,
    pub read_only: bool,
    /// `commit=`: the writeback scheduler's age limit; `None` keeps the engine default.
    pub commit_interval: Option<Duration>,
    /// Who may use the mount, when an option said so (`allow_other`, `allow_root`,
    /// `noallow_other`); otherwise [`Settings::access_for`] decides.
    pub acl: Option<SessionACL>,
    /// FUSE worker threads.
    pub threads: usize,
    pub timeouts: Timeouts,
    /// What the kernel may cache (writeback cache, kept pages, symlinks, background queue).
    pub caching: Caching,
    /// Source shown in /proc/mounts; the image path when not given.
    pub fsname: Option<String>,
    /// Subtype: the mount's type is "fuse.SUBTYPE" ("fuseblk.SUBTYPE" for a fuseblk mount).
    pub subtype: String,
    /// Generic mount flags passed to the kernel (nodev, noexec, ...).
    pub kernel_flags: Vec<MountOption>,
    /// `log_writes=`: log every write and flush to this file (see the module doc).
    pub log_writes: Option<PathBuf>,
    /// `stats=`: where SIGUSR1 and the unmount write the filesystem's figures.
    pub stats: Option<PathBuf>,
    /// `log=`: where the daemon appends its messages (besides syslog).
    pub log: Option<PathBuf>,
    /// Mount `fuseblk` (so `umount` waits for the final commit) when privileged; `nofuseblk`
    /// turns it off.
    pub fuseblk: bool,
    /// `cache=`: memory for file data and metadata the daemon keeps (see engine_options).
    pub cache_bytes: Option<u64>,
    /// `discard`: discard freed extents once their delta is durable.
    pub discard: bool,
    /// `dirty_ratio=`: the mount's share, in percent, of the kernel's dirty-page budget
    /// (crate::bdi; the kernel gives FUSE 1%).
    pub dirty_ratio: u32,
    /// `noatime`, `atime`/`relatime`, `strictatime`: when reads update atime (None: the
    /// engine's default, relatime).
    pub atime_mode: Option<tuxfs_engine::fs::AtimeMode>,
    /// `nodiratime` / `diratime`.
    pub nodiratime: Option<bool>,
    /// `direct_io=on|off`: open the image with O_DIRECT (default on; buffered where the
    /// image's filesystem or block size does not allow it, with one logged line).
    pub direct_io: bool,
    /// `remount`: change a running mount (see [`crate::remount`]) instead of mounting.
    pub remount: bool,
    /// Options given that cannot change on a running mount (refused with `remount`).
    pub fixed_at_mount: Vec<String>,
    /// `uring`: serve requests through FUSE over io_uring (crate::uring).
    pub uring: bool,
}

impl Settings {
    /// Parses a command line (the first element is the program name).
    pub fn from_args<I, T>(args: I) -> Result<Settings, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args)?;
        Settings::from_cli(cli).map_err(|msg| {
            clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{msg}\n"))
        })
    }

    /// Checks the parsed command line.
    pub fn from_cli(cli: Cli) -> Result<Settings, String> {
        let create_size = match &cli.create {
            Some(s) => Some(tuxfs_mkfs::parse_size(s).map_err(|e| format!("--create: {e}"))?),
            None => None,
        };
        let mut settings = Settings {
            foreground: cli.foreground,
            create_size,
            image: cli.image,
            mountpoint: cli.mountpoint,
            read_only: false,
            commit_interval: None,
            acl: None,
            threads: default_threads(),
            timeouts: Timeouts::default(),
            caching: Caching::default(),
            fsname: None,
            dirty_ratio: crate::bdi::DEFAULT_DIRTY_RATIO,
            subtype: "tuxfs".to_string(),
            kernel_flags: Vec::new(),
            log_writes: None,
            stats: None,
            log: None,
            fuseblk: true,
            cache_bytes: None,
            discard: false,
            atime_mode: None,
            nodiratime: None,
            direct_io: true,
            remount: false,
            fixed_at_mount: Vec::new(),
            uring: false,
        };
        // Known before the other options are read: it decides which of them are accepted.
        settings.remount = cli
            .options
            .iter()
            .any(|g| g.split(',').any(|o| o == "remount"));
        for group in &cli.options {
            for opt in group.split(',') {
                settings.apply(opt)?;
            }
        }
        if settings.remount {
            if settings.create_size.is_some() {
                settings.fixed_at_mount.push("--create".into());
            }
            if let Some(first) = settings.fixed_at_mount.first() {
                return Err(format!(
                    "remount: '{first}' cannot change on a running mount (unmount and mount \
                     again); remount changes ro/rw, commit=, cache= and the kernel's flags"
                ));
            }
        }
        Ok(settings)
    }

    /// Applies one `-o` option.
    fn apply(&mut self, opt: &str) -> Result<(), String> {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        if FIXED_AT_MOUNT.contains(&key) {
            self.fixed_at_mount.push(opt.to_string());
        }
        match (key, value) {
            ("remount", None) => self.remount = true,
            // What mount(8) copies from /proc/self/mountinfo into a remount's options: the
            // kernel's own FUSE options, which a remount cannot change.
            ("user_id" | "group_id" | "blksize" | "rootmode" | "max_read", Some(_))
                if self.remount => {}
            ("noatime", None) | ("atime", None) => {
                self.atime_mode = Some(if key == "noatime" {
                    tuxfs_engine::fs::AtimeMode::NoAtime
                } else {
                    tuxfs_engine::fs::AtimeMode::RelAtime
                });
                // The kernel flag too, so the mount table shows it.
                if let Some(flag) = kernel_flag(key) {
                    self.set_kernel_flag(flag);
                }
            }
            ("relatime" | "nostrictatime", None) => {
                self.atime_mode = Some(tuxfs_engine::fs::AtimeMode::RelAtime)
            }
            ("strictatime" | "norelatime", None) => {
                self.atime_mode = Some(tuxfs_engine::fs::AtimeMode::StrictAtime)
            }
            ("nodiratime", None) => self.nodiratime = Some(true),
            ("diratime", None) => self.nodiratime = Some(false),
            ("ro", None) => self.read_only = true,
            ("rw", None) => self.read_only = false,
            ("commit", Some(v)) => {
                let secs = parse_u64(key, v)?;
                if secs == 0 || secs > COMMIT_SECONDS_MAX {
                    return Err(format!(
                        "commit={v}: give 1 to {COMMIT_SECONDS_MAX} seconds"
                    ));
                }
                self.commit_interval = Some(Duration::from_secs(secs));
            }
            ("allow_other", None) => self.acl = Some(SessionACL::All),
            ("allow_root", None) => self.acl = Some(SessionACL::RootAndOwner),
            ("noallow_other", None) => self.acl = Some(SessionACL::Owner),
            // Always on: the kernel checks permissions, the engine does not.
            ("default_permissions", None) => {}
            ("threads", Some(v)) => {
                let n = parse_u64(key, v)?;
                if n == 0 || n > THREADS_MAX as u64 {
                    return Err(format!("threads={v}: give 1 to {THREADS_MAX}"));
                }
                self.threads = n as usize;
            }
            ("writeback_cache", None) => self.caching.writeback_cache = true,
            ("nowriteback_cache", None) => self.caching.writeback_cache = false,
            ("keep_cache", None) => self.caching.keep_cache = true,
            ("nokeep_cache", None) => self.caching.keep_cache = false,
            ("cache_symlinks", None) => self.caching.cache_symlinks = true,
            ("nocache_symlinks", None) => self.caching.cache_symlinks = false,
            ("max_background", Some(v)) => {
                let n = parse_u64(key, v)?;
                self.caching.max_background = match u16::try_from(n) {
                    Ok(n) if n > 0 => n,
                    _ => return Err(format!("max_background={v}: give 1 to {}", u16::MAX)),
                };
            }
            ("dirty_ratio", Some(v)) => {
                self.dirty_ratio = match parse_u64(key, v)? {
                    n @ 1..=100 => n as u32,
                    _ => return Err(format!("dirty_ratio={v}: give 1 to 100 (percent)")),
                };
            }
            ("attr_timeout", Some(v)) => self.timeouts.attr = parse_seconds(key, v)?,
            ("entry_timeout", Some(v)) => self.timeouts.entry = parse_seconds(key, v)?,
            ("fsname", Some(v)) => self.fsname = Some(non_empty(key, v)?),
            ("subtype", Some(v)) => self.subtype = non_empty(key, v)?,
            ("log_writes", Some(v)) => self.log_writes = Some(PathBuf::from(non_empty(key, v)?)),
            ("stats", Some(v)) => self.stats = Some(PathBuf::from(non_empty(key, v)?)),
            ("nofuseblk", None) => self.fuseblk = false,
            ("direct_io", Some("on")) => self.direct_io = true,
            ("direct_io", Some("off")) => self.direct_io = false,
            ("direct_io", _) => {
                return Err(format!("{opt}: give direct_io=on or direct_io=off"));
            }
            ("discard", None) => self.discard = true,
            ("nodiscard", None) => self.discard = false,
            ("uring", None) => self.uring = true,
            ("nouring", None) => self.uring = false,
            ("log", Some(v)) => self.log = Some(PathBuf::from(non_empty(key, v)?)),
            ("cache", Some(v)) => {
                let bytes = tuxfs_mkfs::parse_size(v).map_err(|e| format!("cache={v}: {e}"))?;
                if bytes < 4 << 20 {
                    return Err(format!("cache={v}: at least 4M"));
                }
                let ram = physical_memory_bytes();
                if bytes > ram / 2 {
                    return Err(format!(
                        "cache={v}: more than half of this machine's memory ({} MiB); give at \
                         most {}M",
                        ram >> 20,
                        (ram / 2) >> 20
                    ));
                }
                self.cache_bytes = Some(bytes);
            }
            _ if value.is_none() && kernel_flag(key).is_some() => {
                if let Some(flag) = kernel_flag(key) {
                    self.set_kernel_flag(flag);
                }
            }
            _ if ignored(key) => {}
            _ => return Err(format!("unknown mount option '{opt}'")),
        }
        Ok(())
    }

    /// Records a generic mount flag, replacing its opposite.
    fn set_kernel_flag(&mut self, flag: MountOption) {
        let opposite = opposite(&flag);
        self.kernel_flags
            .retain(|f| *f != flag && Some(f) != opposite.as_ref());
        self.kernel_flags.push(flag);
    }

    /// The fuser session configuration: mount options, access, threads. With `blkdev`, a
    /// `fuseblk` mount on that block device (which is then the source shown in /proc/mounts,
    /// whatever `fsname=` says: the kernel opens the source as the device).
    pub fn fuser_config(&self, default_fsname: &str, blkdev: Option<&Path>) -> fuser::Config {
        let fsname = match blkdev {
            Some(dev) => dev.display().to_string(),
            None => self
                .fsname
                .clone()
                .unwrap_or_else(|| default_fsname.to_string()),
        };
        let mut options = vec![
            MountOption::DefaultPermissions,
            MountOption::FSName(fsname),
            MountOption::Subtype(self.subtype.clone()),
            if self.read_only {
                MountOption::RO
            } else {
                MountOption::RW
            },
        ];
        if blkdev.is_some() {
            options.push(MountOption::Blkdev);
            options.push(MountOption::CUSTOM(format!(
                "blksize={FUSEBLK_BLOCK_BYTES}"
            )));
        }
        // SAFETY: geteuid has no preconditions.
        let privileged = unsafe { libc::geteuid() } == 0;
        options.extend(self.kernel_flags_for(privileged));
        let mut config = fuser::Config::default();
        config.mount_options = options;
        config.acl = self.access_for(privileged);
        config.n_threads = Some(self.threads);
        // With several workers, each gets its own /dev/fuse clone so requests spread over
        // them instead of all threads waking on one descriptor.
        config.clone_fd = self.threads > 1;
        config.uring_depth = self.uring.then_some(crate::uring::QUEUE_DEPTH);
        config
    }

    /// Who may use the mount. A mount made by root is open to every user, like a kernel
    /// filesystem: `default_permissions` is always on, so the kernel checks modes and ACLs
    /// for them exactly as on ext4 (`noallow_other` keeps it to the mounting user). An
    /// unprivileged mount is its owner's alone unless `allow_other` asks (which fusermount3
    /// allows only with `user_allow_other` in /etc/fuse.conf).
    pub fn access_for(&self, privileged: bool) -> SessionACL {
        match self.acl {
            Some(acl) => acl,
            None if privileged => SessionACL::All,
            None => SessionACL::Owner,
        }
    }

    /// The generic mount flags passed to the kernel. A mount made by root defaults to
    /// `suid,dev`, like a kernel filesystem such as ext4 (fuser, like libfuse, would
    /// otherwise add `nosuid,nodev`); `nosuid`/`nodev` given in the options still win. An
    /// unprivileged mount keeps the safe defaults (fusermount3 forces them anyway).
    pub fn kernel_flags_for(&self, privileged: bool) -> Vec<MountOption> {
        let mut flags = self.kernel_flags.clone();
        if privileged {
            for (on, off) in [
                (MountOption::Suid, MountOption::NoSuid),
                (MountOption::Dev, MountOption::NoDev),
            ] {
                if !flags.contains(&on) && !flags.contains(&off) {
                    flags.push(on);
                }
            }
        }
        flags
    }

    /// `base` with the atime options given applied.
    pub fn atime_policy(
        &self,
        base: tuxfs_engine::fs::AtimePolicy,
    ) -> tuxfs_engine::fs::AtimePolicy {
        tuxfs_engine::fs::AtimePolicy {
            mode: self.atime_mode.unwrap_or(base.mode),
            nodiratime: self.nodiratime.unwrap_or(base.nodiratime),
        }
    }

    /// The engine's mount options.
    pub fn engine_options(&self) -> tuxfs_engine::fs::MountOptions {
        let mut opts = tuxfs_engine::fs::MountOptions {
            read_only: self.read_only,
            discard: self.discard,
            ..Default::default()
        };
        if let Some(interval) = self.commit_interval {
            opts.commit_interval = interval;
        }
        // Dirty data and the delta in flight each stay under a quarter; loaded leaves are
        // cut back to a quarter after each commit; clean data pages keep the last quarter:
        // about SIZE in all.
        opts.atime = self.atime_policy(opts.atime);
        let cache = self.cache_bytes.unwrap_or_else(default_cache_bytes);
        opts.dirty_limit_bytes = cache / 4;
        opts.leaf_cache_bytes = cache / 4;
        opts.data_cache_bytes = cache / 4;
        opts
    }
}

/// Worker threads when `threads=` is not given: one per CPU this process may run on (so a
/// worker is free while others run), at most [`THREADS_MAX`].
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, THREADS_MAX)
}

/// Options that only apply when mounting: a remount refuses them (the kernel's FUSE options
/// that mount(8) repeats from /proc/self/mountinfo are let through, see `apply`).
const FIXED_AT_MOUNT: [&str; 22] = [
    "threads",
    "attr_timeout",
    "entry_timeout",
    "fsname",
    "subtype",
    "log_writes",
    "stats",
    "nofuseblk",
    "log",
    "discard",
    "nodiscard",
    "writeback_cache",
    "nowriteback_cache",
    "keep_cache",
    "nokeep_cache",
    "cache_symlinks",
    "nocache_symlinks",
    "max_background",
    "dirty_ratio",
    "direct_io",
    "uring",
    "nouring",
];

/// Block size a `fuseblk` mount tells the kernel (`blksize=`): the page size.
pub const FUSEBLK_BLOCK_BYTES: u32 = 4096;

/// The machine's physical memory in bytes (2 GiB when the system does not say).
pub fn physical_memory_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 when the value is unknown.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages > 0 && page > 0 {
        pages as u64 * page as u64
    } else {
        2 << 30
    }
}

/// The cache when `cache=` is not given: 1/32 of the machine's memory, between 64 MiB and
/// 512 MiB (768 MiB of a 24 GiB machine is clamped to 512 MiB: 128 MiB of dirty data).
pub fn default_cache_bytes() -> u64 {
    (physical_memory_bytes() / 32).clamp(64 << 20, 512 << 20)
}

/// Generic mount flags the kernel understands (mount(8) passes them to helpers).
fn kernel_flag(key: &str) -> Option<MountOption> {
    Some(match key {
        "dev" => MountOption::Dev,
        "nodev" => MountOption::NoDev,
        "suid" => MountOption::Suid,
        "nosuid" => MountOption::NoSuid,
        "exec" => MountOption::Exec,
        "noexec" => MountOption::NoExec,
        "atime" => MountOption::Atime,
        "noatime" => MountOption::NoAtime,
        "sync" => MountOption::Sync,
        "async" => MountOption::Async,
        "dirsync" => MountOption::DirSync,
        _ => return None,
    })
}

fn opposite(flag: &MountOption) -> Option<MountOption> {
    Some(match flag {
        MountOption::Dev => MountOption::NoDev,
        MountOption::NoDev => MountOption::Dev,
        MountOption::Suid => MountOption::NoSuid,
        MountOption::NoSuid => MountOption::Suid,
        MountOption::Exec => MountOption::NoExec,
        MountOption::NoExec => MountOption::Exec,
        MountOption::Atime => MountOption::NoAtime,
        MountOption::NoAtime => MountOption::Atime,
        MountOption::Sync => MountOption::Async,
        MountOption::Async => MountOption::Sync,
        _ => return None,
    })
}

/// Options that only mean something to mount(8), fstab or systemd.
fn ignored(key: &str) -> bool {
    const IGNORED: [&str; 11] = [
        "", "defaults", "auto", "noauto", "user", "users", "nouser", "owner", "nofail", "_netdev",
        "lazytime",
    ];
    IGNORED.contains(&key) || key.starts_with("x-") || key == "comment"
}

fn parse_u64(key: &str, v: &str) -> Result<u64, String> {
    v.parse()
        .map_err(|_| format!("{key}={v}: not a whole number"))
}

fn parse_seconds(key: &str, v: &str) -> Result<Duration, String> {
    let secs: f64 = v
        .parse()
        .map_err(|_| format!("{key}={v}: not a number of seconds"))?;
    if !(0.0..=TIMEOUT_SECONDS_MAX).contains(&secs) {
        return Err(format!(
            "{key}={v}: give 0 to {TIMEOUT_SECONDS_MAX} seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn non_empty(key: &str, v: &str) -> Result<String, String> {
    if v.is_empty() {
        Err(format!("{key}= needs a value"))
    } else {
        Ok(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let mut all = vec!["tuxfs-mount"];
        all.extend_from_slice(args);
        Settings::from_args(all).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let s = parse(&["img", "/mnt"]).unwrap();
        assert!(!s.foreground && !s.read_only);
        assert_eq!(s.image, PathBuf::from("img"));
        assert_eq!(s.mountpoint, PathBuf::from("/mnt"));
        assert_eq!(s.threads, default_threads());
        assert!(s.threads >= 1);
        assert_eq!(s.acl, None);
        assert_eq!(
            s.access_for(true),
            SessionACL::All,
            "root mounts serve every user"
        );
        assert_eq!(s.access_for(false), SessionACL::Owner);
        let s = parse(&["-o", "noallow_other", "img", "/mnt"]).unwrap();
        assert_eq!(s.access_for(true), SessionACL::Owner);
        let s = parse(&["img", "/mnt"]).unwrap();
        assert_eq!(s.timeouts, Timeouts::default());
        assert_eq!(s.timeouts.attr, Duration::from_secs(60));
        assert_eq!(s.timeouts.entry, Duration::from_secs(60));
        assert_eq!(s.caching, Caching::default());
        assert!(s.caching.writeback_cache && s.caching.keep_cache && s.caching.cache_symlinks);
        assert_eq!(s.caching.max_background, 64);
        assert_eq!(s.commit_interval, None);
        assert_eq!(s.create_size, None);
        assert_eq!(s.log_writes, None);
        let cfg = s.fuser_config("img", None);
        assert!(cfg.mount_options.contains(&MountOption::DefaultPermissions));
        assert!(cfg.mount_options.contains(&MountOption::RW));
        assert!(
            cfg.mount_options
                .contains(&MountOption::Subtype("tuxfs".into()))
        );
        assert!(
            cfg.mount_options
                .contains(&MountOption::FSName("img".into()))
        );
        assert_eq!(cfg.n_threads, Some(default_threads()));
        assert_eq!(cfg.clone_fd, default_threads() > 1);
    }

    #[test]
    fn caching_options_turn_each_cache_off_and_on() {
        let s = parse(&[
            "-o",
            "nowriteback_cache,nokeep_cache,nocache_symlinks,max_background=12",
            "img",
            "mnt",
        ])
        .unwrap();
        assert_eq!(
            s.caching,
            Caching {
                writeback_cache: false,
                keep_cache: false,
                cache_symlinks: false,
                max_background: 12,
            }
        );
        let s = parse(&[
            "-o",
            "nowriteback_cache,writeback_cache,nokeep_cache,keep_cache",
            "-o",
            "nocache_symlinks,cache_symlinks",
            "img",
            "mnt",
        ])
        .unwrap();
        assert_eq!(s.caching, Caching::default());
        for bad in [
            "max_background=0",
            "max_background=65536",
            "max_background=x",
            "nowriteback_cache=1",
        ] {
            assert!(parse(&["-o", bad, "img", "mnt"]).is_err(), "{bad}");
        }
    }

    #[test]
    fn mount_fuse3_argument_order_is_accepted() {
        // mount.fuse3 runs: TYPE SOURCE MOUNTPOINT -o OPTIONS
        let s = parse(&["/img", "/mnt", "-o", "rw,nosuid,nodev,relatime,dev,suid"]).unwrap();
        assert_eq!(s.image, PathBuf::from("/img"));
        assert!(!s.read_only);
        assert!(s.kernel_flags.contains(&MountOption::Dev));
        assert!(s.kernel_flags.contains(&MountOption::Suid));
        assert!(!s.kernel_flags.contains(&MountOption::NoDev));
        assert!(!s.kernel_flags.contains(&MountOption::NoSuid));
    }

    #[test]
    fn atime_options_set_the_engine_policy() {
        use tuxfs_engine::fs::{AtimeMode, AtimePolicy};
        let policy = |opts: &str| {
            parse(&["/img", "/mnt", "-o", opts])
                .unwrap()
                .engine_options()
                .atime
        };
        assert_eq!(policy("rw"), AtimePolicy::default());
        assert_eq!(policy("rw").mode, AtimeMode::RelAtime);
        let p = policy("strictatime,nodiratime");
        assert_eq!((p.mode, p.nodiratime), (AtimeMode::StrictAtime, true));
        let p = policy("noatime,nodiratime,diratime");
        assert_eq!((p.mode, p.nodiratime), (AtimeMode::NoAtime, false));
        assert_eq!(policy("noatime,relatime").mode, AtimeMode::RelAtime);
        let s = parse(&["/img", "/mnt", "-o", "noatime"]).unwrap();
        assert!(
            s.kernel_flags.contains(&MountOption::NoAtime),
            "shown in the mount table"
        );
        assert!(parse(&["/img", "/mnt", "-o", "lazytime"]).is_ok());
    }

    #[test]
    fn mount_helper_flags_are_accepted() {
        // mount(8) runs /sbin/mount.fuse.tuxfs SPEC DIR [-sfnv] -o OPTS [-t fuse.tuxfs]
        let s = parse(&[
            "/img",
            "/mnt",
            "-n",
            "-s",
            "-v",
            "-o",
            "rw",
            "-t",
            "fuse.tuxfs",
        ])
        .unwrap();
        assert_eq!(s.mountpoint, PathBuf::from("/mnt"));
        assert!(!s.foreground);
    }

    #[test]
    fn cache_bounds_dirty_data_and_leaves() {
        let s = parse(&["-o", "cache=32M,stats=/tmp/s", "img", "mnt"]).expect("parses");
        let o = s.engine_options();
        assert_eq!(
            (o.dirty_limit_bytes, o.leaf_cache_bytes),
            (8 << 20, 8 << 20)
        );
        assert_eq!(s.stats, Some(PathBuf::from("/tmp/s")));
        assert!(
            parse(&["-o", "cache=1M", "img", "mnt"]).is_err(),
            "too small"
        );
        let d = parse(&["img", "mnt"]).expect("parses").engine_options();
        assert_eq!(d.dirty_limit_bytes, default_cache_bytes() / 4);
        assert!((64 << 20..=512 << 20).contains(&default_cache_bytes()));
        assert!(
            parse(&["-o", "cache=lots", "img", "mnt"]).is_err(),
            "not a size"
        );
    }

    #[test]
    fn cache_over_half_of_memory_is_refused() {
        let err = Settings::from_cli(
            Cli::try_parse_from(["tuxfs-mount", "-o", "cache=100T", "img", "mnt"]).unwrap(),
        )
        .unwrap_err();
        assert!(
            err.contains("more than half of this machine's memory"),
            "{err}"
        );
        let half_mib = (physical_memory_bytes() / 2) >> 20;
        let at_half = format!("cache={half_mib}M");
        assert!(parse(&["-o", &at_half, "img", "mnt"]).is_ok(), "{at_half}");
        let over = format!("cache={}M", half_mib + 1);
        assert!(parse(&["-o", &over, "img", "mnt"]).is_err(), "{over}");
    }

    #[test]
    fn log_option_names_a_file() {
        let s = parse(&["-o", "log=/var/log/tuxfs.log", "img", "mnt"]).unwrap();
        assert_eq!(s.log, Some(PathBuf::from("/var/log/tuxfs.log")));
        assert!(parse(&["-o", "log=", "img", "mnt"]).is_err());
        assert!(s.fuseblk);
        assert!(!parse(&["-o", "nofuseblk", "img", "mnt"]).unwrap().fuseblk);
    }

    #[test]
    fn a_block_device_makes_a_fuseblk_mount_named_after_it() {
        let s = parse(&["-o", "fsname=mine", "img", "mnt"]).unwrap();
        let cfg = s.fuser_config("img", Some(Path::new("/dev/loop7")));
        let opts = &cfg.mount_options;
        assert!(opts.contains(&MountOption::Blkdev));
        assert!(opts.contains(&MountOption::FSName("/dev/loop7".into())));
        assert!(opts.contains(&MountOption::CUSTOM("blksize=4096".into())));
        let plain = s.fuser_config("img", None);
        assert!(!plain.mount_options.contains(&MountOption::Blkdev));
        assert!(
            plain
                .mount_options
                .contains(&MountOption::FSName("mine".into()))
        );
    }

    #[test]
    fn every_documented_option() {
        let s = parse(&[
            "-f",
            "-o",
            "ro,commit=7,allow_other",
            "-o",
            "default_permissions,threads=4,attr_timeout=0.5,entry_timeout=2",
            "-ofsname=mydisk,subtype=tux,log_writes=/tmp/w.log",
            "--create",
            "64M",
            "img",
            "mnt",
        ])
        .unwrap();
        assert!(s.foreground && s.read_only);
        assert_eq!(s.commit_interval, Some(Duration::from_secs(7)));
        assert_eq!(s.acl, Some(SessionACL::All));
        assert_eq!(s.access_for(false), SessionACL::All);
        assert_eq!(s.threads, 4);
        assert_eq!(s.timeouts.attr, Duration::from_millis(500));
        assert_eq!(s.timeouts.entry, Duration::from_secs(2));
        assert_eq!(s.create_size, Some(64 << 20));
        assert_eq!(s.log_writes, Some(PathBuf::from("/tmp/w.log")));
        let cfg = s.fuser_config("img", None);
        assert!(cfg.mount_options.contains(&MountOption::RO));
        assert!(
            cfg.mount_options
                .contains(&MountOption::FSName("mydisk".into()))
        );
        assert!(
            cfg.mount_options
                .contains(&MountOption::Subtype("tux".into()))
        );
        assert_eq!(cfg.n_threads, Some(4));
        assert!(cfg.clone_fd);
        assert_eq!(cfg.acl, SessionACL::All);
        let e = s.engine_options();
        assert!(e.read_only);
        assert_eq!(e.commit_interval, Duration::from_secs(7));
    }

    #[test]
    fn root_mounts_default_to_suid_and_dev() {
        let s = parse(&["img", "mnt"]).unwrap();
        let root = s.kernel_flags_for(true);
        assert!(root.contains(&MountOption::Suid) && root.contains(&MountOption::Dev));
        assert!(
            s.kernel_flags_for(false).is_empty(),
            "unprivileged keeps the defaults"
        );
        let s = parse(&["-o", "nosuid,nodev,noexec", "img", "mnt"]).unwrap();
        let root = s.kernel_flags_for(true);
        assert!(!root.contains(&MountOption::Suid) && !root.contains(&MountOption::Dev));
        assert!(root.contains(&MountOption::NoSuid) && root.contains(&MountOption::NoDev));
        assert!(root.contains(&MountOption::NoExec));
    }

    #[test]
    fn remount_takes_what_mount_8_passes_and_refuses_what_cannot_change() {
        // What mount(8) runs for `mount -o remount,ro,commit=3 MNT` on a fuseblk.tuxfs mount
        // through /sbin/mount.fuseblk.tuxfs.
        let s = parse(&[
            "/dev/loop0",
            "/mnt",
            "-o",
            "ro,nosuid,nodev,relatime,remount,user_id=0,group_id=0,default_permissions,\
             blksize=4096,allow_other,commit=3,cache=64M",
        ])
        .unwrap();
        assert!(s.remount && s.read_only);
        assert_eq!(s.commit_interval, Some(Duration::from_secs(3)));
        assert_eq!(s.cache_bytes, Some(64 << 20));
        assert!(s.kernel_flags.contains(&MountOption::NoSuid));
        // Without remount, the kernel's own options are not ours to take.
        assert!(parse(&["-o", "user_id=0", "img", "mnt"]).is_err());
        for fixed in [
            "threads=2",
            "stats=/tmp/x",
            "subtype=t",
            "log=/tmp/l",
            "nofuseblk",
            "nowriteback_cache",
            "max_background=8",
        ] {
            let err = parse(&["-o", &format!("{fixed},remount"), "img", "mnt"]).unwrap_err();
            assert!(err.contains("cannot change on a running mount"), "{err}");
        }
        let err = parse(&["--create", "1G", "-o", "remount", "img", "mnt"]).unwrap_err();
        assert!(err.contains("--create"), "{err}");
    }

    #[test]
    fn later_options_win() {
        let s = parse(&["-o", "ro", "-o", "rw", "img", "mnt"]).unwrap();
        assert!(!s.read_only);
        let s = parse(&["-o", "noexec,exec,noexec", "img", "mnt"]).unwrap();
        assert_eq!(s.kernel_flags, vec![MountOption::NoExec]);
    }

    #[test]
    fn fstab_only_options_are_ignored() {
        let s = parse(&[
            "img",
            "mnt",
            "-o",
            "defaults,_netdev,noauto,user,nofail,x-systemd.automount,x-gvfs-hide",
        ])
        .unwrap();
        assert!(s.kernel_flags.is_empty());
        assert!(!s.read_only);
    }

    #[test]
    fn direct_io_defaults_on() {
        assert!(parse(&["img", "mnt"]).unwrap().direct_io);
        assert!(
            !parse(&["-o", "direct_io=off", "img", "mnt"])
                .unwrap()
                .direct_io
        );
        let s = parse(&["-o", "direct_io=off,direct_io=on", "img", "mnt"]).unwrap();
        assert!(s.direct_io);
        assert!(parse(&["-o", "remount,direct_io=off", "img", "mnt"]).is_err());
    }

    #[test]
    fn bad_options_are_refused() {
        for bad in [
            "bogus",
            "commit=0",
            "commit=abc",
            "commit=999999",
            "threads=0",
            "threads=65",
            "attr_timeout=-1",
            "entry_timeout=x",
            "fsname=",
            "ro=1",
            "log_writes",
            "log_writes=",
            "direct_io",
            "direct_io=yes",
        ] {
            let err = parse(&["-o", bad, "img", "mnt"]).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(parse(&["img"]).is_err());
        assert!(parse(&["--create", "12Q", "img", "mnt"]).is_err());
    }

    #[test]
    fn uring_asks_fuser_for_the_ring_and_is_fixed_at_mount() {
        let s = parse(&["img", "mnt"]).unwrap();
        assert!(!s.uring);
        assert_eq!(s.fuser_config("img", None).uring_depth, None);
        let s = parse(&["-o", "uring", "img", "mnt"]).unwrap();
        assert!(s.uring);
        assert_eq!(
            s.fuser_config("img", None).uring_depth,
            Some(crate::uring::QUEUE_DEPTH)
        );
        assert!(!parse(&["-o", "uring,nouring", "img", "mnt"]).unwrap().uring);
        assert!(parse(&["-o", "remount,uring", "img", "mnt"]).is_err());
    }
}
