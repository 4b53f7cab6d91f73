//! The operations of the differential suite and how a seed turns into them.
//!
//! Paths come from a small pool so that names collide all the time: a name is a file in one
//! step, a directory in the next, a symlink after that, and every errno of the namespace
//! (ENOENT, EEXIST, ENOTDIR, EISDIR, ENOTEMPTY, EINVAL, ENAMETOOLONG, ELOOP) comes up.

use std::fmt;

use crate::rng::Rng;

use super::Pending;

/// Open-file slots: each side keeps this many descriptors, paired by index.
pub const SLOTS: usize = 4;

/// Paths relative to the work directory; parents come before children.
pub const POOL: &[&str] = &[
    "a", "b", "c", "d", "a/a", "a/b", "d/a", "d/e", "d/e/a", "d/e/b", "b/c",
];

/// A component of 256 bytes: ENAMETOOLONG on both sides.
pub fn long_name() -> String {
    "n".repeat(256)
}

/// Bytes to write: generated from a seed so an operation prints short.
#[derive(Clone, PartialEq, Eq)]
pub struct Data {
    pub len: usize,
    pub seed: u64,
}

impl Data {
    pub fn bytes(&self) -> Vec<u8> {
        Rng::new(self.seed).bytes(self.len)
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes of seed {:#x}>", self.len, self.seed)
    }
}

/// The kind of special file `mknod` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    Fifo,
    Socket,
}

/// One operation, run the same way on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// open(2) into a slot (closing what the slot held); O_NONBLOCK is always added, so a
    /// FIFO never blocks.
    Open {
        slot: usize,
        path: String,
        flags: i32,
        mode: u32,
    },
    /// open(dir, O_TMPFILE) into a slot (pending [`Pending::TmpFile`]).
    TmpFile {
        slot: usize,
        dir: String,
        flags: i32,
        mode: u32,
    },
    Close {
        slot: usize,
    },
    Read {
        slot: usize,
        len: usize,
    },
    Pread {
        slot: usize,
        off: i64,
        len: usize,
    },
    Write {
        slot: usize,
        data: Data,
    },
    Pwrite {
        slot: usize,
        off: i64,
        data: Data,
    },
    /// lseek(2); SEEK_DATA / SEEK_HOLE only with [`Pending::SeekHole`].
    Lseek {
        slot: usize,
        off: i64,
        whence: i32,
    },
    Ftruncate {
        slot: usize,
        len: i64,
    },
    Fsync {
        slot: usize,
        data_only: bool,
    },
    Fstat {
        slot: usize,
    },
    /// fallocate(2) (pending [`Pending::Fallocate`]).
    Fallocate {
        slot: usize,
        mode: i32,
        off: i64,
        len: i64,
    },
    /// linkat(fd, "", AT_EMPTY_PATH): gives an open file (an unlinked one, a tmpfile) a name.
    LinkFd {
        slot: usize,
        path: String,
    },
    Truncate {
        path: String,
        len: i64,
    },
    Stat {
        path: String,
        follow: bool,
    },
    Mkdir {
        path: String,
        mode: u32,
    },
    Rmdir {
        path: String,
    },
    Unlink {
        path: String,
    },
    Rename {
        from: String,
        to: String,
        flags: u32,
    },
    Link {
        from: String,
        to: String,
    },
    Symlink {
        target: String,
        path: String,
    },
    Readlink {
        path: String,
    },
    Chmod {
        path: String,
        mode: u32,
    },
    /// lchown(2); `u32::MAX` keeps the id.
    Chown {
        path: String,
        uid: u32,
        gid: u32,
    },
    Utimens {
        path: String,
        times: [(i64, i64); 2],
        nofollow: bool,
    },
    Mknod {
        path: String,
        kind: Special,
        mode: u32,
    },
    SetXattr {
        path: String,
        name: String,
        value: Data,
        flags: i32,
    },
    GetXattr {
        path: String,
        name: String,
        size: usize,
    },
    ListXattr {
        path: String,
        size: usize,
    },
    RemoveXattr {
        path: String,
        name: String,
    },
    Readdir {
        path: String,
    },
    /// syncfs(2) on the work directory (pending [`Pending::Syncfs`]).
    Syncfs,
}

