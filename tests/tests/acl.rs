//! Story: `cp -a`, `tar --acls` and `setfacl` set POSIX ACLs as the xattrs
//! `system.posix_acl_access` and `system.posix_acl_default`. The engine must treat them as
//! ext4 does: an ACL sets the mode, an ACL the mode can say is not stored, chmod rewrites
//! the ACL, new files inherit a directory's default ACL (else the umask applies), bad
//! values are EINVAL, and all of it survives a remount.

use tuxfs_engine::Errno;
use tuxfs_engine::format::acl::{
    ACL_GROUP, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER, ACL_UNDEFINED_ID as U, ACL_USER, ACL_USER_OBJ,
    AclEntry, XATTR_ACL_ACCESS, XATTR_ACL_DEFAULT, decode, encode,
};
use tuxfs_engine::fs::{Filesystem, SetAttr, XattrFlags};
use tuxfs_tests::fixture::{SUPERUSER as ME, mem_device, mount_default};

const ROOT: u64 = 1;
const NOBODY: u32 = 65534;

fn e(tag: u16, perm: u16, id: u32) -> AclEntry {
    AclEntry { tag, perm, id }
}

/// u::rw-, u:nobody:r--, g::r--, m::r--, o::---
fn nobody_reads() -> Vec<AclEntry> {
    vec![
        e(ACL_USER_OBJ, 6, U),
        e(ACL_USER, 4, NOBODY),
        e(ACL_GROUP_OBJ, 4, U),
        e(ACL_MASK, 4, U),
        e(ACL_OTHER, 0, U),
    ]
}

fn set(fs: &Filesystem, ino: u64, name: &[u8], acl: &[AclEntry]) -> Result<(), Errno> {
    fs.setxattr(ino, name, &encode(acl), XattrFlags::default())
        .map_err(|e| e.errno())
}

fn get(fs: &Filesystem, ino: u64, name: &[u8]) -> Option<Vec<AclEntry>> {
    match fs.getxattr(ino, name) {
        Ok(v) => Some(decode(&v).expect("stored ACL decodes")),
        Err(e) if e.errno() == Errno::NoData => None,
        Err(e) => panic!("getxattr: {e}"),
    }
}

#[test]
fn access_acl_sets_mode_and_equivalent_acl_is_not_stored() {
    let dev = mem_device(4096, 2048);
    let fs = mount_default(&dev);
    let f = fs.create(ROOT, b"f", 0o600, ME).expect("create").ino;
    // What cp -p of a 0644 file does: an ACL equal to the mode.
    let plain = vec![
        e(ACL_USER_OBJ, 6, U),
        e(ACL_GROUP_OBJ, 4, U),
        e(ACL_OTHER, 4, U),
    ];
    set(&fs, f, XATTR_ACL_ACCESS, &plain).expect("set");
    assert_eq!(fs.getattr(f).unwrap().perm, 0o644);
    assert_eq!(get(&fs, f, XATTR_ACL_ACCESS), None);
    assert!(fs.listxattr(f).unwrap().is_empty());
    // setfacl -m u:nobody:r on a 0600 file: stored, group bits show the mask.
    fs.setattr(
        f,
        &SetAttr {
            mode: Some(0o600),
            ..SetAttr::default()
        },
    )
    .unwrap();
    set(&fs, f, XATTR_ACL_ACCESS, &nobody_reads()).expect("set");
    assert_eq!(fs.getattr(f).unwrap().perm, 0o640);
    assert_eq!(get(&fs, f, XATTR_ACL_ACCESS), Some(nobody_reads()));
    // chmod 0750: owner rwx, mask r-x, other ---; the named entry keeps its bits.
    fs.setattr(
        f,
        &SetAttr {
            mode: Some(0o750),
            ..SetAttr::default()
        },
    )
    .unwrap();
    let mut want = nobody_reads();
    want[0].perm = 7;
    want[3].perm = 5;
    assert_eq!(get(&fs, f, XATTR_ACL_ACCESS), Some(want.clone()));
    // Survives a remount.
    fs.unmount().unwrap();
    let fs = mount_default(&dev);
    assert_eq!(get(&fs, f, XATTR_ACL_ACCESS), Some(want));
    assert_eq!(fs.getattr(f).unwrap().perm, 0o750);
    fs.unmount().unwrap();
}

