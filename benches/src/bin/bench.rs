//! `tuxfs-bench`: one command that benchmarks tuxfs (raw device, engine, FUSE mount) side
//! by side with kernel ext4, fuse2fs, btrfs and XFS, round by round on the same disk, and
//! writes a table, a JSON file of every sample and an SVG chart. See docs/BENCHMARKS.md.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tuxfs_bench::daemon::BoxErr;
use tuxfs_bench::suite::targets::{Kind, Place};
use tuxfs_bench::suite::tree::Tree;
use tuxfs_bench::suite::workloads::{Sizes, Workload};
use tuxfs_bench::suite::{self, Config, chart, cleanup, device, report};
use tuxfs_bench::{machine, parse_size};

#[derive(Parser, Debug)]
#[command(
    name = "tuxfs-bench",
    about = "Benchmarks tuxfs next to ext4, fuse2fs, btrfs and XFS on the same disk"
)]
struct Args {
    /// Small sizes, 2 rounds: a few minutes.
    #[arg(long)]
    quick: bool,
    /// Rounds (default 2 with --quick, 3 otherwise).
    #[arg(long)]
    rounds: Option<usize>,
    /// Directory for the JSON file and the chart.
    #[arg(long, default_value = "tuxfs-bench-out")]
    out: PathBuf,
    /// Directory for the images (each target's image is made here, on the same disk).
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
    /// Benchmark this partition instead of image files (destroys it).
    #[arg(long)]
    device: Option<PathBuf>,
    /// With --device: go on even when it holds a filesystem or a partition table.
    #[arg(long)]
    force: bool,
    /// Image size (default 2G with --quick, 8G otherwise).
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Targets, comma-separated (default: every one whose tools are installed):
    /// raw,engine,tuxfs,tuxfs-uring,ext4,fuse2fs,btrfs,xfs
    /// (tuxfs-uring: `tuxfs-mount -o uring`, only when fuse.enable_uring is on).
    #[arg(long)]
    targets: Option<String>,
    /// Workloads, comma-separated (default all; see docs/BENCHMARKS.md for the names).
    #[arg(long)]
    workloads: Option<String>,
    /// Empty files for create, stat, readdir and unlink (default 10,000 with --quick,
    /// 100,000 otherwise).
    #[arg(long)]
    files: Option<usize>,
    /// Source tree copied in by tree-copy (default /usr/include).
    #[arg(long, default_value = "/usr/include")]
    tree: PathBuf,
}

fn main() {
    let result = run(Args::parse());
    cleanup::run_all();
    if let Err(e) = result {
        eprintln!("tuxfs-bench: {e}");
        std::process::exit(1);
    }
    if cleanup::interrupted() {
        eprintln!("tuxfs-bench: interrupted; the table and files above hold what was measured");
        std::process::exit(130);
    }
}

fn pick_targets(args: &Args) -> Result<(Vec<Kind>, Vec<String>), BoxErr> {
    let mut skipped = Vec::new();
    let targets = match &args.targets {
        Some(list) => {
            let mut v = Vec::new();
            for name in list.split(',').map(str::trim) {
                let k = Kind::from_name(name).ok_or_else(|| format!("unknown target {name:?}"))?;
                if let Some(why) = k.missing() {
                    return Err(format!("target {name}: {why}").into());
                }
                v.push(k);
            }
            v
        }
        None => Kind::ALL
            .into_iter()
            .filter(|k| match k.missing() {
                Some(why) => {
                    skipped.push(format!("{}: {why}", k.name()));
                    false
                }
                None => true,
            })
            .collect(),
    };
    if targets.is_empty() {
        return Err("no targets".into());
    }
    Ok((targets, skipped))
}

fn pick_workloads(args: &Args) -> Result<Vec<Workload>, BoxErr> {
    match &args.workloads {
        None => Ok(Workload::ALL.to_vec()),
        Some(list) => list
            .split(',')
            .map(|n| {
                Workload::from_name(n.trim())
                    .ok_or_else(|| format!("unknown workload {n:?}").into())
            })
            .collect(),
    }
}

