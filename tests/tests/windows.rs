//! Windows DLLs under Wine, 32- and 64-bit: `fixtures/windll.c` built with mingw-w64 at test time and
//! hosted by `bitbridge-server.exe` (`./x winservers`) under the Wine loaders `./x wine` installs
//! (`BITBRIDGE_WINE_I686`, `BITBRIDGE_WINE_X86_64`, set by `./x test`). Every calling convention,
//! the Windows C ABI (LLP64 `long`, UTF-16 `wchar_t`, MSVC struct alignment), structs by value and
//! returned, out buffers, callbacks, `GetLastError`, a LabVIEW-style export, kernel32 itself, and the
//! lifecycle: a crash, a hang, the client's death. None of these tests is skipped: without Wine they fail.

use std::time::{Duration, Instant};

use bitbridge::{CLong, CType, Error, LibraryOptions, ServerOptions, Signature, Value};
use bitbridge_tests::{no_server_left, open_windows, track, windows_fixture, Bits};

const BITS: [Bits; 2] = [Bits::B32, Bits::B64];

fn call(lib: &bitbridge::Library, proto: &str, args: &[Value]) -> bitbridge::Outcome {
    let f = lib.function_from_c(proto).unwrap_or_else(|e| panic!("{proto}: {e:#}"));
    f.call(args).unwrap_or_else(|e| panic!("{proto}: {e:#}"))
}

/// The typed layer (crates/client/src/typed.rs) into both DLLs: `typed_with(.., Stdcall)` finds the
/// 32-bit `add_std@8` from the undecorated name, and Win64 ignores the convention as its compilers do.
#[test]
fn typed_stdcall_calls_into_both_dlls() {
    let _check = no_server_left();
    for bits in BITS {
        let lib = open_windows("windll", bits, false);
        let add = lib.typed_with::<(i32, i32), i32>("add_std", bitbridge::CallConv::Stdcall).unwrap();
        assert_eq!(add.call((2, 3)).unwrap(), 5, "{bits:?}");
        let scale = lib.typed_with::<(f64, i32, f64), f64>("scale_std", bitbridge::CallConv::Stdcall).unwrap();
        assert_eq!(scale.call((1.5, 4, 0.25)).unwrap(), 6.25, "{bits:?}");
        let add = lib.typed::<(i32, i32), i32>("add").unwrap();
        assert_eq!(add.call((2, 40)).unwrap(), 42, "{bits:?}");
        // long is 4 bytes on Win64 too (LLP64): CLong follows the server's target, and a value only
        // an LP64 long holds is refused, never truncated.
        let add_long = lib.typed::<(CLong, CLong), CLong>("add_long").unwrap();
        assert_eq!(add_long.call((CLong(-5), CLong(7))).unwrap(), CLong(2), "{bits:?}");
        let e = add_long.call((CLong(1 << 40), CLong(0))).unwrap_err();
        assert!(matches!(e, Error::Argument { .. }), "{bits:?}: {e}");
    }
}

#[test]
fn cdecl_stdcall_and_fastcall_exports_on_both_transports() {
    let _check = no_server_left();
    for bits in BITS {
        for socket in [false, true] {
            let lib = open_windows("windll", bits, socket);
            let w = format!("{bits:?} socket={socket}");
            assert_eq!(call(&lib, "int add(int a, int b)", &[2.into(), 40.into()]).ret, Value::Int(42), "{w}");
            // The 32-bit export is `add_std@8`: found from the undecorated name and the signature.
            assert_eq!(call(&lib, "int __stdcall add_std(int a, int b)", &[2.into(), 3.into()]).ret, Value::Int(5));
            assert_eq!(call(&lib, "int WINAPI add_std(int a, int b)", &[7.into(), 3.into()]).ret, Value::Int(10));
            let r = call(
                &lib,
                "double __stdcall scale_std(double x, int k, double y)",
                &[1.5.into(), 4.into(), 0.25.into()],
            );
            assert_eq!(r.ret, Value::Float(6.25), "{w}");
            let r = call(
                &lib,
                "long long __stdcall mul64_std(long long a, long long b)",
                &[Value::Int(3_000_000_000), Value::Int(-3)],
            );
            assert_eq!(r.ret, Value::Int(-9_000_000_000), "{w}");
            let r = call(&lib, "int __fastcall sub_fast(int a, int b)", &[10.into(), 4.into()]);
            assert_eq!(r.ret, Value::Int(6), "{w}");
            assert_eq!(lib.server().target(), bitbridge_tests::windows_target(bits));
            if bits == Bits::B32 {
                // Declared cdecl, exported as stdcall: the error says how to declare it.
                let e = lib.function_from_c("int add_std(int a, int b)").unwrap_err();
                assert!(e.to_string().contains("exported as `add_std@8`: declare the function __stdcall"), "{e}");
            }
        }
    }
}

