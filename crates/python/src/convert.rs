//! Python objects to [`Value`]s for a declared [`CType`], and back.
//!
//! The objects are what ctypes users pass: Python numbers, `bytes` and `str`, real ctypes instances
//! (`c_int(3)`, `Structure`s, arrays, `byref(x)`, `pointer(x)`), anything with the buffer protocol (numpy
//! arrays, `bytearray`, `array.array`, `memoryview`), lists and tuples, `None`. A ctypes object's memory
//! is laid out for *this* process (x86_64 System V); the server may be i386, so an aggregate is read
//! through the host layout ([`decode_value`] on the host target) unless its layout is the same on both
//! targets, in which case its bytes go as they are. After the call, `Out`/`InOut` memory is written back
//! into the caller's object the same way. Lists and tuples of numbers for number elements are packed
//! ([`Value::Numbers`] in the server's element type: [`packed`]), and packed results are read back into
//! lists and ctypes objects like arrays of values.

use bitbridge::proto::{decode_value, encode_value};
use bitbridge::{CType, ExtF80, NumKind, Numbers, Target, Value};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};
use pyo3::IntoPyObject;

/// A conversion failure: a message that callers prefix with where it happened, or a Python error.
pub enum Conv {
    Msg(String),
    Py(PyErr),
}

impl From<PyErr> for Conv {
    fn from(e: PyErr) -> Self {
        Conv::Py(e)
    }
}

impl Conv {
    /// Prefixes the message with a location (`argument 2`, `.x`, `[3]`).
    pub fn at(self, place: impl std::fmt::Display) -> Conv {
        match self {
            Conv::Msg(m) => Conv::Msg(format!("{place}: {m}")),
            other => other,
        }
    }

    pub fn into_py(self, py: Python<'_>, function: &str) -> PyErr {
        match self {
            Conv::Msg(m) => crate::errors::argument(py, format!("bad argument to `{function}`: {m}")),
            Conv::Py(e) => e,
        }
    }
}

pub type CResult<T> = Result<T, Conv>;

fn kind(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

fn bad<T>(expected: &str, ty: &CType, obj: &Bound<'_, PyAny>) -> CResult<T> {
    Err(Conv::Msg(format!("expected {expected} for `{ty}`, got {}", kind(obj))))
}

/// The ctypes base classes, looked up once.
pub struct CTypes {
    pub simple: Py<PyType>,
    pub structure: Py<PyType>,
    pub union: Py<PyType>,
    pub array: Py<PyType>,
    pub pointer: Py<PyType>,
    pub carg: Py<PyType>,
    pub longdouble: Py<PyType>,
    pub char_p: Py<PyType>,
    pub wchar_p: Py<PyType>,
    pub void_p: Py<PyType>,
}

static CTYPES: PyOnceLock<CTypes> = PyOnceLock::new();

pub fn ctypes(py: Python<'_>) -> PyResult<&CTypes> {
    CTYPES.get_or_try_init(py, || {
        let m = py.import("ctypes")?;
        let t = |n: &str| -> PyResult<Py<PyType>> { Ok(m.getattr(n)?.cast_into::<PyType>()?.unbind()) };
        let c_int = m.getattr("c_int")?.call0()?;
        let carg = m.getattr("byref")?.call1((c_int,))?.get_type().unbind();
        Ok(CTypes {
            simple: t("_SimpleCData")?,
            structure: t("Structure")?,
            union: t("Union")?,
            array: t("Array")?,
            pointer: t("_Pointer")?,
            carg,
            longdouble: t("c_longdouble")?,
            char_p: t("c_char_p")?,
            wchar_p: t("c_wchar_p")?,
            void_p: t("c_void_p")?,
        })
    })
}

/// What the conversion needs to know about the call.
pub struct Cx<'a> {
    /// The server's target (where the values are laid out).
    pub target: Target,
    /// This process's target (how ctypes objects are laid out).
    pub host: Target,
    /// Turns callback and shared objects into values for this server.
    pub server: Option<&'a bitbridge::Server>,
}

impl Cx<'_> {
    /// Whether `ty` has the same bytes on the host and on the server: then ctypes memory is passed as it
    /// is. Types holding addresses never are (a host address means nothing in the server).
    pub fn same_layout(&self, ty: &CType) -> bool {
        if ty.contains_pointer() {
            return false;
        }
        if self.target == self.host {
            return true;
        }
        match ty {
            CType::Array(of, _) => self.same_layout(of),
            CType::Struct(d) | CType::Union(d) => {
                d.fields.iter().all(|f| self.same_layout(&f.ty))
                    && self.host.aggregate_layout(ty).and_then(Result::ok)
                        == self.target.aggregate_layout(ty).and_then(Result::ok)
            }
            CType::Long | CType::ULong | CType::SizeT | CType::SSizeT | CType::WChar | CType::LongDouble => {
                self.host.layout(ty).ok() == self.target.layout(ty).ok() && self.host.os == self.target.os
            }
            _ => true,
        }
    }
}

/// A contiguous buffer exported by an object (the buffer protocol), released when dropped.
///
/// PyO3's `PyUntypedBuffer` refuses zero-dimensional exports (ctypes scalars and structs export no
/// shape), so this asks for the simplest contiguous view (`PyBUF_SIMPLE`), which every exporter that can
/// give bytes in order supports; a non-contiguous one (a numpy slice with steps) refuses it.
struct RawBuf(Box<pyo3::ffi::Py_buffer>);

