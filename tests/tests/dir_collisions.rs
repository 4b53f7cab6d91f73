//! Story: a directory on a test filesystem whose names all hash alike (the test-only
//! incompat feature `CONSTANT_NAME_HASH`) holds 1000 names that share one hash, far past
//! the 256 base positions of a hash: every name is created, found, listed once with a
//! cookie, and stays at its cookie while other names come and go (telldir/seekdir);
//! unlink, rename (within the directory, to another one, over an existing name) and a
//! remount keep it all, and fsck finds the image clean. Then a seeded run of random
//! creates, unlinks and renames is compared with a model after every step.
//! Replay: `TUXFS_SEED=<seed> cargo test -p tuxfs-tests --test dir_collisions`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tuxfs_engine::Errno;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::format::dirent::{OVERFLOW_SEQ_MAX, POS_OVERFLOW};
use tuxfs_engine::fs::{Filesystem, RenameFlags};
use tuxfs_tests::fixture::{SUPERUSER as ME, fsck_clean, mem_device_constant_hash, mount_default};
use tuxfs_tests::rng::{Rng, seed_from_env_or_clock};

const ROOT: u64 = 1;
/// Cookies of "." and ".." come first; an entry at position p has cookie p + 3.
const COOKIE_BASE: u64 = 3;
const NAMES: usize = 1000;

fn name(i: usize) -> Vec<u8> {
    format!("name-{i:04}").into_bytes()
}

/// Every entry of `dir` after `cookie` (without "." and ".."), read `batch` at a time:
/// name → (cookie, inode).
fn list_from(fs: &Filesystem, dir: u64, cookie: u64, batch: usize) -> Vec<(Vec<u8>, u64, u64)> {
    let mut out = Vec::new();
    let mut at = cookie;
    loop {
        let got = fs.readdir(dir, at, batch).expect("readdir");
        let Some(last) = got.last() else { break };
        at = last.offset;
        for e in got {
            if e.name != b"." && e.name != b".." {
                out.push((e.name, e.offset, e.ino));
            }
        }
    }
    out
}

/// The listing matches `model` (name → inode), with strictly rising cookies.
fn assert_listing(fs: &Filesystem, dir: u64, model: &BTreeMap<Vec<u8>, u64>, batch: usize) {
    let listed = list_from(fs, dir, 0, batch);
    assert!(listed.windows(2).all(|w| w[0].1 < w[1].1), "cookies rise");
    let got: BTreeMap<Vec<u8>, u64> = listed.into_iter().map(|(n, _, i)| (n, i)).collect();
    assert_eq!(got.len(), model.len(), "each name listed once");
    assert_eq!(&got, model);
}

fn mounted() -> (Arc<MemDevice>, Arc<Filesystem>, u64) {
    let dev = mem_device_constant_hash(4096, 8192);
    let fs = mount_default(&dev);
    let dir = fs.mkdir(ROOT, b"d", 0o755, ME).expect("mkdir").ino;
    (dev, fs, dir)
}

