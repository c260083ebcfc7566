//! Checks bitbridge's C layout computation against the compiler.
//!
//! `fixtures/layout_probe.c` prints `sizeof`, `_Alignof` and every member's `offsetof` for the types in
//! `fixtures/layout.h`; it is built with `gcc -m32` (i386 System V) and `gcc -m64` (x86_64 System V)
//! and every number is compared with [`Target::layout`] and [`Target::aggregate_layout`] for the
//! matching target. [`mirrors`] holds the hand-written Rust description of each C type, keyed by the
//! name the probe prints. A probe line without a mirror, a mirror without a probe line and any
//! differing number all fail the test, and every mismatch is listed, not just the first.
//!
//! No MSVC is available here, so the Windows targets get only [`windows_model_facts`]: checks that our
//! model states what the Microsoft ABI documents say, not a comparison with a compiler.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::process::Command;
use std::sync::Arc;

use bitbridge_proto::{CType, Layout, Signature, StructDef, Target};
use bitbridge_tests::Bits;

/// What the probe printed for one type.
#[derive(Debug)]
struct ProbeLine {
    name: String,
    size: u64,
    align: u64,
    /// `offsetof` of each member, in declaration order; empty for scalars and arrays.
    offsets: Vec<u64>,
}

/// One number on which gcc and bitbridge disagree.
#[derive(Debug)]
struct Mismatch {
    ty: String,
    what: String,
    gcc: String,
    ours: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: gcc says {}, bitbridge says {}", self.ty, self.what, self.gcc, self.ours)
    }
}

/// A union under `#pragma pack(pack)`: `CType` has a constructor for packed structs only.
fn packed_union<N: Into<String>>(name: &str, pack: u32, fields: impl IntoIterator<Item = (N, CType)>) -> CType {
    CType::Union(Arc::new(StructDef::new(name, fields, Some(pack))))
}

