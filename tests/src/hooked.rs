//! An in-memory device that calls a test's hook before each write submission and flush, so
//! a test can slow a commit down or stop it at a chosen point without writing a device of
//! its own (`tests/forking.rs` slows flushes, `tests/freeze.rs` holds one call,
//! fuse-frontend/tests/inflight.rs stops a flush at a gate), and optionally runs a read hook
//! around each read batch (`tests/readahead_depth.rs` delays and counts them).

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

/// Runs around each `read_batch`: it gets the batch's number of requests and the read
/// itself, which it must call once and whose result it returns.
pub type ReadHook = Arc<dyn Fn(usize, &mut dyn FnMut() -> Result<()>) -> Result<()> + Send + Sync>;

/// A [`MemDevice`] whose submissions and flushes pass through a [`Hook`] first.
pub struct HookedDevice {
    pub inner: MemDevice,
    hook: Hook,
    read_hook: Option<ReadHook>,
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
            read_hook: None,
        }
    }

    /// The same device with `read_hook` around every read batch.
    pub fn with_read_hook(mut self, read_hook: ReadHook) -> Self {
        self.read_hook = Some(read_hook);
        self
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
        match &self.read_hook {
            None => self.inner.read_batch(reqs),
            Some(hook) => {
                let n = reqs.len();
                hook(n, &mut || self.inner.read_batch(reqs))
            }
        }
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
