//! Story: a program fills one directory with 10,000 files (100,000 with `TUXFS_BIG=1`),
//! looks each one up, lists the directory, remounts, and removes them all. Every name is
//! found exactly once, and the emptied directory stays empty after a remount.

mod common;

use std::collections::BTreeSet;

use common::Mount;

fn file_count() -> usize {
    if std::env::var("TUXFS_BIG").is_ok_and(|v| v == "1") {
        100_000
    } else {
        10_000
    }
}

#[test]
fn many_files_in_one_directory() {
    let n = file_count();
    let Some(mut m) = Mount::new("bigdir", 1 << 30) else {
        return;
    };
    let dir = m.path("many");
    std::fs::create_dir(&dir).unwrap();
    let names: BTreeSet<String> = (0..n).map(|i| format!("file-{i:06}")).collect();
    for name in &names {
        std::fs::File::create(dir.join(name)).unwrap_or_else(|e| panic!("create {name}: {e}"));
    }
    for name in &names {
        let meta = std::fs::metadata(dir.join(name)).unwrap_or_else(|e| panic!("stat {name}: {e}"));
        assert!(meta.is_file() && meta.len() == 0);
    }
    let listed = list(&dir);
    assert_eq!(listed.len(), n, "readdir returned a wrong count");
    assert!(listed == names, "readdir returned different names");

    m.remount_and_verify();
    assert!(list(&dir) == names);

    for name in &names {
        std::fs::remove_file(dir.join(name)).unwrap_or_else(|e| panic!("unlink {name}: {e}"));
    }
    assert!(list(&dir).is_empty());
    m.remount();
    assert!(
        list(&dir).is_empty(),
        "unlinked names came back after remount"
    );
    std::fs::remove_dir(&dir).expect("rmdir the emptied directory");
    m.finish();
}

/// The names readdir returns, each at most once.
fn list(dir: &std::path::Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).expect("readdir") {
        let name = entry
            .expect("dirent")
            .file_name()
            .into_string()
            .expect("utf-8");
        assert!(out.insert(name.clone()), "readdir returned {name} twice");
    }
    out
}
