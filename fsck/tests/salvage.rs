//! Story: a filesystem with 60 files (512-byte blocks, so every tree has interior nodes)
//! is unmounted cleanly; then single tree blocks go bad, and leaves that do not belong
//! there sit in free blocks. `fsck -y` must find the cut-off leaves again and choose them
//! by the rules (this filesystem, this tree, not newer than the state being repaired, the
//! newest first), say per file what it could not save, and name the file and offset of a
//! damaged data block.
//!
//! Invariants checked: after an interior node of any tree is zeroed, every file reads back
//! exactly; a forged leaf newer than the last delta, or of another filesystem, is never
//! used; an older copy never replaces a newer one; every file a lost leaf took data from is
//! named with its byte ranges in the report, and no intact file is; a bad data block is
//! reported with its path and byte range by `--data`.
//!
//! Not covered: salvage of xattr spill blocks (not a tree); damage to the log itself.

mod common;
mod damage_map;

use std::sync::Arc;
use std::time::Duration;

use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::format::btree::{Key, Leaf};
use tuxfs_engine::format::extent::Extent;
use tuxfs_engine::format::{BlockHeader, Kind, TreeId};
use tuxfs_engine::fs::{Caller, Filesystem, MountOptions};
use tuxfs_engine::mkfs::format_device;
use tuxfs_fsck::{Mode, Options, Report, check};

use damage_map::{FileContent, TreeBlock};

const BS: u32 = 512;
const BLOCKS: u64 = 3000;
const ME: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};

fn options() -> MountOptions {
    MountOptions {
        commit_interval: Duration::from_secs(3600),
        ..MountOptions::default()
    }
}

/// 60 files of 1 to 6 blocks in 4 directories, with a few rewrites so that older leaf
/// versions exist in free blocks. Unmounted cleanly.
fn image() -> Vec<u8> {
    let dev = Arc::new(MemDevice::new((u64::from(BS) * BLOCKS) as usize));
    format_device(dev.as_ref(), &common::params(BS, BLOCKS), false).expect("mkfs");
    let fs = Filesystem::mount(dev.clone() as Arc<dyn BlockDevice>, options()).expect("mount");
    let mut dirs = Vec::new();
    for d in 0..4 {
        dirs.push(
            fs.mkdir(1, format!("d{d}").as_bytes(), 0o755, ME)
                .expect("mkdir")
                .ino,
        );
    }
    for i in 0..60u64 {
        let f = fs
            .create(dirs[i as usize % 4], format!("f{i}").as_bytes(), 0o644, ME)
            .expect("create");
        let len = (1 + i % 6) as usize * BS as usize - (i as usize % 3);
        let bytes: Vec<u8> = (0..len)
            .map(|j| ((i as usize * 31 + j * 7 + j / 509) % 251) as u8)
            .collect();
        fs.write(f.ino, 0, &bytes, false).expect("write");
        fs.release(f.ino).expect("release");
        if i % 10 == 9 {
            fs.sync().expect("sync");
        }
    }
    fs.unmount().expect("unmount");
    drop(fs);
    dev.snapshot()
}

fn fsck(image: Vec<u8>, mode: Mode, check_data: bool) -> (Report, Vec<u8>) {
    let dev = MemDevice::from_bytes(image);
    let r = check(&dev, &Options { mode, check_data }).expect("fsck runs");
    (r, dev.snapshot())
}

/// Bytes read back correct, per file, from `image`.
fn read_back(image: Vec<u8>, files: &[FileContent]) -> Vec<u64> {
    let dev = Arc::new(MemDevice::from_bytes(image));
    let fs = Filesystem::mount(dev as Arc<dyn BlockDevice>, options()).expect("mount repaired");
    files
        .iter()
        .map(|f| damage_map::correct_bytes(&fs, f))
        .collect()
}

fn zero(image: &mut [u8], block: u64) {
    let at = block as usize * BS as usize;
    image[at..at + BS as usize].fill(0);
}

/// A block nothing uses in `image` (all zeros), from the end.
fn free_blocks(image: &[u8], n: usize) -> Vec<u64> {
    (0..BLOCKS)
        .rev()
        .filter(|b| {
            let at = *b as usize * BS as usize;
            image[at..at + BS as usize].iter().all(|&x| x == 0)
        })
        .take(n)
        .collect()
}

