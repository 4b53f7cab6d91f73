//! Extended attributes as ext4 keeps them: the rules the kernel's VFS and ext4 apply, and
//! where each entry is stored (inline in the inode record, or in its spill chain,
//! engine::xattr).
//!
//! **Names** (the kernel's `setxattr` path, `xattr_permission`, `xattr_resolve_name` and
//! ext4's handlers, in that order):
//! - an empty name or one over 255 bytes is ERANGE; a value over 64 KiB (XATTR_SIZE_MAX)
//!   is E2BIG;
//! - `trusted.*` is for the superuser (CAP_SYS_ADMIN): others get EPERM on a change and
//!   ENODATA on a read, and listxattr does not show them these names;
//! - `security.*` may be changed by the superuser only (EPERM: the capability LSM's rule);
//!   anyone may read it;
//! - `user.*` only on regular files and directories (EPERM on a change, ENODATA on a read
//!   of anything else); on a sticky directory only its owner or the superuser may change
//!   them. Read and write permission on the inode is the kernel's check
//!   (`default_permissions` is always on), not repeated here;
//! - `system.posix_acl_access` and `system.posix_acl_default` are ACLs (engine::fs::acl);
//! - any other name is EOPNOTSUPP, and a known prefix with nothing after it is EINVAL.
//!
//! **Limits.** Each value up to 64 KiB; the names of one inode, each with its NUL, up to
//! 64 KiB (XATTR_LIST_MAX: what listxattr can return); entries that do not fit the inode
//! record spill into a chain of at most 32 MiB (`SPILL_STREAM_MAX`). Past a limit, ENOSPC,
//! as ext4 when an inode's attributes are full.
//!
//! **Placement.** When all entries fit the record, all are inline and the inode has no
//! chain (so removing attributes frees the chain). Otherwise ACLs are placed first, then
//! the others in order, each inline while it fits, the rest in the chain.

use crate::format::acl::{XATTR_ACL_ACCESS, XATTR_ACL_DEFAULT};
use crate::format::inode::{Inode, S_IFDIR, S_IFREG};
use crate::format::xattr::{
    SPILL_STREAM_MAX, XATTR_LIST_MAX, XATTR_NAME_MAX, XATTR_SIZE_MAX, XattrEntry, entries_len,
    spill_stream_len,
};
use crate::state::State;
use crate::{Errno, Result, inode};

use super::{Caller, XattrFlags};

/// The sticky bit.
const S_ISVTX: u32 = 0o1000;

/// What a name's namespace is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Namespace {
    User,
    Trusted,
    Security,
    Acl,
    /// No namespace tuxfs keeps.
    Other,
}

/// A checked name: its namespace, and the error the namespace's handler gives after the
/// permission checks (a prefix with nothing after it, or an unknown namespace), if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Name {
    ns: Namespace,
    refused: Option<Errno>,
}

const PREFIXES: [(&[u8], Namespace); 3] = [
    (b"user.", Namespace::User),
    (b"trusted.", Namespace::Trusted),
    (b"security.", Namespace::Security),
];

/// The namespace of `name`, after the checks the setxattr/getxattr system calls make.
fn namespace(name: &[u8]) -> Result<Name> {
    if name.is_empty() || name.len() > XATTR_NAME_MAX {
        return Err(Errno::Range.into());
    }
    if name.contains(&0) {
        return Err(Errno::Invalid.into());
    }
    if name == XATTR_ACL_ACCESS || name == XATTR_ACL_DEFAULT {
        return Ok(Name {
            ns: Namespace::Acl,
            refused: None,
        });
    }
    for (prefix, ns) in PREFIXES {
        if let Some(rest) = name.strip_prefix(prefix) {
            let refused = rest.is_empty().then_some(Errno::Invalid);
            return Ok(Name { ns, refused });
        }
    }
    Ok(Name {
        ns: Namespace::Other,
        refused: Some(Errno::NotSupported),
    })
}

