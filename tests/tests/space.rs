//! Story: a database preallocates its files with fallocate, punches holes in freed pages,
//! zeroes ranges, collapses and inserts ranges; a backup tool walks files with SEEK_DATA /
//! SEEK_HOLE and copies them with copy_file_range. Every mode must behave as on ext4:
//! preallocated ranges read as zeros and count in `st_blocks`, writes into them never run
//! out of space, errors are ext4's, a crash never shows what a reused block held before,
//! and fsck is clean after each story.
//!
//! The randomized test replays with `TUXFS_SEED=<seed> cargo test -p tuxfs-tests --test space`.

use std::sync::Arc;

use tuxfs_engine::Errno;
use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::dev::record::RecordingDevice;
use tuxfs_engine::fs::{
    FALLOC_FL_COLLAPSE_RANGE as COLLAPSE, FALLOC_FL_INSERT_RANGE as INSERT,
    FALLOC_FL_KEEP_SIZE as KEEP, FALLOC_FL_PUNCH_HOLE as PUNCH, FALLOC_FL_ZERO_RANGE as ZERO,
    Filesystem, MountOptions, SeekWhence,
};
use tuxfs_tests::fixture::{SUPERUSER as ME, fsck_clean, mem_device, mount};
use tuxfs_tests::model::apply_fallocate;
use tuxfs_tests::rng::{Rng, seed_from_env};

const ROOT: u64 = 1;
const BS: u64 = 4096;
/// 512-byte sectors per block.
const SECTORS: u64 = BS / 512;

/// Nothing commits unless the test asks.
fn quiet() -> MountOptions {
    MountOptions {
        commit_interval: std::time::Duration::from_secs(3600),
        ..MountOptions::default()
    }
}

fn setup(blocks: u64) -> (Arc<MemDevice>, Arc<Filesystem>) {
    let dev = mem_device(BS as u32, blocks);
    let fs = mount(&dev, quiet());
    (dev, fs)
}

fn new_file(fs: &Filesystem, name: &str) -> u64 {
    fs.create(ROOT, name.as_bytes(), 0o644, ME)
        .expect("create")
        .ino
}

fn errno(r: tuxfs_engine::Result<impl std::fmt::Debug>) -> Errno {
    r.expect_err("must fail").errno()
}

fn sectors(fs: &Filesystem, ino: u64) -> u64 {
    fs.getattr(ino).expect("getattr").blocks
}

fn size(fs: &Filesystem, ino: u64) -> u64 {
    fs.getattr(ino).expect("getattr").size
}

fn read_all(fs: &Filesystem, ino: u64) -> Vec<u8> {
    let n = size(fs, ino);
    let mut out = Vec::new();
    while (out.len() as u64) < n {
        let chunk = fs
            .read(
                ino,
                out.len() as u64,
                (n - out.len() as u64).min(1 << 20) as u32,
            )
            .expect("read");
        assert!(!chunk.is_empty(), "short read");
        out.extend_from_slice(&chunk);
    }
    out
}

/// Compares file bytes, naming the first difference instead of printing both.
#[track_caller]
fn same(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: {} bytes, want {}; first difference at {at:?}: got {:?}, want {:?}",
            got.len(),
            want.len(),
            at.map(|i| got[i]),
            at.map(|i| want[i]),
        );
    }
}

/// Unmounts, checks with fsck, mounts again.
fn remount(dev: &Arc<MemDevice>, fs: Arc<Filesystem>) -> Arc<Filesystem> {
    fs.unmount().expect("unmount");
    drop(fs);
    fsck_clean(dev.as_ref());
    mount(dev, quiet())
}

fn finish(dev: &Arc<MemDevice>, fs: Arc<Filesystem>) {
    fs.unmount().expect("unmount");
    fsck_clean(dev.as_ref());
}

