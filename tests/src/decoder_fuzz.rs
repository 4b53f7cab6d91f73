//! A seeded, structure-aware mutation fuzzer for every on-disk decoder in
//! `tuxfs_engine::format`.
//!
//! **The promise under test** (`engine/src/format/mod.rs`): decoding untrusted bytes never
//! panics, never loops forever and never allocates more than a bound related to the input
//! size; a rejection is an `Err` that names the block.
//!
//! **One iteration**, a pure function of `(seed, iteration)` so any single iteration can be
//! replayed on its own:
//! 1. a *base* target (round robin) builds a random **valid** value in a random context
//!    (block size 512..=65536, block number, filesystem id, tree, level, delta, chunk, ...),
//!    encodes it and checks the round trip `decode(encode(x)) == x`;
//! 2. the encoding is mutated: bit flips, interesting bytes and words (0, 0xff, 0x7f, 0x80,
//!    lengths and counts like 0xffff_ffff, the block size, slot offsets), arithmetic, truncation,
//!    extension, insertion, deletion, splicing and crossover with another valid block (of any
//!    kind, built in the same context), kind transplants; then, most of the time, the header
//!    checksum is **re-sealed** so the structural checks behind the CRC are what gets tested;
//!    the decoding context itself is sometimes perturbed or adopted from the mutant's header;
//! 3. **every** decoder runs on the mutant inside `catch_unwind`, and the harness checks:
//!    no panic; a rejection names the block; an accepted value holds, and the decode call
//!    allocates (with [`CountingAlloc`] installed), at most `64 × input + 16 KiB`; an accepted
//!    value re-encodes to exactly the input (the formats are canonical, so a decoder that
//!    accepts bytes its encoder would not produce has skipped a check).
//!
//! A watchdog thread reports a decode that has not returned after [`Config::hang_limit`] and
//! exits the process; a single allocation of more than 256 MiB during a decode is reported
//! and exits the process from inside the allocator (it would otherwise abort or swap).
//!
//! The runner is generic over [`Target`]s, which are closures, so the tests can plug in a
//! deliberately broken fake decoder and watch the harness catch it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;
use std::io::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Once, OnceLock, mpsc};
use std::time::{Duration, Instant};

use tuxfs_engine::format::bitmap;
use tuxfs_engine::format::btree::{self, Key, Leaf, Node};
use tuxfs_engine::format::dirent::{self, Dirent};
use tuxfs_engine::format::extent::{self, Extent, ExtentFlags};
use tuxfs_engine::format::hash::{NameHasher, POS_HASH_MASK, POS_SEQ_MAX};
use tuxfs_engine::format::header::{self, BlockHeader, HEADER_SIZE, Kind, seal};
use tuxfs_engine::format::inode::{self, Inode, InodeFlags, Timestamp};
use tuxfs_engine::format::log::{self, CommitInfo, LogBlock, LogFlags, LogRecord};
use tuxfs_engine::format::superblock::{
    Features, LABEL_MAX, STATE_CLEAN, STATE_MOUNTED, Superblock, TREE_SLOTS, TreeId, TreeRoot,
};
use tuxfs_engine::format::xattr::{self, XATTR_ENTRY_FIXED, XattrBlock, XattrEntry};
use tuxfs_engine::format::{
    BLOCK_SIZE_MAX, FIRST_ALLOCATABLE_BLOCK, FIRST_USER_INUM, MIN_BLOCK_COUNT, TREE_HEIGHT_MAX,
};

use crate::rng::Rng;

/// An accepted value may hold (and a decode call may allocate) this many bytes per input byte.
pub const ALLOC_FACTOR: usize = 64;
/// ... plus this many bytes (error messages, minimum vector capacities).
pub const ALLOC_SLACK: usize = 16 * 1024;
/// One allocation larger than this during a decode stops the process on the spot.
pub const HARD_ALLOC_CAP: usize = 256 << 20;

/// The allocation bound for an input of `len` bytes.
pub fn alloc_bound(len: usize) -> usize {
    len.saturating_mul(ALLOC_FACTOR).saturating_add(ALLOC_SLACK)
}

/// Supported block sizes and how often the fuzzer picks each (small blocks are cheap and
/// reach the same code; every size is still exercised).
const BLOCK_SIZES: [u32; 8] = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];
const BLOCK_SIZE_WEIGHTS: [u64; 8] = [6, 3, 2, 5, 1, 1, 1, 1];

// ------------------------------------------------------------------------------------------
// Context, samples, outcomes, targets
// ------------------------------------------------------------------------------------------

/// Everything a decoder is told besides the bytes. One random context serves every decoder,
/// so a mutant built by one target can be fed to all others coherently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctx {
    pub block_size: u32,
    pub blocknr: u64,
    pub fs_id: u64,
    /// Kind expected by `BlockHeader::decode`.
    pub kind: Kind,
    pub tree: TreeId,
    /// Level expected by `Node::decode`.
    pub level: u8,
    pub delta: u64,
    pub inum: u64,
    pub chunk: u64,
    pub block_count: u64,
    pub first_block: u64,
    pub hash_seed: [u8; 16],
    /// Directory position given to `Dirent::decode`.
    pub pos: u64,
    /// Pass `Some(fs_id)` (else `None`) to `BlockHeader::decode`.
    pub check_fs_id: bool,
    /// Pass `Some(&hash_seed)` (else `None`) to `Dirent::decode`.
    pub check_hash: bool,
}

impl Ctx {
    /// A random, self-consistent context.
    pub fn random(rng: &mut Rng) -> Ctx {
        let block_size = BLOCK_SIZES[rng.weighted(&BLOCK_SIZE_WEIGHTS)];
        let block_count = match rng.below(4) {
            0 => MIN_BLOCK_COUNT + rng.below(1000),
            1 | 2 => MIN_BLOCK_COUNT + rng.below(1 << 32),
            _ => rng.range(MIN_BLOCK_COUNT, u64::MAX / u64::from(BLOCK_SIZE_MAX)),
        };
        let first_block = FIRST_ALLOCATABLE_BLOCK;
        let blocknr = if rng.chance(1, 8) {
            rng.below(2)
        } else {
            rng.range(first_block, block_count)
        };
        let per = bitmap::bits_per_chunk(block_size);
        let chunks = bitmap::chunk_count(block_size, block_count);
        let chunk = match rng.below(16) {
            0 => u64::MAX - rng.below(4),
            1 => u64::MAX / per - rng.below(2),
            2 => chunks + rng.below(4),
            _ => rng.below(chunks),
        };
        let level = if rng.chance(1, 8) {
            1 + rng.below(255) as u8
        } else {
            1 + rng.below(u64::from(TREE_HEIGHT_MAX)) as u8
        };
        let mut hash_seed = [0u8; 16];
        rng.fill(&mut hash_seed);
        Ctx {
            block_size,
            blocknr,
            fs_id: rng.next_u64(),
            kind: *rng.pick(&Kind::ALL),
            tree: *rng.pick(&TreeId::ALL),
            level,
            delta: if rng.chance(1, 16) {
                u64::MAX
            } else {
                1 + rng.below(1 << 40)
            },
            inum: rng.range(1, 1 << 40),
            chunk,
            block_count,
            first_block,
            hash_seed,
            pos: rng.next_u64() & (POS_HASH_MASK | POS_SEQ_MAX),
            check_fs_id: rng.chance(7, 8),
            check_hash: rng.chance(3, 4),
        }
    }

    /// Blocks a child pointer or extent may name.
    pub fn valid_blocks(&self) -> std::ops::Range<u64> {
        self.first_block..self.block_count
    }

    fn header(&self, kind: Kind, level: u8, owner: u64) -> BlockHeader {
        BlockHeader {
            kind,
            level,
            blocknr: self.blocknr,
            owner,
            delta: self.delta,
            fs_id: self.fs_id,
        }
    }
}

/// A valid encoding built by a target's generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub bytes: Vec<u8>,
    /// True when the bytes are a whole block with a header (so re-sealing makes sense).
    pub block: bool,
}

/// Re-encodes an accepted value (run after the decode call, outside its measurement).
pub type Reencode<'a> = Box<dyn FnOnce() -> Vec<u8> + 'a>;

/// What a decoder made of one input.
pub enum Outcome<'a> {
    /// The input decoded. `held` is the heap size of the decoded value; `reencode`, when
    /// present, must reproduce the input exactly.
    Accepted {
        held: usize,
        reencode: Option<Reencode<'a>>,
    },
    /// The input was refused, with the error's text.
    Rejected(String),
}

impl fmt::Debug for Outcome<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Accepted { held, reencode } => f
                .debug_struct("Accepted")
                .field("held", held)
                .field("reencode", &reencode.is_some())
                .finish(),
            Outcome::Rejected(e) => f.debug_tuple("Rejected").field(e).finish(),
        }
    }
}

impl<'a> Outcome<'a> {
    /// An acceptance with a canonical re-encoding.
    pub fn accept(held: usize, reencode: impl FnOnce() -> Vec<u8> + 'a) -> Self {
        Outcome::Accepted {
            held,
            reencode: Some(Box::new(reencode)),
        }
    }

    /// A rejection.
    pub fn reject(e: impl fmt::Display) -> Self {
        Outcome::Rejected(e.to_string())
    }
}

type GenerateFn = dyn Fn(&mut Rng, &mut Ctx) -> Sample + Send + Sync;
type DecodeFn = dyn for<'a> Fn(&'a [u8], &Ctx) -> Outcome<'a> + Send + Sync;

/// One decoder under test: a generator of valid samples (which also checks their round
/// trip, panicking when it fails) and the decode call itself.
pub struct Target {
    pub name: &'static str,
    /// Whether a rejection must name `ctx.blocknr` (`"block N:"` in its text).
    pub names_block: bool,
    generate: Box<GenerateFn>,
    decode: Box<DecodeFn>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("names_block", &self.names_block)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// A target from closures. `generate` may adjust the context (e.g. the expected kind)
    /// and should panic when `decode(encode(x)) != x`.
    pub fn new<G, D>(name: &'static str, names_block: bool, generate: G, decode: D) -> Self
    where
        G: Fn(&mut Rng, &mut Ctx) -> Sample + Send + Sync + 'static,
        D: for<'a> Fn(&'a [u8], &Ctx) -> Outcome<'a> + Send + Sync + 'static,
    {
        Target {
            name,
            names_block,
            generate: Box::new(generate),
            decode: Box::new(decode),
        }
    }

