//! Story: the mount daemon is killed with SIGKILL at a random moment while programs write
//! and fsync files. After a remount the image is clean (fsck) and everything an fsync
//! acknowledged before the kill is there, byte for byte. (Power cuts, where the device
//! loses unflushed writes, are tested at the device level by the crash harness.)
//!
//! Replay a run with `TUXFS_SEED=<seed>`; more rounds with `TUXFS_KILL_ROUNDS=<n>`.

mod common;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Mount, Rng};

const MIB: u64 = 1 << 20;

/// What the writers know is durable: whole files and the fsynced length of the log.
#[derive(Debug, Default)]
struct Acked {
    files: BTreeMap<PathBuf, Vec<u8>>,
    log: Vec<u8>,
}

fn writer(dir: PathBuf, seed: u64, id: u64, acked: Arc<Mutex<Acked>>, stop: Arc<AtomicBool>) {
    let mut rng = Rng::new(seed ^ (id << 32));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let path = dir.join(format!("w{id}-{n}"));
        let len = rng.below(300_000) as usize + 1;
        let data = rng.bytes(len);
        let Ok(mut f) = File::create(&path) else {
            return;
        };
        if f.write_all(&data).is_err() || f.sync_all().is_err() {
            return;
        }
        if let Ok(mut a) = acked.lock() {
            a.files.insert(path, data);
        }
    }
}

fn appender(dir: PathBuf, seed: u64, acked: Arc<Mutex<Acked>>, stop: Arc<AtomicBool>) {
    let mut rng = Rng::new(seed ^ 0xa99e);
    let Ok(mut f) = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
    else {
        return;
    };
    let mut written = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let chunk = rng.bytes(4096);
        if f.write_all(&chunk).is_err() {
            return;
        }
        written.extend_from_slice(&chunk);
        if f.sync_data().is_err() {
            return;
        }
        if let Ok(mut a) = acked.lock() {
            a.log = written.clone();
        }
    }
}

fn round(m: &mut Mount, seed: u64, round: u64) {
    let mut rng = Rng::new(seed.wrapping_add(round));
    let dir = m.path(format!("round{round}"));
    std::fs::create_dir(&dir).expect("mkdir");
    File::open(m.path(""))
        .and_then(|d| d.sync_all())
        .expect("fsync the root");
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for id in 0..3 {
        let (d, a, s) = (dir.clone(), acked.clone(), stop.clone());
        threads.push(std::thread::spawn(move || writer(d, seed, id, a, s)));
    }
    let (d, a, s) = (dir.clone(), acked.clone(), stop.clone());
    threads.push(std::thread::spawn(move || appender(d, seed, a, s)));
    std::thread::sleep(Duration::from_millis(200 + rng.below(1500)));
    m.crash_and_restart();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let acked = acked.lock().expect("acked");
    println!(
        "round {round}: {} files and {} log bytes acknowledged",
        acked.files.len(),
        acked.log.len()
    );
    for (path, data) in &acked.files {
        let got = std::fs::read(path).unwrap_or_else(|e| {
            panic!(
                "seed {seed} round {round}: fsynced {} is gone: {e}",
                path.display()
            )
        });
        assert!(
            got == *data,
            "seed {seed} round {round}: fsynced {} differs ({} bytes, want {})",
            path.display(),
            got.len(),
            data.len()
        );
    }
    let log = std::fs::read(dir.join("log")).unwrap_or_default();
    assert!(
        log.len() >= acked.log.len() && log[..acked.log.len()] == acked.log[..],
        "seed {seed} round {round}: the log lost fsynced appends ({} bytes on disk, {} acknowledged)",
        log.len(),
        acked.log.len()
    );
}

#[test]
fn sigkill_during_writes_loses_nothing_fsynced() {
    let seed = Rng::from_env("sigkill").next_u64();
    let rounds = std::env::var("TUXFS_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let Some(mut m) = Mount::new("sigkill", 512 * MIB) else {
        return;
    };
    for r in 0..rounds {
        round(&mut m, seed, r);
    }
    m.finish();
}
