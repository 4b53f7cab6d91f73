//! The named workloads, their units, and the sizes a run uses (--quick or the full set).

use std::path::PathBuf;

/// One workload; each reports one figure per round and target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    SeqWriteBuf,
    SeqWriteDirect,
    SeqReadBuf,
    SeqReadDirect,
    RandWriteQd1,
    RandWriteQd32,
    RandReadQd1,
    RandReadQd32,
    RandWriteBuf,
    Read2,
    Fsync1,
    Fsync16,
    Fsync256,
    Create,
    Stat,
    StatWarm,
    Readdir,
    Unlink,
    TreeCopy,
    TreeDu,
    TreeRm,
    Mixed,
    Dbench,
    FsyncScale,
    DaemonMemory,
    CrashMount,
}

impl Workload {
    /// Every workload, in the order a round runs them (later ones use what earlier ones
    /// left: the reads read the sequential files, stat reads the created files...).
    pub const ALL: [Workload; 26] = [
        Workload::SeqWriteBuf,
        Workload::SeqWriteDirect,
        Workload::SeqReadBuf,
        Workload::SeqReadDirect,
        Workload::RandWriteQd1,
        Workload::RandWriteQd32,
        Workload::RandReadQd1,
        Workload::RandReadQd32,
        Workload::RandWriteBuf,
        Workload::Read2,
        Workload::Fsync1,
        Workload::Fsync16,
        Workload::Fsync256,
        Workload::Create,
        Workload::Stat,
        Workload::StatWarm,
        Workload::Readdir,
        Workload::Unlink,
        Workload::TreeCopy,
        Workload::TreeDu,
        Workload::TreeRm,
        Workload::Mixed,
        Workload::Dbench,
        Workload::FsyncScale,
        Workload::DaemonMemory,
        Workload::CrashMount,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::SeqWriteBuf => "seq-write-1M-buffered",
            Workload::SeqWriteDirect => "seq-write-1M-direct",
            Workload::SeqReadBuf => "seq-read-1M-buffered",
            Workload::SeqReadDirect => "seq-read-1M-direct",
            Workload::RandWriteQd1 => "rand-write-4K-qd1",
            Workload::RandWriteQd32 => "rand-write-4K-qd32",
            Workload::RandReadQd1 => "rand-read-4K-qd1",
            Workload::RandReadQd32 => "rand-read-4K-qd32",
            Workload::RandWriteBuf => "rand-write-4K-buffered",
            Workload::Read2 => "seq-read-2-files",
            Workload::Fsync1 => "append-fsync-1",
            Workload::Fsync16 => "append-fsync-16",
            Workload::Fsync256 => "append-fsync-256",
            Workload::Create => "create",
            Workload::Stat => "stat",
            Workload::StatWarm => "stat-warm",
            Workload::Readdir => "readdir",
            Workload::Unlink => "unlink",
            Workload::TreeCopy => "tree-copy",
            Workload::TreeDu => "tree-du",
            Workload::TreeRm => "tree-rm-rf",
            Workload::Mixed => "mixed-small-files",
            Workload::Dbench => "dbench",
            Workload::FsyncScale => "fsync-16x10-vs-1x10",
            Workload::DaemonMemory => "daemon-peak-memory",
            Workload::CrashMount => "mount-after-crash",
        }
    }

    pub fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }

    pub fn unit(self) -> &'static str {
        match self {
            Workload::SeqWriteBuf
            | Workload::SeqWriteDirect
            | Workload::SeqReadBuf
            | Workload::SeqReadDirect
            | Workload::Read2
            | Workload::Dbench => "MB/s",
            Workload::RandWriteQd1
            | Workload::RandWriteQd32
            | Workload::RandReadQd1
            | Workload::RandReadQd32
            | Workload::RandWriteBuf => "IOPS",
            Workload::Fsync1 | Workload::Fsync16 | Workload::Fsync256 => "fsyncs/s",
            Workload::Create
            | Workload::Stat
            | Workload::StatWarm
            | Workload::Readdir
            | Workload::Unlink
            | Workload::TreeCopy
            | Workload::TreeDu
            | Workload::TreeRm => "files/s",
            Workload::Mixed => "ops/s",
            Workload::DaemonMemory => "MiB",
            Workload::CrashMount => "ms",
            Workload::FsyncScale => "×",
        }
    }

    /// Whether a bigger figure is better (false for memory and mount time).
    pub fn higher_is_better(self) -> bool {
        !matches!(
            self,
            Workload::DaemonMemory | Workload::CrashMount | Workload::FsyncScale
        )
    }

    /// Writers for the append+fsync workloads.
    pub fn writers(self) -> Option<usize> {
        match self {
            Workload::Fsync1 => Some(1),
            Workload::Fsync16 => Some(16),
            Workload::Fsync256 => Some(256),
            _ => None,
        }
    }

    /// Queue depth for the random workloads.
    pub fn queue_depth(self) -> Option<usize> {
        match self {
            Workload::RandWriteQd1 | Workload::RandReadQd1 => Some(1),
            Workload::RandWriteQd32 | Workload::RandReadQd32 => Some(32),
            _ => None,
        }
    }

    /// Whether the target is unmounted, its caches dropped, and mounted again before this
    /// workload, so that it starts cold.
    pub fn starts_cold(self) -> bool {
        matches!(
            self,
            Workload::SeqReadBuf
                | Workload::SeqReadDirect
                | Workload::RandReadQd1
                | Workload::Read2
                | Workload::Stat
                | Workload::TreeDu
        )
    }
}

