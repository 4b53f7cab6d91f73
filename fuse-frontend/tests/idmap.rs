//! Story: a container runtime gives a container a view of a tuxfs mount through an idmapped
//! bind mount (what `mount --bind -o X-mount.idmap=...` does with util-linux 2.39+; this
//! machine has 2.38, so the test makes it with the same system calls: a user namespace
//! holding the mapping, `open_tree(OPEN_TREE_CLONE)`, `mount_setattr(MOUNT_ATTR_IDMAP)`,
//! `move_mount`). The mapping is 0→0 and 1000→2000 for uids and gids: a file owned by 1000
//! on the filesystem shows as 2000 through the idmapped mount, and what user 2000 creates
//! there (file, directory, symlink, fifo) is owned by 1000 on the filesystem; a chown to
//! 2000 through the idmapped mount stores 1000.
//!
//! The kernel allows this on a `fuseblk` mount (the default for root) and on a plain `fuse`
//! one (`-o nofuseblk`) once the daemon asked for FUSE_ALLOW_IDMAP; without it (the daemon
//! does not ask on a `noallow_other` mount, see src/idmap.rs) `mount_setattr` says EINVAL,
//! which the last test pins. A user the mapping does not cover gets EOVERFLOW.

mod common;

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::Mount;

const OPEN_TREE_CLONE: u32 = 1;
const OPEN_TREE_CLOEXEC: u32 = libc::O_CLOEXEC as u32;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x0000_0004;

/// The mapping given to the idmapped mount: (id inside = on the filesystem, id outside =
/// as callers see it, count), for uids and gids alike.
const MAPPING: &[(u32, u32, u32)] = &[(0, 0, 1), (1000, 2000, 1)];
/// A user as the filesystem stores it, and as it shows through the idmapped mount.
const FS_ID: u32 = 1000;
const SHOWN_ID: u32 = 2000;

/// `struct mount_attr`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

/// A process in a new user namespace with [`MAPPING`]; its namespace is what the idmapped
/// mount refers to. Killed on drop.
struct UserNs {
    child: Child,
    fd: OwnedFd,
}

impl UserNs {
    fn new() -> UserNs {
        let mut cmd = Command::new("sleep");
        cmd.arg("600").stdin(Stdio::null());
        // SAFETY: unshare(2) is async-signal-safe; the child is single-threaded after fork.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .expect("spawn a process in a new user namespace");
        let pid = child.id();
        let map: String = MAPPING
            .iter()
            .map(|(inside, outside, n)| format!("{inside} {outside} {n}\n"))
            .collect();
        // The namespace exists once the child has exec'd; writing the maps waits for nothing
        // else (root writes them from the parent namespace).
        let ns = PathBuf::from(format!("/proc/{pid}/ns/user"));
        let start = std::time::Instant::now();
        while std::fs::read_link(&ns).ok() == std::fs::read_link("/proc/self/ns/user").ok() {
            assert!(start.elapsed().as_secs() < 10, "the child never unshared");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::fs::write(format!("/proc/{pid}/uid_map"), &map).expect("uid_map");
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny").expect("setgroups");
        std::fs::write(format!("/proc/{pid}/gid_map"), &map).expect("gid_map");
        let fd = std::fs::File::open(&ns).expect("open the user namespace");
        UserNs {
            child,
            fd: fd.into(),
        }
    }
}

impl Drop for UserNs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An idmapped bind mount of `source` on `target`. [`IdmappedMount::unmount`] ends it;
/// when a test panics before, drop detaches it lazily, so no stale mount is left behind.
struct IdmappedMount(Option<PathBuf>);

impl IdmappedMount {
    /// Makes it, or returns the errno of the step that failed.
    fn new(source: &Path, target: &Path, ns: &UserNs) -> Result<IdmappedMount, (String, i32)> {
        let src = cpath(source);
        let fail = |what: &str| {
            (
                what.to_string(),
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            )
        };
        // SAFETY: a NUL-terminated path we own; returns a new descriptor or -1.
        let tree = unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                src.as_ptr(),
                OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC,
            )
        };
        if tree < 0 {
            return Err(fail("open_tree"));
        }
        // SAFETY: the kernel just returned this descriptor; nothing else owns it.
        let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: ns.fd.as_raw_fd() as u64,
        };
        let empty = CString::new("").expect("empty");
        // SAFETY: a detached mount descriptor, an empty path with AT_EMPTY_PATH, and a
        // `struct mount_attr` we own with its size.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_EMPTY_PATH,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if rc != 0 {
            return Err(fail("mount_setattr"));
        }
        let dst = cpath(target);
        // SAFETY: the detached mount descriptor, an empty source path with
        // MOVE_MOUNT_F_EMPTY_PATH, and a NUL-terminated target path we own.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_FDCWD,
                dst.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if rc != 0 {
            return Err(fail("move_mount"));
        }
        Ok(IdmappedMount(Some(target.to_path_buf())))
    }

    /// `umount` of the view (retried while busy); panics if it fails.
    fn unmount(mut self) {
        if let Some(dir) = self.0.take() {
            common::unmount_with(&["umount"], &dir);
        }
    }
}

