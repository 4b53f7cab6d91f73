//! POSIX ACL xattr values (`system.posix_acl_access`, `system.posix_acl_default`), in the
//! Linux xattr format that the kernel sends and `getfacl` reads; tuxfs stores the value as
//! an ordinary inline xattr entry (xattr.rs), always in the canonical form encoded here.
//!
//! ```text
//! 0  4  version   2
//! 4     entries, 8 bytes each:
//!       0  2  tag    USER_OBJ 0x01, USER 0x02, GROUP_OBJ 0x04, GROUP 0x08, MASK 0x10, OTHER 0x20
//!       2  2  perm   r 4, w 2, x 1 (no other bits)
//!       4  4  id     uid (USER) or gid (GROUP); 0xffffffff for the other tags (as the
//!                    kernel writes them; any other value there is refused, so a stored
//!                    value always re-encodes to the same bytes)
//! ```
//!
//! A valid ACL (as the kernel's `posix_acl_valid`) has its entries sorted by tag and then
//! id, exactly one USER_OBJ, GROUP_OBJ and OTHER, at most one MASK, which is required when
//! there is any USER or GROUP entry, and no two USER (or GROUP) entries with the same id.
//! [`decode`] checks all of it; it never panics and allocates at most one entry per eight
//! input bytes.

use super::bytes::{get_u16, get_u32, put_u16, put_u32};

/// The only xattr ACL version Linux defines.
pub const ACL_XATTR_VERSION: u32 = 2;
/// Bytes of the header (the version).
pub const ACL_HEADER_SIZE: usize = 4;
/// Bytes of one entry.
pub const ACL_ENTRY_SIZE: usize = 8;

pub const ACL_USER_OBJ: u16 = 0x01;
pub const ACL_USER: u16 = 0x02;
pub const ACL_GROUP_OBJ: u16 = 0x04;
pub const ACL_GROUP: u16 = 0x08;
pub const ACL_MASK: u16 = 0x10;
pub const ACL_OTHER: u16 = 0x20;
/// The id stored for entries that name no user or group.
pub const ACL_UNDEFINED_ID: u32 = u32::MAX;
/// Read, write and execute: every permission bit an entry may hold.
pub const ACL_PERM_ALL: u16 = 0o7;

/// The xattr holding the access ACL.
pub const XATTR_ACL_ACCESS: &[u8] = b"system.posix_acl_access";
/// The xattr holding a directory's default ACL.
pub const XATTR_ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

/// One ACL entry. `id` is meaningful only for USER and GROUP entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclEntry {
    pub tag: u16,
    pub perm: u16,
    pub id: u32,
}

/// Why an ACL value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclError(pub String);

impl std::fmt::Display for AclError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(what: impl Into<String>) -> AclError {
    AclError(what.into())
}

/// Decodes and validates an ACL value. An empty entry list (the header alone) is valid and
/// means "no ACL", as for the kernel.
pub fn decode(bytes: &[u8]) -> Result<Vec<AclEntry>, AclError> {
    let version = get_u32(bytes, 0).ok_or_else(|| bad("ACL value shorter than its header"))?;
    if version != ACL_XATTR_VERSION {
        return Err(bad(format!("ACL version {version}, expected 2")));
    }
    let body = bytes.len() - ACL_HEADER_SIZE;
    if !body.is_multiple_of(ACL_ENTRY_SIZE) {
        return Err(bad(format!(
            "ACL value of {} bytes is not a header and whole entries",
            bytes.len()
        )));
    }
    let count = body / ACL_ENTRY_SIZE;
    let mut entries = Vec::with_capacity(count);
    for k in 0..count {
        let off = ACL_HEADER_SIZE + k * ACL_ENTRY_SIZE;
        let (Some(tag), Some(perm), Some(id)) = (
            get_u16(bytes, off),
            get_u16(bytes, off + 2),
            get_u32(bytes, off + 4),
        ) else {
            return Err(bad(format!("ACL entry {k} is cut short")));
        };
        if perm & !ACL_PERM_ALL != 0 {
            return Err(bad(format!("ACL entry {k} has permission bits {perm:#o}")));
        }
        match tag {
            ACL_USER | ACL_GROUP => {}
            ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_MASK | ACL_OTHER if id == ACL_UNDEFINED_ID => {}
            ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_MASK | ACL_OTHER => {
                return Err(bad(format!(
                    "ACL entry {k} (tag {tag:#x}) names id {id}, which only user and group entries may"
                )));
            }
            _ => return Err(bad(format!("ACL entry {k} has unknown tag {tag:#x}"))),
        }
        entries.push(AclEntry { tag, perm, id });
    }
    validate(&entries)?;
    Ok(entries)
}

/// Checks the rules of a valid ACL (module comment); an empty list is valid.
pub fn validate(entries: &[AclEntry]) -> Result<(), AclError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut prev: Option<AclEntry> = None;
    for (k, e) in entries.iter().enumerate() {
        if let Some(p) = prev {
            let named = matches!(e.tag, ACL_USER | ACL_GROUP);
            if e.tag < p.tag || (e.tag == p.tag && !(named && e.id > p.id)) {
                return Err(bad(format!(
                    "ACL entry {k} (tag {:#x}, id {}) is out of order or repeated",
                    e.tag, e.id
                )));
            }
        }
        prev = Some(*e);
    }
    let has = |tag| entries.iter().any(|e| e.tag == tag);
    for (tag, name) in [
        (ACL_USER_OBJ, "owner"),
        (ACL_GROUP_OBJ, "owning group"),
        (ACL_OTHER, "other"),
    ] {
        if !has(tag) {
            return Err(bad(format!("ACL has no {name} entry")));
        }
    }
    if (has(ACL_USER) || has(ACL_GROUP)) && !has(ACL_MASK) {
        return Err(bad("ACL has named entries but no mask entry"));
    }
    Ok(())
}

