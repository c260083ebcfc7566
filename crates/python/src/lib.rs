//! `bitbridge._native`: the Python package's extension module, thin over the `bitbridge` crate.
//!
//! It holds no protocol or layout logic of its own: servers, libraries and functions are the client
//! crate's, values are converted from and to Python objects by [`convert`], and errors become the
//! exception classes of `bitbridge._errors`. The public Python API (`bitbridge`, `bitbridge.ctypes`,
//! `bitbridge.sharedctypes`) is written in Python on top of it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use bitbridge::{
    Arch, CType, Declarations, Direction, LibraryOptions, Os, Server, ServerOptions, Signature, Target, Value,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use pyo3::IntoPyObjectExt;

mod convert;
mod ctype;
mod errors;
mod service;
mod shared;
mod unlocked;

use convert::{to_py, to_value, write_back, Cx};
use ctype::{host, parse_arch, parse_target, target_name, PyCType};
use errors::py_err;
pub(crate) use unlocked::Unlocked;

/// Server options from keyword arguments (`bitbridge.CDLL(path, **options)`); an unknown key is a
/// `TypeError` naming it. `server_dir` (a folder holding `bitbridge-server-<arch>` and
/// `bitbridge-server-windows-<arch>/bitbridge-server.exe`, as the wheel ships them) is returned apart:
/// which file it means depends on the library's target. `wine` (the Wine loader) and `wine_prefix` (a
/// folder) are for Windows DLLs.
pub(crate) fn server_options(kw: Option<&Bound<'_, PyDict>>) -> PyResult<(ServerOptions, Option<PathBuf>)> {
    let mut o = ServerOptions::new();
    let mut dir = None;
    let Some(kw) = kw else { return Ok((o, default_server_dir())) };
    let secs = |v: &Bound<'_, PyAny>, k: &str| -> PyResult<Duration> {
        let s: f64 = v.extract()?;
        Duration::try_from_secs_f64(s)
            .map_err(|_| PyValueError::new_err(format!("{k} must be a non-negative number of seconds, not {s}")))
    };
    for (k, v) in kw.iter() {
        let key: String = k.extract()?;
        if v.is_none() {
            continue;
        }
        o = match key.as_str() {
            "server_path" => o.server_path(v.extract::<PathBuf>()?),
            "server_dir" => {
                dir = Some(v.extract::<PathBuf>()?);
                o
            }
            "library_dirs" => {
                let mut o = o;
                for d in v.extract::<Vec<PathBuf>>()? {
                    o = o.library_dir(d);
                }
                o
            }
            "env" => {
                let mut o = o;
                for (ek, ev) in v.cast::<PyDict>()?.iter() {
                    o = o.env(ek.extract::<OsString>()?, ev.extract::<OsString>()?);
                }
                o
            }
            "wine" => o.wine(v.extract::<PathBuf>()?),
            "wine_prefix" => o.wine_prefix(v.extract::<PathBuf>()?),
            "startup_timeout" => o.startup_timeout(secs(&v, &key)?),
            "call_timeout" => o.call_timeout(secs(&v, &key)?),
            "restart_on_failure" => o.restart_on_failure(v.extract()?),
            "concurrent" => o.concurrent(v.extract()?),
            "shared_memory" => o.shared_memory(v.extract()?),
            "spin" => o.spin(secs(&v, &key)?),
            "load_timeout" => o.load_timeout(secs(&v, &key)?),
            "wait" => {
                let name: String = v.extract()?;
                let mode = bitbridge::WaitMode::from_name(&name).ok_or_else(|| {
                    PyValueError::new_err(format!("wait must be 'adaptive', 'spin' or 'sleep', not {name:?}"))
                })?;
                o.wait_mode(mode)
            }
            other => {
                return Err(PyTypeError::new_err(format!(
                    "unknown server option {other:?}: use server_path, server_dir, library_dirs, env, wine, wine_prefix, startup_timeout, load_timeout, call_timeout, restart_on_failure, concurrent, shared_memory, spin or wait"
                )))
            }
        };
    }
    if kw.get_item("server_path")?.is_some_and(|p| !p.is_none()) {
        dir = None; // an explicit server wins
        return Ok((o, dir));
    }
    Ok((o, dir.or_else(default_server_dir)))
}

