//! The `bitbridge` command run as a program against the 32-bit fixtures, including its failure paths.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bitbridge_tests::{fixture, fixture_in, out_dir, root, Bits};

/// Runs the command and checks that no server it started outlives it: each run is tagged with an
/// environment variable of its own, which its servers inherit, and no process may still carry the tag
/// a few seconds after the command exits.
fn bitbridge(args: &[&str]) -> Output {
    bitbridge_tests::watchdog();
    static RUN: AtomicU32 = AtomicU32::new(0);
    let tag = format!("{}-{}", std::process::id(), RUN.fetch_add(1, Ordering::SeqCst));
    let out = Command::new(env!("CARGO_BIN_EXE_bitbridge"))
        .args(args)
        .env("BB_CLI_TEST_RUN", &tag)
        .output()
        .expect("running bitbridge");
    let needle = format!("BB_CLI_TEST_RUN={tag}\0");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u32> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                bitbridge_tests::process_alive(*pid) && env.windows(needle.len()).any(|w| w == needle.as_bytes())
            })
            .collect();
        if left.is_empty() {
            return out;
        }
        assert!(Instant::now() < deadline, "bitbridge {args:?} left processes running: {left:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn info_and_call_resolve_a_bare_name_with_the_servers_loader() {
    // The file the i686 server itself runs on: what `info`, `call` and the API all use for the name.
    let server = bitbridge::Server::spawn(bitbridge::Arch::X86).unwrap();
    let own = server.loaded_file("libc.so.6").unwrap();
    server.shutdown().unwrap();
    let o = bitbridge(&["info", "--arch", "i686", "libc.so.6"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("name:     libc.so.6 (resolved by the server's loader)"), "{out}");
    assert!(out.contains(&format!("file:     {}\n", own.display())), "{out}");
    assert!(out.contains("ELF shared library for i686"), "{out}");
    assert!(out.contains("loads:    yes, in the i686 server"), "{out}");
    // A library's dependencies as the server's loader resolved them: the same libc.
    let ctest = fixture("ctest", Bits::B32);
    let o = bitbridge(&["info", ctest.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    let loaded = out.split("loaded:   by the server's loader\n").nth(1).expect("the loaded section");
    assert!(
        loaded.lines().any(|l| l.trim_start().starts_with("libc.so.6") && l.ends_with(&*own.to_string_lossy())),
        "{out}"
    );
    let o = bitbridge(&["info", "--arch", "x86_64", "libc.so.6"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("ELF shared library for x86_64"), "{out}");
    let o = bitbridge(&["info", "--arch", "sparc", "libc.so.6"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("i686 or x86_64"));
}

#[test]
fn info_describes_and_loads_a_32_bit_library() {
    let lib = fixture("ctest", Bits::B32);
    let o = bitbridge(&["info", lib.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("ELF shared library for i686 (32-bit x86)"), "{out}");
    assert!(out.contains("server:   bitbridge-server for i686"), "{out}");
    let libc = out.lines().find(|l| l.trim_start().starts_with("libc.so.6")).expect("libc listed");
    assert!(libc.contains("32") || libc.contains("i386"), "the 32-bit libc: {libc}");
    for f in ["add", "sum", "titlecase", "tokenize"] {
        assert!(out.lines().any(|l| l.trim() == f), "exports {f}: {out}");
    }
    assert!(out.contains("loads:    yes, in the i686 server"), "{out}");

    let o = bitbridge(&["info", "--no-load", lib.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(!text(&o).0.contains("loads:"));
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    // `bitbridge info lib.so | head -1`: the rest of the output meets a closed pipe.
    use std::io::{BufRead, BufReader};
    bitbridge_tests::watchdog();
    let lib = fixture("ctest", Bits::B32);
    let mut child = Command::new(env!("CARGO_BIN_EXE_bitbridge"))
        .args(["info", lib.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running bitbridge");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap(); // then closed
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(first.starts_with("file:"), "{first}");
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_missing_dependency_is_named_and_library_dir_fixes_it() {
    let dep = fixture_in("dep", Bits::B32, "deps", "bbdep", &[]);
    let dir = dep.parent().unwrap().to_str().unwrap().to_owned();
    let lib = fixture_in("needs_dep", Bits::B32, "needs", "needs_dep", &["-L", &dir, "-lbbdep"]);
    let o = bitbridge(&["info", lib.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("libbbdep.so") && out.contains("NOT FOUND for i686"), "{out}");
    assert!(err.contains("cannot open shared object file") && err.contains("--library-dir"), "{err}");

    let o = bitbridge(&["info", "--library-dir", &dir, lib.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains(&format!("libbbdep.so              {dir}")), "{out}");
}

/// The Windows server and Wine loader for `bits`, or a failure saying what is missing: these tests are
/// never skipped (`./x wine` installs Wine and mingw-w64, `./x winservers` builds the servers, `./x test`
/// sets `BITBRIDGE_WINE_I686`/`BITBRIDGE_WINE_X86_64`).
fn windows_server(bits: Bits) -> std::path::PathBuf {
    let target = bitbridge_tests::windows_target(bits);
    if let Err(e) = bitbridge::wine::find_loader(target.arch, None) {
        panic!("`bitbridge info` on a {target} DLL needs Wine (./x wine, and BITBRIDGE_WINE_I686/_X86_64): {e}");
    }
    let server = bitbridge::find_server_for(target, None).unwrap_or_else(|e| {
        panic!("`bitbridge info` on a {target} DLL needs bitbridge-server.exe (./x winservers): {e}")
    });
    std::fs::canonicalize(&server).unwrap_or(server)
}

/// The line of `out` that lists `name` (an import or an export), trimmed.
fn listed<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    out.lines().map(str::trim).find(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn info_describes_a_windows_dll_its_imports_and_decorated_exports() {
    for bits in [Bits::B32, Bits::B64] {
        let server = windows_server(bits);
        let dll = bitbridge_tests::windows_fixture("windll", bits);
        let o = bitbridge(&["info", dll.to_str().unwrap()]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{out}{err}");
        let (format, arch) = match bits {
            Bits::B32 => ("Windows DLL (PE32, i386)", "i686"),
            Bits::B64 => ("Windows DLL (PE32+, x86-64)", "x86_64"),
        };
        assert!(out.contains(&format!("format:   {format}\n")), "{out}");
        assert!(
            out.contains(&format!(
                "server:   bitbridge-server.exe for {arch} Windows, run by Wine ({})\n",
                server.display()
            )),
            "{out}"
        );
        assert!(out.contains("\nwine:     "), "{out}");
        // kernel32 from the prefix's system folder, or from Wine's own DLLs while the prefix is not created.
        let kernel32 = listed(&out, "KERNEL32.dll").unwrap_or_else(|| panic!("KERNEL32.dll imported: {out}"));
        assert!(
            kernel32.ends_with("(the Wine prefix's system folder)") || kernel32.ends_with("(a Wine builtin)"),
            "{kernel32}"
        );
        assert!(!out.contains("NOT FOUND"), "{out}");
        assert_eq!(listed(&out, "add"), Some("add"), "{out}");
        match bits {
            Bits::B32 => {
                for (name, line) in [
                    ("add_std", "add_std  (stdcall, 8 bytes of arguments; exported as add_std@8)"),
                    ("scale_std", "scale_std  (stdcall, 20 bytes of arguments; exported as scale_std@20)"),
                    ("mul64_std", "mul64_std  (stdcall, 16 bytes of arguments; exported as mul64_std@16)"),
                    ("sub_fast", "sub_fast  (fastcall, 8 bytes of arguments; exported as @sub_fast@8)"),
                ] {
                    assert_eq!(listed(&out, name), Some(line), "{out}");
                }
            }
            // A 64-bit DLL's names are not decorated.
            Bits::B64 => {
                assert_eq!(listed(&out, "add_std"), Some("add_std"), "{out}");
                assert!(!out.contains("exported as"), "{out}");
            }
        }
        assert!(out.contains(&format!("loads:    yes, in the {arch} Windows server (pid ")), "{out}");

        let o = bitbridge(&["info", "--no-load", dll.to_str().unwrap()]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{out}{err}");
        assert!(out.contains(format) && !out.contains("loads:"), "{out}");
    }
}

#[test]
fn info_finds_a_dlls_imports_beside_it_and_names_the_missing_one() {
    for bits in [Bits::B32, Bits::B64] {
        windows_server(bits);
        let arch = match bits {
            Bits::B32 => "i686",
            Bits::B64 => "x86_64",
        };
        let dep = bitbridge_tests::windows_fixture_in("windll_dep", bits, "windeps", "bbwdep", &[]);
        let dir = dep.parent().unwrap();
        let needs =
            bitbridge_tests::windows_fixture_in("windll_needs", bits, "windeps", "bbwneeds", &[path(&dep).as_str()]);
        let o = bitbridge(&["info", needs.to_str().unwrap()]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{out}{err}");
        let beside = listed(&out, "bbwdep.dll").unwrap_or_else(|| panic!("bbwdep.dll imported: {out}"));
        assert_eq!(beside, format!("bbwdep.dll               {} (beside the DLL)", dep.display()), "{out}");
        assert!(listed(&out, "KERNEL32.dll").is_some_and(|l| !l.contains("NOT FOUND")), "{out}");
        assert!(out.contains(&format!("loads:    yes, in the {arch} Windows server")), "{out}");
        // Where Wine's loader took it from, read from the server's memory map.
        let loaded = out.split("loaded:   by the server's loader\n").nth(1).expect("the loaded section");
        assert!(loaded.lines().any(|l| l.trim() == format!("bbwdep.dll               {}", dep.display())), "{out}");
        assert!(listed(loaded, "KERNEL32.dll").is_some(), "kernel32 matched whatever its case: {out}");

        // A DLL linked against one that was deleted since: marked, and the load fails (exit code 1).
        let gone = bitbridge_tests::windows_fixture_in("windll_dep", bits, "windeps", "bbwgone", &["-DDEP=gone_value"]);
        let needs_gone = bitbridge_tests::windows_fixture_in(
            "windll_needs",
            bits,
            "windeps",
            "bbwneeds_gone",
            &["-DNEEDS_GONE", path(&dep).as_str(), path(&gone).as_str()],
        );
        std::fs::remove_file(&gone).unwrap();
        let o = bitbridge(&["info", "--no-load", needs_gone.to_str().unwrap()]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{out}{err}");
        let missing = listed(&out, "bbwgone.dll").unwrap_or_else(|| panic!("bbwgone.dll imported: {out}"));
        assert!(
            missing.starts_with(&format!(
                "bbwgone.dll              NOT FOUND for {arch} Windows: not beside the DLL, nor in "
            )) && missing.contains("nor among Wine's builtins in "),
            "{missing}"
        );
        assert!(listed(&out, "bbwdep.dll").is_some_and(|l| l.ends_with("(beside the DLL)")), "{out}");
        assert!(dir.join("bbwdep.dll").is_file());
        let o = bitbridge(&["info", needs_gone.to_str().unwrap()]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{out}{err}");
        assert!(listed(&out, "bbwgone.dll").is_some_and(|l| l.contains("NOT FOUND")), "{out}");
        assert!(!out.contains("loads:") && err.contains("cannot load") && err.contains("bbwneeds_gone.dll"), "{err}");
        // The load error itself names the missing DLL, as dlopen names a missing .so.
        assert!(err.contains("DLLs it imports that are neither beside it") && err.contains("bbwgone.dll"), "{err}");
    }
}

#[test]
fn bad_files_and_servers_exit_3_with_the_reason() {
    let o = bitbridge(&["info", "/nonexistent/libx.so"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(text(&o).1.contains("cannot read library /nonexistent/libx.so"));

    let script = out_dir().join("cli-not-a-library.so");
    std::fs::write(&script, "GROUP ( libm.so.6 )\n").unwrap();
    let o = bitbridge(&["info", script.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    assert!(text(&o).1.contains("is not a shared library"), "{:?}", text(&o));

    let lib = fixture("ctest", Bits::B32);
    let o = bitbridge(&["info", "--server", "/nonexistent/server", lib.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}{err}");
    assert!(out.contains("server:   none found") && err.contains("cargo build --release -p bitbridge-server"), "{err}");
}

#[test]
fn help_shows_examples_and_exit_codes() {
    let o = bitbridge(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o).0.contains("Exit codes:"));
    let o = bitbridge(&["info", "--help"]);
    assert!(text(&o).0.contains("bitbridge info ./libvendor32.so"));
    let o = bitbridge(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2), "clap's usage error");
}

fn path(p: &std::path::Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn header(name: &str) -> String {
    path(&root().join("fixtures").join(name))
}

/// Runs `bitbridge call ...`; returns (exit code, stdout, stderr).
fn call(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["call"];
    all.extend_from_slice(args);
    let o = bitbridge(&all);
    let (out, err) = text(&o);
    (o.status.code().unwrap_or(-1), out, err)
}

#[test]
fn call_the_issue_example_prints_6() {
    let _check = bitbridge_tests::no_server_left();
    let lib = path(&fixture("ctest", Bits::B32));
    let (code, out, err) = call(&[&lib, "double sum(double *f, int n)", "[1,2,3]", "3"]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "6\n", ""));
}

/// `[x; n]` is one vector of the element type (not n values): a million doubles in and scaled in place,
/// the result summarised; and a `long` array on i386 packs as 4-byte elements, range-checked.
#[test]
fn call_repeat_literals_are_packed_and_read_back() {
    let _check = bitbridge_tests::no_server_left();
    let lib = path(&fixture("ctest", Bits::B32));
    let (code, out, err) = call(&[&lib, "double sum4(const double *f, int n)", "[1.5; 1000000]", "1000000"]);
    assert_eq!((code, out.as_str()), (0, "1500000\n"), "{err}");
    let (code, out, err) = call(&[&lib, "void scale(double *f, int n, double k)", "[1.5; 1000000]", "999999", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("f = [3, 3, 3, "), "{out}");
    assert!(out.trim_end().ends_with("more (1000000 elements)]"), "{out}");
    let edge = path(&fixture("edge", Bits::B32));
    let (code, out, err) = call(&[&edge, "void inc_all(long *v, int n)", "[1, 2, 3]", "2"]);
    assert_eq!((code, out.as_str()), (0, "v = [2, 3, 3]\n"), "{err}");
    let (code, _, err) = call(&[&edge, "void inc_all(long *v, int n)", "[1, 4294967296]", "2"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("4294967296 does not fit in `long`"), "{err}");
}

#[test]
fn call_prints_what_the_function_wrote() {
    let _check = bitbridge_tests::no_server_left();
    let lib = path(&fixture("ctest", Bits::B32));
    let (code, out, err) = call(&[&lib, "void titlecase(char *s)", "\"hello big world\""]);
    assert_eq!((code, out.as_str()), (0, "s = \"Hello Big World\"\n"), "{err}");

    // A scalar for a pointer is a pointer to one value; each is printed after the call.
    let edge = path(&fixture("edge", Bits::B32));
    let (code, out, err) = call(&[&edge, "void get_two(int *a, double *b)", "0", "0"]);
    assert_eq!((code, out.as_str()), (0, "a = 7\nb = 2.5\n"), "{err}");

    // An output buffer of the 32-bit libc's snprintf (by name, as the i686 server's loader resolves it),
    // with variadic arguments typed from their literals.
    let (code, out, err) = call(&[
        "--arch",
        "i686",
        "libc.so.6",
        "int snprintf(char *buf, size_t n, const char *fmt, ...)",
        "[0; 32]",
        "32",
        r#""%d|%s|%.1f|%c""#,
        "-7",
        r#""\u{e9}t\u{e9}""#,
        "2.25",
        "'x'",
    ]);
    assert_eq!((code, out.as_str()), (0, "14\nbuf = \"-7|\u{e9}t\u{e9}|2.2|x\"\n"), "{err}");
}

#[test]
fn call_with_structs_arrays_and_a_header() {
    let _check = bitbridge_tests::no_server_left();
    let lib = path(&fixture("ctest", Bits::B32));
    let h = header("ctest.h");
    let (code, out, err) = call(&["--header", &h, &lib, "add", "{1.5, 2}", "{.im = -1, .re = 3}"]);
    assert_eq!((code, out.as_str()), (0, "{re = 4.5, im = 1}\n"), "{err}");
    let (code, out, _) = call(&["--header", &h, &lib, "swap", "{1, 2}", "{3, 4}"]);
    assert_eq!((code, out.as_str()), (0, "a = {re = 3, im = 4}\nb = {re = 1, im = 2}\n"));
    let (code, out, _) = call(&["--header", &h, &lib, "tokenize", "','", "\"ab,c,,d\"", "[[0; 20]; 4]"]);
    assert_eq!((code, out.as_str()), (0, "4\nt = [\"ab\", \"c\", \"\", \"d\"]\n"));
    // A prototype using the header's types.
    let (code, out, _) = call(&[
        "--header",
        &h,
        &lib,
        "struct Complex add(struct Complex x, struct Complex y)",
        "{0, 1}",
        "{0x10, -0.5}",
    ]);
    assert_eq!((code, out.as_str()), (0, "{re = 16, im = 0.5}\n"));

    // The vendor header: constants as arguments, a stdcall function returning a struct, a handle.
    let v = path(&fixture("vendor_api", Bits::B32));
    let vh = header("vendor_api.h");
    let (code, out, err) = call(&["--header", &vh, &v, "vnd_stats", "[2, -1, 5, 2]", "4"]);
    assert_eq!((code, out.as_str()), (0, "{min = -1, max = 5, mean = 2}\n"), "{err}");
    let (code, out, _) = call(&["--header", &vh, &v, "vnd_format_status", "VND_ERR_TIMEOUT", "[0; 16]", "16"]);
    assert_eq!((code, out.as_str()), (0, "7\nbuf = \"timeout\"\n"));
    // The header's Windows branch (`__declspec`, `__stdcall`) selected with -D gives the same signatures.
    let (code, out, err) = call(&["-D", "_WIN32", "--header", &vh, &v, "vnd_stats", "[1.5]", "1"]);
    assert_eq!((code, out.as_str()), (0, "{min = 1.5, max = 1.5, mean = 1.5}\n"), "{err}");
    let (code, out, _) = call(&["--header", &vh, &v, "vnd_open", "\"VND-7\"", "null"]);
    assert_eq!((code, out.as_str()), (0, "-2\n"), "VND_ERR_BAD_ARG for a NULL handle pointer");
    let (code, out, _) = call(&["--header", &vh, &v, "vnd_open", "\"VND-7\"", "0"]);
    assert_eq!(code, 0);
    let (ret, handle) = out.split_once('\n').unwrap();
    assert_eq!(ret, "0");
    assert!(handle.starts_with("handle = @0x"), "{out}");
}

#[test]
fn call_json_is_one_object() {
    let _check = bitbridge_tests::no_server_left();
    let lib = path(&fixture("ctest", Bits::B32));
    let proto = "void swap(struct Complex { double re, im; } *a, struct Complex *b)";
    let (code, out, err) = call(&["--json", &lib, proto, "{1, 2}", "{3, 4}"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"function": "swap", "return": null, "out": {"a": {"re": 3.0, "im": 4.0}, "b": {"re": 1.0, "im": 2.0}}, "errno": 0})
    );

    let h = header("ctest.h");
    let (code, out, err) = call(&["--json", "--header", &h, &lib, "tokenize", "' '", "\"x yz\"", "[[0;20];2]"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"function": "tokenize", "return": 2, "out": {"str": "x yz", "t": ["x", "yz"]}, "errno": 0})
    );
    let v = path(&fixture("vendor_api", Bits::B32));
    let (code, out, _) = call(&["--json", "--header", &header("vendor_api.h"), &v, "vnd_version"]);
    assert_eq!(code, 0);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["return"], "2.7.1");
}

/// Each failure: its exit code and one line on stderr naming the cause.
fn fails(args: &[&str], code: i32, needle: &str) {
    let (got, out, err) = call(args);
    assert_eq!(got, code, "{args:?}: {out}{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("bitbridge: ") && err.contains(needle), "{args:?}: expected {needle:?} in {err}");
    assert!(out.is_empty(), "{out}");
}

#[test]
fn call_failures_exit_with_their_code_and_one_line() {
    let _check = bitbridge_tests::no_server_left();
    let lib = path(&fixture("ctest", Bits::B32));
    let sum = "double sum(double *f, int n)";
    fails(&["/nonexistent/libx.so", sum, "[1]", "1"], 3, "cannot read library /nonexistent/libx.so");
    fails(&[&lib, "double sum(double *f, int n", "[1]", "1"], 2, "prototype:1:28: the prototype ends too early");
    fails(&[&lib, "double sum(double *f, widget n)", "[1]", "1"], 2, "prototype:1:23: unknown type name `widget`");
    fails(&[&lib, "sum"], 2, "`sum` is not declared: give its prototype");
    fails(&[&lib, sum, "[1, 2]"], 2, "`sum` takes 2 arguments (f: double *, n: int), 1 was given");
    fails(&[&lib, sum, "[1]", "1", "2"], 2, "3 were given");
    fails(
        &[&lib, sum, "[1, 2", "2"],
        2,
        "argument 1 (f: double *): cannot read `[1, 2`: column 6: expected `,` or `]`",
    );
    fails(&[&lib, sum, "[1]", "3000000000"], 2, "argument 2 (n: int): 3000000000 does not fit in `int`");
    fails(&[&lib, sum, "[1, \"x\"]", "2"], 2, "argument 1 (f: double *): [1]: the string \"x\" is not a number");
    fails(&[&lib, sum, "[1]", "VND_OK"], 2, "`VND_OK` is not a value");
    fails(&[&lib, "double summ(double *f, int n)", "[1]", "1"], 1, "undefined symbol: summ");
    fails(&["--header", "/nonexistent/x.h", &lib, "sum"], 2, "/nonexistent/x.h: cannot read the file");

    let edge = path(&fixture("edge", Bits::B32));
    fails(&[&edge, "int crash_segv(void)"], 4, "killed by signal 11 (SIGSEGV)");
    fails(&["--timeout", "0.3", &edge, "void hang(void)"], 4, "calling hang");
    fails(&[&edge, "void crash_exit(int code)", "3"], 4, "exited with status 3");
}

#[test]
fn call_help_documents_literals_and_exit_codes() {
    let o = bitbridge(&["call", "--help"]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(0));
    for s in [
        "[0; 64]",
        "{.im = 2, .re = 1}",
        "@0x",
        "bitbridge call ./libctest32.so 'double sum(double *f, int n)' '[1,2,3]' 3",
        "--header <FILE>",
        "--json",
        "--timeout <SECS>",
    ] {
        assert!(out.contains(s), "{s:?} in {out}");
    }
    let (out, _) = text(&bitbridge(&["--help"]));
    assert!(out.contains("4  the call failed"), "{out}");
    let o = bitbridge(&["call"]);
    assert_eq!(o.status.code(), Some(2), "clap's usage error");
}

/// A program outside any build folder finds the servers `bitbridge servers install` puts into the per-user
/// folder (`$XDG_DATA_HOME/bitbridge/servers`), and `servers list` says which one each architecture uses.
#[test]
fn the_per_user_server_folder_is_searched_and_listed() {
    bitbridge_tests::watchdog();
    // Outside `target/` (no ancestor of that name), as a dependent's installed program would be.
    let home = std::env::temp_dir().join(format!("bitbridge-user-servers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let servers = home.join("data/bitbridge/servers");
    std::fs::create_dir_all(&servers).unwrap();
    let exe = home.join("bitbridge");
    std::fs::copy(env!("CARGO_BIN_EXE_bitbridge"), &exe).unwrap();
    std::fs::copy(bitbridge_tests::server_binary(Bits::B32), servers.join("bitbridge-server-i686")).unwrap();
    let run = |args: &[&str]| {
        Command::new(&exe)
            .args(args)
            .env("XDG_DATA_HOME", home.join("data"))
            .env_remove("BITBRIDGE_SERVER_DIR")
            .env_remove("BITBRIDGE_SERVER_I686")
            .env_remove("BITBRIDGE_SERVER_X86_64")
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .unwrap()
    };
    let o = run(&["servers", "list"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains(&format!("per-user folder: {}", servers.display())), "{out}");
    assert!(out.contains(&format!("i686: {}", servers.join("bitbridge-server-i686").display())), "{out}");
    assert!(out.contains("x86_64: none: ") && out.contains("bitbridge servers install"), "{out}");

    let lib = fixture("ctest", Bits::B32);
    let o = run(&["call", lib.to_str().unwrap(), "double sum(double *f, int n)", "[1,2,3]", "3"]);
    assert_eq!(text(&o).0.lines().next(), Some("6"), "{:?}", text(&o));
    let _ = std::fs::remove_dir_all(&home);
}
