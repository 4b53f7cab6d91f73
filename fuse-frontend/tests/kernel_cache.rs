//! Story: what the kernel may cache with the default options, and that POSIX still holds.
//! The daemon gets one worker per CPU and the kernel keeps up to 64 background requests in
//! flight; the kernel's writeback cache coalesces small writes (counted as requests the
//! daemon reads from /dev/fuse), resolves O_APPEND itself (two
//! processes appending at once, and an O_DIRECT append after cached writes), keeps mapped
//! and read data coherent, and owns size and mtime, which the daemon stores as the kernel
//! reported them. Pages of a file nothing changed survive a re-open; symlink targets are
//! cached. Each cache has an option to turn it off, and turned off the requests reach the
//! daemon again.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::Mount;

#[test]
fn workers_default_to_one_per_cpu() {
    let Some(m) = Mount::new("workers", 64 << 20) else {
        return;
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let want = cpus.min(tuxfs_fuse::options::THREADS_MAX);
    let count = || {
        std::fs::read_dir(format!("/proc/{}/task", m.pid()))
            .expect("tasks")
            .filter_map(Result::ok)
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.starts_with("fuser-"))
            })
            .count()
    };
    // The workers start once the mount is up: on a loaded machine the last may still be
    // starting when the mountpoint appears.
    let started = std::time::Instant::now();
    let mut workers = count();
    while workers < want && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
        workers = count();
    }
    assert_eq!(workers, want);
    m.finish();
}

/// Writes 1000 × 16 bytes with separate write(2) calls, then fsyncs; returns the requests.
fn small_writes(m: &Mount) -> u64 {
    let mut f = File::create(m.path("small")).expect("create");
    let n = m.requests_during(|| {
        for i in 0..1000u32 {
            f.write_all(format!("{i:015}\n").as_bytes()).expect("write");
        }
        f.sync_all().expect("fsync");
    });
    let data = std::fs::read(m.path("small")).expect("read back");
    assert_eq!(data.len(), 16_000);
    assert_eq!(&data[16 * 999..], b"000000000000999\n");
    n
}

#[test]
fn small_writes_are_coalesced_by_the_writeback_cache_unless_it_is_off() {
    // Every write(2) also costs one GETXATTR of security.capability (the kernel's
    // file_remove_privs; FUSE mounts have no SB_NOSEC unless the daemon handles killpriv
    // itself), with the cache or without. What the cache removes is the WRITE per call.
    let Some(m) = Mount::new("wbcache", 64 << 20) else {
        return;
    };
    let cached = small_writes(&m);
    m.finish();
    let Some(m) = Mount::with_options("nowbcache", 64 << 20, &["nowriteback_cache"]) else {
        return;
    };
    let uncached = small_writes(&m);
    m.finish();
    assert!(
        uncached >= 1000 && uncached >= cached + 900,
        "1000 small writes: {cached} requests with the writeback cache, {uncached} without"
    );
}

/// The kernel's view of the FUSE connection of the mount at `dir` (fusectl; mounted here
/// if the system has not).
fn connection_setting(dir: &std::path::Path, name: &str) -> u32 {
    let root = std::path::Path::new("/sys/fs/fuse/connections");
    if !common::is_mountpoint(root) {
        let out = Command::new("mount")
            .args(["-t", "fusectl", "fusectl"])
            .arg(root)
            .output()
            .expect("run mount");
        // Another test process may have mounted it meanwhile.
        assert!(
            out.status.success() || common::is_mountpoint(root),
            "cannot mount fusectl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dev = std::fs::metadata(dir).expect("stat mountpoint").dev();
    let kdev = (libc::major(dev) << 20) | libc::minor(dev);
    let path = root.join(kdev.to_string()).join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .expect("a number")
}

#[test]
fn the_background_queue_is_sized_for_the_queue_depth() {
    let Some(m) = Mount::new("background", 64 << 20) else {
        return;
    };
    assert_eq!(connection_setting(&m.dir, "max_background"), 64);
    assert_eq!(connection_setting(&m.dir, "congestion_threshold"), 48);
    m.finish();
    let Some(m) = Mount::with_options("background12", 64 << 20, &["max_background=12"]) else {
        return;
    };
    assert_eq!(connection_setting(&m.dir, "max_background"), 12);
    assert_eq!(connection_setting(&m.dir, "congestion_threshold"), 9);
    m.finish();
}

#[test]
fn two_processes_append_at_once_and_lose_nothing() {
    let Some(mut m) = Mount::new("append", 64 << 20) else {
        return;
    };
    let file = m.path("log");
    std::fs::write(&file, b"").expect("create");
    // One process opens O_APPEND once and writes many times, the other opens for every line.
    let scripts = [
        r#"exec 3>>"$1"; i=0; while [ $i -lt 300 ]; do printf 'A%04d\n' $i >&3; i=$((i+1)); done"#,
        r#"i=0; while [ $i -lt 300 ]; do printf 'B%04d\n' $i >>"$1"; i=$((i+1)); done"#,
    ];
    let children: Vec<_> = scripts
        .iter()
        .map(|s| {
            Command::new("sh")
                .arg("-c")
                .arg(s)
                .arg("sh")
                .arg(&file)
                .spawn()
                .expect("sh")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().expect("wait").success());
    }
    let check = |text: &str| {
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 600, "every line is there once");
        for tag in ['A', 'B'] {
            let mine: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with(tag))
                .collect();
            let want: Vec<String> = (0..300).map(|i| format!("{tag}{i:04}")).collect();
            assert_eq!(mine, want, "lines of {tag} whole and in order");
        }
        assert_eq!(text.len(), 600 * 6);
    };
    check(&std::fs::read_to_string(&file).expect("read"));
    m.remount();
    check(&std::fs::read_to_string(&file).expect("read after remount"));
    m.finish();
}

