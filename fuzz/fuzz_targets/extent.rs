//! libFuzzer target for `extent::Extent::decode` (see fuzz/Cargo.toml).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tuxfs_tests::decoder_fuzz::fuzz_one("extent::Extent::decode", data);
});
