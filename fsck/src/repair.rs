//! Repair (`-p`, `-y`): compute the repaired logical state from what the walk kept, then
//! write it out as a fresh metadata set, the way unify does.
//!
//! **What is repaired, in this order** (each step works on the result of the one before):
//! 1. inode records that decode (inline xattrs that do not decode, and ACL xattrs whose
//!    value is not a valid ACL or that are default ACLs of non-directories, were already
//!    cut off by the walk); a missing or non-directory root is replaced by an empty root
//!    directory;
//! 2. directory entries: dropped when their directory is missing or not a directory, when
//!    their target is missing or is the root; their type is set from the target's mode; a
//!    directory named more than once keeps the name its parent field agrees with (else the
//!    first);
//! 3. orphan cleanup is finished: an inode (other than the root) with no name that is on the
//!    orphan list or has link count 0 is freed with its extents, and so are the entries of a
//!    freed directory (repeated until nothing more is freed: fsck runs offline, nothing is
//!    open);
//! 4. `lost+found` is found (the root's entry of that name, a directory) or made (inode 2
//!    when free, else a new inode number);
//! 5. every inode not reachable from the root is attached under `lost+found` as `#<inum>`:
//!    for each disconnected directory the top of its disconnected subtree is attached, and a
//!    cycle of directories is cut at the directory where it was found;
//! 6. parent fields and link counts are set from the entries;
//! 7. extents: those of freed or missing inodes are dropped; extents are taken in order of
//!    the delta of the leaf they came from, newest first, then key order: a data block that
//!    a verified metadata block or an earlier extent already owns, or a file block an
//!    earlier extent maps, is cut out of the extent (which may split it); block counts are
//!    set from what remains; what a file lost (no extent left for a range of its size that
//!    an extent or a lost key range covered) is reported with its path and byte ranges,
//!    and so are lost inode records, directories that lost entries and every inode moved
//!    to `lost+found`;
//! 8. an xattr spill chain that does not verify whole (or shares a block) is cleared;
//! 9. the free-space map is rebuilt from what is kept; the orphan list is empty.
//!
//! **What is written, in this order.** Every block goes to a block that is free in the
//! repaired state *and* not referenced by the current metadata (the `referenced` set of the
//! walk: trees, log chain, the block allocated ahead, bitmaps, data, even damaged blocks):
//! 1. new leaves and interior nodes (`btree::build_interior`) of the inode table, extent
//!    tree and directory index;
//! 2. the free-space map: new bitmap blocks, then its tree (leaves, interior nodes);
//! 3. a zeroed block as the new log head, so no stale block can pass as the first delta;
//! 4. one flush;
//! 5. the superblock, `sequence` + 1, into the slot *not* holding the superblock that was
//!    checked, with `log_delta` = (highest delta number seen in the superblock, the log or
//!    any block header) + 2, so no delta number is ever reused (FORMAT.md §6);
//! 6. one flush.
//!
//! **Why a crash during repair is safe.** Until step 5 completes, the newest valid
//! superblock is still the one that was checked, and nothing it reaches was written: the
//! image is exactly as damaged as before, and fsck can run again. A torn step 5 leaves that
//! slot invalid, so the old superblock still wins. After step 6 the new superblock wins, and
//! everything it reaches was flushed in step 4.
//!
//! **Memory** is bounded by the metadata: the decoded entries of the trees (about the bytes
//! of their leaves) plus a few bitsets of one bit per block; blocks are written in batches
//! of [`WRITE_BATCH`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tuxfs_engine::btree::build_interior;
use tuxfs_engine::dev::{AlignedBuf, BlockDevice, WriteRequest};
use tuxfs_engine::format::btree::{Key, Leaf, leaf_entry_cost, leaf_space};
use tuxfs_engine::format::dirent::{self, DT_DIR, Dirent, dtype_of_mode};
use tuxfs_engine::format::extent::Extent;
use tuxfs_engine::format::hash::NameHasher;
use tuxfs_engine::format::inode::{Inode, S_IFDIR, Timestamp};
use tuxfs_engine::format::superblock::STATE_CLEAN;
use tuxfs_engine::format::{
    BlockHeader, FIRST_USER_INUM, HEADER_SIZE, Kind, LOST_FOUND_INUM, ROOT_INUM, Superblock,
    TreeId, TreeRoot, bitmap,
};

use crate::bitset::Bitset;
use crate::salvage::Names;
use crate::walk::{Checker, EntryInfo, Kept};

/// Blocks handed to the device per submission.
pub(crate) const WRITE_BATCH: usize = 256;

/// Why a repair could not be written.
#[derive(Debug)]
pub(crate) enum RepairError {
    /// The repaired metadata does not fit in the blocks that are free (nothing was changed
    /// that any superblock reaches).
    NoSpace(String),
    /// The device failed.
    Io(String),
}

