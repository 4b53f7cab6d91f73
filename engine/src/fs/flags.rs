//! File flags (`chattr`/`lsattr`, FS_IOC_GETFLAGS/SETFLAGS, FS_IOC_FSGETXATTR/FSSETXATTR)
//! and the rules they impose on every other operation.
//!
//! The API speaks the kernel's FS_*_FL values (as `mode` speaks S_IF* values); the inode
//! record stores them as [`InodeFlags`] bits (docs/FORMAT.md §4.5). Supported: immutable
//! (i), append-only (a), nodump (d), noatime (A), sync (S), dirsync (D, directories) and
//! project-inherit (P, directories), plus the project id. S makes a file's writes and
//! setattrs durable before they are answered, D (or S) on a directory its entry changes. Any other bit is EOPNOTSUPP, as
//! ext4 answers for flags it does not know; D and P on a non-directory are EOPNOTSUPP too.
//!
//! Rules (the kernel's, which FUSE leaves to the filesystem because a FUSE inode never has
//! S_IMMUTABLE/S_APPEND set; docs/SEMANTICS.md "File flags"):
//! - only a caller with CAP_LINUX_IMMUTABLE sets or clears i and a; only the owner (or
//!   CAP_FOWNER) changes any flag or the project id; while i stays set nothing else may
//!   change;
//! - an immutable inode refuses writes, size changes, setattr, xattr changes, links,
//!   unlink, rename (as source or as the replaced target) and open for writing;
//! - an append-only file refuses writes that change bytes already there, truncation,
//!   chmod/chown/explicit times, xattr changes, links, unlink, rename and open for
//!   writing without O_APPEND;
//! - an immutable directory refuses new and removed entries; an append-only one accepts
//!   new entries and refuses removing them (the kernel's rule: may_create does not check
//!   S_APPEND, may_delete does);
//! - new inodes inherit S, A, d, D and P from their directory (files do not take D or P),
//!   and the directory's project id when it has P; a link or rename into a P directory of
//!   another project is EXDEV, as on ext4.
//!
//! Invariant: user flags are only ever set on regular files and directories, and D and P
//! only on directories (the decoder refuses anything else).

use crate::format::inode::{Inode, InodeFlags, S_IFDIR, S_IFREG};
use crate::state::State;
use crate::{Errno, Result, inode};

use super::{Filesystem, SetAttr, TimeSet};

/// FS_SYNC_FL (`S`).
pub const FS_SYNC_FL: u32 = 0x0000_0008;
/// FS_IMMUTABLE_FL (`i`).
pub const FS_IMMUTABLE_FL: u32 = 0x0000_0010;
/// FS_APPEND_FL (`a`).
pub const FS_APPEND_FL: u32 = 0x0000_0020;
/// FS_NODUMP_FL (`d`).
pub const FS_NODUMP_FL: u32 = 0x0000_0040;
/// FS_NOATIME_FL (`A`).
pub const FS_NOATIME_FL: u32 = 0x0000_0080;
/// FS_DIRSYNC_FL (`D`).
pub const FS_DIRSYNC_FL: u32 = 0x0001_0000;
/// FS_PROJINHERIT_FL (`P`).
pub const FS_PROJINHERIT_FL: u32 = 0x2000_0000;

/// Each supported FS_*_FL value and the record's bit for it.
const MAP: [(u32, InodeFlags); 7] = [
    (FS_SYNC_FL, InodeFlags::SYNC),
    (FS_IMMUTABLE_FL, InodeFlags::IMMUTABLE),
    (FS_APPEND_FL, InodeFlags::APPEND),
    (FS_NODUMP_FL, InodeFlags::NODUMP),
    (FS_NOATIME_FL, InodeFlags::NOATIME),
    (FS_DIRSYNC_FL, InodeFlags::DIRSYNC),
    (FS_PROJINHERIT_FL, InodeFlags::PROJINHERIT),
];

