//! Workloads through a block device (`raw`, and the random workloads on any file through
//! the same io_uring path) and through a mounted directory (POSIX calls, the built-in driver
//! that stands in for fio and dbench).

use std::fs::{File, OpenOptions as FsOpen};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use tuxfs_engine::dev::fault::SplitMix64;
use tuxfs_engine::dev::{
    AlignedBuf, BlockDevice, DeviceKind, OpenOptions, ReadRequest, WriteRequest, open_file,
};

use super::figure::Figure;
use crate::daemon::BoxErr;

/// 1 MiB: the sequential request size.
pub const SEQ_BLOCK: usize = 1 << 20;
/// 4 KiB: the random and append request size.
pub const SMALL_BLOCK: usize = 4096;

/// Bytes that do not compress or deduplicate.
pub fn pattern(len: usize, seed: u64) -> AlignedBuf {
    let mut buf = AlignedBuf::zeroed(len);
    let mut rng = SplitMix64::new(seed);
    for chunk in buf.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes()[..chunk.len()]);
    }
    buf
}

/// Sequential 1 MiB writes of `bytes` on the device, one request in flight, then a flush.
pub fn dev_seq_write(dev: &dyn BlockDevice, bytes: u64) -> Result<Figure, BoxErr> {
    let data = Arc::new(pattern(SEQ_BLOCK, 1));
    let start = Instant::now();
    for i in 0..bytes / SEQ_BLOCK as u64 {
        dev.submit_writes(vec![WriteRequest {
            offset: i * SEQ_BLOCK as u64,
            data: data.clone(),
        }])?;
        dev.wait_writes()?;
    }
    dev.flush()?;
    Ok(Figure::mb_per_s(bytes, start.elapsed().as_secs_f64()))
}

/// Sequential 1 MiB reads of `bytes` from the device, one request in flight.
pub fn dev_seq_read(dev: &dyn BlockDevice, bytes: u64) -> Result<Figure, BoxErr> {
    let mut buf = AlignedBuf::zeroed(SEQ_BLOCK);
    let start = Instant::now();
    for i in 0..bytes / SEQ_BLOCK as u64 {
        dev.read_batch(&mut [ReadRequest {
            offset: i * SEQ_BLOCK as u64,
            buf: &mut buf,
        }])?;
    }
    Ok(Figure::mb_per_s(bytes, start.elapsed().as_secs_f64()))
}

/// Random 4 KiB writes or reads inside the first `span` bytes for `secs`, in batches of
/// `qd` requests submitted together and completed together (fio: iodepth=qd,
/// iodepth_batch_submit=qd, iodepth_batch_complete_min=qd). Writes end with a flush.
pub fn dev_random(
    dev: &dyn BlockDevice,
    span: u64,
    qd: usize,
    secs: f64,
    write: bool,
) -> Result<Figure, BoxErr> {
    let blocks = (span / SMALL_BLOCK as u64).max(1);
    let data = Arc::new(pattern(SMALL_BLOCK, 2));
    let mut bufs: Vec<AlignedBuf> = (0..qd).map(|_| AlignedBuf::zeroed(SMALL_BLOCK)).collect();
    let mut rng = SplitMix64::new(0x7475_7866);
    let (start, budget) = (Instant::now(), Duration::from_secs_f64(secs));
    let mut ops = 0u64;
    while start.elapsed() < budget {
        if write {
            let reqs = (0..qd).map(|_| WriteRequest {
                offset: rng.below(blocks) * SMALL_BLOCK as u64,
                data: data.clone(),
            });
            dev.submit_writes(reqs.collect())?;
            dev.wait_writes()?;
        } else {
            let mut reqs: Vec<ReadRequest<'_>> = bufs
                .iter_mut()
                .map(|buf| ReadRequest {
                    offset: rng.below(blocks) * SMALL_BLOCK as u64,
                    buf,
                })
                .collect();
            dev.read_batch(&mut reqs)?;
        }
        ops += qd as u64;
    }
    if write {
        dev.flush()?;
    }
    Ok(Figure::rate(ops as f64, start.elapsed().as_secs_f64()))
}

