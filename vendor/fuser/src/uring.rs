//! FUSE over io_uring (tuxfs change, TUXFS_CHANGES.md entry 13).
//!
//! Linux 6.14+ (`fs/fuse/dev_uring.c`, module parameter `fuse.enable_uring`) can hand
//! requests to the daemon through io_uring instead of `read(2)`/`write(2)` on /dev/fuse.
//! When INIT negotiated FUSE_OVER_IO_URING, the session starts one queue per possible CPU
//! (the kernel routes a request to the queue of the CPU its caller runs on and waits until
//! every queue has an entry registered), each with its own io_uring and its own thread,
//! pinned to that CPU.
//!
//! An entry is one allocation: the kernel's `fuse_uring_req_header` (288 bytes) at offset 0
//! and the payload buffer at [`PAYLOAD_AT`]. Both are registered with one
//! `FUSE_IO_URING_CMD_REGISTER` (`IORING_OP_URING_CMD`, 128-byte SQE, `addr` an array of
//! two iovecs). The SQE completes when a request has been copied in: `fuse_in_header` in
//! `in_out`, the opcode's fixed argument (`in_args[0]`) in `op_in`, the rest (names, write
//! data) at the start of the payload buffer, `payload_sz` of it. The header and the fixed
//! argument are copied to just before the payload, so the request is one contiguous slice
//! as /dev/fuse would have delivered it, without copying the payload, and goes to the same
//! dispatch. The reply is written into the same entry (`fuse_out_header` in `in_out`, the
//! rest in the payload buffer, `payload_sz`) and handed back with
//! `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`, which also waits for the entry's next request.
//!
//! Every SQE of a queue is submitted by the queue's own thread: the kernel copies the next
//! request into the entry from the task that submitted its command, so an entry committed
//! from a worker thread would be served (and cancelled, when that thread exits) there.
//! A reply sent from another thread (the read pool, fsync callbacks) writes the entry,
//! queues its index and wakes the queue thread through an eventfd the ring always has a
//! read pending on. A reply sent while the request is still being dispatched (the
//! filesystem may still be reading the request's payload, which the reply would
//! overwrite) is kept aside and written into the entry once the dispatch returns.
//!
//! FORGET, INTERRUPT and notification replies still go through /dev/fuse, whose loop keeps
//! running; DESTROY comes through the ring and is answered after `Filesystem::destroy`.

use std::alloc::Layout;
use std::io;
use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::os::fd::FromRawFd;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use io_uring::IoUring;
use io_uring::opcode;
use io_uring::squeue;
use io_uring::types;
use log::debug;
use log::error;
use log::warn;
use parking_lot::Mutex;

use crate::Filesystem;
use crate::ReplyEmpty;
use crate::channel::ChannelSender;
use crate::ll::Operation;
use crate::request::RequestWithSender;
use crate::session::SessionEventLoop;

/// `FUSE_IO_URING_CMD_REGISTER` (include/uapi/linux/fuse.h).
const CMD_REGISTER: u32 = 1;
/// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`.
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// `FUSE_URING_IN_OUT_HEADER_SZ`: the `in_out` area (`fuse_in_header` / `fuse_out_header`).
const IN_OUT_BYTES: usize = 128;
/// `FUSE_URING_OP_IN_OUT_SZ`: the `op_in` area (the opcode's fixed argument).
const OP_IN_BYTES: usize = 128;
/// Offset of `fuse_uring_ent_in_out` in the header.
const ENT_IN_OUT_AT: usize = IN_OUT_BYTES + OP_IN_BYTES;
/// `sizeof(struct fuse_uring_req_header)`: in_out, op_in, and `fuse_uring_ent_in_out`
/// (flags u64, commit_id u64, payload_sz u32, padding u32, reserved u64).
const HEADER_BYTES: usize = ENT_IN_OUT_AT + 32;
/// `fuse_uring_ent_in_out.commit_id`.
const COMMIT_ID_AT: usize = ENT_IN_OUT_AT + 8;
/// `fuse_uring_ent_in_out.payload_sz`.
const PAYLOAD_SZ_AT: usize = ENT_IN_OUT_AT + 16;
/// `sizeof(struct fuse_in_header)`.
const IN_HEADER_BYTES: usize = 40;
/// `sizeof(struct fuse_out_header)`.
const OUT_HEADER_BYTES: usize = 16;
/// Where the payload buffer starts in an entry's allocation: a page, so write data is
/// page-aligned and the request's header and fixed argument fit just before it.
const PAYLOAD_AT: usize = 4096;
/// `sqe->len` of a REGISTER: the number of iovecs (`FUSE_URING_IOV_SEGS`).
const IOV_SEGS: u32 = 2;
/// user_data of the eventfd read that wakes a queue thread for replies from elsewhere.
const WAKE_TAG: u64 = u64::MAX;
/// How often a REGISTER refused with EAGAIN (INIT not yet processed) is retried.
const REGISTER_RETRIES: u32 = 1000;