/// Writes at `block` a copy of extent leaf `from` with header fields changed and every
/// extent pointing at block `phys` (so a file using it reads the wrong bytes).
fn forge(image: &mut [u8], from: TreeBlock, block: u64, delta: u64, fs_id: u64, phys: u64) {
    let at = from.block as usize * BS as usize;
    let src = image[at..at + BS as usize].to_vec();
    let leaf = Leaf::decode(
        &src,
        from.block,
        TreeId::Extents,
        damage_map::superblock(image).fs_id(),
    )
    .expect("leaf");
    let values: Vec<(Key, Vec<u8>)> = leaf
        .entries
        .iter()
        .map(|(k, v)| {
            let mut e = Extent::decode(v, from.block, BS, 0..BLOCKS).expect("extent");
            e.phys = phys;
            (*k, e.encode(BS))
        })
        .collect();
    let refs: Vec<(Key, &[u8])> = values.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    let mut buf = vec![0u8; BS as usize];
    let h = BlockHeader {
        kind: Kind::BtreeLeaf,
        level: 0,
        blocknr: block,
        owner: TreeId::Extents as u64,
        delta,
        fs_id,
    };
    Leaf::encode(&mut buf, &h, &refs);
    let to = block as usize * BS as usize;
    image[to..to + BS as usize].copy_from_slice(&buf);
}

#[test]
fn a_zeroed_interior_node_of_any_tree_loses_nothing() {
    let clean = image();
    let files = damage_map::contents(&clean, options());
    let total: Vec<u64> = files.iter().map(|f| f.bytes.len() as u64).collect();
    let blocks = damage_map::tree_blocks(&clean);
    for tree in [TreeId::Inodes, TreeId::Extents, TreeId::Dirs] {
        let interior: Vec<&TreeBlock> = blocks
            .iter()
            .filter(|b| b.tree == tree && b.level > 0)
            .collect();
        assert!(
            !interior.is_empty(),
            "the {} has no interior node",
            tree.name()
        );
        for b in interior {
            let mut img = clean.clone();
            zero(&mut img, b.block);
            let (checked, _) = fsck(img.clone(), Mode::Check, false);
            assert!(
                checked
                    .notes
                    .iter()
                    .any(|n| n.contains("fsck -y looks for their leaves")),
                "{:?}",
                checked.notes
            );
            let (r, fixed) = fsck(img, Mode::Yes, false);
            assert_eq!(r.exit_code(), 1, "{}: {:#?}", b.block, r.findings);
            assert!(
                r.notes.iter().any(|n| n.starts_with("salvaged")),
                "{:?}",
                r.notes
            );
            assert!(
                !r.findings.iter().any(|f| f.what.starts_with("lost")),
                "{:#?}",
                r.findings
            );
            assert_eq!(
                read_back(fixed, &files),
                total,
                "{} block {}",
                tree.name(),
                b.block
            );
        }
    }
}

#[test]
fn forged_newer_foreign_and_older_leaves_are_not_used() {
    let clean = image();
    let files = damage_map::contents(&clean, options());
    let total: Vec<u64> = files.iter().map(|f| f.bytes.len() as u64).collect();
    let sb = damage_map::superblock(&clean);
    let blocks = damage_map::tree_blocks(&clean);
    let root = blocks
        .iter()
        .find(|b| b.tree == TreeId::Extents && b.level > 0)
        .expect("extent tree interior node");
    let leaf = *blocks
        .iter()
        .find(|b| b.tree == TreeId::Extents && b.level == 0)
        .expect("extent leaf");
    let spare = free_blocks(&clean, 3);
    let mut img = clean.clone();
    // Each forged leaf has the keys of a real one and extents pointing at the superblock's
    // neighbour: a file that used any of them would read the wrong bytes.
    forge(&mut img, leaf, spare[0], sb.delta + 5, sb.fs_id(), 2);
    forge(&mut img, leaf, spare[1], sb.delta, sb.fs_id() ^ 1, 2);
    forge(&mut img, leaf, spare[2], 1, sb.fs_id(), 2);
    zero(&mut img, root.block);
    let (r, fixed) = fsck(img, Mode::Yes, false);
    assert_eq!(r.exit_code(), 1, "{:#?}", r.findings);
    assert!(
        r.notes.iter().any(|n| n.contains("(1 newer than delta")),
        "the newer leaf is counted and ignored: {:?}",
        r.notes
    );
    assert_eq!(read_back(fixed, &files), total);
}

