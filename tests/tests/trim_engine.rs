//! Story: a file image gets a large file, which is then deleted. FITRIM through the engine
//! (`Filesystem::trim`) punches the freed blocks out of the image file, so its allocated
//! size comes back to about what is in use, while the file that stays reads back intact
//! and fsck is clean. With the `discard` mount option the same happens without a trim, once
//! the delete's delta is durable. Run on both device kinds (pread/pwrite and io_uring).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use tuxfs_engine::dev::{BlockDevice, DeviceKind, OpenOptions, open_file};
use tuxfs_engine::fs::{Caller, Filesystem, MountOptions};
use tuxfs_engine::mkfs::format_device;
use tuxfs_tests::fixture::{self, mkfs_params};

const ROOT: u64 = 1;
const MIB: u64 = 1 << 20;
const BIG: usize = 48 << 20;

fn open(path: &Path, kind: DeviceKind) -> Arc<dyn BlockDevice> {
    Arc::from(
        open_file(
            path,
            &OpenOptions {
                kind,
                ..OpenOptions::default()
            },
        )
        .expect("open image"),
    )
}

/// A scratch directory of this test process, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tuxfs-trim-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
    fn path(&self) -> std::path::PathBuf {
        self.0.join("img")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mkfs(path: &Path) {
    let dev = open_file(
        path,
        &OpenOptions {
            kind: DeviceKind::Sync,
            create_size: Some(128 * MIB),
            ..OpenOptions::default()
        },
    )
    .expect("create image");
    format_device(dev.as_ref(), &mkfs_params(4096, 128 * MIB / 4096), false).expect("mkfs");
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").blocks() * 512
}

fn fsck_clean(path: &Path) {
    fixture::fsck_clean(open(path, DeviceKind::Sync).as_ref());
}

/// Makes a 128 MiB image with a kept 1 MiB file and a deleted 48 MiB one; returns the
/// mounted filesystem (the delete durable) and the allocated size before the delete.
fn write_and_delete(path: &Path, kind: DeviceKind, discard: bool) -> (Arc<Filesystem>, u64) {
    mkfs(path);
    let fs = Filesystem::mount(
        open(path, kind),
        MountOptions {
            discard,
            ..MountOptions::default()
        },
    )
    .expect("mount");
    let keep = fs
        .create(ROOT, b"keep", 0o644, Caller::default())
        .expect("create");
    fs.write(keep.ino, 0, &[7u8; MIB as usize], false)
        .expect("write");
    let big = fs
        .create(ROOT, b"big", 0o644, Caller::default())
        .expect("create");
    for (i, chunk) in vec![0x5au8; BIG].chunks(MIB as usize).enumerate() {
        fs.write(big.ino, i as u64 * MIB, chunk, false)
            .expect("write");
    }
    // create opened both files; close them so the delete frees at once.
    fs.release(keep.ino).expect("release");
    fs.release(big.ino).expect("release");
    fs.sync().expect("sync");
    let full = allocated(path);
    assert!(full > BIG as u64, "the image holds the file: {full}");
    fs.unlink(ROOT, b"big").expect("unlink");
    if discard {
        // The option discards once the delete's delta is durable; trim commits by itself.
        fs.sync().expect("sync the delete");
    }
    (fs, full)
}

fn check_kept_and_clean(fs: Arc<Filesystem>, path: &Path) {
    let keep = fs.lookup(ROOT, b"keep").expect("lookup");
    assert_eq!(
        fs.read(keep.ino, 0, MIB as u32).expect("read"),
        vec![7u8; MIB as usize]
    );
    fs.unmount().expect("unmount");
    fsck_clean(path);
}

#[test]
fn fitrim_gives_freed_space_back_to_the_image_file() {
    for kind in [DeviceKind::Sync, DeviceKind::Auto] {
        let dir = Scratch::new(&format!("fitrim-{kind:?}"));
        let path = dir.path();
        let (fs, full) = write_and_delete(&path, kind, false);
        let before = allocated(&path);
        assert!(
            before + 8 * MIB > full,
            "without trim nothing shrinks: {before} vs {full}"
        );
        let trimmed = fs.trim(0, u64::MAX, 0).expect("trim");
        assert!(trimmed >= BIG as u64, "trimmed {trimmed}");
        let after = allocated(&path);
        assert!(
            after + (BIG as u64) <= before + 4 * MIB,
            "{kind:?}: allocated {before} -> {after} after trimming {trimmed}"
        );
        // A second trim finds the same free runs (they are free) and punches nothing new.
        fs.trim(0, u64::MAX, 0).expect("trim again");
        // A range and a minimum length are honoured: nothing in the first 4 KiB.
        assert_eq!(fs.trim(0, 4096 * 2, 0).expect("trim the superblocks"), 0);
        check_kept_and_clean(fs, &path);
    }
}

#[test]
fn the_discard_option_punches_frees_once_durable() {
    let dir = Scratch::new("discard");
    let path = dir.path();
    let (fs, full) = write_and_delete(&path, DeviceKind::Auto, true);
    let after = allocated(&path);
    assert!(
        after + (BIG as u64) <= full + 4 * MIB,
        "discard: allocated {full} -> {after}"
    );
    check_kept_and_clean(fs, &path);
}

#[test]
fn a_read_only_mount_refuses_trim() {
    let dir = Scratch::new("ro");
    let path = dir.path();
    let (fs, _) = write_and_delete(&path, DeviceKind::Sync, false);
    fs.unmount().expect("unmount");
    let dev: Arc<dyn BlockDevice> = Arc::from(
        open_file(
            &path,
            &OpenOptions {
                read_only: true,
                ..OpenOptions::default()
            },
        )
        .expect("open"),
    );
    let ro = Filesystem::mount(
        dev,
        MountOptions {
            read_only: true,
            ..MountOptions::default()
        },
    )
    .expect("mount ro");
    let err = ro.trim(0, u64::MAX, 0).expect_err("read-only");
    assert_eq!(err.errno(), tuxfs_engine::Errno::ReadOnly);
    ro.unmount().expect("unmount");
}
