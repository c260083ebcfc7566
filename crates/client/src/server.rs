//! A connection to one server: a process hosting libraries of one architecture (or, in-process, the
//! same host running inside the client).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bitbridge_proto::{
    msg, Arch, CType, ErrorKind, Frame, FrameError, Hello, RemoteError, Reply, Request, StreamTransport, Target,
    Transport, Value, MAGIC, PROTOCOL_VERSION,
};

use crate::error::{Error, ExitReason, Result};
use crate::library::Library;
use crate::process::{self, ServerProcess};

/// How to start a server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    server_path: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    startup_timeout: Duration,
    call_timeout: Option<Duration>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            server_path: None,
            env: Vec::new(),
            startup_timeout: Duration::from_secs(30),
            call_timeout: None,
        }
    }
}

impl ServerOptions {
    /// Default options: the server is found automatically (see [`Server::spawn`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Use this server binary instead of searching for one.
    pub fn server_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.server_path = Some(path.into());
        self
    }

    /// Sets an environment variable for the server process (for example `LD_LIBRARY_PATH`, so the
    /// library's own dependencies are found).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// How long the server may take to start and greet the client (default 30 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// How long any one request may take (default: no limit). When it passes, the server is killed
    /// (the library's state is unknown), the request fails with [`Error::Timeout`], and later requests
    /// fail with [`Error::ServerDied`].
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// Starts a server process for `arch`.
    pub fn spawn(&self, arch: Arch) -> Result<Server> {
        let path = crate::locate::find_server(arch, self.server_path.as_deref())?;
        let (proc_, stream) = process::spawn(&path, &self.env)?;
        stream.set_read_timeout(Some(self.startup_timeout)).map_err(Error::Io)?;
        let pid = proc_.pid();
        let mut conn = Conn {
            transport: Box::new(StreamTransport::new(stream.try_clone().map_err(Error::Io)?)),
            next_id: 1,
            buf: Vec::new(),
            out: Vec::new(),
            process: Some(proc_),
            dead: None,
        };
        let hello = conn.hello(pid, &path)?;
        if hello.arch != arch {
            return Err(Error::Handshake(format!(
                "{} hosts {} libraries, {arch} was needed",
                path.display(),
                hello.arch
            )));
        }
        stream.set_read_timeout(self.call_timeout).map_err(Error::Io)?;
        Ok(Server::from_conn(conn, &hello, pid, false))
    }
}

/// A connection to a server hosting libraries of one architecture.
///
/// Cheap to clone (all clones share the connection); `Send + Sync`. Requests from several threads are
/// serialised. The server is shut down when the last clone, and every [`Library`] and
/// [`Function`](crate::Function) from it, is dropped.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Conn>,
    target: Target,
    pid: u32,
    in_process: bool,
}

struct Conn {
    transport: Box<dyn Transport>,
    next_id: u64,
    buf: Vec<u8>,
    out: Vec<u8>,
    process: Option<ServerProcess>,
    dead: Option<Death>,
}

#[derive(Clone)]
enum Death {
    Died { status: ExitReason, stderr: String },
    ShutDown,
}

/// What a server printed, returned by [`Server::shutdown`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerOutput {
    /// How the process ended.
    pub status: ExitReason,
    /// The end (up to 64 KiB) of its standard output: what the library printed.
    pub stdout: String,
    /// The end (up to 64 KiB) of its standard error.
    pub stderr: String,
}

impl Server {
    /// Starts a server process for `arch` with default [`ServerOptions`].
    ///
    /// The server binary is found from `BITBRIDGE_SERVER_I686`/`BITBRIDGE_SERVER_X86_64` (a file),
    /// `BITBRIDGE_SERVER_DIR` (a folder holding `bitbridge-server-<arch>`), beside the running
    /// executable, or in the Cargo target directory; when none is found the error says how to build it.
    pub fn spawn(arch: Arch) -> Result<Server> {
        ServerOptions::new().spawn(arch)
    }

