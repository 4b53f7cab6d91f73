//! `tuxfs-bench-dev`: raw throughput of the tuxfs block devices against fio, in one run.
//!
//! On one preallocated image file it measures sequential 1 MiB writes and reads and 4 KiB
//! random writes, all O_DIRECT, through `UringDevice` (queue depth `--qd`) and `SyncDevice`
//! (one request at a time, by nature), and through fio's io_uring engine with the same
//! sizes and queue depth when fio is on PATH. It prints MB/s or IOPS and the ratios
//! uring/fio and uring/sync: the ratio is the figure to watch, the absolute numbers depend
//! on a shared, noisy machine.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tuxfs_bench::json::Json;
use tuxfs_bench::{machine, parse_size};
use tuxfs_engine::dev::fault::SplitMix64;
use tuxfs_engine::dev::{
    AlignedBuf, BlockDevice, DeviceKind, OpenOptions, ReadRequest, WriteRequest, open_file,
};

#[derive(Parser, Debug)]
#[command(
    name = "tuxfs-bench-dev",
    about = "tuxfs block-device throughput against fio"
)]
struct Args {
    /// Directory for the image file.
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
    /// Image size (e.g. 2G, 512M).
    #[arg(long, default_value = "2G", value_parser = parse_size)]
    size: u64,
    /// Seconds per test (ignored when --bytes is given).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Bytes per test instead of a time limit (e.g. 1G).
    #[arg(long, value_parser = parse_size)]
    bytes: Option<u64>,
    /// Queue depth for io_uring and fio.
    #[arg(long, default_value_t = 32)]
    qd: u32,
    /// Keep the image file afterwards.
    #[arg(long)]
    keep: bool,
}

/// The three workloads.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Test {
    SeqWrite,
    SeqRead,
    RandWrite,
}

impl Test {
    const ALL: [Test; 3] = [Test::SeqWrite, Test::SeqRead, Test::RandWrite];

    fn name(self) -> &'static str {
        match self {
            Test::SeqWrite => "seq write 1M",
            Test::SeqRead => "seq read 1M",
            Test::RandWrite => "rand write 4K",
        }
    }

    fn block(self) -> usize {
        if self == Test::RandWrite {
            4096
        } else {
            1 << 20
        }
    }

    /// IOPS for small random I/O, MB/s for streams.
    fn figure(self, m: &Measure) -> f64 {
        if self == Test::RandWrite {
            m.ops as f64 / m.secs
        } else {
            m.bytes as f64 / m.secs / 1e6
        }
    }

    fn unit(self) -> &'static str {
        if self == Test::RandWrite {
            "IOPS"
        } else {
            "MB/s"
        }
    }

    fn fio_rw(self) -> &'static str {
        match self {
            Test::SeqWrite => "write",
            Test::SeqRead => "read",
            Test::RandWrite => "randwrite",
        }
    }
}

/// What one test did.
#[derive(Debug, Clone, Copy)]
struct Measure {
    bytes: u64,
    ops: u64,
    secs: f64,
}

/// When a test stops: after a time or after a number of bytes.
#[derive(Debug, Clone, Copy)]
struct Budget {
    time: Duration,
    bytes: Option<u64>,
}

impl Budget {
    fn done(&self, start: Instant, bytes: u64) -> bool {
        match self.bytes {
            Some(limit) => bytes >= limit,
            None => start.elapsed() >= self.time,
        }
    }
}

type BoxErr = Box<dyn std::error::Error>;

fn main() -> Result<(), BoxErr> {
    let args = Args::parse();
    if args.size < 64 << 20 || args.qd == 0 {
        return Err("--size must be at least 64M and --qd at least 1".into());
    }
    let path = args.dir.join("tuxfs-bench-dev.img");
    preallocate(&path, args.size)?;
    let result = run(&args, &path);
    if !args.keep {
        std::fs::remove_file(&path)?;
    }
    result
}