/// The Rust mirror of every type in `fixtures/layout.h` and every scalar the probe prints, keyed by
/// the C type name the probe prints.
fn mirrors() -> Vec<(&'static str, CType)> {
    use CType::*;

    let fn_int_double = CType::fn_ptr(Signature::new(Int).arg(Double));

    let s_one_char = CType::structure("s_one_char", [("c", Char)]);
    let s_tail = CType::structure("s_tail", [("d", Double), ("c", Char)]);
    let s_char_double = CType::structure("s_char_double", [("c", Char), ("d", Double)]);
    let s_char_longlong = CType::structure("s_char_longlong", [("c", Char), ("ll", LongLong), ("i", Int)]);
    let s_mixed = CType::structure(
        "s_mixed",
        [
            ("c", Char),
            ("s", Short),
            ("c2", Char),
            ("i", Int),
            ("c3", Char),
            ("d", Double),
            ("c4", Char),
            ("l", Long),
            ("uc", UChar),
        ],
    );
    let s_long_double = CType::structure("s_long_double", [("c", Char), ("ld", LongDouble), ("c2", Char)]);
    let s_fixed = CType::structure(
        "s_fixed",
        [("a", I8), ("b", I64), ("c", U8), ("d", U16), ("e", I32), ("f", U64), ("g", I16), ("h", U32)],
    );
    let s_misc = CType::structure(
        "s_misc",
        [("b", Bool), ("sz", SizeT), ("c", Char), ("ss", SSizeT), ("f", Float), ("ul", ULong), ("sc", SChar)],
    );
    let s_pointers = CType::structure(
        "s_pointers",
        [
            ("c", Char),
            ("p", CType::void_ptr()),
            ("fn", fn_int_double.clone()),
            ("sh", Short),
            ("s", CStr),
            ("ws", WStr),
            ("c2", Char),
        ],
    );
    let s_wchar = CType::structure(
        "s_wchar",
        [("c", Char), ("w", CType::array(WChar, 5)), ("c2", Char), ("w2", WChar), ("c3", Char)],
    );
    let s_nested = CType::structure(
        "s_nested",
        [("c", Char), ("t", s_tail.clone()), ("s", Short), ("oc", s_one_char.clone()), ("cd", s_char_double.clone())],
    );
    let s_array_of_structs = CType::structure(
        "s_array_of_structs",
        [
            ("tag", Char),
            ("items", CType::array(s_tail.clone(), 3)),
            ("ones", CType::array(s_one_char.clone(), 5)),
            ("n", Int),
        ],
    );
    let s_nested_arrays = CType::structure(
        "s_nested_arrays",
        [("c", Char), ("grid", CType::array(CType::array(s_char_double.clone(), 3), 2)), ("end", Char)],
    );
    let s_multidim = CType::structure(
        "s_multidim",
        [
            ("c", Char),
            ("m", CType::array(CType::array(Double, 4), 3)),
            ("s", CType::array(CType::array(CType::array(Short, 5), 3), 2)),
            ("tail", CType::array(CType::array(Char, 3), 3)),
            ("ll", CType::array(CType::array(LongLong, 1), 2)),
        ],
    );

    let u_basic = CType::union("u_basic", [("c", Char), ("i", Int), ("d", Double)]);
    let u_chars = CType::union("u_chars", [("buf", CType::array(Char, 13)), ("s", Short)]);
    let u_nested = CType::union("u_nested", [("t", s_tail.clone()), ("ll", LongLong), ("buf", CType::array(Char, 21))]);
    let u_long_double =
        CType::union("u_long_double", [("ld", LongDouble), ("buf", CType::array(Char, 17)), ("i", Int)]);
    let s_with_union = CType::structure(
        "s_with_union",
        [("c", Char), ("u", u_basic.clone()), ("after", Char), ("uc", u_chars.clone())],
    );
    let u_deep = CType::union("u_deep", [("s", s_with_union.clone()), ("d", CType::array(Double, 2)), ("c", Char)]);
    let s_union_array = CType::structure(
        "s_union_array",
        [("c", Char), ("us", CType::array(u_basic.clone(), 3)), ("uc", CType::array(u_chars.clone(), 2)), ("s", Short)],
    );

    let s_pack1 = CType::packed_structure(
        "s_pack1",
        1,
        [("c", Char), ("d", Double), ("s", Short), ("i", Int), ("ld", LongDouble)],
    );
    let s_pack1_nested = CType::packed_structure(
        "s_pack1_nested",
        1,
        [("c", Char), ("inner", s_char_double.clone()), ("i", Int), ("tails", CType::array(s_tail.clone(), 2))],
    );
    let u_pack1 = packed_union("u_pack1", 1, [("c", Char), ("d", Double), ("buf", CType::array(Char, 11))]);
    let s_pack2 = CType::packed_structure(
        "s_pack2",
        2,
        [("c", Char), ("d", Double), ("c2", Char), ("i", Int), ("ll", LongLong), ("c3", Char)],
    );
    let s_pack2_nested = CType::packed_structure(
        "s_pack2_nested",
        2,
        [("c", Char), ("inner", s_tail.clone()), ("c2", Char), ("u", u_basic.clone())],
    );
    let s_pack4 = CType::packed_structure(
        "s_pack4",
        4,
        [("c", Char), ("d", Double), ("c2", Char), ("ld", LongDouble), ("s", Short), ("p", CType::void_ptr())],
    );
    let s_pack8 = CType::packed_structure("s_pack8", 8, [("c", Char), ("d", Double), ("ld", LongDouble)]);
    // `__attribute__((packed))` is pack(1).
    let s_attr_packed = CType::packed_structure(
        "s_attr_packed",
        1,
        [("c", Char), ("i", Int), ("t", s_tail.clone()), ("s", Short), ("d", Double)],
    );

    vec![
        ("bool", Bool),
        ("char", Char),
        ("signed char", SChar),
        ("unsigned char", UChar),
        ("wchar_t", WChar),
        ("short", Short),
        ("unsigned short", UShort),
        ("int", Int),
        ("unsigned int", UInt),
        ("long", Long),
        ("unsigned long", ULong),
        ("long long", LongLong),
        ("unsigned long long", ULongLong),
        ("int8_t", I8),
        ("uint8_t", U8),
        ("int16_t", I16),
        ("uint16_t", U16),
        ("int32_t", I32),
        ("uint32_t", U32),
        ("int64_t", I64),
        ("uint64_t", U64),
        ("size_t", SizeT),
        ("ssize_t", SSizeT),
        ("float", Float),
        ("double", Double),
        ("long double", LongDouble),
        ("void *", CType::void_ptr()),
        ("char *", CStr),
        ("wchar_t *", WStr),
        ("double *", CType::ptr(Double)),
        ("int (*)(double)", fn_int_double),
        ("double[3][4]", CType::array(CType::array(Double, 4), 3)),
        ("wchar_t[7]", CType::array(WChar, 7)),
        ("struct s_tail[3]", CType::array(s_tail.clone(), 3)),
        ("long double[2]", CType::array(LongDouble, 2)),
        ("struct s_one_char", s_one_char),
        ("struct s_tail", s_tail),
        ("struct s_char_double", s_char_double),
        ("struct s_char_longlong", s_char_longlong),
        ("struct s_mixed", s_mixed),
        ("struct s_long_double", s_long_double),
        ("struct s_fixed", s_fixed),
        ("struct s_misc", s_misc),
        ("struct s_pointers", s_pointers),
        ("struct s_wchar", s_wchar),
        ("struct s_nested", s_nested),
        ("struct s_array_of_structs", s_array_of_structs),
        ("struct s_nested_arrays", s_nested_arrays),
        ("struct s_multidim", s_multidim),
        ("union u_basic", u_basic),
        ("union u_chars", u_chars),
        ("union u_nested", u_nested),
        ("union u_long_double", u_long_double),
        ("struct s_with_union", s_with_union),
        ("union u_deep", u_deep),
        ("struct s_union_array", s_union_array),
        ("struct s_pack1", s_pack1),
        ("struct s_pack1_nested", s_pack1_nested),
        ("union u_pack1", u_pack1),
        ("struct s_pack2", s_pack2),
        ("struct s_pack2_nested", s_pack2_nested),
        ("struct s_pack4", s_pack4),
        ("struct s_pack8", s_pack8),
        ("struct s_attr_packed", s_attr_packed),
    ]
}

