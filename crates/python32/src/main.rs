//! `bitbridge-pyserver311` (shipped as `bitbridge-server-python3.11-i686`): a bitbridge server (the generic host, its greeting, transports,
//! timeouts and death reports) whose service is a Python `Server32` object in an embedded CPython.
//!
//! The client (`bitbridge.Client64`) sends `Start` with the module to import, the `sys.path` and `PATH`
//! additions and the constructor's keyword arguments, all as CBOR (`bitbridge-pyvalue`: data only, no
//! pickle). `bitbridge/_server32.py` (compiled into this program) then imports the module with
//! `sys.modules["bitbridge"]` set to itself, so the module's `from bitbridge import Server32` needs no
//! 64-bit package, finds the `Server32` subclass and constructs it. `Invoke` calls a method (or reads an
//! attribute, as `request32` does) with CBOR `(args, kwargs)`; a Python exception becomes a `Raised`
//! reply with its type name, value and traceback.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use bitbridge_server::{Handler, Raised};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

/// The `bitbridge` module seen by the 32-bit Python: `Server32` and the start-up logic.
const SERVER32_PY: &str = include_str!("../../python/python/bitbridge/_server32.py");

struct PythonHandler {
    /// The `Server32` subclass instance, once constructed.
    object: Mutex<Option<Py<PyAny>>>,
}

/// A Python exception as a `Raised` reply: its type name, and its value and traceback as text.
fn raised(py: Python<'_>, e: PyErr) -> Raised {
    let kind = e.get_type(py).name().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".into());
    let text = (|| -> PyResult<String> {
        let tb = py.import("traceback")?;
        let args = (e.get_type(py), e.value(py), e.traceback(py));
        let lines: Vec<String> = tb.getattr("format_exception")?.call1(args)?.extract()?;
        Ok(lines.concat())
    })()
    .unwrap_or_else(|_| e.to_string());
    let value = e.value(py).str().map(|s| s.to_string()).unwrap_or_default();
    Raised { kind, message: format!("{value}\n{}", text.trim_end()) }
}

impl PythonHandler {
    fn object(&self, py: Python<'_>) -> Result<Py<PyAny>, Raised> {
        self.object.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|o| o.clone_ref(py)).ok_or_else(|| Raised {
            kind: "bitbridge::NotStarted".into(),
            message: "the Server32 object was not constructed".into(),
        })
    }
}

impl Handler for PythonHandler {
    fn start(&self, options: &[u8]) -> Result<(), Raised> {
        Python::attach(|py| {
            let run = || -> PyResult<Py<PyAny>> {
                let opts = bitbridge_pyvalue::decode(py, options)?;
                let module = PyModule::from_code(
                    py,
                    &std::ffi::CString::new(SERVER32_PY).expect("no NUL in the source"),
                    c"bitbridge/_server32.py",
                    c"bitbridge",
                )?;
                Ok(module.getattr("_start")?.call1((opts,))?.unbind())
            };
            let obj = run().map_err(|e| raised(py, e))?;
            *self.object.lock().unwrap_or_else(|e| e.into_inner()) = Some(obj);
            Ok(())
        })
    }

    fn invoke(&self, method: &str, args: &[u8]) -> Result<Vec<u8>, Raised> {
        Python::attach(|py| {
            let obj = self.object(py)?;
            let run = || -> PyResult<Vec<u8>> {
                let decoded = bitbridge_pyvalue::decode(py, args)?;
                let (args, kwargs): (Bound<'_, PyTuple>, Bound<'_, PyDict>) = decoded.extract()?;
                let attr = obj.bind(py).getattr(method)?;
                let result = if attr.is_callable() { attr.call(args, Some(&kwargs))? } else { attr };
                bitbridge_pyvalue::encode(&result)
            };
            run().map_err(|e| raised(py, e))
        })
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, Raised> {
        Python::attach(|py| {
            let obj = self.object(py)?;
            obj.bind(py).getattr(name).and_then(|v| bitbridge_pyvalue::encode(&v)).map_err(|e| raised(py, e))
        })
    }

    fn stop(&self) {
        let obj = self.object.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(obj) = obj {
            Python::attach(|py| {
                if let Err(e) = obj.bind(py).call_method0("shutdown_handler") {
                    e.print(py);
                }
                drop(obj);
            });
        }
    }
}

fn main() -> ExitCode {
    // Requests carry whole arrays (8 MB for a million doubles): keep large buffers on the heap, where
    // freed memory is reused, instead of glibc's default of a fresh mmap for every allocation over 128
    // KiB, which page-faults all of it in and unmaps it again on every request (most of a large
    // request's time before this).
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 512 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
    // The interpreter is started once, here; PYTHONHOME (set by the client) says where its standard
    // library is. The GIL is released afterwards, so the server's workers take it per request.
    Python::initialize();
    bitbridge_server::run(Some(Arc::new(PythonHandler { object: Mutex::new(None) })))
}