/// The repaired logical state: every tree's entries.
#[derive(Debug)]
pub(crate) struct Repaired {
    pub inodes: BTreeMap<u64, Inode>,
    pub dirents: BTreeMap<Key, Dirent>,
    pub extents: BTreeMap<Key, Extent>,
    /// Blocks the repaired state keeps from the old one: data and xattr spill blocks.
    pub kept_blocks: Bitset,
    pub next_inum: u64,
    /// The highest delta number seen anywhere (superblock, log, block headers).
    pub max_delta: u64,
}

/// What was done, for the report.
#[derive(Debug)]
pub(crate) struct Written {
    pub superblock: Superblock,
    pub slot: u64,
    pub blocks_written: u64,
}

fn now() -> Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Timestamp { sec: secs, nsec: 0 }
}

fn new_directory(mode: u32, parent: u64) -> Inode {
    let t = now();
    Inode {
        mode: S_IFDIR | mode,
        nlink: 2,
        parent,
        atime: t,
        mtime: t,
        ctime: t,
        btime: t,
        ..Inode::default()
    }
}

/// Computes the repaired state from what the walk kept (see the module comment, 1–9).
pub(crate) fn repaired_state(ck: &mut Checker<'_>) -> Repaired {
    let sb = ck.sb.clone();
    let kept = ck.kept.take().unwrap_or_else(|| Kept {
        inodes: BTreeMap::new(),
        extents: BTreeMap::new(),
        xattr_chains: BTreeMap::new(),
        metadata: Bitset::new(sb.block_count),
        max_delta: 0,
    });
    let Kept {
        mut inodes,
        extents,
        xattr_chains,
        metadata,
        max_delta,
    } = kept;
    // 1. The root.
    match inodes.get_mut(&ROOT_INUM) {
        Some(root) if root.is_dir() => root.parent = ROOT_INUM,
        _ => {
            inodes.insert(ROOT_INUM, new_directory(0o755, ROOT_INUM));
        }
    }
    // 2. Entries.
    let mut dirents = keep_entries(&inodes, &ck.entries);
    // 3. Orphan cleanup.
    let orphans: BTreeSet<u64> = ck.orphans.iter().copied().collect();
    free_unnamed(&mut inodes, &mut dirents, &orphans);
    // 4. and 5. lost+found and everything disconnected.
    let mut next_inum = ck
        .next_inum
        .max(FIRST_USER_INUM)
        .max(inodes.keys().next_back().map_or(0, |n| n + 1));
    let lost_found = lost_and_found(&mut inodes, &mut dirents, &sb.name_hasher(), &mut next_inum);
    let attached = reconnect(&inodes, &mut dirents, lost_found, &sb.name_hasher());
    // 6. Parents and link counts.
    set_links(&mut inodes, &dirents);
    // 7. Extents and block counts; 8. xattr chains.
    let mut owned = Bitset::new(sb.block_count);
    let (extents, cut) = keep_extents(&mut inodes, extents, &metadata, &mut owned, &sb);
    report_losses(ck, &inodes, &dirents, &extents, &cut, &attached, lost_found);
    let mut dropped_chains = Vec::new();
    for (inum, inode) in inodes.iter_mut() {
        if inode.xattr_block == 0 {
            continue;
        }
        let chain = xattr_chains.get(inum).cloned().flatten();
        match chain {
            Some(blocks) if blocks.iter().all(|&b| !owned.get(b)) => {
                for b in blocks {
                    owned.set(b);
                }
            }
            _ => {
                inode.xattr_block = 0;
                dropped_chains.push(*inum);
            }
        }
    }
    report_lost_xattrs(ck, &dirents, &dropped_chains);
    Repaired {
        inodes,
        dirents,
        extents,
        kept_blocks: owned,
        next_inum,
        max_delta,
    }
}

/// Step 2: entries whose directory and target exist, with the target's type; one name per
/// directory.
fn keep_entries(inodes: &BTreeMap<u64, Inode>, entries: &[EntryInfo]) -> BTreeMap<Key, Dirent> {
    let mut dirents = BTreeMap::new();
    let mut dir_names: HashMap<u64, Vec<Key>> = HashMap::new();
    for e in entries {
        if !inodes.get(&e.dir).is_some_and(Inode::is_dir) || e.inum == ROOT_INUM {
            continue;
        }
        let Some(target) = inodes.get(&e.inum) else {
            continue;
        };
        let key = Key::new(e.dir, e.pos);
        if target.is_dir() {
            dir_names.entry(e.inum).or_default().push(key);
        }
        dirents.insert(
            key,
            Dirent {
                inum: e.inum,
                dtype: dtype_of_mode(target.mode),
                name: e.name.clone(),
            },
        );
    }
    for (inum, names) in dir_names {
        if names.len() < 2 {
            continue;
        }
        let parent = inodes.get(&inum).map_or(0, |i| i.parent);
        let keep = names
            .iter()
            .find(|k| k.a == parent)
            .or(names.first())
            .copied();
        for k in names {
            if Some(k) != keep {
                dirents.remove(&k);
            }
        }
    }
    dirents
}

