//! The crash-injection harness: proves that a crash at any instant loses nothing an fsync
//! acknowledged and never leaves an inconsistent image (docs/FORMAT.md §6, DESIGN.md
//! "Testing that matches the promise").
//!
//! A seeded workload runs on the engine over a [`RecordingDevice`], which logs every write
//! and flush. Only explicit `sync`/`fsync` calls commit (commit interval one hour, no dirty
//! limit), and mount itself commits and unifies, so every delta boundary is a call that
//! returned: the driver records the event count at that instant and the model's visible
//! tree. Then crash images are built from the log:
//!
//! - every flush point (the disk holds exactly the writes before it), and the base image;
//! - points between flushes, including every instant an fsync returned with writes still
//!   unflushed: a random subset of the unflushed writes lands (independent coin flips, an
//!   in-order prefix, all but one, or none), and optionally one more write is torn after a
//!   random number of 512-byte sectors. That is what a volatile disk cache may do.
//!
//! **Invariants checked, per crash state.**
//! 1. fsck (`Mode::Check`, data checksums on) on the raw image does not panic, runs, and
//!    finds nothing but a damaged superblock slot (see below).
//! 2. The image mounts read-write (recovery, orphan cleanup, a unify), the visible tree can
//!    be read whole (names, contents, link counts, symlink targets, file xattrs), and it
//!    unmounts.
//! 3. fsck on the unmounted image exits 0.
//!    Every fourth state also lives on before that unmount: a file is created and fsynced
//!    on the recovered filesystem, it crashes right after the fsync, and the next mount must
//!    show the recovered tree plus that file (a writer after recovery must never meet the
//!    stale log blocks of a delta recovery dropped, docs/FORMAT.md §6).
//! 4. The visible tree equals the model at a delta boundary that is not older than the
//!    acknowledged one (the last boundary whose call returned at or before the crash
//!    point). Only the commit in flight at the crash point can have reached the disk beyond
//!    that, so the allowed boundaries are the acknowledged one and the next.
//!
//! **fsck before mount: what is allowed.** A crash while unify writes the superblock can
//! leave a torn slot; the other slot still holds the previous superblock, recovery picks it,
//! and the first unify after mount rewrites the torn slot (it is the slot the next sequence
//! number lands in). So "superblock slot N is damaged" on blocks 0 and 1 is expected and
//! allowed before mount, and must be gone after the unmount. Everything else is a failure
//! before mount too: a crash image is what any tool (fsck run at boot, a read-only mount)
//! sees first, and it must already be consistent: a log that ends early is the end of the
//! log, an unproven last delta is dropped, orphans are legal. An operational error (no valid
//! superblock) is a failure: only one slot is ever written at a time.
//!
//! **Replay.** Everything the harness chooses derives from the case seed: image geometry,
//! the workload, and the crash plan. Failures print a replay command that re-records the
//! case and checks the one state. The engine stamps wall-clock times into inodes and the
//! superblock, so replayed images differ from the original in those bytes only; the event
//! shape (every write's offset and length, every flush, in order) is deterministic, and the
//! replay command carries its fingerprint and refuses to check against a different shape.
//!
//! **Concurrent writers.** The `concurrent` workload runs several threads at once, each in
//! its own subtree (crate::concurrent). Its crash verdict is per thread: the recovered
//! subtree must be the thread's model after some operation no older than its last
//! acknowledged fsync or sync and not begun after the crash point; the shared directory
//! must hold files with one link. Its interleaving is not reproducible from the seed: a
//! failure's replay command re-records the case and checks all of its states.
//!
//! **Not covered.** Reordering across a flush (a device that lies about flush), corrupted or
//! misdirected writes (the decoder fuzzer and fault device cover those), the writeback
//! thread's age and dirty-limit commits
//! (disabled here so that boundaries are explicit), xattrs on directories and symlinks.

mod workloads;

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::dev::record::{Event, RecordingDevice, SECTOR_BYTES, TornWrite};
use tuxfs_engine::format::inode::Timestamp;
use tuxfs_engine::fs::{Caller, Filesystem, MountOptions};
use tuxfs_engine::mkfs::{MkfsParams, format_device};
use tuxfs_fsck::{Finding, Mode, Options, check};

