//! tuxfs test harnesses, shared by this crate's integration tests and tools.
//!
//! - [`decoder_fuzz`]: the seeded, structure-aware mutation fuzzer for every on-disk decoder
//!   (binary `fuzz-decoders`, integration test `tests/decoder_fuzz.rs`).
//! - [`rng`]: the tiny seeded PRNG every randomized test uses (`TUXFS_SEED` replays a run).

pub mod decoder_fuzz;
pub mod model;
pub mod rng;
