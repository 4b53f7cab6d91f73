//! The source-tree workloads (copy a real tree in, du, rm -rf) and the mixed small-file
//! workload in the style of dbench.

use std::fs::{File, OpenOptions as FsOpen};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tuxfs_engine::dev::fault::SplitMix64;

use super::figure::Figure;
use crate::daemon::BoxErr;

/// A source tree held in memory, so copying it in measures only the target.
#[derive(Debug, Default)]
pub struct Tree {
    /// Directories, parents before children, relative to the root.
    pub dirs: Vec<PathBuf>,
    /// Regular files and their contents.
    pub files: Vec<(PathBuf, Vec<u8>)>,
    pub bytes: u64,
}

/// Most entries loaded: bounds memory on a huge tree.
const TREE_ENTRIES_MAX: usize = 200_000;

impl Tree {
    /// Loads regular files and directories under `root` (symlinks and others skipped)
    /// until `bytes_max` bytes or the entry limit.
    pub fn load(root: &Path, bytes_max: u64) -> Result<Tree, BoxErr> {
        let mut tree = Tree::default();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(root.join(&rel))?
                .filter_map(Result::ok)
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let ty = e.file_type()?;
                let child = rel.join(e.file_name());
                if tree.dirs.len() + tree.files.len() >= TREE_ENTRIES_MAX {
                    return Ok(tree);
                }
                if ty.is_dir() {
                    tree.dirs.push(child.clone());
                    stack.push(child);
                } else if ty.is_file() {
                    let len = e.metadata()?.len();
                    if tree.bytes + len > bytes_max {
                        return Ok(tree);
                    }
                    let data = std::fs::read(e.path())?;
                    tree.bytes += data.len() as u64;
                    tree.files.push((child, data));
                }
            }
        }
        if tree.files.is_empty() {
            return Err(format!("no files under {}", root.display()).into());
        }
        Ok(tree)
    }

    /// Files plus directories: the count the tree rates are in.
    pub fn entries(&self) -> usize {
        self.dirs.len() + self.files.len()
    }

    /// Copies the tree under `dest` (mkdir, create, write, close; no fsync, as cp -r).
    pub fn copy_in(&self, dest: &Path) -> Result<Figure, BoxErr> {
        let start = Instant::now();
        std::fs::create_dir(dest)?;
        for d in &self.dirs {
            std::fs::create_dir(dest.join(d))?;
        }
        for (p, data) in &self.files {
            File::create(dest.join(p))?.write_all(data)?;
        }
        Ok(Figure::rate(
            self.entries() as f64,
            start.elapsed().as_secs_f64(),
        ))
    }
}

/// du: walks `root` with lstat on every entry, summing allocated blocks.
pub fn du(root: &Path) -> Result<Figure, BoxErr> {
    let start = Instant::now();
    let (mut n, mut blocks) = (0usize, 0u64);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let md = std::fs::symlink_metadata(e.path())?;
            blocks += md.blocks();
            n += 1;
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if blocks == 0 && n > 0 {
        return Err("du: no blocks allocated under the copied tree".into());
    }
    Ok(Figure::rate(n as f64, secs))
}

/// rm -rf of the tree; rate in `entries` per second.
pub fn rm_rf(root: &Path, entries: usize) -> Result<Figure, BoxErr> {
    let start = Instant::now();
    std::fs::remove_dir_all(root)?;
    Ok(Figure::rate(entries as f64, start.elapsed().as_secs_f64()))
}

/// Files each mixed-workload client keeps at most.
const MIXED_FILES: u64 = 64;

/// A dbench-like mix: `clients` threads, each in its own directory, for `secs`, choosing
/// from a seeded sequence: create and write 16 KiB (30%), read a whole file (30%), stat
/// (20%), rename (5%), unlink (10%), write 4 KiB and fsync (5%). Operations per second over
/// all clients; a missing file (not yet created) is a cheap operation that still counts.
pub fn mixed(dir: &Path, clients: usize, secs: f64, seed: u64) -> Result<Figure, BoxErr> {
    let budget = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let d = dir.join(format!("client{c}"));
            let seed = seed.wrapping_add(c as u64);
            std::thread::spawn(move || mixed_client(&d, seed, start, budget))
        })
        .collect();
    let mut ops = 0u64;
    for t in threads {
        ops += t.join().map_err(|_| "mixed client panicked")??;
    }
    Ok(Figure::rate(ops as f64, start.elapsed().as_secs_f64()))
}

fn mixed_client(dir: &Path, seed: u64, start: Instant, budget: Duration) -> Result<u64, BoxErr> {
    std::fs::create_dir_all(dir)?;
    let mut rng = SplitMix64::new(seed);
    let data = vec![0x6du8; 16 << 10];
    let mut buf = Vec::with_capacity(16 << 10);
    let mut ops = 0u64;
    let name = |i: u64| dir.join(format!("f{i}"));
    let missing = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    while start.elapsed() < budget {
        let (pick, file) = (rng.below(100), rng.below(MIXED_FILES));
        let r: std::io::Result<()> = match pick {
            0..30 => File::create(name(file)).and_then(|mut f| f.write_all(&data)),
            30..60 => File::open(name(file)).and_then(|mut f| {
                buf.clear();
                f.read_to_end(&mut buf).map(|_| ())
            }),
            60..80 => std::fs::metadata(name(file)).map(|_| ()),
            80..85 => std::fs::rename(name(file), name(rng.below(MIXED_FILES))),
            85..95 => std::fs::remove_file(name(file)),
            _ => FsOpen::new()
                .create(true)
                .append(true)
                .open(name(file))
                .and_then(|mut f| {
                    f.write_all(&data[..4096])?;
                    f.sync_data()
                }),
        };
        match r {
            Err(e) if !missing(&e) => return Err(e.into()),
            _ => ops += 1,
        }
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_copy_du_rm_and_mixed_on_a_temp_dir() {
        let src = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(src.path().join("a/b")).expect("mkdir");
        std::fs::write(src.path().join("a/b/x.h"), vec![1u8; 5000]).expect("write");
        std::fs::write(src.path().join("y.h"), b"int y;").expect("write");
        let tree = Tree::load(src.path(), 1 << 20).expect("load");
        assert_eq!(
            (tree.dirs.len(), tree.files.len(), tree.bytes),
            (2, 2, 5006)
        );
        let dst = tempfile::tempdir().expect("tempdir");
        let root = dst.path().join("t");
        assert!(tree.copy_in(&root).expect("copy").value > 0.0);
        assert_eq!(
            std::fs::read(root.join("a/b/x.h")).expect("read").len(),
            5000
        );
        assert!(du(&root).expect("du").value > 0.0);
        rm_rf(&root, tree.entries()).expect("rm");
        assert!(!root.exists());
        let f = mixed(dst.path(), 2, 0.2, 7).expect("mixed");
        assert!(f.value > 0.0);
    }
}
