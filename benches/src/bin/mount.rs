//! `tuxfs-bench-mount`: figures through a real FUSE mount, each next to a baseline measured
//! in the same run on the same disk:
//! - 4 KiB append + fdatasync latency (median, p99) through tuxfs, on the host filesystem
//!   holding the image (a peer), and on the raw device through the engine's io_uring path
//!   (one 4 KiB write and one flush: the floor any filesystem pays);
//! - group commit: 1, 16 and 256 writers each doing 10 x (4 KiB append + fdatasync) at once;
//!   total time should grow clearly sub-linearly with the writers;
//! - mount time after the daemon was killed mid-workload (recovery replays the log), next to
//!   mount time after a clean unmount.
//!
//! Needs root and /dev/fuse. Times are printed, never asserted.

use std::fs::{File, OpenOptions as FsOpen};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tuxfs_bench::daemon::{BoxErr, Mounted, mkfs_tuxfs, mount_tuxfs, percentile, proc_kib};
use tuxfs_engine::dev::{
    AlignedBuf, BlockDevice, DeviceKind, OpenOptions, WriteRequest, open_file,
};
use tuxfs_engine::fs::{Filesystem, MountOptions};

#[derive(Parser, Debug)]
#[command(
    name = "tuxfs-bench-mount",
    about = "Benchmarks through a real tuxfs mount"
)]
struct Args {
    /// Directory for the images (its filesystem is the peer baseline).
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
    /// Append+fsync operations per measurement.
    #[arg(long, default_value_t = 2000)]
    ops: usize,
    /// Size of the image.
    #[arg(long, default_value = "1G", value_parser = tuxfs_bench::parse_size)]
    image_size: u64,
    /// Data written before the kill in the recovery test.
    #[arg(long, default_value = "256M", value_parser = tuxfs_bench::parse_size)]
    fill: u64,
    /// Which measurements to run: latency, group, memory, recovery (comma-separated).
    #[arg(long, default_value = "latency,group,memory,recovery")]
    only: String,
}

fn mount(image: &Path, dir: &Path) -> Result<(Mounted, Duration), BoxErr> {
    mount_tuxfs(image, dir, &[])
}

fn mount_with(image: &Path, dir: &Path, options: &[&str]) -> Result<(Mounted, Duration), BoxErr> {
    mount_tuxfs(image, dir, options)
}

fn mkfs(image: &Path, size: u64) -> Result<(), BoxErr> {
    mkfs_tuxfs(image, size)
}

/// Latencies of `ops` 4 KiB appends, each followed by fdatasync, in microseconds.
fn append_fsync(path: &Path, ops: usize) -> Result<Vec<u64>, BoxErr> {
    let mut f = FsOpen::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)?;
    Ok(tuxfs_bench::suite::io::appends_with_fdatasync(
        &mut f,
        &[0x5au8; 4096],
        ops,
    )?)
}

/// The floor: a 4 KiB write then a flush on the raw image through the engine's device.
fn raw_write_flush(path: &Path, ops: usize) -> Result<Vec<u64>, BoxErr> {
    let opts = OpenOptions {
        kind: DeviceKind::Uring,
        create_size: Some(64 << 20),
        ..OpenOptions::default()
    };
    let dev = open_file(path, &opts)?;
    let mut lat = Vec::with_capacity(ops);
    for i in 0..ops {
        let data = Arc::new(AlignedBuf::from_slice(&[0x5a; 4096]));
        let t = Instant::now();
        dev.submit_writes(vec![WriteRequest {
            offset: (i as u64 % 16384) * 4096,
            data,
        }])?;
        dev.flush()?;
        lat.push(t.elapsed().as_micros() as u64);
    }
    Ok(lat)
}

