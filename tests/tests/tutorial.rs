//! The ctypes tutorial functions, msl-loadlib's C++ example and the 32-bit libm, called through the
//! 32-bit server, the 64-bit server, and in-process as the reference.

use bitbridge::{Arch, CType, Library, Signature, Value};
use bitbridge_tests::{Backend, BACKENDS};

fn complex() -> CType {
    CType::structure("Complex", [("re", CType::Double), ("im", CType::Double)])
}

fn cx(re: f64, im: f64) -> Value {
    Value::Struct(vec![Value::Float(re), Value::Float(im)])
}

#[test]
fn struct_by_value_in_and_out() {
    let _check = bitbridge_tests::no_server_left();
    for b in BACKENDS {
        let lib = b.open("ctest");
        let add = lib.function("add", Signature::new(complex()).arg(complex()).arg(complex())).unwrap();
        let r = add.call(&[cx(1.5, -2.0), cx(0.25, 10.0)]).unwrap();
        assert_eq!(r.ret, cx(1.75, 8.0), "{b:?}");
    }
}

#[test]
fn swap_through_inout_pointers() {
    let _check = bitbridge_tests::no_server_left();
    for b in BACKENDS {
        let lib = b.open("ctest");
        let sig = Signature::new(CType::Void).arg_inout(CType::ptr(complex())).arg_inout(CType::ptr(complex()));
        let swap = lib.function("swap", sig).unwrap();
        let r = swap.call(&[cx(1.0, 2.0), cx(3.0, 4.0)]).unwrap();
        assert_eq!(r.ret, Value::Void);
        assert_eq!(r.out(0), Some(&cx(3.0, 4.0)), "{b:?}");
        assert_eq!(r.out(1), Some(&cx(1.0, 2.0)), "{b:?}");
    }
}

#[test]
fn sum_of_an_array() {
    let _check = bitbridge_tests::no_server_left();
    for b in BACKENDS {
        let lib = b.open("ctest");
        let sum =
            lib.function("sum", Signature::new(CType::Double).arg(CType::ptr(CType::Double)).arg(CType::Int)).unwrap();
        let xs: Vec<f64> = (1..=1000).map(f64::from).collect();
        let r = sum.call(&[Value::f64s(xs), Value::Int(1000)]).unwrap();
        assert_eq!(r.ret, Value::Float(500500.0), "{b:?}");
        // In-only memory is not copied back.
        assert_eq!(r.out(0), None);
    }
}

#[test]
fn titlecase_a_buffer_in_place() {
    let _check = bitbridge_tests::no_server_left();
    for b in BACKENDS {
        let lib = b.open("ctest");
        let f = lib.function("titlecase", Signature::new(CType::Void).arg_inout(CType::ptr(CType::Char))).unwrap();
        let r = f.call(&[Value::from("hello big wide world")]).unwrap();
        assert_eq!(r.out(0).and_then(Value::as_str), Some("Hello Big Wide World"), "{b:?}");
        // As raw bytes, the buffer comes back whole, NUL included.
        let r = f.call(&[Value::Bytes(b"abc def\0".to_vec())]).unwrap();
        assert_eq!(r.out(0), Some(&Value::Bytes(b"Abc Def\0".to_vec())));
    }
}

#[test]
fn tokenize_into_an_array_of_fixed_size_strings() {
    let _check = bitbridge_tests::no_server_left();
    for b in BACKENDS {
        let lib = b.open("ctest");
        let sig = Signature::new(CType::Int)
            .arg(CType::Char)
            .arg(CType::CStr)
            .arg_out(CType::ptr(CType::array(CType::Char, 20)));
        let f = lib.function("tokenize", sig).unwrap();
        let r = f.call(&[Value::Bytes(vec![b',']), Value::from("alpha,beta,,gamma delta"), Value::Zeros(10)]).unwrap();
        assert_eq!(r.ret, Value::Int(4), "{b:?}");
        let toks: Vec<&str> = r.out(2).unwrap().as_slice().unwrap()[..4].iter().map(|t| t.as_str().unwrap()).collect();
        assert_eq!(toks, ["alpha", "beta", "", "gamma delta"]);
    }
}

