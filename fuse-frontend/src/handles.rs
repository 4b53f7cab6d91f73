//! Open file and directory handles: what the kernel's `fh` numbers stand for.
//!
//! The engine counts opens per inode; the frontend only has to remember, per handle, which
//! inode it is for and whether it was opened with O_APPEND (the engine's `write` takes the
//! append decision as an argument). Handles are numbered from 1 and never reused within a
//! mount, so a stale `fh` cannot silently name another file.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What one open handle stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFile {
    pub ino: u64,
    /// Opened with O_APPEND: every write goes to the end of the file.
    pub append: bool,
}

/// Open handles of one mount. Thread-safe.
#[derive(Debug, Default)]
pub struct HandleTable {
    next: AtomicU64,
    open: Mutex<HashMap<u64, OpenFile>>,
}

impl HandleTable {
    pub fn new() -> Self {
        HandleTable {
            next: AtomicU64::new(1),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Registers a handle and returns its number.
    pub fn insert(&self, file: OpenFile) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(fh, file);
        fh
    }

    /// The handle `fh`, if it is open.
    pub fn get(&self, fh: u64) -> Option<OpenFile> {
        self.lock().get(&fh).copied()
    }

    /// Forgets `fh` and returns what it was.
    pub fn remove(&self, fh: u64) -> Option<OpenFile> {
        self.lock().remove(&fh)
    }

    /// Number of open handles.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no handle is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, OpenFile>> {
        // A panic while holding this lock cannot leave the map half-changed (each operation
        // is a single map call), so a poisoned lock is still consistent.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_unique_and_forgotten_on_remove() {
        let t = HandleTable::new();
        let a = t.insert(OpenFile {
            ino: 5,
            append: false,
        });
        let b = t.insert(OpenFile {
            ino: 5,
            append: true,
        });
        assert_ne!(a, b);
        assert_ne!(a, 0);
        assert_eq!(t.get(b).map(|f| f.append), Some(true));
        assert_eq!(t.remove(a).map(|f| f.ino), Some(5));
        assert_eq!(t.get(a), None);
        assert_eq!(t.remove(a), None);
        assert_eq!(t.len(), 1);
        let c = t.insert(OpenFile {
            ino: 6,
            append: false,
        });
        assert!(c > b, "handle numbers are not reused");
    }
}