#[test]
fn bad_acl_values_are_einval_and_change_nothing() {
    let fs = mount_default(&mem_device(4096, 2048));
    let f = fs.create(ROOT, b"f", 0o640, ME).expect("create").ino;
    let mut unsorted = nobody_reads();
    unsorted.swap(0, 1);
    let mut dup = nobody_reads();
    dup.insert(2, e(ACL_USER, 1, NOBODY));
    let mut no_mask = nobody_reads();
    no_mask.remove(3);
    let mut bad_version = encode(&nobody_reads());
    bad_version[0] = 3;
    for value in [
        encode(&unsorted),
        encode(&dup),
        encode(&no_mask),
        bad_version,
        vec![2, 0, 0, 0, 1],
        vec![],
    ] {
        let err = fs
            .setxattr(f, XATTR_ACL_ACCESS, &value, XattrFlags::default())
            .unwrap_err();
        assert_eq!(err.errno(), Errno::Invalid, "value {value:?}");
    }
    assert_eq!(fs.getattr(f).unwrap().perm, 0o640);
    assert!(fs.listxattr(f).unwrap().is_empty());
    // A default ACL on a file is refused as the kernel does (EACCES).
    let d = vec![
        e(ACL_USER_OBJ, 7, U),
        e(ACL_GROUP_OBJ, 5, U),
        e(ACL_OTHER, 5, U),
    ];
    assert_eq!(set(&fs, f, XATTR_ACL_DEFAULT, &d), Err(Errno::Access));
    fs.unmount().unwrap();
}

#[test]
fn default_acl_is_inherited_and_umask_applies_only_without_it() {
    let dev = mem_device(4096, 2048);
    let fs = mount_default(&dev);
    // No default ACL: the umask applies.
    let plain = fs
        .create_umask(ROOT, b"plain", 0o666, 0o022, ME)
        .expect("create");
    assert_eq!(plain.perm, 0o644);
    let plain_dir = fs.mkdir_umask(ROOT, b"pd", 0o777, 0o027, ME).unwrap();
    assert_eq!(plain_dir.perm, 0o750);
    assert_eq!(get(&fs, plain_dir.ino, XATTR_ACL_DEFAULT), None);
    // setfacl -d -m u:nobody:rwx,g:100:rx on a directory.
    let d = fs.mkdir_umask(ROOT, b"d", 0o755, 0, ME).unwrap().ino;
    let default = vec![
        e(ACL_USER_OBJ, 7, U),
        e(ACL_USER, 7, NOBODY),
        e(ACL_GROUP_OBJ, 5, U),
        e(ACL_GROUP, 5, 100),
        e(ACL_MASK, 7, U),
        e(ACL_OTHER, 5, U),
    ];
    set(&fs, d, XATTR_ACL_DEFAULT, &default).expect("set default");
    // A file created with 0666 under umask 077: the umask is ignored, the ACL is the
    // default masked by 0666.
    let f = fs.create_umask(d, b"f", 0o666, 0o077, ME).unwrap();
    assert_eq!(f.perm, 0o664);
    let mut want = default.clone();
    want[0].perm = 6;
    want[4].perm = 6;
    want[5].perm = 4;
    assert_eq!(get(&fs, f.ino, XATTR_ACL_ACCESS), Some(want));
    assert_eq!(get(&fs, f.ino, XATTR_ACL_DEFAULT), None);
    // A subdirectory also inherits the default ACL itself.
    let sub = fs.mkdir_umask(d, b"sub", 0o777, 0o077, ME).unwrap();
    assert_eq!(sub.perm, 0o775);
    assert_eq!(get(&fs, sub.ino, XATTR_ACL_ACCESS), Some(default.clone()));
    assert_eq!(get(&fs, sub.ino, XATTR_ACL_DEFAULT), Some(default.clone()));
    // Special files too (mknod), symlinks never.
    let fifo = fs.mknod_umask(d, b"fifo", 0o010_644, 0, 0o077, ME).unwrap();
    assert_eq!(fifo.perm, 0o644);
    let link = fs.symlink(d, b"l", b"f", ME).unwrap();
    assert!(fs.listxattr(link.ino).unwrap().is_empty());
    // Removing the default ACL: the umask applies again.
    fs.removexattr(d, XATTR_ACL_DEFAULT).unwrap();
    let g = fs.create_umask(d, b"g", 0o666, 0o077, ME).unwrap();
    assert_eq!(g.perm, 0o600);
    assert!(fs.listxattr(g.ino).unwrap().is_empty());
    fs.unmount().unwrap();
}