impl Op {
    /// The paths the operation names (for the timestamp checks: they and their parents are
    /// watched).
    pub fn paths(&self) -> Vec<&str> {
        match self {
            Op::Open { path, .. }
            | Op::LinkFd { path, .. }
            | Op::Truncate { path, .. }
            | Op::Stat { path, .. }
            | Op::Mkdir { path, .. }
            | Op::Rmdir { path }
            | Op::Unlink { path }
            | Op::Symlink { path, .. }
            | Op::Readlink { path }
            | Op::Chmod { path, .. }
            | Op::Chown { path, .. }
            | Op::Utimens { path, .. }
            | Op::Mknod { path, .. }
            | Op::SetXattr { path, .. }
            | Op::GetXattr { path, .. }
            | Op::ListXattr { path, .. }
            | Op::RemoveXattr { path, .. }
            | Op::Readdir { path } => vec![path],
            Op::TmpFile { dir, .. } => vec![dir],
            Op::Rename { from, to, .. } | Op::Link { from, to } => vec![from, to],
            _ => Vec::new(),
        }
    }

    /// The slot of an operation on an open file.
    pub fn slot(&self) -> Option<usize> {
        match self {
            Op::Open { slot, .. }
            | Op::TmpFile { slot, .. }
            | Op::Close { slot }
            | Op::Read { slot, .. }
            | Op::Pread { slot, .. }
            | Op::Write { slot, .. }
            | Op::Pwrite { slot, .. }
            | Op::Lseek { slot, .. }
            | Op::Ftruncate { slot, .. }
            | Op::Fsync { slot, .. }
            | Op::Fstat { slot }
            | Op::Fallocate { slot, .. }
            | Op::LinkFd { slot, .. } => Some(*slot),
            _ => None,
        }
    }
}

/// Draws operations from a seed.
#[derive(Debug)]
pub struct Generator {
    rng: Rng,
    enabled: Vec<Pending>,
}

const MODES: &[u32] = &[
    0o644, 0o600, 0o755, 0o000, 0o4755, 0o2755, 0o1777, 0o6711, 0o444, 0o777,
];
const IDS: &[u32] = &[0, 1000, 65534, u32::MAX];
const TIMES: &[(i64, i64)] = &[
    (0, libc::UTIME_NOW),
    (0, libc::UTIME_OMIT),
    (0, 0),
    (1_000_000_000, 123_456_789),
    (-1_000_000_000, 5),
    (1_500_000_000, 999_999_999),
];

impl Generator {
    pub fn new(seed: u64, enabled: &[Pending]) -> Generator {
        Generator {
            rng: Rng::new(seed),
            enabled: enabled.to_vec(),
        }
    }

    fn on(&self, p: Pending) -> bool {
        self.enabled.contains(&p)
    }

    fn path(&mut self) -> String {
        if self.rng.chance(1, 60) {
            let base = self.rng.pick(&["", "d/"]);
            return format!("{base}{}", long_name());
        }
        // Top-level names more often than deep ones.
        let i = if self.rng.chance(1, 2) {
            self.rng.below_usize(4)
        } else {
            self.rng.below_usize(POOL.len())
        };
        POOL[i].to_string()
    }

    fn slot(&mut self) -> usize {
        self.rng.below_usize(SLOTS)
    }

    fn mode(&mut self) -> u32 {
        *self.rng.pick(MODES)
    }

    fn data(&mut self) -> Data {
        let len = *self
            .rng
            .pick(&[0, 1, 17, 512, 4095, 4096, 4097, 8192, 65536, 200_000]);
        Data {
            len,
            seed: self.rng.next_u64(),
        }
    }

    /// An offset: mostly in the first blocks, sometimes far past the end, sometimes bad.
    fn offset(&mut self) -> i64 {
        match self.rng.weighted(&[40, 25, 15, 8, 6, 6]) {
            0 => self.rng.below(8192) as i64,
            1 => 4096 * self.rng.below(32) as i64,
            2 => (1 << 20) + self.rng.below(1 << 16) as i64,
            3 => (1 << 30) + self.rng.below(1 << 16) as i64,
            4 => (1 << 40) + 4096 * self.rng.below(4) as i64,
            _ => -1,
        }
    }

