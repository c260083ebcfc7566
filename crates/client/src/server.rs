//! A connection to one server: a process hosting libraries of one architecture (or, in-process, the
//! same host running inside the client).
//!
//! Requests from many threads share the connection. Each is sent under a short lock; replies are read by
//! whichever waiting thread holds the reader role (leader/follower): a lone caller reads its own reply
//! with no hand-off, and a reply for another thread is stored for it and the thread woken. A server that
//! runs calls concurrently (see [`ServerOptions::concurrent`]) can thus answer out of order.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bitbridge_proto::{decode_results_borrowed, encode_call_borrowed, BorrowedNumbers as Borrowed, NumSlice};
use bitbridge_proto::{
    msg, Arch, CType, ErrorKind, Frame, FrameError, Hello, Os, RemoteError, Reply, Request, Signature, StreamTransport,
    Target, Transport, Value, DEFAULT_MAX_FRAME, MAGIC, PROTOCOL_VERSION,
};
use bitbridge_shm::Arena;

use crate::error::{Error, ExitReason, Result};
use crate::library::{Library, Outcome};
use crate::process::{self, ServerProcess};

/// How to start a server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    server_path: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    env_clear: bool,
    env_remove: Vec<OsString>,
    library_dirs: Vec<PathBuf>,
    startup_timeout: Duration,
    load_timeout: Duration,
    call_timeout: Option<Duration>,
    restart: bool,
    workers: u32,
    shared_memory: bool,
    spin: Duration,
    wait: bitbridge_shm::WaitMode,
    wine: Option<PathBuf>,
    wine_prefix: Option<PathBuf>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            server_path: None,
            env: Vec::new(),
            env_clear: false,
            env_remove: Vec::new(),
            library_dirs: Vec::new(),
            startup_timeout: Duration::from_secs(30),
            load_timeout: DEFAULT_LOAD_TIMEOUT,
            call_timeout: None,
            restart: false,
            workers: 1,
            shared_memory: true,
            spin: bitbridge_shm::DEFAULT_SPIN,
            wait: bitbridge_shm::WaitMode::Spin,
            wine: None,
            wine_prefix: None,
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

    /// Sets an environment variable for the server process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts the server with none of this process's environment: only what [`ServerOptions::env`]
    /// and [`ServerOptions::library_dir`] set, and bitbridge's own variables.
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self
    }

    /// Keeps the variable `key` of this process's environment from the server (as
    /// `Command::env_remove`; a value set with [`ServerOptions::env`] still applies).
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env_remove.push(key.into());
        self
    }

    /// Adds a directory where the server's loader looks for the library's own dependencies (it is put
    /// in front of the server's `LD_LIBRARY_PATH`; msl-loadlib's `append_environ_path`/`add_dll_directory`).
    pub fn library_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.library_dirs.push(dir.into());
        self
    }

    /// How long the server may take to start and greet the client (default 30 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// How long loading one library may take, its initialisers included (default
    /// [`DEFAULT_LOAD_TIMEOUT`], 30 s, whatever `call_timeout` says: a constructor is not the caller's
    /// work). When it passes, the server is killed and [`Server::load`] fails with [`Error::LoadTimeout`].
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.load_timeout = timeout;
        self
    }

    /// How long any one request may take (default: no limit; [`Function::call_timeout`](crate::Function::call_timeout)
    /// sets it per call). When it passes, the server is killed (the library's state is unknown) and the
    /// request fails with [`Error::Timeout`].
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// After the server dies (a crash, a timeout), start a fresh one on the next request, loading the
    /// same libraries and preparing the same functions again (default: off, and every later request
    /// fails with the death's error). Server memory does not survive: addresses from
    /// [`Server::alloc`] and handles the library returned are gone.
    pub fn restart_on_failure(mut self, restart: bool) -> Self {
        self.restart = restart;
        self
    }

    /// Runs calls on `workers` threads in the server, for libraries documented as thread-safe: calls from
    /// several client threads then run at the same time, and a quick call is never queued behind a slow
    /// one. The default, 1, runs every call on one server thread, as most vendor libraries need.
    pub fn concurrent(mut self, workers: u32) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Carries frames through a shared-memory segment (the default) or over the socket itself. Shared
    /// memory avoids a system call per message and, with [`ServerOptions::spin`], the cost of waking a
    /// sleeping process; the socket is kept for start-up and to notice a peer's death either way.
    pub fn shared_memory(mut self, on: bool) -> Self {
        self.shared_memory = on;
        self
    }

    /// How long each side of a shared-memory connection spins waiting for the other before it sleeps on
    /// a futex (default [`bitbridge_shm::DEFAULT_SPIN`], 50 us: about what one wake-up costs on a 2-vCPU
    /// VM). Zero never spins: the least CPU, the slowest round trip. Idle servers always sleep.
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// How each side of a shared-memory connection waits for the other: [`WaitMode::Spin`] (the
    /// default) spins for the [`ServerOptions::spin`] time, then sleeps on a futex; [`WaitMode::Adaptive`]
    /// spins only while spinning catches the peer and otherwise sleeps at once (better latency for one
    /// calling thread on an oversubscribed machine, worse throughput for many: see its documentation);
    /// [`WaitMode::Sleep`] never spins.
    ///
    /// [`WaitMode::Adaptive`]: bitbridge_shm::WaitMode::Adaptive
    /// [`WaitMode::Spin`]: bitbridge_shm::WaitMode::Spin
    /// [`WaitMode::Sleep`]: bitbridge_shm::WaitMode::Sleep
    pub fn wait_mode(mut self, wait: bitbridge_shm::WaitMode) -> Self {
        self.wait = wait;
        self
    }

    /// The Wine loader that runs Windows servers of this options' architecture (`wine` for i686,
    /// `wine64` for x86_64), instead of searching for one (see [`ServerOptions::spawn_for`]).
    pub fn wine(mut self, loader: impl Into<PathBuf>) -> Self {
        self.wine = Some(loader.into());
        self
    }

    /// The Wine prefix Windows servers run in, instead of bitbridge's own one per architecture
    /// (created on first use when it does not exist; it must be of the server's architecture).
    pub fn wine_prefix(mut self, prefix: impl Into<PathBuf>) -> Self {
        self.wine_prefix = Some(prefix.into());
        self
    }

    /// The folders where Windows servers for `arch` started with these options find system DLLs: the
    /// prefix's system folder and Wine's builtins. `None` when no Wine loader or prefix is found.
    pub(crate) fn dll_dirs(&self, arch: Arch) -> Option<crate::wine::DllDirs> {
        let loader = crate::wine::find_loader(arch, self.wine.as_deref()).ok()?;
        let prefix = crate::wine::prefix(arch, self.wine_prefix.as_deref()).ok()?;
        Some(crate::wine::DllDirs::new(&loader, &prefix, arch))
    }

    /// Starts a server process for `arch` Linux libraries.
    pub fn spawn(&self, arch: Arch) -> Result<Server> {
        self.spawn_for(Target { arch, os: Os::Linux })
    }

    /// Starts a server process for `target`: Linux libraries of its architecture, or Windows DLLs
    /// ([`Target::WIN32`], [`Target::WIN64`]), whose server runs under Wine. The Wine loader is the one
    /// given with [`ServerOptions::wine`], else `BITBRIDGE_WINE_I686`/`BITBRIDGE_WINE_X86_64`, else
    /// the distribution's (`/usr/lib/wine/wine`, `wine64` ...); the prefix is bitbridge's own per
    /// architecture unless [`ServerOptions::wine_prefix`] or `BITBRIDGE_WINEPREFIX_<ARCH>` names one.
    /// See `docs/WINDOWS.md`.
    ///
    /// # Errors
    /// [`Error::WineNotFound`] and [`Error::WinePrefix`] besides those of [`ServerOptions::spawn`].
    pub fn spawn_for(&self, target: Target) -> Result<Server> {
        let link = self.connect(target)?;
        let got = Target { arch: link.hello.arch, os: link.hello.os };
        Ok(Server::new(link, got, false, Some((self.clone(), target))))
    }

    fn environment(&self) -> Vec<(OsString, OsString)> {
        let mut env = self.env.clone();
        if !self.library_dirs.is_empty() {
            let existing = env
                .iter()
                .rev()
                .find(|(k, _)| k == "LD_LIBRARY_PATH")
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var_os("LD_LIBRARY_PATH"));
            let dirs = self.library_dirs.iter().cloned().chain(existing.iter().flat_map(std::env::split_paths));
            let joined = std::env::join_paths(dirs).unwrap_or_default();
            env.push(("LD_LIBRARY_PATH".into(), joined));
        }
        if self.workers > 1 {
            env.push(("BITBRIDGE_WORKERS".into(), self.workers.to_string().into()));
        }
        if self.shared_memory {
            env.push(("BITBRIDGE_SHM".into(), "1".into()));
            env.push(("BITBRIDGE_SPIN_US".into(), self.spin.as_micros().to_string().into()));
            env.push(("BITBRIDGE_WAIT".into(), self.wait.name().into()));
        }
        env
    }

    /// The directories the server's loader will search first (from `library_dir` and `LD_LIBRARY_PATH`).
    pub(crate) fn search_dirs(&self) -> Vec<PathBuf> {
        self.environment()
            .iter()
            .rev()
            .find(|(k, _)| k == "LD_LIBRARY_PATH")
            .map(|(_, v)| std::env::split_paths(v).collect())
            .or_else(|| std::env::var_os("LD_LIBRARY_PATH").map(|v| std::env::split_paths(&v).collect()))
            .unwrap_or_default()
    }

    /// Starts the process and reads its greeting.
    fn connect(&self, target: Target) -> Result<Link> {
        let arch = target.arch;
        let windows = target.os == Os::Windows;
        let path = crate::locate::find_server_for(target, self.server_path.as_deref())?;
        let inherit = process::Inherit { clear: self.env_clear, remove: &self.env_remove };
        let mut env = self.environment();
        let launcher = if windows {
            let loader = crate::wine::find_loader(arch, self.wine.as_deref())?;
            let prefix = crate::wine::prefix(arch, self.wine_prefix.as_deref())?;
            crate::wine::ensure_prefix(&loader, arch, &prefix, self.startup_timeout.max(Duration::from_secs(180)))?;
            let mut wine_env = crate::wine::environment(&loader, arch, &prefix);
            wine_env.append(&mut env);
            env = wine_env;
            Some(loader)
        } else {
            None
        };
        let (mut proc_, stream) = process::spawn(&path, launcher.as_deref(), &env, inherit)?;
        let pid = proc_.pid();
        let fail = |proc_: &mut ServerProcess, e: Error| {
            proc_.reap(Duration::ZERO);
            e
        };
        let io = |e| Error::Io(e);
        let halves = stream.try_clone().and_then(|r| Ok((r, stream.try_clone()?)));
        let (r, w) = match halves {
            Ok(h) => h,
            Err(e) => return Err(fail(&mut proc_, io(e))),
        };
        let pidfd = proc_.pidfd.clone();
        // The segment is made while the server starts (its exec and loading take about a millisecond), not
        // after its greeting; passed to it only once the greeting is checked. (Its watcher polls the
        // socket, so it starts after the greeting is read.)
        let segment =
            self.shared_memory.then(|| bitbridge_shm::Segment::create(bitbridge_shm::DEFAULT_CAPACITY).map(Arc::new));
        // The greeting is small: a larger one is refused before anything is allocated for it.
        let mut greeting = StreamTransport::with_max_frame(process::Watched::new(r, pidfd.clone()), GREETING_MAX);
        greeting.get_mut().deadline = Some(Instant::now() + self.startup_timeout);
        let mut buf = Vec::new();
        let hello = match greeting.recv(&mut buf) {
            Ok(()) => check_hello(&buf, &path),
            Err(FrameError::TimedOut) => Err(Error::StartupTimeout { pid, after: self.startup_timeout }),
            Err(FrameError::TooLarge { len, max }) => Err(Error::Handshake(format!(
                "{} is not a bitbridge server: its greeting announces {len} bytes, a greeting is at most {max}",
                path.display()
            ))),
            Err(_) => {
                let status = proc_.reap(Duration::from_secs(2));
                let stderr = proc_.stderr.text(Duration::from_millis(200));
                Err(Error::ServerDied { pid, status, stderr })
            }
        };
        let hello = match hello {
            Ok(h) if h.arch != arch || h.os != target.os => {
                let e = Error::Handshake(format!(
                    "{} hosts {} libraries, {target} was needed",
                    path.display(),
                    Target { arch: h.arch, os: h.os }
                ));
                return Err(fail(&mut proc_, e));
            }
            Ok(h) => h,
            Err(e) => return Err(fail(&mut proc_, e)),
        };
        greeting.set_max_frame(DEFAULT_MAX_FRAME);
        let mut recv: Box<dyn Transport> = Box::new(SocketTransport(greeting));
        let mut send: Box<dyn Transport> =
            Box::new(SocketTransport(StreamTransport::new(process::Watched::new(w, pidfd.clone()))));
        if let Some(segment) = segment {
            let shm = segment.and_then(|seg| {
                if windows {
                    announce_fd(&stream, seg.fd(), b"SHM1", 0)?;
                } else {
                    bitbridge_shm::send_segment(&stream, &seg)?;
                }
                let watch = bitbridge_shm::Watch::start(stream.try_clone()?, seg.clone(), pidfd.clone())?;
                Ok((seg, watch, stream.try_clone()?, stream.try_clone()?))
            });
            match shm {
                Ok((seg, watch, a, b)) => {
                    recv = Box::new(
                        bitbridge_shm::ShmTransport::client(seg.clone(), a, watch.clone(), self.spin)
                            .wait_mode(self.wait),
                    );
                    send = Box::new(bitbridge_shm::ShmTransport::client(seg, b, watch, self.spin).wait_mode(self.wait));
                }
                Err(e) => return Err(fail(&mut proc_, io(e))),
            }
        }
        let fd_sock = if self.shared_memory { Some(stream) } else { None };
        Ok(Link { send, recv, fd_sock, process: Some(proc_), hello, pid, path: Some(path) })
    }
}

