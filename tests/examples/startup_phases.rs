//! Where a server's start-up time goes, phase by phase (the 32-bit fixtures, i686 server):
//! `./x servers --release && cargo run --release -p bitbridge-tests --example startup_phases`.
use std::time::Instant;

use bitbridge::{inspect, Arch, CType, ServerOptions, Signature, Value};

fn main() {
    for name in ["ctest", "cpp_lib"] {
        let path = bitbridge_tests::fixture(name, bitbridge_tests::Bits::B32);
        let rounds: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
        for _ in 0..rounds {
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
            drop((f, lib, server));
            // The same through Library::open (what the benchmark times): detection, server search and
            // checks, spawn, load, the system-library check.
            let t6 = Instant::now();
            let lib2 = bitbridge::LibraryOptions::new(&path).open().unwrap();
            let t7 = Instant::now();
            let f2 = lib2.function(if name == "ctest" { "sum" } else { "add" }, sig).unwrap();
            f2.call(&args).unwrap();
            let t8 = Instant::now();
            let _ = lib2.server().shutdown();
            println!("{name:8} Library::open {:6.0} us, then prepare and call {:4.0} us", us(t6, t7), us(t7, t8));
            println!(
                "{name:8} read header {:5.0} us | spawn, greet, map shm {:6.0} us | dlopen {:6.0} us | prepare {:4.0} us | first call {:4.0} us | total {:6.0} us",
                us(t0, t1), us(t1, t2), us(t2, t3), us(t3, t4), us(t4, t5), us(t0, t5)
            );
        }
    }
}