/// The package's own servers (`bitbridge/_servers`, set at import), unless the environment names a
/// server (`BITBRIDGE_SERVER_DIR`, `BITBRIDGE_SERVER_I686`, `BITBRIDGE_SERVER_X86_64`,
/// `BITBRIDGE_SERVER_WINDOWS_I686`, `BITBRIDGE_SERVER_WINDOWS_X86_64`).
static DEFAULT_SERVER_DIR: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

fn default_server_dir() -> Option<PathBuf> {
    let chosen = [
        "BITBRIDGE_SERVER_DIR",
        "BITBRIDGE_SERVER_I686",
        "BITBRIDGE_SERVER_X86_64",
        "BITBRIDGE_SERVER_WINDOWS_I686",
        "BITBRIDGE_SERVER_WINDOWS_X86_64",
    ]
    .iter()
    .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
    if chosen {
        return None;
    }
    DEFAULT_SERVER_DIR.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Sets the folder of the servers used when no option or environment variable names one (the package
/// calls it at import with its `_servers` folder).
#[pyfunction]
fn set_default_server_dir(dir: Option<PathBuf>) {
    *DEFAULT_SERVER_DIR.lock().unwrap_or_else(|e| e.into_inner()) = dir;
}

/// The options with the server for `target` from `dir`, if one was given (a Windows server in its own
/// folder there, with the DLL it needs beside it: see `bitbridge::server_relative_path`).
fn with_server_dir(o: ServerOptions, dir: Option<PathBuf>, target: Target) -> ServerOptions {
    match dir {
        Some(d) => o.server_path(d.join(bitbridge::server_relative_path(target))),
        None => o,
    }
}

/// Whether `path` is a bare name of a Windows DLL (`kernel32.dll`): no folder, ending in `.dll` (any
/// case), and no such file here (as `bitbridge::LibraryOptions::open` decides).
fn is_dll_name(path: &std::path::Path) -> bool {
    path.components().count() == 1
        && !path.to_string_lossy().contains('/')
        && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("dll"))
        && !path.exists()
}

/// A server process hosting libraries of one architecture.
#[pyclass(frozen, name = "Server", module = "bitbridge._native")]
#[derive(Debug)]
pub struct PyServer {
    pub server: Unlocked<Server>,
}

impl PyServer {
    pub fn wrap(server: Server) -> PyServer {
        PyServer { server: Unlocked::new(server) }
    }

    fn cx(&self) -> Cx<'_> {
        Cx { target: self.server.target(), host: host(), server: Some(&self.server) }
    }
}

#[pymethods]
impl PyServer {
    /// Starts a server for `arch` (`"i686"` or `"x86_64"` for Linux libraries, `"win32"` or `"win64"`
    /// for Windows DLLs under Wine) with the given options.
    #[staticmethod]
    #[pyo3(signature = (arch, **options))]
    fn spawn(py: Python<'_>, arch: &str, options: Option<&Bound<'_, PyDict>>) -> PyResult<PyServer> {
        let target = match arch {
            "win32" | "win64" => parse_target(arch)?,
            _ => Target { arch: parse_arch(arch)?, os: Os::Linux },
        };
        let (o, dir) = server_options(options)?;
        let o = with_server_dir(o, dir, target);
        let server = py.detach(|| o.spawn_for(target)).map_err(py_err(py))?;
        Ok(PyServer { server: Unlocked::new(server) })
    }

    /// Loads another library into this server.
    fn load(&self, py: Python<'_>, path: PathBuf) -> PyResult<PyLibrary> {
        let lib = py.detach(|| self.server.load(&path)).map_err(py_err(py))?;
        Ok(PyLibrary { lib: Unlocked::new(lib) })
    }

