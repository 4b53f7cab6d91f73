//! Story: a file's extended attributes outgrew its inode record and spilled into a chain
//! of spill blocks. An image with such chains is clean, and fsck counts their blocks as
//! used. Then one spill block is flipped on disk: `fsck.tuxfs -n` reports it naming the
//! inode and the block (exit 4); `-y` drops the damaged chain, reports the file's path and
//! the attributes it lost (exit 1), keeps the attributes in the record, and the image is
//! then clean and mounts. A spilled ACL that breaks the ACL rules (a default ACL on a
//! file) is found as an inline one is.

mod common;

use std::sync::Arc;

use tuxfs_engine::Errno;
use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::format::xattr::{
    SpillReader, XattrBlock, XattrEntry, encode_spill_chain, spill_chain_blocks, spill_stream_len,
};
use tuxfs_engine::fs::{Caller, Filesystem, MountOptions, XattrFlags};
use tuxfs_engine::mkfs::format_device;

const ROOT: u64 = 1;
/// An ordinary user: the owner of the files.
const ME: Caller = Caller {
    uid: 1000,
    ..Caller::SUPERUSER
};
const BS: u32 = 4096;

fn mount(image: Vec<u8>) -> Arc<Filesystem> {
    Filesystem::mount(
        Arc::new(MemDevice::from_bytes(image)) as Arc<dyn BlockDevice>,
        MountOptions::default(),
    )
    .expect("mount")
}

/// A cleanly unmounted image with `/d/f`: `user.keep` in its record, then small spilled
/// names and a 30,000-byte value in its chain. Returns it with f's inode number.
fn image() -> (Vec<u8>, u64) {
    let dev = Arc::new(MemDevice::new((BS * 1024) as usize));
    format_device(dev.as_ref(), &common::params(BS, 1024), false).expect("mkfs");
    let fs = Filesystem::mount(dev.clone() as Arc<dyn BlockDevice>, MountOptions::default())
        .expect("mount");
    let d = fs.mkdir(ROOT, b"d", 0o755, ME).expect("mkdir").ino;
    let f = fs.create(d, b"f", 0o644, ME).expect("create").ino;
    fs.release(f).expect("release");
    let set = |name: &[u8], value: &[u8]| {
        fs.setxattr(f, name, value, XattrFlags::default())
            .expect("setxattr")
    };
    set(b"user.keep", b"kept");
    set(b"user.fill", &[7; 1500]);
    set(b"user.first", &[1; 3000]);
    set(b"user.second", &[2; 100]);
    set(b"user.big", &[3; 30_000]);
    fs.unmount().expect("unmount");
    (dev.snapshot(), f)
}

/// Blocks of `image` that are spill blocks (magic "TXXA"), in block order.
fn spill_blocks(image: &[u8]) -> Vec<u64> {
    image
        .chunks(BS as usize)
        .enumerate()
        .filter(|(_, b)| b.starts_with(b"TXXA"))
        .map(|(i, _)| i as u64)
        .collect()
}

/// fsck.tuxfs `flag` on `path`: exit code and everything it printed.
fn fsck(args: &[&str], path: &std::path::Path) -> (i32, String) {
    let path = path.to_str().expect("UTF-8 path");
    let (code, out, err) = common::fsck(&[args, &[path]].concat());
    assert!(!err.contains("panicked"), "{err}");
    (code, out + &err)
}

#[test]
fn spill_chains_are_clean_and_counted() {
    let (image, _) = image();
    let spill = spill_blocks(&image);
    assert!(spill.len() >= 8, "the chain has {} blocks", spill.len());
    let report = tuxfs_fsck::check(
        &MemDevice::from_bytes(image),
        &tuxfs_fsck::Options {
            mode: tuxfs_fsck::Mode::Check,
            check_data: true,
        },
    )
    .expect("fsck runs");
    assert_eq!(report.exit_code(), 0, "{:#?}", report.findings);
    assert_eq!(report.stats.xattr_blocks, spill.len() as u64);
}

