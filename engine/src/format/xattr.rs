//! Extended attributes: entries stored inline in the inode record and, when they do not fit
//! there, in a chain of spill blocks (FORMAT.md §4.6).
//!
//! Inline entry (in the inode record):
//! ```text
//! 0  1  name_len   1..=255, the full name with its namespace prefix ("user.x")
//! 1  2  value_len  0..=65535
//! 3     name bytes (no NUL), then value bytes
//! ```
//! Spill entry (in the stream a spill chain carries; values up to XATTR_SIZE_MAX):
//! ```text
//! 0  1  name_len   1..=255
//! 1  4  value_len  0..=65536
//! 5     name bytes (no NUL), then value bytes
//! ```
//! Spill block (`Kind::Xattr`, `owner` = inode number, `level` 0). A chain carries one
//! stream of spill entries cut into block-sized pieces, in chain order:
//! ```text
//! 48  8  next        next block of the chain, 0 = last
//! 56  4  index       position of this block in the chain, from 0
//! 60  4  used        stream bytes in this block, from offset 72
//! 64  4  stream_len  bytes of the whole stream, 1..=SPILL_STREAM_MAX (same in every block)
//! 68  4  count       entries in the whole stream (same in every block)
//! 72     stream bytes, then zero to the end of the block
//! ```
//! Every block but the last is full (`used` = bs − 72), so `stream_len` fixes the chain's
//! length: a reader knows from block 0 how many blocks follow and never loops.

use super::bytes::{Cursor, all_zero, get_u32, get_u64, put_bytes, put_u32, put_u64};
use super::header::{BlockHeader, HEADER_SIZE, Kind, seal};
use crate::{Error, Result};

/// Longest xattr name, as on Linux.
pub const XATTR_NAME_MAX: usize = 255;
/// Largest xattr value, as on Linux (setxattr of a larger one is E2BIG).
pub const XATTR_SIZE_MAX: usize = 65536;
/// Largest list of names (each with its NUL) an inode may have, as Linux's listxattr can
/// return at most this much.
pub const XATTR_LIST_MAX: usize = 65536;
/// Bytes of an inline entry's fixed part.
pub const XATTR_ENTRY_FIXED: usize = 3;
/// Bytes of a spill entry's fixed part.
pub const SPILL_ENTRY_FIXED: usize = 5;
/// Largest stream one spill chain carries: 32 MiB, more than ext4 with `ea_inode` holds
/// for one inode (about 200 values of 64 KiB: its names must fit one block).
pub const SPILL_STREAM_MAX: usize = 32 << 20;
const OFF_NEXT: usize = HEADER_SIZE;
const OFF_INDEX: usize = HEADER_SIZE + 8;
const OFF_USED: usize = HEADER_SIZE + 12;
const OFF_STREAM_LEN: usize = HEADER_SIZE + 16;
const OFF_COUNT: usize = HEADER_SIZE + 20;
const OFF_STREAM: usize = HEADER_SIZE + 24;

/// One extended attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XattrEntry {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

impl XattrEntry {
    /// Bytes the entry takes encoded inline.
    pub fn encoded_len(&self) -> usize {
        XATTR_ENTRY_FIXED + self.name.len() + self.value.len()
    }

    /// Bytes the entry takes in a spill stream.
    pub fn spill_len(&self) -> usize {
        SPILL_ENTRY_FIXED + self.name.len() + self.value.len()
    }

    /// Appends the encoded inline entry.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(!self.name.is_empty() && self.name.len() <= XATTR_NAME_MAX);
        assert!(self.value.len() <= u16::MAX as usize);
        out.push(self.name.len() as u8);
        out.extend_from_slice(&(self.value.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.name);
        out.extend_from_slice(&self.value);
    }

