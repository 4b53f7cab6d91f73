//! `tuxfs-bench`: named workloads against tuxfs (raw device, engine, FUSE mount) and the
//! filesystems users would pick instead, interleaved round by round, each target made fresh
//! for each round on an image of the same size on the same disk (or on one partition).
//!
//! Module map: `targets` makes, mounts, crashes and removes targets; `workloads` names the
//! workloads and sizes; `io`, `tree` and `engine` measure them (through a block device or a
//! directory, or through the engine's API); `report` turns samples into the table and the
//! JSON file; `chart` draws the SVG; `device` guards --device; `cleanup` undoes everything
//! on every exit path.

pub mod chart;
pub mod cleanup;
pub mod device;
pub mod engine;
pub mod figure;
pub mod io;
pub mod report;
pub mod targets;
pub mod tree;
pub mod workloads;

use std::path::Path;

use indicatif::ProgressBar;

use crate::daemon::{self, BoxErr};
use figure::{Figure, Sample};
use targets::{Access, Kind, Place, Session};
use tree::Tree;
use workloads::{Sizes, Workload};

/// What one run does.
#[derive(Debug, Clone)]
pub struct Config {
    pub targets: Vec<Kind>,
    pub workloads: Vec<Workload>,
    pub rounds: usize,
    pub sizes: Sizes,
    pub place: Place,
}

/// A workload that failed on a target in a round: reported, not fatal.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub round: usize,
    pub target: String,
    pub workload: String,
    pub error: String,
}

/// Every sample and failure of a run, and the mount options each target had.
#[derive(Debug, Default)]
pub struct Outcome {
    pub samples: Vec<Sample>,
    pub failures: Vec<Failure>,
    pub mount_options: Vec<(String, String)>,
}

/// Runs every round; target order rotates each round so no target always goes first.
pub fn run(cfg: &Config, tree: &Tree, bar: &ProgressBar) -> Outcome {
    let mut out = Outcome::default();
    for round in 0..cfg.rounds {
        let n = cfg.targets.len();
        for k in 0..n {
            if cleanup::interrupted() {
                return out;
            }
            let kind = cfg.targets[(k + round) % n];
            run_target(cfg, tree, bar, round, kind, &mut out);
        }
    }
    out
}

fn run_target(
    cfg: &Config,
    tree: &Tree,
    bar: &ProgressBar,
    round: usize,
    kind: Kind,
    out: &mut Outcome,
) {
    let fail = |out: &mut Outcome, w: &str, e: &BoxErr| {
        let line = format!("round {round}: {} {w}: {e}", kind.name());
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
        out.failures.push(Failure {
            round,
            target: kind.name().into(),
            workload: w.into(),
            error: e.to_string(),
        });
    };
    bar.set_message(format!(
        "round {}/{} {}: making the target",
        round + 1,
        cfg.rounds,
        kind.name()
    ));
    let mut session = match Session::open(kind, &cfg.place) {
        Ok(s) => s,
        Err(e) => {
            fail(out, "setup", &e);
            bar.inc(cfg.workloads.len() as u64);
            return;
        }
    };
    if !out.mount_options.iter().any(|(t, _)| t == kind.name()) {
        out.mount_options
            .push((kind.name().into(), session.mount_options.clone()));
    }
    for &w in &cfg.workloads {
        if cleanup::interrupted() {
            break;
        }
        let msg = format!(
            "round {}/{} {}: {}",
            round + 1,
            cfg.rounds,
            kind.name(),
            w.name()
        );
        if bar.is_hidden() && applies(w, kind) {
            // Not a terminal (a log file): one line per step instead of the bar.
            eprintln!(
                "[{:>5.0} s] step {}/{} {msg}",
                bar.elapsed().as_secs_f64(),
                bar.position() + 1,
                bar.length().unwrap_or(0)
            );
        }
        bar.set_message(msg);
        match measure(w, &mut session, &cfg.sizes, tree) {
            Ok(Some(m)) => out.samples.push(Sample {
                round,
                target: kind.name().into(),
                workload: w.name().into(),
                unit: w.unit().into(),
                figure: m.figure,
                cpu_client_s: m.cpu_client_s,
                cpu_daemon_s: m.cpu_daemon_s,
            }),
            Ok(None) => {}
            Err(e) => fail(out, w.name(), &e),
        }
        bar.inc(1);
    }
    if let Err(e) = session.close() {
        fail(out, "teardown", &e);
    }
}

/// A figure with the CPU it cost.
#[derive(Debug)]
struct Measured {
    figure: Figure,
    cpu_client_s: f64,
    cpu_daemon_s: Option<f64>,
}