    /// A host running inside this process, for libraries of the client's own architecture (msl-loadlib's
    /// mock mode). Same API, same messages, no process boundary.
    ///
    /// # Safety
    ///
    /// A library loaded in-process runs its initialisers here, and a call whose declared signature or
    /// memory does not match the function corrupts *this* process, which a server process would have
    /// contained. Call this only for libraries and signatures you trust.
    #[cfg(feature = "in-process")]
    #[allow(unsafe_code)]
    pub unsafe fn in_process() -> Server {
        // SAFETY: forwarded to our caller by this function's own contract.
        let host = unsafe { bitbridge_server::Host::new() };
        let mut conn = Conn {
            transport: Box::new(bitbridge_server::InProcess::new(host)),
            next_id: 1,
            buf: Vec::new(),
            out: Vec::new(),
            process: None,
            dead: None,
        };
        let pid = std::process::id();
        let hello = conn.hello(pid, Path::new("<in-process>")).expect("the in-process host greets correctly");
        Server::from_conn(conn, &hello, pid, true)
    }

    fn from_conn(conn: Conn, hello: &Hello, pid: u32, in_process: bool) -> Server {
        let target = Target { arch: hello.arch, os: hello.os };
        Server { inner: Arc::new(Inner { conn: Mutex::new(conn), target, pid, in_process }) }
    }

    /// The target whose C ABI the server's calls follow.
    pub fn target(&self) -> Target {
        self.inner.target
    }

    /// The server's process id (this process's own id in-process).
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// Whether the host runs inside this process.
    pub fn is_in_process(&self) -> bool {
        self.inner.in_process
    }

    /// Loads a library into the server. The path is given to the server's loader as is: a bare name is
    /// searched on the server's library path (its `LD_LIBRARY_PATH`, see [`ServerOptions::env`]).
    pub fn load(&self, path: impl AsRef<Path>) -> Result<Library> {
        let path = path.as_ref();
        let p = path
            .to_str()
            .ok_or_else(|| Error::NotALibrary { path: path.into(), reason: "the path is not valid UTF-8".into() })?;
        match self.request(Request::Load { path: p.to_owned() }) {
            Ok(Reply::Library { lib }) => Ok(Library::new(self.clone(), lib, p.to_owned())),
            Ok(other) => Err(unexpected(&other)),
            Err(Error::Remote(RemoteError { kind: ErrorKind::LoadFailed, message })) => {
                Err(Error::Load { path: p.to_owned(), message })
            }
            Err(e) => Err(e),
        }
    }

    /// Allocates `size` zeroed bytes of server memory aligned to `align`, kept until [`Server::free`]:
    /// for pointers stored inside structs, or memory a library keeps across calls.
    pub fn alloc(&self, size: u64, align: u32) -> Result<u64> {
        match self.request(Request::Alloc { size, align })? {
            Reply::Address(a) => Ok(a),
            other => Err(unexpected(&other)),
        }
    }

    /// Frees memory from [`Server::alloc`] or [`Server::alloc_value`].
    pub fn free(&self, addr: u64) -> Result<()> {
        self.done(Request::Free { addr })
    }

    /// Writes bytes at an address of the server.
    pub fn write(&self, addr: u64, bytes: &[u8]) -> Result<()> {
        self.done(Request::Write { addr, bytes: bytes.to_vec() })
    }

    /// Reads `len` bytes at an address of the server. An unmapped address is an error, not a crash.
    pub fn read(&self, addr: u64, len: u64) -> Result<Vec<u8>> {
        match self.request(Request::Read { addr, len })? {
            Reply::Bytes(b) => Ok(b),
            other => Err(unexpected(&other)),
        }
    }

    /// Reads the NUL-terminated string at an address of the server (ctypes' `string_at`).
    pub fn read_cstring(&self, addr: u64) -> Result<Vec<u8>> {
        match self.request(Request::ReadString { addr, wide: false, max_len: u64::MAX })? {
            Reply::Bytes(b) => Ok(b),
            other => Err(unexpected(&other)),
        }
    }

