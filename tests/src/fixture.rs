//! Fixtures for the engine-level integration tests (`tests/*.rs`): an in-memory device
//! formatted by the engine's mkfs with fixed parameters, a mount of it, the callers the
//! tests act as and the fsck every story ends with.
//!
//! The parameters are fixed so that every run builds the same image: block size and count
//! as the test asks, label [`LABEL`], UUID [`UUID`], hash seed [`HASH_SEED`], creation time
//! [`NOW`], root directory owned by uid 0, gid 0. A test that needs another value takes
//! [`mkfs_params`] and changes that field.

use std::sync::Arc;

use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::format::inode::Timestamp;
use tuxfs_engine::fs::{Caller, Filesystem, MountOptions};
use tuxfs_engine::mkfs::{MkfsParams, format_device};
use tuxfs_fsck::{Mode, Options, Report, check};

/// The label [`mkfs_params`] gives.
pub const LABEL: &str = "tuxfs-test";
/// The UUID [`mkfs_params`] gives.
pub const UUID: [u8; 16] = [7; 16];
/// The directory hash seed [`mkfs_params`] gives.
pub const HASH_SEED: [u8; 16] = [5; 16];
/// The creation time [`mkfs_params`] gives (November 2025).
pub const NOW: Timestamp = Timestamp {
    sec: 1_763_000_000,
    nsec: 0,
};

/// The superuser (uid 0, gid 0) as a caller.
pub const SUPERUSER: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};
/// An ordinary user (uid 1000, gid 1000) as a caller.
pub const USER: Caller = Caller {
    uid: 1000,
    gid: 1000,
    pid: 1,
};

/// The fixed mkfs parameters (see the module documentation) for `block_count` blocks of
/// `block_size` bytes.
pub fn mkfs_params(block_size: u32, block_count: u64) -> MkfsParams {
    MkfsParams {
        block_size,
        block_count,
        label: LABEL.into(),
        uuid: UUID,
        hash_seed: HASH_SEED,
        now: NOW,
        uid: 0,
        gid: 0,
    }
}

/// A new in-memory device just large enough for `params`, formatted with them.
pub fn mem_device_with(params: &MkfsParams) -> Arc<MemDevice> {
    let dev = Arc::new(MemDevice::new(
        (u64::from(params.block_size) * params.block_count) as usize,
    ));
    format_device(dev.as_ref(), params, false).expect("mkfs");
    dev
}

/// A new in-memory device like [`mem_device`] whose superblock has the test-only incompat
/// feature `CONSTANT_NAME_HASH`: every directory name hashes to 0, so every name of a
/// directory collides with every other (mkfs.tuxfs never makes such a filesystem).
pub fn mem_device_constant_hash(block_size: u32, block_count: u64) -> Arc<MemDevice> {
    let params = mkfs_params(block_size, block_count);
    let dev = Arc::new(MemDevice::new(
        (u64::from(params.block_size) * params.block_count) as usize,
    ));
    let incompat = tuxfs_engine::format::superblock::IncompatFeatures::CONSTANT_NAME_HASH.bits();
    tuxfs_engine::mkfs::format_device_with_incompat(dev.as_ref(), &params, false, incompat)
        .expect("mkfs");
    dev
}

/// A new in-memory device of `block_count` blocks of `block_size` bytes, formatted with
/// [`mkfs_params`].
pub fn mem_device(block_size: u32, block_count: u64) -> Arc<MemDevice> {
    mem_device_with(&mkfs_params(block_size, block_count))
}

/// Mounts `dev` with `opts`; panics when the mount fails.
pub fn mount(dev: &Arc<MemDevice>, opts: MountOptions) -> Arc<Filesystem> {
    Filesystem::mount(dev.clone() as Arc<dyn BlockDevice>, opts).expect("mount")
}

/// Mounts `dev` with the default options; panics when the mount fails.
pub fn mount_default(dev: &Arc<MemDevice>) -> Arc<Filesystem> {
    mount(dev, MountOptions::default())
}

/// Checks `dev` with fsck (data included, nothing repaired); panics unless it is clean.
pub fn fsck_clean(dev: &dyn BlockDevice) -> Report {
    let report = check(
        dev,
        &Options {
            mode: Mode::Check,
            check_data: true,
        },
    )
    .expect("fsck runs");
    assert_eq!(
        report.exit_code(),
        0,
        "fsck findings: {:#?}\nnotes: {:?}",
        report.findings,
        report.notes
    );
    report
}
