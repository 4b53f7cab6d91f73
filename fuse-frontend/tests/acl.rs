//! Story: a user backs up and copies files with the usual tools and expects nothing lost.
//! `tar -S` right after a write must archive the data, not a hole (st_blocks counts
//! blocks not committed yet). `setfacl` grants access that the kernel then enforces, a
//! directory's default ACL is inherited, chmod keeps the ACL mask in step, and `cp -a`,
//! `cp -p`, `tar --acls --xattrs` and `rsync -aHAX` give exactly the modes and ACLs they
//! give on the host's ext4, compared side by side.
//!
//! Needs GNU tar, setfacl/getfacl (package `acl`), rsync and setpriv (scripts/deps
//! installs them); a missing tool skips the test, and under CI=true fails it.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::{Mount, have, sh};

/// Whether user nobody can read `path`.
fn nobody_can_read(path: &Path) -> bool {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(path)
        .output()
        .expect("run setpriv")
        .status
        .success()
}

#[test]
fn tar_right_after_a_write_archives_the_data() {
    if !have(&["tar", "du", "cmp", "head"]) {
        return;
    }
    // commit=600: nothing is committed while the test runs, so the blocks are all
    // delayed allocations when tar and du look.
    let Some(m) = Mount::for_others("acl-tar", 256 << 20, &["commit=600"]) else {
        return;
    };
    let out = m.scratch().join("out");
    std::fs::create_dir(&out).unwrap();
    let tarball = m.scratch().join("x.tar");
    let orig = m.scratch().join("orig");
    sh(
        &m.dir,
        &format!("head -c 300000 /dev/urandom > f && cp f {}", orig.display()),
    );
    let blocks = std::fs::metadata(m.path("f")).unwrap().blocks();
    assert!(
        blocks >= 300_000 / 512,
        "st_blocks {blocks} right after the write"
    );
    let du = sh(&m.dir, "du -k f");
    let du_kib: u64 = du.split_whitespace().next().unwrap().parse().unwrap();
    assert!(du_kib >= 293, "du says {du_kib} KiB");
    sh(&m.dir, &format!("tar -S -cf {} f", tarball.display()));
    sh(
        &out,
        &format!("tar -xf {} && cmp f ../orig", tarball.display()),
    );
    m.finish();
}

#[test]
fn setfacl_grants_access_the_kernel_enforces() {
    if !have(&["setfacl", "getfacl", "setpriv"]) {
        return;
    }
    let Some(m) = Mount::for_others("acl-enforce", 256 << 20, &[]) else {
        return;
    };
    let f = m.path("f");
    sh(&m.dir, "echo secret > f && chmod 600 f");
    assert!(!nobody_can_read(&f), "0600 root file readable by nobody");
    sh(&m.dir, "setfacl -m u:nobody:r f");
    assert!(
        nobody_can_read(&f),
        "the ACL entry for nobody is not enforced"
    );
    let acl = sh(&m.dir, "getfacl -c f");
    assert!(acl.contains("user:nobody:r--"), "getfacl: {acl}");
    // The group bits show the mask.
    let mode = std::fs::metadata(&f).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    // chmod g-r takes the mask down: nobody loses access, getfacl agrees with the mode.
    sh(&m.dir, "chmod 600 f");
    assert!(!nobody_can_read(&f), "chmod 600 left the ACL granting read");
    let acl = sh(&m.dir, "getfacl -c f");
    assert!(acl.contains("mask::---"), "getfacl after chmod: {acl}");
    // Removing the ACL: back to the mode alone.
    sh(&m.dir, "chmod 640 f && setfacl -b f");
    assert!(!nobody_can_read(&f));
    let ls = sh(&m.dir, "ls -l f");
    assert!(ls.starts_with("-rw------- "), "ls after setfacl -b: {ls}");
    m.finish();
}

/// The workload run both on the mount and on ext4: ACLs set, inherited, chmodded, and
/// copied by cp -a, cp -p, tar --acls --xattrs and rsync -aHAX. Runs in a directory `w`
/// of the current directory; archives go next to it.
const WORKLOAD: &str = r#"
umask 022
mkdir w && cd w
echo a > plain && chmod 644 plain
cp -a plain plain.cpa
cp -p plain plain.cpp
echo b > granted && chmod 600 granted
setfacl -m u:nobody:r,g:nogroup:rw granted
echo c > masked && setfacl -m u:nobody:rwx masked && chmod 750 masked
mkdir d && setfacl -d -m u:nobody:rwx,g:nogroup:rx,o::- d
umask 077
echo x > d/f
mkdir d/sub
mkfifo d/fifo
mkdir d/sub/deeper
umask 022
echo y > d/sub/g
ln -s plain link
mkdir plaindir
umask 027
mkdir plaindir/masked && echo z > plaindir/file
umask 022
cp -a granted granted.cpa
cp -p masked masked.cpp
cp -a d d.cpa
cd ..
tar --acls --xattrs -cf w.tar w
mkdir t && tar --acls --xattrs -xpf w.tar -C t
rsync -aHAX w/ r/
"#;

/// Modes and ACLs of every path under the current directory, in name order.
const LISTING: &str = r#"
find w t r -mindepth 0 | LC_ALL=C sort | while read -r p; do
  ls -ld "$p" | awk '{print $1}'
  getfacl -p "$p" 2>&1
done
"#;

#[test]
fn tools_keep_modes_and_acls_as_on_ext4() {
    if !have(&["setfacl", "getfacl", "tar", "rsync", "mkfifo"]) {
        return;
    }
    let Some(m) = Mount::for_others("acl-tools", 256 << 20, &[]) else {
        return;
    };
    // The same workload on the host's ext4, next to the image.
    let host = m.scratch().join("host");
    std::fs::create_dir(&host).unwrap();
    sh(&m.dir, WORKLOAD);
    sh(&host, WORKLOAD);
    let ours = sh(&m.dir, LISTING);
    let theirs = sh(&host, LISTING);
    // The comparison means something only if the host kept ACLs (ext4 with acl).
    for want in [
        "default:user:nobody:rwx",
        "group:nogroup:rw-",
        "# file: r/d.cpa/sub",
    ] {
        assert!(
            theirs.contains(want),
            "host listing lacks {want}:\n{theirs}"
        );
    }
    if ours != theirs {
        let diff: Vec<String> = ours
            .lines()
            .zip(theirs.lines())
            .filter(|(a, b)| a != b)
            .take(20)
            .map(|(a, b)| format!("tuxfs: {a}\next4:  {b}"))
            .collect();
        panic!(
            "modes and ACLs differ from ext4:\n{}\n--- tuxfs ---\n{ours}",
            diff.join("\n")
        );
    }
    // And the points of the issue, plainly.
    for p in ["w/plain.cpa", "w/plain.cpp"] {
        let ls = sh(&m.dir, &format!("ls -l {p}"));
        assert!(ls.starts_with("-rw-r--r-- "), "{p}: {ls}");
    }
    let ls = sh(&m.dir, "ls -l w/d/f");
    assert!(ls.starts_with("-rw-rw----+ "), "inherited file: {ls}");
    // Everything survives a remount.
    let mut m = m;
    m.remount();
    assert_eq!(sh(&m.dir, LISTING), theirs, "after a remount");
    m.finish();
}