#[test]
fn the_windows_c_abi_long_wchar_t_and_msvc_struct_alignment() {
    let _check = no_server_left();
    for bits in BITS {
        let lib = open_windows("windll", bits, false);
        // LLP64: `long` is 4 bytes on Win64 as on Win32, and the target model says so.
        assert_eq!(call(&lib, "long long_size(void)", &[]).ret, Value::Int(4), "{bits:?}");
        let r = call(&lib, "long add_long(long a, long b)", &[Value::Int(2_000_000_000), Value::Int(200_000_000)]);
        assert_eq!(r.ret, Value::Int(2_200_000_000i64 - (1i64 << 32)), "{bits:?}: long wraps at 32 bits");
        assert_eq!(lib.server().target().layout(&CType::Long).unwrap().size, 4);
        assert_eq!(call(&lib, "int wchar_size(void)", &[]).ret, Value::Int(2), "{bits:?}");
        // `double` at offset 8 in the struct on Win32 too (i386 System V would put it at 4).
        assert_eq!(call(&lib, "int sample_offset_of_value(void)", &[]).ret, Value::Int(8), "{bits:?}");
        assert_eq!(call(&lib, "int sample_size(void)", &[]).ret, Value::Int(24), "{bits:?}");
    }
}

const SAMPLE: &str = "typedef struct { int id; double value; char tag; } Sample;
    Sample __stdcall make_sample(int id, double value, char tag);
    double sample_total(Sample s);
    void __stdcall bump_sample(Sample *s);
    typedef struct { int lo, hi; } Pair;
    Pair __stdcall swap_pair(Pair p);";

#[test]
fn structs_by_value_returned_and_by_reference() {
    let _check = no_server_left();
    for bits in BITS {
        let lib = open_windows("windll", bits, false);
        let decls = bitbridge::Declarations::parse(SAMPLE).unwrap();
        let make = lib.declare(&decls, "make_sample").unwrap();
        let s = make.call(&[7.into(), 2.5.into(), Value::Int(b'x' as i64)]).unwrap().ret;
        assert_eq!(s, Value::Struct(vec![Value::Int(7), Value::Float(2.5), Value::Int(b'x' as i64)]), "{bits:?}");
        let total = lib.declare(&decls, "sample_total").unwrap().call(std::slice::from_ref(&s)).unwrap().ret;
        assert_eq!(total, Value::Float(7.0 + 2.5 + 120.0), "{bits:?}");
        let bump = lib.declare(&decls, "bump_sample").unwrap();
        let r = bump.call(std::slice::from_ref(&s)).unwrap();
        assert_eq!(
            r.out(0),
            Some(&Value::Struct(vec![Value::Int(8), Value::Float(5.0), Value::Int(b'x' as i64)])),
            "{bits:?}"
        );
        let swapped = lib.declare(&decls, "swap_pair").unwrap().call(&[Value::Struct(vec![1.into(), 2.into()])]);
        assert_eq!(swapped.unwrap().ret, Value::Struct(vec![Value::Int(2), Value::Int(1)]), "{bits:?}");
    }
}