/// Runs one workload on the session, with CPU accounting. None when the workload does not
/// apply to the target (raw has no files, kernel filesystems no daemon...).
fn measure(
    w: Workload,
    s: &mut Session,
    sizes: &Sizes,
    tree: &Tree,
) -> Result<Option<Measured>, BoxErr> {
    if !applies(w, s.kind) {
        return Ok(None);
    }
    if w.starts_cold() {
        s.remount_cold()?;
    }
    if let Access::Dir(dir) = s.access() {
        prepare_dir(w, dir)?;
    }
    if w == Workload::CrashMount {
        // Untimed: only the mount after the crash is measured.
        crash_fill(s.access(), sizes.crash_fill_bytes)?;
    }
    let pid = s.daemon_pid();
    let daemon_before = pid.map(daemon::proc_cpu_secs).transpose()?;
    let client_before = daemon::self_cpu_secs();
    let figure = dispatch(w, s, sizes, tree)?;
    let cpu_client_s = daemon::self_cpu_secs() - client_before;
    let cpu_daemon_s = match (pid, s.daemon_pid(), daemon_before) {
        (Some(a), Some(b), Some(before)) if a == b => Some(daemon::proc_cpu_secs(b)? - before),
        // The daemon was replaced (a crash and a new mount): the new one's whole CPU.
        (_, Some(b), _) => Some(daemon::proc_cpu_secs(b)?),
        _ => None,
    };
    Ok(figure.map(|figure| Measured {
        figure,
        cpu_client_s,
        cpu_daemon_s,
    }))
}

/// Which workloads each target can run.
pub fn applies(w: Workload, kind: Kind) -> bool {
    use Workload::*;
    match kind {
        Kind::Raw => matches!(
            w,
            SeqWriteDirect
                | SeqReadDirect
                | RandWriteQd1
                | RandWriteQd32
                | RandReadQd1
                | RandReadQd32
                | Fsync1
        ),
        Kind::Engine => matches!(
            w,
            SeqWriteBuf
                | SeqReadBuf
                | Read2
                | StatWarm
                | FsyncScale
                | RandWriteQd1
                | RandReadQd1
                | Fsync1
                | Fsync16
                | Fsync256
                | Create
                | Stat
                | Readdir
                | Unlink
                | CrashMount
        ),
        Kind::Tuxfs | Kind::TuxfsUring | Kind::Fuse2fs => true,
        Kind::Ext4 | Kind::Btrfs | Kind::Xfs => !matches!(w, DaemonMemory | CrashMount),
    }
}