/// Every FS_*_FL value tuxfs stores.
pub const FS_SUPPORTED_FL: u32 = FS_SYNC_FL
    | FS_IMMUTABLE_FL
    | FS_APPEND_FL
    | FS_NODUMP_FL
    | FS_NOATIME_FL
    | FS_DIRSYNC_FL
    | FS_PROJINHERIT_FL;

/// The flags a new inode takes from its directory (ext4's inherited set, of those stored).
const INHERITED: InodeFlags = InodeFlags::SYNC
    .union(InodeFlags::NODUMP)
    .union(InodeFlags::NOATIME)
    .union(InodeFlags::DIRSYNC)
    .union(InodeFlags::PROJINHERIT);

/// An inode's flags as FS_*_FL values, and its project id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileFlags {
    pub flags: u32,
    pub projid: u32,
}

/// A change of flags: the bits of `mask` take their values from `flags` (bits outside the
/// mask keep theirs), and the project id changes when `projid` is given.
/// FS_IOC_SETFLAGS sets every bit; FS_IOC_FSSETXATTR only those fsxattr can express.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagsChange {
    pub flags: u32,
    pub mask: u32,
    pub projid: Option<u32>,
}

/// What the caller of a flags change may do: the kernel decides capabilities, and the
/// frontend reports them (see `tuxfs_fuse::caps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlagsCaller {
    pub uid: u32,
    /// CAP_FOWNER: may change the flags of files it does not own.
    pub fowner: bool,
    /// CAP_LINUX_IMMUTABLE: may set and clear immutable and append-only.
    pub linux_immutable: bool,
}

/// How a file is opened, for [`Filesystem::check_open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenIntent {
    /// Opened for writing (O_WRONLY or O_RDWR).
    pub write: bool,
    pub append: bool,
    pub truncate: bool,
}

/// The record's flags as FS_*_FL values.
pub fn to_fs_flags(flags: InodeFlags) -> u32 {
    MAP.iter()
        .filter(|(_, f)| flags.contains(*f))
        .fold(0, |acc, (fl, _)| acc | fl)
}

/// FS_*_FL values as the record's flags; EOPNOTSUPP for a bit tuxfs does not store.
pub fn from_fs_flags(fl: u32) -> Result<InodeFlags> {
    if fl & !FS_SUPPORTED_FL != 0 {
        return Err(Errno::NotSupported.into());
    }
    Ok(MAP
        .iter()
        .filter(|(v, _)| fl & v != 0)
        .fold(InodeFlags::empty(), |acc, (_, f)| acc | *f))
}

const GUARDED: InodeFlags = InodeFlags::IMMUTABLE.union(InodeFlags::APPEND);

fn refuse_if(cond: bool) -> Result<()> {
    if cond {
        Err(Errno::Perm.into())
    } else {
        Ok(())
    }
}

/// The inode may not change at all (immutable or append-only): unlink, rename, link and
/// xattr changes.
pub(super) fn check_fixed(i: &Inode) -> Result<()> {
    refuse_if(i.flags.intersects(GUARDED))
}

/// A new entry may go into directory `p` (not immutable).
pub(super) fn check_add_entry(p: &Inode) -> Result<()> {
    refuse_if(p.flags.contains(InodeFlags::IMMUTABLE))
}

/// An entry may leave directory `p` (neither immutable nor append-only).
pub(super) fn check_remove_entry(p: &Inode) -> Result<()> {
    refuse_if(p.flags.intersects(GUARDED))
}

/// setattr on `i`: nothing on an immutable inode but the kernel writing back times it
/// cached before the flag was set ([`is_earlier_times_writeback`]); on an append-only one
/// no size, mode or owner change and no explicit atime (the kernel's notify_change refuses
/// those). An explicit mtime is let through for append-only files: with the writeback
/// cache the kernel sends one after every append it wrote back.
pub(super) fn check_setattr(i: &Inode, set: &SetAttr) -> Result<()> {
    refuse_if(i.flags.contains(InodeFlags::IMMUTABLE) && !is_earlier_times_writeback(i, set))?;
    let explicit_atime = matches!(set.atime, Some(TimeSet::At(_)));
    refuse_if(
        i.flags.contains(InodeFlags::APPEND)
            && (set.size.is_some()
                || set.mode.is_some()
                || set.uid.is_some()
                || set.gid.is_some()
                || explicit_atime),
    )
}

