//! `cargo bench -p bitbridge-tests --bench calls` (or `./x bench`): per-call cost on each transport,
//! start-up, bulk transfer, threads, and how fast failures are reported, side by side in one run with
//! baselines (an in-process libffi call, spawning `/bin/true`, a `memcpy`).
//!
//! Every row names its transport and wait mode: "shm, spin" is the shared-memory transport spinning up to
//! 50 us before sleeping on a futex (the default); "shm, adaptive" spins only while it catches the peer;
//! "shm, futex" never spins; "socket" is the socketpair
//! with blocking reads.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitbridge::{Arch, CType, Error, Library, LibraryOptions, Server, ServerOptions, Signature, Value, WaitMode};
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

fn header(title: &str, cols: [&str; 3]) {
    println!("\n| {title:<52} | {:>10} | {:>10} | {:>10} |", cols[0], cols[1], cols[2]);
    println!("|{:-<54}|{:-<12}|{:-<12}|{:-<12}|", "", "", "", "");
}

fn row(name: &str, v: &[f64]) {
    println!(
        "| {name:<52} | {:>10} | {:>10} | {:>10} |",
        fmt_ns(pct(v, 0.5)),
        fmt_ns(pct(v, 0.1)),
        fmt_ns(pct(v, 0.9))
    );
}

fn row3(name: &str, a: String, b: String, c: String) {
    println!("| {name:<52} | {a:>10} | {b:>10} | {c:>10} |");
}

fn open(bits: Bits, name: &str, opts: ServerOptions) -> Library {
    LibraryOptions::new(fixture(name, bits)).server(opts).open().unwrap()
}

fn add_of(lib: &Library) -> bitbridge::Function {
    lib.function("add", Signature::new(CType::Int).arg(CType::Int).arg(CType::Int)).unwrap()
}

fn round_trips(budget: Duration) {
    header("add(int, int) round trip", ["median", "p10", "p90"]);
    // Baseline: the same function called directly through libffi in this process.
    {
        let path = fixture("cpp_lib", Bits::B64);
        // SAFETY: loading our own fixture, whose initialisers are C++ static constructors only.
        let lib = unsafe { libloading::Library::new(&path) }.unwrap();
        // SAFETY: `add` is `int add(int, int)` in fixtures/cpp_lib.cpp.
        let add: libloading::Symbol<unsafe extern "C" fn(i32, i32) -> i32> = unsafe { lib.get(b"add") }.unwrap();
        let code = libffi::middle::CodePtr::from_ptr(*add as *const std::ffi::c_void);
        let ty = libffi::middle::Type::i32;
        let cif = libffi::middle::Cif::new([ty(), ty()], ty());
        let v = sample(budget, 100_000, || {
            let (a, b) = (black_box(2i32), black_box(3i32));
            // SAFETY: the cif matches `int add(int, int)` and the arguments are two live i32s.
            let r: i32 = unsafe { cif.call(code, &[libffi::middle::arg(&a), libffi::middle::arg(&b)]) };
            black_box(r);
        });
        row("baseline: in-process libffi call", &v);
    }
    let args = [Value::Int(2), Value::Int(3)];
    let lib = Backend::InProcess.open("cpp_lib");
    let add = add_of(&lib);
    row("bitbridge in-process (same messages, no IPC)", &sample(budget, 10_000, || drop(black_box(add.call(&args)))));
    for (bits, arch) in [(Bits::B64, "x86_64"), (Bits::B32, "i686")] {
        for (mode, opts, batch) in [
            ("socket", ServerOptions::new().shared_memory(false), 200),
            ("shm, spin (default)", ServerOptions::new(), 5_000),
            ("shm, adaptive", ServerOptions::new().wait_mode(WaitMode::Adaptive), 5_000),
            ("shm, futex (no spin)", ServerOptions::new().wait_mode(WaitMode::Sleep), 200),
        ] {
            let lib = open(bits, "cpp_lib", opts);
            let add = add_of(&lib);
            let v = sample(budget, batch, || drop(black_box(add.call(&args).unwrap())));
            row(&format!("bitbridge {arch} server, {mode}"), &v);
            if arch == "i686" && mode == "shm, spin (default)" {
                // The dynamic call as user code makes it (its values built at every call), and the
                // typed layer over the same server, which builds the same values from a Rust tuple.
                let v = sample(budget, batch, || {
                    let args = [Value::Int(black_box(2)), Value::Int(black_box(3))];
                    drop(black_box(add.call(&args).unwrap()));
                });
                row(&format!("dynamic add, values built per call, {arch}, shm, spin"), &v);
                let add = lib.typed::<(i32, i32), i32>("add").unwrap();
                let v = sample(budget, batch, || {
                    black_box(add.call((black_box(2), black_box(3))).unwrap());
                });
                row(&format!("typed add(i32, i32), {arch} server, shm, spin"), &v);
            }
        }
    }
}