/// Encodes a valid ACL in the canonical form (ids of unnamed entries undefined).
pub fn encode(entries: &[AclEntry]) -> Vec<u8> {
    let mut out = vec![0u8; ACL_HEADER_SIZE + entries.len() * ACL_ENTRY_SIZE];
    put_u32(&mut out, 0, ACL_XATTR_VERSION);
    for (k, e) in entries.iter().enumerate() {
        let off = ACL_HEADER_SIZE + k * ACL_ENTRY_SIZE;
        let id = match e.tag {
            ACL_USER | ACL_GROUP => e.id,
            _ => ACL_UNDEFINED_ID,
        };
        put_u16(&mut out, off, e.tag);
        put_u16(&mut out, off + 2, e.perm);
        put_u32(&mut out, off + 4, id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(tag: u16, perm: u16, id: u32) -> AclEntry {
        AclEntry { tag, perm, id }
    }

    fn minimal() -> Vec<AclEntry> {
        vec![
            e(ACL_USER_OBJ, 6, ACL_UNDEFINED_ID),
            e(ACL_GROUP_OBJ, 4, ACL_UNDEFINED_ID),
            e(ACL_OTHER, 4, ACL_UNDEFINED_ID),
        ]
    }

    fn named() -> Vec<AclEntry> {
        vec![
            e(ACL_USER_OBJ, 6, ACL_UNDEFINED_ID),
            e(ACL_USER, 4, 65534),
            e(ACL_USER, 7, 70000),
            e(ACL_GROUP_OBJ, 4, ACL_UNDEFINED_ID),
            e(ACL_GROUP, 2, 100),
            e(ACL_MASK, 6, ACL_UNDEFINED_ID),
            e(ACL_OTHER, 0, ACL_UNDEFINED_ID),
        ]
    }

    #[test]
    fn round_trips() {
        for acl in [minimal(), named(), Vec::new()] {
            assert_eq!(decode(&encode(&acl)).unwrap(), acl);
        }
        // The layout: version, then tag, perm, id little endian.
        let bytes = encode(&named());
        assert_eq!(&bytes[..4], &[2, 0, 0, 0]);
        assert_eq!(&bytes[12..20], &[2, 0, 4, 0, 0xfe, 0xff, 0, 0]);
    }

    #[test]
    fn refuses_bad_values() {
        let good = encode(&named());
        let mut v = good.clone();
        v[0] = 1;
        assert!(decode(&v).unwrap_err().0.contains("version"));
        assert!(decode(&good[..good.len() - 3]).is_err(), "partial entry");
        assert!(decode(&good[..2]).is_err(), "short header");
        assert!(decode(&[]).is_err(), "empty");
        let mut v = good.clone();
        v[6] = 0o10; // perm of the first entry
        assert!(decode(&v).is_err(), "unknown perm bits");
        let mut v = good.clone();
        v[4] = 0x40; // tag of the first entry
        assert!(decode(&v).is_err(), "unknown tag");
        // Unsorted, duplicate, missing entries.
        let mut swapped = named();
        swapped.swap(1, 2);
        assert!(decode(&encode(&swapped)).is_err(), "unsorted ids");
        let mut dup = named();
        dup[2].id = 65534;
        assert!(decode(&encode(&dup)).is_err(), "duplicate id");
        let mut two_owner = minimal();
        two_owner.insert(0, e(ACL_USER_OBJ, 7, ACL_UNDEFINED_ID));
        assert!(decode(&encode(&two_owner)).is_err(), "repeated owner");
        let mut no_mask = named();
        no_mask.retain(|x| x.tag != ACL_MASK);
        assert!(decode(&encode(&no_mask)).is_err(), "no mask");
        for tag in [ACL_USER_OBJ, ACL_GROUP_OBJ, ACL_OTHER] {
            let mut missing = minimal();
            missing.retain(|x| x.tag != tag);
            assert!(decode(&encode(&missing)).is_err(), "missing {tag:#x}");
        }
        let mut order = minimal();
        order.swap(0, 2);
        assert!(decode(&encode(&order)).is_err(), "tags out of order");
    }

    #[test]
    fn ids_of_unnamed_entries_must_be_undefined() {
        let mut v = encode(&minimal());
        v[8..12].copy_from_slice(&5u32.to_le_bytes());
        assert!(decode(&v).unwrap_err().0.contains("names id 5"));
    }

    #[test]
    fn never_panics_on_any_short_input() {
        // Every prefix and every single-byte change of a valid value: errors or values,
        // never a panic.
        let good = encode(&named());
        for n in 0..=good.len() {
            let _ = decode(&good[..n]);
        }
        for i in 0..good.len() {
            for b in [0u8, 1, 0x7f, 0xff] {
                let mut v = good.clone();
                v[i] = b;
                let _ = decode(&v);
            }
        }
    }
}