    fn read_len(&mut self) -> usize {
        *self.rng.pick(&[0, 1, 100, 4096, 10_000, 65_536])
    }

    fn truncate_len(&mut self) -> i64 {
        *self.rng.pick(&[
            0,
            1,
            4095,
            4096,
            5000,
            100_000,
            1 << 20,
            1 << 40,
            -1,
            1 << 60,
        ])
    }

    fn open_flags(&mut self) -> i32 {
        let mut f = *self
            .rng
            .pick(&[libc::O_RDONLY, libc::O_WRONLY, libc::O_RDWR]);
        for (flag, num, den) in [
            (libc::O_CREAT, 1, 2),
            (libc::O_EXCL, 1, 6),
            (libc::O_TRUNC, 1, 5),
            (libc::O_APPEND, 1, 5),
            (libc::O_DIRECTORY, 1, 10),
            (libc::O_NOFOLLOW, 1, 10),
        ] {
            if self.rng.chance(num, den) {
                f |= flag;
            }
        }
        f
    }

    fn symlink_target(&mut self) -> String {
        match self.rng.below(10) {
            0 => "nonexistent".into(),
            1 => "../a".into(),
            2 => "d/../a".into(),
            3 => "t/".repeat(150),
            4 => "a/".into(),
            5 if self.rng.chance(1, 4) => "x".repeat(4096),
            _ => self.path(),
        }
    }

    fn xattr_name(&mut self) -> String {
        if self.on(Pending::XattrNamespaces) && self.rng.chance(1, 5) {
            return (*self
                .rng
                .pick(&["user.", "foo.bar", "trusted.t", "security.s", "system.x"]))
            .to_string();
        }
        if self.rng.chance(1, 20) {
            return format!("user.{}", "x".repeat(self.rng.range(200, 260) as usize));
        }
        (*self.rng.pick(&["user.a", "user.b", "user.c", "user.dd"])).to_string()
    }

    fn xattr_value(&mut self) -> Data {
        let len = if self.on(Pending::LargeXattrs) && self.rng.chance(1, 4) {
            *self.rng.pick(&[3000, 8000, 65_536, 65_537])
        } else {
            *self.rng.pick(&[0, 1, 50, 200])
        };
        Data {
            len,
            seed: self.rng.next_u64(),
        }
    }

    fn time(&mut self) -> (i64, i64) {
        *self.rng.pick(TIMES)
    }

