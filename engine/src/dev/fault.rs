//! The fault-injecting device: seeded EIO, torn writes and lost unflushed writes.
//!
//! It wraps any device and models a disk with a volatile write cache: a write that
//! completes is kept here (reads see it), and reaches the inner device only when a flush
//! succeeds. [`FaultDevice::crash`] is a power cut: a random subset of the writes since the
//! last flush reaches the inner device, optionally one of the others torn, the rest is lost.
//!
//! Every decision comes from a [`SplitMix64`] seeded at construction; the seed is in the
//! `Debug` output and in every injected error, so a failing test names how to replay it.
//! Write buffers are copied at submit and their `Arc`s dropped then, as a completed write's
//! would be.

use crate::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::fmt;
use std::io;

use super::mem::span;
use super::record::SECTOR_BYTES;
use super::{AlignedBuf, BlockDevice, FailStop, ReadRequest, WriteRequest, check_range};
use crate::{Error, Result};

/// A small, fast, seedable PRNG (SplitMix64). Not for cryptography: for replayable tests.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator that replays the same sequence for the same seed.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (0 when `bound` is 0). The modulo bias is negligible for the
    /// small bounds tests use.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }

    /// True with probability `p` (clamped to 0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        // 53 random bits give a uniform f64 in [0, 1).
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// When a fault fires, per operation of one kind (reads, writes, flushes are numbered
/// separately from 0 in the order the device sees them; a batch counts each request).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Trigger {
    #[default]
    Never,
    /// Each operation independently, with this probability.
    Probability(f64),
    /// Exactly the operations with these numbers.
    At(Vec<u64>),
}

impl Trigger {
    fn fires(&self, n: u64, rng: &mut SplitMix64) -> bool {
        match self {
            Trigger::Never => false,
            Trigger::Probability(p) => rng.chance(*p),
            Trigger::At(ns) => ns.contains(&n),
        }
    }
}

/// Which faults to inject.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    /// A read fails with EIO (not sticky: reads may be retried).
    pub read_eio: Trigger,
    /// A write fails with EIO: nothing of it lands and the device fails (fail-stop).
    pub write_eio: Trigger,
    /// A flush fails with EIO: nothing reaches the inner device and the device fails.
    pub flush_eio: Trigger,
    /// A write is torn: a random prefix of its sectors lands, then EIO and fail-stop.
    pub torn_write: Trigger,
    /// At `crash()`, tear one of the writes that would otherwise be lost.
    pub crash_tears: bool,
}

/// What `crash()` did, by index among the writes since the last flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashReport {
    pub seed: u64,
    pub landed: Vec<usize>,
    pub lost: Vec<usize>,
    /// A write of which only the first `bytes` landed.
    pub torn: Option<(usize, usize)>,
}

/// A write completed but not yet flushed.
#[derive(Debug)]
struct Pending {
    offset: u64,
    data: Vec<u8>,
}

#[derive(Debug)]
struct State {
    plan: FaultPlan,
    rng: SplitMix64,
    ops: [u64; 3],
    pending: Vec<Pending>,
    fail: FailStop,
}

const OP_READ: usize = 0;
const OP_WRITE: usize = 1;
const OP_FLUSH: usize = 2;

/// A device that injects faults into another one.
pub struct FaultDevice {
    inner: Arc<dyn BlockDevice>,
    seed: u64,
    state: Mutex<State>,
}

impl fmt::Debug for FaultDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultDevice")
            .field("seed", &format_args!("{:#x}", self.seed))
            .field("inner", &self.inner)
            .finish()
    }
}

impl FaultDevice {
    /// Wraps `inner`, drawing every random decision from `seed`.
    pub fn new(inner: Arc<dyn BlockDevice>, plan: FaultPlan, seed: u64) -> FaultDevice {
        let state = State {
            plan,
            rng: SplitMix64::new(seed),
            ops: [0; 3],
            pending: Vec::new(),
            fail: FailStop::default(),
        };
        FaultDevice {
            inner,
            seed,
            state: Mutex::new(state),
        }
    }

    /// The seed, for replaying a failure.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Replaces the plan (e.g. to start failing after a clean setup phase).
    pub fn set_plan(&self, plan: FaultPlan) {
        self.lock().plan = plan;
    }

