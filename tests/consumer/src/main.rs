//! A new project's first program: one call into a 32-bit library (a .so, or a Windows DLL under Wine),
//! errors printed readably.
use std::process::ExitCode;

use bitbridge::{CStruct, CType, Library, Signature, Value};

/// struct Complex { double re; double im; }, for the typed call.
#[derive(CStruct, Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct Complex {
    re: f64,
    im: f64,
}

fn run(path: &str) -> bitbridge::Result<()> {
    let lib = Library::open(path)?;
    let server = lib.server().path().map(|p| p.display().to_string()).unwrap_or_else(|| "in-process".into());
    println!("server: {server}");
    // double sum(double f[], int n)
    let sum = lib.function("sum", Signature::new(CType::Double).arg(CType::ptr(CType::Double)).arg(CType::Int))?;
    let r = sum.call(&[Value::f64s([1.0, 2.0, 3.0]), 3.into()])?;
    println!("sum: {}", r.ret.as_f64().unwrap_or(f64::NAN));
    // The typed layer and #[derive(CStruct)], from their packages too.
    let add = lib.typed::<(Complex, Complex), Complex>("add")?;
    let z = add.call((Complex { re: 1.0, im: 2.0 }, Complex { re: 3.0, im: 4.0 }))?;
    println!("typed add: {} {}", z.re, z.im);
    Ok(())
}

fn main() -> ExitCode {
    let path = std::env::args().nth(1).unwrap_or_else(|| "./libctest32.so".into());
    match run(&path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
