//! Story: a new user mounts tuxfs and does what they do on any filesystem: copies a tree
//! with `cp -a`, `rsync -aHAX` and `tar --xattrs --acls` and expects every hard link,
//! symlink, hole, xattr, ACL, FIFO, owner, odd mode and mtime back; keeps a git repository
//! there; runs sqlite3 with a rollback journal and with WAL; makes a Python virtual
//! environment and runs it; builds a small C program with make (which trusts mtimes).
//! Each tool must work as it does on ext4, and fsck must be clean afterwards.
//!
//! Needs cp, rsync, tar, setfacl/getfacl, git, sqlite3, python3, cc and make; a missing
//! tool skips its test, and under CI=true fails it. The longer runs of the same tools and
//! the external suites are in `scripts/external-suites` (docs/TESTING.md).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{Mount, have, set_xattr, sh, snapshot};

/// Builds the source tree: regular files of several sizes, a sparse file, hard links
/// (one across directories), symlinks (relative, dangling, to a directory), a FIFO, odd
/// modes (setuid, sticky, setgid, none), other owners, user xattrs, access and default
/// ACLs, fixed mtimes.
fn make_source(dir: &Path) {
    sh(
        dir,
        r#"
umask 022
mkdir -p src/sub/deeper src/empty src/sticky
cd src
printf 'hello\n' > small
head -c 300000 /dev/urandom > big
: > empty-file
# sparse: 1 MiB hole, 4 KiB data, a hole again, 100 bytes at 8 MiB
dd if=/dev/urandom of=sparse bs=4096 seek=256 count=1 status=none
dd if=/dev/urandom of=sparse bs=1 seek=8388608 count=100 conv=notrunc status=none
ln small hard1
ln small sub/hard2
ln -s small rel-link
ln -s ../missing sub/dangling
ln -s sub dir-link
mkfifo sub/fifo
printf 'x' > setuid && chmod 4755 setuid
printf 'y' > setgid && chmod 2711 setgid
printf 'z' > none && chmod 000 none
chmod 1777 sticky
printf 'o' > sub/owned && chown 1000:65534 sub/owned
chown -h 1000:1000 rel-link
setfacl -m u:nobody:rw,g:nogroup:r sub/deeper
setfacl -m u:nobody:r big
setfacl -d -m u:nobody:rwx sub
echo inherited > sub/inherits
touch -h -d '2001-02-03 04:05:06.789' small rel-link sub/fifo
touch -d '1999-12-31 23:59:59' sub/deeper
"#,
    );
    let src = dir.join("src");
    set_xattr(&src.join("small"), b"user.tag", b"blue", 0).expect("setxattr");
    set_xattr(&src.join("sub"), b"user.dir", b"on a directory", 0).expect("setxattr");
    set_xattr(&src.join("big"), b"user.bin", &[0, 1, 2, 255], 0).expect("setxattr");
    set_xattr(&src.join("empty-file"), b"user.empty", b"", 0).expect("setxattr");
    // Directory mtimes last: the tools must restore them after filling the directories.
    sh(dir, "touch -d '2010-01-01 00:00:00' src/sub src/empty");
}

/// Owner, group and mtime (not of symlinks' targets) of every path, beside the shared
/// snapshot (type, size, mode, nlink, content, target, xattrs including ACLs).
fn owners_and_times(root: &Path) -> BTreeMap<String, (u32, u32, i64, i64)> {
    snapshot(root)
        .keys()
        .map(|rel| {
            let m = std::fs::symlink_metadata(root.join(rel)).expect("lstat");
            (
                rel.display().to_string(),
                (m.uid(), m.gid(), m.mtime(), m.mtime_nsec()),
            )
        })
        .collect()
}

/// The paths whose owner, group or mtime differ between a tree and its copy. rsync
/// compares mtimes to the second and leaves alone one that matches so, whatever the
/// nanoseconds: its copies are compared to the second (`whole_seconds`).
fn not_kept(src: &Path, copy: &Path, whole_seconds: bool) -> BTreeMap<String, String> {
    let seconds = |m: BTreeMap<String, (u32, u32, i64, i64)>| -> BTreeMap<_, _> {
        m.into_iter()
            .map(|(p, (u, g, s, ns))| (p, (u, g, s, if whole_seconds { 0 } else { ns })))
            .collect()
    };
    let (a, b) = (
        seconds(owners_and_times(src)),
        seconds(owners_and_times(copy)),
    );
    a.iter()
        .filter(|(p, v)| b.get(*p) != Some(v))
        .map(|(p, v)| {
            (
                p.clone(),
                format!("(uid, gid, mtime s, ns) {v:?} became {:?}", b.get(p)),
            )
        })
        .collect()
}