/// Tells a Windows server (which cannot receive descriptors) the number of one of ours to open as
/// `Z:\\proc\\<our pid>\\fd\\<n>` (see [`bitbridge_shm::ANNOUNCEMENT`]); the descriptor must stay open
/// until the server has opened it (its owner keeps it for the connection's life).
pub(crate) fn announce_fd(sock: &UnixStream, fd: &std::os::fd::OwnedFd, tag: &[u8; 4], id: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let mut msg = [0u8; bitbridge_shm::ANNOUNCEMENT];
    msg[..4].copy_from_slice(tag);
    msg[4..8].copy_from_slice(&id.to_le_bytes());
    msg[8..].copy_from_slice(&(fd.as_raw_fd() as u32).to_le_bytes());
    (&*sock).write_all(&msg)
}

/// Passes `fd` to a server of `os`: over the socket (`SCM_RIGHTS`) to a Linux one, by number to a
/// Windows one ([`announce_fd`]).
fn pass_fd(os: Os, sock: &UnixStream, fd: &OwnedFd, tag: &[u8; 4], id: u32) -> std::io::Result<()> {
    match os {
        Os::Windows => announce_fd(sock, fd, tag, id),
        _ => bitbridge_shm::send_fd(sock, fd, tag, id),
    }
}

/// A fresh connection, before it is installed.
struct Link {
    send: Box<dyn Transport>,
    recv: Box<dyn Transport>,
    /// The socket, on a shared-memory connection: file descriptors (the arena's) travel on it.
    fd_sock: Option<UnixStream>,
    process: Option<ServerProcess>,
    hello: Hello,
    pid: u32,
    /// The server binary.
    path: Option<PathBuf>,
}

fn check_hello(buf: &[u8], path: &Path) -> Result<Hello> {
    let hello: Hello =
        msg::decode(buf).map_err(|e| Error::Handshake(format!("{} is not a bitbridge server: {e}", path.display())))?;
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

/// A connection to a server hosting libraries of one architecture.
///
/// Cheap to clone (all clones share the connection); `Send + Sync`: any number of threads may call
/// through it at once. The server is shut down when the last clone, and every [`Library`] and
/// [`Function`](crate::Function) from it, is dropped.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    /// The process's fork generation when the server was started (see
    /// [`bitbridge_shm::fork_generation`]): a forked child must neither use nor stop its parent's server.
    generation: u32,
    target: Target,
    /// The server binary started (`None` in-process).
    path: Option<PathBuf>,
    in_process: bool,
    /// How to start it again, for `restart_on_failure` (`None` in-process).
    respawn: Option<(ServerOptions, Target)>,
    call_timeout: Option<Duration>,
    pid: AtomicU32,
    next_id: AtomicU64,
    send: Mutex<SendHalf>,
    recv: Mutex<RecvHalf>,
    state: Mutex<State>,
    registry: Mutex<Registry>,
    fd_sock: Mutex<Option<UnixStream>>,
    /// Whether this is a shared-memory connection (fixed for the server's life, restarts included).
    shared_memory: bool,
    /// Held for each descriptor transfer (descriptor, then the request that takes it).
    fd_lock: Mutex<()>,
    /// The Rust side of each callback.
    callbacks: Mutex<HashMap<u32, Arc<CallbackEntry>>>,
    /// Whether the callback thread runs.
    listening: std::sync::atomic::AtomicBool,
    /// The bulk arena and the connection generation it was attached on.
    arena: Mutex<Option<(u64, Arena)>>,
}

thread_local! {
    /// A callback run inline during this thread's call failed: the call reports it.
    static CALLBACK_FAILURE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    /// The server's ids of the callback requests this thread is running, innermost last: requests it
    /// sends meanwhile are nested calls of the last.
    static CALLBACK_PARENT: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

type CallbackFn = Box<dyn Fn(&mut [Value]) -> Value + Send + Sync>;

struct CallbackEntry {
    sig: Signature,
    f: CallbackFn,
    /// Failures of runs on the callback thread, where no call can report them.
    errors: Mutex<Vec<String>>,
}

/// A C function pointer that calls a Rust closure in this process (see [`Server::callback`]). The
/// library may keep it; it stays valid until this is dropped.
pub struct Callback {
    server: Server,
    cb: u32,
    entry: Arc<CallbackEntry>,
}

impl Callback {
    /// The function pointer, to pass where the library expects one (it changes if the server restarts).
    pub fn value(&self) -> Value {
        let address = lock(&self.server.inner.registry).callbacks.get(&self.cb).map_or(0, |(_, a)| *a);
        Value::Pointer(address)
    }

    /// Panics of runs on bitbridge's callback thread (a library calling from its own thread, outside
    /// any call), which no call could report; taken out by this.
    pub fn take_errors(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.entry.errors))
    }
}

impl Drop for Callback {
    fn drop(&mut self) {
        lock(&self.server.inner.registry).callbacks.remove(&self.cb);
        lock(&self.server.inner.callbacks).remove(&self.cb);
        if self.server.is_alive() {
            let _ = self.server.request(Request::DropCallback { cb: self.cb }, None);
        }
    }
}

impl fmt::Debug for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Callback({} = {:?})", self.entry.sig, self.value())
    }
}

/// Blocks at least this large travel through the bulk arena on shared-memory connections.
const ARENA_THRESHOLD: u64 = 256 * 1024;
/// The largest arena: what a 32-bit server can reasonably map.
const ARENA_MAX: u64 = 1 << 30;
/// How long loading a library may take by default (see [`ServerOptions::load_timeout`]).
pub const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest greeting accepted (a real one is under 100 bytes).
pub(crate) const GREETING_MAX: u32 = 4096;
/// A frame that has begun must be complete within this time, whatever the call's own deadline: a
/// server sends each frame in one go (1 GiB takes about a second), so a frame stopped part-way means
/// a broken or hostile server.
pub const FRAME_STALL: Duration = Duration::from_secs(10);
/// How often a reader with no deadline checks whether a frame has stalled.
const STALL_CHECK: Duration = Duration::from_secs(1);

struct SendHalf {
    transport: Box<dyn Transport>,
    out: Vec<u8>,
}

struct RecvHalf {
    transport: Box<dyn Transport>,
    buf: Vec<u8>,
    /// When the frame being received was first seen unfinished.
    begun: Option<Instant>,
}

/// The socket transport: frames over the watched socket, whose deadline is the transport's timeout.
struct SocketTransport(StreamTransport<process::Watched>);

impl Transport for SocketTransport {
    fn send(&mut self, frame: &[u8]) -> std::result::Result<(), FrameError> {
        self.0.send(frame)
    }
    fn recv(&mut self, buf: &mut Vec<u8>) -> std::result::Result<(), FrameError> {
        self.0.recv(buf)
    }
    fn in_frame(&self) -> bool {
        self.0.in_frame()
    }
    fn set_max_frame(&mut self, max: u32) {
        self.0.set_max_frame(max);
    }
    fn set_recv_timeout(&mut self, timeout: Option<Duration>) -> std::result::Result<(), FrameError> {
        self.0.get_mut().deadline = timeout.map(|t| Instant::now() + t);
        Ok(())
    }
    fn set_send_timeout(&mut self, timeout: Option<Duration>) -> std::result::Result<(), FrameError> {
        self.0.get_mut().deadline = timeout.map(|t| Instant::now() + t);
        Ok(())
    }
}

