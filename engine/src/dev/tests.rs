//! Tests every device must pass, run against each implementation, plus the tests of the
//! file-backed devices (io_uring and pread/pwrite, with and without O_DIRECT).

use std::path::Path;
use std::sync::Arc;

use super::file::Backing;
use super::mem::MemDevice;
use super::record::RecordingDevice;
use super::sync::SyncDevice;
use super::uring::UringDevice;
use super::{
    AlignedBuf, BlockDevice, DeviceKind, OpenOptions, ReadRequest, WriteRequest, open_file,
    read_at, write_at,
};
use crate::Error;

const BLOCK: usize = 4096;
const DEV_BYTES: u64 = 4 << 20;

/// Bytes that differ per block and per round, so a misplaced block is noticed.
fn pattern(block: u64, round: u8) -> AlignedBuf {
    let mut buf = AlignedBuf::zeroed(BLOCK);
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (block as u8).wrapping_mul(31) ^ (i as u8) ^ round.wrapping_mul(7);
    }
    buf
}

fn write_blocks(dev: &dyn BlockDevice, blocks: &[u64], round: u8) {
    let reqs = blocks.iter().map(|&b| WriteRequest {
        offset: b * BLOCK as u64,
        data: Arc::new(pattern(b, round)),
    });
    dev.submit_writes(reqs.collect()).expect("submit");
}

fn check_blocks(dev: &dyn BlockDevice, blocks: &[u64], round: u8) {
    let mut bufs: Vec<AlignedBuf> = blocks.iter().map(|_| AlignedBuf::zeroed(BLOCK)).collect();
    let mut reqs: Vec<ReadRequest<'_>> = blocks
        .iter()
        .zip(bufs.iter_mut())
        .map(|(&b, buf)| ReadRequest {
            offset: b * BLOCK as u64,
            buf,
        })
        .collect();
    dev.read_batch(&mut reqs).expect("read batch");
    for (&b, buf) in blocks.iter().zip(&bufs) {
        assert!(
            *buf == pattern(b, round),
            "block {b} round {round} differs on {dev:?}"
        );
    }
}

/// The whole suite: round trips, batches far larger than any queue depth, reads past the
/// end, flush after writes, rewrites.
fn conformance(dev: &dyn BlockDevice) {
    assert!(dev.size_bytes() >= DEV_BYTES);
    let few = [0, 1, 7, 100];
    write_blocks(dev, &few, 1);
    dev.wait_writes().expect("wait");
    check_blocks(dev, &few, 1);

    let many: Vec<u64> = (0..300)
        .map(|i| (i * 37) % (DEV_BYTES / BLOCK as u64))
        .collect();
    let many: Vec<u64> = dedup(many);
    write_blocks(dev, &many, 2);
    dev.flush().expect("flush");
    check_blocks(dev, &many, 2);

    write_blocks(dev, &many[..10], 3);
    dev.flush().expect("flush after rewrite");
    check_blocks(dev, &many[..10], 3);
    check_blocks(dev, &many[10..], 2);

    read_past_end(dev);
    assert!(read_at(dev, 0, 0).expect("empty read").is_empty());
    dev.submit_writes(Vec::new()).expect("empty batch");
    dev.flush().expect("flush of nothing");
}

fn dedup(mut v: Vec<u64>) -> Vec<u64> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|x| seen.insert(*x));
    v
}

fn read_past_end(dev: &dyn BlockDevice) {
    let size = dev.size_bytes();
    for (offset, len) in [
        (size - BLOCK as u64, 2 * BLOCK),
        (size, BLOCK),
        (u64::MAX - 10, BLOCK),
    ] {
        let err = read_at(dev, offset, len).expect_err("read past the end must fail");
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
        assert!(
            err.to_string().contains(&offset.to_string()),
            "error names the offset: {err}"
        );
    }
    let err = dev.submit_writes(vec![WriteRequest {
        offset: size,
        data: Arc::new(pattern(0, 0)),
    }]);
    assert!(
        matches!(err, Err(Error::Invalid { .. })),
        "write past the end must fail"
    );
    dev.flush()
        .expect("a refused request does not fail the device");
}

fn image_path(dir: &Path) -> std::path::PathBuf {
    dir.join("dev.img")
}