    /// The next operation.
    pub fn next_op(&mut self) -> Op {
        // Weights, in the order of the match below.
        let weights = [
            14, 4, 4, 5, 7, 7, 4, 3, 2, 3, 2, 3, 5, 6, 4, 4, 6, 3, 4, 2, 4, 3, 3, 2, 4, 3, 3, 2, 3,
            4, 4, 1,
        ];
        loop {
            let op = match self.rng.weighted(&weights) {
                0 => Op::Open {
                    slot: self.slot(),
                    path: self.path(),
                    flags: self.open_flags(),
                    mode: self.mode(),
                },
                1 => Op::Close { slot: self.slot() },
                2 => Op::Read {
                    slot: self.slot(),
                    len: self.read_len(),
                },
                3 => Op::Pread {
                    slot: self.slot(),
                    off: self.offset(),
                    len: self.read_len(),
                },
                4 => Op::Write {
                    slot: self.slot(),
                    data: self.data(),
                },
                5 => Op::Pwrite {
                    slot: self.slot(),
                    off: self.offset(),
                    data: self.data(),
                },
                6 => {
                    let seek_hole = self.on(Pending::SeekHole) && self.rng.chance(1, 3);
                    let whence = if seek_hole {
                        *self.rng.pick(&[libc::SEEK_DATA, libc::SEEK_HOLE])
                    } else {
                        *self
                            .rng
                            .pick(&[libc::SEEK_SET, libc::SEEK_CUR, libc::SEEK_END])
                    };
                    let off = if seek_hole {
                        self.offset()
                    } else {
                        *self.rng.pick(&[0, 10, 4096, 1 << 40, -1, -10])
                    };
                    Op::Lseek {
                        slot: self.slot(),
                        off,
                        whence,
                    }
                }
                7 => Op::Ftruncate {
                    slot: self.slot(),
                    len: self.truncate_len(),
                },
                8 => Op::Fsync {
                    slot: self.slot(),
                    data_only: self.rng.chance(1, 2),
                },
                9 => Op::Fstat { slot: self.slot() },
                10 if self.on(Pending::Fallocate) => Op::Fallocate {
                    slot: self.slot(),
                    mode: *self.rng.pick(&[
                        0,
                        libc::FALLOC_FL_KEEP_SIZE,
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        libc::FALLOC_FL_ZERO_RANGE,
                        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                        libc::FALLOC_FL_COLLAPSE_RANGE,
                        libc::FALLOC_FL_INSERT_RANGE,
                        libc::FALLOC_FL_PUNCH_HOLE,
                    ]),
                    off: if self.rng.chance(1, 2) {
                        4096 * self.rng.below(16) as i64
                    } else {
                        self.offset()
                    },
                    len: *self.rng.pick(&[0, 1, 4096, 8192, 10_000, 1 << 20, -1]),
                },
                10 => continue,
                11 => Op::LinkFd {
                    slot: self.slot(),
                    path: self.path(),
                },
                12 => Op::Truncate {
                    path: self.path(),
                    len: self.truncate_len(),
                },
                13 => Op::Stat {
                    path: self.path(),
                    follow: self.rng.chance(1, 2),
                },
                14 => Op::Mkdir {
                    path: self.path(),
                    mode: self.mode(),
                },
                15 => Op::Rmdir { path: self.path() },
                16 => Op::Unlink { path: self.path() },
                17 => {
                    let mut flags =
                        *self
                            .rng
                            .pick(&[0, 0, libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE]);
                    if self.rng.chance(1, 30) {
                        flags = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE;
                    }
                    if self.on(Pending::RenameWhiteout) && self.rng.chance(1, 8) {
                        flags |= libc::RENAME_WHITEOUT;
                    }
                    Op::Rename {
                        from: self.path(),
                        to: self.path(),
                        flags,
                    }
                }
                18 => Op::Link {
                    from: self.path(),
                    to: self.path(),
                },
                19 => Op::Symlink {
                    target: self.symlink_target(),
                    path: self.path(),
                },
                20 => Op::Readlink { path: self.path() },
                21 => Op::Chmod {
                    path: self.path(),
                    mode: self.mode(),
                },
                22 => Op::Chown {
                    path: self.path(),
                    uid: *self.rng.pick(IDS),
                    gid: *self.rng.pick(IDS),
                },
                23 => Op::Utimens {
                    path: self.path(),
                    times: [self.time(), self.time()],
                    nofollow: self.rng.chance(1, 3),
                },
                24 => Op::Mknod {
                    path: self.path(),
                    kind: if self.rng.chance(3, 4) {
                        Special::Fifo
                    } else {
                        Special::Socket
                    },
                    mode: self.mode(),
                },
                25 => Op::SetXattr {
                    path: self.path(),
                    name: self.xattr_name(),
                    value: self.xattr_value(),
                    flags: *self
                        .rng
                        .pick(&[0, 0, libc::XATTR_CREATE, libc::XATTR_REPLACE]),
                },
                26 => Op::GetXattr {
                    path: self.path(),
                    name: self.xattr_name(),
                    size: *self.rng.pick(&[0, 1, 4096, 70_000]),
                },
                27 => Op::ListXattr {
                    path: self.path(),
                    size: *self.rng.pick(&[0, 3, 4096]),
                },
                28 => Op::RemoveXattr {
                    path: self.path(),
                    name: self.xattr_name(),
                },
                29 => Op::Readdir {
                    path: if self.rng.chance(1, 4) {
                        String::new()
                    } else {
                        self.path()
                    },
                },
                30 if self.on(Pending::Syncfs) => Op::Syncfs,
                30 => continue,
                _ if self.on(Pending::TmpFile) => Op::TmpFile {
                    slot: self.slot(),
                    dir: if self.rng.chance(1, 2) {
                        String::new()
                    } else {
                        self.path()
                    },
                    flags: *self.rng.pick(&[
                        libc::O_RDWR,
                        libc::O_WRONLY,
                        libc::O_RDWR | libc::O_EXCL,
                        libc::O_RDONLY,
                    ]),
                    mode: self.mode(),
                },
                _ => continue,
            };
            return op;
        }
    }
}