#[test]
fn multiply_two_dimensional_arrays() {
    let _check = bitbridge_tests::no_server_left();
    let row = |v: Vec<f64>| Value::f64s(v);
    for b in BACKENDS {
        let lib = b.open("ctest");
        let m = CType::ptr(CType::array(CType::Double, 100));
        let sig = Signature::new(CType::Void)
            .arg(m.clone())
            .arg(m.clone())
            .arg_out(m)
            .arg(CType::Int)
            .arg(CType::Int)
            .arg(CType::Int);
        let f = lib.function("mult", sig).unwrap();
        // (2x3) . (3x2)
        let a = Value::Array(vec![row(vec![1.0, 2.0, 3.0]), row(vec![4.0, 5.0, 6.0])]);
        let bm = Value::Array(vec![row(vec![7.0, 8.0]), row(vec![9.0, 10.0]), row(vec![11.0, 12.0])]);
        let r = f.call(&[a, bm, Value::Zeros(2), 2.into(), 3.into(), 2.into()]).unwrap();
        let c = r.out(2).unwrap().as_slice().unwrap();
        let c: Vec<Vec<f64>> = c.iter().map(|row| row.to_f64_vec().unwrap()[..2].to_vec()).collect();
        assert_eq!(c, vec![vec![58.0, 64.0], vec![139.0, 154.0]], "{b:?}");
    }
}

/// `void scalar_multiply(double a, double *xin, int n, double *xout)` of fixtures/cpp_lib.cpp.
fn scalar_multiply(lib: &Library) -> bitbridge::Function {
    let sig = Signature::new(CType::Void)
        .arg(CType::Double)
        .arg(CType::ptr(CType::Double))
        .arg(CType::Int)
        .arg_out(CType::ptr(CType::Double));
    lib.function("scalar_multiply", sig).unwrap()
}

#[test]
fn msl_loadlib_cpp_example() {
    let _check = bitbridge_tests::no_server_left();
    for b in BACKENDS {
        let lib = b.open("cpp_lib");
        let f = |name, sig| lib.function(name, sig).unwrap();
        let add = f("add", Signature::new(CType::Int).arg(CType::Int).arg(CType::Int));
        assert_eq!(add.call(&[Value::Int(i32::MAX as i64 - 1), 1.into()]).unwrap().ret, Value::Int(i32::MAX as i64));
        let sub = f("subtract", Signature::new(CType::Float).arg(CType::Float).arg(CType::Float));
        assert_eq!(sub.call(&[Value::Float(44.5), Value::Float(0.25)]).unwrap().ret, Value::Float(44.25));
        let aos =
            f("add_or_subtract", Signature::new(CType::Double).arg(CType::Double).arg(CType::Double).arg(CType::Bool));
        assert_eq!(aos.call(&[1.0.into(), 2.0.into(), true.into()]).unwrap().ret, Value::Float(3.0));
        assert_eq!(aos.call(&[1.0.into(), 2.0.into(), false.into()]).unwrap().ret, Value::Float(-1.0));

        let sm = scalar_multiply(&lib);
        let r = sm.call(&[2.0.into(), Value::f64s([1.0, 2.0, 3.5]), 3.into(), Value::Zeros(3)]).unwrap();
        assert_eq!(r.out(3).unwrap().to_f64_vec().unwrap(), [2.0, 4.0, 7.0], "{b:?}");

        // Into a caller's buffer...
        let v1 = f(
            "reverse_string_v1",
            Signature::new(CType::Void).arg(CType::CStr).arg(CType::Int).arg_out(CType::ptr(CType::Char)),
        );
        let r = v1.call(&[Value::from("abcdefg"), 7.into(), Value::Zeros(8)]).unwrap();
        assert_eq!(r.out(2).unwrap().as_str(), Some("gfedcba"));
        // ...and into library-allocated memory, read back as a string (char* return) ...
        let v2 = f("reverse_string_v2", Signature::new(CType::CStr).arg(CType::CStr).arg(CType::Int));
        assert_eq!(v2.call(&[Value::from("bitbridge"), 9.into()]).unwrap().ret, Value::from("egdirbtib"));
        // ... or kept as an address, read, and freed by the library.
        let v2p = f("reverse_string_v2", Signature::new(CType::ptr(CType::Char)).arg(CType::CStr).arg(CType::Int));
        let addr = v2p.call(&[Value::from("xyz"), 3.into()]).unwrap().ret.as_pointer().unwrap();
        assert_eq!(lib.server().read_cstring(addr).unwrap(), b"zyx");
        f("free_string", Signature::new(CType::Void).arg(CType::void_ptr())).call(&[Value::Pointer(addr)]).unwrap();

        let point = CType::structure("Point", [("x", CType::Double), ("y", CType::Double)]);
        let pt = |x: f64, y: f64| Value::Struct(vec![x.into(), y.into()]);
        let four = CType::structure("FourPoints", [("points", CType::array(point.clone(), 4))]);
        let d4 = f("distance_4_points", Signature::new(CType::Double).arg(four));
        let square = Value::Struct(vec![Value::Array(vec![pt(0.0, 0.0), pt(0.0, 1.0), pt(1.0, 1.0), pt(1.0, 0.0)])]);
        assert_eq!(d4.call(&[square]).unwrap().ret, Value::Float(4.0), "{b:?}");

        // A struct holding a pointer to an array of points, by value: the points are copied to the
        // server for the call and the pointer member set to their address.
        let npoints = CType::structure("NPoints", [("n", CType::Int), ("points", CType::ptr(point.clone()))]);
        let dn = f("distance_n_points", Signature::new(CType::Double).arg(npoints.clone()));
        let tri = Value::Array(vec![pt(0.0, 0.0), pt(3.0, 0.0), pt(3.0, 4.0)]);
        assert_eq!(dn.call(&[Value::Struct(vec![3.into(), tri.clone()])]).unwrap().ret, Value::Float(12.0), "{b:?}");
        // The same with explicit server memory: allocate, write, pass the address, free.
        let srv = lib.server();
        let pts = srv.alloc_value(&CType::array(point, 3), &tri).unwrap();
        let r = dn.call(&[Value::Struct(vec![3.into(), Value::Pointer(pts)])]).unwrap();
        assert_eq!(r.ret, Value::Float(12.0));
        srv.free(pts).unwrap();
    }
}

