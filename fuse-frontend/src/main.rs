//! `tuxfs-mount`: mounts a tuxfs image through FUSE.
//!
//! ```text
//! tuxfs-mount [-f] [-o OPTIONS]... IMAGE MOUNTPOINT
//! tuxfs-mount --create SIZE [-f] [-o OPTIONS]... IMAGE MOUNTPOINT   # mkfs first if IMAGE is missing
//! ```
//!
//! `-o log_writes=FILE` logs every write and flush for crash injection on a real mount (see
//! [`tuxfs_fuse::options`] and the `tuxfs-replay` command).
//!
//! Messages (mount, unmount, data checksum errors, the switch to read-only after a write
//! failure, a stats file that cannot be written) go to syslog as `tuxfs-mount[PID]`
//! (LOG_DAEMON), with `-f` also to stderr, and with `-o log=FILE` also to FILE. The files
//! named by `stats=`, `log=` and `log_writes=` are checked before anything is mounted.
//!
//! # Unmounting waits for the final commit
//!
//! As root, the mount is a `fuseblk` mount on the image (a block device) or on an
//! auto-clearing loop device attached to the image file (see [`tuxfs_fuse::blkdev`]): at
//! unmount the kernel then sends DESTROY and waits for our reply, and we reply only after
//! everything is committed and flushed and the image lock is released. So when `umount` or
//! `fusermount3 -u` returns, the image is current, consistent and free. Without that
//! privilege (or without loop devices) the mount is plain `fuse`, and `umount` returns before
//! the daemon has finished: wait for the daemon to exit before using the image.
//!
//! Without `-f` it daemonises, and returns (exit 0) only once the mount is up; any error is
//! printed as one line on stderr and the exit status is 1. The image is locked with
//! `flock(LOCK_EX|LOCK_NB)`, so a second mount of the same image is refused. `umount
//! MOUNTPOINT`, `fusermount3 -u MOUNTPOINT`, SIGTERM, SIGINT and SIGHUP all end the session
//! the same way: the engine commits everything (`Filesystem::unmount`), the image lock is
//! released, then the process exits 0. (SIGTERM on a busy mount detaches it lazily; the engine commits when the last user
//! closes.)
//!
//! # Remount
//!
//! With `remount` among the options (`mount -o remount,ro MNT` through a helper),
//! `tuxfs-mount` does not mount: it changes the running mount on MOUNTPOINT through its
//! daemon's control socket and `mount(2)` (see [`tuxfs_fuse::remount`]). The daemon also
//! follows a remount mount(8) did by itself, through the mount table.
//!
//! # /etc/fstab and mount(8)
//!
//! mount(8) hands a `fuse.TYPE` entry to `mount.fuse3` (installed by the `fuse3` package,
//! also reachable as `mount.fuse`), which runs the program called `TYPE` from `PATH` as
//!
//! ```text
//! TYPE SOURCE MOUNTPOINT -o OPTIONS
//! ```
//!
//! after dropping `user`, `users`, `nouser`, `auto`, `noauto`, `nofail` and `_netdev`, and
//! adding `dev,suid` unless `nodev`/`nosuid` were given. `tuxfs-mount` accepts exactly that
//! order (options may come before or after the positional arguments), ignores the other
//! fstab-only options (`defaults`, `x-*`, `relatime`, ...), and daemonises as mount(8)
//! expects. So install it under the name `tuxfs` as well:
//!
//! ```text
//! ln -s /usr/local/bin/tuxfs-mount /usr/bin/tuxfs
//! ```
//!
//! and write the fstab line as
//!
//! ```text
//! /srv/tuxfs.img  /mnt/tuxfs  fuse.tuxfs  defaults,commit=5  0  0
//! ```
//!
//! which `mount /mnt/tuxfs` (or boot) turns into `tuxfs /srv/tuxfs.img /mnt/tuxfs -o
//! rw,commit=5,dev,suid`. mount(8) runs its helpers with a fixed system PATH, so put the
//! `tuxfs` link in /usr/bin or /usr/sbin (not only /usr/local/bin). Alternatively, a link
//! `/sbin/mount.fuse.tuxfs -> tuxfs-mount` lets mount(8) call `tuxfs-mount` directly as
//! `mount.fuse.tuxfs SOURCE MOUNTPOINT [-n] [-s] [-v] -o OPTIONS [-t fuse.tuxfs]`; those
//! helper flags are accepted and ignored too.
//! Leave the pass number (last field) at 0: fsck(8) does not run on FUSE types; run
//! `fsck.tuxfs` on the image yourself. `mount -t fuse.tuxfs IMAGE DIR -o OPTIONS` works the
//! same way from the command line.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};

