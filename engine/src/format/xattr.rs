//! Extended attributes: entries stored inline in the inode record and, when they do not fit
//! there, in a chain of spill blocks.
//!
//! Entry (inline and in spill blocks):
//! ```text
//! 0  1  name_len   1..=255, the full name with its namespace prefix ("user.x")
//! 1  2  value_len
//! 3     name bytes (no NUL), then value bytes
//! ```
//! Spill block (`Kind::Xattr`, `owner` = inode number):
//! ```text
//! 48  8  next    next spill block of the same inode, 0 = last
//! 56  4  count   entries
//! 60  4  used    bytes of entries from offset 64
//! 64     entries, then zero to the end of the block
//! ```

use super::bytes::{Cursor, all_zero, get_u32, get_u64, put_u32, put_u64};
use super::header::{BlockHeader, HEADER_SIZE, Kind, seal};
use crate::{Error, Result};

/// Longest xattr name, as on Linux.
pub const XATTR_NAME_MAX: usize = 255;
/// Bytes of an entry's fixed part.
pub const XATTR_ENTRY_FIXED: usize = 3;
const OFF_NEXT: usize = HEADER_SIZE;
const OFF_COUNT: usize = HEADER_SIZE + 8;
const OFF_USED: usize = HEADER_SIZE + 12;
const OFF_ENTRIES: usize = HEADER_SIZE + 16;

/// One extended attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XattrEntry {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

impl XattrEntry {
    /// Bytes the entry takes encoded.
    pub fn encoded_len(&self) -> usize {
        XATTR_ENTRY_FIXED + self.name.len() + self.value.len()
    }

    /// Appends the encoded entry.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(!self.name.is_empty() && self.name.len() <= XATTR_NAME_MAX);
        assert!(self.value.len() <= u16::MAX as usize);
        out.push(self.name.len() as u8);
        out.extend_from_slice(&(self.value.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.name);
        out.extend_from_slice(&self.value);
    }
}

/// Bytes a list of entries takes encoded.
pub fn entries_len(entries: &[XattrEntry]) -> usize {
    entries.iter().map(XattrEntry::encoded_len).sum()
}

/// Largest value one spill block can hold next to a name of `name_len` bytes.
pub fn spill_value_max(block_size: u32, name_len: usize) -> usize {
    (block_size as usize - OFF_ENTRIES - XATTR_ENTRY_FIXED - name_len).min(u16::MAX as usize)
}

/// Decodes a packed run of entries; the error says what was wrong (the caller names the
/// block). Allocation is bounded by `bytes.len()`.
pub fn decode_entries(bytes: &[u8]) -> std::result::Result<Vec<XattrEntry>, String> {
    let mut c = Cursor::new(bytes);
    let mut out: Vec<XattrEntry> = Vec::new();
    // A set, not a scan of earlier entries: duplicate detection stays linear.
    let mut names = std::collections::HashSet::new();
    while c.remaining() > 0 {
        let at = c.pos();
        let truncated = || format!("entry at byte {at} is truncated");
        let name_len = c.u8().ok_or_else(truncated)? as usize;
        let value_len = c.u16().ok_or_else(truncated)? as usize;
        let name = c.take(name_len).ok_or_else(truncated)?;
        let value = c.take(value_len).ok_or_else(truncated)?;
        if name.is_empty() || name.contains(&0) {
            return Err(format!(
                "entry at byte {at} has an empty name or one with NUL"
            ));
        }
        if !names.insert(name) {
            return Err(format!("entry at byte {at} repeats a name"));
        }
        out.push(XattrEntry {
            name: name.to_vec(),
            value: value.to_vec(),
        });
    }
    Ok(out)
}

/// A decoded spill block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XattrBlock {
    pub header: BlockHeader,
    pub next: u64,
    pub entries: Vec<XattrEntry>,
}

impl XattrBlock {
    /// Bytes available for entries in a spill block.
    pub fn capacity(block_size: u32) -> usize {
        block_size as usize - OFF_ENTRIES
    }

    /// Encodes a spill block.
    pub fn encode(block: &mut [u8], header: &BlockHeader, next: u64, entries: &[XattrEntry]) {
        assert_eq!(header.kind, Kind::Xattr);
        let mut body = Vec::with_capacity(entries_len(entries));
        for e in entries {
            e.encode_into(&mut body);
        }
        assert!(
            body.len() <= Self::capacity(block.len() as u32),
            "xattr block overflow"
        );
        block.fill(0);
        header.encode(block);
        put_u64(block, OFF_NEXT, next);
        put_u32(block, OFF_COUNT, entries.len() as u32);
        put_u32(block, OFF_USED, body.len() as u32);
        super::bytes::put_bytes(block, OFF_ENTRIES, &body);
        seal(block);
    }

    /// Decodes a spill block of inode `inum`.
    pub fn decode(block: &[u8], blocknr: u64, inum: u64, fs_id: u64) -> Result<XattrBlock> {
        let header = BlockHeader::decode(block, blocknr, Kind::Xattr, Some(fs_id))?;
        let bad = |what: String| Error::corrupt(blocknr, format!("xattr block: {what}"));
        if header.owner != inum || header.level != 0 {
            return Err(bad(format!(
                "belongs to inode {}, reached from inode {inum}",
                header.owner
            )));
        }
        let next = get_u64(block, OFF_NEXT).ok_or_else(|| bad("truncated".into()))?;
        let count = get_u32(block, OFF_COUNT).ok_or_else(|| bad("truncated".into()))? as usize;
        let used = get_u32(block, OFF_USED).ok_or_else(|| bad("truncated".into()))? as usize;
        let body = block
            .get(OFF_ENTRIES..OFF_ENTRIES.saturating_add(used))
            .ok_or_else(|| bad(format!("{used} bytes of entries do not fit")))?;
        let entries = decode_entries(body).map_err(bad)?;
        if entries.len() != count {
            return Err(bad(format!("count {count} but {} entries", entries.len())));
        }
        if !all_zero(block.get(OFF_ENTRIES + used..).unwrap_or(&[])) {
            return Err(bad("bytes after the entries are not zero".into()));
        }
        Ok(XattrBlock {
            header,
            next,
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_truncation() {
        let entries = vec![
            XattrEntry {
                name: b"user.a".to_vec(),
                value: vec![],
            },
            XattrEntry {
                name: b"trusted.b".to_vec(),
                value: vec![9; 300],
            },
        ];
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

    #[test]
    fn spill_block_round_trip_and_flips() {
        let entries = vec![XattrEntry {
            name: b"user.big".to_vec(),
            value: vec![1; 100],
        }];
        let h = BlockHeader {
            kind: Kind::Xattr,
            level: 0,
            blocknr: 30,
            owner: 17,
            delta: 2,
            fs_id: 5,
        };
        let mut blk = vec![0u8; 512];
        XattrBlock::encode(&mut blk, &h, 31, &entries);
        let d = XattrBlock::decode(&blk, 30, 17, 5).expect("decodes");
        assert_eq!((d.next, d.entries), (31, entries));
        assert!(XattrBlock::decode(&blk, 30, 18, 5).is_err(), "wrong owner");
        for i in 0..blk.len() {
            let mut c = blk.clone();
            c[i] ^= 1;
            assert!(XattrBlock::decode(&c, 30, 17, 5).is_err(), "flip {i}");
        }
    }
}
