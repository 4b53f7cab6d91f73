//! `tune-tuxfs`: shows or changes the label of an unmounted tuxfs filesystem, as `tune2fs
//! -L` / `e2label` do for ext4.
//!
//! ```text
//! tune-tuxfs IMAGE                 # print label and UUID
//! tune-tuxfs -L LABEL IMAGE        # set the label (at most 64 bytes of UTF-8; "" clears it)
//! ```
//!
//! The change goes through the engine: the image is mounted (recovery runs as for any
//! mount), the label set, and the unmount commits and marks the image clean, so a crash in
//! the middle leaves the old label or the new one, never a damaged superblock. An image in
//! use by `tuxfs-mount` (its lock is held) is refused: on a mounted filesystem use the
//! FS_IOC_SETFSLABEL ioctl on the mount instead.
//!
//! Changing the UUID is refused: every metadata block carries an `fs_id` derived from the
//! UUID (docs/FORMAT.md), so a new UUID would need every block rewritten.
//!
//! Exit status: 0 done, 1 an error (one line on stderr), 2 usage.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tuxfs_engine::dev::{BlockDevice, OpenOptions, open_file};
use tuxfs_engine::fs::{Filesystem, MountOptions, check_label};

#[derive(Debug, Parser)]
#[command(
    name = "tune-tuxfs",
    version,
    about = "Show or change the label of a tuxfs filesystem"
)]
struct Cli {
    /// Set the label (at most 64 bytes of UTF-8; an empty string clears it).
    #[arg(short = 'L', value_name = "LABEL")]
    label: Option<String>,
    /// Set the UUID: not supported (block headers carry an id derived from it).
    #[arg(short = 'U', value_name = "UUID")]
    uuid: Option<String>,
    /// The image file or block device.
    image: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("tune-tuxfs: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let image = cli.image.display();
    if cli.uuid.is_some() {
        return Err(
            "changing the UUID is not supported: every metadata block carries an id derived \
             from it (docs/FORMAT.md, block header fs_id)"
                .into(),
        );
    }
    if let Some(label) = &cli.label {
        check_label(label)
            .map_err(|_| format!("label {label:?}: at most 64 bytes of UTF-8, without NUL"))?;
    }
    let lock = std::fs::File::open(&cli.image).map_err(|e| format!("{image}: {e}"))?;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!(
            "{image} is in use (mounted by tuxfs-mount?): unmount it first, or set the label \
             of the mount with the FS_IOC_SETFSLABEL ioctl"
        ));
    }
    let read_only = cli.label.is_none();
    let dev = open_file(
        &cli.image,
        &OpenOptions {
            read_only,
            ..OpenOptions::default()
        },
    )
    .map_err(|e| format!("cannot open {image}: {e}"))?;
    let fs = Filesystem::mount(
        Arc::from(dev) as Arc<dyn BlockDevice>,
        MountOptions {
            read_only,
            ..MountOptions::default()
        },
    )
    .map_err(|e| format!("{image}: {e}"))?;
    let set = match &cli.label {
        Some(label) => fs
            .set_label(label)
            .map_err(|e| format!("setting the label: {e}")),
        None => {
            let u = fs.uuid();
            let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
            println!("label: {}", fs.label());
            println!(
                "uuid: {}-{}-{}-{}-{}",
                &hex[0..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..32]
            );
            Ok(())
        }
    };
    let unmounted = fs.unmount().map_err(|e| format!("unmounting {image}: {e}"));
    drop(lock);
    set.and(unmounted)
}
