//! Finding the superblock: read both slots, use the newest that verifies, report (and with
//! `-p`/`-y` rewrite) a slot that does not.

use std::sync::Arc;

use tuxfs_engine::dev::{AlignedBuf, BlockDevice, WriteRequest, read_at};
use tuxfs_engine::format::{
    self, BLOCK_SIZE_MAX, BLOCK_SIZE_MIN, SUPERBLOCK_SLOTS, Superblock, header,
};

use crate::{Finding, Fix, Mode, OperationalError};

/// The superblock fsck will use, and what it found on the way.
pub(crate) struct Chosen {
    pub superblock: Superblock,
    pub slot: u64,
    pub findings: Vec<Finding>,
    pub blocks_read: u64,
}

/// Bytes at the start of the device that can hold both slots at any block size.
const PROBE_BYTES: u64 = 2 * BLOCK_SIZE_MAX as u64;

/// The outcome of reading one slot.
enum Slot {
    Valid(Box<Superblock>),
    /// The magic is there but something is wrong.
    Damaged(String),
    /// No superblock magic at all.
    Absent,
}

fn read_probe(dev: &dyn BlockDevice) -> Result<AlignedBuf, OperationalError> {
    let size = dev.size_bytes();
    if size == 0 {
        return Err(OperationalError(
            "the image is empty: not a tuxfs filesystem".into(),
        ));
    }
    if size < u64::from(BLOCK_SIZE_MIN) * 2 {
        return Err(OperationalError(format!(
            "the image is {size} bytes, too small for a tuxfs filesystem"
        )));
    }
    let len = size.min(PROBE_BYTES) / 512 * 512;
    read_at(dev, 0, len as usize)
        .map_err(|e| OperationalError(format!("cannot read the superblocks: {e}")))
}

fn decode_slot(probe: &[u8], slot: u64, block_size: u32) -> Slot {
    let off = (slot * u64::from(block_size)) as usize;
    let Some(bytes) = probe.get(off..off + block_size as usize) else {
        return Slot::Damaged(format!(
            "block {slot}: the image ends inside the superblock"
        ));
    };
    match Superblock::decode(bytes, slot) {
        Ok(sb) => Slot::Valid(Box::new(sb)),
        Err(e) => Slot::Damaged(e.to_string()),
    }
}

/// Reads slot `slot`, trying the block size its own bytes claim and, failing that, every
/// supported block size (slot 1 sits one block in, so its offset depends on the size).
fn read_slot(probe: &[u8], slot: u64, hint: Option<u32>) -> Slot {
    let mut sizes: Vec<u32> = hint.into_iter().collect();
    let mut bs = BLOCK_SIZE_MIN;
    while bs <= BLOCK_SIZE_MAX {
        if !sizes.contains(&bs) {
            sizes.push(bs);
        }
        bs *= 2;
    }
    let mut first_damage = None;
    for bs in sizes {
        let off = (slot * u64::from(bs)) as usize;
        let claimed = probe.get(off..).and_then(Superblock::peek_block_size);
        let magic = probe.get(off..).and_then(header::peek_kind) == Some(format::Kind::Super);
        if claimed == Some(bs) || (magic && slot == 0) {
            match decode_slot(probe, slot, claimed.unwrap_or(bs)) {
                Slot::Valid(sb) => return Slot::Valid(sb),
                Slot::Damaged(why) => first_damage = first_damage.or(Some(why)),
                Slot::Absent => {}
            }
        } else if magic && first_damage.is_none() {
            first_damage = Some(format!(
                "block {slot}: superblock magic with an invalid block size"
            ));
        }
    }
    first_damage.map_or(Slot::Absent, Slot::Damaged)
}

/// Picks the superblock to check against.
pub(crate) fn select(dev: &dyn BlockDevice, mode: Mode) -> Result<Chosen, OperationalError> {
    let probe = read_probe(dev)?;
    let slot0 = read_slot(&probe, SUPERBLOCK_SLOTS[0], None);
    let hint = match &slot0 {
        Slot::Valid(sb) => Some(sb.block_size),
        _ => Superblock::peek_block_size(&probe),
    };
    let slot1 = read_slot(&probe, SUPERBLOCK_SLOTS[1], hint);
    let slots = [slot0, slot1];
    let newest = slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            Slot::Valid(sb) => Some((i as u64, (**sb).clone())),
            _ => None,
        })
        .max_by_key(|(i, sb)| (sb.sequence, std::cmp::Reverse(*i)));
    let Some((slot, sb)) = newest else {
        return Err(no_superblock(&slots));
    };
    check_usable(dev, &sb)?;
    let mut findings = Vec::new();
    for (i, s) in slots.iter().enumerate() {
        let i = i as u64;
        let why = match s {
            Slot::Valid(_) => continue,
            Slot::Damaged(why) => why.clone(),
            Slot::Absent => format!("block {i}: superblock slot {i} holds no superblock"),
        };
        let mut finding = Finding {
            block: Some(i),
            what: format!("superblock slot {i} is damaged: {why}"),
            fixed: false,
            fix: Fix::Safe,
        };
        if mode != Mode::Check {
            rewrite_slot(dev, &sb, i)?;
            finding.fixed = true;
        }
        findings.push(finding);
    }
    Ok(Chosen {
        superblock: sb,
        slot,
        findings,
        blocks_read: 2,
    })
}

fn no_superblock(slots: &[Slot; 2]) -> OperationalError {
    if slots.iter().all(|s| matches!(s, Slot::Absent)) {
        return OperationalError(
            "not a tuxfs filesystem: no superblock magic in block 0 or block 1".into(),
        );
    }
    let why: Vec<String> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| match s {
            Slot::Damaged(w) => format!("slot {i}: {w}"),
            _ => format!("slot {i}: no superblock"),
        })
        .collect();
    OperationalError(format!("no valid superblock survives ({})", why.join("; ")))
}

/// Conditions under which checking cannot go on.
fn check_usable(dev: &dyn BlockDevice, sb: &Superblock) -> Result<(), OperationalError> {
    let need = sb.block_count * u64::from(sb.block_size);
    if dev.size_bytes() < need {
        return Err(OperationalError(format!(
            "the image is truncated: the superblock describes {need} bytes ({} blocks of {}) but the image has {}",
            sb.block_count,
            sb.block_size,
            dev.size_bytes()
        )));
    }
    let unknown = sb.features.unknown_incompat();
    if unknown != 0 {
        return Err(OperationalError(format!(
            "the filesystem uses incompatible features {unknown:#x} this fsck does not know"
        )));
    }
    Ok(())
}

/// Writes the chosen superblock into slot `slot` and flushes.
fn rewrite_slot(dev: &dyn BlockDevice, sb: &Superblock, slot: u64) -> Result<(), OperationalError> {
    let mut buf = AlignedBuf::zeroed(sb.block_size as usize);
    sb.encode(&mut buf, slot);
    let req = WriteRequest {
        offset: slot * u64::from(sb.block_size),
        data: Arc::new(buf),
    };
    dev.submit_writes(vec![req])
        .and_then(|()| dev.flush())
        .map_err(|e| OperationalError(format!("cannot rewrite superblock slot {slot}: {e}")))
}
