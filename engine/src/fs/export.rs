//! Export support: finding an inode from its number alone, as the kernel does when it
//! decodes a file handle (`open_by_handle_at(2)`, and knfsd for every NFS request).
//!
//! A file handle is (inode number, generation). The kernel keeps it after forgetting the
//! inode (cache drop, remount, a new mount); to decode it, FUSE sends LOOKUP of "." on the
//! inode number, compares the generation in the reply with the handle's and answers ESTALE
//! when they differ or the lookup says ENOENT; to connect a directory to the tree it sends
//! LOOKUP of ".." on it. This module answers those from the inode table, and gives library
//! users the same decode with the generation check ([`Filesystem::inode_by_handle`]).
//!
//! Invariants kept here:
//! - An inode number names one file for as long as the generation it was created with:
//!   committed inode numbers are never handed out again (`next_inum` only grows, and is in
//!   every commit record), so only a crash can reuse one (an inode created in a delta that
//!   never became durable). Generations come from a counter seeded at random at every mount
//!   ([`generation_seed`]), so the file that reuses the number after such a crash carries
//!   another generation and an old handle to it is stale (ext4 does the same with
//!   `s_next_generation`).
//! - A freed inode, and an inode whose last name is gone (nlink 0: only open descriptors
//!   keep it), cannot be reached by handle: ENOENT from "." (which the kernel turns into
//!   ESTALE) and [`Errno::Stale`] from [`Filesystem::inode_by_handle`], as ext4 refuses
//!   unlinked inodes when it decodes a handle.
//! - ".." of a directory is the parent recorded in its inode (kept by mkdir and rename);
//!   the root's parent is itself.

use std::hash::{BuildHasher, RandomState};

use super::{Attr, Filesystem, posix};
use crate::format::inode::Inode;
use crate::state::State;
use crate::{Errno, Result, inode};

/// A generation seed for a new mount: random (std's `RandomState` is seeded from the
/// operating system's random source), mixed with the time and the process id, so two mounts
/// of one image practically never hand out the same generation for the same inode number.
pub(crate) fn generation_seed() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mixed = RandomState::new().hash_one((nanos, std::process::id()));
    (mixed ^ (mixed >> 32)) as u32
}

/// The generation for an inode being created now; advances the mount's counter.
pub(super) fn next_generation(st: &mut State) -> u32 {
    let generation = st.next_generation;
    st.next_generation = st.next_generation.wrapping_add(1);
    generation
}

/// The inode `ino` when a handle may reach it: it exists and has a name.
fn reachable(st: &State, ino: u64) -> Result<Inode> {
    let i = inode::get(st, ino)?;
    if i.nlink == 0 {
        return Err(Errno::NoEntry.into());
    }
    Ok(i)
}

/// LOOKUP of "." on `ino`, which may be any kind of file.
fn lookup_self(st: &State, ino: u64) -> Result<Attr> {
    reachable(st, ino)?;
    posix::getattr(st, ino)
}

/// LOOKUP of ".." on directory `ino`.
fn lookup_parent(st: &State, ino: u64) -> Result<Attr> {
    let i = reachable(st, ino)?;
    if !i.is_dir() {
        return Err(Errno::NotDir.into());
    }
    lookup_self(st, i.parent)
}

impl Filesystem {
    /// The inode `ino` itself, found by number alone (FUSE's LOOKUP of "." when the kernel
    /// decodes a file handle). ENOENT when it was freed or has no name left.
    pub fn lookup_self(&self, ino: u64) -> Result<Attr> {
        self.view(|st| lookup_self(st, ino))
    }

    /// The parent of directory `ino` (FUSE's LOOKUP of ".." when the kernel connects a
    /// decoded directory handle to the tree); the root is its own parent. ENOTDIR for
    /// anything but a directory, ENOENT when `ino` is gone.
    pub fn lookup_parent(&self, ino: u64) -> Result<Attr> {
        self.view(|st| lookup_parent(st, ino))
    }

    /// Decodes a file handle (`ino`, `generation`): the inode's attributes, or
    /// [`Errno::Stale`] when the inode was freed, has no name left, or the number now
    /// belongs to another file (another generation).
    pub fn inode_by_handle(&self, ino: u64, generation: u32) -> Result<Attr> {
        match self.lookup_self(ino) {
            Ok(attr) if attr.generation == generation => Ok(attr),
            Ok(_) => Err(Errno::Stale.into()),
            Err(e) if e.errno() == Errno::NoEntry => Err(Errno::Stale.into()),
            Err(e) => Err(e),
        }
    }
}