    /// Builds one valid sample.
    pub fn generate(&self, rng: &mut Rng, ctx: &mut Ctx) -> Sample {
        (self.generate)(rng, ctx)
    }

    /// Decodes `input` in `ctx`.
    pub fn decode<'a>(&self, input: &'a [u8], ctx: &Ctx) -> Outcome<'a> {
        (self.decode)(input, ctx)
    }
}

// ------------------------------------------------------------------------------------------
// The engine's decoders
// ------------------------------------------------------------------------------------------

/// Every decoder of `tuxfs_engine::format`, each with a generator of valid samples.
pub fn default_targets() -> Vec<Target> {
    vec![
        Target::new("header::BlockHeader::decode", true, gen_header, |b, ctx| {
            let fs_id = ctx.check_fs_id.then_some(ctx.fs_id);
            match BlockHeader::decode(b, ctx.blocknr, ctx.kind, fs_id) {
                Ok(h) => Outcome::accept(0, move || {
                    let mut out = b.to_vec();
                    h.encode(&mut out);
                    seal(&mut out);
                    out
                }),
                Err(e) => Outcome::reject(e),
            }
        }),
        Target::new(
            "superblock::Superblock::decode",
            true,
            gen_superblock,
            |b, ctx| match Superblock::decode(b, ctx.blocknr) {
                Ok(sb) => Outcome::accept(sb.label.capacity(), {
                    let blocknr = ctx.blocknr;
                    move || {
                        let mut out = vec![0u8; sb.block_size as usize];
                        sb.encode(&mut out, blocknr);
                        out
                    }
                }),
                Err(e) => Outcome::reject(e),
            },
        ),
        Target::new(
            "superblock::Superblock::peek_block_size",
            false,
            gen_peek,
            |b, _| match Superblock::peek_block_size(b) {
                Some(_) => Outcome::Accepted {
                    held: 0,
                    reencode: None,
                },
                None => Outcome::reject("no superblock magic or unsupported block size"),
            },
        ),
        Target::new(
            "btree::Node::decode",
            true,
            gen_node,
            |b, ctx| match Node::decode(
                b,
                ctx.blocknr,
                ctx.tree,
                ctx.level,
                ctx.fs_id,
                ctx.valid_blocks(),
            ) {
                Ok(node) => Outcome::accept(
                    node.entries.capacity() * size_of::<(Key, u64)>(),
                    move || {
                        let mut out = vec![0u8; b.len()];
                        Node::encode(&mut out, &node.header, &node.entries);
                        out
                    },
                ),
                Err(e) => Outcome::reject(e),
            },
        ),
        Target::new(
            "btree::Leaf::decode",
            true,
            gen_leaf,
            |b, ctx| match Leaf::decode(b, ctx.blocknr, ctx.tree, ctx.fs_id) {
                Ok(leaf) => Outcome::accept(
                    leaf.entries.capacity() * size_of::<(Key, &[u8])>(),
                    move || {
                        let mut out = vec![0u8; b.len()];
                        Leaf::encode(&mut out, &leaf.header, &leaf.entries);
                        out
                    },
                ),
                Err(e) => Outcome::reject(e),
            },
        ),
        Target::new("btree::decode_block_ref", true, gen_block_ref, |b, ctx| {
            match btree::decode_block_ref(b, ctx.blocknr) {
                Ok(v) => Outcome::accept(0, move || v.to_le_bytes().to_vec()),
                Err(e) => Outcome::reject(e),
            }
        }),
        Target::new(
            "inode::Inode::decode",
            true,
            gen_inode,
            |b, ctx| match Inode::decode(b, ctx.blocknr) {
                Ok(ino) => Outcome::accept(
                    xattrs_held(&ino.inline_xattrs) + ino.inline_data.capacity(),
                    move || ino.encode(),
                ),
                Err(e) => Outcome::reject(e),
            },
        ),
        Target::new("xattr::decode_entries", false, gen_xattr_entries, |b, _| {
            match xattr::decode_entries(b) {
                Ok(entries) => Outcome::accept(xattrs_held(&entries), move || {
                    let mut out = Vec::new();
                    entries.iter().for_each(|e| e.encode_into(&mut out));
                    out
                }),
                Err(e) => Outcome::reject(e),
            }
        }),
        Target::new(
            "xattr::XattrBlock::decode",
            true,
            gen_xattr_block,
            |b, ctx| match XattrBlock::decode(b, ctx.blocknr, ctx.inum, ctx.fs_id) {
                Ok(xb) => Outcome::accept(xb.bytes.capacity(), move || {
                    let mut out = vec![0u8; b.len()];
                    XattrBlock::encode(&mut out, &xb.header, &xb.piece, &xb.bytes);
                    out
                }),
                Err(e) => Outcome::reject(e),
            },
        ),
        Target::new(
            "extent::Extent::decode",
            true,
            gen_extent,
            |b, ctx| match Extent::decode(b, ctx.blocknr, ctx.block_size, ctx.valid_blocks()) {
                Ok(e) => {
                    let bs = ctx.block_size;
                    Outcome::accept(e.crcs.capacity() * 4, move || encode_extent(&e, bs))
                }
                Err(e) => Outcome::reject(e),
            },
        ),
        Target::new("dirent::Dirent::decode", true, gen_dirent, |b, ctx| {
            let hasher = NameHasher::siphash(ctx.hash_seed);
            let seed = ctx.check_hash.then_some(&hasher);
            match Dirent::decode(b, ctx.blocknr, ctx.pos, seed) {
                Ok(d) => Outcome::accept(d.name.capacity(), move || d.encode()),
                Err(e) => Outcome::reject(e),
            }
        }),
        Target::new(
            "bitmap::decode",
            true,
            gen_bitmap,
            |b, ctx| match bitmap::decode(b, ctx.blocknr, ctx.chunk, ctx.block_count, ctx.fs_id) {
                Ok(bits) => Outcome::accept(0, {
                    let (blocknr, fs_id) = (ctx.blocknr, ctx.fs_id);
                    move || {
                        let h = BlockHeader::decode(b, blocknr, Kind::Bitmap, Some(fs_id))
                            .unwrap_or_else(|e| {
                                panic!("bitmap accepted a block whose header fails: {e}")
                            });
                        let mut out = vec![0u8; b.len()];
                        bitmap::encode(&mut out, &h, bits);
                        out
                    }
                }),
                Err(e) => Outcome::reject(e),
            },
        ),
        Target::new(
            "log::LogBlock::decode",
            true,
            gen_log,
            |b, ctx| match LogBlock::decode(b, ctx.blocknr, ctx.delta, ctx.fs_id) {
                Ok(lb) => Outcome::accept(log_held(&lb.records), move || {
                    let mut out = vec![0u8; b.len()];
                    LogBlock::encode(
                        &mut out,
                        &lb.header,
                        lb.next,
                        lb.flags,
                        lb.index,
                        &lb.records,
                    );
                    out
                }),
                Err(e) => Outcome::reject(e),
            },
        ),
        Target::new(
            "acl::decode",
            false,
            gen_acl,
            |b, _| match tuxfs_engine::format::acl::decode(b) {
                Ok(entries) => Outcome::accept(entries.capacity() * 8, move || {
                    tuxfs_engine::format::acl::encode(&entries)
                }),
                Err(e) => Outcome::reject(e),
            },
        ),
    ]
}

/// A valid POSIX ACL value: the three required entries, sorted named users and groups with
/// distinct ids, and a mask when there are named entries (or sometimes anyway).
fn gen_acl(rng: &mut Rng, _ctx: &mut Ctx) -> Sample {
    use tuxfs_engine::format::acl::{
        ACL_GROUP, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER, ACL_UNDEFINED_ID, ACL_USER, ACL_USER_OBJ,
        AclEntry, decode, encode,
    };
    let perm = |rng: &mut Rng| rng.below(8) as u16;
    let named = |rng: &mut Rng, tag| {
        let mut ids: Vec<u32> = (0..rng.below(6))
            .map(|_| rng.below(70_000) as u32)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .map(|id| AclEntry {
                tag,
                perm: rng.below(8) as u16,
                id,
            })
            .collect::<Vec<_>>()
    };
    let unnamed = |tag, perm| AclEntry {
        tag,
        perm,
        id: ACL_UNDEFINED_ID,
    };
    let mut acl = vec![unnamed(ACL_USER_OBJ, perm(rng))];
    acl.extend(named(rng, ACL_USER));
    acl.push(unnamed(ACL_GROUP_OBJ, perm(rng)));
    acl.extend(named(rng, ACL_GROUP));
    if acl.len() > 2 || rng.chance(1, 2) {
        acl.push(unnamed(ACL_MASK, perm(rng)));
    }
    acl.push(unnamed(ACL_OTHER, perm(rng)));
    let b = encode(&acl);
    check_round_trip("POSIX ACL", decode(&b), &acl);
    value(b)
}

fn xattrs_held(entries: &[XattrEntry]) -> usize {
    size_of_val(entries)
        + entries
            .iter()
            .map(|e| e.name.capacity() + e.value.capacity())
            .sum::<usize>()
}

fn log_held(records: &Vec<LogRecord>) -> usize {
    records.capacity() * size_of::<LogRecord>()
        + records
            .iter()
            .map(|r| match r {
                LogRecord::Blocks { crcs, .. } => crcs.capacity() * 4,
                _ => 0,
            })
            .sum::<usize>()
}

// ------------------------------------------------------------------------------------------
// Generators of valid samples (each checks decode(encode(x)) == x)
// ------------------------------------------------------------------------------------------

fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// Panics (reported by the runner as a round-trip failure) unless `got` is `Ok(want)`.
fn check_round_trip<T, E>(what: &str, got: Result<T, E>, want: &T)
where
    T: PartialEq + fmt::Debug,
    E: fmt::Display,
{
    match got {
        Ok(v) if v == *want => {}
        Ok(v) => panic!(
            "round trip of a valid {what}: decode(encode(x)) != x\n  x   = {}\n  got = {}",
            clip(format!("{want:?}"), 600),
            clip(format!("{v:?}"), 600)
        ),
        Err(e) => panic!("round trip of a valid {what}: rejected: {e}"),
    }
}

fn block(bytes: Vec<u8>) -> Sample {
    Sample { bytes, block: true }
}

fn value(bytes: Vec<u8>) -> Sample {
    Sample {
        bytes,
        block: false,
    }
}

fn gen_header(rng: &mut Rng, ctx: &mut Ctx) -> Sample {
    let owner = if rng.chance(1, 2) {
        rng.below(16)
    } else {
        rng.next_u64()
    };
    let h = ctx.header(ctx.kind, rng.below(256) as u8, owner);
    let mut b = vec![0u8; ctx.block_size as usize];
    h.encode(&mut b);
    match rng.below(3) {
        0 => {}
        1 => rng.fill(&mut b[HEADER_SIZE..]),
        _ => {
            let n = rng.below_usize(b.len() - HEADER_SIZE);
            rng.fill(&mut b[HEADER_SIZE..HEADER_SIZE + n]);
        }
    }
    seal(&mut b);
    let fs_id = ctx.check_fs_id.then_some(ctx.fs_id);
    check_round_trip(
        "block header",
        BlockHeader::decode(&b, ctx.blocknr, ctx.kind, fs_id),
        &h,
    );
    block(b)
}

fn random_label(rng: &mut Rng) -> String {
    const PIECES: [&str; 10] = ["a", "Z", "0", "-", "_", " ", "é", "ß", "日本", "🦀"];
    let want = rng.below_usize(LABEL_MAX + 1);
    let mut s = String::new();
    while s.len() < want {
        let p = *rng.pick(&PIECES);
        if s.len() + p.len() > LABEL_MAX {
            break;
        }
        s.push_str(p);
    }
    s
}

fn random_superblock(rng: &mut Rng, ctx: &mut Ctx) -> Superblock {
    ctx.kind = Kind::Super;
    ctx.first_block = FIRST_ALLOCATABLE_BLOCK;
    let bc = ctx.block_count;
    let mut roots = [TreeRoot::default(); TREE_SLOTS];
    for (i, root) in roots.iter_mut().enumerate() {
        let active = i < TreeId::ACTIVE.len();
        let required = i == TreeId::Inodes as usize || i == TreeId::Freemap as usize;
        if active && (required || rng.chance(1, 2)) {
            *root = TreeRoot {
                block: rng.range(FIRST_ALLOCATABLE_BLOCK, bc),
                height: rng.below(u64::from(TREE_HEIGHT_MAX) + 1) as u8,
            };
        }
    }
    let mut uuid = [0u8; 16];
    rng.fill(&mut uuid);
    uuid[..8].copy_from_slice(&ctx.fs_id.to_le_bytes());
    let mut hash_seed = [0u8; 16];
    rng.fill(&mut hash_seed);
    let maybe = |rng: &mut Rng| if rng.chance(1, 2) { 0 } else { rng.next_u64() };
    Superblock {
        version_minor: rng.below(4) as u16,
        block_size: ctx.block_size,
        block_count: bc,
        features: Features {
            compat: maybe(rng),
            ro_compat: maybe(rng),
            incompat: maybe(rng),
        },
        uuid,
        label: random_label(rng),
        hash_seed,
        created_sec: rng.next_u64() as i64,
        created_nsec: rng.below(1_000_000_000) as u32,
        state: *rng.pick(&[STATE_CLEAN, STATE_MOUNTED]),
        sequence: rng.next_u64(),
        unify_seq: rng.next_u64(),
        delta: ctx.delta,
        log_head: rng.range(FIRST_ALLOCATABLE_BLOCK, bc),
        log_delta: 1 + rng.below(u64::MAX - 1),
        log_next: 0,
        log_next_of: 0,
        next_inum: rng.range(FIRST_USER_INUM, u64::MAX),
        roots,
        free_blocks: rng.below(bc + 1),
        inode_count: rng.next_u64(),
        mount_count: rng.next_u64() as u32,
        last_mount_sec: rng.next_u64() as i64,
        last_write_sec: rng.next_u64() as i64,
        first_block: FIRST_ALLOCATABLE_BLOCK,
    }
}

fn gen_superblock(rng: &mut Rng, ctx: &mut Ctx) -> Sample {
    let sb = random_superblock(rng, ctx);
    let mut b = vec![0u8; ctx.block_size as usize];
    sb.encode(&mut b, ctx.blocknr);
    check_round_trip("superblock", Superblock::decode(&b, ctx.blocknr), &sb);
    block(b)
}

fn gen_peek(rng: &mut Rng, ctx: &mut Ctx) -> Sample {
    let sb = random_superblock(rng, ctx);
    let mut b = vec![0u8; ctx.block_size as usize];
    sb.encode(&mut b, ctx.blocknr);
    let got = Superblock::peek_block_size(&b).ok_or("peek_block_size returned None");
    check_round_trip("superblock (peek)", got, &ctx.block_size);
    block(b)
}

/// `n` strictly increasing keys.
fn sorted_keys(rng: &mut Rng, n: usize) -> Vec<Key> {
    let room = (n as u64 + 1) * 1001;
    let mut a = match rng.below(4) {
        0 => 0,
        1 => u64::MAX - room,
        _ => rng.below(1 << 40),
    };
    let mut b = if rng.chance(1, 2) { 0 } else { rng.next_u64() };
    let mut keys = Vec::with_capacity(n);
    for _ in 0..n {
        keys.push(Key::new(a, b));
        if rng.chance(1, 3) {
            a += 1 + rng.below(1000);
            b = if rng.chance(1, 2) { 0 } else { rng.next_u64() };
        } else {
            match b.checked_add(1 + rng.below(1 << 20)) {
                Some(next) => b = next,
                None => {
                    a += 1;
                    b = 0;
                }
            }
        }
    }
    keys
}

fn gen_node(rng: &mut Rng, ctx: &mut Ctx) -> Sample {
    ctx.kind = Kind::BtreeNode;
    ctx.level = ctx.level.max(1);
    let cap = btree::node_capacity(ctx.block_size);
    let count = match rng.below(4) {
        0 => cap,
        1 => 1 + rng.below_usize(cap),
        _ => 1 + rng.below_usize(cap.min(8)),
    };
    let valid = ctx.valid_blocks();
    let entries: Vec<(Key, u64)> = sorted_keys(rng, count)
        .into_iter()
        .map(|k| (k, rng.range(valid.start, valid.end)))
        .collect();
    let header = ctx.header(Kind::BtreeNode, ctx.level, ctx.tree as u64);
    let mut b = vec![0u8; ctx.block_size as usize];
    Node::encode(&mut b, &header, &entries);
    let got = Node::decode(&b, ctx.blocknr, ctx.tree, ctx.level, ctx.fs_id, valid);
    check_round_trip("B+tree node", got, &Node { header, entries });
    block(b)
}

/// A leaf value: a real encoded record of the tree's kind most of the time.
fn leaf_value(rng: &mut Rng, ctx: &Ctx, vmax: usize) -> Vec<u8> {
    let v = match rng.below(8) {
        0 => Vec::new(),
        1 => random_inode(rng, vmax.saturating_sub(inode::INODE_FIXED_SIZE)).encode(),
        2 => encode_extent(&random_extent(rng, ctx), ctx.block_size),
        3 => random_dirent(rng).encode(),
        4 => rng.next_u64().to_le_bytes().to_vec(),
        5 => {
            let n = rng.below_usize(vmax + 1);
            rng.bytes(n)
        }
        _ => {
            let n = rng.below_usize(vmax.min(64) + 1);
            rng.bytes(n)
        }
    };
    if v.len() <= vmax {
        v
    } else {
        let n = rng.below_usize(vmax + 1);
        rng.bytes(n)
    }
}

fn gen_leaf(rng: &mut Rng, ctx: &mut Ctx) -> Sample {
    ctx.kind = Kind::BtreeLeaf;
    let space = btree::leaf_space(ctx.block_size);
    let vmax = btree::value_max(ctx.block_size);
    let want = match rng.below(4) {
        0 => 0,
        1 => 1 + rng.below_usize(4),
        2 => 1 + rng.below_usize(32),
        _ => 1 + rng.below_usize(space / btree::LEAF_SLOT_SIZE),
    };
    let mut values = Vec::new();
    let mut used = 0;
    for _ in 0..want {
        let v = leaf_value(rng, ctx, vmax);
        let cost = btree::leaf_entry_cost(v.len());
        if used + cost > space {
            break;
        }
        used += cost;
        values.push(v);
    }
    let keys = sorted_keys(rng, values.len());
    let entries: Vec<(Key, &[u8])> = keys
        .into_iter()
        .zip(values.iter().map(Vec::as_slice))
        .collect();
    let header = ctx.header(Kind::BtreeLeaf, 0, ctx.tree as u64);
    let mut b = vec![0u8; ctx.block_size as usize];
    Leaf::encode(&mut b, &header, &entries);
    let got = Leaf::decode(&b, ctx.blocknr, ctx.tree, ctx.fs_id);
    check_round_trip("B+tree leaf", got, &Leaf { header, entries });
    block(b)
}

fn gen_block_ref(rng: &mut Rng, ctx: &mut Ctx) -> Sample {
    let v = rng.range(ctx.first_block, ctx.block_count);
    let b = v.to_le_bytes().to_vec();
    check_round_trip(
        "block reference",
        btree::decode_block_ref(&b, ctx.blocknr),
        &v,
    );
    value(b)
}

