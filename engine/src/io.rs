//! Block-sized reads and writes for the engine, over [`crate::dev`]. Knows the block size
//! and the block count, not the format.

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

/// Block reads over a borrowed device (fsck reads through this; it holds no `Arc`).
#[derive(Debug, Clone, Copy)]
pub struct BlockReader<'a> {
    pub dev: &'a dyn BlockDevice,
    pub block_size: u32,
    pub block_count: u64,
}

impl BlockReader<'_> {
    /// Byte offset of `block`.
    pub fn offset(&self, block: u64) -> u64 {
        block * u64::from(self.block_size)
    }

    fn check(&self, block: u64) -> Result<()> {
        if block >= self.block_count {
            return Err(Error::corrupt(
                block,
                format!(
                    "block {block} is past the end ({} blocks)",
                    self.block_count
                ),
            ));
        }
        Ok(())
    }

    /// Reads one block.
    pub fn read(&self, block: u64) -> Result<AlignedBuf> {
        self.check(block)?;
        read_at(self.dev, self.offset(block), self.block_size as usize)
    }

    /// Reads several blocks in one batch (queue depth > 1 on io_uring).
    pub fn read_many(&self, blocks: &[u64]) -> Result<Vec<AlignedBuf>> {
        for &b in blocks {
            self.check(b)?;
        }
        let mut bufs: Vec<AlignedBuf> = blocks
            .iter()
            .map(|_| AlignedBuf::zeroed(self.block_size as usize))
            .collect();
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
}

impl BlockIo {
    /// The same device, borrowed for reading.
    pub fn reader(&self) -> BlockReader<'_> {
        BlockReader {
            dev: self.dev.as_ref(),
            block_size: self.block_size,
            block_count: self.block_count,
        }
    }

    /// Reads one block.
    pub fn read(&self, block: u64) -> Result<AlignedBuf> {
        self.reader().read(block)
    }

    /// Reads several blocks in one batch.
    pub fn read_many(&self, blocks: &[u64]) -> Result<Vec<AlignedBuf>> {
        self.reader().read_many(blocks)
    }

    /// Queues block writes (asynchronous; `flush` waits for them).
    pub fn write(&self, blocks: Vec<(u64, Arc<AlignedBuf>)>) -> Result<()> {
        let bs = u64::from(self.block_size);
        let reqs = blocks
            .into_iter()
            .map(|(b, data)| WriteRequest {
                offset: b * bs,
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
