//! The recording device: logs every write and flush, in order, for crash tests.
//!
//! Writes apply to a live in-memory image at once (so the engine reads back what it wrote)
//! and are appended to the event log. Because a flush covers only writes submitted before
//! it, every write before a [`Event::Flush`] is durable at that point; the writes after the
//! last flush are what a volatile disk cache may have lost, kept in any subset, or torn.
//! [`RecordingDevice::crash_image`] builds exactly those images.
//!
//! # Log file format (version 1)
//!
//! All integers little-endian. A 28-byte header, then records until the end of the file:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `TUXRLOG1` |
//! | 8 | 4 | version, 1 |
//! | 12 | 4 | reserved, 0 |
//! | 16 | 8 | device size in bytes: every write must lie inside it |
//! | 24 | 4 | crc32 of bytes 0..24 |
//!
//! Each record: kind `u8` (1 write, 2 flush, 3 base), 3 reserved zero bytes, data length
//! `u32`, offset `u64`, the data, then a crc32 of everything before it in the record. A flush
//! has length and offset 0. Reading checks every length against the bytes left in the file and
//! the device size before allocating, so a damaged log gives an error, never a huge
//! allocation or a panic, and memory per record is bounded by the device size.
//!
//! ## Extension: the base record (kind 3)
//!
//! A log written while a real device is in use ([`super::logwrites::LogWritesDevice`]) must
//! say which image its writes apply to. It may start with one base record: kind 3, offset 0,
//! 4 bytes of data holding the crc32 (`crc32fast`, IEEE) of all `device size` bytes of the
//! base image. Only record 0 may be a base record; it is not an event, so event numbers
//! (and flush points) count writes and flushes only. Logs without one (every log a
//! [`RecordingDevice`] saves) are unchanged, so the version stays 1; a reader older than this
//! extension refuses a log with a base record ("bad kind 3") rather than misreading it.
//!
//! ## Torn tails
//!
//! A log appended to while the system runs can end in a record that was only partly written
//! when the writer crashed. [`LogReader`] reports such a record as an error at its byte
//! offset; [`RecordLog::decode`] (strict) refuses the whole log, while the replay tools treat
//! the first record that does not verify as the end of the log (see
//! [`super::replay::scan_log`]).

use crate::sync::{Mutex, MutexGuard, PoisonError};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::mem::span;
use super::{BlockDevice, ReadRequest, WriteRequest, check_range};
use crate::{Error, Result};

/// Unit of a torn write: what a disk writes atomically.
pub const SECTOR_BYTES: usize = 512;

/// One logged operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A write as submitted.
    Write { offset: u64, data: Vec<u8> },
    /// A flush call: every write before it is durable.
    Flush,
}

/// A write that only partly reached the disk: its first `sectors` sectors
/// ([`SECTOR_BYTES`] each) landed, the rest did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornWrite {
    /// Index of the write in the event log.
    pub event: usize,
    /// Sectors of it that landed.
    pub sectors: usize,
}

/// An event log with the size of the device it was recorded on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordLog {
    pub size_bytes: u64,
    /// crc32 of the base image, when the log names it (a base record, see the module doc).
    pub base_crc: Option<u32>,
    pub events: Vec<Event>,
}

/// A device that logs writes and flushes over an in-memory image.
#[derive(Debug)]
pub struct RecordingDevice {
    size: u64,
    inner: Mutex<Recording>,
}

#[derive(Debug)]
struct Recording {
    base: Vec<u8>,
    live: Vec<u8>,
    events: Vec<Event>,
}

fn apply(image: &mut [u8], offset: u64, data: &[u8]) {
    image[span(offset, data.len())].copy_from_slice(data);
}

impl RecordingDevice {
    /// Starts recording over `image` (the state before the first event).
    pub fn new(image: Vec<u8>) -> RecordingDevice {
        let size = image.len() as u64;
        let inner = Recording {
            live: image.clone(),
            base: image,
            events: Vec::new(),
        };
        RecordingDevice {
            size,
            inner: Mutex::new(inner),
        }
    }

