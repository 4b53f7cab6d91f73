//! Several threads of seeded random operations on one filesystem, each on its own subtree
//! (`w<T>/`) with its own model, plus a shared directory (`shared/`) where they race on the
//! same names. Used by the multi-threaded model test (tests/tests/model_mt.rs) and by the
//! crash harness's `concurrent` workload (crash.rs).
//!
//! **What each thread records.** Its model after every operation, with the device's event
//! count read just before the operation began, and after every fsync or sync that returned,
//! the event count read then and how many operations it covers. Operations of one thread
//! run one after another, and each one lies wholly inside one delta, so whatever a crash
//! keeps of a thread is a prefix of its operations: [`History::check`] asks that the
//! recovered subtree be the model after some operation that is not older than the last
//! acknowledged one and did not begin after the crash point.
//!
//! **The shared directory.** Names `shared/n<K>` are created exclusively, renamed with
//! RENAME_NOREPLACE and unlinked, by every thread at once, so each call's outcome depends on
//! the race. Each thread counts, per name, its successful arrivals (create, rename in) and
//! departures (unlink, rename out). A name's arrivals and departures alternate whatever
//! the interleaving, so when every thread is quiescent the sum over threads is 1 for the
//! names that exist and 0 for the others ([`check_shared`]).
//!
//! Not covered: hard links and symlinks (the sequential model test and crash workloads do
//! those), xattrs on directories, errors other than the races' EEXIST and ENOENT.

use std::collections::BTreeMap;
use std::sync::Arc;

use tuxfs_engine::Errno;
use tuxfs_engine::dev::record::RecordingDevice;
use tuxfs_engine::fs::{
    Caller, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, Filesystem,
    RenameFlags, SetAttr, XattrFlags,
};

use crate::model::{Model, Node, Shown, Visible, apply_fallocate, diff, resolve};
use crate::rng::Rng;

const ME: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};

/// The directory every thread races in.
pub const SHARED: &str = "shared";

/// Names raced on in the shared directory.
const SHARED_NAMES: u64 = 6;

/// The subtree of thread `t`.
pub fn thread_dir(t: usize) -> String {
    format!("w{t}")
}

/// The part of `tree` under `dir`, with `dir/` stripped; None when `dir` is not there.
pub fn subtree(tree: &Visible, dir: &str) -> Option<Visible> {
    if tree.get(dir) != Some(&Shown::Dir) {
        return None;
    }
    let prefix = format!("{dir}/");
    Some(
        tree.range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, s)| (p[prefix.len()..].to_string(), s.clone()))
            .collect(),
    )
}

/// Makes the shared directory and one subtree per thread, and syncs.
pub fn setup(fs: &Filesystem, threads: usize) -> Result<(), String> {
    for name in (0..threads).map(thread_dir).chain([SHARED.to_string()]) {
        fs.mkdir(1, name.as_bytes(), 0o755, ME)
            .map_err(|e| format!("mkdir {name}: {e}"))?;
    }
    fs.sync().map_err(|e| format!("sync after setup: {e}"))
}

/// What one thread did, for the crash verdict.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Event count read just before operation k+1 began (`starts[0]` for the first).
    pub starts: Vec<usize>,
    /// The subtree after k operations (`states[0]`: empty).
    pub states: Vec<Visible>,
    /// (event count read after an fsync or sync returned, operations it covers).
    pub acks: Vec<(usize, usize)>,
}

impl History {
    /// Operations acknowledged by an fsync or sync that returned at or before event `at`
    /// (None: not even the setup was).
    pub fn acknowledged(&self, at: usize) -> Option<usize> {
        self.acks
            .iter()
            .filter(|(e, _)| *e <= at)
            .map(|(_, k)| *k)
            .max()
    }