#[test]
fn a_thousand_names_share_one_hash() {
    let (dev, fs, dir) = mounted();
    let mut model = BTreeMap::new();
    for i in 0..NAMES {
        let a = fs.create(dir, &name(i), 0o644, ME).expect("create");
        fs.release(a.ino).expect("close");
        model.insert(name(i), a.ino);
    }
    for (n, ino) in &model {
        assert_eq!(fs.lookup(dir, n).expect("lookup").ino, *ino);
    }
    assert_eq!(
        fs.create(dir, &name(700), 0o644, ME)
            .map(drop)
            .map_err(|e| e.errno()),
        Err(Errno::Exists)
    );
    assert_listing(&fs, dir, &model, 37);
    // Names 256 and later took overflow positions, in creation order.
    let listed = list_from(&fs, dir, 0, 1000);
    let over: Vec<_> = listed
        .iter()
        .filter(|(_, c, _)| c - COOKIE_BASE >= POS_OVERFLOW)
        .collect();
    assert_eq!(over.len(), NAMES - 256);
    assert!(
        over.iter()
            .all(|(_, c, _)| c - COOKIE_BASE <= POS_OVERFLOW | OVERFLOW_SEQ_MAX)
    );
    assert!(over.windows(2).all(|w| w[0].0 < w[1].0));

    // telldir after 500 entries; names before and after it go, new ones come.
    let first = list_from(&fs, dir, 0, 500);
    let cookie = listed[499].1;
    assert_eq!(first[499].1, cookie);
    for i in (0..NAMES).step_by(7) {
        fs.unlink(dir, &name(i)).expect("unlink");
        model.remove(&name(i));
        assert_eq!(
            fs.lookup(dir, &name(i)).map(drop).map_err(|e| e.errno()),
            Err(Errno::NoEntry)
        );
    }
    for i in NAMES..NAMES + 200 {
        let a = fs.create(dir, &name(i), 0o644, ME).expect("create more");
        fs.release(a.ino).expect("close");
        model.insert(name(i), a.ino);
    }
    // seekdir: every name still present that had a cookie above it comes again, at the
    // same cookie; nothing at or below it does.
    let rest = list_from(&fs, dir, cookie, 64);
    let rest_cookies: BTreeMap<&[u8], u64> = rest.iter().map(|(n, c, _)| (&n[..], *c)).collect();
    assert!(rest.iter().all(|(_, c, _)| *c > cookie));
    for (n, c, _) in &listed[500..] {
        if model.contains_key(n) {
            assert_eq!(rest_cookies.get(&n[..]), Some(c), "{:?} kept its cookie", n);
        }
    }
    // Freed base positions are taken again first: the new names fill the 37 holes the
    // unlinks left among the first 256, then overflow after the last overflow entry.
    let all = list_from(&fs, dir, 0, 128);
    let base = all.iter().filter(|(_, c, _)| c - COOKIE_BASE < 256).count();
    assert_eq!(base, 256);
    assert_listing(&fs, dir, &model, 128);

    // Renames: within the directory, into another, over an existing name.
    let other = fs.mkdir(ROOT, b"other", 0o755, ME).expect("mkdir").ino;
    let mut other_model = BTreeMap::new();
    for i in [1, 2, 300, 999] {
        let ino = model.remove(&name(i)).expect("present");
        let to = format!("renamed-{i}").into_bytes();
        fs.rename(dir, &name(i), dir, &to, RenameFlags::default())
            .expect("rename within");
        model.insert(to, ino);
    }
    for i in [3, 400, 998] {
        let ino = model.remove(&name(i)).expect("present");
        fs.rename(dir, &name(i), other, &name(i), RenameFlags::default())
            .expect("rename out");
        other_model.insert(name(i), ino);
    }
    let replaced_cookie = list_from(&fs, dir, 0, 1000)
        .into_iter()
        .find(|(n, _, _)| n == &name(500))
        .expect("name 500")
        .1;
    let moved = model.remove(&name(600)).expect("present");
    fs.rename(dir, &name(600), dir, &name(500), RenameFlags::default())
        .expect("rename over");
    model.insert(name(500), moved);
    let after = list_from(&fs, dir, 0, 1000);
    let kept = after.iter().find(|(n, _, _)| n == &name(500)).expect("500");
    assert_eq!(
        (kept.1, kept.2),
        (replaced_cookie, moved),
        "a replaced entry keeps its place"
    );
    assert_listing(&fs, dir, &model, 53);
    assert_listing(&fs, other, &other_model, 2);

    fs.unmount().expect("unmount");
    fsck_clean(dev.as_ref());
    let fs = mount_default(&dev);
    assert_listing(&fs, dir, &model, 200);
    for (n, ino) in &model {
        assert_eq!(fs.lookup(dir, n).expect("lookup after remount").ino, *ino);
    }
    for (n, _) in model.clone() {
        fs.unlink(dir, &n).expect("unlink all");
    }
    fs.rmdir(ROOT, b"d").expect("the directory empties");
    fs.unmount().expect("unmount");
    fsck_clean(dev.as_ref());
}

