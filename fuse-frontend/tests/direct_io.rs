//! Story: a database opens its files with O_DIRECT and another program reads the same
//! files buffered or through a mapping. Misaligned O_DIRECT requests get ext4's answers
//! (compared side by side with the host's ext4), whatever one side writes the other reads
//! at once, in every direction, with the kernel's writeback cache on (the default) and off,
//! an O_DIRECT write moves size and mtime, costs the daemon one request, and an
//! unprivileged write, truncate or chown clears setuid/setgid bits as on ext4.
//!
//! Needs setpriv (scripts/deps installs it) for the setuid test; a missing tool skips it,
//! and under CI=true fails it. The host's temporary directory must be on ext4 for the
//! comparisons (it is on these machines); otherwise they are skipped the same way.

mod common;

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Mount, have, sh, skip};

/// The mount options of each run: the writeback cache on (default) and off.
const MODES: [&[&str]; 2] = [&["commit=600"], &["commit=600", "nowriteback_cache"]];

const PAGE: usize = 4096;

/// A buffer of `len` bytes starting `misalign` bytes past a page boundary.
struct Buf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Buf {
    fn new(len: usize, misalign: usize) -> Buf {
        let storage = vec![0u8; len + misalign + PAGE];
        let start = storage.as_ptr().align_offset(PAGE) + misalign;
        Buf {
            storage,
            start,
            len,
        }
    }

    fn filled(len: usize, byte: u8) -> Buf {
        let mut b = Buf::new(len, 0);
        b.bytes_mut().fill(byte);
        b
    }

    fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

fn open_direct(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap_or_else(|e| panic!("open O_DIRECT {}: {e}", path.display()))
}

/// An O_DIRECT read of `len` bytes at `offset`.
fn read_direct(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = Buf::new(len, 0);
    let n = open_direct(path)
        .read_at(buf.bytes_mut(), offset)
        .expect("O_DIRECT read");
    buf.bytes()[..n].to_vec()
}

/// A result as the test compares it: bytes transferred or the errno.
fn outcome(r: std::io::Result<usize>) -> Result<usize, i32> {
    r.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// A directory on the host's ext4 next to the image, or `None` (skipped) when the host's
/// temporary directory is not on ext4.
fn host_ext4(m: &Mount) -> Option<PathBuf> {
    let dir = m.scratch().join("host");
    std::fs::create_dir(&dir).expect("host directory");
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: statfs writes one struct statfs into `sfs`, which we own.
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `sfs` is valid for writes.
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut sfs) }, 0, "statfs");
    if sfs.f_type != libc::EXT4_SUPER_MAGIC {
        skip("the host's temporary directory is not on ext4: nothing to compare with");
        return None;
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    Some(dir)
}

/// The O_DIRECT requests compared with ext4: (what, offset, length). The file holds 8192
/// bytes written buffered first.
const REQUESTS: [(&str, u64, usize); 9] = [
    ("4096 at 0", 0, 4096),
    ("512 at 512", 512, 512),
    ("1536 at 2560", 2560, 1536),
    ("100 at 0", 0, 100),
    ("4096 at 1", 1, 4096),
    ("4096 at 100", 100, 4096),
    ("1000 at 4096", 4096, 1000),
    ("100 at 1 MiB + 1 (past the end)", (1 << 20) + 1, 100),
    ("4096 at 1 MiB (past the end)", 1 << 20, 4096),
];

/// Runs [`REQUESTS`] (write then read each, in order) in `dir`; one line per request.
fn alignment_outcomes(dir: &Path) -> Vec<String> {
    let path = dir.join("aligned");
    std::fs::write(&path, vec![b'a'; 8192]).expect("buffered write");
    let mut out = Vec::new();
    for (what, offset, len) in REQUESTS {
        let f = open_direct(&path);
        let mut buf = Buf::filled(len, b'd');
        let wrote = outcome(f.write_at(buf.bytes(), offset));
        let read = outcome(f.read_at(buf.bytes_mut(), offset));
        let size = f.metadata().expect("fstat").len();
        out.push(format!("{what}: write {wrote:?} read {read:?} size {size}"));
    }
    // An O_APPEND|O_DIRECT write lands at the end of the file, which must be aligned too.
    let odd = dir.join("odd");
    std::fs::write(&odd, vec![b'o'; 1000]).expect("buffered write");
    let append = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_DIRECT)
        .open(&odd)
        .expect("open O_APPEND|O_DIRECT");
    let wrote = outcome(append.write_at(Buf::filled(512, b'x').bytes(), 0));
    out.push(format!("append 512 at size 1000: {wrote:?}"));
    out
}