impl RawBuf {
    fn get(obj: &Bound<'_, PyAny>, writable: bool) -> Option<RawBuf> {
        let flags =
            if writable { pyo3::ffi::PyBUF_SIMPLE | pyo3::ffi::PyBUF_WRITABLE } else { pyo3::ffi::PyBUF_SIMPLE };
        // SAFETY: a zeroed Py_buffer is a valid argument to fill; the object is alive (we hold it).
        let mut view: Box<pyo3::ffi::Py_buffer> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: the GIL is held (we have a Bound); `view` is writable memory for one Py_buffer.
        if unsafe { pyo3::ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, flags) } != 0 {
            // Not a buffer (or not contiguous, or read-only): not an error, another route applies.
            drop(PyErr::take(obj.py()));
            return None;
        }
        Some(RawBuf(view))
    }

    fn bytes(&self) -> &[u8] {
        if self.0.len == 0 {
            return &[];
        }
        // SAFETY: a PyBUF_SIMPLE export is `len` contiguous bytes at `buf`, valid until released (in
        // drop); nothing resizes the exporter while it is exported.
        unsafe { std::slice::from_raw_parts(self.0.buf as *const u8, self.0.len as usize) }
    }

    fn item_size(&self) -> usize {
        self.0.itemsize.max(1) as usize
    }
}

impl Drop for RawBuf {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful PyObject_GetBuffer and is released once; every
        // RawBuf lives inside code that holds the GIL.
        unsafe { pyo3::ffi::PyBuffer_Release(&mut *self.0) }
    }
}

/// The raw bytes of an object with the buffer protocol (C-contiguous), and its item size.
pub fn buffer_bytes(obj: &Bound<'_, PyAny>) -> Option<(Vec<u8>, usize)> {
    let buf = RawBuf::get(obj, false)?;
    Some((buf.bytes().to_vec(), buf.item_size()))
}

/// Copies `bytes` into a writable, C-contiguous buffer at least that size; false if it is not one.
pub fn write_buffer(obj: &Bound<'_, PyAny>, bytes: &[u8]) -> bool {
    let Some(buf) = RawBuf::get(obj, true) else { return false };
    if (buf.0.len as usize) < bytes.len() {
        return false;
    }
    if !bytes.is_empty() {
        // SAFETY: the export is writable, contiguous and at least `bytes.len()` long until `buf` drops;
        // `bytes` is our own memory, so the two do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.0.buf as *mut u8, bytes.len()) };
    }
    true
}

fn is_instance(obj: &Bound<'_, PyAny>, t: &Py<PyType>) -> bool {
    obj.is_instance(t.bind(obj.py())).unwrap_or(false)
}

/// Whether `obj` is a ctypes instance (a `_CData`): simple, struct, union, array or pointer.
fn is_cdata(obj: &Bound<'_, PyAny>, c: &CTypes) -> bool {
    is_instance(obj, &c.simple)
        || is_instance(obj, &c.structure)
        || is_instance(obj, &c.union)
        || is_instance(obj, &c.array)
        || is_instance(obj, &c.pointer)
}

/// An integer value from a Python int (or an object with `__index__`).
fn int_value(obj: &Bound<'_, PyAny>) -> Option<Value> {
    if let Ok(b) = obj.cast::<PyBool>() {
        return Some(Value::Bool(b.is_true()));
    }
    if let Ok(i) = obj.extract::<i64>() {
        return Some(Value::Int(i));
    }
    obj.extract::<u64>().ok().map(Value::UInt)
}

/// Converts `obj` to a value of type `ty`.
pub fn to_value(obj: &Bound<'_, PyAny>, ty: &CType, cx: &Cx<'_>) -> CResult<Value> {
    let py = obj.py();
    let c = ctypes(py)?;
    if *ty == CType::Bool && !is_instance(obj, &c.simple) {
        // As ctypes' c_bool: any object, by its truth.
        return Ok(Value::Bool(obj.is_truthy()?));
    }
    if ty.is_integer() {
        if let Some(v) = int_value(obj) {
            return Ok(v);
        }
        if ty.is_byte() || *ty == CType::WChar {
            if let Ok(b) = obj.cast::<PyBytes>() {
                if b.as_bytes().len() == 1 {
                    return Ok(Value::Int(i64::from(b.as_bytes()[0])));
                }
            }
            if let Ok(s) = obj.cast::<PyString>() {
                let s = s.to_cow()?;
                let mut it = s.chars();
                if let (Some(ch), None) = (it.next(), it.next()) {
                    return Ok(Value::UInt(u64::from(u32::from(ch))));
                }
            }
        }
        if is_instance(obj, &c.simple) {
            return to_value(&obj.getattr("value")?, ty, cx);
        }
        return bad("an integer", ty, obj);
    }
    match ty {
        CType::Float | CType::Double => {
            if let Ok(f) = obj.cast::<PyFloat>() {
                return Ok(Value::Float(f.value()));
            }
            if is_instance(obj, &c.simple) {
                return to_value(&obj.getattr("value")?, ty, cx);
            }
            // Anything with __float__ or __index__, as ctypes takes it (bool, int, numpy scalars).
            match obj.extract::<f64>() {
                Ok(f) => Ok(Value::Float(f)),
                Err(_) => bad("a number", ty, obj),
            }
        }
        CType::LongDouble => {
            if is_instance(obj, &c.longdouble) {
                // Exact: the host's 80-bit value, not ctypes' rounding to a float.
                if let Some((b, _)) = buffer_bytes(obj) {
                    if b.len() >= 10 && cx.host.os == bitbridge::Os::Linux {
                        let mut x = [0u8; 10];
                        x.copy_from_slice(&b[..10]);
                        return Ok(Value::LongDouble(ExtF80(x)));
                    }
                }
            }
            if let Ok(f) = obj.extract::<f64>() {
                return Ok(Value::LongDouble(ExtF80::from_f64(f)));
            }
            if is_instance(obj, &c.simple) {
                return to_value(&obj.getattr("value")?, ty, cx);
            }
            bad("a number", ty, obj)
        }
        CType::Void => Err(Conv::Msg("`void` is not a value type".into())),
        CType::CStr | CType::WStr => string(obj, ty, c),
        CType::FnPtr(_) => function_pointer(obj, ty, cx),
        CType::Pointer(to) => pointer(obj, to, ty, cx, c),
        CType::Array(of, _) => array(obj, of, ty, cx, c),
        CType::Struct(d) | CType::Union(d) => {
            if is_instance(obj, &c.structure) || is_instance(obj, &c.union) {
                return aggregate_object(obj, ty, cx);
            }
            let union = matches!(ty, CType::Union(_));
            if let Ok(t) = obj.cast::<PyTuple>() {
                if union {
                    return bad("a ctypes Union instance", ty, obj);
                }
                return members(t.iter(), d, cx);
            }
            if let Ok(l) = obj.cast::<PyList>() {
                if union {
                    return bad("a ctypes Union instance", ty, obj);
                }
                return members(l.iter(), d, cx);
            }
            bad("a ctypes Structure/Union instance or a tuple of its members", ty, obj)
        }
        _ => bad("a value", ty, obj),
    }
}