use tuxfs_engine::dev::logwrites::LogWritesDevice;
use tuxfs_engine::dev::{BlockDevice, DeviceKind, OpenOptions};
use tuxfs_engine::events::Level;
use tuxfs_engine::fs::{Filesystem, open_image};
use tuxfs_fuse::adapter::Adapter;
use tuxfs_fuse::closable::ClosableDevice;
use tuxfs_fuse::daemon::{self, OnDestroy, Ready};
use tuxfs_fuse::logging::{self, log};
use tuxfs_fuse::options::Settings;
use tuxfs_fuse::{blkdev, errno, remount};

fn main() -> ExitCode {
    let settings = match Settings::from_args(std::env::args_os()) {
        Ok(s) => s,
        Err(e) => e.exit(),
    };
    let mut ready = Ready::Foreground;
    match run(&settings, &mut ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            ready.failed(&msg);
            ExitCode::from(1)
        }
    }
}

/// Checks and locks in the foreground, then daemonises (unless `-f`) and serves the mount
/// until it is unmounted.
fn run(settings: &Settings, ready: &mut Ready) -> Result<(), String> {
    if settings.remount {
        return remount::run(settings);
    }
    let mut settings = settings.clone();
    if let Some(stats) = &settings.stats {
        // The daemon changes directory to /: keep the path meaningful.
        let stats =
            std::path::absolute(stats).map_err(|e| format!("stats={}: {e}", stats.display()))?;
        settings.stats = Some(stats);
    }
    if let Some(log) = &settings.log_writes {
        // Resolved now, in the directory the user started us in.
        let log =
            std::path::absolute(log).map_err(|e| format!("log_writes={}: {e}", log.display()))?;
        settings.log_writes = Some(log);
    }
    if let Some(log) = &settings.log {
        let log = std::path::absolute(log).map_err(|e| format!("log={}: {e}", log.display()))?;
        settings.log = Some(log);
    }
    let settings = &settings;
    let log_file = check_output_files(settings)?;
    let image = prepare_image(settings)?;
    let mountpoint = check_mountpoint(&settings.mountpoint)?;
    if settings.uring {
        tuxfs_fuse::uring::check_kernel(Path::new(tuxfs_fuse::uring::ENABLE_URING))?;
    }
    // Held until the session is destroyed (see `Closing`); shared with the daemon child
    // across fork, and the parent exits as soon as the mount is up.
    let lock = daemon::lock_image(&image)?;
    if !settings.foreground {
        *ready = daemon::daemonise()?;
    }
    logging::install(log_file, settings.foreground);
    serve(settings, &image, &mountpoint, lock, ready)
}

/// Checks, before anything is mounted, that the files the options name can be written:
/// `stats=` (written through FILE.tmp renamed over FILE), `log=` (appended to; returned
/// open) and `log_writes=` (created new, with FILE.base).
fn check_output_files(settings: &Settings) -> Result<Option<File>, String> {
    if let Some(stats) = &settings.stats {
        let tmp = stats.with_extension("tmp");
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .and_then(|_| std::fs::remove_file(&tmp))
            .map_err(|e| {
                format!(
                    "stats={}: cannot write the figures there ({} : {e})",
                    stats.display(),
                    tmp.display()
                )
            })?;
    }
    if let Some(log) = &settings.log_writes {
        for path in [log.clone(), tuxfs_engine::dev::logwrites::base_path(log)] {
            if path.exists() {
                return Err(format!(
                    "log_writes={}: {} already exists",
                    log.display(),
                    path.display()
                ));
            }
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(log)
            .and_then(|_| std::fs::remove_file(log))
            .map_err(|e| format!("log_writes={}: cannot create it: {e}", log.display()))?;
    }
    settings
        .log
        .as_deref()
        .map(logging::open_log_file)
        .transpose()
}

/// The image path, canonical; creates the filesystem first for `--create` when the image
/// does not exist.
fn prepare_image(settings: &Settings) -> Result<PathBuf, String> {
    let image = &settings.image;
    if !image.exists() {
        let Some(size) = settings.create_size else {
            return Err(format!(
                "{} does not exist (give --create SIZE to make a new filesystem there)",
                image.display()
            ));
        };
        let request = tuxfs_mkfs::Request {
            size: Some(size),
            ..tuxfs_mkfs::Request::new(image)
        };
        tuxfs_mkfs::run(&request).map_err(|e| format!("cannot create {}: {e}", image.display()))?;
    }
    image
        .canonicalize()
        .map_err(|e| format!("{}: {e}", image.display()))
}

/// The mountpoint path, canonical, after checking it is a directory.
fn check_mountpoint(mountpoint: &Path) -> Result<PathBuf, String> {
    let path = mountpoint
        .canonicalize()
        .map_err(|e| format!("mountpoint {}: {e}", mountpoint.display()))?;
    if !path.is_dir() {
        return Err(format!(
            "mountpoint {} is not a directory",
            mountpoint.display()
        ));
    }
    Ok(path)
}

/// Writes the filesystem's figures to the stats file (atomically: a temporary file renamed
/// over it) and, in the foreground, to stderr. Failures are reported, never fatal.
fn report_stats(fs: &Filesystem, file: Option<&Path>, foreground: bool) {
    let text = format!(
        "{}{}{}",
        fs.stats(),
        tuxfs_fuse::requests::COUNTS,
        tuxfs_fuse::uring::URING_REQUESTS
    );
    if foreground {
        eprint!("tuxfs-mount: figures:\n{text}");
    }
    if let Some(path) = file {
        let tmp = path.with_extension("tmp");
        let written = std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            log(
                Level::Error,
                &format!("cannot write the figures to {}: {e}", path.display()),
            );
        }
    }
}

