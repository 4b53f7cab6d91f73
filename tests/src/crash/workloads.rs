//! The workloads the crash harness records: seeded operation sequences run on the engine and
//! on the model side by side. After every sync or fsync that returns, the driver records a
//! delta boundary: the device's event count at that instant and what the model shows.
//!
//! Operations are chosen so that their outcome is known in advance (a rename is only asked
//! for when it must succeed, and so on): this file exercises the commit path, not POSIX
//! error rules (`tests/tests/model_ops.rs` does those). Any unexpected error is a failure of
//! the recording, reported with the seed like a crash failure.

use std::sync::Arc;

use tuxfs_engine::Errno;
use tuxfs_engine::dev::record::RecordingDevice;
use tuxfs_engine::fs::{
    Caller, FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_INSERT_RANGE, FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, Filesystem, RenameFlags, SetAttr, XattrFlags,
};

use super::{Boundary, Workload};
use crate::model::{Model, Node, resolve};
use crate::rng::Rng;

const ME: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};

const XATTR_NAMES: [&str; 3] = ["user.a", "user.bb", "user.checksum"];

/// A file opened and then unlinked (or still linked) that the workload holds open.
#[derive(Debug, Clone, Copy)]
struct Held {
    ino: u64,
    file: u64,
}

/// Runs operations on the filesystem and the model, recording delta boundaries.
#[derive(Debug)]
pub(super) struct Driver {
    pub fs: Arc<Filesystem>,
    pub dev: Arc<RecordingDevice>,
    pub model: Model,
    pub boundaries: Vec<Boundary>,
    rng: Rng,
    held: Vec<Held>,
    /// Bytes the workload lets its files grow to (keeps the image away from ENOSPC).
    budget_bytes: u64,
}

type Step = Result<(), String>;

/// The punch mode (PUNCH_HOLE needs KEEP_SIZE), as one pattern.
const FALLOC_FL_PUNCH_HOLE_KEEP: u32 = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

impl Driver {
    pub fn new(fs: Arc<Filesystem>, dev: Arc<RecordingDevice>, rng: Rng, budget: u64) -> Self {
        Driver {
            fs,
            dev,
            model: Model::new(),
            boundaries: Vec::new(),
            rng,
            held: Vec::new(),
            budget_bytes: budget,
        }
    }

    /// Records a delta boundary: every event so far is covered by an acknowledged commit.
    pub fn boundary(&mut self, what: &str) {
        self.boundaries.push(Boundary {
            events: self.dev.event_count(),
            visible: self.model.visible(),
            what: what.to_string(),
        });
    }

    fn ino(&self, path: &str) -> Result<u64, String> {
        resolve(&self.fs, 1, path)
    }

    fn file_id(&self, path: &str) -> Option<u64> {
        self.model.file_id(path)
    }

    fn used_bytes(&self) -> u64 {
        self.model.used_bytes()
    }

    fn pick_file(&mut self) -> Option<String> {
        let files = self.model.file_paths();
        (!files.is_empty()).then(|| self.rng.pick(&files).clone())
    }

    fn pick_dir(&mut self) -> String {
        let dirs = self.model.dirs();
        self.rng.pick(&dirs).clone()
    }

    pub fn sync(&mut self) -> Step {
        self.fs.sync().map_err(|e| format!("sync: {e}"))?;
        self.boundary("sync");
        Ok(())
    }

    /// fsync of a file (or of a held inode); every change so far is covered (group commit).
    pub fn fsync_some(&mut self) -> Step {
        let ino = match (self.held.is_empty(), self.rng.chance(1, 4)) {
            (false, true) => self.held[self.rng.below_usize(self.held.len())].ino,
            _ => match self.pick_file() {
                Some(f) => self.ino(&f)?,
                None => 1,
            },
        };
        self.fs
            .fsync(ino, self.rng.chance(1, 2))
            .map_err(|e| format!("fsync {ino}: {e}"))?;
        self.boundary("fsync");
        Ok(())
    }

    pub fn create(&mut self, dir: &str, name: &str) -> Step {
        let path = join(dir, name);
        if self.model.names.contains_key(&path) {
            return Ok(());
        }
        let a = self
            .fs
            .create(self.ino(dir)?, name.as_bytes(), 0o644, ME)
            .map_err(|e| format!("create {path}: {e}"))?;
        self.fs
            .release(a.ino)
            .map_err(|e| format!("release: {e}"))?;
        let id = self.model.new_file();
        self.model.names.insert(path, Node::File(id));
        Ok(())
    }