    /// Checks thread `t`'s recovered subtree (None: the directory is missing) after a crash
    /// at event count `at`; returns the number of operations it showed.
    pub fn check(&self, t: usize, got: Option<&Visible>, at: usize) -> Result<usize, String> {
        let acked = self.acknowledged(at);
        // Operation k+1 may have reached the image only if it began before event `at`.
        let newest = self.starts.iter().take_while(|&&s| s < at).count();
        let Some(got) = got else {
            return match acked {
                None => Ok(0),
                Some(k) => Err(format!(
                    "LOST AN ACKNOWLEDGED SYNC: thread {t}'s directory is gone, but {k} of its \
                     operations (and the setup) were acknowledged"
                )),
            };
        };
        let oldest = acked.unwrap_or(0);
        // An acknowledgement may cover operations that wrote nothing after `at` began.
        let newest = newest.max(oldest).min(self.states.len() - 1);
        if let Some(k) = (oldest..=newest).rev().find(|&k| self.states[k] == *got) {
            return Ok(k);
        }
        let older = (0..oldest).rev().find(|&k| self.states[k] == *got);
        Err(format!(
            "thread {t}: {}; acknowledged {oldest} operations, at most {newest} had begun; \
             differences from the acknowledged state: {}",
            match older {
                Some(k) =>
                    format!("LOST AN ACKNOWLEDGED SYNC: the subtree is that after {k} operations"),
                None => "the subtree matches none of its states".into(),
            },
            diff(&self.states[oldest], got)
        ))
    }
}

/// The crash verdict of a recovered tree (crash at event count `at`): every thread's
/// subtree passes [`History::check`], and the shared directory holds only files with one
/// link. Returns true when some thread shows more than it had acknowledged (a commit in
/// flight at the crash reached the disk).
pub fn concurrent_verdict(got: &Visible, threads: &[History], at: usize) -> Result<bool, String> {
    let mut beyond = false;
    for (t, h) in threads.iter().enumerate() {
        let shown = h.check(t, subtree(got, &thread_dir(t)).as_ref(), at)?;
        beyond |= shown > h.acknowledged(at).unwrap_or(0);
    }
    match subtree(got, SHARED) {
        Some(shared) => check_shared_files(&shared, true)?,
        None if threads.iter().all(|h| h.acknowledged(at).is_none()) => {}
        None => return Err("the shared directory is gone after an acknowledged setup".into()),
    }
    Ok(beyond)
}

/// One thread's driver: its subtree, its model, its part of the shared-name ledger.
#[derive(Debug)]
pub struct Worker {
    pub id: usize,
    fs: Arc<Filesystem>,
    dev: Arc<RecordingDevice>,
    rng: Rng,
    pub model: Model,
    pub history: History,
    /// Per shared name: successful arrivals minus departures by this thread.
    pub ledger: BTreeMap<String, i64>,
    /// The last operations, for failure messages.
    pub trace: Vec<String>,
    dir_ino: u64,
    shared_ino: u64,
    budget_bytes: u64,
    block_size: u64,
}

type Step = Result<(), String>;

fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

impl Worker {
    /// A driver for thread `id` (after [`setup`]); `budget_bytes` bounds its files' sizes.
    pub fn new(
        id: usize,
        fs: Arc<Filesystem>,
        dev: Arc<RecordingDevice>,
        rng: Rng,
        budget_bytes: u64,
    ) -> Result<Worker, String> {
        let look = |name: &str| {
            fs.lookup(1, name.as_bytes())
                .map(|a| a.ino)
                .map_err(|e| format!("lookup {name}: {e}"))
        };
        let (dir_ino, shared_ino) = (look(&thread_dir(id))?, look(SHARED)?);
        let block_size = u64::from(fs.block_size());
        let model = Model::default();
        Ok(Worker {
            id,
            history: History {
                starts: Vec::new(),
                states: vec![model.visible()],
                acks: Vec::new(),
            },
            model,
            fs,
            dev,
            rng,
            ledger: BTreeMap::new(),
            trace: Vec::new(),
            dir_ino,
            shared_ino,
            budget_bytes,
            block_size,
        })
    }

