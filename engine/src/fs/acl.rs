//! POSIX ACLs, kept as ext4 keeps them. The kernel checks access against the ACL itself
//! (FUSE_POSIX_ACL with `default_permissions`) and leaves to the filesystem what ext4 does
//! in `ext4_set_acl`, `ext4_setattr` and `ext4_init_acl`:
//!
//! - setting `system.posix_acl_access` sets the mode's permission bits from the ACL, and
//!   an ACL that says no more than the mode (owner, group, other only) is not stored
//!   (`posix_acl_update_mode`);
//! - chmod rewrites the owner, other and mask (or owning group) entries of the access ACL
//!   (`posix_acl_chmod`);
//! - a new file or directory in a directory with a default ACL gets that ACL, masked by
//!   the create mode, as its access ACL and takes its mode from it; a new directory also
//!   inherits the default ACL; without a default ACL the umask applies
//!   (`posix_acl_create`).
//!
//! Invariant: a stored ACL xattr is valid and canonical ([`crate::format::acl`]); a stored
//! access ACL is never equivalent to the mode.

use crate::format::acl::{
    self, ACL_GROUP, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER, ACL_USER, ACL_USER_OBJ, AclEntry,
    XATTR_ACL_ACCESS, XATTR_ACL_DEFAULT,
};
use crate::format::btree::Key;
use crate::format::inode::{Inode, S_IFDIR};
use crate::format::xattr::XattrEntry;
use crate::state::State;
use crate::{Errno, Error, Result};

/// Owner, group and other permission bits of a mode.
const S_IRWXUGO: u32 = 0o777;
/// The set-group-ID bit.
const S_ISGID: u32 = 0o2000;

/// Which ACL an xattr name holds, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AclKind {
    Access,
    Default,
}

pub(super) fn kind_of(name: &[u8]) -> Option<AclKind> {
    match name {
        XATTR_ACL_ACCESS => Some(AclKind::Access),
        XATTR_ACL_DEFAULT => Some(AclKind::Default),
        _ => None,
    }
}

fn name_of(kind: AclKind) -> &'static [u8] {
    match kind {
        AclKind::Access => XATTR_ACL_ACCESS,
        AclKind::Default => XATTR_ACL_DEFAULT,
    }
}

/// The mode an ACL gives, and whether the ACL says more than the mode can
/// (`posix_acl_equiv_mode`: true when it must be stored).
pub fn equiv_mode(entries: &[AclEntry], mode: u32) -> (u32, bool) {
    let mut bits = 0u32;
    let mut not_equiv = false;
    for e in entries {
        let perm = u32::from(e.perm) & 0o7;
        match e.tag {
            ACL_USER_OBJ => bits |= perm << 6,
            ACL_GROUP_OBJ => bits |= perm << 3,
            ACL_OTHER => bits |= perm,
            ACL_MASK => {
                bits = (bits & !0o070) | (perm << 3);
                not_equiv = true;
            }
            _ => not_equiv = true,
        }
    }
    ((mode & !S_IRWXUGO) | bits, not_equiv)
}

/// chmod of a file with an access ACL (`posix_acl_chmod`): owner and other entries take
/// the new mode's bits, and the mask (or the owning group, when there is no mask) the
/// group bits. Named entries keep theirs.
pub fn chmod(entries: &mut [AclEntry], mode: u32) {
    let has_mask = entries.iter().any(|e| e.tag == ACL_MASK);
    for e in entries.iter_mut() {
        match e.tag {
            ACL_USER_OBJ => e.perm = ((mode >> 6) & 0o7) as u16,
            ACL_OTHER => e.perm = (mode & 0o7) as u16,
            ACL_MASK => e.perm = ((mode >> 3) & 0o7) as u16,
            ACL_GROUP_OBJ if !has_mask => e.perm = ((mode >> 3) & 0o7) as u16,
            _ => {}
        }
    }
}

/// The access ACL of a new inode from its parent's default ACL, and the mode masked by it
/// (`posix_acl_create_masq`). Returns the new mode and the ACL when it must be stored.
pub fn create_masq(default: &[AclEntry], mode: u32) -> (u32, Option<Vec<AclEntry>>) {
    let mut entries = default.to_vec();
    let mut m = mode;
    let mut not_equiv = false;
    let has_mask = entries.iter().any(|e| e.tag == ACL_MASK);
    for e in entries.iter_mut() {
        let perm = u32::from(e.perm);
        match e.tag {
            ACL_USER_OBJ => {
                let p = perm & (m >> 6);
                e.perm = p as u16;
                m &= (p << 6) | !0o700;
            }
            ACL_USER | ACL_GROUP => not_equiv = true,
            ACL_OTHER => {
                let p = perm & m;
                e.perm = (p & 0o7) as u16;
                m &= p | !0o007;
            }
            ACL_MASK => {
                let p = perm & (m >> 3);
                e.perm = (p & 0o7) as u16;
                m &= (p << 3) | !0o070;
                not_equiv = true;
            }
            ACL_GROUP_OBJ if !has_mask => {
                let p = perm & (m >> 3);
                e.perm = (p & 0o7) as u16;
                m &= (p << 3) | !0o070;
            }
            _ => {}
        }
    }
    let new_mode = mode & (m | !S_IRWXUGO);
    (new_mode, not_equiv.then_some(entries))
}

