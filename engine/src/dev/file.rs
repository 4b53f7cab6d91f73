//! Opening an image file or a block device as a [`BlockDevice`].
//!
//! [`open_file`] picks the implementation: io_uring when the kernel allows it, pread/pwrite
//! otherwise ([`DeviceKind::Auto`]), or the one asked for. Both share a [`Backing`]: the open
//! file, its size, and the alignment O_DIRECT imposes. The device's `Debug` output names the
//! implementation and whether O_DIRECT is in force, so callers can log what they got.
//!
//! **O_DIRECT and its alignment.** A regular file gets O_DIRECT only when its filesystem
//! says how direct I/O must be aligned (`statx` with `STATX_DIOALIGN`, Linux 6.1 and
//! later): the device's alignment is then the larger of the offset and memory alignments
//! it reports (512 on ext4 over a virtio disk). A filesystem that refuses O_DIRECT at open
//! (EINVAL), or accepts it without reporting an alignment (tmpfs, whose "direct" I/O is a
//! copy through its page cache anyway), or asks for a memory alignment larger than
//! [`BUF_ALIGN`] gets buffered I/O and one logged line. A block device's alignment is its
//! logical sector size.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::buf::BUF_ALIGN;
use super::sync::SyncDevice;
use super::uring::UringDevice;
use super::{BlockDevice, check_range};
use crate::{Error, Result};

/// Which implementation [`open_file`] should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// io_uring if a ring can be created, else pread/pwrite with a one-line notice.
    #[default]
    Auto,
    /// io_uring or an error.
    Uring,
    /// pread/pwrite.
    Sync,
}

/// How to open a device.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Open with O_DIRECT (falls back to buffered I/O, with a notice, where refused).
    pub direct: bool,
    /// io_uring requests kept in flight at most.
    pub queue_depth: u32,
    /// Which implementation to use.
    pub kind: DeviceKind,
    /// Refuse writes, flushes and discards.
    pub read_only: bool,
    /// Create the image file if it does not exist and grow it to at least this many bytes.
    /// An existing larger file is left alone: shrinking would destroy data.
    pub create_size: Option<u64>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            direct: false,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            kind: DeviceKind::Auto,
            read_only: false,
            create_size: None,
        }
    }
}

/// Queue depth when none is given: enough to keep an NVMe drive or a virtio disk busy.
pub const DEFAULT_QUEUE_DEPTH: u32 = 32;

// Block-device ioctls from <linux/fs.h>; the libc crate does not export them.
/// `_IOR(0x12, 114, size_t)`: device size in bytes.
const BLKGETSIZE64: libc::Ioctl = 0x8008_1272_u32 as libc::Ioctl;
/// `_IO(0x12, 104)`: logical sector size.
const BLKSSZGET: libc::Ioctl = 0x1268;
/// `_IO(0x12, 119)`: discard a byte range given as `[offset, len]`.
const BLKDISCARD: libc::Ioctl = 0x1277;

/// Opens `path` (a regular file or a block device) as a block device.
pub fn open_file(path: &Path, opts: &OpenOptions) -> Result<Box<dyn BlockDevice>> {
    let backing = Backing::open(path, opts)?;
    match opts.kind {
        DeviceKind::Sync => Ok(Box::new(SyncDevice::new(backing))),
        DeviceKind::Uring => Ok(Box::new(UringDevice::new(backing, opts.queue_depth)?)),
        DeviceKind::Auto => match UringDevice::probe(opts.queue_depth) {
            Ok(()) => Ok(Box::new(UringDevice::new(backing, opts.queue_depth)?)),
            Err(e) => {
                crate::events::report(
                    crate::events::Level::Warning,
                    &format!("io_uring unavailable ({e}); using pread/pwrite"),
                );
                Ok(Box::new(SyncDevice::new(backing)))
            }
        },
    }
}

/// An open image file or block device: what the uring and sync devices share.
#[derive(Debug)]
pub struct Backing {
    file: File,
    path: PathBuf,
    size: u64,
    alignment: usize,
    direct: bool,
    is_block: bool,
    read_only: bool,
}