/// How much each workload does.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Image (or partition) size.
    pub image_bytes: u64,
    /// Bytes of each sequential file; the random workloads run inside the direct one.
    pub file_bytes: u64,
    /// Seconds each random workload runs.
    pub rand_secs: f64,
    /// Append+fsync operations per writer count (split between the writers, at least 4
    /// each).
    pub fsync_ops: usize,
    /// Empty files for create, stat, readdir and unlink.
    pub files: usize,
    /// The source tree copied in, and the most bytes of it taken.
    pub tree: PathBuf,
    pub tree_bytes_max: u64,
    /// Clients and seconds of the mixed small-file workload.
    pub mixed_clients: usize,
    pub mixed_secs: f64,
    /// Data written before the crash in mount-after-crash.
    pub crash_fill_bytes: u64,
}

impl Sizes {
    /// --quick: every workload, small, a few minutes for all targets.
    pub fn quick(tree: PathBuf) -> Sizes {
        Sizes {
            image_bytes: 2 << 30,
            file_bytes: 256 << 20,
            rand_secs: 2.0,
            fsync_ops: 512,
            files: 10_000,
            tree,
            tree_bytes_max: 32 << 20,
            mixed_clients: 4,
            mixed_secs: 3.0,
            crash_fill_bytes: 64 << 20,
        }
    }

    /// The full set the issue names: 100,000 files, 1 GiB streams.
    pub fn full(tree: PathBuf) -> Sizes {
        Sizes {
            image_bytes: 8 << 30,
            file_bytes: 1 << 30,
            rand_secs: 5.0,
            fsync_ops: 2048,
            files: 100_000,
            tree,
            tree_bytes_max: 256 << 20,
            mixed_clients: 8,
            mixed_secs: 10.0,
            crash_fill_bytes: 256 << 20,
        }
    }

    /// Operations each of `writers` does in an append+fsync workload.
    pub fn fsync_ops_per_writer(&self, writers: usize) -> usize {
        (self.fsync_ops / writers.max(1)).max(4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for w in Workload::ALL {
            assert_eq!(Workload::from_name(w.name()), Some(w));
            assert!(!w.unit().is_empty());
        }
        let mut names: Vec<_> = Workload::ALL.iter().map(|w| w.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Workload::ALL.len());
        let q = Sizes::quick(PathBuf::from("/usr/include"));
        assert_eq!(q.fsync_ops_per_writer(256), 4);
        assert!(q.file_bytes * 2 < q.image_bytes);
    }
}
