//! Each wait mode on `add(int, int)` through the i686 server, under whatever load the machine has now
//! (start your own: a build, `stress`): for trying wait policies against real loads. Not a benchmark
//! (`./x bench` has the contention benchmark, with a load it starts itself).
//!
//! `cargo run --release -p bitbridge-tests --example wait_probe [seconds per mode] [threads]`
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitbridge::{CType, LibraryOptions, ServerOptions, Signature, Value, WaitMode};
use bitbridge_tests::{fixture, Bits};

fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let threads: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let modes = [
        ("spin", ServerOptions::new().wait_mode(WaitMode::Spin)),
        ("adaptive", ServerOptions::new().wait_mode(WaitMode::Adaptive)),
        ("futex", ServerOptions::new().wait_mode(WaitMode::Sleep)),
        ("socket", ServerOptions::new().shared_memory(false)),
    ];
    println!("{threads} thread(s), {secs} s per mode; per call: median, p90, mean; calls/s per 100 ms round: min, max");
    for (name, opts) in modes {
        let lib = LibraryOptions::new(fixture("cpp_lib", Bits::B32)).server(opts).open().unwrap();
        let add = Arc::new(lib.function("add", Signature::new(CType::Int).arg(CType::Int).arg(CType::Int)).unwrap());
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let add = add.clone();
                std::thread::spawn(move || {
                    let args = [Value::Int(2), Value::Int(3)];
                    let mut times = Vec::new();
                    let mut rounds = Vec::new();
                    let mut round_start = Instant::now();
                    let mut in_round = 0u64;
                    while Instant::now() < end {
                        let t = Instant::now();
                        black_box(add.call(&args).unwrap());
                        times.push(t.elapsed());
                        in_round += 1;
                        if round_start.elapsed() >= Duration::from_millis(100) {
                            rounds.push(in_round as f64 / round_start.elapsed().as_secs_f64());
                            round_start = Instant::now();
                            in_round = 0;
                        }
                    }
                    (times, rounds)
                })
            })
            .collect();
        let mut times = Vec::new();
        let mut rounds: Vec<f64> = Vec::new();
        for h in handles {
            let (t, r) = h.join().unwrap();
            times.extend(t);
            if rounds.is_empty() {
                rounds = r;
            } else {
                rounds.iter_mut().zip(r).for_each(|(a, b)| *a += b);
            }
        }
        times.sort();
        let mean = times.iter().sum::<Duration>() / times.len().max(1) as u32;
        rounds.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{name:>9}: {:>10.2?} {:>10.2?} {:>10.2?}   rounds {:>8.0} .. {:>8.0}",
            times[times.len() / 2],
            times[times.len() * 9 / 10],
            mean,
            rounds.first().copied().unwrap_or(0.0),
            rounds.last().copied().unwrap_or(0.0)
        );
    }
}