use crate::concurrent::{self, History, Worker, concurrent_verdict};
use crate::model::{Shown, Visible, diff, snapshot};
use crate::rng::{Rng, splitmix64};
use workloads::Driver;

/// The workloads, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Creates, writes, truncates, renames, links, unlinks (also of open files), xattrs,
    /// directories, symlinks, fsyncs at random.
    Mixed,
    /// Append and fsync loops on a few files.
    Append,
    /// Many creates, renames and unlinks in a few directories.
    Dirs,
    /// Large writes and truncates of one or two files.
    Bigfile,
    /// Several threads at once, each writing, truncating, renaming and fsyncing in its own
    /// subtree and racing on names in a shared directory (crate::concurrent): the crash
    /// states cover interleaved commits and group commits of several fsyncs.
    Concurrent,
}

impl Workload {
    pub const ALL: [Workload; 5] = [
        Workload::Mixed,
        Workload::Append,
        Workload::Dirs,
        Workload::Bigfile,
        Workload::Concurrent,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Mixed => "mixed",
            Workload::Append => "append",
            Workload::Dirs => "dirs",
            Workload::Bigfile => "bigfile",
            Workload::Concurrent => "concurrent",
        }
    }

    pub fn parse(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }

    /// True when the seed alone fixes the event log, so one crash state replays exactly.
    /// The concurrent workload's interleaving is the scheduler's: its seed fixes each
    /// thread's operations, and a replay re-records the case and checks all its states.
    pub fn deterministic(self) -> bool {
        self != Workload::Concurrent
    }
}

/// One recorded workload run: a seed, a workload, and whether commits are broken on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    pub seed: u64,
    pub workload: Workload,
    /// Record with `MountOptions::debug_ack_before_data` (the harness must then fail).
    pub debug_ack_before_data: bool,
}

/// Image geometry and workload length, derived from the case seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub block_size: u32,
    pub block_count: u64,
    pub unify_log_blocks: u64,
    pub steps: u64,
}

impl Params {
    pub fn for_case(case: &Case) -> Params {
        let mut rng = Rng::stream(case.seed, 0);
        let block_size = *rng.pick(&[512u32, 1024, 4096]);
        let unify_log_blocks = *rng.pick(&[1u64, 3, 256]);
        let (block_count, steps) = match case.workload {
            Workload::Mixed => (
                if block_size == 4096 { 2048 } else { 4096 },
                rng.range(150, 300),
            ),
            Workload::Append => (2048, rng.range(60, 150)),
            Workload::Dirs => (2048, rng.range(150, 300)),
            Workload::Bigfile => (
                if block_size == 4096 { 2048 } else { 8192 },
                rng.range(25, 50),
            ),
            // Steps per thread.
            Workload::Concurrent => (
                if block_size == 4096 { 2048 } else { 4096 },
                rng.range(40, 90),
            ),
        };
        Params {
            block_size,
            block_count,
            unify_log_blocks,
            steps,
        }
    }

    fn image_bytes(&self) -> u64 {
        self.block_count * u64::from(self.block_size)
    }
}

/// The instant a sync or fsync returned (or mount finished): `events` events were logged,
/// and the model showed `visible`.
#[derive(Debug, Clone)]
pub struct Boundary {
    pub events: usize,
    pub visible: Visible,
    pub what: String,
}

/// One crash state: the disk after a crash at event count `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashPoint {
    pub at: usize,
    /// True when `at` is a flush point (or 0): every write before it landed.
    pub flush: bool,
    /// Unflushed writes (event indices) that landed.
    pub landed: Vec<usize>,
    /// One more unflushed write that landed only in part.
    pub torn: Option<TornWrite>,
}

impl fmt::Display for CrashPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.flush {
            return write!(
                f,
                "event {} (a flush point: every earlier write landed)",
                self.at
            );
        }
        write!(
            f,
            "event {}, landed unflushed writes {:?}",
            self.at, self.landed
        )?;
        match self.torn {
            Some(t) => write!(f, ", torn write {} after {} sectors", t.event, t.sectors),
            None => write!(f, ", no torn write"),
        }
    }
}