#[test]
fn an_o_direct_append_lands_after_writes_still_cached() {
    let Some(mut m) = Mount::new("dioappend", 64 << 20) else {
        return;
    };
    let path = m.path("f");
    let mut cached = File::create(&path).expect("create");
    cached.write_all(&[b'a'; 10_240]).expect("cached write");
    let mut direct = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .expect("open O_APPEND|O_DIRECT");
    // O_DIRECT offsets and lengths are multiples of 512 (EINVAL otherwise, as on ext4):
    // the cached size and the tail are; the tail is copied from a 4096-aligned buffer.
    let mut buf = vec![0u8; 2 * 4096];
    let at = buf.as_ptr().align_offset(4096);
    let tail = &mut buf[at..at + 512];
    tail.fill(b't');
    direct.write_all(tail).expect("direct append");
    cached.write_all(b"!").expect("cached write after");
    drop((cached, direct));
    let mut want = vec![b'a'; 10_240];
    want.extend_from_slice(&[b't'; 512]);
    // The first handle's offset was 10240; it wrote over the first byte of the tail.
    want[10_240] = b'!';
    assert_eq!(std::fs::read(&path).expect("read"), want);
    m.remount();
    assert_eq!(std::fs::read(&path).expect("read after remount"), want);
    m.finish();
}

#[test]
fn mapped_writes_and_reads_agree() {
    let Some(mut m) = Mount::new("mmap", 64 << 20) else {
        return;
    };
    let path = m.path("mapped");
    let len = 3 * 4096 + 100;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("create");
    f.set_len(len as u64).expect("size");
    // SAFETY: a shared read-write mapping of `len` bytes of a file we hold open; it is only
    // accessed through the slice below, within `len`, and unmapped before the file closes.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED, "mmap");
    // SAFETY: the mapping is `len` bytes, readable and writable, and lives until munmap.
    let bytes = unsafe { std::slice::from_raw_parts_mut(map.cast::<u8>(), len) };
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let mut read = vec![0u8; len];
    f.read_exact_at(&mut read, 0)
        .expect("read(2) sees mapped writes");
    assert!(read == *bytes, "read(2) differs from the mapping");
    f.write_all_at(b"written", 5000).expect("pwrite");
    assert_eq!(&bytes[5000..5007], b"written", "the mapping sees pwrite");
    let want = bytes.to_vec();
    // SAFETY: the mapping made above, of `len` bytes.
    unsafe {
        assert_eq!(libc::msync(map, len, libc::MS_SYNC), 0, "msync");
        assert_eq!(libc::munmap(map, len), 0, "munmap");
    }
    drop(f);
    m.remount();
    assert!(
        std::fs::read(&path).expect("read after remount") == want,
        "mapped writes did not reach the image"
    );
    m.finish();
}

fn mtime(meta: &std::fs::Metadata) -> (i64, i64) {
    (meta.mtime(), meta.mtime_nsec())
}