    /// The setup's sync covers the (empty) subtree: states from 0 on are acknowledged.
    pub fn acknowledge_setup(&mut self, events: usize) {
        self.history.acks.push((events, 0));
    }

    fn ino(&self, path: &str) -> Result<u64, String> {
        resolve(&self.fs, self.dir_ino, path).map_err(|e| format!("thread {}: {e}", self.id))
    }

    fn file_id(&self, path: &str) -> Option<u64> {
        self.model.file_id(path)
    }

    fn used_bytes(&self) -> u64 {
        self.model.used_bytes()
    }

    /// One random operation, recorded in the history.
    pub fn step(&mut self) -> Step {
        let start = self.dev.event_count();
        let what = self.one()?;
        self.history.starts.push(start);
        self.history.states.push(self.model.visible());
        if self.trace.len() >= 12 {
            self.trace.remove(0);
        }
        self.trace.push(what);
        Ok(())
    }

    fn one(&mut self) -> Result<String, String> {
        let dirs = self.model.dirs();
        let dir = self.rng.pick(&dirs).clone();
        let name = format!("f{}", self.rng.below(6));
        let path = if dir.is_empty() {
            name
        } else {
            format!("{dir}/{name}")
        };
        let files = self.model.file_paths();
        let file = (!files.is_empty()).then(|| self.rng.pick(&files).clone());
        let sub = format!("d{}", self.rng.below(3));
        let weights = [10, 14, 8, 5, 3, 4, 3, 2, 3, 3, 5, 2, 6];
        let out = match (self.rng.weighted(&weights), file) {
            (0, _) => self.create(&path)?,
            (1, Some(f)) => self.write(&f, false)?,
            (2, Some(f)) => self.write(&f, true)?,
            (3, Some(f)) => self.truncate(&f)?,
            (4, Some(f)) => self.fallocate(&f)?,
            (5, Some(f)) => self.rename(&f, &path)?,
            (6, Some(f)) => self.unlink(&f)?,
            (7, _) => self.mkdir(&sub)?,
            (8, _) => self.rmdir(&sub)?,
            (9, Some(f)) => self.xattr(&f)?,
            (10, f) => self.fsync(f.as_deref())?,
            (11, _) => self.sync()?,
            (12, _) => self.shared()?,
            _ => "nothing".into(),
        };
        Ok(out)
    }

    fn create(&mut self, path: &str) -> Result<String, String> {
        if self.model.names.contains_key(path) {
            return Ok(format!("create {path}: exists"));
        }
        let (dir, name) = split(path);
        let a = self
            .fs
            .create(self.ino(dir)?, name.as_bytes(), 0o644, ME)
            .map_err(|e| format!("thread {}: create {path}: {e}", self.id))?;
        self.fs
            .release(a.ino)
            .map_err(|e| format!("release: {e}"))?;
        let id = self.model.new_file();
        self.model.names.insert(path.to_string(), Node::File(id));
        Ok(format!("create {path}"))
    }

    fn write(&mut self, path: &str, append: bool) -> Result<String, String> {
        let id = self.file_id(path).ok_or("no such file in the model")?;
        let len = self.model.files[&id].len() as u64;
        let offset = if append {
            len
        } else {
            self.rng.below(len + 2 * self.block_size)
        };
        let n = self.rng.range(1, 3 * self.block_size) as usize;
        let grow = (offset + n as u64).saturating_sub(len);
        if self.used_bytes() + grow > self.budget_bytes {
            return self.truncate_to(path, 0);
        }
        let data = self.rng.bytes(n);
        let ino = self.ino(path)?;
        self.fs
            .write(ino, offset, &data, false)
            .map_err(|e| format!("thread {}: write {path} at {offset}: {e}", self.id))?;
        let content = self.model.files.get_mut(&id).ok_or("model file missing")?;
        let end = offset as usize + n;
        if content.len() < end {
            content.resize(end, 0);
        }
        content[offset as usize..end].copy_from_slice(&data);
        Ok(format!("write {path} {offset}+{n}"))
    }

