//! Whole-tree snapshots of one side, taken at quiescent points, and the rules by which two
//! of them must agree.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::sys;
use super::{Attr, RunClock};

/// Bytes read from holes: the first and last 4 KiB of each hole and of each gap the
/// reference reports, so a 1 TiB sparse file is compared without reading a terabyte.
const HOLE_SAMPLE: i64 = 4096;
/// A bound on the data read per file (the generator writes far less).
const DATA_MAX: i64 = 64 << 20;

/// The state of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub attr: Attr,
    /// st_blocks (regular files only; compared by [`blocks_agree`]).
    /// With `blocks`: the sectors of the reference's data ranges ([`data_sectors`]).
    pub data_sectors: Option<i64>,
    pub blocks: Option<i64>,
    /// Regular files: the bytes of the probe plan (data ranges whole, holes sampled).
    pub content: Option<Vec<u8>>,
    pub target: Option<Vec<u8>>,
    /// name to value, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The file ranges to read, in order: (offset, length, true for a data range of the
/// reference, false for a hole sample).
pub type Plan = Vec<(i64, i64, bool)>;

/// The 512-byte sectors of the blocks the plan's data ranges cover: what `st_blocks` of a
/// filesystem that counts data blocks only must be.
pub fn data_sectors(plan: &Plan, block_size: i64) -> i64 {
    plan.iter()
        .filter(|r| r.2)
        .map(|&(off, len, _)| {
            let first = off / block_size;
            let end = (off + len + block_size - 1) / block_size;
            (end - first) * (block_size / 512)
        })
        .sum()
}

/// The probe plan of a file on the reference side: every data range whole, and the edges
/// of every hole, found with SEEK_DATA / SEEK_HOLE (which ext4 answers exactly). The same
/// plan is then read on both sides, so holes reading as zeros are checked on the subject
/// without trusting its own SEEK_HOLE.
pub fn plan(path: &Path) -> Result<Plan, String> {
    let fd = sys::open(path, libc::O_RDONLY | libc::O_NONBLOCK, 0).map_err(|e| {
        format!(
            "open {} for the plan: {}",
            path.display(),
            sys::errno_name(e)
        )
    })?;
    let size = sys::fstat(fd.as_raw_fd())
        .map_err(|e| format!("fstat {}: {}", path.display(), sys::errno_name(e)))?
        .st_size;
    let mut out = Vec::new();
    let mut pos = 0i64;
    let mut data_total = 0i64;
    while pos < size {
        let data = match sys::lseek(&fd, pos, libc::SEEK_DATA) {
            Ok(d) => d,
            Err(e) if e == libc::ENXIO => size,
            Err(e) => {
                return Err(format!(
                    "SEEK_DATA {}: {}",
                    path.display(),
                    sys::errno_name(e)
                ));
            }
        };
        if data > pos {
            sample_hole(&mut out, pos, data);
        }
        if data >= size {
            break;
        }
        let hole = sys::lseek(&fd, data, libc::SEEK_HOLE)
            .map_err(|e| format!("SEEK_HOLE {}: {}", path.display(), sys::errno_name(e)))?;
        data_total += hole - data;
        if data_total > DATA_MAX {
            return Err(format!(
                "{}: more than {DATA_MAX} bytes of data; the generator never writes so much",
                path.display()
            ));
        }
        out.push((data, hole - data, true));
        pos = hole;
    }
    Ok(out)
}

fn sample_hole(out: &mut Plan, start: i64, end: i64) {
    if end - start <= 2 * HOLE_SAMPLE {
        out.push((start, end - start, false));
    } else {
        out.push((start, HOLE_SAMPLE, false));
        out.push((end - HOLE_SAMPLE, HOLE_SAMPLE, false));
    }
}

/// Reads `plan` from `path`.
pub fn read_plan(path: &Path, plan: &Plan) -> Result<Vec<u8>, i32> {
    let fd = sys::open(path, libc::O_RDONLY | libc::O_NONBLOCK, 0)?;
    let mut out = Vec::new();
    for &(off, len, _) in plan {
        let len = usize::try_from(len).map_err(|_| libc::EINVAL)?;
        let mut got = 0usize;
        while got < len {
            let chunk = sys::pread(&fd, off + got as i64, (len - got).min(1 << 20))?;
            if chunk.is_empty() {
                break;
            }
            got += chunk.len();
            out.extend_from_slice(&chunk);
        }
    }
    Ok(out)
}

