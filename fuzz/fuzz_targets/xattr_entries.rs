//! libFuzzer target for `xattr::decode_entries` (see fuzz/Cargo.toml).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tuxfs_tests::decoder_fuzz::fuzz_one("xattr::decode_entries", data);
});
