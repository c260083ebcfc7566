//! The typed layer (crates/client/src/typed.rs) and `#[derive(CStruct)]` against the fixtures: one Rust
//! struct laid out by each server's target, out-parameters through `&mut`, structs by value both ways,
//! and the signature the Rust types declare being the one sent.

use bitbridge::{Addr, CLong, CStruct, CType, CValue, CallConv, Error, In, InOut, Out, Value};
use bitbridge_tests::{Backend, BACKENDS};

/// `struct Tagged { char tag; double value; unsigned char id[16]; short samples[3]; }` (fixtures/edge.c).
#[derive(CStruct, Clone, Debug, PartialEq)]
#[repr(C)]
struct Tagged {
    tag: i8,
    value: f64,
    id: [u8; 16],
    samples: [i16; 3],
}

/// `struct Pt { double x, y; }` and `struct Poly { int n; struct Pt pts[4]; }`: nested, in an array.
#[derive(CStruct, Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
struct Pt {
    x: f64,
    y: f64,
}

#[derive(CStruct, Clone, Debug, PartialEq)]
#[repr(C)]
struct Poly {
    n: i32,
    pts: [Pt; 4],
}

/// `struct Small { char c; short s; int i; }`: returned in registers on x86_64, in memory on i386.
#[derive(CStruct, Clone, Debug, PartialEq)]
#[repr(C)]
struct Small {
    c: i8,
    s: i16,
    i: i32,
}

/// `#pragma pack(1) struct Packed { char c; int i; short s; }`.
#[derive(CStruct, Clone, Debug, PartialEq)]
#[repr(C, packed)]
struct Packed {
    c: i8,
    i: i32,
    s: i16,
}

/// `struct Complex { double re, im; }` (fixtures/ctest.c).
#[derive(CStruct, Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct Complex {
    re: f64,
    im: f64,
}

fn tagged() -> Tagged {
    Tagged { tag: b'a' as i8, value: 1.25, id: std::array::from_fn(|i| i as u8 * 10), samples: [1, -2, 300] }
}

#[test]
fn a_double_after_a_char_is_laid_out_by_each_servers_target() {
    let _check = bitbridge_tests::no_server_left();
    for b in BACKENDS {
        let lib = b.open("edge");
        let offset = lib.typed::<(), i32>("tagged_value_offset").unwrap().call(()).unwrap();
        let size = lib.typed::<(), i32>("tagged_size").unwrap().call(()).unwrap();
        assert_eq!(offset, if b.is_32() { 4 } else { 8 }, "{b:?}");
        // The same Rust description, laid out by the server's target, agrees with the C compiler's.
        let layout = lib.server().target().aggregate_layout(&Tagged::ctype()).unwrap().unwrap();
        assert_eq!(layout.offsets[1], offset as u64, "{b:?}");
        assert_eq!(layout.layout.size, size as u64, "{b:?}");

        let scale = lib.typed::<(Tagged, f64), Tagged>("tagged_scale").unwrap();
        let got = scale.call((tagged(), 2.0)).unwrap();
        let want = Tagged {
            tag: b'b' as i8,
            value: 2.5,
            id: std::array::from_fn(|i| 255 - i as u8 * 10),
            samples: [2, -4, 600],
        };
        assert_eq!(got, want, "{b:?}");
    }
}

#[test]
fn nested_structs_and_arrays_of_structs() {
    let _check = bitbridge_tests::no_server_left();
    for b in BACKENDS {
        let lib = b.open("edge");
        let sumx = lib.typed::<(Poly,), f64>("poly_sumx").unwrap();
        let mut poly = Poly { n: 3, pts: [Pt::default(); 4] };
        for (i, p) in poly.pts.iter_mut().enumerate() {
            *p = Pt { x: i as f64 + 0.5, y: -1.0 };
        }
        assert_eq!(sumx.call((poly,)).unwrap(), 0.5 + 1.5 + 2.5, "{b:?}");
    }
    assert_eq!(Poly::ctype().to_string(), "struct Poly");
    let CType::Struct(def) = Poly::ctype() else { panic!("a struct") };
    assert_eq!(def.fields[1].ty, CType::array(Pt::ctype(), 4));
}