    /// The wrapped device.
    pub fn inner(&self) -> &Arc<dyn BlockDevice> {
        &self.inner
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn eio(&self, what: String) -> Error {
        Error::io(
            format!("{what} (injected, fault seed {:#x})", self.seed),
            io::Error::from_raw_os_error(libc::EIO),
        )
    }

    /// Power cut: lands a random subset of the unflushed writes on the inner device (and
    /// flushes it), tears one more if the plan says so, forgets the rest, and clears the
    /// failure as a reboot would.
    pub fn crash(&self) -> Result<CrashReport> {
        let mut st = self.lock();
        let pending = std::mem::take(&mut st.pending);
        let mut report = CrashReport {
            seed: self.seed,
            landed: Vec::new(),
            lost: Vec::new(),
            torn: None,
        };
        let mut writes = Vec::new();
        for (i, p) in pending.iter().enumerate() {
            if st.rng.chance(0.5) {
                report.landed.push(i);
                writes.push(WriteRequest {
                    offset: p.offset,
                    data: Arc::new(AlignedBuf::from_slice(&p.data)),
                });
            } else {
                report.lost.push(i);
            }
        }
        if st.plan.crash_tears && !report.lost.is_empty() {
            let i = report.lost[st.rng.below(report.lost.len() as u64) as usize];
            let keep = self.torn_prefix(&mut st.rng, pending[i].data.len());
            report.torn = Some((i, keep));
            writes.push(WriteRequest {
                offset: pending[i].offset,
                data: Arc::new(AlignedBuf::from_slice(&pending[i].data[..keep])),
            });
        }
        st.fail.reset();
        drop(st);
        self.inner.submit_writes(writes)?;
        self.inner.flush()?;
        Ok(report)
    }

    /// Bytes of a `len`-byte write that land when it tears: a whole number of sectors,
    /// fewer than all of them. The sector is the inner device's alignment if that is larger.
    fn torn_prefix(&self, rng: &mut SplitMix64, len: usize) -> usize {
        let unit = SECTOR_BYTES.max(self.inner.alignment());
        let sectors = len.div_ceil(unit) as u64;
        (rng.below(sectors) as usize * unit).min(len)
    }

    /// Decides the fate of one write: Ok(None) lands whole, Ok(Some(n)) tears after n
    /// bytes, Err fails with nothing landed.
    fn write_fate(&self, st: &mut State, len: usize) -> std::result::Result<Option<usize>, ()> {
        let n = st.ops[OP_WRITE];
        st.ops[OP_WRITE] += 1;
        let State { plan, rng, .. } = st;
        if plan.write_eio.fires(n, rng) {
            return Err(());
        }
        if plan.torn_write.fires(n, rng) {
            return Ok(Some(self.torn_prefix(rng, len)));
        }
        Ok(None)
    }
}

impl BlockDevice for FaultDevice {
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }

    fn alignment(&self) -> usize {
        self.inner.alignment()
    }