/// Which compiler's probe: gcc for Linux, or mingw-w64 for Windows (run under Wine).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Compiler {
    Gcc,
    Mingw,
}

/// Builds and runs the probe for `bits` and parses what it printed.
fn probe(bits: Bits, compiler: Compiler) -> Vec<ProbeLine> {
    let (exe, out) = match compiler {
        Compiler::Gcc => {
            let exe = bitbridge_tests::program("layout_probe", bits, &[]);
            let out = Command::new(&exe).output().unwrap_or_else(|e| panic!("running {}: {e}", exe.display()));
            (exe, out)
        }
        Compiler::Mingw => {
            let exe = bitbridge_tests::windows_program("layout_probe", bits);
            let out = bitbridge_tests::run_under_wine(&exe, bits);
            (exe, out)
        }
    };
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}",
        exe.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("the probe prints ASCII");
    text.lines().map(parse_line).collect()
}

/// Parses `NAME<TAB>SIZE ALIGN [OFFSET...]`.
fn parse_line(line: &str) -> ProbeLine {
    let (name, numbers) = line.split_once('\t').unwrap_or_else(|| panic!("probe line without a tab: {line:?}"));
    let numbers: Vec<u64> = numbers
        .split_whitespace()
        .map(|n| n.parse().unwrap_or_else(|e| panic!("probe line {line:?}: {n:?}: {e}")))
        .collect();
    let [size, align, offsets @ ..] = numbers.as_slice() else {
        panic!("probe line without size and alignment: {line:?}");
    };
    ProbeLine { name: name.to_owned(), size: *size, align: *align, offsets: offsets.to_vec() }
}

/// Compares one probe line with our layout of `ty`, appending every difference to `out`.
fn compare(target: Target, line: &ProbeLine, ty: &CType, out: &mut Vec<Mismatch>) {
    let mut push = |what: String, gcc: String, ours: String| {
        out.push(Mismatch { ty: line.name.clone(), what, gcc, ours });
    };
    let Layout { size, align } = match target.layout(ty) {
        Ok(l) => l,
        Err(e) => {
            let gcc = format!("size {} align {}", line.size, line.align);
            return push("layout".into(), gcc, format!("error: {e}"));
        }
    };
    if line.size != size {
        push("size".into(), line.size.to_string(), size.to_string());
    }
    if line.align != align {
        push("align".into(), line.align.to_string(), align.to_string());
    }

    let (names, offsets) = match (ty, target.aggregate_layout(ty)) {
        (CType::Struct(def) | CType::Union(def), Some(Ok(l))) => {
            let names: Vec<&str> = def.fields.iter().map(|f| f.name.as_str()).collect();
            (names, l.offsets)
        }
        (_, Some(Err(e))) => {
            return push("member offsets".into(), "-".into(), format!("error: {e}"));
        }
        _ => (Vec::new(), Vec::new()),
    };
    if line.offsets.len() != offsets.len() {
        push("member count".into(), line.offsets.len().to_string(), offsets.len().to_string());
    }
    for (i, (gcc, ours)) in line.offsets.iter().zip(&offsets).enumerate() {
        if gcc != ours {
            let member = names.get(i).copied().unwrap_or("?");
            push(format!("offset of member #{i} `{member}`"), gcc.to_string(), ours.to_string());
        }
    }
}