#[test]
fn access_acl_with_kill_sgid_clears_setgid_and_only_then() {
    let fs = mount_default(&mem_device(4096, 2048));
    let f = fs.create(ROOT, b"f", 0o600, ME).expect("create").ino;
    let d = fs.mkdir(ROOT, b"d", 0o755, ME).expect("mkdir").ino;
    let chmod = |ino: u64, mode: u32| {
        fs.setattr(
            ino,
            &SetAttr {
                mode: Some(mode),
                ..SetAttr::default()
            },
        )
        .unwrap();
    };
    let kill = XattrFlags {
        acl_kill_sgid: true,
        ..XattrFlags::default()
    };
    // Without the flag (caller in the group, or CAP_FSETID) S_ISGID stays.
    chmod(f, 0o2600);
    set(&fs, f, XATTR_ACL_ACCESS, &nobody_reads()).expect("set");
    assert_eq!(fs.getattr(f).unwrap().perm, 0o2640);
    // With it, S_ISGID goes; the permission bits come from the ACL as always.
    chmod(f, 0o2600);
    fs.setxattr(f, XATTR_ACL_ACCESS, &encode(&nobody_reads()), kill)
        .expect("set");
    assert_eq!(fs.getattr(f).unwrap().perm, 0o640);
    assert_eq!(get(&fs, f, XATTR_ACL_ACCESS), Some(nobody_reads()));
    // Also for an ACL the mode can say (not stored), and S_ISUID stays (ext4).
    chmod(f, 0o6600);
    let plain = vec![
        e(ACL_USER_OBJ, 6, U),
        e(ACL_GROUP_OBJ, 4, U),
        e(ACL_OTHER, 0, U),
    ];
    fs.setxattr(f, XATTR_ACL_ACCESS, &encode(&plain), kill)
        .expect("set");
    assert_eq!(fs.getattr(f).unwrap().perm, 0o4640);
    // A default ACL does not change the mode, flag or not.
    chmod(d, 0o2755);
    fs.setxattr(d, XATTR_ACL_DEFAULT, &encode(&nobody_reads()), kill)
        .expect("set default");
    assert_eq!(fs.getattr(d).unwrap().perm, 0o2755);
    fs.unmount().unwrap();
}

/// Regression (found by `tar --acls` extracting into a mount, user_tools.rs): removing an
/// ACL that is not there succeeds, as on ext4, where it is the kernel's `set_acl(NULL)`;
/// GNU tar and setfacl remove an empty default ACL that way and failed with ENODATA.
/// Removing any other missing xattr is still ENODATA.
#[test]
fn removing_a_missing_acl_succeeds_and_other_missing_names_are_enodata() {
    let dev = mem_device(4096, 2048);
    let fs = mount_default(&dev);
    let d = fs.mkdir(ROOT, b"d", 0o755, ME).expect("mkdir").ino;
    let before = fs.getattr(d).unwrap();
    fs.removexattr(d, XATTR_ACL_DEFAULT)
        .expect("remove a missing default ACL");
    fs.removexattr(d, XATTR_ACL_ACCESS)
        .expect("remove a missing access ACL");
    assert_eq!(fs.getattr(d).unwrap().perm, before.perm);
    assert_eq!(
        fs.removexattr(d, b"user.none").map_err(|e| e.errno()),
        Err(Errno::NoData)
    );
    // A present one is removed as before.
    set(&fs, d, XATTR_ACL_DEFAULT, &nobody_reads()).expect("set default ACL");
    fs.removexattr(d, XATTR_ACL_DEFAULT).expect("remove");
    assert_eq!(get(&fs, d, XATTR_ACL_DEFAULT), None);
}
