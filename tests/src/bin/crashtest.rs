//! `tuxfs-crashtest`: runs the crash-injection harness (`tuxfs_tests::crash`) and reports
//! states checked and states per second; exits 1 with the replay command on a failure.

use std::process::ExitCode;
use std::time::Duration;

use tuxfs_tests::crash::{self, RunOptions, Workload};
use tuxfs_tests::rng;

const USAGE: &str = "\
usage: tuxfs-crashtest [--seed S] [--states N] [--workload NAME|all] [--seconds T]
                       [--jobs J] [--extra K] [--state I [--shape X]]
                       [--debug-ack-before-data] [--verbose] [--progress P]
  --seed S        seed of the first round (decimal or 0x hex); default: $TUXFS_SEED, else
                  from the clock. Later rounds derive their seeds from it; a failure prints
                  the seed of its own case.
  --states N      stop after N crash states (default 10000)
  --workload W    mixed, append, dirs, bigfile, concurrent, or all (default all, one case
                  each per round); concurrent runs 2-4 threads that write and fsync at once
  --seconds T     stop after T seconds
  --jobs J        cases checked in parallel (default: the number of CPUs)
  --extra K       random crash states per flush interval besides flush points and
                  acknowledgement instants (default 2)
  --state I       replay: check only state I of the first case (with --seed and --workload
                  as printed by the failure); --shape X refuses a differently shaped log
  --debug-ack-before-data
                  record with the deliberately broken commit order (must fail)
  --verbose       one line per recorded case
  --progress P    print the running count every P seconds

Long mode (the promise, a million crash states, all workloads; 25 to 40 minutes with two
jobs on a 2-vCPU machine, 420 to 670 states/s in a release build):
  cargo run --release -p tuxfs-tests --bin tuxfs-crashtest -- --states 1000000 --workload all --jobs 2

The engine prints a line to stderr when recovery drops an unproven delta, which crash
states do all the time; add 2>/dev/null to keep the report readable.";

#[derive(Debug)]
struct Args {
    opts: RunOptions,
    seed: Option<u64>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut opts = RunOptions {
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        ..RunOptions::default()
    };
    let mut seed = None;
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |name: &str, v: String| {
            rng::parse_seed(&v).ok_or_else(|| format!("{name}: {v:?} is not a number"))
        };
        match flag.as_str() {
            "--seed" => seed = Some(number("--seed", value("--seed")?)?),
            "--states" => opts.states = number("--states", value("--states")?)?,
            "--workload" => {
                let v = value("--workload")?;
                opts.workloads = if v == "all" {
                    Workload::ALL.to_vec()
                } else {
                    vec![Workload::parse(&v).ok_or_else(|| format!("no workload {v:?}"))?]
                };
            }
            "--seconds" => {
                let v = value("--seconds")?;
                match v.parse::<f64>() {
                    Ok(s) if s.is_finite() && s >= 0.0 => {
                        opts.time_limit = Some(Duration::from_secs_f64(s))
                    }
                    _ => return Err(format!("--seconds: {v:?} is not a number of seconds")),
                }
            }
            "--jobs" => opts.jobs = number("--jobs", value("--jobs")?)?.max(1) as usize,
            "--extra" => opts.extra_per_interval = number("--extra", value("--extra")?)? as usize,
            "--state" => opts.only_state = Some(number("--state", value("--state")?)? as usize),
            "--shape" => opts.expect_shape = Some(number("--shape", value("--shape")?)?),
            "--debug-ack-before-data" => opts.debug_ack_before_data = true,
            "--verbose" => opts.verbose = true,
            "--progress" => {
                let v = value("--progress")?;
                match v.parse::<f64>() {
                    Ok(s) if s.is_finite() && s > 0.0 => {
                        opts.progress = Some(Duration::from_secs_f64(s))
                    }
                    _ => return Err(format!("--progress: {v:?} is not a number of seconds")),
                }
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if opts.only_state.is_some() && opts.workloads.len() != 1 {
        return Err("--state needs --workload with one workload name".into());
    }
    if opts.only_state.is_some() && !opts.workloads[0].deterministic() {
        return Err(
            "--state: the concurrent workload's interleaving is not replayable; \
                    replay its whole case with --seed and --workload"
                .into(),
        );
    }
    Ok(Args { opts, seed })
}

fn main() -> ExitCode {
    let mut args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("tuxfs-crashtest: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    args.opts.seed = args
        .seed
        .or_else(rng::seed_from_env)
        .unwrap_or_else(rng::clock_seed);
    let names: Vec<&str> = args.opts.workloads.iter().map(|w| w.name()).collect();
    println!(
        "tuxfs-crashtest: seed={} workloads={} states={} jobs={}{}",
        args.opts.seed,
        names.join(","),
        args.opts.states,
        args.opts.jobs,
        if args.opts.debug_ack_before_data {
            " (debug_ack_before_data: commits broken on purpose)"
        } else {
            ""
        }
    );
    let summary = crash::run(&args.opts);
    println!("{}", summary.stats);
    match summary.failure {
        None => {
            println!("ok: every crash state recovered an acknowledged state, fsck clean");
            ExitCode::SUCCESS
        }
        Some(f) => {
            println!("{f}");
            ExitCode::FAILURE
        }
    }
}
