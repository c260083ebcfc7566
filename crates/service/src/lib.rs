//! Write a custom bitbridge server in a few lines: msl-loadlib's `Server32`, in Rust.
//!
//! A *service* is a Rust type that wraps a library next to it: it keeps state, hides a clumsy API, makes
//! many library calls per request, or uses a library that is not plain C. You register its methods and
//! properties by name; a client ([`bitbridge::ServiceClient`](https://docs.rs/bitbridge)) calls them with
//! typed arguments and gets typed results, or an error carrying the method's error kind and message.
//!
//! ```no_run
//! use bitbridge_service::{Methods, Service};
//!
//! struct Counter {
//!     count: i64,
//! }
//!
//! impl Service for Counter {
//!     /// The constructor's options, typed: they arrive as the client sent them.
//!     type Options = i64;
//!
//!     fn start(first: i64) -> bitbridge_service::Result<Self> {
//!         Ok(Counter { count: first })
//!     }
//!
//!     fn methods(m: &mut Methods<Self>) {
//!         m.method("add", |c: &mut Counter, (n,): (i64,)| {
//!             c.count = c.count.checked_add(n).ok_or_else(|| bitbridge_service::Error::new("Overflow", "too big"))?;
//!             Ok(c.count)
//!         });
//!         m.property("count", |c: &Counter| c.count);
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     bitbridge_service::serve::<Counter>()
//! }
//! ```
//!
//! Build it for the library's architecture (`cargo build --release --target i686-unknown-linux-gnu`)
//! and start it from the client with `ServiceClient::spawn(path, &options)`. The program is the generic
//! `bitbridge-server` plus your service: same handshake, shared-memory transport, parent-death handling,
//! timeouts and crash reports, and it still answers the client's ordinary C calls too.
//!
//! Methods run one at a time on the service object (`&mut self`), like msl-loadlib's server. Values are
//! any serde type, encoded as CBOR ([`bitbridge_proto::service`]): integers keep their width, a
//! struct stays a struct, and a wrong argument type is a clear [`kinds::BAD_ARGUMENTS`] error.
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use bitbridge_proto::service as codec;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use bitbridge_proto::service::kinds;
pub use bitbridge_server::{Handler, Raised};
/// Any value, as encoded on the wire: for methods that take or return values of any shape (an echo).
pub use ciborium::Value;

/// A type a custom server hosts: constructed from typed options, called by method name.
pub trait Service: Sized + Send + 'static {
    /// What the client passes to the constructor ([`Service::start`]), typed.
    type Options: DeserializeOwned;

    /// Creates the service object: typically opens the library and whatever it needs. An error here
    /// fails the client's `spawn` with this error's kind and message.
    fn start(options: Self::Options) -> Result<Self>;

    /// Registers the methods and properties clients may use.
    fn methods(methods: &mut Methods<Self>);
}

/// An error a method raises: a kind (for the client to match on) and a message.
///
/// Any `std::error::Error` converts into one with `?` (the kind is its type's name, the message its
/// display followed by its causes); [`Error::new`] chooses the kind. Like `anyhow::Error`, it does not
/// implement `std::error::Error` itself, which is what makes that conversion possible.
pub struct Error {
    kind: String,
    message: String,
}

impl Error {
    /// An error of kind `kind` (a name the client can match, such as `"DeviceError"`).
    pub fn new(kind: impl Into<String>, message: impl fmt::Display) -> Error {
        Error { kind: kind.into(), message: message.to_string() }
    }

    /// An error of kind `"Error"`.
    pub fn msg(message: impl fmt::Display) -> Error {
        Error::new("Error", message)
    }

    /// The same error with kind `kind`: `Error::from(e).with_kind("LoadError")` keeps `e`'s message and
    /// causes under a kind of your choosing.
    pub fn with_kind(mut self, kind: impl Into<String>) -> Error {
        self.kind = kind.into();
        self
    }

