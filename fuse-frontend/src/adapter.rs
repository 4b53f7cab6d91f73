//! The FUSE adapter: each fuser callback becomes one call on [`tuxfs_engine::fs::Filesystem`].
//!
//! Invariants kept here:
//! - The adapter only translates. POSIX rules (link counts, timestamps, rename variants,
//!   permissions beyond what the kernel checks with `default_permissions`) are the engine's.
//!   The one check made here is the name length: the kernel does not enforce NAME_MAX for
//!   FUSE, so names longer than 255 bytes get ENAMETOOLONG before the engine sees them.
//! - Every engine error is turned into an errno by [`crate::errno`], nowhere else.
//! - FUSE inode numbers are engine inode numbers; the root is 1 on both sides. Every entry
//!   reply carries the inode's generation, and LOOKUP of "." / ".." (sent only when the
//!   kernel decodes a file handle, FUSE_EXPORT_SUPPORT) is answered by number alone
//!   (engine::fs::export).
//! - `fh` numbers name entries of a [`HandleTable`]; every successful open/create/opendir
//!   adds one and the matching release/releasedir removes it and releases the engine's open.
//! - No request that waits for a commit holds a worker: fsync and fsyncdir hand their reply
//!   to the engine ([`Filesystem::fsync_then`]), which sends it from the writeback thread.
//! - With the kernel's writeback cache ([`Caching::writeback_cache`]) the kernel owns size
//!   and mtime between flushes and resolves O_APPEND itself; writes then always go where
//!   their offset says.
//!
//! # What the kernel may cache, and why nothing needs invalidating
//!
//! The daemon is the image's only writer while it is mounted, and every change reaches it
//! through this kernel mount, so the kernel's caches are never stale because of a change it
//! did not see. Attributes and entries are therefore cached for [`Timeouts::default`]
//! (60 s). What the engine changes as a consequence of a request is either in the reply
//! (link counts and ctime after link, mode after chown) or invalidated by the kernel
//! itself: unlink and rename drop the victim's nlink and invalidate its attributes, the
//! parents' attributes (nlink, mtime) are invalidated after every directory change, ctime
//! after setxattr, atime after reads. An unlinked open file destroyed at its last release
//! (an orphan) is no longer reachable by name, and its inode number, if reused, comes back
//! with a new generation. Symlink targets never change. Missing names are cached too
//! (negative entries, [`Adapter::reply_negative_entry`]): a name appears only through this
//! mount, and the kernel replaces the negative dentry itself when it makes one. So the adapter sends one
//! invalidation notice only: the attributes of a file whose set-id bits a write cleared
//! (the write's reply carries no attributes). Should the engine ever change something on
//! its own (a background scrubber, an online resize), it must do the same
//! (`fuser::Notifier::inval_inode`/`inval_entry`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use std::collections::HashMap;
use std::sync::Mutex;

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileHandle, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};
use tuxfs_engine::Error;
use tuxfs_engine::fs::{Attr, Caller, Filesystem, RenameFlags, SeekWhence, SetAttr, XattrFlags};

use crate::convert;
use crate::errno;
use crate::handles::{HandleTable, OpenFile};

/// Longest name a directory entry may have, in bytes (NAME_MAX).
pub const NAME_MAX: usize = 255;

/// Largest write the kernel may send in one request: 1 MiB, which is also the most this
/// kernel allows (`/proc/sys/fs/fuse/max_pages_limit` is 256 pages).
pub const MAX_WRITE_BYTES: u32 = 1 << 20;

/// Read-ahead the kernel may do, at most.
pub const MAX_READAHEAD_BYTES: u32 = 1 << 20;

/// Directory entries asked of the engine per call while filling one readdir reply. The
/// reply buffer (usually one page) decides how many fit; what does not fit is asked for
/// again by the kernel, so a small batch wastes little.
const READDIR_BATCH: usize = 64;
/// The same for readdirplus, whose entries are about five times larger.
const READDIRPLUS_BATCH: usize = 16;

// FUSE's root inode is 1; the engine's must be the same for inode numbers to pass through.
const _: () = assert!(tuxfs_engine::format::ROOT_INUM == 1);

/// EXPORT_SUPPORT: the kernel may decode file handles (`open_by_handle_at`, knfsd) of
/// inodes it has forgotten, by LOOKUP of "." and ".." on the node id; node ids are inode
/// numbers and every entry reply carries the inode's generation (engine::fs::export).
const EXPORT_FLAGS: InitFlags = InitFlags::FUSE_EXPORT_SUPPORT;

/// How long the kernel may cache what we tell it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// Attributes (getattr results).
    pub attr: Duration,
    /// Name-to-inode mappings (lookup results).
    pub entry: Duration,
}

/// 60 s: the daemon is the only writer of the image, so what the kernel caches goes stale
/// only through changes the kernel itself made (see the module doc); the bound is there
/// for changes nobody thought of, not for correctness.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            attr: DEFAULT_TIMEOUT,
            entry: DEFAULT_TIMEOUT,
        }
    }
}