/// Whether `set` only writes back an mtime and ctime no later than `i`'s ctime: with the
/// writeback cache the kernel owns mtime and ctime of a file written through it and sends
/// them at fsync or writeback (`fuse_flush_times`: FATTR_MTIME | FATTR_CTIME, nothing
/// else). On a file made immutable after such writes (the flag change set its ctime), those
/// times predate the flag: ext4 would have stored them at the write, so they are taken
/// (the ctime never goes back; `posix::setattr`). Anything else, or a time after the flag,
/// is a change the flag forbids.
pub(super) fn is_earlier_times_writeback(i: &Inode, set: &SetAttr) -> bool {
    set.mode.is_none()
        && set.uid.is_none()
        && set.gid.is_none()
        && set.size.is_none()
        && set.atime.is_none()
        && matches!(set.mtime, Some(TimeSet::At(m)) if m <= i.ctime)
        && set.ctime.is_some_and(|c| c <= i.ctime)
}

/// A write of `bytes` at `offset` to `i`: refused on an immutable file; on an append-only
/// one it may not change a byte already in the file. The kernel's writeback cache writes
/// whole pages, so an append to a file whose size is not page-aligned arrives starting
/// before the end of file with the old bytes in front: those must be unchanged.
pub(super) fn check_write(
    st: &mut State,
    ino: u64,
    i: &Inode,
    offset: u64,
    bytes: &[u8],
    append: bool,
) -> Result<()> {
    refuse_if(i.flags.contains(InodeFlags::IMMUTABLE))?;
    if !i.flags.contains(InodeFlags::APPEND) || append || offset >= i.size {
        return Ok(());
    }
    // Bounded by the write's own length (at most one request).
    let overlap = (i.size - offset).min(bytes.len() as u64);
    let old = crate::data::read(st, ino, offset, overlap as u32, i.size)?;
    refuse_if(old.as_slice() != &bytes[..overlap as usize])
}

/// fallocate of `mode` on `i`, as vfs_fallocate rules: nothing on an immutable file; on an
/// append-only file only allocation (with or without KEEP_SIZE), which changes no byte.
pub(super) fn check_fallocate(i: &Inode, mode: u32) -> Result<()> {
    const FALLOC_FL_KEEP_SIZE: u32 = 0x01;
    refuse_if(i.flags.contains(InodeFlags::IMMUTABLE))?;
    refuse_if(i.flags.contains(InodeFlags::APPEND) && mode & !FALLOC_FL_KEEP_SIZE != 0)
}

/// A new inode `node` created in directory `p` takes its inherited flags and, under a
/// project-inherit directory, the directory's project id.
pub(super) fn inherit(p: &Inode, node: &mut Inode) {
    let mut take = p.flags & INHERITED;
    let ty = node.file_type();
    if ty != S_IFREG && ty != S_IFDIR {
        take = InodeFlags::empty();
    } else if ty != S_IFDIR {
        take &= !InodeFlags::DIR_ONLY;
    }
    node.flags |= take;
    if p.flags.contains(InodeFlags::PROJINHERIT) {
        node.projid = p.projid;
    }
}

/// `i` may get a name in directory `p`: a project-inherit directory takes only inodes of
/// its own project (EXDEV otherwise, as ext4: the caller copies instead).
pub(super) fn check_project(p: &Inode, i: &Inode) -> Result<()> {
    if p.flags.contains(InodeFlags::PROJINHERIT) && p.projid != i.projid {
        return Err(Errno::CrossDevice.into());
    }
    Ok(())
}