fn open(dir: &Path, kind: DeviceKind, direct: bool, queue_depth: u32) -> Box<dyn BlockDevice> {
    let opts = OpenOptions {
        kind,
        direct,
        queue_depth,
        create_size: Some(DEV_BYTES),
        ..OpenOptions::default()
    };
    open_file(&image_path(dir), &opts).expect("open image")
}

#[test]
fn mem_conformance() {
    conformance(&MemDevice::new(DEV_BYTES as usize));
}

#[test]
fn recording_conformance() {
    conformance(&RecordingDevice::new(vec![0; DEV_BYTES as usize]));
}

#[test]
fn fault_conformance_without_faults() {
    let inner = Arc::new(MemDevice::new(DEV_BYTES as usize));
    conformance(&super::fault::FaultDevice::new(
        inner,
        Default::default(),
        1,
    ));
}

#[test]
fn uring_conformance_buffered() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance(&*open(dir.path(), DeviceKind::Uring, false, 8));
}

#[test]
fn sync_conformance_buffered() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance(&*open(dir.path(), DeviceKind::Sync, false, 8));
}

/// Runs the suite under O_DIRECT, or says why it cannot here.
fn direct_conformance(kind: DeviceKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = open(dir.path(), kind, true, 8);
    if dev.alignment() == 1 {
        println!(
            "skipped: the file system of {} refuses O_DIRECT",
            dir.path().display()
        );
        return;
    }
    assert!(format!("{dev:?}").contains("direct: true"), "{dev:?}");
    conformance(&*dev);
    let misaligned = dev.submit_writes(vec![WriteRequest {
        offset: (dev.alignment() / 2) as u64,
        data: Arc::new(pattern(0, 0)),
    }]);
    assert!(
        matches!(misaligned, Err(Error::Invalid { .. })),
        "misaligned O_DIRECT write must be refused"
    );
}

#[test]
fn uring_conformance_direct() {
    direct_conformance(DeviceKind::Uring);
}

#[test]
fn sync_conformance_direct() {
    direct_conformance(DeviceKind::Sync);
}

#[test]
fn uring_coalesces_contiguous_writes_into_few_requests() {
    use super::uring::{MAX_IOVECS, MAX_WRITE_BYTES, coalesce};
    let req = |offset: u64, len: usize| WriteRequest {
        offset,
        data: Arc::new(AlignedBuf::from_slice(&vec![offset as u8; len])),
    };
    // Out of order, with a gap, an empty request and a repeated offset.
    let reqs = vec![
        req(8192, 4096),
        req(0, 4096),
        req(4096, 4096),
        req(65536, 4096),
        req(12288, 0),
        req(65536, 4096),
    ];
    let runs = coalesce(reqs);
    let shape: Vec<(u64, usize)> = runs.iter().map(|(o, b)| (*o, b.len())).collect();
    assert_eq!(shape, [(0, 3), (65536, 1), (65536, 1)]);
    assert_eq!(runs[0].1[2][0], 8192u64 as u8, "buffers in device order");
    // Bounded by bytes and by buffers.
    let blocks = (MAX_WRITE_BYTES / 4096 + 3) as u64;
    let runs = coalesce((0..blocks).map(|b| req(b * 4096, 4096)).collect());
    assert!(runs.iter().all(|(_, b)| b.len() * 4096 <= MAX_WRITE_BYTES));
    assert_eq!(runs.len(), 2);
    let runs = coalesce(
        (0..MAX_IOVECS as u64 + 1)
            .map(|b| req(b * 512, 512))
            .collect(),
    );
    assert_eq!(runs.len(), 2);

    // Through the device, buffered and O_DIRECT: a long contiguous batch reads back whole.
    for direct in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = open(dir.path(), DeviceKind::Uring, direct, 4);
        let blocks: Vec<u64> = (0..(DEV_BYTES / BLOCK as u64).min(600)).collect();
        write_blocks(&*dev, &blocks, 5);
        dev.flush().expect("flush");
        check_blocks(&*dev, &blocks, 5);
    }
}

