//! An in-memory device that calls a test's hook before each write submission and flush, so
//! a test can slow a commit down or stop it at a chosen point without writing a device of
//! its own (`tests/forking.rs` slows flushes, `tests/freeze.rs` holds one call,
//! fuse-frontend/tests/inflight.rs stops a flush at a gate), and optionally runs a read hook
//! around each read batch, with the batch's byte offsets (`tests/shared_reads.rs` holds a
//! leaf load under the shared state lock, `tests/readahead_depth.rs` delays and counts
//! batches).

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

/// Runs around each `read_batch`: it gets the byte offsets of the batch's requests and the
/// read itself, which it must call once and whose result it returns; it may block.
pub type ReadHook = Arc<dyn Fn(&[u64], &mut dyn FnMut() -> Result<()>) -> Result<()> + Send + Sync>;

/// A [`MemDevice`] whose submissions and flushes pass through a [`Hook`] first (and read
/// batches through a [`ReadHook`], when given one).
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
                let offsets: Vec<u64> = reqs.iter().map(|r| r.offset).collect();
                hook(&offsets, &mut || self.inner.read_batch(reqs))
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

#[derive(Debug)]
struct GateState<T> {
    armed: Option<T>,
    /// Calls the hit test counted since arming (its own use: freeze.rs counts flushes).
    count: u32,
    holding: bool,
    released: bool,
}

/// Stops one chosen call of a hook (the caller decides which: [`Gate::pass`]) until
/// [`Gate::release`], so a test can act while a thread is held at a known point
/// (`tests/freeze.rs` holds a commit's submission or flush, `tests/shared_reads.rs` a
/// reader's leaf load).
#[derive(Debug)]
pub struct Gate<T> {
    state: std::sync::Mutex<GateState<T>>,
    changed: std::sync::Condvar,
}

impl<T: Copy> Default for Gate<T> {
    fn default() -> Self {
        Gate {
            state: std::sync::Mutex::new(GateState {
                armed: None,
                count: 0,
                holding: false,
                released: false,
            }),
            changed: std::sync::Condvar::new(),
        }
    }
}

impl<T: Copy> Gate<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState<T>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Arms the gate for `what`: the next call for which [`Gate::pass`]'s test holds stops.
    pub fn arm(&self, what: T) {
        *self.lock() = GateState {
            armed: Some(what),
            count: 0,
            holding: false,
            released: false,
        };
    }

    /// Stops the caller here until released when the gate is armed and `hit(armed, count)`
    /// says this is the call (then the gate disarms).
    pub fn pass(&self, hit: impl FnOnce(T, &mut u32) -> bool) {
        let mut g = self.lock();
        let Some(what) = g.armed else {
            return;
        };
        if !hit(what, &mut g.count) {
            return;
        }
        g.armed = None;
        g.holding = true;
        self.changed.notify_all();
        while !g.released {
            g = self
                .changed
                .wait(g)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        g.holding = false;
    }

    /// True once a call is held; false when none was within `timeout`.
    pub fn wait_holding(&self, timeout: std::time::Duration) -> bool {
        let g = self.lock();
        let (g, _) = self
            .changed
            .wait_timeout_while(g, timeout, |g| !g.holding)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.holding
    }

    /// Lets the held call go on.
    pub fn release(&self) {
        self.lock().released = true;
        self.changed.notify_all();
    }
}