#[test]
fn preallocated_ranges_read_as_zeros_and_count_in_st_blocks() {
    let (dev, fs) = setup(4096);
    let f = new_file(&fs, "f");
    let free = fs.statfs().expect("statfs").bfree;
    fs.fallocate(f, 0, 10 * BS, 0).expect("fallocate");
    assert_eq!(size(&fs, f), 10 * BS, "default mode grows the file");
    assert_eq!(sectors(&fs, f), 10 * SECTORS, "preallocated blocks count");
    assert!(free - fs.statfs().expect("statfs").bfree >= 10);
    assert_eq!(read_all(&fs, f), vec![0u8; 10 * BS as usize]);
    // KEEP_SIZE: past the end, the size stays.
    fs.fallocate(f, 10 * BS, 6 * BS, KEEP).expect("keep size");
    assert_eq!(size(&fs, f), 10 * BS);
    assert_eq!(sectors(&fs, f), 16 * SECTORS);
    // Again over the same range: nothing more is allocated.
    fs.fallocate(f, 0, 16 * BS, KEEP).expect("again");
    assert_eq!(sectors(&fs, f), 16 * SECTORS);
    let fs = remount(&dev, fs);
    assert_eq!(size(&fs, f), 10 * BS);
    assert_eq!(sectors(&fs, f), 16 * SECTORS, "after remount");
    assert_eq!(read_all(&fs, f), vec![0u8; 10 * BS as usize]);
    // Extending over preallocated blocks past the end reads zeros there too.
    let set = tuxfs_engine::fs::SetAttr {
        size: Some(16 * BS),
        ..Default::default()
    };
    fs.setattr(f, &set).expect("truncate up");
    assert_eq!(read_all(&fs, f), vec![0u8; 16 * BS as usize]);
    // Truncating down frees the preallocation past the new end.
    let set = tuxfs_engine::fs::SetAttr {
        size: Some(BS),
        ..Default::default()
    };
    fs.setattr(f, &set).expect("truncate down");
    assert_eq!(sectors(&fs, f), SECTORS);
    finish(&dev, fs);
}

#[test]
fn writes_into_preallocated_blocks_convert_them_in_place() {
    let (dev, fs) = setup(4096);
    let f = new_file(&fs, "f");
    fs.fallocate(f, 0, 8 * BS, 0).expect("fallocate");
    fs.sync().expect("sync");
    let free = fs.statfs().expect("statfs").bfree;
    let data = vec![0x5au8; 6000];
    fs.write(f, 2 * BS + 100, &data, false).expect("write");
    let mut want = vec![0u8; 8 * BS as usize];
    want[2 * BS as usize + 100..2 * BS as usize + 6100].copy_from_slice(&data);
    same(&read_all(&fs, f), &want, "before commit");
    assert_eq!(sectors(&fs, f), 8 * SECTORS, "no delayed allocation on top");
    fs.sync().expect("sync");
    same(&read_all(&fs, f), &want, "after commit");
    assert_eq!(sectors(&fs, f), 8 * SECTORS);
    let used = free.saturating_sub(fs.statfs().expect("statfs").bfree);
    assert!(
        used <= 4,
        "the data went into the preallocated blocks, not new ones: {used} blocks more used"
    );
    // Rewriting a converted block is copy-on-write again and still counts once.
    fs.write(f, 2 * BS, &[7u8; 10], false).expect("rewrite");
    want[2 * BS as usize..2 * BS as usize + 10].copy_from_slice(&[7u8; 10]);
    fs.sync().expect("sync");
    assert_eq!(sectors(&fs, f), 8 * SECTORS);
    let fs = remount(&dev, fs);
    same(&read_all(&fs, f), &want, "after remount");
    finish(&dev, fs);
}

#[test]
fn writes_into_a_preallocation_succeed_on_a_full_filesystem() {
    let (dev, fs) = setup(1024);
    let f = new_file(&fs, "prealloc");
    fs.fallocate(f, 0, 64 * BS, 0).expect("fallocate");
    fs.sync().expect("sync");
    // Fill everything else.
    let g = new_file(&fs, "filler");
    let chunk = vec![1u8; BS as usize];
    let mut at = 0;
    loop {
        match fs.write(g, at, &chunk, false) {
            Ok(_) => at += BS,
            Err(e) if e.errno() == Errno::NoSpace => break,
            Err(e) => panic!("filler: {e}"),
        }
        if at % (32 * BS) == 0 {
            fs.sync().expect("sync");
        }
    }
    fs.sync().expect("sync");
    assert_eq!(errno(fs.write(g, at, &chunk, false)), Errno::NoSpace);
    // Every block of the preallocation can still be written.
    let data: Vec<u8> = (0..64 * BS).map(|i| (i % 251) as u8).collect();
    fs.write(f, 0, &data, false)
        .expect("write into the preallocation");
    fs.sync().expect("sync");
    same(&read_all(&fs, f), &data, "content");
    finish(&dev, fs);
}