/// Unique, short, NUL-free names: `k` written in base 255 with digits 1..=255.
fn counter_name(mut k: usize) -> Vec<u8> {
    let mut name = Vec::new();
    loop {
        name.push((k % 255) as u8 + 1);
        k /= 255;
        if k == 0 {
            return name;
        }
    }
}

fn random_xattr_name(rng: &mut Rng) -> Vec<u8> {
    const PREFIXES: [&[u8]; 5] = [b"user.", b"trusted.", b"security.", b"system.", b""];
    let prefix = *rng.pick(&PREFIXES);
    let len = if rng.chance(1, 16) {
        xattr::XATTR_NAME_MAX - prefix.len()
    } else {
        1 + rng.below_usize(20)
    };
    let mut name = prefix.to_vec();
    name.extend((0..len).map(|_| 1 + rng.below(255) as u8));
    name
}

/// Entries with unique names taking at most `budget` bytes encoded. A quarter of the time
/// many tiny entries (the worst case for per-entry costs in the decoder).
fn random_xattr_entries(rng: &mut Rng, budget: usize) -> Vec<XattrEntry> {
    let tiny = rng.chance(1, 4);
    // Full blocks of tiny entries are rare: they are the slowest inputs to decode.
    let limit = if tiny && rng.chance(1, 32) {
        usize::MAX
    } else if tiny {
        64 + rng.below_usize(448)
    } else {
        rng.below_usize(12)
    };
    let mut counter = rng.below_usize(1000);
    let mut names = HashSet::new();
    let mut out = Vec::new();
    let mut used = 0usize;
    let mut misses = 0;
    while out.len() < limit && misses < 8 {
        let name = if tiny {
            counter += 1;
            counter_name(counter)
        } else {
            random_xattr_name(rng)
        };
        let fixed = XATTR_ENTRY_FIXED + name.len();
        if used + fixed > budget || !names.insert(name.clone()) {
            misses += 1;
            continue;
        }
        let room = (budget - used - fixed).min(u16::MAX as usize);
        let vlen = if tiny {
            rng.below_usize(3).min(room)
        } else {
            match rng.below(4) {
                0 => 0,
                1 | 2 => rng.below_usize(room.min(48) + 1),
                _ => rng.below_usize(room + 1),
            }
        };
        let value = rng.bytes(vlen);
        out.push(XattrEntry { name, value });
        used += fixed + vlen;
    }
    out
}

fn random_inode(rng: &mut Rng, budget: usize) -> Inode {
    const TYPES: [u32; 7] = [
        inode::S_IFSOCK,
        inode::S_IFLNK,
        inode::S_IFREG,
        inode::S_IFBLK,
        inode::S_IFDIR,
        inode::S_IFCHR,
        inode::S_IFIFO,
    ];
    let ftype = *rng.pick(&TYPES);
    let xattr_budget = rng.below_usize(budget + 1).min(u16::MAX as usize);
    let inline_xattrs = if rng.chance(1, 2) {
        Vec::new()
    } else {
        random_xattr_entries(rng, xattr_budget)
    };
    let data_room = (budget - xattr::entries_len(&inline_xattrs)).min(u16::MAX as usize);
    let inline = rng.chance(1, if ftype == inode::S_IFLNK { 2 } else { 8 });
    let inline_data = if inline {
        let n = rng.below_usize(data_room + 1);
        rng.bytes(n)
    } else {
        Vec::new()
    };
    let mut ts = || Timestamp {
        sec: rng.next_u64() as i64,
        nsec: rng.below(1_000_000_000) as u32,
    };
    let (atime, mtime, ctime, btime) = (ts(), ts(), ts(), ts());
    Inode {
        mode: ftype | rng.below(0o10000) as u32,
        uid: rng.next_u64() as u32,
        gid: rng.next_u64() as u32,
        nlink: rng.below(70_000) as u32,
        size: if inline {
            inline_data.len() as u64
        } else {
            rng.next_u64() >> rng.below(64)
        },
        blocks: rng.next_u64() >> rng.below(64),
        atime,
        mtime,
        ctime,
        btime,
        rdev: if rng.chance(1, 2) { 0 } else { rng.next_u64() },
        generation: rng.next_u64() as u32,
        flags: if inline {
            InodeFlags::INLINE_DATA
        } else {
            InodeFlags::empty()
        } | random_user_flags(rng, ftype),
        xattr_block: if rng.chance(1, 2) { 0 } else { rng.next_u64() },
        parent: if ftype == inode::S_IFDIR {
            1 + rng.below(1 << 40)
        } else {
            0
        },
        projid: if rng.chance(1, 2) {
            0
        } else {
            rng.next_u64() as u32
        },
        inline_xattrs,
        inline_data,
    }
}

/// User file flags (chattr) a record of type `ftype` may carry: any for directories, all but
/// the directory-only ones for regular files, none for the rest.
fn random_user_flags(rng: &mut Rng, ftype: u32) -> InodeFlags {
    let allowed = match ftype {
        inode::S_IFDIR => InodeFlags::USER,
        inode::S_IFREG => InodeFlags::USER - InodeFlags::DIR_ONLY,
        _ => InodeFlags::empty(),
    };
    InodeFlags::from_bits_truncate(rng.next_u64() as u32) & allowed
}

fn gen_inode(rng: &mut Rng, ctx: &mut Ctx) -> Sample {
    let budget = match rng.below(8) {
        0 => 0,
        1..=3 => rng.below_usize(200),
        4..=6 => btree::value_max(ctx.block_size) - inode::INODE_FIXED_SIZE,
        _ => 2 * u16::MAX as usize,
    };
    let ino = random_inode(rng, budget);
    let b = ino.encode();
    check_round_trip("inode", Inode::decode(&b, ctx.blocknr), &ino);
    value(b)
}

fn gen_xattr_entries(rng: &mut Rng, ctx: &mut Ctx) -> Sample {
    let budget = match rng.below(4) {
        0 => rng.below_usize(64),
        1 | 2 => rng.below_usize(ctx.block_size as usize),
        _ => u16::MAX as usize,
    };
    let entries = random_xattr_entries(rng, budget);
    let mut b = Vec::new();
    entries.iter().for_each(|e| e.encode_into(&mut b));
    check_round_trip("xattr entry list", xattr::decode_entries(&b), &entries);
    value(b)
}

fn gen_xattr_block(rng: &mut Rng, ctx: &mut Ctx) -> Sample {
    ctx.kind = Kind::Xattr;
    // A chain of up to four blocks; the sample is one of them, at the block being decoded.
    let cap = xattr::spill_capacity(ctx.block_size);
    let mut entries = random_xattr_entries(rng, cap * 4);
    if entries.is_empty() {
        entries.push(XattrEntry {
            name: b"user.x".to_vec(),
            value: vec![1],
        });
    }
    let n = xattr::spill_chain_blocks(xattr::spill_stream_len(&entries), ctx.block_size);
    let at = rng.below_usize(n);
    let blocks: Vec<u64> = (0..n)
        .map(|i| {
            if i == at {
                ctx.blocknr
            } else {
                rng.range(ctx.first_block.max(1), ctx.block_count)
            }
        })
        .collect();
    let header = ctx.header(Kind::Xattr, 0, ctx.inum);
    let chain = xattr::encode_spill_chain(
        &entries,
        &blocks,
        ctx.inum,
        header.delta,
        ctx.fs_id,
        ctx.block_size,
    );
    let b = chain[at].clone();
    let got = XattrBlock::decode(&b, ctx.blocknr, ctx.inum, ctx.fs_id);
    match got {
        Ok(x) => assert_eq!((x.piece.index as usize, x.header.owner), (at, ctx.inum)),
        Err(e) => panic!("xattr block: a block of a chain it encoded fails: {e}"),
    }
    block(b)
}

/// Encodes an extent for a filesystem of `block_size`.
fn encode_extent(e: &Extent, block_size: u32) -> Vec<u8> {
    e.encode(block_size)
}

fn random_extent(rng: &mut Rng, ctx: &Ctx) -> Extent {
    let room = ctx.block_count - ctx.first_block;
    let max = u64::from(extent::max_extent_blocks(ctx.block_size)).min(room);
    let count = if rng.chance(1, 4) {
        max
    } else {
        1 + rng.below(max)
    };
    let phys = rng.range(ctx.first_block, ctx.block_count - count + 1);
    let unwritten = rng.chance(1, 4);
    Extent {
        phys,
        flags: if unwritten {
            ExtentFlags::UNWRITTEN
        } else {
            ExtentFlags::empty()
        },
        crcs: (0..count)
            .map(|_| if unwritten { 0 } else { rng.next_u64() as u32 })
            .collect(),
    }
}

fn gen_extent(rng: &mut Rng, ctx: &mut Ctx) -> Sample {
    let e = random_extent(rng, ctx);
    let b = encode_extent(&e, ctx.block_size);
    let got = Extent::decode(&b, ctx.blocknr, ctx.block_size, ctx.valid_blocks());
    check_round_trip("extent", got, &e);
    value(b)
}

fn random_dirent(rng: &mut Rng) -> Dirent {
    let len = match rng.below(8) {
        0 => tuxfs_engine::format::NAME_MAX,
        1 => 1,
        _ => 1 + rng.below_usize(24),
    };
    let mut name: Vec<u8> = (0..len)
        .map(|_| match 1 + rng.below(254) as u8 {
            b'/' => b'_',
            c => c,
        })
        .collect();
    if name == b"." || name == b".." {
        name[0] = b'x';
    }
    const TYPES: [u8; 7] = [
        dirent::DT_FIFO,
        dirent::DT_CHR,
        dirent::DT_DIR,
        dirent::DT_BLK,
        dirent::DT_REG,
        dirent::DT_LNK,
        dirent::DT_SOCK,
    ];
    Dirent {
        inum: 1 + rng.below(u64::MAX - 1),
        dtype: *rng.pick(&TYPES),
        name,
    }
}