    /// Writes `data` at `offset` of inode `ino` (model file `id`). ENOSPC is decided before
    /// anything changes (engine::fs::posix::write), so a refused write changes nothing.
    fn write_ino(&mut self, ino: u64, id: u64, offset: u64, data: &[u8]) -> Step {
        match self.fs.write(ino, offset, data, false) {
            Ok(_) => {}
            Err(e) if e.errno() == Errno::NoSpace => return Ok(()),
            Err(e) => return Err(format!("write ino {ino} at {offset}: {e}")),
        }
        let content = self.model.files.get_mut(&id).ok_or("model file missing")?;
        let end = offset as usize + data.len();
        if content.len() < end {
            content.resize(end, 0);
        }
        content[offset as usize..end].copy_from_slice(data);
        Ok(())
    }

    /// Writes `len` random bytes into `path` at `offset`, within the space budget.
    pub fn write(&mut self, path: &str, offset: u64, len: usize) -> Step {
        let Some(id) = self.file_id(path) else {
            return Ok(());
        };
        let grow = (offset + len as u64).saturating_sub(self.model.files[&id].len() as u64);
        if self.used_bytes() + grow > self.budget_bytes {
            return self.truncate(path, 0);
        }
        let data = self.rng.bytes(len);
        let ino = self.ino(path)?;
        self.write_ino(ino, id, offset, &data)
    }

    pub fn truncate(&mut self, path: &str, size: u64) -> Step {
        let Some(id) = self.file_id(path) else {
            return Ok(());
        };
        let grow = size.saturating_sub(self.model.files[&id].len() as u64);
        if self.used_bytes() + grow > self.budget_bytes {
            return Ok(());
        }
        let set = SetAttr {
            size: Some(size),
            ..SetAttr::default()
        };
        self.fs
            .setattr(self.ino(path)?, &set)
            .map_err(|e| format!("truncate {path} to {size}: {e}"))?;
        if let Some(content) = self.model.files.get_mut(&id) {
            content.resize(size as usize, 0);
        }
        Ok(())
    }

    /// fallocate on `path` in a mode picked at random (preallocate with or without
    /// KEEP_SIZE, punch, zero range with or without KEEP_SIZE, collapse, insert), within the
    /// space budget; the model changes as the mode says. A refused call (ENOSPC, or the
    /// EINVAL of a collapse or insert that reaches the end) must change nothing.
    pub fn fallocate(&mut self, path: &str, bs: u32) -> Step {
        let Some(id) = self.file_id(path) else {
            return Ok(());
        };
        let bs = u64::from(bs);
        let len = self.model.files[&id].len() as u64;
        let keep = FALLOC_FL_KEEP_SIZE;
        let modes = [
            0,
            keep,
            FALLOC_FL_PUNCH_HOLE | keep,
            FALLOC_FL_ZERO_RANGE,
            FALLOC_FL_ZERO_RANGE | keep,
            FALLOC_FL_COLLAPSE_RANGE,
            FALLOC_FL_INSERT_RANGE,
        ];
        let mode = *self.rng.pick(&modes);
        let aligned = mode == FALLOC_FL_COLLAPSE_RANGE || mode == FALLOC_FL_INSERT_RANGE;
        let (offset, n) = if aligned {
            (self.rng.below(len / bs + 1) * bs, self.rng.range(1, 4) * bs)
        } else {
            (self.rng.below(len + 2 * bs), self.rng.range(1, 6 * bs))
        };
        // Preallocated blocks count against the budget even past the end (KEEP_SIZE).
        let grow = match mode {
            FALLOC_FL_PUNCH_HOLE_KEEP | FALLOC_FL_COLLAPSE_RANGE => 0,
            FALLOC_FL_INSERT_RANGE => n,
            _ => (offset + n).saturating_sub(len) + n,
        };
        if self.used_bytes() + grow > self.budget_bytes {
            return Ok(());
        }
        let ino = self.ino(path)?;
        match self.fs.fallocate(ino, offset, n, mode) {
            Ok(()) => {}
            Err(e) if e.errno() == Errno::NoSpace => return Ok(()),
            Err(e)
                if e.errno() == Errno::Invalid
                    && ((mode == FALLOC_FL_COLLAPSE_RANGE && offset + n >= len)
                        || (mode == FALLOC_FL_INSERT_RANGE && offset >= len)) =>
            {
                return Ok(());
            }
            Err(e) => return Err(format!("fallocate {path} {offset}+{n} mode {mode:#x}: {e}")),
        }
        let content = self.model.files.get_mut(&id).ok_or("model file missing")?;
        crate::model::apply_fallocate(content, offset, n, mode);
        Ok(())
    }

