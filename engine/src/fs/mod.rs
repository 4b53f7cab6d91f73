//! engine::fs: the public POSIX-shaped API over inode numbers that FUSE, tests and benches
//! use. POSIX semantics live here (link counts, timestamps, rename rules, sparse files,
//! truncate, orphans), not in the FUSE adapter.
//!
//! **Concurrency (this version).** One reader-writer lock guards the in-memory state:
//! operations that change nothing (lookup, getattr, readdir, readlink, getxattr, statfs,
//! seek, a read's plan and completion) take it shared and run in parallel; every change
//! takes it exclusive. A commit holds it exclusive only to close a delta (a freeze: engine::commit::close) and to finish it, so the
//! frontend goes on in the next delta while a delta is encoded, written, flushed and
//! unified. The writeback scheduler thread commits on age; writers commit when dirty data
//! passes the limit; fsync and sync callers that arrive while a commit runs share it (group
//! commit: each returns once the delta that was open when it called is durable). See
//! docs/ARCHITECTURE.md, "Concurrency today".

pub mod acl;
mod export;
pub(crate) use export::generation_seed;
mod copy;
mod direct;
pub mod flags;
pub use direct::{DIRECT_IO_ALIGN_BYTES, killed_mode};
mod atime;
pub use atime::{AtimeMode, AtimePolicy};
mod image;
pub use image::open_image;
mod posix;
mod readahead;
pub use posix::now;
mod runtime;
mod space;
pub use copy::COPY_MAX_BYTES;
pub use space::{
    FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_INSERT_RANGE, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE,
    FALLOC_FL_ZERO_RANGE, SeekWhence,
};
mod setgid;
mod tmpfile;
mod tombstone;
pub use tombstone::{TOMBSTONES_MAX, Tombstones};
mod trim;
mod whiteout;
pub(crate) use trim::discard_released;
mod types;
mod writeback;
mod xattr;

use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use runtime::{Reconfigure, check_label};
pub use types::*;

use crate::dev::BlockDevice;
use crate::format::superblock::STATE_MOUNTED;
use crate::io::BlockIo;
use crate::lockorder::{Rank, Ranked};
pub use crate::state::FsStats;
use crate::state::State;
use crate::{Errno, Result};

/// Unlocked read attempts before a read runs under the state lock (see [`Filesystem::read`]).
const READ_ATTEMPTS: u32 = 3;

/// Times a read waits for read-ahead of its blocks before it reads under the lock.
const READ_WAITS: u32 = 8;

/// xattr set flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XattrFlags {
    /// XATTR_CREATE: fail with EEXIST if it exists.
    pub create: bool,
    /// XATTR_REPLACE: fail with ENODATA if it does not exist.
    pub replace: bool,
    /// Setting `system.posix_acl_access` also clears S_ISGID: the caller is outside the
    /// file's group and lacks CAP_FSETID (the kernel decides; FUSE_SETXATTR_ACL_KILL_SGID).
    /// Ignored for other names, and for an empty ACL (which removes it).
    pub acl_kill_sgid: bool,
}

/// What the writeback thread and the frontend share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The in-memory state: shared by operations that change nothing ([`Shared::read`]),
    /// exclusive for every change ([`Shared::lock`]).
    pub state: RwLock<State>,
    /// The backend: one commit at a time, so delta D+1 is written only after D's flush
    /// returned (the recovery argument depends on it). Taken before `state`, never after.
    pub backend: Mutex<()>,
    /// Mirror of `State::delta` readable without the lock (group commit).
    pub open_delta: AtomicU64,
    pub opts: MountOptions,
    /// The writeback scheduler's age limit in milliseconds (changed at run time by
    /// [`Filesystem::reconfigure`]; `opts.commit_interval` is the value at mount).
    pub commit_interval_ms: AtomicU64,
    /// Dirty bytes after which a writer commits (changed at run time like the interval).
    pub dirty_limit_bytes: AtomicU64,
    /// The atime policy ([`AtimePolicy::to_bits`]; changed at run time like the interval).
    pub atime: std::sync::atomic::AtomicU8,
}

