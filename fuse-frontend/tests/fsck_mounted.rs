//! Story: an image is mounted by a real `tuxfs-mount` and written through the mount. A
//! repair (`fsck.tuxfs -y` or `-p`) must refuse while the mount holds the image (exit 8,
//! naming the mountpoint), and a check (`-n`) runs but warns that it may read a stale state
//! and does not call its verdict authoritative. After the unmount fsck runs as usual and
//! the files are intact. This goes through `tuxfs_fsck::check_path`, which the
//! `fsck.tuxfs` command calls (its exit 8 and messages: fsck/tests/in_use.rs). As root the
//! mount is `fuseblk` on a loop device backed by the image, so naming the mountpoint means
//! following the loop device back to the image. (Runs as root with /dev/fuse; under
//! CI=true it never skips.)

mod common;

use common::Mount;
use tuxfs_fsck::{Mode, Options, check_path};

#[test]
fn fsck_refuses_to_repair_a_mounted_image_and_warns_on_check() {
    let Some(mut m) = Mount::new("fsck-mounted", 64 << 20) else {
        return;
    };
    std::fs::write(m.path("kept"), b"written through the mount").expect("write");
    let mountpoint = m.dir.canonicalize().expect("mountpoint");
    for mode in [Mode::Yes, Mode::Preen] {
        let err = check_path(
            &m.image,
            &Options {
                mode,
                check_data: false,
            },
        )
        .expect_err("a repair under a mount must be refused");
        let msg = err.to_string();
        assert!(msg.contains("refusing to repair"), "{mode:?}: {msg}");
        assert!(
            msg.contains(&format!("mounted at {}", mountpoint.display())),
            "{mode:?}: {msg}"
        );
    }
    let report = check_path(
        &m.image,
        &Options {
            mode: Mode::Check,
            check_data: false,
        },
    )
    .expect("a check runs on a mounted image");
    let stale = report
        .stale
        .clone()
        .expect("a check of a mounted image warns");
    assert!(stale.contains("may be stale"), "{stale}");
    let text = tuxfs_fsck::render_human("img", &report, false);
    assert!(text.contains("NOT authoritative"), "{text}");
    m.unmount();
    let report = check_path(
        &m.image,
        &Options {
            mode: Mode::Yes,
            check_data: true,
        },
    )
    .expect("fsck after unmount");
    assert_eq!(report.exit_code(), 0, "{:#?}", report.findings);
    assert!(report.stale.is_none());
    m.remount();
    assert_eq!(
        std::fs::read(m.path("kept")).expect("read"),
        b"written through the mount"
    );
    m.finish();
}
