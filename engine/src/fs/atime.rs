//! Access times. The kernel does not keep atime for a FUSE filesystem (its inodes are
//! S_NOATIME): the daemon decides, and it sees only the requests that reach it. The engine
//! updates atime when a READ reaches it (a page-cache miss: the first read after an open
//! that dropped the cache, or after eviction) and on every READDIR, by the mount's policy:
//!
//! - `relatime` (the default, as on ext4): only when atime is not after mtime or ctime,
//!   or is 24 hours old or more (the kernel's `relatime_need_update`);
//! - `strictatime`: at every such request;
//! - `noatime`: never; `nodiratime`: never for directories.
//!
//! Reads served from the kernel's page cache never reach the daemon, so they do not update
//! atime; that is the honest limit of atime through FUSE with the page cache on.
//! An update is a change like any other: it goes in the open delta. On a read-only
//! filesystem nothing is updated.

use crate::format::inode::Timestamp;
use crate::state::State;
use crate::{Result, inode};

/// When atime changes on access.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AtimeMode {
    /// Never.
    NoAtime,
    /// When atime is not after mtime or ctime, or is a day old.
    #[default]
    RelAtime,
    /// At every access that reaches the engine.
    StrictAtime,
}

/// The atime rules of a mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AtimePolicy {
    pub mode: AtimeMode,
    /// Directories keep their atime whatever `mode` says.
    pub nodiratime: bool,
}

/// Age after which relatime updates atime anyway.
const RELATIME_AGE_SECONDS: i64 = 24 * 60 * 60;

impl AtimePolicy {
    /// The policy as one byte (kept in an atomic so that remount can change it).
    pub(super) fn to_bits(self) -> u8 {
        let mode = match self.mode {
            AtimeMode::NoAtime => 0,
            AtimeMode::RelAtime => 1,
            AtimeMode::StrictAtime => 2,
        };
        mode | (u8::from(self.nodiratime) << 2)
    }

    pub(super) fn from_bits(bits: u8) -> AtimePolicy {
        AtimePolicy {
            mode: match bits & 3 {
                0 => AtimeMode::NoAtime,
                2 => AtimeMode::StrictAtime,
                _ => AtimeMode::RelAtime,
            },
            nodiratime: bits & 4 != 0,
        }
    }

    /// Whether an access at `now` to an inode with these times changes its atime.
    fn wants_update(
        self,
        is_dir: bool,
        atime: Timestamp,
        mtime: Timestamp,
        ctime: Timestamp,
        now: Timestamp,
    ) -> bool {
        if is_dir && self.nodiratime {
            return false;
        }
        let key = |t: Timestamp| (t.sec, t.nsec);
        match self.mode {
            AtimeMode::NoAtime => false,
            AtimeMode::StrictAtime => key(atime) != key(now),
            AtimeMode::RelAtime => {
                key(mtime) >= key(atime)
                    || key(ctime) >= key(atime)
                    || now.sec.saturating_sub(atime.sec) >= RELATIME_AGE_SECONDS
            }
        }
    }
}

/// Whether an access to `ino` now would change its atime (so the caller can skip taking
/// a delta for nothing).
pub(super) fn wants_update(st: &State, ino: u64, policy: AtimePolicy) -> Result<bool> {
    if policy.mode == AtimeMode::NoAtime || st.read_only || st.failed.is_some() {
        return Ok(false);
    }
    let i = inode::get(st, ino)?;
    // chattr +A (FS_NOATIME_FL): never, as the kernel's S_NOATIME.
    if i.flags.contains(crate::format::inode::InodeFlags::NOATIME) {
        return Ok(false);
    }
    Ok(policy.wants_update(i.is_dir(), i.atime, i.mtime, i.ctime, super::now()))
}

/// Records an access to `ino` now, by `policy`.
pub(super) fn touch(st: &mut State, ino: u64, policy: AtimePolicy) -> Result<()> {
    if !wants_update(st, ino, policy)? {
        return Ok(());
    }
    let mut i = inode::get(st, ino)?;
    i.atime = super::now();
    inode::put(st, ino, &i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(sec: i64) -> Timestamp {
        Timestamp { sec, nsec: 0 }
    }

    #[test]
    fn relatime_rules() {
        let rel = AtimePolicy::default();
        let day = RELATIME_AGE_SECONDS;
        // atime after mtime and ctime, recent: no update.
        assert!(!rel.wants_update(false, t(100), t(50), t(50), t(200)));
        // mtime or ctime not before atime: update.
        assert!(rel.wants_update(false, t(100), t(100), t(50), t(200)));
        assert!(rel.wants_update(false, t(100), t(50), t(150), t(200)));
        // A day old: update.
        assert!(rel.wants_update(false, t(100), t(50), t(50), t(100 + day)));
        assert!(!rel.wants_update(false, t(100), t(50), t(50), t(99 + day)));
        let strict = AtimePolicy {
            mode: AtimeMode::StrictAtime,
            nodiratime: true,
        };
        assert!(strict.wants_update(false, t(100), t(50), t(50), t(101)));
        assert!(!strict.wants_update(true, t(100), t(500), t(50), t(101)));
        let none = AtimePolicy {
            mode: AtimeMode::NoAtime,
            nodiratime: false,
        };
        assert!(!none.wants_update(false, t(1), t(500), t(500), t(1 << 40)));
        for p in [rel, strict, none] {
            assert_eq!(AtimePolicy::from_bits(p.to_bits()), p);
        }
    }
}