    /// Its kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Its message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The kind is [`std::any::type_name`] of `E` (such as `core::num::error::ParseIntError`): good for
/// messages and logs, but the compiler does not promise its exact text across versions, so give kinds a
/// client matches on yourself with [`Error::new`] or [`Error::with_kind`].
impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Error {
        Error { kind: std::any::type_name::<E>().to_string(), message: bitbridge_server::source_chain(&e) }
    }
}

impl From<Error> for Raised {
    fn from(e: Error) -> Raised {
        Raised { kind: e.kind, message: e.message }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// What methods return.
pub type Result<T, E = Error> = std::result::Result<T, E>;

type MethodFn<S> = Box<dyn Fn(&mut S, &[u8]) -> Result<Vec<u8>, Raised> + Send + Sync>;
type PropertyFn<S> = Box<dyn Fn(&S) -> Result<Vec<u8>, Raised> + Send + Sync>;

/// The registry of a service's methods and properties, filled by [`Service::methods`].
pub struct Methods<S> {
    methods: BTreeMap<String, MethodFn<S>>,
    properties: BTreeMap<String, PropertyFn<S>>,
}

impl<S> fmt::Debug for Methods<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Methods")
            .field("methods", &self.methods.keys().collect::<Vec<_>>())
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn raised(kind: &str, message: impl fmt::Display) -> Raised {
    Raised { kind: kind.to_string(), message: message.to_string() }
}

fn encode_result<R: Serialize>(what: &str, r: &R) -> Result<Vec<u8>, Raised> {
    // Bounded: a result that cannot travel in one frame is refused here, the same in-process and in a
    // server, rather than failing to allocate on a 32-bit server or crossing the frame limit in-process.
    codec::encode_bounded(r, bitbridge_proto::msg::MAX_BLOCK)
        .map_err(|e| raised(kinds::BAD_RESULT, format!("cannot send the result of {what}: {e}")))
}

impl<S: 'static> Methods<S> {
    fn new() -> Methods<S> {
        Methods { methods: BTreeMap::new(), properties: BTreeMap::new() }
    }

    /// Registers method `name`. `A` is its parameter list as a tuple, such as `(f64, String)` (`()`
    /// for none, `(x,)` for one): the client's arguments are decoded into it. `R` is anything serde can
    /// serialize.
    ///
    /// # Panics
    ///
    /// If a method of that name is already registered (a mistake in the server, reported at its start).
    pub fn method<A, R, F>(&mut self, name: &str, f: F) -> &mut Self
    where
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
        F: Fn(&mut S, A) -> Result<R> + Send + Sync + 'static,
    {
        let owned = name.to_string();
        let call = move |s: &mut S, bytes: &[u8]| -> Result<Vec<u8>, Raised> {
            // Arguments are a sequence; no arguments is the empty one, which a method of no parameters
            // (`()`, serde's unit) takes as unit. Any other failure is reported as it was.
            let decoded = match codec::decode::<A>(bytes) {
                Err(first) if bytes == codec::NO_ARGUMENTS && codec::is_unit::<A>() => {
                    codec::decode::<A>(codec::UNIT).map_err(|_| first)
                }
                other => other,
            };
            let args: A = decoded.map_err(|e| {
                raised(kinds::BAD_ARGUMENTS, format!("`{owned}` takes {}: {e}", std::any::type_name::<A>()))
            })?;
            let r = f(s, args)?;
            encode_result(&format!("`{owned}`"), &r)
        };
        assert!(self.methods.insert(name.to_string(), Box::new(call)).is_none(), "method `{name}` registered twice");
        self
    }

    /// Registers property `name`: a value the client reads with `get`, computed from the object.
    ///
    /// # Panics
    ///
    /// If a property of that name is already registered.
    pub fn property<R, F>(&mut self, name: &str, f: F) -> &mut Self
    where
        R: Serialize + 'static,
        F: Fn(&S) -> R + Send + Sync + 'static,
    {
        let owned = name.to_string();
        let get = move |s: &S| encode_result(&format!("property `{owned}`"), &f(s));
        assert!(
            self.properties.insert(name.to_string(), Box::new(get)).is_none(),
            "property `{name}` registered twice"
        );
        self
    }

    /// The registered method names, sorted.
    pub fn method_names(&self) -> impl Iterator<Item = &str> {
        self.methods.keys().map(String::as_str)
    }

    /// The registered property names, sorted.
    pub fn property_names(&self) -> impl Iterator<Item = &str> {
        self.properties.keys().map(String::as_str)
    }
}

/// Runs service code, turning a panic into a [`kinds::PANIC`] error.
fn guarded<T>(f: impl FnOnce() -> Result<T, Raised>) -> Result<T, Raised> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let what = bitbridge_server::panic_message(p.as_ref()).unwrap_or_else(|| "a panic".into());
        Err(raised(kinds::PANIC, what))
    })
}