/// What went wrong, with everything needed to replay it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub case: Case,
    pub params: Params,
    /// Index of the state in the case's crash plan (None: the recording itself failed).
    pub state: Option<usize>,
    pub point: Option<CrashPoint>,
    /// The unflushed writes at the crash point (what `landed` was chosen from).
    pub unflushed: Vec<usize>,
    pub shape: u64,
    pub what: String,
}

impl Failure {
    /// The command that re-runs exactly this state.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!(
            "cargo run --release -p tuxfs-tests --bin tuxfs-crashtest -- --seed {} --workload {}",
            self.case.seed,
            self.case.workload.name()
        );
        if let Some(state) = self.state
            && self.case.workload.deterministic()
        {
            cmd += &format!(" --state {state} --shape {:#018x}", self.shape);
        }
        if self.case.debug_ack_before_data {
            cmd += " --debug-ack-before-data";
        }
        cmd
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.params;
        writeln!(f, "CRASH FAILURE: {}", self.what)?;
        writeln!(
            f,
            "  seed {} workload {} debug_ack_before_data {}",
            self.case.seed,
            self.case.workload.name(),
            self.case.debug_ack_before_data
        )?;
        writeln!(
            f,
            "  block_size {} block_count {} unify_log_blocks {} steps {} event shape {:#018x}",
            p.block_size, p.block_count, p.unify_log_blocks, p.steps, self.shape
        )?;
        if let (Some(state), Some(point)) = (self.state, &self.point) {
            writeln!(f, "  state {state}: crash at {point}")?;
            if !point.flush {
                writeln!(
                    f,
                    "  unflushed writes at the crash point: {:?}",
                    self.unflushed
                )?;
            }
        }
        write!(f, "  replay: {}", self.replay_command())
    }
}

/// Counters of a run.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub cases: u64,
    pub states: u64,
    pub flush_states: u64,
    pub subset_states: u64,
    pub torn_states: u64,
    /// States that recovered to the boundary in flight (beyond the acknowledged one).
    pub in_flight_recovered: u64,
    /// States whose raw image had a damaged superblock slot (allowed, repaired by mount).
    pub damaged_slot_states: u64,
    /// States that also lived on: a sync after recovery, a crash, and a mount again.
    pub second_lives: u64,
    pub events: u64,
    pub elapsed: Duration,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.cases += o.cases;
        self.states += o.states;
        self.flush_states += o.flush_states;
        self.subset_states += o.subset_states;
        self.torn_states += o.torn_states;
        self.in_flight_recovered += o.in_flight_recovered;
        self.damaged_slot_states += o.damaged_slot_states;
        self.second_lives += o.second_lives;
        self.events += o.events;
    }

    pub fn states_per_second(&self) -> f64 {
        self.states as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} states in {:.1} s ({:.0} states/s) from {} cases ({} events): {} flush points, \
             {} subsets, {} with a torn write; {} recovered the delta in flight, {} had a \
             damaged superblock slot before mount, {} lived on after recovery",
            self.states,
            self.elapsed.as_secs_f64(),
            self.states_per_second(),
            self.cases,
            self.events,
            self.flush_states,
            self.subset_states,
            self.torn_states,
            self.in_flight_recovered,
            self.damaged_slot_states,
            self.second_lives
        )
    }
}

/// Only explicit syncs commit; a small `unify_log_blocks` makes unify run often.
fn mount_options(p: &Params, debug_ack_before_data: bool) -> MountOptions {
    MountOptions {
        commit_interval: Duration::from_secs(3600),
        dirty_limit_bytes: u64::MAX,
        unify_log_blocks: p.unify_log_blocks,
        debug_ack_before_data,
        ..MountOptions::default()
    }
}

/// A fingerprint of the event log's shape: kinds, offsets and lengths, not contents.
fn shape_of(events: &[Event]) -> u64 {
    let mut h = 0x7475_7866_735f_6372u64;
    let mut mix = |v: u64| {
        let mut x = h ^ v;
        h = splitmix64(&mut x);
    };
    for e in events {
        match e {
            Event::Write { offset, data } => {
                mix(1);
                mix(*offset);
                mix(data.len() as u64);
            }
            Event::Flush => mix(2),
        }
    }
    h
}