/// Compares everything the probe built for `bits` prints with our layouts for `target`.
/// Types whose layout mingw-w64 does not share with MSVC, which bitbridge's Windows targets follow:
/// mingw's `long double` is the x87 80-bit type (12 bytes on i686, 16 on x86_64), MSVC's is `double`.
/// A mingw DLL that passes `long double` is not callable as MSVC's ABI says; every other type is
/// compared.
const MINGW_LONG_DOUBLE: [&str; 7] = [
    "long double",
    "long double[2]",
    "struct s_long_double",
    "union u_long_double",
    "struct s_pack1",
    "struct s_pack4",
    "struct s_pack8",
];

fn check(bits: Bits, target: Target) {
    check_with(bits, target, Compiler::Gcc)
}

fn check_with(bits: Bits, target: Target, compiler: Compiler) {
    let mut lines = probe(bits, compiler);
    if compiler == Compiler::Mingw {
        lines.retain(|l| !MINGW_LONG_DOUBLE.contains(&l.name.as_str()));
    }
    let mirrors = mirrors();

    let mut problems = Vec::new();
    let mut by_name = BTreeMap::new();
    for (name, ty) in &mirrors {
        if by_name.insert(*name, ty).is_some() {
            problems.push(format!("{name}: more than one Rust mirror"));
        }
    }
    let mut seen = BTreeSet::new();
    let mut mismatches = Vec::new();
    for line in &lines {
        if !seen.insert(line.name.as_str()) {
            problems.push(format!("{}: printed more than once by the probe", line.name));
        }
        match by_name.get(line.name.as_str()) {
            Some(ty) => compare(target, line, ty, &mut mismatches),
            None => problems.push(format!("{}: printed by the probe but has no Rust mirror in mirrors()", line.name)),
        }
    }
    let left_out = |name: &str| compiler == Compiler::Mingw && MINGW_LONG_DOUBLE.contains(&name);
    for name in by_name.keys() {
        if !seen.contains(name) && !left_out(name) {
            problems.push(format!("{name}: has a Rust mirror but the probe does not print it"));
        }
    }
    problems.extend(mismatches.iter().map(Mismatch::to_string));

    println!(
        "{target}: compared {} types with {compiler:?} {:?} ({} mismatches, {} other problems)",
        lines.len(),
        bits,
        mismatches.len(),
        problems.len() - mismatches.len()
    );
    assert!(
        problems.is_empty(),
        "{target} disagrees with {compiler:?} {bits:?} in {} places:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn gcc_m32_matches_i386_sysv() {
    check(Bits::B32, Target::I386_SYSV);
}

#[test]
fn gcc_m64_matches_x86_64_sysv() {
    check(Bits::B64, Target::X86_64_SYSV);
}

/// The same probe built with mingw-w64 for i686 Windows and run under Wine: MSVC's struct rules
/// (`double` and `long long` aligned to 8 in structs), 2-byte `wchar_t`, 4-byte `long`.
#[test]
fn mingw_i686_matches_win32() {
    check_with(Bits::B32, Target::WIN32, Compiler::Mingw);
}

/// As [`mingw_i686_matches_win32`] for x86_64 Windows (LLP64).
#[test]
fn mingw_x86_64_matches_win64() {
    check_with(Bits::B64, Target::WIN64, Compiler::Mingw);
}

/// Model checks, not compiler checks: no MSVC runs here, so these only pin the Microsoft ABI facts
/// our Windows targets are meant to state (LLP64 `long`, 2-byte `wchar_t`, 8-aligned `double` in
/// Win32 structs, `long double` being a plain `double`).
#[test]
fn windows_model_facts() {
    let l = |target: Target, ty: &CType| target.layout(ty).expect("scalar layout");

    // Win64 is LLP64: `long` stays 4 bytes while pointers are 8.
    assert_eq!(l(Target::WIN64, &CType::Long), Layout { size: 4, align: 4 });
    assert_eq!(l(Target::WIN64, &CType::ULong), Layout { size: 4, align: 4 });
    assert_eq!(l(Target::WIN64, &CType::void_ptr()).size, 8);
    assert_eq!(l(Target::WIN32, &CType::Long).size, 4);

    // `wchar_t` is 2 bytes (UTF-16) on both Windows targets.
    for target in [Target::WIN32, Target::WIN64] {
        assert_eq!(l(target, &CType::WChar), Layout { size: 2, align: 2 }, "{target}");
        assert!(!target.wchar_signed(), "{target}: wchar_t is unsigned");
    }

    // MSVC aligns `double` and 64-bit integers to 8 inside Win32 structs (i386 System V uses 4).
    let s =
        CType::structure("S", [("c", CType::Char), ("d", CType::Double), ("c2", CType::Char), ("ll", CType::LongLong)]);
    let w32 = Target::WIN32.aggregate_layout(&s).expect("a struct").expect("a layout");
    assert_eq!(w32.layout, Layout { size: 32, align: 8 });
    assert_eq!(w32.offsets, [0, 8, 16, 24]);
    assert_eq!(l(Target::WIN32, &CType::Double), Layout { size: 8, align: 8 });

    // `long double` is the same as `double` under MSVC.
    for target in [Target::WIN32, Target::WIN64] {
        assert_eq!(l(target, &CType::LongDouble), Layout { size: 8, align: 8 }, "{target}");
    }
}

/// `fixtures/layout.h` read by bitbridge's C declaration parser gives exactly the hand-written mirrors
/// (so every parsed type also matches gcc's sizes and offsets, checked above and again here), and each
/// scalar, pointer and array spelling the probe prints maps to the same type.
#[test]
fn parsed_layout_h_matches_the_mirrors_and_gcc() {
    let decls = bitbridge::Declarations::parse_file(bitbridge_tests::root().join("fixtures/layout.h"))
        .unwrap_or_else(|e| panic!("parsing fixtures/layout.h: {e}"));
    let mut problems = Vec::new();
    let mut parsed = BTreeMap::new();
    for (name, mirror) in mirrors() {
        let ty = if (name.starts_with("struct ") || name.starts_with("union ")) && !name.contains('[') {
            decls.type_named(name).cloned()
        } else {
            // A type name becomes a typedef: `int (*)(double)` -> `typedef int (*T)(double);`.
            let decl = if name.contains("(*)") {
                name.replacen("(*)", "(*T)", 1)
            } else if let Some(i) = name.find('[') {
                format!("{} T{}", &name[..i], &name[i..])
            } else {
                format!("{name} T")
            };
            let mut d = decls.clone();
            match d.add(&format!("typedef {decl};")) {
                Ok(d) => d.type_named("T").cloned(),
                Err(e) => {
                    problems.push(format!("{name}: {e}"));
                    continue;
                }
            }
        };
        match ty {
            Some(ty) if ty == mirror => {
                parsed.insert(name, ty);
            }
            Some(ty) => problems.push(format!("{name}: parsed as {ty:?}, the mirror is {mirror:?}")),
            None => problems.push(format!("{name}: not found in the parsed declarations")),
        }
    }
    for (bits, target) in [(Bits::B32, Target::I386_SYSV), (Bits::B64, Target::X86_64_SYSV)] {
        let mut mismatches = Vec::new();
        for line in probe(bits, Compiler::Gcc) {
            if let Some(ty) = parsed.get(line.name.as_str()) {
                compare(target, &line, ty, &mut mismatches);
            }
        }
        problems.extend(mismatches.iter().map(|m| format!("{target}: {m}")));
    }
    assert_eq!(parsed.len(), mirrors().len(), "every mirror parsed: {problems:#?}");
    assert!(problems.is_empty(), "{problems:#?}");
}
