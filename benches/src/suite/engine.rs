//! The workloads through the tuxfs engine called in process: what FUSE costs is the
//! difference between this target and `tuxfs`.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use tuxfs_engine::dev::fault::SplitMix64;
use tuxfs_engine::format::ROOT_INUM;
use tuxfs_engine::fs::{Caller, Filesystem};

use super::figure::Figure;
use super::io::{SEQ_BLOCK, SMALL_BLOCK, pattern};
use crate::daemon::BoxErr;

const ROOT: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 0,
};
const FILE_MODE: u32 = libc::S_IFREG | 0o644;

/// The inode of `name` in the root directory, created when missing.
fn file(fs: &Filesystem, name: &str) -> Result<u64, BoxErr> {
    match fs.lookup(ROOT_INUM, name.as_bytes()) {
        Ok(a) => Ok(a.ino),
        Err(_) => Ok(fs.create(ROOT_INUM, name.as_bytes(), FILE_MODE, ROOT)?.ino),
    }
}

/// 1 MiB writes of `bytes` into a new file, then fsync.
pub fn seq_write(fs: &Filesystem, name: &str, bytes: u64) -> Result<Figure, BoxErr> {
    let data = pattern(SEQ_BLOCK, 4);
    let start = Instant::now();
    let ino = file(fs, name)?;
    for i in 0..bytes / SEQ_BLOCK as u64 {
        fs.write(ino, i * SEQ_BLOCK as u64, &data, false)?;
    }
    fs.fsync(ino, false)?;
    Ok(Figure::mb_per_s(bytes, start.elapsed().as_secs_f64()))
}

/// Reads the whole file in 1 MiB reads.
pub fn seq_read(fs: &Filesystem, name: &str) -> Result<Figure, BoxErr> {
    let start = Instant::now();
    let ino = fs.lookup(ROOT_INUM, name.as_bytes())?.ino;
    let (mut off, mut total) = (0u64, 0u64);
    loop {
        let got = fs.read(ino, off, SEQ_BLOCK as u32)?;
        if got.is_empty() {
            break;
        }
        off += got.len() as u64;
        total += got.len() as u64;
    }
    Ok(Figure::mb_per_s(total, start.elapsed().as_secs_f64()))
}

/// Random 4 KiB writes (then fsync) or reads inside the file for `secs`, one at a time.
pub fn random(fs: &Filesystem, name: &str, secs: f64, write: bool) -> Result<Figure, BoxErr> {
    let ino = fs.lookup(ROOT_INUM, name.as_bytes())?.ino;
    let blocks = (fs.getattr(ino)?.size / SMALL_BLOCK as u64).max(1);
    let data = pattern(SMALL_BLOCK, 2);
    let mut rng = SplitMix64::new(0x7475_7866);
    let (start, budget) = (Instant::now(), Duration::from_secs_f64(secs));
    let mut ops = 0u64;
    while start.elapsed() < budget {
        let off = rng.below(blocks) * SMALL_BLOCK as u64;
        if write {
            fs.write(ino, off, &data, false)?;
        } else {
            fs.read(ino, off, SMALL_BLOCK as u32)?;
        }
        ops += 1;
    }
    if write {
        fs.fsync(ino, true)?;
    }
    Ok(Figure::rate(ops as f64, start.elapsed().as_secs_f64()))
}

