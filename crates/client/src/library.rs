//! Libraries and their functions.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bitbridge_proto::{Arch, CType, CallConv, ErrorKind, Os, RemoteError, Reply, Request, Signature, Target, Value};

use crate::cdecl::Declarations;
use crate::detect::{find_by_name, inspect};
use crate::error::{Error, Result};
use crate::server::{Server, ServerOptions};
use bitbridge_proto::BorrowedNumbers as Borrowed;

/// How to open a library: which file, which server.
#[derive(Clone, Debug)]
pub struct LibraryOptions {
    path: PathBuf,
    arch: Option<Arch>,
    server: ServerOptions,
}

impl LibraryOptions {
    /// Options for the library at `path` (a path, or a bare name such as `libm.so.6`, resolved by the
    /// server's loader for the architecture asked for with [`LibraryOptions::arch`]).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LibraryOptions { path: path.into(), arch: None, server: ServerOptions::new() }
    }

    /// Which architecture a bare library name is loaded for (for a path, the file says, and a different
    /// one asked for here is an error).
    pub fn arch(mut self, arch: Arch) -> Self {
        self.arch = Some(arch);
        self
    }

    /// How to start the server.
    pub fn server(mut self, server: ServerOptions) -> Self {
        self.server = server;
        self
    }

    /// Whether the library is a bare name of a Windows DLL (`kernel32.dll`, `user32`): one ending in
    /// `.dll`, any case.
    fn is_dll_name(&self) -> bool {
        self.path.extension().is_some_and(|e| e.eq_ignore_ascii_case("dll"))
    }

    /// Whether the library is given by a bare name (`libc.so.6`): no folder, and no such file here.
    fn is_bare_name(&self) -> bool {
        self.path.components().count() == 1 && !self.path.to_string_lossy().contains('/') && !self.path.exists()
    }

    /// The file bitbridge's own search finds for the name (a path is returned as is): the
    /// `LD_LIBRARY_PATH`, `/etc/ld.so.conf` and standard folders of the architecture asked for; for a
    /// Windows DLL's name (`kernel32.dll`), the Wine prefix's system folder and then Wine's builtin DLLs
    /// for that architecture (x86_64 unless [`LibraryOptions::arch`] says otherwise, as for
    /// [`LibraryOptions::open`]). This is a guess made without a server; [`LibraryOptions::open`] asks the
    /// server's loader instead, and [`Library::file`] says what it chose.
    pub fn resolve(&self) -> Result<PathBuf> {
        if self.is_bare_name() && self.is_dll_name() {
            let arch = self.arch.unwrap_or(Arch::X86_64);
            let dirs = self.server.dll_dirs(arch);
            let found = self.path.to_str().map(|n| crate::detect::find_dll(n, arch, None, dirs.as_ref()));
            if let Some(p) = found.as_ref().and_then(|f| f.path()) {
                return Ok(p.to_path_buf());
            }
        } else if self.is_bare_name() {
            if let Some(p) = self.path.to_str().and_then(|n| find_by_name(n, self.arch)) {
                return Ok(p);
            }
        }
        Ok(self.path.clone())
    }

    /// Detects the library's architecture from its file header, starts a server of that architecture
    /// and loads the library into it. A 64-bit library gets a 64-bit server: isolated from the client,
    /// so a crash in it is an error here, not the end of this process.
    ///
    /// A bare name (`libc.so.6`) is resolved by the *server's* dynamic loader, exactly as the server
    /// resolves its own dependencies, so `libc.so.6` is the C library the server already runs on; the
    /// server's architecture is the one asked for with [`LibraryOptions::arch`], else that of the first
    /// file of that name bitbridge finds, else the client's own. [`Library::file`] tells the file used.
    pub fn open(&self) -> Result<Library> {
        if self.is_bare_name() {
            if self.is_dll_name() {
                // A Windows system DLL (`kernel32.dll`): the Windows loader under Wine finds it.
                let arch = self.arch.unwrap_or(Arch::X86_64);
                return self.server.spawn_for(Target { arch, os: Os::Windows })?.load(&self.path);
            }
            let arch = self
                .arch
                .or_else(|| self.resolve().ok().and_then(|p| inspect(&p).ok()).map(|i| i.arch))
                .or_else(|| bitbridge_proto::Target::host().map(|t| t.arch))
                .unwrap_or(Arch::X86_64);
            return self.server.spawn(arch)?.load(&self.path);
        }
        let path = self.path.clone();
        let info = inspect(&path)?;
        if let Some(a) = self.arch.filter(|a| *a != info.arch) {
            let what = if info.os == Os::Windows { "a Windows DLL" } else { "an ELF library" };
            return Err(Error::UnsupportedArchitecture {
                path,
                found: format!("{what} for {}", info.arch),
                hint: format!("; {a} was asked for"),
            });
        }
        self.server.spawn_for(Target { arch: info.arch, os: info.os })?.load(&path)
    }

    /// Loads the library into this process (msl-loadlib's mock mode): the same API, no server. The
    /// library must be of the client's own architecture.
    ///
    /// # Safety
    ///
    /// As [`Server::in_process`]: the library's code and every call with a wrong signature run in this
    /// process, with nothing to contain them.
    #[cfg(feature = "in-process")]
    #[allow(unsafe_code)]
    pub unsafe fn open_in_process(&self) -> Result<Library> {
        if self.is_bare_name() {
            let host = bitbridge_proto::Target::host().map(|t| t.arch);
            if let Some(a) = self.arch.filter(|a| Some(*a) != host) {
                return Err(Error::UnsupportedArchitecture {
                    path: self.path.clone(),
                    found: format!("asked for as {a}"),
                    hint: "; in-process loading needs the client's own architecture: use open() to host it in a server"
                        .into(),
                });
            }
            // SAFETY: forwarded to our caller by this function's contract.
            let server = unsafe { Server::in_process() };
            // Resolved by this process's own loader, like the server's loader for `open`.
            return server.load(&self.path);
        }
        let path = self.path.clone();
        let info = inspect(&path)?;
        let host = bitbridge_proto::Target::host().map(|t| t.arch);
        if Some(info.arch) != host {
            return Err(Error::UnsupportedArchitecture {
                path,
                found: format!("an ELF library for {}", info.arch),
                hint: "; in-process loading needs the client's own architecture: use open() to host it in a server"
                    .into(),
            });
        }
        // SAFETY: forwarded to our caller by this function's contract.
        let server = unsafe { Server::in_process() };
        server.load(&path)
    }
}

