//! Opening a tuxfs image the way a mount uses it: O_DIRECT where it works.
//!
//! [`open_image`] opens the image with [`crate::dev::open_file`] and, when O_DIRECT is in
//! force, checks the filesystem's block size against the alignment direct I/O needs on the
//! host file or device ([`BlockDevice::alignment`]): every request of the engine is whole
//! blocks at block offsets, so a block size that is not a multiple of the alignment (a
//! 1 KiB-block image on a disk of 4 KiB sectors) cannot be read or written that way. Such
//! an image is opened again without O_DIRECT, with one logged line, rather than refused.
//! [`Filesystem::mount`](super::Filesystem::mount) refuses the combination itself, so a
//! device opened some other way fails with a clear error instead of at its first request.

use std::path::Path;

use crate::Result;
use crate::dev::{BlockDevice, OpenOptions, open_file};
use crate::events::{Level, report};

/// Opens `path` with `opts`; under O_DIRECT, falls back to buffered I/O (and says so) when
/// the image's block size does not fit the alignment O_DIRECT needs there.
pub fn open_image(path: &Path, opts: &OpenOptions) -> Result<Box<dyn BlockDevice>> {
    let dev = open_file(path, opts)?;
    let align = dev.alignment();
    if align <= 1 {
        return Ok(dev);
    }
    // Not a tuxfs image (or a damaged one): the mount that follows says what is wrong.
    let Ok((sb, _)) = crate::recovery::read_superblock(dev.as_ref()) else {
        return Ok(dev);
    };
    if block_size_fits(sb.block_size, align) {
        return Ok(dev);
    }
    report(
        Level::Warning,
        &format!(
            "{}: block size {} is not a multiple of the {align}-byte alignment O_DIRECT needs \
             there; using buffered I/O",
            path.display(),
            sb.block_size
        ),
    );
    drop(dev);
    let buffered = OpenOptions {
        direct: false,
        ..opts.clone()
    };
    open_file(path, &buffered)
}

/// True when whole blocks of `block_size` at block offsets satisfy an I/O alignment of
/// `align` bytes.
pub(crate) fn block_size_fits(block_size: u32, align: usize) -> bool {
    align <= 1 || (block_size as usize).is_multiple_of(align)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::mem::MemDevice;
    use crate::format::inode::Timestamp;
    use crate::fs::{Filesystem, MountOptions};
    use crate::mkfs::{MkfsParams, format_device};
    use crate::sync::Arc;

    #[test]
    fn fits() {
        assert!(block_size_fits(1024, 512));
        assert!(block_size_fits(4096, 4096));
        assert!(block_size_fits(65536, 4096));
        assert!(block_size_fits(1024, 1));
        assert!(!block_size_fits(1024, 4096));
        assert!(!block_size_fits(2048, 4096));
    }

    fn params(block_size: u32, block_count: u64) -> MkfsParams {
        MkfsParams {
            block_size,
            block_count,
            label: String::new(),
            uuid: [1; 16],
            hash_seed: [2; 16],
            now: Timestamp::default(),
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn an_image_mounts_and_round_trips_under_o_direct_at_each_block_size() {
        // Block sizes from 1 KiB to 64 KiB, on an image with a tail shorter than the
        // alignment: mount-time reads, commits and a remount all go through O_DIRECT.
        let dir = tempfile::tempdir().expect("tempdir");
        for bs in [1024u32, 4096, 65536] {
            let path = dir.path().join(format!("img-{bs}"));
            let bytes = 16u64 << 20;
            let plain = OpenOptions {
                create_size: Some(bytes + 100),
                ..OpenOptions::default()
            };
            let dev = open_file(&path, &plain).expect("create");
            format_device(dev.as_ref(), &params(bs, bytes / u64::from(bs)), false).expect("mkfs");
            drop(dev);
            let direct = OpenOptions {
                direct: true,
                ..OpenOptions::default()
            };
            let dev = open_image(&path, &direct).expect("open");
            if dev.alignment() == 1 {
                println!("skipped: {} gives no O_DIRECT", dir.path().display());
                return;
            }
            assert!(format!("{dev:?}").contains("direct: true"), "{dev:?}");
            let data: Vec<u8> = (0..(3 << 20) + 777).map(|i: u32| (i % 249) as u8).collect();
            let fs = Filesystem::mount(Arc::from(dev), MountOptions::default()).expect("mount");
            let f = fs
                .create(1, b"f", 0o644, crate::fs::Caller::default())
                .expect("create");
            fs.write(f.ino, 0, &data, false).expect("write");
            fs.unmount().expect("unmount");
            drop(fs);
            let dev = open_image(&path, &direct).expect("reopen");
            let fs = Filesystem::mount(Arc::from(dev), MountOptions::default()).expect("remount");
            assert!(
                fs.read(f.ino, 0, 8 << 20).expect("read") == data,
                "block size {bs}"
            );
            fs.unmount().expect("unmount");
        }
    }

    #[test]
    fn mount_refuses_blocks_smaller_than_the_alignment() {
        let params = params(1024, 8192);
        let mem = MemDevice::new(8 << 20);
        format_device(&mem, &params, false).expect("mkfs");
        // As a disk of 4 KiB sectors under O_DIRECT.
        let dev = Arc::new(mem.with_alignment(4096));
        let err = Filesystem::mount(dev, MountOptions::default()).expect_err("must refuse");
        let msg = err.to_string();
        assert!(
            msg.contains("block size 1024") && msg.contains("4096"),
            "{msg}"
        );
    }
}
