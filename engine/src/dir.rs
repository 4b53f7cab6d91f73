//! Directories: entries in the hashed directory index, key (directory, position).

use crate::format::btree::Key;
use crate::format::dirent::{self, Dirent};
use crate::state::State;
use crate::{Errno, Result};

/// Entries read from the index per batch while scanning a hash's positions.
const SCAN_BATCH: usize = 256;

/// The entry named `name` among the positions `[start, end)` of `dir`.
fn find_in(
    st: &State,
    dir: u64,
    (start, end): (u64, u64),
    name: &[u8],
) -> Result<Option<(u64, Dirent)>> {
    let mut from = start;
    loop {
        let rows = st
            .dirs
            .range(Key::new(dir, from), Key::new(dir, end), SCAN_BATCH, &st.io)?;
        let Some((last, _)) = rows.last() else {
            return Ok(None);
        };
        let next = last.b + 1;
        for (key, value) in rows.iter() {
            let d = Dirent::decode(value, dir, key.b, None)?;
            if d.name == name {
                return Ok(Some((key.b, d)));
            }
        }
        if next >= end {
            return Ok(None);
        }
        from = next;
    }
}

/// The entry named `name` in `dir`: (position, entry). Looks at the name's 256 base
/// positions, then at its overflow positions (format::dirent).
pub fn lookup(st: &State, dir: u64, name: &[u8]) -> Result<Option<(u64, Dirent)>> {
    let hash = st.sb.name_hasher().hash(name);
    if let Some(found) = find_in(st, dir, dirent::base_range(hash), name)? {
        return Ok(Some(found));
    }
    find_in(st, dir, dirent::overflow_range(hash), name)
}

/// The smallest position in `[start, end)` of `dir` that no entry uses, scanning upward.
fn first_gap(st: &State, dir: u64, (start, end): (u64, u64)) -> Result<Option<u64>> {
    let mut want = start;
    loop {
        let rows = st
            .dirs
            .range(Key::new(dir, want), Key::new(dir, end), SCAN_BATCH, &st.io)?;
        for (key, _) in &rows {
            if key.b != want {
                return Ok(Some(want));
            }
            want += 1;
        }
        if rows.len() < SCAN_BATCH {
            return Ok((want < end).then_some(want));
        }
    }
}

/// The position a new entry named `name` would take in `dir`: the smallest base position
/// of its hash not in use; when all 256 are taken, the overflow position after the last
/// one in use (or the smallest free one once the counter reached its end). ENOSPC only when
/// 2^31 overflow positions are taken too.
pub fn free_position(st: &mut State, dir: u64, name: &[u8]) -> Result<u64> {
    let hash = st.sb.name_hasher().hash(name);
    if let Some(pos) = first_gap(st, dir, dirent::base_range(hash))? {
        return Ok(pos);
    }
    let (start, end) = dirent::overflow_range(hash);
    let last = st
        .dirs
        .prev(Key::new(dir, end - 1), Key::new(dir, start), &st.io)?;
    match last {
        None => Ok(start),
        Some((key, _)) if key.b + 1 < end => Ok(key.b + 1),
        Some(_) => Ok(first_gap(st, dir, (start, end))?.ok_or(Errno::NoSpace)?),
    }
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
pub fn is_empty(st: &State, dir: u64) -> Result<bool> {
    Ok(st
        .dirs
        .next(Key::new(dir, 0), Key::new(dir + 1, 0), &st.io)?
        .is_none())
}

/// Up to `max` entries of `dir` at positions >= `from`.
pub fn list(st: &State, dir: u64, from: u64, max: usize) -> Result<Vec<(u64, Dirent)>> {
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