fn report(name: &str, mut lat: Vec<u64>) -> (u64, u64) {
    lat.sort_unstable();
    let (med, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    let total: u64 = lat.iter().sum();
    let per_s = lat.len() as f64 / (total as f64 / 1e6);
    println!("{name:<28} median {med:>6} us   p99 {p99:>6} us   {per_s:>8.0} appends+fsync/s");
    (med, p99)
}

fn latency(args: &Args, work: &Path) -> Result<(), BoxErr> {
    println!("== 4 KiB append + fdatasync, {} operations each", args.ops);
    let image = work.join("lat.img");
    let mnt = work.join("mnt");
    mkfs(&image, args.image_size)?;
    let (m, _) = mount(&image, &mnt)?;
    let tux = append_fsync(&mnt.join("log"), args.ops)?;
    m.unmount()?;
    let peer = append_fsync(&work.join("peer-log"), args.ops)?;
    let raw = raw_write_flush(&work.join("raw.img"), args.ops)?;
    let (t_med, t_p99) = report("tuxfs through FUSE", tux);
    let (p_med, p_p99) = report("host filesystem (peer)", peer);
    let (r_med, r_p99) = report("raw io_uring write+flush", raw);
    println!(
        "ratios (median, p99): tuxfs/host {:.2}, {:.2}; tuxfs/raw {:.2}, {:.2}",
        t_med as f64 / p_med.max(1) as f64,
        t_p99 as f64 / p_p99.max(1) as f64,
        t_med as f64 / r_med.max(1) as f64,
        t_p99 as f64 / r_p99.max(1) as f64
    );
    Ok(())
}

/// Writes `fill` bytes in 4 MiB files, fsyncing every eighth file, plus small files.
fn workload(mnt: &Path, fill: u64) -> Result<(), BoxErr> {
    let chunk = vec![0xa5u8; 1 << 20];
    for i in 0..fill.div_ceil(4 << 20) {
        let mut f = File::create(mnt.join(format!("big-{i}")))?;
        for _ in 0..4 {
            f.write_all(&chunk)?;
        }
        if i % 8 == 0 {
            f.sync_data()?;
        }
    }
    std::fs::create_dir_all(mnt.join("small"))?;
    for i in 0..5000 {
        std::fs::write(mnt.join(format!("small/f{i}")), format!("{i}"))?;
    }
    File::open(mnt.join("small"))?.sync_all()?;
    Ok(())
}

fn recovery(args: &Args, work: &Path) -> Result<(), BoxErr> {
    println!(
        "== mount time of a {} MiB image: after a clean unmount and after SIGKILL",
        args.image_size >> 20
    );
    let image = work.join("rec.img");
    let mnt = work.join("mnt");
    mkfs(&image, args.image_size)?;
    let (m, _) = mount(&image, &mnt)?;
    workload(&mnt, args.fill)?;
    m.unmount()?;
    let (m, clean) = mount(&image, &mnt)?;
    m.unmount()?;
    let (m, _) = mount(&image, &mnt)?;
    workload(&mnt, args.fill)?;
    m.kill()?;
    // The engine's recovery alone, in this process, on the killed image (read-only: the
    // image stays as the kill left it for the daemon mount below).
    let dev: Arc<dyn BlockDevice> = Arc::from(open_file(&image, &OpenOptions::default())?);
    let t = Instant::now();
    let fs = Filesystem::mount(
        dev,
        MountOptions {
            read_only: true,
            ..MountOptions::default()
        },
    )?;
    let engine = t.elapsed();
    drop(fs);
    let (m, killed) = mount(&image, &mnt)?;
    m.unmount()?;
    println!(
        "mount after clean unmount     {:>8.1} ms (tuxfs-mount until the mountpoint is up)",
        clean.as_secs_f64() * 1e3
    );
    println!(
        "mount after SIGKILL           {:>8.1} ms (same; recovery replays the log and unifies)",
        killed.as_secs_f64() * 1e3
    );
    println!(
        "engine recovery alone         {:>8.1} ms (read-only Filesystem::mount in process)",
        engine.as_secs_f64() * 1e3
    );
    println!(
        "ratio killed/clean {:.2}",
        killed.as_secs_f64() / clean.as_secs_f64().max(1e-6)
    );
    Ok(())
}

/// Bounded memory: write and read back a file four times the cache limit through a mount
/// with `-o cache=32M`; the daemon's peak RSS against the limit.
fn memory(args: &Args, work: &Path) -> Result<(), BoxErr> {
    const CACHE: u64 = 32 << 20;
    println!(
        "== memory: a {} MiB file through a mount with -o cache=32M",
        (4 * CACHE) >> 20
    );
    let image = work.join("mem.img");
    let mnt = work.join("mnt");
    mkfs(&image, args.image_size.max(8 * CACHE))?;
    let (m, _) = mount_with(&image, &mnt, &["cache=32M"])?;
    let pid = m.child.id();
    let idle = proc_kib(pid, "VmRSS:")?;
    let chunk = vec![0x6bu8; 1 << 20];
    let mut f = File::create(mnt.join("big"))?;
    for _ in 0..((4 * CACHE) >> 20) {
        f.write_all(&chunk)?;
    }
    f.sync_all()?;
    drop(f);
    let after_write = proc_kib(pid, "VmHWM:")?;
    // Drop the kernel's page cache so the reads reach the daemon.
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    let mut buf = vec![0u8; 1 << 20];
    let mut f = File::open(mnt.join("big"))?;
    let mut total = 0u64;
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    drop(f);
    let peak = proc_kib(pid, "VmHWM:")?;
    m.unmount()?;
    println!(
        "read back {} MiB; daemon RSS idle {} MiB, peak after writing {} MiB, peak after reading {} MiB",
        total >> 20,
        idle >> 10,
        after_write >> 10,
        peak >> 10
    );
    println!(
        "cache limit 32 MiB; peak - limit = {} MiB (binary, io_uring ring, FUSE buffers, allocator slack)",
        (peak >> 10).saturating_sub(32)
    );
    Ok(())
}

/// Group commit: `writers` threads, each doing 10 x (4 KiB append + fdatasync) on its own
/// file at once. Returns the wall time of the whole round.
fn group_round(dir: &Path, writers: usize) -> Result<Duration, BoxErr> {
    let figure = tuxfs_bench::suite::io::append_fsync(dir, writers, 10)?;
    Ok(Duration::from_secs_f64(figure.secs))
}

fn group(args: &Args, work: &Path) -> Result<(), BoxErr> {
    println!("== group commit: N writers, each 10 x (4 KiB append + fdatasync) on its own file");
    let image = work.join("group.img");
    let mnt = work.join("mnt");
    let mut base = None;
    for writers in [1usize, 16, 256] {
        mkfs(&image, args.image_size)?;
        let (m, _) = mount(&image, &mnt)?;
        let took = group_round(&mnt, writers)?;
        m.unmount()?;
        let fsyncs = writers as f64 * 10.0;
        let base_s = *base.get_or_insert(took.as_secs_f64());
        println!(
            "{writers:>4} writers: {:>9.1} ms total, {:>8.0} fsyncs/s, time x{:.2} for x{writers} the work",
            took.as_secs_f64() * 1e3,
            fsyncs / took.as_secs_f64(),
            took.as_secs_f64() / base_s
        );
    }
    Ok(())
}

fn main() -> Result<(), BoxErr> {
    let args = Args::parse();
    let work = tempfile::Builder::new()
        .prefix("tuxfs-bench-mount-")
        .tempdir_in(&args.dir)?;
    std::fs::create_dir(work.path().join("mnt"))?;
    println!("{}", tuxfs_bench::machine::describe(work.path()));
    let want = |name: &str| args.only.split(',').any(|w| w.trim() == name);
    if want("latency") {
        latency(&args, work.path())?;
    }
    if want("group") {
        group(&args, work.path())?;
    }
    if want("memory") {
        memory(&args, work.path())?;
    }
    if want("recovery") {
        recovery(&args, work.path())?;
    }
    Ok(())
}
