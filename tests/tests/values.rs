//! Every scalar type at its limits, unions and packed structs by value, long double, strings, handles,
//! NULL, out-pointers, pointers inside structs and calling conventions, through every backend.

use bitbridge::{CType, CallConv, ExtF80, Signature, Value};
use bitbridge_tests::{Backend, BACKENDS};

fn id(lib: &bitbridge::Library, name: &str, ty: CType, v: Value) -> Value {
    let f = lib.function(&format!("id_{name}"), Signature::new(ty.clone()).arg(ty)).unwrap();
    f.call(std::slice::from_ref(&v)).unwrap_or_else(|e| panic!("id_{name}({v:?}): {e:#?}")).ret
}

#[test]
fn every_scalar_type_at_its_limits() {
    let _check = bitbridge_tests::no_server_left();
    for b in BACKENDS {
        let lib = b.open("edge");
        let long_bits = if b.is_32() { 32 } else { 64 };
        let ints: Vec<(&str, CType, i128, i128)> = vec![
            ("char", CType::Char, -128, 127),
            ("schar", CType::SChar, -128, 127),
            ("uchar", CType::UChar, 0, 255),
            ("wchar", CType::WChar, i32::MIN.into(), i32::MAX.into()),
            ("short", CType::Short, i16::MIN.into(), i16::MAX.into()),
            ("ushort", CType::UShort, 0, u16::MAX.into()),
            ("int", CType::Int, i32::MIN.into(), i32::MAX.into()),
            ("uint", CType::UInt, 0, u32::MAX.into()),
            ("long", CType::Long, -(1i128 << (long_bits - 1)), (1i128 << (long_bits - 1)) - 1),
            ("ulong", CType::ULong, 0, (1i128 << long_bits) - 1),
            ("longlong", CType::LongLong, i64::MIN.into(), i64::MAX.into()),
            ("ulonglong", CType::ULongLong, 0, u64::MAX.into()),
            ("i8", CType::I8, i8::MIN.into(), i8::MAX.into()),
            ("u8", CType::U8, 0, u8::MAX.into()),
            ("i16", CType::I16, i16::MIN.into(), i16::MAX.into()),
            ("u16", CType::U16, 0, u16::MAX.into()),
            ("i32", CType::I32, i32::MIN.into(), i32::MAX.into()),
            ("u32", CType::U32, 0, u32::MAX.into()),
            ("i64", CType::I64, i64::MIN.into(), i64::MAX.into()),
            ("u64", CType::U64, 0, u64::MAX.into()),
            ("size", CType::SizeT, 0, (1i128 << long_bits) - 1),
            ("ssize", CType::SSizeT, -(1i128 << (long_bits - 1)), (1i128 << (long_bits - 1)) - 1),
        ];
        for (name, ty, min, max) in ints {
            for n in [min, max, 0, 1] {
                let v = if n < 0 { Value::Int(n as i64) } else { Value::UInt(n as u64) };
                let got = id(&lib, name, ty.clone(), v);
                let got = match got {
                    Value::Int(i) => i128::from(i),
                    Value::UInt(u) => i128::from(u),
                    other => panic!("{name}: {other:?}"),
                };
                assert_eq!(got, n, "{b:?} {name}");
            }
            // One past either end is refused before anything is sent, naming the argument and type.
            let f = lib.function(&format!("id_{name}"), Signature::new(ty.clone()).arg(ty.clone())).unwrap();
            // A plain `char` also takes the bytes 128..=255, as C code writes them.
            let too_big = Value::UInt(if name == "char" { 256 } else { (max + 1) as u64 });
            if max < u64::MAX as i128 {
                let e = f.call(&[too_big]).unwrap_err();
                let msg = format!("{:#}", anyhowish(&e));
                assert!(msg.contains("argument 1") && msg.contains("does not fit"), "{msg}");
            }
            if min < 0 {
                assert!(
                    f.call(&[Value::Int((min - 1).max(i64::MIN as i128) as i64)]).is_err() || min == i64::MIN as i128
                );
            } else {
                assert!(f.call(&[Value::Int(-1)]).is_err(), "{name} takes no negative numbers");
            }
        }
        assert_eq!(id(&lib, "bool", CType::Bool, true.into()), Value::Bool(true));
        assert_eq!(id(&lib, "bool", CType::Bool, false.into()), Value::Bool(false));
        for x in [0.0, -1.5, f32::MAX as f64, f32::MIN_POSITIVE as f64, f64::from(f32::INFINITY)] {
            assert_eq!(id(&lib, "float", CType::Float, x.into()), Value::Float(x), "{b:?}");
        }
        for x in [0.0, -1.5, f64::MAX, f64::MIN_POSITIVE, 5e-324, f64::NEG_INFINITY] {
            assert_eq!(id(&lib, "double", CType::Double, x.into()), Value::Float(x), "{b:?}");
        }
        assert!(id(&lib, "double", CType::Double, f64::NAN.into()).as_f64().unwrap().is_nan());
        for x in [0.0, 1.0 / 3.0, -1e300, f64::MAX] {
            assert_eq!(id(&lib, "longdouble", CType::LongDouble, x.into()), Value::LongDouble(ExtF80::from_f64(x)));
        }
        let maxp = if b.is_32() { u32::MAX as u64 } else { u64::MAX };
        assert_eq!(id(&lib, "ptr", CType::void_ptr(), Value::Pointer(maxp)), Value::Pointer(maxp));
        if b.is_32() {
            // A 64-bit address cannot reach a 32-bit server.
            let f = lib.function("id_ptr", Signature::new(CType::void_ptr()).arg(CType::void_ptr())).unwrap();
            assert!(f.call(&[Value::Pointer(1 << 32)]).is_err());
        }
        let sizeof_long = lib.function("sizeof_long", Signature::new(CType::Int)).unwrap();
        assert_eq!(sizeof_long.call(&[]).unwrap().ret, Value::Int(long_bits / 8), "{b:?}");
    }
}

