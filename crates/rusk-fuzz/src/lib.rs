//! A small mutation fuzzer on stable Rust (cargo-fuzz needs a nightly compiler, which the
//! build machines do not have), and the targets: everything rusk decodes from a peer or a file.
//!
//! Each target is a function of bytes that must never panic, whatever the bytes. The engine
//! starts from a corpus (`fuzz/corpus/<target>/`, kept in the repository, plus seeds built
//! from valid messages), and mutates: bit flips, random and boundary bytes, inserted, deleted
//! and duplicated runs, truncation, splicing two inputs, and overwritten little-endian and
//! varint lengths (postcard's). Inputs are drawn from a seeded ChaCha generator, so a run is
//! reproducible from its seed. A panic is caught, its input written to `fuzz/crashes/`, and
//! counted.
//!
//! `cargo run --release -p rusk-fuzz -- all --iterations 10000000` is the long run (figures in
//! `fuzz/README.md`); CI runs every target briefly (`tests/targets.rs`).
pub mod targets;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Longest input the engine makes (longer ones are cut).
pub const INPUT_MAX: usize = 64 * 1024;

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub target: String,
    pub executions: u64,
    pub corpus: usize,
    /// Inputs that panicked (written to the crash directory).
    pub crashes: Vec<PathBuf>,
}

/// The inputs of `dir` (missing: none).
pub fn load_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

/// Write `inputs` into `dir`, named by a hash of their bytes (existing files are kept).
pub fn save_corpus(dir: &Path, inputs: &[Vec<u8>]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for i in inputs {
        let p = dir.join(format!("{:016x}", fnv(i)));
        if !p.exists() {
            std::fs::write(p, i)?;
        }
    }
    Ok(())
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100000001b3)
    })
}

const INTERESTING: &[u8] = &[0, 1, 0x7f, 0x80, 0xfe, 0xff, b'{', b'}', b'"', b'[', b']'];

/// One mutation of `input` (sometimes several), using `other` for splices.
pub fn mutate(rng: &mut ChaCha8Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let len = v.len();
        match rng.gen_range(0..10) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                v[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                v[i] = if rng.gen_bool(0.5) {
                    rng.gen()
                } else {
                    INTERESTING[rng.gen_range(0..INTERESTING.len())]
                };
            }
            2 => {
                let i = rng.gen_range(0..=len);
                let n = rng.gen_range(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                v.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = (a + rng.gen_range(1..=32)).min(len);
                v.drain(a..b);
            }
            4 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = (a + rng.gen_range(1..=32)).min(len);
                let run = v[a..b].to_vec();
                let at = rng.gen_range(0..=v.len());
                v.splice(at..at, run);
            }
            5 if len > 0 => v.truncate(rng.gen_range(0..len)),
            6 if !other.is_empty() => {
                let cut = rng.gen_range(0..=v.len());
                let from = rng.gen_range(0..other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            7 if len > 0 => {
                // A postcard varint (a length, a count, an enum tag) made huge or odd.
                let i = rng.gen_range(0..len);
                let n: u64 = match rng.gen_range(0..4) {
                    0 => rng.gen_range(0..300),
                    1 => u32::MAX as u64,
                    2 => u64::MAX,
                    _ => rng.gen(),
                };
                let mut enc = Vec::new();
                let mut x = n;
                loop {
                    let b = (x & 0x7f) as u8;
                    x >>= 7;
                    if x == 0 {
                        enc.push(b);
                        break;
                    }
                    enc.push(b | 0x80);
                }
                let end = (i + enc.len()).min(len);
                v.splice(i..end, enc);
            }
            8 if len >= 4 => {
                // A fixed-width length field (executor frames are big-endian u32 / u64).
                let i = rng.gen_range(0..=len - 4);
                let n: u32 = [0, 1, 0x7fff_ffff, u32::MAX, rng.gen()][rng.gen_range(0..5)];
                v[i..i + 4].copy_from_slice(&n.to_be_bytes());
            }
            _ => {
                let i = rng.gen_range(0..=len);
                v.insert(i, INTERESTING[rng.gen_range(0..INTERESTING.len())]);
            }
        }
    }
    v.truncate(INPUT_MAX);
    v
}

/// Run `target` on `iterations` inputs mutated from `corpus` (and the corpus itself first).
/// Panicking inputs go to `crashes` (a directory; `None`: not written).
pub fn run(
    name: &str,
    corpus: Vec<Vec<u8>>,
    iterations: u64,
    seed: u64,
    crashes: Option<&Path>,
    target: &dyn Fn(&[u8]),
) -> Report {
    let corpus = if corpus.is_empty() {
        vec![Vec::new()]
    } else {
        corpus
    };
    let mut report = Report {
        target: name.to_string(),
        corpus: corpus.len(),
        ..Report::default()
    };
    // Panics are expected to be caught here: keep the default hook from printing each one.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let exec = |input: &[u8], report: &mut Report| {
        report.executions += 1;
        if catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
            let path = crashes.map(|d| {
                let _ = std::fs::create_dir_all(d);
                let p = d.join(format!("{name}-{:016x}", fnv(input)));
                let _ = std::fs::write(&p, input);
                p
            });
            report
                .crashes
                .push(path.unwrap_or_else(|| PathBuf::from(format!("{:02x?}", input))));
        }
    };
    for c in &corpus {
        exec(c, &mut report);
    }
    let mut current = corpus[0].clone();
    while report.executions < iterations {
        // Mostly keep mutating the last input (walks away from the seeds), sometimes restart
        // from a corpus entry.
        if rng.gen_bool(0.05) || current.len() >= INPUT_MAX {
            current = corpus[rng.gen_range(0..corpus.len())].clone();
        }
        let other = &corpus[rng.gen_range(0..corpus.len())];
        current = mutate(&mut rng, &current, other);
        exec(&current, &mut report);
    }
    std::panic::set_hook(hook);
    report
}