    /// Unlinks a file or symlink.
    pub fn unlink(&mut self, path: &str) -> Step {
        let file = match self.model.names.get(path) {
            Some(Node::File(id)) => Some(*id),
            Some(Node::Symlink(_)) => None,
            _ => return Ok(()),
        };
        let (dir, name) = split(path);
        self.fs
            .unlink(self.ino(dir)?, name.as_bytes())
            .map_err(|e| format!("unlink {path}: {e}"))?;
        self.model.names.remove(path);
        if let Some(id) = file {
            self.forget_if_gone(id);
        }
        Ok(())
    }

    /// Opens a file, then unlinks its name: it lives on (an orphan once its last name is
    /// gone) until [`Driver::release_one`].
    pub fn open_then_unlink(&mut self, path: &str) -> Step {
        let Some(file) = self.file_id(path) else {
            return Ok(());
        };
        let ino = self.ino(path)?;
        self.fs.open(ino).map_err(|e| format!("open {path}: {e}"))?;
        self.held.push(Held { ino, file });
        self.unlink(path)
    }

    /// Writes to a held inode: invisible when it has no name left, visible through its
    /// other names otherwise.
    pub fn write_held(&mut self) -> Step {
        if self.held.is_empty() {
            return Ok(());
        }
        let h = self.held[self.rng.below_usize(self.held.len())];
        let len = self.rng.range(1, 6000) as usize;
        let offset = self
            .rng
            .below(self.model.files[&h.file].len() as u64 + 2000);
        if self.used_bytes() + offset + len as u64 > self.budget_bytes {
            return Ok(());
        }
        let data = self.rng.bytes(len);
        self.write_ino(h.ino, h.file, offset, &data)
    }

    /// Closes one held inode; the last close of an unlinked one frees it.
    pub fn release_one(&mut self) -> Step {
        if self.held.is_empty() {
            return Ok(());
        }
        let h = self.held.swap_remove(self.rng.below_usize(self.held.len()));
        self.fs
            .release(h.ino)
            .map_err(|e| format!("release {}: {e}", h.ino))?;
        self.forget_if_gone(h.file);
        Ok(())
    }

    /// Drops a file from the model once no name and no open handle refers to it.
    fn forget_if_gone(&mut self, file: u64) {
        let linked = self.model.names.values().any(|n| *n == Node::File(file));
        let held = self.held.iter().any(|o| o.file == file);
        if !linked && !held {
            self.model.files.remove(&file);
            self.model.xattrs.remove(&file);
        }
    }

    /// Renames `from` to `to` only when POSIX says it succeeds and it changes something.
    pub fn rename(&mut self, from: &str, to: &str) -> Step {
        let (Some(src), dst) = (
            self.model.names.get(from).cloned(),
            self.model.names.get(to).cloned(),
        ) else {
            return Ok(());
        };
        if from == to || from == "lost+found" || to.starts_with(&format!("{from}/")) {
            return Ok(());
        }
        let ok = match (&src, &dst) {
            (_, None) => true,
            (Node::Dir, Some(Node::Dir)) => !self.model.has_children(to) && to != "lost+found",
            (Node::File(a), Some(Node::File(b))) => a != b,
            (Node::File(_) | Node::Symlink(_), Some(Node::File(_) | Node::Symlink(_))) => true,
            _ => false,
        };
        if !ok {
            return Ok(());
        }
        let ((fd, fname), (td, tname)) = (split(from), split(to));
        self.fs
            .rename(
                self.ino(fd)?,
                fname.as_bytes(),
                self.ino(td)?,
                tname.as_bytes(),
                RenameFlags::default(),
            )
            .map_err(|e| format!("rename {from} -> {to}: {e}"))?;
        self.model.names.remove(to);
        self.model.rename(from, to);
        if let Some(Node::File(id)) = dst {
            self.forget_if_gone(id);
        }
        Ok(())
    }