#[test]
fn punch_hole_frees_whole_blocks_and_zeroes_partial_ones() {
    let (dev, fs) = setup(4096);
    let f = new_file(&fs, "f");
    let mut want: Vec<u8> = (0..10 * BS).map(|i| (i % 253) as u8 | 1).collect();
    fs.write(f, 0, &want, false).expect("write");
    fs.sync().expect("sync");
    fs.fallocate(f, BS + 100, 4 * BS - 50, PUNCH | KEEP)
        .expect("punch");
    want[BS as usize + 100..5 * BS as usize + 50].fill(0);
    same(&read_all(&fs, f), &want, "content");
    assert_eq!(size(&fs, f), 10 * BS, "KEEP_SIZE");
    // Blocks 2, 3 and 4 are gone; 1 and 5 were zeroed in part.
    assert_eq!(sectors(&fs, f), 7 * SECTORS);
    // Punching dirty (uncommitted) data drops it.
    fs.write(f, 7 * BS, &[9u8; 100], false).expect("dirty");
    fs.fallocate(f, 7 * BS, BS, PUNCH | KEEP)
        .expect("punch dirty");
    want[7 * BS as usize..8 * BS as usize].fill(0);
    same(&read_all(&fs, f), &want, "content");
    assert_eq!(sectors(&fs, f), 6 * SECTORS);
    // At or past the end: nothing happens; across the end: stops at the end.
    fs.fallocate(f, 10 * BS, BS, PUNCH | KEEP)
        .expect("past end");
    fs.fallocate(f, 9 * BS, 8 * BS, PUNCH | KEEP)
        .expect("across end");
    want[9 * BS as usize..].fill(0);
    assert_eq!(size(&fs, f), 10 * BS);
    assert_eq!(sectors(&fs, f), 5 * SECTORS);
    let fs = remount(&dev, fs);
    same(&read_all(&fs, f), &want, "content");
    finish(&dev, fs);
}

#[test]
fn zero_range_keeps_blocks_allocated_and_reads_zeros() {
    let (dev, fs) = setup(4096);
    let f = new_file(&fs, "f");
    let mut want = vec![0x33u8; 6 * BS as usize];
    fs.write(f, 0, &want, false).expect("write");
    fs.sync().expect("sync");
    fs.fallocate(f, BS / 2, 3 * BS, ZERO | KEEP).expect("zero");
    want[BS as usize / 2..(3 * BS + BS / 2) as usize].fill(0);
    same(&read_all(&fs, f), &want, "content");
    assert_eq!(sectors(&fs, f), 6 * SECTORS, "zeroed blocks stay allocated");
    assert_eq!(size(&fs, f), 6 * BS);
    // Without KEEP_SIZE past the end: the file grows, the new blocks are allocated.
    fs.fallocate(f, 5 * BS, 3 * BS + 10, ZERO)
        .expect("zero past end");
    want.truncate(5 * BS as usize);
    want.resize(8 * BS as usize + 10, 0);
    assert_eq!(size(&fs, f), 8 * BS + 10);
    assert_eq!(sectors(&fs, f), 9 * SECTORS);
    same(&read_all(&fs, f), &want, "content");
    // Over dirty data.
    fs.write(f, 0, &[5u8; 300], false).expect("dirty");
    fs.fallocate(f, 0, 200, ZERO | KEEP).expect("zero dirty");
    want[200..300].fill(5);
    want[..200].fill(0);
    same(&read_all(&fs, f), &want, "content");
    fs.sync().expect("sync");
    same(&read_all(&fs, f), &want, "content");
    let fs = remount(&dev, fs);
    same(&read_all(&fs, f), &want, "content");
    assert_eq!(sectors(&fs, f), 9 * SECTORS);
    finish(&dev, fs);
}

/// One byte per block names the block: easy to follow through collapse and insert.
fn numbered(blocks: u64) -> Vec<u8> {
    (0..blocks * BS).map(|i| (i / BS) as u8 + 1).collect()
}

