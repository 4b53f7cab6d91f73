//! The log-writes device: crash injection on a real mount.
//!
//! [`LogWritesDevice`] wraps any [`BlockDevice`]. Every write and flush goes to the inner
//! device unchanged and is also appended, in submission order, to a log file in the
//! `TUXRLOG1` format of [`super::record`]. Replaying a prefix of that log over the base image
//! ([`super::replay`], the `tuxfs-replay` command) rebuilds the device as of any event: every
//! flush point is an image a power cut could have left, and a random subset of the writes
//! after a flush is what a volatile disk cache could have kept.
//!
//! # Files
//!
//! - `FILE.base`: a copy of the device taken when the wrapper is created, before any write
//!   passes through it. Sparse: all-zero [`ZERO_RUN_BYTES`] pieces are skipped and the length
//!   is set with `set_len`, so a fresh 4 GiB image costs only its used blocks.
//! - `FILE`: the log. Its header gives the device size, and its first record (kind 3, see
//!   [`super::record`]) holds the crc32 of the whole base image, so replay refuses a base that
//!   is not the one the log was recorded over. Both files are created with `create_new`:
//!   an existing log (evidence of an earlier run) is never overwritten.
//!
//! # Invariants
//!
//! - **Order.** A write is appended to the log under the same lock as its submission to the
//!   inner device, so the log order is the submission order, across threads too.
//! - **A flush record covers what the inner flush covered.** `flush` holds the lock while the
//!   inner device flushes, so no write can slip in between; the flush record is appended
//!   only after the inner flush succeeded, and only the writes logged before it precede it.
//!   A failed inner flush is not logged (the writes before it stay "unflushed").
//! - **The log is never ahead of the device.** Records are buffered in memory; at each flush
//!   the buffer (ending with the flush record) is written and `fdatasync`ed before `flush`
//!   returns. A crash of the process (or of the machine) can lose only records after the last
//!   synced flush, which describe writes a crash may lose anyway; if it leaves a record half
//!   written, that record fails its crc and readers take it as the end of the log.
//! - **Bounded memory.** Between flushes the buffer is written out (without a sync) whenever
//!   it exceeds [`SPILL_BYTES`].
//! - **Fail-stop.** If the log cannot be written, the device fails like a device whose write
//!   failed: the error is reported by the next `wait_writes`/`flush`, and every later write
//!   and flush is refused. A log with a hole would silently replay the wrong image.
//!
//! Discards pass through and are not logged: after a discard the range's content is
//! undefined, so the replayed image, which keeps the old bytes, is one allowed outcome.

use crate::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{encode_header, push_base_record, push_flush_record, push_write_record};
use super::{AlignedBuf, BlockDevice, FailStop, ReadRequest, WriteRequest};
use crate::{Error, Result};

/// Log bytes buffered between flushes before they are written out (not synced).
pub const SPILL_BYTES: usize = 8 << 20;
/// Granularity of the sparse copies: all-zero pieces of this size are not written.
pub const ZERO_RUN_BYTES: usize = 4096;
/// Bytes read at once while copying an image.
const COPY_CHUNK_BYTES: usize = 1 << 20;

/// The base image that goes with log `log`: `log` with `.base` appended to its name.
pub fn base_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_os_string();
    name.push(".base");
    PathBuf::from(name)
}

/// A device that passes everything to `inner` and logs writes and flushes to a file.
#[derive(Debug)]
pub struct LogWritesDevice {
    inner: Arc<dyn BlockDevice>,
    path: PathBuf,
    state: Mutex<LogState>,
}

#[derive(Debug)]
struct LogState {
    file: File,
    /// Encoded records not yet written to `file`.
    buf: Vec<u8>,
    /// Events (writes and flushes) logged so far.
    events: u64,
    fail: FailStop,
}