impl Drop for IdmappedMount {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = Command::new("umount").arg("-l").arg(&dir).output();
        }
    }
}

/// (uid, gid) of `path`, not following symlinks.
fn owner(path: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.uid(), m.gid())
}

/// Runs a shell script as uid/gid `id` in `dir`; panics with its output when it fails.
fn sh_as(id: u32, dir: &Path, script: &str) {
    common::run(
        Command::new("sh")
            .arg("-ec")
            .arg(script)
            .current_dir(dir)
            .uid(id)
            .gid(id),
    );
}

/// The filesystem type /proc/self/mounts shows for `dir`.
fn fstype_of(dir: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    let dir = dir.display().to_string();
    mounts
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&dir.as_str()))
        .and_then(|f| f.get(2).map(|s| s.to_string()))
        .expect("the mount is listed")
}

/// The story on a mount made with `options`, whose type must start with `fstype`.
fn owners_map_both_ways(name: &str, options: &[&str], fstype: &str) {
    let Some(m) = Mount::for_others(name, 64 << 20, options) else {
        return;
    };
    assert!(
        fstype_of(&m.dir).starts_with(fstype),
        "{}",
        fstype_of(&m.dir)
    );
    std::fs::create_dir(m.path("shared")).expect("mkdir");
    std::fs::set_permissions(
        m.path("shared"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    std::fs::write(m.path("shared/theirs"), b"x").expect("write");
    std::os::unix::fs::chown(m.path("shared/theirs"), Some(FS_ID), Some(FS_ID)).expect("chown");
    std::fs::write(m.path("shared/root-made"), b"x").expect("write");

    let ns = UserNs::new();
    let view = m.scratch().join("view");
    std::fs::create_dir(&view).expect("mkdir view");
    let idmapped = IdmappedMount::new(&m.dir, &view, &ns)
        .unwrap_or_else(|(step, errno)| panic!("idmapped mount: {step}: errno {errno}"));

    // Stored ids show mapped.
    assert_eq!(owner(&view.join("shared/theirs")), (SHOWN_ID, SHOWN_ID));
    assert_eq!(owner(&view.join("shared/root-made")), (0, 0));

    // What the mapped user creates is stored as the filesystem's user.
    sh_as(
        SHOWN_ID,
        &view.join("shared"),
        "echo hi > file; mkdir dir; ln -s file link; mkfifo fifo",
    );
    for name in ["file", "dir", "link", "fifo"] {
        let through = view.join("shared").join(name);
        let stored = m.path("shared").join(name);
        assert_eq!(
            owner(&through),
            (SHOWN_ID, SHOWN_ID),
            "{name} through the view"
        );
        assert_eq!(owner(&stored), (FS_ID, FS_ID), "{name} as stored");
    }
    // chown through the view stores the filesystem's id.
    std::os::unix::fs::lchown(
        view.join("shared/root-made"),
        Some(SHOWN_ID),
        Some(SHOWN_ID),
    )
    .expect("chown through the view");
    assert_eq!(owner(&m.path("shared/root-made")), (FS_ID, FS_ID));
    assert_eq!(owner(&view.join("shared/root-made")), (SHOWN_ID, SHOWN_ID));
    // A user the mapping does not cover cannot create there: the kernel says EOVERFLOW.
    let out = Command::new("touch")
        .arg(view.join("shared/unmapped"))
        .uid(3000)
        .gid(3000)
        .output()
        .expect("run touch");
    assert!(!out.status.success(), "an unmapped user created a file");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Value too large"), "{stderr}");

    idmapped.unmount();
    drop(ns);
    m.finish();
}

#[test]
fn an_idmapped_bind_mount_of_a_fuseblk_mount_maps_owners_both_ways() {
    owners_map_both_ways("idmap-fuseblk", &[], "fuseblk");
}

#[test]
fn an_idmapped_bind_mount_of_a_fuse_mount_maps_owners_both_ways() {
    owners_map_both_ways("idmap-fuse", &["nofuseblk"], "fuse.");
}

#[test]
fn a_mount_for_its_owner_alone_refuses_idmapped_mounts() {
    // noallow_other: the daemon does not ask for FUSE_ALLOW_IDMAP (see src/idmap.rs).
    let Some(m) = Mount::with_options("idmap-owner", 64 << 20, &["noallow_other"]) else {
        return;
    };
    let ns = UserNs::new();
    let view = m.scratch().join("view");
    std::fs::create_dir(&view).expect("mkdir view");
    match IdmappedMount::new(&m.dir, &view, &ns) {
        Ok(_) => panic!("an idmapped mount of a noallow_other mount was made"),
        Err((step, errno)) => {
            assert_eq!((step.as_str(), errno), ("mount_setattr", libc::EINVAL));
        }
    }
    drop(ns);
    m.finish();
}
