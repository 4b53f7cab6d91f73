//! Process mechanics of `tuxfs-mount`: the image lock, daemonising with a readiness pipe,
//! and turning SIGTERM/SIGINT/SIGHUP into a clean unmount.
//!
//! Order matters, and `main` follows it:
//! 1. everything that can fail cheaply runs in the foreground (arguments, mkfs, the lock);
//! 2. [`daemonise`] forks while the process still has one thread (fork copies only the
//!    calling thread), and the parent waits on a pipe until the child says the mount is up
//!    or why it failed, so errors are printed where the user is looking;
//! 3. [`block_signals`] runs before any thread exists, so every later thread (the engine's
//!    writeback thread, fuser's workers) inherits the mask and only [`spawn_signal_thread`]
//!    ever receives them.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tuxfs_engine::dev::lock::{self, ImageLock, LockError};

/// Work that must be finished before the kernel is told a session is destroyed: committing,
/// flushing and releasing the image. Runs at most once per call site's choice (the caller
/// makes it idempotent).
pub struct OnDestroy(Box<dyn Fn() + Send + Sync>);

impl OnDestroy {
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> Self {
        OnDestroy(Box::new(f))
    }

    pub fn run(&self) {
        (self.0)()
    }
}

impl std::fmt::Debug for OnDestroy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnDestroy")
    }
}

/// Exit status of the parent when the child failed or died before the mount was up.
const EXIT_FAILED: i32 = 1;

/// Takes the image lock ([`tuxfs_engine::dev::lock`]: an exclusive, non-blocking `flock`
/// through a descriptor of its own, the same lock `fsck.tuxfs -p`/`-y` takes), so that a
/// second `tuxfs-mount` of the same image, or a repair under this one, is refused. The lock
/// lives as long as the returned file (and across `fork`, which shares the open file
/// description).
pub fn lock_image(image: &Path) -> Result<File, String> {
    lock::lock_image(image).map(ImageLock::into_file).map_err(|e| match e {
        LockError::InUse => format!(
            "{} is already in use (mounted by another tuxfs-mount, or being repaired by fsck.tuxfs?); refusing to mount it twice",
            image.display()
        ),
        LockError::Io(err) => format!("cannot lock {}: {err}", image.display()),
    })
}

/// Where the outcome of the mount is reported: directly (foreground) or to the parent
/// waiting on the readiness pipe (daemon).
#[derive(Debug)]
pub enum Ready {
    Foreground,
    Daemon { pipe: Option<File> },
}

impl Ready {
    /// The mount is up: lets the parent exit 0 and detaches the daemon's standard streams.
    pub fn mounted(&mut self) {
        if let Ready::Daemon { pipe } = self
            && let Some(mut p) = pipe.take()
        {
            // If the parent is gone there is nobody to tell; keep serving.
            let _ = p.write_all(b"ok\n");
            drop(p);
            detach_stdio();
        }
    }

    /// Reports a failure: to the waiting parent before the mount is up, to stderr otherwise
    /// (which a daemon has pointed at /dev/null by then).
    pub fn failed(&mut self, msg: &str) {
        if let Ready::Daemon { pipe } = self
            && let Some(mut p) = pipe.take()
            && p.write_all(format!("error {msg}\n").as_bytes()).is_ok()
        {
            return;
        }
        eprintln!("tuxfs-mount: {msg}");
    }
}

/// Forks into the background. Returns in the child (in a new session) with the pipe to
/// report readiness on; the parent never returns: it exits 0 once the child reports the
/// mount up, or prints the child's error and exits 1.
pub fn daemonise() -> Result<Ready, String> {
    let threads = user_threads();
    if threads > 1 {
        return Err(format!(
            "cannot daemonise: {threads} threads are already running (fork copies only one)"
        ));
    }
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass, which has room for two.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!(
            "cannot create a pipe: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (reader, writer) = unsafe {
        (
            File::from(OwnedFd::from_raw_fd(fds[0])),
            File::from(OwnedFd::from_raw_fd(fds[1])),
        )
    };
    // SAFETY: the process has exactly one thread (checked above), so the child is a complete
    // copy and may keep running Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("cannot fork: {}", std::io::Error::last_os_error()));
    }
    if pid > 0 {
        drop(writer);
        wait_for_child(reader);
    }
    drop(reader);
    // SAFETY: setsid has no memory arguments; it fails only if we already lead a group,
    // which a fresh child never does.
    unsafe { libc::setsid() };
    Ok(Ready::Daemon { pipe: Some(writer) })
}