/// A recorded case: the device log and the boundaries.
#[derive(Debug)]
pub struct Recording {
    pub case: Case,
    pub params: Params,
    pub dev: Arc<RecordingDevice>,
    pub boundaries: Vec<Boundary>,
    pub shape: u64,
    /// The concurrent workload: each thread's history (its subtree's verdict replaces the
    /// whole tree's boundaries, which then mark only acknowledgement instants).
    pub threads: Vec<History>,
}

/// Runs the case's workload on a fresh image and records it.
pub fn record(case: &Case) -> Result<Recording, Box<Failure>> {
    let params = Params::for_case(case);
    let fail = |what: String| {
        Box::new(Failure {
            case: *case,
            params,
            state: None,
            point: None,
            unflushed: Vec::new(),
            shape: 0,
            what,
        })
    };
    let mem = MemDevice::new(params.image_bytes() as usize);
    let mut ids = Rng::stream(case.seed, 3);
    let mkfs = MkfsParams {
        block_size: params.block_size,
        block_count: params.block_count,
        label: String::new(),
        uuid: ids.bytes(16).try_into().map_err(|_| fail("uuid".into()))?,
        hash_seed: ids.bytes(16).try_into().map_err(|_| fail("hash".into()))?,
        now: Timestamp::default(),
        uid: 0,
        gid: 0,
    };
    format_device(&mem, &mkfs, false).map_err(|e| fail(format!("mkfs: {e}")))?;
    let dev = Arc::new(RecordingDevice::new(mem.snapshot()));
    let opts = mount_options(&params, case.debug_ack_before_data);
    let fs = Filesystem::mount(dev.clone() as Arc<dyn BlockDevice>, opts)
        .map_err(|e| fail(format!("mount of the fresh image: {e}")))?;
    let budget = params.image_bytes() / 4;
    if case.workload == Workload::Concurrent {
        return record_concurrent(case, params, fs, dev, budget).map_err(fail);
    }
    let mut d = Driver::new(fs, dev.clone(), Rng::stream(case.seed, 1), budget);
    // The fresh image (event 0) shows what the mount after it shows.
    d.boundaries.push(Boundary {
        events: 0,
        visible: d.model.visible(),
        what: "mkfs".into(),
    });
    d.boundary("mount");
    let run = (|| {
        for _ in 0..params.steps {
            d.step(case.workload, params.block_size)?;
        }
        d.fsync_some()?;
        d.release_all()?;
        d.fs.unmount().map_err(|e| format!("unmount: {e}"))?;
        d.boundary("unmount");
        Ok::<(), String>(())
    })();
    run.map_err(|what| fail(format!("workload: {what}")))?;
    let boundaries = std::mem::take(&mut d.boundaries);
    drop(d);
    Ok(Recording::new(case, params, dev, boundaries, Vec::new()))
}

/// Records the concurrent workload: 2 to 4 threads of `params.steps` operations each, all
/// at once; every fsync or sync a thread saw return is an acknowledgement instant.
fn record_concurrent(
    case: &Case,
    params: Params,
    fs: Arc<Filesystem>,
    dev: Arc<RecordingDevice>,
    budget: u64,
) -> Result<Recording, String> {
    let threads = Rng::stream(case.seed, 4).range(2, 5) as usize;
    concurrent::setup(&fs, threads)?;
    let setup_events = dev.event_count();
    let mut workers = Vec::with_capacity(threads);
    for t in 0..threads {
        let rng = Rng::stream(case.seed, 10 + t as u64);
        let mut w = Worker::new(t, fs.clone(), dev.clone(), rng, budget / threads as u64)?;
        w.acknowledge_setup(setup_events);
        workers.push(w);
    }
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let runs: Vec<_> = workers
            .iter_mut()
            .map(|w| {
                s.spawn(move || {
                    for _ in 0..params.steps {
                        w.step()?;
                    }
                    Ok(())
                })
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().unwrap_or_else(|p| Err(panic_text(p.as_ref()))))
            .collect()
    });
    for (t, r) in results.into_iter().enumerate() {
        r.map_err(|e| format!("thread {t}: {e}"))?;
    }
    fs.unmount().map_err(|e| format!("unmount: {e}"))?;
    let end = dev.event_count();
    drop(fs);
    let mut instants: Vec<usize> = workers
        .iter()
        .flat_map(|w| w.history.acks.iter().map(|a| a.0))
        .chain([0, setup_events, end])
        .collect();
    instants.sort_unstable();
    instants.dedup();
    let boundaries = instants
        .into_iter()
        .map(|events| Boundary {
            events,
            visible: Visible::new(),
            what: "an acknowledgement".into(),
        })
        .collect();
    let threads = workers.into_iter().map(|w| w.history).collect();
    Ok(Recording::new(case, params, dev, boundaries, threads))
}

