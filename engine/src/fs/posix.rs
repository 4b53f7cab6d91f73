//! POSIX semantics over the state: every rule about link counts, timestamps, renames,
//! truncation, sparse files and orphans lives here.

use crate::format::dirent::{DT_DIR, dtype_of_mode};
use crate::format::inode::{
    Inode, InodeFlags, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK,
    Timestamp,
};
use crate::format::log::LogRecord;
use crate::format::{NAME_MAX, ROOT_INUM};
use crate::state::State;
use crate::{Errno, Result, data, dir, inode};

use super::{Attr, Caller, DirEntry, FileKind, RenameFlags, SetAttr, StatFs, TimeSet};

/// Most links one inode may have (as ext4).
const LINK_MAX: u32 = 65000;
/// Longest symlink target (PATH_MAX - 1).
const SYMLINK_MAX: usize = 4095;
/// Largest file size: file blocks must stay far from u64 overflow.
pub(super) const FILE_SIZE_MAX: u64 = 1 << 50;

/// The current time, for timestamps.
pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        sec: d.as_secs() as i64,
        nsec: d.subsec_nanos(),
    }
}

fn kind_of(mode: u32) -> FileKind {
    match mode & S_IFMT {
        S_IFDIR => FileKind::Directory,
        S_IFLNK => FileKind::Symlink,
        S_IFCHR => FileKind::CharDevice,
        S_IFBLK => FileKind::BlockDevice,
        S_IFIFO => FileKind::Fifo,
        S_IFSOCK => FileKind::Socket,
        _ => FileKind::Regular,
    }
}

pub(super) fn attr_of(st: &State, ino: u64, i: &Inode) -> Attr {
    let bs = st.bs();
    Attr {
        ino,
        size: if i.is_dir() { u64::from(bs) } else { i.size },
        // Allocated blocks plus the delayed allocations of the open delta, so a file
        // written a moment ago does not look like a hole to tar -S or du.
        blocks: (i.blocks + st.delalloc_blocks(ino)) * u64::from(bs) / 512,
        atime: i.atime,
        mtime: i.mtime,
        ctime: i.ctime,
        crtime: i.btime,
        kind: kind_of(i.mode),
        perm: (i.mode & 0o7777) as u16,
        nlink: i.nlink,
        uid: i.uid,
        gid: i.gid,
        rdev: i.rdev as u32,
        blksize: bs,
        generation: i.generation,
    }
}

pub(super) fn getattr(st: &State, ino: u64) -> Result<Attr> {
    let i = inode::get(st, ino)?;
    Ok(attr_of(st, ino, &i))
}

pub(super) fn dir_inode(st: &State, ino: u64) -> Result<Inode> {
    let i = inode::get(st, ino)?;
    if !i.is_dir() {
        return Err(Errno::NotDir.into());
    }
    Ok(i)
}

pub(super) fn statfs(st: &State) -> StatFs {
    let used_inodes = st.inode_count;
    StatFs {
        blocks: st.sb.block_count,
        // Blocks reserved by accepted writes are used from the moment they are accepted.
        bfree: st.alloc.free_blocks().saturating_sub(st.alloc.reserved()),
        bavail: st.alloc.available(),
        files: used_inodes + st.alloc.available(),
        ffree: st.alloc.available(),
        bsize: st.bs(),
        namelen: NAME_MAX as u32,
        frsize: st.bs(),
    }
}

pub(super) fn lookup(st: &State, parent: u64, name: &[u8]) -> Result<Attr> {
    if name.len() > NAME_MAX {
        return Err(Errno::NameTooLong.into());
    }
    let p = dir_inode(st, parent)?;
    let ino = match name {
        b"." => parent,
        b".." => p.parent,
        _ => dir::lookup(st, parent, name)?.ok_or(Errno::NoEntry)?.1.inum,
    };
    getattr(st, ino)
}