    /// Appends the encoded spill entry.
    fn encode_spill_into(&self, out: &mut Vec<u8>) {
        assert!(!self.name.is_empty() && self.name.len() <= XATTR_NAME_MAX);
        assert!(self.value.len() <= XATTR_SIZE_MAX);
        out.push(self.name.len() as u8);
        out.extend_from_slice(&(self.value.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.name);
        out.extend_from_slice(&self.value);
    }
}

/// Bytes a list of entries takes encoded inline.
pub fn entries_len(entries: &[XattrEntry]) -> usize {
    entries.iter().map(XattrEntry::encoded_len).sum()
}

/// Bytes a list of entries takes as a spill stream.
pub fn spill_stream_len(entries: &[XattrEntry]) -> usize {
    entries.iter().map(XattrEntry::spill_len).sum()
}

/// Decodes a packed run of inline entries; the error says what was wrong (the caller
/// names the block). Allocation is bounded by `bytes.len()`.
pub fn decode_entries(bytes: &[u8]) -> std::result::Result<Vec<XattrEntry>, String> {
    decode_run(bytes, false).map_err(|(_, what)| what)
}

/// Decodes inline entries (`spill` false) or spill entries (`spill` true). Names must be
/// unique within the run (a set, not a scan of earlier entries: detection stays linear).
/// An error gives the byte offset of the entry that failed and what was wrong.
fn decode_run(bytes: &[u8], spill: bool) -> std::result::Result<Vec<XattrEntry>, (usize, String)> {
    let mut c = Cursor::new(bytes);
    let mut out: Vec<XattrEntry> = Vec::new();
    let mut names = std::collections::HashSet::new();
    while c.remaining() > 0 {
        let at = c.pos();
        let truncated = || (at, format!("entry at byte {at} is truncated"));
        let name_len = c.u8().ok_or_else(truncated)? as usize;
        let value_len = if spill {
            c.u32().ok_or_else(truncated)? as usize
        } else {
            c.u16().ok_or_else(truncated)? as usize
        };
        if value_len > XATTR_SIZE_MAX {
            return Err((
                at,
                format!(
                    "entry at byte {at} has a value of {value_len} bytes, over {XATTR_SIZE_MAX}"
                ),
            ));
        }
        let name = c.take(name_len).ok_or_else(truncated)?;
        let value = c.take(value_len).ok_or_else(truncated)?;
        if name.is_empty() || name.contains(&0) {
            return Err((
                at,
                format!("entry at byte {at} has an empty name or one with NUL"),
            ));
        }
        if !names.insert(name) {
            return Err((at, format!("entry at byte {at} repeats a name")));
        }
        out.push(XattrEntry {
            name: name.to_vec(),
            value: value.to_vec(),
        });
    }
    Ok(out)
}

/// Bytes of stream one spill block holds.
pub fn spill_capacity(block_size: u32) -> usize {
    (block_size as usize).saturating_sub(OFF_STREAM).max(1)
}

/// Blocks a chain carrying `stream_len` bytes has (0 for an empty stream: no chain).
pub fn spill_chain_blocks(stream_len: usize, block_size: u32) -> usize {
    stream_len.div_ceil(spill_capacity(block_size))
}

/// The spill blocks of `entries` for inode `owner`: one buffer per block, block `i` to be
/// written at `blocks[i]` (which the caller allocated, `spill_chain_blocks` of them).
pub fn encode_spill_chain(
    entries: &[XattrEntry],
    blocks: &[u64],
    owner: u64,
    delta: u64,
    fs_id: u64,
    block_size: u32,
) -> Vec<Vec<u8>> {
    let mut stream = Vec::with_capacity(spill_stream_len(entries));
    for e in entries {
        e.encode_spill_into(&mut stream);
    }
    assert!(!stream.is_empty() && stream.len() <= SPILL_STREAM_MAX);
    let cap = spill_capacity(block_size);
    assert_eq!(blocks.len(), spill_chain_blocks(stream.len(), block_size));
    let mut out = Vec::with_capacity(blocks.len());
    for (i, (chunk, &blocknr)) in stream.chunks(cap).zip(blocks).enumerate() {
        let header = BlockHeader {
            kind: Kind::Xattr,
            level: 0,
            blocknr,
            owner,
            delta,
            fs_id,
        };
        let piece = SpillPiece {
            next: blocks.get(i + 1).copied().unwrap_or(0),
            index: i as u32,
            stream_len: stream.len() as u32,
            count: entries.len() as u32,
        };
        let mut b = vec![0u8; block_size as usize];
        XattrBlock::encode(&mut b, &header, &piece, chunk);
        out.push(b);
    }
    out
}

/// Where a spill block stands in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpillPiece {
    pub next: u64,
    pub index: u32,
    pub stream_len: u32,
    pub count: u32,
}