    /// A device whose base is `base` and whose log is `log` (e.g. read back from a file).
    pub fn from_log(base: Vec<u8>, log: RecordLog) -> Result<RecordingDevice> {
        if log.size_bytes != base.len() as u64 {
            return Err(Error::invalid(format!(
                "log recorded on a {}-byte device, base image has {} bytes",
                log.size_bytes,
                base.len()
            )));
        }
        if let Some(expected) = log.base_crc {
            let got = crc32fast::hash(&base);
            if got != expected {
                return Err(Error::invalid(format!(
                    "the base image has crc32 {got:#010x}, the log was recorded over {expected:#010x}"
                )));
            }
        }
        let dev = RecordingDevice::new(base);
        {
            let mut rec = dev.lock();
            for event in log.events {
                if let Event::Write { offset, data } = &event {
                    check_range(dev.size, 1, *offset, data.len())?;
                    apply(&mut rec.live, *offset, data);
                }
                rec.events.push(event);
            }
        }
        Ok(dev)
    }

    fn lock(&self) -> MutexGuard<'_, Recording> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every event so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// Number of events so far.
    pub fn event_count(&self) -> usize {
        self.lock().events.len()
    }

    /// The log, for saving.
    pub fn log(&self) -> RecordLog {
        RecordLog {
            size_bytes: self.size,
            base_crc: None,
            events: self.events(),
        }
    }

    /// The current image (every write applied).
    pub fn snapshot(&self) -> Vec<u8> {
        self.lock().live.clone()
    }

    /// The base image with the first `n` events applied (`n` is clamped to the log length).
    pub fn image_at(&self, n: usize) -> Vec<u8> {
        let rec = self.lock();
        let mut image = rec.base.clone();
        for event in rec.events.iter().take(n) {
            if let Event::Write { offset, data } = event {
                apply(&mut image, *offset, data);
            }
        }
        image
    }

    /// Event counts just after each flush: the images every flush made durable.
    pub fn flush_points(&self) -> Vec<usize> {
        let rec = self.lock();
        rec.events
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e, Event::Flush))
            .map(|(i, _)| i + 1)
            .collect()
    }

    /// Indices of the writes among the first `at` events that come after the last flush
    /// among them: the writes a crash at `at` may lose.
    pub fn writes_since_last_flush(&self, at: usize) -> Vec<usize> {
        let rec = self.lock();
        let at = at.min(rec.events.len());
        let start = last_flush_point(&rec.events[..at]);
        (start..at)
            .filter(|&i| matches!(rec.events[i], Event::Write { .. }))
            .collect()
    }

    /// The image after a crash at event count `at`: everything up to the last flush before
    /// `at`, then of the writes after it only those in `landed` (applied in log order), and
    /// optionally the first sectors of one more write, `torn`. Every index must name an
    /// unflushed write before `at`.
    pub fn crash_image(
        &self,
        at: usize,
        landed: &[usize],
        torn: Option<TornWrite>,
    ) -> Result<Vec<u8>> {
        let unflushed = self.writes_since_last_flush(at);
        let start = self.flush_point_before(at);
        for &i in landed.iter().chain(torn.as_ref().map(|t| &t.event)) {
            if !unflushed.contains(&i) {
                return Err(Error::invalid(format!(
                    "event {i} is not a write after the last flush before {at}"
                )));
            }
        }
        let mut image = self.image_at(start);
        let rec = self.lock();
        for &i in &unflushed {
            let Some(Event::Write { offset, data }) = rec.events.get(i) else {
                continue;
            };
            if landed.contains(&i) {
                apply(&mut image, *offset, data);
            } else if let Some(t) = torn.filter(|t| t.event == i) {
                let keep = t.sectors.saturating_mul(SECTOR_BYTES).min(data.len());
                apply(&mut image, *offset, &data[..keep]);
            }
        }
        Ok(image)
    }

    /// Event count just after the last flush among the first `at` events (0 if none).
    fn flush_point_before(&self, at: usize) -> usize {
        let rec = self.lock();
        last_flush_point(&rec.events[..at.min(rec.events.len())])
    }

    /// Writes the log to `path` (format in the module doc).
    pub fn save_log(&self, path: &Path) -> Result<()> {
        self.log().save(path)
    }
}

fn last_flush_point(events: &[Event]) -> usize {
    events
        .iter()
        .rposition(|e| matches!(e, Event::Flush))
        .map_or(0, |i| i + 1)
}

impl BlockDevice for RecordingDevice {
    fn size_bytes(&self) -> u64 {
        self.size
    }

    fn alignment(&self) -> usize {
        1
    }

