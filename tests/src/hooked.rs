//! An in-memory device that calls a test's hook before each write submission and flush, so
//! a test can slow a commit down or stop it at a chosen point without writing a device of
//! its own (`tests/forking.rs` slows flushes, `tests/freeze.rs` holds one call,
//! fuse-frontend/tests/inflight.rs stops a flush at a gate). A read hook
//! ([`HookedDevice::with_read_hook`]) sees each read batch's block offsets the same way
//! (`tests/shared_reads.rs` holds a leaf load under the shared state lock).

use std::sync::Arc;

use tuxfs_engine::Result;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::dev::{BlockDevice, ReadRequest, WriteRequest};

/// A device call the hook sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `submit_writes`, before the writes reach the memory.
    Submit,
    /// `flush`, before it waits and flushes.
    Flush,
}

/// The hook: runs on the calling thread, before the call; it may block.
pub type Hook = Arc<dyn Fn(Call) + Send + Sync>;

/// The read hook: runs on the calling thread before each read batch, with the byte
/// offsets it reads; it may block.
pub type ReadHook = Arc<dyn Fn(&[u64]) + Send + Sync>;

/// A [`MemDevice`] whose submissions and flushes (and reads, with a read hook) pass
/// through a hook first.
pub struct HookedDevice {
    pub inner: MemDevice,
    hook: Hook,
    reads: Option<ReadHook>,
}

impl std::fmt::Debug for HookedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookedDevice")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl HookedDevice {
    pub fn new(inner: MemDevice, hook: Hook) -> Self {
        HookedDevice {
            inner,
            hook,
            reads: None,
        }
    }

    /// As [`HookedDevice::new`], and every read batch passes through `reads` first.
    pub fn with_read_hook(inner: MemDevice, hook: Hook, reads: ReadHook) -> Self {
        HookedDevice {
            inner,
            hook,
            reads: Some(reads),
        }
    }
}

impl BlockDevice for HookedDevice {
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }
    fn alignment(&self) -> usize {
        self.inner.alignment()
    }
    fn read_batch(&self, reqs: &mut [ReadRequest<'_>]) -> Result<()> {
        if let Some(reads) = &self.reads {
            let offsets: Vec<u64> = reqs.iter().map(|r| r.offset).collect();
            reads(&offsets);
        }
        self.inner.read_batch(reqs)
    }
    fn submit_writes(&self, reqs: Vec<WriteRequest>) -> Result<()> {
        (self.hook)(Call::Submit);
        self.inner.submit_writes(reqs)
    }
    fn wait_writes(&self) -> Result<()> {
        self.inner.wait_writes()
    }
    fn flush(&self) -> Result<()> {
        (self.hook)(Call::Flush);
        self.inner.flush()
    }
}