/// Names per inode and subdirectories per directory.
fn count_names(dirents: &BTreeMap<Key, Dirent>) -> (HashMap<u64, u32>, HashMap<u64, u32>) {
    let mut names: HashMap<u64, u32> = HashMap::new();
    let mut subdirs: HashMap<u64, u32> = HashMap::new();
    for (k, d) in dirents {
        *names.entry(d.inum).or_default() += 1;
        if d.dtype == DT_DIR {
            *subdirs.entry(k.a).or_default() += 1;
        }
    }
    (names, subdirs)
}

/// Removes every entry of directory `dir`.
fn drop_dir_entries(dirents: &mut BTreeMap<Key, Dirent>, dir: u64) {
    let keys: Vec<Key> = dirents
        .range(Key::new(dir, 0)..=Key::new(dir, u64::MAX))
        .map(|(k, _)| *k)
        .collect();
    for k in keys {
        dirents.remove(&k);
    }
}

/// Step 3: frees unnamed inodes on the orphan list or with no links, until none is left.
fn free_unnamed(
    inodes: &mut BTreeMap<u64, Inode>,
    dirents: &mut BTreeMap<Key, Dirent>,
    orphans: &BTreeSet<u64>,
) {
    // Each round frees at least one inode, so this ends within inodes.len() rounds.
    loop {
        let (names, _) = count_names(dirents);
        let doomed: Vec<u64> = inodes
            .iter()
            .filter(|(n, i)| {
                **n != ROOT_INUM
                    && !names.contains_key(*n)
                    && (orphans.contains(*n) || i.nlink == 0)
            })
            .map(|(n, _)| *n)
            .collect();
        if doomed.is_empty() {
            return;
        }
        for inum in doomed {
            inodes.remove(&inum);
            drop_dir_entries(dirents, inum);
        }
        // Entries naming a freed inode go too.
        dirents.retain(|_, d| inodes.contains_key(&d.inum));
    }
}

/// Adds an entry `name` → `inum` to `dir` at the first free position for the name.
/// Returns false when every base and overflow position of the name's hash is taken.
fn add_entry(
    dirents: &mut BTreeMap<Key, Dirent>,
    seed: &NameHasher,
    dir: u64,
    name: &[u8],
    inum: u64,
    dtype: u8,
) -> bool {
    let hash = seed.hash(name);
    let (base, _) = dirent::base_range(hash);
    let (over_start, over_end) = dirent::overflow_range(hash);
    // The smallest free base position, else the overflow position after the last one used
    // (the engine's rule, engine::dir::free_position).
    let free = (base..dirent::base_range(hash).1)
        .find(|&p| !dirents.contains_key(&Key::new(dir, p)))
        .or_else(|| {
            match dirents
                .range(Key::new(dir, over_start)..Key::new(dir, over_end))
                .next_back()
            {
                None => Some(over_start),
                Some((k, _)) => (k.b + 1 < over_end).then_some(k.b + 1),
            }
        });
    let Some(pos) = free else { return false };
    dirents.insert(
        Key::new(dir, pos),
        Dirent {
            inum,
            dtype,
            name: name.to_vec(),
        },
    );
    true
}

/// Step 4: the inode number of `lost+found`, made if needed.
fn lost_and_found(
    inodes: &mut BTreeMap<u64, Inode>,
    dirents: &mut BTreeMap<Key, Dirent>,
    seed: &NameHasher,
    next_inum: &mut u64,
) -> u64 {
    const NAME: &[u8] = b"lost+found";
    let named: Vec<(Key, u64)> = dirents
        .range(Key::new(ROOT_INUM, 0)..=Key::new(ROOT_INUM, u64::MAX))
        .filter(|(_, d)| d.name == NAME)
        .map(|(k, d)| (*k, d.inum))
        .collect();
    for (key, inum) in named {
        if inodes.get(&inum).is_some_and(Inode::is_dir) {
            return inum;
        }
        // A non-directory by that name: it loses the name and is attached like any other
        // disconnected inode.
        dirents.remove(&key);
    }
    let (names, _) = count_names(dirents);
    let reuse = inodes
        .get(&LOST_FOUND_INUM)
        .is_some_and(|i| i.is_dir() && !names.contains_key(&LOST_FOUND_INUM));
    let inum = if reuse {
        LOST_FOUND_INUM
    } else if !inodes.contains_key(&LOST_FOUND_INUM) {
        inodes.insert(LOST_FOUND_INUM, new_directory(0o700, ROOT_INUM));
        LOST_FOUND_INUM
    } else {
        let n = *next_inum;
        *next_inum += 1;
        inodes.insert(n, new_directory(0o700, ROOT_INUM));
        n
    };
    // The root has at most 256 entries per name hash; "lost+found" had none (above).
    add_entry(dirents, seed, ROOT_INUM, NAME, inum, DT_DIR);
    inum
}

