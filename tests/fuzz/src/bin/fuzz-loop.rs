//! Stable-toolchain fallback for the fuzz targets (no libFuzzer): runs the seeds and any
//! corpus files, then a bounded loop of inputs made by a seeded PRNG (random bytes, and
//! mutations and splices of the corpus), each through the same target function.
//!
//! ```text
//! fuzz-loop TARGET [--iterations N] [--seconds S] [--seed X] [--corpus DIR] [--artifacts DIR]
//! fuzz-loop --write-seeds DIR     # DIR/<target>/seed-N for cargo-fuzz's corpus
//! ```
//! Prints one line `fuzz-loop TARGET: ok|crash iterations=... ` and exits 1 on a crash
//! (the input is written to the artifacts directory).

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// xorshift64*: tiny, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        if bound == 0 { 0 } else { (self.next() % bound as u64) as usize }
    }
}

/// Interesting bytes for text formats (TOML) and protobuf.
const DICTIONARY: &[&[u8]] = &[
    b"=",
    b"\"",
    b"[",
    b"]",
    b"[[",
    b"]]",
    b"{",
    b"}",
    b",",
    b"\n",
    b".",
    b"-",
    b"nan",
    b"inf",
    b"1e309",
    b"-9223372036854775808",
    b"18446744073709551616",
    b"0x",
    b"\"\"\"",
    b"'",
    b"\\u0000",
    b"99999999999h",
    b"0s",
    b"-1s",
    b"25:61",
    b"\xff\xff\xff\xff\x0f",
    b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
];

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    if corpus.is_empty() || rng.below(8) == 0 {
        let length = rng.below(256);
        return (0..length).map(|_| rng.next() as u8).collect();
    }
    let mut input = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(8) {
        let position = rng.below(input.len() + 1);
        match rng.below(6) {
            0 if !input.is_empty() => {
                let at = rng.below(input.len());
                input[at] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                let at = rng.below(input.len());
                input[at] = rng.next() as u8;
            }
            2 => {
                let end = (position + rng.below(16)).min(input.len());
                input.drain(position..end);
            }
            3 => {
                let word = DICTIONARY[rng.below(DICTIONARY.len())];
                input.splice(position..position, word.iter().copied());
            }
            4 => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                let to = (from + rng.below(64)).min(other.len());
                input.splice(position..position, other[from..to].iter().copied());
            }
            _ => {
                let end = (position + rng.below(32)).min(input.len());
                let copy = input[position..end].to_vec();
                input.splice(position..position, copy);
            }
        }
    }
    input
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--write-seeds") {
        let dir = PathBuf::from(args.get(1).expect("--write-seeds DIR"));
        for target in nightowl_fuzz::TARGETS {
            let target_dir = dir.join(target);
            std::fs::create_dir_all(&target_dir).expect("create corpus dir");
            for (index, seed) in nightowl_fuzz::seeds(target).iter().enumerate() {
                std::fs::write(target_dir.join(format!("seed-{index}")), seed).expect("write seed");
            }
        }
        return;
    }
    let name = args.first().expect("usage: fuzz-loop TARGET [options]").clone();
    let target = nightowl_fuzz::target(&name).unwrap_or_else(|| panic!("unknown target {name}"));
    let option = |key: &str| args.iter().position(|arg| arg == key).and_then(|at| args.get(at + 1)).cloned();
    let iterations: u64 =
        option("--iterations").map_or(200_000, |value| value.parse().expect("--iterations"));
    let seconds: u64 = option("--seconds").map_or(60, |value| value.parse().expect("--seconds"));
    let seed: u64 = option("--seed").map_or(0x6e69_6768_746f_776c, |value| value.parse().expect("--seed"));
    let artifacts = PathBuf::from(option("--artifacts").unwrap_or_else(|| "fuzz-artifacts".into()));

    let mut corpus = nightowl_fuzz::seeds(&name);
    if let Some(dir) = option("--corpus") {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if let Ok(bytes) = std::fs::read(entry.path()) {
                    corpus.push(bytes);
                }
            }
        }
    }
    // Crashes are caught and reported with their input, not printed as a panic per try.
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut done = 0u64;
    let inputs = corpus.len() as u64;
    while done < inputs + iterations && Instant::now() < deadline {
        let input = if (done as usize) < corpus.len() {
            corpus[done as usize].clone()
        } else {
            mutate(&mut rng, &corpus)
        };
        done += 1;
        if std::panic::catch_unwind(|| target(&input)).is_err() {
            let _ = std::panic::take_hook();
            std::fs::create_dir_all(&artifacts).expect("create artifacts dir");
            let path = artifacts.join(format!("crash-{name}-{done}"));
            std::fs::write(&path, &input).expect("write crash input");
            // Run it again with the default hook, so the panic message is shown.
            let _ = std::panic::catch_unwind(|| target(&input));
            println!("fuzz-loop {name}: crash iterations={done} input={}", path.display());
            std::process::exit(1);
        }
        // Interesting (parseable-prefix) inputs are not tracked: no coverage here.
    }
    println!(
        "fuzz-loop {name}: ok iterations={done} corpus={inputs} seconds={:.0} seed={seed}",
        started.elapsed().as_secs_f64()
    );
}
