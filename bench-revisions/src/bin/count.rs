//! `count CASE_INDEX N`: N requests of one case, for callgrind (per request = (T(1001) - T(1)) / 1000).
//! An index past the last case lists the cases.
//!
//! `count ratio ROUNDS`: wall time, interleaved. For each old/new pair, ROUNDS rounds that each time
//! a block of requests at the old revision and then the same block at the new one (order swapped
//! every other round), so machine load that drifts over seconds hits both sides alike; prints the
//! median and the spread of new/old over the rounds, and each side against the bare router.
use std::time::Instant;

const BLOCK: u32 = 20_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let first = args.next().expect("case index or `ratio`");
    let n: usize = args.next().and_then(|a| a.parse().ok()).expect("count");
    let cases = bench_revisions::cases();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    if first == "ratio" {
        return ratios(&runtime, &cases, n);
    }
    let index: usize = first.parse().expect("case index");
    if index >= cases.len() {
        for (i, case) in cases.iter().enumerate() {
            eprintln!("{i}: {}", case.name);
        }
        return;
    }
    let case = &cases[index];
    runtime.block_on(async {
        for _ in 0..n {
            case.run().await;
        }
    });
}

fn block(runtime: &tokio::runtime::Runtime, case: &bench_revisions::Case) -> f64 {
    let start = Instant::now();
    runtime.block_on(async {
        for _ in 0..BLOCK {
            case.run().await;
        }
    });
    start.elapsed().as_nanos() as f64 / f64::from(BLOCK)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ratios(runtime: &tokio::runtime::Runtime, cases: &[bench_revisions::Case], rounds: usize) {
    let bare = &cases[0];
    println!(
        "{:<40} {:>9} {:>9} {:>9} {:>17}",
        "case (ns/request, medians)", "old", "new", "new/old", "new/old min-max"
    );
    for pair in cases[1..].chunks(2) {
        let (old, new) = (&pair[0], &pair[1]);
        let (mut o, mut n, mut r, mut b) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            b.push(block(runtime, bare));
            let (x, y) = if round % 2 == 0 {
                let x = block(runtime, old);
                (x, block(runtime, new))
            } else {
                let y = block(runtime, new);
                (block(runtime, old), y)
            };
            o.push(x);
            n.push(y);
            r.push(y / x);
        }
        let (lo, hi) = r
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
        let bare_ns = median(b);
        let name = old.name.trim_start_matches("old ");
        println!(
            "{:<40} {:>9.0} {:>9.0} {:>9.3} {:>8.3}-{:<8.3} (bare {:.0} ns: old {:.2}x, new {:.2}x)",
            name,
            median(o.clone()),
            median(n.clone()),
            median(r),
            lo,
            hi,
            bare_ns,
            median(o) / bare_ns,
            median(n) / bare_ns
        );
    }
}