/// The floor of append+fsync: `ops` x (one 4 KiB write, then a flush) on the device.
pub fn dev_write_flush(dev: &dyn BlockDevice, ops: usize) -> Result<Figure, BoxErr> {
    let data = Arc::new(pattern(SMALL_BLOCK, 3));
    let mut lat = Vec::with_capacity(ops);
    let start = Instant::now();
    for i in 0..ops as u64 {
        let t = Instant::now();
        dev.submit_writes(vec![WriteRequest {
            offset: i * SMALL_BLOCK as u64,
            data: data.clone(),
        }])?;
        dev.flush()?;
        lat.push(t.elapsed().as_micros() as u64);
    }
    Ok(Figure::with_latencies(lat, start.elapsed().as_secs_f64()))
}

/// Opens a file on a mounted target as an O_DIRECT io_uring device, to run the random
/// workloads through the same path as `raw`.
pub fn file_device(path: &Path, qd: usize) -> Result<Box<dyn BlockDevice>, BoxErr> {
    Ok(open_file(
        path,
        &OpenOptions {
            direct: true,
            kind: DeviceKind::Uring,
            queue_depth: qd as u32,
            ..OpenOptions::default()
        },
    )?)
}

fn open_flags(direct: bool) -> i32 {
    if direct { libc::O_DIRECT } else { 0 }
}

/// Writes a new file of `bytes` in 1 MiB write(2) calls, then fsync (fio: rw=write, bs=1M,
/// ioengine=psync, end_fsync=1, fallocate=none).
pub fn file_seq_write(path: &Path, bytes: u64, direct: bool) -> Result<Figure, BoxErr> {
    let data = pattern(SEQ_BLOCK, 4);
    let start = Instant::now();
    let mut f = FsOpen::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(open_flags(direct))
        .open(path)?;
    for _ in 0..bytes / SEQ_BLOCK as u64 {
        f.write_all(&data)?;
    }
    f.sync_all()?;
    Ok(Figure::mb_per_s(bytes, start.elapsed().as_secs_f64()))
}

/// Reads the whole file in 1 MiB read(2) calls (fio: rw=read, bs=1M, ioengine=psync).
pub fn file_seq_read(path: &Path, direct: bool) -> Result<Figure, BoxErr> {
    let mut buf = AlignedBuf::zeroed(SEQ_BLOCK);
    let start = Instant::now();
    let mut f = FsOpen::new()
        .read(true)
        .custom_flags(open_flags(direct))
        .open(path)?;
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    Ok(Figure::mb_per_s(total, start.elapsed().as_secs_f64()))
}

/// Latencies in microseconds of `ops` appends of `block` to `f`, each followed by
/// fdatasync: the loop every append+fsync figure is made of.
pub fn appends_with_fdatasync(
    f: &mut std::fs::File,
    block: &[u8],
    ops: usize,
) -> std::io::Result<Vec<u64>> {
    let mut lat = Vec::with_capacity(ops);
    for _ in 0..ops {
        let t = Instant::now();
        f.write_all(block)?;
        f.sync_data()?;
        lat.push(t.elapsed().as_micros() as u64);
    }
    Ok(lat)
}