/// Formats an error with its sources, as `{:#}` of anyhow would.
fn anyhowish(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s += &format!(": {c}");
        cur = c.source();
    }
    s
}

#[test]
fn many_mixed_arguments_and_long_double() {
    let _check = bitbridge_tests::no_server_left();
    for b in BACKENDS {
        let lib = b.open("edge");
        let sig = Signature::new(CType::Double)
            .arg(CType::Char)
            .arg(CType::Short)
            .arg(CType::Int)
            .arg(CType::LongLong)
            .arg(CType::Float)
            .arg(CType::Double)
            .arg(CType::LongDouble)
            .arg(CType::UChar)
            .arg(CType::Long)
            .arg(CType::Double)
            .arg(CType::Int)
            .arg(CType::Float)
            .arg(CType::Double)
            .arg(CType::Int);
        let mix = lib.function("mix", sig).unwrap();
        let args: Vec<Value> = vec![
            (-1).into(),
            (-2).into(),
            3.into(),
            (1i64 << 40).into(),
            0.5.into(),
            0.25.into(),
            0.125.into(),
            200u8.into(),
            (-7).into(),
            8.0.into(),
            9.into(),
            10.0.into(),
            11.0.into(),
            12.into(),
        ];
        let want =
            -1.0 - 2.0 + 3.0 + (1u64 << 40) as f64 + 0.5 + 0.25 + 0.125 + 200.0 - 7.0 + 8.0 + 9.0 + 10.0 + 11.0 + 12.0;
        assert_eq!(mix.call(&args).unwrap().ret, Value::Float(want), "{b:?}");

        let third = lib.function("ld_third", Signature::new(CType::LongDouble)).unwrap();
        let t = third.call(&[]).unwrap().ret;
        let Value::LongDouble(x) = t else { panic!("{t:?}") };
        // 1/3 in 64 mantissa bits: 0xAAAA_AAAA_AAAA_AAAB, exponent 0x3FFD. A double has only 53 bits.
        assert_eq!(x.0, [0xab, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xfd, 0x3f], "{b:?}");
        let mul = lib
            .function("ld_mul", Signature::new(CType::LongDouble).arg(CType::LongDouble).arg(CType::LongDouble))
            .unwrap();
        // The full-precision value goes back in unchanged: (1/3) * 3 rounds to exactly 1 in x87.
        assert_eq!(mul.call(&[Value::LongDouble(x), 3.into()]).unwrap().ret.as_f64(), Some(1.0));
    }
}

