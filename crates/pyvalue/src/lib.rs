//! Python values as CBOR, both ways, for the Python servers (msl-loadlib's `Client64`/`Server32`).
//!
//! The format is data only: decoding never runs code (unlike pickle, which msl-loadlib uses over an
//! open port). CBOR's own types carry `None`, `bool`, `int` (any size: bignums beyond 64 bits), `float`,
//! `str`, `bytes`, `list` and `dict` (any hashable keys); tags mark the rest (RFC 8949 §3.4; the private
//! numbers are in the first-come range):
//!
//! | Python | CBOR |
//! |---|---|
//! | `tuple` | tag 43002, array |
//! | `set` / `frozenset` | tag 258 (the registered "set"), array / tag 43003, array |
//! | `bytearray` | tag 43001, bytes |
//! | `complex` | tag 43000, `[real, imag]` |
//! | `numpy.ndarray`, any C-contiguous buffer (`memoryview`, `array.array`) | tag 43010, `[dtype, shape, bytes]` with a numpy dtype string such as `"<f8"` |
//! | numpy scalars | their Python value (`.item()`) |
//!
//! An array decodes as a `numpy.ndarray` where numpy can be imported, else as a `memoryview` of that
//! shape and format (the 32-bit server usually has no numpy).

use ciborium::Value as Cbor;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyByteArray, PyBytes, PyComplex, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString, PyTuple,
};
use pyo3::IntoPyObjectExt;

const TAG_COMPLEX: u64 = 43000;
const TAG_BYTEARRAY: u64 = 43001;
const TAG_TUPLE: u64 = 43002;
const TAG_FROZENSET: u64 = 43003;
const TAG_SET: u64 = 258;
const TAG_ARRAY: u64 = 43010;
const TAG_POS_BIGNUM: u64 = 2;
const TAG_NEG_BIGNUM: u64 = 3;

/// How deeply containers may nest (both ways), so a hostile or cyclic value is an error, not a crash.
pub const MAX_DEPTH: usize = 200;

/// Encodes a Python value. Raises `TypeError` for what has no data form (functions, classes, open files,
/// arbitrary objects) naming the type and where it was (`[2]['key']`).
pub fn encode(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let v = to_cbor(obj, 0, &mut String::new())?;
    let mut out = Vec::new();
    ciborium::into_writer(&v, &mut out).map_err(|e| PyValueError::new_err(format!("encoding: {e}")))?;
    Ok(out)
}

/// Encodes a call's `(args, kwargs)` as the tuple the Python server unpacks; an error names the
/// argument (`argument 2 [0]`, `keyword argument 'key'`).
pub fn encode_call(args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<u8>> {
    let mut a = Vec::with_capacity(args.len());
    for (i, x) in args.iter().enumerate() {
        a.push(to_cbor(&x, 1, &mut format!("argument {}", i + 1))?);
    }
    let mut k = Vec::new();
    if let Some(kw) = kwargs {
        for (key, v) in kw.iter() {
            let name = key.str().map(|s| s.to_string()).unwrap_or_default();
            k.push((to_cbor(&key, 1, &mut String::new())?, to_cbor(&v, 1, &mut format!("keyword argument '{name}'"))?));
        }
    }
    let call =
        Cbor::Tag(TAG_TUPLE, Box::new(Cbor::Array(vec![Cbor::Tag(TAG_TUPLE, Box::new(Cbor::Array(a))), Cbor::Map(k)])));
    let mut out = Vec::new();
    ciborium::into_writer(&call, &mut out).map_err(|e| PyValueError::new_err(format!("encoding: {e}")))?;
    Ok(out)
}

/// Decodes what [`encode`] wrote. Raises `ValueError` for malformed input.
pub fn decode<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let v: Cbor = ciborium::from_reader(bytes).map_err(|e| PyValueError::new_err(format!("decoding: {e}")))?;
    from_cbor(py, &v, 0)
}

fn too_deep() -> PyErr {
    PyValueError::new_err(format!("the value nests deeper than {MAX_DEPTH} levels (or contains itself)"))
}

