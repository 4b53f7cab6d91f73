//! A [`BlockDevice`] the daemon can close while the engine still holds it: at DESTROY the
//! image's descriptors (and a `log_writes` log) are closed before the kernel is answered,
//! so nothing of the daemon keeps the image open once `umount` has returned.
//!
//! After [`ClosableDevice::close`] every call fails with `DeviceFailed` (the engine has been
//! unmounted by then and makes none).

use std::sync::{Arc, PoisonError, RwLock};

use tuxfs_engine::Error;
use tuxfs_engine::dev::{BlockDevice, ReadRequest, WriteRequest};

#[derive(Debug)]
pub struct ClosableDevice {
    inner: RwLock<Option<Arc<dyn BlockDevice>>>,
    size_bytes: u64,
    alignment: usize,
}

impl ClosableDevice {
    pub fn new(inner: Arc<dyn BlockDevice>) -> Self {
        ClosableDevice {
            size_bytes: inner.size_bytes(),
            alignment: inner.alignment(),
            inner: RwLock::new(Some(inner)),
        }
    }

    /// Drops the inner device (waiting for calls in progress): its descriptors close once
    /// nothing else holds it.
    pub fn close(&self) {
        let inner = self
            .inner
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(inner);
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&dyn BlockDevice) -> tuxfs_engine::Result<T>,
    ) -> tuxfs_engine::Result<T> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        match inner.as_deref() {
            Some(dev) => f(dev),
            None => Err(Error::DeviceFailed {
                what: "the device was closed at unmount".into(),
            }),
        }
    }
}

impl BlockDevice for ClosableDevice {
    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
    fn alignment(&self) -> usize {
        self.alignment
    }
    fn read_batch(&self, reqs: &mut [ReadRequest<'_>]) -> tuxfs_engine::Result<()> {
        self.with(|d| d.read_batch(reqs))
    }
    fn submit_writes(&self, reqs: Vec<WriteRequest>) -> tuxfs_engine::Result<()> {
        self.with(|d| d.submit_writes(reqs))
    }
    fn wait_writes(&self) -> tuxfs_engine::Result<()> {
        self.with(|d| d.wait_writes())
    }
    fn flush(&self) -> tuxfs_engine::Result<()> {
        self.with(|d| d.flush())
    }
    fn discard(&self, offset: u64, len: u64) -> tuxfs_engine::Result<()> {
        self.with(|d| d.discard(offset, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tuxfs_engine::dev::mem::MemDevice;

    #[test]
    fn calls_pass_through_until_closed_then_fail() {
        let dev = ClosableDevice::new(Arc::new(MemDevice::new(1 << 20)));
        assert_eq!(dev.size_bytes(), 1 << 20);
        dev.flush().expect("flush before close");
        dev.close();
        let err = dev.flush().expect_err("flush after close");
        assert!(err.to_string().contains("closed at unmount"), "{err}");
        assert_eq!(dev.size_bytes(), 1 << 20);
    }
}