    fn read_batch(&self, reqs: &mut [ReadRequest<'_>]) -> Result<()> {
        for r in reqs.iter() {
            check_range(self.size, 1, r.offset, r.buf.len())?;
        }
        let rec = self.lock();
        for r in reqs.iter_mut() {
            let len = r.buf.len();
            r.buf.copy_from_slice(&rec.live[span(r.offset, len)]);
        }
        Ok(())
    }

    fn submit_writes(&self, reqs: Vec<WriteRequest>) -> Result<()> {
        for r in &reqs {
            check_range(self.size, 1, r.offset, r.data.len())?;
        }
        let mut rec = self.lock();
        for r in reqs {
            apply(&mut rec.live, r.offset, &r.data);
            rec.events.push(Event::Write {
                offset: r.offset,
                data: r.data.to_vec(),
            });
        }
        Ok(())
    }

    fn wait_writes(&self) -> Result<()> {
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.lock().events.push(Event::Flush);
        Ok(())
    }
}

const LOG_MAGIC: [u8; 8] = *b"TUXRLOG1";
const LOG_VERSION: u32 = 1;
pub(crate) const LOG_HEADER_BYTES: u64 = 28;
const RECORD_HEAD_BYTES: usize = 16;
const KIND_WRITE: u8 = 1;
const KIND_FLUSH: u8 = 2;
const KIND_BASE: u8 = 3;

impl RecordLog {
    /// Writes the log to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let ctx = || format!("writing record log {}", path.display());
        let file = File::create(path).map_err(|e| Error::io(ctx(), e))?;
        let mut out = BufWriter::new(file);
        self.encode(&mut out)?;
        out.flush().map_err(|e| Error::io(ctx(), e))
    }

    /// Reads a log written by [`RecordLog::save`].
    pub fn load(path: &Path) -> Result<RecordLog> {
        let ctx = || format!("reading record log {}", path.display());
        let file = File::open(path).map_err(|e| Error::io(ctx(), e))?;
        let len = file.metadata().map_err(|e| Error::io(ctx(), e))?.len();
        Self::decode(&mut BufReader::new(file), len)
    }

    /// Encodes the log into `out`.
    pub fn encode(&self, out: &mut impl Write) -> Result<()> {
        let io = |e| Error::io("encoding record log", e);
        out.write_all(&encode_header(self.size_bytes)).map_err(io)?;
        let mut rec = Vec::new();
        if let Some(crc) = self.base_crc {
            push_base_record(&mut rec, crc);
        }
        for event in &self.events {
            match event {
                Event::Write { offset, data } => push_write_record(&mut rec, *offset, data)?,
                Event::Flush => push_flush_record(&mut rec),
            }
            out.write_all(&rec).map_err(io)?;
            rec.clear();
        }
        out.write_all(&rec).map_err(io)
    }

    /// Decodes a log of `len` bytes from `input`. Strict: any record that does not verify,
    /// including a torn last one, is an error.
    pub fn decode(input: &mut impl Read, len: u64) -> Result<RecordLog> {
        let mut reader = LogReader::new(input, len)?;
        let mut events = Vec::new();
        while let Some(event) = reader.next_event()? {
            events.push(event);
        }
        Ok(RecordLog {
            size_bytes: reader.size_bytes(),
            base_crc: reader.base_crc(),
            events,
        })
    }
}

/// The 28-byte file header for a device of `size_bytes`.
pub(crate) fn encode_header(size_bytes: u64) -> Vec<u8> {
    let mut header = Vec::with_capacity(LOG_HEADER_BYTES as usize);
    header.extend_from_slice(&LOG_MAGIC);
    header.extend_from_slice(&LOG_VERSION.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&size_bytes.to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(&header).to_le_bytes());
    header
}