    pub fn link(&mut self, from: &str, to: &str) -> Step {
        let Some(id) = self.file_id(from) else {
            return Ok(());
        };
        if self.model.names.contains_key(to) {
            return Ok(());
        }
        let (td, tname) = split(to);
        self.fs
            .link(self.ino(from)?, self.ino(td)?, tname.as_bytes())
            .map_err(|e| format!("link {from} -> {to}: {e}"))?;
        self.model.names.insert(to.to_string(), Node::File(id));
        Ok(())
    }

    pub fn mkdir(&mut self, path: &str) -> Step {
        if self.model.names.contains_key(path) {
            return Ok(());
        }
        let (dir, name) = split(path);
        self.fs
            .mkdir(self.ino(dir)?, name.as_bytes(), 0o755, ME)
            .map_err(|e| format!("mkdir {path}: {e}"))?;
        self.model.names.insert(path.to_string(), Node::Dir);
        Ok(())
    }

    pub fn rmdir(&mut self, path: &str) -> Step {
        if self.model.names.get(path) != Some(&Node::Dir)
            || self.model.has_children(path)
            || path == "lost+found"
        {
            return Ok(());
        }
        let (dir, name) = split(path);
        self.fs
            .rmdir(self.ino(dir)?, name.as_bytes())
            .map_err(|e| format!("rmdir {path}: {e}"))?;
        self.model.names.remove(path);
        Ok(())
    }

    pub fn symlink(&mut self, path: &str) -> Step {
        if self.model.names.contains_key(path) {
            return Ok(());
        }
        let target = format!("t{}", self.rng.below(1000)).repeat(self.rng.range(1, 30) as usize);
        let (dir, name) = split(path);
        self.fs
            .symlink(self.ino(dir)?, name.as_bytes(), target.as_bytes(), ME)
            .map_err(|e| format!("symlink {path}: {e}"))?;
        self.model
            .names
            .insert(path.to_string(), Node::Symlink(target.into_bytes()));
        Ok(())
    }

    /// Sets or removes a small inline xattr on a file. ENOSPC (no inline room left) is
    /// decided before the inode changes, so it changes nothing.
    pub fn xattr(&mut self, path: &str) -> Step {
        let Some(id) = self.file_id(path) else {
            return Ok(());
        };
        let name = *self.rng.pick(&XATTR_NAMES);
        let ino = self.ino(path)?;
        if self.model.has_xattr(id, name) && self.rng.chance(1, 3) {
            self.fs
                .removexattr(ino, name.as_bytes())
                .map_err(|e| format!("removexattr {path} {name}: {e}"))?;
            self.model.set_xattr(id, name, None);
            return Ok(());
        }
        let len = self.rng.below_usize(40);
        let value = self.rng.bytes(len);
        match self
            .fs
            .setxattr(ino, name.as_bytes(), &value, XattrFlags::default())
        {
            Ok(()) => {}
            Err(e) if e.errno() == Errno::NoSpace => return Ok(()),
            Err(e) => return Err(format!("setxattr {path} {name}: {e}")),
        }
        self.model.set_xattr(id, name, Some(value));
        Ok(())
    }

    /// Closes everything still held (the workload's last step before unmount).
    pub fn release_all(&mut self) -> Step {
        while !self.held.is_empty() {
            self.release_one()?;
        }
        Ok(())
    }

    /// One step of `workload`.
    pub fn step(&mut self, workload: Workload, block_size: u32) -> Step {
        match workload {
            Workload::Mixed => self.mixed(block_size),
            Workload::Append => self.append(),
            Workload::Dirs => self.dirs(),
            Workload::Bigfile => self.bigfile(block_size),
            // record() runs it on threads of crate::concurrent, never through the driver.
            Workload::Concurrent => Err("the concurrent workload has no sequential steps".into()),
        }
    }

