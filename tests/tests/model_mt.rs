//! Story: four to eight threads run seeded random operations on one mounted filesystem at
//! the same time: create, write, pwrite, append, truncate, fallocate, rename, unlink, mkdir,
//! rmdir, xattrs, fsync and sync, each thread in its own subtree with its own model, and all
//! of them racing on the same names in a shared directory (tuxfs_tests::concurrent). The
//! writeback thread commits on age and writers commit at a small dirty limit meanwhile, so
//! commits, group commits and forks interleave with everything.
//!
//! At quiescent points (every thread joined) the tree must be the union of the threads'
//! models, and the shared directory must hold exactly the names the threads' successful
//! calls leave there. Then the filesystem is crashed at many points of the recorded device
//! log (flush points, and subsets of the writes in flight): fsck must pass before and after
//! recovery, and every thread's subtree must be its model after some operation no older
//! than its last acknowledged fsync or sync.
//!
//! Seeded: the thread count, geometry and each thread's seed derive from the run seed,
//! printed on failure. The interleaving is the scheduler's, so a replay runs the same
//! operations per thread, not the same schedule. Replay:
//! `TUXFS_SEED=<seed> cargo test -p tuxfs-tests --test model_mt`.
//! Longer: `TUXFS_MODEL_MT_OPS=<operations per thread>` (default 200).

use std::sync::Arc;
use std::time::Duration;

use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::dev::record::RecordingDevice;
use tuxfs_engine::fs::{Filesystem, MountOptions};
use tuxfs_fsck::{Mode, Options, check};
use tuxfs_tests::concurrent::{self, Worker, check_quiescent, concurrent_verdict};
use tuxfs_tests::fixture::{mem_device_with, mkfs_params};
use tuxfs_tests::model::snapshot;
use tuxfs_tests::rng::{Rng, seed_from_env_or_clock};

/// Operations per thread in the default run.
const DEFAULT_OPS: u64 = 200;

/// Operations per thread between quiescent points.
const PHASE_OPS: u64 = 50;

/// Crash states checked at the end at least (flush points first, then subsets of writes in
/// flight); longer runs check one per five operations per thread.
const CRASH_STATES_MIN: usize = 40;

/// Commits happen on their own too: on age and past a small dirty limit.
fn options() -> MountOptions {
    MountOptions {
        commit_interval: Duration::from_millis(20),
        dirty_limit_bytes: 256 << 10,
        unify_log_blocks: 4,
        ..MountOptions::default()
    }
}

fn ops_per_thread() -> u64 {
    std::env::var("TUXFS_MODEL_MT_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_OPS)
}

struct Run {
    seed: u64,
    threads: usize,
}

impl Run {
    fn fail(&self, what: &str) -> ! {
        let seeds: Vec<String> = (0..self.threads)
            .map(|t| format!("thread {t}: stream {} of the seed", 10 + t))
            .collect();
        panic!(
            "seed {} ({} threads; {}): {what}\nreplay: TUXFS_SEED={} cargo test -p tuxfs-tests --test model_mt",
            self.seed,
            self.threads,
            seeds.join(", "),
            self.seed
        )
    }
}

/// fsck of a raw crash image: only a superblock slot torn during unify is allowed (mount
/// repairs it, docs/CRASH_SAFETY.md).
fn fsck(dev: &dyn BlockDevice, before_mount: bool) -> Result<(), String> {
    let opts = Options {
        mode: Mode::Check,
        check_data: true,
    };
    let report = check(dev, &opts).map_err(|e| format!("fsck could not run: {e}"))?;
    let bad: Vec<_> = report
        .findings
        .iter()
        .filter(|f| {
            !(before_mount
                && f.block.is_some_and(|b| b < 2)
                && f.what.starts_with("superblock slot"))
        })
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("fsck findings: {bad:?}"))
    }
}

