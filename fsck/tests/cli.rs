//! Story: a user runs fsck.tuxfs on files that are not filesystems (random bytes, empty,
//! truncated images) and on real images, and reads exit codes as fsck(8) defines them.

mod common;

use common::{fresh_image, fsck};

fn write_temp(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).expect("write image");
    p.to_string_lossy().into_owned()
}

#[test]
fn not_a_filesystem_exits_8_with_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let random: Vec<u8> = (0..1 << 20)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    for (name, bytes, expect) in [
        ("random.img", random, "not a tuxfs filesystem"),
        ("empty.img", vec![], "empty"),
        ("tiny.img", vec![0; 700], "too small"),
    ] {
        let path = write_temp(&dir, name, &bytes);
        let (code, _, err) = fsck(&["-n", &path]);
        assert_eq!(code, 8, "{name}: {err}");
        assert!(err.contains(expect), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}

#[test]
fn truncated_image_exits_8() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = fresh_image(4096, 1000);
    for len in [8192usize, 4096 * 500, image.len() - 4096] {
        let path = write_temp(&dir, "trunc.img", &image[..len]);
        let (code, _, err) = fsck(&["-n", &path]);
        assert_eq!(code, 8, "truncated to {len}: {err}");
        assert!(err.contains("truncated"), "{err}");
    }
}

#[test]
fn clean_damaged_repaired_and_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut image = fresh_image(4096, 1000);
    let path = write_temp(&dir, "fs.img", &image);
    let (code, out, _) = fsck(&["-n", "-v", &path]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("clean") && out.contains("blocks/s"), "{out}");

    image[4096 + 300] ^= 0x40;
    std::fs::write(&path, &image).expect("damage slot 1");
    let (code, out, _) = fsck(&["-n", "--json", &path]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.starts_with('{') && out.contains("\"block\":1") && out.contains("\"exit_code\":4"),
        "{out}"
    );
    let (code, out, _) = fsck(&["-y", &path]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FIXED"), "{out}");
    let (code, out, _) = fsck(&["-n", &path]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn preen_repairs_a_superblock_slot_and_bad_flags_are_usage_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut image = fresh_image(4096, 1000);
    image[10] ^= 0x01;
    let path = write_temp(&dir, "fs.img", &image);
    assert_eq!(fsck(&["-p", &path]).0, 1);
    assert_eq!(fsck(&["-n", &path]).0, 0);
    assert_eq!(fsck(&["-n", "-y", &path]).0, 16, "conflicting flags");
    assert_eq!(fsck(&["--bogus", &path]).0, 16);
    let (code, _, err) = fsck(&["-n", "/nonexistent/image"]);
    assert_eq!(code, 8, "{err}");
}
