//! --device: benchmarking a partition destroys what is on it, so it must be a block device,
//! not mounted, and either blank or explicitly given up with --force.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use tuxfs_engine::dev::{AlignedBuf, BlockDevice, DeviceKind, OpenOptions, ReadRequest, open_file};
use tuxfs_mkfs::signature::{PROBE_BYTES, detect};

use crate::daemon::BoxErr;

/// Opens the device to look at it, never to write.
fn open_read_only(path: &Path) -> Result<Box<dyn BlockDevice>, BoxErr> {
    Ok(open_file(
        path,
        &OpenOptions {
            read_only: true,
            kind: DeviceKind::Sync,
            ..OpenOptions::default()
        },
    )?)
}

/// What the first bytes of `path` show it holds, if anything recognisable.
pub fn inspect(path: &Path) -> Result<Option<String>, BoxErr> {
    let dev = open_read_only(path)?;
    let len = dev.size_bytes().min(PROBE_BYTES as u64) / 4096 * 4096;
    let mut head = AlignedBuf::zeroed(len as usize);
    dev.read_batch(&mut [ReadRequest {
        offset: 0,
        buf: &mut head,
    }])?;
    Ok(detect(&head))
}

/// The size of the device in bytes.
pub fn size(path: &Path) -> Result<u64, BoxErr> {
    let dev = open_read_only(path)?;
    Ok(dev.size_bytes())
}

/// The mount point where `path` (or a partition of it) is mounted, if it is.
fn mounted(path: &Path) -> Option<String> {
    let real = path.canonicalize().ok()?;
    let name = real.file_name()?.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (source, point) = (f.next()?, f.next()?);
        let src = Path::new(source).canonicalize().ok()?;
        let src_name = src.file_name()?.to_string_lossy().into_owned();
        (src == real || (src_name.starts_with(&name) && src_name.len() > name.len()))
            .then(|| format!("{source} is mounted on {point}"))
    })
}

/// Checks that `path` may be destroyed. Returns the warning to print before going on
/// (what will be destroyed) or an error saying why it refuses.
pub fn check(path: &Path, force: bool) -> Result<String, BoxErr> {
    let md = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !md.file_type().is_block_device() {
        return Err(format!("{} is not a block device", path.display()).into());
    }
    if let Some(m) = mounted(path) {
        return Err(format!("{}: {m}; unmount it first", path.display()).into());
    }
    let found = inspect(path)?;
    match (found, force) {
        (Some(what), false) => Err(format!(
            "{}: {what}. tuxfs-bench makes every target on it in turn and would destroy it; \
             pass --force to destroy it",
            path.display()
        )
        .into()),
        (Some(what), true) => Ok(format!(
            "--force: {}: {what}; it is being destroyed",
            path.display()
        )),
        (None, _) => Ok(format!(
            "{}: no filesystem or partition table found; everything on it is overwritten",
            path.display()
        )),
    }
}
