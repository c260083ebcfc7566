//! `bitbridge._native.Service`: a custom server whose values are Python data (the 32-bit Python server
//! of `bitbridge.Client64`), encoded with `bitbridge-pyvalue` (CBOR; no pickle).

use std::path::PathBuf;
use std::time::Duration;

use bitbridge::ServiceClient;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::errors::py_err;

/// A running custom server and its service object.
#[pyclass(frozen, name = "Service", module = "bitbridge._native")]
#[derive(Debug)]
pub struct PyService {
    client: crate::Unlocked<ServiceClient>,
}

fn seconds(s: Option<f64>) -> PyResult<Option<Duration>> {
    s.map(|s| {
        Duration::try_from_secs_f64(s).map_err(|_| PyValueError::new_err(format!("{s} is not a number of seconds")))
    })
    .transpose()
}

#[pymethods]
impl PyService {
    /// Starts `program` (its architecture read from the file) with the server options, and constructs
    /// its service from `start` (any Python data). Raises `Server32Error` if the constructor raised,
    /// `ServerDied`, `StartupTimeout`, `SpawnError`.
    #[staticmethod]
    #[pyo3(signature = (program, start, **options))]
    fn spawn(
        py: Python<'_>,
        program: PathBuf,
        start: &Bound<'_, PyAny>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyService> {
        let (server, _) = crate::server_options(options)?;
        let start = bitbridge_pyvalue::encode(start)?;
        let client = py.detach(|| ServiceClient::spawn_encoded(&program, start, server)).map_err(py_err(py))?;
        Ok(PyService { client: crate::Unlocked::new(client) })
    }

    /// Calls method (or reads attribute) `name` of the service object with `args` and `kwargs`; returns
    /// its result. `timeout` (seconds) overrides the server's call timeout for this request.
    #[pyo3(signature = (name, args, kwargs=None, timeout=None))]
    fn invoke(
        &self,
        py: Python<'_>,
        name: &str,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let payload = bitbridge_pyvalue::encode_call(args, kwargs)?;
        let timeout = seconds(timeout)?;
        let bytes = py.detach(|| self.client.call_encoded(name, payload, timeout)).map_err(py_err(py))?;
        Ok(bitbridge_pyvalue::decode(py, &bytes)?.unbind())
    }

    /// The server's process id.
    #[getter]
    fn pid(&self) -> u32 {
        self.client.server().pid()
    }

    /// Whether the server is running.
    #[getter]
    fn alive(&self) -> bool {
        self.client.server().is_alive()
    }

    /// Stops the server; returns `(exit_code, signal, stdout, stderr)`.
    fn shutdown(&self, py: Python<'_>) -> PyResult<(Option<i32>, Option<i32>, String, String)> {
        crate::PyServer::wrap(self.client.server().clone()).shutdown(py)
    }
}
