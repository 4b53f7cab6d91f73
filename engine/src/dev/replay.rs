//! Replaying a write log file (from [`super::logwrites::LogWritesDevice`] or
//! [`super::record::RecordLog::save`]) into an image file, streaming: one record in memory
//! at a time, whatever the size of the log.
//!
//! Event numbers count writes and flushes from 0 in log order (the base record is not an
//! event). "The image at N" is the base with the first N events applied; a *flush point* is
//! an N just after a flush, an image a power cut could have left. With a crash subset, the
//! image at N is the image at the last flush point before N plus a seeded random subset of
//! the writes between that point and N, applied in log order: exactly
//! [`super::record::RecordingDevice::crash_image`] with `landed` = [`crash_subset`].
//!
//! A log that ends in a record that does not verify (a writer that crashed mid-append) is
//! read up to that record: [`LogScan::tail`] says where and why it stopped, and no event
//! past it is ever applied.

use std::fs::File;
use std::io::BufReader;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::fault::SplitMix64;
use super::logwrites::copy_sparse;
use super::record::{Event, LogReader};
use crate::{Error, Result};

/// One event of a log, without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSummary {
    Write { offset: u64, len: usize },
    Flush,
}

/// Where a log stopped being readable: the first record that did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Byte offset of that record in the file.
    pub offset: u64,
    /// Bytes from there to the end of the file, ignored.
    pub bytes: u64,
    /// What was wrong with it.
    pub reason: String,
}

/// Everything about a log except the written bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogScan {
    /// The size of the device (and of its base image).
    pub size_bytes: u64,
    /// crc32 of the base image, when the log names it.
    pub base_crc: Option<u32>,
    /// The intact events, in order.
    pub events: Vec<EventSummary>,
    /// Set when the log ends in a torn or damaged record.
    pub tail: Option<TornTail>,
}

impl LogScan {
    /// Event counts just after each flush.
    pub fn flush_points(&self) -> Vec<usize> {
        self.events
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e, EventSummary::Flush))
            .map(|(i, _)| i + 1)
            .collect()
    }

    /// The event count just after the last flush among the first `at` events (0 if none).
    pub fn flush_point_before(&self, at: usize) -> usize {
        let at = at.min(self.events.len());
        self.events[..at]
            .iter()
            .rposition(|e| matches!(e, EventSummary::Flush))
            .map_or(0, |i| i + 1)
    }

    /// Indices of the writes among the first `at` events after the last flush among them.
    pub fn writes_since_last_flush(&self, at: usize) -> Vec<usize> {
        let at = at.min(self.events.len());
        (self.flush_point_before(at)..at)
            .filter(|&i| matches!(self.events[i], EventSummary::Write { .. }))
            .collect()
    }
}

/// Reads the whole log at `path`, keeping only event summaries. Fails when the file cannot
/// be read or its header is damaged; a damaged record ends the log ([`LogScan::tail`]).
pub fn scan_log(path: &Path) -> Result<LogScan> {
    let mut reader = open_log(path)?;
    let mut events = Vec::new();
    let tail = loop {
        let at = reader.position();
        match reader.next_event() {
            Ok(Some(Event::Write { offset, data })) => events.push(EventSummary::Write {
                offset,
                len: data.len(),
            }),
            Ok(Some(Event::Flush)) => events.push(EventSummary::Flush),
            Ok(None) => break None,
            Err(e) => {
                break Some(TornTail {
                    offset: at,
                    bytes: reader.bytes_left(),
                    reason: what(&e),
                });
            }
        }
    };
    Ok(LogScan {
        size_bytes: reader.size_bytes(),
        base_crc: reader.base_crc(),
        events,
        tail,
    })
}

fn open_log(path: &Path) -> Result<LogReader<BufReader<File>>> {
    let ctx = || format!("reading write log {}", path.display());
    let file = File::open(path).map_err(|e| Error::io(ctx(), e))?;
    let len = file.metadata().map_err(|e| Error::io(ctx(), e))?.len();
    let reader = LogReader::new(BufReader::with_capacity(1 << 20, file), len)
        .map_err(|e| in_log(path, e))?;
    Ok(reader)
}

/// What went wrong, without the error kind's prefix (the log's own messages say enough).
fn what(e: &Error) -> String {
    match e {
        Error::Invalid { what } => what.clone(),
        other => other.to_string(),
    }
}

/// A log decoding error, naming the file.
fn in_log(path: &Path, e: Error) -> Error {
    match e {
        Error::Invalid { what } => Error::invalid(format!("{}: {what}", path.display())),
        other => other,
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct ReplayRequest<'a> {
    pub log: &'a Path,
    /// The base image (`FILE.base` for a log from the log-writes device).
    pub base: &'a Path,
    /// Events to apply.
    pub at: usize,
    /// Apply only a seeded random subset of the writes after the last flush before `at`.
    pub crash_subset: Option<u64>,
    /// The image to write (created or truncated).
    pub out: &'a Path,
}

/// What was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOutcome {
    /// The last flush point at or before `at`.
    pub flush_point: usize,
    /// The writes between that flush point and `at`.
    pub unflushed: Vec<usize>,
    /// Those of them that were applied (all of them without a crash subset).
    pub landed: Vec<usize>,
}

