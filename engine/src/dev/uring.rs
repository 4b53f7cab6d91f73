//! The io_uring block device: many requests in flight, from many threads, optional O_DIRECT.
//!
//! One ring serves every caller. The table of in-flight operations lives behind a mutex, so
//! the device is `Send + Sync` and every caller sees the same queue; each in-flight
//! operation owns a slot of the table, and the slot index is the SQE's `user_data`.
//!
//! **Waiting without the lock.** A caller that needs completions (a read batch, a writer
//! waiting for a free slot, a drain, a flush) does not sleep in the kernel holding the
//! mutex. One caller at a time is the *kernel waiter*: it marks itself, drops the mutex,
//! sleeps in `io_uring_enter` until a completion arrives, takes the mutex again, reaps
//! every ready completion and wakes the others (a condition variable). The rest wait on
//! the condition variable, so while one thread sleeps in the kernel the others keep
//! submitting: reads of several threads, and reads beside a flush, are in flight together.
//! Only the kernel waiter, or a thread holding the mutex while there is none, reaps:
//! otherwise the waiter could sleep on a completion somebody else took. A thread enters
//! the kernel only while some operation's completion is still to come (in flight, not
//! reaped); completions already reaped for another read batch are that batch's to handle,
//! and handling them frees slots and wakes the waiters again.
//!
//! **Invariant (buffer lifetime).** A write's `Arc<AlignedBuf>` stays in its slot until the
//! CQE that finishes it is reaped, and is dropped right then: that drop is what frees a
//! forked page. A read's buffer is borrowed by `read_batch`, which does not return until
//! every read it submitted has completed. `Drop` drains the ring before the table goes.
//!
//! **Coalescing.** `submit_writes` sorts a batch by offset and sends each run of requests
//! that are contiguous on the device as one vectored write (at most [`MAX_WRITE_BYTES`] and
//! [`MAX_IOVECS`] buffers): a commit's data pages are mostly consecutive blocks, and under
//! O_DIRECT one 4 KiB write per block would cost a device request each. The requests of one
//! batch are in flight together, so their order on the device was never defined; sorting
//! changes nothing a caller may rely on. Every buffer of a merged write stays in its slot
//! until that write's completion, as for a single one.
//!
//! **Invariant (bounded queue).** At most `queue_depth` operations are in flight, which is
//! never more than the submission queue holds, so pushing an SQE for a free slot (or
//! re-pushing one for a short transfer) cannot find the queue full.

use crate::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::fmt;
use std::io;

use io_uring::{IoUring, opcode, squeue, types};

use super::file::Backing;
use super::{AlignedBuf, BlockDevice, FailStop, ReadRequest, WriteRequest};
use crate::{Error, Result};

/// Largest single transfer handed to the kernel; longer buffers go in several pieces
/// through the short-transfer path (the SQE length field is 32 bits).
const MAX_TRANSFER_BYTES: usize = 1 << 30;

/// Largest write made by merging contiguous requests of one batch: the size the raw
/// device is measured with, beyond which larger requests gain nothing here.
pub const MAX_WRITE_BYTES: usize = 1 << 20;

/// Buffers one merged write carries at most (well under the kernel's `IOV_MAX` of 1024).
pub const MAX_IOVECS: usize = 256;

/// How often an operation completing with EINTR or EAGAIN is retried before it counts as
/// failed: such results are transient, but an unbounded retry could spin forever.
const MAX_RETRIES: u8 = 16;

/// One operation in flight.
enum Op {
    /// A write of the concatenation of `data`, `len` bytes, at `offset`; `done` bytes so
    /// far. Several buffers are sent as one vectored write through `iov`.
    Write {
        offset: u64,
        data: Vec<Arc<AlignedBuf>>,
        iov: Iovecs,
        len: usize,
        done: usize,
        retries: u8,
    },
    /// A read into request `index` of `read_batch` call `batch`, `done` bytes so far.
    Read {
        batch: u64,
        index: usize,
        done: usize,
        retries: u8,
    },
    /// The flush barrier's fdatasync.
    Fsync,
}

/// The iovec array of a vectored write in flight, pointing into the buffers of the same
/// `Op::Write`.
struct Iovecs(Vec<libc::iovec>);

