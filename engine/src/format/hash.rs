//! Directory name hashing: SipHash-2-4 keyed by the superblock's `hash_seed`, so that names
//! chosen to collide on one filesystem do not collide on another. Written out here (not
//! `std`'s `DefaultHasher`) because the on-disk result must never change between releases.

/// Bits of a directory position taken by the collision counter.
pub const POS_SEQ_BITS: u32 = 8;
/// Mask of the hash bits in a directory position: 54 bits, so positions stay below 2^62
/// and a readdir cookie (position + 3, after "." and "..") fits a signed 64-bit FUSE offset.
pub const POS_HASH_MASK: u64 = 0x3FFF_FFFF_FFFF_FF00;
/// Largest collision counter of a base position: the first POS_SEQ_MAX + 1 = 256 names of
/// one hash take base positions, later ones overflow positions (dirent.rs).
pub const POS_SEQ_MAX: u64 = (1 << POS_SEQ_BITS) - 1;
const _: () = assert!(POS_HASH_MASK & POS_SEQ_MAX == 0);

/// How a filesystem hashes directory names. Every filesystem mkfs.tuxfs makes uses
/// SipHash-2-4 under its seed; a filesystem made for tests with the incompat feature
/// `CONSTANT_NAME_HASH` gives every name the hash 0, so that tests can make any number of
/// names collide (nothing else can: the real hash is 54 bits under a secret seed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameHasher {
    seed: [u8; 16],
    constant: bool,
}

impl NameHasher {
    /// SipHash-2-4 under `seed`: the hash of every real filesystem.
    pub fn siphash(seed: [u8; 16]) -> Self {
        NameHasher {
            seed,
            constant: false,
        }
    }

    /// Hash 0 for every name (test filesystems with `CONSTANT_NAME_HASH` only).
    pub fn constant_for_tests(seed: [u8; 16]) -> Self {
        NameHasher {
            seed,
            constant: true,
        }
    }

    /// The hash part of the directory position of `name`.
    pub fn hash(&self, name: &[u8]) -> u64 {
        if self.constant {
            0
        } else {
            name_hash(&self.seed, name)
        }
    }
}

fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-2-4 of `data` under the 128-bit `key` (reference algorithm, little-endian).
pub fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
    let [k0, k1] = [0, 8].map(|o| {
        let mut w = [0u8; 8];
        w.copy_from_slice(key.get(o..o + 8).unwrap_or(&[0; 8]));
        u64::from_le_bytes(w)
    });
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let m = u64::from_le_bytes(w);
        v[3] ^= m;
        sip_round(&mut v);
        sip_round(&mut v);
        v[0] ^= m;
    }
    let mut last = [0u8; 8];
    let rest = chunks.remainder();
    last.get_mut(..rest.len())
        .unwrap_or(&mut [])
        .copy_from_slice(rest);
    last[7] = data.len() as u8;
    let m = u64::from_le_bytes(last);
    v[3] ^= m;
    sip_round(&mut v);
    sip_round(&mut v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..4 {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The hash part of the directory position of `name`.
pub fn name_hash(seed: &[u8; 16], name: &[u8]) -> u64 {
    siphash24(seed, name) & POS_HASH_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference vectors from the SipHash paper (key 00..0f, messages 00..n-1).
    #[test]
    fn reference_vectors() {
        let key: [u8; 16] = std::array::from_fn(|i| i as u8);
        let msg: Vec<u8> = (0..15u8).collect();
        assert_eq!(siphash24(&key, &msg), 0xa129_ca61_49be_45e5);
        assert_eq!(siphash24(&key, &[]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(&key, &msg[..8]), 0x93f5_f579_9a93_2462);
    }

    #[test]
    fn positions_leave_room_for_the_counter() {
        let seed = [3u8; 16];
        for name in [&b"a"[..], b"lost+found", &[0xffu8; 255]] {
            let h = name_hash(&seed, name);
            assert_eq!(h & POS_SEQ_MAX, 0);
            assert!(h < 1 << 62);
        }
    }
}
