//! One line describing the machine a benchmark ran on, printed with every table.

use std::path::Path;

/// `nproc`, kernel release and the file system holding `dir`.
pub fn describe(dir: &Path) -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel =
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_else(|_| "unknown".into());
    let (fs, source) = filesystem_of(dir).unwrap_or_else(|| ("unknown".into(), "unknown".into()));
    format!(
        "machine: nproc {nproc}, kernel {}, {} is on {fs} ({source})",
        kernel.trim(),
        dir.display()
    )
}

/// File system type and source device of the mount holding `dir` (the longest mount point
/// that is a prefix of its canonical path).
fn filesystem_of(dir: &Path) -> Option<(String, String)> {
    let dir = dir.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let mut best: Option<(usize, String, String)> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [source, point, fstype, ..] = f[..] else {
            continue;
        };
        let longer = best.as_ref().is_none_or(|(len, _, _)| point.len() > *len);
        if dir.starts_with(point) && longer {
            best = Some((point.len(), fstype.to_string(), source.to_string()));
        }
    }
    best.map(|(_, fs, source)| (fs, source))
}