impl Shared {
    /// Commits the open delta if it has changes; returns when it is durable. Commit is a
    /// freeze: the state lock is held only to close the delta (move its dirty set out,
    /// allocate, open the next one; engine::commit::close) and, briefly, to finish it;
    /// encoding, CRCs, submission, the flush and a unify planned with the delta run without
    /// it, so the frontend goes on in the next delta meanwhile (writes to pages and leaves
    /// being written fork them).
    pub(crate) fn commit_open(&self) -> Result<()> {
        let _backend = self.lock_backend();
        let mut st = self.lock();
        if st.unmounted || st.read_only {
            return Ok(());
        }
        crate::commit::check_writable(&st)?;
        if !st.has_changes() {
            return Ok(());
        }
        if self.opts.debug_wait_writeback {
            let out = crate::commit::commit(&mut st);
            self.open_delta.store(st.delta, Ordering::Release);
            return out;
        }
        let (frozen, unify) = match crate::commit::close(&mut st) {
            Ok(c) => c,
            Err(e) => return Err(crate::commit::fail_with(&mut st, e)),
        };
        self.open_delta.store(st.delta, Ordering::Release);
        let io = st.io.clone();
        drop(st);
        crate::commit::complete(&io, frozen, unify, &mut |step| step(&mut self.lock()))
            .map_err(|e| crate::commit::fail_with(&mut self.lock(), e))
    }

    /// Takes the backend lock: one commit (or unify, remount, label change) at a time. It
    /// guards no data, so a panic under it leaves nothing half-changed: poison is ignored.
    pub(crate) fn lock_backend(&self) -> Ranked<MutexGuard<'_, ()>> {
        Ranked::take(Rank::Backend, || {
            self.backend
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        })
    }

    /// Takes the state lock exclusive (after `backend` when both are held; checked in debug
    /// builds, engine::lockorder).
    pub(crate) fn lock(&self) -> Ranked<RwLockWriteGuard<'_, State>> {
        // A panic while holding the lock leaves the state as it was at the panic; the
        // filesystem then refuses writes (failed) rather than propagating the poison.
        Ranked::take(Rank::State, || match self.state.write() {
            Ok(g) => g,
            Err(poisoned) => {
                let mut g = poisoned.into_inner();
                if g.failed.is_none() {
                    g.failed =
                        Some("an operation panicked while holding the filesystem lock".into());
                }
                g
            }
        })
    }

    /// Takes the state lock shared, for operations that change nothing: any number of
    /// them run together, never beside a change. Same rank as [`Shared::lock`] (a thread
    /// never holds both, nor takes it shared twice). After a panic under the exclusive
    /// lock, the first reader marks the filesystem failed as [`Shared::lock`] would.
    pub(crate) fn read(&self) -> Ranked<RwLockReadGuard<'_, State>> {
        Ranked::take(Rank::State, || match self.state.read() {
            Ok(g) => g,
            Err(poisoned) => {
                let failed = poisoned.into_inner().failed.is_some();
                if !failed {
                    let mut g = self
                        .state
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if g.failed.is_none() {
                        g.failed =
                            Some("an operation panicked while holding the filesystem lock".into());
                    }
                }
                self.state
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            }
        })
    }
}

/// A mounted filesystem. Thread-safe: every method takes `&self`.
#[derive(Debug)]
pub struct Filesystem {
    shared: Arc<Shared>,
    writeback: Mutex<Option<writeback::Handle>>,
    /// Commit requests to the writeback thread (None on a read-only mount).
    commits: Option<crossbeam_channel::Sender<writeback::Request>>,
    /// Mounted read-only: nothing was recovered for writing, so it cannot switch to
    /// read-write (see [`Filesystem::set_read_only`]).
    mounted_read_only: bool,
    /// The read-ahead threads (engine::fs::readahead); None once stopped.
    readahead: Mutex<Option<readahead::Handle>>,
    /// The block size, fixed at mount: a write builds its pages before taking any lock.
    block_size: u32,
}

