//! Value conversions between the engine's types and fuser's: attributes, file kinds, times.
//! Pure functions, no errno decisions (those live in [`crate::errno`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};
use tuxfs_engine::format::inode::Timestamp;
use tuxfs_engine::fs::{Attr, FileKind, TimeSet};

/// Nanoseconds in a second, the bound of `Timestamp::nsec`.
const NSEC_PER_SEC: u32 = 1_000_000_000;

/// The kernel's file type for an engine file kind.
pub fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
    }
}

/// An engine timestamp as a `SystemTime`; times before 1970 are supported. A timestamp that
/// `SystemTime` cannot hold (beyond its range) is clamped to the epoch rather than panicking.
pub fn system_time(t: Timestamp) -> SystemTime {
    let nsec = Duration::from_nanos(u64::from(t.nsec.min(NSEC_PER_SEC - 1)));
    let whole = if t.sec >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(t.sec.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(t.sec.unsigned_abs()))
    };
    whole
        .and_then(|w| w.checked_add(nsec))
        .unwrap_or(UNIX_EPOCH)
}

/// A `SystemTime` as an engine timestamp (seconds may be negative; nanoseconds are always
/// the non-negative part after the second, as in `struct timespec`).
pub fn timestamp(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp {
            sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nsec: d.subsec_nanos(),
        },
        Err(before) => {
            let d = before.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            if d.subsec_nanos() == 0 {
                Timestamp {
                    sec: -secs,
                    nsec: 0,
                }
            } else {
                Timestamp {
                    sec: -secs - 1,
                    nsec: NSEC_PER_SEC - d.subsec_nanos(),
                }
            }
        }
    }
}

/// How setattr should change a time.
pub fn time_set(t: fuser::TimeOrNow) -> TimeSet {
    match t {
        fuser::TimeOrNow::Now => TimeSet::Now,
        fuser::TimeOrNow::SpecificTime(at) => TimeSet::At(timestamp(at)),
    }
}

/// The attributes the kernel caches, from the engine's.
pub fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: system_time(a.atime),
        mtime: system_time(a.mtime),
        ctime: system_time(a.ctime),
        crtime: system_time(a.crtime),
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_on_both_sides_of_the_epoch() {
        for (sec, nsec) in [
            (0, 0),
            (1, 1),
            (1_700_000_000, 999_999_999),
            (-1, 0),
            (-1, 500_000_000),
            (-86_400 * 365, 1),
        ] {
            let t = Timestamp { sec, nsec };
            assert_eq!(timestamp(system_time(t)), t, "{sec}.{nsec}");
        }
    }

    #[test]
    fn times_before_the_epoch_keep_nanoseconds_positive() {
        let t = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(
            timestamp(t),
            Timestamp {
                sec: -2,
                nsec: 500_000_000
            }
        );
    }

    #[test]
    fn utime_now_is_passed_as_now() {
        assert_eq!(time_set(fuser::TimeOrNow::Now), TimeSet::Now);
        let at = UNIX_EPOCH + Duration::new(5, 6);
        assert_eq!(
            time_set(fuser::TimeOrNow::SpecificTime(at)),
            TimeSet::At(Timestamp { sec: 5, nsec: 6 })
        );
    }

    #[test]
    fn attributes_keep_every_field() {
        let a = Attr {
            ino: 42,
            size: 10_000,
            blocks: 24,
            atime: Timestamp { sec: 1, nsec: 2 },
            mtime: Timestamp { sec: 3, nsec: 4 },
            ctime: Timestamp { sec: 5, nsec: 6 },
            crtime: Timestamp { sec: 7, nsec: 8 },
            kind: FileKind::Symlink,
            perm: 0o4755,
            nlink: 3,
            uid: 1000,
            gid: 100,
            rdev: 0x0801,
            blksize: 4096,
            generation: 9,
        };
        let f = file_attr(&a);
        assert_eq!(f.ino, INodeNo(42));
        assert_eq!((f.size, f.blocks, f.perm, f.nlink), (10_000, 24, 0o4755, 3));
        assert_eq!((f.uid, f.gid, f.rdev, f.blksize), (1000, 100, 0x0801, 4096));
        assert_eq!(f.kind, FileType::Symlink);
        assert_eq!(timestamp(f.mtime), a.mtime);
        assert_eq!(timestamp(f.ctime), a.ctime);
    }
}
