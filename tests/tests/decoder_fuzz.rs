//! Story: a tuxfs image is untrusted input. A disk rots, a write is torn, a block lands at
//! the wrong address, or someone hands us a crafted image; every on-disk decoder in
//! `tuxfs_engine::format` then reads bytes nobody vouches for. The engine promises that
//! decoding such bytes never panics, never loops forever and never allocates beyond a bound
//! set by the input's size, and that a rejection is an error naming the block.
//!
//! These tests hold it to that promise with the seeded, structure-aware fuzzer in
//! `tuxfs_tests::decoder_fuzz`: valid blocks of every kind and size are built, checked to
//! round-trip, mutated, re-sealed (so the checks behind the checksum are what gets tested),
//! and fed to every decoder. A short smoke run uses a fixed seed (the same inputs on every
//! machine) and one fresh random seed (printed as `seed=...`; replay it with
//! `TUXFS_SEED=<seed> cargo test -p tuxfs-tests --test decoder_fuzz`). For long runs use the
//! `fuzz-decoders` binary. The last tests plug deliberately broken fake decoders into the
//! same runner, proving that the harness notices each kind of broken promise and reports
//! the seed, the iteration and the replay command: a fuzzer that cannot fail proves nothing.

use tuxfs_tests::decoder_fuzz::{
    self, Config, CountingAlloc, Ctx, Failure, Outcome, Problem, Sample, Target,
};
use tuxfs_tests::rng::{self, Rng};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// About 4 seconds per run in the test profile (opt-level 1, overflow checks on).
const SMOKE_ITERATIONS: u64 = 20_000;
const FIXED_SEED: u64 = 0x7475_7866_735f_667a;

fn smoke(seed: u64) {
    let stats = decoder_fuzz::run(seed, SMOKE_ITERATIONS).unwrap_or_else(|f| panic!("{f}"));
    eprintln!("{stats}");
    assert_eq!(stats.iterations, SMOKE_ITERATIONS);
    assert!(stats.alloc_measured, "CountingAlloc is installed");
    for d in &stats.decoders {
        // A fuzzer stuck in front of the checksum, or one that never builds an acceptable
        // input, would show zero here.
        assert!(
            d.ok > 0 && d.err > 0,
            "{} never took both paths: {d:?}",
            d.name
        );
    }
}

#[test]
fn fixed_seed_smoke_run() {
    smoke(FIXED_SEED);
}

#[test]
fn random_seed_smoke_run() {
    smoke(rng::seed_from_env_or_clock());
}

#[test]
fn runs_are_deterministic() {
    let summary = |r: Result<decoder_fuzz::Stats, Failure>| match r {
        Ok(s) => format!(
            "{:?}",
            s.decoders.iter().map(|d| (d.ok, d.err)).collect::<Vec<_>>()
        ),
        Err(f) => f.to_string(),
    };
    assert_eq!(
        summary(decoder_fuzz::run(99, 300)),
        summary(decoder_fuzz::run(99, 300))
    );
}

// --- The harness can fail -----------------------------------------------------------------

/// 64 random bytes: a "valid" sample for the fake decoders.
fn fake_sample(rng: &mut Rng, _: &mut Ctx) -> Sample {
    Sample {
        bytes: rng.bytes(64),
        block: false,
    }
}

fn expect_failure(target: Target, seed: u64) -> Failure {
    let name = target.name;
    let failure = match decoder_fuzz::run_with(&[target], &Config::new(seed, 500)) {
        Ok(stats) => panic!("the harness missed a broken {name}: {stats}"),
        Err(f) => f,
    };
    let text = failure.to_string();
    eprintln!("{text}");
    assert_eq!(failure.decoder, name);
    assert_eq!(failure.seed, seed);
    for needle in [
        format!("seed={seed}"),
        format!("iteration={}", failure.iteration),
        format!("--seed {seed} --start {}", failure.iteration),
        "replay:".to_string(),
        name.to_string(),
    ] {
        assert!(text.contains(&needle), "report lacks {needle:?}:\n{text}");
    }
    failure
}

#[test]
fn harness_catches_a_panicking_decoder() {
    let target = Target::new("fake::panics_on_odd_sizes", true, fake_sample, |b, ctx| {
        assert!(b.len() == 64, "fake decoder: unexpected length {}", b.len());
        Outcome::reject(format!("block {}: fine", ctx.blocknr))
    });
    let f = expect_failure(target, 1234);
    match &f.problem {
        Problem::Panic(m) => assert!(m.contains("fake decoder: unexpected length"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_ne!(f.input.len(), 64);
    assert!(f.to_string().contains("0000 "), "hex dump:\n{f}");
}

#[test]
fn harness_catches_over_allocation() {
    let target = Target::new("fake::allocates_a_lot", true, fake_sample, |b, _| {
        let scratch = vec![1u8; b.len() * 1000 + 100_000];
        std::hint::black_box(&scratch);
        Outcome::Accepted {
            held: 0,
            reencode: None,
        }
    });
    let f = expect_failure(target, 7);
    assert!(matches!(f.problem, Problem::AllocatedTooMuch { .. }), "{f}");

    let target = Target::new("fake::holds_a_lot", true, fake_sample, |_, _| {
        Outcome::Accepted {
            held: usize::MAX / 2,
            reencode: None,
        }
    });
    let f = expect_failure(target, 8);
    assert!(matches!(f.problem, Problem::HeldTooMuch { .. }), "{f}");
}

#[test]
fn harness_catches_non_canonical_acceptance() {
    let target = Target::new("fake::ignores_bytes", true, fake_sample, |b, _| {
        let kept = b.get(..8).unwrap_or(b).to_vec();
        Outcome::accept(0, move || {
            let mut out = kept;
            out.resize(64, 0);
            out
        })
    });
    let f = expect_failure(target, 9);
    assert!(matches!(f.problem, Problem::NotCanonical { .. }), "{f}");
}

#[test]
fn harness_catches_errors_that_do_not_name_the_block() {
    let target = Target::new("fake::anonymous_error", true, fake_sample, |_, _| {
        Outcome::reject("something is wrong somewhere")
    });
    let f = expect_failure(target, 10);
    assert!(matches!(f.problem, Problem::AnonymousError { .. }), "{f}");
}

#[test]
fn harness_catches_a_broken_round_trip() {
    let target = Target::new(
        "fake::round_trip",
        true,
        |_, _| panic!("decode(encode(x)) != x"),
        |_, _| Outcome::reject("unreachable"),
    );
    let f = expect_failure(target, 11);
    assert_eq!(f.iteration, 0);
    assert!(
        matches!(&f.problem, Problem::RoundTrip(m) if m.contains("!= x")),
        "{f}"
    );
}
