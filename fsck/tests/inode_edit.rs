//! Helpers for fsck tests that damage one inode record so that the leaf still verifies:
//! rewrite the record and re-seal its leaf, then judge the image with `fsck.tuxfs`.

#![allow(dead_code)]

use std::process::Command;

use tuxfs_engine::format::TreeId;
use tuxfs_engine::format::btree::Leaf;
use tuxfs_engine::format::inode::Inode;

use crate::damage_map;

/// Block size of the images these helpers edit.
const BS: u32 = 4096;

/// Rewrites inode `inum`'s record with `edit` in the inode-table leaf holding it, and
/// re-seals the leaf so that its checksum and structure verify. Returns the leaf block.
pub fn edit_inode(image: &mut [u8], inum: u64, edit: impl Fn(&mut Inode)) -> u64 {
    let fs_id = damage_map::superblock(image).fs_id();
    for tb in damage_map::tree_blocks(image) {
        if tb.tree != TreeId::Inodes || tb.level != 0 {
            continue;
        }
        let at = tb.block as usize * BS as usize;
        let block = image[at..at + BS as usize].to_vec();
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
        Leaf::encode(&mut image[at..at + BS as usize], &leaf.header, &entries);
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
