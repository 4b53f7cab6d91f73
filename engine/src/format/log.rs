//! Log blocks and log records. A delta writes one or more log blocks, chained forward; the
//! last one carries the `COMMIT` flag and ends with a `Commit` record. Each log block names
//! the block where the next log block will be written (allocated ahead), so recovery walks
//! forward from the superblock's `log_head` until a block does not verify. The commit record
//! also names where the delta after the next one starts (allocated two ahead), so recovery
//! can tell a delta that never reached the disk (torn tail) from one damaged after it did.
//!
//! Log block (`Kind::Log`, `owner` = 0, `delta` = the delta it belongs to):
//! ```text
//! 48  8  next     block of the next log block (this delta's next, or the next delta's first)
//! 56  4  flags    LogFlags
//! 60  4  used     bytes of records from offset 72
//! 64  4  index    position of this block within its delta, from 0
//! 68  4  reserved zero
//! 72     records, then zero to the end of the block
//! ```
//! Record: `type u8, len u16, payload[len]`; payloads (all little-endian):
//! ```text
//! 1 Alloc     start u64, count u32            blocks now in use
//! 2 Free      start u64, count u32            blocks released; reusable once durable
//! 3 LeafSet   tree u8, key.a u64, key.b u64, block u64   leaf covering key is at block
//! 4 LeafDel   tree u8, key.a u64, key.b u64   leaf with lower bound key is gone
//! 5 OrphanAdd inum u64
//! 6 OrphanDel inum u64
//! 7 Blocks    start u64, crc u32 × n          blocks start..start+n written by this
//!                                             delta and the CRC32 of each whole block
//! 8 Commit    log_blocks u32, blocks u64, next_inum u64, inode_count u64, free_blocks u64,
//!             after_next u64
//!             last record of the COMMIT block: how many log blocks and listed blocks the
//!             delta has, the counters as of the end of the delta, and the block allocated
//!             for the first log block of delta D+2 (0 = not recorded). A 36-byte record
//!             without after_next (written before 2026-11-29) still decodes, as 0.
//! ```

use bitflags::bitflags;

use super::btree::Key;
use super::bytes::{Cursor, all_zero, get_u32, get_u64, put_u32, put_u64};
use super::header::{BlockHeader, HEADER_SIZE, Kind, seal};
use super::superblock::TreeId;
use crate::{Error, Result};

const OFF_NEXT: usize = HEADER_SIZE;
const OFF_FLAGS: usize = HEADER_SIZE + 8;
const OFF_USED: usize = HEADER_SIZE + 12;
const OFF_INDEX: usize = HEADER_SIZE + 16;
const OFF_RESERVED: usize = HEADER_SIZE + 20;
/// Offset of the first record in a log block.
pub const LOG_RECORDS_OFFSET: usize = HEADER_SIZE + 24;
/// Bytes of a record's type and length.
pub const RECORD_HEADER_SIZE: usize = 3;

bitflags! {
    /// Log block flags.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct LogFlags: u32 {
        /// The last log block of its delta; its last record is `Commit`.
        const COMMIT = 1 << 0;
    }
}

/// Record bytes a log block of `block_size` holds.
pub const fn log_capacity(block_size: u32) -> usize {
    block_size as usize - LOG_RECORDS_OFFSET
}

/// Most checksums one `Blocks` record can carry in a block of `block_size`.
pub fn blocks_record_max(block_size: u32) -> usize {
    ((log_capacity(block_size) - RECORD_HEADER_SIZE - 8) / 4).min((u16::MAX as usize - 8) / 4)
}

/// Counters carried by the commit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitInfo {
    pub log_blocks: u32,
    pub blocks: u64,
    pub next_inum: u64,
    pub inode_count: u64,
    pub free_blocks: u64,
    /// Block allocated for the first log block of the delta after the next (0 = the
    /// record predates the field).
    pub after_next: u64,
}

/// One logical change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRecord {
    Alloc { start: u64, count: u32 },
    Free { start: u64, count: u32 },
    LeafSet { tree: TreeId, key: Key, block: u64 },
    LeafDel { tree: TreeId, key: Key },
    OrphanAdd { inum: u64 },
    OrphanDel { inum: u64 },
    Blocks { start: u64, crcs: Vec<u32> },
    Commit(CommitInfo),
}

const T_ALLOC: u8 = 1;
const T_FREE: u8 = 2;
const T_LEAF_SET: u8 = 3;
const T_LEAF_DEL: u8 = 4;
const T_ORPHAN_ADD: u8 = 5;
const T_ORPHAN_DEL: u8 = 6;
const T_BLOCKS: u8 = 7;
const T_COMMIT: u8 = 8;
/// Payload bytes of a commit record, and of one written before `after_next` existed.
const COMMIT_LEN: usize = 44;
const COMMIT_LEN_OLD: usize = 36;