/// The kernel's page and symlink caching, each on by default (`-o nowriteback_cache`,
/// `nokeep_cache`, `nocache_symlinks` and `max_background=N` change them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caching {
    /// FUSE_WRITEBACK_CACHE: the kernel keeps dirty pages and writes them back in large
    /// requests; it owns size and mtime until then, reads a page before a partial write,
    /// and resolves O_APPEND itself.
    pub writeback_cache: bool,
    /// FOPEN_KEEP_CACHE on opens of files whose data no write or truncate reached since the
    /// previous open, so their pages survive the re-open.
    pub keep_cache: bool,
    /// FUSE_CACHE_SYMLINKS: symlink targets are kept in the page cache.
    pub cache_symlinks: bool,
    /// Background requests (read-ahead, page writeback, async direct I/O) the kernel keeps
    /// in flight; it counts as congested at 3/4 of it.
    pub max_background: u16,
}

/// Background requests in flight by default: room for a queue depth of 32 of direct I/O
/// plus read-ahead and page writeback beside it.
pub const DEFAULT_MAX_BACKGROUND: u16 = 64;

impl Default for Caching {
    fn default() -> Self {
        Caching {
            writeback_cache: true,
            keep_cache: true,
            cache_symlinks: true,
            max_background: DEFAULT_MAX_BACKGROUND,
        }
    }
}

/// Inodes whose data nothing changed since their last open: opened again, they keep their
/// pages. Bounded: past [`UNCHANGED_MAX`] entries it starts over (files then lose their
/// pages once more at the next open, which costs reads, not correctness).
#[derive(Debug, Default)]
struct Unchanged(Mutex<HashMap<u64, ()>>);

const UNCHANGED_MAX: usize = 1 << 16;

impl Unchanged {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ()>> {
        // Each use is one map call: a panic cannot leave it half-changed.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called at open: whether the inode's pages may be kept, and it is now "opened".
    fn opened(&self, ino: u64) -> bool {
        let mut map = self.map();
        if map.contains_key(&ino) {
            return true;
        }
        if map.len() >= UNCHANGED_MAX {
            map.clear();
        }
        map.insert(ino, ());
        false
    }

    /// Called when a write or a size change reaches the inode.
    fn changed(&self, ino: u64) {
        self.map().remove(&ino);
    }
}

/// fuser's `Filesystem` over a mounted tuxfs engine.
#[derive(Debug)]
pub struct Adapter {
    fs: Arc<Filesystem>,
    timeouts: Timeouts,
    /// What was asked for.
    caching: Caching,
    /// Whether the kernel granted FUSE_WRITEBACK_CACHE (known at INIT).
    writeback_cache: bool,
    unchanged: Unchanged,
    handles: HandleTable,
    /// Run at DESTROY, before the kernel is answered (see [`fuser::Filesystem::destroy`]).
    on_destroy: Option<crate::daemon::OnDestroy>,
    /// Whether to ask for FUSE_ALLOW_IDMAP (see [`Adapter::with_idmap`]).
    idmap: bool,
    /// The session's notifier, once the session exists ([`Adapter::with_notifier`]).
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    /// Where reads run, so a read waiting for the device parks no FUSE worker.
    reads: crate::readpool::ReadPool,
}

impl Adapter {
    pub fn new(fs: Arc<Filesystem>, timeouts: Timeouts) -> Self {
        Adapter {
            fs,
            timeouts,
            caching: Caching::default(),
            writeback_cache: false,
            unchanged: Unchanged::default(),
            handles: HandleTable::new(),
            on_destroy: None,
            idmap: false,
            notifier: Arc::default(),
            reads: crate::readpool::ReadPool::new(crate::readpool::READ_THREADS),
        }
    }

    /// Asks the kernel for idmapped mounts (FUSE_ALLOW_IDMAP, [`crate::idmap`]). Only for a
    /// mount open to every user: the kernel then sends no caller ids outside inode
    /// creation, which fuser's owner check (`noallow_other`, `allow_root`) would refuse.
    pub fn with_idmap(mut self, idmap: bool) -> Self {
        self.idmap = idmap;
        self
    }

    /// Sets what the kernel may cache (the default is everything on).
    pub fn with_caching(mut self, caching: Caching) -> Self {
        self.caching = caching;
        self
    }

    /// The open flags for a regular file's open: FOPEN_KEEP_CACHE when allowed and nothing
    /// changed its data since the previous open.
    fn file_open_flags(&self, ino: u64) -> FopenFlags {
        if self.unchanged.opened(ino) && self.caching.keep_cache {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        }
    }

    /// Runs `work` once the kernel has written back every dirty page of `ino`: an inode
    /// invalidation launders them (WRITE requests, which the FUSE workers or the ring's
    /// queue threads serve meanwhile) before it returns. Both run on a read-pool thread,
    /// never on the thread that received the request: with one worker (`threads=1`), or
    /// one ring queue per CPU (`uring`), waiting there for those WRITEs would deadlock.
    fn after_kernel_writeback(&self, ino: INodeNo, work: impl FnOnce() + Send + 'static) {
        let notifier = self.notifier.get().cloned();
        self.reads.run(Box::new(move || {
            // ENOENT: the kernel holds no inode by that number, so no page either.
            if let Some(n) = notifier
                && let Err(e) = n.inval_inode(ino, 0, 0)
                && e.raw_os_error() != Some(libc::ENOENT)
            {
                tuxfs_engine::events::report(
                    tuxfs_engine::events::Level::Warning,
                    &format!("writing back the kernel's pages of inode {}: {e}", ino.0),
                );
            }
            work();
        }));
    }