    fn truncate(&mut self, path: &str) -> Result<String, String> {
        let id = self.file_id(path).ok_or("no such file in the model")?;
        let len = self.model.files[&id].len() as u64;
        let size = self.rng.below(len * 2 + self.block_size);
        self.truncate_to(path, size)
    }

    fn truncate_to(&mut self, path: &str, size: u64) -> Result<String, String> {
        let id = self.file_id(path).ok_or("no such file in the model")?;
        let grow = size.saturating_sub(self.model.files[&id].len() as u64);
        if self.used_bytes() + grow > self.budget_bytes {
            return Ok(format!("truncate {path}: over budget"));
        }
        let set = SetAttr {
            size: Some(size),
            ..SetAttr::default()
        };
        self.fs
            .setattr(self.ino(path)?, &set)
            .map_err(|e| format!("thread {}: truncate {path} to {size}: {e}", self.id))?;
        if let Some(content) = self.model.files.get_mut(&id) {
            content.resize(size as usize, 0);
        }
        Ok(format!("truncate {path} {size}"))
    }

    fn fallocate(&mut self, path: &str) -> Result<String, String> {
        let id = self.file_id(path).ok_or("no such file in the model")?;
        let len = self.model.files[&id].len() as u64;
        let modes = [
            FALLOC_FL_KEEP_SIZE,
            FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
            FALLOC_FL_ZERO_RANGE,
        ];
        let mode = *self.rng.pick(&modes);
        let offset = self.rng.below(len + self.block_size);
        let n = self.rng.range(1, 4 * self.block_size);
        if self.used_bytes() + offset + 2 * n > self.budget_bytes {
            return Ok(format!("fallocate {path}: over budget"));
        }
        self.fs
            .fallocate(self.ino(path)?, offset, n, mode)
            .map_err(|e| {
                format!(
                    "thread {}: fallocate {path} {offset}+{n} {mode:#x}: {e}",
                    self.id
                )
            })?;
        let content = self.model.files.get_mut(&id).ok_or("model file missing")?;
        apply_fallocate(content, offset, n, mode);
        Ok(format!("fallocate {path} {offset}+{n} mode {mode:#x}"))
    }

    /// Renames a file onto `to` (a free name, or another file, which it replaces).
    fn rename(&mut self, from: &str, to: &str) -> Result<String, String> {
        let target = self.model.names.get(to);
        if from == to || matches!(target, Some(Node::Dir | Node::Symlink(_))) {
            return Ok(format!("rename {from} {to}: skipped"));
        }
        let replaced = self.file_id(to);
        let ((fd, fname), (td, tname)) = (split(from), split(to));
        self.fs
            .rename(
                self.ino(fd)?,
                fname.as_bytes(),
                self.ino(td)?,
                tname.as_bytes(),
                RenameFlags::default(),
            )
            .map_err(|e| format!("thread {}: rename {from} {to}: {e}", self.id))?;
        self.model.rename(from, to);
        if let Some(id) = replaced {
            self.forget(id);
        }
        Ok(format!("rename {from} {to}"))
    }

    fn unlink(&mut self, path: &str) -> Result<String, String> {
        let id = self.file_id(path).ok_or("no such file in the model")?;
        let (dir, name) = split(path);
        self.fs
            .unlink(self.ino(dir)?, name.as_bytes())
            .map_err(|e| format!("thread {}: unlink {path}: {e}", self.id))?;
        self.model.names.remove(path);
        self.forget(id);
        Ok(format!("unlink {path}"))
    }

    /// Drops a file's contents from the model once no name refers to it.
    fn forget(&mut self, id: u64) {
        if !self.model.names.values().any(|n| *n == Node::File(id)) {
            self.model.files.remove(&id);
            self.model.xattrs.remove(&id);
        }
    }