impl Filesystem {
    /// Mounts (runs recovery; a read-write mount destroys orphans and unifies) and starts
    /// the writeback scheduler thread.
    pub fn mount(dev: Arc<dyn BlockDevice>, opts: MountOptions) -> Result<Arc<Filesystem>> {
        let (sb, _slot) = crate::recovery::read_superblock(dev.as_ref())?;
        let unknown = sb.features.unknown_incompat();
        if unknown != 0 {
            return Err(crate::Error::Unsupported {
                what: format!("incompatible features {unknown:#x}"),
            });
        }
        let unknown_ro = sb.features.unknown_ro_compat();
        if unknown_ro != 0 && !opts.read_only {
            return Err(crate::Error::Unsupported {
                what: format!("read-only-compatible features {unknown_ro:#x}: mount read-only"),
            });
        }
        if !image::block_size_fits(sb.block_size, dev.alignment()) {
            return Err(crate::Error::Unsupported {
                what: format!(
                    "block size {} on a device that needs {}-byte aligned I/O (O_DIRECT): \
                     open the image without O_DIRECT",
                    sb.block_size,
                    dev.alignment()
                ),
            });
        }
        let need = sb.block_count * u64::from(sb.block_size);
        if dev.size_bytes() < need {
            return Err(crate::Error::invalid(format!(
                "the device has {} bytes, the filesystem {need}",
                dev.size_bytes()
            )));
        }
        let sb_block_size = sb.block_size;
        let io = BlockIo {
            dev,
            block_size: sb.block_size,
            block_count: sb.block_count,
        };
        let mut st = crate::recovery::recover(io, sb, opts.read_only)?;
        st.unify_log_blocks = opts.unify_log_blocks.max(1);
        st.leaf_cache_bytes = opts.leaf_cache_bytes;
        st.read.cache = Arc::new(crate::cache::PageCache::new(opts.data_cache_bytes));
        st.debug_ack_before_data = opts.debug_ack_before_data;
        st.alloc.discard_freed = opts.discard && !opts.read_only;
        if !opts.read_only {
            // Destroying the orphans reads leaves recovery did not: damage met there is
            // reported as recovery reports it, naming the block and telling to run fsck.
            let settle = |st: &mut State| -> Result<()> {
                posix::destroy_orphans(st)?;
                crate::commit::commit(st)?;
                st.sb.mount_count += 1;
                st.sb.last_mount_sec = crate::commit::now_sec();
                crate::commit::unify(st, STATE_MOUNTED)
            };
            settle(&mut st).map_err(crate::recovery::with_fsck_hint)?;
        }
        let shared = Arc::new(Shared {
            open_delta: AtomicU64::new(st.delta),
            state: RwLock::new(st),
            backend: Mutex::new(()),
            commit_interval_ms: AtomicU64::new(
                u64::try_from(opts.commit_interval.as_millis()).unwrap_or(u64::MAX),
            ),
            dirty_limit_bytes: AtomicU64::new(opts.dirty_limit_bytes),
            atime: std::sync::atomic::AtomicU8::new(opts.atime.to_bits()),
            opts: opts.clone(),
        });
        let handle = if opts.read_only {
            None
        } else {
            let started = writeback::start(shared.clone());
            Some(started.map_err(|e| crate::Error::io("starting the writeback thread", e))?)
        };
        let commits = handle.as_ref().map(writeback::Handle::sender);
        let ahead = readahead::start(shared.clone())
            .map_err(|e| crate::Error::io("starting the read-ahead threads", e))?;
        shared.lock().read.async_readahead = true;
        Ok(Arc::new(Filesystem {
            shared,
            writeback: Mutex::new(handle),
            commits,
            mounted_read_only: opts.read_only,
            readahead: Mutex::new(Some(ahead)),
            block_size: sb_block_size,
        }))
    }