fn members<'py>(
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    d: &bitbridge::StructDef,
    cx: &Cx<'_>,
) -> CResult<Value> {
    let items: Vec<_> = items.collect();
    if items.len() > d.fields.len() {
        let n = d.fields.len();
        return Err(Conv::Msg(format!(
            "{} values for the {n} member{} of `{}`",
            items.len(),
            if n == 1 { "" } else { "s" },
            d.name
        )));
    }
    let mut out = Vec::with_capacity(d.fields.len());
    for (i, f) in d.fields.iter().enumerate() {
        match items.get(i) {
            Some(v) => out.push(to_value(v, &f.ty, cx).map_err(|e| e.at(format!(".{}", f.name)))?),
            None => out.push(Value::Zeros(1)),
        }
    }
    // Members not given are zero, as in C and ctypes; pointers among them are NULL.
    for (v, f) in out.iter_mut().zip(&d.fields) {
        if matches!(v, Value::Zeros(_)) && f.ty.is_pointer() {
            *v = Value::NULL;
        }
    }
    Ok(Value::Struct(out))
}

/// A ctypes Structure or Union instance as a value of `ty`.
fn aggregate_object(obj: &Bound<'_, PyAny>, ty: &CType, cx: &Cx<'_>) -> CResult<Value> {
    if !ty.contains_pointer() {
        let Some((bytes, _)) = buffer_bytes(obj) else { return bad("a ctypes object", ty, obj) };
        return host_bytes_to_value(bytes, ty, cx);
    }
    let (CType::Struct(d) | CType::Union(d)) = ty else { unreachable!("called for aggregates") };
    if matches!(ty, CType::Union(_)) {
        // Which member is meant cannot be told from memory holding host addresses: use the first.
        let f = &d.fields[0];
        let v = to_value(&obj.getattr(f.name.as_str())?, &f.ty, cx).map_err(|e| e.at(format!(".{}", f.name)))?;
        return Ok(Value::Variant(0, Box::new(v)));
    }
    let mut out = Vec::with_capacity(d.fields.len());
    for f in &d.fields {
        let member = obj.getattr(f.name.as_str())?;
        out.push(to_value(&member, &f.ty, cx).map_err(|e| e.at(format!(".{}", f.name)))?);
    }
    Ok(Value::Struct(out))
}

/// Bytes laid out for the host as a value of `ty` for the server: as they are when the layouts agree.
fn host_bytes_to_value(bytes: Vec<u8>, ty: &CType, cx: &Cx<'_>) -> CResult<Value> {
    if cx.same_layout(ty) {
        return Ok(Value::Bytes(bytes));
    }
    if let CType::Array(of, _) = ty {
        if let Some(kind) = number_kind(of, &cx.host) {
            // An array of numbers laid out differently on the server (`c_long` is 8 bytes here, 4 on
            // i386): packed as this process's elements, converted one by one (and range-checked) by the
            // marshaller, and read back packed.
            return Ok(Value::Numbers(Numbers::from_le_bytes(kind, &bytes)));
        }
    }
    let v = decode_value(&cx.host, ty, &bytes).map_err(|e| Conv::Msg(e.to_string()))?;
    // Unions read back as every member's view: send the one covering all of this process's bytes.
    Ok(for_encoding(&v, ty, &cx.host))
}

fn string(obj: &Bound<'_, PyAny>, ty: &CType, c: &CTypes) -> CResult<Value> {
    if obj.is_none() {
        return Ok(Value::NULL);
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Value::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::Str(s.to_cow()?.into_owned()));
    }
    if let Ok(a) = obj.extract::<u64>() {
        return Ok(Value::Pointer(a));
    }
    if let Ok(addr) = obj.getattr("_bb_address_") {
        return Ok(Value::Pointer(addr.extract()?));
    }
    if is_instance(obj, &c.array) || is_instance(obj, &c.char_p) || is_instance(obj, &c.wchar_p) {
        // create_string_buffer / create_unicode_buffer, or a c_char_p: the text it holds.
        return string(&obj.getattr("value")?, ty, c);
    }
    if obj.is_instance_of::<pyo3::types::PyByteArray>() {
        let (b, _) = buffer_bytes(obj).expect("a bytearray is a buffer");
        return Ok(Value::Bytes(b));
    }
    bad("bytes, str, None or a server address", ty, obj)
}