struct State {
    /// Requests awaiting a reply, each with the largest reply frame it allows.
    pending: HashMap<u64, u32, IdHash>,
    replies: HashMap<u64, Result<Reply, RemoteError>, IdHash>,
    /// Counts restarts: a request belongs to the connection it was sent on.
    generation: u64,
    /// Threads asleep until something changes for them (see [`Server::sleep`]): each is woken for its own
    /// reply, one for the reader role, all for a death or a callback to run.
    parked: Vec<Parked>,
    /// Callbacks the callback thread read while calls were waiting: a waiting caller runs them, so a
    /// callback made during a call runs on the calling thread and its failure fails that call.
    requests: std::collections::VecDeque<(u64, Request)>,
    reading: bool,
    dead: Option<Death>,
    process: Option<ServerProcess>,
}

/// Hashes request ids, which the client numbers itself (so no attacker chooses them): one multiply,
/// where the default SipHash showed up in the profile of every call.
type IdHash = std::hash::BuildHasherDefault<IdHasher>;

#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: spreads consecutive ids over the high bits hashbrown's tags come from.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// What the client has loaded and prepared, replayed on a fresh server after a restart.
#[derive(Default)]
struct Registry {
    next_handle: u32,
    libs: BTreeMap<u32, String>,
    funcs: BTreeMap<u32, (u32, String, Signature)>,
    /// Shared regions: a duplicate of each one's descriptor and its size.
    shared: BTreeMap<u32, (Arc<OwnedFd>, u64)>,
    /// Callbacks: their signature and current address in the server.
    callbacks: BTreeMap<u32, (Signature, u64)>,
    /// A custom server's service: its encoded constructor options, to construct it again.
    service: Option<Vec<u8>>,
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

/// An in-process host shared by the send and receive halves.
#[cfg(feature = "in-process")]
struct Shared(Arc<Mutex<bitbridge_server::InProcess>>);

#[cfg(feature = "in-process")]
impl Transport for Shared {
    fn send(&mut self, frame: &[u8]) -> std::result::Result<(), FrameError> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).send(frame)
    }
    fn recv(&mut self, buf: &mut Vec<u8>) -> std::result::Result<(), FrameError> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).recv(buf)
    }
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
        Server::in_process_host(host)
    }

    /// A client of `host`, running in this process.
    #[cfg(feature = "in-process")]
    pub(crate) fn in_process_host(host: bitbridge_server::Host) -> Server {
        let shared = Arc::new(Mutex::new(bitbridge_server::InProcess::new(host)));
        let mut recv: Box<dyn Transport> = Box::new(Shared(shared.clone()));
        let mut buf = Vec::new();
        recv.recv(&mut buf).expect("the in-process host greets first");
        let hello = check_hello(&buf, Path::new("<in-process>")).expect("the in-process host greets correctly");
        let pid = std::process::id();
        let target = Target { arch: hello.arch, os: hello.os };
        let link = Link { send: Box::new(Shared(shared)), recv, fd_sock: None, process: None, hello, pid, path: None };
        Server::new(link, target, true, None)
    }

    fn new(link: Link, target: Target, in_process: bool, respawn: Option<(ServerOptions, Target)>) -> Server {
        let call_timeout = respawn.as_ref().and_then(|(o, _)| o.call_timeout);
        Server {
            inner: Arc::new(Inner {
                generation: bitbridge_shm::fork_generation(),
                target,
                path: link.path,
                in_process,
                respawn,
                call_timeout,
                pid: AtomicU32::new(link.pid),
                next_id: AtomicU64::new(1),
                send: Mutex::new(SendHalf { transport: link.send, out: Vec::new() }),
                recv: Mutex::new(RecvHalf { transport: link.recv, buf: Vec::new(), begun: None }),
                state: Mutex::new(State {
                    pending: HashMap::default(),
                    replies: HashMap::default(),
                    generation: 0,
                    parked: Vec::new(),
                    requests: std::collections::VecDeque::new(),
                    reading: false,
                    dead: None,
                    process: link.process,
                }),
                registry: Mutex::new(Registry::default()),
                shared_memory: link.fd_sock.is_some(),
                fd_sock: Mutex::new(link.fd_sock),
                fd_lock: Mutex::new(()),
                callbacks: Mutex::new(HashMap::new()),
                listening: std::sync::atomic::AtomicBool::new(false),
                arena: Mutex::new(None),
            }),
        }
    }

    /// For a Windows server: the Wine loader it runs under and the environment that selects its prefix
    /// (`WINEPREFIX`, `WINEARCH`, `WINESERVER`, `WINEDEBUG`...), to run other Windows programs beside it
    /// (an installer, a probe) in the same prefix. `None` for a Linux server.
    pub fn wine_command(&self) -> Option<(PathBuf, Vec<(OsString, OsString)>)> {
        let target = self.inner.target;
        if target.os != Os::Windows {
            return None;
        }
        let opts = self.inner.respawn.as_ref().map(|(o, _)| o.clone()).unwrap_or_default();
        let loader = crate::wine::find_loader(target.arch, opts.wine.as_deref()).ok()?;
        let prefix = crate::wine::prefix(target.arch, opts.wine_prefix.as_deref()).ok()?;
        let env = crate::wine::environment(&loader, target.arch, &prefix);
        Some((loader, env))
    }

    /// The target whose C ABI the server's calls follow.
    pub fn target(&self) -> Target {
        self.inner.target
    }

    /// The server binary this server runs (`None` in-process): the one [`find_server`](crate::find_server)
    /// chose, or `ServerOptions::server_path`.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The server's process id (this process's own id in-process). Changes when the server is restarted.
    pub fn pid(&self) -> u32 {
        self.inner.pid.load(Ordering::Relaxed)
    }

    /// Whether the host runs inside this process.
    pub fn is_in_process(&self) -> bool {
        self.inner.in_process
    }

    /// Whether the server is running (false after it died or was shut down, until a restart).
    pub fn is_alive(&self) -> bool {
        lock(&self.inner.state).dead.is_none()
    }

    /// Loads a library into the server. The path is given to the server's loader as is: a bare name is
    /// searched on the server's library path (see [`ServerOptions::library_dir`]).
    pub fn load(&self, path: impl AsRef<Path>) -> Result<Library> {
        let path = path.as_ref();
        let p = path
            .to_str()
            .ok_or_else(|| Error::NotALibrary { path: path.into(), reason: "the path is not valid UTF-8".into() })?;
        self.check_singleton(path)?;
        let lib = self.next_handle();
        let after = self.inner.respawn.as_ref().map_or(DEFAULT_LOAD_TIMEOUT, |(o, _)| o.load_timeout);
        let server_path = match self.inner.target.os {
            Os::Windows => crate::wine::dos_path(path),
            _ => p.to_owned(),
        };
        match self.request(Request::Load { lib, path: server_path.clone() }, Some(after)) {
            Ok(Reply::Done) => {
                lock(&self.inner.registry).libs.insert(lib, server_path);
                let file = self.loaded_file(p);
                Ok(Library::new(self.clone(), lib, p.to_owned(), file))
            }
            Ok(other) => Err(self.broken(unexpected(&other))),
            Err(Error::Remote(RemoteError { kind: ErrorKind::LoadFailed, message })) => {
                let dirs = self.inner.respawn.as_ref().map(|(o, _)| o.search_dirs()).unwrap_or_default();
                let missing = if !path.is_file() {
                    Vec::new()
                } else if self.inner.target.os == Os::Windows {
                    self.missing_dlls(path)
                } else {
                    crate::detect::missing_dependencies(path, self.inner.target.arch, &dirs)
                };
                Err(Error::Load { path: p.to_owned(), message, missing })
            }
            Err(Error::Timeout { pid }) => Err(Error::LoadTimeout { path: p.to_owned(), pid, after }),
            Err(e) => Err(e),
        }
    }

    /// The DLLs `path` imports that Wine would find nowhere (beside it, in the prefix, among its builtins).
    fn missing_dlls(&self, path: &Path) -> Vec<String> {
        let Some((loader, env)) = self.wine_command() else { return Vec::new() };
        let Some(prefix) = env.iter().find(|(k, _)| k == "WINEPREFIX").map(|(_, v)| PathBuf::from(v)) else {
            return Vec::new();
        };
        let dirs = crate::wine::DllDirs::new(&loader, &prefix, self.inner.target.arch);
        crate::detect::dll_dependencies(path, Some(&dirs))
            .map(|deps| {
                deps.into_iter()
                    .filter(|d| matches!(d.location, crate::detect::DllLocation::NotFound))
                    .map(|d| d.name)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The file the server's loader uses for `name`: a path, or a bare name (`libc.so.6`) as the server's
    /// dynamic loader resolved it. Read from the server's memory map, so it is the file actually
    /// loaded; `None` when nothing of that name is mapped (not loaded, or the map cannot be read). In a
    /// Windows server a name matches whatever its case (`KERNEL32.dll` is Wine's `kernel32.dll`).
    pub fn loaded_file(&self, name: impl AsRef<Path>) -> Option<PathBuf> {
        let name = name.as_ref();
        let files = crate::detect::mapped_files(self.pid());
        if name.components().count() > 1 {
            return files.into_iter().find(|f| crate::detect::same_file(f, name));
        }
        let name = name.to_str()?;
        let windows = self.inner.target.os == Os::Windows;
        let by_name = files.iter().find(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == name || (windows && n.eq_ignore_ascii_case(name)))
        });
        by_name.cloned().or_else(|| files.into_iter().find(|f| crate::detect::soname(f).as_deref() == Some(name)))
    }

    /// Refuses a path that is another copy of a system library already in the server (see
    /// [`Error::DuplicateSystemLibrary`]).
    fn check_singleton(&self, path: &Path) -> Result<()> {
        if path.components().count() <= 1 || !path.is_file() {
            return Ok(());
        }
        let Some(soname) = crate::detect::soname(path) else { return Ok(()) };
        if !crate::detect::SINGLETONS.contains(&soname.as_str()) {
            return Ok(());
        }
        let loaded = crate::detect::mapped_files(self.pid()).into_iter().find(|f| {
            (f.file_name().is_some_and(|n| n == soname.as_str())
                || crate::detect::soname(f).as_deref() == Some(soname.as_str()))
                && !crate::detect::same_file(f, path)
        });
        match loaded {
            Some(loaded) => Err(Error::DuplicateSystemLibrary { path: path.to_path_buf(), soname, loaded }),
            None => Ok(()),
        }
    }

    /// Constructs the server's service object from encoded options (a custom server's constructor),
    /// remembered to be replayed by a restart.
    pub(crate) fn start_service(&self, options: Vec<u8>) -> Result<()> {
        // The constructor is part of starting: bounded by the start-up timeout, as loading is.
        let timeout = self.inner.respawn.as_ref().map(|(o, _)| o.startup_timeout);
        let reply = self.request(Request::Start { options: options.clone() }, timeout).map_err(|e| match e {
            // The program is a bitbridge server, but not a custom one: say so in the error itself.
            Error::Remote(RemoteError { kind: ErrorKind::NotServed, message }) => Error::Unsupported(message),
            other => other,
        })?;
        match reply {
            Reply::Done => {
                lock(&self.inner.registry).service = Some(options);
                Ok(())
            }
            Reply::Raised { kind, message } => {
                Err(Error::Raised { call: "the constructor".into(), kind: bounded(kind), message: bounded(message) })
            }
            other => Err(self.broken(unexpected(&other))),
        }
    }

    /// A service request answered with an encoded value or a raised error; `call` names it in errors.
    pub(crate) fn service_request(&self, request: Request, call: &str, timeout: Option<Duration>) -> Result<Vec<u8>> {
        match self.request(request, timeout)? {
            Reply::Bytes(b) => Ok(b),
            Reply::Raised { kind, message } => {
                Err(Error::Raised { call: call.to_string(), kind: bounded(kind), message: bounded(message) })
            }
            other => Err(self.broken(unexpected(&other))),
        }
    }

    pub(crate) fn next_handle(&self) -> u32 {
        let mut r = lock(&self.inner.registry);
        r.next_handle += 1;
        r.next_handle
    }

    pub(crate) fn register_function(&self, func: u32, lib: u32, symbol: &str, sig: &Signature) {
        lock(&self.inner.registry).funcs.insert(func, (lib, symbol.to_owned(), sig.clone()));
    }

    /// Forgets a library, function or shared buffer and, if the server is running, tells it.
    pub(crate) fn release(&self, request: Request) {
        {
            let mut r = lock(&self.inner.registry);
            match &request {
                Request::Unload { lib } => drop(r.libs.remove(lib)),
                Request::Release { func } => drop(r.funcs.remove(func)),
                Request::UnmapShared { region } => drop(r.shared.remove(region)),
                _ => {}
            };
        }
        if self.is_alive() {
            let _ = self.request(request, None);
        }
    }

    /// Allocates `size` zeroed bytes of server memory aligned to `align`, kept until [`Server::free`]:
    /// for pointers stored inside structs, or memory a library keeps across calls.
    pub fn alloc(&self, size: u64, align: u32) -> Result<u64> {
        match self.request(Request::Alloc { size, align }, None)? {
            Reply::Address(a) => Ok(a),
            other => Err(self.broken(unexpected(&other))),
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
        match self.request(Request::Read { addr, len }, None)? {
            Reply::Bytes(b) if b.len() as u64 == len => Ok(b),
            Reply::Bytes(b) => {
                let e = Error::Protocol(format!("the server answered a read of {len} bytes with {} bytes", b.len()));
                Err(self.broken(e))
            }
            other => Err(self.broken(unexpected(&other))),
        }
    }

    /// Reads the NUL-terminated string at an address of the server (ctypes' `string_at`).
    pub fn read_cstring(&self, addr: u64) -> Result<Vec<u8>> {
        match self.request(Request::ReadString { addr, wide: false, max_len: u64::MAX }, None)? {
            Reply::Bytes(b) => Ok(b),
            other => Err(self.broken(unexpected(&other))),
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

    /// Creates a buffer of `len` bytes shared with the server (a memfd both map): pass
    /// [`SharedBuffer::value`] where a pointer is expected and the library works on the same memory, with
    /// nothing copied, and may keep the pointer to fill it later. Needs the shared-memory transport.
    pub fn share(&self, len: u64) -> Result<SharedBuffer> {
        if !self.inner.shared_memory {
            return Err(Error::Unsupported("shared buffers need the shared-memory transport".into()));
        }
        if len == 0 || len > ARENA_MAX {
            return Err(Error::Unsupported(format!("a shared buffer of {len} bytes (1 to {ARENA_MAX})")));
        }
        let mem = Arc::new(Arena::create(len).map_err(Error::Io)?);
        let region = self.map_fd(mem.fd(), len)?;
        Ok(SharedBuffer { server: self.clone(), region, mem })
    }

    /// Maps the memory behind `fd` (`size` bytes) in the server as a shared region; returns its id.
    pub(crate) fn map_fd(&self, fd: &OwnedFd, size: u64) -> Result<u32> {
        let dup = Arc::new(fd.try_clone().map_err(Error::Io)?);
        let region = self.next_handle();
        self.transfer_fd(&dup, b"SHR1", region, Request::MapShared { region, size })?;
        lock(&self.inner.registry).shared.insert(region, (dup, size));
        Ok(region)
    }

    /// Sends `fd` over the socket, then `request`, which makes the server take it: one transfer at a
    /// time (so descriptors and requests pair up even with concurrent callers and server workers), and
    /// to the server the descriptor went to (no restart in between).
    fn transfer_fd(&self, fd: &OwnedFd, tag: &[u8; 4], id: u32, request: Request) -> Result<()> {
        self.ensure_running()?;
        let _one = lock(&self.inner.fd_lock);
        {
            let sock = lock(&self.inner.fd_sock);
            let sock = sock
                .as_ref()
                .ok_or_else(|| Error::Unsupported("shared memory needs the shared-memory transport".into()))?;
            if let Err(e) = pass_fd(self.inner.target.os, sock, fd, tag, id) {
                // The server is gone (EPIPE): report its death rather than the socket's error.
                let mut st = lock(&self.inner.state);
                return Err(self.fail(&mut st, FrameError::Io(e)));
            }
        }
        match self.request_on(request, None, false, SMALL_REPLY)? {
            Reply::Done => Ok(()),
            other => Err(self.broken(unexpected(&other))),
        }
    }

    /// Unmaps a region mapped with `map_fd`.
    pub(crate) fn unmap(&self, region: u32) {
        self.release(Request::UnmapShared { region });
    }

    /// Shuts the server down and returns how it ended and what it printed. Every handle to it fails
    /// from now on with [`Error::ShutDown`].
    pub fn shutdown(&self) -> Result<ServerOutput> {
        if self.is_alive() {
            let _ = self.request(Request::Shutdown, Some(Duration::from_secs(5)));
        }
        let mut st = lock(&self.inner.state);
        st.dead = Some(Death::ShutDown);
        wake_all(&mut st);
        match st.process.as_mut() {
            Some(p) => {
                let status = p.reap(Duration::from_secs(2));
                let wait = Duration::from_millis(500);
                Ok(ServerOutput { status, stdout: p.stdout.text(wait), stderr: p.stderr.text(wait) })
            }
            None => Ok(ServerOutput { status: ExitReason::Code(0), stdout: String::new(), stderr: String::new() }),
        }
    }

    /// The server broke the protocol (a reply of the wrong kind or size): it can no longer be trusted,
    /// so it is ended, and every later request fails at once (or restarts it, when allowed).
    pub(crate) fn broken(&self, e: Error) -> Error {
        let mut st = lock(&self.inner.state);
        if st.dead.is_none() {
            self.bury(&mut st, Duration::ZERO);
        }
        e
    }

    fn done(&self, req: Request) -> Result<()> {
        match self.request(req, None)? {
            Reply::Done => Ok(()),
            other => Err(self.broken(unexpected(&other))),
        }
    }

    /// Calls a prepared function: lays the values out, moves large blocks into the shared arena (one copy,
    /// no copy back: they are read in place), sends, and reads the results back.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn call(
        &self,
        func: u32,
        name: &str,
        sig: &Signature,
        plan: Option<&crate::fast::Plan>,
        args: &[Value],
        extra: &[(CType, Value)],
        borrowed: &mut [Option<Borrowed<'_>>],
        timeout: Option<Duration>,
    ) -> Result<Outcome> {
        let outer = CALLBACK_FAILURE.with(|f| f.borrow_mut().take());
        let mut buf = [0u8; crate::fast::MAX_ARGS];
        // Borrowed slices are pointees: never the fast path.
        let fast = plan
            .filter(|_| extra.is_empty() && borrowed.iter().all(Option::is_none))
            .and_then(|p| Some((p, p.encode(&self.target(), sig, args, &mut buf)?)));
        let result = if let Some((plan, bytes)) = fast {
            self.call_fast(func, name, sig, plan, bytes, timeout)
        } else if extra.is_empty() && !sig.variadic {
            self.call_prepared(func, name, sig, args, borrowed, Vec::new(), timeout)
        } else {
            self.call_variadic(func, name, sig, args, extra, timeout)
        };
        // A callback that failed while this call ran makes the call fail, whatever the library did next.
        let failure = CALLBACK_FAILURE.with(|f| std::mem::replace(&mut *f.borrow_mut(), outer));
        match (result, failure) {
            (Ok(_), Some(message)) => Err(Error::Callback { function: name.to_owned(), message }),
            (result, _) => result,
        }
    }

    /// A variadic call: the promotions checked, the variadic arguments appended to the fixed ones.
    fn call_variadic(
        &self,
        func: u32,
        name: &str,
        sig: &Signature,
        args: &[Value],
        extra: &[(CType, Value)],
        timeout: Option<Duration>,
    ) -> Result<Outcome> {
        if !sig.variadic {
            return Err(Error::Signature { function: name.to_owned(), message: "not declared variadic".into() });
        }
        for (i, (ty, _)) in extra.iter().enumerate() {
            if let Some(p) = ty.promoted() {
                return Err(Error::Signature {
                    function: name.to_owned(),
                    message: format!(
                        "variadic argument {} is `{ty}`, which C passes as `{p}` (default argument promotions): declare it so",
                        sig.params.len() + i + 1
                    ),
                });
            }
        }
        let mut full = sig.clone();
        full.params
            .extend(extra.iter().map(|(ty, _)| bitbridge_proto::Param { ty: ty.clone(), dir: Default::default() }));
        let mut values = args.to_vec();
        values.extend(extra.iter().map(|(_, v)| v.clone()));
        let types: Vec<CType> = extra.iter().map(|(t, _)| t.clone()).collect();
        self.call_prepared(func, name, &full, &values, &mut [], types, timeout)
    }

    /// A call whose arguments are `bytes`, laid out by `plan` (see `fast.rs`).
    fn call_fast(
        &self,
        func: u32,
        name: &str,
        sig: &Signature,
        plan: &crate::fast::Plan,
        bytes: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Outcome> {
        let target = self.target();
        let returned = match self.send_and_wait(
            Outgoing::Call { func, args: bytes },
            timeout,
            true,
            SMALL_REPLY + plan.ret_size,
        )? {
            Reply::Returned(r) => r,
            other => return Err(self.broken(unexpected(&other))),
        };
        check_returned(name, &sig.ret, Some(plan.ret_size), &[], &returned).map_err(|e| self.broken(e))?;
        if !returned.addrs.is_empty() || returned.string.is_some() {
            let e = Error::Protocol(format!("the server gave memory back for `{name}`, which was given none"));
            return Err(self.broken(e));
        }
        let ret = bitbridge_proto::marshal::decode_return(&target, &sig.ret, &returned.value)
            .map_err(|source| Error::Result { function: name.to_owned(), source: Box::new(source) })?;
        // No argument came back (none passed memory): `outs` stays empty, with no allocation.
        Ok(Outcome { ret, outs: Vec::new(), errno: returned.errno, last_error: returned.last_error })
    }

    #[allow(clippy::too_many_arguments)]
    fn call_prepared(
        &self,
        func: u32,
        name: &str,
        sig: &Signature,
        args: &[Value],
        borrowed: &mut [Option<Borrowed<'_>>],
        variadic: Vec<CType>,
        timeout: Option<Duration>,
    ) -> Result<Outcome> {
        let target = self.target();
        let threshold = if self.inner.shared_memory { ARENA_THRESHOLD } else { u64::MAX };
        let arg_err = |source| Error::Argument { function: name.to_owned(), source: Box::new(source) };
        let res_err = |source| Error::Result { function: name.to_owned(), source: Box::new(source) };
        let any_borrowed = borrowed.iter().any(Option::is_some);
        let slices: Vec<Option<NumSlice<'_>>> = match any_borrowed {
            true => borrowed.iter().map(|b| b.as_ref().map(Borrowed::as_slice)).collect(),
            false => Vec::new(), // no allocation on the usual path
        };
        let (mut call, plan, deferred) =
            encode_call_borrowed(&target, sig, args, &slices, threshold).map_err(arg_err)?;
        // The block of each borrowed argument whose memory comes back, to read into it in place.
        let borrowed_blocks: Vec<(usize, u32)> = borrowed
            .iter()
            .enumerate()
            .filter(|(i, b)| {
                matches!(b, Some(Borrowed::Mut(_))) && sig.params[*i].dir != bitbridge_proto::Direction::In
            })
            .filter_map(|(i, _)| {
                call.relocs.iter().find(|r| r.at == bitbridge_proto::Loc::Arg(i as u32)).map(|r| (i, r.block))
            })
            .collect();
        call.variadic = variadic;
        // What the reply may hold: the return value, the blocks that come back in it, a returned string.
        let ret_size = match &sig.ret {
            CType::Void => Some(0),
            ty => target.layout(ty).ok().map(|l| l.size),
        };
        let big: Vec<usize> = (0..call.blocks.len())
            .filter(|&i| call.blocks[i].len >= threshold && call.blocks[i].arena.is_none())
            .collect();
        let mut guard = None;
        let mut offsets = Vec::with_capacity(big.len());
        if !big.is_empty() {
            // Restart first if needed, so the arena is attached to the server the call goes to.
            self.ensure_running()?;
            let g = guard.insert(lock(&self.inner.arena));
            let mut end = 0u64;
            for &i in &big {
                let off = end.next_multiple_of(u64::from(call.blocks[i].align.max(64)));
                offsets.push(off);
                end = off + call.blocks[i].len;
            }
            let arena = self.ensure_arena(g, end)?;
            let mut deferred = deferred.into_iter().peekable();
            for (&i, &off) in big.iter().zip(&offsets) {
                let b = &mut call.blocks[i];
                let dst = arena.bytes_mut(off, b.len);
                while deferred.peek().is_some_and(|(bi, _)| (*bi as usize) < i) {
                    deferred.next();
                }
                match deferred.peek() {
                    Some((bi, src)) if *bi as usize == i => dst.copy_from_slice(src),
                    _ if !b.data.is_empty() => dst.copy_from_slice(&b.data),
                    _ => dst.fill(0),
                }
                b.data = Vec::new();
                b.arena = Some(off);
            }
        }
        let meta: Vec<(bool, Option<u64>, u64)> = call.blocks.iter().map(|b| (b.copy_back, b.arena, b.len)).collect();
        // When the library may replace pointers (a written pointer to pointers), the small blocks
        // that do not come back (strings passed in) are kept: a replaced pointer into one of them (the
        // `endptr` of `strtol`) is read from here, since the server frees them after the call.
        let may_replace = sig.params.iter().any(|p| {
            p.dir != bitbridge_proto::Direction::In && matches!(&p.ty, CType::Pointer(to) if to.contains_pointer())
        });
        let kept: Vec<Option<Vec<u8>>> = if may_replace {
            call.blocks
                .iter()
                .map(|b| (!b.copy_back && b.arena.is_none() && b.data.len() <= 64 << 10).then(|| b.data.clone()))
                .collect()
        } else {
            Vec::new()
        };
        let back_sizes: Vec<u64> = meta.iter().filter(|(c, a, _)| *c && a.is_none()).map(|m| m.2).collect();
        let allow = match (&sig.ret, ret_size) {
            (CType::CStr | CType::WStr, _) | (_, None) => u64::from(DEFAULT_MAX_FRAME),
            (_, Some(r)) => {
                back_sizes.iter().fold(SMALL_REPLY + r + 8 * meta.len() as u64, |a, b| a.saturating_add(*b))
            }
        };
        let returned = match self.request_on(Request::Call { func, call }, timeout, true, allow)? {
            Reply::Returned(r) => r,
            other => return Err(self.broken(unexpected(&other))),
        };
        check_returned(name, &sig.ret, ret_size, &back_sizes, &returned).map_err(|e| self.broken(e))?;
        if returned.addrs.len() != meta.len() {
            let e = Error::Protocol(format!(
                "the server gave {} block addresses for `{name}`, which has {} blocks",
                returned.addrs.len(),
                meta.len()
            ));
            return Err(self.broken(e));
        }
        let mut back = returned.blocks.iter();
        let arena = guard.as_ref().and_then(|g| g.as_ref()).map(|(_, a)| a);
        let views: Vec<Option<&[u8]>> = meta
            .iter()
            .map(|&(copy_back, at, len)| match (copy_back, at, arena) {
                (false, _, _) => None,
                (true, Some(off), Some(arena)) => Some(arena.bytes(off, len)),
                (true, Some(_), None) => None,
                (true, None, _) => back.next().map(Vec::as_slice),
            })
            .collect();
        let mask: Vec<bool> = match any_borrowed {
            true => borrowed.iter().map(Option::is_some).collect(),
            false => Vec::new(),
        };
        let (ret, mut outs) = decode_results_borrowed(
            &target,
            sig,
            args,
            &mask,
            &plan,
            &returned.value,
            returned.string.clone(),
            &views,
            &returned.addrs,
        )
        .map_err(res_err)?;
        // Borrowed numbers: their memory read straight into the caller's slices.
        for (i, block) in borrowed_blocks {
            let (Some(Some(Borrowed::Mut(out))), CType::Pointer(to)) = (borrowed.get_mut(i), &sig.params[i].ty) else {
                continue;
            };
            let Some(bytes) = views.get(block as usize).copied().flatten() else {
                return Err(
                    self.broken(Error::Protocol(format!("no memory came back for argument {} of `{name}`", i + 1)))
                );
            };
            bitbridge_proto::decode_numbers_into(&target, to, i, bytes, out).map_err(res_err)?;
        }
        // Pointers the library replaced inside memory that came back: read what they point to now.
        if may_replace {
            let within: Vec<Within<'_>> = returned
                .addrs
                .iter()
                .zip(&meta)
                .enumerate()
                .map(|(i, (&start, m))| Within {
                    start,
                    len: m.2,
                    content: views.get(i).copied().flatten().or_else(|| kept.get(i)?.as_deref()),
                })
                .collect();
            for ((p, orig), out) in sig.params.iter().zip(args).zip(outs.iter_mut()) {
                if let (CType::Pointer(to), Some(after)) = (&p.ty, out.as_mut()) {
                    self.follow(to, Some(orig), after, &within, 0)?;
                }
            }
        }
        drop(guard);
        Ok(Outcome { ret, outs, errno: returned.errno, last_error: returned.last_error })
    }

    /// What a replaced pointer of type `ty` points to, read from `bytes` (the rest of a block of the
    /// call): a string up to its NUL for `char *`/`wchar_t *`, one `T` for a `T *`.
    fn pointee_in(&self, ty: &CType, bytes: &[u8]) -> Option<Value> {
        let target = self.target();
        let text = |b: &[u8]| {
            let end = b.iter().position(|&c| c == 0)?;
            Some(String::from_utf8(b[..end].to_vec()).map(Value::Str).unwrap_or_else(|e| Value::Bytes(e.into_bytes())))
        };
        match ty {
            CType::CStr => text(bytes),
            CType::Pointer(to) if **to == CType::Char => text(bytes),
            CType::WStr => {
                let unit = target.layout(&CType::WChar).ok()?.size as usize;
                let end = bytes.chunks_exact(unit).position(|u| u.iter().all(|&c| c == 0))?;
                Some(Value::Str(bitbridge_proto::decode_wide(&target, &bytes[..end * unit])))
            }
            CType::Pointer(to) if !to.is_pointer() && **to != CType::Void => {
                let size = target.layout(to).ok()?.size as usize;
                bitbridge_proto::decode_value(&target, to, bytes.get(..size)?).ok()
            }
            _ => None,
        }
    }

    /// Replaces each pointer in `v` (a value of type `ty` read back after a call, `orig` what was
    /// passed) that the library wrote, by what it points to when its type says how much: the string
    /// of a `char *`/`wchar_t *`, one `T` of a `T *` (`T` sized, not a pointer). An address inside the
    /// call's own (now freed) memory, `NULL`, an unreadable address or a pointer to `void` stays an
    /// address.
    fn follow(&self, ty: &CType, orig: Option<&Value>, v: &mut Value, within: &[Within<'_>], depth: u32) -> Result<()> {
        if depth > 64 || !ty.contains_pointer() {
            return Ok(()); // nothing in it can have been replaced (no walk over big arrays of numbers)
        }
        let item = |i: usize| orig.and_then(|o| o.get(i));
        match (ty, &mut *v) {
            (CType::Array(of, _), Value::Array(items)) => {
                for (i, x) in items.iter_mut().enumerate() {
                    self.follow(of, item(i), x, within, depth + 1)?;
                }
            }
            (_, Value::Array(items)) => {
                // The elements of a pointer's memory.
                for (i, x) in items.iter_mut().enumerate() {
                    self.follow(ty, item(i), x, within, depth + 1)?;
                }
            }
            (CType::Struct(def), Value::Struct(vals)) => {
                for (i, (f, x)) in def.fields.iter().zip(vals.iter_mut()).enumerate() {
                    self.follow(&f.ty, item(i), x, within, depth + 1)?;
                }
            }
            (CType::CStr | CType::WStr | CType::Pointer(_), Value::Pointer(a)) => {
                let a = *a;
                if a == 0 || orig == Some(&Value::Pointer(a)) {
                    return Ok(());
                }
                if let Some(w) = within.iter().find(|w| a >= w.start && a - w.start < w.len) {
                    // Into the call's own memory, freed by now: read from what the client has of it.
                    if let Some(x) = w.content.and_then(|c| self.pointee_in(ty, c.get((a - w.start) as usize..)?)) {
                        *v = x;
                    }
                    return Ok(());
                }
                // A buffer the caller passed (an array) that the library replaced: its length is not
                // in the type, so the new address is the answer.
                let buffer =
                    matches!(orig, Some(Value::Array(_) | Value::Numbers(_) | Value::Bytes(_) | Value::Zeros(_)));
                let read = match ty {
                    CType::CStr => self
                        .read_cstring(a)
                        .map(|b| String::from_utf8(b).map(Value::Str).unwrap_or_else(|e| Value::Bytes(e.into_bytes()))),
                    CType::WStr => {
                        match self.request(Request::ReadString { addr: a, wide: true, max_len: u64::MAX }, None) {
                            Ok(Reply::Bytes(b)) => Ok(Value::Str(bitbridge_proto::decode_wide(&self.target(), &b))),
                            Ok(other) => Err(self.broken(unexpected(&other))),
                            Err(e) => Err(e),
                        }
                    }
                    // A `char *` written by the library is a string, as ctypes' `c_char_p`.
                    CType::Pointer(to) if **to == CType::Char => self
                        .read_cstring(a)
                        .map(|b| String::from_utf8(b).map(Value::Str).unwrap_or_else(|e| Value::Bytes(e.into_bytes()))),
                    CType::Pointer(to)
                        if !buffer && !to.is_pointer() && **to != CType::Void && self.target().layout(to).is_ok() =>
                    {
                        self.read_value(a, to)
                    }
                    _ => return Ok(()),
                };
                match read {
                    Ok(x) => *v = x,
                    // An address the library wrote that cannot be read: the address is the answer.
                    Err(Error::Remote(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The arena, at least `needed` bytes and attached to the current server.
    fn ensure_arena<'g>(&self, guard: &'g mut Option<(u64, Arena)>, needed: u64) -> Result<&'g mut Arena> {
        let generation = lock(&self.inner.state).generation;
        let fits = guard.as_ref().is_some_and(|(g, a)| *g == generation && a.len() >= needed);
        if !fits {
            if needed > ARENA_MAX {
                return Err(Error::MessageTooLarge { size: needed, max: ARENA_MAX as u32 });
            }
            let old = guard.as_ref().filter(|(g, _)| *g == generation).map_or(0, |(_, a)| a.len());
            let size = needed.max(old * 2).max(8 << 20).next_multiple_of(1 << 20).min(ARENA_MAX);
            let arena = Arena::create(size).map_err(Error::Io)?;
            self.transfer_fd(arena.fd(), b"ARN1", 0, Request::AttachArena { size })?;
            *guard = Some((generation, arena));
        }
        Ok(&mut guard.as_mut().expect("attached above").1)
    }

    /// Sends one request and waits for its reply, for at most `timeout` (else the server's call timeout).
    pub(crate) fn request(&self, req: Request, timeout: Option<Duration>) -> Result<Reply> {
        let allow = reply_allowance(&req);
        self.request_on(req, timeout, true, allow)
    }

    /// Sends a request; `restart`: a dead server may be restarted first (when allowed) rather than
    /// failing the request. `allow`: the largest reply frame the request can legitimately produce.
    fn request_on(&self, req: Request, timeout: Option<Duration>, restart: bool, allow: u64) -> Result<Reply> {
        self.send_and_wait(Outgoing::Request(req), timeout, restart, allow)
    }

    /// Sends a request and waits for its reply (see [`Server::wait`]).
    fn send_and_wait(&self, req: Outgoing<'_>, timeout: Option<Duration>, restart: bool, allow: u64) -> Result<Reply> {
        let inner = &*self.inner;
        if inner.generation != bitbridge_shm::fork_generation() {
            return Err(Error::Forked { pid: self.pid() });
        }
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        // From inside a callback: a nested call, for the server thread waiting in that callback.
        let parent = CALLBACK_PARENT.with(|p| p.borrow().last().copied());
        // One lock for the liveness check and the registration (a call's hot path).
        let (generation, deadline) = loop {
            let mut st = lock(&inner.state);
            match &st.dead {
                None => {
                    // After a restart, so starting a server never counts against the call.
                    let deadline = timeout.or(inner.call_timeout).map(|t| Instant::now() + t);
                    st.pending.insert(id, u32::try_from(allow).unwrap_or(u32::MAX).min(DEFAULT_MAX_FRAME));
                    break (st.generation, deadline);
                }
                Some(d) if !restart => return Err(d.error(self.pid())),
                Some(_) => {
                    drop(st);
                    self.ensure_running()?;
                }
            }
        };
        let sent = {
            let mut s = lock(&inner.send);
            let SendHalf { transport, out } = &mut *s;
            out.clear();
            match (parent, req) {
                (None, Outgoing::Call { func, args }) => bitbridge_proto::flat::encode_call(out, id, func, args),
                (parent, req) => {
                    let request = req.into_request();
                    match parent {
                        Some(parent) => msg::encode(&Frame::Nested { id, parent, request }, out),
                        None => msg::encode(&Frame::Request { id, request }, out),
                    }
                }
            }
            if out.len() > DEFAULT_MAX_FRAME as usize {
                // Refused before anything is written: the server is not involved.
                let size = out.len() as u64;
                drop(s);
                lock(&inner.state).pending.remove(&id);
                return Err(Error::MessageTooLarge { size, max: DEFAULT_MAX_FRAME });
            }
            // Waiting for room counts against the call's time too (a busy server's mailbox may be full).
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()).max(Duration::from_micros(1)));
            transport.set_send_timeout(left).and_then(|()| transport.send(out))
        };
        if let Err(e) = sent {
            let mut st = lock(&inner.state);
            st.pending.remove(&id);
            if matches!(e, FrameError::TimedOut) {
                // As for a reply that does not come: the server's state is unknown, end it.
                self.bury(&mut st, Duration::ZERO);
                return Err(Error::Timeout { pid: self.pid() });
            }
            return Err(self.fail(&mut st, e));
        }
        self.wait(id, generation, deadline)
    }

    /// Waits for the reply to `id`, reading frames while no other thread does.
    fn wait(&self, id: u64, generation: u64, deadline: Option<Instant>) -> Result<Reply> {
        let remote = |r: std::result::Result<Reply, RemoteError>| {
            r.map_err(|mut e| {
                e.message = bounded(e.message);
                Error::Remote(e)
            })
        };
        let inner = &*self.inner;
        let mut st = lock(&inner.state);
        let result = loop {
            // Callbacks first: one may be what the library waits for before it can answer.
            if let Some((sid, request)) = st.requests.pop_front() {
                drop(st);
                self.serve_request(sid, request, true);
                st = lock(&inner.state);
                continue;
            }
            if let Some(r) = st.replies.remove(&id) {
                break remote(r);
            }
            if st.generation != generation {
                // Sent to a server that died and was replaced meanwhile.
                break Err(Error::ServerDied { pid: 0, status: ExitReason::Unknown, stderr: String::new() });
            }
            if let Some(d) = &st.dead {
                break Err(d.error(self.pid()));
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                // The library's state is unknown: end the server; this request times out.
                self.bury(&mut st, Duration::ZERO);
                break Err(Error::Timeout { pid: self.pid() });
            }
            if st.reading {
                st = self.sleep(st, Some(id), left);
                continue;
            }
            st.reading = true;
            let max = self.frame_limit(&st);
            drop(st);
            let frame = self.read_frame(left, max);
            st = lock(&inner.state);
            st.reading = false;
            match frame {
                // Our own reply: taken at once, not stored for ourselves to take back.
                Ok(Frame::Reply { id: rid, reply }) if rid == id => break remote(reply),
                Ok(Frame::Reply { id: rid, reply }) if st.pending.contains_key(&rid) => {
                    st.replies.insert(rid, reply);
                    wake_reply(&mut st, rid);
                }
                Ok(Frame::Reply { id: 0, reply: Err(e) }) if e.kind == ErrorKind::Protocol => {
                    // The server rejected a frame and closes the connection.
                    self.bury(&mut st, Duration::from_millis(500));
                    break Err(Error::Protocol(format!("the server rejected a request: {}", bounded(e.message))));
                }
                Ok(Frame::Reply { id: rid, .. }) => {
                    self.bury(&mut st, Duration::ZERO);
                    break Err(Error::Protocol(format!("reply to request {rid}, which was never sent")));
                }
                Ok(Frame::Nested { .. }) => {
                    self.bury(&mut st, Duration::ZERO);
                    break Err(Error::Protocol("the server sent a nested call, which only clients send".into()));
                }
                Ok(Frame::Request { id: sid, request }) => {
                    // The library called a callback during this (or another) call: run it here, while
                    // another thread reads.
                    wake_reader(&mut st);
                    drop(st);
                    self.serve_request(sid, request, true);
                    st = lock(&inner.state);
                }
                Err(ReadError::Frame(FrameError::TimedOut)) => {} // the deadline is checked above
                Err(ReadError::Frame(e)) => break Err(self.fail(&mut st, e)),
                Err(ReadError::Protocol(m)) => {
                    // Out of step with the server: it can no longer be trusted, so end it.
                    self.bury(&mut st, Duration::ZERO);
                    break Err(Error::Protocol(m));
                }
            }
        };
        st.pending.remove(&id);
        st.replies.remove(&id);
        if !st.reading {
            // Leaving: someone else reads now (the thread woken for the role may have left with its reply).
            wake_reader(&mut st);
        }
        // Callbacks queued for waiting callers while this one was leaving: the last to leave runs them
        // (for no call: failures go to `Callback::take_errors`).
        while st.pending.is_empty() {
            let Some((sid, request)) = st.requests.pop_front() else { break };
            drop(st);
            self.serve_request(sid, request, false);
            st = lock(&inner.state);
        }
        result
    }

    /// The largest frame a reader may accept now: what the pending requests allow, or anything once
    /// callbacks exist (the server may call one at any time, with arguments of any size).
    fn frame_limit(&self, st: &State) -> u32 {
        if self.inner.listening.load(Ordering::Relaxed) {
            return DEFAULT_MAX_FRAME;
        }
        st.pending.values().copied().max().unwrap_or(SMALL_REPLY as u32)
    }

    /// Reads one frame, waiting at most `timeout` (`None`: as long as it takes). A frame that has begun
    /// but is not complete within [`FRAME_STALL`] is a protocol error, whatever the timeout.
    fn read_frame(&self, timeout: Option<Duration>, max: u32) -> std::result::Result<Frame, ReadError> {
        let mut r = lock(&self.inner.recv);
        let RecvHalf { transport, buf, begun } = &mut *r;
        transport.set_max_frame(max);
        let end = timeout.map(|t| Instant::now() + t);
        loop {
            // The clock is read only when there is a deadline (no system call per reply otherwise).
            let now = end.map(|_| Instant::now());
            let slice = end.zip(now).map_or(STALL_CHECK, |(e, now)| e.saturating_duration_since(now).min(STALL_CHECK));
            transport.set_recv_timeout(Some(slice)).map_err(ReadError::Frame)?;
            match transport.recv(buf) {
                Ok(()) => {
                    *begun = None;
                    if let Some(r) = bitbridge_proto::flat::peek_returned(buf) {
                        // A call's plain reply, read without the general decoder (the same message).
                        let returned = bitbridge_proto::Returned {
                            value: r.value.to_vec(),
                            errno: r.errno,
                            last_error: r.last_error,
                            ..Default::default()
                        };
                        return Ok(Frame::Reply { id: r.id, reply: Ok(Reply::Returned(returned)) });
                    }
                    return msg::decode::<Frame>(buf).map_err(|e| ReadError::Protocol(e.to_string()));
                }
                Err(FrameError::TimedOut) => {
                    if transport.in_frame() {
                        // The slice just waited started about `slice` ago.
                        let now = now.unwrap_or_else(|| Instant::now().checked_sub(slice).unwrap_or_else(Instant::now));
                        let since = *begun.get_or_insert(now);
                        if since.elapsed() >= FRAME_STALL {
                            return Err(ReadError::Protocol(format!(
                                "a frame from the server stopped part-way and was not completed within {FRAME_STALL:?}"
                            )));
                        }
                    }
                    if end.is_some_and(|e| Instant::now() >= e) {
                        return Err(ReadError::Frame(FrameError::TimedOut));
                    }
                }
                Err(FrameError::TooLarge { len, max }) => {
                    *begun = None;
                    return Err(ReadError::Protocol(format!(
                        "the server sent a frame of {len} bytes where the requests waiting allow at most {max}"
                    )));
                }
                Err(e) => {
                    *begun = None;
                    return Err(ReadError::Frame(e));
                }
            }
        }
    }

    /// Answers a request from the server: none are served yet (callbacks will be).
    /// Answers a request from the server: a callback is run (`inline`: on a thread waiting for its own
    /// call, whose result then reports a panic); anything else is refused.
    fn serve_request(&self, id: u64, request: Request, inline: bool) {
        let generation = lock(&self.inner.state).generation;
        let reply = match request {
            Request::Callback { cb, call } => {
                CALLBACK_PARENT.with(|p| p.borrow_mut().push(id));
                let r = self.run_callback(cb, &call, inline);
                CALLBACK_PARENT.with(|p| p.borrow_mut().pop());
                r
            }
            _ => Err(RemoteError { kind: ErrorKind::Protocol, message: "a client serves only callbacks".into() }),
        };
        let mut s = lock(&self.inner.send);
        if lock(&self.inner.state).generation != generation {
            return; // the server that asked is gone; its successor never did
        }
        let SendHalf { transport, out } = &mut *s;
        out.clear();
        msg::encode(&Frame::Reply { id, reply }, out);
        let _ = transport.send(out);
    }

    fn run_callback(
        &self,
        cb: u32,
        call: &bitbridge_proto::CallData,
        inline: bool,
    ) -> std::result::Result<Reply, RemoteError> {
        let failed = |message: String| {
            if inline {
                CALLBACK_FAILURE.with(|f| *f.borrow_mut() = Some(message.clone()));
            }
            if let Some(e) = lock(&self.inner.callbacks).get(&cb) {
                lock(&e.errors).push(message.clone());
            }
            RemoteError { kind: ErrorKind::BadArguments, message }
        };
        let Some(entry) = lock(&self.inner.callbacks).get(&cb).cloned() else {
            return Err(failed(format!("callback {cb} was dropped while the library still called it")));
        };
        let target = self.target();
        let mut args = bitbridge_proto::decode_callback_args(&target, &entry.sig, call)
            .map_err(|e| failed(format!("callback arguments: {e}")))?;
        let ret = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (entry.f)(&mut args)));
        let ret = ret.map_err(|p| {
            let what = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
            failed(format!("the callback panicked: {}", what.unwrap_or_default()))
        })?;
        bitbridge_proto::encode_callback_result(&target, &entry.sig, &ret, &args, call)
            .map(Reply::Returned)
            .map_err(|e| failed(format!("the callback's result: {e}")))
    }

    /// Registers `f` as a C function pointer of signature `sig` in the server (ctypes' `CFUNCTYPE`):
    /// pass [`Callback::value`] where the library expects a function pointer. When the library calls
    /// it, `f` runs in this process with the arguments (pointer arguments as the values they point to;
    /// for `Out`/`InOut` pointers, what `f` leaves in the argument is copied back) and its return value
    /// goes back to the library.
    ///
    /// `f` runs on the thread waiting for a call into the library when the library calls back during a
    /// call (so callbacks may call into the library again, nested), and on a thread of bitbridge's
    /// otherwise (a library's own thread calling later). A panic in `f` never unwinds into C: the library
    /// gets a zeroed result and the call during which it happened fails with [`Error::Callback`].
    pub fn callback(
        &self,
        sig: Signature,
        f: impl Fn(&mut [Value]) -> Value + Send + Sync + 'static,
    ) -> Result<Callback> {
        let cb = self.next_handle();
        let entry = Arc::new(CallbackEntry { sig: sig.clone(), f: Box::new(f), errors: Mutex::new(Vec::new()) });
        lock(&self.inner.callbacks).insert(cb, entry.clone());
        let address = match self.request(Request::MakeCallback { cb, sig: sig.clone() }, None) {
            Ok(Reply::Address(a)) => a,
            Ok(other) => return Err(self.broken(unexpected(&other))),
            Err(e) => {
                lock(&self.inner.callbacks).remove(&cb);
                return Err(match e {
                    Error::Remote(r) => Error::Signature { function: "callback".into(), message: r.message },
                    e => e,
                });
            }
        };
        lock(&self.inner.registry).callbacks.insert(cb, (sig, address));
        self.start_listener();
        Ok(Callback { server: self.clone(), cb, entry })
    }

    /// Starts (once) the thread that serves callbacks arriving while no call waits.
    fn start_listener(&self) {
        if self.inner.listening.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let _ = std::thread::Builder::new().name("bitbridge-callbacks".into()).spawn(move || loop {
            let Some(inner) = weak.upgrade() else { return };
            let server = Server { inner };
            if !server.listen_once() {
                return;
            }
        });
    }

    /// One turn of the callback thread: reads one frame if no caller is reading or waiting. False when
    /// the connection is over.
    fn listen_once(&self) -> bool {
        let inner = &*self.inner;
        let max;
        {
            let mut st = lock(&inner.state);
            if st.dead.is_some() {
                // Until a restart (if any): the thread lives as long as the server handle.
                drop(self.sleep(st, None, Some(Duration::from_millis(20))));
                return true;
            }
            if st.pending.is_empty() {
                if let Some((sid, request)) = st.requests.pop_front() {
                    drop(st);
                    self.serve_request(sid, request, false);
                    return true;
                }
            }
            if st.reading || !st.pending.is_empty() {
                drop(self.sleep(st, None, Some(Duration::from_millis(20))));
                return true;
            }
            st.reading = true;
            max = self.frame_limit(&st);
        }
        let frame = self.read_frame(Some(Duration::from_millis(20)), max);
        let mut st = lock(&inner.state);
        st.reading = false;
        wake_reader(&mut st);
        match frame {
            Ok(Frame::Reply { id, reply }) if st.pending.contains_key(&id) => {
                st.replies.insert(id, reply);
                wake_reply(&mut st, id);
                true
            }
            Ok(Frame::Request { id, request }) if !st.pending.is_empty() => {
                // A call is waiting: the callback belongs to it; let a waiting caller run it.
                st.requests.push_back((id, request));
                wake_all(&mut st);
                true
            }
            Ok(Frame::Request { id, request }) => {
                drop(st);
                self.serve_request(id, request, false);
                true
            }
            Err(ReadError::Frame(FrameError::TimedOut)) => true,
            Err(ReadError::Frame(e)) => {
                let _ = self.fail(&mut st, e);
                true
            }
            Ok(Frame::Reply { .. } | Frame::Nested { .. }) | Err(ReadError::Protocol(_)) => {
                // Out of step with the server, as in `wait`: end it.
                self.bury(&mut st, Duration::ZERO);
                true
            }
        }
    }

    /// Turns a failed send or receive into an error; a server process that is gone becomes `ServerDied`.
    fn fail(&self, st: &mut State, e: FrameError) -> Error {
        if st.process.is_none() {
            return Error::from_frame(e);
        }
        if st.dead.is_none() {
            self.bury(st, Duration::from_secs(2));
        }
        st.dead.as_ref().expect("just buried").error(self.pid())
    }

    /// Waits up to `grace` for the server to exit (killing it after) and remembers how it ended.
    fn bury(&self, st: &mut State, grace: Duration) {
        if let Some(p) = st.process.as_mut() {
            let status = p.reap(grace);
            let stderr = p.stderr.text(Duration::from_millis(200));
            st.dead = Some(Death::Died { status, stderr });
        } else {
            st.dead = Some(Death::Died { status: ExitReason::Unknown, stderr: String::new() });
        }
        wake_all(st);
    }

    /// Sleeps until woken (see [`wake_reply`], [`wake_reader`], [`wake_all`]) or `timeout` passes, the
    /// state unlocked meanwhile; `id` is the request whose reply this thread waits for. Wakes may be
    /// spurious: callers check the state again.
    fn sleep<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        id: Option<u64>,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, State> {
        let thread = std::thread::current();
        let me = thread.id();
        st.parked.push(Parked { id, thread });
        drop(st);
        // A wake between the unlock and here is not lost: it leaves the thread's token set.
        match timeout {
            Some(t) => std::thread::park_timeout(t),
            None => std::thread::park(),
        }
        let mut st = lock(&self.inner.state);
        st.parked.retain(|p| p.thread.id() != me);
        st
    }

    /// Fails if the server is dead, unless it may be restarted, in which case it is.
    fn ensure_running(&self) -> Result<()> {
        let inner = &*self.inner;
        match &lock(&inner.state).dead {
            None => return Ok(()),
            Some(Death::ShutDown) => return Err(Error::ShutDown),
            Some(d) if !inner.respawn.as_ref().is_some_and(|(o, _)| o.restart) => return Err(d.error(self.pid())),
            Some(_) => {}
        }
        let (opts, target) = inner.respawn.as_ref().expect("checked above");
        // Exclusive: no request is being sent or read while the connection is replaced.
        let mut send = lock(&inner.send);
        let mut recv = lock(&inner.recv);
        if lock(&inner.state).dead.is_none() {
            return Ok(()); // another thread restarted it meanwhile
        }
        let mut link = opts.connect(*target)?;
        // Replay what was loaded and prepared, with the same handles, before anyone else can send; bounded
        // by the start-up timeout (a library may block in its initialiser on a lock its dead twin held).
        let mut replay: Vec<Request> = {
            let registry = lock(&inner.registry);
            let libs = registry.libs.iter().map(|(&lib, path)| Request::Load { lib, path: path.clone() });
            let funcs = registry.funcs.iter().map(|(&func, (lib, symbol, sig))| Request::Prepare {
                lib: *lib,
                func,
                symbol: symbol.clone(),
                sig: sig.clone(),
            });
            let service = registry.service.iter().map(|options| Request::Start { options: options.clone() });
            service.chain(libs).chain(funcs).collect()
        };
        link.recv.set_recv_timeout(Some(opts.startup_timeout)).map_err(Error::from_frame)?;
        let shared: Vec<(u32, Arc<OwnedFd>, u64)> =
            lock(&inner.registry).shared.iter().map(|(r, (fd, size))| (*r, fd.clone(), *size)).collect();
        for (region, fd, size) in shared {
            let sent = link.fd_sock.as_ref().map(|s| pass_fd(target.os, s, &fd, b"SHR1", region));
            if !matches!(sent, Some(Ok(()))) {
                return Err(Error::Handshake("cannot share the shared buffers with the restarted server".into()));
            }
            replay.push(Request::MapShared { region, size });
        }
        let callbacks: Vec<(u32, Signature)> =
            lock(&inner.registry).callbacks.iter().map(|(cb, (sig, _))| (*cb, sig.clone())).collect();
        replay.extend(callbacks.into_iter().map(|(cb, sig)| Request::MakeCallback { cb, sig }));
        let mut addresses = Vec::new();
        for request in replay {
            let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
            let cb = match &request {
                Request::MakeCallback { cb, .. } => Some(*cb),
                _ => None,
            };
            let mut out = Vec::new();
            msg::encode(&Frame::Request { id, request }, &mut out);
            let replayed = link.send.send(&out).and_then(|()| link.recv.recv(&mut out));
            let reply = match (replayed, msg::decode::<Frame>(&out)) {
                // A service constructor that fails the second time fails the restart, with its error.
                (Ok(()), Ok(Frame::Reply { reply: Ok(Reply::Raised { kind, message }), .. })) => {
                    if let Some(p) = link.process.as_mut() {
                        p.reap(Duration::ZERO);
                    }
                    let call = "the constructor, run again by a restart".to_string();
                    return Err(Error::Raised { call, kind, message });
                }
                (Ok(()), Ok(Frame::Reply { id: rid, reply: Ok(r) })) if rid == id => Some(r),
                _ => None,
            };
            if let (Some(cb), Some(Reply::Address(a))) = (cb, &reply) {
                addresses.push((cb, *a));
            }
            if reply.is_none() {
                if let Some(p) = link.process.as_mut() {
                    p.reap(Duration::ZERO);
                }
                return Err(Error::Handshake(
                    "the restarted server could not construct its service or load the same libraries again".into(),
                ));
            }
        }
        link.recv.set_recv_timeout(None).map_err(Error::from_frame)?;
        {
            // Callbacks have new addresses in the new server.
            let mut r = lock(&inner.registry);
            for (cb, a) in addresses {
                if let Some(entry) = r.callbacks.get_mut(&cb) {
                    entry.1 = a;
                }
            }
        }
        send.transport = link.send;
        recv.transport = link.recv;
        recv.begun = None;
        *lock(&inner.fd_sock) = link.fd_sock;
        let mut st = lock(&inner.state);
        st.process = link.process;
        st.dead = None;
        st.replies.clear();
        st.generation += 1;
        inner.pid.store(link.pid, Ordering::Relaxed);
        Ok(())
    }
}

/// A buffer shared with a server: the same memory mapped in both processes (see [`Server::share`]).
///
/// Reads and writes copy through raw pointers, so they are sound even while the library writes the
/// same bytes from its side; coordinating who writes when (for a camera filling a frame, say) is up to
/// the caller and the library's own protocol. Unmapped in the server when dropped.
pub struct SharedBuffer {
    server: Server,
    region: u32,
    mem: Arc<Arena>,
}

impl SharedBuffer {
    /// The size in bytes.
    pub fn len(&self) -> u64 {
        self.mem.len()
    }

    /// Whether the buffer has no bytes (never: a shared buffer has at least one).
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }

    /// Copies `bytes` into the buffer at `offset`.
    pub fn write(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        self.check(offset, bytes.len() as u64)?;
        self.mem.write_at(offset, bytes);
        Ok(())
    }

    /// Copies `len` bytes out of the buffer at `offset`.
    pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.check(offset, len)?;
        Ok(self.mem.read_at(offset, len))
    }

    /// The whole buffer as a pointer argument: the library gets the server's address of this memory.
    pub fn value(&self) -> Value {
        Value::Shared { region: self.region, offset: 0, len: self.len() }
    }

    /// `len` bytes from `offset` as a pointer argument.
    pub fn slice(&self, offset: u64, len: u64) -> Result<Value> {
        self.check(offset, len)?;
        Ok(Value::Shared { region: self.region, offset, len })
    }

    fn check(&self, offset: u64, len: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(Error::Unsupported(format!(
                "{len} bytes at {offset} are outside a {}-byte shared buffer",
                self.len()
            ))),
        }
    }
}

impl Drop for SharedBuffer {
    fn drop(&mut self) {
        self.server.unmap(self.region);
    }
}

impl fmt::Debug for SharedBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBuffer").field("region", &self.region).field("len", &self.len()).finish()
    }
}

