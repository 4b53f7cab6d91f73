//! The write side of file data: the dirty pages of the open delta.
//!
//! A write of whole blocks builds its pages before it takes the state lock ([`prepare`]):
//! each page is the one copy of the request's bytes the engine makes, in its own aligned
//! buffer, with its CRC computed there and then. Under the lock ([`write_prepared`]) those
//! pages are only moved into `State::pages` (a pointer each). A block the write covers only
//! in part is read, modified and written under the lock; its CRC is left to the commit.
//! When the delta closes (data.rs `write_cow`, prealloc.rs `convert`) the very same `Arc`s go
//! to the device and to `State::inflight`: no block is copied again on its way to the disk.
//!
//! **Invariants.**
//! - A page in `State::pages` is never shared with the device or with `State::inflight`:
//!   closing a delta moves every page out of `pages`. A write that finds a page shared
//!   anyway copies it before changing it ([`DirtyPage::bytes_mut`]), so a buffer the device
//!   holds is never changed; a write to a block being written puts a new page in the slot.
//! - `DirtyPage::crc`, when set, is the CRC of exactly the page's bytes: every change in
//!   place clears it.

use std::cell::Cell;
use std::ops::Deref;
use std::sync::Arc;

use crate::Result;
use crate::dev::AlignedBuf;
use crate::format::data_crc;
use crate::state::State;

/// A dirty block of the open delta: its bytes and, when already known, their CRC.
#[derive(Debug)]
pub struct DirtyPage {
    buf: Arc<AlignedBuf>,
    crc: Option<u32>,
}

impl DirtyPage {
    /// A page whose CRC the commit computes.
    pub fn new(buf: AlignedBuf) -> Self {
        DirtyPage {
            buf: Arc::new(buf),
            crc: None,
        }
    }

    /// A copy of `bytes` (one block) with its CRC, built without any lock.
    fn built(bytes: &[u8]) -> Self {
        DirtyPage {
            crc: Some(data_crc(bytes)),
            buf: Arc::new(AlignedBuf::from_slice(bytes)),
        }
    }

    /// The page for the device: its buffer, and its CRC (computed now, under the state
    /// lock, when no write computed it before; counted in `data_crcs_locked`).
    pub(crate) fn into_write(self, st: &mut State) -> (Arc<AlignedBuf>, u32) {
        let crc = match self.crc {
            Some(crc) => crc,
            None => {
                st.stats.data_crcs_locked += 1;
                data_crc(&self.buf)
            }
        };
        (self.buf, crc)
    }

    /// The bytes, to change in place: copied first if anything else holds the buffer. The
    /// CRC is forgotten.
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.crc = None;
        &mut Arc::make_mut(&mut self.buf)[..]
    }
}

impl Deref for DirtyPage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

/// The whole blocks of one write, built before the state lock: file blocks
/// `[first, first + pages.len())` of a write of `len` bytes at `offset`.
#[derive(Debug)]
pub struct Prepared {
    offset: u64,
    len: usize,
    block_size: u32,
    first: u64,
    pages: Vec<DirtyPage>,
}

impl Prepared {
    /// True when these pages were built for exactly this write.
    fn fits(&self, offset: u64, len: usize, block_size: u32) -> bool {
        self.offset == offset && self.len == len && self.block_size == block_size
    }
}

/// Builds the pages of the blocks that `data` at `offset` covers whole, each a copy of its
/// bytes with its CRC. Takes no lock: the caller does this before [`write_prepared`].
pub fn prepare(block_size: u32, offset: u64, data: &[u8]) -> Prepared {
    let bs = u64::from(block_size);
    let end = offset.saturating_add(data.len() as u64);
    let first = offset.div_ceil(bs);
    let last = end / bs;
    let mut pages = Vec::with_capacity(last.saturating_sub(first) as usize);
    for fblock in first..last {
        let at = (fblock * bs - offset) as usize;
        pages.push(DirtyPage::built(&data[at..at + block_size as usize]));
    }
    Prepared {
        offset,
        len: data.len(),
        block_size,
        first,
        pages,
    }
}

/// A write's prepared pages, for a closure the lock helper may call twice (an ENOSPC retry):
/// the first call takes them, a later one writes from the bytes under the lock.
pub type PreparedCell = Cell<Option<Prepared>>;

/// Copies `data` into the file at `offset`, through dirty blocks. The caller reserved
/// space for blocks that were not dirty yet ([`super::new_dirty_blocks`]).
pub fn write(st: &mut State, inum: u64, offset: u64, data: &[u8]) -> Result<()> {
    write_prepared(st, inum, offset, data, None)
}

