//! engine::sync: the one place the engine takes its concurrency primitives from.
//!
//! Modules that share state between threads import `Mutex`, `Condvar`, `RwLock`, `Arc`, the
//! atomics and `thread` from here, never from `std` directly. Normally these are std's. With
//! the `shuttle` feature they are those of [shuttle](https://docs.rs/shuttle), a randomized
//! concurrency checker: every lock, atomic access and thread switch becomes a point where
//! its scheduler may run another thread, so a test explores interleavings and replays a
//! failing one from its printed schedule (docs/TESTING.md, "Concurrency checker").
//!
//! The paths mirror std's (`sync::atomic::AtomicU64`, `sync::thread::Builder`), so moving a
//! module onto the seam is a change of its `use` lines only. Shuttle's primitives work only
//! inside a shuttle test: a build with the feature is for the checker, not for mounting.
//! `Arc` and `PoisonError` are std's in both builds (shuttle re-exports them: reference
//! counts need no scheduling point). Process-wide statics that must be `const`-constructed
//! (engine::events) stay on std.

#[cfg(not(feature = "shuttle"))]
pub use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

/// Atomics (std's, or shuttle's with the `shuttle` feature).
#[cfg(not(feature = "shuttle"))]
pub mod atomic {
    pub use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
}

/// Threads (std's, or shuttle's with the `shuttle` feature).
#[cfg(not(feature = "shuttle"))]
pub mod thread {
    pub use std::thread::{Builder, JoinHandle, spawn, yield_now};
}

#[cfg(feature = "shuttle")]
mod checked;
#[cfg(feature = "shuttle")]
pub use checked::*;
