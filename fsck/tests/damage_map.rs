//! Helpers for measuring what a repair saves: the tree blocks of an image (interior nodes
//! and leaves, as recovery sees them after the log), what a leaf describes, the content of
//! every file as the engine reads it, and how many of those bytes a repaired image still
//! reads back.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::format::btree::{Key, Leaf, Node};
use tuxfs_engine::format::dirent::Dirent;
use tuxfs_engine::format::log::LogRecord;
use tuxfs_engine::format::{Superblock, TreeId};
use tuxfs_engine::fs::{FileKind, Filesystem, MountOptions};
use tuxfs_engine::io::BlockReader;
use tuxfs_engine::recovery::read_log;
use tuxfs_fsck::{Mode, Options, check};

const ROOT: u64 = 1;

/// One block of a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeBlock {
    pub tree: TreeId,
    /// 0 for a leaf.
    pub level: u8,
    pub block: u64,
    /// A leaf written by a delta in the log (reached through a LeafSet record): damage to
    /// it makes recovery drop that delta and every later one.
    pub logged: bool,
}

/// The superblock fsck picks on an undamaged image.
pub fn superblock(image: &[u8]) -> Superblock {
    let dev = MemDevice::from_bytes(image.to_vec());
    let opts = Options {
        mode: Mode::Check,
        check_data: false,
    };
    check(&dev, &opts).expect("fsck runs").superblock
}

/// Every interior node and every leaf of the trees of an undamaged image, leaves as the
/// log leaves them.
pub fn tree_blocks(image: &[u8]) -> Vec<TreeBlock> {
    let sb = superblock(image);
    let dev = MemDevice::from_bytes(image.to_vec());
    let reader = BlockReader {
        dev: &dev,
        block_size: sb.block_size,
        block_count: sb.block_count,
    };
    let replay = read_log(&reader, &sb).expect("an undamaged log");
    let mut out = Vec::new();
    for tree in TreeId::ACTIVE {
        let root = sb.root(tree);
        let mut leaves: BTreeMap<Key, (u64, bool)> = BTreeMap::new();
        if root.block != 0 {
            let mut todo = vec![(root.block, root.height, Key::MIN)];
            while let Some((block, level, lo)) = todo.pop() {
                if level == 0 {
                    leaves.insert(lo, (block, false));
                    continue;
                }
                out.push(TreeBlock {
                    tree,
                    level,
                    block,
                    logged: false,
                });
                let buf = reader.read(block).expect("read");
                let node = Node::decode(&buf, block, tree, level, sb.fs_id(), 0..sb.block_count)
                    .expect("undamaged node");
                for (k, child) in node.entries {
                    todo.push((child, level - 1, k));
                }
            }
        }
        for r in replay.deltas.iter().flat_map(|d| &d.records) {
            match r {
                LogRecord::LeafSet {
                    tree: t,
                    key,
                    block,
                } if *t == tree => {
                    leaves.insert(*key, (*block, true));
                }
                LogRecord::LeafDel { tree: t, key } if *t == tree => {
                    leaves.remove(key);
                }
                _ => {}
            }
        }
        out.extend(leaves.values().map(|&(block, logged)| TreeBlock {
            tree,
            level: 0,
            block,
            logged,
        }));
    }
    out
}

/// Inode numbers a leaf describes: the inodes of an inode-table leaf, the files of an
/// extent leaf, the targets of a directory leaf's entries.
pub fn described(image: &[u8], bs: u32, fs_id: u64, tb: TreeBlock) -> BTreeSet<u64> {
    let at = tb.block as usize * bs as usize;
    let buf = &image[at..at + bs as usize];
    let leaf = Leaf::decode(buf, tb.block, tb.tree, fs_id).expect("undamaged leaf");
    leaf.entries
        .iter()
        .filter_map(|(k, v)| match tb.tree {
            TreeId::Inodes | TreeId::Extents => Some(k.a),
            TreeId::Dirs => Dirent::decode(v, tb.block, k.b, None).ok().map(|d| d.inum),
            _ => None,
        })
        .collect()
}

/// A regular file as the undamaged image has it.
#[derive(Debug, Clone)]
pub struct FileContent {
    pub path: Vec<Vec<u8>>,
    /// Inode numbers from the top directory below the root down to the file itself.
    pub chain: Vec<u64>,
    pub bytes: Vec<u8>,
}

fn read_all(fs: &Filesystem, ino: u64, size: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        let want = (size - out.len() as u64).min(1 << 20) as u32;
        let got = fs.read(ino, out.len() as u64, want).ok()?;
        if got.is_empty() {
            break;
        }
        out.extend_from_slice(&got);
    }
    Some(out)
}

/// Every regular file of `image` (a copy is mounted; the image is not changed).
pub fn contents(image: &[u8], options: MountOptions) -> Vec<FileContent> {
    let dev = Arc::new(MemDevice::from_bytes(image.to_vec()));
    let fs = Filesystem::mount(dev as Arc<dyn BlockDevice>, options).expect("mount");
    let mut out = Vec::new();
    let mut todo = vec![(ROOT, Vec::<Vec<u8>>::new(), Vec::<u64>::new())];
    while let Some((dir, path, chain)) = todo.pop() {
        for e in fs.readdir(dir, 0, usize::MAX).expect("readdir") {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            let mut p = path.clone();
            p.push(e.name.clone());
            let mut c = chain.clone();
            c.push(e.ino);
            let attr = fs.getattr(e.ino).expect("getattr");
            match attr.kind {
                FileKind::Directory => todo.push((e.ino, p, c)),
                FileKind::Regular => {
                    let bytes = read_all(&fs, e.ino, attr.size).expect("read");
                    out.push(FileContent {
                        path: p,
                        chain: c,
                        bytes,
                    });
                }
                _ => {}
            }
        }
    }
    drop(fs);
    out.sort_by(|x, y| x.path.cmp(&y.path));
    out
}

/// Bytes of `file` that `fs` reads back at the same path and offset.
pub fn correct_bytes(fs: &Filesystem, file: &FileContent) -> u64 {
    let mut ino = ROOT;
    for name in &file.path {
        match fs.lookup(ino, name) {
            Ok(a) => ino = a.ino,
            Err(_) => return 0,
        }
    }
    let Ok(attr) = fs.getattr(ino) else { return 0 };
    if attr.kind != FileKind::Regular {
        return 0;
    }
    let len = attr.size.min(file.bytes.len() as u64);
    let Some(got) = read_all(fs, ino, len) else {
        return 0;
    };
    got.iter().zip(&file.bytes).filter(|(a, b)| a == b).count() as u64
}

/// The path of a file for messages.
pub fn show(path: &[Vec<u8>]) -> String {
    let parts: Vec<String> = path
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    format!("/{}", parts.join("/"))
}
