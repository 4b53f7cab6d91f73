//! The daemon's messages: syslog (ident `tuxfs-mount`, with the pid, facility LOG_DAEMON),
//! with `-f` also stderr, and with `-o log=FILE` also FILE (appended, one timestamped line
//! each). Installed as the engine's [`tuxfs_engine::events`] sink, so checksum errors, the
//! switch to read-only and failed commits land in the same places as the daemon's own
//! mount/unmount lines.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tuxfs_engine::events::{self, Level};

/// syslog(3) keeps a pointer to the ident: it must live as long as the process.
static IDENT: &[u8] = b"tuxfs-mount\0";

/// Opens (creating it if needed) the log file for appending: the mount-time check of `log=`.
pub fn open_log_file(path: &Path) -> Result<File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("log={}: cannot open for appending: {e}", path.display()))
}

/// Routes the engine's and the daemon's messages to syslog, to stderr when `foreground`,
/// and to `file` when given. Call once, in the process that serves the mount (after fork:
/// the pid in syslog lines is the daemon's).
pub fn install(file: Option<File>, foreground: bool) {
    // SAFETY: IDENT is NUL-terminated and 'static, as openlog requires.
    unsafe {
        libc::openlog(
            IDENT.as_ptr().cast(),
            libc::LOG_PID | libc::LOG_NDELAY,
            libc::LOG_DAEMON,
        )
    };
    let file = file.map(Mutex::new);
    let pid = std::process::id();
    events::set_sink(Box::new(move |level, message| {
        to_syslog(level, message);
        if foreground {
            eprintln!("tuxfs-mount: {message}");
        }
        if let Some(file) = &file {
            let line = format!(
                "{} tuxfs-mount[{pid}]: {}: {message}\n",
                utc_timestamp(SystemTime::now()),
                level.as_str()
            );
            let mut f = file
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // A log that cannot be written has nowhere to report that; syslog has the line.
            let _ = f.write_all(line.as_bytes());
        }
    }));
}

/// Reports one of the daemon's own messages through the same sink as the engine's.
pub fn log(level: Level, message: &str) {
    events::report(level, message);
}

fn to_syslog(level: Level, message: &str) {
    let priority = match level {
        Level::Error => libc::LOG_ERR,
        Level::Warning => libc::LOG_WARNING,
        Level::Info => libc::LOG_INFO,
    };
    // A message with a NUL cannot be passed on whole; cut it there.
    let text = message.split('\0').next().unwrap_or("");
    let Ok(text) = CString::new(text) else {
        return;
    };
    // SAFETY: the format is a NUL-terminated "%s" and its one argument a valid C string, so
    // syslog reads no further arguments.
    unsafe { libc::syslog(priority, c"%s".as_ptr(), text.as_ptr()) };
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC) for a time after the epoch.
pub fn utc_timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let at = |s| utc_timestamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_990_000), "2026-11-29T22:06:40Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
