//! Story: extended attributes outgrow the inode record. A 64 KiB value (XATTR_SIZE_MAX)
//! and a thousand attributes on one file spill into chains of spill blocks and read back
//! after a remount; 65537 bytes is E2BIG. Replacing and removing them shrinks the chain
//! and gives its blocks back (statfs counts them free again). Crashing the disk at every
//! flush point, and with subsets and torn writes of the unflushed writes, while a file's
//! set changes shows either the old set or the new one, never a mix or garbage. A
//! damaged spill block is an error naming the block, and deleting the file still works.

use std::collections::BTreeMap;
use std::sync::Arc;

use tuxfs_engine::dev::BlockDevice;
use tuxfs_engine::dev::mem::MemDevice;
use tuxfs_engine::dev::record::{RecordingDevice, TornWrite};
use tuxfs_engine::fs::{Filesystem, MountOptions, XattrFlags};
use tuxfs_engine::{Errno, Error};
use tuxfs_tests::fixture::{SUPERUSER as ME, fsck_clean, mem_device, mount_default};
use tuxfs_tests::rng::{Rng, seed_from_env_or_clock};

const ROOT: u64 = 1;
const BS: u32 = 4096;
const SET: XattrFlags = XattrFlags {
    create: false,
    replace: false,
    acl_kill_sgid: false,
};

/// A value of `len` bytes that differs per `tag` and per position.
fn value(tag: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(tag) as u8 ^ (i >> 8) as u8)
        .collect()
}

/// A file `name` in the root, closed; its inode number.
fn file(fs: &Filesystem, name: &[u8]) -> u64 {
    let ino = fs.create(ROOT, name, 0o644, ME).expect("create").ino;
    fs.release(ino).expect("release");
    ino
}

/// Every attribute of `ino`, by name.
fn all(fs: &Filesystem, ino: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    fs.listxattr(ino)
        .expect("listxattr")
        .into_iter()
        .map(|n| {
            let v = fs.getxattr(ino, &n).expect("getxattr");
            (n, v)
        })
        .collect()
}

fn remount(fs: Arc<Filesystem>, dev: &Arc<MemDevice>) -> Arc<Filesystem> {
    fs.unmount().expect("unmount");
    drop(fs);
    fsck_clean(dev.as_ref());
    mount_default(dev)
}

#[test]
fn a_64_kib_value_round_trips_and_65537_bytes_is_e2big() {
    let dev = mem_device(BS, 4096);
    let mut fs = mount_default(&dev);
    let f = file(&fs, b"f");
    let big = value(1, 65536);
    fs.setxattr(f, b"user.big", &big, SET)
        .expect("64 KiB value");
    fs.setxattr(f, b"user.small", b"s", SET)
        .expect("small value");
    let err = fs
        .setxattr(f, b"user.over", &value(2, 65537), SET)
        .expect_err("65537 bytes");
    assert_eq!(err.errno(), Errno::TooBig);
    assert_eq!(
        fs.getxattr(f, b"user.big").expect("read before commit"),
        big
    );
    fs.sync().expect("sync");
    assert_eq!(fs.getxattr(f, b"user.big").expect("read after commit"), big);
    fs = remount(fs, &dev);
    assert_eq!(
        fs.getxattr(f, b"user.big").expect("read after remount"),
        big
    );
    assert_eq!(fs.getxattr(f, b"user.small").expect("small"), b"s");
    assert_eq!(
        fs.getxattr(f, b"user.over").expect_err("never set").errno(),
        Errno::NoData
    );
    // Same at the smallest block size: the value spans over a hundred blocks.
    let dev = mem_device(512, 8192);
    let mut fs = mount_default(&dev);
    let f = file(&fs, b"g");
    fs.setxattr(f, b"trusted.big", &big, SET)
        .expect("64 KiB at 512");
    fs = remount(fs, &dev);
    assert_eq!(fs.getxattr(f, b"trusted.big").expect("read"), big);
    fs.unmount().expect("unmount");
}

#[test]
fn a_thousand_attributes_on_one_file() {
    let dev = mem_device(BS, 4096);
    let mut fs = mount_default(&dev);
    let f = file(&fs, b"many");
    let mut want = BTreeMap::new();
    for n in 0..1000u32 {
        let name = format!("user.attribute.{n:04}").into_bytes();
        let v = value(n, (n as usize * 7) % 200);
        fs.setxattr(f, &name, &v, SET).expect("set");
        want.insert(name, v);
        if n % 250 == 0 {
            fs.sync().expect("sync");
        }
    }
    assert_eq!(all(&fs, f), want);
    fs = remount(fs, &dev);
    assert_eq!(all(&fs, f), want);
    // XATTR_CREATE and XATTR_REPLACE see spilled names too.
    let create = XattrFlags {
        create: true,
        ..SET
    };
    let err = fs
        .setxattr(f, b"user.attribute.0999", b"x", create)
        .expect_err("exists");
    assert_eq!(err.errno(), Errno::Exists);
    fs.unmount().expect("unmount");
}

