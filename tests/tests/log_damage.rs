//! Story: a filesystem commits several fsynced deltas and crashes, leaving them in the log.
//! Then the log is read through a device that fails one log block with EIO: the mount must
//! fail naming the block (a transient error is not the end of the log), fsck must fail as an
//! operational error, and the next mount without the fault recovers every fsynced delta.
//! Next a log block in the middle of the chain is damaged while later deltas verify: the
//! read-write mount refuses naming the block and fsck.tuxfs, a read-only mount serves the
//! state before the damage, fsck -n reports an error naming the block, -p leaves it, and
//! -y keeps the state before the damage so the image mounts again. Last, a
//! damaged last delta (nothing after it) is a torn tail and still recovers as before.

use std::ops::Range;
use std::sync::Arc;

use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::dev::{BlockDevice, ReadRequest, WriteRequest};
use tuxfs_engine::fs::{Filesystem, MountOptions};
use tuxfs_engine::io::BlockReader;
use tuxfs_engine::recovery::{read_log, read_superblock};
use tuxfs_engine::{Error, Result};
use tuxfs_fsck::{Mode, Options, check};
use tuxfs_tests::fixture::{SUPERUSER as ME, mem_device, mount};

const ROOT: u64 = 1;
const BS: u32 = 4096;
/// Deltas the story commits (one per fsync), after the mount's own.
const DELTAS: usize = 4;

/// A device that passes everything to `inner` except reads that start in `bad` (bytes),
/// which fail with EIO. (A read that only passes over `bad`, like the 128 KiB superblock
/// probe at offset 0, succeeds: the fault is met when recovery reads the block itself.)
#[derive(Debug)]
struct FailingReads {
    inner: Arc<MemDevice>,
    bad: Range<u64>,
}

impl BlockDevice for FailingReads {
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }
    fn alignment(&self) -> usize {
        self.inner.alignment()
    }
    fn read_batch(&self, reqs: &mut [ReadRequest<'_>]) -> Result<()> {
        for r in reqs.iter() {
            if self.bad.contains(&r.offset) {
                return Err(Error::io(
                    format!("reading {} bytes at offset {}", r.buf.len(), r.offset),
                    std::io::Error::from_raw_os_error(5),
                ));
            }
        }
        self.inner.read_batch(reqs)
    }
    fn submit_writes(&self, reqs: Vec<WriteRequest>) -> Result<()> {
        self.inner.submit_writes(reqs)
    }
    fn wait_writes(&self) -> Result<()> {
        self.inner.wait_writes()
    }
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
}

fn opts(read_only: bool) -> MountOptions {
    MountOptions {
        read_only,
        // No unify during the story: every delta stays in the log.
        unify_log_blocks: 1000,
        ..MountOptions::default()
    }
}

fn content(i: usize) -> Vec<u8> {
    format!("file {i}, acknowledged by fsync").into_bytes()
}

/// Mounts, writes and fsyncs one file per delta, and crashes (drops without unmount).
fn story() -> Arc<MemDevice> {
    let dev = mem_device(BS, 4096);
    let fs = mount(&dev, opts(false));
    for i in 0..DELTAS {
        let f = fs
            .create(ROOT, format!("f{i}").as_bytes(), 0o644, ME)
            .expect("create");
        fs.write(f.ino, 0, &content(i), false).expect("write");
        fs.fsync(f.ino, false).expect("fsync");
        fs.release(f.ino).expect("release");
    }
    drop(fs);
    dev
}

/// The first log block of each delta in the log, in order.
fn delta_heads(dev: &MemDevice) -> Vec<(u64, u64)> {
    let (sb, _) = read_superblock(dev).expect("superblock");
    let reader = BlockReader {
        dev,
        block_size: sb.block_size,
        block_count: sb.block_count,
    };
    let replay = read_log(&reader, &sb).expect("read the log");
    assert!(replay.damage.is_none() && !replay.dropped_unverified);
    replay
        .deltas
        .iter()
        .map(|d| (d.delta, d.blocks[0]))
        .collect()
}

/// The files f0..f{count} hold what was written, and no later file exists.
fn assert_files(fs: &Filesystem, count: usize) {
    for i in 0..DELTAS {
        let name = format!("f{i}");
        match fs.lookup(ROOT, name.as_bytes()) {
            Ok(a) if i < count => {
                let data = fs.read(a.ino, 0, 4096).expect("read");
                assert_eq!(data, content(i), "{name}");
            }
            Ok(_) => panic!("{name} exists but its delta should not be replayed"),
            Err(e) if i < count => panic!("{name} lost: {e}"),
            Err(_) => {}
        }
    }
}

fn flip_byte(dev: &MemDevice, block: u64, at: u64) {
    let off = block * u64::from(BS) + at;
    let mut buf = tuxfs_engine::dev::read_at(dev, off, 1).expect("read");
    buf[0] ^= 0x5a;
    tuxfs_engine::dev::write_at(dev, off, buf).expect("write");
}