#[test]
fn unions_and_packed_structs_by_value() {
    let _check = bitbridge_tests::no_server_left();
    let u = CType::union(
        "U",
        [("i", CType::Int), ("f", CType::Float), ("d", CType::Double), ("c", CType::array(CType::Char, 12))],
    );
    let fd = CType::union("FD", [("f", CType::Float), ("d", CType::Double)]);
    for b in BACKENDS {
        let lib = b.open("edge");
        let make = lib.function("u_make", Signature::new(u.clone()).arg(CType::Int)).unwrap();
        let Value::Union(views) = make.call(&[0.into()]).unwrap().ret else { panic!() };
        assert_eq!(views[0], Value::Int(-42), "{b:?}");
        let Value::Union(views) = make.call(&[1.into()]).unwrap().ret else { panic!() };
        assert_eq!(views[2], Value::Float(2.5), "{b:?}");
        let Value::Union(views) = make.call(&[2.into()]).unwrap().ret else { panic!() };
        assert_eq!(views[3].as_str(), Some("hello union"), "{b:?}");

        let read = lib.function("u_read", Signature::new(CType::Double).arg(u.clone()).arg(CType::Int)).unwrap();
        assert_eq!(
            read.call(&[Value::Variant(0, Box::new(Value::Int(-9))), 0.into()]).unwrap().ret,
            Value::Float(-9.0)
        );
        assert_eq!(read.call(&[Value::Variant(2, Box::new(1e10.into())), 1.into()]).unwrap().ret, Value::Float(1e10));
        assert_eq!(read.call(&[Value::Variant(3, Box::new("four".into())), 2.into()]).unwrap().ret, Value::Float(4.0));

        // A float-only union travels in SSE registers on x86_64.
        let fdm = lib.function("fd_make", Signature::new(fd.clone()).arg(CType::Double)).unwrap();
        let Value::Union(views) = fdm.call(&[6.25.into()]).unwrap().ret else { panic!() };
        assert_eq!(views[1], Value::Float(6.25), "{b:?}");
        let twice = lib.function("fd_twice", Signature::new(CType::Double).arg(fd.clone())).unwrap();
        assert_eq!(twice.call(&[Value::Variant(1, Box::new(4.5.into()))]).unwrap().ret, Value::Float(9.0), "{b:?}");
        let wu = CType::structure("WithUnion", [("tag", CType::Char), ("v", fd.clone()), ("s", CType::Short)]);
        let wsum = lib.function("wu_sum", Signature::new(CType::Double).arg(wu)).unwrap();
        let v = Value::Struct(vec![1.into(), Value::Variant(1, Box::new(0.5.into())), 100.into()]);
        assert_eq!(wsum.call(&[v]).unwrap().ret, Value::Float(101.5), "{b:?}");

        let packed = CType::packed_structure("Packed", 1, [("c", CType::Char), ("i", CType::Int), ("s", CType::Short)]);
        let pv = Value::Struct(vec![10.into(), 1000.into(), (-1).into()]);
        // By pointer, a packed struct works everywhere.
        let by_ptr =
            lib.function("packed_sum_ptr", Signature::new(CType::Int).arg(CType::ptr(packed.clone()))).unwrap();
        assert_eq!(by_ptr.call(std::slice::from_ref(&pv)).unwrap().ret, Value::Int(1009), "{b:?}");
        // By value: i386 passes it in memory like any struct; x86_64 would need a MEMORY class that
        // libffi cannot express for a 7-byte struct, so bitbridge refuses it with a clear error.
        let by_val = lib.function("packed_sum", Signature::new(CType::Int).arg(packed.clone()));
        let make = lib.function("packed_make", Signature::new(packed.clone()).arg(CType::Int));
        if b.is_32() {
            assert_eq!(by_val.unwrap().call(&[pv]).unwrap().ret, Value::Int(1009));
            let r = make.unwrap().call(&[77.into()]).unwrap().ret;
            assert_eq!(r, Value::Struct(vec![Value::Int(b'x' as i64), Value::Int(77), Value::Int(-3)]));
        } else {
            let e = by_val.unwrap_err();
            assert!(matches!(&e, bitbridge::Error::Signature { message, .. } if message.contains("unaligned")), "{e}");
        }
        let pa = CType::packed_structure("PackedAligned", 1, [("a", CType::Short), ("b", CType::Short)]);
        let pa_sum = lib.function("pa_sum", Signature::new(CType::Int).arg(pa)).unwrap();
        assert_eq!(pa_sum.call(&[Value::Struct(vec![(-5).into(), 12.into()])]).unwrap().ret, Value::Int(7), "{b:?}");

        let ldu = CType::union("LDU", [("ld", CType::LongDouble), ("c", CType::array(CType::Char, 20))]);
        let ldu_get = lib.function("ldu_get", Signature::new(CType::Double).arg(ldu)).unwrap();
        let r = ldu_get.call(&[Value::Variant(0, Box::new(Value::Float(-7.25)))]).unwrap().ret;
        assert_eq!(r, Value::Float(-7.25), "{b:?}");

        let ld = CType::structure("LD", [("c", CType::Char), ("x", CType::LongDouble)]);
        let ld_get = lib.function("ld_get", Signature::new(CType::LongDouble).arg(ld)).unwrap();
        let r = ld_get.call(&[Value::Struct(vec![2.into(), 0.5.into()])]).unwrap().ret;
        assert_eq!(r.as_f64(), Some(2.5), "{b:?}");

        let small = CType::structure("Small", [("c", CType::Char), ("s", CType::Short), ("i", CType::Int)]);
        let sm = lib
            .function("small_make", Signature::new(small).arg(CType::Char).arg(CType::Short).arg(CType::Int))
            .unwrap();
        let r = sm.call(&[(-3).into(), 300.into(), (-70000).into()]).unwrap().ret;
        assert_eq!(r, Value::Struct(vec![(-3).into(), 300.into(), (-70000).into()]), "{b:?}");

        let pt = CType::structure("Pt", [("x", CType::Double), ("y", CType::Double)]);
        let poly = CType::structure("Poly", [("n", CType::Int), ("pts", CType::array(pt, 4))]);
        let psum = lib.function("poly_sumx", Signature::new(CType::Double).arg(poly)).unwrap();
        let p = |x: f64| Value::Struct(vec![x.into(), 0.0.into()]);
        let v = Value::Struct(vec![3.into(), Value::Array(vec![p(1.0), p(2.0), p(4.0), p(100.0)])]);
        assert_eq!(psum.call(&[v]).unwrap().ret, Value::Float(7.0), "{b:?}");
    }
}