fn run(args: &Args, path: &Path) -> Result<(), BoxErr> {
    let budget = Budget {
        time: Duration::from_secs_f64(args.seconds),
        bytes: args.bytes,
    };
    let uring = open(path, DeviceKind::Uring, args.qd)?;
    let sync = open(path, DeviceKind::Sync, args.qd)?;
    println!("devices: {uring:?}; {sync:?}");
    fill(&*uring, args.qd)?;
    let fio = fio_available();
    let mut rows = Vec::new();
    for test in Test::ALL {
        let u = measure(&*uring, test, args.qd, budget)?;
        let s = measure(&*sync, test, args.qd, budget)?;
        let f = if fio {
            Some(run_fio(path, test, args, budget)?)
        } else {
            None
        };
        rows.push((test, u, s, f));
    }
    print_table(&rows, args, fio);
    println!("{}", machine::describe(&args.dir));
    Ok(())
}

fn open(path: &Path, kind: DeviceKind, qd: u32) -> Result<Box<dyn BlockDevice>, BoxErr> {
    let opts = OpenOptions {
        direct: true,
        queue_depth: qd,
        kind,
        ..OpenOptions::default()
    };
    Ok(open_file(path, &opts)?)
}

/// Creates the image with every block allocated, so no test pays for allocation.
fn preallocate(path: &Path, size: u64) -> Result<(), BoxErr> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let len = libc::off_t::try_from(size)?;
    // SAFETY: fallocate takes no pointers; the descriptor stays open for the call.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc != 0 {
        return Err(format!(
            "fallocate {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )
        .into());
    }
    Ok(())
}

/// Writes the whole image once, untimed: a preallocated but unwritten extent reads as zeros
/// without touching the disk, which would flatter every read figure.
fn fill(dev: &dyn BlockDevice, qd: u32) -> Result<(), BoxErr> {
    let start = Instant::now();
    let data = Arc::new(pattern(1 << 20));
    let blocks = dev.size_bytes() >> 20;
    for chunk in (0..blocks).collect::<Vec<_>>().chunks(qd as usize * 4) {
        let reqs = chunk.iter().map(|&b| WriteRequest {
            offset: b << 20,
            data: data.clone(),
        });
        dev.submit_writes(reqs.collect())?;
    }
    dev.flush()?;
    println!(
        "filled {} MiB in {:.1} s",
        blocks,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn pattern(len: usize) -> AlignedBuf {
    let mut buf = AlignedBuf::zeroed(len);
    let mut rng = SplitMix64::new(0x0074_7578_6673);
    for chunk in buf.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes()[..chunk.len()]);
    }
    buf
}

fn measure(dev: &dyn BlockDevice, test: Test, qd: u32, budget: Budget) -> Result<Measure, BoxErr> {
    // Batches of several queue depths keep the ring full between calls.
    let batch = qd as usize * 4;
    match test {
        Test::SeqRead => seq_read(dev, batch, budget),
        Test::SeqWrite | Test::RandWrite => writes(dev, test, batch, budget),
    }
}

fn writes(
    dev: &dyn BlockDevice,
    test: Test,
    batch: usize,
    budget: Budget,
) -> Result<Measure, BoxErr> {
    let (block, blocks) = (test.block() as u64, dev.size_bytes() / test.block() as u64);
    let data = Arc::new(pattern(test.block()));
    let mut rng = SplitMix64::new(42);
    let (start, mut next, mut ops) = (Instant::now(), 0u64, 0u64);
    while !budget.done(start, ops * block) {
        let reqs = (0..batch).map(|_| {
            let b = if test == Test::RandWrite {
                rng.below(blocks)
            } else {
                next % blocks
            };
            next += 1;
            WriteRequest {
                offset: b * block,
                data: data.clone(),
            }
        });
        dev.submit_writes(reqs.collect())?;
        ops += batch as u64;
    }
    dev.wait_writes()?;
    Ok(Measure {
        bytes: ops * block,
        ops,
        secs: start.elapsed().as_secs_f64(),
    })
}

