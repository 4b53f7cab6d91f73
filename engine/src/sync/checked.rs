//! engine::sync under the `shuttle` feature: shuttle's primitives, with the same paths as
//! the std half in engine/src/sync.rs. Self-contained on purpose: the shuttle tests of
//! tuxfs-tests compile engine modules against exactly this file (tests/tests/shuttle.rs),
//! so the seam they check is the one the engine builds with the feature.

pub use ::shuttle::sync::{
    Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

/// Shuttle's atomics: every access is a scheduling point.
pub mod atomic {
    pub use ::shuttle::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
}

/// Shuttle's threads: run as coroutines under the checker's scheduler.
pub mod thread {
    pub use ::shuttle::thread::{Builder, JoinHandle, spawn, yield_now};
}
