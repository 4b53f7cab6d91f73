//! Story: a user runs `sync` (or a program calls syncfs(2)) and then the machine dies: what
//! was written before the sync is on disk after the next mount, as on ext4. Linux 6.18
//! sends FUSE_SYNCFS for both to a `fuseblk` mount (tuxfs-mount's default as root) once
//! the kernel wrote back the mount's dirty pages; the daemon answers it when the open delta
//! is durable. (A plain `fuse` mount, `nofuseblk` or not root, gets no FUSE_SYNCFS from this
//! kernel: there only the writeback thread's interval commits; docs/SEMANTICS.md.) The commit interval is set to ten
//! minutes here, so nothing but the sync can have committed the data before the daemon is
//! killed with SIGKILL (a crash of the process: nothing is committed or unmounted).

mod common;

use std::os::fd::AsRawFd;

use common::Mount;

/// Writes a file, makes it durable with `how`, kills the daemon and mounts the image again:
/// the file must be there with every byte. `options` are the mount's.
fn survives_a_crash_after(name: &str, options: &[&str], how: fn(&Mount)) {
    let mut opts = vec!["commit=600"];
    opts.extend_from_slice(options);
    let Some(mut m) = Mount::with_options(name, 64 << 20, &opts) else {
        return;
    };
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::create_dir(m.path("d")).expect("mkdir");
    std::fs::write(m.path("d/f"), &data).expect("write");
    how(&m);
    m.crash_and_restart();
    assert_eq!(
        std::fs::read(m.path("d/f")).expect("the file after the crash"),
        data,
        "{name}: what was written before the sync"
    );
    m.finish();
}

fn sync(_: &Mount) {
    // SAFETY: sync takes no arguments.
    unsafe { libc::sync() };
}

fn syncfs(m: &Mount) {
    let dir = std::fs::File::open(m.path("d")).expect("open the directory");
    // SAFETY: a valid descriptor, open for the call.
    let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
    assert_eq!(rc, 0, "syncfs: {}", std::io::Error::last_os_error());
}

#[test]
fn sync_makes_what_was_written_durable() {
    survives_a_crash_after("syncfs-sync", &[], sync);
}

#[test]
fn syncfs_makes_what_was_written_durable() {
    survives_a_crash_after("syncfs-syncfs", &[], syncfs);
}
