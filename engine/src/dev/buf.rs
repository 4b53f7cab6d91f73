//! Heap buffers aligned for O_DIRECT.

use std::alloc::{self, Layout};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Alignment of every buffer: a page, which satisfies O_DIRECT on every device we target.
pub const BUF_ALIGN: usize = 4096;

/// A zero-initialised byte buffer whose address is aligned to [`BUF_ALIGN`]. Its length
/// may be set anywhere up to the capacity it was made with ([`AlignedBuf::set_len`]), so
/// one allocation can serve requests of several sizes.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like Vec<u8>; sharing `&AlignedBuf`
// only gives out `&[u8]`.
unsafe impl Send for AlignedBuf {}
// SAFETY: as above; no interior mutability.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    fn layout(len: usize) -> Layout {
        // A zero-sized allocation is not allowed; keep at least one alignment unit.
        Layout::from_size_align(len.max(1), BUF_ALIGN).expect("buffer length overflows Layout")
    }

    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        let layout = Self::layout(len);
        // SAFETY: layout has non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        AlignedBuf { ptr, len, cap: len }
    }

    /// A buffer holding a copy of `bytes` (copied once, not zeroed first).
    pub fn from_slice(bytes: &[u8]) -> Self {
        let layout = Self::layout(bytes.len());
        // SAFETY: layout has non-zero size.
        let raw = unsafe { alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        // SAFETY: the allocation holds at least `bytes.len()` bytes and cannot overlap
        // `bytes`; after the copy every byte of the buffer's length is initialised.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.as_ptr(), bytes.len()) };
        AlignedBuf {
            ptr,
            len: bytes.len(),
            cap: bytes.len(),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes the allocation holds (the largest length [`AlignedBuf::set_len`] accepts).
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Makes the buffer `len` bytes long, within its capacity. The bytes keep what they
    /// held (every byte of the capacity was initialised when the buffer was made).
    ///
    /// # Panics
    /// When `len` is more than the capacity.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.cap,
            "AlignedBuf::set_len({len}) beyond its capacity of {}",
            self.cap
        );
        self.len = len;
    }

    /// True when the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` or `from_slice` with the layout of `cap` bytes.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.cap)) }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised bytes for the life of self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Clone for AlignedBuf {
    fn clone(&self) -> Self {
        Self::from_slice(self)
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

impl PartialEq for AlignedBuf {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}
impl Eq for AlignedBuf {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        for len in [0, 1, 512, 4096, 65536, 1 << 20] {
            let b = AlignedBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % BUF_ALIGN, 0);
            assert!(b.iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn set_len_within_capacity_keeps_the_bytes() {
        let mut b = AlignedBuf::from_slice(&[1, 2, 3, 4]);
        b.set_len(2);
        assert_eq!((&b[..], b.capacity()), (&[1, 2][..], 4));
        b.set_len(4);
        assert_eq!(&b[..], &[1, 2, 3, 4]);
        assert!(std::panic::catch_unwind(move || b.set_len(5)).is_err());
    }

    #[test]
    fn clone_copies() {
        let mut a = AlignedBuf::zeroed(8);
        a[3] = 7;
        let b = a.clone();
        a[3] = 9;
        assert_eq!(b[3], 7);
    }
}