fn function_pointer(obj: &Bound<'_, PyAny>, ty: &CType, cx: &Cx<'_>) -> CResult<Value> {
    if obj.is_none() {
        return Ok(Value::NULL);
    }
    if let Ok(a) = obj.extract::<u64>() {
        return Ok(Value::Pointer(a));
    }
    if let Ok(f) = obj.getattr("_bb_callback_for_") {
        // A CFUNCTYPE instance: registered with this server once, then reused.
        let v = f.call1((server_of(cx)?,))?;
        return Ok(Value::Pointer(v.extract()?));
    }
    if let Ok(addr) = obj.getattr("_bb_address_") {
        return Ok(Value::Pointer(addr.extract()?));
    }
    bad("a CFUNCTYPE callback, a function of the same server, None or an address", ty, obj)
}

fn server_of(cx: &Cx<'_>) -> CResult<crate::PyServer> {
    match cx.server {
        Some(s) => Ok(crate::PyServer::wrap(s.clone())),
        None => Err(Conv::Msg("callbacks and shared objects cannot be returned from a callback".into())),
    }
}

/// What a ctypes pointer object points at: the whole array it was made from (`cast(arr, POINTER(T))`,
/// `pointer(arr)`), so every element travels, or else its `contents` (one element).
fn pointed_object<'py>(ptr: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    static HELPER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let py = ptr.py();
    let f =
        HELPER.get_or_try_init(py, || py.import("bitbridge._types")?.getattr("pointed_object").map(Bound::unbind))?;
    f.bind(py).call1((ptr,))
}

/// What `byref(obj)` refers to (an error for `byref(obj, offset)`).
fn byref_object<'py>(arg: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    static HELPER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let py = arg.py();
    let f = HELPER.get_or_try_init(py, || py.import("bitbridge._types")?.getattr("byref_object").map(Bound::unbind))?;
    f.bind(py).call1((arg,))
}

/// A bitbridge.sharedctypes object: mapped into the server (once), nothing copied.
fn shared_value(share_with: &Bound<'_, PyAny>, cx: &Cx<'_>) -> CResult<Value> {
    let token = share_with.call1((server_of(cx)?,))?;
    Ok(token.cast::<crate::shared::PyShared>().map_err(PyErr::from)?.get().value.clone())
}

fn pointer(obj: &Bound<'_, PyAny>, to: &CType, ty: &CType, cx: &Cx<'_>, c: &CTypes) -> CResult<Value> {
    if obj.is_none() {
        return Ok(Value::NULL);
    }
    if obj.is_instance_of::<PyInt>() {
        return Ok(Value::Pointer(obj.extract().map_err(|_| Conv::Msg("a negative address".into()))?));
    }
    if let Ok(addr) = obj.getattr("_bb_address_") {
        // A pointer the server returned, or a function of the same server.
        return Ok(Value::Pointer(addr.extract()?));
    }
    if let Ok(shared) = obj.getattr("_bb_share_with_") {
        return shared_value(&shared, cx);
    }
    if is_instance(obj, &c.carg) {
        return pointee(&byref_object(obj)?, to, ty, cx, c);
    }
    if is_instance(obj, &c.pointer) {
        if !obj.is_truthy()? {
            return Ok(Value::NULL);
        }
        // The object it was made from: a ctypes object, or a numpy array for `ndarray.ctypes.data_as`.
        return pointer(&pointed_object(obj)?, to, ty, cx, c);
    }
    if is_instance(obj, &c.void_p) {
        return match obj.getattr("value")?.extract::<Option<u64>>()? {
            None => Ok(Value::NULL),
            // A c_void_p a call filled with a server address (`byref(c_void_p())` for a `void **`).
            Some(a) if obj.hasattr("_bb_server_address_")? => Ok(Value::Pointer(a)),
            Some(_) => Err(Conv::Msg(
                "a c_void_p holding an address of this process cannot cross to the server (pass the server's address as an int)".into(),
            )),
        };
    }
    if is_cdata(obj, c) {
        return pointee(obj, to, ty, cx, c);
    }
    if let Ok(s) = obj.cast::<PyString>() {
        if to.is_byte() || *to == CType::WChar || *to == CType::Void {
            return Ok(Value::Str(s.to_cow()?.into_owned()));
        }
    }
    if let (Ok(b), true) = (obj.cast::<PyBytes>(), to.is_byte()) {
        // bytes for `char *`: a C string, as ctypes passes it (NUL-terminated).
        let mut v = b.as_bytes().to_vec();
        v.push(0);
        return Ok(Value::Bytes(v));
    }
    if let Some(v) = sequence(obj, to, cx)? {
        return Ok(v);
    }
    if let Some((bytes, item)) = buffer_bytes(obj) {
        return buffer_value(bytes, item, to, ty, cx);
    }
    bad(
        "a ctypes object, byref(...), a buffer (numpy array, bytearray, ...), a list, None or a server address",
        ty,
        obj,
    )
}

/// A raw buffer for memory of `to`s: its items must be the size of a `to` on the server.
fn buffer_value(bytes: Vec<u8>, item: usize, to: &CType, ty: &CType, cx: &Cx<'_>) -> CResult<Value> {
    if *to == CType::Void || to.is_byte() {
        return Ok(Value::Bytes(bytes));
    }
    let size = cx.target.layout(to).map_err(|e| Conv::Msg(e.to_string()))?.size as usize;
    if (item != size && item != 1) || bytes.len() % size.max(1) != 0 {
        return Err(Conv::Msg(format!(
            "a buffer of {item}-byte items for `{ty}`, whose elements are {size} bytes on the server ({}): convert it first (numpy: .astype(...))",
            cx.target
        )));
    }
    Ok(Value::Bytes(bytes))
}

