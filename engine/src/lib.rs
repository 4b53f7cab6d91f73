//! tuxfs engine: everything that knows the on-disk format or keeps filesystem state.
//!
//! Modules, in the order data flows (see `docs/ARCHITECTURE.md`):
//! - [`format`]: every on-disk structure, explicit little-endian encode/decode, checksums.
//!   Pure: no I/O. The only module that knows byte offsets.
//! - [`dev`]: the block device. The only module that does I/O.

pub mod alloc;
pub mod btree;
pub mod cache;
pub mod commit;
pub mod data;
pub mod delta;
pub mod dev;
pub mod dir;
pub mod error;
pub mod events;
pub mod format;
pub mod fs;
pub mod inode;
pub mod io;
pub mod lockorder;
pub mod mkfs;
pub mod recovery;
pub mod state;
pub mod sync;
pub mod xattr;

pub use error::{Errno, Error, Result};