fn libm(b: Backend) -> Library {
    bitbridge_tests::system_library("libm.so.6", b)
}

#[test]
fn the_systems_libm() {
    let _check = bitbridge_tests::no_server_left();
    for b in BACKENDS {
        let m = libm(b);
        if b.is_32() {
            assert_eq!(m.server().target().arch, Arch::X86);
            // By name, resolved by the i686 server's own loader: a 32-bit file.
            let file = m.file().expect("the file the server loaded");
            assert_eq!(bitbridge::inspect(file).unwrap().arch, Arch::X86, "{}", file.display());
        }
        let d = || Signature::new(CType::Double).arg(CType::Double);
        let sin = m.function("sin", d()).unwrap();
        let cos = m.function("cos", d()).unwrap();
        let pow = m.function("pow", d().arg(CType::Double)).unwrap();
        let x = 0.5f64;
        assert_eq!(sin.call(&[x.into()]).unwrap().ret.as_f64().unwrap(), x.sin(), "{b:?}");
        assert_eq!(cos.call(&[x.into()]).unwrap().ret.as_f64().unwrap(), x.cos(), "{b:?}");
        assert_eq!(pow.call(&[2.0.into(), 10.0.into()]).unwrap().ret, Value::Float(1024.0));
    }
}

#[test]
fn bulk_arrays_in_every_direction() {
    let _check = bitbridge_tests::no_server_left();
    for b in BACKENDS {
        let lib = b.open("cpp_lib");
        let n = 300_000usize; // 2.4 MB of doubles: through the shared arena on shared-memory connections
        let sm = scalar_multiply(&lib);
        let xs: Vec<u8> = (0..n).flat_map(|i| (i as f64).to_le_bytes()).collect();
        let r = sm.call(&[3.0.into(), Value::Bytes(xs), (n as i64).into(), Value::Zeros(n as u32)]).unwrap();
        let out = r.out(3).unwrap().as_slice().unwrap();
        assert_eq!(out.len(), n);
        assert_eq!(out[n - 1], Value::Float(3.0 * (n - 1) as f64), "{b:?}");
        assert_eq!(out[12345], Value::Float(3.0 * 12345.0));

        let edge = b.open("edge");
        let inc = edge
            .function("inc_all", Signature::new(CType::Void).arg_inout(CType::ptr(CType::Int)).arg(CType::Int))
            .unwrap();
        // Packed integers (Value::Numbers, i64 elements into 4-byte ints) come back packed, as i64s.
        let r = inc.call(&[Value::ints(0..n as i64), (n as i64).into()]).unwrap();
        let v = r.out(0).unwrap();
        assert!(matches!(v, Value::Numbers(bitbridge::Numbers::I64(_))), "{b:?}");
        assert_eq!((v.element(0), v.element(n - 1)), (Some(Value::Int(1)), Some(Value::Int(n as i64))), "{b:?}");
        // Raw bytes in and out of the same (in-out) buffer.
        let bytes: Vec<u8> = (0..n as i32).flat_map(|i| i.to_le_bytes()).collect();
        let r = inc.call(&[Value::Bytes(bytes), (n as i64).into()]).unwrap();
        let Some(Value::Bytes(back)) = r.out(0) else { panic!() };
        assert_eq!(&back[4 * 7..4 * 8], &8i32.to_le_bytes(), "{b:?}");
    }
}