#[test]
fn misaligned_o_direct_requests_get_ext4s_errors() {
    for options in MODES {
        let Some(m) = Mount::with_options("dio-align", 64 << 20, options) else {
            return;
        };
        let Some(host) = host_ext4(&m) else {
            return;
        };
        let ours = alignment_outcomes(&m.dir);
        let theirs = alignment_outcomes(&host);
        assert_eq!(
            ours, theirs,
            "O_DIRECT outcomes differ from ext4 with {options:?}"
        );
        // The comparison means something only if ext4 refused some and served others.
        let einval = format!("Err({})", libc::EINVAL);
        assert!(theirs.iter().any(|l| l.contains(&einval)), "{theirs:?}");
        assert!(
            theirs[0].contains("write Ok(4096) read Ok(4096)"),
            "{theirs:?}"
        );
        m.finish();
    }
}

/// What FUSE decides and the daemon cannot: the kernel reports no STATX_DIOALIGN for a FUSE
/// file and never passes the user buffer's address, so a misaligned buffer is accepted
/// (ext4 refuses it with EINVAL). docs/SEMANTICS.md says so; this keeps it true.
#[test]
fn the_kernel_decides_buffer_alignment_and_reports_no_dioalign() {
    let Some(m) = Mount::new("dio-kernel", 64 << 20) else {
        return;
    };
    let path = m.path("f");
    let f = open_direct(&path);
    let mut buf = Buf::new(4096, 1);
    buf.bytes_mut().fill(b'm');
    assert_eq!(outcome(f.write_at(buf.bytes(), 0)), Ok(4096));
    assert_eq!(read_direct(&path, 0, 4096), vec![b'm'; 4096]);
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: statx writes one struct statx into `sx`, which we own.
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `sx` is valid for writes.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            0,
            libc::STATX_BASIC_STATS | libc::STATX_DIOALIGN,
            &mut sx,
        )
    };
    assert_eq!(r, 0, "statx");
    assert_eq!(
        sx.stx_mask & libc::STATX_DIOALIGN,
        0,
        "FUSE reported DIOALIGN"
    );
    drop(f);
    m.finish();
}