#[test]
fn strings_wide_strings_and_null() {
    let _check = bitbridge_tests::no_server_left();
    for b in BACKENDS {
        let lib = b.open("edge");
        let greet = lib.function("greet", Signature::new(CType::CStr)).unwrap();
        assert_eq!(greet.call(&[]).unwrap().ret, Value::from("hello from C"));
        let maybe = lib.function("maybe_null", Signature::new(CType::CStr).arg(CType::Int)).unwrap();
        assert_eq!(maybe.call(&[1.into()]).unwrap().ret, Value::from("yes"));
        assert_eq!(maybe.call(&[0.into()]).unwrap().ret, Value::NULL);
        let len = lib.function("str_len", Signature::new(CType::SizeT).arg(CType::CStr)).unwrap();
        assert_eq!(len.call(&["héllo".into()]).unwrap().ret, Value::UInt(6));
        let all_ones = if b.is_32() { u32::MAX as u64 } else { u64::MAX };
        assert_eq!(len.call(&[Value::NULL]).unwrap().ret, Value::UInt(all_ones), "{b:?}");

        let wlen = lib.function("wstr_len", Signature::new(CType::SizeT).arg(CType::WStr)).unwrap();
        assert_eq!(wlen.call(&["grüß ☺".into()]).unwrap().ret, Value::UInt(6), "{b:?}");
        let wgreet = lib.function("wgreet", Signature::new(CType::WStr)).unwrap();
        assert_eq!(wgreet.call(&[]).unwrap().ret, Value::from("grüß dich ☺"), "{b:?}");
        let wupper = lib.function("wupper", Signature::new(CType::Void).arg_inout(CType::ptr(CType::WChar))).unwrap();
        assert_eq!(wupper.call(&["abc ☺ é".into()]).unwrap().out(0), Some(&Value::from("ABC ☺ é")));

        // char** out: the library stores a pointer to its own string, which is read in the server after
        // the call (a `char *` the library writes is a string). The out slot is one zeroed element.
        let make = lib
            .function("make_string", Signature::new(CType::Void).arg_out(CType::ptr(CType::ptr(CType::Char))))
            .unwrap();
        let out = make.call(&[Value::Zeros(1)]).unwrap();
        assert_eq!(out.out(0).and_then(|v| v.get(0)), Some(&Value::from("made in C")), "{b:?}");
        // Declared `void **`, the same pointer is an address (void says nothing of what it points to).
        let make =
            lib.function("make_string", Signature::new(CType::Void).arg_out(CType::ptr(CType::void_ptr()))).unwrap();
        let out = make.call(&[Value::Zeros(1)]).unwrap();
        let addr = match out.out(0).and_then(|v| v.get(0)) {
            Some(Value::Pointer(a)) => *a,
            other => panic!("{other:?}"),
        };
        assert_eq!(lib.server().read_cstring(addr).unwrap(), b"made in C");

        let is_null = lib.function("is_null", Signature::new(CType::Int).arg(CType::void_ptr())).unwrap();
        assert_eq!(is_null.call(&[Value::NULL]).unwrap().ret, Value::Int(1));
        assert_eq!(is_null.call(&[Value::Bytes(vec![1, 2, 3])]).unwrap().ret, Value::Int(0));
    }
}

