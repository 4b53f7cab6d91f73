//! A tiny seeded PRNG for tests and fuzzing: xoshiro256** seeded through splitmix64.
//!
//! Not cryptographic, not `rand`: just fast, portable and reproducible. Every randomized
//! test takes one `u64` seed, prints it as `seed=...`, and can be replayed by setting
//! `TUXFS_SEED` to that value.

use std::time::{SystemTime, UNIX_EPOCH};

/// The environment variable that fixes the seed of randomized tests.
pub const SEED_ENV: &str = "TUXFS_SEED";

/// One step of splitmix64: advances `state` and returns a well-mixed output.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for `seed`; equal seeds give equal sequences on every platform.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let s = [
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
        ];
        // splitmix64 never yields four zero words in a row, but keep xoshiro's precondition
        // explicit.
        if s == [0; 4] {
            return Rng { s: [1, 2, 3, 4] };
        }
        Rng { s }
    }

    /// An independent generator for sub-stream `stream` of `seed` (e.g. one per fuzz
    /// iteration, so any iteration can be replayed on its own).
    pub fn stream(seed: u64, stream: u64) -> Self {
        let mut x = stream ^ 0x5851_F42D_4C95_7F2D;
        Rng::new(seed ^ splitmix64(&mut x))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A uniform value in `0..n` (Lemire's method, unbiased); 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// [`below`](Self::below) for lengths and indices.
    pub fn below_usize(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// A uniform value in `lo..hi`; `lo` when the range is empty.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo))
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }

    /// True with probability `num / den` (always false when `den` is 0).
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        den != 0 && self.below(den) < num
    }

    /// A uniformly chosen element. Panics on an empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        assert!(!items.is_empty(), "pick from an empty slice");
        &items[self.below_usize(items.len())]
    }

    /// An index into `weights`, chosen with probability proportional to its weight.
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut x = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        weights.len().saturating_sub(1)
    }
}

/// Parses a seed written in decimal or as `0x` hexadecimal.
pub fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim().replace('_', "");
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The seed in `TUXFS_SEED`, if set. Panics when it is set but not a number, so a typo
/// never silently turns a replay into a fresh random run.
pub fn seed_from_env() -> Option<u64> {
    let s = std::env::var(SEED_ENV).ok()?;
    Some(
        parse_seed(&s)
            .unwrap_or_else(|| panic!("{SEED_ENV}={s:?} is not a u64 (decimal or 0x hexadecimal)")),
    )
}

/// A fresh seed from the clock and the process id.
pub fn clock_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos ^ (u64::from(std::process::id()) << 32);
    splitmix64(&mut x)
}

/// The seed from `TUXFS_SEED`, or a fresh one from the clock; prints `seed=...` (to stderr,
/// which the test harness shows for failing tests) so that any failure can be replayed.
pub fn seed_from_env_or_clock() -> u64 {
    let seed = seed_from_env().unwrap_or_else(clock_seed);
    eprintln!("seed={seed} (replay with {SEED_ENV}={seed})");
    seed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_streams_differ() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::stream(1, 0).next_u64(), Rng::stream(1, 1).next_u64());
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn below_is_in_range_and_covers_it() {
        let mut r = Rng::new(7);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let v = r.below(10);
            assert!(v < 10);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(r.below(0), 0);
        assert!(r.below(u64::MAX) < u64::MAX);
        assert_eq!(r.range(5, 5), 5);
    }

    #[test]
    fn fill_chance_and_parse() {
        let mut r = Rng::new(3);
        let mut buf = [0u8; 13];
        r.fill(&mut buf);
        assert!(buf.iter().any(|&b| b != 0));
        assert!(!r.chance(0, 5) && r.chance(5, 5) && !r.chance(1, 0));
        let hits = (0..10_000).filter(|_| r.chance(1, 4)).count();
        assert!((2000..3000).contains(&hits), "{hits}");
        assert_eq!(parse_seed("0x10"), Some(16));
        assert_eq!(parse_seed(" 1_000 "), Some(1000));
        assert_eq!(parse_seed("nope"), None);
        assert_eq!(r.weighted(&[0, 0, 5]), 2);
    }
}
