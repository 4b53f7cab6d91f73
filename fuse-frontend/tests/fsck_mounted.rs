//! Story: an image is mounted by a real `tuxfs-mount` and written through the mount. A
//! repair (`fsck.tuxfs -y` or `-p`) must refuse while the mount holds the image (exit 8,
//! naming the mountpoint), and a check (`-n`) runs but warns that it may read a stale state
//! and does not call its verdict authoritative. After the unmount fsck runs as usual and
//! the files are intact. (Runs as root with /dev/fuse; under CI=true it never skips.)

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
    // The fsck.tuxfs command (when the workspace build made it, as `cargo test --workspace`
    // does; fsck/tests/in_use.rs always runs it against a held lock) exits 8.
    if let Some(bin) = fsck_binary() {
        let out = std::process::Command::new(&bin)
            .arg("-y")
            .arg(&m.image)
            .output()
            .expect("run fsck.tuxfs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(8), "{err}");
        assert!(
            err.contains(&format!("mounted at {}", mountpoint.display())),
            "{err}"
        );
        let out = std::process::Command::new(&bin)
            .arg("-n")
            .arg(&m.image)
            .output()
            .expect("run fsck.tuxfs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("WARNING") && err.contains("may be stale"),
            "{err}"
        );
    } else {
        eprintln!("fsck.tuxfs binary not built; checked through tuxfs_fsck::check_path only");
    }
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

/// The `fsck-tuxfs` binary next to this test's directory (target/<profile>/), if built.
fn fsck_binary() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("fsck-tuxfs");
    bin.is_file().then_some(bin)
}