// SAFETY: the pointers are into `AlignedBuf`s held (through `Arc`) by the same operation,
// which are `Send + Sync`; the array is only read, by the kernel and by `push_write` under
// the device's mutex.
unsafe impl Send for Iovecs {}
// SAFETY: as above.
unsafe impl Sync for Iovecs {}

/// A read completion, handed back to the `read_batch` call that owns it (`batch`), which
/// alone knows the buffers.
struct ReadDone {
    batch: u64,
    slot: usize,
    result: i32,
}

/// Everything behind the mutex. The ring's submission and completion queues are touched
/// only with the mutex held (see `UringDevice::ring`).
struct State {
    fd: types::Fd,
    slots: Vec<Option<Op>>,
    free: Vec<usize>,
    writes_in_flight: usize,
    read_done: Vec<ReadDone>,
    fsync_result: Option<i32>,
    fail: FailStop,
    /// A thread sleeps in `io_uring_enter` without the mutex (see the module doc).
    kernel_waiter: bool,
    /// The id the next `read_batch` call gets.
    next_batch: u64,
}

/// A block device driven through io_uring.
pub struct UringDevice {
    backing: Backing,
    queue_depth: u32,
    /// The ring. Its submission and completion queues are used only under `state`'s mutex
    /// (so at most one `SubmissionQueue` and one `CompletionQueue` exist at a time); the
    /// kernel waiter calls `io_uring_enter` on it without the mutex, which touches neither
    /// queue's head in user space.
    ring: IoUring,
    state: Mutex<State>,
    /// Signalled after every reap and whenever a read batch frees slots.
    reaped: Condvar,
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
            slots: (0..depth).map(|_| None).collect(),
            free: (0..depth).rev().collect(),
            writes_in_flight: 0,
            read_done: Vec::with_capacity(depth),
            fsync_result: None,
            fail: FailStop::default(),
            kernel_waiter: false,
            next_batch: 0,
        };
        Ok(UringDevice {
            backing,
            queue_depth: depth as u32,
            ring,
            state: Mutex::new(state),
            reaped: Condvar::new(),
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

    /// Waits for progress once: as the kernel waiter (drop the mutex, sleep in the kernel
    /// until a completion arrives, take it again, reap, wake the others) when there is none
    /// and a completion is still to come, otherwise on the condition variable. The caller
    /// re-checks what it waits for. An error is the ring's own (io_uring_enter failed).
    fn wait_round<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
    ) -> (MutexGuard<'a, State>, io::Result<()>) {
        let pending = st.in_flight() > st.read_done.len();
        if st.kernel_waiter || !pending {
            let st = self.reaped.wait(st).unwrap_or_else(PoisonError::into_inner);
            return (st, Ok(()));
        }
        st.kernel_waiter = true;
        drop(st);
        let entered = loop {
            match self.ring.submit_and_wait(1) {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // EBUSY: completions must be reaped before more can be submitted.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => break Ok(()),
                other => break other.map(drop),
            }
        };
        let mut st = self.lock();
        st.kernel_waiter = false;
        st.reap(&self.ring);
        self.reaped.notify_all();
        (st, entered)
    }

    /// Waits until no write is in flight. An error here means the ring itself failed.
    fn drain_writes<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
    ) -> (MutexGuard<'a, State>, io::Result<()>) {
        while st.writes_in_flight > 0 {
            let (next, waited) = self.wait_round(st);
            st = next;
            if waited.is_err() {
                return (st, waited);
            }
        }
        (st, Ok(()))
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

    /// Pushes an SQE. The bounded-queue invariant makes a full queue a bug. Called with the
    /// mutex held (`&mut self` is the locked state), which is what makes this the only
    /// `SubmissionQueue` in existence.
    ///
    /// # Safety
    /// Every buffer `entry` points at must stay valid until its CQE is reaped.
    unsafe fn push(&mut self, ring: &IoUring, entry: &squeue::Entry) {
        // SAFETY: forwarded from the caller's contract; the mutex is held (see above).
        let pushed = unsafe { ring.submission_shared().push(entry) };
        assert!(
            pushed.is_ok(),
            "io_uring submission queue full despite the slot limit"
        );
    }

    /// (Re)submits the remaining part of the write in `slot`: one buffer as a plain write,
    /// several as a vectored write of what is left of them.
    fn push_write(&mut self, ring: &IoUring, slot: usize) {
        let fd = self.fd;
        let Some(Op::Write {
            offset,
            data,
            iov,
            done,
            ..
        }) = &mut self.slots[slot]
        else {
            return;
        };
        let at = *offset + *done as u64;
        let entry = if let [one] = data.as_slice() {
            let len = (one.len() - *done).min(MAX_TRANSFER_BYTES) as u32;
            // SAFETY (pointer arithmetic): done < one.len(), so the pointer stays inside
            // the buffer.
            let ptr = unsafe { one.as_ptr().add(*done) };
            opcode::Write::new(fd, ptr, len).offset(at).build()
        } else {
            iov.0.clear();
            let mut skip = *done;
            for buf in data.iter() {
                if skip >= buf.len() {
                    skip -= buf.len();
                    continue;
                }
                iov.0.push(libc::iovec {
                    // SAFETY (pointer arithmetic): skip < buf.len().
                    iov_base: unsafe { buf.as_ptr().add(skip) } as *mut libc::c_void,
                    iov_len: buf.len() - skip,
                });
                skip = 0;
            }
            opcode::Writev::new(fd, iov.0.as_ptr(), iov.0.len() as u32)
                .offset(at)
                .build()
        };
        // SAFETY: the Arcs holding the buffers, and the iovec array pointing into them, sit
        // in `slots[slot]` and are removed only when this SQE's completion is reaped
        // (`on_write_done`) or the device is dropped after draining, so the kernel never
        // reads freed memory.
        unsafe { self.push(ring, &entry.user_data(slot as u64)) };
    }

    fn push_fsync(&mut self, ring: &IoUring) -> usize {
        let slot = self.take_slot(Op::Fsync);
        let entry = opcode::Fsync::new(self.fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        // SAFETY: an fsync references no memory.
        unsafe { self.push(ring, &entry.user_data(slot as u64)) };
        slot
    }

    /// Hands queued SQEs to the kernel without waiting. On EBUSY (completions must be
    /// reaped first) they stay queued: the kernel waiter's next `io_uring_enter` submits
    /// them, and every caller that queued one waits for its completion that way.
    fn submit(&mut self, ring: &IoUring) -> io::Result<()> {
        loop {
            match ring.submit() {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                other => return other.map(drop),
            }
        }
    }

    /// Reaps every ready completion. Writes and fsyncs are finished here; reads are handed
    /// to their `read_batch` through `read_done`. Called with the mutex held, by the kernel
    /// waiter or while there is none (module doc): the only `CompletionQueue` in existence.
    fn reap(&mut self, ring: &IoUring) {
        // SAFETY: the mutex is held (`&mut self` is the locked state): no other
        // CompletionQueue exists.
        let ready: Vec<(u64, i32)> = unsafe { ring.completion_shared() }
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (user_data, result) in ready {
            let slot = user_data as usize;
            match self.slots.get(slot) {
                Some(Some(Op::Write { .. })) => self.on_write_done(ring, slot, result),
                Some(Some(Op::Read { batch, .. })) => {
                    let batch = *batch;
                    self.read_done.push(ReadDone {
                        batch,
                        slot,
                        result,
                    })
                }
                Some(Some(Op::Fsync)) => {
                    self.release(slot);
                    self.fsync_result = Some(result);
                }
                _ => unreachable!("completion for an empty io_uring slot {slot}"),
            }
        }
    }

    /// Finishes, continues (short write, EINTR) or fails the write in `slot`.
    fn on_write_done(&mut self, ring: &IoUring, slot: usize, result: i32) {
        let Some(Op::Write {
            offset,
            len,
            done,
            retries,
            ..
        }) = &mut self.slots[slot]
        else {
            return;
        };
        let finished = match progress(result, retries) {
            Progress::Advance(n) => {
                *done += n;
                Ok(*done >= *len)
            }
            Progress::Retry => Ok(false),
            Progress::Fail(e) => {
                let at = *offset + *done as u64;
                Err(Error::io(
                    format!("writing {} bytes at offset {at}", *len - *done),
                    e,
                ))
            }
        };
        match finished {
            Ok(false) => self.push_write(ring, slot),
            // Dropping the Arc here, at completion, is what releases a forked page.
            Ok(true) => drop(self.release(slot)),
            Err(err) => {
                drop(self.release(slot));
                self.fail.fail(err);
            }
        }
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
    id: u64,
    reqs: &'r mut [ReadRequest<'b>],
    next: usize,
    reads_in_flight: usize,
    error: Option<Error>,
}

impl ReadBatch<'_, '_> {
    fn finished(&self) -> bool {
        self.reads_in_flight == 0 && (self.next == self.reqs.len() || self.error.is_some())
    }

    /// Fills free slots with reads that have not been sent yet; true when it pushed any.
    fn fill(&mut self, st: &mut State, ring: &IoUring) -> bool {
        let mut pushed = false;
        while self.error.is_none() && self.next < self.reqs.len() && !st.free.is_empty() {
            let slot = st.take_slot(Op::Read {
                batch: self.id,
                index: self.next,
                done: 0,
                retries: 0,
            });
            self.next += 1;
            self.reads_in_flight += 1;
            self.push_read(st, ring, slot);
            pushed = true;
        }
        pushed
    }

    /// (Re)submits the remaining part of the read in `slot`.
    fn push_read(&mut self, st: &mut State, ring: &IoUring, slot: usize) {
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
        unsafe { st.push(ring, &entry.user_data(slot as u64)) };
    }

    /// Handles this batch's completions among those reaped; returns (slots freed, reads
    /// re-pushed).
    fn complete(&mut self, st: &mut State, ring: &IoUring) -> (bool, bool) {
        if !st.read_done.iter().any(|d| d.batch == self.id) {
            return (false, false);
        }
        let (mine, others): (Vec<ReadDone>, Vec<ReadDone>) = std::mem::take(&mut st.read_done)
            .into_iter()
            .partition(|d| d.batch == self.id);
        st.read_done = others;
        let (mut freed, mut pushed) = (false, false);
        for ReadDone { slot, result, .. } in mine {
            let Some(Op::Read {
                index,
                done,
                retries,
                ..
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
                freed = true;
            } else {
                self.push_read(st, ring, slot);
                pushed = true;
            }
        }
        (freed, pushed)
    }
}

/// The ring failed with reads in flight: the kernel may still write into buffers that would
/// be handed back to the caller, so nothing safe is left to do.
fn abort_with_reads_in_flight(e: &io::Error) -> ! {
    crate::events::report(
        crate::events::Level::Error,
        &format!("io_uring_enter failed with reads in flight ({e}); aborting"),
    );
    std::process::abort();
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
        // Zero-length reads would complete with 0 and look like the end of the device.
        let mut nonempty: Vec<ReadRequest<'_>> = reqs
            .iter_mut()
            .filter(|r| !r.buf.is_empty())
            .map(|r| ReadRequest {
                offset: r.offset,
                buf: &mut *r.buf,
            })
            .collect();
        let mut st = self.lock();
        let id = st.next_batch;
        st.next_batch += 1;
        let mut batch = ReadBatch {
            id,
            reqs: &mut nonempty,
            next: 0,
            reads_in_flight: 0,
            error: None,
        };
        loop {
            let (freed, repushed) = batch.complete(&mut st, &self.ring);
            let pushed = batch.fill(&mut st, &self.ring);
            if (repushed || pushed)
                && let Err(e) = st.submit(&self.ring)
            {
                abort_with_reads_in_flight(&e);
            }
            if freed || repushed {
                // Slots came free (a writer or another batch may be waiting for one), or a
                // completion is to come again (a thread may wait for one to be pending).
                self.reaped.notify_all();
            }
            if batch.finished() {
                break;
            }
            let (next, waited) = self.wait_round(st);
            st = next;
            if let Err(e) = waited {
                abort_with_reads_in_flight(&e);
            }
        }
        batch.error.map_or(Ok(()), Err)
    }

    fn submit_writes(&self, reqs: Vec<WriteRequest>) -> Result<()> {
        for r in &reqs {
            self.backing.check_write(r.offset, r.data.len())?;
        }
        let mut st = self.lock();
        st.fail.check()?;
        for (offset, data) in coalesce(reqs) {
            while st.free.is_empty() {
                // Hand what is queued to the kernel before waiting for a slot.
                st.submit(&self.ring).map_err(|e| st.ring_failed(e))?;
                let (next, waited) = self.wait_round(st);
                st = next;
                waited.map_err(|e| st.ring_failed(e))?;
            }
            // A write that failed meanwhile stops the batch: nothing after a failed write may
            // reach the disk. The error is reported by wait_writes/flush.
            if st.fail.has_failed() {
                return st.submit(&self.ring).map_err(|e| st.ring_failed(e));
            }
            let len = data.iter().map(|d| d.len()).sum();
            let slot = st.take_slot(Op::Write {
                offset,
                iov: Iovecs(Vec::with_capacity(if data.len() > 1 {
                    data.len()
                } else {
                    0
                })),
                data,
                len,
                done: 0,
                retries: 0,
            });
            st.push_write(&self.ring, slot);
        }
        st.submit(&self.ring).map_err(|e| st.ring_failed(e))
    }

    fn wait_writes(&self) -> Result<()> {
        let (mut st, drained) = self.drain_writes(self.lock());
        drained.map_err(|e| st.ring_failed(e))?;
        st.fail.report()
    }

    fn flush(&self) -> Result<()> {
        // Flush covers only reaped writes: an fsync is not ordered after writes in flight.
        let (mut st, drained) = self.drain_writes(self.lock());
        drained.map_err(|e| st.ring_failed(e))?;
        st.fail.report()?;
        // One fsync at a time: `fsync_result` has room for one answer.
        while st.fsync_result.is_some() || has_fsync(&st) {
            let (next, waited) = self.wait_round(st);
            st = next;
            waited.map_err(|e| st.ring_failed(e))?;
        }
        while st.free.is_empty() {
            let (next, waited) = self.wait_round(st);
            st = next;
            waited.map_err(|e| st.ring_failed(e))?;
        }
        st.push_fsync(&self.ring);
        st.submit(&self.ring).map_err(|e| st.ring_failed(e))?;
        while st.fsync_result.is_none() {
            let (next, waited) = self.wait_round(st);
            st = next;
            waited.map_err(|e| st.ring_failed(e))?;
        }
        let answer = st.fsync_result.take();
        // Another flush may be waiting for `fsync_result` to be free.
        self.reaped.notify_all();
        match answer {
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
        let st = self.lock();
        st.fail.check()?;
        // Writes in flight to the range must not land after the hole is punched.
        let (mut st, drained) = self.drain_writes(st);
        drained.map_err(|e| st.ring_failed(e))?;
        self.backing.discard(offset, len)
    }
}

/// Sorts a batch of writes by offset (stable: equal offsets keep their order) and groups
/// each run that is contiguous on the device, up to [`MAX_WRITE_BYTES`] and [`MAX_IOVECS`]
/// buffers, into one write: (offset, buffers in order). Empty requests are dropped.
pub(crate) fn coalesce(mut reqs: Vec<WriteRequest>) -> Vec<(u64, Vec<Arc<AlignedBuf>>)> {
    reqs.retain(|r| !r.data.is_empty());
    reqs.sort_by_key(|r| r.offset);
    let mut out: Vec<(u64, Vec<Arc<AlignedBuf>>, usize)> = Vec::new();
    for r in reqs {
        let len = r.data.len();
        match out.last_mut() {
            Some((offset, bufs, total))
                if *offset + *total as u64 == r.offset
                    && *total + len <= MAX_WRITE_BYTES
                    && bufs.len() < MAX_IOVECS =>
            {
                bufs.push(r.data);
                *total += len;
            }
            _ => out.push((r.offset, vec![r.data], len)),
        }
    }
    out.into_iter().map(|(o, b, _)| (o, b)).collect()
}

/// True while an fsync is in flight.
fn has_fsync(st: &State) -> bool {
    st.slots.iter().any(|s| matches!(s, Some(Op::Fsync)))
}

impl Drop for UringDevice {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        while st.in_flight() > 0 {
            let waited = loop {
                match self.ring.submit_and_wait(1) {
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => break Ok(()),
                    other => break other.map(drop),
                }
            };
            if waited.is_err() {
                // The kernel may still read these buffers: leak them rather than free them.
                std::mem::forget(std::mem::take(&mut st.slots));
                return;
            }
            st.reap(&self.ring);
            for done in std::mem::take(&mut st.read_done) {
                st.release(done.slot);
            }
        }
    }
}