    /// The server's target: `"i686"`, `"x86_64"`, `"win32"` or `"win64"`.
    #[getter]
    fn target(&self) -> &'static str {
        target_name(self.server.target())
    }

    /// The server's process id.
    #[getter]
    fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// Whether the server is running.
    #[getter]
    fn alive(&self) -> bool {
        self.server.is_alive()
    }

    /// Allocates `size` bytes of server memory aligned to `align`; returns the server's address.
    #[pyo3(signature = (size, align=16))]
    fn alloc(&self, py: Python<'_>, size: u64, align: u32) -> PyResult<u64> {
        py.detach(|| self.server.alloc(size, align)).map_err(py_err(py))
    }

    /// Frees memory from `alloc`.
    fn free(&self, py: Python<'_>, addr: u64) -> PyResult<()> {
        py.detach(|| self.server.free(addr)).map_err(py_err(py))
    }

    /// Copies `data` to server memory at `addr`.
    fn write(&self, py: Python<'_>, addr: u64, data: Vec<u8>) -> PyResult<()> {
        py.detach(|| self.server.write(addr, &data)).map_err(py_err(py))
    }

    /// Reads `size` bytes of server memory at `addr`.
    fn read<'py>(&self, py: Python<'py>, addr: u64, size: u64) -> PyResult<Bound<'py, PyBytes>> {
        let b = py.detach(|| self.server.read(addr, size)).map_err(py_err(py))?;
        Ok(PyBytes::new(py, &b))
    }

    /// Reads the NUL-terminated string at `addr` (without the NUL).
    fn read_cstring<'py>(&self, py: Python<'py>, addr: u64) -> PyResult<Bound<'py, PyBytes>> {
        let b = py.detach(|| self.server.read_cstring(addr)).map_err(py_err(py))?;
        Ok(PyBytes::new(py, &b))
    }

    /// Reads a value of `ctype` at `addr`, as `Function.__call__` returns values of that type
    /// (aggregates as bytes laid out for this process).
    fn read_value(&self, py: Python<'_>, addr: u64, ctype: &PyCType) -> PyResult<Py<PyAny>> {
        let v = py.detach(|| self.server.read_value(addr, &ctype.ty)).map_err(py_err(py))?;
        to_py(py, &v, &ctype.ty, &self.cx())
    }

    /// Registers `invoke` as a C function pointer of type `ctype` (a function CType) in this server and
    /// returns the handle keeping it alive (its `address` is what the library calls).
    ///
    /// `invoke(args)` gets a list with one entry per parameter: a number for scalars, `bytes` laid out
    /// for this process for the memory behind a non-NULL pointer to data without pointers (an `int`
    /// address otherwise, `None` for NULL), `bytes`/`str` for strings. It returns `(result, outs)`,
    /// `outs` being `None` or a list with, per pointer parameter, the new bytes of the pointed-to memory
    /// (or `None` to leave it). An exception in `invoke` fails the call into the library with
    /// `CallbackError`, its traceback in the message.
    fn callback(&self, py: Python<'_>, ctype: &PyCType, invoke: Py<PyAny>) -> PyResult<PyCallback> {
        let CType::FnPtr(sig) = &ctype.ty else {
            return Err(PyTypeError::new_err(format!("`{}` is not a function type", ctype.ty)));
        };
        let sig: Signature = (**sig).clone();
        let target = self.server.target();
        let sig2 = sig.clone();
        let f = move |args: &mut [Value]| -> Value {
            Python::attach(|py| match run_callback(py, &invoke, &sig2, target, args) {
                Ok(v) => v,
                Err(e) => {
                    let text = format_exception(py, &e);
                    std::panic::panic_any(text)
                }
            })
        };
        let cb = py.detach(|| self.server.callback(sig, f)).map_err(py_err(py))?;
        let address = cb.value().as_pointer().unwrap_or(0);
        Ok(PyCallback { _cb: Unlocked::new(cb), address })
    }

    /// Shuts the server down; returns `(exit_code, signal, stdout, stderr)` (one of the first two is
    /// `None`).
    pub(crate) fn shutdown(&self, py: Python<'_>) -> PyResult<(Option<i32>, Option<i32>, String, String)> {
        let out = py.detach(|| self.server.shutdown()).map_err(py_err(py))?;
        let (code, signal) = match out.status {
            bitbridge::ExitReason::Code(c) => (Some(c), None),
            bitbridge::ExitReason::Signal(s) => (None, Some(s)),
            _ => (None, None),
        };
        Ok((code, signal, out.stdout, out.stderr))
    }

    fn __repr__(&self) -> String {
        format!("<bitbridge Server {} pid {}>", target_name(self.server.target()), self.server.pid())
    }
}