/// `writers` threads, each `ops` x (4 KiB append + fsync) on its own file.
pub fn append_fsync(fs: &Arc<Filesystem>, writers: usize, ops: usize) -> Result<Figure, BoxErr> {
    let barrier = Arc::new(Barrier::new(writers + 1));
    let mut threads = Vec::with_capacity(writers);
    for w in 0..writers {
        let ino = file(fs, &format!("w{writers}-{w}"))?;
        let (fs, barrier) = (fs.clone(), barrier.clone());
        threads.push(std::thread::spawn(move || -> Result<Vec<u64>, String> {
            let block = [0x3cu8; SMALL_BLOCK];
            barrier.wait();
            let mut lat = Vec::with_capacity(ops);
            for _ in 0..ops {
                let t = Instant::now();
                fs.write(ino, 0, &block, true).map_err(|e| e.to_string())?;
                fs.fsync(ino, true).map_err(|e| e.to_string())?;
                lat.push(t.elapsed().as_micros() as u64);
            }
            Ok(lat)
        }));
    }
    barrier.wait();
    let start = Instant::now();
    let mut all = Vec::with_capacity(writers * ops);
    for t in threads {
        all.extend(t.join().map_err(|_| "writer panicked")??);
    }
    Ok(Figure::with_latencies(all, start.elapsed().as_secs_f64()))
}

fn meta_name(i: usize) -> String {
    format!("file-{i:07}")
}

/// The metadata workloads on `n` empty files in directory `meta` (made by `Create`).
pub fn create(fs: &Filesystem, n: usize) -> Result<Figure, BoxErr> {
    let start = Instant::now();
    let dir = fs
        .mkdir(ROOT_INUM, b"meta", libc::S_IFDIR | 0o755, ROOT)?
        .ino;
    for i in 0..n {
        let a = fs.create(dir, meta_name(i).as_bytes(), FILE_MODE, ROOT)?;
        fs.release(a.ino)?;
    }
    Ok(Figure::rate(n as f64, start.elapsed().as_secs_f64()))
}

pub fn stat(fs: &Filesystem, n: usize) -> Result<Figure, BoxErr> {
    let start = Instant::now();
    let dir = fs.lookup(ROOT_INUM, b"meta")?.ino;
    for i in 0..n {
        let a = fs.lookup(dir, meta_name(i).as_bytes())?;
        fs.getattr(a.ino)?;
    }
    Ok(Figure::rate(n as f64, start.elapsed().as_secs_f64()))
}

pub fn readdir(fs: &Filesystem) -> Result<Figure, BoxErr> {
    let start = Instant::now();
    let dir = fs.lookup(ROOT_INUM, b"meta")?.ino;
    let (mut cookie, mut n) = (0u64, 0usize);
    loop {
        let batch = fs.readdir(dir, cookie, 1024)?;
        let Some(last) = batch.last() else { break };
        cookie = last.offset;
        n += batch.len();
    }
    Ok(Figure::rate(n as f64, start.elapsed().as_secs_f64()))
}

pub fn unlink(fs: &Filesystem, n: usize) -> Result<Figure, BoxErr> {
    let start = Instant::now();
    let dir = fs.lookup(ROOT_INUM, b"meta")?.ino;
    for i in 0..n {
        fs.unlink(dir, meta_name(i).as_bytes())?;
    }
    Ok(Figure::rate(n as f64, start.elapsed().as_secs_f64()))
}

/// One thread per named file, each reading the whole file in 1 MiB reads, started at once;
/// the bytes of all of them over the wall time.
pub fn parallel_read(fs: &Arc<Filesystem>, names: &[&str]) -> Result<Figure, BoxErr> {
    let barrier = Arc::new(Barrier::new(names.len() + 1));
    let mut threads = Vec::with_capacity(names.len());
    for name in names {
        let ino = fs.lookup(ROOT_INUM, name.as_bytes())?.ino;
        let (fs, barrier) = (fs.clone(), barrier.clone());
        threads.push(std::thread::spawn(move || -> Result<u64, String> {
            barrier.wait();
            let (mut off, mut total) = (0u64, 0u64);
            loop {
                let got = fs
                    .read(ino, off, SEQ_BLOCK as u32)
                    .map_err(|e| e.to_string())?;
                if got.is_empty() {
                    return Ok(total);
                }
                off += got.len() as u64;
                total += got.len() as u64;
            }
        }));
    }
    barrier.wait();
    super::io::readers_figure(threads, Instant::now())
}
