//! Story: seeded random POSIX operations run on the engine and on a reference model side by
//! side. Every so often the filesystem is unmounted and mounted again, or dropped without
//! unmounting (a crash after the last sync: every write landed, nothing after the last sync
//! was committed). After each, the visible tree must equal the model (after a crash: the
//! model as of the last sync) and fsck must find the image clean.
//!
//! Replay a failure with `TUXFS_SEED=<seed> cargo test -p tuxfs-tests --test model_ops`.
//! Longer runs: `TUXFS_MODEL_OPS=20000`.

use std::sync::Arc;
use std::time::Duration;

use tuxfs_engine::Errno;
use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::format::inode::Timestamp;
use tuxfs_engine::fs::{Caller, Filesystem, MountOptions, RenameFlags, SetAttr};
use tuxfs_engine::mkfs::{MkfsParams, format_device};
use tuxfs_fsck::{Mode, Options, check};
use tuxfs_tests::model::{Model, Node, diff, snapshot};
use tuxfs_tests::rng::{Rng, seed_from_env};

const ME: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};
/// Free space below which a step keeps a copy of the model (see
/// `Harness::step_with_space_pressure`).
const SPACE_PRESSURE_BYTES: u64 = 2 << 20;
const NAMES: [&str; 6] = ["a", "b", "c", "dd", "long-name-for-hash-collisions", "x"];

struct Harness {
    dev: Arc<MemDevice>,
    fs: Arc<Filesystem>,
    model: Model,
    durable: Model,
    seed: u64,
    step: u64,
    unify: u64,
    /// The last operations, printed on failure.
    trace: std::collections::VecDeque<String>,
}

/// Only explicit syncs commit, so a crash loses exactly what came after the last sync. A
/// small `unify_log_blocks` makes unify (and superblock alternation) happen all the time.
fn options(unify_log_blocks: u64) -> MountOptions {
    MountOptions {
        commit_interval: Duration::from_secs(3600),
        dirty_limit_bytes: u64::MAX,
        unify_log_blocks,
        // No leaf cache: every clean leaf is dropped after every commit and read back.
        leaf_cache_bytes: 0,
        ..MountOptions::default()
    }
}

impl Harness {
    fn new(seed: u64, block_size: u32, unify: u64) -> Self {
        let dev = Arc::new(MemDevice::new(block_size as usize * 16384));
        let p = MkfsParams {
            block_size,
            block_count: 16384,
            label: String::new(),
            uuid: seed.to_le_bytes().repeat(2).try_into().expect("16 bytes"),
            hash_seed: [1; 16],
            now: Timestamp::default(),
            uid: 0,
            gid: 0,
        };
        format_device(dev.as_ref(), &p, false).expect("mkfs");
        let fs =
            Filesystem::mount(dev.clone() as Arc<dyn BlockDevice>, options(unify)).expect("mount");
        Harness {
            dev,
            fs,
            model: Model::new(),
            durable: Model::new(),
            seed,
            step: 0,
            unify,
            trace: Default::default(),
        }
    }

    fn note(&mut self, what: String) {
        if self.trace.len() == 64 {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("{}: {what}", self.step));
    }

    fn fail(&self, what: &str) -> ! {
        let trace: Vec<&str> = self.trace.iter().map(String::as_str).collect();
        eprintln!("last operations:\n  {}", trace.join("\n  "));
        panic!(
            "seed {} step {}: {what}\nreplay: TUXFS_SEED={} cargo test -p tuxfs-tests --test model_ops",
            self.seed, self.step, self.seed
        )
    }

