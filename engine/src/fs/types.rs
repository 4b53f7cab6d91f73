//! The values the filesystem API takes and returns.

use crate::format::inode::Timestamp;

/// What kind of file an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

/// The attributes `stat` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    /// 512-byte units allocated, as st_blocks.
    pub blocks: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Timestamp,
    pub kind: FileKind,
    /// Permission bits (and setuid/setgid/sticky), without the file type.
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    /// Preferred I/O size: the filesystem block size.
    pub blksize: u32,
    pub generation: u32,
}

/// How setattr changes a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSet {
    /// The current time (utimensat with UTIME_NOW).
    Now,
    /// A given time.
    At(Timestamp),
}

/// The changes setattr makes; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// Permission bits only (the file type cannot change).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Truncate or extend.
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    pub ctime: Option<Timestamp>,
}

/// Who is asking: owner of new files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// The umask is not here: `create`, `mkdir` and `mknod` take modes it was applied to,
    /// and their `_umask` variants take it separately (the FUSE adapter asks the kernel
    /// not to apply it, because a parent's default ACL replaces it).
    pub pid: u32,
}

impl Caller {
    /// The superuser (uid 0, gid 0): what library callers of the plain xattr methods act as.
    pub const SUPERUSER: Caller = Caller {
        uid: 0,
        gid: 0,
        pid: 0,
    };
}

/// One directory entry returned by readdir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    /// The cookie to pass back to continue after this entry.
    pub offset: u64,
    pub kind: FileKind,
    pub name: Vec<u8>,
}

/// What statfs reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    /// Free blocks available to writers (excludes the reserve kept for commits and deletes).
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// rename(2) flags (renameat2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RenameFlags {
    /// RENAME_NOREPLACE: fail with EEXIST if the target exists.
    pub noreplace: bool,
    /// RENAME_EXCHANGE: swap the two names atomically.
    pub exchange: bool,
}

/// Options given at mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Refuse every change.
    pub read_only: bool,
    /// Age after which the writeback scheduler commits the current delta.
    pub commit_interval: std::time::Duration,
    /// Dirty bytes after which the writer that passed them commits.
    pub dirty_limit_bytes: u64,
    /// Log blocks after which a commit also unifies.
    pub unify_log_blocks: u64,
    /// TEST ONLY: acknowledge a commit after writing and flushing its log blocks, before its
    /// data and leaves reach the disk. Breaks the crash promise on purpose so the crash
    /// harness can prove it notices.
    pub debug_ack_before_data: bool,
    /// Memory for B+tree leaves kept in memory: past it, clean leaves are dropped after a
    /// commit (and read again on demand).
    pub leaf_cache_bytes: u64,
    /// Memory for clean file-data pages (the clean page cache, engine::cache): data read
    /// from the device or made durable by a commit, evicted past this bound.
    pub data_cache_bytes: u64,
    /// BENCHMARK BASELINE ONLY: commits keep the state lock through their flush, so the
    /// frontend waits for writeback instead of forking pages. Safe, just slower; it exists
    /// so that benches can measure what page forking buys in the same run.
    pub debug_wait_writeback: bool,
    /// Discard a delta's freed extents on the device once the delta is durable (the
    /// `discard` mount option): holes in an image file, BLKDISCARD on a block device.
    pub discard: bool,
    /// When reads and readdir update atime (engine/src/fs/atime.rs); relatime by default.
    pub atime: super::AtimePolicy,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            read_only: false,
            commit_interval: std::time::Duration::from_secs(5),
            dirty_limit_bytes: 64 << 20,
            unify_log_blocks: 256,
            debug_ack_before_data: false,
            debug_wait_writeback: false,
            leaf_cache_bytes: 256 << 20,
            discard: false,
            data_cache_bytes: 64 << 20,
            atime: super::AtimePolicy::default(),
        }
    }
}
