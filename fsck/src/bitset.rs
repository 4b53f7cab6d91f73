//! A fixed-size bitset over block numbers: one bit per block, so memory is bounded by the
//! filesystem size (32 MiB for a 1 TiB filesystem of 4 KiB blocks).

#[derive(Debug)]
pub(crate) struct Bitset {
    words: Vec<u64>,
    len: u64,
}

impl Bitset {
    pub(crate) fn new(len: u64) -> Self {
        Bitset {
            words: vec![0; len.div_ceil(64) as usize],
            len,
        }
    }

    pub(crate) fn get(&self, i: u64) -> bool {
        i < self.len
            && self
                .words
                .get((i / 64) as usize)
                .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Sets bit `i`; returns whether it was already set. Out-of-range bits are ignored
    /// (callers range-check block numbers first) and reported as already set.
    pub(crate) fn set(&mut self, i: u64) -> bool {
        match self.words.get_mut((i / 64) as usize) {
            Some(w) if i < self.len => {
                let was = *w & (1 << (i % 64)) != 0;
                *w |= 1 << (i % 64);
                was
            }
            _ => true,
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}