/// Threads of this process, not counting io_uring's kernel workers (`iou-wrk-*`,
/// `iou-sqp-*`), which a ring used before (mkfs) leaves for a while and which fork ignores.
fn user_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 1;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            !comm.starts_with("iou-")
        })
        .count()
}

/// The parent's side: waits for the child's report and exits with its outcome.
fn wait_for_child(mut reader: File) -> ! {
    let mut report = String::new();
    let _ = reader.read_to_string(&mut report);
    let line = report.lines().next().unwrap_or("");
    if line == "ok" {
        std::process::exit(0);
    }
    match line.strip_prefix("error ") {
        Some(msg) => eprintln!("tuxfs-mount: {msg}"),
        None => eprintln!("tuxfs-mount: the daemon exited before the mount was up"),
    }
    std::process::exit(EXIT_FAILED);
}

/// Points stdin, stdout and stderr at /dev/null and leaves the working directory, as a
/// daemon must not keep a terminal or a directory busy.
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors, which stay open (now /dev/null).
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    let _ = std::env::set_current_dir("/");
}

/// The signals that end a mount.
pub const STOP_SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];
/// The signal that asks for the filesystem's figures.
pub const STATS_SIGNAL: i32 = libc::SIGUSR1;

/// A blocked signal set, to be waited on by [`spawn_signal_thread`].
#[derive(Clone, Copy)]
pub struct BlockedSignals(libc::sigset_t);

impl std::fmt::Debug for BlockedSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlockedSignals(TERM, INT, HUP, USR1)")
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and so in every thread it starts
/// afterwards. Call before any other thread exists.
pub fn block_signals() -> Result<BlockedSignals, String> {
    // SAFETY: sigemptyset/sigaddset initialise the set we own; pthread_sigmask reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in STOP_SIGNALS.into_iter().chain([STATS_SIGNAL]) {
            libc::sigaddset(&mut set, sig);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(format!(
                "cannot block signals: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        Ok(BlockedSignals(set))
    }
}

/// Starts a thread that waits for the blocked signals and calls `on_signal` for each.
pub fn spawn_signal_thread(
    signals: BlockedSignals,
    mut on_signal: impl FnMut(i32) + Send + 'static,
) -> Result<(), String> {
    std::thread::Builder::new()
        .name("tuxfs-signals".into())
        .spawn(move || {
            let set = signals.0;
            loop {
                let mut sig = 0;
                // SAFETY: sigwait reads the set and writes the signal number into `sig`.
                let rc = unsafe { libc::sigwait(&set, &mut sig) };
                if rc == 0 {
                    on_signal(sig);
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the signal thread: {e}"))
}

/// Detaches the mount at `mountpoint` lazily (MNT_DETACH): it disappears from the namespace
/// now and the session ends when its last user closes. The fallback when a plain unmount
/// finds the filesystem busy.
pub fn detach(mountpoint: &Path) -> std::io::Result<()> {
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: umount2 reads the NUL-terminated path we own.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_image_is_refused() {
        let dir = std::env::temp_dir().join(format!("tuxfs-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let image = dir.join("img");
        std::fs::write(&image, b"x").unwrap();
        let first = lock_image(&image).unwrap();
        let err = lock_image(&image).unwrap_err();
        assert!(err.contains("already in use"), "{err}");
        drop(first);
        let again = lock_image(&image);
        assert!(again.is_ok());
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_image_cannot_be_locked() {
        let err = lock_image(Path::new("/nonexistent/tuxfs.img")).unwrap_err();
        assert!(err.contains("/nonexistent/tuxfs.img"), "{err}");
    }
}