/// A rename of inode `src` out of directory `parent` into `new_parent`, replacing inode
/// `dst` there when given (or swapping with it, `exchange`): the directories must let the
/// entries leave and arrive, the moved and replaced inodes must not be fixed, and the
/// project rule holds for what moves into another directory.
pub(super) fn check_rename(
    st: &mut State,
    (parent, src): (u64, u64),
    new_parent: u64,
    dst: Option<u64>,
    exchange: bool,
) -> Result<()> {
    let (p, np) = (inode::get(st, parent)?, inode::get(st, new_parent)?);
    let s = inode::get(st, src)?;
    check_remove_entry(&p)?;
    check_add_entry(&np)?;
    check_fixed(&s)?;
    if parent != new_parent {
        check_project(&np, &s)?;
    }
    if let Some(dst) = dst {
        let d = inode::get(st, dst)?;
        check_remove_entry(&np)?;
        check_fixed(&d)?;
        if exchange {
            check_add_entry(&p)?;
            if parent != new_parent {
                check_project(&p, &d)?;
            }
        }
    }
    Ok(())
}

/// Applies `change` to `i` for `who`, with the kernel's and ext4's rules (module doc).
fn apply(i: &mut Inode, change: &FlagsChange, who: FlagsCaller) -> Result<()> {
    let ty = i.file_type();
    if ty != S_IFREG && ty != S_IFDIR {
        return Err(Errno::NotSupported.into());
    }
    if who.uid != i.uid && !who.fowner {
        return Err(Errno::Perm.into());
    }
    let mask = from_fs_flags(change.mask & FS_SUPPORTED_FL)?;
    let wanted = from_fs_flags(change.flags & change.mask)?;
    let new = (i.flags & !mask) | wanted;
    if !i.is_dir() && new.intersects(InodeFlags::DIR_ONLY) {
        return Err(Errno::NotSupported.into());
    }
    let old = i.flags;
    refuse_if(((old ^ new) & GUARDED).bits() != 0 && !who.linux_immutable)?;
    let projid = change.projid.unwrap_or(i.projid);
    // ext4: while immutable stays set, neither the other flags nor the project id change.
    if old.contains(InodeFlags::IMMUTABLE) && new.contains(InodeFlags::IMMUTABLE) {
        refuse_if(old != new || projid != i.projid)?;
    }
    i.flags = new;
    i.projid = projid;
    Ok(())
}

impl Filesystem {
    /// The flags (FS_*_FL) and project id of `ino` (FS_IOC_GETFLAGS, FS_IOC_FSGETXATTR).
    pub fn file_flags(&self, ino: u64) -> Result<FileFlags> {
        self.view(|st| {
            let i = inode::get(st, ino)?;
            Ok(FileFlags {
                flags: to_fs_flags(i.flags),
                projid: i.projid,
            })
        })
    }

    /// Changes the flags and project id of `ino` (FS_IOC_SETFLAGS, FS_IOC_FSSETXATTR):
    /// EOPNOTSUPP for a flag tuxfs does not store (nothing changes then), EPERM when `who`
    /// may not (module doc). The ctime changes, as on ext4.
    pub fn set_file_flags(&self, ino: u64, change: FlagsChange, who: FlagsCaller) -> Result<()> {
        self.change(|st| {
            let mut i = inode::get(st, ino)?;
            apply(&mut i, &change, who)?;
            i.ctime = super::now();
            inode::put(st, ino, &i)
        })
    }

    /// Whether `ino` may be opened as `how` says: EPERM for writing to an immutable file,
    /// and for writing without O_APPEND or truncating an append-only one.
    pub fn check_open(&self, ino: u64, how: OpenIntent) -> Result<()> {
        self.view(|st| {
            let f = inode::get(st, ino)?.flags;
            let writes = how.write || how.truncate;
            refuse_if(f.contains(InodeFlags::IMMUTABLE) && writes)?;
            refuse_if(f.contains(InodeFlags::APPEND) && (how.truncate || (writes && !how.append)))
        })
    }

