//! Issue 15, "values that lose nothing", through `bitbridge call` on the i686 and x86_64 servers.
//!
//! `fixtures/lossless_caller.c` includes `fixtures/lossless.c` and prints what a C caller sees (bytes in
//! hex, numbers), built with `gcc -m32` and `gcc -m64`: those lines are the expected values. The
//! command's output is decoded (its C string literals unescaped, its `--json` read) and compared with
//! them byte for byte.

use std::collections::HashMap;
use std::process::Command;

use bitbridge_tests::{fixture, program, Bits};

const BITS: [Bits; 2] = [Bits::B32, Bits::B64];

/// The C caller's answers: name -> the rest of its line.
fn truth(bits: Bits) -> HashMap<String, String> {
    let exe = program("lossless_caller", bits, &["-pie", "-fPIE"]);
    let out = Command::new(&exe).output().expect("running the C caller");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Runs `bitbridge call ARGS...`: (exit code, stdout, stderr).
fn call(args: &[&str]) -> (i32, String, String) {
    bitbridge_tests::watchdog();
    let o = Command::new(env!("CARGO_BIN_EXE_bitbridge")).arg("call").args(args).output().expect("running bitbridge");
    (o.status.code().unwrap_or(-1), String::from_utf8(o.stdout).unwrap(), String::from_utf8(o.stderr).unwrap())
}

/// `--json` output, which must succeed.
fn json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = call(&all);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out}: {e}"))
}

/// The bytes of a C string literal's content as the command prints it (an independent reader of
/// C's escapes: `\n \t \r \\ \" \0`, `\xHH`, `\ooo`).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        i += 1;
        match b[i] {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'x' => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            b'0'..=b'7' => {
                let n = b[i..].iter().take(3).take_while(|c| (b'0'..=b'7').contains(c)).count();
                out.push(u8::from_str_radix(&s[i..i + n], 8).unwrap());
                i += n - 1;
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// A printed literal `"..."` (a whole line's value) as bytes, padded with zeros to `len`.
fn literal(text: &str, len: usize) -> Vec<u8> {
    let inner =
        text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or_else(|| panic!("not a literal: {text}"));
    let mut b = unescape(inner);
    if b.len() < len {
        b.resize(len, 0);
    }
    b
}

fn numbers(v: &serde_json::Value) -> Vec<i64> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}")).iter().map(|x| x.as_i64().unwrap()).collect()
}

fn bytes_of(v: &serde_json::Value) -> Vec<u8> {
    numbers(v).into_iter().map(|x| x as u8).collect()
}

