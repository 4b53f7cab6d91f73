//! The io_uring block device: many requests in flight, optional O_DIRECT.
//!
//! One ring and one table of in-flight operations live behind a mutex, so the device is
//! `Send + Sync` and every caller sees the same queue. Each in-flight operation owns a slot
//! of the table; the slot index is the SQE's `user_data`.
//!
//! **Invariant (buffer lifetime).** A write's `Arc<AlignedBuf>` stays in its slot until the
//! CQE that finishes it is reaped, and is dropped right then: that drop is what frees a
//! forked page. A read's buffer is borrowed by `read_batch`, which does not return until
//! every read it submitted has completed. `Drop` drains the ring before the table goes.
//!
//! **Invariant (bounded queue).** At most `queue_depth` operations are in flight, which is
//! never more than the submission queue holds, so pushing an SQE for a free slot (or
//! re-pushing one for a short transfer) cannot find the queue full.

use crate::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::fmt;
use std::io;

use io_uring::{IoUring, opcode, squeue, types};

use super::file::Backing;
use super::{AlignedBuf, BlockDevice, FailStop, ReadRequest, WriteRequest};
use crate::{Error, Result};

/// Largest single transfer handed to the kernel; longer buffers go in several pieces
/// through the short-transfer path (the SQE length field is 32 bits).
const MAX_TRANSFER_BYTES: usize = 1 << 30;

/// How often an operation completing with EINTR or EAGAIN is retried before it counts as
/// failed: such results are transient, but an unbounded retry could spin forever.
const MAX_RETRIES: u8 = 16;

/// One operation in flight.
enum Op {
    /// A write of `data[done..]` at `offset + done`.
    Write {
        offset: u64,
        data: Arc<AlignedBuf>,
        done: usize,
        retries: u8,
    },
    /// A read into request `index` of the current `read_batch`, `done` bytes so far.
    Read {
        index: usize,
        done: usize,
        retries: u8,
    },
    /// The flush barrier's fdatasync.
    Fsync,
}

/// A read completion, handed back to `read_batch`, which alone knows the buffers.
struct ReadDone {
    slot: usize,
    result: i32,
}

/// Everything behind the mutex.
struct State {
    ring: IoUring,
    fd: types::Fd,
    slots: Vec<Option<Op>>,
    free: Vec<usize>,
    writes_in_flight: usize,
    read_done: Vec<ReadDone>,
    fsync_result: Option<i32>,
    fail: FailStop,
}

/// A block device driven through io_uring.
pub struct UringDevice {
    backing: Backing,
    queue_depth: u32,
    state: Mutex<State>,
}

impl fmt::Debug for UringDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringDevice")
            .field("path", &self.backing.path())
            .field("size", &self.backing.size())
            .field("direct", &self.backing.direct())
            .field("queue_depth", &self.queue_depth)
            .finish()
    }
}

impl UringDevice {
    /// Checks that the kernel lets this process create a ring (io_uring may be disabled by
    /// sysctl, seccomp or an old kernel).
    pub fn probe(queue_depth: u32) -> io::Result<()> {
        IoUring::new(queue_depth.max(1)).map(drop)
    }

    /// A device over `backing` keeping at most `queue_depth` requests in flight.
    pub fn new(backing: Backing, queue_depth: u32) -> Result<UringDevice> {
        let ring =
            IoUring::new(queue_depth.max(1)).map_err(|e| Error::io("creating an io_uring", e))?;
        let depth = queue_depth.max(1).min(ring.params().sq_entries()) as usize;
        let state = State {
            fd: types::Fd(backing.fd()),
            ring,
            slots: (0..depth).map(|_| None).collect(),
            free: (0..depth).rev().collect(),
            writes_in_flight: 0,
            read_done: Vec::with_capacity(depth),
            fsync_result: None,
            fail: FailStop::default(),
        };
        Ok(UringDevice {
            backing,
            queue_depth: depth as u32,
            state: Mutex::new(state),
        })
    }

    /// The queue depth actually in force.
    pub fn queue_depth(&self) -> u32 {
        self.queue_depth
    }

