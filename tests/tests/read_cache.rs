//! Story: the read path with its clean page cache (engine::cache, engine::data::read).
//! Reads after writes, truncates, unlinks, commits and remounts return the file's bytes
//! while a tiny cache evicts all the time and the writeback thread commits underneath;
//! concurrent readers never see a torn or stale file; a damaged data block is EIO on every
//! read of it (counted once per read), never when it was only read ahead; a re-read is
//! served from the cache.
//!
//! Replay a failure with `TUXFS_SEED=<seed> cargo test -p tuxfs-tests --test read_cache`.
//! Longer runs: `TUXFS_READ_CACHE_OPS=20000`.

use std::sync::Arc;
use std::time::Duration;

use tuxfs_engine::Errno;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::fs::{Caller, Filesystem, MountOptions, SetAttr};
use tuxfs_tests::fixture::{mem_device, mount};
use tuxfs_tests::rng::{Rng, seed_from_env_or_clock};

const BS: u64 = 4096;

/// A tiny clean cache (4 pages per shard), small dirty limit and frequent commits.
fn options() -> MountOptions {
    MountOptions {
        commit_interval: Duration::from_millis(5),
        dirty_limit_bytes: 96 << 10,
        data_cache_bytes: 16 * 4 * BS,
        leaf_cache_bytes: 0,
        ..MountOptions::default()
    }
}

fn set_size(size: u64) -> SetAttr {
    SetAttr {
        size: Some(size),
        ..SetAttr::default()
    }
}

struct Model {
    seed: u64,
    step: u64,
    fs: Arc<Filesystem>,
    /// Per slot: the file's inode and bytes.
    files: Vec<Option<(u64, Vec<u8>)>>,
}

impl Model {
    fn fail(&self, what: &str) -> ! {
        panic!(
            "seed {} step {}: {what}\nreplay: TUXFS_SEED={} cargo test -p tuxfs-tests --test read_cache",
            self.seed, self.step, self.seed
        )
    }

    fn check_read(&self, slot: usize, offset: u64, len: u32) {
        let Some((ino, bytes)) = &self.files[slot] else {
            return;
        };
        let got = self
            .fs
            .read(*ino, offset, len)
            .unwrap_or_else(|e| self.fail(&format!("read slot {slot} at {offset}: {e}")));
        let from = (offset as usize).min(bytes.len());
        let to = (offset as usize + len as usize).min(bytes.len());
        if got[..] != bytes[from..to] {
            let first = got
                .iter()
                .zip(&bytes[from..to])
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(to - from));
            self.fail(&format!(
                "read slot {slot} of {len} at {offset}: {} bytes, want {}; first difference at byte {}",
                got.len(),
                to - from,
                offset as usize + first
            ));
        }
    }
}