fn gen_dirent(rng: &mut Rng, ctx: &mut Ctx) -> Sample {
    let d = random_dirent(rng);
    let hasher = NameHasher::siphash(ctx.hash_seed);
    // Base and overflow positions alike.
    ctx.pos = if rng.below(2) == 0 {
        dirent::position(&hasher, &d.name, rng.below(POS_SEQ_MAX + 1))
    } else {
        let hash = hasher.hash(&d.name);
        dirent::overflow_position(hash, rng.below(dirent::OVERFLOW_SEQ_MAX + 1))
    };
    let b = d.encode();
    let seed = ctx.check_hash.then_some(&hasher);
    check_round_trip(
        "directory entry",
        Dirent::decode(&b, ctx.blocknr, ctx.pos, seed),
        &d,
    );
    value(b)
}

fn gen_bitmap(rng: &mut Rng, ctx: &mut Ctx) -> Sample {
    ctx.kind = Kind::Bitmap;
    let per = bitmap::bits_per_chunk(ctx.block_size);
    let first = ctx.chunk.saturating_mul(per);
    let valid = ctx.block_count.saturating_sub(first).min(per);
    let mut bits = vec![0u8; ctx.block_size as usize - HEADER_SIZE];
    match rng.below(4) {
        0 => {}
        1 => bits.fill(0xff),
        _ => rng.fill(&mut bits),
    }
    // Bits for blocks past the end of the filesystem are zero.
    let full = (valid / 8) as usize;
    if let Some(partial) = bits.get_mut(full) {
        *partial &= (1u8 << (valid % 8)) - 1;
    }
    if let Some(rest) = bits.get_mut(full + 1..) {
        rest.fill(0);
    }
    let header = ctx.header(Kind::Bitmap, 0, ctx.chunk);
    let mut b = vec![0u8; ctx.block_size as usize];
    bitmap::encode(&mut b, &header, &bits);
    let got = bitmap::decode(&b, ctx.blocknr, ctx.chunk, ctx.block_count, ctx.fs_id);
    check_round_trip("bitmap block", got, &bits.as_slice());
    block(b)
}

fn random_record(rng: &mut Rng, room: usize, block_size: u32) -> Option<LogRecord> {
    let key = |rng: &mut Rng| Key::new(rng.next_u64(), rng.next_u64());
    let count = |rng: &mut Rng| 1 + rng.below(u64::from(u32::MAX)) as u32;
    let r = match rng.below(7) {
        0 => LogRecord::Alloc {
            start: rng.next_u64(),
            count: count(rng),
        },
        1 => LogRecord::Free {
            start: rng.next_u64(),
            count: count(rng),
        },
        2 => LogRecord::LeafSet {
            tree: *rng.pick(&TreeId::ALL),
            key: key(rng),
            block: rng.next_u64(),
        },
        3 => LogRecord::LeafDel {
            tree: *rng.pick(&TreeId::ALL),
            key: key(rng),
        },
        4 => LogRecord::OrphanAdd {
            inum: rng.next_u64(),
        },
        5 => LogRecord::OrphanDel {
            inum: rng.next_u64(),
        },
        _ => {
            let max = log::blocks_record_max(block_size).min(room.saturating_sub(11) / 4);
            if max == 0 {
                return None;
            }
            let n = if rng.chance(1, 4) {
                1 + rng.below_usize(max)
            } else {
                1 + rng.below_usize(max.min(8))
            };
            LogRecord::Blocks {
                start: rng.next_u64(),
                crcs: (0..n).map(|_| rng.next_u64() as u32).collect(),
            }
        }
    };
    (r.encoded_len() <= room).then_some(r)
}

fn gen_log(rng: &mut Rng, ctx: &mut Ctx) -> Sample {
    ctx.kind = Kind::Log;
    let cap = log::log_capacity(ctx.block_size);
    let commit = rng.chance(1, 2);
    let reserve = if commit {
        LogRecord::Commit(CommitInfo::default()).encoded_len()
    } else {
        0
    };
    let want = match rng.below(3) {
        0 => 0,
        1 => 1 + rng.below_usize(8),
        _ => usize::MAX,
    };
    let mut records = Vec::new();
    let (mut used, mut misses) = (0, 0);
    while records.len() < want && misses < 4 {
        match random_record(rng, cap - reserve - used, ctx.block_size) {
            Some(r) => {
                used += r.encoded_len();
                records.push(r);
            }
            None => misses += 1,
        }
    }
    if commit {
        records.push(LogRecord::Commit(CommitInfo {
            log_blocks: rng.next_u64() as u32,
            blocks: rng.next_u64(),
            next_inum: rng.next_u64(),
            inode_count: rng.next_u64(),
            free_blocks: rng.next_u64(),
            after_next: rng.next_u64(),
        }));
    }
    let flags = if commit {
        LogFlags::COMMIT
    } else {
        LogFlags::empty()
    };
    let header = ctx.header(Kind::Log, 0, 0);
    let next = rng.next_u64();
    let index = rng.below(1 << 20) as u32;
    let mut b = vec![0u8; ctx.block_size as usize];
    LogBlock::encode(&mut b, &header, next, flags, index, &records);
    let want = LogBlock {
        header,
        next,
        flags,
        index,
        records,
    };
    let got = LogBlock::decode(&b, ctx.blocknr, ctx.delta, ctx.fs_id);
    check_round_trip("log block", got, &want);
    block(b)
}

// ------------------------------------------------------------------------------------------
// Mutations
// ------------------------------------------------------------------------------------------

const INTERESTING_BYTES: [u8; 10] = [0, 0xff, 0x7f, 0x80, 1, 2, b'/', b'.', 0x20, 0xfe];

fn interesting_u64(rng: &mut Rng, len: usize) -> u64 {
    const FIXED: [u64; 37] = [
        0,
        1,
        2,
        3,
        4,
        7,
        8,
        16,
        24,
        0x7f,
        0x80,
        0xff,
        0x100,
        0x7fff,
        0x8000,
        0xffff,
        0x1_0000,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        0x1_0000_0000,
        i64::MAX as u64,
        1 << 63,
        u64::MAX,
        u64::MAX - 1,
        48,
        56,
        64,
        72,
        120,
        255,
        256,
        512,
        4096,
        65536,
        999_999_999,
        1_000_000_000,
    ];
    let len = len as u64;
    let relative = [
        len,
        len.wrapping_sub(1),
        len + 1,
        len.wrapping_sub(48),
        len.wrapping_sub(56),
        len.wrapping_sub(64),
        len.wrapping_sub(72),
        len.saturating_sub(56) / 24,
        len.saturating_sub(56) / 24 + 1,
        len / 2,
    ];
    if rng.chance(1, 3) {
        *rng.pick(&relative)
    } else {
        *rng.pick(&FIXED)
    }
}

/// An offset in `0..len` (`len` > 0), biased towards the header and payload fields, B+tree
/// slot fields, and the end of the block where leaf values are packed.
fn pick_offset(rng: &mut Rng, len: usize) -> usize {
    match rng.below(8) {
        0..=3 => rng.below_usize(len),
        4 | 5 => rng.below_usize(len.min(128)),
        6 => {
            let slot = 56 + 24 * rng.below_usize(64) + *rng.pick(&[0, 8, 16, 20]);
            slot.min(len - 1)
        }
        _ => len - 1 - rng.below_usize(len.min(64)),
    }
}

fn write_le(b: &mut [u8], off: usize, width: usize, v: u64) {
    for (k, byte) in v.to_le_bytes().into_iter().take(width).enumerate() {
        if let Some(slot) = b.get_mut(off + k) {
            *slot = byte;
        }
    }
}

fn read_le(b: &[u8], off: usize, width: usize) -> u64 {
    let mut w = [0u8; 8];
    for (k, slot) in w.iter_mut().take(width).enumerate() {
        *slot = b.get(off + k).copied().unwrap_or(0);
    }
    u64::from_le_bytes(w)
}