/// The ACL of `kind` stored in `i` (inode `ino`), or None. A stored value that does not
/// decode is damage: the error names the inode's leaf block.
pub(super) fn stored(
    st: &State,
    ino: u64,
    i: &Inode,
    kind: AclKind,
) -> Result<Option<Vec<AclEntry>>> {
    let name = name_of(kind);
    // Inline or spilled (a large ACL may not fit the record: engine::fs::xattr).
    let Some(value) = super::xattr::find(st, ino, i, name)? else {
        return Ok(None);
    };
    match acl::decode(&value) {
        Ok(entries) if entries.is_empty() => Ok(None),
        Ok(entries) => Ok(Some(entries)),
        Err(e) => Err(Error::corrupt(
            st.inodes.leaf_block(Key::new(ino, 0)),
            format!("inode {ino}: {}: {e}", String::from_utf8_lossy(name)),
        )),
    }
}

/// Stores (Some) or removes (None) the ACL of `kind` in `i`'s inline xattrs.
fn put(i: &mut Inode, kind: AclKind, entries: Option<&[AclEntry]>) {
    let name = name_of(kind);
    let at = i.inline_xattrs.iter().position(|e| e.name == name);
    match (entries, at) {
        (Some(entries), Some(k)) => {
            if let Some(x) = i.inline_xattrs.get_mut(k) {
                x.value = acl::encode(entries);
            }
        }
        (Some(entries), None) => i.inline_xattrs.push(XattrEntry {
            name: name.to_vec(),
            value: acl::encode(entries),
        }),
        (None, Some(k)) => {
            i.inline_xattrs.remove(k);
        }
        (None, None) => {}
    }
}

/// setxattr of an ACL name: validates the value (EINVAL when it is not a valid ACL),
/// then applies it to `i` as ext4 does. An empty ACL removes it. A default ACL is only
/// for directories (EACCES otherwise, as the kernel answers). `kill_sgid`: setting a
/// (non-empty) access ACL also clears S_ISGID (`posix_acl_update_mode` for a caller outside
/// the file's group without CAP_FSETID).
pub(super) fn set(i: &mut Inode, kind: AclKind, value: &[u8], kill_sgid: bool) -> Result<()> {
    let entries = acl::decode(value).map_err(|_| Error::from(Errno::Invalid))?;
    match kind {
        AclKind::Access => {
            if entries.is_empty() {
                put(i, kind, None);
                return Ok(());
            }
            let (mut mode, not_equiv) = equiv_mode(&entries, i.mode);
            if kill_sgid {
                mode &= !S_ISGID;
            }
            i.mode = mode;
            put(i, kind, not_equiv.then_some(&entries[..]));
        }
        AclKind::Default => {
            if i.mode & crate::format::inode::S_IFMT != S_IFDIR {
                return Err(if entries.is_empty() {
                    Errno::NoData
                } else {
                    Errno::Access
                }
                .into());
            }
            put(i, kind, (!entries.is_empty()).then_some(&entries[..]));
        }
    }
    Ok(())
}

/// chmod: rewrites the access ACL of `i` (inode `ino`) for its new mode, if it has one
/// (placed again with every other entry, as it may be spilled).
pub(super) fn on_chmod(st: &mut State, ino: u64, i: &mut Inode) -> Result<()> {
    if let Some(mut entries) = stored(st, ino, i, AclKind::Access)? {
        chmod(&mut entries, i.mode);
        let mut whole = Inode {
            inline_xattrs: super::xattr::all(st, ino, i)?,
            ..Inode::default()
        };
        put(&mut whole, AclKind::Access, Some(&entries));
        super::xattr::store(st, ino, i, whole.inline_xattrs)?;
    }
    Ok(())
}