/// The writes among `unflushed` that land in the crash image of `seed`: each one lands
/// with probability 1/2, decided by splitmix64 from `seed` in order.
pub fn crash_subset(unflushed: &[usize], seed: u64) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed);
    unflushed
        .iter()
        .copied()
        .filter(|_| rng.next_u64() & 1 == 1)
        .collect()
}

/// Builds the image of `req` (see the module doc). The base must have the device's size
/// and, when the log names it, its crc32; `at` must not exceed the intact events.
pub fn replay(req: &ReplayRequest<'_>) -> Result<ReplayOutcome> {
    let scan = scan_log(req.log)?;
    if req.at > scan.events.len() {
        let tail = match &scan.tail {
            Some(t) => format!(
                " (it ends in {} bytes at offset {} that do not verify: {})",
                t.bytes, t.offset, t.reason
            ),
            None => String::new(),
        };
        return Err(Error::invalid(format!(
            "{}: event {} asked for, the log holds {} intact events{tail}",
            req.log.display(),
            req.at,
            scan.events.len()
        )));
    }
    let flush_point = scan.flush_point_before(req.at);
    let unflushed = scan.writes_since_last_flush(req.at);
    let landed = match req.crash_subset {
        Some(seed) => crash_subset(&unflushed, seed),
        None => unflushed.clone(),
    };
    copy_base(req.base, req.out, scan.size_bytes, scan.base_crc)?;
    apply_events(req, flush_point, &landed)?;
    Ok(ReplayOutcome {
        flush_point,
        unflushed,
        landed,
    })
}

/// Copies the base image to `out` (sparse), checking its size and crc32.
fn copy_base(base: &Path, out: &Path, size: u64, crc: Option<u32>) -> Result<()> {
    let ctx = |what: &str, p: &Path| format!("{what} {}", p.display());
    let src = File::open(base).map_err(|e| Error::io(ctx("opening base image", base), e))?;
    let base_bytes = src
        .metadata()
        .map_err(|e| Error::io(ctx("reading base image", base), e))?
        .len();
    if base_bytes != size {
        return Err(Error::invalid(format!(
            "base image {} has {base_bytes} bytes, the log was recorded on a {size}-byte device",
            base.display()
        )));
    }
    let dst = File::create(out).map_err(|e| Error::io(ctx("creating image", out), e))?;
    let got = copy_sparse(size, &dst, out, |offset, buf| {
        src.read_exact_at(buf, offset)
            .map_err(|e| Error::io(ctx("reading base image", base), e))
    })?;
    if let Some(expected) = crc.filter(|&c| c != got) {
        drop(dst);
        let _ = std::fs::remove_file(out);
        return Err(Error::invalid(format!(
            "base image {} has crc32 {got:#010x}, the log was recorded over {expected:#010x}: \
             not the base of this log",
            base.display()
        )));
    }
    Ok(())
}

