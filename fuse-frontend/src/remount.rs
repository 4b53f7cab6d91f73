//! Remounting a running mount: read-only and back, and the options that can change at run
//! time (`commit=`, `cache=`), as `mount -o remount,...` asks.
//!
//! The kernel never tells a FUSE daemon about a remount, and mount(8) reaches it in one of
//! two ways, so the daemon listens on both:
//!
//! 1. **The mount table.** For a `fuseblk.tuxfs` mount (what root gets) mount(8) has no
//!    helper unless `/sbin/mount.fuseblk.tuxfs` exists, and calls `mount(2)` with
//!    `MS_REMOUNT` itself; the kernel writes dirty pages back to the daemon (sync_filesystem)
//!    and flips the superblock's read-only flag. The daemon watches `/proc/self/mountinfo`
//!    (poll wakes on every change of the mount table) and follows its superblock's `ro`/`rw`
//!    there: to read-only it commits everything and marks the image clean
//!    ([`Filesystem::set_read_only`]); back to read-write it accepts changes again. This
//!    happens a moment after `mount` returns.
//! 2. **The helper and the control socket.** When mount(8) runs a helper (`fuse.tuxfs`
//!    through mount.fuse3, or a `/sbin/mount.fuseblk.tuxfs` link to `tuxfs-mount`), the
//!    helper gets `SOURCE MOUNTPOINT -o ...,remount,...`. `tuxfs-mount` then does not mount:
//!    it asks the daemon over a Unix socket, `/run/tuxfs/ctl-HASH.sock` (HASH: FNV-1a of the
//!    canonical mountpoint; directory 0700, socket 0600, so only the mount's owner and root
//!    reach it), to switch mode and apply `commit=`/`cache=`, and does the kernel's
//!    `mount(2)` `MS_REMOUNT` with the generic flags (`ro`, `nosuid`, `nodev`, `noexec`,
//!    `noatime`, `sync`, `dirsync`). To read-only the kernel goes first (so its dirty pages
//!    reach the daemon and no new write can), then the daemon, so `mount` returns when
//!    everything is durable; to read-write the daemon goes first, so no write the kernel
//!    lets through meets a read-only engine.
//!
//! Requests are one line, `remount\tMOUNTPOINT\tOPTIONS\n` (at most [`REQUEST_BYTES_MAX`]);
//! the answer is one line, `ok ...` or `error WHY`.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::MountOption;
use tuxfs_engine::events::Level;
use tuxfs_engine::fs::{Filesystem, Reconfigure};

use crate::errno;
use crate::logging::log;
use crate::options::Settings;

/// Where the control sockets live.
pub const CONTROL_DIR: &str = "/run/tuxfs";
/// A request line is at most this long.
pub const REQUEST_BYTES_MAX: u64 = 8192;
/// How long either side waits for the other's line (a switch to read-only commits
/// everything first, which may take a while).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the mount-table watcher sleeps at most between looks (poll normally wakes it
/// at once).
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The control socket of the mount on `mountpoint` (canonical).
pub fn control_path(mountpoint: &Path) -> PathBuf {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in mountpoint.as_os_str().as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    Path::new(CONTROL_DIR).join(format!("ctl-{hash:016x}.sock"))
}

/// Undoes the octal escapes of /proc/self/mountinfo (`\040` for a space, and so on).
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(oct) = bytes.get(i + 1..i + 4)
            && let Ok(s) = std::str::from_utf8(oct)
            && let Ok(v) = u8::from_str_radix(s, 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Whether the FUSE mount on `mountpoint` is read-only at the superblock, from the text of
/// /proc/self/mountinfo; `None` when no FUSE mount is there. The last line wins (the mount
/// on top).
pub fn super_read_only(mountinfo: &str, mountpoint: &Path) -> Option<bool> {
    let want = mountpoint.as_os_str().as_bytes();
    let mut found = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(4).map(|f| unescape(f)).as_deref() != Some(want) {
            continue;
        }
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(fstype), Some(super_opts)) = (fields.get(dash + 1), fields.get(dash + 3)) else {
            continue;
        };
        if !fstype.starts_with("fuse") {
            found = None;
            continue;
        }
        found = Some(super_opts.split(',').any(|o| o == "ro"));
    }
    found
}

/// Options a running mount can take, as the request line carries them.
fn request_options(settings: &Settings) -> String {
    let mut opts = vec![if settings.read_only { "ro" } else { "rw" }.to_string()];
    if let Some(interval) = settings.commit_interval {
        opts.push(format!("commit={}", interval.as_secs()));
    }
    if let Some(bytes) = settings.cache_bytes {
        opts.push(format!("cache={}K", bytes >> 10));
    }
    opts.join(",")
}