    /// The inode of `path` ("" is the root).
    fn ino(&self, path: &str) -> u64 {
        let mut ino = 1;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = match self.fs.lookup(ino, part.as_bytes()) {
                Ok(a) => a.ino,
                Err(e) => self.fail(&format!("lookup {path}: {e}")),
            };
        }
        ino
    }

    fn split(path: &str) -> (&str, &str) {
        match path.rfind('/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => ("", path),
        }
    }

    fn join(dir: &str, name: &str) -> String {
        if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        }
    }

    fn verify(&mut self, what: &str) {
        let got = snapshot(&self.fs)
            .unwrap_or_else(|e| self.fail(&format!("snapshot after {what}: {e}")));
        let want = self.model.visible();
        if got != want {
            self.fail(&format!("after {what}: {}", diff(&want, &got)));
        }
    }

    /// True when ENOSPC is the right answer: the space writers may still use is below what
    /// the request needs plus a margin for metadata.
    fn really_full(&self, need_bytes: u64) -> bool {
        let s = self.fs.statfs().expect("statfs");
        s.bavail * u64::from(s.bsize) < need_bytes + 64 * u64::from(s.bsize)
    }

    fn fsck(&self) {
        let r = check(
            self.dev.as_ref(),
            &Options {
                mode: Mode::Check,
                check_data: true,
            },
        )
        .expect("fsck runs");
        if r.exit_code() != 0 {
            self.fail(&format!("fsck: {:?}", r.findings));
        }
    }

    fn remount(&mut self, crash: bool) {
        if crash {
            self.model = self.durable.clone();
        } else {
            self.fs
                .unmount()
                .unwrap_or_else(|e| self.fail(&format!("unmount: {e}")));
            self.durable = self.model.clone();
        }
        let fresh = Filesystem::mount(
            self.dev.clone() as Arc<dyn BlockDevice>,
            options(self.unify),
        )
        .unwrap_or_else(|e| self.fail(&format!("mount: {e}")));
        drop(std::mem::replace(&mut self.fs, fresh));
        self.fsck();
        self.verify(if crash { "crash" } else { "remount" });
    }

    /// Runs one operation. An operation that meets ENOSPC while the open delta holds
    /// changes commits that delta and retries (`Filesystem::change`): a commit nobody
    /// synced, which a crash keeps. It happens before the operation changed anything, so the
    /// durable model becomes the model as it was before the operation. Cloning the model
    /// for every step would be slow; it is cloned only when the device is nearly full, and
    /// a space-pressure commit with more room than that fails the test (the threshold is
    /// then wrong, not the filesystem).
    fn step_with_space_pressure(&mut self, rng: &mut Rng) {
        let before = self.fs.stats().space_pressure_commits;
        let s = self.fs.statfs().expect("statfs");
        let near_full = s.bfree * u64::from(s.bsize) < SPACE_PRESSURE_BYTES;
        let pre = near_full.then(|| self.model.clone());
        let fs_before = Arc::as_ptr(&self.fs);
        self.op(rng);
        if !std::ptr::eq(fs_before, Arc::as_ptr(&self.fs)) {
            return; // remounted: counters restarted, the durable model is already set
        }
        let after = self.fs.stats().space_pressure_commits;
        if after != before {
            self.note(format!(
                "space-pressure commit ({} free bytes)",
                s.bfree * u64::from(s.bsize)
            ));
            match pre {
                Some(m) => self.durable = m,
                None => self.fail(&format!(
                    "a space-pressure commit with {} bytes free: raise SPACE_PRESSURE_BYTES",
                    s.bfree * u64::from(s.bsize)
                )),
            }
        }
    }

    fn op(&mut self, rng: &mut Rng) {
        let dirs = self.model.dirs();
        let dir = rng.pick(&dirs).clone();
        let name = *rng.pick(&NAMES);
        let path = Self::join(&dir, name);
        let exists = self.model.names.contains_key(&path);
        match rng.weighted(&[20, 25, 6, 8, 6, 5, 10, 5, 4, 4, 2, 2]) {
            0 => {
                let r = self.fs.create(self.ino(&dir), name.as_bytes(), 0o644, ME);
                match (r, exists) {
                    (Ok(a), false) => {
                        self.fs.release(a.ino).expect("release");
                        let id = self.model.new_file();
                        self.model.names.insert(path, Node::File(id));
                    }
                    (Err(e), true) if e.errno() == Errno::Exists => {}
                    (Err(e), false) if e.errno() == Errno::NoSpace && self.really_full(0) => {}
                    (r, _) => self.fail(&format!("create {path}: {r:?} (exists: {exists})")),
                }
            }
            1 | 2 => {
                let files = self.model.file_paths();
                if files.is_empty() {
                    return;
                }
                let f = rng.pick(&files).clone();
                let Some(Node::File(id)) = self.model.names.get(&f).cloned() else {
                    return;
                };
                let len = self.model.files[&id].len() as u64;
                let offset = rng.below(len + 9000);
                let len = rng.range(1, 20000) as usize;
                let data = rng.bytes(len);
                self.note(format!(
                    "write {f} (ino {}) at {offset}, {len} bytes",
                    self.ino(&f)
                ));
                match self.fs.write(self.ino(&f), offset, &data, false) {
                    Ok(_) => {}
                    Err(e)
                        if e.errno() == Errno::NoSpace
                            && self.really_full(data.len() as u64 * 17 / 16) =>
                    {
                        return;
                    }
                    Err(e) => self.fail(&format!("write {f}: {e}")),
                }
                let content = self.model.files.get_mut(&id).expect("file");
                let end = offset as usize + data.len();
                if content.len() < end {
                    content.resize(end, 0);
                }
                content[offset as usize..end].copy_from_slice(&data);
            }
            3 => {
                let files = self.model.file_paths();
                if files.is_empty() {
                    return;
                }
                let f = rng.pick(&files).clone();
                let Some(Node::File(id)) = self.model.names.get(&f).cloned() else {
                    return;
                };
                let size = rng.below(self.model.files[&id].len() as u64 * 2 + 5000);
                let set = SetAttr {
                    size: Some(size),
                    ..SetAttr::default()
                };
                self.note(format!("truncate {f} (ino {}) to {size}", self.ino(&f)));
                match self.fs.setattr(self.ino(&f), &set) {
                    Ok(_) => {}
                    Err(e) if e.errno() == Errno::NoSpace && self.really_full(0) => return,
                    Err(e) => self.fail(&format!("truncate {f}: {e}")),
                }
                self.model
                    .files
                    .get_mut(&id)
                    .expect("file")
                    .resize(size as usize, 0);
            }
            4 => {
                self.note(format!("unlink {path}"));
                let r = self.fs.unlink(self.ino(&dir), name.as_bytes());
                match (r, self.model.names.get(&path).cloned()) {
                    (Ok(()), Some(Node::File(_) | Node::Symlink(_))) => {
                        self.model.names.remove(&path);
                    }
                    (Err(e), None) if e.errno() == Errno::NoEntry => {}
                    (Err(e), Some(Node::Dir)) if e.errno() == Errno::IsDir => {}
                    (r, n) => self.fail(&format!("unlink {path}: {r:?} (model {n:?})")),
                }
            }
            5 => {
                let r = self.fs.mkdir(self.ino(&dir), name.as_bytes(), 0o755, ME);
                match (r, exists) {
                    (Ok(_), false) => {
                        self.model.names.insert(path, Node::Dir);
                    }
                    (Err(e), true) if e.errno() == Errno::Exists => {}
                    (Err(e), false) if e.errno() == Errno::NoSpace && self.really_full(0) => {}
                    (r, _) => self.fail(&format!("mkdir {path}: {r:?}")),
                }
            }
            6 => {
                let r = self.fs.rmdir(self.ino(&dir), name.as_bytes());
                let node = self.model.names.get(&path).cloned();
                let full = self.model.has_children(&path);
                match (r, node) {
                    (Ok(()), Some(Node::Dir)) if !full => {
                        self.model.names.remove(&path);
                    }
                    (Err(e), Some(Node::Dir)) if full && e.errno() == Errno::NotEmpty => {}
                    (Err(e), None) if e.errno() == Errno::NoEntry => {}
                    (Err(e), Some(_)) if e.errno() == Errno::NotDir => {}
                    (r, n) => self.fail(&format!(
                        "rmdir {path}: {r:?} (model {n:?}, children {full})"
                    )),
                }
            }
            7 => self.rename(rng, &path),
            8 => {
                let files = self.model.file_paths();
                if files.is_empty() {
                    return;
                }
                let f = rng.pick(&files).clone();
                let Some(Node::File(id)) = self.model.names.get(&f).cloned() else {
                    return;
                };
                let r = self.fs.link(self.ino(&f), self.ino(&dir), name.as_bytes());
                match (r, exists) {
                    (Ok(_), false) => {
                        self.model.names.insert(path, Node::File(id));
                    }
                    (Err(e), true) if e.errno() == Errno::Exists => {}
                    (r, _) => self.fail(&format!("link {f} -> {path}: {r:?}")),
                }
            }
            9 => {
                let target =
                    format!("target-{}", rng.below(1000)).repeat(rng.range(1, 40) as usize);
                let r = self
                    .fs
                    .symlink(self.ino(&dir), name.as_bytes(), target.as_bytes(), ME);
                match (r, exists) {
                    (Ok(_), false) => {
                        self.model
                            .names
                            .insert(path, Node::Symlink(target.into_bytes()));
                    }
                    (Err(e), true) if e.errno() == Errno::Exists => {}
                    (Err(e), false)
                        if e.errno() == Errno::NoSpace && self.really_full(target.len() as u64) => {
                    }
                    (r, _) => self.fail(&format!(
                        "symlink {path} ({} bytes): {r:?}; {:?}",
                        target.len(),
                        self.fs.statfs()
                    )),
                }
            }
            10 => {
                self.note("sync".into());
                self.fs
                    .sync()
                    .unwrap_or_else(|e| self.fail(&format!("sync: {e}")));
                self.durable = self.model.clone();
            }
            _ => {
                let crash = rng.chance(1, 2);
                self.note(format!("remount (crash: {crash})"));
                self.remount(crash)
            }
        }
    }

    fn rename(&mut self, rng: &mut Rng, to: &str) {
        let all: Vec<String> = self
            .model
            .names
            .keys()
            .filter(|p| *p != "lost+found")
            .cloned()
            .collect();
        if all.is_empty() {
            return;
        }
        let from = rng.pick(&all).clone();
        self.note(format!("rename {from} -> {to}"));
        let (fd, fname) = Self::split(&from);
        let (td, tname) = Self::split(to);
        let r = self.fs.rename(
            self.ino(fd),
            fname.as_bytes(),
            self.ino(td),
            tname.as_bytes(),
            RenameFlags::default(),
        );
        let src = self.model.names.get(&from).cloned();
        let dst = self.model.names.get(to).cloned();
        let into_self = to == from || to.starts_with(&format!("{from}/"));
        let expect: Result<(), Errno> = match (&src, &dst) {
            _ if from == to => Ok(()),
            (Some(Node::Dir), _) if into_self => Err(Errno::Invalid),
            (Some(Node::Dir), Some(Node::Dir)) if self.model.has_children(to) => {
                Err(Errno::NotEmpty)
            }
            (Some(Node::Dir), Some(Node::File(_) | Node::Symlink(_))) => Err(Errno::NotDir),
            (Some(Node::File(_) | Node::Symlink(_)), Some(Node::Dir)) => Err(Errno::IsDir),
            (Some(Node::File(a)), Some(Node::File(b))) if a == b => Ok(()),
            _ => Ok(()),
        };
        match (r.map_err(|e| e.errno()), expect) {
            (Ok(()), Ok(())) => {
                let same_file =
                    matches!((&src, &dst), (Some(Node::File(a)), Some(Node::File(b))) if a == b);
                if from != to && !same_file {
                    self.model.names.remove(to);
                    self.model.rename(&from, to);
                }
            }
            (Err(a), Err(b)) if a == b => {}
            (got, want) => self.fail(&format!(
                "rename {from} -> {to}: got {got:?}, model says {want:?}"
            )),
        }
    }
}

fn run(seed: u64, ops: u64, block_size: u32, unify: u64) {
    println!("model_ops: seed={seed} ops={ops} block_size={block_size} unify_log_blocks={unify}");
    let mut h = Harness::new(seed, block_size, unify);
    let mut rng = Rng::new(seed);
    for step in 0..ops {
        h.step = step;
        h.step_with_space_pressure(&mut rng);
    }
    println!(
        "leaf evictions since the last mount: {}",
        h.fs.stats().leaf_evictions
    );
    h.remount(false);
    h.remount(true);
}

fn ops() -> u64 {
    std::env::var("TUXFS_MODEL_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}

#[test]
fn fixed_seeds() {
    for (seed, bs, unify) in [(1, 4096, 3), (2, 512, 256), (3, 1024, 1), (4, 4096, 256)] {
        run(seed, ops(), bs, unify);
    }
}

#[test]
fn random_seed() {
    let seed = seed_from_env().unwrap_or_else(tuxfs_tests::rng::clock_seed);
    run(seed, ops(), 4096, 1 + seed % 8);
}
