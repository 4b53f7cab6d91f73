//! Story: an administrator writes a large file into a mount without fsync, runs `umount`
//! (or `fusermount3 -u`), and at once checks the image, copies it as a backup and mounts it
//! again elsewhere. None of that may see a stale image: when the unmount command returns,
//! everything is committed and flushed and the image lock is released. The mount shows its
//! type (`fuseblk.tuxfs`, or `fuse.tuxfs` with `nofuseblk`) so `df -t` finds it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use common::{Mount, Rng, fsck_clean, is_mountpoint, run};
use tuxfs_engine::dev::{OpenOptions, open_file};
use tuxfs_engine::fs::{Filesystem, MountOptions};
use tuxfs_fuse::daemon;

const MIB: u64 = 1 << 20;
/// Large enough that committing it takes a visible time after the last write(2).
const BIG_FILE_BYTES: usize = 40 << 20;

/// Reads file `name` in the root directory of the (unmounted) image through the engine,
/// read-only.
fn read_from_image(image: &Path, name: &str) -> Vec<u8> {
    let dev = open_file(
        image,
        &OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("open {}: {e}", image.display()));
    let fs = Filesystem::mount(
        Arc::from(dev),
        MountOptions {
            read_only: true,
            ..MountOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("engine mount of {}: {e}", image.display()));
    let attr = fs
        .lookup(tuxfs_engine::format::ROOT_INUM, name.as_bytes())
        .unwrap_or_else(|e| panic!("{name} is not in {}: {e}", image.display()));
    let mut out = Vec::with_capacity(attr.size as usize);
    while (out.len() as u64) < attr.size {
        let chunk = fs
            .read(attr.ino, out.len() as u64, 1 << 20)
            .unwrap_or_else(|e| panic!("read {name} at {}: {e}", out.len()));
        assert!(!chunk.is_empty(), "short read of {name} at {}", out.len());
        out.extend_from_slice(&chunk);
    }
    fs.unmount().expect("read-only engine unmount");
    out
}

/// How many of process `pid`'s descriptors are open on `file` (0 once it has exited).
fn descriptors_on(pid: u32, file: &Path) -> usize {
    let file = file.canonicalize().expect("image path");
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.filter_map(Result::ok)
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == file))
        .count()
}

/// The mount's type as /proc/mounts shows it.
fn mount_type(dir: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
    let dir = dir.to_str().expect("utf-8 path");
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[1] == dir).then(|| f[2].to_string())
    })
}

/// Writes a big seeded file without fsync, runs `command DIR`, and checks, right after the
/// command returns and before the daemon has been waited for, that the image is released,
/// clean and current, and that a copy made then holds the file.
fn unmount_leaves_the_image_current(name: &str, command: &[&str]) {
    let Some(mut m) = Mount::new(name, 256 * MIB) else {
        return;
    };
    assert_eq!(
        mount_type(&m.dir).as_deref(),
        Some("fuseblk.tuxfs"),
        "as root the mount is fuseblk: {}",
        m.log()
    );
    let mut rng = Rng::from_env(name);
    let data = rng.bytes(BIG_FILE_BYTES);
    std::fs::write(m.path("big"), &data).expect("write the big file");

    let started = Instant::now();
    common::unmount_with(command, &m.dir);
    let took = started.elapsed();
    eprintln!("{name}: `{}` took {took:?}", command.join(" "));

    // At once: the daemon (still running, not yet waited for) holds no descriptor of the
    // image, the lock is free, and a copy taken now is the backup a script would make.
    let open = descriptors_on(m.pid(), &m.image);
    assert_eq!(
        open, 0,
        "the daemon still has the image open after the unmount"
    );
    let lock = daemon::lock_image(&m.image)
        .unwrap_or_else(|e| panic!("the image is still locked after the unmount: {e}"));
    drop(lock);
    let backup: PathBuf = m.scratch().join("backup");
    std::fs::copy(&m.image, &backup).expect("copy the image");
    fsck_clean(&m.image);
    fsck_clean(&backup);
    let got = read_from_image(&backup, "big");
    assert_eq!(
        got.len(),
        data.len(),
        "the backup's big file has the wrong size"
    );
    assert!(got == data, "the backup's big file has the wrong content");

    m.wait_exit();
    assert!(!is_mountpoint(&m.dir));
    assert!(
        m.log().contains("unmounted") && m.log().contains("everything committed"),
        "{}",
        m.log()
    );
}

#[test]
fn umount_returns_with_the_image_committed_and_released() {
    unmount_leaves_the_image_current("umount-wait", &["umount"]);
}

