//! O_TMPFILE: a regular file created in a directory without a name. It starts with no
//! links, open once (the caller's handle), and on the orphan list, exactly like a file
//! unlinked while open: the last release frees it, and a crash before then leaves it to
//! the next mount's orphan cleanup (recovery). Until it is linked it is *linkable*:
//! `link` (linkat with AT_EMPTY_PATH, or of /proc/self/fd/N) may give it its first name,
//! which takes it off the orphan list. After that it is an ordinary file: unlinked again
//! while open, it cannot be linked back (ENOENT), as on ext4. Whether a tmpfile opened
//! with O_EXCL may be linked is the kernel's decision (it refuses before asking).
//!
//! The new inode takes its mode, group and ACL as a named create would (umask or default
//! ACL, set-group-ID directory); the directory itself does not change.

use crate::format::inode::{Inode, S_IFREG};
use crate::format::log::LogRecord;
use crate::state::State;
use crate::{Errno, Result, inode};

use super::posix::{attr_of, dir_inode, now, xattr_room};
use super::{Attr, Caller};

/// Creates an open, unnamed regular file in `parent` with `mode` (permission bits) and the
/// caller's `umask` still to apply.
pub(super) fn create(
    st: &mut State,
    parent: u64,
    mode: u32,
    umask: u32,
    c: Caller,
) -> Result<Attr> {
    let p = dir_inode(st, parent)?;
    if p.nlink == 0 {
        return Err(Errno::NoEntry.into());
    }
    let mut node = Inode {
        mode: S_IFREG | (mode & 0o7777),
        uid: c.uid,
        gid: c.gid,
        nlink: 0,
        ..Inode::default()
    };
    super::flags::inherit(&p, &mut node);
    super::setgid::inherit(&p, &mut node);
    super::acl::on_create(st, parent, &p, &mut node, umask)?;
    if crate::format::xattr::entries_len(&node.inline_xattrs) > xattr_room(st, &node) {
        return Err(Errno::NoSpace.into());
    }
    // The inode record and the orphan entry need blocks at commit.
    st.alloc.reserve(2)?;
    st.delta_reserved += 2;
    let t = now();
    (node.atime, node.mtime, node.ctime, node.btime) = (t, t, t, t);
    let ino = inode::allocate(st);
    node.generation = super::export::next_generation(st);
    inode::put(st, ino, &node)?;
    st.orphans.insert(ino);
    st.records.push(LogRecord::OrphanAdd { inum: ino });
    *st.opens.entry(ino).or_default() += 1;
    st.linkable.insert(ino);
    Ok(attr_of(st, ino, &node))
}

/// `ino`, a linkable tmpfile, was just given its first name: it leaves the orphan list.
pub(super) fn linked(st: &mut State, ino: u64) {
    st.linkable.remove(&ino);
    if st.orphans.remove(&ino) {
        st.records.push(LogRecord::OrphanDel { inum: ino });
    }
}
