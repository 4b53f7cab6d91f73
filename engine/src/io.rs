//! Block-sized reads and writes for the engine, over [`crate::dev`]. Knows the block size
//! and the filesystem id, not the format.

use std::sync::Arc;

use crate::dev::{AlignedBuf, BlockDevice, ReadRequest, WriteRequest, read_at};
use crate::{Error, Result};

/// The device with the geometry of the filesystem on it.
#[derive(Debug, Clone)]
pub struct BlockIo {
    pub dev: Arc<dyn BlockDevice>,
    pub block_size: u32,
    pub block_count: u64,
}

impl BlockIo {
    /// Byte offset of `block`.
    pub fn offset(&self, block: u64) -> u64 {
        block * u64::from(self.block_size)
    }

    /// Reads one block.
    pub fn read(&self, block: u64) -> Result<AlignedBuf> {
        if block >= self.block_count {
            return Err(Error::corrupt(
                block,
                format!(
                    "block {block} is past the end ({} blocks)",
                    self.block_count
                ),
            ));
        }
        read_at(
            self.dev.as_ref(),
            self.offset(block),
            self.block_size as usize,
        )
    }

    /// Reads several blocks in one batch (queue depth > 1 on io_uring).
    pub fn read_many(&self, blocks: &[u64]) -> Result<Vec<AlignedBuf>> {
        let mut bufs: Vec<AlignedBuf> = blocks
            .iter()
            .map(|_| AlignedBuf::zeroed(self.block_size as usize))
            .collect();
        for &b in blocks {
            if b >= self.block_count {
                return Err(Error::corrupt(
                    b,
                    format!("block {b} is past the end ({} blocks)", self.block_count),
                ));
            }
        }
        let mut reqs: Vec<ReadRequest<'_>> = blocks
            .iter()
            .zip(bufs.iter_mut())
            .map(|(&b, buf)| ReadRequest {
                offset: self.offset(b),
                buf,
            })
            .collect();
        self.dev.read_batch(&mut reqs)?;
        drop(reqs);
        Ok(bufs)
    }

    /// Queues block writes (asynchronous; `flush` waits for them).
    pub fn write(&self, blocks: Vec<(u64, Arc<AlignedBuf>)>) -> Result<()> {
        let reqs = blocks
            .into_iter()
            .map(|(b, data)| WriteRequest {
                offset: self.offset(b),
                data,
            })
            .collect();
        self.dev.submit_writes(reqs)
    }

    /// Waits for every queued write and makes all of them durable.
    pub fn flush(&self) -> Result<()> {
        self.dev.flush()
    }
}
