//! Story: an administrator remounts a busy mount read-only and back, as with ext4. A writer
//! keeps creating files (each written and closed) throughout. `mount -o remount,ro MNT`
//! (mount(8) calls mount(2) itself for a fuseblk mount; the daemon follows the mount table)
//! makes every change fail with EROFS, and the daemon commits everything: a copy of the
//! image taken then passes fsck and holds every file the writer finished. Then the helper
//! form mount(8) uses with a `mount.fuseblk.tuxfs` link (`tuxfs-mount SRC MNT -o
//! rw,remount,commit=1`) makes it writable again with a new commit interval (the mount
//! was made with commit=60, yet a new file is on the image within seconds); the writer
//! copes with its EROFS answers by retrying and loses nothing: after the unmount fsck is
//! clean and every file it finished is there with its content.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Mount, TUXFS_MOUNT, fsck_clean};
use tuxfs_engine::dev::{BlockDevice, OpenOptions, open_file};
use tuxfs_engine::fs::{Filesystem, MountOptions};

const WAIT: Duration = Duration::from_secs(20);

fn content(i: u64) -> Vec<u8> {
    format!("file {i} ")
        .repeat(1 + (i % 300) as usize)
        .into_bytes()
}

/// The writer: creates f0, f1, ... each written and closed; on EROFS it waits and retries
/// the same file. Records the files it finished and how often it was refused.
struct Writer {
    stop: Arc<AtomicBool>,
    done: Arc<Mutex<Vec<u64>>>,
    refused: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(dir: PathBuf) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicU64::new(0));
        let (s, d, r) = (stop.clone(), done.clone(), refused.clone());
        let thread = std::thread::spawn(move || {
            let mut i = 0;
            while !s.load(Ordering::Relaxed) {
                let path = dir.join(format!("f{i}"));
                let wrote = std::fs::File::create(&path).and_then(|mut f| f.write_all(&content(i)));
                match wrote {
                    Ok(()) => {
                        d.lock().unwrap().push(i);
                        i += 1;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
                        r.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("writer: {}: {e}", path.display()),
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Writer {
            stop,
            done,
            refused,
            thread: Some(thread),
        }
    }

    fn done(&self) -> Vec<u64> {
        self.done.lock().unwrap().clone()
    }

    fn finish(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("writer panicked");
        }
        self.done()
    }
}

/// Waits (bounded) until `cond` holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Copies the image as it is now and opens the copy read-only through the engine: every
/// file in `names` must be there with its content. The copy must pass fsck first.
fn copy_holds(m: &Mount, names: &[u64], name: &str) -> bool {
    let copy = m.scratch().join(name);
    std::fs::copy(&m.image, &copy).expect("copy the image");
    fsck_clean(&copy);
    let dev = open_file(
        &copy,
        &OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        },
    )
    .expect("open the copy");
    let fs = Filesystem::mount(
        Arc::from(dev) as Arc<dyn BlockDevice>,
        MountOptions {
            read_only: true,
            ..MountOptions::default()
        },
    )
    .expect("mount the copy");
    let all = names.iter().all(|&i| {
        fs.lookup(1, format!("f{i}").as_bytes())
            .and_then(|a| fs.read(a.ino, 0, 1 << 20))
            .is_ok_and(|data| data == content(i))
    });
    fs.unmount().expect("unmount the copy");
    let _ = std::fs::remove_file(&copy);
    all
}

#[test]
fn remount_ro_and_rw_under_a_writer_loses_nothing() {
    let Some(mut m) = Mount::with_options("remount", 128 << 20, &["commit=60"]) else {
        return;
    };
    let writer = Writer::start(m.dir.clone());
    wait_for("the writer to start", || writer.done().len() >= 20);

    common::mount_remount(&m.dir, "ro");
    wait_for("the daemon to follow the kernel to read-only", || {
        m.log().contains("read-only now")
    });
    let before = writer.done();
    let err = std::fs::File::create(m.path("refused")).expect_err("read-only");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    wait_for("the writer to be refused", || {
        writer.refused.load(Ordering::Relaxed) > 0
    });
    assert_eq!(writer.done(), before, "nothing is written while read-only");
    // commit=60 and no fsync: only the remount can have committed these.
    assert!(
        copy_holds(&m, &before, "copy-ro.img"),
        "a file finished before the remount is missing from the image"
    );

    // The helper's form, as mount(8) runs /sbin/mount.fuseblk.tuxfs.
    common::run(Command::new(TUXFS_MOUNT).arg("/dev/null").arg(&m.dir).args([
        "-o",
        "rw,relatime,remount,user_id=0,group_id=0,default_permissions,blksize=4096,commit=1",
    ]));
    assert!(m.log().contains("remounted"), "{}", m.log());
    wait_for("the writer to go on", || {
        writer.done().len() > before.len() + 20
    });
    let done = writer.finish();
    // The mount said commit=60; with commit=1 the files written since reach the image
    // within about a second, with no fsync. (Copied once the writer stopped and a commit
    // interval passed, so the copy is not taken in the middle of a commit.)
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        copy_holds(&m, &done, "copy-rw.img"),
        "commit=1 given at remount did not apply"
    );
    m.remount();
    for i in done {
        let path = m.path(format!("f{i}"));
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(data, content(i), "{}", path.display());
    }
    m.finish();
}

#[test]
fn remount_refuses_options_that_cannot_change_and_a_missing_mount() {
    let Some(m) = Mount::new("remount-bad", 64 << 20) else {
        return;
    };
    let out = Command::new(TUXFS_MOUNT)
        .arg("img")
        .arg(&m.dir)
        .args(["-o", "remount,threads=4"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot change on a running mount"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(TUXFS_MOUNT)
        .arg("img")
        .arg(m.scratch())
        .args(["-o", "remount,ro"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a tuxfs mount"));
    std::fs::write(m.path("still"), b"writable").expect("the mount is unchanged");
    m.finish();
}