#[test]
fn out_buffers_and_arrays_in() {
    let _check = no_server_left();
    for bits in BITS {
        let lib = open_windows("windll", bits, false);
        let r = call(&lib, "int __stdcall fill_squares(int *out, int n)", &[Value::Zeros(6), 6.into()]);
        assert_eq!(r.ret, Value::Int(6));
        assert_eq!(r.out(0), Some(&Value::ints([0, 1, 4, 9, 16, 25])), "{bits:?}");
        // A million doubles in (through the bulk arena on the shared-memory transport).
        let n = 1_000_000;
        let a = Value::f64s((0..n).map(|i| i as f64));
        let r = call(&lib, "double __stdcall sum_doubles(const double *a, int n)", &[a, Value::Int(n)]);
        assert_eq!(r.ret, Value::Float((n * (n - 1) / 2) as f64), "{bits:?}");
    }
}

/// A buffer shared with a Windows server: the client's memfd, opened by the server through Wine's
/// `Z:\proc\<pid>\fd\<n>`, is the same memory on both sides, with nothing copied.
#[test]
fn a_shared_buffer_is_the_same_memory_in_a_windows_server() {
    let _check = no_server_left();
    for bits in BITS {
        let lib = open_windows("windll", bits, false);
        let n = 1usize << 16;
        let buf = lib.server().share((n * 8) as u64).unwrap();
        buf.write(0, &(0..n).flat_map(|i| (i as f64).to_le_bytes()).collect::<Vec<_>>()).unwrap();
        let r = call(&lib, "double __stdcall sum_doubles(const double *a, int n)", &[buf.value(), (n as i64).into()]);
        assert_eq!(r.ret, Value::Float((n * (n - 1) / 2) as f64), "{bits:?}");
        // The DLL writes into it; the client reads the same memory.
        call(&lib, "int __stdcall fill_squares(int *out, int n)", &[buf.value(), 5.into()]);
        let got: Vec<i32> =
            buf.read(0, 20).unwrap().chunks(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(got, [0, 1, 4, 9, 16], "{bits:?}");
    }
}

#[test]
fn utf16_strings_in_out_and_returned() {
    let _check = no_server_left();
    for bits in BITS {
        let lib = open_windows("windll", bits, false);
        let r = call(&lib, "int __stdcall wide_length(const wchar_t *s)", &[Value::Str("h\u{e9}llo \u{1F600}".into())]);
        // UTF-16 code units: the emoji is a surrogate pair.
        assert_eq!(r.ret, Value::Int(8), "{bits:?}");
        let r = call(&lib, "void __stdcall wide_upper(wchar_t *s)", &[Value::Str("abc\u{e9}z".into())]);
        assert_eq!(r.out(0).and_then(Value::as_str), Some("ABC\u{e9}Z"), "{bits:?}");
        let r = call(&lib, "const wchar_t * __stdcall wide_greeting(void)", &[]);
        assert_eq!(r.ret.as_str(), Some("Gr\u{fc}\u{df} dich, \u{1F600}"), "{bits:?}");
        let r = call(&lib, "int __stdcall wide_copy(wchar_t *out, int cap)", &[Value::Str(" ".repeat(15)), 16.into()]);
        assert_eq!(r.ret, Value::Int(5));
        assert_eq!(r.out(0).and_then(Value::as_str), Some("na\u{ef}ve"), "{bits:?}");
    }
}

#[test]
fn stdcall_and_cdecl_callbacks() {
    let _check = no_server_left();
    for bits in BITS {
        let lib = open_windows("windll", bits, false);
        let mut std_sig = Signature::new(CType::Int).arg(CType::Int);
        std_sig.conv = bitbridge::CallConv::Stdcall;
        let twice = lib.server().callback(std_sig.clone(), |a| Value::Int(a[0].as_i64().unwrap() * 2)).unwrap();
        let apply = lib
            .function("apply_std", {
                let mut s = Signature::new(CType::Int).arg(CType::fn_ptr(std_sig)).arg(CType::Int);
                s.conv = bitbridge::CallConv::Stdcall;
                s
            })
            .unwrap();
        // f(10) + f(11) = 20 + 22; a stdcall callback that popped the wrong number of bytes would crash.
        assert_eq!(apply.call(&[twice.value(), 10.into()]).unwrap().ret, Value::Int(42), "{bits:?}");
        let sum = lib
            .server()
            .callback(Signature::new(CType::Int).arg(CType::Int).arg(CType::Int), |a| {
                Value::Int(a[0].as_i64().unwrap() + a[1].as_i64().unwrap())
            })
            .unwrap();
        let r = call(&lib, "int apply_cdecl(int (*f)(int, int), int n)", &[sum.value(), 5.into()]);
        assert_eq!(r.ret, Value::Int(10), "{bits:?}");
    }
}

#[test]
fn get_last_error_and_errno_after_a_call() {
    let _check = no_server_left();
    for bits in BITS {
        let lib = open_windows("windll", bits, false);
        let mut sig = Signature::new(CType::Int).arg(CType::UInt).last_error();
        sig.conv = bitbridge::CallConv::Stdcall;
        let f = lib.function("fail_with", sig).unwrap();
        assert_eq!(f.call(&[Value::UInt(0x2A)]).unwrap().last_error, Some(0x2A), "{bits:?}");
        assert_eq!(f.call(&[Value::UInt(5)]).unwrap().last_error, Some(5), "{bits:?}");
        let e = lib.function("set_errno_to", Signature::new(CType::Int).arg(CType::Int).errno()).unwrap();
        assert_eq!(e.call(&[Value::Int(34)]).unwrap().errno, Some(34), "{bits:?}: msvcrt's errno");
    }
    // A Linux server has no GetLastError: asking for it is refused when the function is prepared.
    let libc = LibraryOptions::new("libc.so.6").open().unwrap();
    track(libc.server());
    let e = libc.function("abs", Signature::new(CType::Int).arg(CType::Int).last_error()).unwrap_err();
    assert!(e.to_string().contains("only on Windows"), "{e}");
}

#[test]
fn a_labview_style_export_with_three_outputs_by_reference() {
    let _check = no_server_left();
    for bits in BITS {
        let lib = open_windows("windll", bits, false);
        let f = lib
            .function_from_c(
                "void Measure(double amplitude, int points, double *mean, int *count, char *status, int len)",
            )
            .unwrap();
        let r = f.call(&[2.0.into(), 4.into(), Value::Zeros(1), Value::Zeros(1), Value::Zeros(32), 32.into()]).unwrap();
        assert_eq!(r.out(2), Some(&Value::Array(vec![Value::Float(2.0)])), "{bits:?}");
        assert_eq!(r.out(3), Some(&Value::ints([4])), "{bits:?}");
        assert_eq!(r.out(4).and_then(Value::as_str), Some("ok"), "{bits:?}");
    }
}

#[test]
fn kernel32_get_local_time_into_a_systemtime() {
    let _check = no_server_left();
    let decls = bitbridge::Declarations::parse(
        "typedef unsigned short WORD;
         typedef struct { WORD wYear, wMonth, wDayOfWeek, wDay, wHour, wMinute, wSecond, wMilliseconds; } SYSTEMTIME;
         void __stdcall GetLocalTime(SYSTEMTIME *t);
         unsigned int __stdcall GetCurrentProcessId(void);",
    )
    .unwrap();
    for arch in [bitbridge::Arch::X86, bitbridge::Arch::X86_64] {
        let k32 = LibraryOptions::new("kernel32.dll").arch(arch).open().unwrap();
        track(k32.server());
        assert_eq!(k32.server().target().os, bitbridge::Os::Windows);
        let t = k32.declare(&decls, "GetLocalTime").unwrap().call(&[Value::Zeros(1)]).unwrap();
        let Some(Value::Struct(f)) = t.out(0).and_then(|v| v.get(0)) else { panic!("{arch}: {:?}", t.out(0)) };
        let get = |i: usize| f[i].as_i64().unwrap();
        assert!((2024..2100).contains(&get(0)), "{arch}: year {}", get(0));
        assert!((1..=12).contains(&get(1)) && get(2) <= 6 && (1..=31).contains(&get(3)), "{arch}: {f:?}");
        assert!(get(4) < 24 && get(5) < 60 && get(6) < 61 && get(7) < 1000, "{arch}: {f:?}");
        let pid = k32.declare(&decls, "GetCurrentProcessId").unwrap().call(&[]).unwrap().ret;
        assert!(pid.as_u64().is_some_and(|p| p > 0), "{arch}: {pid:?}");
    }
}

#[test]
fn a_crash_in_a_dll_is_reported_and_the_next_server_works() {
    let _check = no_server_left();
    for bits in BITS {
        let path = windows_fixture("windll", bits);
        let lib = LibraryOptions::new(&path)
            .server(ServerOptions::new().restart_on_failure(true).call_timeout(Duration::from_secs(30)))
            .open()
            .unwrap();
        track(lib.server());
        let crash = lib.function("say_and_crash", Signature::new(CType::Void)).unwrap();
        let started = Instant::now();
        let e = crash.call(&[]).unwrap_err();
        let Error::ServerDied { stderr, .. } = &e else { panic!("{bits:?}: {e}") };
        // What and where, on the server's stderr (Wine itself says nothing with WINEDEBUG=-all).
        assert!(stderr.contains("unhandled access violation (0xC0000005)"), "{bits:?}: {stderr:?}");
        assert!(stderr.contains("reading 0x0") && stderr.contains("windll"), "{bits:?}: {stderr:?}");
        // What the library printed through the C runtime before it crashed.
        assert!(stderr.contains("windll: about to crash"), "{bits:?}: {stderr:?}");
        assert!(started.elapsed() < Duration::from_secs(20), "{bits:?}: the death took {:?}", started.elapsed());
        eprintln!("{bits:?}: crash reported after {:?}: {e}", started.elapsed());
        // restart_on_failure: a new server, the library loaded again, the function prepared again.
        let add = lib.function("add", Signature::new(CType::Int).arg(CType::Int).arg(CType::Int)).unwrap();
        assert_eq!(add.call(&[1.into(), 2.into()]).unwrap().ret, Value::Int(3), "{bits:?}");
        track(lib.server());
    }
}

/// A DLL that ends the thread serving the call (`ExitThread`) or overflows its stack (which Wine on
/// x86_64 cannot deliver as an exception: the thread just ends) must not leave the client waiting for
/// a reply that never comes: the server ends and the call is `ServerDied`, on both transports. (Found
/// by a hostile review: on shared memory the call hung forever.)
#[test]
fn a_dll_that_ends_the_serving_thread_is_a_death_not_a_hang() {
    let _check = no_server_left();
    for bits in BITS {
        for socket in [false, true] {
            for (function, args) in [("exit_thread", vec![]), ("stack_overflow", vec![Value::Int(1)])] {
                let lib = open_windows("windll", bits, socket);
                let mut sig = Signature::new(CType::Int);
                if !args.is_empty() {
                    sig = sig.arg(CType::Int);
                }
                let f = lib.function(function, sig).unwrap();
                let t = Instant::now();
                // Bounded only so that a regression fails instead of hanging the suite.
                let e = f.call_timeout(&args, Duration::from_secs(20)).unwrap_err();
                let w = format!("{bits:?} socket={socket} {function}, after {:?}", t.elapsed());
                let Error::ServerDied { stderr, .. } = &e else { panic!("{w}: {e:#}") };
                assert!(t.elapsed() < Duration::from_secs(5), "{w}");
                if function == "exit_thread" {
                    assert!(stderr.contains("the thread serving calls ended inside the library"), "{w}: {stderr:?}");
                }
                eprintln!("{w}: {e}");
            }
        }
    }
}

/// The client is killed (SIGKILL: nothing of it runs) while its Windows server is inside a call that
/// never returns: the server must not outlive it.
#[test]
fn a_windows_server_busy_in_a_call_never_outlives_its_client() {
    use std::io::Read;
    let _check = no_server_left();
    for arg in ["windows32", "windows64"] {
        let mut client = std::process::Command::new(env!("CARGO_BIN_EXE_hold_server"))
            .arg(arg)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = client.stdout.take().unwrap();
        let (mut line, mut byte) = (String::new(), [0u8; 1]);
        while out.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0] as char);
        }
        let server: u32 = line.trim().parse().unwrap_or_else(|_| panic!("{arg}: the client printed {line:?}"));
        std::thread::sleep(Duration::from_millis(300)); // the call under way
        assert!(bitbridge_tests::process_alive(server), "{arg}");
        client.kill().unwrap();
        client.wait().unwrap();
        let t = Instant::now();
        while bitbridge_tests::process_alive(server) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!bitbridge_tests::process_alive(server), "{arg}: server {server} outlived its killed client");
    }
}

