//! A closed delta, frozen: what the backend writes for delta D once the frontend has moved
//! on to D+1.
//!
//! Closing D ([`crate::commit::close`]) runs under the state lock: it moves D's dirty pages,
//! spill chains, log records and frees out of `State`, allocates D's blocks, updates the
//! trees' leaf maps, plans D's log blocks and opens D+1. Everything that only turns those
//! decisions into bytes runs here, without the lock: encoding the leaves D froze (shared
//! with the tree until a change in D+1 forks them, engine::btree), one CRC per block,
//! encoding the log, submitting the writes. The flush and, when one was planned with D, the
//! unify's writes and superblock run without the lock too; only `finish` (and
//! `finish_unify`) take it again, briefly.
//!
//! **Invariants.**
//! - Every block D writes outside its log is listed once in D's `Blocks` records with the
//!   CRC of exactly the bytes submitted (computed once: here, or for a data page when a
//!   whole-block write built it before the state lock or when its delta closed
//!   (engine::data::write); checked against the planned list before the log is encoded).
//!   A data block's buffer is the dirty page itself, never a copy.
//! - Nothing D+1 does reaches D's blocks: D's pages are immutable `Arc`s (a write forks),
//!   D's leaves are immutable `Arc`s (a change forks), D's log records are owned here.

use std::sync::Arc;

use crate::btree::FrozenLeaf;
use crate::dev::AlignedBuf;
use crate::format::log::{CommitInfo, LogBlock, LogFlags, LogRecord};
use crate::format::{BlockHeader, Kind, data_crc};
use crate::io::BlockIo;
use crate::{Error, Result};

/// Blocks a closing delta writes outside its log whose bytes are final (data pages, xattr
/// spill chains), with their CRC when the commit computed it already.
#[derive(Debug, Default)]
pub struct DeltaWrites {
    blocks: Vec<(u64, Arc<AlignedBuf>, Option<u32>)>,
}

impl DeltaWrites {
    /// A data block whose CRC the extent already holds.
    pub fn data(&mut self, block: u64, page: Arc<AlignedBuf>, crc: u32) {
        self.blocks.push((block, page, Some(crc)));
    }

    /// A block whose CRC is computed when the delta is sealed.
    pub fn block(&mut self, block: u64, buf: Arc<AlignedBuf>) {
        self.blocks.push((block, buf, None));
    }

    /// The block numbers written.
    pub fn block_numbers(&self) -> impl Iterator<Item = u64> + '_ {
        self.blocks.iter().map(|(b, _, _)| *b)
    }
}

/// D's log, planned under the lock: the records grouped per log block (the `Blocks` records
/// carry zero CRCs until [`Frozen::seal`] fills them), the blocks they go to, and the
/// commit record.
#[derive(Debug)]
pub struct LogPlan {
    pub groups: Vec<Vec<LogRecord>>,
    /// The log blocks, in chain order.
    pub blocks: Vec<u64>,
    /// The block the last log block chains to (D+1's first log block).
    pub next: u64,
    pub info: CommitInfo,
}

/// A closed delta whose blocks are allocated but not encoded or submitted yet.
#[derive(Debug)]
pub struct Frozen {
    pub delta: u64,
    pub block_size: u32,
    pub fs_id: u64,
    pub writes: DeltaWrites,
    pub leaves: Vec<FrozenLeaf>,
    pub log: LogPlan,
    /// Blocks listed in `Blocks` records, in the order the records list them.
    pub listed: Vec<u64>,
    /// TEST ONLY (`MountOptions::debug_ack_before_data`): data and leaves after the log.
    pub ack_before_data: bool,
    pub closed: Closed,
}

/// What `finish` needs once a delta's writes are submitted.
#[derive(Debug)]
pub struct Closed {
    pub delta: u64,
    pub log_blocks: Vec<u64>,
    /// Blocks this delta freed: free once it is durable.
    pub freed: Vec<(u64, u64)>,
    pub started: std::time::Instant,
    /// Microseconds `close` held the state lock.
    pub close_us: u64,
    /// Blocks submitted (for the counters).
    pub blocks_written: u64,
    /// TEST ONLY: data and leaf writes to submit after the log's flush.
    pub late: Vec<(u64, Arc<AlignedBuf>)>,
}

