//! The targets a workload runs against, each made fresh (mkfs on a new image of the same
//! size, or on the --device partition) and torn down after its round:
//! - `raw`: the image through the engine's io_uring device, O_DIRECT: the physical limit;
//! - `engine`: the tuxfs engine called in process, no FUSE, opened as `tuxfs-mount` opens it;
//! - `tuxfs`: `tuxfs-mount -f` with default options;
//! - `ext4`, `btrfs`, `xfs`: the kernel filesystems on a loop device with direct I/O over the
//!   image (on the partition itself with --device);
//! - `fuse2fs`: ext4 through FUSE with the options that give it its best figures.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tuxfs_engine::dev::{BlockDevice, DeviceKind, OpenOptions, open_file};
use tuxfs_engine::fs::{Filesystem, MountOptions, open_image};

use super::cleanup::{self, Guard, Undo};
use crate::daemon::{self, BoxErr, Mounted};

/// fuse2fs mount options for its best figures (see /work/shared/PLATFORM.md).
pub const FUSE2FS_OPTIONS: &str =
    "allow_other,no_default_opts,kernel_cache,use_ino,big_writes,attr_timeout=60,entry_timeout=60";

/// One kind of target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Raw,
    Engine,
    Tuxfs,
    /// tuxfs mounted with `-o uring` (FUSE over io_uring; needs fuse.enable_uring=Y).
    TuxfsUring,
    Ext4,
    Fuse2fs,
    Btrfs,
    Xfs,
}

impl Kind {
    /// Every target, in table order.
    pub const ALL: [Kind; 8] = [
        Kind::Raw,
        Kind::Engine,
        Kind::Tuxfs,
        Kind::TuxfsUring,
        Kind::Ext4,
        Kind::Fuse2fs,
        Kind::Btrfs,
        Kind::Xfs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::Engine => "engine",
            Kind::Tuxfs => "tuxfs",
            Kind::TuxfsUring => "tuxfs-uring",
            Kind::Ext4 => "ext4",
            Kind::Fuse2fs => "fuse2fs",
            Kind::Btrfs => "btrfs",
            Kind::Xfs => "xfs",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The external programs this target needs.
    fn programs(self) -> &'static [&'static str] {
        match self {
            Kind::Raw | Kind::Engine | Kind::Tuxfs | Kind::TuxfsUring => &[],
            Kind::Ext4 => &["mkfs.ext4", "losetup"],
            Kind::Fuse2fs => &["mkfs.ext4", "fuse2fs"],
            Kind::Btrfs => &["mkfs.btrfs", "losetup"],
            Kind::Xfs => &["mkfs.xfs", "losetup"],
        }
    }

    /// Why this target cannot run here, if it cannot.
    pub fn missing(self) -> Option<String> {
        if self == Kind::TuxfsUring {
            let param = "/sys/module/fuse/parameters/enable_uring";
            let on = std::fs::read_to_string(param).is_ok_and(|v| v.trim() == "Y");
            if !on {
                return Some(format!("FUSE over io_uring is off ({param} is not Y)"));
            }
        }
        let gone: Vec<&str> = self
            .programs()
            .iter()
            .copied()
            .filter(|p| !on_path(p))
            .collect();
        if gone.is_empty() {
            None
        } else {
            Some(format!(
                "{} not installed (scripts/deps --peers)",
                gone.join(", ")
            ))
        }
    }

    /// A FUSE daemon serves this target.
    pub fn has_daemon(self) -> bool {
        matches!(self, Kind::Tuxfs | Kind::TuxfsUring | Kind::Fuse2fs)
    }

    fn kernel_fs(self) -> Option<&'static str> {
        match self {
            Kind::Ext4 => Some("ext4"),
            Kind::Btrfs => Some("btrfs"),
            Kind::Xfs => Some("xfs"),
            _ => None,
        }
    }
}

/// True when `program` is an executable on PATH (or under /sbin, /usr/sbin).
pub fn on_path(program: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/sbin", "/usr/sbin"])
        .any(|d| Path::new(d).join(program).is_file())
}

/// Where targets are made: image files in a work directory, or one partition.
#[derive(Debug, Clone)]
pub struct Place {
    pub work: PathBuf,
    pub size: u64,
    pub device: Option<PathBuf>,
}

/// How a workload reaches a target.
#[derive(Debug, Clone)]
pub enum Access {
    Raw(Arc<dyn BlockDevice>),
    Engine(Arc<Filesystem>),
    Dir(PathBuf),
}

/// A target made and mounted for one round.
#[derive(Debug)]
pub struct Session {
    pub kind: Kind,
    backing: PathBuf,
    loop_dev: Option<(PathBuf, Guard)>,
    image: Option<Guard>,
    mnt: PathBuf,
    /// The daemon, the guard that unmounts it and the guard that kills it on Ctrl-C.
    daemon: Option<(Mounted, Guard, Guard)>,
    kernel_mount: Option<Guard>,
    access: Access,
    /// The mount options in effect (from /proc/self/mounts), for the machine description.
    pub mount_options: String,
}