#[test]
fn fusermount3_u_returns_with_the_image_committed_and_released() {
    if Command::new("fusermount3").arg("-V").output().is_err() {
        eprintln!("SKIPPED: fusermount3 is not installed (apt-get install fuse3)");
        return;
    }
    unmount_leaves_the_image_current("fusermount-wait", &["fusermount3", "-u"]);
}

/// `df -t TYPE` lists the mount.
fn df_lists(fs_type: &str, dir: &Path) -> bool {
    let out = run(Command::new("df").arg("-t").arg(fs_type));
    out.lines()
        .any(|l| l.split_whitespace().last() == dir.to_str())
}

#[test]
fn the_mount_type_carries_the_subtype_and_df_finds_it() {
    let Some(m) = Mount::new("type-blk", 64 * MIB) else {
        return;
    };
    assert_eq!(mount_type(&m.dir).as_deref(), Some("fuseblk.tuxfs"));
    assert!(df_lists("fuseblk.tuxfs", &m.dir), "df -t fuseblk.tuxfs");
    m.finish();

    let Some(m) = Mount::with_options("type-plain", 64 * MIB, &["nofuseblk"]) else {
        return;
    };
    assert_eq!(mount_type(&m.dir).as_deref(), Some("fuse.tuxfs"));
    assert!(df_lists("fuse.tuxfs", &m.dir), "df -t fuse.tuxfs");
    m.finish();

    let Some(m) = Mount::with_options("type-sub", 64 * MIB, &["subtype=tuxtest"]) else {
        return;
    };
    assert_eq!(mount_type(&m.dir).as_deref(), Some("fuseblk.tuxtest"));
    m.finish();
}

/// The file loop device `dev` is attached to, if any.
fn loop_backing_file(dev: &str) -> Option<PathBuf> {
    let name = Path::new(dev).file_name()?;
    let sys = Path::new("/sys/block").join(name).join("loop/backing_file");
    let text = std::fs::read_to_string(sys).ok()?;
    Some(PathBuf::from(text.trim_end()))
}

/// The loop device standing for the image goes away with the mount.
#[test]
fn the_loop_device_detaches_after_the_unmount() {
    let Some(mut m) = Mount::new("loop-gone", 64 * MIB) else {
        return;
    };
    let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
    let source = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == m.dir.to_str())
        .and_then(|l| l.split_whitespace().next())
        .expect("the mount is listed")
        .to_string();
    assert!(source.starts_with("/dev/loop"), "source {source}");
    let image = m.image.canonicalize().expect("image path");
    assert_eq!(loop_backing_file(&source), Some(image.clone()));
    m.unmount();
    // Auto-clear runs when the kernel releases the device at unmount; allow it a moment.
    // (Another process may attach the same device to something else meanwhile.)
    let start = Instant::now();
    while loop_backing_file(&source) == Some(image.clone()) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "{source} is still attached after the unmount"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A loop device set up by the test (the image then *is* a block device); detached on drop.
struct LoopDevice(String);

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).output();
    }
}

/// An image that is a block device is the fuseblk source itself, and `umount` waits for it
/// the same way.
#[test]
fn a_block_device_image_is_mounted_fuseblk_directly() {
    if std::fs::metadata("/dev/fuse").is_err() {
        common::skip("/dev/fuse is missing");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("backing");
    std::fs::File::create(&file)
        .and_then(|f| f.set_len(128 * MIB))
        .unwrap();
    let Ok(out) = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&file)
        .output()
    else {
        eprintln!("SKIPPED: losetup is not installed");
        return;
    };
    if !out.status.success() {
        common::skip(&format!(
            "cannot attach a loop device: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
        return;
    }
    let dev = LoopDevice(String::from_utf8_lossy(&out.stdout).trim().to_string());
    let image = PathBuf::from(&dev.0);
    common::mkfs(&image, 128 * MIB);
    let dir = tmp.path().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    run(Command::new(common::TUXFS_MOUNT).arg(&image).arg(&dir));
    let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
    let line = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == dir.to_str())
        .expect("mounted");
    assert!(
        line.starts_with(&format!("{} ", dev.0)) && line.contains(" fuseblk.tuxfs "),
        "{line}"
    );
    let data = Rng::from_env("blockdev").bytes(8 << 20);
    std::fs::write(dir.join("f"), &data).unwrap();
    run(Command::new("umount").arg(&dir));
    daemon::lock_image(&image).expect("the device is released when umount returns");
    fsck_clean(&image);
    assert!(read_from_image(&image, "f") == data, "content after umount");
}