fn to_cbor(obj: &Bound<'_, PyAny>, depth: usize, path: &mut String) -> PyResult<Cbor> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    let py = obj.py();
    if obj.is_none() {
        return Ok(Cbor::Null);
    }
    if let Ok(b) = obj.cast_exact::<pyo3::types::PyBool>() {
        return Ok(Cbor::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Cbor::Integer(i.into()));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Cbor::Integer(u.into()));
        }
        // Beyond 64 bits: a bignum (tag 2 or 3, big-endian magnitude; for negatives, -1 - n).
        let negative = obj.lt(0)?;
        let magnitude = if negative { obj.neg()?.add(-1)? } else { obj.clone() };
        let nbytes: usize = magnitude.call_method0("bit_length")?.extract::<usize>()?.div_ceil(8);
        let bytes: Vec<u8> = magnitude.call_method1("to_bytes", (nbytes, "big"))?.extract()?;
        let tag = if negative { TAG_NEG_BIGNUM } else { TAG_POS_BIGNUM };
        return Ok(Cbor::Tag(tag, Box::new(Cbor::Bytes(bytes))));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Cbor::Float(f.value()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Cbor::Text(s.to_cow()?.into_owned()));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Cbor::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Cbor::Tag(TAG_BYTEARRAY, Box::new(Cbor::Bytes(b.to_vec()))));
    }
    if let Ok(c) = obj.cast::<PyComplex>() {
        return Ok(Cbor::Tag(TAG_COMPLEX, Box::new(Cbor::Array(vec![Cbor::Float(c.real()), Cbor::Float(c.imag())]))));
    }
    let items = |it: &mut dyn Iterator<Item = Bound<'_, PyAny>>, path: &mut String| -> PyResult<Vec<Cbor>> {
        let mut out = Vec::new();
        for (i, x) in it.enumerate() {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            out.push(to_cbor(&x, depth + 1, path)?);
            path.truncate(len);
        }
        Ok(out)
    };
    if let Ok(l) = obj.cast::<PyList>() {
        return Ok(Cbor::Array(items(&mut l.iter(), path)?));
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return Ok(Cbor::Tag(TAG_TUPLE, Box::new(Cbor::Array(items(&mut t.iter(), path)?))));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut out = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            let len = path.len();
            path.push_str(&format!("[{}]", k.repr().map(|r| r.to_string()).unwrap_or_default()));
            out.push((to_cbor(&k, depth + 1, path)?, to_cbor(&v, depth + 1, path)?));
            path.truncate(len);
        }
        return Ok(Cbor::Map(out));
    }
    if let Ok(s) = obj.cast::<PySet>() {
        return Ok(Cbor::Tag(TAG_SET, Box::new(Cbor::Array(items(&mut s.iter(), path)?))));
    }
    if let Ok(s) = obj.cast::<PyFrozenSet>() {
        return Ok(Cbor::Tag(TAG_FROZENSET, Box::new(Cbor::Array(items(&mut s.iter(), path)?))));
    }
    let module = obj.get_type().module().map(|m| m.to_string()).unwrap_or_default();
    if module == "numpy" {
        // A numpy scalar (np.float32(1.5), np.int64(3)): its Python value.
        if obj.hasattr("item")?
            && obj.getattr("ndim").and_then(|n| n.extract::<usize>()).ok() == Some(0)
            && !obj.hasattr("shape").unwrap_or(false)
        {
            return to_cbor(&obj.call_method0("item")?, depth + 1, path);
        }
        if obj.getattr("ndim").is_ok() && obj.hasattr("dtype")? && obj.get_type().name()? == "ndarray" {
            let arr = if obj.getattr("flags")?.get_item("C_CONTIGUOUS")?.is_truthy()? {
                obj.clone()
            } else {
                obj.call_method0("copy")?
            };
            let dtype: String = arr.getattr("dtype")?.getattr("str")?.extract()?;
            if dtype.starts_with('|') && dtype.contains('O') || dtype.contains('O') {
                return Err(PyTypeError::new_err(format!("cannot send{}: a numpy array of Python objects", at(path))));
            }
            let shape: Vec<u64> = arr.getattr("shape")?.extract()?;
            let data: Vec<u8> = arr.call_method0("tobytes")?.extract()?;
            return Ok(array(dtype, shape, data));
        }
        if obj.hasattr("item")? {
            return to_cbor(&obj.call_method0("item")?, depth + 1, path);
        }
    }
    if let Ok(mv) = obj.cast::<pyo3::types::PyMemoryView>() {
        return buffer(mv.as_any(), path);
    }
    if obj.get_type().name()? == "array" && module == "array" {
        return buffer(&py.import("builtins")?.getattr("memoryview")?.call1((obj,))?, path);
    }
    Err(PyTypeError::new_err(format!(
        "cannot send{} a {}.{}: only data crosses (None, bool, int, float, complex, str, bytes, bytearray, list, tuple, dict, set, frozenset, numpy arrays and buffers)",
        at(path),
        module,
        obj.get_type().name()?
    )))
}

