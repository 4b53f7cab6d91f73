//! Inode records: the values of the inode table, key (inum, 0).
//!
//! ```text
//!   0  4  mode              file type and permission bits, as Linux st_mode
//!   4  4  uid
//!   8  4  gid
//!  12  4  nlink
//!  16  8  size              bytes
//!  24  8  blocks            data blocks allocated to the file
//!  32  8  atime_sec         i64, seconds since the epoch
//!  40  8  mtime_sec
//!  48  8  ctime_sec
//!  56  8  btime_sec         creation time
//!  64  4  atime_nsec        0..1e9
//!  68  4  mtime_nsec
//!  72  4  ctime_nsec
//!  76  4  btime_nsec
//!  80  8  rdev              device number of character and block special files
//!  88  4  generation
//!  92  4  flags             InodeFlags (INLINE_DATA and the user-visible file flags)
//!  96  8  xattr_block       first xattr spill block, 0 = none
//! 104  8  parent            directories: the parent directory's inum; others 0
//! 112  2  inline_xattr_len  bytes of inline xattr entries that follow
//! 114  2  inline_data_len   bytes of inline data after them (short symlink targets)
//! 116  4  projid            project id (FS_IOC_FSSETXATTR); zero in records written
//!                            before 2026-11-29, where it was a reserved zero field
//! 120     inline xattr entries (see xattr.rs), then inline data
//! ```

use bitflags::bitflags;

use super::bytes::{get_i64, get_u16, get_u32, get_u64, put_i64, put_u16, put_u32, put_u64};
use super::xattr::{self, XattrEntry};
use crate::{Error, Result};

/// Bytes of the fixed part of an inode record.
pub const INODE_FIXED_SIZE: usize = 120;
/// Offset of `flags` in the record.
const OFF_FLAGS: usize = 92;
/// Offset of `inline_xattr_len` in the record.
const OFF_INLINE_XATTR_LEN: usize = 112;
/// Offset of `projid` in the record.
const OFF_PROJID: usize = 116;

/// File type bits of `mode` (Linux values).
pub const S_IFMT: u32 = 0o170000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFIFO: u32 = 0o010000;
const VALID_TYPES: [u32; 7] = [
    S_IFSOCK, S_IFLNK, S_IFREG, S_IFBLK, S_IFDIR, S_IFCHR, S_IFIFO,
];

bitflags! {
    /// Per-inode flags.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct InodeFlags: u32 {
        /// The file's content is stored inline in the record (short symlink targets).
        const INLINE_DATA = 1 << 0;
        /// `chattr +i`: no change to the file's data, attributes, names or xattrs.
        const IMMUTABLE = 1 << 1;
        /// `chattr +a`: data may only be appended; no removal, rename or link.
        const APPEND = 1 << 2;
        /// `chattr +d`: backup tools skip the file.
        const NODUMP = 1 << 3;
        /// `chattr +A`: no atime updates.
        const NOATIME = 1 << 4;
        /// `chattr +S`: changes are durable when the call that made them returns.
        const SYNC = 1 << 5;
        /// `chattr +D` (directories): entry changes are durable when the call returns.
        const DIRSYNC = 1 << 6;
        /// `chattr +P` (directories): new entries take the directory's project id (and
        /// new subdirectories this flag).
        const PROJINHERIT = 1 << 7;
    }
}

impl InodeFlags {
    /// The flags a user sets with chattr (every bit but INLINE_DATA).
    pub const USER: InodeFlags = InodeFlags::INLINE_DATA.complement();
    /// The user flags that only directories carry.
    pub const DIR_ONLY: InodeFlags = InodeFlags::DIRSYNC.union(InodeFlags::PROJINHERIT);
}

/// A timestamp with nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

/// A decoded inode record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inode {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub blocks: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub btime: Timestamp,
    pub rdev: u64,
    pub generation: u32,
    pub flags: InodeFlags,
    pub xattr_block: u64,
    pub parent: u64,
    /// Project id (quota accounting is not implemented; the id is stored and inherited).
    pub projid: u32,
    pub inline_xattrs: Vec<XattrEntry>,
    pub inline_data: Vec<u8>,
}

