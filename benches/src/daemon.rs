//! Running the workspace's own binaries from a benchmark: finding them next to the running
//! executable (the same cargo build and profile), making an image, mounting it with
//! `tuxfs-mount -f`, and reading a daemon's memory and CPU from /proc.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The benches' error type.
pub type BoxErr = Box<dyn std::error::Error + Send + Sync>;

/// How long a mount may take to come up before it is called failed.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(120);

/// The workspace binary `name` built next to the running executable.
pub fn tool(name: &str) -> Result<PathBuf, BoxErr> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().ok_or("no parent directory")?.join(name);
    if !path.exists() {
        return Err(format!(
            "{} not found: build with cargo build --release --workspace",
            path.display()
        )
        .into());
    }
    Ok(path)
}

/// True when `dir` is the root of a mount (its device differs from its parent's).
pub fn is_mountpoint(dir: &Path) -> bool {
    match (std::fs::metadata(dir), dir.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// A FUSE daemon running in the foreground, serving `dir`.
#[derive(Debug)]
pub struct Mounted {
    pub child: Child,
    pub dir: PathBuf,
}

/// Starts `program args...` (a FUSE daemon in the foreground) and waits until `dir` is a
/// mount point. Returns the daemon and how long the mount took.
pub fn spawn_daemon(mut cmd: Command, dir: &Path) -> Result<(Mounted, Duration), BoxErr> {
    let start = Instant::now();
    let child = cmd.spawn()?;
    let mut m = Mounted {
        child,
        dir: dir.to_path_buf(),
    };
    while !is_mountpoint(dir) {
        if let Some(status) = m.child.try_wait()? {
            return Err(format!("{cmd:?} exited with {status}").into());
        }
        if start.elapsed() > MOUNT_TIMEOUT {
            let _ = m.child.kill();
            let _ = m.child.wait();
            return Err(format!("{cmd:?}: mount did not come up in 120 s").into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok((m, start.elapsed()))
}

/// Mounts a tuxfs image on `dir` with `tuxfs-mount -f`, with `-o` options.
pub fn mount_tuxfs(
    image: &Path,
    dir: &Path,
    options: &[&str],
) -> Result<(Mounted, Duration), BoxErr> {
    let mut cmd = Command::new(tool("tuxfs-mount")?);
    for o in options {
        cmd.arg("-o").arg(o);
    }
    cmd.arg("-f").arg(image).arg(dir);
    spawn_daemon(cmd, dir)
}

impl Mounted {
    /// Unmounts and waits for the daemon to exit.
    pub fn unmount(mut self) -> Result<(), BoxErr> {
        let ok = Command::new("umount").arg(&self.dir).status()?.success();
        if !ok {
            return Err(format!("umount {} failed", self.dir.display()).into());
        }
        self.child.wait()?;
        Ok(())
    }

    /// Kills the daemon (a crash) and detaches the dead mount.
    pub fn kill(mut self) -> Result<(), BoxErr> {
        self.child.kill()?;
        self.child.wait()?;
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        Ok(())
    }
}

/// Makes a fresh tuxfs image of `size` bytes at `image` with `mkfs-tuxfs` (replacing a file
/// already there).
pub fn mkfs_tuxfs(image: &Path, size: u64) -> Result<(), BoxErr> {
    let _ = std::fs::remove_file(image);
    let out = Command::new(tool("mkfs-tuxfs")?)
        .arg("--size")
        .arg(size.to_string())
        .arg(image)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mkfs-tuxfs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into())
    }
}

/// A field of /proc/PID/status in KiB (VmHWM: peak resident set; VmRSS: now).
pub fn proc_kib(pid: u32, field: &str) -> Result<u64, BoxErr> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or("no such field")?;
    Ok(line.split_whitespace().nth(1).ok_or("no value")?.parse()?)
}

/// User plus system CPU seconds process `pid` has used (all its threads), from
/// /proc/PID/stat.
pub fn proc_cpu_secs(pid: u32) -> Result<f64, BoxErr> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: fields count from after it.
    let rest = stat.rsplit_once(')').ok_or("bad /proc/PID/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of stat(5), utime 14 and stime 15.
    let ticks = |i: usize| -> Result<f64, BoxErr> {
        Ok(f.get(i - 3).ok_or("short /proc/PID/stat")?.parse::<f64>()?)
    };
    // SAFETY: sysconf takes no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks(14)? + ticks(15)?) / hz)
}

/// User plus system CPU seconds of this process (every thread).
pub fn self_cpu_secs() -> f64 {
    // SAFETY: getrusage writes one rusage struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The value at fraction `p` (0..=1) of an ascending slice; 0 for an empty one.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_cpu() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 51);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&[], 0.5), 0);
        let own = proc_cpu_secs(std::process::id()).expect("own stat");
        assert!(own >= 0.0 && self_cpu_secs() >= 0.0);
        assert!(proc_kib(std::process::id(), "VmHWM:").expect("own status") > 0);
    }
}