/// Checks that `name` can be created in `parent`; returns the parent inode.
fn prepare_create(st: &mut State, parent: u64, name: &[u8]) -> Result<Inode> {
    dir::check_name(name)?;
    let p = dir_inode(st, parent)?;
    if p.nlink == 0 {
        return Err(Errno::NoEntry.into());
    }
    super::flags::check_add_entry(&p)?;
    if dir::lookup(st, parent, name)?.is_some() {
        return Err(Errno::Exists.into());
    }
    Ok(p)
}

/// Makes a new inode named `name` in `parent`; parent times (and link count for a
/// directory) are updated.
/// `umask` (None for a symlink) applies unless the parent has a default ACL (acl.rs).
fn create_inode(
    st: &mut State,
    parent: u64,
    name: &[u8],
    mut node: Inode,
    umask: Option<u32>,
) -> Result<Attr> {
    let mut p = prepare_create(st, parent, name)?;
    super::flags::inherit(&p, &mut node);
    super::setgid::inherit(&p, &mut node);
    if let Some(umask) = umask {
        super::acl::on_create(st, parent, &p, &mut node, umask)?;
        if crate::format::xattr::entries_len(&node.inline_xattrs) > xattr_room(st, &node) {
            return Err(Errno::NoSpace.into());
        }
    }
    // Metadata of a new name needs a few blocks at commit: keep them reserved.
    st.alloc.reserve(2)?;
    st.delta_reserved += 2;
    // Find the entry's position before anything changes (a full hash bucket is ENOSPC).
    let pos = dir::free_position(st, parent, name)?;
    let t = now();
    (node.atime, node.mtime, node.ctime, node.btime) = (t, t, t, t);
    let ino = inode::allocate(st);
    node.generation = super::export::next_generation(st);
    if node.is_dir() {
        node.parent = parent;
        p.nlink += 1;
    }
    dir::insert_at(st, parent, pos, name, ino, dtype_of_mode(node.mode))?;
    inode::put(st, ino, &node)?;
    (p.mtime, p.ctime) = (t, t);
    inode::put(st, parent, &p)?;
    Ok(attr_of(st, ino, &node))
}

pub(super) fn mknod(
    st: &mut State,
    parent: u64,
    name: &[u8],
    mode: u32,
    rdev: u32,
    umask: u32,
    c: Caller,
) -> Result<Attr> {
    let ty = match mode & S_IFMT {
        0 => S_IFREG,
        t @ (S_IFREG | S_IFCHR | S_IFBLK | S_IFIFO | S_IFSOCK) => t,
        _ => return Err(Errno::Invalid.into()),
    };
    let node = Inode {
        mode: ty | (mode & 0o7777),
        uid: c.uid,
        gid: c.gid,
        nlink: 1,
        rdev: u64::from(rdev),
        ..Inode::default()
    };
    create_inode(st, parent, name, node, Some(umask))
}

pub(super) fn mkdir(
    st: &mut State,
    parent: u64,
    name: &[u8],
    mode: u32,
    umask: u32,
    c: Caller,
) -> Result<Attr> {
    let node = Inode {
        mode: S_IFDIR | (mode & 0o7777),
        uid: c.uid,
        gid: c.gid,
        nlink: 2,
        parent,
        ..Inode::default()
    };
    create_inode(st, parent, name, node, Some(umask))
}

pub(super) fn symlink(
    st: &mut State,
    parent: u64,
    name: &[u8],
    target: &[u8],
    c: Caller,
) -> Result<Attr> {
    if target.is_empty() || target.contains(&0) {
        return Err(Errno::Invalid.into());
    }
    if target.len() > SYMLINK_MAX {
        return Err(Errno::NameTooLong.into());
    }
    let inline = target.len() <= inline_data_max(st);
    let mut node = Inode {
        mode: S_IFLNK | 0o777,
        uid: c.uid,
        gid: c.gid,
        nlink: 1,
        size: target.len() as u64,
        ..Inode::default()
    };
    if inline {
        node.flags = InodeFlags::INLINE_DATA;
        node.inline_data = target.to_vec();
    }
    // Name errors (EEXIST, ENOENT, ENOTDIR) come before ENOSPC, as on other filesystems.
    prepare_create(st, parent, name)?;
    // Reserve the target's blocks before anything changes, so ENOSPC leaves no trace.
    let blocks = if inline {
        0
    } else {
        target.len().div_ceil(st.bs() as usize) as u64 + 1
    };
    st.alloc.reserve(blocks)?;
    st.delta_reserved += blocks;
    let attr = create_inode(st, parent, name, node, None)?;
    if !inline {
        data::write(st, attr.ino, 0, target)?;
    }
    getattr(st, attr.ino)
}

