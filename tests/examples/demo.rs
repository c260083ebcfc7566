//! The main job: this 64-bit program calls a 32-bit C library and the system's 32-bit libm through
//! bitbridge's i686 server. Run it with `./x demo`.

use std::time::Instant;

use bitbridge::{Arch, CType, Library, LibraryOptions, Signature, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Build the 32-bit fixture with `gcc -m32` (the demo's only preparation).
    let path = bitbridge_tests::fixture("ctest", bitbridge_tests::Bits::B32);
    println!("client: {}-bit process {}", usize::BITS, std::process::id());

    let t = Instant::now();
    let lib = Library::open(&path)?; // detects i686 from the ELF header, starts the i686 server
    println!(
        "server: {} (pid {}) hosting {}, up in {:.1} ms",
        lib.server().target(),
        lib.server().pid(),
        path.display(),
        t.elapsed().as_secs_f64() * 1e3
    );

    // struct Complex add(struct Complex, struct Complex)
    let complex = CType::structure("Complex", [("re", CType::Double), ("im", CType::Double)]);
    let add = lib.function("add", Signature::new(complex.clone()).arg(complex.clone()).arg(complex))?;
    let c = |re: f64, im: f64| Value::Struct(vec![re.into(), im.into()]);
    println!("add((1.5+2i), (0.25-1i)) = {:?}", add.call(&[c(1.5, 2.0), c(0.25, -1.0)])?.ret);

    // double sum(double f[], int n)
    let sum = lib.function("sum", Signature::new(CType::Double).arg(CType::ptr(CType::Double)).arg(CType::Int))?;
    let xs: Vec<f64> = (1..=100).map(f64::from).collect();
    println!("sum(1..=100) = {:?}", sum.call(&[Value::f64s(xs), 100.into()])?.ret);

    // void titlecase(char *s), changing the buffer in place
    let title = lib.function("titlecase", Signature::new(CType::Void).arg_inout(CType::ptr(CType::Char)))?;
    let out = title.call(&["calling a 32-bit library from 64-bit rust".into()])?;
    println!("titlecase(...) -> {:?}", out.out(0).and_then(Value::as_str).unwrap_or_default());

    // sin, cos and pow from the 32-bit libm, in a second i686 server.
    let libm = LibraryOptions::new("libm.so.6").arch(Arch::X86).open()?;
    println!("libm: {} in pid {}", libm.path(), libm.server().pid());
    let d = || Signature::new(CType::Double).arg(CType::Double);
    let sin = libm.function("sin", d())?;
    let pow = libm.function("pow", d().arg(CType::Double))?;
    println!("sin(0.5) = {:?}", sin.call(&[0.5.into()])?.ret);
    println!("pow(2, 0.5) = {:?}", pow.call(&[2.0.into(), 0.5.into()])?.ret);

    let n = 10_000;
    let t = Instant::now();
    for _ in 0..n {
        sin.call(&[0.5.into()])?;
    }
    println!("{n} calls of sin through the i686 server: {:.2} us per call", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    Ok(())
}