#[test]
fn binary_bytes_keep_every_byte_and_print_by_type() {
    let _check = bitbridge_tests::no_server_left();
    for bits in BITS {
        let t = truth(bits);
        let lib = fixture("lossless", bits);
        let lib = lib.to_str().unwrap();

        // unsigned char[8] whose first byte is 0: a byte array, in hex, every byte.
        let (code, out, err) = call(&[lib, "void fill_key(unsigned char key[8])", "[0; 8]"]);
        assert_eq!(code, 0, "{err}");
        let want = unhex(&t["fill_key"]);
        let hex: Vec<String> = want.iter().map(|b| format!("{b:#04x}")).collect();
        assert_eq!(out, format!("key = [{}]\n", hex.join(", ")), "{bits:?}");
        let j = json(&[lib, "void fill_key(unsigned char *key)", "[0; 8]"]);
        assert_eq!(bytes_of(&j["out"]["key"]), want);

        // uint8_t *: the same shape whatever the bytes are.
        let j = json(&[lib, "void fill_u8(uint8_t *buf, int n)", "[0; 16]", "16"]);
        assert_eq!(bytes_of(&j["out"]["buf"]), unhex(&t["fill_u8"]));

        // char *: a C string literal, not cut at its zero byte; the JSON string holds the same escapes.
        let (code, out, err) = call(&[lib, "void fill_chars(char *buf, int n)", "[0; 12]", "12"]);
        assert_eq!(code, 0, "{err}");
        let printed = out.strip_prefix("buf = ").unwrap().trim_end();
        assert_eq!(literal(printed, 12), unhex(&t["fill_chars"]), "{printed}");
        let j = json(&[lib, "void fill_chars(char *buf, int n)", "[0; 12]", "12"]);
        let mut got = unescape(j["out"]["buf"].as_str().unwrap());
        got.resize(12, 0);
        assert_eq!(got, unhex(&t["fill_chars"]));

        // A returned `const char *` that is not UTF-8 is still a string.
        let (code, out, _) = call(&[lib, "const char *latin1(void)"]);
        assert_eq!((code, literal(out.trim_end(), 0)), (0, unhex(&t["latin1"])));
        let j = json(&[lib, "const char *latin1(void)"]);
        assert_eq!(unescape(j["return"].as_str().unwrap()), unhex(&t["latin1"]));

        // Members: char[8] as text, unsigned char[4] as hex bytes, signed char[2] as numbers.
        let decl =
            "struct rec {char name[8]; unsigned char id[4]; signed char delta[2];}; void make_rec(struct rec *r)";
        let j = json(&[lib, decl, "0"]);
        let r = &j["out"]["r"];
        let mut name = unescape(r["name"].as_str().unwrap());
        name.resize(8, 0);
        assert_eq!(name, unhex(&t["rec.name"]));
        assert_eq!(bytes_of(&r["id"]), unhex(&t["rec.id"]));
        let delta: Vec<i64> = unhex(&t["rec.delta"]).iter().map(|&b| i64::from(b as i8)).collect();
        assert_eq!(numbers(&r["delta"]), delta);
        let (_, out, _) = call(&[lib, decl, "0"]);
        assert_eq!(out, "r = {name = \"ab\\0c\\x80\", id = [0x00, 0x01, 0x02, 0xff], delta = [-1, 5]}\n");

        // Input: "RIFF" fills a char[4] without its NUL, as in C.
        let (code, out, err) = call(&[lib, "unsigned tag_value(struct tag4 {char tag[4];} t)", "{\"RIFF\"}"]);
        assert_eq!((code, out.trim_end()), (0, t["tag_value"].as_str()), "{err}");
        // A literal's \xHH is one byte, so what prints reads back the same.
        let (code, out, err) = call(&[lib, "unsigned tag_value(struct tag4 {char tag[4];} t)", "{\"\\x52\\111FF\"}"]);
        assert_eq!((code, out.trim_end()), (0, t["tag_value"].as_str()), "{err}");
        let (code, _, err) = call(&[lib, "unsigned tag_value(struct tag4 {char tag[4];} t)", "{\"RIFFX\"}"]);
        assert_eq!(code, 2);
        assert!(err.contains("is longer than `char[4]`"), "{err}");
    }
}

