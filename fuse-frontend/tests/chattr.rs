//! Story: an administrator protects files with `chattr` on a tuxfs mount as on ext4, and
//! checks with `lsattr`. As root, an immutable file refuses open for writing, truncate,
//! rename (as source and as the replaced target), unlink, link, chmod, chown, utimes and
//! xattr changes with EPERM, exactly as the host's ext4 answers the same calls side by
//! side; a write through a descriptor opened before `chattr +i` never reaches the file.
//! An append-only file takes `>>` and refuses `>`, truncate and rm, as on ext4; so does an
//! append-only directory (new entries yes, removal no). A flag tuxfs does not store
//! (`chattr +C`) is "Operation not supported", as ext4 says for it. The flags hold across
//! `remount,ro` and `remount,rw` and across unmount and mount (fsck clean each time), and
//! FS_IOC_FSGETXATTR returns them with the project id `chattr -p` set. User nobody cannot
//! set +i on its own file but can set +d, and cannot touch root's file's flags.
//!
//! Needs chattr/lsattr (e2fsprogs) and setpriv (scripts/deps installs them); a missing tool
//! skips the test, and under CI=true fails it.

mod common;

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Mount, have, mount_remount};

/// Runs chattr with `args` on `path`; Ok or the error text chattr printed.
fn chattr(args: &str, path: &Path) -> Result<(), String> {
    run_chattr(&[], args, path)
}

fn run_chattr(prefix: &[&str], args: &str, path: &Path) -> Result<(), String> {
    let mut cmd = if prefix.is_empty() {
        Command::new("chattr")
    } else {
        let mut c = Command::new(prefix[0]);
        c.args(&prefix[1..]).arg("chattr");
        c
    };
    let out = cmd
        .args(args.split_whitespace())
        .arg(path)
        .output()
        .expect("run chattr");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The flag letters `lsattr -d` shows for `path`, without the dashes (and without `e`,
/// ext4's "uses extents", which is not a flag one sets).
fn lsattr(path: &Path) -> String {
    let out = Command::new("lsattr")
        .arg("-d")
        .arg(path)
        .output()
        .expect("run lsattr");
    assert!(
        out.status.success(),
        "lsattr {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = text.split_whitespace().next().unwrap_or_default();
    let mut letters: Vec<char> = field.chars().filter(|&c| c != '-' && c != 'e').collect();
    letters.sort_unstable();
    letters.into_iter().collect()
}

/// Clears i and a under a directory on drop, so a failed test leaves nothing that cannot
/// be removed on the host's ext4.
struct Thaw(PathBuf);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = Command::new("chattr")
            .args(["-R", "-i", "-a"])
            .arg(&self.0)
            .output();
    }
}

fn errno<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in a path")
}

fn rc_errno(rc: libc::c_int) -> i32 {
    if rc == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    }
}

/// Every change tried on the immutable file `dir/f` (`dir/other` exists), as
/// (what, errno or 0).
fn immutable_ops(dir: &Path) -> Vec<(&'static str, i32)> {
    let f = dir.join("f");
    let c = cpath(&f);
    let times = [libc::timespec {
        tv_sec: 5,
        tv_nsec: 0,
    }; 2];
    vec![
        (
            "open O_WRONLY",
            errno(OpenOptions::new().write(true).open(&f)),
        ),
        (
            "open O_APPEND",
            errno(OpenOptions::new().append(true).open(&f)),
        ),
        // SAFETY: a NUL-terminated path we own.
        (
            "truncate",
            rc_errno(unsafe { libc::truncate(c.as_ptr(), 0) }),
        ),
        ("rename", errno(std::fs::rename(&f, dir.join("g")))),
        ("rename over", errno(std::fs::rename(dir.join("other"), &f))),
        ("unlink", errno(std::fs::remove_file(&f))),
        ("link", errno(std::fs::hard_link(&f, dir.join("f2")))),
        (
            "chmod",
            errno(std::fs::set_permissions(
                &f,
                std::fs::Permissions::from_mode(0o600),
            )),
        ),
        ("chown", errno(std::os::unix::fs::chown(&f, Some(1), None))),
        (
            "utimes",
            // SAFETY: a NUL-terminated path and two timespecs we own.
            rc_errno(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) }),
        ),
        (
            "touch",
            // SAFETY: as above; a null times pointer means "now".
            rc_errno(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) }),
        ),
        (
            "setxattr",
            // SAFETY: NUL-terminated name and path, a 1-byte value we own.
            rc_errno(unsafe {
                libc::setxattr(c.as_ptr(), c"user.new".as_ptr(), b"v".as_ptr().cast(), 1, 0)
            }),
        ),
        (
            "removexattr",
            // SAFETY: NUL-terminated path and name.
            rc_errno(unsafe { libc::removexattr(c.as_ptr(), c"user.k".as_ptr()) }),
        ),
    ]
}

