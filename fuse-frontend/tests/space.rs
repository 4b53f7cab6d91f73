//! Story: a user preallocates, punches, zeroes and copies files with util-linux
//! `fallocate`, `cp --sparse=always` and `du`, and a backup tool maps holes with SEEK_HOLE /
//! SEEK_DATA. The same sequence runs on the mount and on the host's ext4 (the temporary
//! directory next to the image) and must give the same sizes, `st_blocks`, hole maps and
//! bytes. COLLAPSE_RANGE and INSERT_RANGE are refused by the kernel's FUSE module before the
//! daemon sees them (EOPNOTSUPP; the engine implements them, tests/tests/space.rs), and
//! FIEMAP is never passed to FUSE: both are checked here so a kernel that changes shows up.

mod common;

use std::os::unix::fs::FileExt;

use common::{Mount, have, sh};

/// The workload: run with `sh -e` in the mount and in a directory of the host's ext4.
const WORKLOAD: &str = r#"
fallocate -l 1M pre
fallocate -n -o 1M -l 256K pre
printf hello | dd of=pre bs=1 seek=5000 conv=notrunc status=none
yes abcdefgh | head -c 300000 > punched
fallocate -p -o 4096 -l 8192 punched
fallocate -p -o 10000 -l 5000 punched
fallocate -p -o 200000 -l 1M punched
yes 0123456789 | head -c 200000 > zeroed
fallocate -z -o 50000 -l 20000 zeroed
yes 0123456789 | head -c 100000 > zeroed2
fallocate -z -n -o 90000 -l 40000 zeroed2
printf abc > zeroed3
fallocate -z -o 10000 -l 12288 zeroed3
yes xyz | head -c 40000 > sparse
truncate -s 1M sparse
printf tail >> sparse
cp --sparse=always sparse copy
cp --sparse=always punched punched.copy
sync
"#;

/// What is compared: the hole map of every file (first: ext4 reports an unwritten extent
/// as data once its zero pages are in the page cache, so nothing may read the files before),
/// then size, st_blocks, du and a checksum (ext4 may count one extent-tree block more:
/// `listings_agree`).
const LISTING: &str = r#"
for f in pre punched zeroed zeroed2 zeroed3 sparse copy punched.copy; do
  python3 - "$f" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
at, out = 0, []
while at < size:
    try:
        data = os.lseek(fd, at, os.SEEK_DATA)
    except OSError:
        break
    hole = os.lseek(fd, data, os.SEEK_HOLE)
    out.append(f"{data}-{hole}")
    at = hole
print(sys.argv[1], "data:", " ".join(out) or "none")
PY
done
for f in pre punched zeroed zeroed2 zeroed3 sparse copy punched.copy; do
  stat -c '%n size=%s blocks=%b' "$f"
  du -k "$f"
  cksum < "$f"
done
"#;

#[test]
fn fallocate_cp_du_and_seek_hole_agree_with_ext4() {
    if !have(&["fallocate", "python3", "du", "cp", "cksum"]) {
        return;
    }
    let Some(m) = Mount::new("space", 64 << 20) else {
        return;
    };
    let host = m.scratch().join("host");
    std::fs::create_dir(&host).expect("host directory");
    sh(&m.dir, WORKLOAD);
    sh(&host, WORKLOAD);
    let theirs = sh(&host, LISTING);
    assert!(
        theirs.contains("punched data: 0-4096 12288-"),
        "the host does not report holes (not ext4?):\n{theirs}"
    );
    let ours = sh(&m.dir, LISTING);
    assert!(
        listings_agree(&ours, &theirs),
        "tuxfs and ext4 differ:\n--- tuxfs\n{ours}\n--- ext4\n{theirs}"
    );
    m.finish();
}

/// Line by line equal, except that ext4's `st_blocks` (and `du`) of a file may be one block
/// higher: the host's ext4 is a busy filesystem, and when its writeback splits a file's
/// allocation into more than four extents it also counts an extent-tree block, which
/// tuxfs does not have (SEMANTICS.md, Deviations).
fn listings_agree(tuxfs: &str, ext4: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (tuxfs.lines().collect(), ext4.lines().collect());
    a.len() == b.len()
        && a.iter().zip(&b).all(|(x, y)| {
            if x == y {
                return true;
            }
            let number = |line: &str, key: &str| -> Option<(String, i64)> {
                let (head, n) = match key {
                    "blocks=" => line.rsplit_once(key)?,
                    _ => line.split_once('\t').map(|(n, name)| (name, n))?,
                };
                Some((head.to_string(), n.trim().parse().ok()?))
            };
            for (key, one_block) in [("blocks=", 8), ("du", 4)] {
                if let (Some((hx, nx)), Some((hy, ny))) = (number(x, key), number(y, key))
                    && hx == hy
                {
                    return ny - nx == one_block;
                }
            }
            false
        })
}

