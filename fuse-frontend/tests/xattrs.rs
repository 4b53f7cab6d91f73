//! Story: a user tags files and directories with extended attributes, queries their sizes,
//! lists, replaces and removes them, and meets the usual errors (EEXIST, ENODATA, ERANGE).
//! The attributes that remain survive a remount.

mod common;

use common::{Mount, get_xattr, get_xattr_into, list_xattrs, remove_xattr, set_xattr};

fn errno(r: std::io::Result<impl std::fmt::Debug>) -> i32 {
    r.expect_err("expected an error")
        .raw_os_error()
        .unwrap_or(0)
}

#[test]
fn xattrs_set_get_list_remove() {
    let Some(mut m) = Mount::new("xattrs", 64 << 20) else {
        return;
    };
    let file = m.path("file");
    std::fs::write(&file, b"content").unwrap();
    let dir = m.path("dir");
    std::fs::create_dir(&dir).unwrap();

    set_xattr(&file, b"user.color", b"blue", 0).expect("set");
    set_xattr(&file, b"user.empty", b"", 0).expect("set empty value");
    let big = vec![7u8; 3000];
    set_xattr(&file, b"user.big", &big, 0).expect("set big");
    set_xattr(&dir, b"user.dir", b"on a directory", 0).expect("set on dir");

    assert_eq!(get_xattr(&file, b"user.color").unwrap(), b"blue");
    assert_eq!(get_xattr(&file, b"user.empty").unwrap(), b"");
    assert_eq!(get_xattr(&file, b"user.big").unwrap(), big);
    assert_eq!(get_xattr(&dir, b"user.dir").unwrap(), b"on a directory");

    // Size queries and small buffers.
    assert_eq!(get_xattr_into(&file, b"user.big", 0).unwrap(), 3000);
    assert_eq!(errno(get_xattr_into(&file, b"user.big", 10)), libc::ERANGE);
    assert_eq!(errno(get_xattr(&file, b"user.none")), libc::ENODATA);

    let mut names = list_xattrs(&file).unwrap();
    names.sort();
    assert_eq!(
        names,
        vec![
            b"user.big".to_vec(),
            b"user.color".to_vec(),
            b"user.empty".to_vec()
        ]
    );

    // Create and replace flags.
    assert_eq!(
        errno(set_xattr(&file, b"user.color", b"red", libc::XATTR_CREATE)),
        libc::EEXIST
    );
    assert_eq!(
        errno(set_xattr(&file, b"user.new", b"x", libc::XATTR_REPLACE)),
        libc::ENODATA
    );
    set_xattr(&file, b"user.color", b"red", libc::XATTR_REPLACE).expect("replace");
    assert_eq!(get_xattr(&file, b"user.color").unwrap(), b"red");

    remove_xattr(&file, b"user.empty").expect("remove");
    assert_eq!(errno(remove_xattr(&file, b"user.empty")), libc::ENODATA);
    assert_eq!(list_xattrs(&file).unwrap().len(), 2);

    m.remount_and_verify();
    assert_eq!(get_xattr(&file, b"user.color").unwrap(), b"red");
    assert_eq!(get_xattr(&file, b"user.big").unwrap(), big);
    m.finish();
}