    fn mkdir(&mut self, path: &str) -> Result<String, String> {
        if self.model.names.contains_key(path) {
            return Ok(format!("mkdir {path}: exists"));
        }
        self.fs
            .mkdir(self.dir_ino, path.as_bytes(), 0o755, ME)
            .map_err(|e| format!("thread {}: mkdir {path}: {e}", self.id))?;
        self.model.names.insert(path.to_string(), Node::Dir);
        Ok(format!("mkdir {path}"))
    }

    fn rmdir(&mut self, path: &str) -> Result<String, String> {
        if self.model.names.get(path) != Some(&Node::Dir) || self.model.has_children(path) {
            return Ok(format!("rmdir {path}: skipped"));
        }
        self.fs
            .rmdir(self.dir_ino, path.as_bytes())
            .map_err(|e| format!("thread {}: rmdir {path}: {e}", self.id))?;
        self.model.names.remove(path);
        Ok(format!("rmdir {path}"))
    }

    fn xattr(&mut self, path: &str) -> Result<String, String> {
        let id = self.file_id(path).ok_or("no such file in the model")?;
        let name = *self.rng.pick(&["user.a", "user.checksum"]);
        let ino = self.ino(path)?;
        if self.model.has_xattr(id, name) && self.rng.chance(1, 3) {
            self.fs
                .removexattr(ino, name.as_bytes())
                .map_err(|e| format!("thread {}: removexattr {path} {name}: {e}", self.id))?;
            self.model.set_xattr(id, name, None);
            return Ok(format!("removexattr {path} {name}"));
        }
        let n = self.rng.range(1, 200) as usize;
        let value = self.rng.bytes(n);
        self.fs
            .setxattr(ino, name.as_bytes(), &value, XattrFlags::default())
            .map_err(|e| format!("thread {}: setxattr {path} {name}: {e}", self.id))?;
        self.model.set_xattr(id, name, Some(value));
        Ok(format!("setxattr {path} {name} ({n} bytes)"))
    }

    /// fsync of a file (or of the subtree's directory): covers every operation so far.
    fn fsync(&mut self, file: Option<&str>) -> Result<String, String> {
        let ino = match file {
            Some(f) => self.ino(f)?,
            None => self.dir_ino,
        };
        let covered = self.history.states.len() - 1;
        self.fs
            .fsync(ino, self.rng.chance(1, 2))
            .map_err(|e| format!("thread {}: fsync {ino}: {e}", self.id))?;
        self.history.acks.push((self.dev.event_count(), covered));
        Ok(format!("fsync {}", file.unwrap_or(".")))
    }

    fn sync(&mut self) -> Result<String, String> {
        let covered = self.history.states.len() - 1;
        self.fs
            .sync()
            .map_err(|e| format!("thread {}: sync: {e}", self.id))?;
        self.history.acks.push((self.dev.event_count(), covered));
        Ok("sync".into())
    }