/// A list or tuple given for elements of `to` (`None` for any other object): packed
/// ([`Value::Numbers`]) when `to` is a number type, else one [`Value`] per element.
fn sequence(obj: &Bound<'_, PyAny>, to: &CType, cx: &Cx<'_>) -> CResult<Option<Value>> {
    if let Ok(l) = obj.cast::<PyList>() {
        if let Some(v) = packed(|| l.iter(), l.len(), to, cx)? {
            return Ok(Some(v));
        }
        return elements(l.iter(), to, cx).map(Some);
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        if let Some(v) = packed(|| t.iter(), t.len(), to, cx)? {
            return Ok(Some(v));
        }
        return elements(t.iter(), to, cx).map(Some);
    }
    Ok(None)
}

/// The element kind Python numbers for elements of `to` are packed in: the one `target` lays `to`
/// out as (`f64` for `double`, `i32` for `int`; `long` is `i32` on i386 and Win64, `i64` on x86_64
/// Linux), so the marshaller sends the vector's bytes as they are. `None` for what does not pack:
/// `char` (it takes -128..=255), `bool`, `wchar_t` (characters), `long double`, and non-numbers.
fn number_kind(to: &CType, target: &Target) -> Option<NumKind> {
    match to {
        CType::Float => Some(NumKind::F32),
        CType::Double => Some(NumKind::F64),
        CType::Char | CType::Bool | CType::WChar => None,
        t if t.is_integer() => {
            let size = target.layout(t).ok()?.size;
            Some(match (size, target.int_signed(t)) {
                (1, true) => NumKind::I8,
                (1, false) => NumKind::U8,
                (2, true) => NumKind::I16,
                (2, false) => NumKind::U16,
                (4, true) => NumKind::I32,
                (4, false) => NumKind::U32,
                (8, true) => NumKind::I64,
                (8, false) => NumKind::U64,
                _ => return None,
            })
        }
        _ => None,
    }
}

/// A Rust element of a packed array, from a Python object.
trait Element: Copy {
    /// The common case without going through a [`Value`]: a Python `float` for the float kinds, an
    /// `int` (or `__index__`) that fits for the integer kinds.
    fn quick(obj: &Bound<'_, PyAny>) -> Option<Self>;
    /// The element a converted value stands for, if it fits.
    fn from_value(v: &Value) -> Option<Self>;
}

macro_rules! int_element {
    ($($t:ty),*) => {$(
        impl Element for $t {
            fn quick(obj: &Bound<'_, PyAny>) -> Option<Self> {
                let i = obj.cast::<PyInt>().ok()?.extract::<i64>().ok()?;
                <$t>::try_from(i).ok()
            }
            fn from_value(v: &Value) -> Option<Self> {
                match v {
                    Value::Int(i) => <$t>::try_from(*i).ok(),
                    Value::UInt(u) => <$t>::try_from(*u).ok(),
                    Value::Bool(b) => Some(<$t>::from(*b)),
                    _ => None,
                }
            }
        }
    )*};
}
int_element!(i8, u8, i16, u16, i32, u32, i64, u64);

macro_rules! float_element {
    ($($t:ty),*) => {$(
        impl Element for $t {
            fn quick(obj: &Bound<'_, PyAny>) -> Option<Self> {
                obj.cast::<PyFloat>().ok().map(|f| f.value() as $t)
            }
            fn from_value(v: &Value) -> Option<Self> {
                match v {
                    // As the marshaller writes a `float`: rounded, never refused.
                    Value::Float(f) => Some(*f as $t),
                    _ => None,
                }
            }
        }
    )*};
}
float_element!(f32, f64);

/// Python objects for elements of `to`, packed in the element kind the server has for `to` (see
/// [`number_kind`]); `Ok(None)` when `to` is not a number type or an element is out of its range
/// (then the caller converts element by element, and the marshaller reports the element that does
/// not fit as it always has: `argument 1 -> [2]: 2147483648 does not fit in `int``). An element of
/// the wrong type is the same error as [`elements`] gives, at its index.
fn packed<'py, I: Iterator<Item = Bound<'py, PyAny>>>(
    items: impl Fn() -> I,
    len: usize,
    to: &CType,
    cx: &Cx<'_>,
) -> CResult<Option<Value>> {
    fn pack<'py, T: Element>(
        items: impl Iterator<Item = Bound<'py, PyAny>>,
        len: usize,
        to: &CType,
        cx: &Cx<'_>,
    ) -> CResult<Option<Vec<T>>> {
        let mut out = Vec::with_capacity(len);
        for (i, obj) in items.enumerate() {
            let x = match T::quick(&obj) {
                Some(x) => x,
                None => {
                    // Anything else to_value takes for `to` (ctypes scalars, numpy scalars, bools, ints
                    // beyond i64), with its errors.
                    let v = to_value(&obj, to, cx).map_err(|e| e.at(format!("[{i}]")))?;
                    match T::from_value(&v) {
                        Some(x) => x,
                        None => return Ok(None),
                    }
                }
            };
            out.push(x);
        }
        Ok(Some(out))
    }
    let Some(kind) = number_kind(to, &cx.target) else { return Ok(None) };
    let n = match kind {
        NumKind::I8 => pack::<i8>(items(), len, to, cx)?.map(Numbers::from),
        NumKind::U8 => pack::<u8>(items(), len, to, cx)?.map(Numbers::from),
        NumKind::I16 => pack::<i16>(items(), len, to, cx)?.map(Numbers::from),
        NumKind::U16 => pack::<u16>(items(), len, to, cx)?.map(Numbers::from),
        NumKind::I32 => pack::<i32>(items(), len, to, cx)?.map(Numbers::from),
        NumKind::U32 => pack::<u32>(items(), len, to, cx)?.map(Numbers::from),
        NumKind::I64 => pack::<i64>(items(), len, to, cx)?.map(Numbers::from),
        NumKind::U64 => pack::<u64>(items(), len, to, cx)?.map(Numbers::from),
        NumKind::F32 => pack::<f32>(items(), len, to, cx)?.map(Numbers::from),
        NumKind::F64 => pack::<f64>(items(), len, to, cx)?.map(Numbers::from),
        _ => None,
    };
    Ok(n.map(Value::Numbers))
}