/// `dir/f` (with xattr user.k) and `dir/other`, then `f` made immutable.
fn immutable_setup(dir: &Path) {
    std::fs::write(dir.join("f"), b"data\n").expect("write f");
    std::fs::write(dir.join("other"), b"other\n").expect("write other");
    let c = cpath(&dir.join("f"));
    // SAFETY: NUL-terminated path and name, a 1-byte value we own.
    let rc = unsafe { libc::setxattr(c.as_ptr(), c"user.k".as_ptr(), b"v".as_ptr().cast(), 1, 0) };
    assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
    chattr("+i", &dir.join("f")).expect("chattr +i");
}

#[test]
fn immutable_refuses_every_change_as_root_as_on_ext4() {
    if !have(&["chattr", "lsattr"]) {
        return;
    }
    let Some(m) = Mount::new("chattr-i", 64 << 20) else {
        return;
    };
    let ext4 = m.scratch().join("ext4");
    std::fs::create_dir(&ext4).expect("mkdir");
    let _thaw = Thaw(ext4.clone());
    immutable_setup(&m.dir);
    immutable_setup(&ext4);
    assert_eq!(lsattr(&m.path("f")), "i");
    let ours = immutable_ops(&m.dir);
    let theirs = immutable_ops(&ext4);
    for (what, e) in &ours {
        assert_eq!(*e, libc::EPERM, "{what} on an immutable file: errno {e}");
    }
    assert_eq!(ours, theirs, "tuxfs and ext4 differ");
    assert_eq!(std::fs::read(m.path("f")).expect("read"), b"data\n");
    // A flag neither stores: the same answer.
    let ours = chattr("+C", &m.path("other")).expect_err("+C");
    let theirs = chattr("+C", &ext4.join("other")).expect_err("+C on ext4");
    for said in [&ours, &theirs] {
        assert!(said.contains("Operation not supported"), "{said}");
    }
    chattr("-i", &m.path("f")).expect("chattr -i");
    std::fs::write(m.path("f"), b"thawed\n").expect("write after chattr -i");
    m.finish();
}

/// Opens `dir/f` for writing, sets +i, then writes through that descriptor: the write or
/// the fsync after it must fail with EPERM; returns which (true: the write itself).
fn write_after_chattr(dir: &Path) -> bool {
    let f = dir.join("f");
    std::fs::write(&f, b"before\n").expect("write");
    let mut file = OpenOptions::new().write(true).open(&f).expect("open");
    chattr("+i", &f).expect("chattr +i");
    let refused_at_write = match file.write_all(b"AFTER\n") {
        Err(e) => {
            assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
            true
        }
        Ok(()) => {
            let e = file
                .sync_all()
                .expect_err("fsync after a refused writeback");
            assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
            false
        }
    };
    drop(file);
    assert_eq!(
        std::fs::read(&f).expect("read"),
        b"before\n",
        "the write landed"
    );
    chattr("-i", &f).expect("chattr -i");
    refused_at_write
}

#[test]
fn a_descriptor_opened_before_chattr_i_cannot_change_the_file() {
    if !have(&["chattr"]) {
        return;
    }
    // With the writeback cache (the default) write(2) fills the page cache and the daemon
    // refuses the writeback: fsync says EPERM. Without it, write(2) itself fails, as on
    // ext4 (docs/SEMANTICS.md, File flags).
    let Some(m) = Mount::new("chattr-fd", 64 << 20) else {
        return;
    };
    assert!(
        !write_after_chattr(&m.dir),
        "writeback cache: refused at fsync"
    );
    m.finish();
    let Some(m) = Mount::with_options("chattr-fd-nowb", 64 << 20, &["nowriteback_cache"]) else {
        return;
    };
    assert!(
        write_after_chattr(&m.dir),
        "no writeback cache: refused at write"
    );
    let ext4 = m.scratch().join("ext4");
    std::fs::create_dir(&ext4).expect("mkdir");
    let _thaw = Thaw(ext4.clone());
    assert!(write_after_chattr(&ext4), "ext4 refuses at write");
    m.finish();
}

/// FS_IOC_GETFLAGS / FS_IOC_SETFLAGS (the kernel passes an int, whatever the number says).
const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
const FS_IMMUTABLE_FL: libc::c_int = 0x10;
const FS_APPEND_FL: libc::c_int = 0x20;