/// Applies one random mutation to `b`, describing it in `log`. `donor` builds another valid
/// encoding (of a random target, in the same context) for splicing.
fn mutate(
    rng: &mut Rng,
    b: &mut Vec<u8>,
    donor: &mut dyn FnMut(&mut Rng) -> Vec<u8>,
    log: &mut Vec<String>,
) {
    if b.is_empty() {
        let n = 1 + rng.below_usize(64);
        b.extend(rng.bytes(n));
        log.push(format!("extend empty input by {n} random bytes"));
        return;
    }
    let len = b.len();
    match rng.below(16) {
        0 | 1 => {
            let flips = 1 + rng.below(4);
            for _ in 0..flips {
                let off = pick_offset(rng, len);
                let bit = rng.below(8);
                b[off] ^= 1 << bit;
                log.push(format!("flip bit {bit} of byte {off}"));
            }
        }
        2 => {
            let off = pick_offset(rng, len);
            let v = *rng.pick(&INTERESTING_BYTES);
            b[off] = v;
            log.push(format!("set byte {off} to {v:#04x}"));
        }
        3 | 4 => {
            let width = *rng.pick(&[1usize, 2, 4, 8]);
            let mut off = pick_offset(rng, len);
            if rng.chance(1, 2) {
                off -= off % width;
            }
            let v = interesting_u64(rng, len);
            write_le(b, off, width, v);
            log.push(format!("set u{} at {off} to {v:#x}", width * 8));
        }
        5 => {
            let width = *rng.pick(&[1usize, 2, 4, 8]);
            let off = pick_offset(rng, len);
            let delta = 1 + rng.below(16);
            let old = read_le(b, off, width);
            let new = if rng.chance(1, 2) {
                old.wrapping_add(delta)
            } else {
                old.wrapping_sub(delta)
            };
            write_le(b, off, width, new);
            log.push(format!("u{} at {off}: {old:#x} -> {new:#x}", width * 8));
        }
        6 => {
            let new_len = match rng.below(8) {
                0 => rng.below_usize(HEADER_SIZE),
                1..=3 => HEADER_SIZE + rng.below_usize(32),
                4 => len / 2,
                5 => len - 1,
                6 => len - 1 - rng.below_usize(len.min(64)),
                _ => rng.below_usize(len),
            }
            .min(len);
            b.truncate(new_len);
            log.push(format!("truncate {len} -> {new_len}"));
        }
        7 => {
            let n = match rng.below(4) {
                0 => 1,
                1 => 8 * (1 + rng.below_usize(3)),
                2 => rng.below_usize(64) + 1,
                _ => len,
            };
            match rng.below(3) {
                0 => b.resize(len + n, 0),
                1 => b.resize(len + n, 0xff),
                _ => b.extend(rng.bytes(n)),
            }
            log.push(format!("extend {len} -> {}", b.len()));
        }
        8 => {
            let d = donor(rng);
            if d.is_empty() {
                return;
            }
            let most = if rng.chance(1, 2) { 32 } else { 1024 };
            let n = 1 + rng.below_usize(d.len().min(most));
            let from = rng.below_usize(d.len() - n + 1);
            let to = if rng.chance(1, 2) && from < len {
                from
            } else {
                rng.below_usize(len)
            };
            let n = n.min(len - to);
            b[to..to + n].copy_from_slice(&d[from..from + n]);
            log.push(format!("splice {n} donor bytes from {from} to {to}"));
        }
        9 => {
            let d = donor(rng);
            let cut = rng.below_usize(len.min(d.len()) + 1);
            if rng.chance(1, 2) {
                b.truncate(cut);
                b.extend_from_slice(&d[cut..]);
                log.push(format!("crossover: own bytes ..{cut}, donor bytes {cut}.."));
            } else {
                let mut out = d[..cut].to_vec();
                out.extend_from_slice(&b[cut..]);
                *b = out;
                log.push(format!("crossover: donor bytes ..{cut}, own bytes {cut}.."));
            }
        }
        10 => {
            if len >= 5 {
                let k = *rng.pick(&Kind::ALL);
                b[..4].copy_from_slice(&k.magic().to_le_bytes());
                b[4] = k as u8;
                log.push(format!("transplant kind {}", k.name()));
            }
        }
        11 => {
            let n = (*rng.pick(&[8usize, 16, 24, 48])).min(len);
            let from = rng.below_usize(len - n + 1);
            let to = rng.below_usize(len - n + 1);
            b.copy_within(from..from + n, to);
            log.push(format!("copy {n} bytes from {from} to {to}"));
        }
        12 => {
            let off = pick_offset(rng, len);
            let n = (1 + rng.below_usize(64)).min(len - off);
            let v = *rng.pick(&[0u8, 0xff]);
            b[off..off + n].fill(v);
            log.push(format!("fill {n} bytes at {off} with {v:#04x}"));
        }
        13 => {
            let off = pick_offset(rng, len);
            let n = (1 + rng.below_usize(16)).min(len - off);
            rng.fill(&mut b[off..off + n]);
            log.push(format!("randomize {n} bytes at {off}"));
        }
        14 => {
            let off = rng.below_usize(len + 1);
            let n = 1 + rng.below_usize(16);
            let ins = if rng.chance(1, 2) {
                vec![0; n]
            } else {
                rng.bytes(n)
            };
            b.splice(off..off, ins);
            log.push(format!("insert {n} bytes at {off}"));
        }
        _ => {
            let off = rng.below_usize(len);
            let n = (1 + rng.below_usize(16)).min(len - off);
            b.drain(off..off + n);
            log.push(format!("delete {n} bytes at {off}"));
        }
    }
}

/// Sets the context from the fields of the mutant's header, so that mutated header fields
/// (level, owner, delta, ...) reach the checks behind the context comparison.
fn adopt_header(ctx: &mut Ctx, b: &[u8]) {
    if b.len() < HEADER_SIZE {
        return;
    }
    if let Some(kind) = header::peek_kind(b) {
        ctx.kind = kind;
    }
    ctx.level = b[5];
    ctx.blocknr = read_le(b, 8, 8);
    let owner = read_le(b, 16, 8);
    ctx.inum = owner;
    ctx.chunk = owner;
    if let Ok(tree) = TreeId::try_from(owner) {
        ctx.tree = tree;
    }
    ctx.delta = read_le(b, 24, 8);
    ctx.fs_id = read_le(b, 32, 8);
}

fn mutate_ctx(rng: &mut Rng, ctx: &mut Ctx) -> String {
    match rng.below(12) {
        0 => ctx.blocknr ^= 1 << rng.below(64),
        1 => ctx.fs_id ^= 1 << rng.below(64),
        2 => ctx.tree = *rng.pick(&TreeId::ALL),
        3 => ctx.level = rng.below(256) as u8,
        4 => ctx.delta = ctx.delta.wrapping_add(1),
        5 => ctx.inum ^= 1,
        6 => {
            let per = bitmap::bits_per_chunk(ctx.block_size);
            ctx.chunk = *rng.pick(&[ctx.chunk.wrapping_add(1), u64::MAX, u64::MAX / per, 0]);
        }
        7 => {
            let counts = [
                MIN_BLOCK_COUNT,
                ctx.first_block,
                0,
                u64::MAX,
                ctx.block_count / 2,
            ];
            ctx.block_count = *rng.pick(&counts);
        }
        8 => ctx.first_block = *rng.pick(&[0, ctx.block_count]),
        9 => {
            ctx.check_fs_id = !ctx.check_fs_id;
            ctx.check_hash = !ctx.check_hash;
        }
        10 => ctx.pos ^= 1 << rng.below(64),
        _ => ctx.block_size = BLOCK_SIZES[rng.below_usize(BLOCK_SIZES.len())],
    }
    "perturb context".to_string()
}

// ------------------------------------------------------------------------------------------
// Panic capture and allocation measurement
// ------------------------------------------------------------------------------------------

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once per process) a panic hook that, on threads inside [`catch`], records the
/// panic's location and message instead of printing them; elsewhere it defers to the
/// previous hook.
fn install_quiet_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if QUIET.try_with(Cell::get).unwrap_or(false) {
                let msg = info.payload_as_str().unwrap_or("(non-string payload)");
                let text = match info.location() {
                    Some(l) => format!(
                        "panicked at {}:{}:{}: {msg}",
                        l.file(),
                        l.line(),
                        l.column()
                    ),
                    None => format!("panicked: {msg}"),
                };
                let _ = LAST_PANIC.try_with(|p| *p.borrow_mut() = Some(text));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into `Err(location and message)`.
fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    QUIET.set(true);
    LAST_PANIC.with(|p| p.borrow_mut().take());
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.set(false);
    result.map_err(|payload| {
        LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| match payload.downcast_ref::<&str>() {
                Some(s) => format!("panicked: {s}"),
                None => match payload.downcast_ref::<String>() {
                    Some(s) => format!("panicked: {s}"),
                    None => "panicked (non-string payload)".to_string(),
                },
            })
    })
}

/// A global allocator that forwards to [`System`] and, while a decode call is being
/// measured on the current thread, tracks its peak live bytes. Install it in a binary or
/// test crate with `#[global_allocator] static A: CountingAlloc = CountingAlloc;`; without
/// it the fuzzer still bounds the decoded values' sizes, but not the transient allocations.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAlloc;

static ALLOC_INSTALLED: AtomicBool = AtomicBool::new(false);

/// What the allocator reports if a decode makes one absurd request.
#[derive(Clone, Copy)]
struct Watch {
    decoder: &'static str,
    seed: u64,
    iteration: u64,
    input: *const u8,
    len: usize,
}

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
    static WATCH: Cell<Option<Watch>> = const { Cell::new(None) };
}

/// True when [`CountingAlloc`] is the global allocator of this process.
pub fn alloc_measured() -> bool {
    // Any allocation at all marks it; make sure one has happened.
    drop(std::hint::black_box(Box::new(0u64)));
    ALLOC_INSTALLED.load(Ordering::Relaxed)
}

fn note_alloc(size: usize) {
    if !ALLOC_INSTALLED.load(Ordering::Relaxed) {
        ALLOC_INSTALLED.store(true, Ordering::Relaxed);
    }
    let _ = ARMED.try_with(|armed| {
        if !armed.get() {
            return;
        }
        if size > HARD_ALLOC_CAP {
            armed.set(false);
            unbounded_allocation(size);
        }
        let live = LIVE.get().saturating_add(size);
        LIVE.set(live);
        if live > PEAK.get() {
            PEAK.set(live);
        }
    });
}

fn note_dealloc(size: usize) {
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            LIVE.set(LIVE.get().saturating_sub(size));
        }
    });
}

/// Reports an absurd allocation request from inside the allocator (without allocating) and
/// exits: letting it through would abort the process or exhaust memory.
fn unbounded_allocation(size: usize) -> ! {
    let watch = WATCH.try_with(Cell::get).ok().flatten();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "\ndecoder fuzz failure: unbounded allocation");
    if let Some(w) = watch {
        // SAFETY: the runner sets `input` to the slice being decoded and clears it when the
        // decode call returns; we are inside that call, so the slice is alive.
        let input = unsafe { std::slice::from_raw_parts(w.input, w.len) };
        let _ = writeln!(
            err,
            "  {} requested {size} bytes in one allocation while decoding {} input bytes",
            w.decoder, w.len
        );
        let _ = writeln!(err, "  seed={} iteration={}", w.seed, w.iteration);
        let _ = writeln!(err, "  input: {} bytes, first 128:", input.len());
        for (i, row) in input.chunks(16).take(8).enumerate() {
            let _ = write!(err, "    {:04x} ", i * 16);
            for byte in row {
                let _ = write!(err, " {byte:02x}");
            }
            let _ = writeln!(err);
        }
        let _ = writeln!(
            err,
            "  replay: cargo run -p tuxfs-tests --bin fuzz-decoders -- --seed {} --start {} --iterations 1",
            w.seed, w.iteration
        );
    } else {
        let _ = writeln!(
            err,
            "  one request of {size} bytes during a measured decode"
        );
    }
    let _ = err.flush();
    std::process::exit(1)
}

