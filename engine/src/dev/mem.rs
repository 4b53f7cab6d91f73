//! An in-memory block device, for tests: writes apply at once, flush does nothing.

use crate::sync::{Mutex, MutexGuard, PoisonError};

use super::{BlockDevice, ReadRequest, WriteRequest, check_range};
use crate::Result;

/// A device whose bytes live in a `Vec<u8>`. It never fails except on malformed requests.
#[derive(Debug)]
pub struct MemDevice {
    image: Mutex<Vec<u8>>,
    size: u64,
    /// Alignment it demands of requests (1 unless [`MemDevice::with_alignment`]).
    align: usize,
}

impl MemDevice {
    /// A zeroed device of `size_bytes` bytes.
    pub fn new(size_bytes: usize) -> MemDevice {
        Self::from_bytes(vec![0; size_bytes])
    }

    /// A device holding `image`.
    pub fn from_bytes(image: Vec<u8>) -> MemDevice {
        let size = image.len() as u64;
        MemDevice {
            image: Mutex::new(image),
            size,
            align: 1,
        }
    }

    /// The same device demanding `align`-byte aligned offsets and lengths, as a disk of
    /// `align`-byte sectors does under O_DIRECT.
    pub fn with_alignment(mut self, align: usize) -> MemDevice {
        self.align = align.max(1);
        self
    }

    /// A copy of the current bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.image.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `len` bytes at `offset` as a range of `image`, once `check_range` has passed.
pub(crate) fn span(offset: u64, len: usize) -> std::ops::Range<usize> {
    // check_range proved offset + len <= image length, which is a usize.
    let start = offset as usize;
    start..start + len
}

impl BlockDevice for MemDevice {
    fn size_bytes(&self) -> u64 {
        self.size
    }

    fn alignment(&self) -> usize {
        self.align
    }

    fn read_batch(&self, reqs: &mut [ReadRequest<'_>]) -> Result<()> {
        for r in reqs.iter() {
            check_range(self.size, self.align, r.offset, r.buf.len())?;
        }
        let image = self.lock();
        for r in reqs.iter_mut() {
            let len = r.buf.len();
            r.buf.copy_from_slice(&image[span(r.offset, len)]);
        }
        Ok(())
    }

    fn submit_writes(&self, reqs: Vec<WriteRequest>) -> Result<()> {
        for r in &reqs {
            check_range(self.size, self.align, r.offset, r.data.len())?;
        }
        let mut image = self.lock();
        for r in &reqs {
            image[span(r.offset, r.data.len())].copy_from_slice(&r.data);
        }
        Ok(())
    }

    fn wait_writes(&self) -> Result<()> {
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}