fn fsck_n(dev: &dyn BlockDevice) -> std::result::Result<tuxfs_fsck::Report, String> {
    check(
        dev,
        &Options {
            mode: Mode::Check,
            check_data: false,
        },
    )
    .map_err(|e| e.to_string())
}

#[test]
fn eio_on_a_log_block_fails_the_mount_and_loses_nothing() {
    let dev = story();
    let heads = delta_heads(&dev);
    assert_eq!(heads.len(), DELTAS, "deltas in the log: {heads:?}");
    // Fail the first log block of a delta in the middle of the chain.
    let (delta, block) = heads[heads.len() / 2];
    let start = block * u64::from(BS);
    let failing = Arc::new(FailingReads {
        inner: dev.clone(),
        bad: start..start + u64::from(BS),
    });
    let err = Filesystem::mount(failing.clone(), opts(false))
        .expect_err("a mount that cannot read the log must fail");
    let msg = err.to_string();
    assert!(matches!(err, Error::Io { .. }), "{msg}");
    // The witness check of the delta before reads the block first.
    assert!(
        msg.contains(&format!("block {block}")) && msg.contains(&format!("delta {delta}")),
        "{msg}"
    );
    let err = Filesystem::mount(failing.clone(), opts(true))
        .expect_err("a read-only mount must fail too");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    // fsck: an operational error (exit 8), not "clean".
    let err = fsck_n(failing.as_ref()).expect_err("fsck must fail on EIO in the log");
    assert!(err.contains(&format!("block {block}")), "{err}");
    // Without the fault, every fsynced delta is there.
    let fs = Filesystem::mount(dev.clone(), opts(false)).expect("mount without the fault");
    assert_files(&fs, DELTAS);
    fs.unmount().expect("unmount");
    let report = fsck_n(dev.as_ref()).expect("fsck");
    assert_eq!(report.exit_code(), 0, "{:#?}", report.findings);
}

#[test]
fn eio_on_a_superblock_fails_the_mount() {
    let dev = story();
    let failing = Arc::new(FailingReads {
        inner: dev.clone(),
        bad: 0..512,
    });
    let err = Filesystem::mount(failing, opts(false))
        .expect_err("a mount that cannot read the superblocks must fail");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("superblocks"), "{err}");
}

#[test]
fn damaged_log_block_mid_chain_refuses_the_read_write_mount() {
    let dev = story();
    let heads = delta_heads(&dev);
    let middle = heads.len() / 2;
    let (delta, block) = heads[middle];
    // A byte in the records: the header checksum no longer matches.
    flip_byte(&dev, block, 100);
    let err = Filesystem::mount(dev.clone(), opts(false))
        .expect_err("the read-write mount must refuse a damaged log");
    let msg = err.to_string();
    assert_eq!(err.block(), Some(block), "{msg}");
    assert!(msg.contains("fsck.tuxfs"), "{msg}");
    assert!(msg.contains(&format!("delta {delta}")), "{msg}");
    // Read-only: the state before the damaged delta (file i was written by delta heads[i]:
    // the mount unified its own changes).
    let fs = Filesystem::mount(dev.clone(), opts(true)).expect("read-only mount");
    assert_files(&fs, middle);
    fs.unmount().expect("unmount");
    // fsck -n: an uncorrected error (exit 4) naming the block.
    let report = fsck_n(dev.as_ref()).expect("fsck runs");
    assert_eq!(report.exit_code(), 4, "{:#?}", report.findings);
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.block == Some(block) && f.what.contains("damaged, not torn")),
        "{:#?}",
        report.findings
    );
    // The image is unchanged by all this: the refusal wrote nothing.
    let err = Filesystem::mount(dev.clone(), opts(false)).expect_err("still refused");
    assert_eq!(err.block(), Some(block));
    // fsck -p will not drop deltas; -y does, keeping the state before the damage.
    let preen = check(
        dev.as_ref(),
        &Options {
            mode: Mode::Preen,
            check_data: false,
        },
    )
    .expect("fsck -p runs");
    assert_eq!(preen.exit_code(), 4, "{:#?}", preen.findings);
    let yes = check(
        dev.as_ref(),
        &Options {
            mode: Mode::Yes,
            check_data: false,
        },
    )
    .expect("fsck -y runs");
    assert_eq!(yes.exit_code(), 1, "{:#?}", yes.findings);
    let fs = Filesystem::mount(dev.clone(), opts(false)).expect("mount after fsck -y");
    assert_files(&fs, middle);
    fs.unmount().expect("unmount");
}

#[test]
fn damaged_last_delta_is_a_torn_tail_and_recovers_as_before() {
    let dev = story();
    let heads = delta_heads(&dev);
    let (_, block) = *heads.last().expect("deltas");
    flip_byte(&dev, block, 100);
    let fs = Filesystem::mount(dev.clone(), opts(false)).expect("a torn tail mounts");
    assert_files(&fs, DELTAS - 1);
    fs.unmount().expect("unmount");
    let report = fsck_n(dev.as_ref()).expect("fsck");
    assert_eq!(report.exit_code(), 0, "{:#?}", report.findings);
}