#[test]
fn collapse_and_insert_move_the_rest_of_the_file() {
    let (dev, fs) = setup(4096);
    let f = new_file(&fs, "f");
    let mut want = numbered(10);
    want.extend_from_slice(b"tail");
    fs.write(f, 0, &want, false).expect("write");
    fs.sync().expect("sync");
    // Dirty pages move with the file too.
    fs.write(f, 8 * BS, &[0xeeu8; 10], false).expect("dirty");
    want[8 * BS as usize..8 * BS as usize + 10].fill(0xee);
    fs.fallocate(f, 2 * BS, 3 * BS, COLLAPSE).expect("collapse");
    want.drain(2 * BS as usize..5 * BS as usize);
    assert_eq!(size(&fs, f), want.len() as u64);
    same(&read_all(&fs, f), &want, "content");
    assert_eq!(sectors(&fs, f), 8 * SECTORS);
    fs.fallocate(f, BS, 2 * BS, INSERT).expect("insert");
    let hole = vec![0u8; 2 * BS as usize];
    want.splice(BS as usize..BS as usize, hole);
    same(&read_all(&fs, f), &want, "content");
    assert_eq!(sectors(&fs, f), 8 * SECTORS, "the inserted range is a hole");
    fs.sync().expect("sync");
    same(&read_all(&fs, f), &want, "content");
    let fs = remount(&dev, fs);
    same(&read_all(&fs, f), &want, "content");
    finish(&dev, fs);
}

#[test]
fn bad_requests_get_ext4_errors_and_change_nothing() {
    let (dev, fs) = setup(1024);
    let f = new_file(&fs, "f");
    fs.write(f, 0, &numbered(4), false).expect("write");
    let before = fs.getattr(f).expect("getattr");
    let cases: [(u64, u64, u32, Errno); 14] = [
        (0, 0, 0, Errno::Invalid),
        (u64::MAX - 10, BS, 0, Errno::Invalid),
        (0, u64::MAX, 0, Errno::Invalid),
        (0, BS, 0x04, Errno::NotSupported),
        (0, BS, 0x1000, Errno::NotSupported),
        (0, BS, PUNCH, Errno::NotSupported),
        (0, BS, PUNCH | ZERO, Errno::NotSupported),
        (0, BS, COLLAPSE | KEEP, Errno::NotSupported),
        (0, BS, INSERT | KEEP, Errno::NotSupported),
        (100, BS, COLLAPSE, Errno::Invalid),
        (BS, 3 * BS, COLLAPSE, Errno::Invalid),
        (4 * BS, BS, INSERT, Errno::Invalid),
        (0, 100, INSERT, Errno::Invalid),
        (1 << 50, BS, 0, Errno::FileTooBig),
    ];
    for (offset, len, mode, want) in cases {
        assert_eq!(
            errno(fs.fallocate(f, offset, len, mode)),
            want,
            "fallocate({offset}, {len}, {mode:#x})"
        );
    }
    assert_eq!(
        errno(fs.fallocate(f, 0, (1 << 50) - 2 * BS, INSERT)),
        Errno::FileTooBig,
        "insert past the largest size"
    );
    assert_eq!(errno(fs.fallocate(ROOT, 0, BS, 0)), Errno::IsDir);
    let fifo = fs.mknod(ROOT, b"fifo", 0o10644, 0, ME).expect("mkfifo").ino;
    assert_eq!(errno(fs.fallocate(fifo, 0, BS, 0)), Errno::NoDevice);
    // ENOSPC: reserved first, so nothing is half done. (A commit first: an ENOSPC commits
    // the open delta and retries, which would change statfs by itself.)
    fs.sync().expect("sync");
    let free = fs.statfs().expect("statfs").bfree;
    assert_eq!(
        errno(fs.fallocate(f, 0, 4096 * BS, KEEP)),
        Errno::NoSpace,
        "more than the filesystem"
    );
    let after = fs.getattr(f).expect("getattr");
    assert_eq!((after.size, after.blocks), (before.size, before.blocks));
    assert_eq!(fs.statfs().expect("statfs").bfree, free);
    same(&read_all(&fs, f), &numbered(4), "content");
    finish(&dev, fs);
}

/// One row of a seek table: the offset, then SEEK_DATA's and SEEK_HOLE's answers.
type SeekRow = (u64, Result<u64, Errno>, Result<u64, Errno>);