/// What must be done once when the session ends, before the kernel is told (DESTROY of a
/// `fuseblk` mount) or else right after the session loop returns: commit and flush
/// everything, write the figures, close the image's device, release the image lock.
struct Closing {
    fs: Arc<Filesystem>,
    device: Arc<ClosableDevice>,
    image: PathBuf,
    lock: Mutex<Option<File>>,
    stats: Option<PathBuf>,
    foreground: bool,
    outcome: OnceLock<Result<(), String>>,
}

impl Closing {
    /// Runs once; later (or concurrent) calls wait for and return the first outcome.
    fn close(&self) -> Result<(), String> {
        self.outcome
            .get_or_init(|| {
                let committed = self.fs.unmount();
                report_stats(&self.fs, self.stats.as_deref(), self.foreground);
                // Everything is durable (or failed and reported): let the image go.
                self.device.close();
                drop(
                    self.lock
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .take(),
                );
                match (committed, self.fs.failure()) {
                    (Ok(()), Some(why)) => {
                        log(
                            Level::Error,
                            &format!(
                                "unmounted {} after a write failure ({why}): changes since the \
                                 last durable commit were not written; check it with fsck",
                                self.image.display()
                            ),
                        );
                        Ok(())
                    }
                    (Ok(()), None) => {
                        log(
                            Level::Info,
                            &format!("unmounted {}: everything committed", self.image.display()),
                        );
                        Ok(())
                    }
                    (Err(e), _) => {
                        let msg = format!(
                            "committing {} at unmount failed: {}",
                            self.image.display(),
                            errno::describe(&e)
                        );
                        log(Level::Error, &msg);
                        Err(msg)
                    }
                }
            })
            .clone()
    }
}

