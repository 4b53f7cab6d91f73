//! Story: the concurrency checker. [shuttle](https://docs.rs/shuttle) runs a few threads
//! under its own scheduler and, iteration after iteration, picks a different interleaving at
//! every lock, atomic access and thread switch. These checks run the engine's real code:
//!
//! - **engine::cache**, compiled here a second time from engine/src/cache.rs against the
//!   shuttle half of the engine's `sync` seam (engine/src/sync/checked.rs), so every shard
//!   lock and epoch access inside it is a scheduling point: inserts, lookups, invalidations
//!   and evictions racing; a held page never recycled; a reader that loads outside every
//!   lock and caches with [`cache::PageCache::insert_if_epoch`] never leaves a stale page
//!   behind an invalidation. One check runs the unguarded protocol (epoch compared, then
//!   inserted) and requires the checker to find the stale page: a checker that cannot see
//!   that bug proves nothing.
//! - **page forking and the read path** over a real recovered `State` of the engine, behind
//!   a shuttle mutex that stands for the state lock and taken exactly where the engine takes
//!   it (engine::fs `Shared::commit_open`, `Filesystem::read`): a commit closes the delta,
//!   seals, submits and flushes it without the lock (engine::delta) and finishes, while a
//!   writer rewrites a page of that delta, a
//!   hole is punched into another, and a reader loads outside the lock. The flushed delta
//!   holds the bytes of the close, the live file the new ones, no stale page stays cached.
//!
//! - **readers under the shared state lock**: the state behind a shuttle `RwLock` taken as
//!   engine::fs takes it since reads became shared: two readers plan and complete under the
//!   lock held shared (together), loading without it, while a writer rewrites a block under
//!   it exclusive and a commit closes and finishes under it exclusive (its I/O without it).
//!   No reader returns a mix or a version older than one it was ordered after, and no stale
//!   page stays cached.
//!
//! The engine itself is not built with its `shuttle` feature here (Cargo would unify the
//! feature into every test of the workspace, whose threads are not shuttle's); the cache is
//! compiled against the seam instead, and the state-level checks interleave at the state
//! lock, which is the only lock that orders those steps today.
//!
//! Seeded: `TUXFS_SEED` (default: the clock) seeds shuttle's random scheduler, printed
//! before each check; shuttle prints the failing schedule too. Longer: `TUXFS_SHUTTLE_ITERS`
//! (iterations per check; default 300, the state-level checks a fifth of it).
//!
//! Not covered: weak memory orderings (shuttle runs sequentially consistent), the whole
//! `Filesystem` (its writeback and read-ahead threads and channels are not shuttle's), and
//! locks finer than the state lock, which do not exist yet.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::format::superblock::STATE_MOUNTED;
use tuxfs_engine::fs::{Caller, Filesystem, MountOptions};
use tuxfs_engine::io::BlockIo;
use tuxfs_engine::state::State;
use tuxfs_tests::fixture::mem_device;
use tuxfs_tests::rng::seed_from_env_or_clock;

/// engine::sync as the engine builds it with its `shuttle` feature (not all of it used here).
#[allow(unused_imports)]
#[path = "../../engine/src/sync/checked.rs"]
mod sync;

/// What engine/src/cache.rs takes from engine::dev.
mod dev {
    pub use tuxfs_engine::dev::AlignedBuf;
}

/// engine::cache, on the shuttle primitives above.
#[allow(dead_code)]
#[path = "../../engine/src/cache.rs"]
mod cache;

use cache::{Page, PageCache};
use sync::atomic::{AtomicU64, Ordering};
use sync::thread;
use sync::{Mutex, RwLock};

const BS: usize = 4096;