    /// A change of the entries of `dirs` (create, unlink, rename, link...): runs it as
    /// [`Filesystem::change`], then commits and waits when one of the directories has the
    /// dirsync (D) or sync (S) flag, so the new or removed entries are durable when the
    /// call returns (ext4's IS_DIRSYNC).
    pub(super) fn dir_change<T>(
        &self,
        dirs: &[u64],
        f: impl Fn(&mut State) -> Result<T>,
    ) -> Result<T> {
        let out = self.change(f)?;
        let dirsync = InodeFlags::DIRSYNC | InodeFlags::SYNC;
        let sync = self.view(|st| {
            for &d in dirs {
                // A directory removed meanwhile has nothing left to make durable.
                if inode::get(st, d).is_ok_and(|i| i.flags.intersects(dirsync)) {
                    return Ok(true);
                }
            }
            Ok(false)
        })?;
        if sync {
            self.sync_open_delta()?;
        }
        Ok(out)
    }

    /// After a change to `ino`'s data or attributes: commits and waits when the inode has
    /// the sync flag (S), so the change is durable when the call returns.
    pub(super) fn sync_if_flagged(&self, ino: u64) -> Result<()> {
        // The change succeeded: an inode gone meanwhile (an orphan freed) has nothing to sync.
        let sync = self
            .view(|st| Ok(inode::get(st, ino).is_ok_and(|i| i.flags.contains(InodeFlags::SYNC))))?;
        if sync { self.sync_open_delta() } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(flags: InodeFlags) -> Inode {
        Inode {
            mode: S_IFREG | 0o644,
            uid: 1000,
            nlink: 1,
            flags,
            ..Inode::default()
        }
    }

    fn set(flags: u32) -> FlagsChange {
        FlagsChange {
            flags,
            mask: u32::MAX,
            projid: None,
        }
    }

    const OWNER: FlagsCaller = FlagsCaller {
        uid: 1000,
        fowner: false,
        linux_immutable: false,
    };
    const ROOT: FlagsCaller = FlagsCaller {
        uid: 0,
        fowner: true,
        linux_immutable: true,
    };

    #[test]
    fn fs_flags_round_trip_and_unknown_bits_are_eopnotsupp() {
        assert_eq!(
            to_fs_flags(from_fs_flags(FS_SUPPORTED_FL).unwrap()),
            FS_SUPPORTED_FL
        );
        assert_eq!(from_fs_flags(FS_SUPPORTED_FL).unwrap(), InodeFlags::USER);
        // FS_EXTENT_FL, FS_COMPR_FL: not stored.
        for bit in [0x0008_0000, 0x4] {
            let e = from_fs_flags(bit).unwrap_err();
            assert_eq!(e.errno(), Errno::NotSupported);
        }
    }

    #[test]
    fn only_linux_immutable_changes_i_and_a_and_only_the_owner_changes_any() {
        let mut i = file(InodeFlags::empty());
        apply(&mut i, &set(FS_NODUMP_FL), OWNER).expect("owner sets d");
        assert_eq!(i.flags, InodeFlags::NODUMP);
        for guarded in [FS_IMMUTABLE_FL, FS_APPEND_FL] {
            let e = apply(&mut i, &set(guarded), OWNER).unwrap_err();
            assert_eq!(e.errno(), Errno::Perm);
        }
        let stranger = FlagsCaller { uid: 7, ..OWNER };
        assert_eq!(
            apply(&mut i, &set(0), stranger).unwrap_err().errno(),
            Errno::Perm
        );
        apply(&mut i, &set(FS_IMMUTABLE_FL), ROOT).expect("root sets i");
        assert_eq!(i.flags, InodeFlags::IMMUTABLE);
        // While i stays, nothing else changes (not even for root); clearing i with other
        // changes at once is allowed.
        let e = apply(&mut i, &set(FS_IMMUTABLE_FL | FS_NODUMP_FL), ROOT).unwrap_err();
        assert_eq!(e.errno(), Errno::Perm);
        let e = apply(&mut i, &set(FS_IMMUTABLE_FL), OWNER);
        assert!(e.is_ok(), "no change of i or a needs no capability");
        apply(&mut i, &set(FS_NODUMP_FL), ROOT).expect("root clears i");
        assert_eq!(i.flags, InodeFlags::NODUMP);
        // Directory-only flags on a file and unknown flags: EOPNOTSUPP, nothing changes.
        for bad in [FS_DIRSYNC_FL, FS_PROJINHERIT_FL, 0x0008_0000] {
            let e = apply(&mut i, &set(bad), ROOT).unwrap_err();
            assert_eq!(e.errno(), Errno::NotSupported);
            assert_eq!(i.flags, InodeFlags::NODUMP);
        }
    }

    #[test]
    fn a_masked_change_keeps_the_other_bits() {
        let mut d = Inode {
            mode: S_IFDIR | 0o755,
            nlink: 2,
            parent: 1,
            flags: InodeFlags::DIRSYNC,
            ..Inode::default()
        };
        let change = FlagsChange {
            flags: FS_PROJINHERIT_FL,
            mask: FS_PROJINHERIT_FL | FS_NODUMP_FL,
            projid: Some(42),
        };
        apply(&mut d, &change, ROOT).expect("fsxattr-style change");
        assert_eq!(d.flags, InodeFlags::DIRSYNC | InodeFlags::PROJINHERIT);
        assert_eq!(d.projid, 42);
        let mut child = file(InodeFlags::empty());
        inherit(&d, &mut child);
        assert_eq!((child.flags, child.projid), (InodeFlags::empty(), 42));
        let mut sub = Inode {
            mode: S_IFDIR | 0o755,
            ..Inode::default()
        };
        inherit(&d, &mut sub);
        assert_eq!(sub.flags, InodeFlags::DIRSYNC | InodeFlags::PROJINHERIT);
        assert_eq!(
            check_project(&d, &file(InodeFlags::empty()))
                .unwrap_err()
                .errno(),
            Errno::CrossDevice
        );
    }

    #[test]
    fn append_only_setattr_refuses_size_mode_owner_and_explicit_atime() {
        let a = file(InodeFlags::APPEND);
        let t = TimeSet::At(crate::format::inode::Timestamp::default());
        for bad in [
            SetAttr {
                size: Some(0),
                ..SetAttr::default()
            },
            SetAttr {
                mode: Some(0o600),
                ..SetAttr::default()
            },
            SetAttr {
                uid: Some(1),
                ..SetAttr::default()
            },
            SetAttr {
                atime: Some(t),
                ..SetAttr::default()
            },
        ] {
            assert_eq!(
                check_setattr(&a, &bad).unwrap_err().errno(),
                Errno::Perm,
                "{bad:?}"
            );
        }
        let flush = SetAttr {
            mtime: Some(t),
            ..SetAttr::default()
        };
        check_setattr(&a, &flush).expect("the writeback cache's mtime");
        let i = file(InodeFlags::IMMUTABLE);
        assert_eq!(check_setattr(&i, &flush).unwrap_err().errno(), Errno::Perm);
    }

    #[test]
    fn immutable_takes_only_the_kernels_times_from_before_the_flag() {
        use crate::format::inode::Timestamp;
        let at = |sec| Timestamp { sec, nsec: 0 };
        let mut i = file(InodeFlags::IMMUTABLE);
        i.ctime = at(100);
        let times = |m, c| SetAttr {
            mtime: Some(TimeSet::At(at(m))),
            ctime: Some(at(c)),
            ..SetAttr::default()
        };
        check_setattr(&i, &times(90, 95)).expect("times cached before the flag");
        check_setattr(&i, &times(100, 100)).expect("the flag's own instant");
        for bad in [
            times(101, 95),
            times(90, 101),
            SetAttr {
                mtime: Some(TimeSet::At(at(90))),
                ..SetAttr::default()
            },
            SetAttr {
                mtime: Some(TimeSet::Now),
                ctime: Some(at(90)),
                ..SetAttr::default()
            },
            SetAttr {
                atime: Some(TimeSet::At(at(90))),
                ..times(90, 90)
            },
            SetAttr {
                mode: Some(0o600),
                ..times(90, 90)
            },
        ] {
            assert_eq!(
                check_setattr(&i, &bad).unwrap_err().errno(),
                Errno::Perm,
                "{bad:?}"
            );
        }
    }
}