#[test]
fn structs_returned_by_value_packed_too() {
    let _check = bitbridge_tests::no_server_left();
    for b in BACKENDS {
        let lib = b.open("edge");
        let make = lib.typed::<(i8, i16, i32), Small>("small_make").unwrap();
        assert_eq!(make.call((-3, 1000, -70000)).unwrap(), Small { c: -3, s: 1000, i: -70000 }, "{b:?}");

        let sum = i32::from(b'x') + 41 - 3;
        let p = Packed { c: b'x' as i8, i: 41, s: -3 };
        let by_pointer = lib.typed::<(In<Packed>,), i32>("packed_sum_ptr").unwrap();
        assert_eq!(by_pointer.call((&p,)).unwrap(), sum, "{b:?}");
        let packed_make = lib.typed::<(i32,), Packed>("packed_make");
        if b.bits() == bitbridge_tests::Bits::B64 {
            // x86_64 passes a packed struct by value in memory, which libffi cannot express: refused
            // when the function is prepared, not at the call.
            let e = packed_make.unwrap_err();
            assert!(matches!(e, Error::Signature { .. }) && e.to_string().contains("packed"), "{e}");
        } else {
            assert_eq!(packed_make.unwrap().call((41,)).unwrap(), p, "{b:?}");
            let packed_sum = lib.typed::<(Packed,), i32>("packed_sum").unwrap();
            assert_eq!(packed_sum.call((p.clone(),)).unwrap(), sum, "{b:?}");
        }
        // Packed 1: 7 bytes, on every target.
        let layout = lib.server().target().layout(&Packed::ctype()).unwrap();
        assert_eq!(layout.size, 7);
    }
}

#[test]
fn out_and_inout_parameters_are_filled_through_mut() {
    let _check = bitbridge_tests::no_server_left();
    for b in BACKENDS {
        let lib = b.open("edge");
        // void get_two(int *a, double *b)
        let get_two = lib.typed::<(Out<i32>, Out<f64>), ()>("get_two").unwrap();
        let (mut x, mut y) = (0, 0.0);
        get_two.call((&mut x, &mut y)).unwrap();
        assert_eq!((x, y), (7, 2.5), "{b:?}");

        // void tagged_fill(struct Tagged *t, char tag): a struct out-parameter.
        let fill = lib.typed::<(Out<Tagged>, i8), ()>("tagged_fill").unwrap();
        let mut t = tagged();
        fill.call((&mut t, b'z' as i8)).unwrap();
        let want = Tagged { tag: b'z' as i8, value: 0.5, id: std::array::from_fn(|i| i as u8), samples: [0, 0, -7] };
        assert_eq!(t, want, "{b:?}");

        // void inc_all(int *v, int n): a buffer changed in place.
        let inc_all = lib.typed::<(InOut<[i32]>, i32), ()>("inc_all").unwrap();
        let mut v = [1, 2, 3, 40];
        inc_all.call((&mut v, 3)).unwrap();
        assert_eq!(v, [2, 3, 4, 40], "{b:?}");
    }
    for b in [Backend::Server32, Backend::Server64] {
        let lib = b.open("ctest");
        // void swap(struct Complex *a, struct Complex *b)
        let swap = lib.typed::<(InOut<Complex>, InOut<Complex>), ()>("swap").unwrap();
        let (mut a, mut c) = (Complex { re: 1.0, im: 2.0 }, Complex { re: 3.0, im: 4.0 });
        swap.call((&mut a, &mut c)).unwrap();
        assert_eq!((a, c), (Complex { re: 3.0, im: 4.0 }, Complex { re: 1.0, im: 2.0 }), "{b:?}");
        // double sum(double f[], int n): a slice in.
        let sum = lib.typed::<(In<[f64]>, i32), f64>("sum").unwrap();
        assert_eq!(sum.call((&[1.0, 2.0, 3.5], 3)).unwrap(), 6.5, "{b:?}");
        // void titlecase(char *s): bytes in place.
        let title = lib.typed::<(InOut<[u8]>,), ()>("titlecase").unwrap();
        let mut text = *b"hello typed world\0";
        title.call((&mut text,)).unwrap();
        assert_eq!(&text, b"Hello Typed World\0", "{b:?}");
        // struct Complex add(struct Complex a, struct Complex b)
        let add = lib.typed::<(Complex, Complex), Complex>("add").unwrap();
        let z = add.call((Complex { re: 1.5, im: -2.0 }, Complex { re: 0.25, im: 10.0 })).unwrap();
        assert_eq!(z, Complex { re: 1.75, im: 8.0 }, "{b:?}");
    }
}

#[test]
fn strings_handles_and_the_calling_convention() {
    let _check = bitbridge_tests::no_server_left();
    for b in BACKENDS {
        let lib = b.open("edge");
        assert_eq!(lib.typed::<(&str,), usize>("str_len").unwrap().call(("four",)).unwrap(), 4);
        let owned = String::from("seven!!");
        assert_eq!(lib.typed::<(&str,), usize>("str_len").unwrap().call((&owned,)).unwrap(), 7);
        assert_eq!(lib.typed::<(), String>("greet").unwrap().call(()).unwrap(), "hello from C");
        let maybe = lib.typed::<(i32,), Option<String>>("maybe_null").unwrap();
        assert_eq!(maybe.call((1,)).unwrap().as_deref(), Some("yes"));
        assert_eq!(maybe.call((0,)).unwrap(), None, "{b:?}");

        let new = lib.typed::<(i32, i32), Addr>("counter_new").unwrap();
        let next = lib.typed::<(Addr,), i32>("counter_next").unwrap();
        let free = lib.typed::<(Addr,), ()>("counter_free").unwrap();
        let h = new.call((10, 5)).unwrap();
        assert!(!h.is_null());
        assert_eq!((next.call((h,)).unwrap(), next.call((h,)).unwrap()), (10, 15), "{b:?}");
        free.call((h,)).unwrap();
    }
    // int __attribute__((stdcall)) std_sub(int, int): the callee pops its arguments on i386.
    let lib = Backend::Server32.open("edge");
    let sub = lib.typed_with::<(i32, i32), i32>("std_sub", CallConv::Stdcall).unwrap();
    assert_eq!(sub.signature().conv, CallConv::Stdcall);
    for _ in 0..3 {
        assert_eq!(sub.call((10, 3)).unwrap(), 7);
    }
    // x86_64 Linux has one convention: a stdcall declaration is refused when prepared, not at a call.
    let lib = Backend::Server64.open("edge");
    let e = lib.typed_with::<(i32,), i32>("id_int", CallConv::Stdcall).unwrap_err();
    assert!(matches!(e, Error::Signature { .. }), "{e}");
}

