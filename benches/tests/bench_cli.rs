//! tuxfs-bench refuses what it must refuse before it touches anything: a --device that
//! holds a filesystem (here an ext4 signature on a loop device over a file) without --force,
//! a path that is not a block device, --force without --device, unknown targets and
//! workloads. The device keeps its signature afterwards. The benchmark itself does not run
//! here (see docs/BENCHMARKS.md).

use std::path::{Path, PathBuf};
use std::process::Command;

use tuxfs_bench::suite::device;

const BIN: &str = env!("CARGO_BIN_EXE_tuxfs-bench");

/// A 64 MiB file with the ext4 superblock magic (0xEF53 at byte 1080).
fn ext4_file(dir: &Path) -> PathBuf {
    let path = dir.join("ext4-signature.img");
    let mut bytes = vec![0u8; 4096];
    bytes[1080] = 0x53;
    bytes[1081] = 0xef;
    std::fs::write(&path, &bytes).expect("write");
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(64 << 20))
        .expect("grow");
    path
}

/// A loop device over `file`, detached on drop; None (or a failure under CI=true) where
/// loop devices cannot be made.
struct Loop(PathBuf);

impl Loop {
    fn attach(file: &Path) -> Option<Loop> {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Loop(PathBuf::from(
                String::from_utf8_lossy(&o.stdout).trim(),
            ))),
            other => {
                let why = format!("losetup failed: {other:?}");
                assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
                println!("SKIPPED: {why}");
                None
            }
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run tuxfs-bench");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn device_with_a_signature_is_refused_without_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = ext4_file(dir.path());
    let found = device::inspect(&file).expect("inspect");
    assert!(
        found
            .as_deref()
            .is_some_and(|f| f.contains("ext2/ext3/ext4")),
        "{found:?}"
    );
    let err = device::check(&file, true).expect_err("a file is not a block device");
    assert!(err.to_string().contains("not a block device"), "{err}");

    let Some(lo) = Loop::attach(&file) else {
        return;
    };
    let err = device::check(&lo.0, false).expect_err("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("ext2/ext3/ext4") && msg.contains("--force"),
        "{msg}"
    );
    let ok = device::check(&lo.0, true).expect("allowed with --force");
    assert!(ok.contains("destroyed"), "{ok}");

    let out = dir.path().join("out");
    let dev = lo.0.to_string_lossy().into_owned();
    let (success, stderr) = run(&["--quick", "--device", &dev, "--out", &out.to_string_lossy()]);
    assert!(!success, "tuxfs-bench went on with a signature on {dev}");
    assert!(
        stderr.contains("would destroy it") && stderr.contains("--force"),
        "{stderr}"
    );
    // Nothing was touched: the signature is still there, no output was written.
    assert!(device::inspect(&file).expect("inspect").is_some());
    assert!(!out.exists());
}

#[test]
fn blank_device_is_accepted_and_said_to_be_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("blank.img");
    std::fs::File::create(&file)
        .and_then(|f| f.set_len(64 << 20))
        .expect("create");
    let Some(lo) = Loop::attach(&file) else {
        return;
    };
    let ok = device::check(&lo.0, false).expect("blank is fine");
    assert!(ok.contains("overwritten"), "{ok}");
}

#[test]
fn bad_arguments_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let out = out.to_string_lossy();
    for (args, needle) in [
        (vec!["--force"], "--force only goes with --device"),
        (vec!["--targets", "zfs"], "unknown target"),
        (vec!["--workloads", "nope"], "unknown workload"),
        (vec!["--device", "/etc/hostname"], "not a block device"),
    ] {
        let mut a = args.clone();
        a.extend(["--out", &out]);
        let (success, stderr) = run(&a);
        assert!(!success, "{args:?} accepted");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    assert!(!Path::new(&*out).exists());
}