/// Appends one record (head, data, crc) to `out`.
fn push_record(out: &mut Vec<u8>, kind: u8, offset: u64, data: &[u8]) -> Result<()> {
    let len =
        u32::try_from(data.len()).map_err(|_| Error::invalid("a logged write exceeds 4 GiB"))?;
    let start = out.len();
    out.reserve(RECORD_HEAD_BYTES + data.len() + 4);
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Appends a write record.
pub(crate) fn push_write_record(out: &mut Vec<u8>, offset: u64, data: &[u8]) -> Result<()> {
    push_record(out, KIND_WRITE, offset, data)
}

/// Appends a flush record.
pub(crate) fn push_flush_record(out: &mut Vec<u8>) {
    // Cannot fail: no data.
    let _ = push_record(out, KIND_FLUSH, 0, &[]);
}

/// Appends a base record naming the base image by its crc32.
pub(crate) fn push_base_record(out: &mut Vec<u8>, crc: u32) {
    // Cannot fail: 4 bytes of data.
    let _ = push_record(out, KIND_BASE, 0, &crc.to_le_bytes());
}

/// Reads a log one record at a time: memory per record is bounded by the device size and
/// by the bytes left in the file, whatever the record claims.
///
/// After the first error (a damaged or torn record) the reader returns that error's
/// position from [`LogReader::position`] and yields nothing more.
#[derive(Debug)]
pub struct LogReader<R> {
    input: R,
    size_bytes: u64,
    base_crc: Option<u32>,
    /// Length of the whole file.
    len: u64,
    /// Bytes of the file not read yet.
    left: u64,
    /// Records read so far (the base record included).
    records: usize,
    /// Events returned so far.
    events: usize,
    /// The first event, read ahead while looking for a base record.
    pending: Option<Result<Event>>,
    done: bool,
}

/// One decoded record.
enum Record {
    Base(u32),
    Event(Event),
}

impl<R: Read> LogReader<R> {
    /// Reads the header (and the base record, if the log has one) of a log of `len` bytes.
    /// Fails only when the header itself is damaged; a damaged first record is reported by
    /// the first [`LogReader::next_event`].
    pub fn new(mut input: R, len: u64) -> Result<LogReader<R>> {
        let size_bytes = decode_header(&mut input, len)?;
        let mut reader = LogReader {
            input,
            size_bytes,
            base_crc: None,
            len,
            left: len - LOG_HEADER_BYTES,
            records: 0,
            events: 0,
            pending: None,
            done: false,
        };
        match reader.next_record() {
            Ok(Some(Record::Base(crc))) => reader.base_crc = Some(crc),
            Ok(Some(Record::Event(e))) => reader.pending = Some(Ok(e)),
            Ok(None) => {}
            Err(e) => reader.pending = Some(Err(e)),
        }
        Ok(reader)
    }

    /// The size of the device the log was recorded on.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// The crc32 of the base image, when the log names it.
    pub fn base_crc(&self) -> Option<u32> {
        self.base_crc
    }

    /// Byte offset in the file of the next record (after an error: of the damaged record).
    pub fn position(&self) -> u64 {
        self.len - self.left
    }

    /// Events returned so far.
    pub fn events_read(&self) -> usize {
        self.events
    }

    /// Bytes of the file not consumed (after an error: the damaged tail).
    pub fn bytes_left(&self) -> u64 {
        self.left
    }

    /// The next event, `None` at the end of the file.
    pub fn next_event(&mut self) -> Result<Option<Event>> {
        if let Some(first) = self.pending.take() {
            if first.is_err() {
                self.done = true;
            } else {
                self.events += 1;
            }
            return first.map(Some);
        }
        match self.next_record() {
            Ok(Some(Record::Event(e))) => {
                self.events += 1;
                Ok(Some(e))
            }
            Ok(Some(Record::Base(_))) => {
                self.done = true;
                Err(log_err(format!(
                    "record {}: a base record after the first record",
                    self.records - 1
                )))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        if self.done || self.left == 0 {
            return Ok(None);
        }
        let n = self.records;
        let (record, used) = decode_record(&mut self.input, self.left, self.size_bytes, n)?;
        self.left -= used;
        self.records += 1;
        Ok(Some(record))
    }
}

fn log_err(what: impl Into<String>) -> Error {
    Error::invalid(format!("record log: {}", what.into()))
}

fn read_exact(input: &mut impl Read, buf: &mut [u8]) -> Result<()> {
    input
        .read_exact(buf)
        .map_err(|e| Error::io("reading record log", e))
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn decode_header(input: &mut impl Read, len: u64) -> Result<u64> {
    if len < LOG_HEADER_BYTES {
        return Err(log_err(format!("{len} bytes is shorter than the header")));
    }
    let mut h = [0u8; LOG_HEADER_BYTES as usize];
    read_exact(input, &mut h)?;
    if h[..8] != LOG_MAGIC {
        return Err(log_err("bad magic"));
    }
    if crc32fast::hash(&h[..24]) != le_u32(&h, 24) {
        return Err(log_err("header checksum mismatch"));
    }
    if le_u32(&h, 8) != LOG_VERSION {
        return Err(log_err(format!("unsupported version {}", le_u32(&h, 8))));
    }
    Ok(le_u64(&h, 16))
}

/// Decodes record number `n`, with `left` bytes left in the log. Returns it and its length.
fn decode_record(input: &mut impl Read, left: u64, size: u64, n: usize) -> Result<(Record, u64)> {
    let mut head = [0u8; RECORD_HEAD_BYTES];
    if left < RECORD_HEAD_BYTES as u64 + 4 {
        return Err(log_err(format!("record {n} truncated")));
    }
    read_exact(input, &mut head)?;
    let (kind, len, offset) = (head[0], le_u32(&head, 4) as usize, le_u64(&head, 8));
    let total = RECORD_HEAD_BYTES as u64 + len as u64 + 4;
    if total > left {
        return Err(log_err(format!(
            "record {n} claims {len} bytes, only {left} left"
        )));
    }
    if kind == KIND_WRITE && check_range(size, 1, offset, len).is_err() {
        return Err(log_err(format!(
            "record {n}: write of {len} bytes at {offset} outside the device"
        )));
    }
    let mut rest = vec![0u8; len + 4];
    read_exact(input, &mut rest)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    crc.update(&rest[..len]);
    if crc.finalize() != le_u32(&rest, len) {
        return Err(log_err(format!("record {n}: checksum mismatch")));
    }
    rest.truncate(len);
    let record = match (kind, len, offset) {
        (KIND_WRITE, _, _) => Record::Event(Event::Write { offset, data: rest }),
        (KIND_FLUSH, 0, 0) => Record::Event(Event::Flush),
        (KIND_BASE, 4, 0) if n == 0 => Record::Base(le_u32(&rest, 0)),
        _ => {
            return Err(log_err(format!(
                "record {n}: bad kind {kind}, or a flush or base record of the wrong shape"
            )));
        }
    };
    Ok((record, total))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::dev::AlignedBuf;

    fn write(dev: &RecordingDevice, offset: u64, byte: u8, len: usize) {
        let data = Arc::new(AlignedBuf::from_slice(&vec![byte; len]));
        dev.submit_writes(vec![WriteRequest { offset, data }])
            .expect("write");
    }

    /// Events: w0(A@0) w1(B@1024) F w3(C@0) w4(D@2048, 1536 bytes) F w6(E@512) w7(G@3072)
    fn sample() -> RecordingDevice {
        let dev = RecordingDevice::new(vec![0; 4096]);
        write(&dev, 0, b'A', 1024);
        write(&dev, 1024, b'B', 1024);
        dev.flush().expect("flush");
        write(&dev, 0, b'C', 512);
        write(&dev, 2048, b'D', 1536);
        dev.flush().expect("flush");
        write(&dev, 512, b'E', 512);
        write(&dev, 3072, b'G', 1024);
        dev
    }

    #[test]
    fn image_at_and_flush_points() {
        let dev = sample();
        assert_eq!(dev.event_count(), 8);
        assert_eq!(dev.flush_points(), vec![3, 6]);
        assert_eq!(dev.image_at(0), vec![0; 4096]);
        let img = dev.image_at(3);
        assert_eq!(
            (img[0], img[1023], img[1024], img[2048]),
            (b'A', b'A', b'B', 0)
        );
        let img = dev.image_at(6);
        assert_eq!(
            (img[0], img[512], img[2048], img[3583], img[3584]),
            (b'C', b'A', b'D', b'D', 0)
        );
        assert_eq!(dev.image_at(8), dev.snapshot());
        assert_eq!(dev.image_at(100), dev.snapshot(), "n is clamped");
    }

    #[test]
    fn writes_since_last_flush() {
        let dev = sample();
        assert_eq!(dev.writes_since_last_flush(8), vec![6, 7]);
        assert_eq!(dev.writes_since_last_flush(7), vec![6]);
        assert_eq!(dev.writes_since_last_flush(6), Vec::<usize>::new());
        assert_eq!(dev.writes_since_last_flush(5), vec![3, 4]);
        assert_eq!(dev.writes_since_last_flush(2), vec![0, 1]);
    }

    #[test]
    fn crash_images_from_subsets() {
        let dev = sample();
        let durable = dev.image_at(6);
        assert_eq!(dev.crash_image(8, &[], None).expect("none landed"), durable);
        let only_g = dev.crash_image(8, &[7], None).expect("subset");
        assert_eq!((only_g[512], only_g[3072]), (b'A', b'G'));
        let only_e = dev.crash_image(8, &[6], None).expect("subset");
        assert_eq!((only_e[512], only_e[3072]), (b'E', b'D'));
        assert_eq!(
            dev.crash_image(8, &[6, 7], None).expect("all"),
            dev.snapshot()
        );
        assert!(
            dev.crash_image(8, &[3], None).is_err(),
            "a flushed write is not unflushed"
        );
        assert!(
            dev.crash_image(8, &[2], None).is_err(),
            "a flush is not a write"
        );
        assert!(
            dev.crash_image(7, &[7], None).is_err(),
            "a write after the crash point"
        );
    }

    #[test]
    fn torn_write_lands_a_sector_prefix() {
        let dev = sample();
        // w4 is 1536 bytes (3 sectors) over the image at 3; tear it after 1 sector.
        let img = dev
            .crash_image(
                5,
                &[3],
                Some(TornWrite {
                    event: 4,
                    sectors: 1,
                }),
            )
            .expect("torn");
        assert_eq!(
            (img[0], img[2048], img[2559], img[2560]),
            (b'C', b'D', b'D', 0)
        );
        let none = dev
            .crash_image(
                5,
                &[],
                Some(TornWrite {
                    event: 4,
                    sectors: 0,
                }),
            )
            .expect("torn to nothing");
        assert_eq!(none, dev.image_at(3));
        let all = dev
            .crash_image(
                5,
                &[3],
                Some(TornWrite {
                    event: 4,
                    sectors: 99,
                }),
            )
            .expect("clamped");
        assert_eq!(all, dev.image_at(5));
    }

    #[test]
    fn log_file_round_trip() {
        let dev = sample();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rec.log");
        dev.save_log(&path).expect("save");
        let log = RecordLog::load(&path).expect("load");
        assert_eq!(log, dev.log());
        let again = RecordingDevice::from_log(vec![0; 4096], log).expect("replay");
        assert_eq!(again.snapshot(), dev.snapshot());
        assert_eq!(again.flush_points(), dev.flush_points());
        assert!(
            RecordingDevice::from_log(vec![0; 512], dev.log()).is_err(),
            "size mismatch"
        );
    }

    fn encoded(dev: &RecordingDevice) -> Vec<u8> {
        let mut bytes = Vec::new();
        dev.log().encode(&mut bytes).expect("encode");
        bytes
    }

    #[test]
    fn damaged_log_is_an_error() {
        let bytes = encoded(&sample());
        // Every single-byte corruption is caught by a checksum or a bound.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x41;
            let res = RecordLog::decode(&mut bad.as_slice(), bad.len() as u64);
            assert!(res.is_err(), "flipping byte {i} went unnoticed");
        }
        // Every truncation except at a record boundary is an error; none panics.
        for cut in 0..bytes.len() {
            let res = RecordLog::decode(&mut &bytes[..cut], cut as u64);
            if let Ok(log) = res {
                assert!(log.events.len() < 8, "a cut log lost events");
            }
        }
    }

    #[test]
    fn base_record_round_trip() {
        let dev = sample();
        let base = vec![0u8; 4096];
        let mut log = dev.log();
        log.base_crc = Some(crc32fast::hash(&base));
        let mut bytes = Vec::new();
        log.encode(&mut bytes).expect("encode");
        let back = RecordLog::decode(&mut bytes.as_slice(), bytes.len() as u64).expect("decode");
        assert_eq!(back, log);
        assert_eq!(back.events.len(), 8, "the base record is not an event");
        let again = RecordingDevice::from_log(base, back.clone()).expect("the right base");
        assert_eq!(again.snapshot(), dev.snapshot());
        let err = RecordingDevice::from_log(vec![1; 4096], back).expect_err("another base");
        assert!(err.to_string().contains("crc32"), "{err}");
        // A base record anywhere but first is refused.
        let mut twice = encoded(&dev);
        let mut rec = Vec::new();
        push_base_record(&mut rec, 7);
        twice.extend_from_slice(&rec);
        let err = RecordLog::decode(&mut twice.as_slice(), twice.len() as u64).expect_err("late");
        assert!(err.to_string().contains("record 8"), "{err}");
    }

    #[test]
    fn huge_claimed_length_does_not_allocate() {
        let dev = RecordingDevice::new(vec![0; 4096]);
        write(&dev, 0, 1, 16);
        let mut bytes = encoded(&dev);
        // Claim a 4 GiB write in the record header; the file holds 36 bytes of it.
        bytes[LOG_HEADER_BYTES as usize + 4..LOG_HEADER_BYTES as usize + 8]
            .copy_from_slice(&u32::MAX.to_le_bytes());
        let err =
            RecordLog::decode(&mut bytes.as_slice(), bytes.len() as u64).expect_err("bounded");
        assert!(err.to_string().contains("only"), "{err}");
    }
}
