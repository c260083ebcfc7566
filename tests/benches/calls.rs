//! `cargo bench -p bitbridge-tests --bench calls` (or `./x bench`): per-call cost, start-up and bulk
//! transfer, side by side in one run, with the in-process libffi call as the baseline.
//!
//! Transport measured: the Unix socketpair with blocking reads (no spinning), the only transport so far.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bitbridge::{CType, Library, LibraryOptions, Signature, Value};
use bitbridge_tests::{fixture, Backend, Bits};

/// Runs `f` in batches until `budget` is spent; returns per-call times (ns) of each batch, sorted.
fn sample(budget: Duration, batch: u32, mut f: impl FnMut()) -> Vec<f64> {
    for _ in 0..batch {
        f(); // warm up
    }
    let mut out = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || out.len() < 5 {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        out.push(t.elapsed().as_nanos() as f64 / f64::from(batch));
    }
    out.sort_by(f64::total_cmp);
    out
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn fmt_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.2} us", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

fn row(name: &str, v: &[f64]) {
    println!(
        "| {name:<44} | {:>10} | {:>10} | {:>10} |",
        fmt_ns(pct(v, 0.5)),
        fmt_ns(pct(v, 0.1)),
        fmt_ns(pct(v, 0.9))
    );
}

fn add_of(lib: &Library) -> bitbridge::Function {
    lib.function("add", Signature::new(CType::Int).arg(CType::Int).arg(CType::Int)).unwrap()
}

