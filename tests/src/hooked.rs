//! An in-memory device that calls a test's hook before each write submission and flush, so
//! a test can slow a commit down or stop it at a chosen point without writing a device of
//! its own (`tests/forking.rs` slows flushes, `tests/freeze.rs` holds one call,
//! fuse-frontend/tests/inflight.rs stops a flush at a gate).

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

/// A [`MemDevice`] whose submissions and flushes pass through a [`Hook`] first.
pub struct HookedDevice {
    pub inner: MemDevice,
    hook: Hook,
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
        HookedDevice { inner, hook }
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