/// A library loaded in a server. Cheap to clone; unloaded when the last clone and every
/// [`Function`] from it are dropped.
#[derive(Clone)]
pub struct Library {
    inner: Arc<LibInner>,
}

struct LibInner {
    server: Server,
    id: u32,
    path: String,
    file: Option<PathBuf>,
}

impl Library {
    pub(crate) fn new(server: Server, id: u32, path: String, file: Option<PathBuf>) -> Library {
        Library { inner: Arc::new(LibInner { server, id, path, file }) }
    }

    /// The file the server loaded: for a bare name (`libc.so.6`), where the server's own dynamic loader
    /// found it (see [`Server::loaded_file`]). `None` if the server's memory map could not be read.
    pub fn file(&self) -> Option<&Path> {
        self.inner.file.as_deref()
    }

    /// Opens the library at `path` in a server of its own architecture (see [`LibraryOptions::open`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Library> {
        LibraryOptions::new(path.as_ref()).open()
    }

    /// The server hosting the library (for memory, and to load more libraries next to it).
    pub fn server(&self) -> &Server {
        &self.inner.server
    }

    /// The path or bare name the library was opened with ([`Library::file`] is the file the server loaded).
    pub fn path(&self) -> &str {
        &self.inner.path
    }

    /// Looks up `name` and prepares it for calls with signature `sig` (ctypes' `argtypes`/`restype`).
    /// The signature is checked for this server's target before anything is sent.
    pub fn function(&self, name: &str, sig: Signature) -> Result<Function> {
        let target = self.inner.server.target();
        if sig.depth() > bitbridge_proto::target::MAX_DEPTH {
            return Err(Error::Signature {
                function: name.into(),
                message: format!("types nest deeper than {} levels", bitbridge_proto::target::MAX_DEPTH),
            });
        }
        for (i, p) in sig.params.iter().enumerate() {
            target.layout(&p.ty).map_err(|e| Error::Signature {
                function: name.into(),
                message: format!("parameter {}: {e}", i + 1),
            })?;
        }
        if sig.ret != bitbridge_proto::CType::Void {
            target
                .layout(&sig.ret)
                .map_err(|e| Error::Signature { function: name.into(), message: format!("return type: {e}") })?;
        }
        let server = &self.inner.server;
        let func = server.next_handle();
        let req = Request::Prepare { lib: self.inner.id, func, symbol: name.into(), sig: sig.clone() };
        match server.request(req, None) {
            Ok(Reply::Address(address)) => {
                server.register_function(func, self.inner.id, name, &sig);
                let plan = crate::fast::Plan::new(&target, &sig);
                Ok(Function { lib: self.inner.clone(), id: func, name: name.into(), sig, address, plan })
            }
            Ok(other) => Err(server.broken(crate::server::unexpected(&other))),
            Err(e) => Err(map_symbol_error(name, e)),
        }
    }

    /// Prepares function `name` with the signature it has in `decls` (parsed from C declarations).
    /// On a 64-bit server, `__stdcall`/`__fastcall`/`__thiscall` markers are ignored, as x86_64
    /// compilers ignore them.
    pub fn declare(&self, decls: &Declarations, name: &str) -> Result<Function> {
        if decls.function(name).is_none() {
            if let Some(e) = decls.unusable(name) {
                return Err(e);
            }
        }
        let Some(sig) = decls.function(name) else {
            let names: Vec<&str> = decls.functions().map(|p| p.name.as_str()).take(20).collect();
            let hint = if names.is_empty() {
                " (the declarations have no functions)".to_owned()
            } else {
                format!(" (declared: {})", names.join(", "))
            };
            return Err(Error::NotDeclared { function: name.into(), hint });
        };
        let mut sig = sig.clone();
        if self.inner.server.target().arch != Arch::X86 {
            sig.conv = CallConv::Cdecl;
        }
        self.function(name, sig)
    }

    /// Prepares a function from its C prototype, such as `"double sum(double *f, int n)"` (the `;` is
    /// optional; the types it uses must be built in or defined in the same text). For several functions
    /// and shared types, parse a header with [`Declarations`] and use [`Library::declare`].
    pub fn function_from_c(&self, prototype: &str) -> Result<Function> {
        let mut decls = Declarations::new();
        let name = decls.add_prototype(prototype)?.name;
        self.declare(&decls, &name)
    }

    /// The address of an exported symbol (a variable, or a function to pass as a pointer).
    pub fn symbol(&self, name: &str) -> Result<u64> {
        match self.inner.server.request(Request::Symbol { lib: self.inner.id, symbol: name.into() }, None) {
            Ok(Reply::Address(a)) => Ok(a),
            Ok(other) => Err(self.inner.server.broken(crate::server::unexpected(&other))),
            Err(e) => Err(map_symbol_error(name, e)),
        }
    }
}