fn run(args: Args) -> Result<(), BoxErr> {
    let (targets, skipped) = pick_targets(&args)?;
    let workloads = pick_workloads(&args)?;
    if args.force && args.device.is_none() {
        return Err("--force only goes with --device".into());
    }
    if let Some(dev) = &args.device {
        eprintln!("tuxfs-bench: {}", device::check(dev, args.force)?);
    }
    // SAFETY: geteuid takes no arguments.
    if unsafe { libc::geteuid() } != 0 {
        return Err("run as root: the targets are mounted (FUSE, loop devices)".into());
    }
    cleanup::install_handler()?;
    std::fs::create_dir_all(&args.out)?;
    let work = tempfile::Builder::new()
        .prefix("tuxfs-bench-")
        .tempdir_in(&args.dir)?
        .keep();
    let _work_guard = cleanup::register(cleanup::Undo::RemoveDir(work.clone()));
    let mut sizes = if args.quick {
        Sizes::quick(args.tree.clone())
    } else {
        Sizes::full(args.tree.clone())
    };
    if let Some(s) = args.size {
        sizes.image_bytes = s;
    }
    if let Some(n) = args.files {
        sizes.files = n.max(1);
    }
    if let Some(dev) = &args.device {
        sizes.image_bytes = device::size(dev)?;
    }
    if sizes.file_bytes * 2 + sizes.crash_fill_bytes > sizes.image_bytes && args.device.is_none() {
        return Err(format!(
            "--size {} is too small for {} MiB files",
            sizes.image_bytes,
            sizes.file_bytes >> 20
        )
        .into());
    }
    let rounds = args.rounds.unwrap_or(if args.quick { 2 } else { 3 }).max(1);
    let details = machine::details(&args.dir, args.device.as_deref());
    for (k, v) in &details {
        println!("{k:>8}: {v}");
    }
    for s in &skipped {
        println!("skipped {s}");
    }
    let tree = Tree::load(&sizes.tree, sizes.tree_bytes_max)
        .map_err(|e| format!("--tree {}: {e}", sizes.tree.display()))?;
    let cfg = Config {
        targets,
        workloads,
        rounds,
        sizes,
        place: Place {
            work: work.clone(),
            size: 0,
            device: args.device.clone(),
        },
    };
    let cfg = Config {
        place: Place {
            size: cfg.sizes.image_bytes,
            ..cfg.place.clone()
        },
        ..cfg
    };
    let steps = (cfg.rounds * cfg.targets.len() * cfg.workloads.len()) as u64;
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template(
            "[{elapsed_precise}] {bar:30} {pos}/{len} steps, ~{eta} left  {msg}",
        )?
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let outcome = suite::run(&cfg, &tree, &bar);
    bar.finish_and_clear();
    let mut outcome = outcome;
    // Table order: workloads as a round runs them, targets as `Kind::ALL` lists them.
    let rank_w = |n: &str| Workload::ALL.iter().position(|w| w.name() == n);
    let rank_t = |n: &str| Kind::ALL.iter().position(|k| k.name() == n);
    outcome
        .samples
        .sort_by_key(|s| (rank_w(&s.workload), rank_t(&s.target), s.round));
    let rows = report::summarize(&outcome.samples);
    let command: Vec<String> = std::env::args().collect();
    println!();
    print!("{}", report::table(&rows));
    println!(
        "\n{} rounds, targets interleaved; median [min–max over rounds]; ×tuxfs = target median / tuxfs median \
         (for ms and MiB, above 1 means more time or memory than tuxfs); cpu = share of one core over the workload's wall time",
        cfg.rounds
    );
    for (t, o) in &outcome.mount_options {
        println!("mount {t}: {o}");
    }
    for f in &outcome.failures {
        println!(
            "FAILED round {} {} {}: {}",
            f.round, f.target, f.workload, f.error
        );
    }
    let config = json!({
        "command": command.join(" "),
        "quick": args.quick,
        "rounds": cfg.rounds,
        "targets": cfg.targets.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "workloads": cfg.workloads.iter().map(|w| w.name()).collect::<Vec<_>>(),
        "image_bytes": cfg.sizes.image_bytes,
        "file_bytes": cfg.sizes.file_bytes,
        "files": cfg.sizes.files,
        "tree": cfg.sizes.tree.display().to_string(),
        "tree_files": tree.files.len(),
        "tree_bytes": tree.bytes,
        "seconds": started.elapsed().as_secs_f64(),
    });
    let doc = report::to_json(&details, config, &outcome);
    let json_path = args.out.join("tuxfs-bench.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&doc)?)?;
    let svg_path = args.out.join("tuxfs-bench.svg");
    let title = format!(
        "tuxfs-bench, {} rounds, {}",
        cfg.rounds,
        details
            .iter()
            .map(|(_, v)| v.as_str())
            .take(3)
            .collect::<Vec<_>>()
            .join("; ")
    );
    chart::draw(&rows, &title, &svg_path)?;
    println!(
        "wrote {} and {} ({:.0} s)",
        json_path.display(),
        svg_path.display(),
        started.elapsed().as_secs_f64()
    );
    if outcome.samples.is_empty() {
        return Err("no workload produced a figure".into());
    }
    Ok(())
}