impl LogWritesDevice {
    /// Copies `inner` to `base_path(log)`, starts the log at `log` (both must not exist),
    /// and returns the wrapper. Nothing may write to `inner` except through the wrapper
    /// from now on.
    pub fn create(inner: impl Into<Arc<dyn BlockDevice>>, log: &Path) -> Result<LogWritesDevice> {
        let inner = inner.into();
        let base = base_path(log);
        let crc = copy_device_sparse(inner.as_ref(), &base)?;
        let file = match start_log(log, inner.size_bytes(), crc) {
            Ok(file) => file,
            Err(e) => {
                // The base alone is useless; an existing log was not touched.
                let _ = std::fs::remove_file(&base);
                return Err(e);
            }
        };
        Ok(LogWritesDevice {
            inner,
            path: log.to_path_buf(),
            state: Mutex::new(LogState {
                file,
                buf: Vec::new(),
                events: 0,
                fail: FailStop::default(),
            }),
        })
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.path
    }

    /// Events (writes and flushes) logged so far.
    pub fn event_count(&self) -> u64 {
        self.lock().events
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn log_error(&self, e: std::io::Error) -> Error {
        Error::io(format!("appending to write log {}", self.path.display()), e)
    }
}

impl LogState {
    /// Writes the buffered records to the file.
    fn spill(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes the buffered records and makes the file durable.
    fn sync(&mut self) -> std::io::Result<()> {
        self.spill()?;
        self.file.sync_data()
    }
}

impl BlockDevice for LogWritesDevice {
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }

    fn alignment(&self) -> usize {
        self.inner.alignment()
    }