/// Step 5: attaches every inode the root does not reach under `lost+found`.
fn reconnect(
    inodes: &BTreeMap<u64, Inode>,
    dirents: &mut BTreeMap<Key, Dirent>,
    lost_found: u64,
    seed: &NameHasher,
) -> Vec<(u64, String)> {
    let mut attached = Vec::new();
    let mut children: HashMap<u64, Vec<u64>> = HashMap::new();
    // The naming entry of each directory (directories have at most one after step 2).
    let mut dir_name: HashMap<u64, Key> = HashMap::new();
    let mut named: BTreeSet<u64> = BTreeSet::new();
    for (k, d) in dirents.iter() {
        children.entry(k.a).or_default().push(d.inum);
        named.insert(d.inum);
        if d.dtype == DT_DIR {
            dir_name.insert(d.inum, *k);
        }
    }
    let mut reached: BTreeSet<u64> = BTreeSet::from([ROOT_INUM]);
    let mut todo = vec![ROOT_INUM];
    while let Some(dir) = todo.pop() {
        for &c in children.get(&dir).into_iter().flatten() {
            if reached.insert(c) && inodes.get(&c).is_some_and(Inode::is_dir) {
                todo.push(c);
            }
        }
    }
    let mut tops: Vec<u64> = Vec::new();
    let mut resolved: BTreeSet<u64> = BTreeSet::new();
    for (&inum, inode) in inodes {
        if reached.contains(&inum) || resolved.contains(&inum) {
            continue;
        }
        if !inode.is_dir() {
            // A file named only in disconnected directories comes back with them.
            if !named.contains(&inum) {
                tops.push(inum);
            }
            continue;
        }
        // Walk up through the naming entries to the top of the disconnected subtree.
        let mut path: BTreeSet<u64> = BTreeSet::new();
        let mut cur = inum;
        loop {
            if resolved.contains(&cur) {
                break;
            }
            if !path.insert(cur) {
                // A cycle of directories: cut it here.
                if let Some(k) = dir_name.remove(&cur) {
                    dirents.remove(&k);
                }
                tops.push(cur);
                break;
            }
            match dir_name.get(&cur) {
                Some(k) => cur = k.a,
                None => {
                    tops.push(cur);
                    break;
                }
            }
        }
        resolved.extend(path);
    }
    for inum in tops {
        let dtype = inodes.get(&inum).map_or(0, |i| dtype_of_mode(i.mode));
        let base = format!("#{inum}");
        // Another run may have left the same name there already: add a suffix.
        for n in 0u32.. {
            let name = if n == 0 {
                base.clone()
            } else {
                format!("{base}.{n}")
            };
            if name_taken(dirents, seed, lost_found, name.as_bytes()) {
                continue;
            }
            if add_entry(dirents, seed, lost_found, name.as_bytes(), inum, dtype) {
                attached.push((inum, name));
                break;
            }
        }
    }
    attached
}

/// True when `dir` has an entry named `name`.
fn name_taken(dirents: &BTreeMap<Key, Dirent>, seed: &NameHasher, dir: u64, name: &[u8]) -> bool {
    let hash = seed.hash(name);
    [dirent::base_range(hash), dirent::overflow_range(hash)]
        .into_iter()
        .any(|(start, end)| {
            dirents
                .range(Key::new(dir, start)..Key::new(dir, end))
                .any(|(_, d)| d.name == name)
        })
}

/// Step 6: parent fields and link counts from the entries.
fn set_links(inodes: &mut BTreeMap<u64, Inode>, dirents: &BTreeMap<Key, Dirent>) {
    let (names, subdirs) = count_names(dirents);
    let mut parent_of: HashMap<u64, u64> = HashMap::new();
    for (k, d) in dirents {
        if d.dtype == DT_DIR {
            parent_of.insert(d.inum, k.a);
        }
    }
    for (inum, inode) in inodes.iter_mut() {
        if inode.is_dir() {
            inode.parent = if *inum == ROOT_INUM {
                ROOT_INUM
            } else {
                parent_of.get(inum).copied().unwrap_or(ROOT_INUM)
            };
            inode.nlink = 2 + subdirs.get(inum).copied().unwrap_or(0);
        } else {
            inode.nlink = names.get(inum).copied().unwrap_or(0);
        }
    }
}

/// File-block ranges `[start, end)` per inode.
type FileRanges = BTreeMap<u64, Vec<(u64, u64)>>;