#[test]
fn a_hang_times_out_and_leaves_no_process() {
    let _check = no_server_left();
    for bits in BITS {
        let lib = open_windows("windll", bits, false);
        let pid = lib.server().pid();
        let hang = lib.function("hang", Signature::new(CType::Void)).unwrap();
        let started = Instant::now();
        let e = hang.call_timeout(&[], Duration::from_millis(500)).unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{bits:?}: {e}");
        assert!(started.elapsed() < Duration::from_secs(10), "{bits:?}: {:?}", started.elapsed());
        assert!(!bitbridge_tests::process_alive(pid), "{bits:?}: the hung server {pid} is still there");
    }
}

/// The Wine processes of a prefix (its wineserver, started by the first server and detached from it)
/// go away once the last server of that prefix has: a dedicated prefix, so no other test keeps it busy.
#[test]
fn the_prefix_wineserver_ends_after_its_last_server() {
    let _check = no_server_left();
    let prefix = bitbridge_tests::out_dir().join("wine-prefix-lifecycle-win64");
    let lib = LibraryOptions::new(windows_fixture("windll", Bits::B64))
        .server(ServerOptions::new().wine_prefix(&prefix))
        .open()
        .unwrap_or_else(|e| panic!("{e:#}"));
    track(lib.server());
    assert_eq!(call(&lib, "int add(int a, int b)", &[1.into(), 2.into()]).ret, Value::Int(3));
    let with_prefix = || -> Vec<u32> {
        let want = format!("WINEPREFIX={}", prefix.display()).into_bytes();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == want.as_slice()))
            })
            .collect()
    };
    assert!(!with_prefix().is_empty(), "the server and its wineserver run with WINEPREFIX set");
    drop(lib);
    let t = Instant::now();
    while !with_prefix().is_empty() && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = with_prefix();
    assert!(left.is_empty(), "processes of the prefix still running 15 s after its last server: {left:?}");
    eprintln!("the prefix's Wine processes ended {:?} after the server", t.elapsed());
}

