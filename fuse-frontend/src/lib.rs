//! tuxfs-fuse: the FUSE frontend of tuxfs.
//!
//! - [`adapter`] translates each fuser callback into one call on the engine's
//!   [`tuxfs_engine::fs::Filesystem`];
//! - [`errno`] is the only place where engine errors become errno values;
//! - [`convert`] turns engine attributes and times into fuser's and back;
//! - [`handles`] numbers open files and directories;
//! - [`options`] parses the `tuxfs-mount` command line and `-o` options;
//! - [`daemon`] holds the process mechanics: the image lock, daemonising, signals.

pub mod adapter;
pub mod convert;
pub mod daemon;
pub mod errno;
pub mod handles;
pub mod options;