/// Sets (`on`) or clears `flag` (FS_*_FL) on the file open as `fd`, with the ioctl on that
/// descriptor itself, as a program (or stress-ng's inode-flags) does; chattr(1) opens the
/// file again, and that open writes the kernel's dirty pages back first.
fn set_flag(fd: &std::fs::File, flag: libc::c_int, on: bool) {
    let mut flags: libc::c_int = 0;
    // SAFETY: both ioctls take a pointer to an int, which lives across the calls.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_GETFLAGS, &mut flags) };
    assert_eq!(
        rc,
        0,
        "FS_IOC_GETFLAGS: {}",
        std::io::Error::last_os_error()
    );
    flags = if on { flags | flag } else { flags & !flag };
    // SAFETY: as above.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_SETFLAGS, &flags) };
    assert_eq!(
        rc,
        0,
        "FS_IOC_SETFLAGS: {}",
        std::io::Error::last_os_error()
    );
}

/// Writes through a descriptor, sets `flag` (FS_IMMUTABLE_FL or FS_APPEND_FL) through the
/// same descriptor, then fsyncs it: the bytes written before the flag must be kept and the
/// fsync must succeed, as on ext4. Returns the file's contents read back after clearing it.
fn written_before_the_flag(dir: &Path, flag: libc::c_int) -> Vec<u8> {
    let f = dir.join(format!("open-{flag}"));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&f)
        .expect("open");
    // Three pages and a partial one: with the writeback cache they are dirty in the kernel
    // when the flag is set.
    let data: Vec<u8> = (0..3 * 4096 + 100).map(|i| (i % 251) as u8).collect();
    file.write_all(&data).expect("write");
    set_flag(&file, flag, true);
    file.sync_all()
        .unwrap_or_else(|e| panic!("fsync after flag {flag:#x} of data written before: {e}"));
    set_flag(&file, flag, false);
    drop(file);
    std::fs::read(&f).expect("read back")
}

#[test]
fn data_written_before_chattr_is_kept_and_fsync_succeeds_as_on_ext4() {
    // Without the write-back before the flag (Adapter::ioctl), the kernel's writeback of
    // these pages was refused (EPERM at fsync, the data lost); without taking the times the
    // kernel cached for the writes (flags::is_earlier_times_writeback), fsync's write-back
    // of them was refused on the immutable file.
    let Some(mut m) = Mount::new("chattr-before", 64 << 20) else {
        return;
    };
    let ext4 = m.scratch().join("ext4");
    std::fs::create_dir(&ext4).expect("mkdir");
    let _thaw = Thaw(ext4.clone());
    let flags = [FS_IMMUTABLE_FL, FS_APPEND_FL];
    for flag in flags {
        let want = written_before_the_flag(&ext4, flag);
        assert_eq!(want.len(), 3 * 4096 + 100, "ext4 {flag:#x}");
        assert_eq!(
            written_before_the_flag(&m.dir, flag),
            want,
            "tuxfs {flag:#x}"
        );
    }
    m.remount();
    for flag in flags {
        let got = std::fs::read(m.path(format!("open-{flag}"))).expect("read after mount");
        assert_eq!(
            got.len(),
            3 * 4096 + 100,
            "{flag:#x} after unmount and mount"
        );
    }
    m.finish();
}

/// The shell steps of the append-only story, each printing its exit status.
const APPEND_SCRIPT: &str = "set +e
printf 'one\\n' > f; mkdir d; : > d/x
chattr +a f; chattr +a d
printf 'two\\n' >> f; echo \">> $?\"
printf 'bad\\n' > f 2>/dev/null; echo \"> $?\"
truncate -s 0 f 2>/dev/null; echo \"truncate $?\"
rm -f f 2>/dev/null; echo \"rm $?\"
mv f g 2>/dev/null; echo \"mv $?\"
: > d/new; echo \"create in +a dir $?\"
rm -f d/x 2>/dev/null; echo \"rm in +a dir $?\"
mv d/x d/y 2>/dev/null; echo \"mv in +a dir $?\"
cat f
chattr -a f d
";

#[test]
fn append_only_takes_appends_and_refuses_the_rest_as_on_ext4() {
    if !have(&["chattr", "truncate"]) {
        return;
    }
    let Some(m) = Mount::new("chattr-a", 64 << 20) else {
        return;
    };
    let ext4 = m.scratch().join("ext4");
    std::fs::create_dir(&ext4).expect("mkdir");
    let _thaw = Thaw(ext4.clone());
    let ours = common::sh(&m.dir, APPEND_SCRIPT);
    let theirs = common::sh(&ext4, APPEND_SCRIPT);
    let want = ">> 0\n> 2\ntruncate 1\nrm 1\nmv 1\ncreate in +a dir 0\nrm in +a dir 1\n\
                mv in +a dir 1\none\ntwo\n";
    assert_eq!(ours, want);
    assert_eq!(ours, theirs, "tuxfs and ext4 differ");
    m.finish();
}