/// A decoded spill block: its place in the chain and its piece of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XattrBlock {
    pub header: BlockHeader,
    pub piece: SpillPiece,
    pub bytes: Vec<u8>,
}

impl XattrBlock {
    /// Encodes one spill block holding `bytes` of the stream.
    pub fn encode(block: &mut [u8], header: &BlockHeader, piece: &SpillPiece, bytes: &[u8]) {
        assert_eq!(header.kind, Kind::Xattr);
        assert!(
            bytes.len() <= spill_capacity(block.len() as u32),
            "xattr block overflow"
        );
        block.fill(0);
        header.encode(block);
        put_u64(block, OFF_NEXT, piece.next);
        put_u32(block, OFF_INDEX, piece.index);
        put_u32(block, OFF_USED, bytes.len() as u32);
        put_u32(block, OFF_STREAM_LEN, piece.stream_len);
        put_u32(block, OFF_COUNT, piece.count);
        put_bytes(block, OFF_STREAM, bytes);
        seal(block);
    }

    /// Decodes spill block `blocknr` of inode `inum`, checking everything one block can
    /// say about itself: header, owner, the piece's size against its place in the chain.
    pub fn decode(block: &[u8], blocknr: u64, inum: u64, fs_id: u64) -> Result<XattrBlock> {
        let header = BlockHeader::decode(block, blocknr, Kind::Xattr, Some(fs_id))?;
        let bad = |what: String| Error::corrupt(blocknr, format!("xattr block: {what}"));
        if block.len() <= OFF_STREAM {
            return Err(bad(format!("{} bytes hold no stream", block.len())));
        }
        if header.owner != inum || header.level != 0 {
            return Err(bad(format!(
                "belongs to inode {} (level {}), reached from inode {inum}",
                header.owner, header.level
            )));
        }
        let field = |off| get_u32(block, off).ok_or_else(|| bad("truncated".into()));
        let next = get_u64(block, OFF_NEXT).ok_or_else(|| bad("truncated".into()))?;
        let piece = SpillPiece {
            next,
            index: field(OFF_INDEX)?,
            stream_len: field(OFF_STREAM_LEN)?,
            count: field(OFF_COUNT)?,
        };
        let used = field(OFF_USED)? as usize;
        let stream_len = piece.stream_len as usize;
        if stream_len == 0 || stream_len > SPILL_STREAM_MAX {
            return Err(bad(format!(
                "stream of {stream_len} bytes (1..={SPILL_STREAM_MAX})"
            )));
        }
        let cap = spill_capacity(block.len() as u32);
        let blocks = spill_chain_blocks(stream_len, block.len() as u32);
        let index = piece.index as usize;
        if index >= blocks {
            return Err(bad(format!(
                "index {index} in a chain of {blocks} blocks ({stream_len} bytes)"
            )));
        }
        let want_used = (stream_len - index * cap).min(cap);
        if used != want_used {
            return Err(bad(format!(
                "holds {used} bytes, block {index} of a {stream_len}-byte stream holds {want_used}"
            )));
        }
        if (index + 1 == blocks) != (next == 0) {
            return Err(bad(format!(
                "next is {next} at index {index} of a chain of {blocks} blocks"
            )));
        }
        if piece.count as usize > stream_len / (SPILL_ENTRY_FIXED + 1) {
            return Err(bad(format!(
                "{} entries cannot fit {stream_len} bytes",
                piece.count
            )));
        }
        let bytes = block
            .get(OFF_STREAM..OFF_STREAM + used)
            .ok_or_else(|| bad("truncated".into()))?;
        if !all_zero(block.get(OFF_STREAM + used..).unwrap_or(&[])) {
            return Err(bad("bytes after the stream are not zero".into()));
        }
        Ok(XattrBlock {
            header,
            piece,
            bytes: bytes.to_vec(),
        })
    }
}