/// A prefix folder the user names is never deleted, whatever happens while creating a prefix in it: a
/// folder Wine refuses (owned by another user) keeps every file. (Found by a hostile review: it was
/// removed recursively.)
#[test]
fn a_user_named_prefix_is_never_deleted() {
    use std::os::unix::fs::chown;
    let prefix = bitbridge_tests::out_dir().join("precious-prefix");
    let _ = std::fs::remove_dir_all(&prefix);
    std::fs::create_dir_all(prefix.join("docs")).unwrap();
    std::fs::write(prefix.join("docs").join("thesis.txt"), "years of work").unwrap();
    // Wine refuses a prefix owned by another user ("is not owned by you"): nobody's, when we are root
    // (as CI is); as another user, the folder is ours and Wine writes a prefix into it beside the files.
    let root = std::os::unix::fs::MetadataExt::uid(&prefix.metadata().unwrap()) == 0;
    if root {
        chown(&prefix, Some(65534), Some(65534)).unwrap();
    }
    let e = LibraryOptions::new(windows_fixture("windll", Bits::B64))
        .server(ServerOptions::new().wine_prefix(&prefix))
        .open()
        .unwrap_err();
    assert!(matches!(e, Error::WinePrefix { .. }), "{e:#}");
    assert!(prefix.join("docs").join("thesis.txt").is_file(), "the folder {} was deleted: {e:#}", prefix.display());
    if root {
        chown(&prefix, Some(0), Some(0)).unwrap();
    }
    let _ = std::fs::remove_dir_all(&prefix);
}

