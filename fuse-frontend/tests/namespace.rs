//! Story: a user builds a deep directory tree, renames files and directories within and
//! across directories (also over existing names), makes hard links and symlinks, removes a
//! file while it is still open, and tries a name that is too long. Link counts, link targets
//! and contents stay right, and survive an unmount, fsck and remount.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use common::Mount;

const MIB: u64 = 1 << 20;

#[test]
fn a_directory_tree_fifty_deep() {
    let Some(mut m) = Mount::new("deep", 64 * MIB) else {
        return;
    };
    let mut dir = m.path("");
    for depth in 0..50 {
        dir = dir.join(format!("level-{depth:02}"));
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("file"), format!("depth {depth}")).expect("write");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("file")).expect("read deepest"),
        "depth 49"
    );
    let top = std::fs::metadata(m.path("level-00")).expect("stat");
    assert_eq!(
        top.nlink(),
        3,
        "a directory with one subdirectory has nlink 3"
    );
    m.remount_and_verify();
    // Remove it all from the bottom up.
    std::fs::remove_dir_all(m.path("level-00")).expect("rm -r");
    assert_eq!(
        std::fs::read_dir(m.path("")).unwrap().count(),
        1,
        "only lost+found is left"
    );
    m.remount_and_verify();
    m.finish();
}

#[test]
fn renames_within_and_across_directories() {
    let Some(mut m) = Mount::new("rename", 64 * MIB) else {
        return;
    };
    std::fs::create_dir(m.path("a")).unwrap();
    std::fs::create_dir(m.path("b")).unwrap();
    std::fs::write(m.path("a/one"), b"one").unwrap();
    std::fs::write(m.path("a/two"), b"two").unwrap();
    std::fs::write(m.path("b/victim"), b"victim").unwrap();

    std::fs::rename(m.path("a/one"), m.path("a/uno")).expect("rename in a directory");
    std::fs::rename(m.path("a/uno"), m.path("b/one")).expect("rename across directories");
    std::fs::rename(m.path("a/two"), m.path("b/victim")).expect("rename over a file");
    assert!(!m.path("a/one").exists() && !m.path("a/two").exists());
    assert_eq!(std::fs::read(m.path("b/one")).unwrap(), b"one");
    assert_eq!(std::fs::read(m.path("b/victim")).unwrap(), b"two");

    // A directory with content moves with its content; ".." follows (nlink of parents).
    std::fs::create_dir_all(m.path("a/sub/inner")).unwrap();
    std::fs::write(m.path("a/sub/inner/f"), b"f").unwrap();
    std::fs::rename(m.path("a/sub"), m.path("b/sub")).expect("rename a directory");
    assert_eq!(std::fs::read(m.path("b/sub/inner/f")).unwrap(), b"f");
    assert_eq!(std::fs::metadata(m.path("a")).unwrap().nlink(), 2);
    assert_eq!(std::fs::metadata(m.path("b")).unwrap().nlink(), 3);
    // A directory over an empty directory.
    std::fs::create_dir(m.path("a/empty")).unwrap();
    std::fs::rename(m.path("b/sub"), m.path("a/empty")).expect("rename over empty dir");
    assert_eq!(std::fs::read(m.path("a/empty/inner/f")).unwrap(), b"f");
    // A directory over a non-empty one is refused.
    std::fs::create_dir_all(m.path("b/full/x")).unwrap();
    let err = std::fs::rename(m.path("a/empty"), m.path("b/full")).unwrap_err();
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::ENOTEMPTY) | Some(libc::EEXIST)
        ),
        "{err}"
    );
    m.remount_and_verify();
    m.finish();
}

#[test]
fn hard_links_count_and_share_content() {
    let Some(mut m) = Mount::new("links", 64 * MIB) else {
        return;
    };
    std::fs::create_dir(m.path("d")).unwrap();
    std::fs::write(m.path("orig"), b"shared").unwrap();
    std::fs::hard_link(m.path("orig"), m.path("d/link1")).expect("link");
    std::fs::hard_link(m.path("orig"), m.path("link2")).expect("link");
    let meta = std::fs::metadata(m.path("orig")).unwrap();
    assert_eq!(meta.nlink(), 3);
    assert_eq!(
        meta.ino(),
        std::fs::metadata(m.path("d/link1")).unwrap().ino()
    );
    std::fs::write(m.path("link2"), b"changed through link2").unwrap();
    assert_eq!(
        std::fs::read(m.path("d/link1")).unwrap(),
        b"changed through link2"
    );
    m.remount_and_verify();
    std::fs::remove_file(m.path("orig")).unwrap();
    assert_eq!(std::fs::metadata(m.path("link2")).unwrap().nlink(), 2);
    m.remount_and_verify();
    m.finish();
}

#[test]
fn symlinks_read_back_their_targets() {
    let Some(mut m) = Mount::new("symlinks", 64 * MIB) else {
        return;
    };
    std::fs::write(m.path("target"), b"pointed at").unwrap();
    std::os::unix::fs::symlink("target", m.path("rel")).expect("symlink");
    std::os::unix::fs::symlink("/does/not/exist", m.path("dangling")).expect("symlink");
    let long_target = "x/".repeat(1000) + "end";
    std::os::unix::fs::symlink(&long_target, m.path("long")).expect("long symlink");
    assert_eq!(
        std::fs::read_link(m.path("rel")).unwrap(),
        PathBuf::from("target")
    );
    assert_eq!(std::fs::read(m.path("rel")).unwrap(), b"pointed at");
    assert_eq!(
        std::fs::read_link(m.path("dangling")).unwrap(),
        PathBuf::from("/does/not/exist")
    );
    assert_eq!(
        std::fs::read_link(m.path("long")).unwrap(),
        PathBuf::from(&long_target)
    );
    assert!(
        std::fs::symlink_metadata(m.path("rel"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    m.remount_and_verify();
    m.finish();
}

#[test]
fn an_unlinked_open_file_stays_readable_until_closed() {
    let Some(mut m) = Mount::new("orphan", 64 * MIB) else {
        return;
    };
    let path = m.path("doomed");
    let content = vec![0x5A; 300_000];
    std::fs::write(&path, &content).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).expect("unlink while open");
    assert!(!path.exists());
    let mut back = Vec::new();
    f.read_to_end(&mut back).expect("read after unlink");
    assert!(back == content);
    f.write_all(b"more").expect("write after unlink");
    f.seek(SeekFrom::Start(300_000)).unwrap();
    let mut tail = [0u8; 4];
    f.read_exact(&mut tail).unwrap();
    assert_eq!(&tail, b"more");
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    drop(f);
    m.remount_and_verify();
    m.finish();
}

#[test]
fn names_longer_than_255_bytes_are_refused() {
    let Some(mut m) = Mount::new("namelen", 64 * MIB) else {
        return;
    };
    let ok = "n".repeat(255);
    let long = "n".repeat(256);
    std::fs::write(m.path(&ok), b"fits").expect("255-byte name");
    let too_long = |r: std::io::Result<()>| {
        let e = r.expect_err("a 256-byte name was accepted");
        assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG), "{e}");
    };
    too_long(std::fs::write(m.path(&long), b"x"));
    too_long(std::fs::create_dir(m.path(&long)));
    too_long(std::os::unix::fs::symlink("t", m.path(&long)));
    too_long(std::fs::hard_link(m.path(&ok), m.path(&long)));
    too_long(std::fs::rename(m.path(&ok), m.path(&long)));
    assert_eq!(std::fs::read(m.path(&ok)).unwrap(), b"fits");
    m.remount_and_verify();
    m.finish();
}
