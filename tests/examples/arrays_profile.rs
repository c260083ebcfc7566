//! Profiling aid for the bulk array paths: `cargo run --release -p bitbridge-tests --example
//! arrays_profile -- <case> <iterations>` (cases: typed-inout, sum64, scale-numbers).

use bitbridge::{CType, InOut, LibraryOptions, ServerOptions, Signature, Value};
use bitbridge_tests::{fixture, Bits};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let case = args.get(1).map_or("typed-inout", String::as_str);
    let iters: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let lib = LibraryOptions::new(fixture("ctest", Bits::B32)).server(ServerOptions::new()).open().unwrap();
    match case {
        "typed-inout" => {
            let n: i32 = 1 << 20;
            let f = lib.typed::<(InOut<[f64]>, i32, f64), ()>("scale").unwrap();
            let mut buf: Vec<f64> = (0..n).map(f64::from).collect();
            for _ in 0..iters {
                f.call((&mut buf, n, 1.0)).unwrap();
            }
        }
        "sum64" => {
            let n = 8 << 20;
            let sum = lib
                .function("sum4", Signature::new(CType::Double).arg(CType::ptr(CType::Double)).arg(CType::Int))
                .unwrap();
            let bytes: Vec<u8> = (0..n).flat_map(|i| (i as f64).to_le_bytes()).collect();
            let args = [Value::Bytes(bytes), Value::Int(n as i64)];
            for _ in 0..iters {
                std::hint::black_box(sum.call(&args).unwrap());
            }
        }
        "scale-numbers" => {
            let n = 1 << 20;
            let sig =
                Signature::new(CType::Void).arg_inout(CType::ptr(CType::Double)).arg(CType::Int).arg(CType::Double);
            let scale = lib.function("scale", sig).unwrap();
            let args = [Value::f64s((0..n).map(|i| i as f64)), Value::Int(n as i64), Value::Float(1.0)];
            for _ in 0..iters {
                std::hint::black_box(scale.call(&args).unwrap());
            }
        }
        other => panic!("unknown case {other}"),
    }
}
