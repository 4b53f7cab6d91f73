//! Everything the benchmark must undo, on every exit path: unmount, kill a daemon, detach a
//! loop device, remove a file or directory. Each setup step registers its undo here before
//! it can fail; teardown runs and forgets it.
//!
//! On Ctrl-C (or SIGTERM) the handler sets the interrupted flag and kills the FUSE daemons,
//! so a workload running on one fails at once (ENOTCONN) instead of writing into the
//! directory under a lazily unmounted mount point; the main thread stops at the next
//! workload, tears the target down and runs every remaining undo. If it has not finished
//! within `GRACE`, or on a second Ctrl-C, the handler runs every undo, newest first, and
//! exits with status 130 itself.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// One thing to undo.
#[derive(Debug, Clone, PartialEq)]
pub enum Undo {
    /// `umount -l` the directory.
    Unmount(PathBuf),
    /// SIGKILL the process (a daemon whose mount is already gone).
    Kill(u32),
    /// `losetup -d` the loop device.
    Detach(PathBuf),
    /// Remove the file.
    RemoveFile(PathBuf),
    /// Remove the directory and everything under it.
    RemoveDir(PathBuf),
}

static PENDING: Mutex<Vec<(u64, Undo)>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(1);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How long the main thread has to stop and clean up after Ctrl-C before the handler does.
pub const GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// True once Ctrl-C or SIGTERM arrived: start nothing new.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// A registered undo; `run` performs it now, `forget` drops it once done some other way.
#[derive(Debug)]
#[must_use]
pub struct Guard(u64);

/// Registers `undo` to run if the process is interrupted before the guard is used.
pub fn register(undo: Undo) -> Guard {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut p) = PENDING.lock() {
        p.push((id, undo));
    }
    Guard(id)
}

impl Guard {
    /// Performs the undo now and unregisters it.
    pub fn run(self) {
        let undo = take(self.0);
        if let Some(u) = undo {
            perform(&u);
        }
    }

    /// Unregisters the undo without performing it (the step was undone another way).
    pub fn forget(self) {
        take(self.0);
    }
}

fn take(id: u64) -> Option<Undo> {
    let mut p = PENDING.lock().ok()?;
    let i = p.iter().position(|(k, _)| *k == id)?;
    Some(p.remove(i).1)
}

/// Performs one undo, ignoring failures (the thing may already be gone).
pub fn perform(undo: &Undo) {
    let quiet = |c: &mut Command| {
        let _ = c
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    };
    match undo {
        Undo::Unmount(dir) => quiet(Command::new("umount").arg("-l").arg(dir)),
        Undo::Kill(pid) => {
            // SAFETY: kill takes no pointers; a stale pid fails with ESRCH.
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
        }
        Undo::Detach(dev) => quiet(Command::new("losetup").arg("-d").arg(dev)),
        Undo::RemoveFile(p) => {
            let _ = std::fs::remove_file(p);
        }
        Undo::RemoveDir(p) => {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Runs every pending undo, newest first.
pub fn run_all() {
    loop {
        let next = PENDING.lock().ok().and_then(|mut p| p.pop());
        match next {
            Some((_, u)) => perform(&u),
            None => return,
        }
    }
}

/// Installs the Ctrl-C / SIGTERM handler (see the module comment).
pub fn install_handler() -> Result<(), ctrlc::Error> {
    ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!("\ntuxfs-bench: interrupted again; cleaning up now");
            run_all();
            std::process::exit(130);
        }
        eprintln!(
            "\ntuxfs-bench: interrupted; stopping after this workload, then unmounting, \
             detaching loop devices, removing images"
        );
        kill_daemons();
        std::thread::spawn(|| {
            std::thread::sleep(GRACE);
            eprintln!("tuxfs-bench: still running after {GRACE:?}; cleaning up now");
            run_all();
            std::process::exit(130);
        });
    })
}

/// SIGKILLs every registered daemon (their undo entries stay: unmounting still follows).
fn kill_daemons() {
    let pids: Vec<Undo> = PENDING.lock().map_or_else(
        |_| Vec::new(),
        |p| {
            p.iter()
                .filter(|(_, u)| matches!(u, Undo::Kill(_)))
                .map(|(_, u)| u.clone())
                .collect()
        },
    );
    for u in &pids {
        perform(u);
    }
}

/// The number of undos still pending (for tests).
pub fn pending() -> usize {
    PENDING.lock().map_or(0, |p| p.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_run_and_forget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, b"x").expect("write");
        std::fs::write(&b, b"x").expect("write");
        let ga = register(Undo::RemoveFile(a.clone()));
        let gb = register(Undo::RemoveFile(b.clone()));
        ga.run();
        assert!(!a.exists());
        gb.forget();
        assert!(b.exists());
    }
}
