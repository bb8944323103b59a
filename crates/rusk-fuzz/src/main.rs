//! `rusk-fuzz [TARGET|all] [--iterations N] [--seed S]`: run the fuzz targets (see the crate
//! docs). The corpus is read from and the built-in seeds written to `fuzz/corpus/<target>/`;
//! panicking inputs go to `fuzz/crashes/`. Exits 1 if any input panicked.
use rusk_fuzz::targets::TARGETS;
use std::path::Path;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut which = "all".to_string();
    let (mut iterations, mut seed) = (1_000_000u64, 1u64);
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--iterations" => {
                iterations = args[i + 1].parse().expect("--iterations N");
                i += 1;
            }
            "--seed" => {
                seed = args[i + 1].parse().expect("--seed S");
                i += 1;
            }
            t => which = t.to_string(),
        }
        i += 1;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut failed = false;
    for t in TARGETS.iter().filter(|t| which == "all" || which == t.name) {
        let dir = root.join("corpus").join(t.name);
        rusk_fuzz::save_corpus(&dir, &(t.seeds)()).expect("corpus directory");
        let corpus = rusk_fuzz::load_corpus(&dir);
        let start = Instant::now();
        let check = t.check;
        let r = rusk_fuzz::run(
            t.name,
            corpus,
            iterations,
            seed,
            Some(&root.join("crashes")),
            &check,
        );
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{}: {} executions in {secs:.1} s ({:.0}/s), corpus {}, {} crash(es)",
            r.target,
            r.executions,
            r.executions as f64 / secs,
            r.corpus,
            r.crashes.len()
        );
        for c in &r.crashes {
            println!("  crash: {}", c.display());
        }
        failed |= !r.crashes.is_empty();
    }
    std::process::exit(failed as i32);
}