// The header layout the constants describe (include/uapi/linux/fuse.h).
const _: () = assert!(HEADER_BYTES == 288);
const _: () = assert!(IN_HEADER_BYTES + OP_IN_BYTES < PAYLOAD_AT - HEADER_BYTES);
const _: () = assert!(size_of::<squeue::Entry128>() == 128);

/// The negotiated transport: how deep each queue is and how big an entry's payload buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UringSetup {
    pub(crate) depth: u16,
    /// At least the kernel's `max_payload_sz`: max(8 KiB, max_write, max_pages * page).
    pub(crate) payload_bytes: usize,
}

/// The number of queues the kernel expects: one per possible CPU (`num_possible_cpus()`).
pub(crate) fn possible_cpus() -> io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    parse_cpu_list(text.trim()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/sys/devices/system/cpu/possible: cannot read {text:?}"),
        )
    })
}

/// The count of CPUs in a list such as "0-3,6": its highest number plus one.
fn parse_cpu_list(text: &str) -> Option<usize> {
    let mut max = None;
    for part in text.split(',') {
        let last = part.rsplit('-').next()?;
        let n: usize = last.trim().parse().ok()?;
        max = Some(max.map_or(n, |m: usize| m.max(n)));
    }
    max.and_then(|m| m.checked_add(1))
}

/// What the queue thread and the replies share about one entry.
#[derive(Debug, Default)]
struct EntryState {
    /// The request is being dispatched on the queue thread: a reply is kept in `stash`.
    dispatching: bool,
    /// A reply is waiting in `stash` (whose memory is reused from request to request).
    stashed: bool,
    stash: Vec<u8>,
}

/// A stash grown past this by a large reply gives its memory back.
const STASH_KEEP_BYTES: usize = 64 << 10;

/// One entry's memory: header at 0, payload at [`PAYLOAD_AT`].
struct Entry {
    mem: *mut u8,
    layout: Layout,
    state: Mutex<EntryState>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry").field("mem", &self.mem).finish()
    }
}

impl Entry {
    fn new(payload_bytes: usize) -> io::Result<Entry> {
        let size = PAYLOAD_AT
            .checked_add(payload_bytes)
            .ok_or_else(|| io::Error::other("io_uring entry too large"))?;
        let layout = Layout::from_size_align(size, 4096).map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size.
        let mem = unsafe { std::alloc::alloc_zeroed(layout) };
        if mem.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        Ok(Entry {
            mem,
            layout,
            state: Mutex::new(EntryState::default()),
        })
    }

    fn read_u32(&self, at: usize) -> u32 {
        let mut b = [0u8; 4];
        // SAFETY: `at + 4` is within the header; the kernel wrote it before the CQE.
        unsafe { std::ptr::copy_nonoverlapping(self.mem.add(at), b.as_mut_ptr(), 4) };
        u32::from_ne_bytes(b)
    }

    fn read_u64(&self, at: usize) -> u64 {
        let mut b = [0u8; 8];
        // SAFETY: as in read_u32.
        unsafe { std::ptr::copy_nonoverlapping(self.mem.add(at), b.as_mut_ptr(), 8) };
        u64::from_ne_bytes(b)
    }