    /// Lays `value` out as a `ty` for the server's target, copies it into new server memory and returns
    /// its address (free it with [`Server::free`]). Pointer members must be addresses.
    pub fn alloc_value(&self, ty: &CType, value: &Value) -> Result<u64> {
        let target = self.target();
        let bytes = bitbridge_proto::encode_value(&target, ty, value)
            .map_err(|source| Error::Argument { function: "alloc_value".into(), source: Box::new(source) })?;
        let align = target.layout(ty).map(|l| l.align).unwrap_or(8).max(8) as u32;
        let addr = self.alloc(bytes.len().max(1) as u64, align)?;
        self.write(addr, &bytes)?;
        Ok(addr)
    }

    /// Reads a value of type `ty` at an address of the server.
    pub fn read_value(&self, addr: u64, ty: &CType) -> Result<Value> {
        let target = self.target();
        let size = target
            .layout(ty)
            .map_err(|e| Error::Signature { function: "read_value".into(), message: e.to_string() })?
            .size;
        let bytes = self.read(addr, size)?;
        bitbridge_proto::decode_value(&target, ty, &bytes)
            .map_err(|source| Error::Result { function: "read_value".into(), source: Box::new(source) })
    }

    /// Shuts the server down and returns how it ended and what it printed. Every other handle to it
    /// fails from now on with [`Error::ServerDied`]-like errors naming the shutdown.
    pub fn shutdown(&self) -> Result<ServerOutput> {
        let mut c = self.inner.lock();
        if c.dead.is_none() {
            let _ = c.roundtrip(Request::Shutdown);
        }
        c.dead = Some(Death::ShutDown);
        match c.process.as_mut() {
            Some(p) => {
                let status = p.reap(Duration::from_secs(2));
                let wait = Duration::from_millis(500);
                Ok(ServerOutput { status, stdout: p.stdout.text(wait), stderr: p.stderr.text(wait) })
            }
            None => Ok(ServerOutput { status: ExitReason::Code(0), stdout: String::new(), stderr: String::new() }),
        }
    }