fn elements<'py>(items: impl Iterator<Item = Bound<'py, PyAny>>, to: &CType, cx: &Cx<'_>) -> CResult<Value> {
    let mut out = Vec::new();
    for (i, v) in items.enumerate() {
        out.push(to_value(&v, to, cx).map_err(|e| e.at(format!("[{i}]")))?);
    }
    Ok(Value::Array(out))
}

/// The memory a pointer argument points to, given as a ctypes object.
fn pointee(obj: &Bound<'_, PyAny>, to: &CType, ty: &CType, cx: &Cx<'_>, c: &CTypes) -> CResult<Value> {
    if let Ok(shared) = obj.getattr("_bb_share_with_") {
        return shared_value(&shared, cx);
    }
    if is_instance(obj, &c.array) {
        // An array decays to a pointer to its first element.
        if !to.contains_pointer() && *to != CType::Void {
            let n: usize = obj.len()?;
            let arr = CType::array(to.clone(), n as u32);
            let Some((bytes, _)) = buffer_bytes(obj) else { return bad("a ctypes array", ty, obj) };
            let elem_host = cx.host.layout(to).map_err(|e| Conv::Msg(e.to_string()))?.size as usize;
            if elem_host * n != bytes.len() {
                return Err(Conv::Msg(format!(
                    "an array of {n} elements of {} bytes for `{ty}`, whose elements are {elem_host} bytes here",
                    bytes.len() / n.max(1)
                )));
            }
            return match host_bytes_to_value(bytes, &arr, cx)? {
                Value::Array(v) => Ok(Value::Array(v)),
                other => Ok(other),
            };
        }
        if *to == CType::Void {
            let Some((bytes, _)) = buffer_bytes(obj) else { return bad("a ctypes array", ty, obj) };
            return Ok(Value::Bytes(bytes));
        }
        return elements(obj.try_iter()?.map(|r| r.expect("ctypes arrays iterate")), to, cx);
    }
    if *to == CType::Void {
        // void *: the object's bytes, as they are.
        if is_instance(obj, &c.simple) || !obj.get_type().is(c.pointer.bind(obj.py())) {
            if let Some((bytes, _)) = buffer_bytes(obj) {
                return Ok(Value::Bytes(bytes));
            }
        }
        return bad("a ctypes object", ty, obj);
    }
    if to.is_pointer() {
        // `T **` given `byref(p)` (p a pointer, c_void_p or c_char_p): the argument points at memory that
        // holds a pointer, so that pointer goes in a block of its own, one element long (its value alone
        // would be taken for the argument itself and a level lost).
        return Ok(Value::Array(vec![to_value(obj, to, cx)?]));
    }
    to_value(obj, to, cx)
}

fn array(obj: &Bound<'_, PyAny>, of: &CType, ty: &CType, cx: &Cx<'_>, c: &CTypes) -> CResult<Value> {
    if is_instance(obj, &c.array) {
        if !of.contains_pointer() {
            let Some((bytes, _)) = buffer_bytes(obj) else { return bad("a ctypes array", ty, obj) };
            let host_len = cx.host.layout(ty).map_err(|e| Conv::Msg(e.to_string()))?.size as usize;
            if bytes.len() != host_len {
                return Err(Conv::Msg(format!("an array of {} bytes for `{ty}` ({host_len} bytes here)", bytes.len())));
            }
            return host_bytes_to_value(bytes, ty, cx);
        }
        return elements(obj.try_iter()?.map(|r| r.expect("ctypes arrays iterate")), of, cx);
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        if of.is_byte() {
            return Ok(Value::Bytes(b.as_bytes().to_vec()));
        }
    }
    if let Ok(s) = obj.cast::<PyString>() {
        if of.is_byte() || *of == CType::WChar {
            return Ok(Value::Str(s.to_cow()?.into_owned()));
        }
    }
    if let Some(v) = sequence(obj, of, cx)? {
        return Ok(v);
    }
    if let Some((bytes, item)) = buffer_bytes(obj) {
        return buffer_value(bytes, item, of, ty, cx);
    }
    bad("a ctypes array, a list, bytes or a buffer", ty, obj)
}

/// After a call: writes what came back for an `Out`/`InOut` pointer argument into the object the caller
/// passed (a ctypes object, `byref(x)`, `pointer(x)`, a writable buffer, a list).
pub fn write_back(obj: &Bound<'_, PyAny>, to: &CType, v: &Value, cx: &Cx<'_>) -> PyResult<()> {
    let py = obj.py();
    let c = ctypes(py)?;
    if is_instance(obj, &c.carg) {
        return write_into(&byref_object(obj)?, to, v, cx, c);
    }
    if is_instance(obj, &c.pointer) {
        if obj.is_truthy()? {
            return write_back(&pointed_object(obj)?, to, v, cx);
        }
        return Ok(());
    }
    if is_cdata(obj, c) {
        return write_into(obj, to, v, cx, c);
    }
    if let Ok(l) = obj.cast::<PyList>() {
        match v {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate().take(l.len()) {
                    write_list_item(l, i, to, item, cx, c)?;
                }
            }
            Value::Numbers(n) => {
                for i in 0..n.len().min(l.len()) {
                    let item = n.get(i).expect("in range");
                    if !same_number(&l.get_item(i)?, &item) {
                        write_list_item(l, i, to, &item, cx, c)?;
                    }
                }
            }
            _ => {}
        }
        return Ok(());
    }
    if let Value::Bytes(b) = v {
        write_buffer(obj, b);
    }
    Ok(())
}