/// Runs a Python callback for the library: arguments to Python objects, the result and the pointed-to
/// memory back.
fn run_callback(
    py: Python<'_>,
    invoke: &Py<PyAny>,
    sig: &Signature,
    target: bitbridge::Target,
    args: &mut [Value],
) -> PyResult<Value> {
    let cx = Cx { target, host: host(), server: None };
    let list = PyList::empty(py);
    for (p, v) in sig.params.iter().zip(args.iter()) {
        let obj = match (&p.ty, v) {
            (CType::Pointer(_), Value::Pointer(0)) => py.None(),
            (CType::Pointer(to), v)
                if !matches!(v, Value::Pointer(_)) && !to.contains_pointer() && **to != CType::Void =>
            {
                let b = bitbridge::proto::encode_value(&cx.host, to, v)
                    .map_err(|e| PyValueError::new_err(format!("callback argument: {e}")))?;
                PyBytes::new(py, &b).into_py_any(py)?
            }
            (t, v) => to_py(py, v, t, &cx)?,
        };
        list.append(obj)?;
    }
    let result = invoke.bind(py).call1((list,))?;
    let (ret, outs): (Bound<'_, PyAny>, Bound<'_, PyAny>) = result.extract()?;
    if !outs.is_none() {
        for (i, (p, out)) in sig.params.iter().zip(outs.try_iter()?).enumerate() {
            let out = out?;
            if let (CType::Pointer(to), false) = (&p.ty, out.is_none()) {
                if p.dir != Direction::In && !matches!(args[i], Value::Pointer(_)) {
                    let b: Vec<u8> = out.extract()?;
                    args[i] = bitbridge::proto::decode_value(&cx.host, to, &b)
                        .map_err(|e| PyValueError::new_err(format!("callback argument {}: {e}", i + 1)))?;
                }
            }
        }
    }
    if sig.ret == CType::Void {
        return Ok(Value::Void);
    }
    to_value(&ret, &sig.ret, &cx).map_err(|e| e.at("the callback's result").into_py(py, "callback"))
}

/// The exception with its traceback, as Python prints it.
fn format_exception(py: Python<'_>, e: &PyErr) -> String {
    let text = || -> PyResult<String> {
        let tb = py.import("traceback")?;
        let lines = tb.getattr("format_exception")?.call1((e.value(py),))?;
        let s: Vec<String> = lines.extract()?;
        Ok(s.concat())
    };
    text().unwrap_or_else(|_| e.to_string())
}

/// A callback registered in a server; it lives as long as this object.
#[pyclass(frozen, name = "Callback", module = "bitbridge._native")]
#[derive(Debug)]
pub struct PyCallback {
    _cb: Unlocked<bitbridge::Callback>,
    /// The server's address of the callback's code.
    #[pyo3(get)]
    address: u64,
}

/// A library loaded in a server.
#[pyclass(frozen, name = "Library", module = "bitbridge._native")]
#[derive(Debug)]
pub struct PyLibrary {
    lib: Unlocked<bitbridge::Library>,
}

