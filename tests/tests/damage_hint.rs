//! Story: an image was in use with a file unlinked while open when the power went. At the
//! next mount the engine destroys that orphan, and on the way meets a leaf the disk has
//! damaged since. Recovery itself succeeded, but the mount must still fail with an error
//! that names the block and tells the user to run fsck.tuxfs, as every damage error at
//! mount does.

use std::sync::Arc;

use tuxfs_engine::Error;
use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::format::header::{Kind, peek_kind};
use tuxfs_engine::fs::{Filesystem, MountOptions, XattrFlags};
use tuxfs_engine::recovery::FSCK_HINT;
use tuxfs_tests::fixture::{self, SUPERUSER as ME, mem_device};

const ROOT: u64 = 1;
const BS: usize = 4096;
/// An xattr value found in the orphan's inode leaf and nowhere else.
const MARKER: &[u8] = b"orphan-marker-5f3a9c71e2d84b06";

/// An image left as a crash leaves it, with one orphan (unlinked while open, durable).
fn image_with_orphan() -> Vec<u8> {
    let dev = mem_device(BS as u32, 2048);
    // Every commit unifies, so the orphan's leaf is written in place, not through the log
    // (damage to a logged leaf makes recovery drop its delta instead).
    let opts = MountOptions {
        unify_log_blocks: 1,
        ..MountOptions::default()
    };
    let fs = fixture::mount(&dev, opts);
    let o = fs.create(ROOT, b"orphan", 0o644, ME).expect("create").ino;
    fs.write(o, 0, &[9; 3 * BS], false).expect("write");
    fs.setxattr(o, b"user.marker", MARKER, XattrFlags::default())
        .expect("setxattr");
    fs.unlink(ROOT, b"orphan").expect("unlink");
    fs.sync().expect("sync");
    // No unmount and no release: the open file stays on the orphan list.
    drop(fs);
    dev.snapshot()
}

/// Flips one byte of the marker in every leaf that holds it (the checksum then fails).
fn damage_orphan_leaf(image: &mut [u8]) -> usize {
    let mut damaged = 0;
    for block in image.chunks_mut(BS) {
        if peek_kind(block) != Some(Kind::BtreeLeaf) {
            continue;
        }
        if let Some(at) = block.windows(MARKER.len()).position(|w| w == MARKER) {
            block[at + 3] ^= 0x40;
            damaged += 1;
        }
    }
    damaged
}

#[test]
fn damage_met_while_destroying_orphans_at_mount_tells_to_run_fsck() {
    let mut image = image_with_orphan();
    // The undamaged image mounts (the orphan is destroyed).
    let fs = Filesystem::mount(
        Arc::new(MemDevice::from_bytes(image.clone())) as Arc<dyn BlockDevice>,
        MountOptions::default(),
    )
    .expect("undamaged image mounts");
    assert_eq!(fs.stats().orphans_destroyed, 1);
    fs.unmount().unwrap();

    assert!(
        damage_orphan_leaf(&mut image) > 0,
        "no leaf holds the marker"
    );
    let Err(err) = Filesystem::mount(
        Arc::new(MemDevice::from_bytes(image.clone())) as Arc<dyn BlockDevice>,
        MountOptions::default(),
    ) else {
        panic!("mount of a damaged image succeeded");
    };
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Corrupt { .. }),
        "not reported as damage: {msg}"
    );
    assert!(msg.contains(FSCK_HINT), "no fsck hint: {msg}");
    assert!(msg.contains("block"), "no block named: {msg}");
}
