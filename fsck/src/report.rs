//! Rendering a report for people and for machines.

use std::fmt::Write as _;

use crate::Report;

/// Escapes a string for JSON.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn per_second(n: u64, secs: f64) -> u64 {
    if secs > 0.0 {
        (n as f64 / secs) as u64
    } else {
        n
    }
}

/// The human-readable report: one line per finding, then a summary.
pub fn render_human(path: &str, r: &Report, verbose: bool) -> String {
    let mut out = String::new();
    let sb = &r.superblock;
    let _ = writeln!(
        out,
        "{path}: tuxfs {}.{}, {} blocks of {} bytes, label '{}', superblock slot {} (sequence {})",
        tuxfs_engine::format::VERSION_MAJOR,
        sb.version_minor,
        sb.block_count,
        sb.block_size,
        sb.label,
        r.slot,
        sb.sequence
    );
    for f in &r.findings {
        let status = if f.fixed { "FIXED" } else { "ERROR" };
        let _ = writeln!(out, "{status}: {}", f.what);
    }
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    let mut verdict = match r.exit_code() {
        0 => "clean".to_string(),
        1 => format!("{} errors corrected", r.findings.len()),
        _ => format!(
            "{} errors left uncorrected",
            r.findings.iter().filter(|f| !f.fixed).count()
        ),
    };
    if let Some(why) = &r.stale {
        let _ = writeln!(out, "WARNING: {why}");
        verdict = format!("{verdict} (NOT authoritative: the image is in use, see the warning)");
    }
    let s = &r.stats;
    let _ = writeln!(
        out,
        "{path}: {} inodes, {} directory entries, {} extents, {}/{} blocks in use, {} log deltas; {}",
        s.inodes, s.dirents, s.extents, s.used_blocks, sb.block_count, s.log_deltas, verdict
    );
    if verbose {
        let secs = s.elapsed.as_secs_f64();
        let _ = writeln!(
            out,
            "{path}: checked in {:.3} s: {} blocks read ({} blocks/s), {} inodes/s, {} tree blocks, {} data blocks verified",
            secs,
            s.blocks_read,
            per_second(s.blocks_read, secs),
            per_second(s.inodes, secs),
            s.tree_blocks,
            s.data_blocks_verified
        );
    }
    out
}

/// The same report as one JSON object.
pub fn render_json(path: &str, r: &Report) -> String {
    let findings: Vec<String> = r
        .findings
        .iter()
        .map(|f| {
            let block = f.block.map_or("null".to_string(), |b| b.to_string());
            format!(
                "{{\"block\":{block},\"what\":{},\"fixed\":{}}}",
                json_str(&f.what),
                f.fixed
            )
        })
        .collect();
    let notes: Vec<String> = r.notes.iter().map(|n| json_str(n)).collect();
    let s = &r.stats;
    format!(
        "{{\"device\":{},\"exit_code\":{},\"stale_warning\":{},\"superblock\":{{\"slot\":{},\"sequence\":{},\"block_size\":{},\"block_count\":{},\"label\":{}}},\"findings\":[{}],\"notes\":[{}],\"stats\":{{\"blocks_read\":{},\"tree_blocks\":{},\"inodes\":{},\"dirents\":{},\"extents\":{},\"data_blocks\":{},\"data_blocks_verified\":{},\"log_blocks\":{},\"log_deltas\":{},\"used_blocks\":{},\"seconds\":{:.6}}}}}",
        json_str(path),
        r.exit_code(),
        r.stale.as_deref().map_or("null".to_string(), json_str),
        r.slot,
        r.superblock.sequence,
        r.superblock.block_size,
        r.superblock.block_count,
        json_str(&r.superblock.label),
        findings.join(","),
        notes.join(","),
        s.blocks_read,
        s.tree_blocks,
        s.inodes,
        s.dirents,
        s.extents,
        s.data_blocks,
        s.data_blocks_verified,
        s.log_blocks,
        s.log_deltas,
        s.used_blocks,
        s.elapsed.as_secs_f64()
    )
}

/// An operational error as JSON.
pub fn render_json_error(path: &str, what: &str) -> String {
    format!(
        "{{\"device\":{},\"exit_code\":8,\"error\":{}}}",
        json_str(path),
        json_str(what)
    )
}

#[cfg(test)]
mod tests {
    use super::json_str;

    #[test]
    fn escapes() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