#[test]
fn size_and_mtime_are_kept_as_the_kernel_reported_them() {
    let Some(mut m) = Mount::new("sizetime", 64 << 20) else {
        return;
    };
    let path = m.path("f");
    let f = File::create(&path).expect("create");
    f.write_all_at(&[1u8; 10_000], 0).expect("write");
    assert_eq!(f.metadata().expect("stat").len(), 10_000);
    f.set_len(3000).expect("truncate");
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), 3000);
    f.write_all_at(b"xyz", 5000).expect("write past the end");
    let seen = std::fs::metadata(&path).expect("stat");
    assert_eq!(seen.len(), 5003);
    drop(f);
    let closed = std::fs::metadata(&path).expect("stat after close");
    assert_eq!(closed.len(), 5003);
    m.remount();
    let after = std::fs::metadata(&path).expect("stat after remount");
    assert_eq!(after.len(), 5003);
    assert_eq!(
        mtime(&after),
        mtime(&closed),
        "mtime stored as the kernel reported it"
    );
    let data = std::fs::read(&path).expect("read");
    assert!(data[..3000].iter().all(|&b| b == 1));
    assert!(
        data[3000..5000].iter().all(|&b| b == 0),
        "the hole reads zeros"
    );
    assert_eq!(&data[5000..], b"xyz");

    // An mtime set explicitly after a write is the one kept.
    let set = SystemTime::UNIX_EPOCH + Duration::new(1_500_000_000, 123_456_789);
    let f = OpenOptions::new().write(true).open(&path).expect("open");
    f.write_all_at(b"later", 0).expect("write");
    f.set_modified(set).expect("set mtime");
    drop(f);
    let before = std::fs::metadata(&path).expect("stat");
    assert_eq!(mtime(&before), (1_500_000_000, 123_456_789));
    m.remount();
    let after = std::fs::metadata(&path).expect("stat after remount");
    assert_eq!(mtime(&after), (1_500_000_000, 123_456_789));
    assert_eq!(after.len(), 5003);
    m.finish();
}

/// Pages of `path` in the page cache right after it is opened again.
fn resident_pages_after_reopen(path: &std::path::Path) -> usize {
    let f = File::open(path).expect("reopen");
    let len = f.metadata().expect("stat").len() as usize;
    // SAFETY: a read-only shared mapping of the open file, only passed to mincore and
    // unmapped before the file closes.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED, "mmap");
    let pages = len.div_ceil(4096);
    let mut vec = vec![0u8; pages];
    // SAFETY: `vec` has one byte per page of the mapping, which is `len` bytes long.
    unsafe {
        assert_eq!(libc::mincore(map, len, vec.as_mut_ptr()), 0, "mincore");
        libc::munmap(map, len);
    }
    vec.iter().filter(|&&b| b & 1 != 0).count()
}

/// Writes a 64 KiB file, opens and reads it, and counts its pages after one more open.
fn pages_kept(m: &Mount) -> usize {
    let path = m.path("kept");
    std::fs::write(&path, vec![5u8; 64 << 10]).expect("write");
    let mut data = Vec::new();
    File::open(&path)
        .expect("open")
        .read_to_end(&mut data)
        .expect("read");
    assert_eq!(data.len(), 64 << 10);
    resident_pages_after_reopen(&path)
}

#[test]
fn an_unchanged_file_keeps_its_pages_across_opens_unless_turned_off() {
    let Some(m) = Mount::new("keep", 64 << 20) else {
        return;
    };
    assert_eq!(pages_kept(&m), 16, "all 16 pages kept");
    // A write since the last open: the next open starts from the daemon again.
    let path = m.path("kept");
    OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open")
        .write_all_at(b"changed", 0)
        .expect("write");
    assert_eq!(
        resident_pages_after_reopen(&path),
        0,
        "pages of a changed file dropped at open"
    );
    m.finish();
    let Some(m) = Mount::with_options("nokeep", 64 << 20, &["nokeep_cache"]) else {
        return;
    };
    assert_eq!(pages_kept(&m), 0, "no pages kept with nokeep_cache");
    m.finish();
}

/// Reads the link 100 times; returns the requests that made.
fn readlinks(m: &Mount) -> u64 {
    let link = m.path("link");
    std::os::unix::fs::symlink("some/target/far/away", &link).expect("symlink");
    assert_eq!(
        std::fs::read_link(&link).expect("readlink").as_os_str(),
        "some/target/far/away"
    );
    m.requests_during(|| {
        for _ in 0..100 {
            assert_eq!(
                std::fs::read_link(&link).expect("readlink").as_os_str(),
                "some/target/far/away"
            );
        }
    })
}

#[test]
fn symlink_targets_are_cached_unless_turned_off() {
    let Some(m) = Mount::new("symcache", 64 << 20) else {
        return;
    };
    let cached = readlinks(&m);
    assert!(cached < 10, "{cached} requests for 100 readlinks");
    m.finish();
    let Some(m) = Mount::with_options("nosymcache", 64 << 20, &["nocache_symlinks"]) else {
        return;
    };
    let uncached = readlinks(&m);
    assert!(uncached >= 100, "{uncached} requests for 100 readlinks");
    m.finish();
}
