//! libFuzzer target for `btree::Leaf::decode` (see fuzz/Cargo.toml).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tuxfs_tests::decoder_fuzz::fuzz_one("btree::Leaf::decode", data);
});