/// How long a failure takes to be reported, from the request to the typed error.
fn failures(budget: Duration) {
    use bitbridge::{Arch, Error, Server, ServerOptions};
    println!("\n| {:<44} | {:>10} | {:>10} | {:>10} |", "failure reported as a typed error", "median", "p10", "p90");
    println!("|{:-<46}|{:-<12}|{:-<12}|{:-<12}|", "", "", "", "");
    let edge32 = fixture("edge", Bits::B32);
    let edge64 = fixture("edge", Bits::B64);
    let timed = |name: &str, mut f: Box<dyn FnMut() -> Duration>| {
        let mut v: Vec<f64> = Vec::new();
        let start = Instant::now();
        while start.elapsed() < budget || v.len() < 5 {
            v.push(f().as_nanos() as f64);
        }
        v.sort_by(f64::total_cmp);
        row(name, &v);
    };
    timed(
        "library file missing",
        Box::new(|| {
            let t = Instant::now();
            assert!(matches!(Library::open("/nonexistent.so"), Err(Error::LibraryNotFound { .. })));
            t.elapsed()
        }),
    );
    timed(
        "server binary missing",
        Box::new(|| {
            let t = Instant::now();
            let e = ServerOptions::new().server_path("/nonexistent").spawn(Arch::X86).unwrap_err();
            assert!(matches!(e, Error::ServerNotFound { .. }));
            t.elapsed()
        }),
    );
    let server = Server::spawn(Arch::X86).unwrap();
    timed(
        "64-bit library into the i686 server (Load)",
        Box::new(|| {
            let t = Instant::now();
            assert!(matches!(server.load(&edge64), Err(Error::Load { .. })));
            t.elapsed()
        }),
    );
    let lib = server.load(&edge32).unwrap();
    timed(
        "missing symbol",
        Box::new(|| {
            let t = Instant::now();
            assert!(matches!(lib.function("nope", Signature::new(CType::Int)), Err(Error::SymbolNotFound { .. })));
            t.elapsed()
        }),
    );
    for (name, func, arg) in [
        ("segfault in the library (i686)", "crash_segv", None),
        ("abort() in the library (i686)", "crash_abort", None),
        ("exit(3) in the library (i686)", "crash_exit", Some(3)),
    ] {
        timed(
            name,
            Box::new(move || {
                let lib = LibraryOptions::new(fixture("edge", Bits::B32)).open().unwrap();
                let sig = match arg {
                    Some(_) => Signature::new(CType::Void).arg(CType::Int),
                    None => Signature::new(CType::Int),
                };
                let f = lib.function(func, sig).unwrap();
                let args: Vec<Value> = arg.into_iter().map(Value::Int).collect();
                let t = Instant::now();
                assert!(matches!(f.call(&args), Err(Error::ServerDied { .. })));
                t.elapsed()
            }),
        );
    }
    timed(
        "hung call, call timeout 10 ms (i686)",
        Box::new(|| {
            let lib = LibraryOptions::new(fixture("edge", Bits::B32)).open().unwrap();
            let f = lib.function("hang", Signature::new(CType::Void)).unwrap();
            let t = Instant::now();
            assert!(matches!(f.call_timeout(&[], Duration::from_millis(10)), Err(Error::Timeout { .. })));
            t.elapsed() - Duration::from_millis(10)
        }),
    );
    println!("(the hung-call row shows the time beyond the 10 ms timeout itself)");
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported, everything runs.
    let budget = Duration::from_millis(if std::env::var_os("BITBRIDGE_BENCH_QUICK").is_some() { 200 } else { 1500 });
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!("bitbridge benchmark: {cpus} CPUs, {}", std::env::consts::ARCH);
    println!("transport: Unix socketpair, blocking reads (no spin); medians of batches, with 10th/90th percentiles\n");
    println!("| {:<44} | {:>10} | {:>10} | {:>10} |", "add(int, int) round trip", "median", "p10", "p90");
    println!("|{:-<46}|{:-<12}|{:-<12}|{:-<12}|", "", "", "", "");

    // Baseline: the same function called directly through libffi in this process.
    {
        let path = fixture("cpp_lib", Bits::B64);
        // SAFETY: loading our own fixture, whose initialisers are C++ static constructors only.
        let lib = unsafe { libloading::Library::new(&path) }.unwrap();
        // SAFETY: `add` is `int add(int, int)` in fixtures/cpp_lib.cpp.
        let add: libloading::Symbol<unsafe extern "C" fn(i32, i32) -> i32> = unsafe { lib.get(b"add") }.unwrap();
        let code = libffi::middle::CodePtr::from_ptr(*add as *const std::ffi::c_void);
        let cif = libffi::middle::Cif::new(
            [libffi::middle::Type::i32(), libffi::middle::Type::i32()],
            libffi::middle::Type::i32(),
        );
        let v = sample(budget, 100_000, || {
            let (a, b) = (black_box(2i32), black_box(3i32));
            // SAFETY: the cif matches `int add(int, int)` and the arguments are two live i32s.
            let r: i32 = unsafe { cif.call(code, &[libffi::middle::arg(&a), libffi::middle::arg(&b)]) };
            black_box(r);
        });
        row("in-process libffi call (baseline)", &v);
    }
    for (name, backend) in [
        ("bitbridge in-process (same messages, no IPC)", Backend::InProcess),
        ("bitbridge x86_64 server (socket)", Backend::Server64),
        ("bitbridge i686 server (socket)", Backend::Server32),
    ] {
        let lib = backend.open("cpp_lib");
        let add = add_of(&lib);
        let args = [Value::Int(2), Value::Int(3)];
        let batch = if backend == Backend::InProcess { 10_000 } else { 200 };
        let v = sample(budget, batch, || {
            black_box(add.call(black_box(&args)).unwrap());
        });
        row(name, &v);
    }

    println!("\n| {:<44} | {:>10} | {:>10} | {:>10} |", "start-up to first call returned", "median", "p10", "p90");
    println!("|{:-<46}|{:-<12}|{:-<12}|{:-<12}|", "", "", "", "");
    for (name, bits) in [("i686 server: spawn, handshake, load, add()", Bits::B32), ("x86_64 server: same", Bits::B64)]
    {
        let path = fixture("cpp_lib", bits);
        let v = sample(budget, 5, || {
            let lib = LibraryOptions::new(&path).open().unwrap();
            black_box(add_of(&lib).call(&[2.into(), 3.into()]).unwrap());
        });
        row(name, &v);
    }
    let v = sample(budget, 5, || {
        black_box(std::process::Command::new("/bin/true").status().unwrap());
    });
    row("baseline: spawn and wait for /bin/true", &v);

    println!(
        "\n| {:<44} | {:>10} | {:>10} | {:>10} |",
        "sum(double *in, int n) via i686 server", "median", "GB/s", "p90"
    );
    println!("|{:-<46}|{:-<12}|{:-<12}|{:-<12}|", "", "", "", "");
    let lib = Backend::Server32.open("ctest");
    let sum =
        lib.function("sum", Signature::new(CType::Double).arg(CType::ptr(CType::Double)).arg(CType::Int)).unwrap();
    for mib in [1usize, 8, 64] {
        let n = mib * 1024 * 1024 / 8;
        let bytes: Vec<u8> = (0..n).flat_map(|i| (i as f64).to_le_bytes()).collect();
        let args = [Value::Bytes(bytes), Value::Int(n as i64)];
        let v = sample(budget, 1, || {
            black_box(sum.call(&args).unwrap());
        });
        let gbs = (mib * 1024 * 1024) as f64 / pct(&v, 0.5);
        println!(
            "| {:<44} | {:>10} | {:>10} | {:>10} |",
            format!("{mib} MiB as raw bytes (copied over the socket)"),
            fmt_ns(pct(&v, 0.5)),
            format!("{gbs:.2}"),
            fmt_ns(pct(&v, 0.9))
        );
    }
    let n = 1024 * 1024 / 8;
    let args = [Value::f64s((0..n).map(|i| i as f64)), Value::Int(n as i64)];
    let v = sample(budget, 1, || {
        black_box(sum.call(&args).unwrap());
    });
    let gbs = (1024 * 1024) as f64 / pct(&v, 0.5);
    println!(
        "| {:<44} | {:>10} | {:>10} | {:>10} |",
        "1 MiB as Value::Array of floats (checked)",
        fmt_ns(pct(&v, 0.5)),
        format!("{gbs:.2}"),
        fmt_ns(pct(&v, 0.9))
    );
    failures(budget);
}