/// Longest symlink target stored in the inode record itself.
fn inline_data_max(st: &State) -> usize {
    (crate::format::btree::value_max(st.bs()) / 2)
        .saturating_sub(crate::format::inode::INODE_FIXED_SIZE)
        .min(512)
}

pub(super) fn readlink(st: &State, ino: u64) -> Result<Vec<u8>> {
    let i = inode::get(st, ino)?;
    if i.file_type() != S_IFLNK {
        return Err(Errno::Invalid.into());
    }
    if i.flags.contains(InodeFlags::INLINE_DATA) {
        return Ok(i.inline_data);
    }
    data::read(st, ino, 0, i.size as u32, i.size)
}

/// Drops one link of `ino` (its name is already gone). At zero links the inode is freed,
/// or put on the orphan list while it is open.
fn drop_link(st: &mut State, ino: u64, t: Timestamp) -> Result<()> {
    let mut i = inode::get(st, ino)?;
    i.nlink = if i.is_dir() {
        0
    } else {
        i.nlink.saturating_sub(1)
    };
    i.ctime = t;
    if i.nlink > 0 {
        return inode::put(st, ino, &i);
    }
    if st.opens.get(&ino).copied().unwrap_or(0) > 0 {
        inode::put(st, ino, &i)?;
        st.orphans.insert(ino);
        st.records.push(LogRecord::OrphanAdd { inum: ino });
        return Ok(());
    }
    destroy(st, ino)
}

/// Frees an inode with no links: its data, its xattr spill chain, then its record.
fn destroy(st: &mut State, ino: u64) -> Result<()> {
    st.linkable.remove(&ino);
    data::punch(st, ino, 0, u64::MAX)?;
    let i = inode::get(st, ino)?;
    crate::xattr::destroy(st, ino, &i);
    let last = attr_of(st, ino, &i);
    inode::remove(st, ino)?;
    super::tombstone::bury(st, ino, last);
    Ok(())
}

/// Recovery: frees every inode left on the orphan list by a crash.
pub(crate) fn destroy_orphans(st: &mut State) -> Result<()> {
    for ino in std::mem::take(&mut st.orphans) {
        destroy(st, ino)?;
        st.records.push(LogRecord::OrphanDel { inum: ino });
        st.stats.orphans_destroyed += 1;
    }
    Ok(())
}

pub(super) fn release(st: &mut State, ino: u64) -> Result<()> {
    let Some(count) = st.opens.get_mut(&ino) else {
        return Ok(());
    };
    *count -= 1;
    if *count > 0 {
        return Ok(());
    }
    st.opens.remove(&ino);
    if st.orphans.contains(&ino) && !st.read_only && st.failed.is_none() {
        destroy(st, ino)?;
        st.orphans.remove(&ino);
        st.records.push(LogRecord::OrphanDel { inum: ino });
    }
    Ok(())
}

/// Removes the name `name` from `parent`, which must name a non-directory (or a directory
/// when `want_dir`). Returns the inode it named.
fn remove_name(st: &mut State, parent: u64, name: &[u8], want_dir: bool) -> Result<u64> {
    if name.len() > NAME_MAX {
        return Err(Errno::NameTooLong.into());
    }
    if name == b"." || name == b".." {
        return Err(if want_dir {
            Errno::Invalid
        } else {
            Errno::IsDir
        }
        .into());
    }
    let mut p = dir_inode(st, parent)?;
    let (pos, entry) = dir::lookup(st, parent, name)?.ok_or(Errno::NoEntry)?;
    let is_dir = entry.dtype == DT_DIR;
    if is_dir && !want_dir {
        return Err(Errno::IsDir.into());
    }
    if !is_dir && want_dir {
        return Err(Errno::NotDir.into());
    }
    if is_dir && !dir::is_empty(st, entry.inum)? {
        return Err(Errno::NotEmpty.into());
    }
    super::flags::check_remove_entry(&p)?;
    super::flags::check_fixed(&inode::get(st, entry.inum)?)?;
    dir::remove(st, parent, pos)?;
    let t = now();
    if is_dir {
        p.nlink -= 1;
    }
    (p.mtime, p.ctime) = (t, t);
    inode::put(st, parent, &p)?;
    drop_link(st, entry.inum, t)?;
    Ok(entry.inum)
}

