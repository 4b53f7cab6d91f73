//! Shared harness of the FUSE end-to-end tests: a [`Mount`] of a fresh image in a temporary
//! directory through the real `tuxfs-mount` binary, unmounting with fsck after, tree
//! snapshots to compare before and after a remount, and a seeded PRNG.
//!
//! Skip rule: when /dev/fuse is missing or mounting fails for lack of privilege, a test
//! prints why and returns, except under `CI=true`, where it fails instead.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tuxfs_engine::dev::{OpenOptions, open_file};

/// How long a mount may take to appear.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the daemon may take to commit and exit after the unmount.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `umount` is retried while the mount is busy (a just-closed file may still be
/// released asynchronously by the kernel).
const UMOUNT_RETRY: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);

/// The binary under test.
pub const TUXFS_MOUNT: &str = env!("CARGO_BIN_EXE_tuxfs-mount");

/// True under `CI=true`: skipping is then a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips the test (prints why) or, in CI, fails it.
pub fn skip(why: &str) {
    if in_ci() {
        panic!("CI=true and the FUSE test cannot run: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// Whether /dev/fuse can be opened; the reason when it cannot.
fn fuse_available() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map(drop)
        .map_err(|e| format!("/dev/fuse is not usable: {e}"))
}

/// Creates a tuxfs image of `size` bytes at `path`.
pub fn mkfs(path: &Path, size: u64) {
    let req = tuxfs_mkfs::Request {
        size: Some(size),
        ..tuxfs_mkfs::Request::new(path)
    };
    tuxfs_mkfs::run(&req).unwrap_or_else(|e| panic!("mkfs {}: {e}", path.display()));
}

/// Runs fsck (check only, data checksums included) on an image that is not mounted and
/// asserts that it is clean.
pub fn fsck_clean(image: &Path) {
    let dev = open_file(
        image,
        &OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("open {} for fsck: {e}", image.display()));
    let report = tuxfs_fsck::check(
        &*dev,
        &tuxfs_fsck::Options {
            mode: tuxfs_fsck::Mode::Check,
            check_data: true,
        },
    )
    .unwrap_or_else(|e| panic!("fsck {}: {e}", image.display()));
    if report.exit_code() != 0 {
        let text = tuxfs_fsck::render_human(&image.display().to_string(), &report, true);
        panic!("fsck is not clean (exit {}):\n{text}", report.exit_code());
    }
}

/// True when `dir` is a mountpoint: its device differs from its parent's.
pub fn is_mountpoint(dir: &Path) -> bool {
    let (Ok(me), Some(Ok(parent))) = (std::fs::metadata(dir), dir.parent().map(std::fs::metadata))
    else {
        return false;
    };
    me.dev() != parent.dev()
}

/// A mounted tuxfs image served by a `tuxfs-mount -f` child.
#[derive(Debug)]
pub struct Mount {
    /// Holds the image, the mountpoint and the daemon's log; removed on drop.
    tmp: tempfile::TempDir,
    pub image: PathBuf,
    pub dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Extra `-o` options used at every (re)mount.
    options: Vec<String>,
}

impl Mount {
    /// mkfs a new image of `size` bytes and mount it. `None` when the test must be skipped
    /// (already reported).
    pub fn new(name: &str, size: u64) -> Option<Mount> {
        Mount::with_options(name, size, &[])
    }

    /// Like [`Mount::new`] with extra `-o` options.
    pub fn with_options(name: &str, size: u64, options: &[&str]) -> Option<Mount> {
        if let Err(why) = fuse_available() {
            skip(&why);
            return None;
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!("tuxfs-e2e-{name}-"))
            .tempdir()
            .expect("temporary directory");
        let image = tmp.path().join("image");
        let dir = tmp.path().join("mnt");
        std::fs::create_dir(&dir).expect("mountpoint");
        mkfs(&image, size);
        let mut m = Mount {
            log: tmp.path().join("tuxfs-mount.log"),
            tmp,
            image,
            dir,
            child: None,
            options: options.iter().map(|s| s.to_string()).collect(),
        };
        if m.start() { Some(m) } else { None }
    }

    /// Like [`Mount::with_options`], plus `allow_other` and a temporary directory others
    /// can traverse: a mount that other users (such as `nobody`) can reach.
    pub fn for_others(name: &str, size: u64, options: &[&str]) -> Option<Mount> {
        let mut opts = vec!["allow_other"];
        opts.extend_from_slice(options);
        let m = Mount::with_options(name, size, &opts)?;
        std::fs::set_permissions(m.scratch(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod scratch");
        Some(m)
    }

    /// Mounts an existing image on `dir`, both inside `tmp`, which the mount then owns.
    pub fn adopt(tmp: tempfile::TempDir, image: PathBuf, dir: PathBuf) -> Option<Mount> {
        let mut m = Mount {
            log: tmp.path().join("tuxfs-mount.log"),
            tmp,
            image,
            dir,
            child: None,
            options: Vec::new(),
        };
        if m.start() { Some(m) } else { None }
    }

    /// A path inside the mount.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.join(rel)
    }

    /// The temporary directory holding the image (outside the mount).
    pub fn scratch(&self) -> &Path {
        self.tmp.path()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Read system calls the daemon has made: one per FUSE request it received.
    pub fn daemon_reads(&self) -> u64 {
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.pid())).expect("/proc/PID/io");
        io.lines()
            .find_map(|l| l.strip_prefix("syscr:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("syscr in /proc/PID/io")
    }

    /// Requests the daemon received while `f` ran.
    pub fn requests_during(&self, f: impl FnOnce()) -> u64 {
        let before = self.daemon_reads();
        f();
        self.daemon_reads() - before
    }

    /// The daemon's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Spawns `tuxfs-mount -f` and waits until the mount is up. False when skipped.
    fn start(&mut self) -> bool {
        let log = File::create(&self.log).expect("log file");
        let mut cmd = Command::new(TUXFS_MOUNT);
        cmd.arg("-f");
        for o in &self.options {
            cmd.arg("-o").arg(o);
        }
        // TUXFS_TEST_URING=1 runs every mount through FUSE over io_uring (docs/TESTING.md).
        if std::env::var("TUXFS_TEST_URING").is_ok_and(|v| v == "1") {
            cmd.arg("-o").arg("uring");
        }
        let child = cmd
            .arg(&self.image)
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tuxfs-mount");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if is_mountpoint(&self.dir) {
                return true;
            }
            if let Some(status) = self.try_wait() {
                self.child = None;
                let log = self.log();
                let denied = ["Operation not permitted", "Permission denied", "needs root"];
                if denied.iter().any(|d| log.contains(d)) {
                    skip(&format!("mounting is not permitted here: {}", log.trim()));
                    return false;
                }
                panic!("tuxfs-mount exited ({status}) before the mount was up: {log}");
            }
            if start.elapsed() > MOUNT_TIMEOUT {
                self.kill();
                panic!(
                    "the mount did not appear within {MOUNT_TIMEOUT:?}: {}",
                    self.log()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits (bounded) for the daemon to exit and asserts it exited 0.
    pub fn wait_exit(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                assert!(
                    status.success(),
                    "tuxfs-mount exited with {status}: {}",
                    self.log()
                );
                return;
            }
            if start.elapsed() > EXIT_TIMEOUT {
                self.kill();
                panic!("tuxfs-mount did not exit within {EXIT_TIMEOUT:?} after the unmount");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Runs `umount` (retrying while busy, bounded), waits for the daemon to exit 0, and
    /// checks the image with fsck.
    pub fn unmount(&mut self) {
        if self.child.is_none() {
            return;
        }
        unmount_with(&["umount"], &self.dir);
        self.wait_exit();
        assert!(!is_mountpoint(&self.dir), "still mounted after umount");
        fsck_clean(&self.image);
    }

    /// Unmounts (with fsck) and mounts the same image again.
    pub fn remount(&mut self) {
        self.unmount();
        assert!(
            self.start(),
            "remount was skipped after a first mount worked"
        );
    }

    /// Snapshot, remount, snapshot again, and compare: every name, type, size, byte, link
    /// target and xattr must have survived.
    pub fn remount_and_verify(&mut self) {
        let before = snapshot(&self.dir);
        self.remount();
        let after = snapshot(&self.dir);
        assert_same(&before, &after);
    }

    /// Ends the test: unmount and fsck.
    pub fn finish(mut self) {
        self.unmount();
    }

    /// Kills the daemon with SIGKILL (a crash of the process: no commit, no unmount),
    /// detaches the dead mount, checks the image with fsck (which must find it clean: the
    /// log replays), and mounts it again.
    pub fn crash_and_restart(&mut self) {
        self.signal(libc::SIGKILL);
        let start = Instant::now();
        while self.try_wait().is_none() {
            assert!(
                start.elapsed() < EXIT_TIMEOUT,
                "the daemon survived SIGKILL"
            );
            std::thread::sleep(POLL);
        }
        self.child = None;
        // The kernel keeps the dead mount until it is detached ("transport endpoint is not
        // connected"); a lazy unmount detaches it.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
        let start = Instant::now();
        while is_mountpoint(&self.dir) {
            assert!(
                start.elapsed() < EXIT_TIMEOUT,
                "the dead mount stayed attached"
            );
            std::thread::sleep(POLL);
        }
        fsck_clean(&self.image);
        assert!(
            self.start(),
            "remount after a crash was skipped after a first mount worked"
        );
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.pid()).expect("pid");
        // SAFETY: kill(2) with a pid of our own child; no memory is passed.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // The safety net when a test panicked: never leave a mount behind (lazy unmount so a
        // busy mount cannot block), never assert here.
        if self.child.is_some() {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
            let start = Instant::now();
            while self.try_wait().is_none() && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(POLL);
            }
            self.kill();
        }
    }
}

/// The mount-visible state of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 'f' file, 'd' directory, 'l' symlink, 'c'/'b' devices, 'p' fifo, 's' socket.
    pub kind: char,
    pub size: u64,
    pub mode: u32,
    pub nlink: u64,
    /// crc32 of the content (regular files).
    pub crc: u32,
    /// The symlink target.
    pub target: Option<PathBuf>,
    /// Extended attributes: name to value.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Path (relative to the root; the root itself is "") to its state, for every path under
/// `root`.
pub type Snapshot = BTreeMap<PathBuf, Entry>;

/// Walks `root` and records every path.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

fn walk(root: &Path, rel: &Path, out: &mut Snapshot) {
    let path = root.join(rel);
    let meta = std::fs::symlink_metadata(&path)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    let ft = meta.file_type();
    use std::os::unix::fs::FileTypeExt;
    let kind = if ft.is_file() {
        'f'
    } else if ft.is_dir() {
        'd'
    } else if ft.is_symlink() {
        'l'
    } else if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else if ft.is_fifo() {
        'p'
    } else {
        's'
    };
    let entry = Entry {
        kind,
        size: if kind == 'd' { 0 } else { meta.len() },
        mode: meta.permissions().mode() & 0o7777,
        nlink: meta.nlink(),
        crc: if kind == 'f' { crc_of_file(&path) } else { 0 },
        target: if kind == 'l' {
            Some(std::fs::read_link(&path).expect("readlink"))
        } else {
            None
        },
        xattrs: xattrs_of(&path),
    };
    out.insert(rel.to_path_buf(), entry);
    if kind == 'd' {
        let mut names: Vec<_> = std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("readdir {}: {e}", path.display()))
            .map(|e| e.expect("dirent").file_name())
            .collect();
        names.sort();
        for name in names {
            walk(root, &rel.join(name), out);
        }
    }
}

/// crc32 of a file's content, read in 1 MiB pieces.
pub fn crc_of_file(path: &Path) -> u32 {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            return h.finalize();
        }
        h.update(&buf[..n]);
    }
}

/// Compares two snapshots and fails with the first differences.
pub fn assert_same(before: &Snapshot, after: &Snapshot) {
    let mut diffs = Vec::new();
    for (path, b) in before {
        match after.get(path) {
            None => diffs.push(format!("{}: missing after", path.display())),
            Some(a) if a != b => diffs.push(format!("{}: {b:?} became {a:?}", path.display())),
            Some(_) => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        diffs.push(format!("{}: appeared", path.display()));
    }
    if !diffs.is_empty() {
        let shown: Vec<_> = diffs.iter().take(20).cloned().collect();
        panic!(
            "{} differences after remount, first ones:\n{}",
            diffs.len(),
            shown.join("\n")
        );
    }
}

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

/// All xattrs of `path` (not following symlinks).
pub fn xattrs_of(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let names = match list_xattrs(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return out,
        Err(e) => panic!("listxattr {}: {e}", path.display()),
    };
    for name in names {
        let value = get_xattr(path, &name)
            .unwrap_or_else(|e| panic!("getxattr {} {name:?}: {e}", path.display()));
        out.insert(name, value);
    }
    out
}

/// llistxattr: the names.
pub fn list_xattrs(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let c = cpath(path);
    // SAFETY: a size query (null buffer, size 0) on a NUL-terminated path we own.
    let need = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if need < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut buf = vec![0u8; need as usize];
    // SAFETY: the buffer is `buf.len()` bytes long and we own it.
    let got = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(got as usize);
    Ok(buf
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// lgetxattr with a size query first.
pub fn get_xattr(path: &Path, name: &[u8]) -> std::io::Result<Vec<u8>> {
    let c = cpath(path);
    let n = CString::new(name).expect("xattr name");
    // SAFETY: a size query (null buffer, size 0) with NUL-terminated strings we own.
    let need = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    if need < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut buf = vec![0u8; need as usize];
    // SAFETY: the buffer is `buf.len()` bytes long and we own it.
    let got =
        unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(got as usize);
    Ok(buf)
}

/// lgetxattr into a buffer of exactly `size` bytes: returns the length read.
pub fn get_xattr_into(path: &Path, name: &[u8], size: usize) -> std::io::Result<usize> {
    let c = cpath(path);
    let n = CString::new(name).expect("xattr name");
    let mut buf = vec![0u8; size];
    let ptr = if size == 0 {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    // SAFETY: `ptr` is null with size 0, or points at `size` bytes we own.
    let got = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), ptr, size) };
    if got < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(got as usize)
    }
}

/// lsetxattr with `flags` (0, XATTR_CREATE or XATTR_REPLACE).
pub fn set_xattr(path: &Path, name: &[u8], value: &[u8], flags: i32) -> std::io::Result<()> {
    let c = cpath(path);
    let n = CString::new(name).expect("xattr name");
    // SAFETY: NUL-terminated strings and a value buffer we own, with its length.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// lremovexattr.
pub fn remove_xattr(path: &Path, name: &[u8]) -> std::io::Result<()> {
    let c = cpath(path);
    let n = CString::new(name).expect("xattr name");
    // SAFETY: NUL-terminated strings we own.
    let rc = unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The daemon's figures now (`-o stats=FILE` lines, `NAME VALUE`), asking for them with
/// SIGUSR1.
pub fn figures(m: &Mount, stats: &Path) -> BTreeMap<String, u64> {
    let _ = std::fs::remove_file(stats);
    m.signal(libc::SIGUSR1);
    let start = Instant::now();
    let text = loop {
        // The daemon writes FILE.tmp and renames it: the file is whole once it exists.
        if let Ok(t) = std::fs::read_to_string(stats) {
            break t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no figures after SIGUSR1"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    text.lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// splitmix64: a tiny seeded PRNG, so every randomized test replays from its printed seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `TUXFS_SEED` when set, else from the clock; prints the seed.
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("TUXFS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("{test}: seed {seed} (replay with TUXFS_SEED={seed})");
        Rng(seed)
    }

    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// Runs a shell script in `dir`; panics with its output when it fails.
pub fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "script failed in {}:\n{script}\nstdout: {}\nstderr: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True when every tool is there; otherwise skips (fails under CI=true).
pub fn have(tools: &[&str]) -> bool {
    for t in tools {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            skip(&format!("{t} is not installed (scripts/deps installs it)"));
            return false;
        }
    }
    true
}

/// Runs the unmount `command DIR` (e.g. `umount`, `fusermount3 -u`), again while it fails
/// with EBUSY, for at most `UMOUNT_RETRY`. The mount may be busy for a moment: the kernel
/// releases a just-closed file asynchronously, and a child another test thread forks holds
/// (until its exec) a descriptor this test just used in the mount. Any other failure, or a
/// mount still busy at the deadline, panics.
pub fn unmount_with(command: &[&str], dir: &Path) {
    let start = Instant::now();
    loop {
        let out = Command::new(command[0])
            .args(&command[1..])
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", command[0]));
        if out.status.success() {
            return;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("busy") && start.elapsed() <= UMOUNT_RETRY,
            "`{} {}` failed ({}): {stderr}",
            command.join(" "),
            dir.display(),
            out.status
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a command and asserts it succeeded; returns its stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How long `mount -o remount,...` is retried while the mount is busy.
const REMOUNT_RETRY: Duration = Duration::from_secs(20);

/// Runs `mount -o remount,MODE DIR`, retrying while it fails (a file just closed may still
/// be open for a moment), for at most `REMOUNT_RETRY`.
pub fn mount_remount(dir: &Path, mode: &str) {
    let start = Instant::now();
    loop {
        let out = Command::new("mount")
            .arg("-o")
            .arg(format!("remount,{mode}"))
            .arg(dir)
            .output()
            .expect("run mount");
        if out.status.success() {
            return;
        }
        assert!(
            start.elapsed() < REMOUNT_RETRY,
            "mount -o remount,{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