#[test]
fn uring_drops_each_write_buffer_at_completion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = open(dir.path(), DeviceKind::Uring, false, 4);
    let bufs: Vec<Arc<AlignedBuf>> = (0..50).map(|b| Arc::new(pattern(b, 9))).collect();
    let reqs = bufs.iter().enumerate().map(|(b, data)| WriteRequest {
        offset: (b * BLOCK) as u64,
        data: data.clone(),
    });
    dev.submit_writes(reqs.collect()).expect("submit");
    dev.wait_writes().expect("wait");
    for (i, b) in bufs.iter().enumerate() {
        assert_eq!(
            Arc::strong_count(b),
            1,
            "write {i} still holds its buffer after wait_writes"
        );
    }
    check_blocks(&*dev, &(0..50).collect::<Vec<_>>(), 9);
}

/// A device over a descriptor opened read-only: the kernel fails every write with EBADF,
/// a real error rather than a simulated one.
fn read_only_fd_device(dir: &Path, uring: bool) -> Box<dyn BlockDevice> {
    let path = image_path(dir);
    std::fs::write(&path, vec![5u8; DEV_BYTES as usize]).expect("create image");
    let file = std::fs::File::open(&path).expect("open read-only");
    let backing = Backing::from_open_file(file, &path, DEV_BYTES);
    if uring {
        Box::new(UringDevice::new(backing, 4).expect("ring"))
    } else {
        Box::new(SyncDevice::new(backing))
    }
}

fn fail_stop(dev: &dyn BlockDevice) {
    write_blocks(dev, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 1);
    let first = dev.wait_writes().expect_err("the write error is reported");
    assert!(
        matches!(first, Error::Io { .. }),
        "first report is the OS error: {first}"
    );
    let later = dev.submit_writes(vec![WriteRequest {
        offset: 0,
        data: Arc::new(pattern(0, 1)),
    }]);
    assert!(
        matches!(later, Err(Error::DeviceFailed { .. })),
        "writes refused after failure"
    );
    assert!(
        matches!(dev.flush(), Err(Error::DeviceFailed { .. })),
        "flush refused after failure"
    );
    assert!(matches!(dev.wait_writes(), Err(Error::DeviceFailed { .. })));
    assert_eq!(read_at(dev, 0, 16).expect("reads still work")[..], [5; 16]);
}

#[test]
fn uring_fail_stop_after_write_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    fail_stop(&*read_only_fd_device(dir.path(), true));
}

#[test]
fn sync_fail_stop_after_write_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    fail_stop(&*read_only_fd_device(dir.path(), false));
}

#[test]
fn uring_flush_reports_a_write_error_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = read_only_fd_device(dir.path(), true);
    write_blocks(&*dev, &[3], 1);
    assert!(
        matches!(dev.flush(), Err(Error::Io { .. })),
        "flush reaps the failed write first"
    );
    assert!(matches!(dev.flush(), Err(Error::DeviceFailed { .. })));
}

/// A file that shrinks under the device: the size check passes, the kernel returns a
/// short read, and the error names the offset where data ran out.
fn short_read_names_offset(kind: DeviceKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = open(dir.path(), kind, false, 4);
    std::fs::File::options()
        .write(true)
        .open(image_path(dir.path()))
        .expect("reopen")
        .set_len(6000)
        .expect("shrink");
    let err = read_at(&*dev, 4096, 8192).expect_err("short read must fail");
    assert!(
        err.to_string().contains("6000"),
        "error names the offset: {err}"
    );
}

#[test]
fn uring_short_read_names_offset() {
    short_read_names_offset(DeviceKind::Uring);
}

#[test]
fn sync_short_read_names_offset() {
    short_read_names_offset(DeviceKind::Sync);
}

#[test]
fn uring_threads_share_one_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev: Arc<dyn BlockDevice> = Arc::from(open(dir.path(), DeviceKind::Uring, false, 8));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let dev = dev.clone();
            std::thread::spawn(move || {
                let blocks: Vec<u64> = (0..64).map(|i| t * 64 + i).collect();
                write_blocks(&*dev, &blocks, 4);
                dev.wait_writes().expect("wait");
                check_blocks(&*dev, &blocks, 4);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    dev.flush().expect("flush");
}

#[test]
fn auto_picks_uring_here() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = open(dir.path(), DeviceKind::Auto, false, 8);
    // io_uring may be disabled where these tests run; either choice is valid, and says so.
    let name = format!("{dev:?}");
    assert!(
        name.starts_with("UringDevice") || name.starts_with("SyncDevice"),
        "{name}"
    );
}

