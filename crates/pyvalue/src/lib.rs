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

use ciborium_io::Read;
use ciborium_ll::{Decoder, Encoder, Header};
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyComplex, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PyMemoryView, PySet,
    PyString, PyTuple,
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
const FALSE: u8 = 20;
const TRUE: u8 = 21;
const NULL: u8 = 22;

/// How deeply containers may nest (both ways), so a hostile or cyclic value is an error, not a crash.
pub const MAX_DEPTH: usize = 200;

/// Where encoding writes: a growing buffer (writes to a `Vec` cannot fail).
type Enc<'a> = Encoder<&'a mut Vec<u8>>;

fn w<E>(r: Result<(), E>) {
    // Writing into a Vec cannot fail.
    let _ = r;
}

/// Encodes a Python value. Raises `TypeError` for what has no data form (functions, classes, open files,
/// arbitrary objects) naming the type and where it was (`[2]['key']`).
pub fn encode(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let mut out = Vec::new();
    put(&mut Encoder::from(&mut out), obj, 0, &mut String::new())?;
    Ok(out)
}

/// Encodes a call's `(args, kwargs)` as the tuple the Python server unpacks; an error names the
/// argument (`argument 2 [0]`, `keyword argument 'key'`).
pub fn encode_call(args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = Encoder::from(&mut out);
    w(enc.push(Header::Tag(TAG_TUPLE)));
    w(enc.push(Header::Array(Some(2))));
    w(enc.push(Header::Tag(TAG_TUPLE)));
    w(enc.push(Header::Array(Some(args.len()))));
    for (i, x) in args.iter().enumerate() {
        put(&mut enc, &x, 1, &mut format!("argument {}", i + 1))?;
    }
    match kwargs {
        Some(kw) => {
            w(enc.push(Header::Map(Some(kw.len()))));
            for (key, v) in kw.iter() {
                let name = key.str().map(|s| s.to_string()).unwrap_or_default();
                put(&mut enc, &key, 1, &mut String::new())?;
                put(&mut enc, &v, 1, &mut format!("keyword argument '{name}'"))?;
            }
        }
        None => w(enc.push(Header::Map(Some(0)))),
    }
    Ok(out)
}

/// Decodes what [`encode`] wrote. Raises `ValueError` for malformed input.
pub fn decode<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let total = bytes.len();
    let mut dec = Decoder::from(bytes);
    let v = get(py, &mut dec, total, 0)?;
    if dec.offset() != total {
        return Err(bad("trailing bytes after the value"));
    }
    Ok(v)
}

fn too_deep() -> PyErr {
    PyValueError::new_err(format!("the value nests deeper than {MAX_DEPTH} levels (or contains itself)"))
}

fn at(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" {path}")
    }
}