/// `writers` threads, each doing `ops` x (4 KiB append + fdatasync) on its own file in
/// `dir`, all started at once. Returns the total wall time and every latency.
pub fn append_fsync(dir: &Path, writers: usize, ops: usize) -> Result<Figure, BoxErr> {
    let barrier = Arc::new(Barrier::new(writers + 1));
    let mut threads = Vec::with_capacity(writers);
    for w in 0..writers {
        let path = dir.join(format!("w{w}"));
        let barrier = barrier.clone();
        threads.push(std::thread::spawn(move || -> std::io::Result<Vec<u64>> {
            let opened = FsOpen::new().create(true).append(true).open(&path);
            barrier.wait();
            appends_with_fdatasync(&mut opened?, &[0x3cu8; SMALL_BLOCK], ops)
        }));
    }
    barrier.wait();
    let start = Instant::now();
    let mut all = Vec::with_capacity(writers * ops);
    let mut first_err = None;
    for th in threads {
        match th.join().map_err(|_| "writer panicked")? {
            Ok(lat) => all.extend(lat),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    match first_err {
        Some(e) => Err(e.into()),
        None => Ok(Figure::with_latencies(all, secs)),
    }
}

/// Names of the empty files of the metadata workloads.
fn meta_name(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("file-{i:07}"))
}

/// Creates `n` empty files in `dir` (open with O_CREAT, close).
pub fn create_files(dir: &Path, n: usize) -> Result<Figure, BoxErr> {
    std::fs::create_dir_all(dir)?;
    let start = Instant::now();
    for i in 0..n {
        File::create(meta_name(dir, i))?;
    }
    Ok(Figure::rate(n as f64, start.elapsed().as_secs_f64()))
}

/// stat(2) of each of the `n` files.
pub fn stat_files(dir: &Path, n: usize) -> Result<Figure, BoxErr> {
    let start = Instant::now();
    for i in 0..n {
        std::fs::metadata(meta_name(dir, i))?;
    }
    Ok(Figure::rate(n as f64, start.elapsed().as_secs_f64()))
}

/// Lists `dir` (readdir only, no stat); entries per second.
pub fn list_dir(dir: &Path) -> Result<Figure, BoxErr> {
    let start = Instant::now();
    let mut n = 0usize;
    for entry in std::fs::read_dir(dir)? {
        entry?;
        n += 1;
    }
    Ok(Figure::rate(n as f64, start.elapsed().as_secs_f64()))
}

/// Unlinks the `n` files.
pub fn unlink_files(dir: &Path, n: usize) -> Result<Figure, BoxErr> {
    let start = Instant::now();
    for i in 0..n {
        std::fs::remove_file(meta_name(dir, i))?;
    }
    Ok(Figure::rate(n as f64, start.elapsed().as_secs_f64()))
}

/// Random 4 KiB buffered pwrite(2)s inside the existing file for `secs`, then fsync
/// (fio: rw=randwrite, bs=4k, ioengine=psync, direct=0, end_fsync=1). The fsync is timed.
pub fn file_random_write(path: &Path, secs: f64) -> Result<Figure, BoxErr> {
    use std::os::unix::fs::FileExt;
    let f = FsOpen::new().write(true).open(path)?;
    let blocks = (f.metadata()?.len() / SMALL_BLOCK as u64).max(1);
    let data = pattern(SMALL_BLOCK, 5);
    let mut rng = SplitMix64::new(0x6275_6666);
    let (start, budget) = (Instant::now(), Duration::from_secs_f64(secs));
    let mut ops = 0u64;
    while start.elapsed() < budget {
        f.write_all_at(&data, rng.below(blocks) * SMALL_BLOCK as u64)?;
        ops += 1;
    }
    f.sync_all()?;
    Ok(Figure::rate(ops as f64, start.elapsed().as_secs_f64()))
}

/// One thread per file, each reading its whole file in 1 MiB read(2) calls, all started
/// at once; the figure is the bytes of all of them over the wall time.
pub fn files_parallel_read(paths: &[PathBuf]) -> Result<Figure, BoxErr> {
    let barrier = Arc::new(Barrier::new(paths.len() + 1));
    let threads: Vec<_> = paths
        .iter()
        .cloned()
        .map(|path| {
            let barrier = barrier.clone();
            std::thread::spawn(move || -> std::io::Result<u64> {
                let opened = File::open(&path);
                barrier.wait();
                let mut f = opened?;
                let mut buf = vec![0u8; SEQ_BLOCK];
                let mut total = 0u64;
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        return Ok(total);
                    }
                    total += n as u64;
                }
            })
        })
        .collect();
    barrier.wait();
    readers_figure(threads, Instant::now())
}