    /// Where the session's notifier will be, set by whoever creates the session.
    pub fn with_notifier(mut self, slot: Arc<std::sync::OnceLock<fuser::Notifier>>) -> Self {
        self.notifier = slot;
        self
    }

    /// Has `hook` run when the session is destroyed: at unmount of a `fuseblk` mount before
    /// the kernel lets `umount` return, otherwise when the session ends.
    pub fn with_destroy(mut self, hook: crate::daemon::OnDestroy) -> Self {
        self.on_destroy = Some(hook);
        self
    }

    /// Answers create or tmpfile: a handle for the new file, opened with `flags`.
    fn reply_created(&self, reply: ReplyCreate, attr: &Attr, flags: i32) {
        let fh = self.open_handle(attr.ino, flags);
        // A new file has no pages to keep; this counts as its first open.
        let _ = self.file_open_flags(attr.ino);
        reply.created(
            &self.timeouts.entry,
            &convert::file_attr(attr),
            Generation(u64::from(attr.generation)),
            fh,
            FopenFlags::empty(),
        );
    }

    fn reply_entry(&self, reply: ReplyEntry, result: Result<Attr, Error>) {
        match result {
            Ok(attr) => reply.entry_with_ttls(
                &self.timeouts.attr,
                &self.timeouts.entry,
                &convert::file_attr(&attr),
                Generation(u64::from(attr.generation)),
            ),
            Err(e) => reply.error(errno::to_fuser(&e)),
        }
    }

    /// Answers a lookup of a name that does not exist: node id 0 with the entry timeout,
    /// which the kernel keeps as a negative dentry, so looking the name up again (a PATH
    /// or include-path search, `stat` of a missing file, each `open(O_CREAT)` retried)
    /// costs no request until it expires. It cannot go stale: names appear only through
    /// this mount (the daemon is the image's only writer), and the kernel turns the
    /// negative dentry positive itself when it creates, links or renames onto the name.
    /// With `entry_timeout=0` this is a plain ENOENT, cached for no time, as before.
    fn reply_negative_entry(&self, reply: ReplyEntry) {
        // Only the node id and the entry timeout are read from a negative entry.
        let none = fuser::FileAttr {
            ino: INodeNo(0),
            size: 0,
            blocks: 0,
            atime: SystemTime::UNIX_EPOCH,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            crtime: SystemTime::UNIX_EPOCH,
            kind: fuser::FileType::RegularFile,
            perm: 0,
            nlink: 0,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 0,
            flags: 0,
        };
        reply.entry_with_ttls(&Duration::ZERO, &self.timeouts.entry, &none, Generation(0));
    }

    fn reply_attr(&self, reply: ReplyAttr, result: Result<Attr, Error>) {
        match result {
            Ok(attr) => reply.attr(&self.timeouts.attr, &convert::file_attr(&attr)),
            Err(e) => reply.error(errno::to_fuser(&e)),
        }
    }

    /// Registers an open handle for `ino`; O_APPEND is remembered for writes.
    fn open_handle(&self, ino: u64, flags: i32) -> FileHandle {
        FileHandle(self.handles.insert(OpenFile {
            ino,
            append: flags & libc::O_APPEND != 0,
        }))
    }

    /// `attr` after a setattr, or, when the request asked for it, after the setuid/setgid
    /// kill that follows it (done after, so a setattr that fails kills nothing).
    fn killed(&self, ino: u64, kill: bool, attr: Attr) -> Result<Attr, Error> {
        if !kill {
            return Ok(attr);
        }
        Ok(self.fs.kill_suidgid(ino)?.unwrap_or(attr))
    }

