//! `bitbridge.sharedctypes`' native half: typed objects in shared memory, laid out for a chosen target,
//! mapped by this process (the Python layer puts a ctypes view on [`PySharedArray::address`]) and by
//! any server they are passed to.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bitbridge::shared::{Backing, LockKind, SharedArray, SharedOptions};
use bitbridge::Value;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::ctype::{parse_target, target_name, PyCType};
use crate::errors::py_err;
use crate::PyServer;

/// What a shared object is passed to a call as: the server's view of its memory.
#[pyclass(frozen, name = "SharedValue", module = "bitbridge._native")]
#[derive(Debug)]
pub struct PyShared {
    pub value: Value,
}

/// A typed array (or single value) in shared memory.
#[pyclass(frozen, name = "SharedArray", module = "bitbridge._native")]
#[derive(Debug)]
pub struct PySharedArray {
    array: crate::Unlocked<SharedArray>,
    name: Option<String>,
    /// Per server (by process id): the region it was mapped as, so each server maps it once.
    mapped: Mutex<HashMap<u32, Value>>,
}

#[pymethods]
impl PySharedArray {
    /// Creates `length` elements of `ctype` laid out for `target`, zeroed. `name` makes it openable by
    /// other processes (`/dev/shm/bitbridge-<name>`; `FileExistsError`-like `ConnectionError` if taken);
    /// `recursive` chooses an RLock-like lock (else a plain one).
    #[new]
    #[pyo3(signature = (ctype, length, target, name=None, recursive=true))]
    fn new(
        py: Python<'_>,
        ctype: &PyCType,
        length: u32,
        target: &str,
        name: Option<String>,
        recursive: bool,
    ) -> PyResult<Self> {
        if length == 0 {
            return Err(PyValueError::new_err("a shared array needs at least one element"));
        }
        let mut o = SharedOptions::new(parse_target(target)?).raw();
        o = o.lock_kind(if recursive { LockKind::Recursive } else { LockKind::Plain });
        if let Some(n) = &name {
            o = o.named(n);
        }
        let array = o.array(ctype.ty.clone(), length).map_err(py_err(py))?;
        Ok(PySharedArray { array: crate::Unlocked::new(array), name, mapped: Mutex::new(HashMap::new()) })
    }

    /// Opens an object another process created with `name`; its type, length and target come from it.
    #[staticmethod]
    fn open(py: Python<'_>, name: String) -> PyResult<Self> {
        let array = SharedArray::open(&Backing::Named(name.clone())).map_err(py_err(py))?;
        Ok(PySharedArray { array: crate::Unlocked::new(array), name: Some(name), mapped: Mutex::new(HashMap::new()) })
    }

    /// The address of the first element in this process.
    #[getter]
    fn address(&self) -> usize {
        self.array.as_ptr() as usize
    }

    /// The data's size in bytes.
    #[getter]
    fn nbytes(&self) -> u64 {
        self.array.byte_len()
    }

    /// The number of elements.
    #[getter]
    fn length(&self) -> u32 {
        self.array.len()
    }

    /// The element type.
    #[getter]
    fn ctype(&self) -> PyCType {
        PyCType { ty: self.array.element_type().clone() }
    }

    /// The target the elements are laid out for.
    #[getter]
    fn target(&self) -> &'static str {
        target_name(self.array.target())
    }

    /// The name it was created or opened with.
    #[getter]
    fn name(&self) -> Option<String> {
        self.name.clone()
    }

    /// Takes the object's lock (shared by every process that maps it); with `timeout` (seconds), gives
    /// up and returns `False` when it passes. Releases the GIL while waiting.
    #[pyo3(signature = (block=true, timeout=None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
        let t = match (block, timeout) {
            (false, _) => Some(Duration::ZERO),
            (true, Some(s)) if s >= 0.0 => Some(Duration::from_secs_f64(s)),
            (true, _) => None,
        };
        py.detach(|| self.array.acquire(t)).map_err(py_err(py))
    }

    /// Releases the lock (`RuntimeError`-like `UnsupportedError` if this thread does not hold it).
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        self.array.release().map_err(py_err(py))
    }

    /// Maps the object into `server` (once per server) and returns what to pass for a pointer to it.
    fn share_with(&self, py: Python<'_>, server: &PyServer) -> PyResult<PyShared> {
        let pid = server.server.pid();
        let mut m = self.mapped.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = m.get(&pid) {
            return Ok(PyShared { value: v.clone() });
        }
        let v = py.detach(|| self.array.share_with(&server.server)).map_err(py_err(py))?;
        m.insert(pid, v.clone());
        Ok(PyShared { value: v })
    }
}
