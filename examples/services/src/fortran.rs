//! A wrapper over a Fortran library (`fixtures/fortran_lib.f90`, built with `gfortran -m32`): its
//! `bind(C)` entry points called with Fortran's conventions (column-major matrices, explicit lengths,
//! `logical(c_bool)` results) and exposed as ordinary Rust types.

use std::ffi::{c_char, c_int};
use std::path::PathBuf;

use bitbridge_service::{Error, Methods, Result, Service};
use serde::{Deserialize, Serialize};

/// The constructor's options.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FortranOptions {
    /// The library file (built for the server's architecture).
    pub library: PathBuf,
}

/// The wrapper.
#[derive(Debug)]
pub struct Fortran {
    sum_8bit: extern "C" fn(i8, i8) -> i8,
    sum_64bit: extern "C" fn(i64, i64) -> i64,
    multiply_float32: extern "C" fn(f32, f32) -> f32,
    is_positive: extern "C" fn(f64) -> bool,
    factorial: extern "C" fn(i8) -> f64,
    standard_deviation: unsafe extern "C" fn(*const f64, c_int) -> f64,
    besselj0: extern "C" fn(f64) -> f64,
    reverse_string: unsafe extern "C" fn(*const c_char, c_int, *mut c_char),
    matrix_multiply: unsafe extern "C" fn(*const f64, c_int, c_int, *const f64, c_int, *mut f64),
    _lib: libloading::Library,
}

fn int(n: usize) -> Result<c_int> {
    c_int::try_from(n).map_err(|_| Error::new("ValueError", format!("{n} is too large for the library")))
}

impl Service for Fortran {
    type Options = FortranOptions;

    fn start(o: FortranOptions) -> Result<Self> {
        let lib = crate::open(&o.library)?;
        // SAFETY: each type is the C view of the bind(C) procedure in fixtures/fortran_lib.f90.
        unsafe {
            Ok(Fortran {
                sum_8bit: crate::symbol(&lib, "sum_8bit")?,
                sum_64bit: crate::symbol(&lib, "sum_64bit")?,
                multiply_float32: crate::symbol(&lib, "multiply_float32")?,
                is_positive: crate::symbol(&lib, "is_positive")?,
                factorial: crate::symbol(&lib, "factorial")?,
                standard_deviation: crate::symbol(&lib, "standard_deviation")?,
                besselj0: crate::symbol(&lib, "besselj0")?,
                reverse_string: crate::symbol(&lib, "reverse_string")?,
                matrix_multiply: crate::symbol(&lib, "matrix_multiply")?,
                _lib: lib,
            })
        }
    }

    fn methods(m: &mut Methods<Self>) {
        m.method("sum_8bit", |f: &mut Fortran, (a, b): (i8, i8)| Ok((f.sum_8bit)(a, b)));
        m.method("sum_64bit", |f: &mut Fortran, (a, b): (i64, i64)| Ok((f.sum_64bit)(a, b)));
        m.method("multiply_float32", |f: &mut Fortran, (a, b): (f32, f32)| Ok((f.multiply_float32)(a, b)));
        m.method("is_positive", |f: &mut Fortran, (a,): (f64,)| Ok((f.is_positive)(a)));
        m.method("factorial", |f: &mut Fortran, (n,): (i8,)| Ok((f.factorial)(n)));
        m.method("standard_deviation", |f: &mut Fortran, (data,): (Vec<f64>,)| {
            if data.len() < 2 {
                return Err(Error::new("ValueError", "the standard deviation needs at least 2 values"));
            }
            // SAFETY: n doubles are read.
            Ok(unsafe { (f.standard_deviation)(data.as_ptr(), int(data.len())?) })
        });
        m.method("besselj0", |f: &mut Fortran, (x,): (f64,)| Ok((f.besselj0)(x)));
        m.method("reverse_string", |f: &mut Fortran, (s,): (String,)| {
            let mut out = vec![0u8; s.len()];
            // SAFETY: n characters are read from `s` and written to `out`.
            unsafe { (f.reverse_string)(s.as_ptr().cast(), int(s.len())?, out.as_mut_ptr().cast()) };
            Ok(String::from_utf8(out)?)
        });
        // Row-major matrices in and out (as Rust nests them); transposed to Fortran's order and back.
        m.method("matrix_multiply", |f: &mut Fortran, (a, b): (Vec<Vec<f64>>, Vec<Vec<f64>>)| {
            let (r1, c1) = shape(&a)?;
            let (r2, c2) = shape(&b)?;
            if c1 != r2 {
                return Err(Error::new("ValueError", format!("cannot multiply {r1}x{c1} by {r2}x{c2}")));
            }
            // The library indexes with C ints: every dimension and product must fit one (checked, so a
            // product that wraps on a 32-bit server can never size a buffer too small).
            let too_big = || Error::new("ValueError", format!("a {r1}x{c2} result is too large for the library"));
            let cells = r1.checked_mul(c2).filter(|&n| c_int::try_from(n).is_ok()).ok_or_else(too_big)?;
            let (ca, cb) = (column_major(&a, r1, c1), column_major(&b, r2, c2));
            let mut out = vec![0.0; cells];
            // SAFETY: the buffers hold r1*c1, c1*c2 and r1*c2 doubles (the last product checked above;
            // the first two are the lengths of the column-major copies), as the shapes passed say.
            unsafe { (f.matrix_multiply)(ca.as_ptr(), int(r1)?, int(c1)?, cb.as_ptr(), int(c2)?, out.as_mut_ptr()) };
            Ok((0..r1).map(|i| (0..c2).map(|j| out[j * r1 + i]).collect::<Vec<f64>>()).collect::<Vec<_>>())
        });
    }
}

fn shape(m: &[Vec<f64>]) -> Result<(usize, usize)> {
    let cols = m.first().map_or(0, Vec::len);
    if m.is_empty() || cols == 0 || m.iter().any(|r| r.len() != cols) {
        return Err(Error::new("ValueError", "a matrix needs rows of one non-zero length"));
    }
    Ok((m.len(), cols))
}

fn column_major(m: &[Vec<f64>], rows: usize, cols: usize) -> Vec<f64> {
    (0..cols).flat_map(|j| (0..rows).map(move |i| m[i][j])).collect()
}