#[test]
fn out_pointers_handles_and_pointers_inside_structs() {
    let _check = bitbridge_tests::no_server_left();
    for b in BACKENDS {
        let lib = b.open("edge");
        let get_two = lib
            .function(
                "get_two",
                Signature::new(CType::Void).arg_out(CType::ptr(CType::Int)).arg_out(CType::ptr(CType::Double)),
            )
            .unwrap();
        let r = get_two.call(&[Value::Int(0), Value::Float(0.0)]).unwrap();
        assert_eq!((r.out(0), r.out(1)), (Some(&Value::Int(7)), Some(&Value::Float(2.5))), "{b:?}");
        let inc = lib
            .function("inc_all", Signature::new(CType::Void).arg_inout(CType::ptr(CType::Int)).arg(CType::Int))
            .unwrap();
        let r = inc.call(&[Value::ints([1, -1, 41]), 3.into()]).unwrap();
        assert_eq!(r.out(0), Some(&Value::ints([2, 0, 42])));

        // Opaque handles: a pointer the library returns and later takes back.
        let new =
            lib.function("counter_new", Signature::new(CType::void_ptr()).arg(CType::Int).arg(CType::Int)).unwrap();
        let next = lib.function("counter_next", Signature::new(CType::Int).arg(CType::void_ptr())).unwrap();
        let free = lib.function("counter_free", Signature::new(CType::Void).arg(CType::void_ptr())).unwrap();
        let h = new.call(&[10.into(), 5.into()]).unwrap().ret;
        assert!(h.as_pointer().unwrap() != 0);
        let vals: Vec<Value> = (0..3).map(|_| next.call(std::slice::from_ref(&h)).unwrap().ret).collect();
        assert_eq!(vals, [Value::Int(10), Value::Int(15), Value::Int(20)], "{b:?}");
        free.call(&[h]).unwrap();

        // A pointer member: the array it points to is copied in, and (InOut) back out, nested.
        let buf = CType::structure("Buf", [("n", CType::Int), ("data", CType::ptr(CType::Int))]);
        let sum = lib.function("buf_sum", Signature::new(CType::Int).arg(CType::ptr(buf.clone()))).unwrap();
        let v = Value::Struct(vec![4.into(), Value::ints([1, 2, 3, 4])]);
        assert_eq!(sum.call(&[v]).unwrap().ret, Value::Int(10), "{b:?}");
        let sq = lib.function("buf_squares", Signature::new(CType::Void).arg_inout(CType::ptr(buf.clone()))).unwrap();
        let r = sq.call(&[Value::Struct(vec![5.into(), Value::Zeros(5)])]).unwrap();
        assert_eq!(r.out(0), Some(&Value::Struct(vec![5.into(), Value::ints([0, 1, 4, 9, 16])])), "{b:?}");
        let by_val = lib.function("buf_sum_val", Signature::new(CType::Int).arg(buf)).unwrap();
        assert_eq!(by_val.call(&[Value::Struct(vec![2.into(), Value::ints([20, 22])])]).unwrap().ret, Value::Int(42));

        // Memory the library keeps across calls: explicit server memory, written, kept, read, freed.
        let srv = lib.server();
        let arr = CType::array(CType::Int, 3);
        let mem = srv.alloc_value(&arr, &Value::ints([5, 6, 7])).unwrap();
        let keep =
            lib.function("keep", Signature::new(CType::Void).arg(CType::ptr(CType::Int)).arg(CType::Int)).unwrap();
        let kept_sum = lib.function("kept_sum", Signature::new(CType::Int)).unwrap();
        keep.call(&[Value::Pointer(mem), 3.into()]).unwrap();
        assert_eq!(kept_sum.call(&[]).unwrap().ret, Value::Int(18));
        srv.write(mem, &100i32.to_le_bytes()).unwrap();
        assert_eq!(kept_sum.call(&[]).unwrap().ret, Value::Int(113), "{b:?}");
        assert_eq!(srv.read_value(mem, &arr).unwrap(), Value::ints([100, 6, 7]));
        keep.call(&[Value::NULL, 0.into()]).unwrap();
        srv.free(mem).unwrap();
        assert!(srv.free(mem).is_err(), "a double free is an error, not a crash");
        assert!(srv.read(8, 16).is_err(), "an unmapped address is an error, not a crash");
    }
}

#[test]
fn calling_conventions_on_i386() {
    let _check = bitbridge_tests::no_server_left();
    let lib = Backend::Server32.open("edge");
    let sub = |conv| Signature::new(CType::Int).arg(CType::Int).arg(CType::Int).conv(conv);
    let std_sub = lib.function("std_sub", sub(CallConv::Stdcall)).unwrap();
    let fast_sub = lib.function("fast_sub", sub(CallConv::Fastcall)).unwrap();
    for _ in 0..3 {
        // Repeated: a callee-pops mismatch would corrupt the stack on the second call.
        assert_eq!(std_sub.call(&[50.into(), 8.into()]).unwrap().ret, Value::Int(42));
        assert_eq!(fast_sub.call(&[50.into(), 8.into()]).unwrap().ret, Value::Int(42));
    }
    // On x86_64 there is one convention; asking for stdcall is an error naming the target.
    let lib64 = Backend::Server64.open("edge");
    let e = lib64.function("id_int", sub(CallConv::Stdcall)).unwrap_err();
    assert!(matches!(e, bitbridge::Error::Signature { .. }), "{e}");
}