/// Applies a remount's options to the engine. Returns what the filesystem is now.
fn apply(fs: &Filesystem, settings: &Settings) -> Result<String, String> {
    fs.set_read_only(settings.read_only)
        .map_err(|e| errno::describe(&e))?;
    fs.reconfigure(&Reconfigure {
        commit_interval: settings.commit_interval,
        dirty_limit_bytes: settings.cache_bytes.map(|b| b / 4),
        leaf_cache_bytes: settings.cache_bytes.map(|b| b / 4),
        atime: Some(settings.atime_policy(fs.atime_policy())),
    });
    Ok(format!(
        "{} commit={}s",
        if fs.is_read_only() { "ro" } else { "rw" },
        fs.commit_interval().as_secs()
    ))
}

/// The daemon's control socket: removed when dropped (at the end of the session).
#[derive(Debug)]
pub struct Control {
    path: PathBuf,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listens on the control socket of the mount on `mountpoint` and applies remount requests
/// to `fs`. A socket left by a daemon that died is replaced; one that answers is refused.
pub fn serve_control(fs: Arc<Filesystem>, mountpoint: &Path) -> Result<Control, String> {
    let path = control_path(mountpoint);
    std::fs::create_dir_all(CONTROL_DIR)
        .and_then(|()| {
            std::fs::set_permissions(CONTROL_DIR, std::fs::Permissions::from_mode(0o700))
        })
        .map_err(|e| format!("cannot make {CONTROL_DIR}: {e}"))?;
    if UnixStream::connect(&path).is_ok() {
        return Err(format!(
            "{} is in use by another daemon for {}",
            path.display(),
            mountpoint.display()
        ));
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mine = mountpoint.to_path_buf();
    std::thread::Builder::new()
        .name("tuxfs-control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let answer = match read_request(&stream, &mine) {
                    Ok(settings) => match apply(&fs, &settings) {
                        Ok(now) => {
                            log(Level::Info, &format!("remounted {}: {now}", mine.display()));
                            format!("ok {now}\n")
                        }
                        Err(why) => format!("error {why}\n"),
                    },
                    Err(why) => format!("error {why}\n"),
                };
                let _ = (&stream).write_all(answer.as_bytes());
            }
        })
        .map_err(|e| format!("cannot start the control thread: {e}"))?;
    Ok(Control { path })
}

/// Reads and checks one request line.
fn read_request(stream: &UnixStream, mountpoint: &Path) -> Result<Settings, String> {
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream.take(REQUEST_BYTES_MAX))
        .read_line(&mut line)
        .map_err(|e| format!("reading the request: {e}"))?;
    let mut parts = line.trim_end_matches('\n').split('\t');
    let (Some("remount"), Some(target), Some(options), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request".into());
    };
    if Path::new(target) != mountpoint {
        return Err(format!(
            "this daemon serves {}, not {target}",
            mountpoint.display()
        ));
    }
    let args = ["tuxfs-mount", "-o", options, "-o", "remount", "-", target];
    Settings::from_args(args).map_err(|e| e.to_string().trim().to_string())
}

/// Follows the superblock's read-only flag of the mount on `mountpoint` in the mount table
/// (see the module doc); ends when the mount has gone.
pub fn watch_mount_table(fs: Arc<Filesystem>, mountpoint: &Path) -> Result<(), String> {
    let mut table = std::fs::File::open("/proc/self/mountinfo")
        .map_err(|e| format!("cannot watch /proc/self/mountinfo: {e}"))?;
    let mine = mountpoint.to_path_buf();
    std::thread::Builder::new()
        .name("tuxfs-mounttab".into())
        .spawn(move || {
            // The kernel's flag as last seen: only a change of it is acted on, so a helper's
            // switch to read-write (daemon first, kernel second) is not undone in between.
            let mut last: Option<bool> = None;
            loop {
                let mut text = String::new();
                if table.rewind().is_err() || table.read_to_string(&mut text).is_err() {
                    return;
                }
                match super_read_only(&text, &mine) {
                    None if last.is_some() => return,
                    None => {}
                    Some(read_only) => {
                        let changed = last.is_some_and(|was| was != read_only);
                        last = Some(read_only);
                        if changed
                            && read_only != fs.is_read_only()
                            && let Err(e) = fs.set_read_only(read_only)
                        {
                            log(
                                Level::Error,
                                &format!(
                                    "the kernel remounted {} {}, the filesystem cannot follow: {}",
                                    mine.display(),
                                    if read_only { "ro" } else { "rw" },
                                    errno::describe(&e)
                                ),
                            );
                        }
                    }
                }
                let mut pfd = libc::pollfd {
                    fd: table.as_raw_fd(),
                    events: libc::POLLPRI,
                    revents: 0,
                };
                // SAFETY: poll reads and writes the one pollfd we own.
                unsafe { libc::poll(&mut pfd, 1, WATCH_INTERVAL.as_millis() as i32) };
            }
        })
        .map(drop)
        .map_err(|e| format!("cannot start the mount-table thread: {e}"))
}

