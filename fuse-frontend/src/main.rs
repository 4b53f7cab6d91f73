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
//! Without `-f` it daemonises, and returns (exit 0) only once the mount is up; any error is
//! printed as one line on stderr and the exit status is 1. The image is locked with
//! `flock(LOCK_EX|LOCK_NB)`, so a second mount of the same image is refused. `umount
//! MOUNTPOINT`, `fusermount3 -u MOUNTPOINT`, SIGTERM, SIGINT and SIGHUP all end the session
//! the same way: the engine commits everything (`Filesystem::unmount`), then the process exits
//! 0. (SIGTERM on a busy mount detaches it lazily; the engine commits when the last user
//! closes.)
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

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use tuxfs_engine::dev::logwrites::LogWritesDevice;
use tuxfs_engine::dev::{BlockDevice, DeviceKind, OpenOptions, open_file};
use tuxfs_engine::fs::Filesystem;
use tuxfs_fuse::adapter::Adapter;
use tuxfs_fuse::daemon::{self, Ready};
use tuxfs_fuse::errno;
use tuxfs_fuse::options::Settings;

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
    let settings = &settings;
    let image = prepare_image(settings)?;
    let mountpoint = check_mountpoint(&settings.mountpoint)?;
    // Held until the process exits; shared with the daemon child across fork.
    let _lock = daemon::lock_image(&image)?;
    if !settings.foreground {
        *ready = daemon::daemonise()?;
    }
    serve(settings, &image, &mountpoint, ready)
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
    let text = fs.stats().to_string();
    if foreground {
        eprint!("tuxfs-mount: figures:\n{text}");
    }
    if let Some(path) = file {
        let tmp = path.with_extension("tmp");
        let written = std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            eprintln!(
                "tuxfs-mount: cannot write the figures to {}: {e}",
                path.display()
            );
        }
    }
}

/// Mounts the engine and the FUSE session, reports readiness, serves until unmounted, and
/// commits everything through `Filesystem::unmount`.
fn serve(
    settings: &Settings,
    image: &Path,
    mountpoint: &Path,
    ready: &mut Ready,
) -> Result<(), String> {
    // Before the engine starts its writeback thread, so that no thread but ours sees them.
    let signals = daemon::block_signals()?;
    let device = open_file(
        image,
        &OpenOptions {
            kind: DeviceKind::Auto,
            direct: false,
            read_only: settings.read_only,
            ..OpenOptions::default()
        },
    )
    .map_err(|e| format!("cannot open {}: {}", image.display(), errno::describe(&e)))?;
    let device: Arc<dyn BlockDevice> = match &settings.log_writes {
        None => Arc::from(device),
        Some(log) => Arc::new(LogWritesDevice::create(device, log).map_err(|e| {
            format!(
                "log_writes={}: cannot start the write log: {}",
                log.display(),
                errno::describe(&e)
            )
        })?),
    };
    let fs = Filesystem::mount(device, settings.engine_options())
        .map_err(|e| format!("cannot mount {}: {}", image.display(), errno::describe(&e)))?;

    let adapter = Adapter::new(Arc::clone(&fs), settings.timeouts);
    let config = settings.fuser_config(&image.display().to_string());
    let mut session = match fuser::Session::new(adapter, mountpoint, &config) {
        Ok(s) => s,
        Err(e) => {
            // Nothing reached the filesystem through FUSE, but the engine is mounted: close
            // it properly so the image is left clean.
            let _ = fs.unmount();
            return Err(format!(
                "cannot mount on {}: {e}{}",
                mountpoint.display(),
                privilege_hint(&e)
            ));
        }
    };

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
    let committed = fs.unmount();
    report_stats(&fs, settings.stats.as_deref(), settings.foreground);
    match (served, committed) {
        (_, Err(e)) => Err(format!(
            "committing {} at unmount failed: {}",
            image.display(),
            errno::describe(&e)
        )),
        (Err(e), Ok(())) => Err(format!("the FUSE session ended with an error: {e}")),
        (Ok(()), Ok(())) => Ok(()),
    }
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
