//! RENAME_WHITEOUT (overlayfs uses it for a copied-up or deleted name of its upper layer):
//! the rename happens and, in the same operation, the source name becomes a *whiteout*, a
//! character device with device number 0/0 and mode 0, owned by the caller. Both changes
//! are in one delta, so after a crash either both are there or neither. The space for the
//! whiteout is reserved before anything changes, so ENOSPC leaves the rename undone.
//! RENAME_NOREPLACE may come with it; RENAME_EXCHANGE may not (the adapter refuses that
//! pair, as the kernel does).

use crate::format::inode::S_IFCHR;
use crate::state::State;
use crate::{Result, dir};

use super::{Caller, RenameFlags, posix};

/// Renames `parent/name` to `new_parent/new_name` and leaves a whiteout at `parent/name`.
pub(super) fn rename(
    st: &mut State,
    (parent, name): (u64, &[u8]),
    (new_parent, new_name): (u64, &[u8]),
    noreplace: bool,
    c: Caller,
) -> Result<()> {
    st.alloc.reserve(2)?;
    st.delta_reserved += 2;
    let flags = RenameFlags {
        noreplace,
        exchange: false,
    };
    posix::rename(st, parent, name, new_parent, new_name, flags)?;
    // A rename that changed nothing (the same name, or two links of one inode) leaves the
    // source in place: no whiteout, as the kernel returns before asking then.
    if dir::lookup(st, parent, name)?.is_some() {
        return Ok(());
    }
    posix::mknod(st, parent, name, S_IFCHR, 0, 0, c)?;
    Ok(())
}
