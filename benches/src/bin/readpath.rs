//! `tuxfs-bench-readpath`: the engine's cold sequential read against the raw device, in one
//! run, on one image file through the engine's io_uring device with O_DIRECT.
//!
//! It writes one file of `--file-size` (and a second for the two-thread round), unmounts,
//! and for each round mounts afresh (cold engine cache): reads the file through
//! `Filesystem::read` in `--request`-sized requests, and reads the same number of bytes of
//! the device with `read_batch` in requests of the same size. It prints MB/s and the ratio
//! engine/raw, then one thread reading one file against two threads reading two files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tuxfs_bench::parse_size;
use tuxfs_engine::dev::{
    AlignedBuf, BlockDevice, DeviceKind, OpenOptions, ReadRequest, WriteRequest, open_file,
};
use tuxfs_engine::fs::{Caller, Filesystem, MountOptions};
use tuxfs_engine::mkfs::{MkfsParams, format_device};

type BoxErr = Box<dyn std::error::Error>;

#[derive(Parser, Debug)]
#[command(
    name = "tuxfs-bench-readpath",
    about = "Engine sequential read vs the raw device"
)]
struct Args {
    /// Directory for the image.
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
    /// Size of each file read.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    file_size: u64,
    /// Bytes per read request.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    request: u64,
    /// Rounds (each: raw, engine; the best of each is reported too).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
}

fn open(image: &Path, size: u64) -> Result<Arc<dyn BlockDevice>, BoxErr> {
    let o = OpenOptions {
        kind: DeviceKind::Uring,
        direct: true,
        create_size: Some(size),
        ..OpenOptions::default()
    };
    Ok(Arc::from(open_file(image, &o)?))
}

/// The device with counters of what the engine asked of it.
#[derive(Debug)]
struct Counting {
    dev: Arc<dyn BlockDevice>,
    batches: AtomicU64,
    requests: AtomicU64,
    bytes: AtomicU64,
    nanos: AtomicU64,
}

