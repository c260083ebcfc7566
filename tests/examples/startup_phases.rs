//! Where a server's start-up time goes, phase by phase (the 32-bit fixtures, i686 server):
//! `./x servers --release && cargo run --release -p bitbridge-tests --example startup_phases`.
use std::time::Instant;

use bitbridge::{inspect, Arch, CType, ServerOptions, Signature, Value};

fn main() {
    for name in ["ctest", "cpp_lib"] {
        let path = bitbridge_tests::fixture(name, bitbridge_tests::Bits::B32);
        for _ in 0..5 {
            let t0 = Instant::now();
            inspect(&path).unwrap();
            let t1 = Instant::now();
            let server = ServerOptions::new().spawn(Arch::X86).unwrap();
            let t2 = Instant::now();
            let lib = server.load(&path).unwrap();
            let t3 = Instant::now();
            let sig = Signature::new(CType::Int).arg(CType::Int).arg(CType::Int);
            let sig = if name == "ctest" {
                Signature::new(CType::Double).arg(CType::ptr(CType::Double)).arg(CType::Int)
            } else {
                sig
            };
            let f = lib.function(if name == "ctest" { "sum" } else { "add" }, sig.clone()).unwrap();
            let t4 = Instant::now();
            let args = if name == "ctest" { vec![Value::f64s([1.0]), 1.into()] } else { vec![1.into(), 2.into()] };
            f.call(&args).unwrap();
            let t5 = Instant::now();
            let us = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e6;
            println!(
                "{name:8} read header {:5.0} us | spawn, greet, map shm {:6.0} us | dlopen {:6.0} us | prepare {:4.0} us | first call {:4.0} us | total {:6.0} us",
                us(t0, t1), us(t1, t2), us(t2, t3), us(t3, t4), us(t4, t5), us(t0, t5)
            );
        }
    }
}