#[test]
fn a_flipped_spill_block_is_found_and_dropped_reporting_what_was_lost() {
    let (mut image, f) = image();
    let spill = spill_blocks(&image);
    // The chain is allocated in order: its fourth block is inside user.big's value, after
    // the small spilled entries.
    let victim = spill[3];
    image[victim as usize * BS as usize + 2000] ^= 0x04;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fs.img");
    std::fs::write(&path, &image).expect("write image");
    let (code, out) = fsck(&["-n"], &path);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(&format!("inode {f}")) && out.contains(&format!("block {victim}")),
        "the finding does not name inode {f} and block {victim}:\n{out}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), image, "fsck -n wrote");
    let (code, out) = fsck(&["-y"], &path);
    assert_eq!(code, 1, "{out}");
    let lost = out
        .lines()
        .find(|l| l.contains("lost xattrs: /d/f"))
        .unwrap_or_else(|| panic!("no report of the lost attributes:\n{out}"));
    assert!(
        lost.contains(&format!("inode {f}")) && lost.contains(&format!("block {victim}")),
        "{lost}"
    );
    assert!(
        lost.contains("user.first") && lost.contains("spilled attributes in all"),
        "{lost}"
    );
    let (code, out) = fsck(&["-n"], &path);
    assert_eq!(code, 0, "{out}");
    let fs = mount(std::fs::read(&path).unwrap());
    assert_eq!(fs.getxattr(f, b"user.keep").unwrap(), b"kept");
    let err = fs.getxattr(f, b"user.big").unwrap_err();
    assert_eq!(err.errno(), Errno::NoData);
    // The file takes new attributes again (a new chain).
    fs.setxattr(f, b"user.big", &[4; 20_000], XattrFlags::default())
        .expect("setxattr after repair");
    fs.unmount().unwrap();
}

/// The blocks of inode `inum`'s newest spill chain in `image`, in chain order, with the
/// filesystem id.
fn chain_of(image: &[u8], inum: u64) -> (Vec<u64>, u64, Vec<XattrBlock>) {
    let fs_id = tuxfs_engine::format::Superblock::decode(&image[..BS as usize], 0)
        .expect("superblock")
        .fs_id();
    let mut found: Vec<(u64, XattrBlock)> = spill_blocks(image)
        .into_iter()
        .filter_map(|b| {
            let at = b as usize * BS as usize;
            XattrBlock::decode(&image[at..at + BS as usize], b, inum, fs_id)
                .ok()
                .map(|x| (b, x))
        })
        .collect();
    let newest = found.iter().map(|(_, x)| x.header.delta).max().unwrap_or(0);
    found.retain(|(_, x)| x.header.delta == newest);
    found.sort_by_key(|(_, x)| x.piece.index);
    let blocks = found.iter().map(|(b, _)| *b).collect();
    (blocks, fs_id, found.into_iter().map(|(_, x)| x).collect())
}

#[test]
fn a_default_acl_spilled_on_a_file_is_found() {
    use tuxfs_engine::format::acl::{
        ACL_GROUP_OBJ, ACL_OTHER, ACL_UNDEFINED_ID as U, ACL_USER_OBJ, AclEntry, XATTR_ACL_DEFAULT,
        encode,
    };
    let (mut image, f) = image();
    let (blocks, fs_id, decoded) = chain_of(&image, f);
    let stream: Vec<u8> = decoded.iter().flat_map(|x| x.bytes.clone()).collect();
    let mut reader = SpillReader::new(f, fs_id, blocks[0]);
    for &b in &blocks {
        let at = b as usize * BS as usize;
        reader
            .push(&image[at..at + BS as usize])
            .expect("chain block");
    }
    let mut entries = reader.finish(BS).expect("chain");
    assert!(stream.len() > 30_000);
    // A well-formed default ACL, which only directories may have, replaces part of a value.
    let e = |tag, perm| AclEntry { tag, perm, id: U };
    let acl = encode(&[e(ACL_USER_OBJ, 7), e(ACL_GROUP_OBJ, 5), e(ACL_OTHER, 5)]);
    let big = entries
        .iter_mut()
        .find(|x| x.name == b"user.big")
        .expect("big");
    big.value.truncate(big.value.len() - 200);
    entries.push(XattrEntry {
        name: XATTR_ACL_DEFAULT.to_vec(),
        value: acl,
    });
    let n = spill_chain_blocks(spill_stream_len(&entries), BS);
    let delta = decoded[0].header.delta;
    for (b, bytes) in blocks.iter().zip(encode_spill_chain(
        &entries,
        &blocks[..n],
        f,
        delta,
        fs_id,
        BS,
    )) {
        let at = *b as usize * BS as usize;
        image[at..at + BS as usize].copy_from_slice(&bytes);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fs.img");
    std::fs::write(&path, &image).expect("write image");
    let (code, out) = fsck(&["-n"], &path);
    assert_eq!(code, 4, "{out}");
    let want = format!(
        "block {}: inode {f}: spilled system.posix_acl_default: a default ACL on a non-directory",
        blocks[0]
    );
    assert!(out.contains(&want), "no {want:?} in:\n{out}");
    let (code, out) = fsck(&["-y"], &path);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("lost xattrs: /d/f"), "{out}");
    let (code, out) = fsck(&["-n"], &path);
    assert_eq!(code, 0, "{out}");
}