#[pymethods]
impl PyLibrary {
    /// Opens the library at `path` in a server of its target (read from the file: an ELF library or a
    /// Windows DLL, hosted under Wine). A bare name (`"libm.so.6"`) is looked up for `arch`; a bare
    /// name ending in `.dll` (`"kernel32.dll"`) is a Windows DLL, for `arch` or x86_64.
    #[staticmethod]
    #[pyo3(signature = (path, arch=None, **options))]
    fn open(
        py: Python<'_>,
        path: PathBuf,
        arch: Option<&str>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyLibrary> {
        let (server, dir) = server_options(options)?;
        let arch = arch.map(parse_arch).transpose()?;
        let mut o = LibraryOptions::new(&path);
        if let Some(a) = arch {
            o = o.arch(a);
        }
        let lib = py
            .detach(|| {
                // The server's file for the library's target: the architecture asked for, else the file's
                // own, and the file's OS (an unreadable file keeps the options as they are, and fails in
                // open with its own error). A bare `*.dll` name is a Windows DLL, as `open` takes it.
                let target = if is_dll_name(&path) {
                    Some(Target { arch: arch.unwrap_or(Arch::X86_64), os: Os::Windows })
                } else {
                    let info = bitbridge::inspect(&path)
                        .ok()
                        .or_else(|| o.resolve().ok().and_then(|p| bitbridge::inspect(&p).ok()));
                    match (arch, info) {
                        (Some(a), info) => Some(Target { arch: a, os: info.map_or(Os::Linux, |i| i.os) }),
                        (None, Some(i)) => Some(Target { arch: i.arch, os: i.os }),
                        (None, None) => None,
                    }
                };
                let server = match (&dir, target) {
                    (Some(_), Some(t)) => with_server_dir(server, dir, t),
                    _ => server,
                };
                o.server(server).open()
            })
            .map_err(py_err(py))?;
        Ok(PyLibrary { lib: Unlocked::new(lib) })
    }

    /// The server hosting the library.
    #[getter]
    fn server(&self) -> PyServer {
        PyServer::wrap(self.lib.server().clone())
    }

    /// The path the library was loaded from.
    #[getter]
    fn path(&self) -> &str {
        self.lib.path()
    }

    /// Prepares function `name` returning `ret` and taking `params` (`(CType, direction)` pairs).
    /// `use_last_error` captures `GetLastError()` after each call (Windows servers only: a Linux
    /// server refuses it with `SignatureError`).
    #[pyo3(signature = (name, ret, params, conv="cdecl", use_errno=false, variadic=false, use_last_error=false))]
    #[allow(clippy::too_many_arguments)]
    fn function(
        &self,
        py: Python<'_>,
        name: &str,
        ret: &PyCType,
        params: Vec<(PyCType, String)>,
        conv: &str,
        use_errno: bool,
        variadic: bool,
        use_last_error: bool,
    ) -> PyResult<PyFunction> {
        let mut sig = ctype::signature(ret, params, conv, use_errno, variadic)?;
        sig.use_last_error = use_last_error;
        let f = py.detach(|| self.lib.function(name, sig)).map_err(py_err(py))?;
        Ok(PyFunction::new(f, self.lib.server().clone()))
    }

    /// Prepares a function from its C prototype (`"double sum(const double *a, int n)"`).
    fn function_from_c(&self, py: Python<'_>, prototype: &str) -> PyResult<PyFunction> {
        let f = py.detach(|| self.lib.function_from_c(prototype)).map_err(py_err(py))?;
        Ok(PyFunction::new(f, self.lib.server().clone()))
    }

    /// Prepares function `name` with the signature `decls` gives it.
    fn declare(&self, py: Python<'_>, decls: &PyDeclarations, name: &str) -> PyResult<PyFunction> {
        let f = py.detach(|| self.lib.declare(&decls.decls, name)).map_err(py_err(py))?;
        Ok(PyFunction::new(f, self.lib.server().clone()))
    }

    /// The server's address of an exported symbol.
    fn symbol(&self, py: Python<'_>, name: &str) -> PyResult<u64> {
        py.detach(|| self.lib.symbol(name)).map_err(py_err(py))
    }
}

/// A prepared function: call it with Python objects.
#[pyclass(frozen, name = "Function", module = "bitbridge._native")]
#[derive(Debug)]
pub struct PyFunction {
    f: Unlocked<bitbridge::Function>,
    server: Unlocked<Server>,
    /// Which parameters' memory comes back (their index and pointee type).
    outs: Vec<(usize, CType)>,
}

impl PyFunction {
    fn new(f: bitbridge::Function, server: Server) -> PyFunction {
        let outs = f
            .signature()
            .params
            .iter()
            .enumerate()
            .filter(|(_, p)| p.dir != Direction::In)
            .filter_map(|(i, p)| match &p.ty {
                CType::Pointer(to) => Some((i, (**to).clone())),
                _ => None,
            })
            .collect();
        PyFunction { f: Unlocked::new(f), server: Unlocked::new(server), outs }
    }

    fn cx(&self) -> Cx<'_> {
        Cx { target: self.server.target(), host: host(), server: Some(&self.server) }
    }

    fn values(&self, py: Python<'_>, args: &Bound<'_, PyTuple>, cx: &Cx<'_>) -> PyResult<Vec<Value>> {
        let params = &self.f.signature().params;
        if args.len() != params.len() {
            return Err(errors::argument(
                py,
                format!("`{}` takes {} arguments ({} given)", self.f.name(), params.len(), args.len()),
            ));
        }
        let mut values = Vec::with_capacity(params.len());
        for (i, (a, p)) in args.iter().zip(params).enumerate() {
            let v =
                to_value(&a, &p.ty, cx).map_err(|e| e.at(format!("argument {}", i + 1)).into_py(py, self.f.name()))?;
            values.push(v);
        }
        Ok(values)
    }

    fn finish(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        out: bitbridge::Outcome,
        cx: &Cx<'_>,
    ) -> PyResult<Py<PyAny>> {
        for (i, to) in &self.outs {
            if let (Some(v), Ok(arg)) = (out.out(*i), args.get_item(*i)) {
                write_back(&arg, to, v, cx)?;
            }
        }
        to_py(py, &out.ret, &self.f.signature().ret, cx)
    }
}

