//! `tuxfs-bench-fork`: what page forking buys. A rewrite-heavy workload — writers rewriting
//! random 4 KiB pages of a 64 MiB file while the writeback scheduler commits every 50 ms —
//! runs twice in the same process on the same image file through the engine's io_uring
//! device: with page forking (the normal engine), and with `debug_wait_writeback`, where
//! commits hold the state lock through their flush so writers wait for writeback. It prints
//! write latency (median, p99, max), throughput, pages forked and commits, and the ratios.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tuxfs_engine::dev::{BlockDevice, DeviceKind, OpenOptions, open_file};
use tuxfs_engine::fs::{Caller, Filesystem, MountOptions};
use tuxfs_engine::mkfs::{MkfsParams, format_device};

type BoxErr = Box<dyn std::error::Error>;

#[derive(Parser, Debug)]
#[command(
    name = "tuxfs-bench-fork",
    about = "Page forking vs waiting for writeback"
)]
struct Args {
    /// Directory for the image.
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
    /// Seconds per mode.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Writer threads.
    #[arg(long, default_value_t = 4)]
    writers: usize,
}

const FILE_BYTES: u64 = 64 << 20;
const PAGE: u64 = 4096;

struct Outcome {
    latencies_us: Vec<u64>,
    seconds: f64,
    forked: u64,
    commits: u64,
}

fn run_mode(image: &std::path::Path, wait: bool, args: &Args) -> Result<Outcome, BoxErr> {
    let _ = std::fs::remove_file(image);
    let open = OpenOptions {
        kind: DeviceKind::Uring,
        create_size: Some(1 << 30),
        ..OpenOptions::default()
    };
    let dev: Arc<dyn BlockDevice> = Arc::from(open_file(image, &open)?);
    let params = MkfsParams {
        block_size: 4096,
        block_count: (1 << 30) / 4096,
        label: "bench".into(),
        uuid: [1; 16],
        hash_seed: [if wait { 2 } else { 3 }; 16],
        now: tuxfs_engine::fs::now(),
        uid: 0,
        gid: 0,
    };
    format_device(dev.as_ref(), &params, false)?;
    let opts = MountOptions {
        commit_interval: Duration::from_millis(50),
        dirty_limit_bytes: 512 << 20,
        debug_wait_writeback: wait,
        ..MountOptions::default()
    };
    let fs = Filesystem::mount(dev, opts)?;
    let f = fs.create(1, b"hot", 0o644, Caller::default())?;
    fs.write(f.ino, 0, &vec![0x11; FILE_BYTES as usize], false)?;
    fs.sync()?;
    let before = fs.stats();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut threads = Vec::new();
    for w in 0..args.writers {
        let (fs, stop) = (fs.clone(), stop.clone());
        threads.push(std::thread::spawn(move || -> Result<Vec<u64>, String> {
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (w as u64) << 17;
            let mut lat = Vec::new();
            let page = vec![w as u8; PAGE as usize];
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x % (FILE_BYTES / PAGE)) * PAGE;
                let t = Instant::now();
                fs.write(f.ino, at, &page, false)
                    .map_err(|e| e.to_string())?;
                lat.push(t.elapsed().as_micros() as u64);
            }
            Ok(lat)
        }));
    }
    std::thread::sleep(Duration::from_secs(args.seconds));
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us = Vec::new();
    for t in threads {
        latencies_us.extend(t.join().map_err(|_| "writer panicked")??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = fs.stats();
    fs.unmount()?;
    Ok(Outcome {
        latencies_us,
        seconds,
        forked: after.pages_forked - before.pages_forked,
        commits: after.deltas_committed - before.deltas_committed,
    })
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0)
}

fn main() -> Result<(), BoxErr> {
    let args = Args::parse();
    let work = tempfile::Builder::new()
        .prefix("tuxfs-bench-fork-")
        .tempdir_in(&args.dir)?;
    println!("{}", tuxfs_bench::machine::describe(work.path()));
    println!(
        "{} writers rewriting random 4 KiB pages of a 64 MiB file, commits every 50 ms, {} s per mode",
        args.writers, args.seconds
    );
    let image = work.path().join("fork.img");
    let mut rows = Vec::new();
    for (name, wait) in [("page forking", false), ("wait for writeback", true)] {
        let mut o = run_mode(&image, wait, &args)?;
        o.latencies_us.sort_unstable();
        let (p50, p99, p999) = (
            pct(&o.latencies_us, 0.5),
            pct(&o.latencies_us, 0.99),
            pct(&o.latencies_us, 0.999),
        );
        let max = o.latencies_us.last().copied().unwrap_or(0);
        let per_s = o.latencies_us.len() as f64 / o.seconds;
        println!(
            "{name:<20} writes/s {per_s:>9.0}  latency median {p50:>4} us  p99 {p99:>5} us  p99.9 {p999:>7} us  max {max:>7} us  forked {:>7}  commits {:>3}",
            o.forked, o.commits
        );
        rows.push((per_s, p99));
    }
    if let [(fork_rate, fork_p99), (wait_rate, wait_p99)] = rows[..] {
        println!(
            "ratios forking/wait: throughput {:.2}, p99 latency {:.3}",
            fork_rate / wait_rate.max(1e-9),
            fork_p99 as f64 / wait_p99.max(1) as f64
        );
    }
    Ok(())
}
