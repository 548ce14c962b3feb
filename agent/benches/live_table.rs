//! Benchmark: what the live table of in-flight requests costs the agent's hot path.
//!
//! `cargo bench -p tokengun-agent --bench live_table`
//!
//! With 10,000 requests in flight: a request entering and leaving the table (one lock each), a
//! content chunk noted in its slot (the per-chunk cost), and a progress snapshot of the oldest
//! 256 (taken every 250 ms). Entering and leaving is also measured from two threads at once, as
//! the agent's workers do it. Best of 3, wall time.

use std::hint::black_box;
use std::time::Instant;
use tokengun_agent::bench::LiveRequests;

const IN_FLIGHT: u32 = 10_000;

fn best_of_3(mut f: impl FnMut() -> f64) -> f64 {
    (0..3).map(|_| f()).fold(f64::INFINITY, f64::min)
}

fn main() {
    let table = LiveRequests::default();
    let entries: Vec<_> = (1..=IN_FLIGHT).map(|id| table.enter(id, 0, 0)).collect();

    // Enter and leave one more request while 10,000 are in flight.
    let rounds = 200_000u32;
    let enter_leave_ns = best_of_3(|| {
        let t0 = Instant::now();
        for i in 0..rounds {
            drop(black_box(table.enter(IN_FLIGHT + 1 + i, 0, 0)));
        }
        t0.elapsed().as_nanos() as f64 / f64::from(rounds)
    });

    // The same from two threads at once (lock contention).
    let enter_leave_2t_ns = best_of_3(|| {
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for t in 0..2u32 {
                let table = &table;
                s.spawn(move || {
                    for i in 0..rounds {
                        drop(black_box(table.enter(1_000_000 * (t + 1) + i, 0, 0)));
                    }
                });
            }
        });
        t0.elapsed().as_nanos() as f64 / f64::from(2 * rounds)
    });

    // One content chunk noted in a request's slot.
    let chunks = 10_000_000u64;
    let chunk_ns = best_of_3(|| {
        let t0 = Instant::now();
        for i in 0..chunks {
            let e = &entries[(i % u64::from(IN_FLIGHT)) as usize];
            e.tokens(black_box(i), 1, false);
        }
        t0.elapsed().as_nanos() as f64 / chunks as f64
    });

    // A progress snapshot: the oldest 256 rows and a count of the rest.
    let snapshots = 2_000u32;
    let snapshot_us = best_of_3(|| {
        let t0 = Instant::now();
        for _ in 0..snapshots {
            black_box(table.snapshot(tokengun_common::LIVE_REQUESTS_MAX));
        }
        t0.elapsed().as_secs_f64() * 1e6 / f64::from(snapshots)
    });

    println!("live table with {IN_FLIGHT} requests in flight:");
    println!("  enter + leave, one thread:   {enter_leave_ns:8.0} ns per request");
    println!("  enter + leave, two threads:  {enter_leave_2t_ns:8.0} ns per request");
    println!("  chunk noted in its slot:     {chunk_ns:8.1} ns per chunk");
    println!("  snapshot of 256 rows:        {snapshot_us:8.1} µs (every 250 ms)");
    drop(entries);
}