#[test]
fn pointers_the_library_writes_are_followed() {
    let _check = bitbridge_tests::no_server_left();
    for bits in BITS {
        let t = truth(bits);
        let lib = fixture("lossless", bits);
        let lib = lib.to_str().unwrap();
        let text = |k: &str| String::from_utf8(unhex(&t[k])).unwrap();

        // const char **out: the library's string, whether the caller passed text or NULL.
        for arg in ["\"\"", "[null]"] {
            let (code, out, err) = call(&[lib, "int get_version(const char **out)", arg]);
            assert_eq!(code, 0, "{err}");
            let want = if arg == "\"\"" {
                format!("{}\nout = \"{}\"\n", t["get_version"], text("get_version.out"))
            } else {
                format!("{}\nout = [\"{}\"]\n", t["get_version"], text("get_version.out"))
            };
            assert_eq!(out, want, "{bits:?} {arg}");
        }
        // char **: a string too.
        let j = json(&[lib, "void get_name(char **out)", "[null]"]);
        assert_eq!(j["out"]["out"][0], serde_json::json!(text("get_name.out")));

        // struct point **out: the struct it now points to.
        let j = json(&[lib, "struct point {int x, y;}; void get_point(struct point **out)", "[null]"]);
        let p: Vec<&str> = t["get_point.out"].split(' ').collect();
        assert_eq!(j["out"]["out"][0]["x"].to_string(), p[0]);
        assert_eq!(j["out"]["out"][0]["y"].to_string(), p[1]);

        // A struct whose array member the library replaced: the new length and the new address, never
        // the old array.
        let j = json(&[lib, "struct dbuf {int n; double *data;}; void replace_data(struct dbuf *b)", "{1, [9]}"]);
        let r: Vec<&str> = t["replace_data"].split(' ').collect();
        assert_eq!(j["out"]["b"]["n"].to_string(), r[0]);
        assert!(j["out"]["b"]["data"].as_u64().is_some_and(|a| a != 0), "{j}");

        // strtol's endptr, into the text passed in.
        let (code, out, err) = call(&[lib, "long parse_num(const char *s, char **end)", "\"42 apples\"", "[null]"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, format!("{}\nend = [\"{}\"]\n", t["parse_num"], text("parse_num.end")));

        // A struct's string member the library replaced.
        let j =
            json(&[lib, "struct named {int id; const char *label;}; void relabel(struct named *s)", "{1, \"old\"}"]);
        assert_eq!(j["out"]["s"]["id"].to_string(), t["relabel"]);
        assert_eq!(j["out"]["s"]["label"], serde_json::json!(text("relabel.label")));
    }
}

#[test]
fn long_double_is_exact_both_ways() {
    let _check = bitbridge_tests::no_server_left();
    for bits in BITS {
        let t = truth(bits);
        let lib = fixture("lossless", bits);
        let lib = lib.to_str().unwrap();
        // The bytes the library sees for a literal: ld_store copies its argument's 10 bytes out.
        let stored = |lit: &str| {
            let j = json(&[lib, "void ld_store(long double x, unsigned char *out)", lit, "[0; 10]"]);
            bytes_of(&j["out"]["out"])
        };
        // Read as gcc reads the same literal: the L suffix is honoured, all 64 bits of significand.
        assert_eq!(stored("1.000000000000000000867L"), unhex(&t["ld_literal"]), "{bits:?}");
        assert_eq!(stored("9223372036854775809"), unhex(&t["ld_big"]));
        // Without L a literal is a double first, as in C: 1.000000000000000000867 is 1.
        assert_eq!(stored("1.000000000000000000867"), stored("1"));

        // 1 + 2^-60 printed, then read back: the same 80 bits as the C caller's.
        let (code, out, err) = call(&[lib, "long double ld_one_plus(void)"]);
        assert_eq!(code, 0, "{err}");
        let printed = out.trim_end();
        assert_ne!(printed, "1");
        assert_eq!(stored(&format!("{printed}L")), unhex(&t["ld_one_plus"]), "{printed}");
        let j = json(&[lib, "long double ld_one_plus(void)"]);
        assert_eq!(j["return"], serde_json::json!(printed));

        // Through a function: the value in and out is exact.
        let (_, out, _) = call(&[lib, "long double ld_twice(long double x)", "1.000000000000000000867L"]);
        assert_eq!(stored(&format!("{}L", out.trim_end())), unhex(&t["ld_twice"]));
    }
}

#[test]
fn big_buffers_print_only_when_changed_and_summarised() {
    let _check = bitbridge_tests::no_server_left();
    for bits in BITS {
        let t = truth(bits);
        let lib = fixture("lossless", bits);
        let lib = lib.to_str().unwrap();
        // A zeroed buffer the function only read: just the return value.
        let (code, out, err) = call(&[lib, "double sum_rw(double *f, int n)", "[0; 100000]", "100000"]);
        assert_eq!((code, out.as_str()), (0, format!("{}\n", t["sum_rw"]).as_str()), "{err}");
        let (code, out, _) = call(&[lib, "double sum_rw(double *f, int n)", "[1, 2, 3]", "3"]);
        assert_eq!((code, out.as_str()), (0, "6\n"));

        // A large array that changed: summarised in text, whole in --json.
        let (code, out, _) = call(&[lib, "void iota(int *a, int n)", "[0; 1000]", "1000"]);
        assert_eq!(code, 0);
        assert_eq!(out, "a = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, ... 984 more (1000 elements)]\n");
        let j = json(&[lib, "void iota(int *a, int n)", "[0; 1000]", "1000"]);
        let a = numbers(&j["out"]["a"]);
        let c: Vec<i64> = t["iota"].split(' ').map(|x| x.parse().unwrap()).collect();
        assert_eq!((a.len(), a[0], a[15], a[999]), (1000, c[0], c[1], c[2]));
    }
}

#[test]
fn directories_and_executables_are_not_libraries() {
    let dir = std::env::temp_dir();
    let o = Command::new(env!("CARGO_BIN_EXE_bitbridge")).arg("info").arg(&dir).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("is not a shared library: it is a directory"), "{err}");
    assert!(!err.contains("linker script"), "{err}");

    // gcc builds position-independent executables by default: exit 3, "not a shared library".
    let exe = program("lossless_caller", Bits::B32, &["-pie", "-fPIE"]);
    let o = Command::new(env!("CARGO_BIN_EXE_bitbridge")).arg("info").arg(&exe).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("is not a shared library: it is a position-independent executable"), "{err}");
    let (code, _, err) = call(&[exe.to_str().unwrap(), "int main(void)"]);
    assert_eq!(code, 3, "{err}");
}