/// Schedules in which the rewrite forked a page of the delta in flight (outside shuttle's
/// control: a plain counter across iterations).
static FORKED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn iterations() -> usize {
    std::env::var("TUXFS_SHUTTLE_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// A page whose first bytes say what it is: inode, file block, version.
fn page(inum: u64, fblock: u64, version: u64) -> Page {
    let mut b = vec![0u8; BS];
    b[..8].copy_from_slice(&inum.to_le_bytes());
    b[8..16].copy_from_slice(&fblock.to_le_bytes());
    b[16..24].copy_from_slice(&version.to_le_bytes());
    Arc::new(dev::AlignedBuf::from_slice(&b))
}

fn tag(p: &[u8]) -> (u64, u64, u64) {
    let word = |i: usize| u64::from_le_bytes(p[i..i + 8].try_into().expect("8 bytes"));
    (word(0), word(8), word(16))
}

fn accounting_holds(c: &PageCache) {
    let s = c.stats();
    assert_eq!(
        s.bytes,
        c.len() as u64 * BS as u64,
        "bytes do not match pages held"
    );
    assert!(
        s.bytes <= c.budget(),
        "{} bytes held over a budget of {}",
        s.bytes,
        c.budget()
    );
}

/// Inserts, lookups and invalidations (short ranges and whole-file sweeps) racing: a lookup
/// returns only a page inserted under its key, and the byte count stays exact.
fn cache_races() {
    let c = Arc::new(PageCache::with_shards(6 * BS as u64, 2));
    let inserter = {
        let c = c.clone();
        thread::spawn(move || {
            for v in 1..=2 {
                for b in 0..4 {
                    c.insert(1, b, page(1, b, v), v == 2);
                }
            }
        })
    };
    let invalidator = {
        let c = c.clone();
        thread::spawn(move || {
            c.invalidate(1, 1, 3);
            c.invalidate(1, 0, u64::MAX);
        })
    };
    for _ in 0..2 {
        for b in 0..4 {
            if let Some(p) = c.get(1, b) {
                let (i, f, v) = tag(&p);
                assert!(
                    i == 1 && f == b && (1..=2).contains(&v),
                    "block {b} held {i}/{f}/{v}"
                );
            }
        }
    }
    inserter.join().expect("inserter");
    invalidator.join().expect("invalidator");
    accounting_holds(&c);
}

/// Several threads filling one shard past its budget: it never holds more than its budget,
/// and a page a reader holds is never recycled into another page's buffer.
fn eviction_under_budget() {
    let c = Arc::new(PageCache::with_shards(3 * BS as u64, 1));
    c.insert(9, 0, page(9, 0, 7), true);
    let held = c.get(9, 0).expect("just inserted");
    let workers: Vec<_> = (0..3u64)
        .map(|t| {
            let c = c.clone();
            thread::spawn(move || {
                for b in 0..3 {
                    c.insert(t, b, page(t, b, 1), b % 2 == 0);
                    c.get(t, b);
                    // One shard: the count is exact at every instant.
                    assert!(c.stats().bytes <= c.budget(), "over budget");
                    let fresh = c.page_from(&page(t, b, 2));
                    assert_eq!(tag(&fresh), (t, b, 2));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    assert_eq!(tag(&held), (9, 0, 7), "a held page was recycled");
    accounting_holds(&c);
}

/// How a reader that loaded outside the lock caches what it loaded.
#[derive(Clone, Copy)]
enum Insert {
    /// `insert_if_epoch`: the epoch compared under the shard's lock.
    Guarded,
    /// The epoch compared, then `insert`: an invalidation can fall in between.
    Unguarded,
}

/// A reader loads block 0 of inode 1 outside every lock while a writer changes the block
/// (under the file's own lock) and invalidates its cached copy: afterwards the cache holds
/// the current version or nothing.
fn load_outside_the_lock(how: Insert) {
    let c = Arc::new(PageCache::with_shards(8 * BS as u64, 2));
    // The block's current version on the "device", under the file's lock.
    let file = Arc::new(Mutex::new(1u64));
    let writer = {
        let (c, file) = (c.clone(), file.clone());
        thread::spawn(move || {
            let mut v = file.lock().expect("file lock");
            *v += 1;
            c.invalidate(1, 0, 1);
        })
    };
    let epoch = c.epoch(1);
    let loaded = *file.lock().expect("file lock");
    let p = page(1, 0, loaded);
    match how {
        Insert::Guarded => {
            c.insert_if_epoch(1, 0, p, true, epoch);
        }
        Insert::Unguarded => {
            if c.epoch(1) == epoch {
                c.insert(1, 0, p, true);
            }
        }
    }
    writer.join().expect("writer");
    let current = *file.lock().expect("file lock");
    if let Some(p) = c.get(1, 0) {
        assert_eq!(
            tag(&p).2,
            current,
            "a stale page stayed cached after the invalidation"
        );
    }
}

/// A committed file of three blocks (bytes 0x0A), and the image it is on.
struct Fixture {
    image: Vec<u8>,
    ino: u64,
}

fn fixture() -> Fixture {
    let mem = mem_device(BS as u32, 2048);
    let fs = Filesystem::mount(mem.clone() as Arc<dyn BlockDevice>, MountOptions::default())
        .expect("mount");
    let a = fs
        .create(1, b"f", 0o644, Caller::default())
        .expect("create");
    fs.write(a.ino, 0, &[0x0A; 3 * BS], false).expect("write");
    fs.release(a.ino).expect("release");
    fs.unmount().expect("unmount");
    drop(fs);
    Fixture {
        image: mem.snapshot(),
        ino: a.ino,
    }
}

/// The filesystem state after recovery of `dev`; `writable` also does what a read-write
/// mount does next (a commit and a unify, which starts the log chain new deltas extend).
fn recover(dev: Arc<MemDevice>, writable: bool) -> State {
    let (sb, _) = tuxfs_engine::recovery::read_superblock(dev.as_ref()).expect("superblock");
    let io = BlockIo {
        dev: dev as Arc<dyn BlockDevice>,
        block_size: sb.block_size,
        block_count: sb.block_count,
    };
    let mut st = tuxfs_engine::recovery::recover(io, sb, false).expect("recover");
    if writable {
        tuxfs_engine::commit::commit(&mut st).expect("commit after recovery");
        tuxfs_engine::commit::unify(&mut st, STATE_MOUNTED).expect("unify after recovery");
    }
    st
}

/// Reads block `fblock` as `Filesystem::read` does: plan under the state lock (`lock`
/// takes it: the mutex, or the reader-writer lock shared), load without it, complete under
/// it, again when the inode changed meanwhile.
fn read_at<G: std::ops::Deref<Target = State>>(
    lock: impl Fn() -> G,
    ino: u64,
    fblock: u64,
) -> Vec<u8> {
    use tuxfs_engine::data::{ReadMode, complete_read, load, plan_read};
    for _ in 0..16 {
        let plan = {
            let g = lock();
            let off = fblock * BS as u64;
            plan_read(&g, ino, off, BS as u32, 3 * BS as u64, ReadMode::Unlocked).expect("plan")
        };
        if plan.is_complete() {
            return plan.into_bytes();
        }
        let loaded = load(&plan);
        let g = lock();
        if let Some(out) = complete_read(&g, plan, loaded).expect("complete") {
            return out;
        }
    }
    panic!("a read lost the race 16 times in a row")
}

/// [`read_at`] under the state mutex.
fn read_unlocked(st: &Mutex<State>, ino: u64, fblock: u64) -> Vec<u8> {
    read_at(|| st.lock().expect("state"), ino, fblock)
}

/// [`read_at`] under the reader-writer state lock held shared, as engine::fs reads now.
fn read_shared(st: &RwLock<State>, ino: u64, fblock: u64) -> Vec<u8> {
    read_at(|| st.read().expect("state"), ino, fblock)
}

/// Two readers under the shared lock racing a writer and a commit (module documentation).
fn shared_readers(fx: &Fixture) {
    let dev = Arc::new(MemDevice::from_bytes(fx.image.clone()));
    let st = Arc::new(RwLock::new(recover(dev, true)));
    let ino = fx.ino;
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (st, written) = (st.clone(), written.clone());
        thread::spawn(move || {
            let mut g = st.write().expect("state");
            tuxfs_engine::data::write(&mut g, ino, 0, &[0xB2; BS]).expect("rewrite");
            written.store(1, Ordering::SeqCst);
        })
    };
    let committer = {
        let st = st.clone();
        thread::spawn(move || {
            let ((frozen, unify), io) = {
                let mut g = st.write().expect("state");
                // As Shared::commit_open: nothing to commit when the writer has not run.
                if !g.has_changes() {
                    return;
                }
                let closed = tuxfs_engine::commit::close(&mut g).expect("close");
                (closed, g.io.clone())
            };
            tuxfs_engine::commit::complete(&io, frozen, unify, &mut |step| {
                step(&mut st.write().expect("state"))
            })
            .expect("complete");
        })
    };
    let reader = |first: u64| {
        let (st, written) = (st.clone(), written.clone());
        thread::spawn(move || {
            for fblock in [first, 2, 0] {
                let was_written = written.load(Ordering::SeqCst) == 1;
                let b = read_shared(&st, ino, fblock);
                let new = fblock == 0 && b.iter().all(|&x| x == 0xB2);
                let old = b.iter().all(|&x| x == 0x0A);
                assert!(
                    new || (old && !(fblock == 0 && was_written)),
                    "block {fblock} read as {:#x}..{:#x} (written before the read: {was_written})",
                    b[0],
                    b[BS - 1]
                );
            }
        })
    };
    let readers = [reader(0), reader(1)];
    for t in readers.into_iter().chain([writer, committer]) {
        t.join().expect("thread");
    }
    let g = st.read().expect("state");
    for fblock in 0..3u64 {
        if let Some(p) = g.read.cache.get(ino, fblock) {
            let want = if fblock == 0 { 0xB2 } else { 0x0A };
            assert!(
                p.iter().all(|&x| x == want),
                "a stale block {fblock} is cached ({:#x})",
                p[0]
            );
        }
    }
}

/// Page forking and the read path, at the state lock (see the module documentation).
fn forking_and_reads(fx: &Fixture) {
    let dev = Arc::new(MemDevice::from_bytes(fx.image.clone()));
    let mut st = recover(dev.clone(), true);
    let ino = fx.ino;
    tuxfs_engine::data::write(&mut st, ino, 0, &[0xB1; BS]).expect("write before the commit");
    let st = Arc::new(Mutex::new(st));
    // Block 0 as the commit closed it (what the delta writes), and whether block 1 was
    // punched before the read of it planned.
    let closed_with = Arc::new(Mutex::new(Vec::new()));
    let punched = Arc::new(AtomicU64::new(0));
    let rewritten = Arc::new(AtomicU64::new(0));
    let committer = {
        let (st, closed_with) = (st.clone(), closed_with.clone());
        thread::spawn(move || {
            let ((frozen, unify), io) = {
                let mut g = st.lock().expect("state");
                let now = tuxfs_engine::data::read_block(&g, ino, 0).expect("block 0");
                *closed_with.lock().expect("closed") = now.to_vec();
                let closed = tuxfs_engine::commit::close(&mut g).expect("close");
                (closed, g.io.clone())
            };
            // As Shared::commit_open: sealed, submitted and flushed without the lock, which
            // only the finish takes again.
            tuxfs_engine::commit::complete(&io, frozen, unify, &mut |step| {
                step(&mut st.lock().expect("state"))
            })
            .expect("complete");
        })
    };
    let writer = {
        let (st, rewritten) = (st.clone(), rewritten.clone());
        thread::spawn(move || {
            let mut g = st.lock().expect("state");
            tuxfs_engine::data::write(&mut g, ino, 0, &[0xB2; BS]).expect("rewrite");
            rewritten.store(1, Ordering::SeqCst);
        })
    };
    let puncher = {
        let (st, punched) = (st.clone(), punched.clone());
        thread::spawn(move || {
            let mut g = st.lock().expect("state");
            tuxfs_engine::data::punch(&mut g, ino, 1, 2).expect("punch");
            punched.store(1, Ordering::SeqCst);
        })
    };
    // The reader: block 0 is one of the two writes, never the old bytes or a mix, and the
    // rewrite once it returned before the read planned (forked or not); block 1 is the
    // committed bytes or the hole, the hole once the punch came first.
    let was_rewritten = rewritten.load(Ordering::SeqCst) == 1;
    let b0 = read_unlocked(&st, ino, 0);
    assert!(
        b0.iter().all(|&x| x == 0xB2) || (!was_rewritten && b0.iter().all(|&x| x == 0xB1)),
        "block 0 read as {:#x}..{:#x} (rewritten before the read: {was_rewritten})",
        b0[0],
        b0[BS - 1]
    );
    let was_punched = punched.load(Ordering::SeqCst) == 1;
    let b1 = read_unlocked(&st, ino, 1);
    assert!(
        b1.iter().all(|&x| x == 0) || (!was_punched && b1.iter().all(|&x| x == 0x0A)),
        "block 1 read as {:#x} (punched before the read: {was_punched})",
        b1[0]
    );
    for t in [committer, writer, puncher] {
        t.join().expect("thread");
    }
    let g = st.lock().expect("state");
    // The live file: the last write, the hole; no stale copy in the clean cache.
    let live = tuxfs_engine::data::read_block(&g, ino, 0).expect("block 0");
    assert!(
        live.iter().all(|&x| x == 0xB2),
        "the live file lost the rewrite"
    );
    if let Some(p) = g.read.cache.get(ino, 0) {
        assert!(p.iter().all(|&x| x == 0xB2), "a stale block 0 is cached");
    }
    if let Some(p) = g.read.cache.get(ino, 1) {
        assert!(
            p.iter().all(|&x| x == 0),
            "the punched block 1 is cached with old bytes"
        );
    }
    if g.stats.pages_forked > 0 {
        FORKED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    drop(g);
    // The delta on the device: exactly the bytes block 0 had when it closed (a crash now
    // recovers them), whether the rewrite forked the page or came first.
    let want = closed_with.lock().expect("closed").clone();
    let durable = recover(Arc::new(MemDevice::from_bytes(dev.snapshot())), false);
    let got = tuxfs_engine::data::read_block(&durable, ino, 0).expect("durable block 0");
    assert!(
        got[..] == want[..],
        "the flushed delta holds block 0 as {:#x}, it was {:#x} when the delta closed",
        got[0],
        want[0]
    );
}

/// Runs `f` under shuttle's random scheduler.
fn check(name: &str, seed: u64, iterations: usize, f: impl Fn() + Send + Sync + 'static) {
    println!("shuttle: {name}: seed {seed}, {iterations} iterations");
    shuttle::check_random_with_seed(f, seed, iterations);
}

fn main() {
    let seed = seed_from_env_or_clock();
    let n = iterations();
    let replay = format!("replay: TUXFS_SEED={seed} cargo test -p tuxfs-tests --test shuttle");
    println!("shuttle checks, seed {seed} ({replay})");
    check("cache races", seed, n, cache_races);
    check("eviction under budget", seed, n, eviction_under_budget);
    check("load outside the lock, guarded insert", seed, n, || {
        load_outside_the_lock(Insert::Guarded)
    });
    let fx = Arc::new(fixture());
    check(
        "forking, punching and reading at the state lock",
        seed,
        (n / 5).max(20),
        move || forking_and_reads(&fx),
    );
    let fx2 = Arc::new(fixture());
    check(
        "readers under the shared lock beside a writer and a commit",
        seed,
        (n / 5).max(20),
        move || shared_readers(&fx2),
    );
    let forked = FORKED.load(std::sync::atomic::Ordering::Relaxed);
    println!("shuttle: {forked} schedules forked a page of the delta in flight");
    assert!(
        forked > 0,
        "no schedule rewrote the page while its delta was in flight ({replay})"
    );
    // The unguarded protocol must be caught: shuttle panics with the failing schedule.
    println!(
        "shuttle: the next check must fail: the panic and schedule printed below are expected"
    );
    let caught = catch_unwind(AssertUnwindSafe(|| {
        check(
            "load outside the lock, unguarded insert (must fail)",
            seed,
            n.max(1000),
            || load_outside_the_lock(Insert::Unguarded),
        )
    }));
    assert!(
        caught.is_err(),
        "the checker found no stale page in the unguarded protocol ({replay})"
    );
    println!("shuttle: the unguarded protocol was caught, as it must be");
    println!("shuttle: all checks passed");
}