    fn read_batch(&self, reqs: &mut [ReadRequest<'_>]) -> Result<()> {
        let mut st = self.lock();
        for r in reqs.iter() {
            let n = st.ops[OP_READ];
            st.ops[OP_READ] += 1;
            let State { plan, rng, .. } = &mut *st;
            if plan.read_eio.fires(n, rng) {
                return Err(self.eio(format!("read #{n} at offset {}", r.offset)));
            }
        }
        self.inner.read_batch(reqs)?;
        // Completed but unflushed writes live here: overlay them, oldest first.
        for p in &st.pending {
            for r in reqs.iter_mut() {
                overlay(r, p);
            }
        }
        Ok(())
    }

    fn submit_writes(&self, reqs: Vec<WriteRequest>) -> Result<()> {
        for r in &reqs {
            check_range(
                self.inner.size_bytes(),
                self.inner.alignment(),
                r.offset,
                r.data.len(),
            )?;
        }
        let mut st = self.lock();
        st.fail.check()?;
        for r in reqs {
            let n = st.ops[OP_WRITE];
            let fate = self.write_fate(&mut st, r.data.len());
            let keep = match fate {
                Ok(None) => r.data.len(),
                Ok(Some(keep)) => keep,
                Err(()) => 0,
            };
            if keep > 0 {
                st.pending.push(Pending {
                    offset: r.offset,
                    data: r.data[..keep].to_vec(),
                });
            }
            if fate != Ok(None) {
                let kind = if keep > 0 { "torn write" } else { "write" };
                st.fail.fail(self.eio(format!(
                    "{kind} #{n} of {} bytes at offset {}",
                    r.data.len(),
                    r.offset
                )));
                break;
            }
        }
        Ok(())
    }

    fn wait_writes(&self) -> Result<()> {
        self.lock().fail.report()
    }

    fn flush(&self) -> Result<()> {
        let mut st = self.lock();
        st.fail.report()?;
        let n = st.ops[OP_FLUSH];
        st.ops[OP_FLUSH] += 1;
        let State { plan, rng, .. } = &mut *st;
        if plan.flush_eio.fires(n, rng) {
            st.fail.fail(self.eio(format!("flush #{n}")));
            return st.fail.report();
        }
        let writes = st.pending.drain(..).map(|p| WriteRequest {
            offset: p.offset,
            data: Arc::new(AlignedBuf::from_slice(&p.data)),
        });
        let res = self
            .inner
            .submit_writes(writes.collect())
            .and_then(|()| self.inner.flush());
        if let Err(e) = res {
            st.fail.fail(e);
            return st.fail.report();
        }
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        let st = self.lock();
        st.fail.check()?;
        // A discarded range holds no data: unflushed writes to it must not reappear later.
        // Keep it simple and exact: discard only when nothing unflushed overlaps.
        if st.pending.iter().any(|p| {
            p.offset < offset.saturating_add(len) && offset < p.offset + p.data.len() as u64
        }) {
            return Err(Error::invalid(format!(
                "discard at {offset} overlaps unflushed writes"
            )));
        }
        self.inner.discard(offset, len)
    }
}

/// Copies the part of pending write `p` that overlaps read `r` into the read's buffer.
fn overlay(r: &mut ReadRequest<'_>, p: &Pending) {
    let r_end = r.offset + r.buf.len() as u64;
    let p_end = p.offset + p.data.len() as u64;
    let (start, end) = (r.offset.max(p.offset), r_end.min(p_end));
    if start >= end {
        return;
    }
    let len = (end - start) as usize;
    r.buf[span(start - r.offset, len)].copy_from_slice(&p.data[span(start - p.offset, len)]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::mem::MemDevice;
    use crate::dev::read_at;

    fn setup(plan: FaultPlan, seed: u64) -> (Arc<MemDevice>, FaultDevice) {
        let inner = Arc::new(MemDevice::new(1 << 16));
        let dev = FaultDevice::new(inner.clone(), plan, seed);
        (inner, dev)
    }

    fn write(dev: &FaultDevice, block: u64, byte: u8) {
        let data = Arc::new(AlignedBuf::from_slice(&[byte; 4096]));
        dev.submit_writes(vec![WriteRequest {
            offset: block * 4096,
            data,
        }])
        .expect("submit");
    }

    #[test]
    fn splitmix_replays_and_spreads() {
        let (mut a, mut b) = (SplitMix64::new(42), SplitMix64::new(42));
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        assert!(
            xs.iter().all(|&x| x == b.next_u64()),
            "same seed, same sequence"
        );
        let mut c = SplitMix64::new(7);
        let heads = (0..10_000).filter(|_| c.chance(0.5)).count();
        assert!(
            (4_000..6_000).contains(&heads),
            "chance(0.5) gave {heads} of 10000 (seed 7)"
        );
    }

    #[test]
    fn unflushed_writes_stay_above_the_inner_device() {
        let (inner, dev) = setup(FaultPlan::default(), 1);
        write(&dev, 1, 0xAA);
        dev.wait_writes().expect("wait");
        assert_eq!(
            read_at(&dev, 4096, 4096).expect("read")[..],
            [0xAA; 4096],
            "reads see the cache"
        );
        assert_eq!(
            inner.snapshot()[4096],
            0,
            "not on the inner device before flush"
        );
        dev.flush().expect("flush");
        assert_eq!(inner.snapshot()[4096], 0xAA, "flush applies it");
    }

    #[test]
    fn write_eio_is_fail_stop() {
        let plan = FaultPlan {
            write_eio: Trigger::At(vec![1]),
            ..FaultPlan::default()
        };
        let (inner, dev) = setup(plan, 3);
        let reqs = (0..4).map(|b| WriteRequest {
            offset: b * 4096,
            data: Arc::new(AlignedBuf::from_slice(&[0x11; 4096])),
        });
        dev.submit_writes(reqs.collect())
            .expect("errors come from wait_writes");
        let err = dev.wait_writes().expect_err("injected");
        assert!(
            err.to_string().contains("0x3"),
            "error names the seed: {err}"
        );
        assert!(matches!(dev.flush(), Err(Error::DeviceFailed { .. })));
        assert!(matches!(
            dev.submit_writes(Vec::new()),
            Err(Error::DeviceFailed { .. })
        ));
        assert_eq!(
            read_at(&dev, 0, 4096).expect("read")[..],
            [0x11; 4096],
            "write #0 completed"
        );
        assert_eq!(
            read_at(&dev, 4096, 4096).expect("read")[..],
            [0; 4096],
            "write #1 failed"
        );
        assert_eq!(
            read_at(&dev, 8192, 4096).expect("read")[..],
            [0; 4096],
            "the batch stopped at #1"
        );
        assert!(
            inner.snapshot().iter().all(|&b| b == 0),
            "nothing was flushed"
        );
    }

    #[test]
    fn torn_write_lands_a_prefix_then_fails() {
        let plan = FaultPlan {
            torn_write: Trigger::At(vec![0]),
            ..FaultPlan::default()
        };
        for seed in 0..20 {
            let (_, dev) = setup(plan.clone(), seed);
            write(&dev, 0, 0x77);
            assert!(dev.wait_writes().is_err(), "seed {seed}");
            let back = read_at(&dev, 0, 4096).expect("read");
            let landed = back.iter().take_while(|&&b| b == 0x77).count();
            assert!(
                landed % SECTOR_BYTES == 0 && landed < 4096,
                "seed {seed}: {landed} bytes landed"
            );
            assert!(
                back[landed..].iter().all(|&b| b == 0),
                "seed {seed}: only a prefix lands"
            );
        }
    }

    #[test]
    fn flush_and_read_eio() {
        let plan = FaultPlan {
            flush_eio: Trigger::At(vec![1]),
            read_eio: Trigger::At(vec![0]),
            ..FaultPlan::default()
        };
        let (inner, dev) = setup(plan, 5);
        assert!(read_at(&dev, 0, 4096).is_err(), "read #0 fails");
        assert!(read_at(&dev, 0, 4096).is_ok(), "read errors are not sticky");
        write(&dev, 0, 1);
        dev.flush().expect("flush #0");
        write(&dev, 1, 2);
        assert!(
            matches!(dev.flush(), Err(Error::Io { .. })),
            "flush #1 fails"
        );
        assert!(matches!(dev.flush(), Err(Error::DeviceFailed { .. })));
        let img = inner.snapshot();
        assert_eq!(
            (img[0], img[4096]),
            (1, 0),
            "the failed flush applied nothing"
        );
    }

    #[test]
    fn crash_lands_a_subset_of_unflushed_writes() {
        for seed in 0..50u64 {
            let plan = FaultPlan {
                crash_tears: seed % 2 == 0,
                ..FaultPlan::default()
            };
            let (inner, dev) = setup(plan, seed);
            write(&dev, 0, 9);
            dev.flush().expect("flush");
            for b in 1..9 {
                write(&dev, b, b as u8);
            }
            let report = dev.crash().expect("crash");
            let img = inner.snapshot();
            assert_eq!(img[0], 9, "seed {seed}: flushed data survives");
            for i in 0..8 {
                let block = &img[(i + 1) * 4096..(i + 2) * 4096];
                let landed = block.iter().filter(|&&b| b == i as u8 + 1).count();
                let expect = match report.torn {
                    Some((t, bytes)) if t == i => bytes,
                    _ if report.landed.contains(&i) => 4096,
                    _ => 0,
                };
                assert_eq!(landed, expect, "seed {seed}: write {i} of {report:?}");
            }
            write(&dev, 10, 1);
            dev.flush().expect("usable after crash (reboot)");
        }
    }
}