impl Inode {
    /// The file type bits of the mode.
    pub fn file_type(&self) -> u32 {
        self.mode & S_IFMT
    }

    /// True for directories.
    pub fn is_dir(&self) -> bool {
        self.file_type() == S_IFDIR
    }

    /// Bytes the encoded record takes.
    pub fn encoded_len(&self) -> usize {
        INODE_FIXED_SIZE + xattr::entries_len(&self.inline_xattrs) + self.inline_data.len()
    }

    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let xattr_len = xattr::entries_len(&self.inline_xattrs);
        assert!(xattr_len <= u16::MAX as usize && self.inline_data.len() <= u16::MAX as usize);
        let mut b = vec![0u8; INODE_FIXED_SIZE];
        put_u32(&mut b, 0, self.mode);
        put_u32(&mut b, 4, self.uid);
        put_u32(&mut b, 8, self.gid);
        put_u32(&mut b, 12, self.nlink);
        put_u64(&mut b, 16, self.size);
        put_u64(&mut b, 24, self.blocks);
        for (i, t) in [self.atime, self.mtime, self.ctime, self.btime]
            .iter()
            .enumerate()
        {
            put_i64(&mut b, 32 + 8 * i, t.sec);
            put_u32(&mut b, 64 + 4 * i, t.nsec);
        }
        put_u64(&mut b, 80, self.rdev);
        put_u32(&mut b, 88, self.generation);
        put_u32(&mut b, OFF_FLAGS, self.flags.bits());
        put_u64(&mut b, 96, self.xattr_block);
        put_u64(&mut b, 104, self.parent);
        put_u16(&mut b, OFF_INLINE_XATTR_LEN, xattr_len as u16);
        put_u16(&mut b, 114, self.inline_data.len() as u16);
        put_u32(&mut b, OFF_PROJID, self.projid);
        for e in &self.inline_xattrs {
            e.encode_into(&mut b);
        }
        b.extend_from_slice(&self.inline_data);
        debug_assert_eq!(b.len(), self.encoded_len());
        b
    }

    /// Decodes and validates a record stored in leaf `blocknr`.
    pub fn decode(v: &[u8], blocknr: u64) -> Result<Inode> {
        let bad = |what: String| Error::corrupt(blocknr, format!("inode record: {what}"));
        if v.len() < INODE_FIXED_SIZE {
            return Err(bad(format!(
                "{} bytes, shorter than the fixed part",
                v.len()
            )));
        }
        let truncated = || bad("truncated".into());
        let u32_at = |o| get_u32(v, o).ok_or_else(truncated);
        let u64_at = |o| get_u64(v, o).ok_or_else(truncated);
        let mut times = [Timestamp::default(); 4];
        for (i, t) in times.iter_mut().enumerate() {
            t.sec = get_i64(v, 32 + 8 * i).ok_or_else(truncated)?;
            t.nsec = u32_at(64 + 4 * i)?;
            if t.nsec >= 1_000_000_000 {
                return Err(bad(format!("timestamp {i} has {} nanoseconds", t.nsec)));
            }
        }
        let flags_raw = u32_at(OFF_FLAGS)?;
        let flags = InodeFlags::from_bits(flags_raw)
            .ok_or_else(|| bad(format!("unknown flags {flags_raw:#x}")))?;
        let xattr_len = get_u16(v, OFF_INLINE_XATTR_LEN).ok_or_else(truncated)? as usize;
        let data_len = get_u16(v, 114).ok_or_else(truncated)? as usize;
        if INODE_FIXED_SIZE + xattr_len + data_len != v.len() {
            return Err(bad(format!(
                "inline lengths {xattr_len}+{data_len} disagree with record size {}",
                v.len()
            )));
        }
        let xattr_bytes = v
            .get(INODE_FIXED_SIZE..INODE_FIXED_SIZE + xattr_len)
            .ok_or_else(truncated)?;
        let inline_xattrs = xattr::decode_entries(xattr_bytes)
            .map_err(|what| bad(format!("inline xattrs: {what}")))?;
        let inode = Inode {
            mode: u32_at(0)?,
            uid: u32_at(4)?,
            gid: u32_at(8)?,
            nlink: u32_at(12)?,
            size: u64_at(16)?,
            blocks: u64_at(24)?,
            atime: times[0],
            mtime: times[1],
            ctime: times[2],
            btime: times[3],
            rdev: u64_at(80)?,
            generation: u32_at(88)?,
            flags,
            xattr_block: u64_at(96)?,
            parent: u64_at(104)?,
            projid: u32_at(OFF_PROJID)?,
            inline_xattrs,
            inline_data: v
                .get(INODE_FIXED_SIZE + xattr_len..)
                .ok_or_else(truncated)?
                .to_vec(),
        };
        if !VALID_TYPES.contains(&inode.file_type()) {
            return Err(bad(format!(
                "mode {:#o} has no valid file type",
                inode.mode
            )));
        }
        let inline = inode.flags.contains(InodeFlags::INLINE_DATA);
        if !inline && !inode.inline_data.is_empty() {
            return Err(bad("inline data without the inline data flag".into()));
        }
        if inline && inode.size != inode.inline_data.len() as u64 {
            return Err(bad(format!(
                "inline data of {} bytes but size {}",
                inode.inline_data.len(),
                inode.size
            )));
        }
        if inode.is_dir() != (inode.parent != 0) {
            return Err(bad("parent is set exactly for directories".into()));
        }
        let user = inode.flags & InodeFlags::USER;
        let ty = inode.file_type();
        if !user.is_empty() && ty != S_IFREG && ty != S_IFDIR {
            return Err(bad(format!(
                "file flags {:#x} on a file of mode {:#o} (only regular files and directories carry them)",
                user.bits(),
                inode.mode
            )));
        }
        if !inode.is_dir() && inode.flags.intersects(InodeFlags::DIR_ONLY) {
            return Err(bad(format!(
                "directory-only flags {:#x} on a non-directory",
                (inode.flags & InodeFlags::DIR_ONLY).bits()
            )));
        }
        Ok(inode)
    }
}

