//! The `bitbridge` command run as a program against the 32-bit fixtures, including its failure paths.

use std::process::{Command, Output};

use bitbridge_tests::{fixture, fixture_in, out_dir, Bits};

fn bitbridge(args: &[&str]) -> Output {
    bitbridge_tests::watchdog();
    Command::new(env!("CARGO_BIN_EXE_bitbridge")).args(args).output().expect("running bitbridge")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
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
