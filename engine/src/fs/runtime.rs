//! Changes to a mounted filesystem while it stays mounted: switching between read-write and
//! read-only (what `mount -o remount,ro` / `remount,rw` ask of the daemon) and the options
//! that can change at run time (commit interval, dirty-data limit, leaf cache).
//!
//! Read-only by remount is the same state as a read-only mount from the frontend's view
//! (every change gets EROFS, fsync succeeds with nothing to do) but reversible: the switch
//! to read-only commits everything and marks the image clean, exactly as an unmount would,
//! so the image on disk is complete and consistent while it is read-only; the switch back
//! marks it mounted again before the first new delta. A filesystem mounted read-only ran
//! recovery without writing (orphans kept, no writeback thread) and cannot switch to
//! read-write: it must be unmounted and mounted read-write.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Filesystem, writeback};
use crate::Result;
use crate::events::{Level, report};
use crate::format::superblock::{STATE_CLEAN, STATE_MOUNTED};

/// What [`Filesystem::reconfigure`] may change; `None` leaves a setting as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconfigure {
    /// The writeback scheduler's age limit.
    pub commit_interval: Option<Duration>,
    /// Dirty bytes after which a writer commits.
    pub dirty_limit_bytes: Option<u64>,
    /// Loaded leaves are cut back to this after each commit.
    pub leaf_cache_bytes: Option<u64>,
    /// When reads and readdir update atime.
    pub atime: Option<super::AtimePolicy>,
}

/// A label the superblock can hold: at most 64 bytes of UTF-8 without NUL.
pub fn check_label(label: &str) -> Result<()> {
    if label.len() > crate::format::superblock::LABEL_MAX || label.contains('\0') {
        return Err(crate::Errno::Invalid.into());
    }
    Ok(())
}

impl Filesystem {
    /// Whether changes are refused because the filesystem is read-only (mounted so, or
    /// switched by [`Filesystem::set_read_only`]).
    pub fn is_read_only(&self) -> bool {
        self.shared.read().read_only
    }

    /// Switches to read-only (commits everything, unifies and marks the image clean, then
    /// refuses changes with EROFS) or back to read-write (marks the image mounted, then
    /// accepts changes). Switching to the current mode does nothing. Fails, changing
    /// nothing, after a write failure (the filesystem stays read-only for good then), and
    /// for read-write on a filesystem mounted read-only.
    pub fn set_read_only(&self, read_only: bool) -> Result<()> {
        if !read_only && self.mounted_read_only {
            return Err(crate::Error::Unsupported {
                what: "switching a read-only mount to read-write: unmount it and mount it \
                       read-write"
                    .into(),
            });
        }
        let _backend = self.shared.lock_backend();
        let mut st = self.shared.lock();
        if st.unmounted {
            return Err(crate::Errno::Io.into());
        }
        if let Some(what) = &st.failed {
            return Err(crate::Error::DeviceFailed { what: what.clone() });
        }
        if st.read_only == read_only {
            return Ok(());
        }
        let state = if read_only {
            crate::commit::commit(&mut st)?;
            STATE_CLEAN
        } else {
            STATE_MOUNTED
        };
        // Written while the state says read-write, so the commit machinery accepts it.
        st.read_only = false;
        crate::commit::unify(&mut st, state)?;
        st.read_only = read_only;
        self.shared.open_delta.store(st.delta, Ordering::Release);
        drop(st);
        report(
            Level::Info,
            if read_only {
                "read-only now: everything committed, the image is clean"
            } else {
                "read-write again"
            },
        );
        Ok(())
    }

    /// Changes the settings `change` names, at once: a new commit interval applies from the
    /// writeback scheduler's next wait, which this starts.
    pub fn reconfigure(&self, change: &Reconfigure) {
        if let Some(interval) = change.commit_interval {
            let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
            self.shared.commit_interval_ms.store(ms, Ordering::Relaxed);
            if let Some(tx) = &self.commits {
                writeback::wake(tx);
            }
        }
        if let Some(limit) = change.dirty_limit_bytes {
            self.shared
                .dirty_limit_bytes
                .store(limit, Ordering::Relaxed);
        }
        if let Some(policy) = change.atime {
            self.shared.atime.store(policy.to_bits(), Ordering::Relaxed);
        }
        if let Some(leaves) = change.leaf_cache_bytes {
            self.shared.lock().leaf_cache_bytes = leaves;
        }
    }

    /// The filesystem's UUID.
    pub fn uuid(&self) -> [u8; 16] {
        self.shared.read().sb.uuid
    }

    /// The filesystem's label (the superblock's).
    pub fn label(&self) -> String {
        self.shared.read().sb.label.clone()
    }

    /// Sets the label and makes it durable at once (a commit and a unify write the
    /// superblock). EINVAL for a label over 64 bytes, with a NUL, or empty of meaning
    /// (the empty label clears it); EROFS when read-only.
    pub fn set_label(&self, label: &str) -> Result<()> {
        check_label(label)?;
        let _backend = self.shared.lock_backend();
        let mut st = self.shared.lock();
        if st.unmounted {
            return Err(crate::Errno::Io.into());
        }
        crate::commit::check_writable(&st)?;
        let old = std::mem::replace(&mut st.sb.label, label.to_string());
        let written = crate::commit::commit(&mut st)
            .and_then(|()| crate::commit::unify(&mut st, STATE_MOUNTED));
        if written.is_err() {
            st.sb.label = old;
        }
        self.shared.open_delta.store(st.delta, Ordering::Release);
        written
    }

    /// The current commit interval.
    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.shared.commit_interval_ms.load(Ordering::Relaxed))
    }
}