fn run(cmd: &mut Command) -> Result<(), BoxErr> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into())
    }
}

/// Writes back and drops the kernel's page, dentry and inode caches.
pub fn drop_caches() {
    // SAFETY: sync takes no arguments.
    unsafe { libc::sync() };
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

impl Session {
    /// Makes the target fresh on `place` and mounts it.
    pub fn open(kind: Kind, place: &Place) -> Result<Session, BoxErr> {
        let (backing, image) = match &place.device {
            Some(dev) => (dev.clone(), None),
            None => {
                let img = place.work.join(format!("{}.img", kind.name()));
                let guard = cleanup::register(Undo::RemoveFile(img.clone()));
                let _ = std::fs::remove_file(&img);
                std::fs::File::create(&img)?.set_len(place.size)?;
                (img, Some(guard))
            }
        };
        let mnt = place.work.join("mnt");
        std::fs::create_dir_all(&mnt)?;
        let mut s = Session {
            kind,
            backing,
            loop_dev: None,
            image,
            mnt: mnt.clone(),
            daemon: None,
            kernel_mount: None,
            access: Access::Dir(mnt),
            mount_options: String::new(),
        };
        // On failure `s` drops here and its guards stay registered: close them.
        match s.make().and_then(|()| s.mount()) {
            Ok(_) => Ok(s),
            Err(e) => {
                s.close_quietly();
                Err(e)
            }
        }
    }

    /// How workloads reach the target.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// The FUSE daemon's pid, for targets served by one.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(|(m, _, _)| m.child.id())
    }

    /// The device the filesystem is made on (the loop device for kernel filesystems).
    fn fs_device(&self) -> PathBuf {
        self.loop_dev
            .as_ref()
            .map_or_else(|| self.backing.clone(), |(d, _)| d.clone())
    }

    fn make(&mut self) -> Result<(), BoxErr> {
        let forced = self.image.is_none();
        match self.kind {
            Kind::Raw => Ok(()),
            Kind::Engine | Kind::Tuxfs | Kind::TuxfsUring => {
                let mut cmd = Command::new(daemon::tool("mkfs-tuxfs")?);
                run(cmd.arg("--force").arg(&self.backing))
            }
            Kind::Fuse2fs => run(Command::new("mkfs.ext4")
                .args(["-F", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
                .arg(&self.backing)),
            Kind::Ext4 | Kind::Btrfs | Kind::Xfs => {
                if !forced {
                    let out = Command::new("losetup")
                        .args(["--find", "--show", "--direct-io=on"])
                        .arg(&self.backing)
                        .output()?;
                    if !out.status.success() {
                        return Err(format!(
                            "losetup: {}",
                            String::from_utf8_lossy(&out.stderr).trim()
                        )
                        .into());
                    }
                    let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                    let guard = cleanup::register(Undo::Detach(dev.clone()));
                    self.loop_dev = Some((dev, guard));
                }
                let dev = self.fs_device();
                match self.kind {
                    Kind::Ext4 => run(Command::new("mkfs.ext4")
                        .args(["-F", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
                        .arg(&dev)),
                    Kind::Btrfs => run(Command::new("mkfs.btrfs").args(["-f", "-q"]).arg(&dev)),
                    _ => run(Command::new("mkfs.xfs").args(["-f", "-q"]).arg(&dev)),
                }
            }
        }
    }

    /// Mounts the target; returns how long the mount took.
    fn mount(&mut self) -> Result<Duration, BoxErr> {
        let start = Instant::now();
        match self.kind {
            Kind::Raw => {
                let dev = open_file(
                    &self.backing,
                    &OpenOptions {
                        direct: true,
                        kind: DeviceKind::Uring,
                        queue_depth: 32,
                        ..OpenOptions::default()
                    },
                )?;
                self.access = Access::Raw(Arc::from(dev));
                self.mount_options = "O_DIRECT, io_uring, queue depth 32".into();
            }
            Kind::Engine => {
                // As tuxfs-mount opens its image by default (`direct_io=on`): io_uring when
                // available, O_DIRECT where the image's filesystem allows it.
                let dev = open_image(
                    &self.backing,
                    &OpenOptions {
                        kind: DeviceKind::Auto,
                        direct: true,
                        ..OpenOptions::default()
                    },
                )?;
                let how = if dev.alignment() > 1 {
                    "O_DIRECT"
                } else {
                    "buffered"
                };
                let fs = Filesystem::mount(Arc::from(dev), MountOptions::default())?;
                self.access = Access::Engine(fs);
                self.mount_options = format!("MountOptions::default(), {how}");
            }
            Kind::Tuxfs | Kind::TuxfsUring | Kind::Fuse2fs => {
                let mut cmd = if self.kind != Kind::Fuse2fs {
                    let mut c = Command::new(daemon::tool("tuxfs-mount")?);
                    c.arg("-f").arg(&self.backing).arg(&self.mnt);
                    if self.kind == Kind::TuxfsUring {
                        c.args(["-o", "uring"]);
                    }
                    c
                } else {
                    let mut c = Command::new("fuse2fs");
                    c.arg(&self.backing)
                        .arg(&self.mnt)
                        .args(["-f", "-o", FUSE2FS_OPTIONS]);
                    c
                };
                // The daemons' own chatter (statistics at unmount) would break the table.
                cmd.stdout(std::process::Stdio::null());
                cmd.stderr(std::process::Stdio::null());
                let (m, took) = daemon::spawn_daemon(cmd, &self.mnt)?;
                let unmount = cleanup::register(Undo::Unmount(self.mnt.clone()));
                let kill = cleanup::register(Undo::Kill(m.child.id()));
                self.daemon = Some((m, unmount, kill));
                self.access = Access::Dir(self.mnt.clone());
                self.mount_options = mount_options_of(&self.mnt);
                return Ok(took);
            }
            Kind::Ext4 | Kind::Btrfs | Kind::Xfs => {
                let fs = self.kind.kernel_fs().unwrap_or("auto");
                run(Command::new("mount")
                    .args(["-t", fs])
                    .arg(self.fs_device())
                    .arg(&self.mnt))?;
                self.kernel_mount = Some(cleanup::register(Undo::Unmount(self.mnt.clone())));
                self.access = Access::Dir(self.mnt.clone());
                self.mount_options = mount_options_of(&self.mnt);
            }
        }
        Ok(start.elapsed())
    }

    /// Cleanly unmounts (everything reaches the disk).
    fn unmount(&mut self) -> Result<(), BoxErr> {
        let access = std::mem::replace(&mut self.access, Access::Dir(self.mnt.clone()));
        match access {
            Access::Engine(fs) => fs.unmount()?,
            Access::Raw(dev) => dev.flush()?,
            Access::Dir(_) => {}
        }
        if let Some((m, unmount, kill)) = self.daemon.take() {
            let r = m.unmount();
            kill.forget();
            match r {
                Ok(()) => unmount.forget(),
                Err(e) => {
                    unmount.run();
                    return Err(e);
                }
            }
        }
        if let Some(guard) = self.kernel_mount.take() {
            guard.forget();
            run(Command::new("umount").arg(&self.mnt))?;
        }
        Ok(())
    }

    /// Unmounts, drops every cache, mounts again: the next workload starts cold.
    pub fn remount_cold(&mut self) -> Result<Duration, BoxErr> {
        self.unmount()?;
        drop_caches();
        self.mount()
    }

    /// Crashes the target (SIGKILL of the daemon; the engine dropped without unmounting)
    /// and returns how long the next mount took, recovery included. None for targets this
    /// benchmark cannot crash (the kernel filesystems and raw).
    pub fn crash_and_remount(&mut self) -> Result<Option<Duration>, BoxErr> {
        match self.kind {
            Kind::Engine => {
                // Dropping the last handle without unmount leaves the image as a crash.
                self.access = Access::Dir(self.mnt.clone());
            }
            Kind::Tuxfs | Kind::TuxfsUring | Kind::Fuse2fs => {
                if let Some((m, unmount, kill)) = self.daemon.take() {
                    m.kill()?;
                    unmount.forget();
                    kill.forget();
                }
            }
            _ => return Ok(None),
        }
        drop_caches();
        self.mount().map(Some)
    }

    /// Unmounts, detaches the loop device and removes the image.
    pub fn close(mut self) -> Result<(), BoxErr> {
        let r = self.unmount();
        self.close_quietly();
        r
    }

    fn close_quietly(&mut self) {
        self.access = Access::Dir(self.mnt.clone());
        if let Some((m, unmount, kill)) = self.daemon.take() {
            let _ = m.unmount();
            unmount.run();
            kill.run();
        }
        if let Some(g) = self.kernel_mount.take() {
            g.run();
        }
        if let Some((_, g)) = self.loop_dev.take() {
            g.run();
        }
        if let Some(g) = self.image.take() {
            g.run();
        }
    }
}

/// The options column of /proc/self/mounts for the mount on `dir`.
fn mount_options_of(dir: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let want = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f[..] {
                [_, point, fstype, opts, ..] if Path::new(point) == want => {
                    Some(format!("{fstype} {opts}"))
                }
                _ => None,
            }
        })
        .next_back()
        .unwrap_or_default()
}
