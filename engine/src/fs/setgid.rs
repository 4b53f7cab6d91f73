//! Set-group-ID directories, as ext4 does them (the kernel's `inode_init_owner`): a new
//! inode of any type created in a directory that has S_ISGID takes the directory's group
//! instead of the caller's, and a new directory also takes the S_ISGID bit, so the rule
//! passes down the tree.
//!
//! The kernel leaves this to the filesystem (for FUSE: to the daemon). What it does itself,
//! before the request reaches the daemon, is strip S_ISGID from the create mode of a new
//! group-executable non-directory when the caller is neither in the directory's group nor
//! holds CAP_FSETID (`mode_strip_sgid`): the engine, which does not know the caller's
//! supplementary groups, does not repeat that.

use crate::format::inode::Inode;

/// The set-group-ID mode bit.
pub(super) const S_ISGID: u32 = 0o2000;

/// Gives `node`, about to be created in `parent`, the group (and, for a directory, the
/// S_ISGID bit) of a set-group-ID parent.
pub(super) fn inherit(parent: &Inode, node: &mut Inode) {
    if parent.mode & S_ISGID == 0 {
        return;
    }
    node.gid = parent.gid;
    if node.is_dir() {
        node.mode |= S_ISGID;
    }
}
