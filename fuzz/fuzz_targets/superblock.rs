//! libFuzzer target for `superblock::Superblock::decode` (see fuzz/Cargo.toml).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tuxfs_tests::decoder_fuzz::fuzz_one("superblock::Superblock::decode", data);
});