#[pymethods]
impl PyFunction {
    /// Calls the function with one Python object per parameter; returns the result as ctypes would
    /// (`int`, `float`, `bytes` for `char *`, `None` for `void`, an `int` address for pointers, `bytes`
    /// laid out for this process for structs and unions). Memory behind out/in-out pointers is written
    /// back into the objects passed. Raises `ArgumentError`, `ServerDied`, `Timeout`, `CallbackError`.
    #[pyo3(signature = (*args))]
    fn __call__(&self, py: Python<'_>, args: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        let cx = self.cx();
        let values = self.values(py, args, &cx)?;
        let out = py.detach(|| self.f.call(&values)).map_err(py_err(py))?;
        self.finish(py, args, out, &cx)
    }

    /// Like calling it, with a timeout in seconds for this call; returns `(result, errno, last_error)`
    /// (`errno` is `None` unless the function was prepared with `use_errno`, `last_error` unless with
    /// `use_last_error`). `extra` are the variadic arguments as
    /// `(CType, value)` pairs.
    #[pyo3(signature = (args, extra=None, timeout=None))]
    fn call(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        extra: Option<Vec<(PyCType, Bound<'_, PyAny>)>>,
        timeout: Option<f64>,
    ) -> PyResult<(Py<PyAny>, Option<i32>, Option<u32>)> {
        let cx = self.cx();
        let values = self.values(py, args, &cx)?;
        let mut variadic = Vec::new();
        for (i, (t, v)) in extra.unwrap_or_default().into_iter().enumerate() {
            let val = to_value(&v, &t.ty, &cx)
                .map_err(|e| e.at(format!("argument {}", values.len() + i + 1)).into_py(py, self.f.name()))?;
            variadic.push((t.ty, val));
        }
        let timeout = timeout
            .map(|s| Duration::try_from_secs_f64(s).map_err(|_| PyValueError::new_err("timeout must be non-negative")))
            .transpose()?;
        let out = py
            .detach(|| match (variadic.is_empty(), timeout) {
                (true, Some(t)) => self.f.call_timeout(&values, t),
                (true, None) => self.f.call(&values),
                (false, _) => self.f.call_variadic(&values, &variadic),
            })
            .map_err(py_err(py))?;
        let (errno, last_error) = (out.errno, out.last_error);
        Ok((self.finish(py, args, out, &cx)?, errno, last_error))
    }

    /// The function's name.
    #[getter]
    fn name(&self) -> &str {
        self.f.name()
    }

    /// The server's address of the function (pass it where a function pointer is expected).
    #[getter]
    fn address(&self) -> u64 {
        self.f.address()
    }

    /// The return type.
    #[getter]
    fn restype(&self) -> PyCType {
        PyCType { ty: self.f.signature().ret.clone() }
    }

    /// The parameters as `(CType, direction)` pairs.
    #[getter]
    fn params(&self) -> Vec<(PyCType, &'static str)> {
        self.f
            .signature()
            .params
            .iter()
            .map(|p| {
                let d = match p.dir {
                    Direction::In => "in",
                    Direction::Out => "out",
                    Direction::InOut => "inout",
                };
                (PyCType { ty: p.ty.clone() }, d)
            })
            .collect()
    }

    /// Whether the function was declared with `...`.
    #[getter]
    fn variadic(&self) -> bool {
        self.f.signature().variadic
    }

    fn __repr__(&self) -> String {
        format!("<bitbridge Function {}: {}>", self.f.name(), self.f.signature())
    }
}

/// C declarations parsed from header text.
#[pyclass(frozen, name = "Declarations", module = "bitbridge._native")]
#[derive(Debug)]
pub struct PyDeclarations {
    decls: Declarations,
}

#[pymethods]
impl PyDeclarations {
    /// Parses header text (`defines` are `-D NAME=VALUE` pairs, applied first). Raises
    /// `DeclarationError` with the line and column.
    #[new]
    #[pyo3(signature = (text, defines=None))]
    fn new(py: Python<'_>, text: &str, defines: Option<Vec<(String, String)>>) -> PyResult<PyDeclarations> {
        let mut decls = Declarations::new();
        for (k, v) in defines.unwrap_or_default() {
            decls.define(&k, &v).map_err(py_err(py))?;
        }
        decls.add(text).map_err(py_err(py))?;
        Ok(PyDeclarations { decls })
    }