#[test]
fn random_reads_writes_truncates_syncs_and_remounts_match_a_model() {
    let seed = seed_from_env_or_clock();
    let ops: u64 = std::env::var("TUXFS_READ_CACHE_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut rng = Rng::new(seed);
    let dev = mem_device(BS as u32, 8192);
    let mut m = Model {
        seed,
        step: 0,
        fs: mount(&dev, options()),
        files: vec![None, None, None],
    };
    let names: [&[u8]; 3] = [b"f0", b"f1", b"f2"];
    let max_size = 640u64 << 10;
    for step in 0..ops {
        m.step = step;
        let slot = rng.below_usize(3);
        match rng.weighted(&[30, 25, 12, 10, 8, 6, 4, 5]) {
            0 => {
                // Write.
                if m.files[slot].is_none() {
                    let a =
                        m.fs.create(1, names[slot], 0o644, Caller::default())
                            .unwrap_or_else(|e| m.fail(&format!("create: {e}")));
                    m.fs.release(a.ino).expect("release");
                    m.files[slot] = Some((a.ino, Vec::new()));
                }
                let off = rng.below(max_size);
                let len = rng.range(1, 48 << 10) as usize;
                let data = rng.bytes(len);
                let ino = m.files[slot].as_ref().map(|f| f.0).expect("file");
                m.fs.write(ino, off, &data, false)
                    .unwrap_or_else(|e| m.fail(&format!("write: {e}")));
                let bytes = &mut m.files[slot].as_mut().expect("file").1;
                let end = off as usize + data.len();
                if bytes.len() < end {
                    bytes.resize(end, 0);
                }
                bytes[off as usize..end].copy_from_slice(&data);
            }
            1 => {
                let off = rng.below(max_size);
                let len = rng.range(1, 256 << 10) as u32;
                m.check_read(slot, off, len);
            }
            2 => {
                // A sequential scan in 64 KiB requests (read-ahead).
                let size = m.files[slot].as_ref().map_or(0, |f| f.1.len() as u64);
                let mut at = 0;
                while at < size {
                    m.check_read(slot, at, 64 << 10);
                    at += 64 << 10;
                }
            }
            3 => {
                // Truncate (shrinking cuts a hole into what a later extension reads).
                if let Some((ino, bytes)) = m.files[slot].as_mut() {
                    let size = rng.below(max_size);
                    let ino = *ino;
                    bytes.resize(size as usize, 0);
                    m.fs.setattr(ino, &set_size(size))
                        .unwrap_or_else(|e| m.fail(&format!("truncate: {e}")));
                }
            }
            4 => {
                if m.files[slot].take().is_some() {
                    m.fs.unlink(1, names[slot])
                        .unwrap_or_else(|e| m.fail(&format!("unlink: {e}")));
                }
            }
            5 => {
                m.fs.sync()
                    .unwrap_or_else(|e| m.fail(&format!("sync: {e}")))
            }
            6 => {
                m.fs.unmount()
                    .unwrap_or_else(|e| m.fail(&format!("unmount: {e}")));
                m.fs = mount(&dev, options());
            }
            _ => {
                // Read the same range twice: the second read is served by the cache.
                let off = rng.below(max_size);
                m.check_read(slot, off, 32 << 10);
                m.check_read(slot, off, 32 << 10);
            }
        }
    }
    for slot in 0..3 {
        m.check_read(slot, 0, max_size as u32 * 2);
    }
    let s = m.fs.stats();
    assert!(s.data_cache_bytes <= 16 * 4 * BS, "cache over budget: {s}");
    assert_eq!(s.data_checksum_errors, 0);
    m.fs.unmount().expect("unmount");
}

/// Writers replace the whole file (one write each, so one version at a time) and truncate
/// it while readers read it whole without the lock: every read sees one version, never a
/// mix, and never an older version than one it saw before (no stale page in the cache).
#[test]
fn concurrent_readers_see_whole_versions_in_order() {
    let seed = seed_from_env_or_clock();
    let dev = mem_device(BS as u32, 8192);
    let fs = mount(&dev, options());
    let a = fs
        .create(1, b"v", 0o644, Caller::default())
        .expect("create");
    let ino = a.ino;
    let size = 256usize << 10;
    fs.write(ino, 0, &vec![1u8; size], false).expect("write");
    fs.sync().expect("sync");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (fs, stop) = (fs.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut last = 0u8;
                let mut reads = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || reads < 20 {
                    let got = fs.read(ino, 0, size as u32).expect("read");
                    reads += 1;
                    if got.is_empty() {
                        continue; // between a truncate to zero and the rewrite
                    }
                    let v = got[0];
                    assert_eq!(got.len(), size, "seed {seed}: reader {r}: torn size");
                    if let Some(i) = got.iter().position(|&b| b != v) {
                        panic!(
                            "seed {seed}: reader {r}: mixed versions {v} and {} at byte {i}",
                            got[i]
                        );
                    }
                    assert!(
                        v >= last,
                        "seed {seed}: reader {r}: version {v} after {last}"
                    );
                    last = v;
                }
                reads
            })
        })
        .collect();
    let mut rng = Rng::new(seed);
    for v in 2..=60u8 {
        if rng.chance(1, 4) {
            fs.setattr(ino, &set_size(0)).expect("truncate");
        }
        fs.write(ino, 0, &vec![v; size], false).expect("write");
        if rng.chance(1, 3) {
            fs.sync().expect("sync");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().expect("reader") >= 20);
    }
    assert_eq!(
        fs.read(ino, 0, size as u32).expect("read"),
        vec![60u8; size]
    );
    fs.unmount().expect("unmount");
}

/// Finds the one device block holding `pattern` (a whole block of it).
fn find_block(image: &[u8], pattern: &[u8]) -> u64 {
    let hits: Vec<u64> = image
        .chunks_exact(BS as usize)
        .enumerate()
        .filter(|(_, b)| *b == pattern)
        .map(|(i, _)| i as u64)
        .collect();
    assert_eq!(hits.len(), 1, "the pattern block is on the device once");
    hits[0]
}