impl LogRecord {
    /// Bytes the record takes encoded, header included.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_SIZE
            + match self {
                LogRecord::Alloc { .. } | LogRecord::Free { .. } => 12,
                LogRecord::LeafSet { .. } => 25,
                LogRecord::LeafDel { .. } => 17,
                LogRecord::OrphanAdd { .. } | LogRecord::OrphanDel { .. } => 8,
                LogRecord::Blocks { crcs, .. } => 8 + 4 * crcs.len(),
                LogRecord::Commit(_) => COMMIT_LEN,
            }
    }

    /// Appends the encoded record.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let len = self.encoded_len() - RECORD_HEADER_SIZE;
        assert!(len <= u16::MAX as usize, "log record too long");
        let start = out.len();
        let ty = match self {
            LogRecord::Alloc { .. } => T_ALLOC,
            LogRecord::Free { .. } => T_FREE,
            LogRecord::LeafSet { .. } => T_LEAF_SET,
            LogRecord::LeafDel { .. } => T_LEAF_DEL,
            LogRecord::OrphanAdd { .. } => T_ORPHAN_ADD,
            LogRecord::OrphanDel { .. } => T_ORPHAN_DEL,
            LogRecord::Blocks { .. } => T_BLOCKS,
            LogRecord::Commit(_) => T_COMMIT,
        };
        out.push(ty);
        out.extend_from_slice(&(len as u16).to_le_bytes());
        fn u64s(out: &mut Vec<u8>, vals: &[u64]) {
            vals.iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
        match self {
            LogRecord::Alloc { start, count } | LogRecord::Free { start, count } => {
                u64s(out, &[*start]);
                out.extend_from_slice(&count.to_le_bytes());
            }
            LogRecord::LeafSet { tree, key, block } => {
                out.push(*tree as u8);
                u64s(out, &[key.a, key.b, *block]);
            }
            LogRecord::LeafDel { tree, key } => {
                out.push(*tree as u8);
                u64s(out, &[key.a, key.b]);
            }
            LogRecord::OrphanAdd { inum } | LogRecord::OrphanDel { inum } => u64s(out, &[*inum]),
            LogRecord::Blocks { start, crcs } => {
                u64s(out, &[*start]);
                crcs.iter()
                    .for_each(|c| out.extend_from_slice(&c.to_le_bytes()));
            }
            LogRecord::Commit(c) => {
                out.extend_from_slice(&c.log_blocks.to_le_bytes());
                u64s(
                    out,
                    &[
                        c.blocks,
                        c.next_inum,
                        c.inode_count,
                        c.free_blocks,
                        c.after_next,
                    ],
                );
            }
        }
        debug_assert_eq!(out.len() - start, self.encoded_len());
    }

    /// Decodes one record from the cursor; the error says what was wrong.
    fn decode(c: &mut Cursor<'_>) -> std::result::Result<LogRecord, String> {
        let at = c.pos();
        let truncated = || format!("record at byte {at} is truncated");
        let ty = c.u8().ok_or_else(truncated)?;
        let len = c.u16().ok_or_else(truncated)? as usize;
        let payload = c.take(len).ok_or_else(truncated)?;
        let mut p = Cursor::new(payload);
        let wrong_len = || format!("record type {ty} at byte {at} has length {len}");
        let fixed = |n: usize| if len == n { Ok(()) } else { Err(wrong_len()) };
        let tree = |v: u8| {
            TreeId::try_from(u64::from(v))
                .map_err(|t| format!("record at byte {at}: unknown tree {t}"))
        };
        let rec = match ty {
            T_ALLOC | T_FREE => {
                fixed(12)?;
                let (start, count) = (
                    p.u64().ok_or_else(truncated)?,
                    p.u32().ok_or_else(truncated)?,
                );
                if count == 0 {
                    return Err(format!("record at byte {at}: zero-length block range"));
                }
                if ty == T_ALLOC {
                    LogRecord::Alloc { start, count }
                } else {
                    LogRecord::Free { start, count }
                }
            }
            T_LEAF_SET => {
                fixed(25)?;
                let tree = tree(p.u8().ok_or_else(truncated)?)?;
                let key = Key {
                    a: p.u64().ok_or_else(truncated)?,
                    b: p.u64().ok_or_else(truncated)?,
                };
                LogRecord::LeafSet {
                    tree,
                    key,
                    block: p.u64().ok_or_else(truncated)?,
                }
            }
            T_LEAF_DEL => {
                fixed(17)?;
                let tree = tree(p.u8().ok_or_else(truncated)?)?;
                LogRecord::LeafDel {
                    tree,
                    key: Key {
                        a: p.u64().ok_or_else(truncated)?,
                        b: p.u64().ok_or_else(truncated)?,
                    },
                }
            }
            T_ORPHAN_ADD | T_ORPHAN_DEL => {
                fixed(8)?;
                let inum = p.u64().ok_or_else(truncated)?;
                if ty == T_ORPHAN_ADD {
                    LogRecord::OrphanAdd { inum }
                } else {
                    LogRecord::OrphanDel { inum }
                }
            }
            T_BLOCKS => {
                if len < 12 || !(len - 8).is_multiple_of(4) {
                    return Err(wrong_len());
                }
                let start = p.u64().ok_or_else(truncated)?;
                let crcs = (0..(len - 8) / 4)
                    .map(|_| p.u32().ok_or_else(truncated))
                    .collect::<std::result::Result<_, _>>()?;
                LogRecord::Blocks { start, crcs }
            }
            T_COMMIT => {
                if len != COMMIT_LEN && len != COMMIT_LEN_OLD {
                    return Err(wrong_len());
                }
                LogRecord::Commit(CommitInfo {
                    log_blocks: p.u32().ok_or_else(truncated)?,
                    blocks: p.u64().ok_or_else(truncated)?,
                    next_inum: p.u64().ok_or_else(truncated)?,
                    inode_count: p.u64().ok_or_else(truncated)?,
                    free_blocks: p.u64().ok_or_else(truncated)?,
                    after_next: if len == COMMIT_LEN {
                        p.u64().ok_or_else(truncated)?
                    } else {
                        0
                    },
                })
            }
            other => return Err(format!("record at byte {at}: unknown type {other}")),
        };
        Ok(rec)
    }
}