/// Answers of SEEK_DATA and SEEK_HOLE from every quarter block of the file.
fn seek_table(fs: &Filesystem, ino: u64) -> Vec<SeekRow> {
    let n = size(fs, ino);
    (0..=n.div_ceil(BS / 4))
        .map(|q| {
            let at = q * BS / 4;
            let ask = |w| fs.seek(ino, at as i64, w).map_err(|e| e.errno());
            (at, ask(SeekWhence::Data), ask(SeekWhence::Hole))
        })
        .collect()
}

/// The table a file of `size` bytes with data exactly in `data` blocks must give.
fn expected_table(size: u64, data: &[u64]) -> Vec<SeekRow> {
    let is_data = |b: u64| data.contains(&b);
    (0..=size.div_ceil(BS / 4))
        .map(|q| {
            let at = q * BS / 4;
            if at >= size {
                return (at, Err(Errno::NoSuchAddress), Err(Errno::NoSuchAddress));
            }
            let blocks = size.div_ceil(BS);
            let first = |want: bool| (at / BS..blocks).find(|&b| is_data(b) == want);
            let d = first(true)
                .map(|b| (b * BS).max(at))
                .ok_or(Errno::NoSuchAddress);
            let h = Ok(first(false).map_or(size, |b| (b * BS).max(at).min(size)));
            (at, d, h)
        })
        .collect()
}

#[test]
fn seek_data_and_hole_see_dirty_pages_and_treat_unwritten_extents_as_holes() {
    let (dev, fs) = setup(4096);
    let f = new_file(&fs, "f");
    // Block 0 data, 1-2 hole, 3-5 preallocated, block 4 then written, 6 data, 7 partial hole.
    fs.write(f, 0, &[1u8; BS as usize], false).expect("write");
    fs.fallocate(f, 3 * BS, 3 * BS, 0).expect("fallocate");
    fs.write(f, 6 * BS, &[2u8; BS as usize], false)
        .expect("write");
    fs.setattr(
        f,
        &tuxfs_engine::fs::SetAttr {
            size: Some(7 * BS + 300),
            ..Default::default()
        },
    )
    .expect("size");
    assert_eq!(seek_table(&fs, f), expected_table(7 * BS + 300, &[0, 6]));
    fs.write(f, 4 * BS + 10, b"x", false)
        .expect("dirty in prealloc");
    let want = expected_table(7 * BS + 300, &[0, 4, 6]);
    assert_eq!(
        seek_table(&fs, f),
        want,
        "dirty page in an unwritten extent"
    );
    fs.sync().expect("sync");
    assert_eq!(seek_table(&fs, f), want, "after commit");
    assert_eq!(
        fs.seek(f, -1, SeekWhence::Data).map_err(|e| e.errno()),
        Err(Errno::NoSuchAddress)
    );
    let empty = new_file(&fs, "empty");
    assert_eq!(
        fs.seek(empty, 0, SeekWhence::Hole).map_err(|e| e.errno()),
        Err(Errno::NoSuchAddress)
    );
    let fs = remount(&dev, fs);
    assert_eq!(seek_table(&fs, f), want, "after remount");
    finish(&dev, fs);
}