    /// Writes a reply (`fuse_out_header` then the payload, as /dev/fuse would take it) into
    /// the entry. Called only while the entry is in userspace and no dispatch reads it.
    fn write_reply(&self, bytes: &[&[u8]], payload_bytes: usize) {
        let total: usize = bytes.iter().map(|b| b.len()).sum();
        let mut header = [0u8; OUT_HEADER_BYTES];
        let mut at = 0;
        let mut payload_len = 0usize;
        let fits = total >= OUT_HEADER_BYTES && total - OUT_HEADER_BYTES <= payload_bytes;
        for b in bytes {
            let mut rest = *b;
            if at < OUT_HEADER_BYTES {
                let n = rest.len().min(OUT_HEADER_BYTES - at);
                header[at..at + n].copy_from_slice(&rest[..n]);
                at += n;
                rest = &rest[n..];
            }
            if fits && !rest.is_empty() {
                // SAFETY: payload_len + rest.len() <= payload_bytes (checked by `fits`); the
                // payload buffer is payload_bytes long at PAYLOAD_AT.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        rest.as_ptr(),
                        self.mem.add(PAYLOAD_AT + payload_len),
                        rest.len(),
                    )
                };
                payload_len += rest.len();
            }
        }
        if !fits {
            error!(
                "FUSE reply of {total} bytes does not fit an io_uring entry ({payload_bytes} \
                 bytes of payload): answering EIO"
            );
            // fuse_out_header { len, error, unique }: keep unique, set error -EIO.
            header[4..8].copy_from_slice(&(-libc::EIO).to_ne_bytes());
            payload_len = 0;
        }
        // SAFETY: the header is HEADER_BYTES long at offset 0.
        unsafe {
            std::ptr::copy_nonoverlapping(header.as_ptr(), self.mem, OUT_HEADER_BYTES);
            std::ptr::copy_nonoverlapping(
                (payload_len as u32).to_ne_bytes().as_ptr(),
                self.mem.add(PAYLOAD_SZ_AT),
                4,
            );
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // SAFETY: allocated in Entry::new with this layout.
        unsafe { std::alloc::dealloc(self.mem, self.layout) };
    }
}

/// What a queue's thread and the replies to its requests share. Kept alive by every reply
/// still to be sent, so a late reply writes into memory that still exists.
#[derive(Debug)]
pub(crate) struct Queue {
    qid: u16,
    payload_bytes: usize,
    entries: Box<[Entry]>,
    /// Entries replied to from other threads, to be committed by the queue thread.
    committed: Mutex<Vec<u16>>,
    wake: OwnedFd,
    stop: AtomicBool,
    channel: ChannelSender,
}

// SAFETY: an entry's memory is written by the kernel while the entry is in the kernel, and
// by exactly one reply (serialised by its `state` lock against the dispatch) while it is in
// userspace; the queue thread hands it back to the kernel only after that reply.
unsafe impl Send for Queue {}
// SAFETY: see Send.
unsafe impl Sync for Queue {}

impl Queue {
    fn new(qid: u16, setup: UringSetup, channel: ChannelSender) -> io::Result<Queue> {
        let entries = (0..setup.depth)
            .map(|_| Entry::new(setup.payload_bytes))
            .collect::<io::Result<Vec<_>>>()?;
        // SAFETY: eventfd has no memory preconditions.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Queue {
            qid,
            payload_bytes: setup.payload_bytes,
            entries: entries.into_boxed_slice(),
            committed: Mutex::new(Vec::new()),
            // SAFETY: fd was just created and is owned by nobody else.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
            stop: AtomicBool::new(false),
            channel,
        })
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        let _ = unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                size_of::<u64>(),
            )
        };
    }

    /// Asks the queue thread to end (the connection is gone).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }
}

/// The reply side of one request received through a ring entry.
#[derive(Debug, Clone)]
pub(crate) struct EntryReply {
    queue: Arc<Queue>,
    index: u16,
}