    /// True when O_DIRECT is in force.
    pub fn direct(&self) -> bool {
        self.backing.direct()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the table inconsistent in a way that matters for
        // memory safety: slots only ever hold owned buffers. Keep going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn take_slot(&mut self, op: Op) -> usize {
        let slot = self
            .free
            .pop()
            .unwrap_or_else(|| unreachable!("caller waits for a free slot"));
        if matches!(op, Op::Write { .. }) {
            self.writes_in_flight += 1;
        }
        self.slots[slot] = Some(op);
        slot
    }

    fn release(&mut self, slot: usize) -> Option<Op> {
        let op = self.slots[slot].take();
        if matches!(op, Some(Op::Write { .. })) {
            self.writes_in_flight -= 1;
        }
        self.free.push(slot);
        op
    }

    fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Pushes an SQE. The bounded-queue invariant makes a full queue a bug.
    ///
    /// # Safety
    /// Every buffer `entry` points at must stay valid until its CQE is reaped.
    unsafe fn push(&mut self, entry: &squeue::Entry) {
        // SAFETY: forwarded from the caller's contract.
        let pushed = unsafe { self.ring.submission().push(entry) };
        assert!(
            pushed.is_ok(),
            "io_uring submission queue full despite the slot limit"
        );
    }

    /// (Re)submits the remaining part of the write in `slot`.
    fn push_write(&mut self, slot: usize) {
        let Some(Op::Write {
            offset, data, done, ..
        }) = &self.slots[slot]
        else {
            return;
        };
        let len = (data.len() - done).min(MAX_TRANSFER_BYTES) as u32;
        // SAFETY (pointer arithmetic): done < data.len(), so the pointer stays inside the buffer.
        let ptr = unsafe { data.as_ptr().add(*done) };
        let entry = opcode::Write::new(self.fd, ptr, len)
            .offset(offset + *done as u64)
            .build();
        // SAFETY: the Arc holding the buffer sits in `slots[slot]` and is removed only when
        // this SQE's completion is reaped (`on_write_done`) or the device is dropped after
        // draining, so the kernel never reads freed memory.
        unsafe { self.push(&entry.user_data(slot as u64)) };
    }

    fn push_fsync(&mut self) -> usize {
        let slot = self.take_slot(Op::Fsync);
        let entry = opcode::Fsync::new(self.fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        // SAFETY: an fsync references no memory.
        unsafe { self.push(&entry.user_data(slot as u64)) };
        slot
    }

    /// Hands queued SQEs to the kernel without waiting.
    fn submit(&mut self) -> io::Result<()> {
        loop {
            match self.ring.submit() {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return self.wait_one(),
                other => return other.map(drop),
            }
        }
    }

    /// Submits queued SQEs, waits for at least one completion and reaps all that are ready.
    fn wait_one(&mut self) -> io::Result<()> {
        loop {
            match self.ring.submit_and_wait(1) {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // EBUSY: completions must be reaped before more can be submitted.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => break,
                Err(e) => return Err(e),
                Ok(_) => break,
            }
        }
        self.reap();
        Ok(())
    }

    /// Reaps every ready completion. Writes and fsyncs are finished here; reads are handed
    /// to `read_batch` through `read_done`.
    fn reap(&mut self) {
        let ready: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (user_data, result) in ready {
            let slot = user_data as usize;
            match self.slots.get(slot) {
                Some(Some(Op::Write { .. })) => self.on_write_done(slot, result),
                Some(Some(Op::Read { .. })) => self.read_done.push(ReadDone { slot, result }),
                Some(Some(Op::Fsync)) => {
                    self.release(slot);
                    self.fsync_result = Some(result);
                }
                _ => unreachable!("completion for an empty io_uring slot {slot}"),
            }
        }
    }

    /// Finishes, continues (short write, EINTR) or fails the write in `slot`.
    fn on_write_done(&mut self, slot: usize, result: i32) {
        let Some(Op::Write {
            offset,
            data,
            done,
            retries,
        }) = &mut self.slots[slot]
        else {
            return;
        };
        let finished = match progress(result, retries) {
            Progress::Advance(n) => {
                *done += n;
                Ok(*done >= data.len())
            }
            Progress::Retry => Ok(false),
            Progress::Fail(e) => {
                let at = *offset + *done as u64;
                Err(Error::io(
                    format!("writing {} bytes at offset {at}", data.len() - *done),
                    e,
                ))
            }
        };
        match finished {
            Ok(false) => self.push_write(slot),
            // Dropping the Arc here, at completion, is what releases a forked page.
            Ok(true) => drop(self.release(slot)),
            Err(err) => {
                drop(self.release(slot));
                self.fail.fail(err);
            }
        }
    }

    /// Waits until no write is in flight. An error here means the ring itself failed.
    fn drain_writes(&mut self) -> io::Result<()> {
        while self.writes_in_flight > 0 {
            self.wait_one()?;
        }
        Ok(())
    }

    /// Records a failure of the ring itself (io_uring_enter) as a device failure.
    fn ring_failed(&mut self, e: io::Error) -> Error {
        self.fail.fail(Error::io("io_uring_enter", e));
        self.fail
            .report()
            .err()
            .unwrap_or_else(|| Error::invalid("io_uring failed"))
    }
}

/// What a completion result means for an operation.
enum Progress {
    Advance(usize),
    Retry,
    Fail(io::Error),
}

fn progress(result: i32, retries: &mut u8) -> Progress {
    let transient = result == -libc::EINTR || result == -libc::EAGAIN;
    if transient && *retries < MAX_RETRIES {
        *retries += 1;
        return Progress::Retry;
    }
    match usize::try_from(result) {
        Ok(0) => Progress::Fail(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "device returned 0 bytes (end of device)",
        )),
        Ok(n) => Progress::Advance(n),
        Err(_) => Progress::Fail(io::Error::from_raw_os_error(-result)),
    }
}