    /// Forgets a handle and releases the engine's open of its inode.
    fn release_handle(&self, ino: INodeNo, fh: FileHandle, reply: ReplyEmpty) {
        let released = self.handles.remove(fh.0);
        // The kernel always releases what it opened, with the inode it opened; a handle we do
        // not know is a bug somewhere, reported rather than guessed at.
        let Some(file) = released else {
            return reply.error(Errno::EBADF);
        };
        debug_assert_eq!(file.ino, ino.0);
        reply_empty(reply, self.fs.release(file.ino));
    }
}

std::thread_local! {
    /// The inode whose SETATTR, about to be dispatched on this thread, carries
    /// FATTR_KILL_SUIDGID (set by `setattr_kill_suidgid`, taken by `setattr`).
    static KILL_SUIDGID: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Whether the setattr of `ino` being handled on this thread must kill setuid/setgid.
fn take_kill_suidgid(ino: u64) -> bool {
    KILL_SUIDGID.take() == Some(ino)
}

/// `name` as bytes, or ENAMETOOLONG when it is longer than NAME_MAX.
fn checked_name(name: &OsStr) -> Result<&[u8], Errno> {
    let bytes = name.as_bytes();
    if bytes.len() > NAME_MAX {
        Err(Errno::ENAMETOOLONG)
    } else {
        Ok(bytes)
    }
}

/// Who sent `req`. With FUSE_ALLOW_IDMAP granted the kernel sends no ids on requests that
/// create nothing; those come from the caller's process (`idmap::caller_ids`).
fn caller(req: &Request) -> Caller {
    let (uid, gid) = crate::idmap::caller_ids(req.uid(), req.gid(), req.pid());
    Caller {
        uid,
        gid,
        pid: req.pid(),
    }
}

/// The ids `req` carries, as they are: for requests whose answer does not depend on who
/// sent them, which then cost no read of the process table (see [`caller`]).
fn carried(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

/// Who reads xattr `name`: only a `trusted.` read depends on it (root only,
/// engine::fs::xattr `permitted`), so only that one resolves the caller. The others are the
/// common case: the kernel asks for `security.capability` before the first write to every
/// file, and ACLs for permission checks, and with FUSE_ALLOW_IDMAP each would otherwise
/// read `/proc/PID/status`.
fn xattr_reader(req: &Request, name: &[u8]) -> Caller {
    if name.starts_with(b"trusted.") {
        caller(req)
    } else {
        carried(req)
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), Error>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno::to_fuser(&e)),
    }
}

/// Answers an xattr query: the needed size when the caller asked with size 0, ERANGE when
/// its buffer is too small, the bytes otherwise.
fn reply_xattr_bytes(reply: ReplyXattr, size: u32, bytes: &[u8]) {
    let Ok(len) = u32::try_from(bytes.len()) else {
        return reply.error(Errno::E2BIG);
    };
    if size == 0 {
        reply.size(len);
    } else if len > size {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(bytes);
    }
}

/// The engine's rename flags, or EINVAL for flags it does not know (RENAME_WHITEOUT, which
/// `rename` takes out first, and anything newer).
fn rename_flags(flags: fuser::RenameFlags) -> Result<RenameFlags, Errno> {
    let known = fuser::RenameFlags::RENAME_NOREPLACE | fuser::RenameFlags::RENAME_EXCHANGE;
    if !known.contains(flags) {
        return Err(Errno::EINVAL);
    }
    Ok(RenameFlags {
        noreplace: flags.contains(fuser::RenameFlags::RENAME_NOREPLACE),
        exchange: flags.contains(fuser::RenameFlags::RENAME_EXCHANGE),
    })
}

/// The engine's xattr flags from setxattr(2)'s `flags` (EINVAL for unknown bits) and the
/// kernel's `setxattr_flags` (FUSE_SETXATTR_EXT; only ACL_KILL_SGID exists, and a bit this
/// version does not know is a request from a newer kernel it cannot honour: ignored).
fn xattr_flags(flags: i32, setxattr_flags: u32) -> Result<XattrFlags, Errno> {
    if flags & !(libc::XATTR_CREATE | libc::XATTR_REPLACE) != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(XattrFlags {
        create: flags & libc::XATTR_CREATE != 0,
        replace: flags & libc::XATTR_REPLACE != 0,
        acl_kill_sgid: setxattr_flags & fuser::consts::FUSE_SETXATTR_ACL_KILL_SGID != 0,
    })
}

/// Permission bits of a mode (the kernel includes the file type in some requests).
fn permission_bits(mode: u32) -> u32 {
    mode & 0o7777
}

impl fuser::Filesystem for Adapter {
    fn destroy(&self) {
        // Reads still running finish (and answer) before the engine is unmounted.
        self.reads.stop();
        if let Some(hook) = &self.on_destroy {
            hook.run();
        }
    }

    fn request_received(&self, opcode: u32) {
        crate::requests::COUNTS.record(opcode);
    }

