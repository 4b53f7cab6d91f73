//! Story: through a real mount, a user stores 64 KiB attribute values and many names with
//! setfattr, reads them back with getfattr, copies the file with `cp -a` and `rsync -aX`,
//! and meets the kernel's errors (E2BIG for 65537 bytes, EOPNOTSUPP for an unknown
//! namespace, EINVAL for a bare prefix, ERANGE for a long name, EPERM for `user.*` on a
//! symlink or fifo, `trusted.*` and `security.*` kept from an ordinary user). Every answer
//! is compared with ext4's: the error workload with the host's ext4, the large values with
//! an ext4 loop image made with `ea_inode` (the ext4 feature for values over a block).
//! tuxfs then goes past ext4's limit (a thousand names on one file), and everything
//! survives a remount.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Mount, get_xattr, have, list_xattrs, run, set_xattr, sh, unmount_with, xattrs_of};

/// Errors and namespace rules, as root and as `nobody`. Each command's output and exit
/// status are printed, so the whole transcript is compared.
const ERRORS: &str = r#"
umask 022
touch f && chmod 666 f
ln -s f l
mkfifo p
mkdir s && chmod 1777 s
NB="setpriv --reuid=65534 --regid=65534 --clear-groups"
long=user.$(printf 'a%.0s' $(seq 1 251))
big=0s$(head -c 65537 /dev/zero | tr '\0' 'q' | base64 -w0)
t() { echo "\$ $*"; out=$("$@" 2>&1) && rc=0 || rc=$?; echo "$out" | sed 's/^[a-z]*: //'; echo "rc=$rc"; }
t setfattr -n foo.bar -v 1 f
t setfattr -n system.foo -v 1 f
t setfattr -n user. -v 1 f
t setfattr -n trusted. -v 1 f
t setfattr -n security. -v 1 f
t setfattr -n "$long" -v 1 f
t setfattr -n system.posix_acl_access -v garbage f
t setfattr -h -n user.x -v 1 l
t setfattr -n user.x -v 1 p
t getfattr -h -n user.x l
t getfattr -n foo.bar f
t getfattr -n user.none f
t setfattr -x user.none f
t setfattr -n user.big -v "$big" f
t setfattr -n trusted.t -v secret f
t setfattr -n security.s -v sec f
t setfattr -n user.u -v 1 s
t $NB getfattr -n trusted.t f
t $NB setfattr -n trusted.t2 -v 1 f
t $NB setfattr -n security.s2 -v 1 f
t $NB setfattr -x security.s f
t $NB getfattr -n security.s f
t $NB setfattr -n user.v -v 1 s
t $NB getfattr -d -m - f
t getfattr -d -m - f
"#;

/// Large values and many names with the attr tools, then copies; prints digests.
const LARGE: &str = r#"
umask 022
head -c 65536 /dev/zero | tr '\0' 'v' > value
setfattr -n user.big -v "0s$(base64 -w0 < value)" g 2>&1 || true
touch g
setfattr -n user.big -v "0s$(base64 -w0 < value)" g
getfattr --only-values -n user.big g | cmp - value && echo "user.big reads back"
i=0
while [ $i -lt 100 ]; do setfattr -n user.name$i -v value$i g; i=$((i+1)); done
getfattr -d -e base64 g | LC_ALL=C sort | md5sum
cp -a g g.cpa
rsync -aX g g.rsync
for c in g.cpa g.rsync; do getfattr -d -e base64 $c | sed 1d | LC_ALL=C sort | md5sum; done
getfattr -d -e base64 g | sed 1d | LC_ALL=C sort | md5sum
"#;

/// An ext4 image with `ea_inode` and 4 KiB blocks, loop-mounted in `dir`, unmounted by
/// the returned guard's drop.
struct Ext4(std::path::PathBuf);

impl Ext4 {
    fn mount(scratch: &Path) -> Ext4 {
        let image = scratch.join("ext4.img");
        let dir = scratch.join("ext4");
        std::fs::create_dir(&dir).expect("ext4 mountpoint");
        run(Command::new("truncate").arg("-s").arg("64M").arg(&image));
        run(Command::new("mkfs.ext4")
            .args(["-q", "-b", "4096", "-O", "ea_inode"])
            .arg(&image));
        run(Command::new("mount")
            .arg("-o")
            .arg("loop")
            .arg(&image)
            .arg(&dir));
        Ext4(dir)
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        unmount_with(&["umount"], &self.0);
    }
}

#[test]
fn errors_and_namespaces_match_ext4() {
    if !have(&["setfattr", "getfattr", "setpriv", "base64", "mkfifo"]) {
        return;
    }
    let Some(m) = Mount::for_others("xattr-errors", 64 << 20, &[]) else {
        return;
    };
    let host = m.scratch().join("host");
    std::fs::create_dir(&host).unwrap();
    let theirs = sh(&host, ERRORS);
    let ours = sh(&m.dir, ERRORS);
    // The comparison means something only if the host said what ext4 says.
    for want in [
        "Operation not supported",
        "Invalid argument",
        "Numerical result out of range",
        "Argument list too long",
        "Operation not permitted",
        "No such attribute",
    ] {
        assert!(theirs.contains(want), "host lacks {want:?}:\n{theirs}");
    }
    assert_eq!(ours, theirs, "tuxfs answers differ from ext4's");
    m.finish();
}

#[test]
fn large_values_many_names_and_copies() {
    if !have(&[
        "setfattr",
        "getfattr",
        "rsync",
        "base64",
        "mkfs.ext4",
        "cmp",
        "md5sum",
    ]) {
        return;
    }
    let Some(mut m) = Mount::new("xattr-large", 128 << 20) else {
        return;
    };
    let ext4 = Ext4::mount(m.scratch());
    let theirs = sh(&ext4.0, LARGE);
    let ours = sh(&m.dir, LARGE);
    drop(ext4);
    assert!(theirs.contains("user.big reads back"), "ext4: {theirs}");
    assert_eq!(ours, theirs, "tuxfs answers differ from ext4 with ea_inode");
    // The copies carry every attribute, byte for byte.
    let g = xattrs_of(&m.path("g"));
    assert_eq!(g.len(), 101);
    assert_eq!(g.get(b"user.big".as_slice()).map(Vec::len), Some(65536));
    for copy in ["g.cpa", "g.rsync"] {
        assert_eq!(xattrs_of(&m.path(copy)), g, "{copy}");
    }
    // A thousand names (past what ext4 holds for one inode), through the system calls.
    let h = m.path("h");
    std::fs::write(&h, b"h").unwrap();
    for n in 0..1000u32 {
        let name = format!("user.attribute.{n:04}");
        let value = vec![n as u8; (n as usize * 13) % 300];
        set_xattr(&h, name.as_bytes(), &value, 0).expect("set");
    }
    assert_eq!(list_xattrs(&h).unwrap().len(), 1000);
    let err = set_xattr(&h, b"user.over", &vec![0; 65537], 0).expect_err("65537 bytes");
    assert_eq!(err.raw_os_error(), Some(libc::E2BIG));
    let before = (xattrs_of(&m.path("g")), xattrs_of(&h));
    m.remount_and_verify();
    assert_eq!((xattrs_of(&m.path("g")), xattrs_of(&h)), before);
    assert_eq!(
        get_xattr(&h, b"user.attribute.0999").unwrap(),
        vec![999u32 as u8; (999 * 13) % 300]
    );
    m.finish();
}