fn map_symbol_error(name: &str, e: Error) -> Error {
    match e {
        Error::Remote(RemoteError { kind: ErrorKind::SymbolNotFound, message }) => {
            Error::SymbolNotFound { symbol: name.into(), message }
        }
        Error::Remote(RemoteError { kind: ErrorKind::BadSignature, message }) => {
            Error::Signature { function: name.into(), message }
        }
        e => e,
    }
}

impl Drop for LibInner {
    fn drop(&mut self) {
        self.server.release(Request::Unload { lib: self.id });
    }
}

/// A function of a loaded library, ready to call.
pub struct Function {
    lib: Arc<LibInner>,
    id: u32,
    name: String,
    sig: Signature,
    address: u64,
    /// Where the arguments go, for calls that take the fast path.
    plan: Option<crate::fast::Plan>,
}

/// What a call gave back.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Outcome {
    /// The return value ([`Value::Void`] for `void`).
    pub ret: Value,
    /// Per argument: its value after the call, for `Out`/`InOut` pointer arguments; `None` for others.
    /// Empty when no argument passed memory (numbers and addresses only: nothing can come back); read
    /// it with [`Outcome::out`], which is `None` then.
    pub outs: Vec<Option<Value>>,
    /// `errno` right after the call, for functions declared with [`Signature::errno`] (ctypes'
    /// `use_errno` and `get_errno()`).
    pub errno: Option<i32>,
    /// The Windows last-error code (`GetLastError()`) right after the call, for functions declared
    /// with [`Signature::last_error`] (ctypes' `use_last_error` and `get_last_error()`).
    pub last_error: Option<u32>,
}