/// Adapts a [`Service`] to the host's [`Handler`]: decodes, dispatches by name, encodes, and keeps the
/// object behind a lock so that methods run one at a time.
pub struct Dispatch<S: Service> {
    object: Mutex<Option<S>>,
    methods: Methods<S>,
}

impl<S: Service> fmt::Debug for Dispatch<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatch")
            .field("service", &std::any::type_name::<S>())
            .field("methods", &self.methods)
            .finish()
    }
}

impl<S: Service> Default for Dispatch<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Service> Dispatch<S> {
    /// Registers `S`'s methods; the object is made by the client's first [`Handler::start`].
    pub fn new() -> Dispatch<S> {
        let mut methods = Methods::new();
        S::methods(&mut methods);
        Dispatch { object: Mutex::new(None), methods }
    }

    fn with_object<T>(&self, f: impl FnOnce(&mut S) -> Result<T, Raised>) -> Result<T, Raised> {
        // A method that panicked poisons the lock; the object is handed on as it was left (the client
        // got the panic as an error and decides whether to go on or restart the server).
        let mut object = self.object.lock().unwrap_or_else(|e| e.into_inner());
        match object.as_mut() {
            Some(s) => guarded(|| f(s)),
            None => Err(raised(kinds::NOT_STARTED, "the service object has not been constructed (no Start request)")),
        }
    }

    /// The error for a name nothing is registered under, listing what is (`what`: "method" or
    /// "property", `whats` its plural).
    fn unknown<'a>(
        kind: &str,
        [what, whats]: [&str; 2],
        name: &str,
        registered: impl Iterator<Item = &'a str>,
    ) -> Raised {
        let all: Vec<String> = registered.map(|n| format!("`{n}`")).collect();
        let all = if all.is_empty() { "none".into() } else { all.join(", ") };
        raised(kind, format!("{} has no {what} `{name}`; its {whats}: {all}", std::any::type_name::<S>()))
    }
}

impl<S: Service> Handler for Dispatch<S> {
    fn start(&self, options: &[u8]) -> Result<(), Raised> {
        // Guarded as a whole: the options' own Deserialize and the old object's Drop are service code too.
        guarded(|| {
            let options: S::Options = codec::decode(options).map_err(|e| {
                raised(
                    kinds::BAD_OPTIONS,
                    format!(
                        "{} is started with {}: {e}",
                        std::any::type_name::<S>(),
                        std::any::type_name::<S::Options>()
                    ),
                )
            })?;
            let made = S::start(options)?;
            // The old object (a second start) is dropped outside the lock.
            let old = self.object.lock().unwrap_or_else(|e| e.into_inner()).replace(made);
            drop(old);
            Ok(())
        })
    }

    fn stop(&self) {
        let old = self.object.lock().unwrap_or_else(|e| e.into_inner()).take();
        let _ = guarded(|| {
            drop(old);
            Ok(())
        });
    }

