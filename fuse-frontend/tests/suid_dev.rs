//! A mount made by root behaves like ext4 for device nodes and setuid programs: by default
//! it is `suid,dev`, so a character device made with mknod works through the mount and a
//! setuid-root program run by `nobody` runs with euid 0; `-o nosuid,nodev` still turns both
//! off (the device gives EACCES, the program runs as the caller). Other users reach a root
//! mount without `allow_other`, as they reach ext4 (the kernel checks modes and ACLs);
//! `noallow_other` keeps it to root.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::Mount;

/// Makes a character device with the numbers of /dev/null (1, 3) at `path`.
fn mknod_null(path: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: mknod reads the NUL-terminated path we own.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Copies `id` into the mount as a setuid-root program and runs `id -u` as nobody; returns
/// what it printed.
fn setuid_id_as_nobody(m: &Mount) -> String {
    let prog = m.path("suid-id");
    std::fs::copy("/usr/bin/id", &prog).expect("copy id into the mount");
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(&prog)
        .arg("-u")
        .output()
        .expect("run setpriv");
    assert!(
        out.status.success(),
        "{} -u as nobody: {}",
        prog.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The mount's flags in /proc/self/mounts.
fn mount_flags(dir: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    let dir = dir.to_str().expect("utf-8 path");
    mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(dir))
        .and_then(|l| l.split(' ').nth(3))
        .unwrap_or_default()
        .to_string()
}

/// nobody must reach the mountpoint through the test's temporary directory.
fn open_to_nobody(m: &Mount) {
    std::fs::set_permissions(m.scratch(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_root_mount_has_working_device_nodes_and_setuid_programs() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        common::skip("suid/dev defaults apply to mounts made by root");
        return;
    }
    // No allow_other: a root mount serves every user by default.
    let Some(m) = Mount::new("suid-dev", 64 << 20) else {
        return;
    };
    open_to_nobody(&m);
    let flags = mount_flags(&m.dir);
    assert!(
        !flags.split(',').any(|f| f == "nosuid" || f == "nodev"),
        "a root mount defaults to suid,dev: {flags}"
    );
    let node = m.path("null");
    mknod_null(&node).expect("mknod");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&node)
        .expect("open the device node");
    f.write_all(b"into the void").expect("write to the device");
    let mut back = Vec::new();
    f.read_to_end(&mut back).expect("read the device");
    assert!(back.is_empty(), "/dev/null reads nothing, got {back:?}");
    drop(f);
    let cat = common::run(Command::new("cat").arg(&node));
    assert_eq!(cat, "");
    assert_eq!(
        setuid_id_as_nobody(&m),
        "0",
        "setuid-root program runs as root"
    );
    m.finish();
}

#[test]
fn nosuid_and_nodev_still_apply_when_asked() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        common::skip("needs root for mknod and setuid");
        return;
    }
    let Some(m) = Mount::with_options("nosuid-nodev", 64 << 20, &["allow_other,nosuid,nodev"])
    else {
        return;
    };
    open_to_nobody(&m);
    let flags = mount_flags(&m.dir);
    assert!(
        flags.contains("nosuid") && flags.contains("nodev"),
        "{flags}"
    );
    let node = m.path("null");
    mknod_null(&node).expect("mknod still succeeds on a nodev mount");
    let err = std::fs::File::open(&node).expect_err("a nodev mount refuses to open devices");
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    let nobody = common::run(Command::new("id").args(["-u", "nobody"]));
    assert_eq!(
        setuid_id_as_nobody(&m),
        nobody.trim(),
        "nosuid ignores the bit"
    );
    m.finish();
}

#[test]
fn other_users_reach_a_root_mount_unless_noallow_other() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        common::skip("the default applies to mounts made by root");
        return;
    }
    let cat_as_nobody = |path: &Path| {
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat"])
            .arg(path)
            .output()
            .expect("run setpriv")
    };
    for (name, options, reachable) in [
        ("others-default", "", true),
        ("others-private", "noallow_other", false),
    ] {
        let opts: Vec<&str> = if options.is_empty() {
            Vec::new()
        } else {
            vec![options]
        };
        let Some(m) = Mount::with_options(name, 64 << 20, &opts) else {
            return;
        };
        open_to_nobody(&m);
        let file = m.path("readable");
        std::fs::write(&file, b"for everyone\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let out = cat_as_nobody(&file);
        assert_eq!(
            out.status.success(),
            reachable,
            "{name}: nobody reading a 0644 file: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if reachable {
            assert_eq!(out.stdout, b"for everyone\n");
        }
        m.finish();
    }
}