/// Reads of one `read_batch` call: which requests are sent and the first error.
struct ReadBatch<'r, 'b> {
    reqs: &'r mut [ReadRequest<'b>],
    next: usize,
    reads_in_flight: usize,
    error: Option<Error>,
}

impl ReadBatch<'_, '_> {
    fn finished(&self) -> bool {
        self.reads_in_flight == 0 && (self.next == self.reqs.len() || self.error.is_some())
    }

    /// Fills free slots with reads that have not been sent yet.
    fn fill(&mut self, st: &mut State) {
        while self.error.is_none() && self.next < self.reqs.len() && !st.free.is_empty() {
            let slot = st.take_slot(Op::Read {
                index: self.next,
                done: 0,
                retries: 0,
            });
            self.next += 1;
            self.reads_in_flight += 1;
            self.push_read(st, slot);
        }
    }

    /// (Re)submits the remaining part of the read in `slot`.
    fn push_read(&mut self, st: &mut State, slot: usize) {
        let Some(Op::Read { index, done, .. }) = st.slots[slot] else {
            return;
        };
        let req = &mut self.reqs[index];
        let len = (req.buf.len() - done).min(MAX_TRANSFER_BYTES) as u32;
        // SAFETY (pointer arithmetic): done < buf.len(), so the pointer stays inside the buffer.
        let ptr = unsafe { req.buf.as_mut_ptr().add(done) };
        let entry = opcode::Read::new(st.fd, ptr, len)
            .offset(req.offset + done as u64)
            .build();
        // SAFETY: the buffer is borrowed mutably by `reqs` for the whole `read_batch` call,
        // and `read_batch` returns only when `reads_in_flight` is zero, i.e. after this SQE's
        // completion is reaped (or aborts the process if the ring itself dies).
        unsafe { st.push(&entry.user_data(slot as u64)) };
    }

    /// Handles the read completions `reap` collected.
    fn complete(&mut self, st: &mut State) {
        for ReadDone { slot, result } in std::mem::take(&mut st.read_done) {
            let Some(Op::Read {
                index,
                done,
                retries,
            }) = &mut st.slots[slot]
            else {
                continue;
            };
            let (index, before) = (*index, *done);
            let finished = match progress(result, retries) {
                Progress::Advance(n) => {
                    *done += n;
                    *done >= self.reqs[index].buf.len()
                }
                Progress::Retry => false,
                Progress::Fail(e) => {
                    let offset = self.reqs[index].offset + before as u64;
                    self.error
                        .get_or_insert(Error::io(format!("reading at offset {offset}"), e));
                    true
                }
            };
            if finished {
                st.release(slot);
                self.reads_in_flight -= 1;
            } else {
                self.push_read(st, slot);
            }
        }
    }
}

