//! `tuxfs-replay`: rebuilds crash images from a write log recorded with
//! `tuxfs-mount -o log_writes=FILE` (or saved by the engine's recording device).
//!
//! ```text
//! tuxfs-replay FILE --list                                   # events and flush points
//! tuxfs-replay FILE --at N --out IMAGE [--crash-subset SEED] [--base BASE]
//! ```
//!
//! Events are numbered from 0 (writes and flushes, in the order they were submitted). The
//! image at N is the base (`FILE.base` unless `--base` says otherwise) with the first N
//! events applied; a flush point is an N just after a flush, an image a power cut could
//! have left. `--crash-subset SEED` keeps everything up to the last flush point before N
//! and only a seeded random subset of the writes after it (what a volatile disk cache may
//! have kept). A log that ends in a torn record (the writer crashed mid-append) is read up
//! to it, with a warning. Errors are one line on stderr and exit status 1; bad arguments
//! exit 2.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tuxfs_engine::dev::logwrites::base_path;
use tuxfs_engine::dev::replay::{EventSummary, LogScan, ReplayRequest, replay, scan_log};

/// The applied writes of a crash subset are named one by one up to this many.
const LANDED_SHOWN_MAX: usize = 32;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "tuxfs-replay",
    version,
    about = "Rebuild crash images from a tuxfs write log (tuxfs-mount -o log_writes=FILE)"
)]
struct Cli {
    /// The write log.
    log: PathBuf,
    /// Print every event and the flush points.
    #[arg(long, conflicts_with_all = ["at", "out", "crash_subset"])]
    list: bool,
    /// Build the image as of event N (the base plus the first N events).
    #[arg(long, value_name = "N", requires = "out")]
    at: Option<usize>,
    /// Where to write the image (created or overwritten).
    #[arg(long, value_name = "IMAGE", requires = "at")]
    out: Option<PathBuf>,
    /// Keep only a random subset, chosen by SEED, of the writes after the last flush
    /// before N.
    #[arg(long, value_name = "SEED", requires = "at")]
    crash_subset: Option<u64>,
    /// The base image (default: FILE.base).
    #[arg(long, value_name = "BASE")]
    base: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("tuxfs-replay: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    if cli.list {
        let scan = scan_log(&cli.log).map_err(|e| e.to_string())?;
        list(&scan);
        return Ok(());
    }
    let (Some(at), Some(out)) = (cli.at, &cli.out) else {
        return Err("give --list, or --at N --out IMAGE (see --help)".to_string());
    };
    let base = cli.base.clone().unwrap_or_else(|| base_path(&cli.log));
    let done = replay(&ReplayRequest {
        log: &cli.log,
        base: &base,
        at,
        crash_subset: cli.crash_subset,
        out,
    })
    .map_err(|e| e.to_string())?;
    println!(
        "wrote {}: event {at}, last flush point {}, {} of {} unflushed writes applied{}",
        out.display(),
        done.flush_point,
        done.landed.len(),
        done.unflushed.len(),
        if cli.crash_subset.is_some() && done.landed.len() <= LANDED_SHOWN_MAX {
            format!(" ({})", join(&done.landed))
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Prints one line per event, then the flush points and how the log ends.
fn list(scan: &LogScan) {
    match scan.base_crc {
        Some(crc) => println!("device {} bytes, base crc32 {crc:#010x}", scan.size_bytes),
        None => println!("device {} bytes, base not named", scan.size_bytes),
    }
    for (i, event) in scan.events.iter().enumerate() {
        match event {
            EventSummary::Write { offset, len } => {
                println!("{i} write offset {offset} length {len}");
            }
            EventSummary::Flush => println!("{i} flush (flush point {})", i + 1),
        }
    }
    let points = scan.flush_points();
    println!("events {}", scan.events.len());
    println!("flush points {}", join(&points));
    if let Some(tail) = &scan.tail {
        println!(
            "torn tail: {} bytes at offset {} ignored ({})",
            tail.bytes, tail.offset, tail.reason
        );
    }
}

fn join(v: &[usize]) -> String {
    v.iter().map(usize::to_string).collect::<Vec<_>>().join(" ")
}
