//! libFuzzer target for `btree::decode_block_ref` (see fuzz/Cargo.toml).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tuxfs_tests::decoder_fuzz::fuzz_one("btree::decode_block_ref", data);
});