impl BlockDevice for UringDevice {
    fn size_bytes(&self) -> u64 {
        self.backing.size()
    }

    fn alignment(&self) -> usize {
        self.backing.alignment()
    }

    fn read_batch(&self, reqs: &mut [ReadRequest<'_>]) -> Result<()> {
        for r in reqs.iter() {
            self.backing.check_read(r.offset, r.buf.len())?;
        }
        let mut st = self.lock();
        // Zero-length reads would complete with 0 and look like the end of the device.
        let mut nonempty: Vec<ReadRequest<'_>> = reqs
            .iter_mut()
            .filter(|r| !r.buf.is_empty())
            .map(|r| ReadRequest {
                offset: r.offset,
                buf: &mut *r.buf,
            })
            .collect();
        let mut batch = ReadBatch {
            reqs: &mut nonempty,
            next: 0,
            reads_in_flight: 0,
            error: None,
        };
        loop {
            batch.fill(&mut st);
            if batch.finished() {
                break;
            }
            if let Err(e) = st.wait_one() {
                // The kernel may still write into borrowed buffers that we would hand back to
                // the caller: nothing safe is left to do.
                crate::events::report(
                    crate::events::Level::Error,
                    &format!("io_uring_enter failed with reads in flight ({e}); aborting"),
                );
                std::process::abort();
            }
            batch.complete(&mut st);
        }
        batch.error.map_or(Ok(()), Err)
    }

    fn submit_writes(&self, reqs: Vec<WriteRequest>) -> Result<()> {
        for r in &reqs {
            self.backing.check_write(r.offset, r.data.len())?;
        }
        let mut st = self.lock();
        st.fail.check()?;
        for req in reqs.into_iter().filter(|r| !r.data.is_empty()) {
            while st.free.is_empty() {
                st.wait_one().map_err(|e| st.ring_failed(e))?;
            }
            // A write that failed meanwhile stops the batch: nothing after a failed write may
            // reach the disk. The error is reported by wait_writes/flush.
            if st.fail.has_failed() {
                return Ok(());
            }
            let slot = st.take_slot(Op::Write {
                offset: req.offset,
                data: req.data,
                done: 0,
                retries: 0,
            });
            st.push_write(slot);
        }
        st.submit().map_err(|e| st.ring_failed(e))
    }

    fn wait_writes(&self) -> Result<()> {
        let mut st = self.lock();
        st.drain_writes().map_err(|e| st.ring_failed(e))?;
        st.fail.report()
    }

    fn flush(&self) -> Result<()> {
        let mut st = self.lock();
        // Flush covers only reaped writes: an fsync is not ordered after writes in flight.
        st.drain_writes().map_err(|e| st.ring_failed(e))?;
        st.fail.report()?;
        st.fsync_result = None;
        st.push_fsync();
        while st.fsync_result.is_none() {
            st.wait_one().map_err(|e| st.ring_failed(e))?;
        }
        match st.fsync_result.take() {
            Some(r) if r < 0 => {
                let e = Error::io(
                    format!("fdatasync {}", self.backing.path().display()),
                    io::Error::from_raw_os_error(-r),
                );
                st.fail.fail(e);
                st.fail.report()
            }
            _ => Ok(()),
        }
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        let mut st = self.lock();
        st.fail.check()?;
        // Writes in flight to the range must not land after the hole is punched.
        st.drain_writes().map_err(|e| st.ring_failed(e))?;
        self.backing.discard(offset, len)
    }
}

impl Drop for UringDevice {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        while st.in_flight() > 0 {
            if st.wait_one().is_err() {
                // The kernel may still read these buffers: leak them rather than free them.
                std::mem::forget(std::mem::take(&mut st.slots));
                return;
            }
            st.read_done.clear();
        }
    }
}