/// A decoded log block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogBlock {
    pub header: BlockHeader,
    pub next: u64,
    pub flags: LogFlags,
    pub index: u32,
    pub records: Vec<LogRecord>,
}

impl LogBlock {
    /// Encodes a log block. Panics if the records do not fit (the writer checks
    /// `encoded_len` against `log_capacity` before adding a record).
    pub fn encode(
        block: &mut [u8],
        header: &BlockHeader,
        next: u64,
        flags: LogFlags,
        index: u32,
        records: &[LogRecord],
    ) {
        assert_eq!(header.kind, Kind::Log);
        let mut body = Vec::new();
        for r in records {
            r.encode_into(&mut body);
        }
        assert!(
            body.len() <= log_capacity(block.len() as u32),
            "log block overflow"
        );
        assert_eq!(
            flags.contains(LogFlags::COMMIT),
            matches!(records.last(), Some(LogRecord::Commit(_))),
            "a commit block ends with the commit record, and only a commit block does"
        );
        block.fill(0);
        header.encode(block);
        put_u64(block, OFF_NEXT, next);
        put_u32(block, OFF_FLAGS, flags.bits());
        put_u32(block, OFF_USED, body.len() as u32);
        put_u32(block, OFF_INDEX, index);
        put_u32(block, OFF_RESERVED, 0);
        super::bytes::put_bytes(block, LOG_RECORDS_OFFSET, &body);
        seal(block);
    }

    /// Decodes log block `blocknr`, which must belong to delta `delta`. A block of another
    /// delta is an error (a stale block where the chain ends), as is any malformed record.
    pub fn decode(block: &[u8], blocknr: u64, delta: u64, fs_id: u64) -> Result<LogBlock> {
        let header = BlockHeader::decode(block, blocknr, Kind::Log, Some(fs_id))?;
        let bad = |what: String| Error::corrupt(blocknr, format!("log block: {what}"));
        if header.delta != delta {
            return Err(bad(format!(
                "belongs to delta {}, expected delta {delta}",
                header.delta
            )));
        }
        if header.owner != 0 || header.level != 0 {
            return Err(bad("non-zero owner or level".into()));
        }
        let truncated = || bad("truncated".into());
        let next = get_u64(block, OFF_NEXT).ok_or_else(truncated)?;
        let raw_flags = get_u32(block, OFF_FLAGS).ok_or_else(truncated)?;
        let flags = LogFlags::from_bits(raw_flags)
            .ok_or_else(|| bad(format!("unknown flags {raw_flags:#x}")))?;
        let used = get_u32(block, OFF_USED).ok_or_else(truncated)? as usize;
        let index = get_u32(block, OFF_INDEX).ok_or_else(truncated)?;
        if get_u32(block, OFF_RESERVED) != Some(0) {
            return Err(bad("reserved field is not zero".into()));
        }
        let body = block
            .get(LOG_RECORDS_OFFSET..LOG_RECORDS_OFFSET.saturating_add(used))
            .ok_or_else(|| bad(format!("{used} bytes of records do not fit")))?;
        if !all_zero(block.get(LOG_RECORDS_OFFSET + used..).unwrap_or(&[])) {
            return Err(bad("bytes after the records are not zero".into()));
        }
        let mut c = Cursor::new(body);
        let mut records = Vec::new();
        while c.remaining() > 0 {
            records.push(LogRecord::decode(&mut c).map_err(bad)?);
        }
        let commit_at = records
            .iter()
            .position(|r| matches!(r, LogRecord::Commit(_)));
        let is_commit = flags.contains(LogFlags::COMMIT);
        if is_commit != (commit_at.is_some()) || commit_at.is_some_and(|i| i + 1 != records.len()) {
            return Err(bad(
                "commit record missing, misplaced or in a non-commit block".into(),
            ));
        }
        Ok(LogBlock {
            header,
            next,
            flags,
            index,
            records,
        })
    }

