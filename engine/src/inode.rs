//! Inode attributes in the inode table, and inode numbers.

use crate::format::btree::Key;
use crate::format::inode::Inode;
use crate::state::State;
use crate::{Errno, Result};

/// The inode `inum`, or ENOENT.
pub fn get(st: &State, inum: u64) -> Result<Inode> {
    let key = Key::new(inum, 0);
    let bytes = st.inodes.get(key, &st.io)?.ok_or(Errno::NoEntry)?;
    Inode::decode(&bytes, st.inodes.leaf_block(key))
}

/// Stores `inode` as `inum`.
pub fn put(st: &mut State, inum: u64, inode: &Inode) -> Result<()> {
    st.inodes.insert(Key::new(inum, 0), inode.encode(), &st.io)
}

/// Removes `inum` from the inode table.
pub fn remove(st: &mut State, inum: u64) -> Result<()> {
    if st.inodes.remove(Key::new(inum, 0), &st.io)?.is_some() {
        st.inode_count = st.inode_count.saturating_sub(1);
    }
    Ok(())
}

/// A fresh inode number.
pub fn allocate(st: &mut State) -> u64 {
    let inum = st.next_inum;
    st.next_inum += 1;
    st.inode_count += 1;
    inum
}
