//! Spilled extended attributes: the entries of an inode that do not fit its record, kept in
//! a chain of spill blocks (format::xattr, FORMAT.md §4.6). The rules (names, namespaces,
//! who may do what, where each entry goes) are engine::fs::xattr's; this module stores.
//!
//! **Copy-on-write, in the delta.** A change never touches the blocks of the durable chain.
//! The frontend keeps the inode's new spilled entries in [`Spills::dirty`] (reserving the
//! blocks the new chain needs, so the commit never meets ENOSPC); the commit writes the new
//! chain to newly allocated blocks, points the inode record at it, lists the blocks in the
//! delta (Alloc and Blocks records, like every leaf) and frees the old chain with the
//! delta's other frees, so they are reusable only once the delta is durable. Recovery
//! replays nothing special: the inode record in the delta's leaves names the new chain, the
//! Alloc/Free records keep the bitmap right. A crash shows the old chain or the new one.
//!
//! **Invariants.** An inode's chain is read only while no write to it can be in flight:
//! a chain written by the delta being flushed is answered from [`Spills::inflight`] until
//! the flush returned. Each dirty inode's `old` lists the blocks of the chain its record
//! names now (durable, or in flight), freed exactly once: at its commit, or when the inode
//! is destroyed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::dev::AlignedBuf;
use crate::format::inode::Inode;
use crate::format::log::LogRecord;
use crate::format::xattr::{
    SpillReader, XattrEntry, encode_spill_chain, spill_chain_blocks, spill_stream_len,
};
use crate::state::State;
use crate::{Errno, Result, inode};

/// The spilled entries of one inode, changed in the open delta.
#[derive(Debug, Default)]
struct Dirty {
    /// The entries the next commit writes (empty: the inode loses its chain).
    entries: Vec<XattrEntry>,
    /// Blocks of the chain the inode's record names now, freed at that commit.
    old: Vec<u64>,
    /// Blocks reserved for the new chain (part of `State::delta_reserved`).
    reserved: u64,
}

/// Spill chains being changed or written.
#[derive(Debug, Default)]
pub struct Spills {
    dirty: BTreeMap<u64, Dirty>,
    /// Chains written by the delta being flushed: inode → (its blocks, its entries).
    inflight: HashMap<u64, (Vec<u64>, Arc<Vec<XattrEntry>>)>,
}

/// The spilled entries of inode `ino` (record `i`) and the blocks of the chain its record
/// names. A damaged chain is an error naming the block.
pub fn load(st: &State, ino: u64, i: &Inode) -> Result<(Vec<u64>, Vec<XattrEntry>)> {
    if let Some(d) = st.spills.dirty.get(&ino) {
        return Ok((d.old.clone(), d.entries.clone()));
    }
    if i.xattr_block == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    if let Some((blocks, entries)) = st.spills.inflight.get(&ino)
        && blocks.first() == Some(&i.xattr_block)
    {
        return Ok((blocks.clone(), entries.to_vec()));
    }
    read_chain(st, ino, i.xattr_block)
}

/// Reads the durable chain of `ino` that starts at `head`.
fn read_chain(st: &State, ino: u64, head: u64) -> Result<(Vec<u64>, Vec<XattrEntry>)> {
    let mut reader = SpillReader::new(ino, st.fs_id, head);
    while let Some(b) = reader.next_block() {
        let buf = st.io.read(b)?;
        reader.push(&buf)?;
    }
    let blocks = reader.blocks().to_vec();
    Ok((blocks, reader.finish(st.bs())?))
}

/// Whether inode `ino` has spilled entries changed in the open delta.
pub fn is_dirty(st: &State, ino: u64) -> bool {
    st.spills.dirty.contains_key(&ino)
}

/// Makes `entries` the spilled entries of `ino` from the next commit on; `old` are the
/// blocks [`load`] gave. Reserves the blocks the new chain needs first: ENOSPC changes
/// nothing.
pub fn set(st: &mut State, ino: u64, old: Vec<u64>, entries: Vec<XattrEntry>) -> Result<()> {
    let need = spill_chain_blocks(spill_stream_len(&entries), st.bs()) as u64;
    let had = st.spills.dirty.get(&ino).map_or(0, |d| d.reserved);
    if need > had {
        st.alloc.reserve(need - had)?;
        st.delta_reserved += need - had;
    }
    let d = st.spills.dirty.entry(ino).or_default();
    if d.old.is_empty() {
        d.old = old;
    }
    d.entries = entries;
    d.reserved = d.reserved.max(need);
    Ok(())
}

/// Frees the chain of inode `i` (number `ino`), which is being destroyed. A chain that does
/// not read is reported and its blocks are left for fsck: deleting a file must not fail
/// because its attributes are damaged.
pub fn destroy(st: &mut State, ino: u64, i: &Inode) {
    let old = match st.spills.dirty.remove(&ino) {
        Some(d) => {
            st.alloc.unreserve(d.reserved);
            st.delta_reserved = st.delta_reserved.saturating_sub(d.reserved);
            d.old
        }
        None if i.xattr_block == 0 => Vec::new(),
        None => match load(st, ino, i) {
            Ok((blocks, _)) => blocks,
            Err(e) => {
                crate::events::report(
                    crate::events::Level::Warning,
                    &format!(
                        "inode {ino} was deleted with a damaged xattr chain ({e}); its blocks stay in use until fsck.tuxfs"
                    ),
                );
                Vec::new()
            }
        },
    };
    for b in old {
        st.alloc.free_later(b, 1);
    }
}

/// Commit step: writes the new chain of every inode changed in the delta to new blocks,
/// points its record at it (before the leaves are written) and frees the old chain.
pub fn flush(
    st: &mut State,
    delta: u64,
    writes: &mut crate::delta::DeltaWrites,
    records: &mut Vec<LogRecord>,
) -> Result<()> {
    for (ino, d) in std::mem::take(&mut st.spills.dirty) {
        for &b in &d.old {
            st.alloc.free_later(b, 1);
        }
        let mut i = match inode::get(st, ino) {
            Ok(i) => i,
            Err(e) if e.errno() == Errno::NoEntry => continue,
            Err(e) => return Err(e),
        };
        i.xattr_block = 0;
        if !d.entries.is_empty() {
            let n = spill_chain_blocks(spill_stream_len(&d.entries), st.bs());
            let mut blocks = Vec::with_capacity(n);
            for _ in 0..n {
                let goal = blocks.last().map(|b| b + 1);
                let b = st.alloc.alloc_one(goal)?;
                records.push(LogRecord::Alloc { start: b, count: 1 });
                blocks.push(b);
            }
            let encoded = encode_spill_chain(&d.entries, &blocks, ino, delta, st.fs_id, st.bs());
            for (&b, bytes) in blocks.iter().zip(encoded) {
                let mut buf = AlignedBuf::zeroed(bytes.len());
                buf.copy_from_slice(&bytes);
                writes.block(b, Arc::new(buf));
            }
            i.xattr_block = blocks.first().copied().unwrap_or(0);
            st.spills
                .inflight
                .insert(ino, (blocks, Arc::new(d.entries)));
        }
        inode::put(st, ino, &i)?;
    }
    Ok(())
}

/// Commit step after the flush: the chains written are durable and read from disk again.
pub fn flushed(st: &mut State) {
    st.spills.inflight.clear();
}