impl EntryReply {
    /// Sends a reply (the iovecs fuser would write to /dev/fuse).
    pub(crate) fn send(&self, data: &[IoSlice<'_>]) -> io::Result<()> {
        let entry = &self.queue.entries[usize::from(self.index)];
        let mut state = entry.state.lock();
        if state.dispatching {
            state.stash.clear();
            for d in data {
                state.stash.extend_from_slice(d);
            }
            state.stashed = true;
            return Ok(());
        }
        let slices: Vec<&[u8]> = data.iter().map(|d| &**d).collect();
        entry.write_reply(&slices, self.queue.payload_bytes);
        drop(state);
        self.queue.committed.lock().push(self.index);
        self.queue.wake();
        Ok(())
    }

    /// The /dev/fuse sender (for the ioctls on it: passthrough backing files).
    pub(crate) fn channel(&self) -> &ChannelSender {
        &self.queue.channel
    }
}

/// A queue made before INIT is answered (so a failure there leaves the flag unasked and
/// the kernel on /dev/fuse), served once the session runs.
pub(crate) struct Prepared {
    queue: Arc<Queue>,
    ring: IoUring<squeue::Entry128>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("qid", &self.queue.qid).finish()
    }
}

/// Makes one queue per possible CPU: entries and rings.
pub(crate) fn prepare(setup: UringSetup, channel: &ChannelSender) -> io::Result<Vec<Prepared>> {
    let n = possible_cpus()?;
    let mut prepared = Vec::with_capacity(n);
    for qid in 0..n {
        let qid = u16::try_from(qid).map_err(io::Error::other)?;
        let queue = Arc::new(Queue::new(qid, setup, channel.clone())?);
        let ring = IoUring::<squeue::Entry128>::builder().build(u32::from(setup.depth) * 2 + 2)?;
        prepared.push(Prepared { queue, ring });
    }
    Ok(prepared)
}

/// Starts a thread per queue. Returns the queues (to stop them) and the threads.
pub(crate) fn start<FS: Filesystem + 'static>(
    prepared: Vec<Prepared>,
    fd: i32,
    event_loop: impl Fn(String) -> SessionEventLoop<FS>,
) -> io::Result<Vec<(Arc<Queue>, std::thread::JoinHandle<()>)>> {
    let mut started = Vec::with_capacity(prepared.len());
    for Prepared { queue, ring } in prepared {
        let name = format!("fuser-uring-{}", queue.qid);
        let se = event_loop(name.clone());
        let q = Arc::clone(&queue);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || serve(q, ring, fd, se))?;
        started.push((queue, thread));
    }
    Ok(started)
}

/// Pins the calling thread to `cpu` (best effort: the CPU may be offline).
fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET bounds-checks `cpu`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let _ = libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The command area of an SQE128 for `cmd_op`: `struct fuse_uring_cmd_req`
/// { flags u64, commit_id u64, qid u16, padding }.
fn cmd_req(commit_id: u64, qid: u16) -> [u8; 80] {
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    cmd
}

/// A REGISTER SQE for `entry`: `addr` points at two iovecs (header, payload), `len` = 2.
fn register_sqe(fd: i32, qid: u16, iovecs: &[libc::iovec; 2], index: u16) -> squeue::Entry128 {
    let sqe = opcode::UringCmd80::new(types::Fd(fd), CMD_REGISTER)
        .cmd(cmd_req(0, qid))
        .addr(Some(iovecs.as_ptr() as u64))
        .build()
        .user_data(u64::from(index));
    // io-uring's UringCmd80 has no `len`; the kernel needs sqe->len = FUSE_URING_IOV_SEGS.
    // SAFETY: Entry128 is repr(C): an io_uring_sqe (plain integers) then 64 bytes; `len`
    // is the u32 at byte 24 of the SQE, and any value is a valid bit pattern.
    unsafe {
        let mut bytes: [u8; 128] = std::mem::transmute(sqe);
        bytes[24..28].copy_from_slice(&IOV_SEGS.to_ne_bytes());
        std::mem::transmute::<[u8; 128], squeue::Entry128>(bytes)
    }
}

