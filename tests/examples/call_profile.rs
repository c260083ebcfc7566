//! A tight loop of `add(int, int)` calls for profiling (`perf record`): in-process by default, or
//! through the i686 server with the argument `server32`. Not a benchmark; see `./x bench` for numbers.
use std::hint::black_box;

use bitbridge::{CType, Signature, Value};
use bitbridge_tests::Backend;

fn main() {
    let backend = match std::env::args().nth(1).as_deref() {
        Some("server32") => Backend::Server32,
        _ => Backend::InProcess,
    };
    let n: u64 = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(2_000_000);
    let lib = backend.open("cpp_lib");
    let add = lib.function("add", Signature::new(CType::Int).arg(CType::Int).arg(CType::Int)).unwrap();
    let args = [Value::Int(2), Value::Int(3)];
    let t = std::time::Instant::now();
    for _ in 0..n {
        black_box(add.call(black_box(&args)).unwrap());
    }
    println!("{:?} per call ({backend:?})", t.elapsed() / n as u32);
}
