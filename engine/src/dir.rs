//! Directories: entries in the hashed directory index, key (directory, position).

use crate::format::btree::Key;
use crate::format::dirent::{self, Dirent};
use crate::format::hash::{POS_SEQ_MAX, name_hash};
use crate::state::State;
use crate::{Errno, Result};

/// The entry named `name` in `dir`: (position, entry).
pub fn lookup(st: &mut State, dir: u64, name: &[u8]) -> Result<Option<(u64, Dirent)>> {
    let hash = name_hash(&st.sb.hash_seed, name);
    let from = Key::new(dir, hash);
    let to = Key::new(dir, hash + POS_SEQ_MAX + 1);
    for (key, value) in st
        .dirs
        .range(from, to, (POS_SEQ_MAX + 1) as usize, &st.io)?
    {
        let d = Dirent::decode(&value, dir, key.b, None)?;
        if d.name == name {
            return Ok(Some((key.b, d)));
        }
    }
    Ok(None)
}

/// The position a new entry named `name` would take in `dir`: the smallest collision
/// counter not in use for its hash. ENOSPC when all 256 are taken.
pub fn free_position(st: &mut State, dir: u64, name: &[u8]) -> Result<u64> {
    let hash = name_hash(&st.sb.hash_seed, name);
    let used: Vec<u64> = st
        .dirs
        .range(
            Key::new(dir, hash),
            Key::new(dir, hash + POS_SEQ_MAX + 1),
            (POS_SEQ_MAX + 1) as usize,
            &st.io,
        )?
        .into_iter()
        .map(|(k, _)| k.b - hash)
        .collect();
    let seq = (0..=POS_SEQ_MAX)
        .find(|s| !used.contains(s))
        .ok_or(Errno::NoSpace)?;
    Ok(hash | seq)
}

/// Stores an entry at a position from [`free_position`].
pub fn insert_at(
    st: &mut State,
    dir: u64,
    pos: u64,
    name: &[u8],
    inum: u64,
    dtype: u8,
) -> Result<()> {
    let entry = Dirent {
        inum,
        dtype,
        name: name.to_vec(),
    }
    .encode();
    st.dirs.insert(Key::new(dir, pos), entry, &st.io)
}

/// Adds an entry; the caller checked that the name is free. Returns its position.
pub fn add(st: &mut State, dir: u64, name: &[u8], inum: u64, dtype: u8) -> Result<u64> {
    let pos = free_position(st, dir, name)?;
    insert_at(st, dir, pos, name, inum, dtype)?;
    Ok(pos)
}

/// Replaces the target of the entry at `pos` (same name, same position).
pub fn retarget(
    st: &mut State,
    dir: u64,
    pos: u64,
    name: &[u8],
    inum: u64,
    dtype: u8,
) -> Result<()> {
    insert_at(st, dir, pos, name, inum, dtype)
}

/// Removes the entry at `pos`.
pub fn remove(st: &mut State, dir: u64, pos: u64) -> Result<()> {
    st.dirs.remove(Key::new(dir, pos), &st.io)?;
    Ok(())
}

/// True when `dir` has no entries.
pub fn is_empty(st: &mut State, dir: u64) -> Result<bool> {
    Ok(st
        .dirs
        .next(Key::new(dir, 0), Key::new(dir + 1, 0), &st.io)?
        .is_none())
}

/// Up to `max` entries of `dir` at positions >= `from`.
pub fn list(st: &mut State, dir: u64, from: u64, max: usize) -> Result<Vec<(u64, Dirent)>> {
    let rows = st
        .dirs
        .range(Key::new(dir, from), Key::new(dir + 1, 0), max, &st.io)?;
    rows.into_iter()
        .map(|(k, v)| Ok((k.b, Dirent::decode(&v, dir, k.b, None)?)))
        .collect()
}

/// Checks a name for a new entry: ENAMETOOLONG, or EINVAL for "/", NUL, "." and "..".
pub fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > crate::format::NAME_MAX {
        return Err(Errno::NameTooLong.into());
    }
    if !dirent::name_valid(name) {
        return Err(Errno::Invalid.into());
    }
    Ok(())
}
