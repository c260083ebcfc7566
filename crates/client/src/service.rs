//! Custom servers: call the methods of a Rust service hosted next to its library (msl-loadlib's
//! `Client64`), with typed arguments and results.
//!
//! The server side is a program built with `bitbridge-service` for the library's architecture. See the
//! README's "Custom servers" section and `docs/MSL-LOADLIB.md`.

use std::path::Path;
use std::time::Duration;

use bitbridge_proto::service::{decode, encode, encode_args};
use bitbridge_proto::Request;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::server::{Server, ServerOptions, ServerOutput};

/// A connection to a custom server's service object.
///
/// Cloning is cheap and shares the connection; the server stops when the last clone (and every
/// [`Library`](crate::Library) loaded through [`ServiceClient::server`]) is dropped, or at
/// [`ServiceClient::shutdown`].
#[derive(Clone, Debug)]
pub struct ServiceClient {
    server: Server,
}

impl ServiceClient {
    /// Starts the custom server `program` with default [`ServerOptions`] and constructs its service
    /// with `options`. The server's architecture is read from the program file.
    pub fn spawn<O: Serialize + ?Sized>(program: impl AsRef<Path>, options: &O) -> Result<ServiceClient> {
        ServiceClient::spawn_with(program, options, ServerOptions::new())
    }

    /// As [`ServiceClient::spawn`], with the server started by `server` (timeouts, environment, library
    /// directories, restart on failure, shared memory, workers). Its `server_path`, if any, is replaced
    /// by `program`.
    ///
    /// With `restart_on_failure`, once a failure (a crash, a timeout) has been reported, the next call
    /// starts a new server, which constructs the service again from the same options (its state starts
    /// afresh) before that call runs. The call that met the failure is not retried: it returns the error.
    pub fn spawn_with<O: Serialize + ?Sized>(
        program: impl AsRef<Path>,
        options: &O,
        server: ServerOptions,
    ) -> Result<ServiceClient> {
        ServiceClient::spawn_encoded(program, encode_options(options)?, server)
    }

    /// As [`ServiceClient::spawn_with`], with the constructor options already encoded (CBOR): for servers
    /// whose values are not Rust types, such as the Python package's 32-bit Python server.
    pub fn spawn_encoded(program: impl AsRef<Path>, options: Vec<u8>, server: ServerOptions) -> Result<ServiceClient> {
        let program = program.as_ref();
        let spawn_error = |kind, message: String| Error::Spawn {
            path: program.to_path_buf(),
            source: std::io::Error::new(kind, message),
        };
        if !program.is_file() {
            let name = program.file_name().map_or("<name>".into(), |n| n.to_string_lossy());
            return Err(spawn_error(
                std::io::ErrorKind::NotFound,
                format!(
                    "no such file; build the custom server for the library's architecture, for example with `cargo \
                     build --release --target i686-unknown-linux-gnu --bin {name}`"
                ),
            ));
        }
        let arch = crate::detect::executable_arch(program).ok_or_else(|| {
            spawn_error(
                std::io::ErrorKind::InvalidInput,
                "not an i686 or x86_64 ELF program (a custom server is built for its library's architecture)".into(),
            )
        })?;
        let server = server.server_path(program).spawn(arch)?;
        server.start_service(options)?;
        Ok(ServiceClient { server })
    }

    /// Runs service `S` inside this process (msl-loadlib's mock mode): for development, tests, and
    /// libraries of the client's own architecture. Calls go through the same encoding, dispatch and
    /// errors as with a server process; there is just no process (so no call timeouts).
    #[cfg(feature = "in-process")]
    ///
    /// `options` is encoded and decoded as it would be for a server process, so options of another type
    /// than `S::Options` fail the same way ([`Error::Raised`] of kind `bitbridge::BadOptions`).
    ///
    /// # Safety
    ///
    /// The service's code runs in this process: a wrapper typically loads a native library (running its
    /// initialisers) and calls it, trusting that a mistake can only take down its own server process.
    /// Here it takes down, or corrupts, this one. Two in-process services of the same library also share
    /// that library's global state, which separate server processes would not. Call this only for a
    /// service and a library you trust to run here.
    #[allow(unsafe_code)]
    pub unsafe fn in_process<S: bitbridge_service::Service, O: Serialize + ?Sized>(
        options: &O,
    ) -> Result<ServiceClient> {
        let options = encode_options(options)?;
        let host = bitbridge_server::Host::service_only(bitbridge_service::handler::<S>());
        let server = Server::in_process_host(host);
        server.start_service(options)?;
        Ok(ServiceClient { server })
    }

    /// Calls method `method` with `args`, a tuple of its arguments (`()` for none, `(x,)` for one), and
    /// decodes its result as `R`.
    ///
    /// Fails with [`Error::Raised`] when the method returns an error (its kind and message), the method
    /// is unknown, or the arguments do not decode as its parameters; with [`Error::Value`] when the result
    /// is not an `R`; and with the usual errors when the server dies or the call times out.
    pub fn call<A: Serialize, R: DeserializeOwned>(&self, method: &str, args: A) -> Result<R> {
        self.call_inner(method, args, None)
    }

    /// As [`ServiceClient::call`], with its own timeout instead of the server's call timeout.
    pub fn call_timeout<A: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        args: A,
        timeout: Duration,
    ) -> Result<R> {
        self.call_inner(method, args, Some(timeout))
    }

    fn call_inner<A: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        args: A,
        timeout: Option<Duration>,
    ) -> Result<R> {
        let call = format!("method `{method}`");
        let args = encode_args(&args).map_err(|message| Error::Value { call: call.clone(), message })?;
        let bytes = self.server.service_request(Request::Invoke { method: method.into(), args }, &call, timeout)?;
        decode_as::<R>(&bytes, &call)
    }

    /// Calls method `method` with arguments already encoded (CBOR) and returns the encoded result, for
    /// servers whose values are not Rust types. Errors as [`ServiceClient::call`].
    pub fn call_encoded(&self, method: &str, args: Vec<u8>, timeout: Option<Duration>) -> Result<Vec<u8>> {
        let call = format!("method `{method}`");
        self.server.service_request(Request::Invoke { method: method.into(), args }, &call, timeout)
    }

    /// Reads property `name` of the service object as `R`.
    pub fn get<R: DeserializeOwned>(&self, name: &str) -> Result<R> {
        let call = format!("property `{name}`");
        let bytes = self.server.service_request(Request::Get { name: name.into() }, &call, None)?;
        decode_as::<R>(&bytes, &call)
    }

    /// The server underneath: its process id, liveness, target, and the generic API (a custom server
    /// also loads libraries and calls their C functions).
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Stops the server gracefully (killing it after a grace time) and returns how it ended and what it
    /// printed (msl-loadlib's `shutdown_server32`).
    pub fn shutdown(&self) -> Result<ServerOutput> {
        self.server.shutdown()
    }
}

fn encode_options<O: Serialize + ?Sized>(options: &O) -> Result<Vec<u8>> {
    encode(options).map_err(|message| Error::Value { call: "the constructor".into(), message })
}

fn decode_as<R: DeserializeOwned>(bytes: &[u8], call: &str) -> Result<R> {
    decode::<R>(bytes).map_err(|e| Error::Value {
        call: call.to_string(),
        message: format!("the result does not decode as {}: {e}", std::any::type_name::<R>()),
    })
}