fn at(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" {path}")
    }
}

fn array(dtype: String, shape: Vec<u64>, data: Vec<u8>) -> Cbor {
    Cbor::Tag(
        TAG_ARRAY,
        Box::new(Cbor::Array(vec![
            Cbor::Text(dtype),
            Cbor::Array(shape.into_iter().map(|n| Cbor::Integer(n.into())).collect()),
            Cbor::Bytes(data),
        ])),
    )
}

/// A memoryview (C-contiguous) as an array: its struct format becomes a numpy dtype string.
fn buffer(mv: &Bound<'_, PyAny>, path: &str) -> PyResult<Cbor> {
    if !mv.getattr("c_contiguous")?.is_truthy()? {
        return Err(PyTypeError::new_err(format!("cannot send{}: a non-contiguous buffer (copy it first)", at(path))));
    }
    let format: String = mv.getattr("format")?.extract()?;
    let itemsize: usize = mv.getattr("itemsize")?.extract()?;
    let dtype = dtype_of_format(&format, itemsize)
        .ok_or_else(|| PyTypeError::new_err(format!("cannot send{}: a buffer of format {format:?}", at(path))))?;
    let shape: Vec<u64> = mv.getattr("shape")?.extract()?;
    let data: Vec<u8> = mv.call_method0("tobytes")?.extract()?;
    Ok(array(dtype, shape, data))
}

/// The numpy dtype string of a struct-module format (native, little-endian machines).
fn dtype_of_format(format: &str, itemsize: usize) -> Option<String> {
    let f = format.trim_start_matches(['@', '=', '<']);
    let kind = match f {
        "b" | "h" | "i" | "l" | "q" | "n" => 'i',
        "B" | "H" | "I" | "L" | "Q" | "N" => 'u',
        "e" | "f" | "d" => 'f',
        "?" => 'b',
        "c" => 'S',
        _ => return None,
    };
    Some(if kind == 'b' || kind == 'S' { format!("|{kind}{itemsize}") } else { format!("<{kind}{itemsize}") })
}

/// The struct-module format of a numpy dtype string, for a memoryview without numpy.
fn format_of_dtype(dtype: &str) -> Option<&'static str> {
    Some(match dtype.trim_start_matches(['<', '|', '=']) {
        "i1" => "b",
        "u1" => "B",
        "i2" => "h",
        "u2" => "H",
        "i4" => "i",
        "u4" => "I",
        "i8" => "q",
        "u8" => "Q",
        "f4" => "f",
        "f8" => "d",
        "b1" => "?",
        "S1" => "c",
        _ => return None,
    })
}

fn bad(what: &str) -> PyErr {
    PyValueError::new_err(format!("decoding: {what}"))
}

