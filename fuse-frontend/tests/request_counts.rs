//! Story: a build tree is unpacked and stat'ed on a tuxfs mount. Every system call that
//! reaches the daemon is a round trip through the kernel, and those dominate metadata work
//! through FUSE (docs/BENCHMARKS.md, "Requests per system call"), so the kernel must not be
//! sent what it need not send: a close needs no FLUSH, a name already found missing is not
//! looked up again, and reads that do not depend on who asks do not read the asker's
//! `/proc/PID/status`. The daemon's own per-opcode counts (the `fuse_*` lines of
//! `-o stats=FILE`, written on SIGUSR1) are the measure; each test also checks that what
//! the saved request stood for still holds.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use common::{Mount, get_xattr, set_xattr};

const MIB: u64 = 1 << 20;

/// A mount whose figures go to a file, and that file.
fn counted_mount(name: &str, extra: &[&str]) -> Option<(Mount, tempfile::TempDir, PathBuf)> {
    let out = tempfile::tempdir().expect("tempdir");
    let stats = out.path().join("figures");
    let option = format!("stats={}", stats.display());
    let mut options = vec![option.as_str()];
    options.extend_from_slice(extra);
    let m = Mount::with_options(name, 64 * MIB, &options)?;
    Some((m, out, stats))
}

/// The daemon's request counts now (`fuse_NAME` lines, without the prefix).
fn requests(m: &Mount, stats: &Path) -> BTreeMap<String, u64> {
    common::figures(m, stats)
        .into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("fuse_")?.to_string(), v)))
        .collect()
}

/// Requests of kind `name` between two readings.
fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, name: &str) -> u64 {
    let get = |m: &BTreeMap<String, u64>| m.get(name).copied().unwrap_or(0);
    get(after) - get(before)
}

fn stat_error(path: &Path) -> Option<ErrorKind> {
    std::fs::symlink_metadata(path).err().map(|e| e.kind())
}

/// LOOKUPs sent while `n` stats of the missing name "missing" ran, each ENOENT.
fn lookups_for_missing(m: &Mount, stats: &Path, n: usize) -> u64 {
    let missing = m.path("missing");
    let before = requests(m, stats);
    for _ in 0..n {
        assert_eq!(stat_error(&missing), Some(ErrorKind::NotFound));
    }
    delta(&before, &requests(m, stats), "lookup")
}

const FILES: u64 = 200;

#[test]
fn closing_sends_no_flush_and_a_create_costs_at_most_four_requests() {
    let Some((mut m, _out, stats)) = counted_mount("flush", &[]) else {
        return;
    };
    std::fs::create_dir(m.path("d")).expect("mkdir");
    // The first close may still send one FLUSH: its ENOSYS is what stops the others.
    drop(File::create(m.path("first")).expect("create"));
    let before = requests(&m, &stats);
    for i in 0..FILES {
        drop(File::create(m.path(format!("d/f{i}"))).expect("create"));
    }
    let after = requests(&m, &stats);
    assert_eq!(delta(&before, &after, "flush"), 0, "{after:?}");
    assert_eq!(delta(&before, &after, "create"), FILES, "{after:?}");
    // LOOKUP (the name is new), CREATE, RELEASE and a GETATTR of the directory, whose
    // attributes the kernel drops after every change in it; FLUSH made five.
    let total = delta(&before, &after, "requests");
    assert!(
        total <= 4 * FILES + 8,
        "{total} requests for {FILES} creates"
    );

    // What close no longer asks for is still done: data written before close(2) is
    // there after a remount, and close reports success.
    let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let mut f = File::create(m.path("d/data")).expect("create");
    f.write_all(&data).expect("write");
    drop(f);
    m.remount();
    assert_eq!(std::fs::read(m.path("d/data")).expect("read"), data);
    assert_eq!(
        std::fs::read_dir(m.path("d")).expect("ls").count() as u64,
        FILES + 1
    );
    m.finish();
}