#[test]
fn direct_falls_back_to_buffered_where_refused() {
    // tmpfs either refuses O_DIRECT (EINVAL, older kernels) or accepts it without reporting
    // a direct-I/O alignment (its "direct" I/O is a page-cache copy): both give buffered I/O.
    let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
        println!("skipped: no /dev/shm to try a file system without O_DIRECT");
        return;
    };
    if !is_tmpfs(dir.path()) {
        println!("skipped: /dev/shm is not tmpfs here");
        return;
    }
    let dev = open(dir.path(), DeviceKind::Uring, true, 8);
    assert_eq!(dev.alignment(), 1, "{dev:?}");
    assert!(format!("{dev:?}").contains("direct: false"), "{dev:?}");
    conformance(&*dev);
}

fn is_tmpfs(path: &Path) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: statfs is plain old data; all-zero bytes are a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a live local for the kernel to fill.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type == libc::TMPFS_MAGIC
}

#[test]
fn direct_alignment_is_the_filesystems() {
    // The temporary directory is on ext4 here, which reports its direct-I/O alignment (the
    // disk's logical sector, 512 bytes on a virtio disk): a 1 KiB block at a 1 KiB offset
    // must then go through O_DIRECT, as filesystems of 1 KiB blocks need.
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = open(dir.path(), DeviceKind::Uring, true, 8);
    if dev.alignment() == 1 {
        println!(
            "skipped: the file system of {} gives no O_DIRECT",
            dir.path().display()
        );
        return;
    }
    let align = dev.alignment();
    assert!(align.is_power_of_two() && align <= 4096, "{dev:?}");
    if align > 1024 {
        println!("skipped: O_DIRECT needs {align}-byte alignment here");
        return;
    }
    let data = AlignedBuf::from_slice(&[0x5a; 1024]);
    write_at(&*dev, 1024, data.clone()).expect("1 KiB O_DIRECT write");
    dev.flush().expect("flush");
    assert_eq!(
        read_at(&*dev, 1024, 1024).expect("1 KiB O_DIRECT read"),
        data
    );
}

#[test]
fn logwrites_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner = open(dir.path(), DeviceKind::Sync, false, 8);
    let dev =
        super::logwrites::LogWritesDevice::create(inner, &dir.path().join("w.log")).expect("wrap");
    conformance(&dev);
}

/// Several threads share one io_uring device with a queue shallower than their batches:
/// readers of a settled region, and a writer that rewrites another region, flushes and reads
/// it back, all at once. Every read sees what it must, and nothing hangs (a thread that
/// waits for completions without the lock must always be woken; the watchdog fails the
/// test instead of hanging the run). `TUXFS_SEED` replays a run.
#[test]
fn uring_threads_read_write_and_flush_together() {
    let seed = std::env::var("TUXFS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let dir = tempfile::tempdir().expect("tempdir");
    let dev: Arc<dyn BlockDevice> = Arc::from(open(dir.path(), DeviceKind::Uring, false, 4));
    let settled: Vec<u64> = (0..256).collect();
    write_blocks(&*dev, &settled, 1);
    dev.flush().expect("flush");
    let (tx, rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    for t in 0..6u64 {
        let (dev, tx) = (dev.clone(), tx.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = super::fault::SplitMix64::new(seed ^ t);
            for _ in 0..150 {
                let n = 1 + rng.below(20) as usize;
                let blocks: Vec<u64> = (0..n).map(|_| rng.below(256)).collect();
                check_blocks(&*dev, &blocks, 1);
            }
            tx.send(()).expect("report");
        }));
    }
    {
        let (dev, tx) = (dev.clone(), tx.clone());
        threads.push(std::thread::spawn(move || {
            let region: Vec<u64> = (512..576).collect();
            for round in 2..40u8 {
                write_blocks(&*dev, &region, round);
                dev.flush().expect("flush");
                check_blocks(&*dev, &region, round);
            }
            tx.send(()).expect("report");
        }));
    }
    drop(tx);
    for _ in 0..threads.len() {
        if rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .is_err()
        {
            panic!("seed {seed}: a thread did not finish within 120 s (hung, or panicked)");
        }
    }
    for t in threads {
        t.join()
            .unwrap_or_else(|_| panic!("seed {seed}: a thread panicked"));
    }
}