/// Step 7: extents of live inodes; block counts. Extents compete for data blocks and for
/// file ranges in order of the delta of the leaf they came from, newest first (then key
/// order): a block a verified metadata block or an earlier extent owns, or a file block an
/// earlier extent maps, is cut out (which may split an extent). Returns the extents kept
/// and, per inode, the file blocks that were cut.
fn keep_extents(
    inodes: &mut BTreeMap<u64, Inode>,
    extents: BTreeMap<Key, (Extent, u64)>,
    metadata: &Bitset,
    owned: &mut Bitset,
    sb: &Superblock,
) -> (BTreeMap<Key, Extent>, FileRanges) {
    let mut order: Vec<(Key, Extent, u64)> = extents
        .into_iter()
        .filter(|(k, _)| inodes.contains_key(&k.a))
        .map(|(k, (e, d))| (k, e, d))
        .collect();
    order.sort_by(|x, y| y.2.cmp(&x.2).then(x.0.cmp(&y.0)));
    let mut out = BTreeMap::new();
    let mut mapped: FileRanges = BTreeMap::new();
    let mut cut: FileRanges = BTreeMap::new();
    let mut counts: HashMap<u64, u64> = HashMap::new();
    for (key, ext, _) in order {
        let mut run: Option<(u64, Extent)> = None;
        let mut keep = |run: &mut Option<(u64, Extent)>, out: &mut BTreeMap<Key, Extent>| {
            if let Some((fb, e)) = run.take() {
                *counts.entry(key.a).or_default() += e.count();
                out.insert(Key::new(key.a, fb), e);
            }
        };
        let maps = mapped.get(&key.a).cloned().unwrap_or_default();
        for (i, crc) in ext.crcs.iter().enumerate() {
            let phys = ext.phys + i as u64;
            let fb = key.b + i as u64;
            let taken = maps.iter().any(|&(s, e)| s <= fb && fb < e);
            let ok = !taken
                && phys >= sb.first_block
                && phys < sb.block_count
                && !metadata.get(phys)
                && !owned.set(phys);
            if ok {
                let r = run.get_or_insert_with(|| {
                    (
                        fb,
                        Extent {
                            phys,
                            flags: ext.flags,
                            crcs: Vec::new(),
                        },
                    )
                });
                r.1.crcs.push(*crc);
            } else {
                if !taken {
                    add_range(cut.entry(key.a).or_default(), fb, fb + 1);
                }
                keep(&mut run, &mut out);
            }
        }
        keep(&mut run, &mut out);
        let m = mapped.entry(key.a).or_default();
        add_range(m, key.b, key.b + ext.count());
    }
    for (inum, inode) in inodes.iter_mut() {
        inode.blocks = counts.get(inum).copied().unwrap_or(0);
    }
    (out, cut)
}

