//! Where the engine reports what an administrator must see: data checksum errors, the
//! switch to read-only after a write failure, failed background commits, recovery dropping a
//! delta, fallbacks in the device layer.
//!
//! One seam for every such message, so a daemon (whose stderr is /dev/null) can send them to
//! syslog and a log file: [`set_sink`] installs the destination for the whole process; until
//! then messages go to stderr as `tuxfs: MESSAGE`. The engine itself never decides where
//! messages go.

use std::sync::RwLock;

/// How serious a message is (maps onto syslog priorities).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Something was lost or refused: data checksum errors, failed commits, read-only switch.
    Error,
    /// Degraded but working: a fallback was taken.
    Warning,
    /// Normal events worth a line: mount, unmount.
    Info,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Info => "info",
        }
    }
}

/// A destination for messages.
pub type Sink = Box<dyn Fn(Level, &str) + Send + Sync>;

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

/// Sends every later message to `sink` instead of stderr (for the whole process).
pub fn set_sink(sink: Sink) {
    let mut slot = SINK
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *slot = Some(sink);
}

/// Reports one message.
pub fn report(level: Level, message: &str) {
    let slot = SINK
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match slot.as_ref() {
        Some(sink) => sink(level, message),
        None => eprintln!("tuxfs: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn messages_reach_the_installed_sink() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&seen);
        // Process-wide: other tests' messages may arrive too; they still go to stderr.
        set_sink(Box::new(move |level, msg| {
            eprintln!("tuxfs: {msg}");
            into.lock().unwrap().push((level, msg.to_string()));
        }));
        report(Level::Error, "events-test marker");
        let seen = seen.lock().unwrap();
        assert!(
            seen.iter()
                .any(|(l, m)| *l == Level::Error && m == "events-test marker"),
            "{seen:?}"
        );
    }
}
