//! `fsck.tuxfs [-n] [-y] [-p] [-v] [--data] [--json] PATH`: exit codes as fsck(8).

use std::process::ExitCode;

use clap::Parser;
use tuxfs_fsck::{
    EXIT_OPERATIONAL, Mode, Options, check_path, render_human, render_json, render_json_error,
};

/// Check (and repair) a tuxfs filesystem image or block device.
#[derive(Parser, Debug)]
#[command(name = "fsck.tuxfs", version, about)]
struct Args {
    /// Check only: open read-only and change nothing.
    #[arg(short = 'n', conflicts_with_all = ["yes", "preen"])]
    no: bool,
    /// Repair everything fsck knows how to repair, without asking.
    #[arg(short = 'y', conflicts_with = "preen")]
    yes: bool,
    /// Preen: repair only what is safe without asking.
    #[arg(short = 'p', short_alias = 'a')]
    preen: bool,
    /// Verbose: print what was checked and how fast.
    #[arg(short = 'v')]
    verbose: bool,
    /// Also verify the checksum of every data block.
    #[arg(long)]
    data: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// The image file or block device.
    path: String,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            // fsck(8): 16 is a usage or syntax error; --help and --version exit 0.
            return ExitCode::from(if e.use_stderr() { 16 } else { 0 });
        }
    };
    let mode = if args.yes {
        Mode::Yes
    } else if args.preen {
        Mode::Preen
    } else {
        Mode::Check
    };
    let code = run(&args, mode);
    ExitCode::from(code as u8)
}

fn run(args: &Args, mode: Mode) -> i32 {
    let fail = |what: String| {
        if args.json {
            println!("{}", render_json_error(&args.path, &what));
        } else {
            eprintln!("fsck.tuxfs: {}: {what}", args.path);
        }
        EXIT_OPERATIONAL
    };
    let opts = Options {
        mode,
        check_data: args.data,
    };
    match check_path(std::path::Path::new(&args.path), &opts) {
        Ok(report) => {
            if let Some(why) = &report.stale {
                eprintln!("fsck.tuxfs: WARNING: {why}");
            }
            if args.json {
                println!("{}", render_json(&args.path, &report));
            } else {
                print!("{}", render_human(&args.path, &report, args.verbose));
            }
            report.exit_code()
        }
        Err(e) => fail(e.to_string()),
    }
}