/// A new inode `node` (not a symlink) in directory `parent` (inode `parent_ino`): applies
/// the parent's default ACL, or the umask when it has none.
pub(super) fn on_create(
    st: &State,
    parent_ino: u64,
    parent: &Inode,
    node: &mut Inode,
    umask: u32,
) -> Result<()> {
    let Some(default) = stored(st, parent_ino, parent, AclKind::Default)? else {
        node.mode &= !(umask & S_IRWXUGO);
        return Ok(());
    };
    let (mode, access) = create_masq(&default, node.mode);
    node.mode = mode;
    if let Some(access) = access {
        put(node, AclKind::Access, Some(&access));
    }
    if node.mode & crate::format::inode::S_IFMT == S_IFDIR {
        put(node, AclKind::Default, Some(&default));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::acl::ACL_UNDEFINED_ID as U;

    fn e(tag: u16, perm: u16, id: u32) -> AclEntry {
        AclEntry { tag, perm, id }
    }

    fn base(u: u16, g: u16, o: u16) -> Vec<AclEntry> {
        vec![
            e(ACL_USER_OBJ, u, U),
            e(ACL_GROUP_OBJ, g, U),
            e(ACL_OTHER, o, U),
        ]
    }

    fn with_nobody(u: u16, nobody: u16, g: u16, mask: u16, o: u16) -> Vec<AclEntry> {
        vec![
            e(ACL_USER_OBJ, u, U),
            e(ACL_USER, nobody, 65534),
            e(ACL_GROUP_OBJ, g, U),
            e(ACL_MASK, mask, U),
            e(ACL_OTHER, o, U),
        ]
    }

    #[test]
    fn equivalent_acls_are_the_mode() {
        assert_eq!(equiv_mode(&base(6, 4, 4), 0o100600), (0o100644, false));
        assert_eq!(equiv_mode(&base(7, 5, 0), 0o42777), (0o42750, false));
        // A mask makes it not equivalent; the group bits show the mask.
        let acl = with_nobody(6, 4, 0, 4, 0);
        assert_eq!(equiv_mode(&acl, 0o100600), (0o100640, true));
    }

    #[test]
    fn set_access_updates_mode_and_stores_only_what_the_mode_cannot_say() {
        let mut i = Inode {
            mode: 0o100600,
            ..Inode::default()
        };
        set(&mut i, AclKind::Access, &acl::encode(&base(6, 4, 4)), false).unwrap();
        assert_eq!(i.mode, 0o100644);
        assert!(i.inline_xattrs.is_empty(), "equivalent ACL stored");
        set(
            &mut i,
            AclKind::Access,
            &acl::encode(&with_nobody(6, 4, 4, 4, 0)),
            false,
        )
        .unwrap();
        assert_eq!(i.mode, 0o100640);
        assert_eq!(i.inline_xattrs.len(), 1);
        // Setting an equivalent ACL again removes the stored one.
        set(&mut i, AclKind::Access, &acl::encode(&base(6, 0, 0)), false).unwrap();
        assert_eq!(i.mode, 0o100600);
        assert!(i.inline_xattrs.is_empty());
        // Invalid values are EINVAL and change nothing.
        let err = set(&mut i, AclKind::Access, &[1, 0, 0, 0], false).unwrap_err();
        assert_eq!(err.errno(), Errno::Invalid);
        assert_eq!(i.mode, 0o100600);
        // Default ACLs only on directories.
        let err = set(
            &mut i,
            AclKind::Default,
            &acl::encode(&base(7, 5, 5)),
            false,
        )
        .unwrap_err();
        assert_eq!(err.errno(), Errno::Access);
    }

    #[test]
    fn chmod_rewrites_owner_mask_and_other() {
        let mut acl = with_nobody(6, 4, 4, 4, 0);
        chmod(&mut acl, 0o751);
        assert_eq!(acl, with_nobody(7, 4, 4, 5, 1));
        // Without a mask the owning group takes the group bits.
        let mut acl = base(6, 4, 4);
        chmod(&mut acl, 0o700);
        assert_eq!(acl, base(7, 0, 0));
    }

    #[test]
    fn create_masks_the_default_acl_by_the_create_mode() {
        // Default u::rwx,u:nobody:rwx,g::r-x,m::rwx,o::r-x; a file created with 0666.
        let default = with_nobody(7, 7, 5, 7, 5);
        let (mode, access) = create_masq(&default, 0o100666);
        assert_eq!(mode, 0o100664);
        assert_eq!(access, Some(with_nobody(6, 7, 5, 6, 4)));
        // A directory created with 0777 keeps every bit the ACL allows; setgid survives.
        let (mode, access) = create_masq(&default, 0o42777);
        assert_eq!(mode, 0o42775);
        assert_eq!(access, Some(default.clone()));
        // A default ACL without named entries or mask gives no access ACL.
        let (mode, access) = create_masq(&base(7, 5, 0), 0o100666);
        assert_eq!((mode, access), (0o100640, None));
    }
}
