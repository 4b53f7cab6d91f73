//! tuxfs-fuse: the FUSE frontend of tuxfs.
//!
//! - [`adapter`] translates each fuser callback into one call on the engine's
//!   [`tuxfs_engine::fs::Filesystem`];
//! - [`errno`] is the only place where engine errors become errno values;
//! - [`convert`] turns engine attributes and times into fuser's and back;
//! - [`handles`] numbers open files and directories;
//! - [`idmap`] is what idmapped mounts (FUSE_ALLOW_IDMAP) change for the daemon;
//! - [`ioctl`] answers the ioctls the kernel passes on (FITRIM);
//! - [`fileattr`] answers the file-flag ioctls (chattr/lsattr), [`caps`] reads a caller's
//!   capabilities;
//! - [`options`] parses the `tuxfs-mount` command line and `-o` options;
//! - [`daemon`] holds the process mechanics: the image lock, daemonising, signals;
//! - [`closable`] wraps the image's device so DESTROY can close it;
//! - [`blkdev`] attaches the loop device a `fuseblk` mount names, so `umount` waits for us;
//! - [`requests`] counts the requests the kernel sends, per opcode (the `fuse_*` stats);
//! - [`remount`] changes a running mount (`-o remount,...`): control socket and mount table;
//! - [`logging`] sends the daemon's and the engine's messages to syslog and `log=FILE`.

pub mod adapter;
pub mod bdi;
pub mod blkdev;
pub mod caps;
pub mod closable;
pub mod convert;
pub mod daemon;
pub mod errno;
pub mod fileattr;
pub mod handles;
pub mod idmap;
pub mod ioctl;
pub mod logging;
pub mod options;
pub mod readpool;
pub mod remount;
pub mod requests;
pub mod uring;
