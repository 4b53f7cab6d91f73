//! syncfs(2) after files written through the writeback cache are closed and unlinked.
//! The kernel writes back the times it cached for such a file (SETATTR) after its last
//! RELEASE, when the engine has already freed it; that SETATTR failed with ENOENT and
//! syncfs with it (found by stress-ng's `io` stressor). The engine answers it from the
//! freed inode's tombstone (engine/src/fs/tombstone.rs).

mod common;

use std::io::Write;
use std::os::fd::AsRawFd;

use common::Mount;

#[test]
fn syncfs_succeeds_after_written_files_are_closed_and_unlinked() {
    let Some(m) = Mount::new("syncfs-unlinked", 64 << 20) else {
        return;
    };
    let dir = std::fs::File::open(&m.dir).expect("open the mountpoint");
    for round in 0..20 {
        let path = m.dir.join(format!("f{round}"));
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(&[round as u8; 5000]).expect("write");
        drop(f);
        std::fs::remove_file(&path).expect("unlink");
        // SAFETY: syncfs on a descriptor this test owns.
        let r = unsafe { libc::syncfs(dir.as_raw_fd()) };
        assert_eq!(
            r,
            0,
            "syncfs after close and unlink (round {round}): {}",
            std::io::Error::last_os_error()
        );
    }
}