#[test]
fn threads_match_their_models_at_quiescent_points_and_after_crashes() {
    let seed = seed_from_env_or_clock();
    let mut rng = Rng::stream(seed, 0);
    let run = Run {
        seed,
        threads: rng.range(4, 9) as usize,
    };
    let block_size = *rng.pick(&[1024u32, 4096]);
    let ops = ops_per_thread();
    println!(
        "seed {seed}: {} threads, {ops} operations each, block size {block_size}",
        run.threads
    );
    let blocks = (64u64 << 20) / u64::from(block_size);
    let base = mem_device_with(&mkfs_params(block_size, blocks));
    let dev = Arc::new(RecordingDevice::new(base.snapshot()));
    let fs = Filesystem::mount(dev.clone() as Arc<dyn BlockDevice>, options())
        .unwrap_or_else(|e| run.fail(&format!("mount: {e}")));
    concurrent::setup(&fs, run.threads).unwrap_or_else(|e| run.fail(&e));
    let setup_events = dev.event_count();
    // A quarter of the image for files, shared by the threads.
    let budget = (blocks * u64::from(block_size) / 4) / run.threads as u64;
    let mut workers: Vec<Worker> = (0..run.threads)
        .map(|t| {
            let rng = Rng::stream(seed, 10 + t as u64);
            let mut w = Worker::new(t, fs.clone(), dev.clone(), rng, budget)
                .unwrap_or_else(|e| run.fail(&e));
            w.acknowledge_setup(setup_events);
            w
        })
        .collect();
    let mut done = 0;
    while done < ops {
        let n = PHASE_OPS.min(ops - done);
        let results: Vec<Result<(), String>> = std::thread::scope(|s| {
            let running: Vec<_> = workers
                .iter_mut()
                .map(|w| s.spawn(move || (0..n).try_for_each(|_| w.step())))
                .collect();
            running
                .into_iter()
                .map(|r| {
                    r.join()
                        .unwrap_or_else(|_| Err("the thread panicked".into()))
                })
                .collect()
        });
        for (t, r) in results.into_iter().enumerate() {
            if let Err(e) = r {
                run.fail(&format!("thread {t} after {done} operations: {e}"));
            }
        }
        done += n;
        // Quiescent: every thread joined.
        let tree = snapshot(&fs).unwrap_or_else(|e| run.fail(&format!("snapshot: {e}")));
        if let Err(e) = check_quiescent(&tree, &workers) {
            run.fail(&format!(
                "at the quiescent point after {done} operations each: {e}"
            ));
        }
    }
    let stats = fs.stats();
    println!(
        "{} deltas committed, {} pages forked, {} events recorded",
        stats.deltas_committed,
        stats.pages_forked,
        dev.event_count()
    );
    // The crash: drop without unmount (the writeback thread stops with the last reference).
    let histories: Vec<_> = workers.into_iter().map(|w| w.history).collect();
    drop(fs);
    let end = dev.event_count();
    let flushes = dev.flush_points();
    let mut points: Vec<(usize, Vec<usize>)> = Vec::new();
    let crash_states = CRASH_STATES_MIN.max(ops as usize / 5);
    let stride = flushes.len().div_ceil(crash_states / 2).max(1);
    points.extend(flushes.iter().step_by(stride).map(|&at| (at, Vec::new())));
    points.push((end, dev.writes_since_last_flush(end)));
    let mut crash_rng = Rng::stream(seed, 5);
    while points.len() < crash_states {
        let at = crash_rng.range(setup_events as u64, end as u64 + 1) as usize;
        let landed: Vec<usize> = dev
            .writes_since_last_flush(at)
            .into_iter()
            .filter(|_| crash_rng.chance(1, 2))
            .collect();
        points.push((at, landed));
    }
    let mut in_flight = 0;
    for (at, landed) in &points {
        let image = dev
            .crash_image(*at, landed, None)
            .unwrap_or_else(|e| run.fail(&format!("crash image at {at}: {e}")));
        let img = Arc::new(MemDevice::from_bytes(image));
        let verdict = (|| {
            fsck(img.as_ref(), true)?;
            let fs = Filesystem::mount(img.clone() as Arc<dyn BlockDevice>, options())
                .map_err(|e| format!("mount: {e}"))?;
            let got = snapshot(&fs).map_err(|e| format!("reading the recovered tree: {e}"))?;
            let beyond = concurrent_verdict(&got, &histories, *at)?;
            fs.unmount().map_err(|e| format!("unmount: {e}"))?;
            drop(fs);
            fsck(img.as_ref(), false).map(|()| beyond)
        })();
        match verdict {
            Ok(beyond) => in_flight += usize::from(beyond),
            Err(e) => run.fail(&format!(
                "crash at event {at} with unflushed writes {landed:?} landed: {e}"
            )),
        }
    }
    println!(
        "{} crash states recovered and checked ({in_flight} kept more than was acknowledged)",
        points.len()
    );
}