/// How a state recovered, when it passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The acknowledged state.
    Acknowledged,
    /// The state of the commit in flight at the crash (it was durable, not yet returned).
    InFlight,
}

/// fsck's verdict on a raw crash image that is allowed: a superblock slot torn by a crash
/// during unify (the other slot is intact; mount rewrites the torn one).
fn allowed_before_mount(f: &Finding) -> bool {
    f.block.is_some_and(|b| b < 2) && f.what.starts_with("superblock slot")
}

fn fsck(dev: &dyn BlockDevice) -> Result<Vec<Finding>, String> {
    let opts = Options {
        mode: Mode::Check,
        check_data: true,
    };
    check(dev, &opts)
        .map(|r| r.findings)
        .map_err(|e| format!("fsck could not run: {e}"))
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

impl Recording {
    /// A finished recording (the event log's shape is taken now).
    fn new(
        case: &Case,
        params: Params,
        dev: Arc<RecordingDevice>,
        boundaries: Vec<Boundary>,
        threads: Vec<History>,
    ) -> Recording {
        let shape = shape_of(&dev.events());
        Recording {
            case: *case,
            params,
            dev,
            boundaries,
            shape,
            threads,
        }
    }

    /// The crash states to check, in a fixed order derived from the seed: the base image and
    /// every flush point, then `extra` random states per flush interval plus two at every
    /// instant a call returned with writes unflushed.
    pub fn plan(&self, extra: usize) -> Vec<CrashPoint> {
        let events = self.dev.events();
        let mut rng = Rng::stream(self.case.seed, 2);
        let mut points = vec![CrashPoint {
            at: 0,
            flush: true,
            landed: Vec::new(),
            torn: None,
        }];
        let flushes = self.dev.flush_points();
        points.extend(flushes.iter().map(|&at| CrashPoint {
            at,
            flush: true,
            landed: Vec::new(),
            torn: None,
        }));
        // Interval i: the writes after flush point `start` up to the next flush event.
        let starts = std::iter::once(0).chain(flushes.iter().copied());
        let ends = flushes
            .iter()
            .map(|&fp| fp - 1)
            .chain(std::iter::once(events.len()));
        for (start, end) in starts.zip(ends) {
            let Some(first) = (start..end).find(|&i| matches!(events[i], Event::Write { .. }))
            else {
                continue;
            };
            let acks = self
                .boundaries
                .iter()
                .map(|b| b.events)
                .filter(|&e| e > first && e <= end);
            let mut ats: Vec<usize> = acks.flat_map(|e| [e, e]).collect();
            ats.extend((0..extra).map(|_| rng.range(first as u64 + 1, end as u64 + 1) as usize));
            for at in ats {
                points.push(self.subset_point(at, &events, &mut rng));
            }
        }
        points
    }

    fn subset_point(&self, at: usize, events: &[Event], rng: &mut Rng) -> CrashPoint {
        let unflushed = self.dev.writes_since_last_flush(at);
        let n = unflushed.len();
        let landed: Vec<usize> = match rng.below(5) {
            0 => {
                let k = rng.below_usize(n + 1);
                unflushed[..k].to_vec()
            }
            1 => {
                let skip = rng.below_usize(n);
                (0..n)
                    .filter(|&i| i != skip)
                    .map(|i| unflushed[i])
                    .collect()
            }
            2 => Vec::new(),
            _ => {
                let p = rng.range(1, 4);
                unflushed
                    .iter()
                    .copied()
                    .filter(|_| rng.chance(p, 4))
                    .collect()
            }
        };
        let mut torn = None;
        if rng.chance(1, 3) {
            let candidates: Vec<(usize, usize)> = unflushed
                .iter()
                .filter(|i| !landed.contains(i))
                .filter_map(|&i| match &events[i] {
                    Event::Write { data, .. } if data.len() > SECTOR_BYTES => {
                        Some((i, data.len().div_ceil(SECTOR_BYTES)))
                    }
                    _ => None,
                })
                .collect();
            if !candidates.is_empty() {
                let (event, sectors) = *rng.pick(&candidates);
                torn = Some(TornWrite {
                    event,
                    sectors: rng.range(1, sectors as u64) as usize,
                });
            }
        }
        CrashPoint {
            at,
            flush: false,
            landed,
            torn,
        }
    }

    /// Life after the crash: on the recovered filesystem, create and fsync a file, crash
    /// again right after the fsync (drop without unmount), and mount once more: the tree must
    /// be the recovered one plus that file. This is the case FORMAT.md §6 guards against,
    /// a new writer whose chain could meet stale log blocks of a delta recovery dropped.
    fn live_on(
        &self,
        fs: Arc<Filesystem>,
        dev: &Arc<MemDevice>,
        recovered: &Visible,
    ) -> Result<Arc<Filesystem>, String> {
        let name = b"zz-after-crash";
        let data: Vec<u8> = (0..self.params.block_size * 2 + 100)
            .map(|i| (i % 251) as u8)
            .collect();
        let attr = fs
            .create(1, name, 0o644, Caller::default())
            .map_err(|e| format!("after recovery: create: {e}"))?;
        fs.write(attr.ino, 0, &data, false)
            .map_err(|e| format!("after recovery: write: {e}"))?;
        fs.fsync(attr.ino, false)
            .map_err(|e| format!("after recovery: fsync: {e}"))?;
        fs.release(attr.ino)
            .map_err(|e| format!("after recovery: release: {e}"))?;
        drop(fs);
        let opts = mount_options(&self.params, false);
        let fs = Filesystem::mount(dev.clone() as Arc<dyn BlockDevice>, opts)
            .map_err(|e| format!("mount after a crash after recovery: {e}"))?;
        let got = snapshot(&fs).map_err(|e| format!("reading the tree (second life): {e}"))?;
        let mut want = recovered.clone();
        want.insert(
            String::from_utf8_lossy(name).into_owned(),
            Shown::File {
                data,
                nlink: 1,
                xattrs: Default::default(),
            },
        );
        if got != want {
            return Err(format!(
                "lost a sync made after recovery: {}",
                diff(&want, &got)
            ));
        }
        Ok(fs)
    }

    /// Index of the acknowledged boundary at event count `at`.
    fn acknowledged(&self, at: usize) -> usize {
        self.boundaries
            .partition_point(|b| b.events <= at)
            .saturating_sub(1)
    }

    /// Checks crash state `index` of the plan, which is `point`.
    pub fn check(
        &self,
        index: usize,
        point: &CrashPoint,
        stats: &mut Stats,
    ) -> Result<Outcome, Box<Failure>> {
        let fail = |what: String| {
            Box::new(Failure {
                case: self.case,
                params: self.params,
                state: Some(index),
                point: Some(point.clone()),
                unflushed: if point.flush {
                    Vec::new()
                } else {
                    self.dev.writes_since_last_flush(point.at)
                },
                shape: self.shape,
                what,
            })
        };
        let image = if point.flush {
            self.dev.image_at(point.at)
        } else {
            self.dev
                .crash_image(point.at, &point.landed, point.torn)
                .map_err(|e| fail(format!("building the crash image: {e}")))?
        };
        let dev = Arc::new(MemDevice::from_bytes(image));
        let second_life = index % 4 == 1;
        let verdict = catch_unwind(AssertUnwindSafe(|| {
            self.check_image(&dev, point.at, second_life, stats)
        }));
        match verdict {
            Ok(r) => r.map_err(fail),
            Err(p) => Err(fail(format!("panic: {}", panic_text(p.as_ref())))),
        }
    }

    fn check_image(
        &self,
        dev: &Arc<MemDevice>,
        at: usize,
        second_life: bool,
        stats: &mut Stats,
    ) -> Result<Outcome, String> {
        let raw = fsck(dev.as_ref()).map_err(|e| format!("before mount: {e}"))?;
        let (allowed, bad): (Vec<Finding>, Vec<Finding>) =
            raw.into_iter().partition(allowed_before_mount);
        if !bad.is_empty() {
            return Err(format!("fsck before mount: {bad:?}"));
        }
        if !allowed.is_empty() {
            stats.damaged_slot_states += 1;
        }
        let opts = mount_options(&self.params, false);
        let fs = Filesystem::mount(dev.clone() as Arc<dyn BlockDevice>, opts)
            .map_err(|e| format!("mount: {e}"))?;
        let got = snapshot(&fs).map_err(|e| format!("reading the tree after mount: {e}"))?;
        let fs = if second_life {
            stats.second_lives += 1;
            self.live_on(fs, dev, &got)?
        } else {
            fs
        };
        fs.unmount().map_err(|e| format!("unmount: {e}"))?;
        drop(fs);
        let after = fsck(dev.as_ref()).map_err(|e| format!("after unmount: {e}"))?;
        if !after.is_empty() {
            return Err(format!("fsck after mount and unmount: {after:?}"));
        }
        if !self.threads.is_empty() {
            let beyond = concurrent_verdict(&got, &self.threads, at)?;
            return Ok(if beyond {
                Outcome::InFlight
            } else {
                Outcome::Acknowledged
            });
        }
        let ack = self.acknowledged(at);
        let acked = &self.boundaries[ack];
        if got == acked.visible {
            return Ok(Outcome::Acknowledged);
        }
        if let Some(next) = self.boundaries.get(ack + 1)
            && got == next.visible
        {
            return Ok(Outcome::InFlight);
        }
        let older = self.boundaries[..ack]
            .iter()
            .rposition(|b| b.visible == got)
            .map(|k| {
                let b = &self.boundaries[k];
                format!(
                    "LOST AN ACKNOWLEDGED SYNC: the tree is that of boundary {k} ({} at event {})",
                    b.what, b.events
                )
            })
            .unwrap_or_else(|| "the tree matches no delta boundary".into());
        Err(format!(
            "{older}; acknowledged is boundary {ack} ({} returned at event {}); \
             differences from it: {}",
            acked.what,
            acked.events,
            diff(&acked.visible, &got)
        ))
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Seed of the first round; later rounds derive theirs from it.
    pub seed: u64,
    pub workloads: Vec<Workload>,
    /// Stop after this many states.
    pub states: u64,
    /// Stop after this long (checked between states).
    pub time_limit: Option<Duration>,
    /// Threads checking cases in parallel.
    pub jobs: usize,
    pub debug_ack_before_data: bool,
    /// Random states per flush interval, beyond flush points and acknowledgement instants.
    pub extra_per_interval: usize,
    /// Check only this state of the first case (replay).
    pub only_state: Option<usize>,
    /// With `only_state`: the event shape the state was found on.
    pub expect_shape: Option<u64>,
    /// Print a line per case.
    pub verbose: bool,
    /// Print the running count this often.
    pub progress: Option<Duration>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            seed: 1,
            workloads: Workload::ALL.to_vec(),
            states: 10_000,
            time_limit: None,
            jobs: 1,
            debug_ack_before_data: false,
            extra_per_interval: 2,
            only_state: None,
            expect_shape: None,
            verbose: false,
            progress: None,
        }
    }
}