    fn invoke(&self, method: &str, args: &[u8]) -> Result<Vec<u8>, Raised> {
        let m = self.methods.methods.get(method).ok_or_else(|| {
            Self::unknown(kinds::UNKNOWN_METHOD, ["method", "methods"], method, self.methods.method_names())
        })?;
        self.with_object(|s| m(s, args))
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, Raised> {
        let p = self.methods.properties.get(name).ok_or_else(|| {
            Self::unknown(kinds::UNKNOWN_PROPERTY, ["property", "properties"], name, self.methods.property_names())
        })?;
        self.with_object(|s| p(s))
    }
}

/// `S` as the host's [`Handler`].
pub fn handler<S: Service>() -> Arc<dyn Handler> {
    Arc::new(Dispatch::<S>::new())
}

/// The whole `main` of a custom server: serves `S` (and the generic host's requests) to the client
/// that started this program, until it shuts the server down or goes away.
///
/// Run by hand, the program explains that a client starts it and exits with status 2; `--version`
/// prints what it is.
pub fn serve<S: Service>() -> ExitCode {
    bitbridge_server::run(Some(handler::<S>()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitbridge_proto::service::{decode, encode};

    struct Acc {
        total: f64,
        name: String,
    }

    impl Service for Acc {
        type Options = (String, f64);
        fn start((name, total): (String, f64)) -> Result<Self> {
            if total.is_nan() {
                return Err(Error::new("ValueError", "the start is NaN"));
            }
            Ok(Acc { total, name })
        }
        fn methods(m: &mut Methods<Self>) {
            m.method("add", |a: &mut Acc, (x,): (f64,)| {
                a.total += x;
                Ok(a.total)
            })
            .method("parse", |_: &mut Acc, (s,): (String,)| Ok(s.parse::<i32>()?))
            .method("boom", |_: &mut Acc, ()| -> Result<()> { panic!("kaboom") })
            .property("name", |a: &Acc| a.name.clone());
        }
    }

    #[test]
    fn dispatches_by_name_with_typed_values() {
        let d = Dispatch::<Acc>::new();
        assert_eq!(d.invoke("add", &encode(&(1.0,)).unwrap()).unwrap_err().kind, kinds::NOT_STARTED);
        d.start(&encode(&("acc", 1.5)).unwrap()).unwrap();
        let r: f64 = decode(&d.invoke("add", &encode(&(2.0,)).unwrap()).unwrap()).unwrap();
        assert_eq!(r, 3.5);
        let name: String = decode(&d.get("name").unwrap()).unwrap();
        assert_eq!(name, "acc");
    }

    #[test]
    fn errors_carry_kinds() {
        let d = Dispatch::<Acc>::new();
        let e = d.start(&encode(&("acc", f64::NAN)).unwrap()).unwrap_err();
        assert_eq!((e.kind.as_str(), e.message.as_str()), ("ValueError", "the start is NaN"));
        assert_eq!(d.start(&encode(&("acc",)).unwrap()).unwrap_err().kind, kinds::BAD_OPTIONS);
        d.start(&encode(&("acc", 0.0)).unwrap()).unwrap();
        let e = d.invoke("parse", &encode(&("x1",)).unwrap()).unwrap_err();
        assert_eq!(e.kind, "core::num::error::ParseIntError");
        assert_eq!(e.message, "invalid digit found in string");
        let e = d.invoke("add", &encode(&("two",)).unwrap()).unwrap_err();
        assert_eq!(e.kind, kinds::BAD_ARGUMENTS);
        assert!(e.message.starts_with("`add` takes (f64,): invalid type: string"), "{}", e.message);
        let e = d.invoke("sub", &[]).unwrap_err();
        assert_eq!(e.kind, kinds::UNKNOWN_METHOD);
        assert!(e.message.ends_with("its methods: `add`, `boom`, `parse`"), "{}", e.message);
        let e = d.get("nope").unwrap_err();
        assert_eq!(e.kind, kinds::UNKNOWN_PROPERTY);
        assert!(e.message.ends_with("has no property `nope`; its properties: `name`"), "{}", e.message);
        let e = d.invoke("boom", &encode(&()).unwrap()).unwrap_err();
        assert_eq!((e.kind.as_str(), e.message.as_str()), (kinds::PANIC, "kaboom"));
        // Still usable after the panic.
        assert!(d.invoke("add", &encode(&(1.0,)).unwrap()).is_ok());
    }
}