/// Joins reader threads that each return the bytes they read, started at `start`: the
/// bytes of all of them over the wall time.
pub fn readers_figure<E: Into<BoxErr>>(
    threads: Vec<std::thread::JoinHandle<Result<u64, E>>>,
    start: Instant,
) -> Result<Figure, BoxErr> {
    let mut total = 0u64;
    for t in threads {
        total += t
            .join()
            .map_err(|_| "reader panicked")?
            .map_err(Into::into)?;
    }
    Ok(Figure::mb_per_s(total, start.elapsed().as_secs_f64()))
}

/// Appends per writer in the scaling workload (the "16 writers x 10").
pub const SCALE_OPS: usize = 10;

/// How append+fsync scales: the wall time of 16 writers each doing 10 x (4 KiB append +
/// fdatasync) on its own file, over the wall time of one writer doing the same 10.
/// `run(writers, ops)` runs one such batch and returns its figure (wall time in `secs`).
pub fn fsync_scaling(
    mut run: impl FnMut(usize, usize) -> Result<Figure, BoxErr>,
) -> Result<Figure, BoxErr> {
    let one = run(1, SCALE_OPS)?;
    let many = run(16, SCALE_OPS)?;
    Ok(Figure {
        value: many.secs / one.secs.max(1e-9),
        secs: one.secs + many.secs,
        p50_us: many.p50_us,
        p99_us: many.p99_us,
    })
}

/// The real dbench (`dbench -D DIR -t SECS CLIENTS`, its default client.txt load) on the
/// mounted target; its "Throughput N MB/sec" line is the figure.
pub fn dbench(dir: &Path, clients: usize, secs: f64) -> Result<Figure, BoxErr> {
    std::fs::create_dir_all(dir)?;
    let start = Instant::now();
    let out = std::process::Command::new("dbench")
        .arg("-D")
        .arg(dir)
        .arg("-t")
        .arg(format!("{}", secs.ceil() as u64))
        .arg(clients.to_string())
        .output()
        .map_err(|e| format!("dbench: {e} (install it: scripts/deps --peers)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("dbench exited with {}: {}", out.status, text.trim_end()).into());
    }
    let mb = dbench_throughput(&text).ok_or("dbench printed no \"Throughput N MB/sec\" line")?;
    Ok(Figure {
        value: mb,
        secs: start.elapsed().as_secs_f64(),
        p50_us: None,
        p99_us: None,
    })
}

/// The MB/s of dbench's final "Throughput 47.5 MB/sec  8 clients ..." line.
pub fn dbench_throughput(text: &str) -> Option<f64> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("Throughput "))?;
    let mut words = line.split_whitespace().skip(1);
    let value: f64 = words.next()?.parse().ok()?;
    (words.next()? == "MB/sec").then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbench_throughput_reads_the_summary_line() {
        let out = "  8     12345    47.49 MB/sec  execute 10 sec  latency 3.1 ms\n\
                   \nThroughput 47.5206 MB/sec  8 clients  8 procs  max_latency=40.123 ms\n";
        assert_eq!(dbench_throughput(out), Some(47.5206));
        assert_eq!(dbench_throughput("no summary\n"), None);
        assert_eq!(dbench_throughput("Throughput fast MB/sec\n"), None);
    }

    #[test]
    fn fsync_scaling_is_the_ratio_of_wall_times() {
        let mut calls = Vec::new();
        let f = fsync_scaling(|writers, ops| {
            calls.push((writers, ops));
            Ok(Figure::rate(1.0, if writers == 1 { 0.5 } else { 1.0 }))
        })
        .unwrap();
        assert_eq!(calls, vec![(1, SCALE_OPS), (16, SCALE_OPS)]);
        assert!((f.value - 2.0).abs() < 1e-9);
    }
}