/// Frees the space the streaming workloads used once the workloads that read it are done.
fn prepare_dir(w: Workload, dir: &Path) -> std::io::Result<()> {
    let streaming = Workload::ALL
        .iter()
        .position(|&x| x == Workload::Fsync1)
        .unwrap_or(0);
    let pos = Workload::ALL.iter().position(|&x| x == w).unwrap_or(0);
    if pos >= streaming {
        for name in ["seq-buffered", "seq-direct"] {
            match std::fs::remove_file(dir.join(name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

fn dispatch(
    w: Workload,
    s: &mut Session,
    sizes: &Sizes,
    tree: &Tree,
) -> Result<Option<Figure>, BoxErr> {
    use Workload::*;
    let fsync_ops = |w: Workload| {
        let writers = w.writers().unwrap_or(1);
        (writers, sizes.fsync_ops_per_writer(writers))
    };
    let f = match (w, s.access().clone()) {
        (DaemonMemory, _) => {
            let pid = s.daemon_pid().ok_or("no daemon")?;
            let kib = daemon::proc_kib(pid, "VmHWM:")?;
            Figure::rate(kib as f64 / 1024.0, 1.0)
        }
        (CrashMount, _) => {
            let took = s
                .crash_and_remount()?
                .ok_or("this target cannot be crashed")?;
            let ms = took.as_secs_f64() * 1e3;
            Figure {
                value: ms,
                secs: took.as_secs_f64(),
                p50_us: None,
                p99_us: None,
            }
        }
        (SeqWriteDirect, Access::Raw(dev)) => io::dev_seq_write(&*dev, sizes.file_bytes)?,
        (SeqReadDirect, Access::Raw(dev)) => io::dev_seq_read(&*dev, sizes.file_bytes)?,
        (Fsync1, Access::Raw(dev)) => io::dev_write_flush(&*dev, sizes.fsync_ops)?,
        (_, Access::Raw(dev)) => {
            let qd = w.queue_depth().ok_or("not a raw workload")?;
            let write = matches!(w, RandWriteQd1 | RandWriteQd32);
            io::dev_random(&*dev, sizes.file_bytes, qd, sizes.rand_secs, write)?
        }
        (SeqWriteBuf, Access::Engine(fs)) => engine::seq_write(&fs, "seq", sizes.file_bytes)?,
        (SeqReadBuf, Access::Engine(fs)) => engine::seq_read(&fs, "seq")?,
        (RandWriteQd1, Access::Engine(fs)) => engine::random(&fs, "seq", sizes.rand_secs, true)?,
        (RandReadQd1, Access::Engine(fs)) => engine::random(&fs, "seq", sizes.rand_secs, false)?,
        (Read2, Access::Engine(_)) => {
            // A second file like "seq", written untimed, then a cold mount as for "seq".
            if let Access::Engine(fs) = s.access().clone() {
                engine::seq_write(&fs, "seq2", sizes.file_bytes)?;
            }
            s.remount_cold()?;
            let Access::Engine(fs) = s.access().clone() else {
                return Err("the engine target lost its filesystem".into());
            };
            engine::parallel_read(&fs, &["seq", "seq2"])?
        }
        (StatWarm, Access::Engine(fs)) => engine::stat(&fs, sizes.files)?,
        (FsyncScale, Access::Engine(fs)) => {
            io::fsync_scaling(|writers, ops| engine::append_fsync(&fs, writers, ops))?
        }
        (Create, Access::Engine(fs)) => engine::create(&fs, sizes.files)?,
        (Stat, Access::Engine(fs)) => engine::stat(&fs, sizes.files)?,
        (Readdir, Access::Engine(fs)) => engine::readdir(&fs)?,
        (Unlink, Access::Engine(fs)) => engine::unlink(&fs, sizes.files)?,
        (_, Access::Engine(fs)) => {
            let (writers, ops) = fsync_ops(w);
            engine::append_fsync(&fs, writers, ops)?
        }
        (_, Access::Dir(dir)) => return dir_workload(w, &dir, sizes, tree).map(Some),
    };
    Ok(Some(f))
}

fn dir_workload(w: Workload, dir: &Path, sizes: &Sizes, tree: &Tree) -> Result<Figure, BoxErr> {
    use Workload::*;
    let (buffered, direct) = (dir.join("seq-buffered"), dir.join("seq-direct"));
    let meta = dir.join("meta");
    let copy = dir.join("tree");
    Ok(match w {
        SeqWriteBuf => io::file_seq_write(&buffered, sizes.file_bytes, false)?,
        SeqWriteDirect => io::file_seq_write(&direct, sizes.file_bytes, true)?,
        SeqReadBuf => io::file_seq_read(&buffered, false)?,
        SeqReadDirect => io::file_seq_read(&direct, true)?,
        RandWriteQd1 | RandWriteQd32 | RandReadQd1 | RandReadQd32 => {
            let qd = w.queue_depth().unwrap_or(1);
            let dev = io::file_device(&direct, qd)?;
            let write = matches!(w, RandWriteQd1 | RandWriteQd32);
            io::dev_random(&*dev, sizes.file_bytes, qd, sizes.rand_secs, write)?
        }
        Fsync1 | Fsync16 | Fsync256 => {
            let writers = w.writers().unwrap_or(1);
            let d = dir.join(format!("fsync-{writers}"));
            std::fs::create_dir_all(&d)?;
            io::append_fsync(&d, writers, sizes.fsync_ops_per_writer(writers))?
        }
        Create => io::create_files(&meta, sizes.files)?,
        Stat | StatWarm => io::stat_files(&meta, sizes.files)?,
        RandWriteBuf => io::file_random_write(&buffered, sizes.rand_secs)?,
        Read2 => io::files_parallel_read(&[buffered, direct])?,
        FsyncScale => {
            let mut batch = 0;
            io::fsync_scaling(|writers, ops| {
                batch += 1;
                let d = dir.join(format!("fsync-scale-{batch}"));
                std::fs::create_dir_all(&d)?;
                io::append_fsync(&d, writers, ops)
            })?
        }
        Dbench => io::dbench(&dir.join("dbench"), sizes.mixed_clients, sizes.mixed_secs)?,
        Readdir => io::list_dir(&meta)?,
        Unlink => io::unlink_files(&meta, sizes.files)?,
        TreeCopy => tree.copy_in(&copy)?,
        TreeDu => tree::du(&copy)?,
        TreeRm => tree::rm_rf(&copy, tree.entries())?,
        Mixed => tree::mixed(
            &dir.join("mixed"),
            sizes.mixed_clients,
            sizes.mixed_secs,
            0x6462_656e,
        )?,
        DaemonMemory | CrashMount => return Err("handled by the caller".into()),
    })
}

/// What is on the target when it crashes: `bytes` in 4 MiB files, each fsynced, then
/// 2,000 small files never fsynced.
fn crash_fill(access: &Access, bytes: u64) -> Result<(), BoxErr> {
    let files = bytes.div_ceil(4 << 20);
    match access {
        Access::Dir(dir) => {
            let d = dir.join("crash");
            std::fs::create_dir_all(&d)?;
            for i in 0..files {
                io::file_seq_write(&d.join(format!("big-{i}")), 4 << 20, false)?;
            }
            for i in 0..2000 {
                std::fs::write(d.join(format!("small-{i}")), format!("{i}"))?;
            }
        }
        Access::Engine(fs) => {
            for i in 0..files {
                engine::seq_write(fs, &format!("crash-{i}"), 4 << 20)?;
            }
        }
        Access::Raw(_) => return Err("raw cannot crash".into()),
    }
    Ok(())
}