pub(super) fn unlink(st: &mut State, parent: u64, name: &[u8]) -> Result<()> {
    remove_name(st, parent, name, false).map(|_| ())
}

pub(super) fn rmdir(st: &mut State, parent: u64, name: &[u8]) -> Result<()> {
    remove_name(st, parent, name, true).map(|_| ())
}

pub(super) fn link(st: &mut State, ino: u64, new_parent: u64, new_name: &[u8]) -> Result<Attr> {
    let mut i = inode::get(st, ino)?;
    if i.is_dir() {
        return Err(Errno::Perm.into());
    }
    if i.nlink >= LINK_MAX {
        return Err(Errno::TooManyLinks.into());
    }
    // An inode without links gets a name only if it is an O_TMPFILE not linked yet.
    let tmpfile = i.nlink == 0;
    if tmpfile && !st.linkable.contains(&ino) {
        return Err(Errno::NoEntry.into());
    }
    super::flags::check_fixed(&i)?;
    let mut p = prepare_create(st, new_parent, new_name)?;
    super::flags::check_project(&p, &i)?;
    dir::add(st, new_parent, new_name, ino, dtype_of_mode(i.mode))?;
    if tmpfile {
        super::tmpfile::linked(st, ino);
    }
    let t = now();
    i.nlink += 1;
    i.ctime = t;
    inode::put(st, ino, &i)?;
    (p.mtime, p.ctime) = (t, t);
    inode::put(st, new_parent, &p)?;
    Ok(attr_of(st, ino, &i))
}

/// True when `ancestor` is `dir` or one of its ancestors.
fn is_ancestor(st: &State, ancestor: u64, mut dir: u64) -> Result<bool> {
    for _ in 0..=st.inode_count + 1 {
        if dir == ancestor {
            return Ok(true);
        }
        if dir == ROOT_INUM {
            return Ok(false);
        }
        dir = inode::get(st, dir)?.parent;
    }
    Ok(false)
}