/// A name in an overflow position is still found (and refused again) after the base
/// position of its hash that was free is taken by a later name, and after all base
/// positions empty.
#[test]
fn overflow_names_stay_found_when_base_positions_empty() {
    let (dev, fs, dir) = mounted();
    for i in 0..300 {
        fs.mknod(dir, &name(i), 0o100644, 0, ME).expect("mknod");
    }
    for i in 0..256 {
        fs.unlink(dir, &name(i)).expect("unlink a base entry");
    }
    for i in 256..300 {
        assert!(fs.lookup(dir, &name(i)).is_ok(), "name {i} in overflow");
        assert_eq!(
            fs.mknod(dir, &name(i), 0o100644, 0, ME)
                .map(drop)
                .map_err(|e| e.errno()),
            Err(Errno::Exists)
        );
    }
    fs.mknod(dir, b"new", 0o100644, 0, ME)
        .expect("takes base position 0");
    let listed = list_from(&fs, dir, 0, 100);
    assert_eq!(listed[0], (b"new".to_vec(), COOKIE_BASE, listed[0].2));
    fs.unmount().expect("unmount");
    fsck_clean(dev.as_ref());
}

#[test]
fn random_operations_on_one_hash_match_a_model() {
    let seed = seed_from_env_or_clock();
    let mut rng = Rng::new(seed);
    let (dev, fs, dir) = mounted();
    let mut model: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut cookies: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let pool = 600u64;
    for step in 0..3000 {
        let n = name(rng.below(pool) as usize);
        let what = rng.below(10);
        let ctx = format!("seed {seed} step {step}: replay with TUXFS_SEED={seed}");
        match what {
            0..=4 => {
                let r = fs.mknod(dir, &n, 0o100644, 0, ME);
                match model.get(&n) {
                    Some(_) => assert_eq!(
                        r.map(drop).map_err(|e| e.errno()),
                        Err(Errno::Exists),
                        "{ctx}"
                    ),
                    None => {
                        model.insert(n.clone(), r.expect(&ctx).ino);
                    }
                }
            }
            5..=7 => {
                let r = fs.unlink(dir, &n);
                match model.remove(&n) {
                    Some(_) => {
                        r.expect(&ctx);
                        cookies.remove(&n);
                    }
                    None => assert_eq!(r.map_err(|e| e.errno()), Err(Errno::NoEntry), "{ctx}"),
                }
            }
            _ => {
                let to = name(rng.below(pool) as usize);
                let r = fs.rename(dir, &n, dir, &to, RenameFlags::default());
                match model.get(&n).copied() {
                    None => assert_eq!(r.map_err(|e| e.errno()), Err(Errno::NoEntry), "{ctx}"),
                    Some(ino) => {
                        r.expect(&ctx);
                        if n != to {
                            model.remove(&n);
                            cookies.remove(&n);
                            if model.insert(to.clone(), ino).is_none() {
                                cookies.remove(&to);
                            }
                        }
                    }
                }
            }
        }
        if step % 250 == 249 {
            let listed = list_from(&fs, dir, 0, 97);
            let got: BTreeMap<Vec<u8>, u64> =
                listed.iter().map(|(n, _, i)| (n.clone(), *i)).collect();
            assert_eq!(got, model, "{ctx}");
            // An entry that stayed in place kept its cookie.
            for (n, c, _) in &listed {
                if let Some(old) = cookies.insert(n.clone(), *c) {
                    assert_eq!(old, *c, "{ctx}: cookie of {n:?}");
                }
            }
            let distinct: BTreeSet<u64> = listed.iter().map(|(_, c, _)| *c).collect();
            assert_eq!(distinct.len(), listed.len(), "{ctx}");
        }
    }
    fs.unmount().expect("unmount");
    fsck_clean(dev.as_ref());
}