/// Free blocks as statfs says after a clean remount (the log chain is given back then).
fn settled_free(fs: Arc<Filesystem>, dev: &Arc<MemDevice>) -> (Arc<Filesystem>, u64) {
    let fs = remount(fs, dev);
    let free = fs.statfs().expect("statfs").bfree;
    (fs, free)
}

#[test]
fn replacing_and_removing_frees_spill_blocks() {
    let dev = mem_device(BS, 4096);
    let fs = mount_default(&dev);
    let f = file(&fs, b"f");
    fs.setxattr(f, b"user.keep", b"small", SET).expect("inline");
    let (fs, baseline) = settled_free(fs, &dev);
    for n in 0..4 {
        let name = format!("user.big{n}").into_bytes();
        fs.setxattr(f, &name, &value(n, 65536), SET).expect("big");
    }
    let (fs, full) = settled_free(fs, &dev);
    assert!(
        baseline - full >= 64,
        "four 64 KiB values took {} blocks",
        baseline - full
    );
    // Replace two with small values: the chain shrinks.
    fs.setxattr(f, b"user.big0", b"tiny", SET).expect("replace");
    fs.setxattr(f, b"user.big1", b"tiny", SET).expect("replace");
    let (fs, half) = settled_free(fs, &dev);
    assert!(half > full + 30, "replacing freed {} blocks", half - full);
    // Remove the rest: everything fits the record again, and every block comes back.
    fs.removexattr(f, b"user.big2").expect("remove");
    fs.removexattr(f, b"user.big3").expect("remove");
    let (fs, after) = settled_free(fs, &dev);
    assert_eq!(after, baseline, "spill blocks were not all freed");
    assert_eq!(fs.getxattr(f, b"user.big0").expect("kept"), b"tiny");
    // Deleting a file frees its chain too.
    fs.setxattr(f, b"user.big9", &value(9, 65536), SET)
        .expect("big");
    fs.unlink(ROOT, b"f").expect("unlink");
    let (fs, gone) = settled_free(fs, &dev);
    assert_eq!(gone, baseline, "the file's chain outlived it");
    fs.unmount().expect("unmount");
}

#[test]
fn a_damaged_spill_block_is_an_error_naming_it() {
    let dev = mem_device(BS, 4096);
    let fs = mount_default(&dev);
    let f = file(&fs, b"f");
    fs.setxattr(f, b"user.big", &value(3, 20_000), SET)
        .expect("big");
    fs.unmount().expect("unmount");
    drop(fs);
    let mut image = dev.snapshot();
    let spill = spill_blocks(&image, BS);
    assert_eq!(spill.len(), 5, "20,000 bytes take 5 spill blocks at 4 KiB");
    let victim = spill[2];
    image[(victim * u64::from(BS)) as usize + 3000] ^= 0x40;
    let dev = Arc::new(MemDevice::from_bytes(image));
    let fs = mount_default(&dev);
    for got in [
        fs.getxattr(f, b"user.big").map(|_| ()),
        fs.listxattr(f).map(|_| ()),
    ] {
        let e: Error = got.expect_err("a damaged chain reads");
        assert_eq!(e.block(), Some(victim), "{e}");
        assert_eq!(e.errno(), Errno::Io);
    }
    // Deleting the file still works (the chain's blocks are left for fsck).
    fs.unlink(ROOT, b"f").expect("unlink with a damaged chain");
    fs.unmount().expect("unmount");
}

/// Blocks of `image` that are xattr spill blocks (magic "TXXA").
fn spill_blocks(image: &[u8], bs: u32) -> Vec<u64> {
    let spill = |(i, b): (usize, &[u8])| b.starts_with(b"TXXA").then_some(i as u64);
    image
        .chunks(bs as usize)
        .enumerate()
        .filter_map(spill)
        .collect()
}

/// The sets a crash may show: before the change, and after it.
fn old_set() -> BTreeMap<Vec<u8>, Vec<u8>> {
    BTreeMap::from([
        (b"user.a".to_vec(), value(10, 30_000)),
        (b"user.b".to_vec(), value(11, 9_000)),
        (b"user.c".to_vec(), b"c".to_vec()),
    ])
}

fn new_set() -> BTreeMap<Vec<u8>, Vec<u8>> {
    BTreeMap::from([
        (b"user.a".to_vec(), value(20, 65_536)),
        (b"user.c".to_vec(), b"c".to_vec()),
        (b"user.d".to_vec(), value(21, 5_000)),
    ])
}