/// Element `i` of a list the caller passed gets what came back for it: written into it when it is a
/// ctypes object, replaced by the plain Python value otherwise.
fn write_list_item(l: &Bound<'_, PyList>, i: usize, to: &CType, item: &Value, cx: &Cx<'_>, c: &CTypes) -> PyResult<()> {
    let old = l.get_item(i)?;
    if is_cdata(&old, c) {
        write_into(&old, to, item, cx, c)
    } else {
        l.set_item(i, to_py(l.py(), item, to, cx)?)
    }
}

/// Whether a list element already is the plain number an element of a packed result stands for (a
/// `float` with the same bits, an `int` of the same value): then it is left as it is, instead of
/// being replaced by an equal new object (a million-element list the function did not change costs
/// no allocation on the way back).
fn same_number(old: &Bound<'_, PyAny>, new: &Value) -> bool {
    match new {
        Value::Float(f) => old.cast_exact::<PyFloat>().is_ok_and(|o| o.value().to_bits() == f.to_bits()),
        Value::Int(i) => old.cast_exact::<PyInt>().is_ok_and(|o| o.extract::<i64>().ok() == Some(*i)),
        Value::UInt(u) => old.cast_exact::<PyInt>().is_ok_and(|o| o.extract::<u64>().ok() == Some(*u)),
        _ => false,
    }
}

/// Writes a value of `to` (or an array of them) into a ctypes object's memory.
fn write_into(obj: &Bound<'_, PyAny>, to: &CType, v: &Value, cx: &Cx<'_>, c: &CTypes) -> PyResult<()> {
    let py = obj.py();
    if let (true, Value::Array(items)) = (to.is_pointer(), v) {
        if let ([e], false) = (items.as_slice(), is_instance(obj, &c.array)) {
            return write_pointer_back(obj, to, e, cx, c);
        }
    }
    match v {
        Value::Bytes(b) if !is_instance(obj, &c.simple) || to.is_byte() => {
            // Same layout on both sides (or raw bytes asked for): copy as it is.
            write_buffer(obj, b);
            return Ok(());
        }
        Value::Str(_) => return Ok(()), // text sent for a string buffer; the function changed nothing we track
        _ => {}
    }
    if is_instance(obj, &c.simple) {
        if *to == CType::LongDouble && cx.host.os == bitbridge::Os::Linux {
            if let Value::LongDouble(x) = v {
                let mut b = vec![0u8; 16];
                b[..10].copy_from_slice(&x.0);
                write_buffer(obj, &b);
                return Ok(());
            }
        }
        if to.is_pointer() {
            return Ok(()); // a host pointer object: the server's address would mean nothing here
        }
        let value = if let Value::Bytes(b) = v { Value::Int(i64::from(b[0])) } else { v.clone() };
        return obj.setattr("value", to_py(py, &value, to, cx)?);
    }
    let (ty, elems) = match v {
        Value::Array(items) => (CType::array(to.clone(), items.len() as u32), Some(items)),
        // Packed numbers are scalars: for a C array member (`to` is the array) they are its elements,
        // else elements of `to` (the memory behind a pointer).
        Value::Numbers(n) => match to {
            CType::Array(_, len) if n.len() <= *len as usize => (to.clone(), None),
            _ => (CType::array(to.clone(), n.len() as u32), None),
        },
        _ => (to.clone(), None),
    };
    if !ty.contains_pointer() {
        let bytes = encode_value(&cx.host, &ty, &for_encoding(v, &ty, &cx.target))
            .map_err(|e| crate::errors::raise(py, "ResultError", e.to_string(), &[]))?;
        write_buffer(obj, &bytes);
        return Ok(());
    }
    // Holds pointers: member by member, leaving the host's pointers alone.
    if let Some(items) = elems {
        for (i, item) in items.iter().enumerate() {
            write_into(&obj.get_item(i)?, to, item, cx, c)?;
        }
        return Ok(());
    }
    if let (CType::Struct(d), Value::Struct(vals)) = (to, v) {
        for (f, fv) in d.fields.iter().zip(vals) {
            if f.ty.is_pointer() {
                continue;
            }
            let member = obj.getattr(f.name.as_str())?;
            if is_cdata(&member, c) && !is_instance(&member, &c.simple) {
                write_into(&member, &f.ty, fv, cx, c)?;
            } else {
                obj.setattr(f.name.as_str(), to_py(py, fv, &f.ty, cx)?)?;
            }
        }
    }
    Ok(())
}

/// After a call through `T **`: the pointer the library left in the one-element block, into the object
/// `byref` was given. A ctypes pointer gets what the new pointer points at (read in the server) as an
/// object of this process, or, when it still points at what it pointed at, that object is updated; a
/// `c_void_p` gets the server's address (usable as an argument again); a `c_char_p`/`c_wchar_p` the
/// text.
fn write_pointer_back(obj: &Bound<'_, PyAny>, to: &CType, e: &Value, cx: &Cx<'_>, c: &CTypes) -> PyResult<()> {
    let py = obj.py();
    if is_instance(obj, &c.void_p) {
        if let Value::Pointer(a) = e {
            obj.setattr("value", if *a == 0 { py.None() } else { a.into_pyobject(py)?.into_any().unbind() })?;
            obj.setattr("_bb_server_address_", true)?;
        }
        return Ok(());
    }
    if is_instance(obj, &c.char_p) || is_instance(obj, &c.wchar_p) {
        match e {
            Value::Pointer(0) => obj.setattr("value", py.None())?,
            Value::Str(_) | Value::Bytes(_) => obj.setattr("value", to_py(py, e, to, cx)?)?,
            _ => {}
        }
        return Ok(());
    }
    let CType::Pointer(inner) = to else { return Ok(()) };
    if !is_instance(obj, &c.pointer) {
        return Ok(());
    }
    match e {
        Value::Pointer(0) => obj.call_method0("__init__").map(drop),
        Value::Pointer(_) => Ok(()), // an address not followed: nothing of this process to point at
        value => {
            if obj.is_truthy()? {
                // Still pointing where it did: update that object.
                write_back(&pointed_object(obj)?, inner, value, cx)
            } else {
                let target = obj.getattr("_type_")?.call0()?;
                write_into(&target, inner, value, cx, c)?;
                obj.setattr("contents", target)
            }
        }
    }
}