    /// The names of the declared functions.
    fn functions(&self) -> Vec<String> {
        self.decls.functions().map(|p| p.name.clone()).collect()
    }

    /// A declared type by name (`"struct Point"`, a typedef name), or `None`.
    fn type_named(&self, name: &str) -> Option<PyCType> {
        self.decls.type_named(name).map(|ty| PyCType { ty: ty.clone() })
    }

    /// A `#define` or enum constant, or `None`.
    fn constant(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        use bitbridge::Constant;
        Ok(match self.decls.constant(name) {
            None => py.None(),
            Some(Constant::Int(i)) => i.into_py_any(py)?,
            Some(Constant::UInt(u)) => u.into_py_any(py)?,
            Some(Constant::Float(f)) => f.into_py_any(py)?,
            Some(Constant::Str(s)) => s.into_py_any(py)?,
            Some(_) => py.None(),
        })
    }

    /// Every constant, as a dict.
    fn constants(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let d = PyDict::new(py);
        for (k, _) in self.decls.constants() {
            d.set_item(k, self.constant(py, k)?)?;
        }
        Ok(d.unbind())
    }
}

/// The package's version and the servers' protocol.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Opens a library for the benchmark's Rust rows with the servers the Python rows use.
fn bench_open(library: &std::path::Path) -> bitbridge::Result<bitbridge::Library> {
    let info = bitbridge::inspect(library)?;
    let target = Target { arch: info.arch, os: info.os };
    LibraryOptions::new(library).server(with_server_dir(ServerOptions::new(), default_server_dir(), target)).open()
}

/// Calls `add(a, b)` of `library` `n` times through the Rust API (no Python in the loop) and returns
/// the seconds per call: the benchmark's "Rust API" row, measured in the same run as the Python rows.
#[pyfunction]
#[pyo3(signature = (library, n, symbol="add"))]
fn bench_rust_add(py: Python<'_>, library: PathBuf, n: u32, symbol: &str) -> PyResult<f64> {
    py.detach(|| -> bitbridge::Result<f64> {
        let lib = bench_open(&library)?;
        let add = lib.function(symbol, Signature::new(CType::Int).arg(CType::Int).arg(CType::Int))?;
        for _ in 0..1000 {
            add.call(&[1.into(), 2.into()])?;
        }
        let t = std::time::Instant::now();
        for i in 0..n {
            add.call(&[Value::Int(i64::from(i & 0xffff)), 2.into()])?;
        }
        Ok(t.elapsed().as_secs_f64() / f64::from(n.max(1)))
    })
    .map_err(py_err(py))
}

/// Sums `len` doubles through the Rust API with `double symbol(const double *, int)`: one warm-up call,
/// then `n` timed calls, each converting a `Vec<f64>` to bytes as a Rust caller would; returns the
/// seconds of each (the benchmark's "Rust API" row for bulk data).
#[pyfunction]
#[pyo3(signature = (library, len, n, symbol="sum4"))]
fn bench_rust_sum(py: Python<'_>, library: PathBuf, len: u32, n: u32, symbol: &str) -> PyResult<Vec<f64>> {
    py.detach(|| -> bitbridge::Result<Vec<f64>> {
        let lib = bench_open(&library)?;
        let sum = lib.function(symbol, Signature::new(CType::Double).arg(CType::ptr(CType::Double)).arg(CType::Int))?;
        let data: Vec<f64> = (0..len).map(f64::from).collect();
        let call = || {
            let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            sum.call(&[Value::Bytes(bytes), Value::Int(i64::from(len))])
        };
        call()?;
        let mut times = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let t = std::time::Instant::now();
            call()?;
            times.push(t.elapsed().as_secs_f64());
        }
        Ok(times)
    })
    .map_err(py_err(py))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCType>()?;
    m.add_class::<PyServer>()?;
    m.add_class::<PyLibrary>()?;
    m.add_class::<PyFunction>()?;
    m.add_class::<PyCallback>()?;
    m.add_class::<PyDeclarations>()?;
    m.add_class::<shared::PySharedArray>()?;
    m.add_class::<shared::PyShared>()?;
    m.add_class::<service::PyService>()?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(set_default_server_dir, m)?)?;
    m.add_function(wrap_pyfunction!(bench_rust_add, m)?)?;
    m.add_function(wrap_pyfunction!(bench_rust_sum, m)?)?;
    m.add("HOST_TARGET", target_name(host()))?;
    Ok(())
}