/// A sealed delta: every block encoded, ready to submit.
#[derive(Debug)]
pub struct Sealed {
    pub writes: Vec<(u64, Arc<AlignedBuf>)>,
    pub closed: Closed,
}

impl Frozen {
    /// Encodes the leaves, computes the CRCs not known yet (once per block), fills D's
    /// `Blocks` records and encodes D's log. Takes no lock.
    pub fn seal(self) -> Result<Sealed> {
        let Frozen {
            delta,
            block_size,
            fs_id,
            writes,
            leaves,
            mut log,
            listed,
            ack_before_data,
            mut closed,
        } = self;
        let mut out: Vec<(u64, Arc<AlignedBuf>)> =
            Vec::with_capacity(writes.blocks.len() + leaves.len() + log.blocks.len());
        let mut crcs: Vec<(u64, u32)> = Vec::with_capacity(out.capacity());
        for (block, buf, crc) in writes.blocks {
            crcs.push((block, crc.unwrap_or_else(|| data_crc(&buf))));
            out.push((block, buf));
        }
        for leaf in leaves {
            let buf = leaf.encode(block_size);
            crcs.push((leaf.block, data_crc(&buf)));
            out.push((leaf.block, Arc::new(buf)));
        }
        crcs.sort_unstable_by_key(|(b, _)| *b);
        fill_blocks_records(&mut log.groups, &crcs, &listed)?;
        let data_count = out.len();
        encode_log(&mut out, log, delta, fs_id, block_size);
        closed.blocks_written = out.len() as u64;
        if ack_before_data {
            // TEST ONLY: the log first and flushed, the data and leaves after it and not
            // flushed (the next flush covers them). A crash before that flush loses an
            // acknowledged delta: the crash harness must notice.
            closed.late = out.drain(..data_count).collect();
        }
        Ok(Sealed {
            writes: out,
            closed,
        })
    }
}

/// Puts each block's CRC into the `Blocks` record slot planned for it. `crcs` is sorted by
/// block; `listed` is the planned order, which must be the same blocks.
fn fill_blocks_records(
    groups: &mut [Vec<LogRecord>],
    crcs: &[(u64, u32)],
    listed: &[u64],
) -> Result<()> {
    if crcs.len() != listed.len() || crcs.iter().zip(listed).any(|((b, _), l)| b != l) {
        return Err(Error::invalid(
            "a sealed delta's blocks differ from the blocks its log lists",
        ));
    }
    let mut next = crcs.iter();
    for record in groups.iter_mut().flatten() {
        if let LogRecord::Blocks { start, crcs: slots } = record {
            for (i, slot) in slots.iter_mut().enumerate() {
                match next.next() {
                    Some(&(b, crc)) if b == *start + i as u64 => *slot = crc,
                    _ => {
                        return Err(Error::invalid(
                            "a Blocks record names a block the delta does not write",
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Encodes the planned log blocks (the last one carries the commit record) into `out`.
fn encode_log(
    out: &mut Vec<(u64, Arc<AlignedBuf>)>,
    log: LogPlan,
    delta: u64,
    fs_id: u64,
    block_size: u32,
) {
    let count = log.groups.len();
    for (i, (mut group, &block)) in log.groups.into_iter().zip(log.blocks.iter()).enumerate() {
        let last = i + 1 == count;
        if last {
            group.push(LogRecord::Commit(log.info));
        }
        let next = log.blocks.get(i + 1).copied().unwrap_or(log.next);
        let header = BlockHeader {
            kind: Kind::Log,
            level: 0,
            blocknr: block,
            owner: 0,
            delta,
            fs_id,
        };
        let mut buf = AlignedBuf::zeroed(block_size as usize);
        let flags = if last {
            LogFlags::COMMIT
        } else {
            LogFlags::empty()
        };
        LogBlock::encode(&mut buf, &header, next, flags, i as u32, &group);
        out.push((block, Arc::new(buf)));
    }
}

/// Submits a sealed delta's writes (no lock held: submission may wait for ring slots).
pub fn submit(io: &BlockIo, sealed: Sealed) -> Result<Closed> {
    io.write(sealed.writes)?;
    Ok(sealed.closed)
}
