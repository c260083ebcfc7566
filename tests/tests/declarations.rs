//! Declarations from C text: the parser against real-world-style headers (`fixtures/vendor_api.h`,
//! `fixtures/ctest.h`), calls through what it declares (the 32-bit fixtures in the i686 server first),
//! the type mapping, and its errors with their exact lines and columns.

use std::sync::{Arc, Mutex};

use bitbridge::{CType, CallConv, Constant, Declarations, Direction, Error, Signature, Value};
use bitbridge_tests::{fixture, root, Backend, Bits, BACKENDS};

fn header(name: &str) -> Declarations {
    let path = root().join("fixtures").join(name);
    Declarations::parse_file(&path).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn cx(re: f64, im: f64) -> Value {
    Value::Struct(vec![re.into(), im.into()])
}

#[test]
fn the_ctest_header_declares_callable_functions_on_every_backend() {
    let _check = bitbridge_tests::no_server_left();
    let decls = header("ctest.h");
    for b in BACKENDS {
        let lib = b.open("ctest");
        let add = lib.declare(&decls, "add").unwrap();
        assert_eq!(add.call(&[cx(1.5, -2.0), cx(0.25, 10.0)]).unwrap().ret, cx(1.75, 8.0), "{b:?}");

        let swap = lib.declare(&decls, "swap").unwrap();
        let r = swap.call(&[cx(1.0, 2.0), cx(3.0, 4.0)]).unwrap();
        assert_eq!((r.out(0), r.out(1)), (Some(&cx(3.0, 4.0)), Some(&cx(1.0, 2.0))), "{b:?}");

        let sum = lib.declare(&decls, "sum").unwrap();
        assert_eq!(sum.call(&[Value::f64s([1.0, 2.0, 3.0]), 3.into()]).unwrap().ret, Value::Float(6.0));
        let sum4 = lib.declare(&decls, "sum4").unwrap();
        let r = sum4.call(&[Value::f64s([1.0, 2.0, 3.0, 4.0, 5.0]), 5.into()]).unwrap();
        assert_eq!((&r.ret, r.out(0)), (&Value::Float(15.0), None), "const double *: in only");

        let title = lib.declare(&decls, "titlecase").unwrap();
        let r = title.call(&["hello big world".into()]).unwrap();
        assert_eq!(r.out(0).and_then(Value::as_str), Some("Hello Big World"), "{b:?}");

        // int tokenize(char sep, char *str, char t[][20]): a 2-D output buffer through a decayed array.
        let tokenize = lib.declare(&decls, "tokenize").unwrap();
        let r = tokenize.call(&[Value::Int(i64::from(b',')), "ab,cd,e".into(), Value::Zeros(3)]).unwrap();
        assert_eq!(r.ret, Value::Int(3));
        let words: Vec<_> =
            r.out(2).unwrap().as_slice().unwrap().iter().map(|w| w.as_str().unwrap().to_owned()).collect();
        assert_eq!(words, ["ab", "cd", "e"], "{b:?}");
    }
}

#[test]
fn a_prototype_string_makes_a_function() {
    let _check = bitbridge_tests::no_server_left();
    let lib = Backend::Server32.open("ctest");
    let sum = lib.function_from_c("double sum(double *f, int n)").unwrap();
    assert_eq!(sum.name(), "sum");
    assert_eq!(sum.signature(), &Signature::new(CType::Double).arg_inout(CType::ptr(CType::Double)).arg(CType::Int));
    assert_eq!(sum.call(&[Value::f64s([1.0, 2.0, 3.0]), 3.into()]).unwrap().ret, Value::Float(6.0));
    let add = lib
        .function_from_c("struct Complex { double re, im; }; struct Complex add(struct Complex, struct Complex);")
        .unwrap();
    assert_eq!(add.call(&[cx(1.0, 2.0), cx(3.0, 4.0)]).unwrap().ret, cx(4.0, 6.0));

    match lib.function_from_c("double nope(double)") {
        Err(Error::SymbolNotFound { symbol, .. }) => assert_eq!(symbol, "nope"),
        other => panic!("expected SymbolNotFound, got {other:?}"),
    }
    match lib.function_from_c("double sum(double *f, int n") {
        Err(e @ Error::Declaration { line: 1, column: 28, .. }) => {
            assert_eq!(
                e.to_string(),
                "prototype:1:28: the prototype ends too early: expected ( or ) or , or [ (in `double sum(double *f, int n`)"
            )
        }
        other => panic!("expected a declaration error at 1:28, got {other:?}"),
    }
}

#[test]
fn the_vendor_header_parses_into_what_it_says() {
    let d = header("vendor_api.h");
    let c = |n: &str| d.constant(n).cloned();
    assert_eq!(c("VND_MAX_CHANNELS"), Some(Constant::Int(4)));
    assert_eq!(c("VND_NAME_LEN"), Some(Constant::Int(32)), "(VND_SERIAL_LEN * 2)");
    assert_eq!(c("VND_MAX_SAMPLES"), Some(Constant::Int(1024)));
    assert_eq!(c("VND_FULL_SCALE"), Some(Constant::Float(2.5)));
    assert_eq!(c("VND_TIMEOUT_INFINITE"), Some(Constant::UInt(0xFFFF_FFFF)));
    assert_eq!(c("VND_GAIN_MIN"), Some(Constant::Int(-6)));
    assert_eq!(c("VND_VERSION_STRING"), Some(Constant::Str("2.7.1".into())));
    assert_eq!(c("VND_ERR_BUFFER_TOO_SMALL"), Some(Constant::Int(-4)));
    assert_eq!(c("VND_COUPLING_GND"), Some(Constant::Int(16)));
    assert_eq!(c("VND_EVENT_DONE"), Some(Constant::Int(4)), "1 << 2");
    assert_eq!(c("VND_API"), None, "a marker, not a constant");

    use CType::*;
    let config = CType::structure(
        "vnd_channel_config",
        [
            ("enabled", Int),
            ("coupling", Int),
            ("range_volts", Double),
            ("gain_db", I32),
            ("label", CType::array(Char, 32)),
        ],
    );
    assert_eq!(d.type_named("VND_ChannelConfig"), Some(&config));
    assert_eq!(d.type_named("struct vnd_channel_config"), Some(&config));
    assert_eq!(d.type_named("enum vnd_coupling"), Some(&Int));
    assert_eq!(d.type_named("VND_Handle"), Some(&CType::void_ptr()), "a pointer to an opaque struct is a handle");
    assert_eq!(
        d.type_named("VND_Sample"),
        Some(&CType::packed_structure(
            "VND_Sample",
            1,
            [("channel", U8), ("index", U32), ("raw", I16), ("volts", Double)]
        ))
    );
    let info = d.type_named("VND_DeviceInfo").unwrap();
    let CType::Struct(def) = info else { panic!("{info:?}") };
    assert_eq!(def.fields[4].ty, CType::array(config.clone(), 4), "an array of structs sized by a constant");
    assert_eq!(def.pack, None, "#pragma pack(pop) ended the packing");
    let callback = Signature::new(Void).arg(Int).arg(CType::void_ptr()).conv(CallConv::Stdcall);
    assert_eq!(d.type_named("VND_EventCallback"), Some(&CType::fn_ptr(callback.clone())));

    let f = |n: &str| d.function(n).unwrap_or_else(|| panic!("{n} declared")).clone();
    assert_eq!(f("vnd_version"), Signature::new(CStr));
    assert_eq!(f("vnd_open"), Signature::new(Int).arg(CStr).arg_inout(CType::ptr(CType::void_ptr())));
    assert_eq!(f("vnd_configure"), Signature::new(Int).arg(CType::void_ptr()).arg(UInt).arg(CType::ptr(config)));
    assert_eq!(
        f("vnd_read_samples"),
        Signature::new(Int)
            .arg(CType::void_ptr())
            .arg(UInt)
            .arg_inout(CType::ptr(Double))
            .arg(SizeT)
            .arg_inout(CType::ptr(SizeT))
            .conv(CallConv::Stdcall)
    );
    assert_eq!(f("vnd_stats").conv, CallConv::Stdcall);
    assert_eq!(f("vnd_stats").params[0].dir, Direction::In, "const double samples[]");
    assert_eq!(f("vnd_set_callback").params[1].ty, CType::fn_ptr(callback));
    assert_eq!(f("vnd_set_callback").conv, CallConv::Stdcall, "WINAPI");
    assert_eq!(f("vnd_trigger").conv, CallConv::Cdecl);
    assert_eq!(f("vnd_format_status").params[1], bitbridge::Param { ty: CType::ptr(Char), dir: Direction::InOut });
    assert!(f("vnd_sum_ints").variadic);
    assert!(d.function("vnd_succeeded").is_none(), "static inline helpers are not exported");
    let open = d.prototype("vnd_open").unwrap();
    assert_eq!(open.param_names, ["serial", "handle"]);
    assert_eq!(open.line, 118);
    assert_eq!(d.functions().count(), 12);
}

#[test]
fn the_vendor_api_through_the_32_bit_server() {
    let _check = bitbridge_tests::no_server_left();
    let d = header("vendor_api.h");
    // i686 first (stdcall is real there); the x86_64 server ignores the markers as compilers do.
    for b in [Backend::Server32, Backend::Server64] {
        let lib = b.open("vendor_api");
        let f = |n: &str| lib.declare(&d, n).unwrap_or_else(|e| panic!("{n} ({b:?}): {e}"));
        assert_eq!(f("vnd_version").call(&[]).unwrap().ret, Value::Str("2.7.1".into()));

        let open = f("vnd_open");
        let r = open.call(&["ACME-1".into(), Value::Zeros(1)]).unwrap();
        assert_eq!(r.ret, Value::Int(-1), "VND_ERR_NO_DEVICE");
        assert_eq!(open.call(&["VND-0042".into(), Value::NULL]).unwrap().ret, Value::Int(-2), "a NULL handle pointer");
        let r = open.call(&["VND-0042".into(), Value::Zeros(1)]).unwrap();
        assert_eq!(r.ret, Value::Int(0));
        let handle = r.out(1).and_then(|h| h.get(0)).cloned().unwrap();
        assert!(matches!(handle, Value::Pointer(p) if p != 0), "{handle:?}");

        // A struct holding an array of structs, filled through a pointer.
        let info = f("vnd_get_info").call(&[handle.clone(), Value::Zeros(1)]).unwrap();
        let info = info.out(1).unwrap().get(0).unwrap().clone();
        assert_eq!(info.get(0).and_then(Value::as_str), Some("VND-0042"));
        assert_eq!(info.get(1), Some(&Value::Array(vec![Value::UInt(2), Value::UInt(7), Value::UInt(1)])));
        assert_eq!(info.get(3), Some(&Value::Float(1.25e6)));
        let ch2 = info.get(4).and_then(|c| c.get(1)).unwrap();
        assert_eq!(ch2.get(4).and_then(Value::as_str), Some("CH2"));

        // A const struct pointer goes in; a bad gain is refused by the library.
        let configure = f("vnd_configure");
        let cfg =
            |gain: i64| Value::Struct(vec![1.into(), 1.into(), 10.0.into(), gain.into(), Value::Str("probe".into())]);
        assert_eq!(configure.call(&[handle.clone(), 1.into(), cfg(-7)]).unwrap().ret, Value::Int(-2));
        let r = configure.call(&[handle.clone(), 1.into(), cfg(3)]).unwrap();
        assert_eq!((&r.ret, r.out(2)), (&Value::Int(0), None));

        // stdcall, an output buffer and an out count.
        let read = f("vnd_read_samples");
        let r = read.call(&[handle.clone(), 1.into(), Value::Zeros(4), 4.into(), 0.into()]).unwrap();
        assert_eq!(r.ret, Value::Int(0));
        let samples: Vec<f64> = (0..4).map(|i| 10.0 * f64::from(100 + i) / 100.0).collect(); // as the C code computes
        assert_eq!(r.out(2), Some(&Value::f64s(samples.clone())));
        assert_eq!(r.out(4).and_then(Value::as_u64), Some(4));

        // A packed struct read back through a pointer.
        let last = f("vnd_last_sample").call(&[handle.clone(), Value::Zeros(1)]).unwrap();
        let s = last.out(1).unwrap().get(0).unwrap();
        assert_eq!(s, &Value::Struct(vec![Value::UInt(1), Value::UInt(3), Value::Int(-4), samples[3].into()]));

        // A struct returned by value from a stdcall function.
        let stats = f("vnd_stats").call(&[Value::f64s([2.0, -1.0, 5.0]), 3.into()]).unwrap();
        assert_eq!(stats.ret, Value::Struct(vec![Value::Float(-1.0), 5.0.into(), 2.0.into()]));

        // A char * buffer the library writes.
        let r = f("vnd_format_status").call(&[Value::Int(-2), Value::Zeros(32), 32.into()]).unwrap();
        assert_eq!((&r.ret, r.out(1).and_then(Value::as_str)), (&Value::Int(12), Some("bad argument")));

        // The WINAPI callback type from the header, called by the library.
        let CType::FnPtr(sig) = d.type_named("VND_EventCallback").unwrap().clone() else { unreachable!() };
        let mut sig = (*sig).clone();
        if !b.is_32() {
            sig.conv = CallConv::Cdecl; // what Library::declare does for functions on x86_64
        }
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let cb = lib
            .server()
            .callback(sig, move |a| {
                seen.lock().unwrap().push((a[0].as_i64().unwrap(), a[1].as_pointer().unwrap()));
                Value::Void
            })
            .unwrap();
        let r = f("vnd_set_callback").call(&[handle.clone(), cb.value(), Value::Pointer(0x1234)]).unwrap();
        assert_eq!(r.ret, Value::Int(0));
        assert_eq!(f("vnd_trigger").call(std::slice::from_ref(&handle)).unwrap().ret, Value::Int(2));
        assert_eq!(*events.lock().unwrap(), [(1, 0x1234), (4, 0x1234)], "VND_EVENT_TRIGGER, VND_EVENT_DONE");

        let sum = f("vnd_sum_ints");
        let r =
            sum.call_variadic(&[3.into()], &[(CType::Int, 1.into()), (CType::Int, 2.into()), (CType::Int, 39.into())]);
        assert_eq!(r.unwrap().ret, Value::Int(42));

        assert_eq!(f("vnd_close").call(&[handle]).unwrap().ret, Value::Int(0));
    }
}

#[test]
fn c_spellings_map_onto_the_type_model() {
    use CType::*;
    let d = Declarations::parse(
        r#"
        #include <stdint.h>
        #include <stddef.h>
        #include <stdbool.h>
        #include <wchar.h>
        #include <windows.h>
        typedef unsigned long long u64;
        struct node { int value; struct node *next; };
        union number { int i; double d; unsigned char bytes[8]; };
        struct outer { struct { int a, b; } pair; union { float f; uint32_t bits; }; double grid[2][3]; };
        long double precise(long double x);
        unsigned long int f1(signed char a, unsigned short b, long long c, u64 d, bool e, _Bool f2, wchar_t w);
        const wchar_t *f2(const wchar_t *in, wchar_t *out, char **argv, const char *const *names);
        void *f3(void *p, const void *q, int (*cmp)(const void *, const void *), int (__stdcall *cb)(int));
        DWORD WINAPI f4(HANDLE h, LPCSTR name, LPSTR buf, LPDWORD size, BOOL flag, LONG l, WORD w, BYTE b);
        int __cdecl f5(struct node *n, union number u, struct outer *o, int m[3][4], const int *restrict p);
        int __fastcall f6(int a, int b);
        char *f7(void);
        int f8();
        "#,
    )
    .unwrap();
    let sig = |n: &str| d.function(n).unwrap().clone();
    assert_eq!(sig("precise"), Signature::new(LongDouble).arg(LongDouble));
    assert_eq!(
        sig("f1"),
        Signature::new(ULong).arg(SChar).arg(UShort).arg(LongLong).arg(ULongLong).arg(Bool).arg(Bool).arg(WChar)
    );
    assert_eq!(
        sig("f2"),
        Signature::new(WStr)
            .arg(WStr)
            .arg_inout(CType::ptr(WChar))
            .arg_inout(CType::ptr(CType::ptr(Char)))
            .arg(CType::ptr(CStr))
    );
    let cmp = Signature::new(Int).arg(CType::void_ptr()).arg(CType::void_ptr());
    let cb = Signature::new(Int).arg(Int).conv(CallConv::Stdcall);
    assert_eq!(
        sig("f3"),
        Signature::new(CType::void_ptr())
            .arg(CType::void_ptr())
            .arg(CType::void_ptr())
            .arg(CType::fn_ptr(cmp))
            .arg(CType::fn_ptr(cb))
    );
    assert_eq!(
        sig("f4"),
        Signature::new(U32)
            .arg(CType::void_ptr())
            .arg(CStr)
            .arg_inout(CType::ptr(Char))
            .arg_inout(CType::ptr(U32))
            .arg(I32)
            .arg(I32)
            .arg(U16)
            .arg(U8)
            .conv(CallConv::Stdcall)
    );
    let f5 = sig("f5");
    assert_eq!(f5.conv, CallConv::Cdecl);
    assert_eq!(f5.params[0].ty, CType::ptr(CType::structure("node", [("value", Int), ("next", CType::void_ptr())])));
    assert!(matches!(&f5.params[1].ty, Union(u) if u.name == "number" && u.fields.len() == 3));
    assert_eq!(f5.params[3], bitbridge::Param { ty: CType::ptr(CType::array(Int, 4)), dir: Direction::InOut });
    assert_eq!(f5.params[4].dir, Direction::In);
    let CType::Pointer(outer) = &f5.params[2].ty else { panic!() };
    let CType::Struct(outer) = &**outer else { panic!() };
    assert_eq!(outer.fields[0].ty, CType::structure("", [("a", Int), ("b", Int)]));
    assert_eq!(outer.fields[1].name, "", "an anonymous union member");
    assert_eq!(outer.fields[2].ty, CType::array(CType::array(Double, 3), 2));
    assert_eq!(sig("f6").conv, CallConv::Fastcall);
    assert_eq!(sig("f7").ret, CType::ptr(Char), "a non-const char * return is an address (to free later)");
    assert_eq!(sig("f8"), Signature::new(Int));
}

#[test]
fn the_preprocessor_handles_what_headers_do() {
    let d = Declarations::parse(
        "#ifndef GUARD_H\n\
         #define GUARD_H\n\
         #if defined(_WIN32) || defined(__cplusplus)\n\
         #error not here\n\
         #elif !defined(GUARD_H)\n\
         int never(void);\n\
         #else\n\
         #define LIMIT (1 << 4) /* a comment */\n\
         #endif\n\
         #if LIMIT >= 16 && 1\n\
         #define BIG 1\n\
         #endif\n\
         #define EXPORT __declspec(dllexport)\n\
         #define CALL \\\n  __stdcall\n\
         #pragma once\n\
         #pragma pack(push, 2)\n\
         struct P { char c; double d; };\n\
         #pragma pack(pop)\n\
         extern \"C\" EXPORT int CALL packed(struct P p, char name[LIMIT]);\n\
         extern \"C\" {\n\
         int inside(void);\n\
         }\n\
         #undef BIG\n\
         #ifdef BIG\n\
         int gone(void);\n\
         #endif\n\
         #endif\n",
    )
    .unwrap();
    assert!(d.function("never").is_none() && d.function("gone").is_none());
    assert_eq!(d.constant("LIMIT"), Some(&Constant::Int(16)));
    assert_eq!(d.constant("BIG"), None);
    let packed = d.function("packed").unwrap();
    assert_eq!(packed.conv, CallConv::Stdcall);
    assert_eq!(packed.params[0].ty, CType::packed_structure("P", 2, [("c", CType::Char), ("d", CType::Double)]));
    assert_eq!(packed.params[1].ty, CType::ptr(CType::Char));
    assert!(d.function("inside").is_some());

    let win = Declarations::new()
        .define("_WIN32", "1")
        .unwrap()
        .add("#ifdef _WIN32\nint win(void);\n#endif")
        .unwrap()
        .clone();
    assert!(win.function("win").is_some());
}

/// `(line, column, what the message says)` for a text.
fn error_of(text: &str) -> (usize, usize, String) {
    match Declarations::parse(text) {
        Err(Error::Declaration { line, column, message, source_line, origin: None }) => {
            assert_eq!(source_line, text.lines().nth(line - 1).unwrap().trim());
            (line, column, message)
        }
        other => panic!("expected a declaration error for {text:?}, got {other:?}"),
    }
}

/// `(line, column, what the message says)` of a declaration that parses but cannot be used.
fn deferred_error_of(text: &str, name: &str) -> (usize, usize, String) {
    let d = Declarations::parse(text).unwrap_or_else(|e| panic!("{text:?} must parse, with `{name}` unusable: {e}"));
    match d.unusable(name) {
        Some(Error::Declaration { line, column, message, source_line, origin: None }) => {
            assert_eq!(source_line, text.lines().nth(line - 1).unwrap().trim());
            (line, column, message)
        }
        other => panic!("expected `{name}` to be unusable in {text:?}, got {other:?}"),
    }
}

#[test]
fn errors_name_the_line_and_column() {
    let (l, c, m) = error_of("int ok(void);\n\nint broken(int a int b);\n");
    assert_eq!((l, c), (3, 18), "{m}");
    assert!(m.contains("syntax error at `int`"), "{m}");

    // A column after a marker the preprocessor rewrote is still the user's column.
    let (l, c, m) = error_of("int WINAPI f(int a,, int b);");
    assert_eq!((l, c), (1, 20), "{m}");

    // A macro the declarations cannot use is ignored while nothing uses it (a header's helper for code)...
    let d = Declarations::parse("// header\n#define MAX(a, b) ((a) > (b) ? (a) : (b))\nint f(void);").unwrap();
    assert!(d.function("f").is_some());
    // ...and refuses the text, at its definition, when something does.
    let (l, c, m) = error_of("// header\n#define MAX(a, b) ((a) > (b) ? (a) : (b))\nint f(int x[MAX(1, 2)]);");
    assert_eq!((l, c), (2, 1));
    assert!(m.contains("function-like macro `MAX`"), "{m}");

    let (l, _, m) = error_of("#include <stdint.h>\n#include \"other.h\"\n");
    assert_eq!(l, 2);
    assert!(m.contains("`#include \"other.h\"` is not supported"), "{m}");

    // Bit-fields are understood.
    let d = Declarations::parse("struct flags {\n    unsigned ready : 1;\n    unsigned error : 1;\n};").unwrap();
    match d.type_named("struct flags") {
        Some(CType::Struct(def)) => assert_eq!(def.fields[1].bits, Some(1)),
        other => panic!("{other:?}"),
    }
    let (l, c, m) = deferred_error_of("struct s {\n  unsigned named : 0;\n};", "struct s");
    assert_eq!((l, c), (2, 12), "{m}");
    assert!(m.contains("zero-width bit-field `named` must be unnamed"), "{m}");

    // A declaration that cannot be understood fails alone, when it is used: the rest of the text is fine.
    // An unknown type name is a syntax error (the parser cannot tell it from a variable): the text fails.
    let (l, c, m) = error_of("#include <stdint.h>\n\nint f(uint32_t a,\n      widget_t *w);");
    assert_eq!((l, c), (4, 7), "{m}");
    assert_eq!(m, "unknown type name `widget_t`");

    let (l, _, m) = deferred_error_of("int f(a, b)\nint a; int b;\n{ return 0; }", "f");
    assert!(m.contains("K&R"), "{m}");
    assert_eq!(l, 1);

    let (l, _, m) = error_of("#define A 1\n#define B A ## 2\nint f(int x[B]);");
    assert_eq!(l, 2);
    assert!(m.contains("token pasting"), "{m}");

    let (l, _, m) = error_of("int f(void);\n#ifdef X\n#if 1\nint f(void);\n#endif\n");
    assert!(m.contains("`#ifdef` is not closed by `#endif`"), "{m}");
    assert_eq!(l, 2);

    let (l, c, m) = deferred_error_of("struct opaque;\nvoid f(struct opaque o);", "f");
    assert_eq!((l, c), (2, 6), "{m}");
    assert!(m.contains("`struct opaque` is declared but not defined"), "{m}");

    let (l, c, m) = deferred_error_of("typedef int a[sizeof(int)];", "a");
    assert_eq!((l, c), (1, 15));
    assert!(m.contains("sizeof"), "{m}");

    let (l, _, m) = error_of("#line 10\n");
    assert_eq!(l, 1);
    assert!(m.contains("`#line` is not supported"), "{m}");

    let deep = format!("int f(int x{});", "[1]".repeat(10) + &"(".repeat(100_000));
    let (l, c, m) = error_of(&deep);
    assert_eq!((l, c, m.as_str()), (1, 241, "brackets nest deeper than 200 levels"));

    // Files are named, compiler-style.
    let bad = bitbridge_tests::out_dir().join("decl-bad.h");
    std::fs::write(&bad, "int ok(void);\nint bad(;\n").unwrap();
    let e = Declarations::parse_file(&bad).unwrap_err();
    assert!(e.to_string().starts_with(&format!("{}:2:9: syntax error", bad.display())), "{e}");
    assert!(e.to_string().ends_with("(in `int bad(;`)"), "{e}");

    // A failed parse leaves earlier declarations untouched.
    let mut d = Declarations::parse("int one(void);").unwrap();
    assert!(d.add("int two(void); int (").is_err());
    assert_eq!(d.functions().count(), 1);
}

#[test]
fn declare_refuses_names_the_declarations_lack() {
    let _check = bitbridge_tests::no_server_left();
    let lib = Backend::Server32.open("ctest");
    let decls = header("ctest.h");
    match lib.declare(&decls, "summ") {
        Err(e @ Error::NotDeclared { .. }) => assert!(e.to_string().contains("declared: add, swap, sum"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(fixture("ctest", Bits::B32).extension().unwrap(), "so");
}

/// Every prefix and every single-line deletion of the vendor header parses or fails with an error:
/// the parser never panics on broken input.
#[test]
fn broken_headers_are_errors_not_panics() {
    let text = std::fs::read_to_string(root().join("fixtures/vendor_api.h")).unwrap();
    let mut errors = 0;
    for (i, _) in text.char_indices().step_by(7) {
        errors += usize::from(Declarations::parse(&text[..i]).is_err());
    }
    let lines: Vec<&str> = text.lines().collect();
    for skip in 0..lines.len() {
        let t: Vec<&str> = lines.iter().enumerate().filter(|(k, _)| *k != skip).map(|(_, l)| *l).collect();
        errors += usize::from(Declarations::parse(&t.join("\n")).is_err());
    }
    assert!(errors > 100, "most of these are broken: {errors}");
}

/// Random token soup (C keywords, punctuation, directives) is parsed or refused, never a panic.
#[test]
fn token_soup_never_panics() {
    let words = [
        "int",
        "char",
        "*",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ";",
        ",",
        "struct",
        "union",
        "enum",
        "typedef",
        "const",
        "x",
        "y",
        "1",
        "0x10",
        ":",
        "=",
        "...",
        "\n#define A 1\n",
        "\n#if A\n",
        "\n#endif\n",
        "\n#pragma pack(2)\n",
        "WINAPI",
        "__stdcall",
        "extern \"C\"",
        "/*",
        "*/",
        "//",
        "'",
        "\"",
        "\\\n",
        "DWORD",
        "unsigned",
        "long",
        "-",
        "sizeof",
        "__attribute__((packed))",
        "\n#else\n",
        "A",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20_000 {
        let mut text = String::new();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut r = seed;
        for _ in 0..(seed % 24) {
            text.push_str(words[(r % words.len() as u64) as usize]);
            text.push(' ');
            r = r.rotate_left(7) ^ 0x5851_f42d_4c95_7f2d;
        }
        let _ = Declarations::parse(&text);
    }
}