/// Adds `[s, e)` to sorted, disjoint ranges (merging neighbours).
fn add_range(ranges: &mut Vec<(u64, u64)>, s: u64, e: u64) {
    ranges.push((s, e));
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for &(s, e) in ranges.iter() {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    *ranges = merged;
}

/// `ranges` minus `covered` (both sorted and disjoint).
fn subtract(ranges: &[(u64, u64)], covered: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(mut s, e) in ranges {
        for &(cs, ce) in covered {
            if ce <= s || cs >= e {
                continue;
            }
            if cs > s {
                out.push((s, cs));
            }
            s = s.max(ce);
            if s >= e {
                break;
            }
        }
        if s < e {
            out.push((s, e));
        }
    }
    out
}

/// Reports, per file, what the repair could not save: byte ranges of files whose extents
/// were lost with a damaged leaf that no salvaged copy replaced, or were cut; files whose
/// inode record was lost; inodes moved to `lost+found` because every name was lost.
fn report_losses(
    ck: &mut Checker<'_>,
    inodes: &BTreeMap<u64, Inode>,
    dirents: &BTreeMap<Key, Dirent>,
    extents: &BTreeMap<Key, Extent>,
    cut: &FileRanges,
    attached: &[(u64, String)],
    lost_found: u64,
) {
    let names = Names::from_pairs(dirents.iter().map(|(k, d)| (k.a, d.inum, d.name.clone())));
    let old_names = Names::new(&ck.entries);
    let bs = u64::from(ck.sb.block_size);
    let lost = ck.lost.clone();
    let in_lost = |tree: TreeId, key: Key| {
        lost.iter()
            .any(|h| h.tree == tree && h.lo <= key && h.hi.is_none_or(|hi| key < hi))
    };
    let mut findings = Vec::new();
    // File blocks that were cut, or whose keys lie in a lost range of the extent tree; only
    // inodes inside a lost range are visited, so this is bounded by what was lost.
    let mut suspects: FileRanges = cut.clone();
    for h in lost.iter().filter(|h| h.tree == TreeId::Extents) {
        let hi = h.hi.unwrap_or(Key::new(u64::MAX, u64::MAX));
        for (&inum, _) in inodes.range(h.lo.a..=hi.a) {
            if hi.a == inum && hi.b == 0 {
                continue;
            }
            let s = if h.lo.a == inum { h.lo.b } else { 0 };
            let e = if hi.a == inum { hi.b } else { u64::MAX };
            add_range(suspects.entry(inum).or_default(), s, e);
        }
    }
    for (inum, suspect) in suspects {
        let Some(inode) = inodes.get(&inum) else {
            continue;
        };
        if inode.is_dir() || inode.size == 0 {
            continue;
        }
        let blocks = inode.size.div_ceil(bs);
        let suspect = subtract(&suspect, &[(blocks, u64::MAX)]);
        if suspect.is_empty() {
            continue;
        }
        let covered: Vec<(u64, u64)> = extents
            .range(Key::new(inum, 0)..=Key::new(inum, u64::MAX))
            .map(|(k, e)| (k.b, k.b.saturating_add(e.count())))
            .collect();
        let gone = subtract(&suspect, &covered);
        if gone.is_empty() {
            continue;
        }
        let bytes: Vec<String> = gone
            .iter()
            .map(|&(s, e)| {
                let end = e.saturating_mul(bs).min(inode.size);
                format!("{}..{end}", s.saturating_mul(bs))
            })
            .collect();
        findings.push(format!(
            "lost data: {} (inode {inum}): bytes {} have no extent left and read as zeros",
            names.path(inum),
            bytes.join(", ")
        ));
    }
    for e in &ck.entries {
        if !inodes.contains_key(&e.inum) && in_lost(TreeId::Inodes, Key::new(e.inum, 0)) {
            findings.push(format!(
                "lost file: {}/{} (inode {}): its inode record was in a damaged leaf",
                old_names.path(e.dir),
                String::from_utf8_lossy(&e.name),
                e.inum
            ));
        }
    }
    // An inode whose every name was lost (with a damaged leaf of the directory index, or
    // with its directory) is named in lost+found.
    for (inum, name) in attached {
        let what = match inodes.get(inum) {
            Some(i) if i.is_dir() => {
                // The parent field as found, before repair set it to lost+found.
                let was = ck.inodes.get(inum).map_or(0, |w| w.parent);
                format!("a directory, was in {}", names.path(was))
            }
            Some(i) => format!("{} bytes, {} links", i.size, i.nlink),
            None => "gone".into(),
        };
        findings.push(format!(
            "lost name: inode {inum} ({what}) is now {}/{name}",
            names.path(lost_found)
        ));
    }
    for what in findings {
        ck.finding(None, what);
    }
}

/// Step 8's report: per inode whose spill chain was dropped, its path and what it lost
/// (the attributes in the record itself are kept).
fn report_lost_xattrs(ck: &mut Checker<'_>, dirents: &BTreeMap<Key, Dirent>, dropped: &[u64]) {
    if dropped.is_empty() {
        return;
    }
    let names = Names::from_pairs(dirents.iter().map(|(k, d)| (k.a, d.inum, d.name.clone())));
    for inum in dropped {
        let why = ck
            .xattr_damage
            .get(inum)
            .cloned()
            .unwrap_or_else(|| "its spill blocks are claimed by other data".into());
        let what = format!(
            "lost xattrs: {} (inode {inum}): {why}; repair drops the spilled attributes",
            names.path(*inum)
        );
        ck.finding(None, what);
    }
}

/// Hands out blocks that are free in the repaired state and unused by the current one.
struct Placer {
    avoid: Bitset,
    used: Bitset,
    cursor: u64,
    end: u64,
}

impl Placer {
    fn take(&mut self) -> Result<u64, RepairError> {
        while self.cursor < self.end {
            let b = self.cursor;
            self.cursor += 1;
            if !self.avoid.get(b) {
                self.used.set(b);
                return Ok(b);
            }
        }
        Err(RepairError::NoSpace(
            "no free block left for the repaired metadata".into(),
        ))
    }
}

/// Batches block writes.
struct Writer<'a> {
    dev: &'a dyn BlockDevice,
    block_size: u32,
    pending: Vec<WriteRequest>,
    written: u64,
}

impl Writer<'_> {
    fn put(&mut self, block: u64, buf: AlignedBuf) -> Result<(), RepairError> {
        self.pending.push(WriteRequest {
            offset: block * u64::from(self.block_size),
            data: Arc::new(buf),
        });
        self.written += 1;
        if self.pending.len() >= WRITE_BATCH {
            self.submit()?;
        }
        Ok(())
    }

    fn submit(&mut self) -> Result<(), RepairError> {
        let reqs = std::mem::take(&mut self.pending);
        if reqs.is_empty() {
            return Ok(());
        }
        self.dev
            .submit_writes(reqs)
            .map_err(|e| RepairError::Io(format!("write failed: {e}")))
    }

    fn flush(&mut self) -> Result<(), RepairError> {
        self.submit()?;
        self.dev
            .flush()
            .map_err(|e| RepairError::Io(format!("flush failed: {e}")))
    }
}