fn commit_sqe(fd: i32, qid: u16, commit_id: u64, index: u16) -> squeue::Entry128 {
    opcode::UringCmd80::new(types::Fd(fd), CMD_COMMIT_AND_FETCH)
        .cmd(cmd_req(commit_id, qid))
        .build()
        .user_data(u64::from(index))
}

/// Pushes `sqe`, submitting first when the submission queue is full.
fn push(ring: &mut IoUring<squeue::Entry128>, sqe: &squeue::Entry128) -> io::Result<()> {
    loop {
        // SAFETY: the SQE's buffers (entry memory, iovecs, eventfd counter) outlive the ring:
        // they belong to the queue and to `serve`, which drops the ring first.
        if unsafe { ring.submission().push(sqe) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}

/// A queue thread: registers the entries, then serves requests until the connection ends.
fn serve<FS: Filesystem>(
    queue: Arc<Queue>,
    mut ring: IoUring<squeue::Entry128>,
    fd: i32,
    se: SessionEventLoop<FS>,
) {
    let qid = queue.qid;
    pin_to(usize::from(qid));
    let iovecs: Vec<[libc::iovec; 2]> = queue
        .entries
        .iter()
        .map(|e| {
            [
                libc::iovec {
                    iov_base: e.mem.cast(),
                    iov_len: HEADER_BYTES,
                },
                libc::iovec {
                    // SAFETY: PAYLOAD_AT is within the allocation.
                    iov_base: unsafe { e.mem.add(PAYLOAD_AT) }.cast(),
                    iov_len: queue.payload_bytes,
                },
            ]
        })
        .collect();
    let mut wake_buf = 0u64;
    let wake_sqe = |buf: &mut u64| {
        opcode::Read::new(
            types::Fd(queue.wake.as_raw_fd()),
            (buf as *mut u64).cast(),
            size_of::<u64>() as u32,
        )
        .build()
        .user_data(WAKE_TAG)
        .into()
    };
    let result = (|| -> io::Result<()> {
        push(&mut ring, &wake_sqe(&mut wake_buf))?;
        for (i, iov) in iovecs.iter().enumerate() {
            push(&mut ring, &register_sqe(fd, qid, iov, i as u16))?;
        }
        // Entries the kernel holds (a command pending) or we hold (a request being served).
        let mut live = queue.entries.len();
        let mut retries = vec![0u32; queue.entries.len()];
        let mut to_commit: Vec<u16> = Vec::new();
        let mut cqes: Vec<(u64, i32)> = Vec::new();
        let mut registered = false;
        while live > 0 && !queue.stop.load(Ordering::SeqCst) {
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            cqes.clear();
            cqes.extend(ring.completion().map(|c| (c.user_data(), c.result())));
            for &(tag, res) in &cqes {
                if tag == WAKE_TAG {
                    push(&mut ring, &wake_sqe(&mut wake_buf))?;
                    continue;
                }
                let index = tag as u16;
                let i = usize::from(index);
                if res == -libc::EAGAIN && !registered && retries[i] < REGISTER_RETRIES {
                    // INIT's reply not yet processed by the kernel: register again.
                    retries[i] += 1;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    push(&mut ring, &register_sqe(fd, qid, &iovecs[i], index))?;
                    continue;
                }
                if res < 0 {
                    live -= 1;
                    let err = io::Error::from_raw_os_error(-res);
                    if res == -libc::ENOTCONN || res == -libc::ECONNABORTED {
                        debug!("fuse io_uring queue {qid} entry {i} ended: {err}");
                    } else if !registered {
                        warn!(
                            "fuse io_uring: the kernel refused to register queue {qid} entry \
                             {i}: {err}; requests go through /dev/fuse"
                        );
                    } else {
                        error!("fuse io_uring queue {qid} entry {i}: {err}");
                    }
                    continue;
                }
                registered = true;
                serve_request(&queue, index, &se);
                let entry = &queue.entries[i];
                let mut state = entry.state.lock();
                state.dispatching = false;
                if state.stashed {
                    state.stashed = false;
                    entry.write_reply(&[&state.stash], queue.payload_bytes);
                    if state.stash.capacity() > STASH_KEEP_BYTES {
                        state.stash = Vec::new();
                    }
                    to_commit.push(index);
                }
            }
            to_commit.append(&mut queue.committed.lock());
            for index in to_commit.drain(..) {
                let entry = &queue.entries[usize::from(index)];
                let commit_id = entry.read_u64(COMMIT_ID_AT);
                push(&mut ring, &commit_sqe(fd, qid, commit_id, index))?;
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        error!("fuse io_uring queue {qid} failed: {e}");
    }
    // The ring goes first: closing it cancels the commands still pending in the kernel.
    drop(ring);
}

/// Hands the request in `index` to the session's dispatch.
fn serve_request<FS: Filesystem>(queue: &Arc<Queue>, index: u16, se: &SessionEventLoop<FS>) {
    let entry = &queue.entries[usize::from(index)];
    entry.state.lock().dispatching = true;
    let reply = EntryReply {
        queue: Arc::clone(queue),
        index,
    };
    let in_len = entry.read_u32(0) as usize;
    let payload = entry.read_u32(PAYLOAD_SZ_AT) as usize;
    // in_header.len = header + fixed argument + payload: the fixed argument's size.
    let op_len = in_len
        .checked_sub(IN_HEADER_BYTES)
        .and_then(|n| n.checked_sub(payload));
    let op_len = match op_len {
        Some(n) if n <= OP_IN_BYTES && payload <= queue.payload_bytes => n,
        _ => {
            error!(
                "fuse io_uring queue {}: malformed request (len {in_len}, payload {payload}): \
                 answering EIO",
                queue.qid
            );
            reply_error(entry, &reply, libc::EIO);
            return;
        }
    };
    let start = PAYLOAD_AT - op_len - IN_HEADER_BYTES;
    // SAFETY: the kernel wrote the header and `payload` bytes of payload before the CQE, and
    // nothing else touches the entry until its reply: `start..PAYLOAD_AT` is free space
    // between the header and the payload.
    let data: &[u8] = unsafe {
        std::ptr::copy(entry.mem, entry.mem.add(start), IN_HEADER_BYTES);
        std::ptr::copy(
            entry.mem.add(IN_OUT_BYTES),
            entry.mem.add(start + IN_HEADER_BYTES),
            op_len,
        );
        std::slice::from_raw_parts(entry.mem.add(start), in_len)
    };
    let aligned: Vec<u64>;
    let data = if start % 8 == 0 {
        data
    } else {
        // fuser's parser reads the header in place, which needs 8-byte alignment.
        let mut v = vec![0u64; in_len.div_ceil(8)];
        // SAFETY: v holds at least in_len bytes.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), v.as_mut_ptr().cast(), in_len) };
        aligned = v;
        // SAFETY: as above; `aligned` lives to the end of this function.
        unsafe { std::slice::from_raw_parts(aligned.as_ptr().cast(), in_len) }
    };
    let Some(req) = RequestWithSender::new(queue.channel.clone(), data) else {
        reply_error(entry, &reply, libc::EIO);
        return;
    };
    let req = req.via_uring(reply);
    if let Some(fs) = &se.filesystem.fs {
        fs.uring_request_received(req.request.opcode());
    }
    if let Ok(Operation::Destroy(_)) = req.request.operation() {
        // As on /dev/fuse: the kernel waits for this reply at unmount; answer only once
        // the filesystem has finished.
        se.filesystem.destroy();
        req.reply::<ReplyEmpty>().ok();
    } else {
        req.dispatch(se);
    }
}

/// Answers the request in `entry` with `errno` (a request we could not parse).
fn reply_error(entry: &Entry, reply: &EntryReply, errno: i32) {
    let unique = entry.read_u64(8);
    let mut header = [0u8; OUT_HEADER_BYTES];
    header[0..4].copy_from_slice(&(OUT_HEADER_BYTES as u32).to_ne_bytes());
    header[4..8].copy_from_slice(&(-errno).to_ne_bytes());
    header[8..16].copy_from_slice(&unique.to_ne_bytes());
    let _ = reply.send(&[IoSlice::new(&header)]);
}
