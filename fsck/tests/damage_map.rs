//! Helpers for measuring what a repair saves: the tree blocks of an image (interior nodes
//! and leaves, as recovery sees them after the log), what a leaf describes, the content of
//! every file as the engine reads it, and how many of those bytes a repaired image still
//! reads back; and [`edit_inode`] / [`judge_and_repair`] for tests that damage one inode
//! record so that its leaf still verifies.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;

use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::format::btree::{Key, Leaf, Node};
use tuxfs_engine::format::dirent::Dirent;
use tuxfs_engine::format::inode::Inode;
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

/// Block size of the images [`edit_inode`] edits.
const EDIT_BS: u32 = 4096;

/// Rewrites inode `inum`'s record with `edit` in the inode-table leaf holding it, and
/// re-seals the leaf so that its checksum and structure verify. Returns the leaf block.
pub fn edit_inode(image: &mut [u8], inum: u64, edit: impl Fn(&mut Inode)) -> u64 {
    let fs_id = superblock(image).fs_id();
    for tb in tree_blocks(image) {
        if tb.tree != TreeId::Inodes || tb.level != 0 {
            continue;
        }
        let at = tb.block as usize * EDIT_BS as usize;
        let block = image[at..at + EDIT_BS as usize].to_vec();
        let leaf = Leaf::decode(&block, tb.block, TreeId::Inodes, fs_id).expect("leaf");
        if !leaf.entries.iter().any(|(k, _)| k.a == inum && k.b == 0) {
            continue;
        }
        let values: Vec<Vec<u8>> = leaf
            .entries
            .iter()
            .map(|(k, v)| {
                if k.a != inum {
                    return v.to_vec();
                }
                let mut inode = Inode::decode(v, tb.block).expect("inode");
                edit(&mut inode);
                inode.encode()
            })
            .collect();
        let entries: Vec<_> = leaf
            .entries
            .iter()
            .zip(&values)
            .map(|((k, _), v)| (*k, v.as_slice()))
            .collect();
        Leaf::encode(
            &mut image[at..at + EDIT_BS as usize],
            &leaf.header,
            &entries,
        );
        return tb.block;
    }
    panic!("no leaf holds inode {inum}");
}

pub fn fsck(args: &[&str], path: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fsck-tuxfs"))
        .args(args)
        .arg(path)
        .output()
        .expect("runs fsck");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    (out.status.code().unwrap_or(-1), text)
}

/// fsck -n finds `want` (naming the inode and leaf), -y repairs, -n is then clean; returns
/// the repaired image.
pub fn judge_and_repair(image: &[u8], inum: u64, leaf: u64, want: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fs.img");
    std::fs::write(&path, image).expect("write image");
    let (code, out) = fsck(&["-n"], &path);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(&format!("block {leaf}: inode {inum}: {want}")),
        "finding does not name inode {inum}, leaf {leaf} and {want}:\n{out}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), image, "fsck -n wrote");
    let (code, out) = fsck(&["-y"], &path);
    assert_eq!(code, 1, "{out}");
    let (code, out) = fsck(&["-n"], &path);
    assert_eq!(code, 0, "{out}");
    std::fs::read(&path).unwrap()
}