pub(super) fn rename(
    st: &mut State,
    parent: u64,
    name: &[u8],
    new_parent: u64,
    new_name: &[u8],
    flags: RenameFlags,
) -> Result<()> {
    if flags.exchange && flags.noreplace {
        return Err(Errno::Invalid.into());
    }
    if name.len() > NAME_MAX || new_name.len() > NAME_MAX {
        return Err(Errno::NameTooLong.into());
    }
    for n in [name, new_name] {
        if n == b"." || n == b".." {
            return Err(Errno::Invalid.into());
        }
    }
    dir::check_name(new_name)?;
    dir_inode(st, parent)?;
    dir_inode(st, new_parent)?;
    let (src_pos, src) = dir::lookup(st, parent, name)?.ok_or(Errno::NoEntry)?;
    let target = dir::lookup(st, new_parent, new_name)?;
    if parent == new_parent && name == new_name {
        return Ok(());
    }
    let dst = target.as_ref().map(|(_, d)| d.inum);
    super::flags::check_rename(st, (parent, src.inum), new_parent, dst, flags.exchange)?;
    let src_is_dir = src.dtype == DT_DIR;
    if src_is_dir && is_ancestor(st, src.inum, new_parent)? {
        return Err(Errno::Invalid.into());
    }
    if flags.exchange {
        let (dst_pos, dst) = target.ok_or(Errno::NoEntry)?;
        if dst.dtype == DT_DIR && is_ancestor(st, dst.inum, parent)? {
            return Err(Errno::Invalid.into());
        }
        return exchange(
            st,
            (parent, src_pos, name, src.inum, src.dtype),
            (new_parent, dst_pos, new_name, dst.inum, dst.dtype),
        );
    }
    let t = now();
    // Where the new name goes: the replaced entry's slot, or a free one found before
    // anything changes.
    let new_pos = match &target {
        Some((pos, _)) => *pos,
        None => dir::free_position(st, new_parent, new_name)?,
    };
    if let Some((dst_pos, dst)) = target {
        if flags.noreplace {
            return Err(Errno::Exists.into());
        }
        if dst.inum == src.inum {
            return Ok(());
        }
        let dst_is_dir = dst.dtype == DT_DIR;
        match (src_is_dir, dst_is_dir) {
            (true, false) => return Err(Errno::NotDir.into()),
            (false, true) => return Err(Errno::IsDir.into()),
            (true, true) if !dir::is_empty(st, dst.inum)? => return Err(Errno::NotEmpty.into()),
            _ => {}
        }
        dir::remove(st, new_parent, dst_pos)?;
        if dst_is_dir {
            let mut np = inode::get(st, new_parent)?;
            np.nlink -= 1;
            inode::put(st, new_parent, &np)?;
        }
        drop_link(st, dst.inum, t)?;
    }
    dir::remove(st, parent, src_pos)?;
    dir::insert_at(st, new_parent, new_pos, new_name, src.inum, src.dtype)?;
    let mut s = inode::get(st, src.inum)?;
    s.ctime = t;
    if src_is_dir && parent != new_parent {
        s.parent = new_parent;
        adjust_nlink(st, parent, -1)?;
        adjust_nlink(st, new_parent, 1)?;
    }
    inode::put(st, src.inum, &s)?;
    touch_dirs(st, &[parent, new_parent], t)
}

type Side<'a> = (u64, u64, &'a [u8], u64, u8);

/// RENAME_EXCHANGE: the two names swap targets.
fn exchange(st: &mut State, a: Side<'_>, b: Side<'_>) -> Result<()> {
    let (a_dir, a_pos, a_name, a_ino, a_type) = a;
    let (b_dir, b_pos, b_name, b_ino, b_type) = b;
    dir::retarget(st, a_dir, a_pos, a_name, b_ino, b_type)?;
    dir::retarget(st, b_dir, b_pos, b_name, a_ino, a_type)?;
    let t = now();
    if a_dir != b_dir {
        for (ino, ty, new_parent, old_parent) in
            [(a_ino, a_type, b_dir, a_dir), (b_ino, b_type, a_dir, b_dir)]
        {
            if ty == DT_DIR {
                let mut i = inode::get(st, ino)?;
                i.parent = new_parent;
                inode::put(st, ino, &i)?;
                adjust_nlink(st, old_parent, -1)?;
                adjust_nlink(st, new_parent, 1)?;
            }
        }
    }
    for ino in [a_ino, b_ino] {
        let mut i = inode::get(st, ino)?;
        i.ctime = t;
        inode::put(st, ino, &i)?;
    }
    touch_dirs(st, &[a_dir, b_dir], t)
}

fn adjust_nlink(st: &mut State, ino: u64, by: i32) -> Result<()> {
    let mut i = inode::get(st, ino)?;
    i.nlink = i.nlink.saturating_add_signed(by);
    inode::put(st, ino, &i)
}

fn touch_dirs(st: &mut State, dirs: &[u64], t: Timestamp) -> Result<()> {
    for &d in dirs {
        let mut i = inode::get(st, d)?;
        (i.mtime, i.ctime) = (t, t);
        inode::put(st, d, &i)?;
    }
    Ok(())
}