#[test]
fn copy_file_range_copies_data_keeps_holes_and_refuses_overlap() {
    let (dev, fs) = setup(4096);
    let src = new_file(&fs, "src");
    let dst = new_file(&fs, "dst");
    // src: block 0 data, 1-3 hole, 4 preallocated, 5 data (partial).
    let mut want = vec![0u8; 5 * BS as usize + 700];
    want[..BS as usize].fill(0x41);
    want[5 * BS as usize..].fill(0x42);
    fs.write(src, 0, &want[..BS as usize], false)
        .expect("write");
    fs.write(src, 5 * BS, &want[5 * BS as usize..], false)
        .expect("write");
    fs.fallocate(src, 4 * BS, BS, KEEP).expect("prealloc");
    // dst has data where src has holes: the copy must make them read as zeros.
    fs.write(dst, 0, &vec![0x77u8; 8 * BS as usize], false)
        .expect("dst");
    fs.sync().expect("sync");
    let before = fs.getattr(dst).expect("getattr");
    std::thread::sleep(std::time::Duration::from_millis(5));
    let n = fs
        .copy_file_range(src, 0, dst, 0, 100 * BS, 0)
        .expect("copy");
    assert_eq!(n, want.len() as u64, "copies up to the source's end");
    let mut dst_want = vec![0x77u8; 8 * BS as usize];
    dst_want[..want.len()].copy_from_slice(&want);
    same(&read_all(&fs, dst), &dst_want, "content");
    let after = fs.getattr(dst).expect("getattr");
    assert!(after.mtime > before.mtime && after.ctime > before.ctime);
    // Holes stay holes: blocks 1-4 of dst were freed.
    assert_eq!(after.blocks, 4 * SECTORS);
    // To a new file at an unaligned offset.
    let third = new_file(&fs, "third");
    let n = fs
        .copy_file_range(src, 10, third, 5000, want.len() as u64, 0)
        .expect("copy");
    assert_eq!(n, want.len() as u64 - 10);
    let mut third_want = vec![0u8; 5000];
    third_want.extend_from_slice(&want[10..]);
    same(&read_all(&fs, third), &third_want, "content");
    // One file: disjoint ranges copy, overlapping ones are EINVAL.
    let n = fs
        .copy_file_range(dst, 0, dst, 6 * BS, BS, 0)
        .expect("same file");
    assert_eq!(n, BS);
    dst_want.copy_within(0..BS as usize, 6 * BS as usize);
    same(&read_all(&fs, dst), &dst_want, "content");
    assert_eq!(
        errno(fs.copy_file_range(dst, 0, dst, BS / 2, BS, 0)),
        Errno::Invalid
    );
    assert_eq!(
        errno(fs.copy_file_range(src, 0, dst, 0, BS, 1)),
        Errno::Invalid
    );
    assert_eq!(
        errno(fs.copy_file_range(ROOT, 0, dst, 0, BS, 0)),
        Errno::IsDir
    );
    assert_eq!(
        fs.copy_file_range(src, 100 * BS, dst, 0, BS, 0)
            .expect("past end"),
        0
    );
    let fs = remount(&dev, fs);
    same(&read_all(&fs, dst), &dst_want, "content");
    same(&read_all(&fs, third), &third_want, "content");
    finish(&dev, fs);
}

/// Crash safety of preallocation: a file full of 0xAA is deleted, a new file preallocates
/// the same space (the filesystem is small, so its blocks must be reused) and writes part
/// of it. At every crash point (each flush, each subset of the writes after it that the
/// harness picks, torn writes), recovery must show the new file with zeros or its own data,
/// never 0xAA, and fsck must be clean.
#[test]
fn a_crash_never_shows_what_a_reused_block_held() {
    let seed = seed_from_env().unwrap_or(11);
    println!("seed {seed}: replay with TUXFS_SEED={seed} cargo test -p tuxfs-tests --test space");
    let base = mem_device(BS as u32, 512).snapshot();
    let rec = Arc::new(RecordingDevice::new(base.clone()));
    let fs = Filesystem::mount(rec.clone() as Arc<dyn BlockDevice>, quiet()).expect("mount");
    let old = new_file(&fs, "old");
    let blocks = fs.statfs().expect("statfs").bavail * 3 / 4;
    fs.write(old, 0, &vec![0xaau8; (blocks * BS) as usize], false)
        .expect("write 0xAA");
    fs.sync().expect("sync");
    fs.release(old).expect("close");
    fs.unlink(ROOT, b"old").expect("unlink");
    fs.sync().expect("sync");
    let start = rec.event_count();
    let new = new_file(&fs, "new");
    fs.fallocate(new, 0, blocks * BS, 0).expect("fallocate");
    fs.sync().expect("sync after fallocate");
    fs.write(new, BS, &vec![0x55u8; 3 * BS as usize], false)
        .expect("write");
    fs.fsync(new, false).expect("fsync");
    fs.write(new, 10 * BS + 7, &[0x55u8; 5000], false)
        .expect("write");
    fs.fallocate(new, 20 * BS, 2 * BS, ZERO | KEEP)
        .expect("zero");
    fs.fsync(new, false).expect("fsync");
    fs.unmount().expect("unmount");
    let end = rec.event_count();
    let mut rng = Rng::new(seed);
    let mut images = 0;
    let mut saw_new = false;
    for at in start..=end {
        let unflushed = rec.writes_since_last_flush(at);
        let mut choices: Vec<Vec<usize>> = vec![Vec::new(), unflushed.clone()];
        for _ in 0..2 {
            choices.push(
                unflushed
                    .iter()
                    .copied()
                    .filter(|_| rng.chance(1, 2))
                    .collect(),
            );
        }
        let torn = unflushed
            .last()
            .map(|&event| tuxfs_engine::dev::record::TornWrite {
                event,
                sectors: 1 + rng.below(7) as usize,
            });
        for (k, landed) in choices.iter().enumerate() {
            let torn = if k == 0 { torn } else { None };
            let landed: Vec<usize> = landed
                .iter()
                .copied()
                .filter(|i| torn.is_none_or(|t| t.event != *i))
                .collect();
            let image = rec.crash_image(at, &landed, torn).expect("crash image");
            let dev = Arc::new(MemDevice::from_bytes(image));
            let fs = mount(&dev, quiet());
            if let Ok(attr) = fs.lookup(ROOT, b"new") {
                saw_new |= attr.size > 0;
                let bytes = read_all(&fs, attr.ino);
                assert!(
                    bytes.iter().all(|&b| b == 0 || b == 0x55),
                    "seed {seed}: crash at event {at} (landed {landed:?}, torn {torn:?}) shows stale bytes"
                );
            }
            fs.unmount().expect("unmount");
            drop(fs);
            fsck_clean(dev.as_ref());
            images += 1;
        }
    }
    assert!(saw_new, "some crash image has the preallocated file");
    println!("{images} crash images checked");
}

