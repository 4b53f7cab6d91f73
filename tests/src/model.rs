//! A reference model of the visible filesystem tree, and a snapshot of the real one in the
//! same shape, so tests can compare them after every remount and crash.
//!
//! Extended attributes are modelled on regular files only (keyed by file id, so hard links
//! share them); directories and symlinks are shown without theirs.

use std::collections::{BTreeMap, HashMap};

use tuxfs_engine::Result;
use tuxfs_engine::fs::{
    FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_INSERT_RANGE, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE,
    FALLOC_FL_ZERO_RANGE, FileKind, Filesystem,
};

/// What one path shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    File {
        data: Vec<u8>,
        nlink: u32,
        /// Extended attributes: name → value.
        xattrs: Xattrs,
    },
    Dir,
    Symlink(Vec<u8>),
}

/// Extended attributes of one file, by name.
pub type Xattrs = BTreeMap<Vec<u8>, Vec<u8>>;

/// The visible tree: path (relative, '/'-separated) → what it shows.
pub type Visible = BTreeMap<String, Shown>;

/// Reads the whole visible tree of a mounted filesystem (root inode 1).
pub fn snapshot(fs: &Filesystem) -> Result<Visible> {
    let mut out = Visible::new();
    let mut todo = vec![(1u64, String::new())];
    while let Some((dir, prefix)) = todo.pop() {
        let mut cookie = 0;
        loop {
            let batch = fs.readdir(dir, cookie, 256)?;
            let Some(last) = batch.last() else { break };
            cookie = last.offset;
            for e in batch {
                if e.name == b"." || e.name == b".." {
                    continue;
                }
                let path = format!("{prefix}{}", String::from_utf8_lossy(&e.name));
                let shown = match e.kind {
                    FileKind::Directory => {
                        todo.push((e.ino, format!("{path}/")));
                        Shown::Dir
                    }
                    FileKind::Symlink => Shown::Symlink(fs.readlink(e.ino)?),
                    _ => {
                        let attr = fs.getattr(e.ino)?;
                        let data = fs.read(e.ino, 0, attr.size as u32)?;
                        let mut xattrs = Xattrs::new();
                        for name in fs.listxattr(e.ino)? {
                            let value = fs.getxattr(e.ino, &name)?;
                            xattrs.insert(name, value);
                        }
                        Shown::File {
                            data,
                            nlink: attr.nlink,
                            xattrs,
                        }
                    }
                };
                out.insert(path, shown);
            }
        }
    }
    Ok(out)
}

/// The inode of `path` ('/'-separated; "" is `dir` itself) below directory `dir`.
pub fn resolve(fs: &Filesystem, dir: u64, path: &str) -> std::result::Result<u64, String> {
    let mut ino = dir;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = fs
            .lookup(ino, part.as_bytes())
            .map_err(|e| format!("lookup {path}: {e}"))?
            .ino;
    }
    Ok(ino)
}

/// A node of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A regular file: its id in `Model::files` (hard links share it).
    File(u64),
    Dir,
    Symlink(Vec<u8>),
}

/// The model: names and file contents.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub names: BTreeMap<String, Node>,
    pub files: HashMap<u64, Vec<u8>>,
    /// Extended attributes of files, by file id (absent = none).
    pub xattrs: HashMap<u64, Xattrs>,
    next_id: u64,
}

impl Model {
    /// A model with `lost+found`, as mkfs makes it.
    pub fn new() -> Self {
        let mut m = Model::default();
        m.names.insert("lost+found".into(), Node::Dir);
        m
    }

    /// A new file id with empty contents.
    pub fn new_file(&mut self) -> u64 {
        self.next_id += 1;
        self.files.insert(self.next_id, Vec::new());
        self.next_id
    }

    /// The file id `path` names, when it is a regular file.
    pub fn file_id(&self, path: &str) -> Option<u64> {
        match self.names.get(path) {
            Some(Node::File(id)) => Some(*id),
            _ => None,
        }
    }

    /// Bytes held by files (a lower bound of what the image stores).
    pub fn used_bytes(&self) -> u64 {
        self.files.values().map(|d| d.len() as u64).sum()
    }

    /// True when file `id` has the xattr `name`.
    pub fn has_xattr(&self, id: u64, name: &str) -> bool {
        self.xattrs
            .get(&id)
            .is_some_and(|x| x.contains_key(name.as_bytes()))
    }