    /// Commits everything, unifies, marks the image clean and stops the writeback thread.
    /// Later calls of other methods fail.
    pub fn unmount(&self) -> Result<()> {
        let handle = self.writeback.lock().map(|mut h| h.take()).unwrap_or(None);
        if let Some(h) = handle {
            h.stop();
        }
        let _backend = self.shared.lock_backend();
        let mut st = self.shared.lock();
        if st.unmounted {
            return Ok(());
        }
        let result = if st.read_only || st.failed.is_some() {
            Ok(())
        } else {
            crate::commit::commit(&mut st).and_then(|()| {
                crate::commit::unify(&mut st, crate::format::superblock::STATE_CLEAN)
            })
        };
        st.unmounted = true;
        result
    }

    /// Why the filesystem went read-only after a write failure, if it did (then nothing more
    /// is written, and `unmount` commits nothing).
    pub fn failure(&self) -> Option<String> {
        self.shared.read().failed.clone()
    }

    /// Filesystem block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Counters: deltas, bytes written, unifies, commit latency.
    pub fn stats(&self) -> FsStats {
        let st = self.shared.read();
        let cache = st.read.cache.stats();
        FsStats {
            data_cache_hits: cache.hits,
            data_cache_misses: cache.misses,
            data_cache_bytes: cache.bytes,
            data_readahead_blocks: st.read.readahead_blocks.load(Ordering::Relaxed),
            data_checksum_errors: st.read.checksum_errors.load(Ordering::Relaxed),
            ..st.stats.clone()
        }
    }

    /// Has the writeback thread commit the open delta and waits until it is durable (on a
    /// read-only mount there is nothing to commit).
    fn commit(&self) -> Result<()> {
        match &self.commits {
            Some(tx) => writeback::request_commit(tx),
            None => self.shared.commit_open(),
        }
    }

    /// Runs `f`, which changes nothing, on the state held shared (in parallel with other
    /// such operations), refusing after unmount.
    fn view<T>(&self, f: impl FnOnce(&State) -> Result<T>) -> Result<T> {
        let st = self.shared.read();
        if st.unmounted {
            return Err(Errno::Io.into());
        }
        f(&st)
    }