#[test]
fn a_damaged_block_is_eio_on_each_read_of_it_and_never_when_read_ahead() {
    let dev = mem_device(BS as u32, 4096);
    let fs = mount(&dev, MountOptions::default());
    let a = fs
        .create(1, b"f", 0o644, Caller::default())
        .expect("create");
    // 64 blocks, block i filled with byte i+1; block 40 is the one to damage.
    let mut data = Vec::new();
    for i in 0..64u8 {
        data.extend(std::iter::repeat_n(i + 1, BS as usize));
    }
    fs.write(a.ino, 0, &data, false).expect("write");
    fs.unmount().expect("unmount");
    drop(fs);
    let mut image = dev.snapshot();
    let bad = find_block(&image, &[41u8; BS as usize]) as usize;
    image[bad * BS as usize + 100] ^= 0xff;
    let dev = Arc::new(MemDevice::from_bytes(image));
    let fs = mount(&dev, MountOptions::default());
    // Read the blocks before it sequentially: read-ahead covers the damaged block, which
    // is neither reported nor cached.
    for i in 0..40u64 {
        let got = fs.read(a.ino, i * BS, BS as u32).expect("clean block");
        assert_eq!(got, vec![i as u8 + 1; BS as usize]);
    }
    assert!(fs.stats().data_readahead_blocks > 0, "{}", fs.stats());
    assert_eq!(fs.stats().data_checksum_errors, 0);
    for n in 1..=2 {
        let err = fs
            .read(a.ino, 40 * BS, BS as u32)
            .expect_err("damaged block");
        assert_eq!(err.errno(), Errno::Io);
        assert_eq!(fs.stats().data_checksum_errors, n, "counted once per read");
    }
    // A larger read that covers it fails too, the blocks after it still read.
    assert_eq!(
        fs.read(a.ino, 32 * BS, 16 * BS as u32)
            .expect_err("covers it")
            .errno(),
        Errno::Io
    );
    assert_eq!(fs.stats().data_checksum_errors, 3);
    let got = fs.read(a.ino, 41 * BS, 23 * BS as u32).expect("after it");
    assert_eq!(got, data[41 * BS as usize..].to_vec());
    fs.unmount().expect("unmount");
}

#[test]
fn a_reread_and_committed_data_come_from_the_cache() {
    let dev = mem_device(BS as u32, 4096);
    let opts = MountOptions {
        commit_interval: Duration::from_secs(3600),
        ..MountOptions::default()
    };
    let fs = mount(&dev, opts.clone());
    let a = fs
        .create(1, b"f", 0o644, Caller::default())
        .expect("create");
    let data: Vec<u8> = (0..(256 << 10)).map(|i| (i % 251) as u8).collect();
    fs.write(a.ino, 0, &data, false).expect("write");
    assert_eq!(
        fs.stats().data_cache_bytes,
        0,
        "dirty pages are not clean pages"
    );
    fs.sync().expect("sync");
    // The commit made the pages durable: they are now the clean cached copies.
    assert_eq!(fs.stats().data_cache_bytes, data.len() as u64);
    // Overwriting drops the clean copy; the next commit caches the new bytes.
    fs.write(a.ino, 8192, b"new", false).expect("overwrite");
    assert_eq!(
        fs.stats().data_cache_bytes,
        data.len() as u64 - BS,
        "the overwritten block's clean copy is dropped"
    );
    fs.sync().expect("sync");
    let mut want = data.clone();
    want[8192..8195].copy_from_slice(b"new");
    assert_eq!(fs.read(a.ino, 0, 1 << 20).expect("read"), want);
    // Truncation drops the clean copies past the end.
    fs.setattr(a.ino, &set_size(100 << 10)).expect("truncate");
    assert!(fs.stats().data_cache_bytes <= 101 << 10);
    fs.setattr(a.ino, &set_size(256 << 10)).expect("extend");
    want[100 << 10..].fill(0);
    assert_eq!(fs.read(a.ino, 0, 1 << 20).expect("read"), want);
    fs.unmount().expect("unmount");
    drop(fs);
    // Cold: the first read loads, the second hits the cache.
    let fs = mount(&dev, opts);
    let before = fs.stats();
    assert_eq!(fs.read(a.ino, 0, 64 << 10).expect("read"), want[..64 << 10]);
    let mid = fs.stats();
    assert!(mid.data_cache_misses > before.data_cache_misses);
    assert_eq!(fs.read(a.ino, 0, 64 << 10).expect("read"), want[..64 << 10]);
    let after = fs.stats();
    assert_eq!(
        after.data_cache_misses, mid.data_cache_misses,
        "a re-read misses nothing"
    );
    assert!(after.data_cache_hits >= mid.data_cache_hits + 16);
    // Unlink drops the file's pages.
    fs.unlink(1, b"f").expect("unlink");
    assert_eq!(fs.stats().data_cache_bytes, 0);
    fs.unmount().expect("unmount");
}