    /// The commit record's counters, when this is a commit block.
    pub fn commit(&self) -> Option<CommitInfo> {
        match self.records.last() {
            Some(LogRecord::Commit(c)) => Some(*c),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<LogRecord> {
        vec![
            LogRecord::Alloc {
                start: 10,
                count: 3,
            },
            LogRecord::Free {
                start: 20,
                count: 1,
            },
            LogRecord::LeafSet {
                tree: TreeId::Dirs,
                key: Key::new(1, 2),
                block: 11,
            },
            LogRecord::LeafDel {
                tree: TreeId::Extents,
                key: Key::new(5, 0),
            },
            LogRecord::OrphanAdd { inum: 77 },
            LogRecord::OrphanDel { inum: 78 },
            LogRecord::Blocks {
                start: 10,
                crcs: vec![1, 2, 3],
            },
            LogRecord::Commit(CommitInfo {
                log_blocks: 1,
                blocks: 3,
                next_inum: 99,
                inode_count: 5,
                free_blocks: 40,
                after_next: 41,
            }),
        ]
    }

    #[test]
    fn round_trip_and_flips() {
        let h = BlockHeader {
            kind: Kind::Log,
            level: 0,
            blocknr: 9,
            owner: 0,
            delta: 4,
            fs_id: 1,
        };
        let mut blk = vec![0u8; 512];
        LogBlock::encode(&mut blk, &h, 12, LogFlags::COMMIT, 0, &records());
        let d = LogBlock::decode(&blk, 9, 4, 1).expect("decodes");
        assert_eq!((d.next, d.flags, d.index), (12, LogFlags::COMMIT, 0));
        assert_eq!(d.records, records());
        assert_eq!(d.commit().map(|c| c.next_inum), Some(99));
        assert!(LogBlock::decode(&blk, 9, 5, 1).is_err(), "stale delta");
        for i in 0..blk.len() {
            let mut c = blk.clone();
            c[i] ^= 0x20;
            assert!(LogBlock::decode(&c, 9, 4, 1).is_err(), "flip {i}");
        }
    }

    #[test]
    fn commit_record_without_after_next_still_decodes() {
        // A 36-byte commit record, as written before after_next existed.
        let mut body = vec![T_COMMIT];
        body.extend_from_slice(&(COMMIT_LEN_OLD as u16).to_le_bytes());
        body.extend_from_slice(&2u32.to_le_bytes());
        for v in [7u64, 99, 5, 40] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let mut c = Cursor::new(&body);
        let rec = LogRecord::decode(&mut c).expect("old commit record");
        let LogRecord::Commit(info) = rec else {
            panic!("not a commit record: {rec:?}");
        };
        assert_eq!((info.log_blocks, info.blocks), (2, 7));
        assert_eq!((info.free_blocks, info.after_next), (40, 0));
        // Any other length is malformed.
        body[1] = 40;
        body.extend_from_slice(&[0; 4]);
        assert!(LogRecord::decode(&mut Cursor::new(&body)).is_err());
    }

    #[test]
    fn resealed_garbage_records_never_panic() {
        let h = BlockHeader {
            kind: Kind::Log,
            level: 0,
            blocknr: 9,
            owner: 0,
            delta: 4,
            fs_id: 1,
        };
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut enc = vec![0u8; 512];
        LogBlock::encode(&mut enc, &h, 12, LogFlags::COMMIT, 0, &records());
        for _ in 0..3000 {
            let mut c = enc.clone();
            for _ in 0..4 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let i = LOG_RECORDS_OFFSET - 12 + (seed >> 33) as usize % 200;
                c[i] = (seed >> 20) as u8;
            }
            seal(&mut c);
            let _ = LogBlock::decode(&c, 9, 4, 1);
        }
    }
}