/// Applies to `req.out` every write before `flush_point`, then the writes in `landed`.
fn apply_events(req: &ReplayRequest<'_>, flush_point: usize, landed: &[usize]) -> Result<()> {
    let out = File::options()
        .write(true)
        .open(req.out)
        .map_err(|e| Error::io(format!("opening image {}", req.out.display()), e))?;
    let mut reader = open_log(req.log)?;
    for i in 0..req.at {
        let event = reader.next_event().map_err(|e| in_log(req.log, e))?;
        let Some(event) = event else {
            return Err(Error::invalid(format!(
                "{}: the log ended at event {i} (did it change while being replayed?)",
                req.log.display()
            )));
        };
        if let Event::Write { offset, data } = event
            && (i < flush_point || landed.contains(&i))
        {
            out.write_all_at(&data, offset)
                .map_err(|e| Error::io(format!("writing image {}", req.out.display()), e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::dev::logwrites::{LogWritesDevice, base_path};
    use crate::dev::mem::MemDevice;
    use crate::dev::record::RecordingDevice;
    use crate::dev::{AlignedBuf, BlockDevice, WriteRequest};

    const DEV_BYTES: usize = 64 * 1024;

    /// The same workload on a recording device (the reference) and through a log-writes
    /// device (the log under test), over the same non-zero base.
    fn both(dir: &Path) -> (RecordingDevice, std::path::PathBuf) {
        let mut base = vec![0u8; DEV_BYTES];
        base[100..300].fill(3);
        let rec = RecordingDevice::new(base.clone());
        let log = dir.join("w.log");
        let lw = LogWritesDevice::create(
            Arc::new(MemDevice::from_bytes(base)) as Arc<dyn BlockDevice>,
            &log,
        )
        .expect("create");
        let devs: [&dyn BlockDevice; 2] = [&rec, &lw];
        for dev in devs {
            for round in 0..5u8 {
                let reqs = (0..4u64)
                    .map(|i| WriteRequest {
                        offset: ((u64::from(round) * 7 + i * 5) % 15) * 4096,
                        data: Arc::new(AlignedBuf::from_slice(&[round * 16 + i as u8; 4096])),
                    })
                    .collect();
                dev.submit_writes(reqs).expect("submit");
                if round != 2 {
                    dev.flush().expect("flush");
                }
            }
            dev.submit_writes(vec![WriteRequest {
                offset: 0,
                data: Arc::new(AlignedBuf::from_slice(&[0xee; 1024])),
            }])
            .expect("submit");
        }
        drop(lw);
        (rec, log)
    }

    fn replay_to(log: &Path, at: usize, seed: Option<u64>, out: &Path) -> Result<ReplayOutcome> {
        replay(&ReplayRequest {
            log,
            base: &base_path(log),
            at,
            crash_subset: seed,
            out,
        })
    }

    #[test]
    fn every_prefix_matches_the_recording_device() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (rec, log) = both(dir.path());
        let scan = scan_log(&log).expect("scan");
        assert_eq!(scan.events.len(), rec.event_count());
        assert_eq!(scan.flush_points(), rec.flush_points());
        let out = dir.path().join("img");
        for at in 0..=scan.events.len() {
            let done = replay_to(&log, at, None, &out).expect("replay");
            assert_eq!(done.landed, done.unflushed);
            let img = std::fs::read(&out).expect("read image");
            assert!(img == rec.image_at(at), "image at {at} differs");
        }
    }

    #[test]
    fn crash_subsets_match_crash_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (rec, log) = both(dir.path());
        let out = dir.path().join("img");
        let events = rec.event_count();
        for seed in 0..20u64 {
            let at = (seed as usize * 7) % (events + 1);
            let done = replay_to(&log, at, Some(seed), &out).expect("replay");
            assert_eq!(done.unflushed, rec.writes_since_last_flush(at));
            assert_eq!(done.landed, crash_subset(&done.unflushed, seed));
            let want = rec
                .crash_image(at, &done.landed, None)
                .expect("crash image");
            let img = std::fs::read(&out).expect("read image");
            assert!(img == want, "seed {seed} at {at} differs");
        }
        // Same seed, same subset; some seed drops something.
        let unflushed: Vec<usize> = (0..16).collect();
        assert_eq!(crash_subset(&unflushed, 5), crash_subset(&unflushed, 5));
        assert!((0..8).any(|s| crash_subset(&unflushed, s).len() < 16));
    }

    #[test]
    fn clear_errors_on_bad_requests_and_damaged_logs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (rec, log) = both(dir.path());
        let out = dir.path().join("img");
        let events = rec.event_count();
        let err = replay_to(&log, events + 1, None, &out).expect_err("past the end");
        assert!(err.to_string().contains("intact events"), "{err}");

        // A base that is not this log's base.
        let other = dir.path().join("other.log");
        std::fs::copy(&log, &other).expect("copy");
        std::fs::write(base_path(&other), vec![1u8; DEV_BYTES]).expect("write");
        let err = replay_to(&other, 1, None, &out).expect_err("wrong base");
        assert!(
            err.to_string().contains("not the base of this log"),
            "{err}"
        );
        assert!(!out.exists(), "no half-made image is left behind");
        std::fs::write(base_path(&other), vec![0u8; 512]).expect("write");
        let err = replay_to(&other, 1, None, &out).expect_err("wrong size");
        assert!(err.to_string().contains("512 bytes"), "{err}");

        // Not a log at all, and a missing log.
        std::fs::write(&other, b"hello").expect("write");
        let err = scan_log(&other).expect_err("not a log");
        assert!(err.to_string().contains("other.log"), "{err}");
        assert!(scan_log(&dir.path().join("missing")).is_err());

        // A torn tail: replay up to it works, past it is refused with the reason.
        let bytes = std::fs::read(&log).expect("read");
        std::fs::write(&other, &bytes[..bytes.len() - 10]).expect("write");
        std::fs::copy(base_path(&log), base_path(&other)).expect("copy base");
        let scan = scan_log(&other).expect("scan");
        assert_eq!(scan.events.len(), events - 1);
        replay_to(&other, events - 1, None, &out).expect("up to the tail");
        let err = replay_to(&other, events, None, &out).expect_err("past the tail");
        assert!(err.to_string().contains("do not verify"), "{err}");
    }
}