/// The `mount(2)` flags of a remount with `settings`.
fn remount_flags(settings: &Settings) -> libc::c_ulong {
    let mut flags = libc::MS_REMOUNT;
    if settings.read_only {
        flags |= libc::MS_RDONLY;
    }
    for f in &settings.kernel_flags {
        flags |= match f {
            MountOption::NoSuid => libc::MS_NOSUID,
            MountOption::NoDev => libc::MS_NODEV,
            MountOption::NoExec => libc::MS_NOEXEC,
            MountOption::NoAtime => libc::MS_NOATIME,
            MountOption::Sync => libc::MS_SYNCHRONOUS,
            MountOption::DirSync => libc::MS_DIRSYNC,
            _ => 0,
        };
    }
    flags
}

/// The kernel's half: `mount(2)` with `MS_REMOUNT`.
fn kernel_remount(mountpoint: &Path, settings: &Settings) -> Result<(), String> {
    let target = CString::new(mountpoint.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: mount reads the NUL-terminated target we own; the other pointers are null,
    // which a remount allows.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            target.as_ptr(),
            std::ptr::null(),
            remount_flags(settings),
            std::ptr::null(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    Err(if e.raw_os_error() == Some(libc::EBUSY) {
        format!(
            "the kernel refused to remount {} read-only: files are open for writing ({e})",
            mountpoint.display()
        )
    } else {
        format!("mount(2) remount of {}: {e}", mountpoint.display())
    })
}

/// The daemon's half: sends the request, returns its answer.
fn ask_daemon(mountpoint: &Path, settings: &Settings) -> Result<String, String> {
    let path = control_path(mountpoint);
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        format!(
            "cannot reach the daemon of {} at {}: {e}",
            mountpoint.display(),
            path.display()
        )
    })?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "remount\t{}\t{}\n",
        mountpoint.display(),
        request_options(settings)
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("sending to the daemon: {e}"))?;
    let mut answer = String::new();
    BufReader::new(stream.take(REQUEST_BYTES_MAX))
        .read_line(&mut answer)
        .map_err(|e| format!("waiting for the daemon: {e}"))?;
    match answer.trim_end().split_once(' ') {
        Some(("ok", now)) => Ok(now.to_string()),
        Some(("error", why)) => Err(why.to_string()),
        _ => Err(format!("the daemon answered {answer:?}")),
    }
}

/// `tuxfs-mount ... -o remount,...`: changes the running mount on the settings' mountpoint.
pub fn run(settings: &Settings) -> Result<(), String> {
    let mountpoint = settings
        .mountpoint
        .canonicalize()
        .map_err(|e| format!("{}: {e}", settings.mountpoint.display()))?;
    let table = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    if super_read_only(&table, &mountpoint).is_none() {
        return Err(format!("{} is not a tuxfs mount", mountpoint.display()));
    }
    if settings.read_only {
        kernel_remount(&mountpoint, settings)?;
        ask_daemon(&mountpoint, settings)?;
    } else {
        ask_daemon(&mountpoint, settings)?;
        kernel_remount(&mountpoint, settings)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
43 22 7:0 / /tmp/a\\040b ro,nosuid,nodev,relatime shared:5 - fuseblk.tuxfs /dev/loop0 ro,user_id=0,group_id=0,default_permissions,blksize=4096
44 22 0:50 / /mnt/t rw,relatime - fuse.tuxfs /img rw,user_id=0,group_id=0
";

    #[test]
    fn the_mount_table_says_which_mount_is_read_only() {
        assert_eq!(super_read_only(TABLE, Path::new("/tmp/a b")), Some(true));
        assert_eq!(super_read_only(TABLE, Path::new("/mnt/t")), Some(false));
        assert_eq!(super_read_only(TABLE, Path::new("/")), None, "not FUSE");
        assert_eq!(super_read_only(TABLE, Path::new("/nowhere")), None);
        assert_eq!(super_read_only("garbage\n- -\n", Path::new("/x")), None);
    }

    #[test]
    fn control_sockets_are_per_mountpoint_and_fit_a_socket_address() {
        let a = control_path(Path::new("/mnt/a"));
        let b = control_path(Path::new("/mnt/b"));
        assert_ne!(a, b);
        assert!(a.as_os_str().len() < 100);
        assert_eq!(a, control_path(Path::new("/mnt/a")));
    }

    #[test]
    fn remount_flags_follow_the_options() {
        let s = Settings::from_args([
            "tuxfs-mount",
            "-o",
            "remount,ro,nosuid,nodev,noexec",
            "img",
            "mnt",
        ])
        .unwrap();
        let f = remount_flags(&s);
        for want in [
            libc::MS_REMOUNT,
            libc::MS_RDONLY,
            libc::MS_NOSUID,
            libc::MS_NODEV,
            libc::MS_NOEXEC,
        ] {
            assert_ne!(f & want, 0, "{want:#x}");
        }
        let s = Settings::from_args(["tuxfs-mount", "-o", "remount,rw", "img", "mnt"]).unwrap();
        assert_eq!(remount_flags(&s), libc::MS_REMOUNT);
        assert_eq!(request_options(&s), "rw");
    }
}
