//! tuxfs engine: everything that knows the on-disk format or keeps filesystem state.
//!
//! Modules, in the order data flows (see `docs/ARCHITECTURE.md`):
//! - [`format`]: every on-disk structure, explicit little-endian encode/decode, checksums.
//!   Pure: no I/O. The only module that knows byte offsets.
//! - [`dev`]: the block device. The only module that does I/O.

pub mod btree;
pub mod dev;
pub mod error;
pub mod format;
pub mod io;
pub mod mkfs;

pub use error::{Errno, Error, Result};