    fn uring_request_received(&self, _opcode: u32) {
        crate::uring::URING_REQUESTS.record();
    }

    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Each setter returns the nearest acceptable value when ours is refused; take it.
        if let Err(nearest) = config.set_max_write(MAX_WRITE_BYTES) {
            let _ = config.set_max_write(nearest);
        }
        if let Err(nearest) = config.set_max_readahead(MAX_READAHEAD_BYTES) {
            let _ = config.set_max_readahead(nearest);
        }
        // READDIRPLUS fills the inode cache while listing; PARALLEL_DIROPS lets lookups and
        // readdirs of one directory run concurrently (every engine method takes &self).
        // WRITEBACK_CACHE and CACHE_SYMLINKS as `self.caching` says. With the writeback
        // cache, ASYNC_DIO too: one O_DIRECT request of many pages, or AIO, becomes several
        // requests in flight at once, which is safe only when each carries its final offset
        // (without the writeback cache an O_APPEND piece is placed at the engine's end of
        // file, and pieces handled out of order would be swapped).
        //
        // POSIX_ACL: the kernel enforces ACLs (it reads system.posix_acl_access through
        // getxattr) and leaves the rest to the engine: the mode an ACL sets, chmod of the
        // ACL, default ACL inheritance (engine::fs::acl). It then skips the umask for
        // create/mkdir/mknod; DONT_MASK keeps the FUSE layer from applying it anyway, so
        // the engine gets the unmasked mode and the umask and applies whichever rule holds.
        //
        // HANDLE_KILLPRIV_V2: the kernel then marks the superblock NOSEC, so a write no
        // longer asks for `security.capability` first (without it every write cost a
        // GETXATTR round trip, and an io_uring O_DIRECT write many: it retried, each time
        // asking again, while the inode's time update kept it from completing without
        // blocking). In exchange the daemon clears S_ISUID/S_ISGID: writes carry
        // FUSE_WRITE_KILL_SUIDGID, truncates and chowns FATTR_KILL_SUIDGID
        // ([`Filesystem::kill_suidgid`]).
        // SETXATTR_EXT: setxattr requests carry FUSE_SETXATTR_ACL_KILL_SGID, set when a
        // caller outside the file's group without CAP_FSETID sets an access ACL; the engine
        // then clears S_ISGID as ext4 does (the vendored fuser parses that header).
        let mut wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_POSIX_ACL
            | InitFlags::FUSE_DONT_MASK
            | InitFlags::FUSE_SETXATTR_EXT
            | EXPORT_FLAGS
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        if self.caching.writeback_cache {
            wanted |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        if self.caching.cache_symlinks {
            wanted |= InitFlags::FUSE_CACHE_SYMLINKS;
        }
        if self.idmap {
            wanted |= InitFlags::FUSE_ALLOW_IDMAP;
        }
        let mut offered = config.capabilities() & wanted;
        self.writeback_cache = offered.contains(InitFlags::FUSE_WRITEBACK_CACHE);
        if self.writeback_cache {
            offered |= config.capabilities() & InitFlags::FUSE_ASYNC_DIO;
        }
        // Cannot fail: only capabilities the kernel offered are asked for.
        let _ = config.add_capabilities(offered);
        let background = self.caching.max_background.max(1);
        if let Err(nearest) = config.set_max_background(background) {
            let _ = config.set_max_background(nearest);
        }
        let congested = (u32::from(background) * 3 / 4).max(1) as u16;
        if let Err(nearest) = config.set_congestion_threshold(congested) {
            let _ = config.set_congestion_threshold(nearest);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match checked_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        // "." and ".." come only from the kernel decoding a file handle (FUSE_EXPORT_SUPPORT):
        // the node is known by number alone and may be any kind of file.
        let result = match name {
            b"." => self.fs.lookup_self(parent.0),
            b".." => self.fs.lookup_parent(parent.0),
            _ => self.fs.lookup(parent.0, name),
        };
        if let Err(e) = &result
            && name != b"."
            && name != b".."
            && errno::to_fuser(e) == Errno::ENOENT
        {
            return self.reply_negative_entry(reply);
        }
        self.reply_entry(reply, result);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, _nlookup: u64) {
        // The engine keeps no lookup counts: inodes live while linked or open; what it
        // keeps of a freed one for the kernel's last SETATTR goes now.
        self.fs.forget(ino.0);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.reply_attr(reply, self.fs.getattr(ino.0));
    }

    /// FUSE_STATX: getattr plus the birth time (the kernel asks when statx wants btime).
    fn statx(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: Option<FileHandle>,
        _flags: u32,
        _mask: u32,
        reply: fuser::ReplyStatx,
    ) {
        match self.fs.getattr(ino.0) {
            Ok(attr) => reply.statx(&self.timeouts.attr, &convert::file_attr(&attr)),
            Err(e) => reply.error(errno::to_fuser(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if size.is_some() {
            self.unchanged.changed(ino.0);
        }
        let set = SetAttr {
            mode: mode.map(permission_bits),
            uid,
            gid,
            size,
            atime: atime.map(convert::time_set),
            mtime: mtime.map(convert::time_set),
            ctime: ctime.map(convert::timestamp),
        };
        let kill = take_kill_suidgid(ino.0);
        let result = self.fs.setattr(ino.0, &set);
        self.reply_attr(
            reply,
            result.and_then(|attr| self.killed(ino.0, kill, attr)),
        );
    }

    fn setattr_kill_suidgid(&self, _req: &Request, ino: INodeNo) {
        KILL_SUIDGID.set(Some(ino.0));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno::to_fuser(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let name = match checked_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        // mknod's mode carries the file type (S_IF*), which the engine needs. The umask
        // is the engine's to apply (it does not when the parent has a default ACL).
        let result = self
            .fs
            .mknod_umask(parent.0, name, mode, rdev, umask, caller(req));
        self.reply_entry(reply, result);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match checked_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let result = self
            .fs
            .mkdir_umask(parent.0, name, permission_bits(mode), umask, caller(req));
        self.reply_entry(reply, result);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match checked_name(name) {
            Ok(name) => reply_empty(reply, self.fs.unlink(parent.0, name)),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match checked_name(name) {
            Ok(name) => reply_empty(reply, self.fs.rmdir(parent.0, name)),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let name = match checked_name(link_name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let target = target.as_os_str().as_bytes();
        let result = self.fs.symlink(parent.0, name, target, caller(req));
        self.reply_entry(reply, result);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let whiteout = flags.contains(fuser::RenameFlags::RENAME_WHITEOUT);
        let flags = flags - fuser::RenameFlags::RENAME_WHITEOUT;
        let parsed = checked_name(name).and_then(|name| {
            let newname = checked_name(newname)?;
            Ok((name, newname, rename_flags(flags)?))
        });
        if whiteout {
            // RENAME_WHITEOUT (overlayfs): never with RENAME_EXCHANGE.
            return match parsed {
                Ok((_, _, f)) if f.exchange => reply.error(Errno::EINVAL),
                Ok((name, newname, f)) => reply_empty(
                    reply,
                    self.fs.rename_whiteout(
                        (parent.0, name),
                        (newparent.0, newname),
                        f.noreplace,
                        caller(req),
                    ),
                ),
                Err(e) => reply.error(e),
            };
        }
        match parsed {
            Ok((name, newname, flags)) => reply_empty(
                reply,
                self.fs.rename(parent.0, name, newparent.0, newname, flags),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let name = match checked_name(newname) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        self.reply_entry(reply, self.fs.link(ino.0, newparent.0, name));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        // With the writeback cache the kernel sends O_RDWR for O_WRONLY (it may read pages
        // before partial writes) and keeps O_APPEND for itself: neither matters here, the
        // engine's open does not depend on the access mode and `write` ignores O_APPEND then.
        // File flags may refuse the open (engine::fs::flags: immutable, append-only); the
        // flags still carry the caller's O_APPEND and whether it writes.
        let opened = self
            .fs
            .check_open(ino.0, crate::fileattr::open_intent(flags.0))
            .and_then(|()| self.fs.open(ino.0));
        match opened {
            Ok(()) => reply.opened(
                self.open_handle(ino.0, flags.0),
                self.file_open_flags(ino.0),
            ),
            Err(e) => reply.error(errno::to_fuser(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // Answered from the read pool once the data is there, so this worker goes on serving
        // (one read at a time runs on its worker instead: readpool.rs).
        // The request carries the file's flags: O_DIRECT reads follow ext4's alignment rule.
        let fs = self.fs.clone();
        let direct = flags.0 & libc::O_DIRECT != 0;
        self.reads.dispatch(Box::new(move || {
            let result = if direct {
                fs.read_direct(ino.0, offset, size)
            } else {
                fs.read(ino.0, offset, size)
            };
            match result {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno::to_fuser(&e)),
            }
        }));
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(file) = self.handles.get(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        // Page-cache writeback (FUSE_WRITE_CACHE, e.g. from a shared mapping) writes pages at
        // their own offsets, never appends. With the writeback cache every write is one of
        // those or an O_DIRECT write whose offset the kernel already set to the end of file
        // for O_APPEND (it owns the size), so nothing appends here. Otherwise the request
        // carries the file's current flags, which include a later fcntl(F_SETFL, O_APPEND);
        // the flag remembered at open covers requests that carry none.
        let append = !self.writeback_cache
            && !write_flags.contains(WriteFlags::FUSE_WRITE_CACHE)
            && (file.append || flags.0 & libc::O_APPEND != 0);
        self.unchanged.changed(ino.0);
        // FUSE_WRITE_KILL_SUIDGID (HANDLE_KILLPRIV_V2): the writer lacks CAP_FSETID.
        // The write's reply carries no attributes: a mode changed here is invalidated in
        // the kernel (attributes only, offset -1: no page is touched, no lock is taken).
        if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
            match self.fs.kill_suidgid(ino.0) {
                Ok(None) => {}
                Ok(Some(_)) => {
                    if let Some(n) = self.notifier.get() {
                        let _ = n.inval_inode(ino, -1, 0);
                    }
                }
                Err(e) => return reply.error(errno::to_fuser(&e)),
            }
        }
        // An O_DIRECT write (page-cache writeback never is one) follows ext4's alignment rule.
        let direct =
            flags.0 & libc::O_DIRECT != 0 && !write_flags.contains(WriteFlags::FUSE_WRITE_CACHE);
        let result = if direct {
            self.fs.write_direct(ino.0, offset, data, append)
        } else {
            self.fs.write(ino.0, offset, data, append)
        };
        match result {
            Ok(written) => reply.written(written),
            Err(e) => reply.error(errno::to_fuser(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) promises nothing about durability (the writeback scheduler commits),
        // and before it would send FLUSH the kernel has written the file's dirty pages and
        // times back itself; POSIX locks are the kernel's. So there is nothing to do here,
        // and ENOSYS tells the kernel so: it stops sending FLUSH for the rest of the mount
        // (one round trip less per close; close(2) still returns 0).
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.release_handle(ino, fh, reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Answered from the writeback thread once durable; this worker goes on serving.
        self.fs
            .fsync_then(ino.0, datasync, move |outcome| reply_empty(reply, outcome));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open(ino.0) {
            Ok(()) => reply.opened(self.open_handle(ino.0, flags.0), FopenFlags::empty()),
            Err(e) => reply.error(errno::to_fuser(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut cookie = offset;
        loop {
            let batch = match self.fs.readdir(ino.0, cookie, READDIR_BATCH) {
                Ok(b) => b,
                Err(e) => return reply.error(errno::to_fuser(&e)),
            };
            for entry in &batch {
                let kind = convert::file_type(entry.kind);
                let name = OsStr::from_bytes(&entry.name);
                if reply.add(INodeNo(entry.ino), entry.offset, kind, name) {
                    return reply.ok();
                }
                cookie = entry.offset;
            }
            if batch.len() < READDIR_BATCH {
                return reply.ok();
            }
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let mut cookie = offset;
        loop {
            let batch = match self.fs.readdir_plus(ino.0, cookie, READDIRPLUS_BATCH) {
                Ok(b) => b,
                Err(e) => return reply.error(errno::to_fuser(&e)),
            };
            for (entry, attr) in &batch {
                let name = OsStr::from_bytes(&entry.name);
                let full = reply.add(
                    INodeNo(entry.ino),
                    entry.offset,
                    name,
                    &self.timeouts.entry,
                    &convert::file_attr(attr),
                    Generation(u64::from(attr.generation)),
                );
                if full {
                    return reply.ok();
                }
                cookie = entry.offset;
            }
            if batch.len() < READDIRPLUS_BATCH {
                return reply.ok();
            }
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.release_handle(ino, fh, reply);
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Answered from the writeback thread once durable; this worker goes on serving.
        self.fs
            .fsync_then(ino.0, datasync, move |outcome| reply_empty(reply, outcome));
    }

    // sync(2) and syncfs(2) (FUSE_SYNCFS, which Linux 6.18 sends to a fuseblk mount only,
    // not to a plain fuse one): the kernel has written back every dirty page of the mount first, so
    // making the open delta durable makes everything durable. Answered from the writeback
    // thread, like fsync.
    fn syncfs(&self, _req: &Request, ino: INodeNo, reply: ReplyEmpty) {
        self.fs
            .fsync_then(ino.0, false, move |outcome| reply_empty(reply, outcome));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(errno::to_fuser(&e)),
        }
    }

    // Every SETXATTR arrives here (the vendored fuser's `setxattr_ext`), with the kernel's
    // setxattr_flags when FUSE_SETXATTR_EXT was negotiated.
    fn setxattr_ext(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        setxattr_flags: u32,
        reply: ReplyEmpty,
    ) {
        // `position` is for macOS resource forks only.
        if position != 0 {
            return reply.error(Errno::EINVAL);
        }
        match xattr_flags(flags, setxattr_flags) {
            Ok(flags) => reply_empty(
                reply,
                self.fs
                    .setxattr_as(ino.0, name.as_bytes(), value, flags, caller(req)),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let who = xattr_reader(req, name.as_bytes());
        match self.fs.getxattr_as(ino.0, name.as_bytes(), who) {
            Ok(value) => reply_xattr_bytes(reply, size, &value),
            Err(e) => reply.error(errno::to_fuser(&e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr_as(ino.0, caller(req)) {
            Ok(names) => {
                let mut list = Vec::with_capacity(names.iter().map(|n| n.len() + 1).sum());
                for name in &names {
                    list.extend_from_slice(name);
                    list.push(0);
                }
                reply_xattr_bytes(reply, size, &list);
            }
            Err(e) => reply.error(errno::to_fuser(&e)),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let removed = self.fs.removexattr_as(ino.0, name.as_bytes(), caller(req));
        reply_empty(reply, removed);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // With default_permissions the kernel checks modes itself and does not ask; should it
        // ask anyway, existence is the only thing left to check.
        reply_empty(reply, self.fs.getattr(ino.0).map(|_| ()));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match checked_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self
            .fs
            .create_umask(parent.0, name, permission_bits(mode), umask, caller(req))
        {
            Ok(attr) => self.reply_created(reply, &attr, flags),
            Err(e) => reply.error(errno::to_fuser(&e)),
        }
    }

    /// FUSE_TMPFILE (`open(O_TMPFILE)`): an open file without a name, answered as create.
    fn tmpfile(
        &self,
        req: &Request,
        parent: INodeNo,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self
            .fs
            .tmpfile_umask(parent.0, permission_bits(mode), umask, caller(req))
        {
            Ok(attr) => self.reply_created(reply, &attr, flags),
            Err(e) => reply.error(errno::to_fuser(&e)),
        }
    }

    // FALLOCATE, LSEEK (SEEK_DATA / SEEK_HOLE only: the kernel answers the other whences
    // itself) and COPY_FILE_RANGE: the engine decides (engine::fs::space, engine::fs::copy).
    // The kernel flushes the dirty pages of the range before each of them and drops its
    // cached pages of the range after punch, zero range and a copy, so nothing needs
    // invalidating here (docs/SEMANTICS.md, "Space management").
    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.unchanged.changed(ino.0);
        reply_empty(reply, self.fs.fallocate(ino.0, offset, length, mode as u32));
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        let whence = match whence {
            libc::SEEK_DATA => SeekWhence::Data,
            libc::SEEK_HOLE => SeekWhence::Hole,
            _ => return reply.error(Errno::EINVAL),
        };
        let answer = {
            let fs = Arc::clone(&self.fs);
            move || match fs.seek(ino.0, offset, whence) {
                Ok(at) => reply.offset(at as i64),
                Err(e) => reply.error(errno::to_fuser(&e)),
            }
        };
        // The kernel sends FUSE_LSEEK without writing back its dirty pages (unlike punch,
        // zero range and copy), and with the writeback cache those hold data the engine
        // has not seen: the kernel must write every dirty one back before the answer.
        if self.writeback_cache {
            self.after_kernel_writeback(ino, answer);
        } else {
            answer();
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.unchanged.changed(ino_out.0);
        let flags = u32::try_from(flags.bits()).unwrap_or(u32::MAX);
        let copied = self
            .fs
            .copy_file_range(ino_in.0, offset_in, ino_out.0, offset_out, len, flags);
        match copied {
            // At most COPY_MAX_BYTES per call, so it fits the reply's u32.
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno::to_fuser(&e)),
        }
    }

    /// ioctls: answered by [`crate::ioctl`] (FITRIM, labels, file flags); anything else is
    /// ENOTTY there.
    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // Most ioctls (a TCGETS from isatty(3) on every open of some runtimes) are
        // answered the same for everyone: only those that change something resolve the caller.
        let who = if crate::ioctl::needs_caller(cmd) {
            caller(req)
        } else {
            carried(req)
        };
        // chattr +i or +a: pages written through a descriptor opened before are still
        // dirty in the kernel's page cache (writeback cache), and the flag would refuse them
        // at writeback, losing data ext4 keeps. So the kernel writes them back first.
        if crate::fileattr::sets_guard(&self.fs, ino.0, cmd, in_data) {
            let fs = Arc::clone(&self.fs);
            let in_data = in_data.to_vec();
            self.after_kernel_writeback(ino, move || {
                answer_ioctl(&fs, who, ino.0, cmd, &in_data, out_size, reply)
            });
            return;
        }
        answer_ioctl(&self.fs, who, ino.0, cmd, in_data, out_size, reply);
    }
}

/// Runs an ioctl and replies with its answer.
fn answer_ioctl(
    fs: &Filesystem,
    who: Caller,
    ino: u64,
    cmd: u32,
    in_data: &[u8],
    out_size: u32,
    reply: fuser::ReplyIoctl,
) {
    match crate::ioctl::dispatch(fs, who, ino, cmd, in_data, out_size) {
        Ok((result, out)) => reply.ioctl(result, &out),
        Err(e) => reply.error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_longer_than_name_max_are_refused() {
        let ok = vec![b'a'; NAME_MAX];
        let long = vec![b'a'; NAME_MAX + 1];
        assert_eq!(checked_name(OsStr::from_bytes(&ok)), Ok(&ok[..]));
        assert_eq!(
            checked_name(OsStr::from_bytes(&long)),
            Err(Errno::ENAMETOOLONG)
        );
    }

    #[test]
    fn rename_flags_pass_known_bits_and_refuse_others() {
        assert_eq!(
            rename_flags(fuser::RenameFlags::empty()),
            Ok(RenameFlags::default())
        );
        assert_eq!(
            rename_flags(fuser::RenameFlags::RENAME_NOREPLACE),
            Ok(RenameFlags {
                noreplace: true,
                exchange: false
            })
        );
        assert_eq!(
            rename_flags(fuser::RenameFlags::RENAME_EXCHANGE),
            Ok(RenameFlags {
                noreplace: false,
                exchange: true
            })
        );
        assert_eq!(
            rename_flags(fuser::RenameFlags::RENAME_WHITEOUT),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            rename_flags(fuser::RenameFlags::from_bits_retain(1 << 20)),
            Err(Errno::EINVAL)
        );
    }

    #[test]
    fn xattr_flags_pass_known_bits_and_refuse_others() {
        assert_eq!(xattr_flags(0, 0), Ok(XattrFlags::default()));
        assert_eq!(
            xattr_flags(libc::XATTR_CREATE, 0),
            Ok(XattrFlags {
                create: true,
                ..XattrFlags::default()
            })
        );
        assert_eq!(
            xattr_flags(libc::XATTR_REPLACE, 0),
            Ok(XattrFlags {
                replace: true,
                ..XattrFlags::default()
            })
        );
        assert_eq!(
            xattr_flags(0, fuser::consts::FUSE_SETXATTR_ACL_KILL_SGID),
            Ok(XattrFlags {
                acl_kill_sgid: true,
                ..XattrFlags::default()
            })
        );
        // Unknown setxattr_flags bits are ignored; unknown setxattr(2) flags are not.
        assert_eq!(xattr_flags(0, 1 << 7), Ok(XattrFlags::default()));
        assert_eq!(xattr_flags(4, 0), Err(Errno::EINVAL));
    }

    #[test]
    fn modes_lose_their_file_type() {
        assert_eq!(permission_bits(libc::S_IFREG | 0o644), 0o644);
        assert_eq!(permission_bits(libc::S_IFDIR | 0o1777), 0o1777);
    }
}