/// [`write`], with the whole blocks already built by [`prepare`] for this `offset` and
/// `data` (pages built for another offset, as an append may find, are not used).
pub fn write_prepared(
    st: &mut State,
    inum: u64,
    offset: u64,
    data: &[u8],
    prepared: Option<Prepared>,
) -> Result<()> {
    let bs = u64::from(st.bs());
    if data.is_empty() {
        return Ok(());
    }
    let prepared = prepared.filter(|p| p.fits(offset, data.len(), st.bs()));
    let (built_first, mut built) = match prepared {
        Some(p) => (p.first, p.pages.into_iter()),
        None => (0, Vec::new().into_iter()),
    };
    // The dirty pages replace the clean copies (a commit caches them again).
    let last = (offset + data.len() as u64 - 1) / bs;
    st.read.cache.invalidate(inum, offset / bs, last + 1);
    let mut done = 0usize;
    // The extent (or hole) the last newly dirtied block fell in: one tree lookup per run,
    // not per block.
    let mut span: Option<super::Span> = None;
    while done < data.len() {
        let pos = offset + done as u64;
        let fblock = pos / bs;
        let within = (pos % bs) as usize;
        let n = (bs as usize - within).min(data.len() - done);
        let key = (inum, fblock);
        let whole = within == 0 && n == bs as usize;
        let prebuilt = if whole && fblock >= built_first {
            built.next()
        } else {
            None
        };
        let newly_dirty = if let Some(page) = prebuilt {
            // The write path's only work for a whole block: a pointer move.
            if !st.pages.contains_key(&key) && st.inflight.contains_key(&key) {
                // Page forking: the slot gets a new page; the flush keeps writing the old one.
                st.stats.pages_forked += 1;
            }
            st.pages.insert(key, page).is_none()
        } else {
            st.stats.write_blocks_locked += 1;
            fill_locked(st, inum, fblock, within, &data[done..done + n])?
        };
        // A block no extent backs is a delayed allocation: counted in st_blocks from now.
        // (A page being flushed already has its extent in the tree.)
        if newly_dirty {
            if !span
                .as_ref()
                .is_some_and(|s| s.from <= fblock && fblock < s.to)
            {
                span = Some(super::span_at(st, inum, fblock)?);
            }
            if span.as_ref().is_some_and(|s| s.ext.is_none()) {
                st.delalloc.insert(key);
            }
        }
        done += n;
    }
    Ok(())
}

/// Puts `bytes` into file block `fblock` at `within`, under the lock: in place in a dirty
/// page, or in a new page holding the block as it is now. True when the block was not
/// dirty before.
fn fill_locked(
    st: &mut State,
    inum: u64,
    fblock: u64,
    within: usize,
    bytes: &[u8],
) -> Result<bool> {
    let key = (inum, fblock);
    if let Some(page) = st.pages.get_mut(&key) {
        page.bytes_mut()[within..within + bytes.len()].copy_from_slice(bytes);
        return Ok(false);
    }
    if st.inflight.contains_key(&key) {
        // Page forking: the frontend changes a copy; the flush keeps writing the old bytes.
        st.stats.pages_forked += 1;
    }
    let page = if within == 0 && bytes.len() == st.bs() as usize {
        AlignedBuf::from_slice(bytes)
    } else {
        let mut page = super::read_block(st, inum, fblock)?;
        page[within..within + bytes.len()].copy_from_slice(bytes);
        page
    };
    st.pages.insert(key, DirtyPage::new(page));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_builds_exactly_the_whole_blocks() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        // Bytes 100..10100 at block size 4096: blocks 1 (4096..8192) only.
        let p = prepare(4096, 100, &data);
        assert_eq!(p.first, 1);
        assert_eq!(p.pages.len(), 1);
        assert_eq!(&p.pages[0][..], &data[3996..3996 + 4096]);
        assert_eq!(p.pages[0].crc, Some(data_crc(&data[3996..3996 + 4096])));
        // Aligned: every block.
        let p = prepare(4096, 8192, &data[..8192]);
        assert_eq!((p.first, p.pages.len()), (2, 2));
        // Inside one block: none.
        assert!(prepare(4096, 10, &data[..100]).pages.is_empty());
        assert!(p.fits(8192, 8192, 4096) && !p.fits(8193, 8192, 4096));
    }

    #[test]
    fn a_shared_page_is_copied_before_it_changes() {
        let mut page = DirtyPage::built(&[7u8; 4096]);
        let device = page.buf.clone();
        page.bytes_mut()[0] = 1;
        assert_eq!(device[0], 7, "the device's buffer must not change");
        assert_eq!(page[0], 1);
        assert_eq!(page.crc, None);
        assert!(!Arc::ptr_eq(&device, &page.buf));
    }
}