impl Outcome {
    /// Argument `i` (from 0) after the call, if it was an `Out`/`InOut` pointer.
    pub fn out(&self, i: usize) -> Option<&Value> {
        self.outs.get(i).and_then(Option::as_ref)
    }
}

impl Function {
    /// Calls the function. Values are checked against the signature and laid out for the server's
    /// target; memory behind pointer arguments travels as their [`Direction`](bitbridge_proto::Direction)
    /// says and comes back in [`Outcome::outs`].
    pub fn call(&self, args: &[Value]) -> Result<Outcome> {
        self.call_with(args, None)
    }

    /// Calls the function, giving it at most `timeout` (instead of the server's
    /// [`call_timeout`](crate::ServerOptions::call_timeout)). When the time passes the server is killed,
    /// since the library's state is unknown, and this returns [`Error::Timeout`].
    pub fn call_timeout(&self, args: &[Value], timeout: Duration) -> Result<Outcome> {
        self.call_with(args, Some(timeout))
    }

    /// Calls a variadic function (declared with [`Signature::variadic`]): `args` for the fixed
    /// parameters, then each variadic argument with its type. C's default argument promotions apply to
    /// variadic arguments, so `float`, `char`, `short` and `bool` are refused: pass `double` or `int`.
    pub fn call_variadic(&self, args: &[Value], variadic: &[(CType, Value)]) -> Result<Outcome> {
        self.lib.server.call(self.id, &self.name, &self.sig, None, args, variadic, &mut [], None)
    }

    fn call_with(&self, args: &[Value], timeout: Option<Duration>) -> Result<Outcome> {
        self.lib.server.call(self.id, &self.name, &self.sig, self.plan.as_ref(), args, &[], &mut [], timeout)
    }

    /// A call where `borrowed[i]`, when `Some`, stands for pointer argument `i` (`args[i]` is not
    /// read): the typed layer's slices, sent and written back without a copy into a `Value`.
    pub(crate) fn call_borrowed(&self, args: &[Value], borrowed: &mut [Option<Borrowed<'_>>]) -> Result<Outcome> {
        self.lib.server.call(self.id, &self.name, &self.sig, self.plan.as_ref(), args, &[], borrowed, None)
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The signature it was declared with.
    pub fn signature(&self) -> &Signature {
        &self.sig
    }

    /// The function's address in the server (to pass it where a function pointer is expected).
    pub fn address(&self) -> u64 {
        self.address
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        self.lib.server.release(Request::Release { func: self.id });
    }
}

impl fmt::Debug for Library {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Library").field("path", &self.inner.path).field("server", &self.inner.server).finish()
    }
}

impl fmt::Debug for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Function({}: {} at {:#x})", self.name, self.sig, self.address)
    }
}