pub(super) fn setattr(st: &mut State, ino: u64, set: &SetAttr) -> Result<Attr> {
    let mut i = match inode::get(st, ino) {
        Err(e) if e.errno() == Errno::NoEntry => {
            return super::tombstone::setattr(st, ino, set).ok_or(e);
        }
        other => other?,
    };
    super::flags::check_setattr(&i, set)?;
    let t = now();
    if let Some(mode) = set.mode {
        i.mode = (i.mode & S_IFMT) | (mode & 0o7777);
        super::acl::on_chmod(st, ino, &mut i)?;
    }
    if let Some(uid) = set.uid {
        i.uid = uid;
    }
    if let Some(gid) = set.gid {
        i.gid = gid;
    }
    if let Some(size) = set.size {
        if i.is_dir() {
            return Err(Errno::IsDir.into());
        }
        if i.file_type() != S_IFREG {
            return Err(Errno::Invalid.into());
        }
        truncate(st, ino, &mut i, size)?;
        i.mtime = t;
    }
    let pick = |s: TimeSet| match s {
        TimeSet::Now => t,
        TimeSet::At(ts) => ts,
    };
    if let Some(a) = set.atime {
        i.atime = pick(a);
    }
    if let Some(m) = set.mtime {
        i.mtime = pick(m);
    }
    i.ctime = match set.ctime {
        // The kernel writing back times that predate the immutable flag: the flag's own
        // ctime stays (flags::is_earlier_times_writeback).
        Some(c) if i.flags.contains(InodeFlags::IMMUTABLE) => i.ctime.max(c),
        other => other.unwrap_or(t),
    };
    inode::put(st, ino, &i)?;
    Ok(attr_of(st, ino, &i))
}

/// Sets the size of a regular file: shrinking frees whole blocks past the end and zeroes
/// the tail of the last block; growing leaves a hole.
fn truncate(st: &mut State, ino: u64, i: &mut Inode, size: u64) -> Result<()> {
    if size > FILE_SIZE_MAX {
        return Err(Errno::FileTooBig.into());
    }
    if size < i.size {
        let bs = u64::from(st.bs());
        // A new end inside a hole needs no zeroing: the hole reads as zeros already, and
        // zeroing it would allocate a block ext4 leaves unallocated (st_blocks, du).
        let partial = !size.is_multiple_of(bs) && !is_hole(st, ino, size / bs)?;
        // Reserve before changing anything: an ENOSPC must leave the file as it was.
        if partial {
            st.alloc.reserve(1)?;
            st.delta_reserved += 1;
        }
        let keep = size.div_ceil(bs);
        let freed = data::punch(st, ino, keep, u64::MAX)?;
        i.blocks = i.blocks.saturating_sub(freed);
        if partial {
            // Zero the tail of the last block so a later extension reads zeros there.
            let tail = (bs - size % bs) as usize;
            data::write(st, ino, size, &vec![0u8; tail])?;
        }
    } else if size == i.size {
        // A truncate to the current size still drops blocks preallocated past the end
        // (fallocate KEEP_SIZE), as ext4 does.
        let keep = size.div_ceil(u64::from(st.bs()));
        let freed = data::punch(st, ino, keep, u64::MAX)?;
        i.blocks = i.blocks.saturating_sub(freed);
    }
    i.size = size;
    Ok(())
}

/// Whether file block `fblock` of `ino` is a hole: no dirty or in-flight page and no
/// extent (an unwritten extent counts as allocated).
fn is_hole(st: &State, ino: u64, fblock: u64) -> Result<bool> {
    if st.pages.contains_key(&(ino, fblock)) || st.inflight.contains_key(&(ino, fblock)) {
        return Ok(false);
    }
    Ok(data::find_extent(st, ino, fblock)?.is_none())
}

pub(super) fn read(st: &State, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
    let i = inode::get(st, ino)?;
    if i.is_dir() {
        return Err(Errno::IsDir.into());
    }
    data::read(st, ino, offset, size, i.size)
}

/// Plans a read (see engine::data::read): the reply, or the blocks still to load.
pub(super) fn read_plan(st: &State, ino: u64, offset: u64, size: u32) -> Result<data::ReadPlan> {
    let i = inode::get(st, ino)?;
    if i.is_dir() {
        return Err(Errno::IsDir.into());
    }
    data::plan_read(st, ino, offset, size, i.size, data::ReadMode::Unlocked)
}