/// The record `value` with only the flag bits this version knows and may keep for its file
/// type (unknown bits, and user flags its type cannot carry, cleared), or None when it is
/// too short to hold the flags or needs no change. fsck uses it to repair a damaged flags
/// field.
pub fn with_valid_flags(value: &[u8]) -> Option<Vec<u8>> {
    let raw = get_u32(value, OFF_FLAGS)?;
    let ty = get_u32(value, 0)? & S_IFMT;
    let mut keep = InodeFlags::from_bits_truncate(raw);
    if ty != S_IFREG && ty != S_IFDIR {
        keep &= !InodeFlags::USER;
    } else if ty != S_IFDIR {
        keep &= !InodeFlags::DIR_ONLY;
    }
    if keep.bits() == raw {
        return None;
    }
    let mut out = value.to_vec();
    put_u32(&mut out, OFF_FLAGS, keep.bits());
    Some(out)
}

/// The record `value` without its inline xattrs (their length field zeroed, the entries
/// cut out), or None when it is too short to say where they are. fsck uses it to salvage
/// an inode whose inline xattrs do not decode.
pub fn without_inline_xattrs(value: &[u8]) -> Option<Vec<u8>> {
    let xattr_len = usize::from(get_u16(value, OFF_INLINE_XATTR_LEN)?);
    let mut out = value.get(..INODE_FIXED_SIZE)?.to_vec();
    put_u16(&mut out, OFF_INLINE_XATTR_LEN, 0);
    out.extend_from_slice(value.get(INODE_FIXED_SIZE.checked_add(xattr_len)?..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Inode {
        Inode {
            mode: S_IFLNK | 0o777,
            uid: 1000,
            gid: 100,
            nlink: 1,
            size: 6,
            blocks: 0,
            atime: Timestamp {
                sec: -5,
                nsec: 999_999_999,
            },
            mtime: Timestamp {
                sec: 1_700_000_000,
                nsec: 1,
            },
            ctime: Timestamp { sec: 3, nsec: 0 },
            btime: Timestamp { sec: 4, nsec: 7 },
            rdev: 0,
            generation: 9,
            flags: InodeFlags::INLINE_DATA,
            xattr_block: 0,
            parent: 0,
            projid: 0,
            inline_xattrs: vec![XattrEntry {
                name: b"user.k".to_vec(),
                value: b"v".to_vec(),
            }],
            inline_data: b"target".to_vec(),
        }
    }

    #[test]
    fn round_trip() {
        let ino = sample();
        let b = ino.encode();
        assert_eq!(b.len(), ino.encoded_len());
        assert_eq!(Inode::decode(&b, 5).expect("decodes"), ino);
        let dir = Inode {
            mode: S_IFDIR | 0o755,
            nlink: 2,
            parent: 1,
            ..Inode::default()
        };
        assert_eq!(Inode::decode(&dir.encode(), 5).expect("decodes"), dir);
        let flagged = Inode {
            mode: S_IFDIR | 0o755,
            nlink: 2,
            parent: 1,
            flags: InodeFlags::USER,
            projid: 0xdead_beef,
            ..Inode::default()
        };
        assert_eq!(
            Inode::decode(&flagged.encode(), 5).expect("decodes"),
            flagged
        );
    }

    #[test]
    fn records_from_before_projid_read_with_projid_zero() {
        // A record written before 2026-11-29 has zero at 116 (then reserved) and no user
        // flags: it decodes as before, with project id 0.
        let ino = sample();
        let b = ino.encode();
        assert_eq!(&b[OFF_PROJID..OFF_PROJID + 4], &[0, 0, 0, 0]);
        assert_eq!(Inode::decode(&b, 5).expect("decodes").projid, 0);
    }

    #[test]
    fn unknown_or_misplaced_flags_are_corruption_and_repairable() {
        let file = Inode {
            mode: S_IFREG | 0o644,
            nlink: 1,
            flags: InodeFlags::IMMUTABLE | InodeFlags::NODUMP,
            ..Inode::default()
        };
        let good = file.encode();
        assert_eq!(with_valid_flags(&good), None, "nothing to repair");
        for bad_bits in [1u32 << 31, InodeFlags::DIRSYNC.bits()] {
            let mut b = good.clone();
            put_u32(&mut b, OFF_FLAGS, file.flags.bits() | bad_bits);
            let e = Inode::decode(&b, 77).expect_err("damaged flags");
            assert!(e.to_string().contains("77"), "{e}");
            let fixed = with_valid_flags(&b).expect("repairable");
            assert_eq!(Inode::decode(&fixed, 77).expect("repaired"), file);
        }
        // A symlink carries no user flags: they are cleared, INLINE_DATA stays.
        let mut link = sample().encode();
        put_u32(
            &mut link,
            OFF_FLAGS,
            (InodeFlags::INLINE_DATA | InodeFlags::APPEND).bits(),
        );
        assert!(Inode::decode(&link, 5).is_err());
        let fixed = with_valid_flags(&link).expect("repairable");
        assert_eq!(Inode::decode(&fixed, 5).expect("repaired"), sample());
        assert_eq!(with_valid_flags(&link[..90]), None, "too short");
    }

    #[test]
    fn truncations_and_flips_never_panic() {
        let b = sample().encode();
        for len in 0..b.len() {
            assert!(Inode::decode(&b[..len], 5).is_err(), "truncated to {len}");
        }
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0xff;
            let _ = Inode::decode(&c, 5);
        }
        let mut c = b.clone();
        c[66] = 0xff; // atime nsec high byte
        c[67] = 0xff;
        assert!(Inode::decode(&c, 5).is_err());
    }
}