    fn mixed(&mut self, bs: u32) -> Step {
        const NAMES: [&str; 6] = ["a", "b", "c", "dd", "long-name-to-spread-hashes", "x"];
        let dir = self.pick_dir();
        let name = NAMES[self.rng.below_usize(NAMES.len())];
        let path = join(&dir, name);
        let file = self.pick_file();
        let weights = [12, 20, 5, 5, 5, 3, 3, 5, 4, 4, 3, 3, 3, 6, 6, 3, 4];
        match self.rng.weighted(&weights) {
            0 => self.create(&dir, split(&path).1),
            1 => match file {
                Some(f) => {
                    let len = self.model.files[&self.file_id(&f).unwrap_or(0)].len() as u64;
                    let offset = self.rng.below(len + u64::from(bs) * 2);
                    let n = self.rng.range(1, u64::from(bs) * 3) as usize;
                    self.write(&f, offset, n)
                }
                None => Ok(()),
            },
            2 => match file {
                Some(f) => {
                    let len = self.model.files[&self.file_id(&f).unwrap_or(0)].len() as u64;
                    let size = self.rng.below(len * 2 + 3000);
                    self.truncate(&f, size)
                }
                None => Ok(()),
            },
            3 => self.unlink(&path),
            4 => {
                let all: Vec<String> = self.model.names.keys().cloned().collect();
                let from = self.rng.pick(&all).clone();
                self.rename(&from, &path)
            }
            5 => match file {
                Some(f) => self.link(&f, &path),
                None => Ok(()),
            },
            6 => self.mkdir(&path),
            7 => self.rmdir(&path),
            8 => self.symlink(&path),
            9 => match file {
                Some(f) => self.xattr(&f),
                None => Ok(()),
            },
            10 => match file {
                Some(f) => self.open_then_unlink(&f),
                None => Ok(()),
            },
            11 => self.write_held(),
            12 => self.release_one(),
            13 => self.fsync_some(),
            14 => self.sync(),
            16 => match file {
                Some(f) => self.fallocate(&f, bs),
                None => Ok(()),
            },
            _ => {
                // A burst of small changes in one delta.
                for _ in 0..self.rng.range(2, 8) {
                    let dir = self.pick_dir();
                    let name = format!("burst{}", self.rng.below(12));
                    self.create(&dir, &name)?;
                }
                Ok(())
            }
        }
    }

    fn append(&mut self) -> Step {
        const FILES: [&str; 3] = ["log0", "log1", "journal"];
        let name = *self.rng.pick(&FILES);
        if !self.model.names.contains_key(name) {
            self.create("", name)?;
        }
        let Some(id) = self.file_id(name) else {
            return Ok(());
        };
        let len = self.model.files[&id].len() as u64;
        if self.rng.chance(1, 20) {
            let keep = self.rng.below(len + 1);
            self.truncate(name, keep)?;
        } else {
            let n = self.rng.range(1, 3000) as usize;
            self.write(name, len, n)?;
        }
        match self.rng.below(10) {
            0..=5 => self.fsync_some(),
            6 => self.sync(),
            _ => Ok(()),
        }
    }

    fn dirs(&mut self) -> Step {
        const DIRS: [&str; 3] = ["inbox", "work", "done"];
        for d in DIRS {
            if !self.model.names.contains_key(d) {
                self.mkdir(d)?;
            }
        }
        let name = format!("entry-{:03}", self.rng.below(40));
        let dir = *self.rng.pick(&DIRS);
        let path = join(dir, &name);
        match self.rng.weighted(&[10, 8, 5, 2, 2, 4, 2]) {
            0 => self.create(dir, &name),
            1 => {
                let to_dir = *self.rng.pick(&DIRS);
                let to = join(to_dir, &format!("entry-{:03}", self.rng.below(40)));
                self.rename(&path, &to)
            }
            2 => self.unlink(&path),
            3 => self.symlink(&path),
            4 => match self.pick_file() {
                Some(f) => self.link(&f, &path),
                None => Ok(()),
            },
            5 => self.fsync_some(),
            _ => self.sync(),
        }
    }

    fn bigfile(&mut self, bs: u32) -> Step {
        const FILES: [&str; 2] = ["big", "huge"];
        let name = *self.rng.pick(&FILES);
        if !self.model.names.contains_key(name) {
            self.create("", name)?;
        }
        let Some(id) = self.file_id(name) else {
            return Ok(());
        };
        let len = self.model.files[&id].len() as u64;
        match self.rng.weighted(&[8, 3, 2, 4, 2, 4]) {
            0 => {
                let offset = self.rng.below(len + u64::from(bs) * 8);
                let n = self.rng.range(u64::from(bs), self.budget_bytes / 6) as usize;
                self.write(name, offset, n)
            }
            1 => {
                let size = self.rng.below(len + 1);
                self.truncate(name, size)
            }
            2 => {
                let size = len + self.rng.below(self.budget_bytes / 8);
                self.truncate(name, size)
            }
            3 => self.fsync_some(),
            4 => self.sync(),
            _ => self.fallocate(name, bs),
        }
    }
}
