//! Cross-checks between trees: directory entries against inodes, link counts, parents,
//! connectivity, orphans, and block counts against extents.

use std::collections::{BTreeSet, HashMap, HashSet};

use tuxfs_engine::format::ROOT_INUM;
use tuxfs_engine::format::dirent::dtype_of_mode;
use tuxfs_engine::format::inode::S_IFDIR;

use crate::walk::Checker;

impl Checker<'_> {
    pub(crate) fn cross_check(&mut self) {
        let Some(root) = self.inodes.get(&ROOT_INUM).cloned() else {
            self.finding(
                None,
                format!("the root directory (inode {ROOT_INUM}) is missing"),
            );
            return;
        };
        if root.mode & 0o170000 != S_IFDIR || root.parent != ROOT_INUM {
            self.finding(
                None,
                "the root inode is not a directory that is its own parent",
            );
        }
        let beyond: Vec<u64> = self
            .inodes
            .range(self.next_inum.max(1)..)
            .map(|(n, _)| *n)
            .collect();
        for inum in beyond {
            self.finding_safe(
                None,
                format!(
                    "inode {inum} is at or past the next inode number {}",
                    self.next_inum
                ),
            );
        }
        let links = self.check_entries();
        self.check_link_counts(&links);
        self.check_connected(&links);
        self.check_orphans();
        self.check_block_counts();
    }

    /// Each entry's directory and target exist and agree; returns entries per target and
    /// subdirectories per directory.
    fn check_entries(&mut self) -> Links {
        let mut links = Links::default();
        let entries = std::mem::take(&mut self.entries);
        for e in &entries {
            let name = String::from_utf8_lossy(&e.name);
            match self.inodes.get(&e.dir) {
                Some(d) if d.mode & 0o170000 == S_IFDIR => {}
                Some(_) => self.finding(
                    None,
                    format!(
                        "entry '{name}' is in inode {}, which is not a directory",
                        e.dir
                    ),
                ),
                None => self.finding(
                    None,
                    format!(
                        "entry '{name}' is in directory {}, which does not exist",
                        e.dir
                    ),
                ),
            }
            let Some(target) = self.inodes.get(&e.inum).cloned() else {
                self.finding(
                    None,
                    format!(
                        "entry '{name}' in directory {} points to missing inode {}",
                        e.dir, e.inum
                    ),
                );
                continue;
            };
            if dtype_of_mode(target.mode) != e.dtype {
                self.finding_safe(
                    None,
                    format!(
                        "entry '{name}' in directory {} has type {} but inode {} has mode {:#o}",
                        e.dir, e.dtype, e.inum, target.mode
                    ),
                );
            }
            *links.to.entry(e.inum).or_default() += 1;
            if target.mode & 0o170000 == S_IFDIR {
                *links.subdirs.entry(e.dir).or_default() += 1;
                if target.parent != e.dir {
                    self.finding_safe(
                        None,
                        format!(
                            "directory {} is named '{name}' in directory {} but its parent says {}",
                            e.inum, e.dir, target.parent
                        ),
                    );
                }
            }
            links.children.entry(e.dir).or_default().push(e.inum);
        }
        self.entries = entries;
        links
    }

    fn check_link_counts(&mut self, links: &Links) {
        let inodes: Vec<(u64, u32, u32)> = self
            .inodes
            .iter()
            .map(|(n, i)| (*n, i.mode, i.nlink))
            .collect();
        for (inum, mode, nlink) in inodes {
            let named = links.to.get(&inum).copied().unwrap_or(0);
            let expected = if mode & 0o170000 == S_IFDIR {
                if inum != ROOT_INUM && named != 1 {
                    self.finding(
                        None,
                        format!("directory {inum} has {named} names, expected exactly 1"),
                    );
                }
                2 + links.subdirs.get(&inum).copied().unwrap_or(0)
            } else {
                named
            };
            if nlink != expected {
                self.finding_safe(
                    None,
                    format!("inode {inum} has link count {nlink}, but {expected} links were found"),
                );
            }
        }
    }

    fn check_connected(&mut self, links: &Links) {
        let mut seen = HashSet::from([ROOT_INUM]);
        let mut todo = vec![ROOT_INUM];
        while let Some(dir) = todo.pop() {
            for &child in links.children.get(&dir).into_iter().flatten() {
                if seen.insert(child)
                    && self
                        .inodes
                        .get(&child)
                        .is_some_and(|i| i.mode & 0o170000 == S_IFDIR)
                {
                    todo.push(child);
                }
            }
        }
        let orphans: BTreeSet<u64> = self.orphans.iter().copied().collect();
        let lost: Vec<u64> = self
            .inodes
            .keys()
            .filter(|n| !seen.contains(n) && !orphans.contains(n))
            .copied()
            .collect();
        for inum in lost {
            self.finding(
                None,
                format!("inode {inum} is not connected to the directory tree"),
            );
        }
    }

    fn check_orphans(&mut self) {
        let orphans = self.orphans.clone();
        let mut pending = Vec::new();
        for inum in &orphans {
            match self.inodes.get(inum) {
                None => self.finding_safe(
                    None,
                    format!("orphan list names inode {inum}, which does not exist"),
                ),
                Some(i) if i.nlink != 0 => self.finding_safe(
                    None,
                    format!(
                        "orphan list names inode {inum}, which still has {} links",
                        i.nlink
                    ),
                ),
                Some(_) => pending.push(*inum),
            }
        }
        // An orphan waiting for cleanup is a valid state (a mount frees it): -n notes it,
        // and a repair, which runs offline with nothing open, finishes the cleanup.
        if !pending.is_empty() {
            let what = format!(
                "{} inodes on the orphan list wait to be freed (first: {})",
                pending.len(),
                pending[0]
            );
            if self.opts.mode == crate::Mode::Check {
                self.notes.push(what);
            } else {
                self.finding_safe(None, what);
            }
        }
        let unlisted: Vec<u64> = self
            .inodes
            .iter()
            .filter(|(n, i)| i.nlink == 0 && !orphans.contains(n))
            .map(|(n, _)| *n)
            .collect();
        for inum in unlisted {
            self.finding_safe(
                None,
                format!("inode {inum} has no links and is not on the orphan list"),
            );
        }
    }

    fn check_block_counts(&mut self) {
        let owners: Vec<u64> = self.extent_blocks.keys().copied().collect();
        for inum in owners {
            if !self.inodes.contains_key(&inum) {
                self.finding_safe(
                    None,
                    format!("extents belong to inode {inum}, which does not exist"),
                );
            }
        }
        let counts: Vec<(u64, u64, u64)> = self
            .inodes
            .iter()
            .map(|(n, i)| {
                (
                    *n,
                    i.blocks,
                    self.extent_blocks.get(n).copied().unwrap_or(0),
                )
            })
            .collect();
        for (inum, stored, counted) in counts {
            if stored != counted {
                self.finding_safe(
                    None,
                    format!(
                        "inode {inum} says it has {stored} data blocks, its extents have {counted}"
                    ),
                );
            }
        }
    }
}

#[derive(Debug, Default)]
struct Links {
    /// Directory entries naming each inode.
    to: HashMap<u64, u32>,
    /// Subdirectories of each directory.
    subdirs: HashMap<u64, u32>,
    /// Entries of each directory.
    children: HashMap<u64, Vec<u64>>,
}