/// A shared mapping of the first `len` bytes of `f`.
struct Map {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Map {
    fn new(f: &File, len: usize, writable: bool) -> Map {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a shared mapping of `len` bytes of a file we hold open; it is accessed
        // only through `bytes`/`bytes_mut`, within `len`, and unmapped on drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap");
        Map { ptr, len }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` writable bytes (made with PROT_WRITE by the caller
        // that writes) and lives as long as `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast::<u8>(), self.len) }
    }

    fn msync(&self) {
        // SAFETY: the mapping made in `new`, of `len` bytes.
        assert_eq!(
            unsafe { libc::msync(self.ptr, self.len, libc::MS_SYNC) },
            0,
            "msync"
        );
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, of `len` bytes, not used after this.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

#[test]
fn buffered_mapped_and_direct_io_see_each_other() {
    for options in MODES {
        let Some(mut m) = Mount::with_options("dio-coherence", 64 << 20, options) else {
            return;
        };
        let path = m.path("shared");
        let len = 5 * PAGE;
        // Buffered write (dirty in the kernel or, without the writeback cache, dirty in the
        // engine; commit=600: nothing is committed) -> O_DIRECT read.
        let writer = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create");
        writer
            .write_all_at(&vec![b'A'; len], 0)
            .expect("buffered write");
        assert!(
            read_direct(&path, 0, len) == vec![b'A'; len],
            "O_DIRECT read missed buffered data with {options:?}"
        );

        // A buffered reader and a mapping, both with the pages cached -> O_DIRECT write
        // from another descriptor -> both see it, and so does a new descriptor.
        let reader = File::open(&path).expect("open reader");
        let mut seen = vec![0u8; len];
        reader.read_exact_at(&mut seen, 0).expect("buffered read");
        let mapped = Map::new(&reader, len, false);
        assert!(mapped.bytes().iter().all(|&b| b == b'A'), "mapping before");
        let direct = open_direct(&path);
        direct
            .write_at(Buf::filled(PAGE, b'B').bytes(), PAGE as u64)
            .expect("O_DIRECT write");
        assert!(
            mapped.bytes()[PAGE..2 * PAGE].iter().all(|&b| b == b'B'),
            "the mapping kept stale data after an O_DIRECT write with {options:?}"
        );
        reader
            .read_exact_at(&mut seen[..PAGE], PAGE as u64)
            .expect("read");
        assert!(
            seen[..PAGE].iter().all(|&b| b == b'B'),
            "a buffered reader kept stale data after an O_DIRECT write with {options:?}"
        );
        assert!(std::fs::read(&path).expect("read")[PAGE..2 * PAGE] == [b'B'; PAGE]);

        // A write through a mapping, msynced -> O_DIRECT read; and one not msynced (the
        // O_DIRECT read writes the dirty page back first, as on ext4).
        let mut rw = Map::new(&writer, len, true);
        rw.bytes_mut()[2 * PAGE..3 * PAGE].fill(b'C');
        rw.msync();
        assert!(
            read_direct(&path, 2 * PAGE as u64, PAGE) == vec![b'C'; PAGE],
            "O_DIRECT read missed an msynced mapped write with {options:?}"
        );
        rw.bytes_mut()[3 * PAGE..4 * PAGE].fill(b'D');
        assert!(
            read_direct(&path, 3 * PAGE as u64, PAGE) == vec![b'D'; PAGE],
            "O_DIRECT read missed a dirty mapped page with {options:?}"
        );

        // An O_DIRECT write over a block the engine holds clean (committed by fsync, then
        // read) -> O_DIRECT read: no stale copy in the engine's cache.
        direct.sync_all().expect("fsync");
        assert!(read_direct(&path, 4 * PAGE as u64, PAGE) == vec![b'A'; PAGE]);
        direct
            .write_at(Buf::filled(PAGE, b'E').bytes(), 4 * PAGE as u64)
            .expect("O_DIRECT write");
        assert!(
            read_direct(&path, 4 * PAGE as u64, PAGE) == vec![b'E'; PAGE],
            "O_DIRECT read saw the engine's stale clean page with {options:?}"
        );
        assert!(mapped.bytes()[4 * PAGE..].iter().all(|&b| b == b'E'));

        let mut want = vec![b'A'; len];
        for (i, b) in [(1, b'B'), (2, b'C'), (3, b'D'), (4, b'E')] {
            want[i * PAGE..(i + 1) * PAGE].fill(b);
        }
        drop((mapped, rw, reader, writer, direct));
        m.remount();
        assert!(std::fs::read(&path).expect("read after remount") == want);
        m.finish();
    }
}

#[test]
fn an_o_direct_write_moves_size_and_mtime() {
    for options in MODES {
        let Some(m) = Mount::with_options("dio-mtime", 64 << 20, options) else {
            return;
        };
        let path = m.path("f");
        std::fs::write(&path, vec![b'a'; PAGE]).expect("write");
        let before = std::fs::metadata(&path).expect("stat");
        std::thread::sleep(Duration::from_millis(50));
        let f = open_direct(&path);
        f.write_at(Buf::filled(PAGE, b'b').bytes(), PAGE as u64)
            .expect("O_DIRECT write past the end");
        let after = std::fs::metadata(&path).expect("stat");
        assert_eq!(after.len(), 2 * PAGE as u64, "size with {options:?}");
        let t = |md: &std::fs::Metadata| (md.mtime(), md.mtime_nsec());
        assert!(
            t(&after) > t(&before),
            "mtime did not move with {options:?}: {:?} then {:?}",
            t(&before),
            t(&after)
        );
        assert!(std::fs::read(&path).expect("read")[PAGE..] == [b'b'; PAGE]);
        drop(f);
        m.finish();
    }
}

/// Without FUSE_HANDLE_KILLPRIV_V2 every write asked the daemon for `security.capability`
/// first (and an io_uring O_DIRECT write with the writeback cache dozens of times).
#[test]
fn an_o_direct_write_costs_the_daemon_one_request() {
    let Some(m) = Mount::with_options("dio-requests", 64 << 20, &["commit=600"]) else {
        return;
    };
    let path = m.path("f");
    let f = open_direct(&path);
    let block = Buf::filled(PAGE, b'w');
    for i in 0..64 {
        f.write_at(block.bytes(), i * PAGE as u64).expect("lay out");
    }
    let writes = 64;
    let n = m.requests_during(|| {
        for i in 0..writes {
            // Over the file, out of order: (i * 37) mod 64 visits every block once.
            f.write_at(block.bytes(), (i * 37 % 64) * PAGE as u64)
                .expect("O_DIRECT write");
        }
    });
    // One WRITE each, plus the odd GETATTR or time flush (SETATTR); before, each write
    // also sent a GETXATTR (2 per write).
    assert!(
        n <= writes * 3 / 2,
        "{n} requests for {writes} O_DIRECT writes"
    );
    drop(f);
    m.finish();
}

/// Run on the mount and on ext4 by user nobody in a directory it owns, then by root:
/// writes (buffered and O_DIRECT), a truncate and a chown of setuid/setgid files.
const SUID_WORKLOAD: &str = r#"
setpriv --reuid=65534 --regid=65534 --clear-groups sh -ec '
echo x > buffered && chmod 6755 buffered && echo y >> buffered
echo x > truncated && chmod 6755 truncated && truncate -s 0 truncated
echo x > nogx && chmod 2745 nogx && echo z >> nogx
head -c 4096 /dev/zero > direct && chmod 6755 direct
dd if=/dev/zero of=direct bs=4096 count=1 oflag=direct conv=notrunc 2>/dev/null
'
touch chowned && chmod 6755 chowned && chown 65534 chowned
echo r > byroot && chmod 6755 byroot && echo more >> byroot
"#;

/// The modes [`SUID_WORKLOAD`] left.
const SUID_LISTING: &str = "stat -c '%n %A %s' buffered truncated nogx direct chowned byroot";

#[test]
fn setuid_and_setgid_are_cleared_as_on_ext4() {
    if !have(&["setpriv", "dd", "truncate", "head"]) {
        return;
    }
    for options in MODES {
        let Some(m) = Mount::for_others("dio-suid", 64 << 20, options) else {
            return;
        };
        let Some(host) = host_ext4(&m) else {
            return;
        };
        let ours_dir = m.path("w");
        std::fs::create_dir(&ours_dir).expect("mkdir");
        std::fs::set_permissions(&ours_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        sh(&ours_dir, SUID_WORKLOAD);
        sh(&host, SUID_WORKLOAD);
        let ours = sh(&ours_dir, SUID_LISTING);
        let theirs = sh(&host, SUID_LISTING);
        assert_eq!(ours, theirs, "modes differ from ext4 with {options:?}");
        // The comparison means something only if ext4 cleared some bits and kept others.
        assert!(theirs.contains("direct -rwxr-xr-x"), "{theirs}");
        assert!(theirs.contains("byroot -rwsr-sr-x"), "{theirs}");
        // And the kernel's view was not just stale: the daemon stored the same.
        let mut m = m;
        m.remount();
        assert_eq!(sh(&ours_dir, SUID_LISTING), theirs);
        m.finish();
    }
}

#[test]
fn a_misaligned_o_direct_write_changes_nothing() {
    let Some(m) = Mount::new("dio-nochange", 64 << 20) else {
        return;
    };
    let path = m.path("f");
    std::fs::write(&path, vec![b'k'; 2 * PAGE]).expect("write");
    let f = open_direct(&path);
    let e = f
        .write_at(Buf::filled(1000, b'z').bytes(), 0)
        .expect_err("misaligned O_DIRECT write");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = f
        .write_at(Buf::filled(PAGE, b'z').bytes(), 2 * PAGE as u64 + 1)
        .expect_err("misaligned O_DIRECT write past the end");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    drop(f);
    assert_eq!(
        std::fs::metadata(&path).expect("stat").len(),
        2 * PAGE as u64
    );
    assert!(std::fs::read(&path).expect("read") == vec![b'k'; 2 * PAGE]);
    m.finish();
}
