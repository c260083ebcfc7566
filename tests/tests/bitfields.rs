//! Bit-fields (issue 15, kind 4), checked against gcc.
//!
//! `fixtures/bitfield_probe.c` prints, built with `gcc -m32` (i386 System V) and `gcc -m64` (x86_64
//! System V), the size and alignment of every type in `fixtures/bitfields.h`, the `offsetof` of its
//! ordinary members and the first bit and width of each bit-field (found by setting the member to -1
//! and looking at which bits of the object changed). The same header, parsed by bitbridge's
//! `Declarations`, is laid out by `Target::layout`/`aggregate_layout` and every number is compared.
//! Then the functions of `fixtures/bitfields.c` are called through every backend, by value and by
//! pointer, and their results compared with what the probe's own calls printed.
//!
//! No MSVC is available here: the Windows rules are checked against the examples of Microsoft's
//! documentation only (`msvc_rules_match_microsofts_documented_examples`).

use std::collections::BTreeMap;
use std::process::Command;

use bitbridge::{CType, Declarations, Error, Target, Value};
use bitbridge_tests::{program, root, Bits, BACKENDS};

fn header() -> Declarations {
    let path = root().join("fixtures/bitfields.h");
    Declarations::parse_file(&path).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The probe's lines for `bits`.
fn probe(bits: Bits) -> Vec<String> {
    let exe = program("bitfield_probe", bits, &[]);
    let out = Command::new(&exe).output().expect("running the bit-field probe");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
}

#[test]
fn layouts_match_gcc_on_i386_and_x86_64() {
    let decls = header();
    for (bits, target) in [(Bits::B32, Target::I386_SYSV), (Bits::B64, Target::X86_64_SYSV)] {
        let mut mismatches = Vec::new();
        let mut checked = 0;
        for line in probe(bits) {
            let words: Vec<&str> = line.split(' ').collect();
            if words[0] == "call" {
                continue;
            }
            // `struct bf_a size 4 4`, `struct bf_a.b bit 8 4`, `struct bf_a.c byte 0`
            let (kind, rest) = (words[0], words[1]);
            let (tag, member) = rest.split_once('.').map_or((rest, None), |(t, m)| (t, Some(m)));
            let ty = decls.type_named(&format!("{kind} {tag}")).unwrap_or_else(|| panic!("{kind} {tag} not declared"));
            let l = target.aggregate_layout(ty).unwrap().unwrap_or_else(|e| panic!("{kind} {tag}: {e}"));
            let (CType::Struct(def) | CType::Union(def)) = ty else { unreachable!() };
            let nums: Vec<u64> = words[3..].iter().map(|n| n.parse().unwrap()).collect();
            let ours: Vec<u64> = match (member, words[2]) {
                (None, "size") => vec![l.layout.size, l.layout.align],
                (Some(m), "byte") => vec![l.offsets[def.index_of(m).unwrap()]],
                (Some(m), "bit") => {
                    let i = def.index_of(m).unwrap();
                    vec![l.bit_offsets[i].expect("a bit-field"), u64::from(def.fields[i].bits.unwrap())]
                }
                other => panic!("probe line {line:?}: {other:?}"),
            };
            checked += 1;
            if ours[..] != nums[..nums.len().min(ours.len())] {
                mismatches
                    .push(format!("{target}: {kind} {rest} {}: gcc says {nums:?}, bitbridge says {ours:?}", words[2]));
            }
        }
        assert!(checked > 70, "{checked} probe lines");
        assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
    }
}

/// `call NAME HEX-OR-NUMBER` lines of the probe.
fn calls(bits: Bits) -> BTreeMap<String, String> {
    probe(bits)
        .into_iter()
        .filter_map(|l| {
            l.strip_prefix("call ").map(|r| r.split_once(' ').map(|(k, v)| (k.to_owned(), v.to_owned())).unwrap())
        })
        .collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn bit_field_structs_cross_by_value_and_by_pointer() {
    let _check = bitbridge_tests::no_server_left();
    let decls = header();
    for b in BACKENDS {
        let c = calls(b.bits());
        let lib = b.open("bitfields");
        let target = lib.server().target();
        let flags_ty = decls.type_named("struct flags").unwrap().clone();

        // Returned by value: the bits the C caller got, and the members decoded from them.
        let make = lib.declare(&decls, "make_flags").unwrap();
        let f = make.call(&[1.into(), 5.into(), (-3).into(), 9.into()]).unwrap().ret;
        let bytes = bitbridge::proto::encode_value(&target, &flags_ty, &f).unwrap();
        assert_eq!(bytes, unhex(&c["make_flags"]), "{b:?}: {f:?}");
        let Value::Struct(m) = &f else { panic!("{f:?}") };
        assert_eq!((m[0].as_i64(), m[1].as_i64(), m[2].as_i64(), m[4].as_i64()), (Some(1), Some(5), Some(-3), Some(9)));

        // Passed by value.
        let sum = lib.declare(&decls, "flags_sum").unwrap();
        assert_eq!(
            sum.call(std::slice::from_ref(&f)).unwrap().ret.as_i64().unwrap().to_string(),
            c["flags_sum"],
            "{b:?}"
        );

        // Through a pointer, written by the library.
        let bump = lib.declare(&decls, "bump_flags").unwrap();
        let after = bump.call(&[f]).unwrap().out(0).cloned().unwrap();
        assert_eq!(
            bitbridge::proto::encode_value(&target, &flags_ty, &after).unwrap(),
            unhex(&c["bump_flags"]),
            "{b:?}"
        );
        assert_eq!(sum.call(&[after]).unwrap().ret.as_i64().unwrap().to_string(), c["flags_sum_bumped"]);

        // A 40-bit signed long long bit-field after a char, and a 7-bit one after it.
        let wide_ty = decls.type_named("struct wide").unwrap().clone();
        let make = lib.declare(&decls, "make_wide").unwrap();
        let w = make.call(&[(-549_755_813_887i64).into(), 100u32.into()]).unwrap().ret;
        assert_eq!(bitbridge::proto::encode_value(&target, &wide_ty, &w).unwrap(), unhex(&c["make_wide"]), "{b:?}");
        assert_eq!(w.get(1), Some(&Value::Int(-549_755_813_887)));
        let big = lib.declare(&decls, "wide_big").unwrap();
        assert_eq!(big.call(&[w]).unwrap().ret.as_i64().unwrap().to_string(), c["wide_big"], "{b:?}");

        // A value that does not fit its bits is refused, naming the member and the range.
        let e = lib.declare(&decls, "flags_sum").unwrap().call(&[Value::Struct(vec![
            1.into(),
            8.into(),
            0.into(),
            0.into(),
            0.into(),
        ])]);
        match e {
            Err(e @ Error::Argument { .. }) => {
                assert!(e.to_string().contains(".mode: 8 does not fit in `unsigned int : 3` (0..=7)"), "{e}")
            }
            other => panic!("{other:?}"),
        }

        // The header's one unsupported construct fails only the function that uses it, when declared.
        match lib.declare(&decls, "flex_first") {
            Err(e @ Error::Declaration { .. }) => {
                let m = e.to_string();
                assert!(m.contains("flexible array member"), "{m}");
                assert!(m.contains("bitfields.h:58"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn msvc_rules_match_microsofts_documented_examples() {
    use bitbridge::Field;
    let us = CType::UShort;
    // "C Bit Fields" (Microsoft Learn): nWeekDay:3, nMonthDay:6, nMonth:5 share one unsigned short;
    // nYear:8 does not fit in the 2 bits left, so it starts the next one: 4 bytes.
    let date = CType::struct_of(
        "Date",
        vec![
            Field::bit_field("nWeekDay", us.clone(), 3),
            Field::bit_field("nMonthDay", us.clone(), 6),
            Field::bit_field("nMonth", us.clone(), 5),
            Field::bit_field("nYear", us.clone(), 8),
        ],
        None,
    );
    for t in [Target::WIN32, Target::WIN64] {
        let l = t.aggregate_layout(&date).unwrap().unwrap();
        assert_eq!((l.layout.size, l.layout.align), (4, 2), "{t}");
        assert_eq!(l.bit_offsets, [Some(0), Some(3), Some(9), Some(16)]);
    }
    // gcc packs across the unit instead: nYear starts at bit 14.
    let l = Target::X86_64_SYSV.aggregate_layout(&date).unwrap().unwrap();
    assert_eq!(l.bit_offsets[3], Some(16), "gcc too: 14 + 8 would span two unsigned shorts");

    // MSVC: a bit-field of a type of another size starts a new unit; gcc shares the storage.
    let mixed = CType::struct_of(
        "M",
        vec![Field::bit_field("a", CType::UChar, 3), Field::bit_field("b", CType::UInt, 3)],
        None,
    );
    let w = Target::WIN64.aggregate_layout(&mixed).unwrap().unwrap();
    assert_eq!((w.layout.size, w.bit_offsets.clone()), (8, vec![Some(0), Some(32)]));
    let g = Target::X86_64_SYSV.aggregate_layout(&mixed).unwrap().unwrap();
    assert_eq!((g.layout.size, g.bit_offsets), (4, vec![Some(0), Some(3)]));

    // MSVC: `int : 0` closes the unit; the next bit-field starts a new one.
    let zero = CType::struct_of(
        "Z",
        vec![
            Field::bit_field("a", CType::Int, 3),
            Field::bit_field("", CType::Int, 0),
            Field::bit_field("b", CType::Int, 3),
        ],
        None,
    );
    let w = Target::WIN32.aggregate_layout(&zero).unwrap().unwrap();
    assert_eq!((w.layout.size, w.bit_offsets[2]), (8, Some(32)));
}
