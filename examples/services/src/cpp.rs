//! A wrapper over the C++-style fixture (`fixtures/cpp_lib.cpp`, msl-loadlib's `cpp_lib` example):
//! Rust types in, Rust types out, and the library's pointers, buffers and structs handled next to it.

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::PathBuf;

use bitbridge_service::{Error, Methods, Result, Service};
use serde::{Deserialize, Serialize};

/// The constructor's options.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CppOptions {
    /// The library file (built for the server's architecture).
    pub library: PathBuf,
}

/// A point, as the library's `struct Point`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// x
    pub x: f64,
    /// y
    pub y: f64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct FourPoints {
    points: [Point; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct NPoints {
    n: c_int,
    points: *const Point,
}

/// The wrapper: the library and its functions, looked up once.
#[derive(Debug)]
pub struct Cpp {
    path: PathBuf,
    // unsafe: C's signed overflow is undefined, so not every pair of ints may be passed.
    add: unsafe extern "C" fn(c_int, c_int) -> c_int,
    subtract: extern "C" fn(f32, f32) -> f32,
    add_or_subtract: extern "C" fn(f64, f64, bool) -> f64,
    scalar_multiply: unsafe extern "C" fn(f64, *const f64, c_int, *mut f64),
    reverse_v1: unsafe extern "C" fn(*const c_char, c_int, *mut c_char),
    reverse_v2: unsafe extern "C" fn(*mut c_char, c_int) -> *mut c_char,
    free_string: unsafe extern "C" fn(*mut c_char),
    distance_4: extern "C" fn(FourPoints) -> f64,
    distance_n: unsafe extern "C" fn(NPoints) -> f64,
    // Last: dropped after nothing can call into it any more.
    _lib: libloading::Library,
}

fn length(n: usize) -> Result<c_int> {
    c_int::try_from(n).map_err(|_| Error::new("ValueError", format!("{n} elements are more than the library takes")))
}

impl Service for Cpp {
    type Options = CppOptions;

    fn start(o: CppOptions) -> Result<Self> {
        let lib = crate::open(&o.library)?;
        // SAFETY: each type below is the C declaration of the function in fixtures/cpp_lib.cpp.
        unsafe {
            Ok(Cpp {
                add: crate::symbol(&lib, "add")?,
                subtract: crate::symbol(&lib, "subtract")?,
                add_or_subtract: crate::symbol(&lib, "add_or_subtract")?,
                scalar_multiply: crate::symbol(&lib, "scalar_multiply")?,
                reverse_v1: crate::symbol(&lib, "reverse_string_v1")?,
                reverse_v2: crate::symbol(&lib, "reverse_string_v2")?,
                free_string: crate::symbol(&lib, "free_string")?,
                distance_4: crate::symbol(&lib, "distance_4_points")?,
                distance_n: crate::symbol(&lib, "distance_n_points")?,
                path: o.library,
                _lib: lib,
            })
        }
    }

    fn methods(m: &mut Methods<Self>) {
        m.method("add", |c: &mut Cpp, (a, b): (i32, i32)| {
            if a.checked_add(b).is_none() {
                return Err(Error::new("OverflowError", format!("{a} + {b} does not fit in a C int")));
            }
            // SAFETY: the sum fits in an int (checked above), so the C addition is defined.
            Ok(unsafe { (c.add)(a, b) })
        });
        m.method("subtract", |c: &mut Cpp, (a, b): (f32, f32)| Ok((c.subtract)(a, b)));
        m.method("add_or_subtract", |c: &mut Cpp, (a, b, add): (f64, f64, bool)| Ok((c.add_or_subtract)(a, b, add)));
        m.method("scalar_multiply", |c: &mut Cpp, (a, xs): (f64, Vec<f64>)| {
            let mut out = vec![0.0; xs.len()];
            // SAFETY: both buffers hold `n` doubles, as the function reads and writes.
            unsafe { (c.scalar_multiply)(a, xs.as_ptr(), length(xs.len())?, out.as_mut_ptr()) };
            Ok(out)
        });
        m.method("reverse_string_v1", |c: &mut Cpp, (s,): (String,)| {
            let mut out = vec![0u8; s.len()];
            // SAFETY: the function reads n bytes of `s` and writes n bytes of `out`.
            unsafe { (c.reverse_v1)(s.as_ptr().cast(), length(s.len())?, out.as_mut_ptr().cast()) };
            Ok(String::from_utf8(out)?)
        });
        m.method("reverse_string_v2", |c: &mut Cpp, (s,): (String,)| {
            let mut original = CString::new(s.clone())?.into_bytes_with_nul();
            // SAFETY: the function reads n bytes and returns a new NUL-terminated string that only
            // free_string may free, which it is right after the copy.
            unsafe {
                let p = (c.reverse_v2)(original.as_mut_ptr().cast(), length(s.len())?);
                if p.is_null() {
                    return Err(Error::new("MemoryError", "reverse_string_v2 returned NULL"));
                }
                let text = CStr::from_ptr(p).to_string_lossy().into_owned();
                (c.free_string)(p);
                Ok(text)
            }
        });
        m.method("distance_4_points", |c: &mut Cpp, (points,): (Vec<Point>,)| {
            let points: [Point; 4] = points
                .try_into()
                .map_err(|p: Vec<Point>| Error::new("ValueError", format!("4 points are needed, not {}", p.len())))?;
            Ok((c.distance_4)(FourPoints { points }))
        });
        m.method("distance_n_points", |c: &mut Cpp, (points,): (Vec<Point>,)| {
            let p = NPoints { n: length(points.len())?, points: points.as_ptr() };
            // SAFETY: the struct points to n points that live through the call.
            Ok(unsafe { (c.distance_n)(p) })
        });
        m.property("library", |c: &Cpp| c.path.clone());
    }
}