    fn done(&self, req: Request) -> Result<()> {
        match self.request(req)? {
            Reply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends one request and waits for its reply.
    pub(crate) fn request(&self, req: Request) -> Result<Reply> {
        let pid = self.inner.pid;
        let mut c = self.inner.lock();
        if let Some(d) = &c.dead {
            return Err(d.error(pid));
        }
        match c.roundtrip(req) {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(remote)) if remote.kind == ErrorKind::Protocol => {
                // The server closes the connection after a protocol error.
                c.bury(pid, Duration::from_millis(500));
                Err(Error::Protocol(format!("the server rejected a request: {}", remote.message)))
            }
            Ok(Err(remote)) => Err(Error::Remote(remote)),
            Err(e) => Err(c.failed(pid, e)),
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Conn {
    /// Reads and checks the server's greeting.
    fn hello(&mut self, pid: u32, path: &Path) -> Result<Hello> {
        if let Err(e) = self.transport.recv(&mut self.buf) {
            let e = match e {
                FrameError::TimedOut => {
                    Error::Handshake(format!("{} did not greet within the start-up timeout", path.display()))
                }
                e => self.failed(pid, ConnError::Frame(e)),
            };
            if let Some(p) = self.process.as_mut() {
                p.reap(Duration::ZERO);
            }
            return Err(e);
        }
        let hello: Hello = msg::decode(&self.buf)
            .map_err(|e| Error::Handshake(format!("{} is not a bitbridge server: {e}", path.display())))?;
        if hello.magic != MAGIC {
            return Err(Error::Handshake(format!("{} is not a bitbridge server", path.display())));
        }
        if hello.version != PROTOCOL_VERSION {
            return Err(Error::Handshake(format!(
                "{} speaks protocol {} (bitbridge-server {}), this client speaks {PROTOCOL_VERSION}",
                path.display(),
                hello.version,
                hello.server_version
            )));
        }
        if hello.pointer_width != hello.arch.pointer_size() {
            return Err(Error::Handshake(format!(
                "{} claims {} with {}-byte pointers",
                path.display(),
                hello.arch,
                hello.pointer_width
            )));
        }
        Ok(hello)
    }

    /// Sends a request and reads frames until its reply. Requests the server sends meanwhile (callbacks,
    /// later) are answered so the server never waits on us.
    fn roundtrip(&mut self, request: Request) -> Result<Result<Reply, RemoteError>, ConnError> {
        let id = self.next_id;
        self.next_id += 1;
        self.out.clear();
        msg::encode(&Frame::Request { id, request }, &mut self.out);
        self.transport.send(&self.out).map_err(ConnError::Frame)?;
        loop {
            self.transport.recv(&mut self.buf).map_err(ConnError::Frame)?;
            match msg::decode::<Frame>(&self.buf).map_err(|e| ConnError::Protocol(e.to_string()))? {
                Frame::Reply { id: rid, reply } if rid == id => return Ok(reply),
                Frame::Reply { id: 0, reply: Err(e) } => return Ok(Err(e)),
                Frame::Reply { id: rid, .. } => {
                    return Err(ConnError::Protocol(format!("reply to request {rid} while waiting for {id}")))
                }
                Frame::Request { id: sid, .. } => {
                    let reply = Err(RemoteError {
                        kind: ErrorKind::Protocol,
                        message: "this client serves no requests (no callbacks are registered)".into(),
                    });
                    self.out.clear();
                    msg::encode(&Frame::Reply { id: sid, reply }, &mut self.out);
                    self.transport.send(&self.out).map_err(ConnError::Frame)?;
                }
            }
        }
    }

    /// Turns a failed exchange into an error; a server process that is gone becomes `ServerDied`.
    fn failed(&mut self, pid: u32, e: ConnError) -> Error {
        if self.process.is_none() {
            return match e {
                ConnError::Frame(f) => Error::from_frame(f),
                ConnError::Protocol(m) => Error::Protocol(m),
            };
        }
        match e {
            ConnError::Protocol(m) => {
                // Out of step with the server: it can no longer be trusted, so end it.
                self.bury(pid, Duration::ZERO);
                return Error::Protocol(m);
            }
            ConnError::Frame(FrameError::TimedOut) => {
                // The library's state is unknown: end the server; this request times out.
                self.bury(pid, Duration::ZERO);
                return Error::Timeout { pid };
            }
            _ => {}
        }
        self.bury(pid, Duration::from_secs(2));
        self.dead.as_ref().expect("just buried").error(pid)
    }

    /// Waits up to `grace` for the server to exit (killing it after) and remembers how it ended.
    fn bury(&mut self, _pid: u32, grace: Duration) {
        if let Some(p) = self.process.as_mut() {
            let status = p.reap(grace);
            let stderr = p.stderr.text(Duration::from_millis(200));
            self.dead = Some(Death::Died { status, stderr });
        }
    }
}

enum ConnError {
    Frame(FrameError),
    Protocol(String),
}

impl Death {
    fn error(&self, pid: u32) -> Error {
        match self {
            Death::Died { status, stderr } => Error::ServerDied { pid, status: status.clone(), stderr: stderr.clone() },
            Death::ShutDown => Error::ShutDown,
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let c = self.conn.get_mut().unwrap_or_else(|e| e.into_inner());
        if c.dead.is_none() {
            let _ = c.roundtrip(Request::Shutdown);
        }
        if let Some(p) = c.process.as_mut() {
            p.reap(Duration::from_secs(1));
        }
    }
}

fn unexpected(reply: &Reply) -> Error {
    Error::Protocol(format!("unexpected reply {reply:?}"))
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("target", &self.inner.target).field("pid", &self.inner.pid).finish()
    }
}