enum ReadError {
    Frame(FrameError),
    Protocol(String),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if self.generation != bitbridge_shm::fork_generation() {
            // A forked child's copy of its parent's server: leave the server (and its process) alone.
            std::mem::forget(st.process.take());
            return;
        }
        if st.dead.is_none() {
            let s = self.send.get_mut().unwrap_or_else(|e| e.into_inner());
            let mut out = Vec::new();
            msg::encode(&Frame::Request { id: 0, request: Request::Shutdown }, &mut out);
            let _ = s.transport.send(&out);
        }
        if let Some(p) = st.process.as_mut() {
            // Graceful first (the server exits after answering Shutdown), killed after the grace time.
            p.reap(Duration::from_secs(1));
        }
    }
}

pub(crate) fn unexpected(reply: &Reply) -> Error {
    Error::Protocol(format!("unexpected reply {}", quote(reply)))
}

/// The most of the peer's data an error message quotes.
pub(crate) const QUOTE_MAX: usize = 200;
/// The most of a message written by the server (a loader's error, a service's exception) an error keeps.
pub(crate) const MESSAGE_MAX: usize = 4096;

/// At most [`QUOTE_MAX`] bytes of `v`'s debug form, formatted no further than that (a 100 MB reply costs
/// nothing to quote).
pub(crate) fn quote(v: &impl fmt::Debug) -> String {
    struct Bounded(String, bool);
    impl fmt::Write for Bounded {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let room = QUOTE_MAX - self.0.len();
            if s.len() <= room {
                self.0.push_str(s);
                return Ok(());
            }
            let mut cut = room;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            self.0.push_str(&s[..cut]);
            self.1 = true;
            Err(fmt::Error)
        }
    }
    let mut b = Bounded(String::new(), false);
    let _ = fmt::write(&mut b, format_args!("{v:?}"));
    if b.1 {
        b.0.push_str("...");
    }
    b.0
}

