//! Example custom servers, each a [`bitbridge_service::Service`] with a three-line `main` in `src/bin/`.
//!
//! Build them for 32-bit with `cargo build -p bitbridge-examples --bins --target i686-unknown-linux-gnu`
//! (`./x servers` does), and start one with `bitbridge::ServiceClient::spawn(path, &options)`; the tests
//! in `tests/tests/services.rs` run each through its 32-bit build and in-process.
#![deny(missing_docs)]

pub mod cpp;
pub mod device;
pub mod echo;
pub mod fortran;

use std::path::Path;

use bitbridge_service::Error;

/// Opens a library for a wrapper, with the loader's message as a `LoadError`.
pub(crate) fn open(path: &Path) -> Result<libloading::Library, Error> {
    // SAFETY: loading runs the library's initialisers; these wrappers exist to host exactly the library
    // they are given, inside a server process whose crash the client reports (in-process, the client
    // took this on by calling the unsafe `ServiceClient::in_process`).
    unsafe { libloading::Library::new(path) }.map_err(|e| Error::from(e).with_kind("LoadError"))
}

/// Looks up function `name` of type `T` (an `extern "C" fn` type matching the C declaration).
///
/// # Safety
///
/// `T` must be the function's true C signature.
pub(crate) unsafe fn symbol<T: Copy>(lib: &libloading::Library, name: &str) -> Result<T, Error> {
    // SAFETY: our caller vouches for `T`; the value is copied out while the library is alive, and every
    // wrapper keeps its `Library` for as long as it keeps the function pointers.
    unsafe { lib.get::<T>(name.as_bytes()) }.map(|s| *s).map_err(|e| Error::from(e).with_kind("SymbolNotFound"))
}
