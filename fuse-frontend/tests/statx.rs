//! Story: a file and a directory are created through the mount; `statx` with STATX_BTIME
//! reports a birth time between the moments before and after the create (as ext4 does),
//! and `stat -c %W` prints it. Writing, chmod and `touch` of a past date change mtime and
//! ctime, never the birth time, and the birth time stays the same after a remount. The
//! kernel asks the daemon with FUSE_STATX (the vendored fuser's change 8); without the
//! answer it would report no birth time (`stat -c %W` prints 0).

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{Mount, sh};

/// (btime, mtime) of `path` as (seconds, nanoseconds) from statx; panics unless the kernel
/// says the birth time is valid.
fn birth_and_mtime(path: &Path) -> ((i64, u32), (i64, u32)) {
    let c = CString::new(path.as_os_str().as_bytes()).expect("path");
    // SAFETY: statx writes one `struct statx` into `sx`, which is zeroed and large enough;
    // `c` is a NUL-terminated path that outlives the call.
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_STATX_FORCE_SYNC,
            libc::STATX_BASIC_STATS | libc::STATX_BTIME,
            &mut sx,
        )
    };
    assert_eq!(
        rc,
        0,
        "statx {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    assert_ne!(
        sx.stx_mask & libc::STATX_BTIME,
        0,
        "no birth time for {}",
        path.display()
    );
    (
        (sx.stx_btime.tv_sec, sx.stx_btime.tv_nsec),
        (sx.stx_mtime.tv_sec, sx.stx_mtime.tv_nsec),
    )
}

fn now() -> (i64, u32) {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    (d.as_secs() as i64, d.subsec_nanos())
}

#[test]
fn birth_time_is_the_creation_time_and_survives_changes_and_remount() {
    let Some(mut m) = Mount::new("statx", 64 << 20) else {
        return;
    };
    let before = now();
    std::fs::write(m.path("f"), b"first").expect("create");
    std::fs::create_dir(m.path("d")).expect("mkdir");
    let after = now();
    let (born, _) = birth_and_mtime(&m.path("f"));
    let (dir_born, _) = birth_and_mtime(&m.path("d"));
    for t in [born, dir_born] {
        assert!(
            before <= t && t <= after,
            "birth {t:?} not in {before:?}..{after:?}"
        );
    }
    let shown = sh(&m.dir, "stat -c %W f d");
    assert_eq!(shown, format!("{}\n{}\n", born.0, dir_born.0));

    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(m.path("f"), b"second").expect("rewrite");
    sh(&m.dir, "chmod 600 f && touch -d 2001-02-03 d && sync f");
    let (b, mtime) = birth_and_mtime(&m.path("f"));
    assert_eq!(b, born);
    assert!(mtime > born, "mtime {mtime:?} moved on");
    let (b, dir_mtime) = birth_and_mtime(&m.path("d"));
    assert_eq!(b, dir_born);
    assert!(
        dir_mtime.0 < 1_000_000_000,
        "touch set the directory's mtime to 2001"
    );

    m.remount();
    assert_eq!(birth_and_mtime(&m.path("f")).0, born);
    assert_eq!(birth_and_mtime(&m.path("d")).0, dir_born);
    assert_eq!(sh(&m.dir, "stat -c %W f d"), shown);
    m.finish();
}