/// The seed of round `round` of a run with base seed `seed` (round 0 uses `seed` itself,
/// so a failure's seed replays as round 0).
pub fn case_seed(seed: u64, round: u64) -> u64 {
    if round == 0 {
        seed
    } else {
        Rng::stream(seed, round).next_u64()
    }
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Summary {
    pub stats: Stats,
    pub failure: Option<Failure>,
}

/// Records cases round by round (every workload once per round) and checks their crash
/// states until `states` are checked, the time is up, or a state fails.
pub fn run(opts: &RunOptions) -> Summary {
    let started = Instant::now();
    let next_case = AtomicU64::new(0);
    let checked = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<Failure>> = Mutex::new(None);
    let total = Mutex::new(Stats::default());
    let out_of_budget = || {
        checked.load(Ordering::Relaxed) >= opts.states
            || opts.time_limit.is_some_and(|t| started.elapsed() >= t)
    };
    let worker = || {
        let mut stats = Stats::default();
        while !stop.load(Ordering::Relaxed) && !out_of_budget() {
            let c = next_case.fetch_add(1, Ordering::Relaxed);
            let w = opts.workloads.len() as u64;
            if opts.only_state.is_some() && c > 0 {
                break;
            }
            let case = Case {
                seed: case_seed(opts.seed, c / w),
                workload: opts.workloads[(c % w) as usize],
                debug_ack_before_data: opts.debug_ack_before_data,
            };
            if let Err(f) = run_case(&case, opts, &checked, &stop, &out_of_budget, &mut stats) {
                stop.store(true, Ordering::Relaxed);
                let mut slot = failure.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert(*f);
            }
        }
        total.lock().unwrap_or_else(|p| p.into_inner()).add(&stats);
    };
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..opts.jobs.max(1)).map(|_| s.spawn(worker)).collect();
        if let Some(every) = opts.progress {
            let (done, checked) = (&done, &checked);
            s.spawn(move || {
                let mut last = Instant::now();
                while !done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    if last.elapsed() >= every {
                        last = Instant::now();
                        let n = checked.load(Ordering::Relaxed);
                        let secs = started.elapsed().as_secs_f64();
                        println!("  {n} states, {secs:.0} s, {:.0} states/s", n as f64 / secs);
                    }
                }
            });
        }
        for w in workers {
            let _ = w.join();
        }
        done.store(true, Ordering::Relaxed);
    });
    let mut stats = total.into_inner().unwrap_or_else(|p| p.into_inner());
    stats.elapsed = started.elapsed();
    Summary {
        stats,
        failure: failure.into_inner().unwrap_or_else(|p| p.into_inner()),
    }
}