/// Everything the shared snapshot records must be kept; owners and mtimes must be kept
/// exactly where the same tool keeps them on the host's ext4 (`host_not_kept`: rsync 3.x,
/// for one, does not restore the mtime of symlinks and of some directories anywhere).
fn assert_same_tree(what: &str, src: &Path, copy: &Path, host_not_kept: &BTreeMap<String, String>) {
    let (a, b) = (snapshot(src), snapshot(copy));
    let diffs: Vec<String> = a
        .iter()
        .filter(|(p, e)| b.get(*p) != Some(e))
        .map(|(p, e)| format!("{}: {e:?} became {:?}", p.display(), b.get(p)))
        .chain(
            b.keys()
                .filter(|p| !a.contains_key(*p))
                .map(|p| format!("{}: appeared", p.display())),
        )
        .collect();
    assert!(diffs.is_empty(), "{what}:\n{}", diffs.join("\n"));
    let ours = not_kept(src, copy, what == "rsync");
    let ours_paths: Vec<&String> = ours.keys().collect();
    let host_paths: Vec<&String> = host_not_kept.keys().collect();
    assert_eq!(
        ours_paths, host_paths,
        "{what}: owners or mtimes not kept on tuxfs: {ours:#?}\non the host's ext4: {host_not_kept:#?}"
    );
}

/// Copies `src` (in `dir`) to `cpa`, `rsync` and `untar/src` with the three tools.
const COPY: &str = r#"
cp -a src cpa
rsync -aHAX src/ rsync/
tar --xattrs --xattrs-include='*' --acls -cpf tree.tar src
mkdir untar && tar --xattrs --xattrs-include='*' --acls -xpf tree.tar -C untar
rm tree.tar
diff -r --no-dereference -x fifo src cpa
diff -r --no-dereference -x fifo src rsync
diff -r --no-dereference -x fifo src untar/src
"#;

#[test]
fn cp_rsync_and_tar_round_trip_everything() {
    if !have(&[
        "cp", "rsync", "tar", "setfacl", "getfacl", "mkfifo", "dd", "diff",
    ]) {
        return;
    }
    let Some(mut m) = Mount::new("user-copies", 256 << 20) else {
        return;
    };
    make_source(&m.dir);
    sh(&m.dir, COPY);
    // The same on the host's filesystem (ext4 here), next to the image.
    let host = m.scratch().join("host");
    std::fs::create_dir(&host).expect("host dir");
    make_source(&host);
    sh(&host, COPY);
    for copy in ["cpa", "rsync", "untar/src"] {
        let host_not_kept = not_kept(&host.join("src"), &host.join(copy), copy == "rsync");
        assert_same_tree(copy, &m.path("src"), &m.path(copy), &host_not_kept);
        let (a, b) = (
            sh(&m.path("src"), "getfacl -pR . 2>&1"),
            sh(&m.path(copy), "getfacl -pR . 2>&1"),
        );
        assert_eq!(a, b, "getfacl listing of {copy}");
    }
    // cp keeps holes: its copy of the sparse file takes no more blocks than the source.
    let blocks = |p: &str| {
        std::fs::symlink_metadata(m.path(p))
            .expect("lstat")
            .blocks()
    };
    assert!(
        blocks("src/sparse") <= 16 + 8,
        "source sparse file: {}",
        blocks("src/sparse")
    );
    assert!(
        blocks("cpa/sparse") <= blocks("src/sparse"),
        "cp -a filled the holes: {} blocks against {}",
        blocks("cpa/sparse"),
        blocks("src/sparse")
    );
    // Hard links stay links: the three names of `small` share one inode in every copy.
    for copy in ["cpa", "rsync", "untar/src"] {
        let ino = |p: &str| std::fs::metadata(m.path(copy).join(p)).expect("stat").ino();
        assert_eq!(ino("small"), ino("hard1"), "{copy}");
        assert_eq!(ino("small"), ino("sub/hard2"), "{copy}");
    }
    // And all of it is on the image: unmount (fsck clean), mount, compare again.
    let before = snapshot(&m.dir);
    m.remount();
    common::assert_same(&before, &snapshot(&m.dir));
    m.finish();
}