/// Builds one tree from sorted entries: leaves packed greedily, then interior nodes.
fn write_tree<'v>(
    tree: TreeId,
    entries: impl Iterator<Item = (Key, Vec<u8>)> + 'v,
    header: BlockHeader,
    place: &mut Placer,
    out: &mut Writer<'_>,
) -> Result<TreeRoot, RepairError> {
    let bs = out.block_size;
    let space = leaf_space(bs);
    let mut leaves: Vec<(Key, u64)> = Vec::new();
    let mut chunk: Vec<(Key, Vec<u8>)> = Vec::new();
    let mut used = 0usize;
    let mut emit = |chunk: &mut Vec<(Key, Vec<u8>)>,
                    leaves: &mut Vec<(Key, u64)>|
     -> Result<(), RepairError> {
        let block = place.take()?;
        let lo = if leaves.is_empty() {
            Key::MIN
        } else {
            chunk.first().map_or(Key::MIN, |(k, _)| *k)
        };
        let refs: Vec<(Key, &[u8])> = chunk.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        let mut buf = AlignedBuf::zeroed(bs as usize);
        let h = BlockHeader {
            kind: Kind::BtreeLeaf,
            level: 0,
            blocknr: block,
            owner: tree as u64,
            ..header
        };
        Leaf::encode(&mut buf, &h, &refs);
        out.put(block, buf)?;
        leaves.push((lo, block));
        chunk.clear();
        Ok(())
    };
    for (key, value) in entries {
        let cost = leaf_entry_cost(value.len());
        if used + cost > space && !chunk.is_empty() {
            emit(&mut chunk, &mut leaves)?;
            used = 0;
        }
        used += cost;
        chunk.push((key, value));
    }
    if !chunk.is_empty() {
        emit(&mut chunk, &mut leaves)?;
    }
    let mut failed = None;
    let (root, nodes) =
        build_interior(
            tree,
            &leaves,
            bs,
            header.delta,
            header.fs_id,
            &mut || match place.take() {
                Ok(b) => Ok(b),
                Err(e) => {
                    failed = Some(e);
                    Err(tuxfs_engine::Error::invalid("no space"))
                }
            },
        )
        .map_err(|e| failed.take().unwrap_or(RepairError::NoSpace(e.to_string())))?;
    for (block, buf) in nodes {
        out.put(block, buf)?;
    }
    Ok(root)
}