fn seq_read(dev: &dyn BlockDevice, batch: usize, budget: Budget) -> Result<Measure, BoxErr> {
    let (block, blocks) = (1u64 << 20, dev.size_bytes() >> 20);
    let mut bufs: Vec<AlignedBuf> = (0..batch).map(|_| AlignedBuf::zeroed(1 << 20)).collect();
    let (start, mut next, mut ops) = (Instant::now(), 0u64, 0u64);
    while !budget.done(start, ops * block) {
        let mut reqs: Vec<ReadRequest<'_>> = bufs
            .iter_mut()
            .map(|buf| {
                let offset = (next % blocks) * block;
                next += 1;
                ReadRequest { offset, buf }
            })
            .collect();
        dev.read_batch(&mut reqs)?;
        ops += batch as u64;
    }
    Ok(Measure {
        bytes: ops * block,
        ops,
        secs: start.elapsed().as_secs_f64(),
    })
}

fn fio_available() -> bool {
    Command::new("fio")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs fio with the same workload on the same file and reads its JSON report.
fn run_fio(path: &Path, test: Test, args: &Args, budget: Budget) -> Result<Measure, BoxErr> {
    let mut cmd = Command::new("fio");
    cmd.args([
        "--name=tuxfs",
        "--ioengine=io_uring",
        "--direct=1",
        "--output-format=json",
        "--norandommap",
        "--randrepeat=0",
    ])
    .arg(format!("--filename={}", path.display()))
    .arg(format!("--rw={}", test.fio_rw()))
    .arg(format!("--bs={}", test.block()))
    .arg(format!("--iodepth={}", args.qd))
    .arg(format!("--size={}", args.size));
    match budget.bytes {
        Some(bytes) => cmd.arg(format!("--io_size={bytes}")),
        None => cmd
            .arg("--time_based")
            .arg(format!("--runtime={}ms", budget.time.as_millis())),
    };
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!("fio failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    parse_fio(&String::from_utf8_lossy(&out.stdout), test)
}

fn parse_fio(text: &str, test: Test) -> Result<Measure, BoxErr> {
    let json = Json::parse(text)?;
    let side = if test == Test::SeqRead {
        "read"
    } else {
        "write"
    };
    let job = json
        .get("jobs")
        .and_then(|j| j.at(0))
        .and_then(|j| j.get(side))
        .ok_or("fio JSON: no jobs[0]")?;
    let num = |key: &str| {
        job.get(key)
            .and_then(Json::as_f64)
            .ok_or_else(|| format!("fio JSON: no {side}.{key}"))
    };
    let (bytes, ops, runtime_ms) = (num("io_bytes")?, num("total_ios")?, num("runtime")?);
    Ok(Measure {
        bytes: bytes as u64,
        ops: ops as u64,
        secs: (runtime_ms / 1000.0).max(1e-9),
    })
}

type Row = (Test, Measure, Measure, Option<Measure>);

fn print_table(rows: &[Row], args: &Args, fio: bool) {
    let limit = match args.bytes {
        Some(b) => format!("{b} bytes per test"),
        None => format!("{} s per test", args.seconds),
    };
    println!(
        "image {} MiB, O_DIRECT, QD {} (sync device: QD 1), {limit}",
        args.size >> 20,
        args.qd
    );
    println!(
        "{:<14} {:>5} {:>10} {:>10} {:>10} {:>10} {:>11}",
        "test", "unit", "uring", "sync", "fio", "uring/fio", "uring/sync"
    );
    for (test, u, s, f) in rows {
        let (uf, sf) = (test.figure(u), test.figure(s));
        let ff = f.map(|f| test.figure(&f));
        let fio_cell = ff.map_or("-".to_string(), |v| format!("{v:.0}"));
        let ratio_fio = ff.map_or("-".to_string(), |v| format!("{:.2}", uf / v));
        let name = test.name();
        println!(
            "{name:<14} {:>5} {uf:>10.0} {sf:>10.0} {fio_cell:>10} {ratio_fio:>10} {:>11.2}",
            test.unit(),
            uf / sf
        );
    }
    if !fio {
        println!("fio not found on PATH: no fio baseline (apt-get install fio)");
    }
}
