//! Makes an image with many files through the engine API, for measuring fsck speed:
//! `cargo run --release -p tuxfs-fsck --example make_files -- IMAGE FILES DIRS [BLOCKS]`
//! creates a filesystem of 4 KiB blocks on IMAGE, `DIRS` directories under the root and
//! `FILES` empty files spread over them, syncs and unmounts. Then run
//! `fsck-tuxfs -n -v IMAGE` for inodes/s and blocks/s.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tuxfs_engine::dev::{BlockDevice, OpenOptions, open_file};
use tuxfs_engine::format::inode::Timestamp;
use tuxfs_engine::fs::{Caller, Filesystem, MountOptions};
use tuxfs_engine::mkfs::{MkfsParams, format_device};

fn arg(args: &[String], i: usize, default: u64) -> u64 {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        return Err("usage: make_files IMAGE FILES DIRS [BLOCKS]".into());
    };
    let files = arg(&args, 2, 1_000_000);
    let dirs = arg(&args, 3, 1000).max(1);
    let blocks = arg(&args, 4, 1 << 20);
    let bs = 4096u32;
    let open = OpenOptions {
        create_size: Some(blocks * u64::from(bs)),
        ..OpenOptions::default()
    };
    let dev: Arc<dyn BlockDevice> = Arc::from(open_file(Path::new(path), &open)?);
    let p = MkfsParams {
        block_size: bs,
        block_count: blocks,
        label: "million".into(),
        uuid: *b"tuxfs-million-01",
        hash_seed: [0x42; 16],
        now: Timestamp {
            sec: 1_763_000_000,
            nsec: 0,
        },
        uid: 0,
        gid: 0,
    };
    format_device(dev.as_ref(), &p, false)?;
    let fs = Filesystem::mount(dev, MountOptions::default())?;
    let me = Caller::default();
    let started = Instant::now();
    let mut dir_inos = Vec::new();
    for d in 0..dirs {
        dir_inos.push(fs.mkdir(1, format!("d{d:04}").as_bytes(), 0o755, me)?.ino);
    }
    for f in 0..files {
        let dir = dir_inos[(f % dirs) as usize];
        let a = fs.create(dir, format!("f{f:07}").as_bytes(), 0o644, me)?;
        fs.release(a.ino)?;
        if f % 100_000 == 99_999 {
            fs.sync()?;
            eprintln!("{} files, {:.1} s", f + 1, started.elapsed().as_secs_f64());
        }
    }
    fs.unmount()?;
    eprintln!(
        "created {files} files in {dirs} directories in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