impl Backing {
    /// Opens `path`, creating or growing it as `opts.create_size` asks.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Backing> {
        let (mut file, mut direct) = open_maybe_direct(path, opts)?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
        let is_block = meta.file_type().is_block_device();
        let mut file_align = 1;
        if direct && !is_block {
            match dio_alignment(&file) {
                Ok(align) => file_align = align,
                Err(why) => {
                    crate::events::report(
                        crate::events::Level::Warning,
                        &format!(
                            "O_DIRECT not usable on {} ({why}); using buffered I/O",
                            path.display()
                        ),
                    );
                    drop(file);
                    file = open_flags(path, opts, 0)
                        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
                    direct = false;
                }
            }
        }
        if !is_block && !opts.read_only {
            grow_to(&file, path, meta.len(), opts.create_size)?;
        }
        let (size, sector) = if is_block {
            block_geometry(&file, path)?
        } else {
            (file_len(&file, path)?, 1)
        };
        let alignment = match (direct, is_block) {
            (false, _) => 1,
            (true, true) => sector,
            (true, false) => file_align,
        };
        // O_DIRECT cannot reach a tail shorter than the alignment: the device ends before
        // it. No filesystem uses it (its blocks are multiples of the alignment).
        let size = size / alignment as u64 * alignment as u64;
        let path = path.to_path_buf();
        Ok(Backing {
            file,
            path,
            size,
            alignment,
            direct,
            is_block,
            read_only: opts.read_only,
        })
    }

    /// A backing over an already open `file`, trusting the caller about its mode. Tests
    /// use it to hand a device a read-only descriptor, so that the kernel itself fails
    /// every write (EBADF) and fail-stop can be checked against real errors.
    #[cfg(test)]
    pub(crate) fn from_open_file(file: File, path: &Path, size: u64) -> Backing {
        let path = path.to_path_buf();
        Backing {
            file,
            path,
            size,
            alignment: 1,
            direct: false,
            is_block: false,
            read_only: false,
        }
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Its raw descriptor, for io_uring.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes, fixed at open.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Alignment of offsets and lengths (1 without O_DIRECT).
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// True when O_DIRECT is in force.
    pub fn direct(&self) -> bool {
        self.direct
    }

    /// Validates a read before anything is submitted.
    pub fn check_read(&self, offset: u64, len: usize) -> Result<()> {
        check_range(self.size, self.alignment, offset, len)
    }

    /// Validates a write (or discard) before anything is submitted.
    pub fn check_write(&self, offset: u64, len: usize) -> Result<()> {
        if self.read_only {
            return Err(Error::invalid(format!(
                "{} is open read-only",
                self.path.display()
            )));
        }
        check_range(self.size, self.alignment, offset, len)
    }

    /// Makes completed writes durable (fdatasync).
    pub fn datasync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io(format!("fdatasync {}", self.path.display()), e))
    }

    /// Punches a hole (files) or discards the range (block devices). A device that cannot
    /// do this (EOPNOTSUPP) is left as is: discarding is a hint, never needed for correctness.
    pub fn discard(&self, offset: u64, len: u64) -> Result<()> {
        let len_usize = usize::try_from(len).map_err(|_| Error::invalid("discard length"))?;
        self.check_write(offset, len_usize)?;
        let res = if self.is_block {
            self.blk_discard(offset, len)
        } else {
            self.punch_hole(offset, len)
        };
        match res {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
            Err(e) => Err(Error::io(
                format!("discarding {len} bytes at offset {offset}"),
                e,
            )),
            Ok(()) => Ok(()),
        }
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        let (off, len) = (to_off_t(offset)?, to_off_t(len)?);
        // SAFETY: fallocate takes no pointers; the descriptor is owned by self.file.
        let rc = unsafe { libc::fallocate(self.fd(), mode, off, len) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn blk_discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let range: [u64; 2] = [offset, len];
        // SAFETY: BLKDISCARD reads two u64 through the pointer, which points at a live local.
        let rc = unsafe { libc::ioctl(self.fd(), BLKDISCARD, range.as_ptr()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

fn to_off_t(v: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(v).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))
}

/// Opens with O_DIRECT when asked; a file system that refuses it (tmpfs: EINVAL) gets
/// buffered I/O and a one-line notice rather than a failure, so tests run anywhere.
fn open_maybe_direct(path: &Path, opts: &OpenOptions) -> Result<(File, bool)> {
    let ctx = || format!("opening {}", path.display());
    if !opts.direct {
        return Ok((
            open_flags(path, opts, 0).map_err(|e| Error::io(ctx(), e))?,
            false,
        ));
    }
    match open_flags(path, opts, libc::O_DIRECT) {
        Ok(file) => Ok((file, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            crate::events::report(
                crate::events::Level::Warning,
                &format!(
                    "O_DIRECT refused on {} ({e}); using buffered I/O",
                    path.display()
                ),
            );
            Ok((
                open_flags(path, opts, 0).map_err(|e| Error::io(ctx(), e))?,
                false,
            ))
        }
        Err(e) => Err(Error::io(ctx(), e)),
    }
}

/// The alignment direct I/O on `file` needs (offsets, lengths and buffer addresses), from
/// `statx(STATX_DIOALIGN)`; why not, when its filesystem does not report one or it is more
/// than the device buffers give ([`BUF_ALIGN`]).
fn dio_alignment(file: &File) -> std::result::Result<usize, String> {
    // SAFETY: statx is plain old data; all-zero bytes are a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let empty = c"";
    // SAFETY: the path is a valid NUL-terminated string, the descriptor is owned by `file`
    // and `stx` is a live local the kernel fills.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 {
        return Err(format!("statx: {}", io::Error::last_os_error()));
    }
    dio_alignment_of(
        stx.stx_mask & libc::STATX_DIOALIGN != 0,
        stx.stx_dio_mem_align,
        stx.stx_dio_offset_align,
    )
}

/// The decision of [`dio_alignment`] from what statx reported.
fn dio_alignment_of(
    reported: bool,
    mem_align: u32,
    offset_align: u32,
) -> std::result::Result<usize, String> {
    if !reported || offset_align == 0 || mem_align == 0 {
        return Err("its filesystem reports no direct-I/O alignment".into());
    }
    let align = mem_align.max(offset_align) as usize;
    if !align.is_power_of_two() || align > BUF_ALIGN {
        return Err(format!(
            "it needs {align}-byte alignment, device buffers have {BUF_ALIGN}"
        ));
    }
    Ok(align)
}

fn open_flags(path: &Path, opts: &OpenOptions, flags: i32) -> io::Result<File> {
    let create = opts.create_size.is_some() && !opts.read_only;
    std::fs::OpenOptions::new()
        .read(true)
        .write(!opts.read_only)
        .create(create)
        .custom_flags(flags)
        .open(path)
}

fn grow_to(file: &File, path: &Path, len: u64, want: Option<u64>) -> Result<()> {
    match want {
        Some(want) if want > len => file
            .set_len(want)
            .map_err(|e| Error::io(format!("growing {} to {want} bytes", path.display()), e)),
        _ => Ok(()),
    }
}

fn file_len(file: &File, path: &Path) -> Result<u64> {
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    Ok(meta.len())
}

/// Size in bytes and logical sector size of a block device.
fn block_geometry(file: &File, path: &Path) -> Result<(u64, usize)> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at a live local.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) };
    if rc != 0 {
        return Err(Error::io(
            format!("BLKGETSIZE64 on {}", path.display()),
            io::Error::last_os_error(),
        ));
    }
    let mut sector: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points at a live local.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKSSZGET, &mut sector as *mut libc::c_int) };
    if rc != 0 {
        return Err(Error::io(
            format!("BLKSSZGET on {}", path.display()),
            io::Error::last_os_error(),
        ));
    }
    let sector = usize::try_from(sector).ok().filter(|s| s.is_power_of_two());
    let sector =
        sector.ok_or_else(|| Error::invalid(format!("{}: bad sector size", path.display())))?;
    Ok((size, sector))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::{AlignedBuf, read_at, write_at};

    #[test]
    fn create_size_creates_and_grows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("img");
        let opts = OpenOptions {
            create_size: Some(1 << 20),
            ..OpenOptions::default()
        };
        let dev = open_file(&path, &opts).expect("open");
        assert_eq!(dev.size_bytes(), 1 << 20);
        write_at(&*dev, 4096, AlignedBuf::from_slice(&[7; 4096])).expect("write");
        dev.flush().expect("flush");
        drop(dev);
        let opts = OpenOptions {
            kind: DeviceKind::Sync,
            read_only: true,
            ..OpenOptions::default()
        };
        let dev = open_file(&path, &opts).expect("reopen");
        assert_eq!(read_at(&*dev, 4096, 4096).expect("read")[..], [7; 4096]);
        assert!(
            write_at(&*dev, 0, AlignedBuf::zeroed(512)).is_err(),
            "read-only must refuse writes"
        );
    }

    #[test]
    fn debug_names_the_kind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("img");
        for (kind, name) in [
            (DeviceKind::Sync, "SyncDevice"),
            (DeviceKind::Uring, "UringDevice"),
        ] {
            let opts = OpenOptions {
                kind,
                create_size: Some(65536),
                ..OpenOptions::default()
            };
            let dev = open_file(&path, &opts).expect("open");
            assert!(format!("{dev:?}").contains(name), "{dev:?}");
        }
    }

    #[test]
    fn direct_size_drops_an_unaligned_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("img");
        std::fs::write(&path, vec![3u8; (1 << 20) + 100]).expect("image");
        let direct = OpenOptions {
            direct: true,
            ..OpenOptions::default()
        };
        let dev = open_file(&path, &direct).expect("open");
        let align = dev.alignment() as u64;
        if align == 1 {
            println!("skipped: {} gives no O_DIRECT", dir.path().display());
            return;
        }
        assert_eq!(dev.size_bytes(), 1 << 20, "{dev:?}");
        let last = dev.size_bytes() - align;
        assert!(
            read_at(&*dev, last, align as usize).expect("last unit")[..]
                .iter()
                .all(|&b| b == 3)
        );
        assert!(read_at(&*dev, dev.size_bytes(), align as usize).is_err());
        drop(dev);
        let dev = open_file(&path, &OpenOptions::default()).expect("open buffered");
        assert_eq!(dev.size_bytes(), (1 << 20) + 100);
    }

    #[test]
    fn dio_alignment_decision() {
        assert_eq!(dio_alignment_of(true, 512, 512), Ok(512));
        assert_eq!(dio_alignment_of(true, 4, 4096), Ok(4096));
        assert_eq!(dio_alignment_of(true, 1024, 512), Ok(1024));
        // Not reported (tmpfs, kernels before 6.1), or zero: no direct I/O.
        assert!(dio_alignment_of(false, 512, 512).is_err());
        assert!(dio_alignment_of(true, 0, 0).is_err());
        assert!(dio_alignment_of(true, 512, 0).is_err());
        // More than device buffers are aligned to, or not a power of two.
        assert!(dio_alignment_of(true, 8192, 512).is_err());
        assert!(dio_alignment_of(true, 512, 3000).is_err());
    }

    #[test]
    fn discard_punches_a_hole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("img");
        let opts = OpenOptions {
            kind: DeviceKind::Sync,
            create_size: Some(1 << 20),
            ..OpenOptions::default()
        };
        let dev = open_file(&path, &opts).expect("open");
        write_at(&*dev, 0, AlignedBuf::from_slice(&[9; 65536])).expect("write");
        dev.discard(0, 65536).expect("discard");
        let back = read_at(&*dev, 0, 65536).expect("read");
        // A file system without hole punching keeps the data; both are correct.
        assert!(back.iter().all(|&b| b == 0) || back.iter().all(|&b| b == 9));
    }
}