fn callbacks(budget: Duration) {
    header("a call whose function calls back once (maybe_call)", ["median", "p10", "p90"]);
    for (name, opts) in [
        ("i686 server, shm, spin", ServerOptions::new()),
        ("i686 server, socket", ServerOptions::new().shared_memory(false)),
    ] {
        let lib = open(Bits::B32, "events", opts);
        let cb = lib.server().callback(Signature::new(CType::Int).arg(CType::Int), |a| a[0].clone()).unwrap();
        let f = lib
            .function(
                "maybe_call",
                Signature::new(CType::Int).arg(CType::fn_ptr(Signature::new(CType::Int))).arg(CType::Int),
            )
            .unwrap();
        let args = [cb.value(), Value::Int(7)];
        let v = sample(budget, 200, || drop(black_box(f.call(&args).unwrap())));
        row(name, &v);
        let none = [Value::NULL, Value::Int(7)];
        let v = sample(budget, 200, || drop(black_box(f.call(&none).unwrap())));
        row(&format!("{name}: same call, NULL callback"), &v);
    }
}

fn startup(budget: Duration) {
    header("start-up to first call returned (then shut down, not timed)", ["median", "p10", "p90"]);
    let sum_sig = || Signature::new(CType::Double).arg(CType::ptr(CType::Double)).arg(CType::Int);
    for (name, bits, lib, opts) in [
        ("i686 server, shm, C library: spawn, load, sum()", Bits::B32, "ctest", ServerOptions::new()),
        ("i686 server, socket, C library: same", Bits::B32, "ctest", ServerOptions::new().shared_memory(false)),
        ("x86_64 server, shm, C library: same", Bits::B64, "ctest", ServerOptions::new()),
        ("i686 server, shm, C++ library (loads libstdc++)", Bits::B32, "cpp_lib", ServerOptions::new()),
    ] {
        let path = fixture(lib, bits);
        let mut v = Vec::new();
        let start = Instant::now();
        while start.elapsed() < budget || v.len() < 10 {
            let t = Instant::now();
            let lib = LibraryOptions::new(&path).server(opts.clone()).open().unwrap();
            if name.contains("C++") {
                black_box(add_of(&lib).call(&[2.into(), 3.into()]).unwrap());
            } else {
                let sum = lib.function("sum", sum_sig()).unwrap();
                black_box(sum.call(&[Value::f64s([1.0]), 1.into()]).unwrap());
            }
            v.push(t.elapsed().as_nanos() as f64);
            // Ended and reaped before the next start, so no start runs beside the last one's teardown.
            let _ = lib.server().shutdown();
            drop(lib);
        }
        v.sort_by(f64::total_cmp);
        row(name, &v);
    }
    let v = sample(budget, 5, || {
        black_box(std::process::Command::new("/bin/true").status().unwrap());
    });
    row("baseline: spawn and wait for /bin/true", &v);
}

