//! Directory entries: the values of the directory index, key (directory inum, position).
//! A *base* position is the name's keyed hash (hash.rs) with the low 8 bits a collision
//! counter: the smallest counter not in use when the entry was created. When all 256
//! counters of a hash are taken, the entry gets an *overflow* position instead:
//!
//! ```text
//! base:      63 62 | 61 .. 8 hash bits 8..61  | 7 .. 0 counter (0..=255)
//!             0  0 |                           |
//! overflow:  63 62 | 61 .. 32 hash bits 32..61 | 31 | 30 .. 0 counter (0..2^31)
//!             0  1 |                           |  0 |
//! ```
//!
//! Overflow positions sort after every base position of the directory, and the largest one
//! plus 3 (the readdir cookie) still fits a signed 64-bit FUSE offset. Positions never move
//! while an entry exists, so they serve as stable readdir cookies (telldir/seekdir).
//!
//! ```text
//! 0  8  inum
//! 8  1  type      DT_* value of the target (DT_REG 8, DT_DIR 4, DT_LNK 10, DT_CHR 2,
//!                 DT_BLK 6, DT_FIFO 1, DT_SOCK 12)
//! 9  1  name_len  1..=255
//! 10    name bytes: no '/', no NUL, not "." or ".."
//! ```

use super::NAME_MAX;
use super::bytes::{get_u8, get_u64, put_u64};
use super::hash::{NameHasher, POS_HASH_MASK, POS_SEQ_MAX};
use super::inode;
use crate::{Error, Result};

/// Bytes of the fixed part of a directory entry.
pub const DIRENT_FIXED_SIZE: usize = 10;

pub const DT_FIFO: u8 = 1;
pub const DT_CHR: u8 = 2;
pub const DT_DIR: u8 = 4;
pub const DT_BLK: u8 = 6;
pub const DT_REG: u8 = 8;
pub const DT_LNK: u8 = 10;
pub const DT_SOCK: u8 = 12;

/// The DT_* value for a mode's file type.
pub fn dtype_of_mode(mode: u32) -> u8 {
    match mode & inode::S_IFMT {
        inode::S_IFIFO => DT_FIFO,
        inode::S_IFCHR => DT_CHR,
        inode::S_IFDIR => DT_DIR,
        inode::S_IFBLK => DT_BLK,
        inode::S_IFLNK => DT_LNK,
        inode::S_IFSOCK => DT_SOCK,
        _ => DT_REG,
    }
}

/// Whether `name` may be stored in a directory.
pub fn name_valid(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && !name.contains(&b'/')
        && !name.contains(&0)
        && name != b"."
        && name != b".."
}

/// Bit 62: set in an overflow position, clear in a base position.
pub const POS_OVERFLOW: u64 = 1 << 62;
/// The hash bits an overflow position keeps: bits 32..61 of the name's hash.
pub const OVERFLOW_HASH_MASK: u64 = 0x3FFF_FFFF_0000_0000;
/// Largest overflow counter: 31 bits, bit 31 stays 0.
pub const OVERFLOW_SEQ_MAX: u64 = (1 << 31) - 1;
const _: () = assert!(OVERFLOW_HASH_MASK & POS_HASH_MASK == OVERFLOW_HASH_MASK);
const _: () = assert!(OVERFLOW_HASH_MASK & OVERFLOW_SEQ_MAX == 0);
// The largest cookie (position + 3) fits a signed 64-bit offset.
const _: () = assert!((POS_OVERFLOW | OVERFLOW_HASH_MASK | OVERFLOW_SEQ_MAX) < i64::MAX as u64 - 3);

/// Base position of `name` with collision counter `seq`.
pub fn position(hasher: &NameHasher, name: &[u8], seq: u64) -> u64 {
    debug_assert!(seq <= POS_SEQ_MAX);
    hasher.hash(name) | seq
}

/// The base positions of `hash`: `[start, end)`.
pub fn base_range(hash: u64) -> (u64, u64) {
    (hash, hash + POS_SEQ_MAX + 1)
}

/// Overflow position `seq` of `hash`.
pub fn overflow_position(hash: u64, seq: u64) -> u64 {
    debug_assert!(seq <= OVERFLOW_SEQ_MAX);
    POS_OVERFLOW | (hash & OVERFLOW_HASH_MASK) | seq
}

/// The overflow positions of `hash` (shared with every hash of the same bits 32..61):
/// `[start, end)`.
pub fn overflow_range(hash: u64) -> (u64, u64) {
    let start = overflow_position(hash, 0);
    (start, start + OVERFLOW_SEQ_MAX + 1)
}