// SAFETY: forwards every call to `System` unchanged; the bookkeeping touches only
// const-initialized thread-locals without destructors and never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_dealloc(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Count the new block before releasing the old one: a moving realloc holds both.
        note_alloc(new_size);
        note_dealloc(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

struct Disarm;

impl Drop for Disarm {
    fn drop(&mut self) {
        ARMED.set(false);
        WATCH.set(None);
    }
}

/// Runs `f` with allocation measurement armed on this thread; returns its result and the
/// peak bytes it had live at once.
fn measured<R>(watch: Watch, f: impl FnOnce() -> R) -> (R, usize) {
    LIVE.set(0);
    PEAK.set(0);
    WATCH.set(Some(watch));
    ARMED.set(true);
    let guard = Disarm;
    let r = f();
    drop(guard);
    (r, PEAK.get())
}

// ------------------------------------------------------------------------------------------
// Checking one input
// ------------------------------------------------------------------------------------------

/// A broken promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The decoder panicked.
    Panic(String),
    /// Building or round-tripping a valid sample failed (a generator or decoder panicked,
    /// or `decode(encode(x)) != x`).
    RoundTrip(String),
    /// A decode call did not return.
    Hang(Duration),
    /// A rejection that does not name the block.
    AnonymousError { error: String, blocknr: u64 },
    /// The decoded value holds more than the bound.
    HeldTooMuch { held: usize, bound: usize },
    /// The decode call had more than the bound allocated at once.
    AllocatedTooMuch { peak: usize, bound: usize },
    /// Re-encoding an accepted value panicked: the decoder accepted a value its encoder
    /// refuses.
    ReencodePanic(String),
    /// An accepted input does not re-encode to itself: the decoder ignored some bytes.
    NotCanonical {
        first_difference: usize,
        reencoded_len: usize,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Panic(m) => write!(f, "{m}"),
            Problem::RoundTrip(m) => write!(f, "valid sample failed: {m}"),
            Problem::Hang(d) => write!(f, "decode has not returned after {d:?}"),
            Problem::AnonymousError { error, blocknr } => {
                write!(f, "rejection does not name block {blocknr}: {error:?}")
            }
            Problem::HeldTooMuch { held, bound } => {
                write!(f, "decoded value holds {held} bytes, bound {bound}")
            }
            Problem::AllocatedTooMuch { peak, bound } => {
                write!(
                    f,
                    "decode had {peak} bytes allocated at once, bound {bound}"
                )
            }
            Problem::ReencodePanic(m) => {
                write!(f, "accepted a value its encoder refuses: re-encoding {m}")
            }
            Problem::NotCanonical {
                first_difference,
                reencoded_len,
            } => write!(
                f,
                "accepted input does not re-encode to itself (re-encoding is {reencoded_len} \
                 bytes, first difference at byte {first_difference})"
            ),
        }
    }
}

/// What one decode call did.
#[derive(Debug, Clone, Copy)]
struct Checked {
    accepted: bool,
    canonical_checked: bool,
    peak: Option<usize>,
    elapsed: Duration,
}

fn names_block(error: &str, blocknr: u64) -> bool {
    error.contains(&format!("block {blocknr}:"))
}

/// Decodes `input` with `target` and checks every promise.
fn check_one(
    target: &Target,
    ctx: &Ctx,
    input: &[u8],
    seed: u64,
    iteration: u64,
    measure: bool,
) -> Result<Checked, Problem> {
    let watch = Watch {
        decoder: target.name,
        seed,
        iteration,
        input: input.as_ptr(),
        len: input.len(),
    };
    let started = Instant::now();
    let (outcome, peak) = measured(watch, || catch(|| target.decode(input, ctx)));
    let elapsed = started.elapsed();
    let outcome = outcome.map_err(Problem::Panic)?;
    let bound = alloc_bound(input.len());
    let peak = measure.then_some(peak);
    if let Some(peak) = peak
        && peak > bound
    {
        return Err(Problem::AllocatedTooMuch { peak, bound });
    }
    let mut checked = Checked {
        accepted: false,
        canonical_checked: false,
        peak,
        elapsed,
    };
    match outcome {
        Outcome::Rejected(error) => {
            if target.names_block && !names_block(&error, ctx.blocknr) {
                return Err(Problem::AnonymousError {
                    error,
                    blocknr: ctx.blocknr,
                });
            }
        }
        Outcome::Accepted { held, reencode } => {
            checked.accepted = true;
            if held > bound {
                return Err(Problem::HeldTooMuch { held, bound });
            }
            if let Some(reencode) = reencode {
                let out = catch(reencode).map_err(Problem::ReencodePanic)?;
                if out != input {
                    let first_difference = out
                        .iter()
                        .zip(input)
                        .position(|(a, b)| a != b)
                        .unwrap_or(out.len().min(input.len()));
                    return Err(Problem::NotCanonical {
                        first_difference,
                        reencoded_len: out.len(),
                    });
                }
                checked.canonical_checked = true;
            }
        }
    }
    Ok(checked)
}

// ------------------------------------------------------------------------------------------
// Failures and statistics
// ------------------------------------------------------------------------------------------

/// A broken promise, with everything needed to replay it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub iteration: u64,
    /// The decoder that broke the promise.
    pub decoder: &'static str,
    /// The target whose generator built the sample that was mutated.
    pub base: &'static str,
    pub problem: Problem,
    pub mutations: Vec<String>,
    pub ctx: Option<Ctx>,
    pub input: Vec<u8>,
}

impl Failure {
    /// The command that replays exactly this iteration.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run -p tuxfs-tests --bin fuzz-decoders -- --seed {} --start {} --iterations 1",
            self.seed, self.iteration
        )
    }
}

/// Hex dump of the first 128 bytes, 16 per line.
pub fn hex_dump(bytes: &[u8]) -> String {
    let mut s = String::new();
    for (i, row) in bytes.chunks(16).take(8).enumerate() {
        s.push_str(&format!("    {:04x} ", i * 16));
        for b in row {
            s.push_str(&format!(" {b:02x}"));
        }
        s.push('\n');
    }
    if bytes.len() > 128 {
        s.push_str(&format!("    ... {} more bytes\n", bytes.len() - 128));
    }
    s
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "decoder fuzz failure in {}: {}",
            self.decoder, self.problem
        )?;
        writeln!(
            f,
            "  seed={} iteration={}; sample built by {}",
            self.seed, self.iteration, self.base
        )?;
        if !self.mutations.is_empty() {
            writeln!(f, "  mutations: {}", self.mutations.join("; "))?;
        }
        if let Some(ctx) = &self.ctx {
            writeln!(f, "  context: {ctx:?}")?;
        }
        writeln!(f, "  input: {} bytes, first 128:", self.input.len())?;
        write!(f, "{}", hex_dump(&self.input))?;
        write!(f, "  replay: {}", self.replay_command())
    }
}

impl std::error::Error for Failure {}

/// Per-decoder counts.
#[derive(Debug, Clone, Default)]
pub struct DecoderStats {
    pub name: &'static str,
    /// False when the decoder was skipped (`Config::skip`).
    pub ran: bool,
    pub ok: u64,
    pub err: u64,
    /// Slowest single decode, and the input length it had.
    pub slowest: Duration,
    pub slowest_len: usize,
    /// Largest peak allocation of one decode call, in bytes.
    pub max_peak: usize,
    /// Largest peak allocation per input byte, over inputs of at least 256 bytes.
    pub max_peak_per_byte: f64,
}

impl DecoderStats {
    fn record(&mut self, c: &Checked, len: usize) {
        if c.accepted {
            self.ok += 1;
        } else {
            self.err += 1;
        }
        if c.elapsed > self.slowest {
            self.slowest = c.elapsed;
            self.slowest_len = len;
        }
        if let Some(peak) = c.peak {
            self.max_peak = self.max_peak.max(peak);
            if len >= 256 {
                self.max_peak_per_byte = self.max_peak_per_byte.max(peak as f64 / len as f64);
            }
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub seed: u64,
    pub start: u64,
    pub iterations: u64,
    pub elapsed: Duration,
    /// Valid samples built and checked with `decode(encode(x)) == x`.
    pub round_trips: u64,
    /// Accepted inputs whose re-encoding was checked byte for byte.
    pub canonical_checks: u64,
    pub alloc_measured: bool,
    pub decoders: Vec<DecoderStats>,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "seed={} iterations={} (from {}) in {secs:.1}s ({:.0}/s)",
            self.seed,
            self.iterations,
            self.start,
            self.iterations as f64 / secs.max(1e-9)
        )?;
        writeln!(
            f,
            "valid samples round-tripped: {}; accepted inputs re-encoded canonically: {}",
            self.round_trips, self.canonical_checks
        )?;
        writeln!(
            f,
            "{:<40} {:>9} {:>10} {:>16} {:>12}",
            "decoder",
            "ok",
            "err",
            "slowest (bytes)",
            if self.alloc_measured {
                "peak B/in-B"
            } else {
                "(no alloc)"
            }
        )?;
        for d in &self.decoders {
            if !d.ran {
                writeln!(f, "{:<40} skipped", d.name)?;
                continue;
            }
            let slow = format!("{}µs ({})", d.slowest.as_micros(), d.slowest_len);
            writeln!(
                f,
                "{:<40} {:>9} {:>10} {:>16} {:>12.1}",
                d.name, d.ok, d.err, slow, d.max_peak_per_byte
            )?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------
// The runner
// ------------------------------------------------------------------------------------------

/// How long and how to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    /// First iteration (iterations are independent: `--start I --iterations 1` replays I).
    pub start: u64,
    /// Most iterations to run.
    pub iterations: u64,
    /// Stop after this long, if set.
    pub time_limit: Option<Duration>,
    /// A decode that has not returned after this long is reported and the process exits.
    pub hang_limit: Duration,
    /// Decoders (matched by substring of their name) not run on mutants; their generators
    /// still build samples and donors, so the mutant stream does not change.
    pub skip: Vec<String>,
}

impl Config {
    /// `iterations` iterations from 0 with `seed`.
    pub fn new(seed: u64, iterations: u64) -> Self {
        Config {
            seed,
            start: 0,
            iterations,
            time_limit: None,
            hang_limit: Duration::from_secs(30),
            skip: Vec::new(),
        }
    }
}

/// One mutated input and its provenance.
struct Case {
    base: usize,
    ctx: Ctx,
    input: Vec<u8>,
    mutations: Vec<String>,
    generated: u64,
}

/// Builds the mutant of `iteration` (deterministic in `(seed, iteration)`).
#[expect(
    clippy::result_large_err,
    reason = "a Failure ends the run: built at most once, so its size costs nothing"
)]
fn build_case(targets: &[Target], seed: u64, iteration: u64) -> Result<Case, Failure> {
    let base = (iteration % targets.len() as u64) as usize;
    let generating = Cell::new(base);
    let result = catch(|| {
        let mut rng = Rng::stream(seed, iteration);
        let mut ctx = Ctx::random(&mut rng);
        let sample = targets[base].generate(&mut rng, &mut ctx);
        let mut generated = 1;
        let mut input = sample.bytes;
        let mut mutations = Vec::new();
        if !rng.chance(1, 16) {
            let mut rounds = 1;
            while rounds < 8 && rng.chance(1, 2) {
                rounds += 1;
            }
            for _ in 0..rounds {
                let mut donor = |rng: &mut Rng| {
                    let d = rng.below_usize(targets.len());
                    generating.set(d);
                    let s = targets[d].generate(rng, &mut ctx.clone());
                    generating.set(base);
                    generated += 1;
                    s.bytes
                };
                mutate(&mut rng, &mut input, &mut donor, &mut mutations);
            }
            if sample.block && input.len() >= HEADER_SIZE && rng.chance(7, 8) {
                seal(&mut input);
                mutations.push("re-seal".into());
            }
        }
        if rng.chance(1, 6) {
            adopt_header(&mut ctx, &input);
            mutations.push("adopt header into context".into());
        }
        if rng.chance(1, 10) {
            mutations.push(mutate_ctx(&mut rng, &mut ctx));
        }
        Case {
            base,
            ctx,
            input,
            mutations,
            generated,
        }
    });
    result.map_err(|m| Failure {
        seed,
        iteration,
        decoder: targets[generating.get()].name,
        base: targets[base].name,
        problem: Problem::RoundTrip(m),
        mutations: Vec::new(),
        ctx: None,
        input: Vec::new(),
    })
}