/// Cuts a message from the server to [`MESSAGE_MAX`] bytes, saying how long it was.
pub(crate) fn bounded(mut message: String) -> String {
    if message.len() > MESSAGE_MAX {
        let total = message.len();
        let mut cut = MESSAGE_MAX;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(&format!("... ({total} bytes in all)"));
    }
    message
}

/// A call's reply must hold exactly what the request allows: the return type's bytes and each block
/// sent to come back at the size it was sent; anything else is a protocol error naming both sizes.
/// A block of a call, for following pointers the library replaced: its server address, its length,
/// and its content when the client has it (copied back, or kept because small and sent in).
struct Within<'a> {
    start: u64,
    len: u64,
    content: Option<&'a [u8]>,
}

/// A thread asleep in [`Server::sleep`]: the request whose reply it waits for (`None`: the callback
/// thread, waiting for the reader role).
struct Parked {
    id: Option<u64>,
    thread: std::thread::Thread,
}

/// Wakes every sleeping thread: the server died, or a callback waits to be run by a caller.
fn wake_all(st: &mut State) {
    st.parked.iter().for_each(|p| p.thread.unpark());
}

/// Wakes the thread waiting for the reply to `id`, just stored.
fn wake_reply(st: &mut State, id: u64) {
    st.parked.iter().filter(|p| p.id == Some(id)).for_each(|p| p.thread.unpark());
}