    /// A racing operation on the shared directory; EEXIST and ENOENT are outcomes of the race.
    fn shared(&mut self) -> Result<String, String> {
        let a = format!("n{}", self.rng.below(SHARED_NAMES));
        let b = format!("n{}", self.rng.below(SHARED_NAMES));
        let raced = |e: &tuxfs_engine::Error| matches!(e.errno(), Errno::Exists | Errno::NoEntry);
        match self.rng.below(3) {
            0 => match self.fs.create(self.shared_ino, a.as_bytes(), 0o644, ME) {
                Ok(attr) => {
                    let tag = format!("made by thread {}", self.id);
                    self.fs
                        .write(attr.ino, 0, tag.as_bytes(), false)
                        .map_err(|e| format!("thread {}: write shared/{a}: {e}", self.id))?;
                    self.fs
                        .release(attr.ino)
                        .map_err(|e| format!("release: {e}"))?;
                    *self.ledger.entry(a.clone()).or_default() += 1;
                    Ok(format!("create shared/{a}"))
                }
                Err(e) if raced(&e) => Ok(format!("create shared/{a}: {e}")),
                Err(e) => Err(format!("thread {}: create shared/{a}: {e}", self.id)),
            },
            1 => match self.fs.unlink(self.shared_ino, a.as_bytes()) {
                Ok(()) => {
                    *self.ledger.entry(a.clone()).or_default() -= 1;
                    Ok(format!("unlink shared/{a}"))
                }
                Err(e) if raced(&e) => Ok(format!("unlink shared/{a}: {e}")),
                Err(e) => Err(format!("thread {}: unlink shared/{a}: {e}", self.id)),
            },
            _ => {
                let flags = RenameFlags {
                    noreplace: true,
                    exchange: false,
                };
                if a == b {
                    return Ok("rename shared: same name".into());
                }
                match self.fs.rename(
                    self.shared_ino,
                    a.as_bytes(),
                    self.shared_ino,
                    b.as_bytes(),
                    flags,
                ) {
                    Ok(()) => {
                        *self.ledger.entry(a.clone()).or_default() -= 1;
                        *self.ledger.entry(b.clone()).or_default() += 1;
                        Ok(format!("rename shared/{a} shared/{b}"))
                    }
                    Err(e) if raced(&e) => Ok(format!("rename shared/{a} shared/{b}: {e}")),
                    Err(e) => Err(format!("thread {}: rename shared/{a} {b}: {e}", self.id)),
                }
            }
        }
    }
}

/// At a quiescent point: every thread's subtree equals its model, and the shared directory
/// holds exactly the names whose arrivals outnumber their departures (by one), each a file
/// with one link that a thread wrote its tag into.
pub fn check_quiescent(tree: &Visible, workers: &[Worker]) -> Result<(), String> {
    for w in workers {
        let dir = thread_dir(w.id);
        let want = w.model.visible();
        match subtree(tree, &dir) {
            Some(got) if got == want => {}
            Some(got) => {
                return Err(format!(
                    "thread {}'s subtree differs from its model: {}; its last operations: {:?}",
                    w.id,
                    diff(&want, &got),
                    w.trace
                ));
            }
            None => return Err(format!("{dir} is missing")),
        }
    }
    check_shared(tree, workers)
}

/// The shared directory against the threads' ledgers (see the module documentation).
pub fn check_shared(tree: &Visible, workers: &[Worker]) -> Result<(), String> {
    let mut net: BTreeMap<String, i64> = BTreeMap::new();
    for w in workers {
        for (name, n) in &w.ledger {
            *net.entry(name.clone()).or_default() += n;
        }
    }
    let got = subtree(tree, SHARED).ok_or("the shared directory is missing")?;
    for (name, n) in &net {
        if !(0..=1).contains(n) {
            return Err(format!(
                "shared/{name}: {n} more successful arrivals than departures (0 or 1 expected)"
            ));
        }
    }
    let want: Vec<&String> = net
        .iter()
        .filter(|(_, n)| **n == 1)
        .map(|(k, _)| k)
        .collect();
    let have: Vec<&String> = got.keys().collect();
    if want != have {
        return Err(format!(
            "the shared directory holds {have:?}, the threads' successful calls say {want:?}"
        ));
    }
    check_shared_files(&got, false)
}

/// Every entry of the shared directory is a file with one link holding a thread's tag (or,
/// after a crash, `empty_allowed`: nothing yet, its creation durable and its write not).
pub fn check_shared_files(shared: &Visible, empty_allowed: bool) -> Result<(), String> {
    for (name, shown) in shared {
        match shown {
            Shown::File { data, nlink: 1, .. }
                if data.starts_with(b"made by thread ") || (empty_allowed && data.is_empty()) => {}
            other => return Err(format!("shared/{name} is {other:?}")),
        }
    }
    Ok(())
}
