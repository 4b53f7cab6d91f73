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
//! - [`logwrites::LogWritesDevice`]: passes everything to another device and appends every
//!   write and flush to a log file, so crash images of a real mount can be rebuilt later
//!   with [`replay`] (the `tuxfs-replay` command).

mod buf;
pub mod fault;
pub mod file;
pub mod lock;
pub mod logwrites;
pub mod mem;
pub mod record;
pub mod replay;
pub mod sync;
#[cfg(test)]
mod tests;
pub mod uring;

use crate::sync::Arc;

use crate::Result;

pub use buf::AlignedBuf;
pub use file::{DeviceKind, OpenOptions, open_file};

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
    dev.read_batch(&mut [ReadRequest {
        offset,
        buf: &mut buf,
    }])?;
    Ok(buf)
}

/// Writes `data` at `offset` and waits for the write to complete (not a flush).
pub fn write_at(dev: &dyn BlockDevice, offset: u64, data: AlignedBuf) -> Result<()> {
    dev.submit_writes(vec![WriteRequest {
        offset,
        data: Arc::new(data),
    }])?;
    dev.wait_writes()
}

/// Checks that `len` bytes at `offset` lie inside a device of `size` bytes and respect
/// `align` (offset and length both multiples of it). Every device validates a whole batch
/// with this before it submits anything, so a malformed request never half-happens.
pub(crate) fn check_range(size: u64, align: usize, offset: u64, len: usize) -> Result<()> {
    let end = offset.checked_add(len as u64);
    if end.is_none_or(|end| end > size) {
        return Err(crate::Error::invalid(format!(
            "{len} bytes at offset {offset} go past the end of the device ({size} bytes)"
        )));
    }
    let align_u64 = align.max(1) as u64;
    if !offset.is_multiple_of(align_u64) || !(len as u64).is_multiple_of(align_u64) {
        return Err(crate::Error::invalid(format!(
            "{len} bytes at offset {offset} are not aligned to {align} bytes"
        )));
    }
    Ok(())
}

/// The sticky failure state every writing device keeps (fail-stop, see the module doc).
#[derive(Debug, Default)]
pub(crate) struct FailStop {
    /// The first error not yet reported by `wait_writes` or `flush`.
    pending: Option<crate::Error>,
    /// Set forever by the first write or flush error: what failed.
    failed: Option<String>,
}

impl FailStop {
    /// Records a write or flush error; only the first one is kept for reporting.
    pub(crate) fn fail(&mut self, err: crate::Error) {
        if self.failed.is_none() {
            self.failed = Some(err.to_string());
            self.pending = Some(err);
        }
    }

    /// True once any write or flush has failed.
    pub(crate) fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Refuses new writes and flushes once the device has failed.
    pub(crate) fn check(&self) -> Result<()> {
        match &self.failed {
            Some(what) => Err(crate::Error::DeviceFailed { what: what.clone() }),
            None => Ok(()),
        }
    }

    /// What `wait_writes`/`flush` return: the first unreported error once, then
    /// `DeviceFailed` on every later call.
    pub(crate) fn report(&mut self) -> Result<()> {
        match self.pending.take() {
            Some(err) => Err(err),
            None => self.check(),
        }
    }

    /// Forgets the failure: only a simulated crash (a reboot) may do this.
    pub(crate) fn reset(&mut self) {
        *self = FailStop::default();
    }
}