fn put(enc: &mut Enc<'_>, obj: &Bound<'_, PyAny>, depth: usize, path: &mut String) -> PyResult<()> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    if obj.is_none() {
        w(enc.push(Header::Simple(NULL)));
        return Ok(());
    }
    if let Ok(b) = obj.cast_exact::<PyBool>() {
        w(enc.push(Header::Simple(if b.is_true() { TRUE } else { FALSE })));
        return Ok(());
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            w(enc.push(if i >= 0 { Header::Positive(i as u64) } else { Header::Negative(!(i as u64)) }));
            return Ok(());
        }
        if let Ok(u) = obj.extract::<u64>() {
            w(enc.push(Header::Positive(u)));
            return Ok(());
        }
        // Beyond 64 bits: a bignum (tag 2 or 3, big-endian magnitude; for negatives, -1 - n).
        let negative = obj.lt(0)?;
        let magnitude = if negative { obj.neg()?.add(-1)? } else { obj.clone() };
        let nbytes = magnitude.call_method0("bit_length")?.extract::<usize>()?.div_ceil(8);
        let bytes: Vec<u8> = magnitude.call_method1("to_bytes", (nbytes, "big"))?.extract()?;
        w(enc.push(Header::Tag(if negative { TAG_NEG_BIGNUM } else { TAG_POS_BIGNUM })));
        w(enc.bytes(&bytes, None));
        return Ok(());
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        w(enc.push(Header::Float(f.value())));
        return Ok(());
    }
    if let Ok(s) = obj.cast::<PyString>() {
        w(enc.text(&s.to_cow()?, None));
        return Ok(());
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        w(enc.bytes(b.as_bytes(), None));
        return Ok(());
    }
    if obj.is_instance_of::<PyByteArray>() {
        w(enc.push(Header::Tag(TAG_BYTEARRAY)));
        return raw_bytes(enc, obj, path);
    }
    if let Ok(c) = obj.cast::<PyComplex>() {
        w(enc.push(Header::Tag(TAG_COMPLEX)));
        w(enc.push(Header::Array(Some(2))));
        w(enc.push(Header::Float(c.real())));
        w(enc.push(Header::Float(c.imag())));
        return Ok(());
    }
    let mut seq = |enc: &mut Enc<'_>, len: usize, items: &mut dyn Iterator<Item = Bound<'_, PyAny>>| -> PyResult<()> {
        w(enc.push(Header::Array(Some(len))));
        for (i, x) in items.enumerate() {
            let keep = path.len();
            path.push_str(&format!("[{i}]"));
            put(enc, &x, depth + 1, path)?;
            path.truncate(keep);
        }
        Ok(())
    };
    if let Ok(l) = obj.cast::<PyList>() {
        return seq(enc, l.len(), &mut l.iter());
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        w(enc.push(Header::Tag(TAG_TUPLE)));
        return seq(enc, t.len(), &mut t.iter());
    }
    if let Ok(s) = obj.cast::<PySet>() {
        w(enc.push(Header::Tag(TAG_SET)));
        return seq(enc, s.len(), &mut s.iter());
    }
    if let Ok(s) = obj.cast::<PyFrozenSet>() {
        w(enc.push(Header::Tag(TAG_FROZENSET)));
        return seq(enc, s.len(), &mut s.iter());
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        w(enc.push(Header::Map(Some(d.len()))));
        for (k, v) in d.iter() {
            let keep = path.len();
            path.push_str(&format!("[{}]", k.repr().map(|r| r.to_string()).unwrap_or_default()));
            put(enc, &k, depth + 1, path)?;
            put(enc, &v, depth + 1, path)?;
            path.truncate(keep);
        }
        return Ok(());
    }
    let module = obj.get_type().module().map(|m| m.to_string()).unwrap_or_default();
    let type_name = obj.get_type().name().map(|n| n.to_string()).unwrap_or_default();
    if module == "numpy" {
        if type_name == "ndarray" {
            let dtype: String = obj.getattr("dtype")?.getattr("str")?.extract()?;
            if dtype.contains('O') {
                return Err(PyTypeError::new_err(format!("cannot send{}: a numpy array of Python objects", at(path))));
            }
            let arr = if obj.getattr("flags")?.get_item("C_CONTIGUOUS")?.is_truthy()? {
                obj.clone()
            } else {
                obj.call_method0("copy")?
            };
            let shape: Vec<u64> = arr.getattr("shape")?.extract()?;
            array_header(enc, &dtype, &shape);
            return raw_bytes(enc, &arr, path);
        }
        if obj.hasattr("item")? {
            // A numpy scalar (np.float32(1.5), np.int64(3)): its Python value.
            return put(enc, &obj.call_method0("item")?, depth + 1, path);
        }
    }
    if obj.is_instance_of::<PyMemoryView>() || (module == "array" && type_name == "array") {
        let mv = if obj.is_instance_of::<PyMemoryView>() { obj.clone() } else { PyMemoryView::from(obj)?.into_any() };
        if !mv.getattr("c_contiguous")?.is_truthy()? {
            return Err(PyTypeError::new_err(format!(
                "cannot send{}: a non-contiguous buffer (copy it first)",
                at(path)
            )));
        }
        let format: String = mv.getattr("format")?.extract()?;
        let itemsize: usize = mv.getattr("itemsize")?.extract()?;
        let dtype = dtype_of_format(&format, itemsize)
            .ok_or_else(|| PyTypeError::new_err(format!("cannot send{}: a buffer of format {format:?}", at(path))))?;
        let shape: Vec<u64> = mv.getattr("shape")?.extract()?;
        array_header(enc, &dtype, &shape);
        return raw_bytes(enc, &mv, path);
    }
    Err(PyTypeError::new_err(format!(
        "cannot send{} a {module}.{type_name}: only data crosses (None, bool, int, float, complex, str, bytes, bytearray, list, tuple, dict, set, frozenset, numpy arrays and buffers)",
        at(path),
    )))
}