/// `struct fsxattr`.
#[repr(C)]
#[derive(Debug, Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_XFLAG_IMMUTABLE: u32 = 0x8;
const FS_XFLAG_PROJINHERIT: u32 = 0x200;

fn fsgetxattr(path: &Path) -> FsXattr {
    let f = std::fs::File::open(path).expect("open");
    let mut x = FsXattr::default();
    // SAFETY: the kernel writes one struct fsxattr (28 bytes, repr(C)) into `x`.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FSGETXATTR, &mut x as *mut FsXattr) };
    assert_eq!(rc, 0, "FSGETXATTR: {}", std::io::Error::last_os_error());
    x
}

#[test]
fn flags_and_project_hold_across_remount_and_mount() {
    if !have(&["chattr", "lsattr"]) {
        return;
    }
    let Some(mut m) = Mount::new("chattr-remount", 64 << 20) else {
        return;
    };
    for name in ["i", "a", "dAS"] {
        std::fs::write(m.path(name), name).expect("write");
    }
    std::fs::create_dir(m.path("proj")).expect("mkdir");
    chattr("+i", &m.path("i")).expect("+i");
    chattr("+a", &m.path("a")).expect("+a");
    chattr("+d +A +S", &m.path("dAS")).expect("+dAS");
    chattr("+D +P -p 42", &m.path("proj")).expect("+DP -p 42");
    std::fs::write(m.path("proj/inherits"), b"x").expect("create in proj");
    let want = [
        ("i", "i"),
        ("a", "a"),
        ("dAS", "ASd"),
        ("proj", "DP"),
        ("proj/inherits", ""),
    ];
    let check = |m: &Mount, when: &str| {
        for (name, letters) in want {
            assert_eq!(lsattr(&m.path(name)), letters, "{name} {when}");
        }
        let x = fsgetxattr(&m.path("proj"));
        assert_eq!((x.xflags, x.projid), (FS_XFLAG_PROJINHERIT, 42), "{when}");
        assert_eq!(fsgetxattr(&m.path("proj/inherits")).projid, 42, "{when}");
        assert_eq!(
            fsgetxattr(&m.path("i")).xflags,
            FS_XFLAG_IMMUTABLE,
            "{when}"
        );
    };
    check(&m, "at first");
    mount_remount(&m.dir, "ro");
    check(&m, "after remount,ro");
    let e = chattr("-i", &m.path("i")).expect_err("chattr on a read-only mount");
    assert!(e.contains("Read-only file system"), "{e}");
    mount_remount(&m.dir, "rw");
    check(&m, "after remount,rw");
    m.remount();
    check(&m, "after unmount and mount");
    assert_eq!(std::fs::read(m.path("i")).expect("read"), b"i");
    chattr("-i", &m.path("i")).expect("-i");
    chattr("-a", &m.path("a")).expect("-a");
    m.finish();
}

#[test]
fn only_root_sets_immutable_and_the_owner_sets_nodump() {
    if !have(&["chattr", "lsattr", "setpriv"]) {
        return;
    }
    let Some(m) = Mount::for_others("chattr-nobody", 64 << 20, &[]) else {
        return;
    };
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let mine = m.path("mine");
    std::fs::write(&mine, b"x").expect("write");
    std::os::unix::fs::chown(&mine, Some(65534), Some(65534)).expect("chown");
    std::fs::write(m.path("roots"), b"x").expect("write");
    let e = run_chattr(&nobody, "+i", &mine).expect_err("nobody sets +i");
    assert!(e.contains("Operation not permitted"), "{e}");
    let e = run_chattr(&nobody, "+a", &mine).expect_err("nobody sets +a");
    assert!(e.contains("Operation not permitted"), "{e}");
    run_chattr(&nobody, "+d", &mine).expect("the owner sets +d");
    assert_eq!(lsattr(&mine), "d");
    let e = run_chattr(&nobody, "+d", &m.path("roots")).expect_err("not the owner");
    assert!(e.contains("Operation not permitted"), "{e}");
    assert_eq!(lsattr(&m.path("roots")), "");
    // Root's +i holds against the owner.
    chattr("+i", &mine).expect("root sets +i");
    let e = run_chattr(&nobody, "-i", &mine).expect_err("nobody clears +i");
    assert!(e.contains("Operation not permitted"), "{e}");
    chattr("-i", &mine).expect("root clears +i");
    m.finish();
}
