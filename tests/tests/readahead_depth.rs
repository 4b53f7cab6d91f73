//! Story: a program reads a large file from start to end, cold, through the engine, on a
//! device with some latency (as an O_DIRECT image is: the host reads nothing ahead). The
//! engine's own read-ahead must keep several device requests in flight: it hands the
//! device read-ahead batches of several full-size requests at once
//! (`READAHEAD_BATCH_BYTES` of `MAX_REQUEST_BYTES` requests), and its read-ahead threads
//! keep at least two such batches in flight. Every byte read is checked.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tuxfs_engine::data::{MAX_REQUEST_BYTES, READAHEAD_BATCH_BYTES};
use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::fs::{Caller, Filesystem, MountOptions};
use tuxfs_engine::mkfs::format_device;
use tuxfs_tests::fixture::mkfs_params;
use tuxfs_tests::hooked::HookedDevice;

const BS: u32 = 4096;
const BLOCKS: u64 = 32768;
/// The file read: several times the largest read-ahead window.
const FILE_BYTES: usize = 48 << 20;
/// What each read(2) asks for, as a FUSE read of the mount does.
const READ_BYTES: u32 = 1 << 20;
/// The latency every read batch pays, as one round trip to a disk does.
const LATENCY: Duration = Duration::from_millis(2);

/// What the read hook saw while `measuring`: the requests of the largest batch, and the
/// most requests in flight at once over all threads.
#[derive(Default)]
struct Counts {
    measuring: AtomicBool,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    max_batch: AtomicUsize,
    batches: AtomicUsize,
    requests: AtomicUsize,
}

/// A memory device whose read batches take [`LATENCY`] and are counted in `counts`.
fn slow_device(counts: &Arc<Counts>) -> Arc<HookedDevice> {
    let mem = MemDevice::new((u64::from(BS) * BLOCKS) as usize);
    format_device(&mem, &mkfs_params(BS, BLOCKS), false).expect("mkfs");
    let c = counts.clone();
    let dev = HookedDevice::new(mem, Arc::new(|_| {})).with_read_hook(Arc::new(
        move |offsets: &[u64], read: &mut dyn FnMut() -> tuxfs_engine::Result<()>| {
            let n = offsets.len();
            if !c.measuring.load(Ordering::SeqCst) {
                return read();
            }
            c.max_batch.fetch_max(n, Ordering::SeqCst);
            c.batches.fetch_add(1, Ordering::SeqCst);
            c.requests.fetch_add(n, Ordering::SeqCst);
            let now = c.in_flight.fetch_add(n, Ordering::SeqCst) + n;
            c.max_in_flight.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(LATENCY);
            let res = read();
            c.in_flight.fetch_sub(n, Ordering::SeqCst);
            res
        },
    ));
    Arc::new(dev)
}

fn byte_at(i: usize) -> u8 {
    (i / 4093 + i % 251) as u8
}

#[test]
fn a_cold_sequential_read_keeps_several_requests_in_flight() {
    let counts = Arc::new(Counts::default());
    let dev = slow_device(&counts);
    let fs = Filesystem::mount(dev.clone() as Arc<dyn BlockDevice>, MountOptions::default())
        .expect("mount");
    let f = fs
        .create(1, b"big", 0o644, Caller::default())
        .expect("create");
    let data: Vec<u8> = (0..FILE_BYTES).map(byte_at).collect();
    for (i, chunk) in data.chunks(4 << 20).enumerate() {
        fs.write(f.ino, (i * (4 << 20)) as u64, chunk, false)
            .expect("write");
    }
    fs.unmount().expect("unmount");
    drop(fs);

    // Cold: nothing of the file is cached after the remount.
    let fs = Filesystem::mount(dev.clone() as Arc<dyn BlockDevice>, MountOptions::default())
        .expect("remount");
    counts.measuring.store(true, Ordering::SeqCst);
    let mut offset = 0usize;
    while offset < FILE_BYTES {
        let got = fs.read(f.ino, offset as u64, READ_BYTES).expect("read");
        assert_eq!(got.len(), READ_BYTES as usize, "short read at {offset}");
        if got[..] != data[offset..offset + got.len()] {
            panic!("wrong bytes in the read at offset {offset}");
        }
        offset += got.len();
    }
    let per_batch = (READAHEAD_BATCH_BYTES / MAX_REQUEST_BYTES) as usize;
    let (batch, in_flight) = (
        counts.max_batch.load(Ordering::SeqCst),
        counts.max_in_flight.load(Ordering::SeqCst),
    );
    // In the steady state every read-ahead is a whole batch; the first reads of the stream,
    // the end of the file and the odd leaf load are smaller. One request per read-ahead (the
    // engine before 2026-11-30) averages about 1.1.
    let (batches, requests) = (
        counts.batches.load(Ordering::SeqCst),
        counts.requests.load(Ordering::SeqCst),
    );
    let mean = requests as f64 / batches.max(1) as f64;
    assert!(
        mean >= 0.7 * per_batch as f64,
        "{requests} requests in {batches} batches: {mean:.2} per batch, want at least {:.2}",
        0.7 * per_batch as f64
    );
    assert!(
        batch >= per_batch,
        "the largest read batch had {batch} requests, want at least {per_batch}"
    );
    assert!(
        in_flight >= 2 * per_batch,
        "at most {in_flight} requests were in flight at once, want two batches' worth \
         ({})",
        2 * per_batch
    );
    fs.unmount().expect("unmount");
}