/// Whether `pos` is a base or an overflow position (no stray bits).
pub fn position_valid(pos: u64) -> bool {
    if pos & POS_OVERFLOW == 0 {
        pos & !(POS_HASH_MASK | POS_SEQ_MAX) == 0
    } else {
        pos & !(POS_OVERFLOW | OVERFLOW_HASH_MASK | OVERFLOW_SEQ_MAX) == 0
    }
}

/// Whether a valid position `pos` may hold a name whose hash is `hash`.
pub fn position_matches(pos: u64, hash: u64) -> bool {
    if pos & POS_OVERFLOW == 0 {
        pos & POS_HASH_MASK == hash
    } else {
        pos & OVERFLOW_HASH_MASK == hash & OVERFLOW_HASH_MASK
    }
}

/// A decoded directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirent {
    pub inum: u64,
    pub dtype: u8,
    pub name: Vec<u8>,
}

impl Dirent {
    /// Encodes the entry.
    pub fn encode(&self) -> Vec<u8> {
        assert!(name_valid(&self.name), "invalid name");
        let mut b = vec![0u8; DIRENT_FIXED_SIZE];
        put_u64(&mut b, 0, self.inum);
        b.truncate(8);
        b.push(self.dtype);
        b.push(self.name.len() as u8);
        b.extend_from_slice(&self.name);
        b
    }

    /// Decodes and validates an entry stored at `pos` in leaf `blocknr`; with `hasher`,
    /// also checks that the position matches the name's hash.
    pub fn decode(v: &[u8], blocknr: u64, pos: u64, hasher: Option<&NameHasher>) -> Result<Dirent> {
        let bad = |what: String| {
            Error::corrupt(
                blocknr,
                format!("directory entry at position {pos:#x}: {what}"),
            )
        };
        let truncated = || bad("truncated".into());
        let inum = get_u64(v, 0).ok_or_else(truncated)?;
        let dtype = get_u8(v, 8).ok_or_else(truncated)?;
        let name_len = get_u8(v, 9).ok_or_else(truncated)? as usize;
        if v.len() != DIRENT_FIXED_SIZE + name_len {
            return Err(bad(format!("{} bytes for a {name_len}-byte name", v.len())));
        }
        let name = v.get(DIRENT_FIXED_SIZE..).ok_or_else(truncated)?;
        if !name_valid(name) {
            return Err(bad("invalid name".into()));
        }
        if ![DT_FIFO, DT_CHR, DT_DIR, DT_BLK, DT_REG, DT_LNK, DT_SOCK].contains(&dtype) {
            return Err(bad(format!("unknown type {dtype}")));
        }
        if inum == 0 {
            return Err(bad("inode number 0".into()));
        }
        if !position_valid(pos) {
            return Err(bad("position has bits outside the hash and counter".into()));
        }
        if let Some(hasher) = hasher
            && !position_matches(pos, hasher.hash(name))
        {
            return Err(bad("position does not match the name's hash".into()));
        }
        Ok(Dirent {
            inum,
            dtype,
            name: name.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_hash_check() {
        let seed = NameHasher::siphash([9u8; 16]);
        let d = Dirent {
            inum: 42,
            dtype: DT_REG,
            name: b"hello.txt".to_vec(),
        };
        let pos = position(&seed, &d.name, 3);
        let b = d.encode();
        assert_eq!(Dirent::decode(&b, 1, pos, Some(&seed)).expect("decodes"), d);
        assert!(Dirent::decode(&b, 1, pos ^ 0x100, Some(&seed)).is_err());
        // Overflow positions: the hash's bits 32..61 must match, the counter is free.
        let hash = seed.hash(&d.name);
        let over = overflow_position(hash, OVERFLOW_SEQ_MAX);
        assert_eq!(
            Dirent::decode(&b, 1, over, Some(&seed)).expect("decodes"),
            d
        );
        assert!(Dirent::decode(&b, 1, over ^ (1 << 40), Some(&seed)).is_err());
        assert!(Dirent::decode(&b, 1, over | (1 << 31), None).is_err());
        assert!(Dirent::decode(&b, 1, over | (1 << 63), None).is_err());
        assert!(overflow_range(hash).0 > base_range(hash).1);
        for len in 0..b.len() {
            assert!(Dirent::decode(&b[..len], 1, pos, None).is_err());
        }
    }

    #[test]
    fn names() {
        assert!(name_valid(b"a") && name_valid(&[b'x'; 255]));
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b", &[b'x'; 256]] {
            assert!(!name_valid(bad));
        }
        let mut b = Dirent {
            inum: 1,
            dtype: DT_DIR,
            name: b"ok".to_vec(),
        }
        .encode();
        b[10] = b'/';
        assert!(Dirent::decode(&b, 1, 0, None).is_err());
    }
}