/// Reads a spill chain block by block: give it each block the previous one named, and it
/// says which to read next. Allocation is bounded by the bytes of blocks that verified
/// (at most [`SPILL_STREAM_MAX`]); the chain's length is fixed by its first block, so a
/// damaged `next` can never make a reader loop.
#[derive(Debug)]
pub struct SpillReader {
    inum: u64,
    fs_id: u64,
    first: Option<SpillPiece>,
    blocks: Vec<u64>,
    stream: Vec<u8>,
    expect: u64,
}

impl SpillReader {
    /// A reader of the chain of inode `inum` that starts at block `head`.
    pub fn new(inum: u64, fs_id: u64, head: u64) -> SpillReader {
        SpillReader {
            inum,
            fs_id,
            first: None,
            blocks: Vec::new(),
            stream: Vec::new(),
            expect: head,
        }
    }

    /// The block to read next, or None when the chain is complete.
    pub fn next_block(&self) -> Option<u64> {
        (self.expect != 0).then_some(self.expect)
    }

    /// The blocks taken so far, in chain order.
    pub fn blocks(&self) -> &[u64] {
        &self.blocks
    }

    /// Entries the chain's first block says it holds (None before a block verified).
    pub fn count(&self) -> Option<u32> {
        self.first.map(|p| p.count)
    }

    /// Names of the whole entries in the blocks taken so far, for reporting what a damaged
    /// chain loses (at most `max`).
    pub fn names_so_far(&self, max: usize) -> Vec<Vec<u8>> {
        let mut c = Cursor::new(&self.stream);
        let mut out = Vec::new();
        while out.len() < max {
            let Some(name_len) = c.u8() else { break };
            let Some(value_len) = c.u32() else { break };
            let Some(name) = c.take(usize::from(name_len)) else {
                break;
            };
            if c.take(value_len as usize).is_none() {
                break;
            }
            out.push(name.to_vec());
        }
        out
    }

    /// Takes the bytes of the block [`next_block`](Self::next_block) named; returns the
    /// delta that wrote it.
    pub fn push(&mut self, block: &[u8]) -> Result<u64> {
        let blocknr = self.expect;
        let x = XattrBlock::decode(block, blocknr, self.inum, self.fs_id)?;
        let index = self.blocks.len();
        let bad = |what: String| Error::corrupt(blocknr, format!("xattr block: {what}"));
        let first = *self.first.get_or_insert(x.piece);
        if x.piece.index as usize != index {
            return Err(bad(format!(
                "index {} where the chain of inode {} has its block {index}",
                x.piece.index, self.inum
            )));
        }
        if (x.piece.stream_len, x.piece.count) != (first.stream_len, first.count) {
            return Err(bad(format!(
                "stream of {} bytes and {} entries, the chain's first block says {} and {}",
                x.piece.stream_len, x.piece.count, first.stream_len, first.count
            )));
        }
        self.blocks.push(blocknr);
        self.stream.extend_from_slice(&x.bytes);
        self.expect = x.piece.next;
        Ok(x.header.delta)
    }

