//! Rust [`bitbridge::Error`]s as Python exceptions.
//!
//! The exception classes are defined in Python (`bitbridge/_errors.py`), because several of them also
//! derive from the builtin exception ctypes raises in the same situation (`OSError` for a library that
//! cannot be loaded, `AttributeError` for a missing function, `ctypes.ArgumentError`, `TimeoutError`),
//! which `create_exception!` cannot express. Each variant maps to the class of the same name; the
//! fields a program needs become attributes.

use bitbridge::{Error, ExitReason};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;

/// The message of `e` followed by its `source()` chain, as one line per cause (`a: b: c`).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Builds an exception of the class `name` in `bitbridge._errors` with `message` and attributes.
pub fn raise(py: Python<'_>, name: &str, message: String, attrs: &[(&str, Py<PyAny>)]) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let module = py.import("bitbridge._errors")?;
        let class = module.getattr(name)?;
        let exc = class.call1((message.clone(),))?;
        for (k, v) in attrs {
            exc.setattr(*k, v)?;
        }
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|e| {
        // The package is broken if its own module is missing; say both things.
        PyRuntimeError::new_err(format!("{message} (and bitbridge._errors failed: {e})"))
    })
}

/// Converts a client error into the matching Python exception.
pub fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let message = chain(&e);
    let (name, attrs): (&str, Vec<(&str, Py<PyAny>)>) = match &e {
        Error::LibraryNotFound { path, .. } => ("LibraryNotFound", vec![("path", o(py, path.display().to_string()))]),
        Error::NotALibrary { path, .. } => ("NotALibrary", vec![("path", o(py, path.display().to_string()))]),
        Error::UnsupportedArchitecture { path, .. } => {
            ("UnsupportedArchitecture", vec![("path", o(py, path.display().to_string()))])
        }
        Error::ServerNotFound { arch, .. } => ("ServerNotFound", vec![("arch", o(py, arch.to_string()))]),
        Error::UntrustedServer { path, .. } => ("UntrustedServer", vec![("path", o(py, path.display().to_string()))]),
        Error::SharedObject { object, .. } => ("SharedObjectError", vec![("object", o(py, object.clone()))]),
        Error::LoadTimeout { path, pid, .. } => {
            ("LoadTimeout", vec![("path", o(py, path.clone())), ("pid", o(py, *pid))])
        }
        Error::DuplicateSystemLibrary { path, loaded, .. } => (
            "DuplicateSystemLibrary",
            vec![("path", o(py, path.display().to_string())), ("loaded", o(py, loaded.display().to_string()))],
        ),
        Error::WineNotFound { arch, .. } => ("ServerNotFound", vec![("arch", o(py, arch.to_string()))]),
        Error::WinePrefix { .. } => ("SpawnError", vec![]),
        Error::Spawn { .. } => ("SpawnError", vec![]),
        Error::Handshake(_) => ("HandshakeError", vec![]),
        Error::ServerDied { pid, status, stderr } => {
            let (code, signal) = match status {
                ExitReason::Code(c) => (Some(*c), None),
                ExitReason::Signal(s) => (None, Some(*s)),
                _ => (None, None),
            };
            (
                "ServerDied",
                vec![
                    ("pid", o(py, pid)),
                    ("exit_code", o(py, code)),
                    ("signal", o(py, signal)),
                    ("stderr", o(py, stderr.clone())),
                ],
            )
        }
        Error::Timeout { pid } => ("Timeout", vec![("pid", o(py, pid))]),
        Error::StartupTimeout { pid, .. } => ("StartupTimeout", vec![("pid", o(py, pid))]),
        Error::MessageTooLarge { .. } => ("MessageTooLarge", vec![]),
        Error::Unsupported(_) => ("UnsupportedError", vec![]),
        Error::ShutDown => ("ShutDown", vec![]),
        Error::Forked { pid } => ("ForkedError", vec![("pid", o(py, *pid))]),
        Error::Load { path, missing, .. } => {
            ("LoadError", vec![("path", o(py, path.clone())), ("missing", o(py, missing.clone()))])
        }
        Error::SymbolNotFound { symbol, .. } => ("SymbolNotFound", vec![("symbol", o(py, symbol.clone()))]),
        Error::Declaration { origin, line, column, .. } => (
            "DeclarationError",
            vec![("origin", o(py, origin.clone())), ("line", o(py, line)), ("column", o(py, column))],
        ),
        Error::NotDeclared { function, .. } => ("NotDeclared", vec![("function", o(py, function.clone()))]),
        Error::Signature { .. } => ("SignatureError", vec![]),
        Error::ValueType(_) => ("ResultError", vec![]),
        Error::Argument { .. } => ("ArgumentError", vec![]),
        Error::Result { .. } => ("ResultError", vec![]),
        Error::Callback { .. } => ("CallbackError", vec![]),
        Error::Raised { kind, message, .. } => {
            // A Python server's message is the exception's value, then its traceback.
            let (value, traceback) = match message.split_once("\nTraceback (most recent call last):") {
                Some((v, tb)) => (v.to_owned(), format!("Traceback (most recent call last):{tb}")),
                None => (message.clone(), String::new()),
            };
            let short = format!("{kind}: {value}");
            // The traceback's last line is that same line: say it once.
            let traceback = match traceback.trim_end().rsplit_once('\n') {
                Some((head, last)) if last.trim() == short.trim() => head.to_owned(),
                _ => traceback,
            };
            return raise(
                py,
                "Server32Error",
                if traceback.is_empty() { short } else { format!("{short}\n{traceback}") },
                &[("name", o(py, kind.clone())), ("value", o(py, value)), ("traceback", o(py, traceback))],
            );
        }
        Error::Protocol(_) | Error::Remote(_) | Error::Value { .. } => ("ProtocolError", vec![]),
        Error::Io(_) => ("ConnectionError", vec![]),
        _ => ("Error", vec![]),
    };
    raise(py, name, message, &attrs)
}

/// `map_err` helper: `result.map_err(py_err(py))`.
pub fn py_err(py: Python<'_>) -> impl Fn(Error) -> PyErr + '_ {
    move |e| to_py(py, e)
}

/// An `ArgumentError` (also a `ctypes.ArgumentError`) naming the argument.
pub fn argument(py: Python<'_>, message: String) -> PyErr {
    raise(py, "ArgumentError", message, &[])
}

/// A Python object for an attribute (None if it cannot be built).
fn o<'py, T: IntoPyObject<'py>>(py: Python<'py>, v: T) -> Py<PyAny> {
    v.into_py_any(py).unwrap_or_else(|_| py.None())
}