#[derive(Default)]
struct Progress {
    beat: AtomicU64,
    iteration: AtomicU64,
    /// Index of the decoder running, `usize::MAX` while building the case.
    decoder: AtomicUsize,
}

fn watchdog(targets: &[Target], cfg: &Config, progress: &Progress, done: mpsc::Receiver<()>) {
    let mut last = u64::MAX;
    let mut since = Instant::now();
    loop {
        match done.recv_timeout(Duration::from_millis(200)) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let beat = progress.beat.load(Ordering::Relaxed);
        if beat != last {
            last = beat;
            since = Instant::now();
            continue;
        }
        if since.elapsed() < cfg.hang_limit {
            continue;
        }
        let iteration = progress.iteration.load(Ordering::Relaxed);
        let d = progress.decoder.load(Ordering::Relaxed);
        let mut failure = Failure {
            seed: cfg.seed,
            iteration,
            decoder: targets.get(d).map_or("(building the sample)", |t| t.name),
            base: targets[(iteration % targets.len() as u64) as usize].name,
            problem: Problem::Hang(since.elapsed()),
            mutations: Vec::new(),
            ctx: None,
            input: Vec::new(),
        };
        if d < targets.len()
            && let Ok(case) = build_case(targets, cfg.seed, iteration)
        {
            failure.mutations = case.mutations;
            failure.ctx = Some(case.ctx);
            failure.input = case.input;
        }
        eprintln!("{failure}");
        std::process::exit(1);
    }
}

/// Runs `iterations` iterations of the fuzzer over the engine's decoders.
#[expect(
    clippy::result_large_err,
    reason = "a Failure ends the run: built at most once, so its size costs nothing"
)]
pub fn run(seed: u64, iterations: u64) -> Result<Stats, Failure> {
    run_with(&default_targets(), &Config::new(seed, iterations))
}

/// Runs the fuzzer over `targets`.
#[expect(
    clippy::result_large_err,
    reason = "a Failure ends the run: built at most once, so its size costs nothing"
)]
pub fn run_with(targets: &[Target], cfg: &Config) -> Result<Stats, Failure> {
    assert!(!targets.is_empty(), "no targets to fuzz");
    install_quiet_panic_hook();
    let progress = Progress::default();
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        let progress = &progress;
        s.spawn(move || watchdog(targets, cfg, progress, rx));
        let result = fuzz_loop(targets, cfg, progress);
        let _ = tx.send(());
        result
    })
}

#[expect(
    clippy::result_large_err,
    reason = "a Failure ends the run: built at most once, so its size costs nothing"
)]
fn fuzz_loop(targets: &[Target], cfg: &Config, progress: &Progress) -> Result<Stats, Failure> {
    let started = Instant::now();
    let measure = alloc_measured();
    let mut stats = Stats {
        seed: cfg.seed,
        start: cfg.start,
        alloc_measured: measure,
        decoders: targets
            .iter()
            .map(|t| DecoderStats {
                name: t.name,
                ran: !cfg.skip.iter().any(|s| t.name.contains(s.as_str())),
                ..DecoderStats::default()
            })
            .collect(),
        ..Stats::default()
    };
    for iteration in cfg.start..cfg.start.saturating_add(cfg.iterations) {
        if let Some(limit) = cfg.time_limit
            && started.elapsed() >= limit
        {
            break;
        }
        progress.iteration.store(iteration, Ordering::Relaxed);
        progress.decoder.store(usize::MAX, Ordering::Relaxed);
        progress.beat.fetch_add(1, Ordering::Relaxed);
        let case = build_case(targets, cfg.seed, iteration)?;
        stats.round_trips += case.generated;
        for (i, target) in targets.iter().enumerate() {
            if !stats.decoders[i].ran {
                continue;
            }
            progress.decoder.store(i, Ordering::Relaxed);
            progress.beat.fetch_add(1, Ordering::Relaxed);
            match check_one(target, &case.ctx, &case.input, cfg.seed, iteration, measure) {
                Ok(c) => {
                    stats.canonical_checks += u64::from(c.canonical_checked);
                    stats.decoders[i].record(&c, case.input.len());
                }
                Err(problem) => {
                    return Err(Failure {
                        seed: cfg.seed,
                        iteration,
                        decoder: target.name,
                        base: targets[case.base].name,
                        problem,
                        mutations: case.mutations,
                        ctx: Some(case.ctx),
                        input: case.input,
                    });
                }
            }
        }
        stats.iterations += 1;
    }
    stats.elapsed = started.elapsed();
    Ok(stats)
}

// ------------------------------------------------------------------------------------------
// libFuzzer entry point (fuzz/fuzz_targets/*.rs)
// ------------------------------------------------------------------------------------------

/// True when this build checks integer overflow (debug and test profiles do; plain release
/// does not, so there an overflowing decoder wraps silently instead of panicking). The
/// engine is built with the same profile, so this says whether the run can catch them.
pub fn overflow_checks() -> bool {
    install_quiet_panic_hook();
    catch(|| std::hint::black_box(u8::MAX) + std::hint::black_box(1u8)).is_err()
}

/// Names of the engine's decoders, as accepted by [`fuzz_one`].
pub fn decoder_names() -> Vec<&'static str> {
    engine_targets().iter().map(|t| t.name).collect()
}

fn engine_targets() -> &'static [Target] {
    static TARGETS: OnceLock<Vec<Target>> = OnceLock::new();
    TARGETS.get_or_init(default_targets)
}

/// One libFuzzer input for decoder `name`: the first 8 bytes seed a random context, byte 8
/// holds flags (bit 0: do not re-seal the checksum; bit 1: do not adopt the context from
/// the input's header), the rest is the input. Panics on any broken promise.
pub fn fuzz_one(name: &str, data: &[u8]) {
    install_quiet_panic_hook();
    let target = engine_targets()
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("unknown decoder {name:?}; known: {:?}", decoder_names()));
    let (control, rest) = data.split_at(data.len().min(9));
    let seed = read_le(control, 0, 8);
    let flags = control.get(8).copied().unwrap_or(0);
    let mut ctx = Ctx::random(&mut Rng::new(seed));
    let mut input = rest.to_vec();
    if flags & 1 == 0 && input.len() >= HEADER_SIZE {
        seal(&mut input);
    }
    if flags & 2 == 0 {
        adopt_header(&mut ctx, &input);
    }
    if let Err(problem) = check_one(target, &ctx, &input, seed, 0, false) {
        panic!("{name}: {problem}\n  context: {ctx:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generator_round_trips_in_many_contexts() {
        let targets = default_targets();
        let mut rng = Rng::new(11);
        for _ in 0..20 {
            for t in &targets {
                let mut ctx = Ctx::random(&mut rng);
                let s = t.generate(&mut rng, &mut ctx);
                match t.decode(&s.bytes, &ctx) {
                    Outcome::Accepted { reencode, .. } => {
                        if let Some(re) = reencode {
                            assert_eq!(re(), s.bytes, "{}", t.name);
                        }
                    }
                    Outcome::Rejected(e) => panic!("{}: valid sample rejected: {e}", t.name),
                }
            }
        }
    }

    #[test]
    fn cases_are_deterministic() {
        let targets = default_targets();
        for i in 0..50 {
            let a = build_case(&targets, 5, i).expect("builds");
            let b = build_case(&targets, 5, i).expect("builds");
            assert_eq!((a.input, a.ctx, a.mutations), (b.input, b.ctx, b.mutations));
        }
    }

    #[test]
    fn fuzz_one_accepts_every_name_and_short_inputs() {
        for name in decoder_names() {
            for len in [0usize, 5, 9, 60, 600] {
                fuzz_one(name, &vec![0u8; len]);
            }
        }
    }

    #[test]
    fn names_block_matches_whole_numbers() {
        assert!(names_block("block 12: bad", 12));
        assert!(names_block("unsupported: block 7: format version 2", 7));
        assert!(!names_block("block 123: bad", 12));
    }
}