#[test]
fn git_init_add_commit_log_gc_fsck() {
    if !have(&["git"]) {
        return;
    }
    let Some(m) = Mount::new("user-git", 256 << 20) else {
        return;
    };
    let out = sh(
        &m.dir,
        r#"
export GIT_CONFIG_NOSYSTEM=1 HOME="$PWD"
git config --global user.email t@example.com
git config --global user.name tester
git config --global init.defaultBranch main
git init -q repo && cd repo
for i in 1 2 3 4 5 6 7 8; do
  mkdir -p d$i && seq 1 $((i * 500)) > d$i/f && printf '#!/bin/sh\necho %s\n' $i > run$i.sh
  chmod +x run$i.sh
  git add -A && git commit -q -m "commit $i"
done
git mv d1 moved && git rm -q run2.sh && git commit -q -m rename
git log --oneline | wc -l
git gc -q --aggressive
git fsck --full --strict
git status --porcelain | wc -l
git clone -q . ../clone && cd ../clone && git log --oneline | wc -l && ./run8.sh
"#,
    );
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines, ["9", "0", "9", "8"], "git output:\n{out}");
    m.finish();
}

#[test]
fn sqlite_rollback_and_wal_journals_keep_the_database_intact() {
    if !have(&["sqlite3"]) {
        return;
    }
    let Some(mut m) = Mount::new("user-sqlite", 256 << 20) else {
        return;
    };
    let script = |journal: &str| {
        format!(
            r#"
sqlite3 {journal}.db "PRAGMA journal_mode={journal};" >/dev/null
for t in 1 2 3 4 5; do
  sqlite3 {journal}.db "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT, b BLOB);
    BEGIN; WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<400)
    INSERT INTO t(v, b) SELECT 'row ' || x, randomblob(300) FROM c; COMMIT;
    DELETE FROM t WHERE id % 7 = 0; CREATE INDEX IF NOT EXISTS tv ON t(v);"
done
sqlite3 {journal}.db "PRAGMA journal_mode; PRAGMA integrity_check; SELECT count(*) FROM t;"
"#
        )
    };
    for (journal, mode) in [("delete", "delete"), ("wal", "wal")] {
        let out = sh(&m.dir, &script(journal));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [mode, "ok", "1715"],
            "sqlite3 with {journal}:\n{out}"
        );
    }
    // The WAL database after a remount (its -wal was checkpointed at the last close).
    m.remount();
    let out = sh(
        &m.dir,
        "sqlite3 wal.db 'PRAGMA integrity_check; SELECT count(*) FROM t;'; \
         sqlite3 delete.db 'PRAGMA integrity_check; SELECT count(*) FROM t;'",
    );
    assert_eq!(out, "ok\n1715\nok\n1715\n");
    m.finish();
}

#[test]
fn python_venv_is_created_and_runs() {
    if !have(&["python3"]) {
        return;
    }
    let Some(m) = Mount::new("user-venv", 256 << 20) else {
        return;
    };
    let out = sh(
        &m.dir,
        r#"
python3 -m venv --without-pip venv
mkdir -p pkg/hello && printf 'def greet():\n    return "hi from the mount"\n' > pkg/hello/__init__.py
venv/bin/python -m compileall -q pkg
cd pkg && ../venv/bin/python -c 'import sys, hello; print(sys.prefix != sys.base_prefix, hello.greet())'
ls hello/__pycache__ | wc -l
"#,
    );
    assert_eq!(out, "True hi from the mount\n1\n", "venv output");
    m.finish();
}

#[test]
fn c_program_builds_with_make_and_rebuilds_by_mtime() {
    if !have(&["cc", "make"]) {
        return;
    }
    let Some(m) = Mount::new("user-make", 256 << 20) else {
        return;
    };
    let out = sh(
        &m.dir,
        r#"
mkdir prog && cd prog
printf 'int add(int a, int b) { return a + b; }\n' > add.c
printf 'int add(int, int);\n#include <stdio.h>\nint main(void) { printf("%%d\\n", add(40, 2)); return 0; }\n' > main.c
printf 'prog: main.o add.o\n\tcc -o $@ main.o add.o\n%%.o: %%.c\n\tcc -O1 -c $<\n' > Makefile
make -s -j2 && ./prog
make | grep -c 'up to date'
sleep 1.1 && touch add.c
make | grep -c '^cc'
./prog
"#,
    );
    // 42, "is up to date", two commands (add.o and the link), 42 again.
    assert_eq!(out, "42\n1\n2\n42\n", "make output");
    let prog = std::fs::metadata(m.path("prog/prog")).expect("prog");
    assert_eq!(prog.permissions().mode() & 0o111, 0o111, "executable");
    m.finish();
}