    fn read_batch(&self, reqs: &mut [ReadRequest<'_>]) -> Result<()> {
        self.inner.read_batch(reqs)
    }

    fn submit_writes(&self, reqs: Vec<WriteRequest>) -> Result<()> {
        let mut st = self.lock();
        st.fail.check()?;
        // Keep our own references: the inner device drops its own at completion.
        let logged = reqs.clone();
        // A refused batch was not submitted at all (see `check_range`), so it is not logged.
        self.inner.submit_writes(reqs)?;
        for r in &logged {
            if let Err(e) = push_write_record(&mut st.buf, r.offset, &r.data) {
                st.fail.fail(e);
                return Ok(());
            }
            st.events += 1;
        }
        drop(logged);
        if st.buf.len() > SPILL_BYTES
            && let Err(e) = st.spill()
        {
            // Reported by the next wait_writes/flush, as a failed queued write would be.
            let err = self.log_error(e);
            st.fail.fail(err);
        }
        Ok(())
    }

    fn wait_writes(&self) -> Result<()> {
        self.inner.wait_writes()?;
        self.lock().fail.report()
    }

    fn flush(&self) -> Result<()> {
        let mut st = self.lock();
        st.fail.report()?;
        // Under the lock: every write logged so far was submitted before this inner flush,
        // and none can be submitted until the flush record follows them.
        self.inner.flush()?;
        push_flush_record(&mut st.buf);
        st.events += 1;
        if let Err(e) = st.sync() {
            let err = self.log_error(e);
            st.fail.fail(err);
            return st.fail.report();
        }
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.lock().fail.check()?;
        self.inner.discard(offset, len)
    }
}

impl Drop for LogWritesDevice {
    fn drop(&mut self) {
        // Keep the unflushed tail too (best effort): replaying subsets of it is the point.
        let st = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if !st.fail.has_failed() {
            let _ = st.sync();
        }
    }
}

/// Creates the log file (refused if it exists) with its header and base record, durable.
fn start_log(log: &Path, size_bytes: u64, base_crc: u32) -> Result<File> {
    let ctx = || format!("creating write log {}", log.display());
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .open(log)
        .map_err(|e| Error::io(ctx(), e))?;
    let mut start = encode_header(size_bytes);
    push_base_record(&mut start, base_crc);
    file.write_all(&start).map_err(|e| Error::io(ctx(), e))?;
    file.sync_data().map_err(|e| Error::io(ctx(), e))?;
    sync_parent(log)?;
    Ok(file)
}

/// Copies the whole of `dev` to a new file at `out` (refused if it exists), skipping
/// all-zero pieces, and makes it durable. Returns the crc32 of the device's bytes.
pub fn copy_device_sparse(dev: &dyn BlockDevice, out: &Path) -> Result<u32> {
    let ctx = || format!("creating base image {}", out.display());
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| Error::io(ctx(), e))?;
    let copied = copy_sparse(dev.size_bytes(), &file, out, |offset, buf| {
        dev.read_batch(&mut [ReadRequest { offset, buf }])
    })
    .and_then(|crc| {
        file.sync_all().map_err(|e| Error::io(ctx(), e))?;
        sync_parent(out)?;
        Ok(crc)
    });
    if copied.is_err() {
        // A partial copy must not pass for a base image.
        let _ = std::fs::remove_file(out);
    }
    copied
}

/// Copies `size` bytes, read piece by piece through `read(offset, buf)` (which fills
/// `buf`), into `file` (named `path` in errors): all-zero [`ZERO_RUN_BYTES`] pieces are
/// skipped and the length is set at the end, so the copy is sparse. Returns the crc32 of all
/// `size` bytes.
pub(crate) fn copy_sparse(
    size: u64,
    file: &File,
    path: &Path,
    mut read: impl FnMut(u64, &mut AlignedBuf) -> Result<()>,
) -> Result<u32> {
    let mut crc = crc32fast::Hasher::new();
    let mut buf = AlignedBuf::zeroed(0);
    let mut offset = 0u64;
    while offset < size {
        let len = (size - offset).min(COPY_CHUNK_BYTES as u64) as usize;
        if buf.len() != len {
            buf = AlignedBuf::zeroed(len);
        }
        read(offset, &mut buf)?;
        crc.update(&buf);
        write_non_zero(file, offset, &buf)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        offset += len as u64;
    }
    file.set_len(size)
        .map_err(|e| Error::io(format!("sizing {}", path.display()), e))?;
    Ok(crc.finalize())
}

/// Writes the runs of `chunk` that are not all zero at `offset + their position`.
fn write_non_zero(file: &File, offset: u64, chunk: &[u8]) -> std::io::Result<()> {
    let mut run_start: Option<usize> = None;
    let mut pos = 0;
    for piece in chunk.chunks(ZERO_RUN_BYTES) {
        let zero = piece.iter().all(|&b| b == 0);
        match (zero, run_start) {
            (false, None) => run_start = Some(pos),
            (true, Some(start)) => {
                file.write_all_at(&chunk[start..pos], offset + start as u64)?;
                run_start = None;
            }
            _ => {}
        }
        pos += piece.len();
    }
    if let Some(start) = run_start {
        file.write_all_at(&chunk[start..], offset + start as u64)?;
    }
    Ok(())
}

/// fsyncs the directory holding `path`, so a newly created file's name is durable too.
fn sync_parent(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::dev::mem::MemDevice;
    use crate::dev::record::{Event, RecordLog, RecordingDevice};
    use crate::dev::replay::scan_log;
    use crate::dev::{read_at, write_at};

    const DEV_BYTES: usize = 1 << 20;

    fn req(offset: u64, byte: u8, len: usize) -> WriteRequest {
        WriteRequest {
            offset,
            data: Arc::new(AlignedBuf::from_slice(&vec![byte; len])),
        }
    }

    /// A memory device with some bytes already on it (the base), wrapped.
    fn setup(dir: &Path) -> (Arc<MemDevice>, LogWritesDevice, Vec<u8>) {
        let mut base = vec![0u8; DEV_BYTES];
        base[8192..8192 + 100].fill(7);
        base[DEV_BYTES - 1] = 9;
        let mem = Arc::new(MemDevice::from_bytes(base.clone()));
        let dev = LogWritesDevice::create(mem.clone() as Arc<dyn BlockDevice>, &dir.join("w.log"))
            .expect("create");
        (mem, dev, base)
    }

    /// w0(A@0, 1024) w1(B@4096, 512) F w3(C@0, 512) F w5(D@65536, 4096), not flushed.
    fn workload(dev: &LogWritesDevice) {
        dev.submit_writes(vec![req(0, b'A', 1024), req(4096, b'B', 512)])
            .expect("submit");
        dev.flush().expect("flush");
        dev.submit_writes(vec![req(0, b'C', 512)]).expect("submit");
        dev.flush().expect("flush");
        dev.submit_writes(vec![req(65536, b'D', 4096)])
            .expect("submit");
        dev.wait_writes().expect("wait");
    }

    fn expected_events() -> Vec<Event> {
        let w = |offset, byte, len| Event::Write {
            offset,
            data: vec![byte; len],
        };
        vec![
            w(0, b'A', 1024),
            w(4096, b'B', 512),
            Event::Flush,
            w(0, b'C', 512),
            Event::Flush,
            w(65536, b'D', 4096),
        ]
    }

    #[test]
    fn passes_everything_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mem, dev, _) = setup(dir.path());
        workload(&dev);
        assert_eq!(dev.size_bytes(), DEV_BYTES as u64);
        assert_eq!(dev.alignment(), mem.alignment());
        let via_wrapper = read_at(&dev, 0, DEV_BYTES).expect("read");
        let via_inner = read_at(mem.as_ref(), 0, DEV_BYTES).expect("read");
        assert!(via_wrapper == via_inner);
        assert_eq!(
            (via_inner[0], via_inner[512], via_inner[65536]),
            (b'C', b'A', b'D')
        );
        assert!(
            dev.submit_writes(vec![req(DEV_BYTES as u64, 1, 512)])
                .is_err(),
            "a write past the end is refused"
        );
        assert_eq!(dev.event_count(), 6, "a refused write is not logged");
    }

    #[test]
    fn log_round_trip_rebuilds_the_device() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mem, dev, base) = setup(dir.path());
        workload(&dev);
        let log_path = dev.log_path().to_path_buf();
        drop(dev);
        let log = RecordLog::load(&log_path).expect("load");
        assert_eq!(log.size_bytes, DEV_BYTES as u64);
        assert_eq!(log.events, expected_events());
        assert_eq!(log.base_crc, Some(crc32fast::hash(&base)));
        let base_file = std::fs::read(base_path(&log_path)).expect("read base");
        assert!(
            base_file == base,
            "the base file is the device before any write"
        );
        let replayed = RecordingDevice::from_log(base_file, log).expect("replay");
        let now = read_at(mem.as_ref(), 0, DEV_BYTES).expect("read");
        assert!(replayed.snapshot() == now[..]);
        assert_eq!(replayed.flush_points(), vec![3, 5]);
    }

    #[test]
    fn base_copy_is_sparse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, dev, _) = setup(dir.path());
        let meta = std::fs::metadata(base_path(dev.log_path())).expect("stat base");
        assert_eq!(meta.len(), DEV_BYTES as u64);
        // Two non-zero 4 KiB pieces; allow for filesystem allocation granularity.
        assert!(meta.blocks() * 512 <= 64 * 1024, "{} blocks", meta.blocks());
    }

    #[test]
    fn the_file_holds_every_flush_when_flush_returns_and_nothing_later() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, dev, _) = setup(dir.path());
        let path = dev.log_path().to_path_buf();
        dev.submit_writes(vec![req(0, 1, 512)]).expect("submit");
        assert!(scan_log(&path).expect("scan").events.is_empty(), "buffered");
        dev.flush().expect("flush");
        dev.submit_writes(vec![req(512, 2, 512)]).expect("submit");
        let scan = scan_log(&path).expect("scan");
        assert_eq!(scan.flush_points(), vec![2]);
        assert_eq!(
            scan.events.len(),
            2,
            "the write after the flush is not in the file yet"
        );
        assert_eq!(scan.tail, None);
        drop(dev);
        assert_eq!(
            scan_log(&path).expect("scan").events.len(),
            3,
            "drop writes the tail"
        );
    }

    /// A memory device whose flush fails while `fail` is set.
    #[derive(Debug)]
    struct FlakyFlush {
        mem: MemDevice,
        fail: AtomicBool,
    }

    impl BlockDevice for FlakyFlush {
        fn size_bytes(&self) -> u64 {
            self.mem.size_bytes()
        }
        fn alignment(&self) -> usize {
            1
        }
        fn read_batch(&self, reqs: &mut [ReadRequest<'_>]) -> Result<()> {
            self.mem.read_batch(reqs)
        }
        fn submit_writes(&self, reqs: Vec<WriteRequest>) -> Result<()> {
            self.mem.submit_writes(reqs)
        }
        fn wait_writes(&self) -> Result<()> {
            Ok(())
        }
        fn flush(&self) -> Result<()> {
            if self.fail.load(Ordering::Relaxed) {
                Err(Error::io("flush", std::io::Error::from_raw_os_error(5)))
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn a_failed_flush_is_not_logged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = Arc::new(FlakyFlush {
            mem: MemDevice::new(DEV_BYTES),
            fail: AtomicBool::new(false),
        });
        let dev =
            LogWritesDevice::create(inner.clone() as Arc<dyn BlockDevice>, &dir.path().join("l"))
                .expect("create");
        write_at(&dev, 0, AlignedBuf::from_slice(&[1; 512])).expect("write");
        inner.fail.store(true, Ordering::Relaxed);
        assert!(dev.flush().is_err());
        inner.fail.store(false, Ordering::Relaxed);
        dev.flush().expect("a later flush");
        let path = dev.log_path().to_path_buf();
        drop(dev);
        let log = RecordLog::load(&path).expect("load");
        assert_eq!(log.events.len(), 2, "{:?}", log.events);
        assert_eq!(log.events[1], Event::Flush);
    }

    #[test]
    fn a_torn_tail_ends_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, dev, _) = setup(dir.path());
        workload(&dev);
        let path = dev.log_path().to_path_buf();
        drop(dev);
        let bytes = std::fs::read(&path).expect("read log");
        let whole = scan_log(&path).expect("scan");
        assert_eq!(whole.events.len(), 6);
        let cut_path = dir.path().join("cut.log");
        // Every cut after the header: the intact prefix of events, the rest reported as a
        // torn tail unless the cut falls on a record boundary; never a panic.
        for cut in 28..bytes.len() {
            std::fs::write(&cut_path, &bytes[..cut]).expect("write cut");
            let scan = scan_log(&cut_path).expect("scan a cut log");
            assert!(scan.events.len() <= 6);
            assert_eq!(scan.events[..], whole.events[..scan.events.len()]);
            if let Some(tail) = &scan.tail {
                assert_eq!(tail.offset + tail.bytes, cut as u64);
                assert!(tail.reason.contains("record"), "{}", tail.reason);
            }
        }
        // A torn last record (garbage where its crc should be) is the end, not an error.
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        std::fs::write(&cut_path, &bad).expect("write bad");
        let scan = scan_log(&cut_path).expect("scan");
        assert_eq!(scan.events.len(), 5);
        assert!(scan.tail.expect("torn").reason.contains("checksum"));
        assert!(
            RecordLog::load(&cut_path).is_err(),
            "the strict reader refuses it"
        );
        // A damaged header is an error, not a torn tail.
        let mut bad = bytes;
        bad[3] ^= 1;
        std::fs::write(&cut_path, &bad).expect("write bad");
        assert!(scan_log(&cut_path).is_err());
    }

    #[test]
    fn an_existing_log_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w.log");
        std::fs::write(&path, b"evidence").expect("write");
        let mem: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(DEV_BYTES));
        let err = LogWritesDevice::create(mem.clone(), &path).expect_err("refused");
        assert!(err.to_string().contains("w.log"), "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), b"evidence");
        assert!(
            !base_path(&path).exists(),
            "the base made first is removed again"
        );
        std::fs::remove_file(&path).expect("remove");
        std::fs::write(base_path(&path), b"old base").expect("write");
        assert!(
            LogWritesDevice::create(mem, &path).is_err(),
            "an existing base too"
        );
    }
}