fn bulk(budget: Duration) {
    header("sum4(double *in, int n) via the i686 server", ["median", "GB/s", "p90"]);
    let mib = |m: usize| m * 1024 * 1024;
    // Baseline: copying the same bytes once in this process.
    {
        let src = vec![1u8; mib(64)];
        let mut dst = vec![0u8; mib(64)];
        let v = sample(budget, 1, || {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        });
        let gbs = mib(64) as f64 / pct(&v, 0.5);
        row3("baseline: memcpy of 64 MiB", fmt_ns(pct(&v, 0.5)), format!("{gbs:.2}"), fmt_ns(pct(&v, 0.9)));
    }
    for (mode, opts) in [("shm arena", ServerOptions::new()), ("socket", ServerOptions::new().shared_memory(false))] {
        let lib = open(Bits::B32, "ctest", opts);
        let sig = Signature::new(CType::Double).arg(CType::ptr(CType::Double)).arg(CType::Int);
        let sum = lib.function("sum4", sig).unwrap();
        for m in [1usize, 8, 64] {
            let n = mib(m) / 8;
            let bytes: Vec<u8> = (0..n).flat_map(|i| (i as f64).to_le_bytes()).collect();
            let args = [Value::Bytes(bytes), Value::Int(n as i64)];
            let want = (n as f64) * (n as f64 - 1.0) / 2.0;
            let v = sample(budget, 1, || assert_eq!(sum.call(&args).unwrap().ret, Value::Float(want)));
            let gbs = mib(m) as f64 / pct(&v, 0.5);
            let name = format!("{m} MiB as bytes, {mode}");
            row3(&name, fmt_ns(pct(&v, 0.5)), format!("{gbs:.2}"), fmt_ns(pct(&v, 0.9)));
        }
    }
    let lib = open(Bits::B32, "ctest", ServerOptions::new());
    let sum =
        lib.function("sum4", Signature::new(CType::Double).arg(CType::ptr(CType::Double)).arg(CType::Int)).unwrap();
    for m in [8usize, 64] {
        // Already in a buffer shared with the server: nothing is copied, the library reads it in place.
        let n = mib(m) / 8;
        let buf = lib.server().share(mib(m) as u64).unwrap();
        buf.write(0, &(0..n).flat_map(|i| (i as f64).to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        let args = [buf.value(), Value::Int(n as i64)];
        let v = sample(budget, 1, || drop(black_box(sum.call(&args).unwrap())));
        let gbs = mib(m) as f64 / pct(&v, 0.5);
        let name = format!("{m} MiB already shared (zero copy)");
        row3(&name, fmt_ns(pct(&v, 0.5)), format!("{gbs:.2}"), fmt_ns(pct(&v, 0.9)));
    }
    let n = mib(1) / 8;
    let args = [Value::Array((0..n).map(|i| Value::Float(i as f64)).collect()), Value::Int(n as i64)];
    let v = sample(budget, 1, || drop(black_box(sum.call(&args).unwrap())));
    let gbs = mib(1) as f64 / pct(&v, 0.5);
    row3("1 MiB as Value::Array of Floats, shm arena", fmt_ns(pct(&v, 0.5)), format!("{gbs:.2}"), fmt_ns(pct(&v, 0.9)));
    // 64 MiB in, the library reading none of it (n = 0): the transfer alone, against memcpy above.
    let n = mib(64) / 8;
    let bytes: Vec<u8> = (0..n).flat_map(|i| (i as f64).to_le_bytes()).collect();
    let args = [Value::Bytes(bytes), Value::Int(0)];
    let v = sample(budget, 1, || drop(black_box(sum.call(&args).unwrap())));
    let gbs = mib(64) as f64 / pct(&v, 0.5);
    row3("64 MiB in, not read (n = 0): the transfer", fmt_ns(pct(&v, 0.5)), format!("{gbs:.2}"), fmt_ns(pct(&v, 0.9)));
    arrays(budget, &lib);
}

/// 1M doubles from each container a caller may hold, summed (`sum4`, only read) and scaled in place
/// (`scale`, read back), beside the same bytes prebuilt and a shared buffer (zero copy).
fn arrays(budget: Duration, lib: &Library) {
    use bitbridge::{In, InOut};
    let n = 1 << 20;
    let mb = (n * 8) as f64;
    header("1M f64 (8 MiB) via the i686 server, shm arena", ["median", "GB/s", "p90"]);
    let show = |name: &str, v: &[f64]| {
        row3(name, fmt_ns(pct(v, 0.5)), format!("{:.2}", mb / pct(v, 0.5)), fmt_ns(pct(v, 0.9)));
    };
    {
        let src = vec![1u8; n * 8];
        let mut dst = vec![0u8; n * 8];
        let v = sample(budget, 1, || {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        });
        show("baseline: memcpy of 8 MiB", &v);
    }
    let data: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let want = Value::Float((n as f64) * (n as f64 - 1.0) / 2.0);
    let count = Value::Int(n as i64);
    let sum =
        lib.function("sum4", Signature::new(CType::Double).arg(CType::ptr(CType::Double)).arg(CType::Int)).unwrap();
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    let args = [Value::Bytes(bytes), count.clone()];
    let v = sample(budget, 1, || assert_eq!(sum.call(&args).unwrap().ret, want));
    show("sum4: prebuilt bytes (Value::Bytes)", &v);
    let typed = lib.typed::<(In<[f64]>, i32), f64>("sum4").unwrap();
    let v = sample(budget, 1, || assert_eq!(Value::Float(typed.call((&data, n as i32)).unwrap()), want));
    show("sum4: &[f64] through the typed layer (In<[f64]>)", &v);
    let mut moved = data.clone();
    let v = sample(budget, 1, || {
        let args = [Value::from(std::mem::take(&mut moved)), count.clone()];
        assert_eq!(sum.call(&args).unwrap().ret, want);
        let [Value::Numbers(back), _] = args else { unreachable!() };
        moved = back.into_vec().unwrap();
    });
    show("sum4: Vec<f64> moved in (Value::from)", &v);
    let args = [Value::f64s(data.iter().copied()), count.clone()];
    let v = sample(budget, 1, || assert_eq!(sum.call(&args).unwrap().ret, want));
    show("sum4: the typed array value (Value::Numbers)", &v);

    let sig = Signature::new(CType::Void).arg_inout(CType::ptr(CType::Double)).arg(CType::Int).arg(CType::Double);
    let scale = lib.function("scale", sig).unwrap();
    let args = [Value::Bytes(data.iter().flat_map(|x| x.to_le_bytes()).collect()), count.clone(), Value::Float(1.0)];
    let v = sample(budget, 1, || drop(black_box(scale.call(&args).unwrap().outs)));
    show("scale in place, read back: bytes", &v);
    let args = [Value::f64s(data.iter().copied()), count.clone(), Value::Float(1.0)];
    let v = sample(budget, 1, || drop(black_box(scale.call(&args).unwrap().outs)));
    show("scale in place, read back: Value::Numbers", &v);
    let typed = lib.typed::<(InOut<[f64]>, i32, f64), ()>("scale").unwrap();
    let mut buf = data.clone();
    let v = sample(budget, 1, || typed.call((&mut buf, n as i32, 1.0)).unwrap());
    show("scale in place, read back: &mut [f64] (InOut<[f64]>)", &v);
    let shared = lib.server().share((n * 8) as u64).unwrap();
    shared.write(0, &data.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let args = [shared.value(), count.clone(), Value::Float(1.0)];
    let v = sample(budget, 1, || drop(black_box(scale.call(&args).unwrap())));
    show("scale in place: SharedBuffer (zero copy)", &v);
}

fn threads(budget: Duration) {
    header("4 threads calling at once, i686 shm", ["calls/s", "per call", ""]);
    for (what, func, arg) in [("add()", "add", None), ("sleep_us(200) (I/O-bound)", "sleep_us", Some(200))] {
        for workers in [1u32, 2, 4] {
            let lib = open(
                Bits::B32,
                if arg.is_some() { "edge" } else { "cpp_lib" },
                ServerOptions::new().concurrent(workers),
            );
            let f = Arc::new(match arg {
                Some(_) => lib.function(func, Signature::new(CType::Int).arg(CType::Int)).unwrap(),
                None => add_of(&lib),
            });
            let args: Vec<Value> = match arg {
                Some(us) => vec![Value::Int(us)],
                None => vec![1.into(), 2.into()],
            };
            let start = Instant::now();
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let (f, args) = (f.clone(), args.clone());
                    std::thread::spawn(move || {
                        let mut n = 0u64;
                        while start.elapsed() < budget {
                            for _ in 0..10 {
                                f.call(&args).unwrap();
                            }
                            n += 10;
                        }
                        n
                    })
                })
                .collect();
            let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
            let secs = start.elapsed().as_secs_f64();
            let name = format!("{what}, {workers} server worker{}", if workers > 1 { "s" } else { "" });
            row3(&name, format!("{:.0}", total as f64 / secs), fmt_ns(secs * 1e9 / total as f64), String::new());
        }
    }
    header("id() 1 ms into another thread's sleep_us(5000)", ["median", "p10", "p90"]);
    for workers in [1u32, 2] {
        let lib = open(Bits::B32, "edge", ServerOptions::new().concurrent(workers));
        let slow = Arc::new(lib.function("sleep_us", Signature::new(CType::Int).arg(CType::Int)).unwrap());
        let quick = lib.function("id_int", Signature::new(CType::Int).arg(CType::Int)).unwrap();
        let mut v = Vec::new();
        let start = Instant::now();
        while start.elapsed() < budget || v.len() < 10 {
            let s = slow.clone();
            let bg = std::thread::spawn(move || s.call(&[5000.into()]).unwrap());
            std::thread::sleep(Duration::from_millis(1)); // the slow call is running in the server now
            let t = Instant::now();
            black_box(quick.call(&[1.into()]).unwrap());
            v.push(t.elapsed().as_nanos() as f64);
            bg.join().unwrap();
        }
        v.sort_by(f64::total_cmp);
        let name = if workers > 1 {
            "server with 2 workers (no head-of-line blocking)"
        } else {
            "server with 1 worker (queued behind)"
        };
        row(name, &v);
    }
}

/// How long a failure takes to be reported, from the request to the typed error.
fn failures(budget: Duration) {
    header("failure reported as a typed error", ["median", "p10", "p90"]);
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
    for (mode, shm) in [("shm", true), ("socket", false)] {
        for (what, func, arg) in
            [("segfault", "crash_segv", None), ("abort()", "crash_abort", None), ("exit(3)", "crash_exit", Some(3))]
        {
            let edge32 = edge32.clone();
            timed(
                &format!("{what} in the library (i686, {mode})"),
                Box::new(move || {
                    let lib = open_at(&edge32, ServerOptions::new().shared_memory(shm));
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
    }
    timed(
        "hung call past a 10 ms call timeout (i686, shm)",
        Box::new(|| {
            let lib = open_at(&fixture("edge", Bits::B32), ServerOptions::new());
            let f = lib.function("hang", Signature::new(CType::Void)).unwrap();
            let t = Instant::now();
            assert!(matches!(f.call_timeout(&[], Duration::from_millis(10)), Err(Error::Timeout { .. })));
            t.elapsed() - Duration::from_millis(10)
        }),
    );
}

/// An example custom server for i686: the release build `./x bench` makes, else the debug one.
fn service_program(name: &str) -> std::path::PathBuf {
    let release = bitbridge_tests::root().join("target/i686-unknown-linux-gnu/release").join(name);
    if release.is_file() {
        release
    } else {
        bitbridge_tests::service_program(name, Bits::B32)
    }
}

fn services(budget: Duration) {
    use bitbridge::ServiceClient;
    use bitbridge_examples::cpp::{Cpp, CppOptions};
    header("custom server (cpp_server wrapping cpp_lib), i686, shm, spin", ["median", "p10", "p90"]);
    let args = [Value::Int(2), Value::Int(3)];
    let lib = open(Bits::B32, "cpp_lib", ServerOptions::new());
    let add = add_of(&lib);
    row(
        "baseline: generic server, add(int, int) as a C call",
        &sample(budget, 5_000, || drop(black_box(add.call(&args).unwrap()))),
    );
    let options = CppOptions { library: fixture("cpp_lib", Bits::B32) };
    let cpp = ServiceClient::spawn(service_program("cpp_server"), &options).unwrap();
    let v = sample(budget, 5_000, || {
        black_box(cpp.call::<_, i32>("add", (2, 3)).unwrap());
    });
    row("service method add(i32, i32) -> i32", &v);
    let in_process = CppOptions { library: fixture("cpp_lib", Bits::B64) };
    // SAFETY: our own wrapper and fixture, written to run anywhere.
    let local = unsafe { ServiceClient::in_process::<Cpp, _>(&in_process) }.unwrap();
    let v = sample(budget, 10_000, || {
        black_box(local.call::<_, i32>("add", (2, 3)).unwrap());
    });
    row("the same method in-process (encode + dispatch, no IPC)", &v);
    let xs: Vec<f64> = (0..131_072).map(f64::from).collect();
    let v = sample(budget, 10, || drop(black_box(cpp.call::<_, Vec<f64>>("scalar_multiply", (2.0, &xs)).unwrap())));
    row("scalar_multiply of 1 MiB of f64 and back", &v);
    let echo = ServiceClient::spawn(service_program("echo_server"), &()).unwrap();
    let bytes = serde_bytes::ByteBuf::from(vec![7u8; 1 << 20]);
    let v = sample(budget, 10, || {
        black_box(echo.call::<_, serde_bytes::ByteBuf>("echo_one", (&bytes,)).unwrap());
    });
    row("echo of 1 MiB as a byte string (serde_bytes) and back", &v);
    // As the start-up rows above: shutdown (the drop) not timed.
    let mut v = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || v.len() < 10 {
        let t = Instant::now();
        let c = ServiceClient::spawn(service_program("cpp_server"), &options).unwrap();
        black_box(c.call::<_, i32>("add", (2, 3)).unwrap());
        v.push(t.elapsed().as_nanos() as f64);
        drop(c);
    }
    v.sort_by(f64::total_cmp);
    row("start-up: spawn, construct (dlopen), first method (C++)", &v);
}

fn open_at(path: &std::path::Path, opts: ServerOptions) -> Library {
    LibraryOptions::new(path).server(opts).open().unwrap()
}

fn main() {
    // `cargo bench` puts its build folders (64-bit libraries, seven of them) on LD_LIBRARY_PATH, which
    // every server inherits: a 32-bit server's loader then searches them all for each of its own
    // libraries (112 failed openat/statx, ~1 ms per start on the 2-vCPU VM). Programs run otherwise do
    // not have them; removed here (single-threaded still), so the servers start as users' do.
    std::env::remove_var("LD_LIBRARY_PATH");
    // `cargo bench` passes `--bench`; a filter argument is not supported, everything runs.
    let quick = std::env::var_os("BITBRIDGE_BENCH_QUICK").is_some();
    let budget = Duration::from_millis(if quick { 200 } else { 1500 });
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!(
        "bitbridge benchmark: {cpus} CPUs, {} client; medians of batches, 10th/90th percentiles",
        std::env::consts::ARCH
    );
    println!("modes: \"shm, spin\" = shared memory, spin up to 50 us (not for a peer on our CPU), then futex (default); \"shm, futex\" = no spin;");
    println!("       \"shm, adaptive\" = spin only while it catches the peer (<= 50 us), else futex;");
    println!("       \"socket\" = socketpair with blocking reads");
    // BITBRIDGE_BENCH_ONLY=windows,startup runs only those sections.
    let only = std::env::var("BITBRIDGE_BENCH_ONLY").ok();
    type Section = (&'static str, fn(Duration));
    let sections: [Section; 9] = [
        ("round_trips", round_trips),
        ("callbacks", callbacks),
        ("startup", startup),
        ("services", services),
        ("bulk", bulk),
        ("threads", threads),
        ("failures", failures),
        ("windows", windows),
        ("contention", contention),
    ];
    for (name, run) in sections {
        if only.as_deref().is_none_or(|o| o.split(',').any(|s| s == name)) {
            run(budget);
        }
    }
}

/// Windows DLLs under Wine (fixtures/windll.c built with mingw-w64) beside the Linux servers, quiet and
/// then loaded: `add(int, int)` per call, and start-up to the first call with a warm prefix.
fn windows(budget: Duration) {
    let args = [Value::Int(2), Value::Int(3)];
    let add_sig = || Signature::new(CType::Int).arg(CType::Int).arg(CType::Int);
    let servers = |opts: ServerOptions| {
        [
            ("Win32 DLL, i686 server.exe under Wine", Some(Bits::B32), opts.clone()),
            ("Win64 DLL, x86_64 server.exe under Wine", Some(Bits::B64), opts.clone()),
            ("Linux i686 .so, bitbridge-server-i686", None, opts),
        ]
    };
    let open_one = |bits: Option<Bits>, opts: ServerOptions| match bits {
        Some(b) => LibraryOptions::new(bitbridge_tests::windows_fixture("windll", b)).server(opts).open().unwrap(),
        None => open(Bits::B32, "cpp_lib", opts),
    };
    for loaded in [false, true] {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let _load = loaded.then(|| Load::start(cpus));
        let title = if loaded { "loaded: add() into a DLL under Wine" } else { "add(int, int) into a DLL under Wine" };
        header(title, ["median", "p10", "p90"]);
        for (mode, opts, batch) in [
            ("shm, spin (default)", ServerOptions::new(), if loaded { 100 } else { 5_000 }),
            ("socket", ServerOptions::new().shared_memory(false), 200),
        ] {
            for (name, bits, opts) in servers(opts) {
                let lib = open_one(bits, opts);
                let add = lib.function("add", add_sig()).unwrap();
                let v = sample(budget, batch, || drop(black_box(add.call(&args).unwrap())));
                row(&format!("{name}, {}", mode.trim_end_matches(" (default)")), &v);
            }
        }
    }
    header("start-up to first call returned, warm Wine prefix", ["median", "p10", "p90"]);
    for (name, bits, opts) in servers(ServerOptions::new()) {
        drop(open_one(bits, opts.clone())); // the prefix (and its wineserver) warm
        let mut v = Vec::new();
        let start = Instant::now();
        while start.elapsed() < budget || v.len() < 5 {
            let t = Instant::now();
            let lib = open_one(bits, opts.clone());
            black_box(lib.function("add", add_sig()).unwrap().call(&args).unwrap());
            v.push(t.elapsed().as_nanos() as f64);
            // Ended before the next start, as in the start-up section.
            let _ = lib.server().shutdown();
            drop(lib);
        }
        v.sort_by(f64::total_cmp);
        row(name, &v);
    }
}

/// Load that oversubscribes the machine: two busy processes per vCPU at the same priority and one
/// memory-bandwidth hog, all killed when this is dropped, and each ending by itself after 10 minutes
/// whatever happens to the benchmark (bash's `SECONDS`, no wrapper process whose death would orphan it).
struct Load(Vec<std::process::Child>);

impl Load {
    fn start(cpus: usize) -> Load {
        let spawn = |script: &str| {
            std::process::Command::new("bash")
                .args(["-c", script])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("starting load")
        };
        let mut v: Vec<_> = (0..2 * cpus).map(|_| spawn("while [ $SECONDS -lt 600 ]; do :; done")).collect();
        v.push(spawn("exec dd if=/dev/zero of=/dev/null bs=64M count=20000 2>/dev/null"));
        std::thread::sleep(Duration::from_millis(200));
        Load(v)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The same calls on an oversubscribed machine, each wait mode side by side: one client thread (latency)
/// and eight (throughput per 100 ms round, the lowest and highest round), with 1, 2 and 4 server workers.
fn contention(budget: Duration) {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let modes: [(&str, ServerOptions); 4] = [
        ("shm, spin (default)", ServerOptions::new()),
        ("shm, adaptive", ServerOptions::new().wait_mode(WaitMode::Adaptive)),
        ("shm, futex", ServerOptions::new().wait_mode(WaitMode::Sleep)),
        ("socket", ServerOptions::new().shared_memory(false)),
    ];
    let load = Load::start(cpus);
    header(&format!("loaded ({} busy processes + memcpy hog): add(), 1 thread", 2 * cpus), ["median", "p10", "p90"]);
    for (mode, opts) in &modes {
        let lib = open(Bits::B32, "cpp_lib", opts.clone());
        let add = add_of(&lib);
        let args = [Value::Int(2), Value::Int(3)];
        let v = sample(budget, 100, || drop(black_box(add.call(&args).unwrap())));
        row(&format!("i686 server, {mode}"), &v);
    }
    header("loaded: add() from 8 client threads, calls/s", ["min round", "max round", "median"]);
    for workers in [1u32, 2, 4] {
        for (mode, opts) in &modes {
            let lib = open(Bits::B32, "cpp_lib", opts.clone().concurrent(workers));
            let add = Arc::new(add_of(&lib));
            let rounds = (budget.as_millis() / 100).max(5) as usize;
            let mut per_round = Vec::new();
            for _ in 0..rounds {
                let start = Instant::now();
                let handles: Vec<_> = (0..8)
                    .map(|_| {
                        let add = add.clone();
                        std::thread::spawn(move || {
                            let args = [Value::Int(2), Value::Int(3)];
                            let mut n = 0u64;
                            while start.elapsed() < Duration::from_millis(100) {
                                add.call(&args).unwrap();
                                n += 1;
                            }
                            n
                        })
                    })
                    .collect();
                let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
                per_round.push(total as f64 / start.elapsed().as_secs_f64());
            }
            per_round.sort_by(|a, b| a.total_cmp(b));
            let name = format!("{workers} worker{}, {mode}", if workers > 1 { "s" } else { "" });
            row3(
                &name,
                format!("{:.0}", per_round[0]),
                format!("{:.0}", per_round[per_round.len() - 1]),
                format!("{:.0}", per_round[per_round.len() / 2]),
            );
        }
    }
    drop(load);
}