/// `xattr_permission` and the capability LSM: may `c` read (`write` false) or change the
/// attribute `name` on inode `i`? Then the namespace's own error, if any.
fn permitted(name: Name, i: &Inode, c: Caller, write: bool) -> Result<()> {
    let root = c.uid == 0;
    let denied = if write { Errno::Perm } else { Errno::NoData };
    match name.ns {
        Namespace::Trusted if !root => return Err(denied.into()),
        Namespace::Security if write && !root => return Err(Errno::Perm.into()),
        Namespace::User => {
            let ty = i.file_type();
            if ty != S_IFREG && ty != S_IFDIR {
                return Err(denied.into());
            }
            if write && ty == S_IFDIR && i.mode & S_ISVTX != 0 && !root && c.uid != i.uid {
                return Err(Errno::Perm.into());
            }
        }
        _ => {}
    }
    match name.refused {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Every entry of inode `ino` (record `i`): inline first, then spilled.
pub(super) fn all(st: &State, ino: u64, i: &Inode) -> Result<Vec<XattrEntry>> {
    let mut out = i.inline_xattrs.clone();
    out.extend(crate::xattr::load(st, ino, i)?.1);
    Ok(out)
}

/// The value of `name` on inode `ino`, wherever it is stored.
pub(super) fn find(st: &State, ino: u64, i: &Inode, name: &[u8]) -> Result<Option<Vec<u8>>> {
    if let Some(e) = i.inline_xattrs.iter().find(|e| e.name == name) {
        return Ok(Some(e.value.clone()));
    }
    if i.xattr_block == 0 && !crate::xattr::is_dirty(st, ino) {
        return Ok(None);
    }
    let (_, spilled) = crate::xattr::load(st, ino, i)?;
    Ok(spilled
        .into_iter()
        .find(|e| e.name == name)
        .map(|e| e.value))
}

/// Makes `entries` the attributes of inode `ino` (record `i`, which the caller then puts):
/// checks the limits, places each entry inline or in the chain, and reserves the chain's
/// blocks. On an error nothing changed.
pub(super) fn store(
    st: &mut State,
    ino: u64,
    i: &mut Inode,
    mut entries: Vec<XattrEntry>,
) -> Result<()> {
    let names: usize = entries.iter().map(|e| e.name.len() + 1).sum();
    if names > XATTR_LIST_MAX {
        return Err(Errno::NoSpace.into());
    }
    let room = super::posix::xattr_room(st, i);
    let (old, spilled_before) = crate::xattr::load(st, ino, i)?;
    let (inline, spilled) = if entries_len(&entries) <= room
        && entries
            .iter()
            .all(|e| e.value.len() <= usize::from(u16::MAX))
    {
        (entries, Vec::new())
    } else {
        // ACLs first (stable), so they stay inline where the kernel reads them most.
        entries.sort_by_key(|e| super::acl::kind_of(&e.name).is_none());
        let mut inline = Vec::new();
        let mut spilled = Vec::new();
        let mut left = room;
        for e in entries {
            if e.encoded_len() <= left && e.value.len() <= usize::from(u16::MAX) {
                left -= e.encoded_len();
                inline.push(e);
            } else {
                spilled.push(e);
            }
        }
        (inline, spilled)
    };
    if spill_stream_len(&spilled) > SPILL_STREAM_MAX {
        return Err(Errno::NoSpace.into());
    }
    if spilled != spilled_before {
        crate::xattr::set(st, ino, old, spilled)?;
    }
    i.inline_xattrs = inline;
    Ok(())
}

pub(super) fn getxattr(st: &State, ino: u64, name: &[u8], c: Caller) -> Result<Vec<u8>> {
    let checked = namespace(name)?;
    let i = inode::get(st, ino)?;
    permitted(checked, &i, c, false)?;
    find(st, ino, &i, name)?.ok_or_else(|| Errno::NoData.into())
}

pub(super) fn listxattr(st: &State, ino: u64, c: Caller) -> Result<Vec<Vec<u8>>> {
    let i = inode::get(st, ino)?;
    let mut names: Vec<Vec<u8>> = all(st, ino, &i)?.into_iter().map(|e| e.name).collect();
    if c.uid != 0 {
        names.retain(|n| namespace(n).map(|n| n.ns).ok() != Some(Namespace::Trusted));
    }
    Ok(names)
}

pub(super) fn setxattr(
    st: &mut State,
    ino: u64,
    name: &[u8],
    value: &[u8],
    flags: XattrFlags,
    c: Caller,
) -> Result<()> {
    let checked = namespace(name)?;
    if value.len() > XATTR_SIZE_MAX {
        return Err(Errno::TooBig.into());
    }
    let mut i = inode::get(st, ino)?;
    super::flags::check_fixed(&i)?;
    permitted(checked, &i, c, true)?;
    let mut entries = all(st, ino, &i)?;
    let at = entries.iter().position(|e| e.name == name);
    match (at, flags.create, flags.replace) {
        (Some(_), true, _) => return Err(Errno::Exists.into()),
        (None, _, true) => return Err(Errno::NoData.into()),
        _ => {}
    }
    let acl = super::acl::kind_of(name);
    if acl.is_none() && at.is_some_and(|k| entries[k].value == value) {
        // The value it already has: nothing changes, not even ctime (ext4's
        // `ext4_xattr_value_same`).
        return Ok(());
    }
    if let Some(kind) = acl {
        // ACLs are validated and change the mode (acl.rs); it works on a record whose
        // inline list holds every entry, and the result is placed again below.
        let mut whole = Inode {
            inline_xattrs: entries,
            ..i.clone()
        };
        super::acl::set(&mut whole, kind, value, flags.acl_kill_sgid)?;
        i.mode = whole.mode;
        entries = whole.inline_xattrs;
    } else {
        let entry = XattrEntry {
            name: name.to_vec(),
            value: value.to_vec(),
        };
        match at {
            Some(k) => entries[k] = entry,
            None => entries.push(entry),
        }
    }
    store(st, ino, &mut i, entries)?;
    i.ctime = super::now();
    inode::put(st, ino, &i)
}

pub(super) fn removexattr(st: &mut State, ino: u64, name: &[u8], c: Caller) -> Result<()> {
    let checked = namespace(name)?;
    let mut i = inode::get(st, ino)?;
    super::flags::check_fixed(&i)?;
    permitted(checked, &i, c, true)?;
    let mut entries = all(st, ino, &i)?;
    let Some(k) = entries.iter().position(|e| e.name == name) else {
        // Removing an ACL that is not there succeeds, as on ext4 (the kernel's
        // `set_acl(NULL)`): `tar` and `setfacl` remove an empty default ACL that way.
        if super::acl::kind_of(name).is_some() {
            return Ok(());
        }
        return Err(Errno::NoData.into());
    };
    entries.remove(k);
    store(st, ino, &mut i, entries)?;
    i.ctime = super::now();
    inode::put(st, ino, &i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: Caller = Caller {
        uid: 0,
        gid: 0,
        pid: 1,
    };
    const USER: Caller = Caller {
        uid: 1000,
        gid: 1000,
        pid: 1,
    };

    fn node(mode: u32) -> Inode {
        Inode {
            mode,
            uid: 1000,
            ..Inode::default()
        }
    }

    #[test]
    fn names_are_checked_as_the_kernel_does() {
        let errno = |name: &[u8]| namespace(name).map_err(|e| e.errno());
        let name = |ns, refused| Ok(Name { ns, refused });
        assert_eq!(errno(b""), Err(Errno::Range));
        assert_eq!(errno(&[b'a'; 256]), Err(Errno::Range));
        assert_eq!(errno(b"user.x"), name(Namespace::User, None));
        assert_eq!(errno(b"user."), name(Namespace::User, Some(Errno::Invalid)));
        let unknown = name(Namespace::Other, Some(Errno::NotSupported));
        assert_eq!(errno(b"foo.bar"), unknown);
        assert_eq!(errno(b"system.foo"), unknown);
        assert_eq!(
            errno(b"system.posix_acl_access"),
            name(Namespace::Acl, None)
        );
        let file = node(S_IFREG | 0o644);
        let link = node(crate::format::inode::S_IFLNK | 0o777);
        let sticky = node(S_IFDIR | 0o1777);
        let ns = |ns| Name { ns, refused: None };
        let e = |r: Result<()>| r.map_err(|e| e.errno());
        let trusted = ns(Namespace::Trusted);
        assert_eq!(e(permitted(trusted, &file, USER, true)), Err(Errno::Perm));
        assert_eq!(
            e(permitted(trusted, &file, USER, false)),
            Err(Errno::NoData)
        );
        assert_eq!(e(permitted(trusted, &file, ROOT, true)), Ok(()));
        let security = ns(Namespace::Security);
        assert_eq!(e(permitted(security, &file, USER, true)), Err(Errno::Perm));
        assert_eq!(e(permitted(security, &file, USER, false)), Ok(()));
        let user = ns(Namespace::User);
        assert_eq!(e(permitted(user, &link, ROOT, true)), Err(Errno::Perm));
        assert_eq!(e(permitted(user, &link, ROOT, false)), Err(Errno::NoData));
        let other = Caller { uid: 1001, ..USER };
        assert_eq!(e(permitted(user, &sticky, other, true)), Err(Errno::Perm));
        assert_eq!(e(permitted(user, &sticky, USER, true)), Ok(()));
        // Permission first, then the namespace's own error (xattr_permission runs first).
        let empty_user = Name {
            ns: Namespace::User,
            refused: Some(Errno::Invalid),
        };
        assert_eq!(
            e(permitted(empty_user, &link, ROOT, true)),
            Err(Errno::Perm)
        );
        assert_eq!(
            e(permitted(empty_user, &file, ROOT, true)),
            Err(Errno::Invalid)
        );
    }
}
