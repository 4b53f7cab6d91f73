//! What the kernel may still say about an inode the engine has freed.
//!
//! With the writeback cache the kernel owns a file's mtime and ctime and writes them back
//! with a SETATTR when it evicts or syncs the inode (`fuse_write_inode`), which for an
//! unlinked file comes after its last RELEASE, when the engine has already freed it. A
//! `syncfs(2)` then failed with ENOENT (found by stress-ng's `io` stressor). So the engine
//! keeps the last attributes of each inode it frees as a *tombstone* until the kernel
//! FORGETs the node: a SETATTR that only sets times succeeds on a tombstone (nothing is
//! written: the inode is gone), anything else is still ENOENT. Inode numbers are never
//! reused while mounted, so a tombstone cannot shadow a live inode. At most
//! [`TOMBSTONES_MAX`] are kept (the oldest go first) in case the kernel never forgets.

use std::collections::BTreeMap;

use crate::state::State;

use super::{Attr, SetAttr, TimeSet};

/// Tombstones kept at most; the oldest (lowest inode number) is dropped first.
pub const TOMBSTONES_MAX: usize = 4096;

/// Freed inodes' last attributes, by inode number.
pub type Tombstones = BTreeMap<u64, Attr>;

/// Records `attr` as the last attributes of inode `ino`, just freed.
pub(super) fn bury(st: &mut State, ino: u64, mut attr: Attr) {
    attr.nlink = 0;
    st.tombstones.insert(ino, attr);
    while st.tombstones.len() > TOMBSTONES_MAX {
        st.tombstones.pop_first();
    }
}

/// A SETATTR of a freed inode: the attributes it asks for, when it only sets times (the
/// kernel writing back what it cached), else None (the caller answers ENOENT).
pub(super) fn setattr(st: &mut State, ino: u64, set: &SetAttr) -> Option<Attr> {
    if set.mode.is_some() || set.uid.is_some() || set.gid.is_some() || set.size.is_some() {
        return None;
    }
    let attr = st.tombstones.get_mut(&ino)?;
    let now = super::posix::now();
    let pick = |s: TimeSet| match s {
        TimeSet::Now => now,
        TimeSet::At(ts) => ts,
    };
    if let Some(a) = set.atime {
        attr.atime = pick(a);
    }
    if let Some(m) = set.mtime {
        attr.mtime = pick(m);
    }
    if let Some(c) = set.ctime {
        attr.ctime = c;
    }
    Some(attr.clone())
}

/// The kernel forgot node `ino`: its tombstone, if any, goes.
pub(super) fn forget(st: &mut State, ino: u64) {
    st.tombstones.remove(&ino);
}
