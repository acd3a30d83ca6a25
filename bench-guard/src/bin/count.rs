//! Runs one case of the hot-path table `N` times, for callgrind (`counts.sh`): `count INDEX N`.
//! `count list` prints the cases; `count sha N` hashes one block `N` times. Only `measure` is counted (`--toggle-collect`), so building
//! the case (a million-key store, say) costs nothing in the figures.
#![allow(missing_docs)]

use axum_keyguard_bench_guard::{case, Case, BASELINE, NAMES};

#[inline(never)]
fn measure(runtime: &tokio::runtime::Runtime, case: &Case, n: u64) {
    for _ in 0..n {
        runtime.block_on(case.run());
    }
}

/// The probe that prices SHA-256: one 43-byte key (one 64-byte block) hashed `n` times.
#[inline(never)]
fn measure_sha(n: u64) {
    use sha2::Digest as _;
    for _ in 0..n {
        std::hint::black_box(sha2::Sha256::digest(std::hint::black_box(
            axum_keyguard_bench_guard::KEY.as_bytes(),
        )));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let first = args.next().unwrap_or_default();
    if first == "sha" {
        let n = args
            .next()
            .and_then(|n| n.parse().ok())
            .expect("usage: count sha N");
        measure_sha(n);
        return;
    }
    if first == "list" {
        assert_eq!(NAMES.len(), BASELINE.len());
        for (i, name) in NAMES.iter().enumerate() {
            eprintln!("{i}:{}: {name}", BASELINE[i]);
        }
        return;
    }
    let index: usize = first.parse().expect("usage: count INDEX N | count list");
    let n: u64 = args
        .next()
        .and_then(|n| n.parse().ok())
        .expect("usage: count INDEX N");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let case = case(index);
    // Warm: the first request fills lazy statics and the router's caches.
    runtime.block_on(case.run());
    measure(&runtime, &case, n);
}