fn from_cbor<'py>(py: Python<'py>, v: &Cbor, depth: usize) -> PyResult<Bound<'py, PyAny>> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    let seq = |v: &Cbor| -> PyResult<Vec<Bound<'py, PyAny>>> {
        match v {
            Cbor::Array(items) => items.iter().map(|x| from_cbor(py, x, depth + 1)).collect(),
            _ => Err(bad("a tagged sequence without an array")),
        }
    };
    Ok(match v {
        Cbor::Null => py.None().into_bound(py),
        Cbor::Bool(b) => b.into_bound_py_any(py)?,
        Cbor::Integer(i) => i128::from(*i).into_bound_py_any(py)?,
        Cbor::Float(f) => f.into_bound_py_any(py)?,
        Cbor::Text(s) => s.into_bound_py_any(py)?,
        Cbor::Bytes(b) => PyBytes::new(py, b).into_any(),
        Cbor::Array(_) => PyList::new(py, seq(v)?)?.into_any(),
        Cbor::Map(entries) => {
            let d = PyDict::new(py);
            for (k, val) in entries {
                d.set_item(from_cbor(py, k, depth + 1)?, from_cbor(py, val, depth + 1)?)?;
            }
            d.into_any()
        }
        Cbor::Tag(tag, inner) => match (*tag, &**inner) {
            (TAG_TUPLE, inner) => PyTuple::new(py, seq(inner)?)?.into_any(),
            (TAG_SET, inner) => PySet::new(py, seq(inner)?)?.into_any(),
            (TAG_FROZENSET, inner) => PyFrozenSet::new(py, seq(inner)?)?.into_any(),
            (TAG_BYTEARRAY, Cbor::Bytes(b)) => PyByteArray::new(py, b).into_any(),
            (TAG_COMPLEX, Cbor::Array(parts)) => match parts.as_slice() {
                [Cbor::Float(re), Cbor::Float(im)] => PyComplex::from_doubles(py, *re, *im).into_any(),
                _ => return Err(bad("a complex number without two floats")),
            },
            (TAG_POS_BIGNUM | TAG_NEG_BIGNUM, Cbor::Bytes(b)) => {
                let int = py.import("builtins")?.getattr("int")?;
                let n = int.call_method1("from_bytes", (PyBytes::new(py, b), "big"))?;
                if *tag == TAG_NEG_BIGNUM {
                    n.neg()?.add(-1)?
                } else {
                    n
                }
            }
            (TAG_ARRAY, Cbor::Array(parts)) => match parts.as_slice() {
                [Cbor::Text(dtype), Cbor::Array(shape), Cbor::Bytes(data)] => {
                    let shape: Vec<u64> = shape
                        .iter()
                        .map(|n| match n {
                            Cbor::Integer(i) => u64::try_from(*i).map_err(|_| bad("a negative array dimension")),
                            _ => Err(bad("an array shape that is not integers")),
                        })
                        .collect::<PyResult<_>>()?;
                    decode_array(py, dtype, &shape, data)?
                }
                _ => return Err(bad("an array without [dtype, shape, bytes]")),
            },
            (other, _) => return Err(bad(&format!("unknown tag {other}"))),
        },
        _ => return Err(bad("an unsupported CBOR item")),
    })
}

fn decode_array<'py>(py: Python<'py>, dtype: &str, shape: &[u64], data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let count = shape.iter().try_fold(1u64, |a, n| a.checked_mul(*n)).ok_or_else(|| bad("an array too large"))?;
    if let Ok(np) = py.import("numpy") {
        let dt = np.getattr("dtype")?.call1((dtype,))?;
        let itemsize: u64 = dt.getattr("itemsize")?.extract()?;
        if count.checked_mul(itemsize) != Some(data.len() as u64) {
            return Err(bad("an array whose bytes do not match its shape"));
        }
        let flat = np.getattr("frombuffer")?.call1((PyByteArray::new(py, data), dt))?;
        return flat.call_method1("reshape", (PyTuple::new(py, shape)?,));
    }
    let format = format_of_dtype(dtype)
        .ok_or_else(|| bad(&format!("an array of dtype {dtype} (install numpy to receive it)")))?;
    let mv = py.import("builtins")?.getattr("memoryview")?.call1((PyByteArray::new(py, data),))?;
    let flat = mv.call_method1("cast", (format,))?;
    if flat.len()? as u64 != count {
        return Err(bad("an array whose bytes do not match its shape"));
    }
    if shape.len() == 1 {
        return Ok(flat);
    }
    flat.call_method1("cast", ("B",))?.call_method1("cast", (format, PyList::new(py, shape)?))
}
