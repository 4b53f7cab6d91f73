//! `mkfs.tuxfs [--size SIZE] [--block-size N] [--label L] [--uuid U] [--force] [--discard] PATH`

use std::process::ExitCode;

use clap::Parser;
use tuxfs_mkfs::{Request, format_uuid, parse_size, parse_uuid, run};

/// Create a tuxfs filesystem on an image file or a block device.
#[derive(Parser, Debug)]
#[command(name = "mkfs.tuxfs", version, about)]
struct Args {
    /// Size of the filesystem (4096, 512K, 64M, 2G, 1T). Required when PATH does not
    /// exist (it is then created as a sparse file); defaults to the size of PATH.
    #[arg(long, short = 's', value_parser = parse_size)]
    size: Option<u64>,
    /// Block size in bytes: a power of two from 512 to 65536.
    #[arg(long, short = 'b', default_value_t = 4096)]
    block_size: u32,
    /// Volume label, at most 64 bytes.
    #[arg(long, short = 'L', default_value = "")]
    label: String,
    /// Filesystem UUID (default: random).
    #[arg(long, short = 'U', value_parser = parse_uuid)]
    uuid: Option<[u8; 16]>,
    /// Overwrite an existing tuxfs or other recognisable filesystem.
    #[arg(long, short = 'f')]
    force: bool,
    /// Discard (TRIM / punch) the whole device first.
    #[arg(long)]
    discard: bool,
    /// Image file or block device.
    path: std::path::PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let req = Request {
        path: args.path.clone(),
        size: args.size,
        block_size: args.block_size,
        label: args.label,
        uuid: args.uuid,
        force: args.force,
        discard: args.discard,
    };
    match run(&req) {
        Ok(sb) => {
            println!(
                "{}: tuxfs created: {} blocks of {} bytes ({} bytes), {} free, label '{}', UUID {}",
                args.path.display(),
                sb.block_count,
                sb.block_size,
                sb.block_count * u64::from(sb.block_size),
                sb.free_blocks,
                sb.label,
                format_uuid(&sb.uuid)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mkfs.tuxfs: {}: {e}", args.path.display());
            ExitCode::FAILURE
        }
    }
}