#[test]
fn a_missing_name_is_looked_up_once_and_every_way_of_making_it_shows() {
    let Some((m, _out, stats)) = counted_mount("negative", &[]) else {
        return;
    };
    let lookups = lookups_for_missing(&m, &stats, 100);
    assert!(
        lookups <= 1,
        "100 stats of a missing name: {lookups} LOOKUPs"
    );

    // Each name is found missing first (cached as such), then made through the mount in
    // one of the ways a name appears; each must be visible at once.
    let names = [
        "created",
        "made_dir",
        "linked",
        "symlinked",
        "renamed",
        "node",
    ];
    for n in names {
        assert_eq!(stat_error(&m.path(n)), Some(ErrorKind::NotFound), "{n}");
    }
    drop(File::create(m.path("created")).expect("create"));
    std::fs::create_dir(m.path("made_dir")).expect("mkdir");
    std::fs::hard_link(m.path("created"), m.path("linked")).expect("link");
    std::os::unix::fs::symlink("created", m.path("symlinked")).expect("symlink");
    drop(File::create(m.path("source")).expect("create"));
    std::fs::rename(m.path("source"), m.path("renamed")).expect("rename");
    let node = std::ffi::CString::new(m.path("node").as_os_str().as_bytes()).expect("path");
    // SAFETY: a NUL-terminated path; mkfifo reads nothing else.
    assert_eq!(unsafe { libc::mkfifo(node.as_ptr(), 0o644) }, 0, "mkfifo");
    for n in names {
        assert_eq!(stat_error(&m.path(n)), None, "{n} is not visible");
    }
    assert_eq!(stat_error(&m.path("source")), Some(ErrorKind::NotFound));

    // And a name that goes away is missing again, every time it is asked for.
    std::fs::remove_file(m.path("created")).expect("unlink");
    std::fs::remove_dir(m.path("made_dir")).expect("rmdir");
    for _ in 0..3 {
        assert_eq!(stat_error(&m.path("created")), Some(ErrorKind::NotFound));
        assert_eq!(stat_error(&m.path("made_dir")), Some(ErrorKind::NotFound));
    }
    m.finish();
}

#[test]
fn with_entry_timeout_zero_a_missing_name_is_asked_for_every_time() {
    let Some((m, _out, stats)) = counted_mount("negative0", &["entry_timeout=0"]) else {
        return;
    };
    let lookups = lookups_for_missing(&m, &stats, 20);
    assert!(
        lookups >= 20,
        "20 stats of a missing name: {lookups} LOOKUPs"
    );
    m.finish();
}

#[test]
fn xattr_reads_and_plain_ioctls_do_not_read_the_callers_process_status() {
    let Some((m, _out, stats)) = counted_mount("procreads", &[]) else {
        return;
    };
    let path = m.path("f");
    drop(File::create(&path).expect("create"));
    set_xattr(&path, b"user.k", b"v", 0).expect("set user.k");
    set_xattr(&path, b"trusted.k", b"t", 0).expect("set trusted.k");
    let file = File::open(&path).expect("open");
    let before = requests(&m, &stats);
    // Each request is one read(2) of /dev/fuse; resolving the caller (FUSE_ALLOW_IDMAP:
    // these requests carry no ids) reads /proc/PID/status too, at least two more reads.
    let reads = m.requests_during(|| {
        for _ in 0..100 {
            assert_eq!(get_xattr(&path, b"user.k").expect("user.k"), b"v");
            let err = get_xattr(&path, b"security.capability").expect_err("no capability");
            assert_eq!(err.raw_os_error(), Some(libc::ENODATA));
            let mut flags: libc::c_long = 0;
            // SAFETY: FS_IOC_GETFLAGS writes one long to the pointer it is given.
            let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        }
    });
    let after = requests(&m, &stats);
    let sent = delta(&before, &after, "requests");
    assert!(delta(&before, &after, "getxattr") >= 200, "{after:?}");
    assert!(delta(&before, &after, "ioctl") >= 100, "{after:?}");
    assert!(reads <= sent + 10, "{reads} reads for {sent} requests");
    // A `trusted.` read still depends on who asks: root (this test) gets the value.
    assert_eq!(get_xattr(&path, b"trusted.k").expect("trusted.k"), b"t");
    drop(file);
    m.finish();
}