    /// The entries of a complete chain. An entry that does not decode is named by the
    /// block it starts in.
    pub fn finish(self, block_size: u32) -> Result<Vec<XattrEntry>> {
        let head = self.blocks.first().copied().unwrap_or(0);
        let Some(first) = self.first.filter(|_| self.expect == 0) else {
            return Err(Error::corrupt(head, "xattr chain: incomplete".to_string()));
        };
        let entries = decode_run(&self.stream, true).map_err(|(at, what)| {
            let i = at / spill_capacity(block_size);
            let block = self.blocks.get(i).copied().unwrap_or(head);
            Error::corrupt(block, format!("xattr chain of inode {}: {what}", self.inum))
        })?;
        if entries.len() != first.count as usize {
            return Err(Error::corrupt(
                head,
                format!(
                    "xattr chain of inode {}: count {} but {} entries",
                    self.inum,
                    first.count,
                    entries.len()
                ),
            ));
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, len: usize, fill: u8) -> XattrEntry {
        XattrEntry {
            name: name.as_bytes().to_vec(),
            value: vec![fill; len],
        }
    }

    #[test]
    fn entries_round_trip_and_truncation() {
        let entries = vec![entry("user.a", 0, 0), entry("trusted.b", 300, 9)];
        let mut b = Vec::new();
        for e in &entries {
            e.encode_into(&mut b);
        }
        assert_eq!(decode_entries(&b).expect("decodes"), entries);
        for len in 1..b.len() {
            if len != entries[0].encoded_len() {
                assert!(decode_entries(&b[..len]).is_err(), "len {len}");
            }
        }
    }

    /// Reads the chain `blocks` (block i at blocks[i]) from `image` (block number → bytes).
    fn read_chain(
        image: &std::collections::HashMap<u64, Vec<u8>>,
        head: u64,
        inum: u64,
        bs: u32,
    ) -> Result<Vec<XattrEntry>> {
        let mut r = SpillReader::new(inum, 5, head);
        let mut steps = 0;
        while let Some(b) = r.next_block() {
            steps += 1;
            assert!(steps <= image.len() + 1, "the reader loops");
            let bytes = image
                .get(&b)
                .cloned()
                .unwrap_or_else(|| vec![0; bs as usize]);
            r.push(&bytes)?;
        }
        r.finish(bs)
    }

    #[test]
    fn spill_chain_round_trip_flips_and_loops() {
        let bs = 512;
        // A 64 KiB value, a 65536-byte one and small ones: several blocks.
        let entries = vec![
            entry("user.big", XATTR_SIZE_MAX, 1),
            entry("user.small", 3, 2),
            entry("security.x", 700, 3),
        ];
        let len = spill_stream_len(&entries);
        let n = spill_chain_blocks(len, bs);
        assert!(n > 100);
        let blocks: Vec<u64> = (0..n as u64).map(|i| 100 + 2 * i).collect();
        let encoded = encode_spill_chain(&entries, &blocks, 17, 3, 5, bs);
        let image: std::collections::HashMap<u64, Vec<u8>> =
            blocks.iter().copied().zip(encoded).collect();
        assert_eq!(read_chain(&image, 100, 17, bs).expect("reads"), entries);
        assert!(read_chain(&image, 100, 18, bs).is_err(), "wrong owner");
        // Any flipped bit of the first, a middle and the last block is an error naming it.
        for &b in [blocks[0], blocks[n / 2], blocks[n - 1]].iter() {
            for i in (0..bs as usize).step_by(7) {
                let mut damaged = image.clone();
                if let Some(blk) = damaged.get_mut(&b) {
                    blk[i] ^= 0x10;
                }
                let e = read_chain(&damaged, 100, 17, bs).expect_err("a flip reads");
                assert_eq!(e.block(), Some(b), "flip at byte {i}: {e}");
            }
        }
        // A chain whose next points back at its head (re-sealed) is refused, not looped.
        let mut looped = image.clone();
        let last = blocks[n - 1];
        let mut blk = looped[&last].clone();
        put_u64(&mut blk, OFF_NEXT, blocks[0]);
        seal(&mut blk);
        looped.insert(last, blk);
        assert!(read_chain(&looped, 100, 17, bs).is_err());
        // A lost block (zeros) in the middle is named.
        let mut holed = image.clone();
        holed.insert(blocks[3], vec![0; bs as usize]);
        match read_chain(&holed, 100, 17, bs) {
            Err(e) => assert_eq!(e.block(), Some(blocks[3]), "{e}"),
            Ok(_) => panic!("a zeroed block read"),
        }
    }

    #[test]
    fn spill_values_over_the_limit_are_damage() {
        let mut b = Vec::new();
        entry("user.x", 4, 1).encode_spill_into(&mut b);
        crate::format::bytes::put_u32(&mut b, 1, (XATTR_SIZE_MAX + 1) as u32);
        assert!(decode_run(&b, true).is_err());
    }
}
