//! libFuzzer target for `bitmap::decode` (see fuzz/Cargo.toml).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tuxfs_tests::decoder_fuzz::fuzz_one("bitmap::decode", data);
});
