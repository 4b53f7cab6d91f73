//! The block device: the only module that does I/O.
//!
//! Everything above this module sees a [`BlockDevice`]: batched reads, asynchronous batched
//! writes whose buffers are shared (`Arc`) until their completion is reaped, and an explicit
//! flush barrier. The barrier is the only durability promise:
//!
//! **Invariant (flush covers only reaped writes).** `flush` first waits until every write
//! submitted before it has completed, and only then asks the device to make them durable.
//! io_uring does not order an `IORING_OP_FSYNC` after writes still in flight, so an
//! implementation that submitted the fsync without reaping would break the commit protocol.
//! The recording device models exactly this: a write is covered by a flush only if it was
//! submitted before the flush call.
//!
//! **Invariant (fail-stop).** After a write or flush fails, the device reports the error from
//! `wait_writes`/`flush` and refuses every later write and flush with
//! [`Error::DeviceFailed`]: the engine must never write a commit record over a failed write.
//!
//! Implementations:
//! - [`uring::UringDevice`]: io_uring, many requests in flight, optional O_DIRECT.
//! - [`sync::SyncDevice`]: pread/pwrite fallback where io_uring is unavailable.
//! - [`mem::MemDevice`]: an in-memory image, for tests.
//! - [`record::RecordingDevice`]: logs every write and flush in order; can produce the image
//!   as of any point of that log (crash tests).
//! - [`fault::FaultDevice`]: seeded EIO on read/write/flush, torn writes, loss of unflushed
//!   writes.

mod buf;
pub mod fault;
pub mod file;
pub mod mem;
pub mod record;
pub mod sync;
pub mod uring;

use std::sync::Arc;

use crate::Result;

pub use buf::AlignedBuf;
pub use file::{open_file, DeviceKind, OpenOptions};

/// One read: fill `buf` from byte `offset` of the device.
#[derive(Debug)]
pub struct ReadRequest<'a> {
    pub offset: u64,
    pub buf: &'a mut AlignedBuf,
}

/// One write of `data` at byte `offset`. The device holds `data` until the write completes
/// and drops its reference then: that drop is what releases a forked page, without polling.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub offset: u64,
    pub data: Arc<AlignedBuf>,
}

/// A block device: batched submission, asynchronous writes, explicit flush barrier.
pub trait BlockDevice: Send + Sync + std::fmt::Debug {
    /// Size of the device in bytes.
    fn size_bytes(&self) -> u64;

    /// Alignment in bytes that offsets, lengths and buffer addresses must have
    /// (512 or the logical sector size under O_DIRECT, 1 otherwise).
    fn alignment(&self) -> usize;

    /// Reads every request, submitting them together; returns when all have completed.
    /// A short read (past the end of the device) is an error naming the offset.
    fn read_batch(&self, reqs: &mut [ReadRequest<'_>]) -> Result<()>;

    /// Queues writes. May return before they complete. Errors of a queued write are reported
    /// by the next `wait_writes` or `flush`.
    fn submit_writes(&self, reqs: Vec<WriteRequest>) -> Result<()>;

    /// Waits until every write submitted so far has completed (its buffer reference dropped).
    /// Returns the first error since the last call, if any.
    fn wait_writes(&self) -> Result<()>;

    /// Barrier: waits for every submitted write to complete, then makes all of them durable.
    fn flush(&self) -> Result<()>;

    /// Tells the device that a byte range holds no data any more (mkfs `--discard`).
    /// Devices that cannot discard do nothing.
    fn discard(&self, _offset: u64, _len: u64) -> Result<()> {
        Ok(())
    }
}

/// Reads `len` bytes at `offset` into a fresh aligned buffer.
pub fn read_at(dev: &dyn BlockDevice, offset: u64, len: usize) -> Result<AlignedBuf> {
    let mut buf = AlignedBuf::zeroed(len);
    dev.read_batch(&mut [ReadRequest { offset, buf: &mut buf }])?;
    Ok(buf)
}

/// Writes `data` at `offset` and waits for the write to complete (not a flush).
pub fn write_at(dev: &dyn BlockDevice, offset: u64, data: AlignedBuf) -> Result<()> {
    dev.submit_writes(vec![WriteRequest { offset, data: Arc::new(data) }])?;
    dev.wait_writes()
}
