//! Every fuzz target, briefly (CI): the repository's corpus and the built-in seeds, then
//! mutations; no input may panic. The long runs (10 million executions each) are recorded in
//! fuzz/README.md.
use rusk_fuzz::targets::TARGETS;
use std::path::Path;

const ITERATIONS: u64 = 200_000;

#[test]
fn no_target_panics_on_its_corpus_or_mutations_of_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for t in TARGETS {
        let mut corpus = rusk_fuzz::load_corpus(&root.join(t.name));
        corpus.extend((t.seeds)());
        let check = t.check;
        let r = rusk_fuzz::run(t.name, corpus, ITERATIONS, 42, None, &check);
        assert!(r.executions >= ITERATIONS);
        assert!(r.crashes.is_empty(), "{}: {:?}", t.name, r.crashes);
    }
}

/// The engine finds what it should: a target that panics on a two-byte pattern reachable by
/// mutation is caught, and the panic is reported, not propagated.
#[test]
fn the_engine_catches_a_planted_panic() {
    fn planted(b: &[u8]) {
        if b.windows(2).any(|w| w == [0xde, 0xad]) {
            panic!("planted");
        }
    }
    let r = rusk_fuzz::run(
        "planted",
        vec![vec![0xde, 0x00, 0x11]],
        100_000,
        7,
        None,
        &planted,
    );
    assert!(!r.crashes.is_empty(), "the planted panic was not found");
}
