//! tuxfs benchmarks: shared helpers for the benchmark binaries.
//!
//! Benchmarks report ratios against baselines measured in the same run (fio on the same
//! file, the pread/pwrite device), never absolute times in tests.

pub mod daemon;
pub mod json;
pub mod machine;
pub mod suite;

/// Parses a byte count with an optional binary suffix: `4096`, `512K`, `64M`, `2G`, `2GiB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim().trim_end_matches("iB").trim_end_matches('B');
    let (digits, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("bad size {text:?}"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {text:?} overflows"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