/// Wakes one thread to take the reader role, which is free: a caller whose reply has not come, else
/// the callback thread. Waking them all would make every waiter contend for the state on every reply.
fn wake_reader(st: &mut State) {
    let waiting = |p: &&Parked| p.id.is_some_and(|id| !st.replies.contains_key(&id));
    if let Some(p) = st.parked.iter().find(waiting).or_else(|| st.parked.iter().find(|p| p.id.is_none())) {
        p.thread.unpark();
    }
}

/// What [`Server::send_and_wait`] sends: a request, or a call with plain arguments (the fast path's
/// frame, written without building the request).
enum Outgoing<'a> {
    Request(Request),
    Call { func: u32, args: &'a [u8] },
}

impl Outgoing<'_> {
    fn into_request(self) -> Request {
        match self {
            Outgoing::Request(r) => r,
            Outgoing::Call { func, args } => bitbridge_proto::flat::call_request(func, args),
        }
    }
}

fn check_returned(
    name: &str,
    ret: &CType,
    ret_size: Option<u64>,
    back_sizes: &[u64],
    returned: &bitbridge_proto::Returned,
) -> Result<()> {
    if let Some(want) = ret_size {
        if returned.value.len() as u64 != want {
            return Err(Error::Protocol(format!(
                "`{name}` returns `{ret}`, {want} bytes, but the server sent {} bytes",
                returned.value.len()
            )));
        }
    }
    if returned.blocks.len() != back_sizes.len() {
        return Err(Error::Protocol(format!(
            "{} blocks came back from `{name}`, {} were sent to come back",
            returned.blocks.len(),
            back_sizes.len()
        )));
    }
    for (i, (b, want)) in returned.blocks.iter().zip(back_sizes).enumerate() {
        if b.len() as u64 != *want {
            return Err(Error::Protocol(format!(
                "block {i} of `{name}` came back with {} bytes, {want} were sent",
                b.len()
            )));
        }
    }
    Ok(())
}

/// Room in a reply frame for its framing, an error message or a small answer.
const SMALL_REPLY: u64 = 64 * 1024;

/// The largest reply frame `req` can legitimately produce (calls compute theirs from the signature).
fn reply_allowance(req: &Request) -> u64 {
    match req {
        Request::Read { len, .. } => SMALL_REPLY.saturating_add(*len),
        // A string of any length, a service's result or a call whose return size is not known here.
        Request::ReadString { .. } | Request::Call { .. } | Request::Invoke { .. } | Request::Get { .. } => {
            u64::from(DEFAULT_MAX_FRAME)
        }
        _ => SMALL_REPLY,
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("target", &self.inner.target).field("pid", &self.pid()).finish()
    }
}