/// Every path under `root` (relative, "" for the root itself) with its lstat, parents
/// before children.
fn walk(root: &Path) -> Result<Vec<(String, libc::stat)>, String> {
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let st = sys::stat(&path, false)
            .map_err(|e| format!("lstat {}: {}", path.display(), sys::errno_name(e)))?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            let names = sys::readdir(&path)
                .map_err(|e| format!("readdir {}: {}", path.display(), sys::errno_name(e)))?;
            for name in names {
                let name = String::from_utf8(name)
                    .map_err(|_| format!("{}: a name that is not UTF-8", path.display()))?;
                stack.push(if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                });
            }
        }
        out.push((rel, st));
    }
    Ok(out)
}

/// Every path under `root` and its state. `plans` gives the probe plan of each regular
/// file (from the reference side); a file without one (it exists only here) is planned on
/// the spot.
pub fn snapshot(
    root: &Path,
    clock: &RunClock,
    plans: &BTreeMap<String, Plan>,
) -> Result<BTreeMap<String, Node>, String> {
    let mut out = BTreeMap::new();
    for (rel, st) in walk(root)? {
        let path = root.join(&rel);
        let attr = Attr::of(&st, clock);
        let kind = attr.kind;
        let mut node = Node {
            attr,
            blocks: None,
            data_sectors: None,
            content: None,
            target: None,
            xattrs: Vec::new(),
        };
        if kind == 'f' {
            node.blocks = Some(st.st_blocks);
            let own;
            let plan = match plans.get(&rel) {
                Some(p) => p,
                None => {
                    own = plan(&path)?;
                    &own
                }
            };
            node.data_sectors = Some(data_sectors(plan, st.st_blksize));
            node.content = Some(
                read_plan(&path, plan)
                    .map_err(|e| format!("read {}: {}", path.display(), sys::errno_name(e)))?,
            );
        }
        if kind == 'l' {
            node.target = Some(
                sys::readlink(&path)
                    .map_err(|e| format!("readlink {}: {}", path.display(), sys::errno_name(e)))?,
            );
        }
        if kind == 'f' || kind == 'd' {
            let names = sys::llistxattr(&path, 65_536)
                .map_err(|e| format!("listxattr {}: {}", path.display(), sys::errno_name(e)))?;
            for name in names {
                let value = sys::lgetxattr(&path, &name, 65_536).map_err(|e| {
                    format!(
                        "getxattr {} {name:?}: {}",
                        path.display(),
                        sys::errno_name(e)
                    )
                })?;
                node.xattrs.push((name, value));
            }
        }
        out.insert(rel, node);
    }
    Ok(out)
}

/// The probe plans of every regular file under `root` (the reference side).
pub fn plans(root: &Path) -> Result<BTreeMap<String, Plan>, String> {
    let mut out = BTreeMap::new();
    for (rel, st) in walk(root)? {
        if st.st_mode & libc::S_IFMT == libc::S_IFREG {
            let p = plan(&root.join(&rel))?;
            out.insert(rel, p);
        }
    }
    Ok(out)
}

/// The st_blocks rule for regular files. The subject (tuxfs) counts data blocks only
/// (SEMANTICS.md, "`st_blocks` counts allocated blocks"), so its count must be exactly
/// the blocks of the data ranges the reference reports through SEEK_DATA/SEEK_HOLE
/// (`data`, from [`data_sectors`]). The reference (ext4) also counts its extent-tree
/// blocks (beyond the four extents its inode holds; the tree does not shrink when the
/// file does) and an external xattr block (xattrs past its 256-byte inode), so its count
/// may be higher by a few whole blocks. Preallocated (unwritten) blocks count on both sides
/// but are holes to SEEK_DATA, so the subject may count more than `data`, never less.
/// With `ea_inode` ext4 also counts the blocks of each large xattr value's inode
/// (`xattr_blocks`); tuxfs's spill blocks are not in st_blocks (SEMANTICS.md, Extended
/// attributes). Equal counts always agree (the harness's self-test runs ext4 against ext4).
pub fn blocks_agree(
    reference: i64,
    subject: i64,
    data: i64,
    block_size: i64,
    xattr_blocks: i64,
) -> bool {
    let sectors = block_size / 512;
    let extra = reference - subject;
    reference == subject
        || (subject >= data
            && extra > 0
            && extra % sectors == 0
            && extra / sectors <= EXT4_METADATA_BLOCKS_MAX + xattr_blocks)
}

/// Blocks the xattr values `xattrs` fill, each rounded up: an upper bound of what ext4's
/// `ea_inode` value inodes add to st_blocks.
pub fn xattr_blocks(xattrs: &[(Vec<u8>, Vec<u8>)], block_size: i64) -> i64 {
    xattrs
        .iter()
        .map(|(_, v)| (v.len() as i64 + block_size - 1) / block_size)
        .sum()
}

/// The most blocks ext4 counts in a file's st_blocks beyond its data in these runs: an
/// external xattr block and the extent-tree blocks of a file of a few hundred extents.
pub const EXT4_METADATA_BLOCKS_MAX: i64 = 4;