#[test]
fn what_a_lost_leaf_took_is_reported_per_file() {
    let clean = image();
    let files = damage_map::contents(&clean, options());
    let sb = damage_map::superblock(&clean);
    let blocks = damage_map::tree_blocks(&clean);
    let mut reported_any = false;
    for b in blocks
        .iter()
        .filter(|b| b.tree == TreeId::Extents && b.level == 0)
    {
        let mut img = clean.clone();
        zero(&mut img, b.block);
        // Salvage may bring back an older copy of the leaf; whatever it cannot is reported.
        let described = damage_map::described(&clean, BS, sb.fs_id(), *b);
        let (r, fixed) = fsck(img, Mode::Yes, false);
        let got = read_back(fixed, &files);
        for (f, good) in files.iter().zip(got) {
            let path = damage_map::show(&f.path);
            let named = r
                .findings
                .iter()
                .any(|x| x.what.starts_with("lost data: ") && x.what.contains(&format!("{path} ")));
            if good == f.bytes.len() as u64 {
                assert!(
                    !named,
                    "{path} is intact but reported lost: {:#?}",
                    r.findings
                );
            } else {
                let inum = *f.chain.last().expect("inode");
                assert!(
                    described.contains(&inum),
                    "{path} was not in leaf {}",
                    b.block
                );
                assert!(
                    named,
                    "{path} lost data but is not reported: {:#?}",
                    r.findings
                );
                reported_any = true;
            }
        }
    }
    assert!(reported_any, "no extent leaf loss was ever reported");
}

#[test]
fn a_bad_data_block_is_reported_with_its_path_and_offset() {
    let clean = image();
    let files = damage_map::contents(&clean, options());
    let target = files
        .iter()
        .find(|f| f.bytes.len() > 3 * BS as usize)
        .expect("a file of several blocks");
    // Find the data block holding the file's second block by its content.
    let want = &target.bytes[BS as usize..2 * BS as usize];
    let block = clean
        .chunks(BS as usize)
        .position(|c| c == want)
        .expect("data block on the image");
    let mut img = clean.clone();
    img[block * BS as usize + 10] ^= 0x40;
    let (r, _) = fsck(img, Mode::Check, true);
    assert_eq!(r.exit_code(), 4, "{:#?}", r.findings);
    let path = damage_map::show(&target.path);
    let expect = format!(
        "of {path} (inode {}, bytes 512..1024)",
        target.chain.last().expect("inode")
    );
    assert!(
        r.findings.iter().any(|f| f.what.contains(&expect)),
        "no finding names {expect}: {:#?}",
        r.findings
    );
}

#[test]
fn files_cut_off_by_a_lost_inode_or_directory_leaf_are_reported() {
    let clean = image();
    let files = damage_map::contents(&clean, options());
    let blocks = damage_map::tree_blocks(&clean);
    let mut reported_any = false;
    let leaves = blocks
        .iter()
        .filter(|b| matches!(b.tree, TreeId::Inodes | TreeId::Dirs) && b.level == 0);
    for b in leaves {
        let mut img = clean.clone();
        zero(&mut img, b.block);
        let (r, fixed) = fsck(img, Mode::Yes, false);
        let got = read_back(fixed, &files);
        for (f, good) in files.iter().zip(got) {
            if good == f.bytes.len() as u64 {
                continue;
            }
            // The file, or a directory on its path, lost its inode record or its name.
            let path = damage_map::show(&f.path);
            let named = f.chain.iter().any(|inum| {
                r.findings.iter().any(|x| {
                    x.what.starts_with(&format!("lost name: inode {inum} "))
                        || (x.what.starts_with("lost file: ")
                            && x.what.contains(&format!("(inode {inum})")))
                })
            });
            assert!(
                named,
                "{} block {}: {path} is not readable and not reported: {:#?}",
                b.tree.name(),
                b.block,
                r.findings
            );
            reported_any = true;
        }
    }
    assert!(reported_any, "no leaf loss was ever reported");
}