    /// Sets (Some) or removes (None) the xattr `name` of file `id`.
    pub fn set_xattr(&mut self, id: u64, name: &str, value: Option<Vec<u8>>) {
        let x = self.xattrs.entry(id).or_default();
        match value {
            Some(v) => x.insert(name.as_bytes().to_vec(), v),
            None => x.remove(name.as_bytes()),
        };
    }

    /// Directories, including the root ("").
    pub fn dirs(&self) -> Vec<String> {
        let mut v = vec![String::new()];
        v.extend(
            self.names
                .iter()
                .filter(|(_, n)| **n == Node::Dir)
                .map(|(p, _)| p.clone()),
        );
        v
    }

    /// Paths of regular files.
    pub fn file_paths(&self) -> Vec<String> {
        self.names
            .iter()
            .filter(|(_, n)| matches!(n, Node::File(_)))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// True when the directory `dir` has entries.
    pub fn has_children(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.names.keys().any(|p| p.starts_with(&prefix))
    }

    /// Moves `from` (and everything below it) to `to`.
    pub fn rename(&mut self, from: &str, to: &str) {
        let prefix = format!("{from}/");
        let moved: Vec<(String, Node)> = self
            .names
            .iter()
            .filter(|(p, _)| p.as_str() == from || p.starts_with(&prefix))
            .map(|(p, n)| (p.clone(), n.clone()))
            .collect();
        for (p, _) in &moved {
            self.names.remove(p);
        }
        for (p, n) in moved {
            let rest = &p[from.len()..];
            self.names.insert(format!("{to}{rest}"), n);
        }
    }

    /// What the model says the tree shows.
    pub fn visible(&self) -> Visible {
        let mut links: HashMap<u64, u32> = HashMap::new();
        for n in self.names.values() {
            if let Node::File(id) = n {
                *links.entry(*id).or_default() += 1;
            }
        }
        self.names
            .iter()
            .map(|(p, n)| {
                let shown = match n {
                    Node::File(id) => Shown::File {
                        data: self.files.get(id).cloned().unwrap_or_default(),
                        nlink: links.get(id).copied().unwrap_or(0),
                        xattrs: self.xattrs.get(id).cloned().unwrap_or_default(),
                    },
                    Node::Dir => Shown::Dir,
                    Node::Symlink(t) => Shown::Symlink(t.clone()),
                };
                (p.clone(), shown)
            })
            .collect()
    }
}

/// Describes how two trees differ (first few differences), for failure messages.
pub fn diff(want: &Visible, got: &Visible) -> String {
    let mut out = Vec::new();
    for (p, w) in want {
        match got.get(p) {
            None => out.push(format!("missing {p}")),
            Some(g) if g != w => out.push(format!("{p}: want {}, got {}", brief(w), brief(g))),
            _ => {}
        }
    }
    for p in got.keys().filter(|p| !want.contains_key(*p)) {
        out.push(format!("unexpected {p}"));
    }
    out.truncate(10);
    out.join("; ")
}

fn brief(s: &Shown) -> String {
    match s {
        Shown::File {
            data,
            nlink,
            xattrs,
        } => format!(
            "file of {} bytes (crc {:08x}), {nlink} links, {} xattrs (crc {:08x})",
            data.len(),
            crc(data),
            xattrs.len(),
            crc(&xattrs_bytes(xattrs))
        ),
        Shown::Dir => "directory".into(),
        Shown::Symlink(t) => format!("symlink to {}", String::from_utf8_lossy(t)),
    }
}

/// The xattrs as one byte string (names and values, length-prefixed), for a short digest.
fn xattrs_bytes(xattrs: &Xattrs) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in xattrs {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
    out
}

fn crc(data: &[u8]) -> u32 {
    tuxfs_engine::format::data_crc(data)
}

/// What a successful `fallocate(offset, len, mode)` does to a file's bytes: preallocation
/// only grows the size (without KEEP_SIZE), punch and zero range zero the range within the
/// file (zero range first grows it without KEEP_SIZE), collapse removes the range, insert
/// inserts zeros.
pub fn apply_fallocate(content: &mut Vec<u8>, offset: u64, len: u64, mode: u32) {
    let (o, l) = (offset as usize, len as usize);
    let grows = mode & (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE) == 0
        && mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE) == 0;
    if grows && content.len() < o + l {
        content.resize(o + l, 0);
    }
    if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) != 0 {
        let end = (o + l).min(content.len());
        if o < end {
            content[o..end].fill(0);
        }
    } else if mode == FALLOC_FL_COLLAPSE_RANGE {
        content.drain(o..o + l);
    } else if mode == FALLOC_FL_INSERT_RANGE {
        content.splice(o..o, std::iter::repeat_n(0, l));
    }
}