pub(super) fn write(
    st: &mut State,
    ino: u64,
    offset: u64,
    bytes: &[u8],
    append: bool,
) -> Result<u32> {
    write_prepared(st, ino, offset, bytes, append, None)
}

/// [`write`], with the whole blocks of `bytes` at `offset` built before the lock
/// ([`data::prepare`]); unused when the write lands elsewhere (an append).
pub(super) fn write_prepared(
    st: &mut State,
    ino: u64,
    offset: u64,
    bytes: &[u8],
    append: bool,
    prepared: Option<data::Prepared>,
) -> Result<u32> {
    let mut i = inode::get(st, ino)?;
    if i.is_dir() {
        return Err(Errno::IsDir.into());
    }
    super::flags::check_write(st, ino, &i, offset, bytes, append)?;
    let offset = if append { i.size } else { offset };
    let end = offset
        .checked_add(bytes.len() as u64)
        .ok_or(Errno::FileTooBig)?;
    if end > FILE_SIZE_MAX {
        return Err(Errno::FileTooBig.into());
    }
    if bytes.is_empty() {
        return Ok(0);
    }
    // Decide ENOSPC now, so that an accepted write is never lost at commit: the new
    // blocks, plus one block of tree and log metadata per 16 of them.
    let new = data::new_dirty_blocks(st, ino, offset, bytes.len() as u64);
    // Blocks preallocated by fallocate (unwritten) are written in place: no new block, and
    // the extent split comes out of the metadata reserve, as ext4 promises.
    let bs = u64::from(st.bs());
    let prealloc = data::clean_unwritten_blocks(st, ino, offset / bs, (end - 1) / bs + 1)?;
    let new = new.saturating_sub(prealloc);
    let need = new + new.div_ceil(16);
    st.alloc.reserve(need)?;
    st.delta_reserved += need;
    data::write_prepared(st, ino, offset, bytes, prepared)?;
    let t = now();
    i.size = i.size.max(end);
    (i.mtime, i.ctime) = (t, t);
    inode::put(st, ino, &i)?;
    Ok(bytes.len() as u32)
}

/// Readdir cookies: "." is 1, ".." is 2, an entry at position p is p + 3.
const COOKIE_BASE: u64 = 3;

pub(super) fn readdir(st: &State, ino: u64, offset: u64, max: usize) -> Result<Vec<DirEntry>> {
    let d = dir_inode(st, ino)?;
    let mut out = Vec::new();
    if offset < 1 && out.len() < max {
        out.push(DirEntry {
            ino,
            offset: 1,
            kind: FileKind::Directory,
            name: b".".to_vec(),
        });
    }
    if offset < 2 && out.len() < max {
        out.push(DirEntry {
            ino: d.parent,
            offset: 2,
            kind: FileKind::Directory,
            name: b"..".to_vec(),
        });
    }
    let from = offset.saturating_sub(COOKIE_BASE - 1);
    let room = max.saturating_sub(out.len());
    for (pos, e) in dir::list(st, ino, from, room)? {
        let kind = match e.dtype {
            crate::format::dirent::DT_DIR => FileKind::Directory,
            crate::format::dirent::DT_LNK => FileKind::Symlink,
            crate::format::dirent::DT_CHR => FileKind::CharDevice,
            crate::format::dirent::DT_BLK => FileKind::BlockDevice,
            crate::format::dirent::DT_FIFO => FileKind::Fifo,
            crate::format::dirent::DT_SOCK => FileKind::Socket,
            _ => FileKind::Regular,
        };
        out.push(DirEntry {
            ino: e.inum,
            offset: pos + COOKIE_BASE,
            kind,
            name: e.name,
        });
    }
    Ok(out)
}

/// Bytes of inline xattrs an inode record may hold (the rest of the record must fit a leaf).
pub(super) fn xattr_room(st: &State, i: &Inode) -> usize {
    crate::format::btree::value_max(st.bs())
        .saturating_sub(crate::format::inode::INODE_FIXED_SIZE + i.inline_data.len())
}