#[test]
fn collapse_insert_and_fiemap_are_refused_by_the_kernel() {
    if !have(&["fallocate"]) {
        return;
    }
    let Some(m) = Mount::new("space-refused", 64 << 20) else {
        return;
    };
    sh(&m.dir, "yes | head -c 65536 > f");
    for flag in ["-c", "-i"] {
        let out = std::process::Command::new("fallocate")
            .args([flag, "-o", "4096", "-l", "4096", "f"])
            .current_dir(&m.dir)
            .output()
            .expect("run fallocate");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("not supported"),
            "fallocate {flag} through FUSE: {stderr}"
        );
    }
    // FS_IOC_FIEMAP: the VFS answers it (EOPNOTSUPP, FUSE has no ->fiemap).
    let file = std::fs::File::open(m.path("f")).expect("open");
    let mut buf = [0u64; 4 + 7 * 14];
    buf[1] = u64::MAX; // fm_length
    const FS_IOC_FIEMAP: libc::c_ulong = 0xc020_660b;
    // SAFETY: `buf` is a struct fiemap with room for 14 extents (fm_extent_count is 0, so
    // the kernel writes only the header); it outlives the call.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            FS_IOC_FIEMAP,
            buf.as_mut_ptr(),
        )
    };
    let err = std::io::Error::last_os_error();
    assert_eq!(
        (rc, err.raw_os_error()),
        (-1, Some(libc::EOPNOTSUPP)),
        "FIEMAP through FUSE"
    );
    drop(file);
    m.finish();
}

#[test]
fn punch_and_copy_are_seen_by_buffered_and_mapped_readers() {
    if !have(&["fallocate", "python3"]) {
        return;
    }
    let Some(m) = Mount::new("space-coherent", 64 << 20) else {
        return;
    };
    let path = m.path("f");
    let data = vec![0x61u8; 64 << 10];
    std::fs::write(&path, &data).expect("write");
    // Read it into the kernel's page cache, punch, read again (buffered and mmap).
    let file = std::fs::File::open(&path).expect("open");
    let mut before = vec![0u8; data.len()];
    file.read_exact_at(&mut before, 0).expect("read");
    assert_eq!(before, data);
    sh(&m.dir, "fallocate -p -o 8192 -l 16384 f");
    let mut after = vec![0u8; data.len()];
    file.read_exact_at(&mut after, 0).expect("read");
    let mut want = data.clone();
    want[8192..24576].fill(0);
    assert!(after == want, "buffered read after punch");
    let mapped = sh(
        &m.dir,
        "python3 -c \"import mmap,os;f=open('f','rb');mm=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ);print(mm[8192:24576].count(0), mm[0:8192].count(97))\"",
    );
    assert_eq!(mapped.trim(), "16384 8192", "mapped read after punch");
    // copy_file_range into a file whose pages are cached: readers see the copy.
    let dst = m.path("g");
    std::fs::write(&dst, vec![0x7au8; 64 << 10]).expect("write g");
    let g = std::fs::File::open(&dst).expect("open g");
    let mut cached = vec![0u8; 64 << 10];
    g.read_exact_at(&mut cached, 0).expect("read g");
    let src = std::fs::File::open(&path).expect("open f");
    let out = std::fs::OpenOptions::new()
        .write(true)
        .open(&dst)
        .expect("open g for writing");
    let (mut off_in, mut off_out) = (0i64, 0i64);
    // SAFETY: both descriptors are open for the call; the offsets are valid pointers.
    let n = unsafe {
        libc::copy_file_range(
            std::os::fd::AsRawFd::as_raw_fd(&src),
            &mut off_in,
            std::os::fd::AsRawFd::as_raw_fd(&out),
            &mut off_out,
            want.len(),
            0,
        )
    };
    assert_eq!(n, want.len() as isize, "copy_file_range");
    g.read_exact_at(&mut cached, 0).expect("read g again");
    assert!(cached == want, "buffered read of the copy");
    drop((file, g, src, out));
    m.finish();
}

/// Found by the differential suite: the kernel sends FUSE_LSEEK without writing back its
/// dirty pages, so with the writeback cache a SEEK_DATA right after a write through an
/// open descriptor saw only what the engine had (ENXIO here). The adapter invalidates the
/// inode's pages first, which makes the kernel write every dirty one back.
#[test]
fn seek_data_sees_pages_still_dirty_in_the_kernel() {
    use std::os::fd::AsRawFd;
    let Some(m) = Mount::new("space-seek-dirty", 64 << 20) else {
        return;
    };
    let path = m.dir.join("g");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("create");
    f.set_len(1 << 20).expect("ftruncate");
    f.write_all_at(&[b'x'; 5000], 8192).expect("pwrite");
    let seek = |fd: i32, off: i64, whence: i32| {
        // SAFETY: lseek on a descriptor this test owns.
        let r = unsafe { libc::lseek(fd, off, whence) };
        assert!(
            r >= 0,
            "lseek({off}, {whence}): {}",
            std::io::Error::last_os_error()
        );
        r
    };
    assert_eq!(seek(f.as_raw_fd(), 0, libc::SEEK_DATA), 8192);
    assert_eq!(seek(f.as_raw_fd(), 8192, libc::SEEK_HOLE), 16384);
    let other = std::fs::File::open(&path).expect("open again");
    assert_eq!(seek(other.as_raw_fd(), 0, libc::SEEK_DATA), 8192);
    drop((f, other));
}