fn run_case(
    case: &Case,
    opts: &RunOptions,
    checked: &AtomicU64,
    stop: &AtomicBool,
    out_of_budget: &dyn Fn() -> bool,
    stats: &mut Stats,
) -> Result<(), Box<Failure>> {
    let rec = record(case)?;
    stats.cases += 1;
    stats.events += rec.dev.event_count() as u64;
    let plan = rec.plan(opts.extra_per_interval);
    if opts.verbose {
        println!(
            "case seed {} {}: {:?}, {} events, {} boundaries, {} states",
            case.seed,
            case.workload.name(),
            rec.params,
            rec.dev.event_count(),
            rec.boundaries.len(),
            plan.len()
        );
    }
    let chosen: Vec<usize> = match opts.only_state {
        Some(j) => {
            if let Some(want) = opts.expect_shape
                && want != rec.shape
            {
                let mut f = Failure {
                    state: Some(j),
                    ..record_failure(&rec, "replay recorded a different event shape")
                };
                f.what += &format!(" ({:#018x}, expected {want:#018x})", rec.shape);
                return Err(Box::new(f));
            }
            let Some(point) = plan.get(j) else {
                return Err(Box::new(record_failure(
                    &rec,
                    &format!("the plan has {} states, no state {j}", plan.len()),
                )));
            };
            println!("replaying state {j}: crash at {point}");
            vec![j]
        }
        None => (0..plan.len()).collect(),
    };
    for j in chosen {
        if stop.load(Ordering::Relaxed) || (opts.only_state.is_none() && out_of_budget()) {
            break;
        }
        let point = &plan[j];
        let outcome = rec.check(j, point, stats)?;
        checked.fetch_add(1, Ordering::Relaxed);
        stats.states += 1;
        match (point.flush, point.torn.is_some()) {
            (true, _) => stats.flush_states += 1,
            (false, false) => stats.subset_states += 1,
            (false, true) => stats.torn_states += 1,
        }
        if outcome == Outcome::InFlight {
            stats.in_flight_recovered += 1;
        }
    }
    Ok(())
}

fn record_failure(rec: &Recording, what: &str) -> Failure {
    Failure {
        case: rec.case,
        params: rec.params,
        state: None,
        point: None,
        unflushed: Vec::new(),
        shape: rec.shape,
        what: what.to_string(),
    }
}
