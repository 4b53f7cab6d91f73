//! The pread/pwrite block device, for kernels or sandboxes without io_uring.
//!
//! Writes complete inside `submit_writes` (one `pwrite` each, in order), so a write's buffer
//! reference is dropped before `submit_writes` returns. Errors follow the trait: a failed
//! write stops the rest of its batch, is reported by the next `wait_writes` or `flush`, and
//! makes the device refuse every later write and flush (fail-stop).

use crate::sync::{Mutex, MutexGuard, PoisonError};
use std::fmt;
use std::os::unix::fs::FileExt;

use super::file::Backing;
use super::{BlockDevice, FailStop, ReadRequest, WriteRequest};
use crate::{Error, Result};

/// A block device driven by pread/pwrite and fdatasync.
pub struct SyncDevice {
    backing: Backing,
    /// Held across a whole write batch or flush, so a flush never overtakes a write.
    fail: Mutex<FailStop>,
}

impl fmt::Debug for SyncDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncDevice")
            .field("path", &self.backing.path())
            .field("size", &self.backing.size())
            .field("direct", &self.backing.direct())
            .finish()
    }
}

impl SyncDevice {
    /// A device over `backing`.
    pub fn new(backing: Backing) -> SyncDevice {
        SyncDevice {
            backing,
            fail: Mutex::new(FailStop::default()),
        }
    }

    /// True when O_DIRECT is in force.
    pub fn direct(&self) -> bool {
        self.backing.direct()
    }

    fn lock(&self) -> MutexGuard<'_, FailStop> {
        self.fail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_one(&self, req: &mut ReadRequest<'_>) -> Result<()> {
        let file = self.backing.file();
        let mut done = 0;
        while done < req.buf.len() {
            let at = req.offset + done as u64;
            match file.read_at(&mut req.buf[done..], at) {
                Ok(0) => {
                    return Err(Error::invalid(format!(
                        "read at offset {at} hit the end of the device"
                    )));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(format!("reading at offset {at}"), e)),
            }
        }
        Ok(())
    }
}

impl BlockDevice for SyncDevice {
    fn size_bytes(&self) -> u64 {
        self.backing.size()
    }

    fn alignment(&self) -> usize {
        self.backing.alignment()
    }

    fn read_batch(&self, reqs: &mut [ReadRequest<'_>]) -> Result<()> {
        for r in reqs.iter() {
            self.backing.check_read(r.offset, r.buf.len())?;
        }
        reqs.iter_mut().try_for_each(|r| self.read_one(r))
    }

    fn submit_writes(&self, reqs: Vec<WriteRequest>) -> Result<()> {
        for r in &reqs {
            self.backing.check_write(r.offset, r.data.len())?;
        }
        let mut fail = self.lock();
        fail.check()?;
        for req in reqs {
            if let Err(e) = self.backing.file().write_all_at(&req.data, req.offset) {
                let ctx = format!("writing {} bytes at offset {}", req.data.len(), req.offset);
                fail.fail(Error::io(ctx, e));
                break;
            }
        }
        Ok(())
    }

    fn wait_writes(&self) -> Result<()> {
        self.lock().report()
    }

    fn flush(&self) -> Result<()> {
        let mut fail = self.lock();
        fail.report()?;
        if let Err(e) = self.backing.datasync() {
            fail.fail(e);
            return fail.report();
        }
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        let fail = self.lock();
        fail.check()?;
        self.backing.discard(offset, len)
    }
}