/// A value as the plain Python object ctypes gives for `ty`: `int`, `float`, `bytes` for `char` and
/// `char *`, `str` for `wchar_t` and `wchar_t *`, `None` for `void` and NULL strings, an `int` address
/// for pointers, `bytes` laid out for this process for structs, unions and arrays.
pub fn to_py(py: Python<'_>, v: &Value, ty: &CType, cx: &Cx<'_>) -> PyResult<Py<PyAny>> {
    use pyo3::IntoPyObjectExt;
    let result_err = |m: String| crate::errors::raise(py, "ResultError", m, &[]);
    match (ty, v) {
        (_, Value::Void) => Ok(py.None()),
        (CType::Char, Value::Int(i)) => PyBytes::new(py, &[*i as u8]).into_py_any(py),
        (CType::Char, Value::UInt(i)) => PyBytes::new(py, &[*i as u8]).into_py_any(py),
        (CType::WChar, Value::Int(_) | Value::UInt(_)) => {
            let code = v.as_i64().unwrap_or(0) as u32;
            char::from_u32(code).map(|ch| ch.to_string()).unwrap_or_default().into_py_any(py)
        }
        (CType::Bool, _) => v.as_bool().unwrap_or(false).into_py_any(py),
        (_, Value::Bool(b)) => b.into_py_any(py),
        (_, Value::Int(i)) => i.into_py_any(py),
        (_, Value::UInt(u)) => u.into_py_any(py),
        (_, Value::Float(f)) => f.into_py_any(py),
        (_, Value::LongDouble(x)) => x.to_f64().into_py_any(py),
        (CType::CStr | CType::WStr, Value::Pointer(0)) => Ok(py.None()),
        (_, Value::Pointer(p)) => p.into_py_any(py),
        (CType::CStr, Value::Str(s)) => PyBytes::new(py, s.as_bytes()).into_py_any(py),
        (CType::WStr, Value::Str(s)) => s.into_py_any(py),
        (CType::CStr, Value::Bytes(b)) => PyBytes::new(py, b).into_py_any(py),
        (CType::Struct(_) | CType::Union(_) | CType::Array(..), Value::Bytes(b)) if cx.same_layout(ty) => {
            PyBytes::new(py, b).into_py_any(py)
        }
        (CType::Struct(_) | CType::Union(_) | CType::Array(..), _) if !ty.contains_pointer() => {
            let b =
                encode_value(&cx.host, ty, &for_encoding(v, ty, &cx.target)).map_err(|e| result_err(e.to_string()))?;
            PyBytes::new(py, &b).into_py_any(py)
        }
        (_, Value::Bytes(b)) => PyBytes::new(py, b).into_py_any(py),
        (_, Value::Str(s)) => s.into_py_any(py),
        (CType::Array(of, _) | CType::Pointer(of), Value::Array(items)) => {
            let l = PyList::empty(py);
            for it in items {
                l.append(to_py(py, it, of, cx)?)?;
            }
            l.into_py_any(py)
        }
        (CType::Array(of, _) | CType::Pointer(of), Value::Numbers(n)) => {
            let l = PyList::empty(py);
            for it in n.values() {
                l.append(to_py(py, &it, of, cx)?)?;
            }
            l.into_py_any(py)
        }
        (CType::Struct(d), Value::Struct(vals)) => {
            let mut out = Vec::new();
            for (f, fv) in d.fields.iter().zip(vals) {
                out.push(to_py(py, fv, &f.ty, cx)?);
            }
            PyTuple::new(py, out)?.into_py_any(py)
        }
        (_, other) => Err(result_err(format!("cannot give {} back as `{ty}`", other.kind()))),
    }
}

/// A value read back from the server, made encodable again: a union read back holds every member's
/// view ([`Value::Union`]); its largest member on the server (which covers all its bytes) is the one
/// written, at every depth.
fn for_encoding(v: &Value, ty: &CType, t: &Target) -> Value {
    match (ty, v) {
        (CType::Union(d), Value::Union(views)) => {
            let size = |f: &bitbridge::Field| t.layout(&f.ty).map(|l| l.size).unwrap_or(0);
            let (i, f) = d
                .fields
                .iter()
                .enumerate()
                .max_by_key(|(i, f)| (size(f), usize::MAX - i))
                .expect("unions have members");
            let view = views.get(i).cloned().unwrap_or(Value::Void);
            Value::Variant(i as u32, Box::new(for_encoding(&view, &f.ty, t)))
        }
        (CType::Struct(d), Value::Struct(vals)) => {
            Value::Struct(d.fields.iter().zip(vals).map(|(f, fv)| for_encoding(fv, &f.ty, t)).collect())
        }
        (CType::Array(of, _), Value::Array(items)) => {
            Value::Array(items.iter().map(|x| for_encoding(x, of, t)).collect())
        }
        _ => v.clone(),
    }
}