/// Mounts the engine and the FUSE session, reports readiness, serves until unmounted, and
/// commits everything through `Filesystem::unmount` (in [`Closing`]).
fn serve(
    settings: &Settings,
    image: &Path,
    mountpoint: &Path,
    lock: File,
    ready: &mut Ready,
) -> Result<(), String> {
    // Before the engine starts its writeback thread, so that no thread but ours sees them.
    let signals = daemon::block_signals()?;
    let device = open_image(
        image,
        &OpenOptions {
            kind: DeviceKind::Auto,
            direct: settings.direct_io,
            read_only: settings.read_only,
            ..OpenOptions::default()
        },
    )
    .map_err(|e| format!("cannot open {}: {}", image.display(), errno::describe(&e)))?;
    let inner: Arc<dyn BlockDevice> = match &settings.log_writes {
        None => Arc::from(device),
        Some(log) => Arc::new(LogWritesDevice::create(device, log).map_err(|e| {
            format!(
                "log_writes={}: cannot start the write log: {}",
                log.display(),
                errno::describe(&e)
            )
        })?),
    };
    let device = Arc::new(ClosableDevice::new(inner));
    let fs = Filesystem::mount(
        Arc::clone(&device) as Arc<dyn BlockDevice>,
        settings.engine_options(),
    )
    .map_err(|e| format!("cannot mount {}: {}", image.display(), errno::describe(&e)))?;
    let closing = Arc::new(Closing {
        fs: Arc::clone(&fs),
        device,
        image: image.to_path_buf(),
        lock: Mutex::new(Some(lock)),
        stats: settings.stats.clone(),
        foreground: settings.foreground,
        outcome: OnceLock::new(),
    });

    let mut session = match mount_session(settings, image, mountpoint, &fs, &closing) {
        Ok(s) => s,
        Err(e) => {
            // Nothing reached the filesystem through FUSE, but the engine is mounted: close
            // it properly so the image is left clean.
            let _ = closing.close();
            return Err(format!(
                "cannot mount on {}: {e}{}",
                mountpoint.display(),
                privilege_hint(&e)
            ));
        }
    };

    // The kernel caps a FUSE mount's dirty pages at 1% of the budget (tuxfs_fuse::bdi).
    if settings.dirty_ratio != 1 {
        match tuxfs_fuse::bdi::set_dirty_ratio(mountpoint, settings.dirty_ratio) {
            Ok(file) => log(
                Level::Info,
                &format!("{} set to {}", file.display(), settings.dirty_ratio),
            ),
            Err(why) => log(
                Level::Warning,
                &format!("dirty pages stay capped at the kernel's 1% for FUSE: {why}"),
            ),
        }
    }

    // Remounts reach the daemon through these (see tuxfs_fuse::remount); without them the
    // mount still works, only `mount -o remount` does not reach the engine.
    let control = match remount::serve_control(Arc::clone(&fs), mountpoint) {
        Ok(c) => Some(c),
        Err(why) => {
            log(
                Level::Warning,
                &format!("no control socket ({why}): remount options will not reach the daemon"),
            );
            None
        }
    };
    if let Err(why) = remount::watch_mount_table(Arc::clone(&fs), mountpoint) {
        log(Level::Warning, &why);
    }

    let mut unmounter = session.unmount_callable();
    let target = mountpoint.to_path_buf();
    let (stats_fs, stats_file, foreground) =
        (Arc::clone(&fs), settings.stats.clone(), settings.foreground);
    daemon::spawn_signal_thread(signals, move |sig| {
        if sig == daemon::STATS_SIGNAL {
            report_stats(&stats_fs, stats_file.as_deref(), foreground);
            return;
        }
        // A busy mount cannot be unmounted at once: detach it, and the session ends when its
        // last user closes.
        if unmounter.unmount().is_err() {
            let _ = daemon::detach(&target);
        }
    })?;

    ready.mounted();
    let served = session.run();
    drop(control);
    // Already done at DESTROY on a fuseblk mount; this waits for that outcome.
    let committed = closing.close();
    match (served, committed) {
        (_, Err(msg)) => Err(msg),
        (Err(e), Ok(())) => Err(format!("the FUSE session ended with an error: {e}")),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// Mounts the FUSE session: as `fuseblk` on a block device standing for the image when we
/// may (so `umount` waits for [`Closing`]), else as plain `fuse`.
fn mount_session(
    settings: &Settings,
    image: &Path,
    mountpoint: &Path,
    fs: &Arc<Filesystem>,
    closing: &Arc<Closing>,
) -> std::io::Result<fuser::Session<Adapter>> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    // The adapter invalidates attributes it changes behind the kernel (a setuid kill on
    // write) through the session's notifier, known once the session exists.
    let notifier = Arc::new(std::sync::OnceLock::new());
    let adapter = || {
        let closing = Arc::clone(closing);
        Adapter::new(Arc::clone(fs), settings.timeouts)
            .with_caching(settings.caching)
            .with_idmap(settings.access_for(root) == fuser::SessionACL::All)
            .with_notifier(Arc::clone(&notifier))
            .with_destroy(OnDestroy::new(move || {
                let _ = closing.close();
            }))
    };
    let source = image.display().to_string();
    let token = if !settings.fuseblk {
        None
    } else if root {
        Some(blkdev::token_for(image, settings.read_only))
    } else {
        Some(Err(std::io::Error::from_raw_os_error(libc::EPERM)))
    };
    match token {
        None => {}
        Some(Ok(token)) => {
            let config = settings.fuser_config(&source, Some(token.path()));
            match fuser::Session::new(adapter(), mountpoint, &config) {
                Ok(session) => {
                    let _ = notifier.set(session.notifier());
                    log(
                        Level::Info,
                        &format!(
                            "mounted {} on {} (fuseblk on {})",
                            image.display(),
                            mountpoint.display(),
                            token.path().display()
                        ),
                    );
                    // The kernel holds the device now; ours goes, so a loop device
                    // detaches by itself once the kernel releases it after unmount.
                    drop(token);
                    return Ok(session);
                }
                Err(e) => log(
                    Level::Warning,
                    &format!(
                        "fuseblk mount on {} failed ({e}); mounting plain fuse: umount will \
                         not wait for the final commit",
                        token.path().display()
                    ),
                ),
            }
        }
        Some(Err(e)) => log(
            Level::Warning,
            &format!(
                "no block device for a fuseblk mount of {} ({e}); mounting plain fuse: umount \
                 will not wait for the final commit",
                image.display()
            ),
        ),
    }
    let config = settings.fuser_config(&source, None);
    let session = fuser::Session::new(adapter(), mountpoint, &config)?;
    let _ = notifier.set(session.notifier());
    log(
        Level::Info,
        &format!(
            "mounted {} on {} (fuse)",
            image.display(),
            mountpoint.display()
        ),
    );
    Ok(session)
}

/// A hint for the errors that mean "not allowed to mount here".
fn privilege_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " (mounting FUSE needs root, or fusermount3 from the fuse3 package)"
        }
        _ => "",
    }
}