/// Seeded random writes, fallocate in every mode, copies, commits and remounts against a
/// byte model; content, SEEK_DATA answers and fsck are checked along the way.
#[test]
fn random_space_operations_match_a_model() {
    let seed = seed_from_env().unwrap_or(0x5ace);
    println!("seed {seed}: replay with TUXFS_SEED={seed} cargo test -p tuxfs-tests --test space");
    let mut rng = Rng::new(seed);
    let (dev, mut fs) = setup(4096);
    let f = new_file(&fs, "f");
    let g = new_file(&fs, "g");
    let mut model: Vec<u8> = Vec::new();
    let modes = [0, KEEP, PUNCH | KEEP, ZERO, ZERO | KEEP, COLLAPSE, INSERT];
    for step in 0..300 {
        let ctx = format!("seed {seed} step {step}");
        let limit = 64 * BS;
        match rng.weighted(&[6, 8, 2, 1, 2]) {
            0 => {
                let offset = rng.below(limit);
                let n = rng.range(1, 3 * BS) as usize;
                let data = rng.bytes(n);
                fs.write(f, offset, &data, false).expect(&ctx);
                if model.len() < offset as usize + n {
                    model.resize(offset as usize + n, 0);
                }
                model[offset as usize..offset as usize + n].copy_from_slice(&data);
            }
            1 => {
                let mode = *rng.pick(&modes);
                let aligned = mode == COLLAPSE || mode == INSERT;
                let (offset, len) = if aligned {
                    (rng.below(limit / BS) * BS, rng.range(1, 4) * BS)
                } else {
                    (rng.below(limit), rng.range(1, 4 * BS))
                };
                let size = model.len() as u64;
                if mode == INSERT && size + len > limit * 2 {
                    continue;
                }
                let refused = match mode {
                    COLLAPSE => offset + len >= size,
                    INSERT => offset >= size,
                    _ => false,
                };
                match fs.fallocate(f, offset, len, mode) {
                    Ok(()) => {
                        assert!(
                            !refused,
                            "{ctx}: fallocate({offset}, {len}, {mode:#x}) accepted"
                        );
                        apply_fallocate(&mut model, offset, len, mode);
                    }
                    Err(e) => assert!(
                        refused && e.errno() == Errno::Invalid,
                        "{ctx}: fallocate({offset}, {len}, {mode:#x}): {e}"
                    ),
                }
            }
            2 => {
                // Copy a piece of f into g, then back over a disjoint range of f.
                let from = rng.below(model.len() as u64 + 1);
                let len = rng.range(1, 6 * BS);
                let n = fs.copy_file_range(f, from, g, 0, len, 0).expect(&ctx);
                let want = len.min(model.len() as u64 - from.min(model.len() as u64));
                assert_eq!(n, want, "{ctx}: copied");
                let got = fs.read(g, 0, n as u32).expect(&ctx);
                assert_eq!(
                    got,
                    model[from as usize..(from + n) as usize],
                    "{ctx}: copy"
                );
            }
            3 => fs = remount(&dev, fs),
            _ => fs.sync().expect(&ctx),
        }
        assert_eq!(size(&fs, f), model.len() as u64, "{ctx}: size");
        same(&read_all(&fs, f), &model, &ctx);
        // SEEK_DATA never skips a non-zero byte.
        if let Some(first) = model.iter().position(|&b| b != 0) {
            let at = fs.seek(f, 0, SeekWhence::Data).expect(&ctx);
            assert!(
                at <= first as u64,
                "{ctx}: SEEK_DATA {at} skips data at {first}"
            );
        }
    }
    finish(&dev, fs);
}

