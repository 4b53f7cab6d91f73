//! Recognising filesystems and other contents worth protecting, from the first bytes of a
//! device. Offsets are those the formats themselves define (as blkid knows them).

/// Bytes mkfs reads to look for signatures (covers btrfs at 64 KiB and both tuxfs slots).
pub const PROBE_BYTES: usize = 128 * 1024 + 4096;

/// (name, byte offset, magic bytes)
const SIGNATURES: &[(&str, usize, &[u8])] = &[
    ("an ext2/ext3/ext4 filesystem", 1080, &[0x53, 0xef]),
    ("an XFS filesystem", 0, b"XFSB"),
    ("a btrfs filesystem", 65600, b"_BHRfS_M"),
    ("a swap area", 4086, b"SWAPSPACE2"),
    ("a swap area", 4086, b"SWAP-SPACE"),
    ("a LUKS encrypted volume", 0, b"LUKS\xba\xbe"),
    ("an F2FS filesystem", 1024, &[0x10, 0x20, 0xf5, 0xf2]),
    ("a squashfs image", 0, b"hsqs"),
    ("an NTFS filesystem", 3, b"NTFS    "),
    ("a FAT filesystem", 54, b"FAT1"),
    ("a FAT32 filesystem", 82, b"FAT32   "),
    ("an ISO 9660 image", 32769, b"CD001"),
    ("a GPT partition table", 512, b"EFI PART"),
];

fn at(head: &[u8], off: usize, magic: &[u8]) -> bool {
    head.get(off..off + magic.len()) == Some(magic)
}

/// What the device seems to hold, if anything recognisable.
pub fn detect(head: &[u8]) -> Option<String> {
    let tuxfs = tuxfs_engine::format::Kind::Super.magic().to_le_bytes();
    let mut bs = tuxfs_engine::format::BLOCK_SIZE_MIN as usize;
    if at(head, 0, &tuxfs) {
        return Some("the device holds a tuxfs filesystem".into());
    }
    while bs <= tuxfs_engine::format::BLOCK_SIZE_MAX as usize {
        if at(head, bs, &tuxfs) {
            return Some("the device holds a tuxfs filesystem (superblock slot 1)".into());
        }
        bs *= 2;
    }
    for (name, off, magic) in SIGNATURES {
        if at(head, *off, magic) {
            return Some(format!("the device holds {name}"));
        }
    }
    if at(head, 510, &[0x55, 0xaa])
        && head
            .get(446..510)
            .is_some_and(|p| p.iter().any(|&b| b != 0))
    {
        return Some("the device holds an MBR partition table".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_known_signatures_and_not_zeros() {
        assert_eq!(detect(&vec![0u8; PROBE_BYTES]), None);
        for (name, off, magic) in SIGNATURES {
            let mut head = vec![0u8; PROBE_BYTES];
            head[*off..*off + magic.len()].copy_from_slice(magic);
            assert!(detect(&head).is_some_and(|s| s.contains(name)), "{name}");
        }
        assert_eq!(detect(&[1, 2, 3]), None, "short input is no signature");
    }
}