/// A prefix that cannot serve is refused up front, naming the problem: one of the other architecture,
/// and one whose drive Z: (how the server reaches the DLL and the shared memory) is not mapped to `/`.
#[test]
fn a_prefix_of_the_wrong_architecture_or_without_z_is_refused_with_the_reason() {
    let base = bitbridge_tests::out_dir().join("fake-prefixes");
    let fake = |name: &str, arch: &str, z: Option<&str>| {
        let p = base.join(name);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("dosdevices")).unwrap();
        std::fs::write(p.join("system.reg"), format!("WINE REGISTRY Version 2\n#arch={arch}\n")).unwrap();
        if let Some(to) = z {
            std::os::unix::fs::symlink(to, p.join("dosdevices").join("z:")).unwrap();
        }
        p
    };
    let open = |prefix: &std::path::Path, bits: Bits| {
        LibraryOptions::new(windows_fixture("windll", bits))
            .server(ServerOptions::new().wine_prefix(prefix))
            .open()
            .map(drop)
            .unwrap_err()
    };
    let e = open(&fake("w32", "win32", Some("/")), Bits::B64);
    assert!(matches!(&e, Error::WinePrefix { reason, .. } if reason.contains("32-bit prefix")), "{e:#}");
    let e = open(&fake("w64", "win64", Some("/")), Bits::B32);
    assert!(matches!(&e, Error::WinePrefix { reason, .. } if reason.contains("64-bit prefix")), "{e:#}");
    let e = open(&fake("noz", "win64", None), Bits::B64);
    assert!(matches!(&e, Error::WinePrefix { reason, .. } if reason.contains("no drive Z:")), "{e:#}");
    let e = open(&fake("zhome", "win64", Some("/home")), Bits::B64);
    assert!(matches!(&e, Error::WinePrefix { reason, .. } if reason.contains("maps to /home")), "{e:#}");
    let _ = std::fs::remove_dir_all(&base);
}

/// A Wine loader that is not one is refused, each candidate with its reason: a script, a program of
/// another architecture, a program that is not Wine; an empty variable counts as unset.
#[test]
fn a_wine_loader_that_is_not_one_is_refused_with_the_reason() {
    let script = bitbridge_tests::out_dir().join("not-wine.sh");
    std::fs::write(&script, "#!/bin/sh\necho wine-8.0\n").unwrap();
    let i686 = bitbridge_tests::server_binary(Bits::B32);
    for (loader, why) in [
        (script.as_path(), "is not an ELF program"),
        (i686.as_path(), "is a program for i686, not x86_64"),
        (std::path::Path::new("/bin/cat"), "is not Wine"),
    ] {
        let e = LibraryOptions::new(windows_fixture("windll", Bits::B64))
            .server(ServerOptions::new().wine(loader))
            .open()
            .map(drop)
            .unwrap_err();
        assert!(matches!(&e, Error::WineNotFound { hint, .. } if hint.contains(why)), "{}: {e:#}", loader.display());
    }
}