/// `[dtype, shape, ` of an array (its bytes follow).
fn array_header(enc: &mut Enc<'_>, dtype: &str, shape: &[u64]) {
    w(enc.push(Header::Tag(TAG_ARRAY)));
    w(enc.push(Header::Array(Some(3))));
    w(enc.text(dtype, None));
    w(enc.push(Header::Array(Some(shape.len()))));
    for n in shape {
        w(enc.push(Header::Positive(*n)));
    }
}

/// The bytes of a C-contiguous buffer, copied once, straight into the message.
fn raw_bytes(enc: &mut Enc<'_>, obj: &Bound<'_, PyAny>, path: &str) -> PyResult<()> {
    let buf = PyUntypedBuffer::get(obj)?;
    if !buf.is_c_contiguous() {
        return Err(PyTypeError::new_err(format!("cannot send{}: a non-contiguous buffer (copy it first)", at(path))));
    }
    let len = buf.len_bytes();
    let data: &[u8] = if len == 0 {
        &[]
    } else {
        // SAFETY: the buffer is C-contiguous, `len` bytes at `buf_ptr`, and stays exported (so neither freed
        // nor resized) until `buf` drops at the end of this function; we only read it, with the GIL held.
        unsafe { std::slice::from_raw_parts(buf.buf_ptr() as *const u8, len) }
    };
    w(enc.bytes(data, None));
    Ok(())
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

type Dec<'a> = Decoder<&'a [u8]>;

fn pull(dec: &mut Dec<'_>) -> PyResult<Header> {
    dec.pull().map_err(|e| bad(&format!("{e:?}")))
}

/// `len` bytes of the input into `out`, which the caller sized after checking them against what is left.
fn take(dec: &mut Dec<'_>, out: &mut [u8]) -> PyResult<()> {
    dec.read_exact(out).map_err(|_| bad("the input ends inside a string"))
}

fn check_len(dec: &mut Dec<'_>, total: usize, len: usize) -> PyResult<()> {
    if len > total.saturating_sub(dec.offset()) {
        return Err(bad("a string longer than the input"));
    }
    Ok(())
}

fn get<'py>(py: Python<'py>, dec: &mut Dec<'_>, total: usize, depth: usize) -> PyResult<Bound<'py, PyAny>> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    Ok(match pull(dec)? {
        Header::Simple(NULL) => py.None().into_bound(py),
        Header::Simple(TRUE) => true.into_bound_py_any(py)?,
        Header::Simple(FALSE) => false.into_bound_py_any(py)?,
        Header::Positive(u) => u.into_bound_py_any(py)?,
        Header::Negative(n) => (-1i128 - i128::from(n)).into_bound_py_any(py)?,
        Header::Float(f) => f.into_bound_py_any(py)?,
        Header::Bytes(Some(len)) => bytes_item(py, dec, total, len)?.into_any(),
        Header::Text(Some(len)) => {
            check_len(dec, total, len)?;
            let mut buf = vec![0u8; len];
            take(dec, &mut buf)?;
            let s = String::from_utf8(buf).map_err(|_| bad("text that is not UTF-8"))?;
            PyString::new(py, &s).into_any()
        }
        Header::Array(Some(n)) => {
            check_len(dec, total, n)?; // every item is at least one byte
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(get(py, dec, total, depth + 1)?);
            }
            PyList::new(py, items)?.into_any()
        }
        Header::Map(Some(n)) => {
            check_len(dec, total, n)?;
            let d = PyDict::new(py);
            for _ in 0..n {
                let k = get(py, dec, total, depth + 1)?;
                let v = get(py, dec, total, depth + 1)?;
                d.set_item(k, v)?;
            }
            d.into_any()
        }
        Header::Tag(tag) => tagged(py, dec, total, depth, tag)?,
        other => return Err(bad(&format!("an unsupported item {other:?}"))),
    })
}

fn bytes_item<'py>(py: Python<'py>, dec: &mut Dec<'_>, total: usize, len: usize) -> PyResult<Bound<'py, PyBytes>> {
    check_len(dec, total, len)?;
    PyBytes::new_with(py, len, |out| take(dec, out))
}

fn items<'py>(py: Python<'py>, dec: &mut Dec<'_>, total: usize, depth: usize) -> PyResult<Vec<Bound<'py, PyAny>>> {
    match pull(dec)? {
        Header::Array(Some(n)) => {
            check_len(dec, total, n)?;
            (0..n).map(|_| get(py, dec, total, depth + 1)).collect()
        }
        _ => Err(bad("a tagged sequence without an array")),
    }
}