#[test]
fn the_declared_signature_is_the_one_sent() {
    let _check = bitbridge_tests::no_server_left();
    for b in [Backend::Server32, Backend::Server64] {
        let lib = b.open("edge");
        // A Rust i64 declares int64_t: right for id_i64, and it is what is prepared and sent.
        let id64 = lib.typed::<(i64,), i64>("id_i64").unwrap();
        assert_eq!(id64.signature().to_string(), "int64_t (int64_t)");
        assert_eq!(id64.call((-(1 << 40),)).unwrap(), -(1 << 40), "{b:?}");
        // For `int id_int(int)` the Rust type is i32: int32_t is int on every target bitbridge hosts.
        let id_int = lib.typed::<(i32,), i32>("id_int").unwrap();
        assert_eq!(id_int.signature().params[0].ty, CType::I32);
        assert_eq!(id_int.call((i32::MIN,)).unwrap(), i32::MIN);
        // `long` is the server's: CLong declares it, and a value the i386 long cannot hold is refused
        // (named), never truncated.
        let id_long = lib.typed::<(CLong,), CLong>("id_long").unwrap();
        assert_eq!(id_long.signature().to_string(), "long (long)");
        let big = CLong(1 << 40);
        if b.is_32() {
            let e = id_long.call((big,)).unwrap_err();
            assert!(matches!(e, Error::Argument { .. }), "{e}");
            assert!(e.to_string().contains("id_long"), "{e}");
        } else {
            assert_eq!(id_long.call((big,)).unwrap(), big);
        }
        // The dynamic function underneath takes the same values.
        let r = id_int.function().call(&[Value::Int(5)]).unwrap();
        assert_eq!(r.ret, Value::Int(5));
    }
}

#[test]
fn a_missing_function_is_refused_when_prepared() {
    let _check = bitbridge_tests::no_server_left();
    let lib = Backend::Server32.open("edge");
    let e = lib.typed::<(i32,), i32>("no_such_function").unwrap_err();
    assert!(matches!(e, Error::SymbolNotFound { .. }), "{e}");
}

/// Slices of numbers are sent from the caller's slice and written back into it in place (no copy into
/// a `Value`): small ones in the request, large ones (8 MiB) through the bulk arena, on every backend.
#[test]
fn number_slices_are_borrowed_both_ways_small_and_large() {
    let _check = bitbridge_tests::no_server_left();
    for b in BACKENDS {
        let lib = b.open("ctest");
        let sum4 = lib.typed::<(In<[f64]>, i32), f64>("sum4").unwrap();
        let scale = lib.typed::<(InOut<[f64]>, i32, f64), ()>("scale").unwrap();
        for n in [3usize, 1 << 20] {
            let mut v: Vec<f64> = (0..n).map(|i| i as f64).collect();
            let want = (n as f64) * (n as f64 - 1.0) / 2.0;
            assert_eq!(sum4.call((&v, n as i32)).unwrap(), want, "{b:?} {n}");
            scale.call((&mut v, n as i32, -2.0)).unwrap();
            assert!(v.iter().enumerate().all(|(i, x)| *x == -2.0 * i as f64), "{b:?} {n}");
            // Only the first n - 1 elements are the function's: the last stays as it was.
            scale.call((&mut v, n as i32 - 1, 0.5)).unwrap();
            assert_eq!(v[n - 1], -2.0 * (n - 1) as f64, "{b:?} {n}");
            assert_eq!(v[n - 2], -((n - 2) as f64), "{b:?} {n}");
        }
        let lib = b.open("edge");
        // void inc_all(int *v, int n) as an out-buffer: written in place over what the slice held.
        let inc_all = lib.typed::<(Out<[i32]>, i32), ()>("inc_all").unwrap();
        let mut v = vec![5i32; 1 << 17]; // 512 KiB: through the arena on shared memory
        inc_all.call((&mut v, 2)).unwrap();
        assert_eq!((v[0], v[1], v[2]), (1, 1, 0), "{b:?}: an Out buffer starts zeroed");
    }
}