#[test]
fn crashes_mid_change_show_the_old_or_the_new_set() {
    let seed = seed_from_env_or_clock();
    println!("seed {seed} (replay with TUXFS_SEED={seed})");
    let base = mem_device(BS, 2048).snapshot();
    let rec = Arc::new(RecordingDevice::new(base));
    // No commit on age: each change below is one delta, committed by its fsync.
    let opts = MountOptions {
        commit_interval: std::time::Duration::from_secs(3600),
        ..MountOptions::default()
    };
    let fs = Filesystem::mount(rec.clone() as Arc<dyn BlockDevice>, opts).expect("mount");
    let f = file(&fs, b"f");
    for (n, v) in old_set() {
        fs.setxattr(f, &n, &v, SET).expect("old set");
    }
    fs.fsync(f, false).expect("fsync");
    let start = rec.event_count();
    fs.removexattr(f, b"user.b").expect("remove");
    for (n, v) in new_set() {
        fs.setxattr(f, &n, &v, SET).expect("new set");
    }
    fs.fsync(f, false).expect("fsync");
    let end = rec.event_count();
    drop(fs);
    let (old, new) = (old_set(), new_set());
    let mut rng = Rng::new(seed);
    let mut states = 0;
    let mut seen = [false; 2];
    for at in start..=end {
        let unflushed = rec.writes_since_last_flush(at);
        let mut cases: Vec<(Vec<usize>, Option<TornWrite>)> = vec![(Vec::new(), None)];
        for _ in 0..3 {
            let landed: Vec<usize> = unflushed
                .iter()
                .copied()
                .filter(|_| rng.chance(1, 2))
                .collect();
            let torn = (!unflushed.is_empty()).then(|| TornWrite {
                event: *rng.pick(&unflushed),
                sectors: rng.below_usize(8),
            });
            let torn = torn.filter(|t| !landed.contains(&t.event));
            cases.push((landed, torn));
        }
        for (landed, torn) in cases {
            let image = rec.crash_image(at, &landed, torn).expect("crash image");
            let dev = Arc::new(MemDevice::from_bytes(image));
            let fs = mount_default(&dev);
            let got = all(&fs, f);
            let which = if got == old {
                0
            } else if got == new {
                1
            } else {
                panic!(
                    "seed {seed}, crash at event {at}, landed {landed:?}, torn {torn:?}: a set that is neither the old nor the new one: {:?}",
                    got.iter()
                        .map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), v.len()))
                        .collect::<Vec<_>>()
                );
            };
            seen[which] = true;
            fs.unmount().expect("unmount");
            drop(fs);
            fsck_clean(dev.as_ref());
            states += 1;
        }
    }
    assert!(states > 20, "only {states} crash states");
    assert_eq!(seen, [true, true], "seed {seed}: both sets must be seen");
}

#[test]
fn a_large_acl_spills_and_chmod_rewrites_it() {
    use tuxfs_engine::format::acl::{
        ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER, ACL_UNDEFINED_ID as U, ACL_USER, ACL_USER_OBJ,
        AclEntry, XATTR_ACL_ACCESS, decode, encode,
    };
    use tuxfs_engine::fs::SetAttr;
    let e = |tag, perm, id| AclEntry { tag, perm, id };
    // 600 named users: 4,836 bytes, more than an inode record holds at 4 KiB.
    let mut acl = vec![e(ACL_USER_OBJ, 6, U)];
    acl.extend((0..600).map(|n| e(ACL_USER, 4, 2000 + n)));
    acl.extend([
        e(ACL_GROUP_OBJ, 4, U),
        e(ACL_MASK, 6, U),
        e(ACL_OTHER, 0, U),
    ]);
    let dev = mem_device(BS, 4096);
    let mut fs = mount_default(&dev);
    let f = file(&fs, b"f");
    fs.setxattr(f, b"user.small", b"s", SET).expect("small");
    fs.setxattr(f, XATTR_ACL_ACCESS, &encode(&acl), SET)
        .expect("large ACL");
    assert_eq!(fs.getattr(f).expect("getattr").perm, 0o660);
    assert_eq!(
        spill_blocks(&dev.snapshot(), BS).len(),
        0,
        "written before a commit"
    );
    fs = remount(fs, &dev);
    assert_eq!(
        spill_blocks(&dev.snapshot(), BS).len(),
        2,
        "the ACL spilled"
    );
    assert_eq!(
        decode(&fs.getxattr(f, XATTR_ACL_ACCESS).expect("read")).expect("valid"),
        acl
    );
    // chmod 0640 sets the mask to r-- in the spilled ACL.
    let chmod = SetAttr {
        mode: Some(0o640),
        ..SetAttr::default()
    };
    fs.setattr(f, &chmod).expect("chmod");
    fs = remount(fs, &dev);
    let got = decode(&fs.getxattr(f, XATTR_ACL_ACCESS).expect("read")).expect("valid");
    assert_eq!(
        got.iter().find(|x| x.tag == ACL_MASK).map(|x| x.perm),
        Some(4)
    );
    assert_eq!(got.len(), acl.len());
    assert_eq!(fs.getxattr(f, b"user.small").expect("small"), b"s");
    fs.unmount().expect("unmount");
}