/// Blocks preallocated and freed again within one delta must be free when the log is
/// replayed (the crash harness found them leaked when the Alloc record followed the Free).
#[test]
fn blocks_preallocated_and_freed_in_one_delta_replay_as_free() {
    let (dev, fs) = setup(4096);
    let f = new_file(&fs, "f");
    fs.sync().expect("sync");
    fs.fallocate(f, 0, 16 * BS, 0).expect("fallocate");
    fs.fallocate(f, 4 * BS, 8 * BS, PUNCH | KEEP)
        .expect("punch");
    let set = tuxfs_engine::fs::SetAttr {
        size: Some(2 * BS),
        ..Default::default()
    };
    fs.setattr(f, &set).expect("truncate");
    fs.sync().expect("sync");
    // A crash now: fsck replays the log on a copy of the disk as it is.
    let crashed = Arc::new(MemDevice::from_bytes(dev.snapshot()));
    fsck_clean(crashed.as_ref());
    let after = mount(&crashed, quiet());
    assert_eq!(sectors(&after, f), 2 * SECTORS);
    finish(&crashed, after);
    finish(&dev, fs);
}

/// A punch or zero range over a huge sparse range reserves for the blocks the file has,
/// not for the range: it works on a small filesystem.
#[test]
fn huge_ranges_over_holes_need_no_huge_reservation() {
    let (dev, fs) = setup(1024);
    let f = new_file(&fs, "f");
    fs.write(f, 0, b"start", false).expect("write");
    let set = tuxfs_engine::fs::SetAttr {
        size: Some(1 << 45),
        ..Default::default()
    };
    fs.setattr(f, &set).expect("truncate up");
    fs.write(f, (1 << 45) - 5, b"end!!", false).expect("write");
    fs.fallocate(f, 4096, (1 << 45) - 2 * BS, PUNCH | KEEP)
        .expect("punch a huge hole");
    fs.fallocate(f, 4096, 1 << 44, ZERO | KEEP)
        .expect_err("zero range of 2^44 bytes needs that space");
    assert_eq!(sectors(&fs, f), 2 * SECTORS);
    assert_eq!(fs.read(f, 0, 5).expect("read"), b"start");
    assert_eq!(
        fs.seek(f, BS as i64, SeekWhence::Data).expect("seek"),
        (1 << 45) - BS
    );
    finish(&dev, fs);
}

/// Found by the differential suite (seed 535012065762389656): `open(O_TRUNC)` of an empty
/// file left the blocks preallocated past its end with KEEP_SIZE; ext4 drops them on any
/// truncate, to the current size included.
#[test]
fn a_truncate_to_the_current_size_drops_preallocation_past_the_end() {
    let (dev, fs) = setup(4096);
    let f = new_file(&fs, "f");
    fs.write(f, 0, b"kept", false).expect("write");
    fs.fallocate(f, 1 << 20, 2 * BS, KEEP)
        .expect("preallocate past the end");
    assert_eq!(
        sectors(&fs, f),
        3 * BS / 512,
        "one data block and two preallocated"
    );
    let same = tuxfs_engine::fs::SetAttr {
        size: Some(4),
        ..Default::default()
    };
    fs.setattr(f, &same).expect("truncate to the current size");
    assert_eq!(size(&fs, f), 4);
    assert_eq!(
        sectors(&fs, f),
        BS / 512,
        "the preallocation is gone, the data stays"
    );
    assert_eq!(read_all(&fs, f), b"kept");
    fs.release(f).expect("release");
    finish(&dev, fs);
}
