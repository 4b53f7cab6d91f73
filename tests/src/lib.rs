//! tuxfs test harnesses, shared by this crate's integration tests and tools.
//!
//! - [`decoder_fuzz`]: the seeded, structure-aware mutation fuzzer for every on-disk decoder
//!   (binary `fuzz-decoders`, integration test `tests/decoder_fuzz.rs`).
//! - [`crash`]: the crash-injection harness: records workloads on a recording device and
//!   checks every flush point and random subsets and torn writes of unflushed writes
//!   (binary `tuxfs-crashtest`, integration test `tests/crash.rs`).
//! - [`differential`]: the differential suite: seeded random system calls on a kernel
//!   filesystem and on a tuxfs mount, every result compared (`fuse-frontend/tests/differential.rs`).
//! - [`concurrent`]: several threads of seeded operations on their own subtrees and a shared
//!   directory, each with its model and history (`tests/model_mt.rs`, the crash harness's
//!   `concurrent` workload).
//! - [`model`]: the reference model of the visible tree and a snapshot of the real one.
//! - [`rng`]: the tiny seeded PRNG every randomized test uses (`TUXFS_SEED` replays a run).
//! - [`fixture`]: the engine-level tests' formatted in-memory device, mount, callers and
//!   fsck check.

pub mod concurrent;
pub mod crash;
pub mod decoder_fuzz;
pub mod differential;
pub mod fixture;
pub mod hooked;
pub mod model;
pub mod rng;