    /// Runs `f` on the state held exclusive, refusing after unmount.
    fn with<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let mut st = self.shared.lock();
        if st.unmounted {
            return Err(Errno::Io.into());
        }
        let out = f(&mut st);
        self.shared.open_delta.store(st.delta, Ordering::Release);
        out
    }

    /// Runs a change: refuses on a read-only or failed filesystem. A writer that pushed dirty
    /// data past the limit then commits and waits for it (throttling, counted in
    /// `writer_throttle_us`); under the limit a writer never waits for I/O.
    ///
    /// Space pressure: blocks the open delta freed (a deleted file's) become allocatable only
    /// once that delta is durable. So an ENOSPC while the open delta has changes commits it
    /// and retries once; every operation reserves before it changes anything, so the failed
    /// attempt left nothing behind.
    fn change<T>(&self, f: impl Fn(&mut State) -> Result<T>) -> Result<T> {
        let limit = self.shared.dirty_limit_bytes.load(Ordering::Relaxed);
        let attempt = || {
            self.with(|st| {
                crate::commit::check_writable(st)?;
                let out = f(st)?;
                Ok((out, st.dirty_bytes() > limit))
            })
        };
        let (out, over) = match attempt() {
            Err(e) if e.errno() == Errno::NoSpace && self.view(|st| Ok(st.has_changes()))? => {
                self.commit()?;
                self.shared.lock().stats.space_pressure_commits += 1;
                attempt()?
            }
            other => other?,
        };
        if over {
            let started = std::time::Instant::now();
            self.commit()?;
            self.shared.lock().stats.writer_throttle_us += started.elapsed().as_micros() as u64;
        }
        Ok(out)
    }

    /// Returns once the delta that was open at the call is durable. Group commit: callers
    /// queue on the backend, and those whose delta a commit already covered return at once.
    fn sync_open_delta(&self) -> Result<()> {
        let target = self.shared.open_delta.load(Ordering::Acquire);
        let _backend = self.shared.lock_backend();
        {
            let st = self.shared.read();
            if st.unmounted {
                return Err(Errno::Io.into());
            }
            // After a failed write, fsync reports the I/O error (EIO), not EROFS.
            if st.failed.is_some() {
                return Err(Errno::Io.into());
            }
            if st.durable_delta >= target || st.read_only {
                return Ok(());
            }
        }
        drop(_backend);
        self.commit()
    }

    pub fn statfs(&self) -> Result<StatFs> {
        self.view(|st| Ok(posix::statfs(st)))
    }
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        self.view(|st| posix::lookup(st, parent, name))
    }
    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        self.view(|st| posix::getattr(st, ino))
    }
    pub fn setattr(&self, ino: u64, set: &SetAttr) -> Result<Attr> {
        let attr = self.change(|st| posix::setattr(st, ino, set))?;
        self.sync_if_flagged(ino)?;
        Ok(attr)
    }
    /// Creates a regular file, device node, fifo or socket; `mode` includes the S_IF* type
    /// and has the umask applied already (see [`Filesystem::mknod_umask`]).
    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        caller: Caller,
    ) -> Result<Attr> {
        self.mknod_umask(parent, name, mode, rdev, 0, caller)
    }
    /// mknod with the caller's umask still to apply: it applies unless the parent has a
    /// default ACL, which then gives the new inode its ACL and mode (POSIX ACL rules).
    pub fn mknod_umask(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        umask: u32,
        caller: Caller,
    ) -> Result<Attr> {
        self.dir_change(&[parent], |st| {
            posix::mknod(st, parent, name, mode, rdev, umask, caller)
        })
    }
    /// Creates and opens a regular file (call `release` to close it); the umask is applied
    /// already (see [`Filesystem::create_umask`]).
    pub fn create(&self, parent: u64, name: &[u8], mode: u32, caller: Caller) -> Result<Attr> {
        self.create_umask(parent, name, mode, 0, caller)
    }
    /// create with the caller's umask still to apply (as [`Filesystem::mknod_umask`]).
    pub fn create_umask(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        caller: Caller,
    ) -> Result<Attr> {
        self.dir_change(&[parent], |st| {
            let attr = posix::mknod(
                st,
                parent,
                name,
                crate::format::inode::S_IFREG | (mode & 0o7777),
                0,
                umask,
                caller,
            )?;
            *st.opens.entry(attr.ino).or_default() += 1;
            Ok(attr)
        })
    }
    /// Creates an open regular file without a name in `parent` (O_TMPFILE), with the
    /// caller's umask still to apply; `link` may name it, the last `release` frees it
    /// otherwise (engine/src/fs/tmpfile.rs).
    pub fn tmpfile_umask(
        &self,
        parent: u64,
        mode: u32,
        umask: u32,
        caller: Caller,
    ) -> Result<Attr> {
        self.change(|st| tmpfile::create(st, parent, mode, umask, caller))
    }
    /// Creates a directory; the umask is applied already (see [`Filesystem::mkdir_umask`]).
    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, caller: Caller) -> Result<Attr> {
        self.mkdir_umask(parent, name, mode, 0, caller)
    }
    /// mkdir with the caller's umask still to apply (as [`Filesystem::mknod_umask`]); a
    /// new directory also inherits its parent's default ACL.
    pub fn mkdir_umask(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        caller: Caller,
    ) -> Result<Attr> {
        self.dir_change(&[parent], |st| {
            posix::mkdir(st, parent, name, mode, umask, caller)
        })
    }
    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<()> {
        self.dir_change(&[parent], |st| posix::unlink(st, parent, name))
    }
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<()> {
        self.dir_change(&[parent], |st| posix::rmdir(st, parent, name))
    }
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: RenameFlags,
    ) -> Result<()> {
        self.dir_change(&[parent, new_parent], |st| {
            posix::rename(st, parent, name, new_parent, new_name, flags)
        })
    }
    /// rename with RENAME_WHITEOUT: the source name becomes a whiteout (a 0/0 character
    /// device owned by `caller`) in the same operation (engine/src/fs/whiteout.rs).
    pub fn rename_whiteout(
        &self,
        (parent, name): (u64, &[u8]),
        (new_parent, new_name): (u64, &[u8]),
        noreplace: bool,
        caller: Caller,
    ) -> Result<()> {
        self.change(|st| {
            whiteout::rename(
                st,
                (parent, name),
                (new_parent, new_name),
                noreplace,
                caller,
            )
        })
    }
    pub fn link(&self, ino: u64, new_parent: u64, new_name: &[u8]) -> Result<Attr> {
        self.dir_change(&[new_parent], |st| {
            posix::link(st, ino, new_parent, new_name)
        })
    }
    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8], caller: Caller) -> Result<Attr> {
        self.dir_change(&[parent], |st| {
            posix::symlink(st, parent, name, target, caller)
        })
    }
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        self.view(|st| posix::readlink(st, ino))
    }
    /// Opens an inode (counts opens so that unlinked open files live until released).
    pub fn open(&self, ino: u64) -> Result<()> {
        self.with(|st| {
            crate::inode::get(st, ino)?;
            *st.opens.entry(ino).or_default() += 1;
            Ok(())
        })
    }
    /// The kernel forgot node `ino` (FUSE FORGET): the engine drops what it kept of it
    /// after freeing it (engine::fs::tombstone).
    pub fn forget(&self, ino: u64) {
        self.with(|st| {
            tombstone::forget(st, ino);
            Ok(())
        })
        .ok();
    }
    /// Closes an inode; the last close of an unlinked file frees it.
    pub fn release(&self, ino: u64) -> Result<()> {
        self.with(|st| posix::release(st, ino))
    }
    /// Reads up to `size` bytes at `offset`. Blocks that must come from the device are read
    /// without the state lock (engine::data::read); a reader whose inode changed meanwhile
    /// plans again, and after [`READ_ATTEMPTS`] tries reads under the lock.
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let out = self.read_data(ino, offset, size)?;
        self.accessed(ino);
        Ok(out)
    }

    /// The atime policy in force.
    pub fn atime_policy(&self) -> AtimePolicy {
        AtimePolicy::from_bits(self.shared.atime.load(Ordering::Relaxed))
    }

    /// Records an access to `ino` by the atime policy (engine/src/fs/atime.rs). A failure
    /// to record it (the filesystem just turned read-only, say) does not fail the access.
    fn accessed(&self, ino: u64) {
        let policy = self.atime_policy();
        if matches!(
            self.view(|st| atime::wants_update(st, ino, policy)),
            Ok(true)
        ) {
            let _ = self.change(|st| atime::touch(st, ino, policy));
        }
    }

    fn read_data(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let (mut attempts, mut waits) = (0, 0);
        while attempts < READ_ATTEMPTS && waits < READ_WAITS {
            let mut plan = self.view(|st| posix::read_plan(st, ino, offset, size))?;
            self.hand_readahead(&mut plan);
            if let Some(done) = plan.take_wait() {
                // A read-ahead is loading a block this read needs: wait for it, not load twice.
                done.wait();
                waits += 1;
                continue;
            }
            attempts += 1;
            if plan.is_complete() {
                return Ok(plan.into_bytes());
            }
            let loaded = crate::data::load(&plan);
            if let Some(out) = self.view(|st| crate::data::complete_read(st, plan, loaded))? {
                return Ok(out);
            }
        }
        self.view(|st| posix::read(st, ino, offset, size))
    }

    /// Gives a plan's read-ahead to the read-ahead threads (or forgets it when they have
    /// stopped).
    fn hand_readahead(&self, plan: &mut crate::data::ReadPlan) {
        let Some((ahead, done)) = plan.take_ahead() else {
            return;
        };
        let inum = ahead.inum();
        let sent = match self.readahead.lock() {
            Ok(h) => h
                .as_ref()
                .is_some_and(|h| h.tx.send((ahead, done.clone())).is_ok()),
            Err(_) => false,
        };
        if !sent {
            crate::data::end_readahead(&self.shared.read(), inum, &done);
        }
    }
    /// Writes `data` at `offset` (at the end of the file when `append`); returns bytes written.
    pub fn write(&self, ino: u64, offset: u64, data: &[u8], append: bool) -> Result<u32> {
        // Whole blocks are built (one copy, their CRCs) before the lock; under it they are
        // only moved in. An append learns its offset under the lock: it copies there.
        let prepared = crate::data::PreparedCell::new(
            (!append).then(|| crate::data::prepare(self.block_size, offset, data)),
        );
        let written = self
            .change(|st| posix::write_prepared(st, ino, offset, data, append, prepared.take()))?;
        self.sync_if_flagged(ino)?;
        Ok(written)
    }
    /// fallocate(2) on `ino`: `mode` is the Linux FALLOC_FL_* bits (engine::fs::space).
    pub fn fallocate(&self, ino: u64, offset: u64, len: u64, mode: u32) -> Result<()> {
        self.change(|st| space::fallocate(st, ino, offset, len, mode))
    }
    /// lseek(2) SEEK_DATA / SEEK_HOLE on `ino` from `offset`.
    pub fn seek(&self, ino: u64, offset: i64, whence: SeekWhence) -> Result<u64> {
        self.view(|st| space::seek(st, ino, offset, whence))
    }
    /// copy_file_range(2): copies up to `len` bytes (at most [`COPY_MAX_BYTES`] per call)
    /// in the engine; returns the bytes copied.
    pub fn copy_file_range(
        &self,
        ino_in: u64,
        off_in: u64,
        ino_out: u64,
        off_out: u64,
        len: u64,
        flags: u32,
    ) -> Result<u64> {
        self.change(|st| copy::copy_file_range(st, ino_in, off_in, ino_out, off_out, len, flags))
    }
    /// Returns when every change made before the call is durable.
    pub fn fsync(&self, ino: u64, _datasync: bool) -> Result<()> {
        self.view(|st| crate::inode::get(st, ino).map(|_| ()))?;
        self.sync_open_delta()
    }
    /// fsync that does not wait: returns at once and calls `done` with what [`fsync`]
    /// would have returned, once every change made before the call is durable. `done` runs
    /// on the calling thread when nothing needs committing (or on an error found at once),
    /// otherwise on the writeback thread, which it must not hold up (answer and return). If
    /// the filesystem is unmounted meanwhile, `done` may be dropped without being called.
    ///
    /// [`fsync`]: Filesystem::fsync
    pub fn fsync_then(
        &self,
        ino: u64,
        _datasync: bool,
        done: impl FnOnce(Result<()>) + Send + 'static,
    ) {
        if let Err(e) = self.view(|st| crate::inode::get(st, ino).map(|_| ())) {
            return done(Err(e));
        }
        let target = self.shared.open_delta.load(Ordering::Acquire);
        {
            let st = self.shared.read();
            // As sync_open_delta: after unmount or a failed write, EIO.
            if st.unmounted || st.failed.is_some() {
                return done(Err(Errno::Io.into()));
            }
            // Durable already: a commit covered the target, or the open delta is empty and
            // every closed one is durable.
            let all_durable = st.durable_delta + 1 >= st.delta && !st.has_changes();
            if st.durable_delta >= target || all_durable || st.read_only {
                return done(Ok(()));
            }
        }
        match &self.commits {
            Some(tx) => writeback::request_commit_then(
                tx,
                target,
                Box::new(move |outcome| done(outcome.map_err(Into::into))),
            ),
            None => done(self.shared.commit_open()),
        }
    }
    /// Returns when everything is durable.
    pub fn sync(&self) -> Result<()> {
        self.sync_open_delta()
    }
    /// Entries after cookie `offset` (0 = from the start; "." is cookie 1 and ".." 2).
    pub fn readdir(&self, ino: u64, offset: u64, max: usize) -> Result<Vec<DirEntry>> {
        let out = self.view(|st| posix::readdir(st, ino, offset, max))?;
        self.accessed(ino);
        Ok(out)
    }
    /// readdir with each entry's attributes.
    pub fn readdir_plus(&self, ino: u64, offset: u64, max: usize) -> Result<Vec<(DirEntry, Attr)>> {
        let out = self.view(|st| {
            let entries = posix::readdir(st, ino, offset, max)?;
            entries
                .into_iter()
                .map(|e| Ok((e.clone(), posix::getattr(st, e.ino)?)))
                .collect()
        })?;
        self.accessed(ino);
        Ok(out)
    }
    /// getxattr as the superuser (see [`Filesystem::getxattr_as`]).
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        self.getxattr_as(ino, name, Caller::SUPERUSER)
    }
    /// setxattr as the superuser (see [`Filesystem::setxattr_as`]).
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: XattrFlags) -> Result<()> {
        self.setxattr_as(ino, name, value, flags, Caller::SUPERUSER)
    }
    /// listxattr as the superuser (see [`Filesystem::listxattr_as`]).
    pub fn listxattr(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        self.listxattr_as(ino, Caller::SUPERUSER)
    }
    /// removexattr as the superuser (see [`Filesystem::removexattr_as`]).
    pub fn removexattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        self.removexattr_as(ino, name, Caller::SUPERUSER)
    }
    /// The value of xattr `name`, read by `caller` (namespace rules: engine::fs::xattr).
    pub fn getxattr_as(&self, ino: u64, name: &[u8], caller: Caller) -> Result<Vec<u8>> {
        self.view(|st| xattr::getxattr(st, ino, name, caller))
    }
    /// Sets xattr `name` for `caller`; values up to 64 KiB, spilling out of the inode
    /// record into spill blocks when needed.
    pub fn setxattr_as(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
        caller: Caller,
    ) -> Result<()> {
        self.change(|st| xattr::setxattr(st, ino, name, value, flags, caller))
    }
    /// The xattr names `caller` may see (`trusted.*` only for the superuser).
    pub fn listxattr_as(&self, ino: u64, caller: Caller) -> Result<Vec<Vec<u8>>> {
        self.view(|st| xattr::listxattr(st, ino, caller))
    }
    /// Removes xattr `name` for `caller`.
    pub fn removexattr_as(&self, ino: u64, name: &[u8], caller: Caller) -> Result<()> {
        self.change(|st| xattr::removexattr(st, ino, name, caller))
    }
}

impl Drop for Filesystem {
    fn drop(&mut self) {
        // Stop the thread; an unmount that was not asked for leaves the image as a crash
        // would (recovery handles it), which is what tests of crashes rely on.
        if let Ok(mut h) = self.writeback.lock()
            && let Some(h) = h.take()
        {
            h.stop();
        }
        if let Ok(mut h) = self.readahead.lock()
            && let Some(h) = h.take()
        {
            drop(h.tx);
            for t in h.threads {
                let _ = t.join();
            }
        }
    }
}