fn tagged<'py>(
    py: Python<'py>,
    dec: &mut Dec<'_>,
    total: usize,
    depth: usize,
    tag: u64,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match tag {
        TAG_TUPLE => PyTuple::new(py, items(py, dec, total, depth)?)?.into_any(),
        TAG_SET => PySet::new(py, items(py, dec, total, depth)?)?.into_any(),
        TAG_FROZENSET => PyFrozenSet::new(py, items(py, dec, total, depth)?)?.into_any(),
        TAG_BYTEARRAY => match pull(dec)? {
            Header::Bytes(Some(len)) => {
                check_len(dec, total, len)?;
                PyByteArray::new_with(py, len, |out| take(dec, out))?.into_any()
            }
            _ => return Err(bad("a bytearray without bytes")),
        },
        TAG_COMPLEX => match (pull(dec)?, pull(dec)?, pull(dec)?) {
            (Header::Array(Some(2)), Header::Float(re), Header::Float(im)) => {
                PyComplex::from_doubles(py, re, im).into_any()
            }
            _ => return Err(bad("a complex number without two floats")),
        },
        TAG_POS_BIGNUM | TAG_NEG_BIGNUM => {
            let b = match pull(dec)? {
                Header::Bytes(Some(len)) => bytes_item(py, dec, total, len)?,
                _ => return Err(bad("a bignum without bytes")),
            };
            let n = py.import("builtins")?.getattr("int")?.call_method1("from_bytes", (b, "big"))?;
            if tag == TAG_NEG_BIGNUM {
                n.neg()?.add(-1)?
            } else {
                n
            }
        }
        TAG_ARRAY => {
            let (Header::Array(Some(3)), Header::Text(Some(dlen))) = (pull(dec)?, pull(dec)?) else {
                return Err(bad("an array without [dtype, shape, bytes]"));
            };
            check_len(dec, total, dlen)?;
            let mut d = vec![0u8; dlen];
            take(dec, &mut d)?;
            let dtype = String::from_utf8(d).map_err(|_| bad("a dtype that is not UTF-8"))?;
            let Header::Array(Some(ndim)) = pull(dec)? else { return Err(bad("an array shape that is not a list")) };
            check_len(dec, total, ndim)?;
            let mut shape = Vec::with_capacity(ndim);
            for _ in 0..ndim {
                match pull(dec)? {
                    Header::Positive(n) => shape.push(n),
                    _ => return Err(bad("an array shape that is not non-negative integers")),
                }
            }
            let Header::Bytes(Some(len)) = pull(dec)? else { return Err(bad("an array without its bytes")) };
            check_len(dec, total, len)?;
            let data = PyByteArray::new_with(py, len, |out| take(dec, out))?;
            decode_array(py, &dtype, &shape, data)?
        }
        other => return Err(bad(&format!("unknown tag {other}"))),
    })
}

fn decode_array<'py>(
    py: Python<'py>,
    dtype: &str,
    shape: &[u64],
    data: Bound<'py, PyByteArray>,
) -> PyResult<Bound<'py, PyAny>> {
    let count = shape.iter().try_fold(1u64, |a, n| a.checked_mul(*n)).ok_or_else(|| bad("an array too large"))?;
    let len = data.len() as u64;
    if let Ok(np) = py.import("numpy") {
        let dt = np.getattr("dtype")?.call1((dtype,))?;
        let itemsize: u64 = dt.getattr("itemsize")?.extract()?;
        if count.checked_mul(itemsize) != Some(len) {
            return Err(bad("an array whose bytes do not match its shape"));
        }
        // Over the bytearray just filled: no further copy.
        let flat = np.getattr("frombuffer")?.call1((data, dt))?;
        return flat.call_method1("reshape", (PyTuple::new(py, shape)?,));
    }
    let format = format_of_dtype(dtype)
        .ok_or_else(|| bad(&format!("an array of dtype {dtype} (install numpy to receive it)")))?;
    let flat = PyMemoryView::from(data.as_any())?.call_method1("cast", (format,))?;
    if flat.len()? as u64 != count {
        return Err(bad("an array whose bytes do not match its shape"));
    }
    if shape.len() == 1 {
        return Ok(flat);
    }
    flat.call_method1("cast", ("B",))?.call_method1("cast", (format, PyList::new(py, shape)?))
}
