//! `fuzz-decoders`: runs the seeded decoder fuzzer (`tuxfs_tests::decoder_fuzz`) on stable
//! Rust and reports per-decoder counts; exits 1 with the replay command on a broken promise.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use tuxfs_tests::decoder_fuzz::{self, Config, CountingAlloc};
use tuxfs_tests::rng;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const USAGE: &str = "\
usage: fuzz-decoders [--seed S] [--iterations N] [--seconds T] [--start I] [--skip NAME]...
                     [--hang-secs H] [--list]
  --seed S        seed (decimal or 0x hex); default: $TUXFS_SEED, else from the clock
  --iterations N  stop after N iterations (default: unlimited with --seconds, else 10000)
  --seconds T     stop after T seconds
  --start I       first iteration (iterations are independent: --start I --iterations 1
                  replays iteration I)
  --skip NAME     do not run decoders whose name contains NAME on mutants (repeatable)
  --hang-secs H   report a decode that has not returned after H seconds (default 30)
  --list          print the decoder names and exit";

#[derive(Debug, Default)]
struct Args {
    seed: Option<u64>,
    iterations: Option<u64>,
    seconds: Option<f64>,
    start: u64,
    skip: Vec<String>,
    hang_secs: Option<f64>,
    list: bool,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args::default();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |name: &str, v: String| {
            rng::parse_seed(&v).ok_or_else(|| format!("{name}: {v:?} is not a number"))
        };
        let seconds = |name: &str, v: String| match v.parse::<f64>() {
            Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
            _ => Err(format!("{name}: {v:?} is not a number of seconds")),
        };
        match flag.as_str() {
            "--seed" => args.seed = Some(number("--seed", value("--seed")?)?),
            "--iterations" => {
                args.iterations = Some(number("--iterations", value("--iterations")?)?)
            }
            "--seconds" => args.seconds = Some(seconds("--seconds", value("--seconds")?)?),
            "--start" => args.start = number("--start", value("--start")?)?,
            "--skip" => args.skip.push(value("--skip")?),
            "--hang-secs" => args.hang_secs = Some(seconds("--hang-secs", value("--hang-secs")?)?),
            "--list" => args.list = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("fuzz-decoders: {msg}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.list {
        decoder_fuzz::decoder_names()
            .iter()
            .for_each(|n| println!("{n}"));
        return ExitCode::SUCCESS;
    }
    let seed = args
        .seed
        .or_else(rng::seed_from_env)
        .unwrap_or_else(rng::clock_seed);
    println!("seed={seed}");
    if !decoder_fuzz::overflow_checks() {
        println!(
            "note: overflow checks are off in this build: a decoder's arithmetic overflow wraps \
             instead of panicking (CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true catches it)"
        );
    }
    let _ = std::io::stdout().flush();
    let mut cfg = Config::new(
        seed,
        args.iterations.unwrap_or(if args.seconds.is_some() {
            u64::MAX
        } else {
            10_000
        }),
    );
    cfg.start = args.start;
    cfg.time_limit = args.seconds.map(Duration::from_secs_f64);
    if let Some(h) = args.hang_secs {
        cfg.hang_limit = Duration::from_secs_f64(h);
    }
    cfg.skip = args.skip;
    match decoder_fuzz::run_with(&decoder_fuzz::default_targets(), &cfg) {
        Ok(stats) => {
            print!("{stats}");
            println!("no broken promise");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("{failure}");
            ExitCode::FAILURE
        }
    }
}