impl BlockDevice for Counting {
    fn size_bytes(&self) -> u64 {
        self.dev.size_bytes()
    }
    fn alignment(&self) -> usize {
        self.dev.alignment()
    }
    fn read_batch(&self, reqs: &mut [ReadRequest<'_>]) -> tuxfs_engine::Result<()> {
        let t = Instant::now();
        let out = self.dev.read_batch(reqs);
        self.nanos
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.requests
            .fetch_add(reqs.len() as u64, Ordering::Relaxed);
        let bytes: usize = reqs.iter().map(|r| r.buf.len()).sum();
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        out
    }
    fn submit_writes(&self, reqs: Vec<WriteRequest>) -> tuxfs_engine::Result<()> {
        self.dev.submit_writes(reqs)
    }
    fn wait_writes(&self) -> tuxfs_engine::Result<()> {
        self.dev.wait_writes()
    }
    fn flush(&self) -> tuxfs_engine::Result<()> {
        self.dev.flush()
    }
}

impl Counting {
    fn report(&self) -> String {
        let batches = self.batches.load(Ordering::Relaxed).max(1);
        format!(
            "{} batches, {:.1} requests and {:.0} KiB per batch, {:.2} s in read_batch",
            batches,
            self.requests.load(Ordering::Relaxed) as f64 / batches as f64,
            self.bytes.load(Ordering::Relaxed) as f64 / batches as f64 / 1024.0,
            self.nanos.load(Ordering::Relaxed) as f64 / 1e9
        )
    }
}

fn mount(image: &Path, size: u64) -> Result<(Arc<Filesystem>, Arc<Counting>), BoxErr> {
    let counting = Arc::new(Counting {
        dev: open(image, size)?,
        batches: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        nanos: AtomicU64::new(0),
    });
    let fs = Filesystem::mount(counting.clone(), MountOptions::default())?;
    // Count the reads of the measured phase only.
    counting.batches.store(0, Ordering::Relaxed);
    counting.requests.store(0, Ordering::Relaxed);
    counting.bytes.store(0, Ordering::Relaxed);
    counting.nanos.store(0, Ordering::Relaxed);
    Ok((fs, counting))
}

/// MB/s of reading the device sequentially from `start` in `request`-sized requests.
fn raw(dev: &dyn BlockDevice, start: u64, bytes: u64, request: u64) -> Result<f64, BoxErr> {
    let mut buf = AlignedBuf::zeroed(request as usize);
    let t = Instant::now();
    let mut at = 0;
    while at < bytes {
        dev.read_batch(&mut [ReadRequest {
            offset: start + at,
            buf: &mut buf,
        }])?;
        at += request;
    }
    Ok(mbps(bytes, t.elapsed()))
}

/// Reads file `ino` sequentially in `request`-sized requests; returns the bytes read.
fn read_file(fs: &Filesystem, ino: u64, request: u64) -> Result<u64, String> {
    let mut at = 0u64;
    loop {
        let got = fs
            .read(ino, at, request as u32)
            .map_err(|e| e.to_string())?;
        if got.is_empty() {
            return Ok(at);
        }
        at += got.len() as u64;
    }
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn main() -> Result<(), BoxErr> {
    let args = Args::parse();
    let work = tempfile::Builder::new()
        .prefix("tuxfs-bench-readpath-")
        .tempdir_in(&args.dir)?;
    println!("{}", tuxfs_bench::machine::describe(work.path()));
    let image = work.path().join("read.img");
    let size = (2 * args.file_size + (256 << 20)).next_multiple_of(1 << 20);
    let dev = open(&image, size)?;
    // Write the whole image first: a sparse image file reads its holes without touching the
    // disk, which would flatter the raw baseline.
    let fill = Arc::new(AlignedBuf::from_slice(&vec![0x5a; 1 << 20]));
    let mut at = 0;
    while at < size {
        dev.submit_writes(vec![WriteRequest {
            offset: at,
            data: fill.clone(),
        }])?;
        at += 1 << 20;
    }
    dev.flush()?;
    let params = MkfsParams {
        block_size: 4096,
        block_count: size / 4096,
        label: "bench".into(),
        uuid: [1; 16],
        hash_seed: [7; 16],
        now: tuxfs_engine::fs::now(),
        uid: 0,
        gid: 0,
    };
    format_device(dev.as_ref(), &params, false)?;
    drop(dev);
    let (fs, _) = mount(&image, size)?;
    let mut inos = Vec::new();
    for (n, name) in [b"a", b"b"].into_iter().enumerate() {
        let f = fs.create(1, name, 0o644, Caller::default())?;
        let chunk = vec![0x40 + n as u8; 1 << 20];
        let mut at = 0;
        while at < args.file_size {
            fs.write(f.ino, at, &chunk, false)?;
            at += chunk.len() as u64;
        }
        fs.release(f.ino)?;
        inos.push(f.ino);
    }
    fs.unmount()?;
    drop(fs);
    println!(
        "sequential read of a {} MiB file in {} KiB requests, cold engine cache, O_DIRECT io_uring",
        args.file_size >> 20,
        args.request >> 10
    );
    let (mut best_raw, mut best_eng, mut best_one, mut best_two) = (0f64, 0f64, 0f64, 0f64);
    for round in 1..=args.rounds {
        // Raw: the same number of bytes from the middle of the device, same request size.
        let dev = open(&image, size)?;
        let r = raw(dev.as_ref(), 64 << 20, args.file_size, args.request)?;
        drop(dev);
        let (fs, counting) = mount(&image, size)?;
        let t = Instant::now();
        let n = read_file(&fs, inos[0], args.request)?;
        let e = mbps(n, t.elapsed());
        println!("  engine read: {}", counting.report());
        fs.unmount()?;
        drop(fs);
        let (fs, _) = mount(&image, size)?;
        let t = Instant::now();
        let n = read_file(&fs, inos[1], args.request)?;
        let one = mbps(n, t.elapsed());
        fs.unmount()?;
        drop(fs);
        let (fs, counting) = mount(&image, size)?;
        let t = Instant::now();
        let threads: Vec<_> = inos
            .iter()
            .map(|&ino| {
                let fs = fs.clone();
                let request = args.request;
                std::thread::spawn(move || read_file(&fs, ino, request))
            })
            .collect();
        let mut total = 0;
        for th in threads {
            total += th.join().map_err(|_| "reader panicked")??;
        }
        let two = mbps(total, t.elapsed());
        println!("  two threads: {}", counting.report());
        fs.unmount()?;
        drop(fs);
        println!(
            "round {round}: raw {r:.0} MB/s, engine {e:.0} MB/s, engine/raw {:.2}; one thread {one:.0} MB/s, two threads {two:.0} MB/s, two/one {:.2}",
            e / r,
            two / one
        );
        (best_raw, best_eng) = (best_raw.max(r), best_eng.max(e));
        (best_one, best_two) = (best_one.max(one), best_two.max(two));
    }
    println!(
        "best: engine/raw {:.2} ({best_eng:.0} / {best_raw:.0} MB/s), two threads/one {:.2} ({best_two:.0} / {best_one:.0} MB/s)",
        best_eng / best_raw,
        best_two / best_one
    );
    Ok(())
}