/// Writes `state` as a fresh metadata set and a new superblock (see the module comment).
pub(crate) fn write(
    dev: &dyn BlockDevice,
    sb: &Superblock,
    slot: u64,
    referenced: &Bitset,
    state: &Repaired,
) -> Result<Written, RepairError> {
    let bs = sb.block_size;
    let new_delta = state.max_delta.saturating_add(2);
    let header = BlockHeader {
        kind: Kind::BtreeLeaf,
        level: 0,
        blocknr: 0,
        owner: 0,
        delta: new_delta - 1,
        fs_id: sb.fs_id(),
    };
    let mut avoid = Bitset::new(sb.block_count);
    let mut used = Bitset::new(sb.block_count);
    for b in 0..sb.first_block {
        avoid.set(b);
        used.set(b);
    }
    for b in sb.first_block..sb.block_count {
        let kept = state.kept_blocks.get(b);
        if kept {
            used.set(b);
        }
        if kept || referenced.get(b) {
            avoid.set(b);
        }
    }
    let mut place = Placer {
        avoid,
        used,
        cursor: sb.first_block,
        end: sb.block_count,
    };
    let mut out = Writer {
        dev,
        block_size: bs,
        pending: Vec::new(),
        written: 0,
    };
    let mut new = sb.clone();
    let inodes = state
        .inodes
        .iter()
        .map(|(n, i)| (Key::new(*n, 0), i.encode()));
    new.set_root(
        TreeId::Inodes,
        write_tree(TreeId::Inodes, inodes, header, &mut place, &mut out)?,
    );
    let extents = state.extents.iter().map(|(k, e)| (*k, e.encode(bs)));
    new.set_root(
        TreeId::Extents,
        write_tree(TreeId::Extents, extents, header, &mut place, &mut out)?,
    );
    let dirents = state.dirents.iter().map(|(k, d)| (*k, d.encode()));
    new.set_root(
        TreeId::Dirs,
        write_tree(TreeId::Dirs, dirents, header, &mut place, &mut out)?,
    );
    new.set_root(TreeId::Orphans, TreeRoot::default());
    // The free-space map: bitmap blocks first (their numbers are the map's values), then
    // the map tree and the log head, and only then the bits, which include all of them.
    let chunks = bitmap::chunk_count(bs, sb.block_count);
    let chunk_blocks: Vec<u64> = (0..chunks)
        .map(|_| place.take())
        .collect::<Result<_, _>>()?;
    let map = chunk_blocks.iter().enumerate().map(|(c, b)| {
        (
            Key::new(c as u64, 0),
            tuxfs_engine::format::btree::encode_block_ref(*b),
        )
    });
    new.set_root(
        TreeId::Freemap,
        write_tree(TreeId::Freemap, map, header, &mut place, &mut out)?,
    );
    let log_head = place.take()?;
    out.put(log_head, AlignedBuf::zeroed(bs as usize))?;
    let per = bitmap::bits_per_chunk(bs);
    for (c, &block) in chunk_blocks.iter().enumerate() {
        let first = c as u64 * per;
        let mut bits = vec![0u8; bs as usize - HEADER_SIZE];
        for b in first..sb.block_count.min(first + per) {
            if place.used.get(b) {
                bitmap::set_bit(&mut bits, b - first, true);
            }
        }
        let mut buf = AlignedBuf::zeroed(bs as usize);
        let h = BlockHeader {
            kind: Kind::Bitmap,
            blocknr: block,
            owner: c as u64,
            ..header
        };
        bitmap::encode(&mut buf, &h, &bits);
        out.put(block, buf)?;
    }
    out.flush()?;

    new.sequence += 1;
    new.unify_seq += 1;
    new.delta = new_delta - 1;
    new.log_head = log_head;
    new.log_delta = new_delta;
    new.next_inum = state.next_inum;
    new.inode_count = state.inodes.len() as u64;
    new.free_blocks = sb.block_count - place.used.count();
    new.state = STATE_CLEAN;
    new.last_write_sec = now().sec;
    new.validate(0)
        .map_err(|e| RepairError::Io(format!("the repaired superblock does not validate: {e}")))?;
    let target = 1 - slot.min(1);
    let mut buf = AlignedBuf::zeroed(bs as usize);
    new.encode(&mut buf, target);
    out.put(target, buf)?;
    out.flush()?;
    Ok(Written {
        superblock: new,
        slot: target,
        blocks_written: out.written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_ranges_merge_and_subtract() {
        let mut r = Vec::new();
        add_range(&mut r, 5, 8);
        add_range(&mut r, 1, 3);
        add_range(&mut r, 3, 4);
        add_range(&mut r, 7, 10);
        assert_eq!(r, vec![(1, 4), (5, 10)]);
        assert_eq!(subtract(&r, &[(2, 6)]), vec![(1, 2), (6, 10)]);
        assert_eq!(subtract(&r, &[(0, 100)]), vec![]);
        assert_eq!(subtract(&[(0, u64::MAX)], &[(4, u64::MAX)]), vec![(0, 4)]);
    }

    #[test]
    fn strip_cycle_and_lost_found() {
        let seed = NameHasher::siphash([7u8; 16]);
        let mut inodes = BTreeMap::new();
        inodes.insert(ROOT_INUM, new_directory(0o755, ROOT_INUM));
        // 20 and 21 name each other: a cycle cut off from the root.
        inodes.insert(20, new_directory(0o755, 21));
        inodes.insert(21, new_directory(0o755, 20));
        let mut file = Inode {
            mode: tuxfs_engine::format::inode::S_IFREG | 0o644,
            nlink: 1,
            ..Inode::default()
        };
        inodes.insert(30, file.clone());
        file.nlink = 0;
        inodes.insert(31, file);
        let mut dirents = BTreeMap::new();
        add_entry(&mut dirents, &seed, 20, b"b", 21, DT_DIR);
        add_entry(&mut dirents, &seed, 21, b"a", 20, DT_DIR);
        free_unnamed(&mut inodes, &mut dirents, &BTreeSet::new());
        assert!(!inodes.contains_key(&31), "no links, no name: freed");
        let mut next = 40;
        let lf = lost_and_found(&mut inodes, &mut dirents, &seed, &mut next);
        assert_eq!(lf, LOST_FOUND_INUM);
        reconnect(&inodes, &mut dirents, lf, &seed);
        set_links(&mut inodes, &dirents);
        let in_lf: Vec<&Dirent> = dirents
            .range(Key::new(lf, 0)..=Key::new(lf, u64::MAX))
            .map(|(_, d)| d)
            .collect();
        assert_eq!(in_lf.len(), 2, "{in_lf:?}");
        assert_eq!(inodes[&30].nlink, 1);
        assert_eq!(inodes[&lf].nlink, 3);
    }
}
