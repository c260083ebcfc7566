//! The errors of the client API.

use std::fmt;
use std::io;
use std::path::PathBuf;

use bitbridge_proto::{Arch, CodecError, FrameError, MarshalError, Os, RemoteError, ValueTypeError};

/// Everything that can go wrong between a client and its server.
///
/// Every variant's `Display` is the whole message, its cause included (`bad argument to `f`: argument
/// 2 -> .x: expected a number, got a string`); `source()` still returns the cause for programs that
/// walk the chain, so a printer of chains should skip a cause whose text the message already holds.
///
/// Each variant names what failed and carries what is needed to fix it. A server that dies is always
/// [`Error::ServerDied`] (with its exit status or signal and the end of its stderr), never a hang.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A result converted to a Rust type it does not have (`i32::try_from(outcome.ret)?`).
    #[error("{0}")]
    ValueType(#[from] ValueTypeError),
    /// The library file does not exist or cannot be read.
    #[error("cannot read library {}: {source}", path.display())]
    LibraryNotFound {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file is not a shared library bitbridge can read.
    #[error("{} is not a shared library: {reason}", path.display())]
    NotALibrary {
        /// The path given.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The library is for an architecture or platform no bitbridge server here can host.
    #[error("{} is {found}; bitbridge hosts i686 and x86_64 Linux libraries (ELF) and Windows DLLs (PE, under Wine){hint}", path.display())]
    UnsupportedArchitecture {
        /// The library.
        path: PathBuf,
        /// What the file header says (`ELF for ARM aarch64`, `PE (Windows DLL) for I386`).
        found: String,
        /// What would be needed.
        hint: String,
    },
    /// A Windows DLL needs Wine, and no Wine loader for its architecture was found.
    #[error("no Wine for {arch} Windows DLLs found (looked at: {}); {hint}", list(searched))]
    WineNotFound {
        /// The DLL's architecture.
        arch: Arch,
        /// Every place looked at, in order.
        searched: Vec<PathBuf>,
        /// How to install or point to one.
        hint: String,
    },
    /// bitbridge's Wine prefix could not be created or used.
    #[error("the Wine prefix {} cannot be used: {reason}", prefix.display())]
    WinePrefix {
        /// The prefix (a folder).
        prefix: PathBuf,
        /// What failed.
        reason: String,
    },
    /// No server binary for the architecture was found.
    #[error("no bitbridge-server for {arch}{} found (looked at: {}); {hint}", if *os == Os::Windows { " Windows (bitbridge-server.exe)" } else { "" }, list(searched))]
    ServerNotFound {
        /// The architecture needed.
        arch: Arch,
        /// The platform of the libraries it must host (Windows: a server run under Wine).
        os: Os,
        /// Every place looked at, in order.
        searched: Vec<PathBuf>,
        /// How to build or point to one.
        hint: String,
    },
    /// A server binary was refused: another user could have replaced it (it is writable by group or
    /// others, or owned by another user than this one and root).
    #[error("refusing to run the server {}: {reason}; make it writable only by its owner (chmod go-w) and owned by you or root", path.display())]
    UntrustedServer {
        /// The server binary.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A shared object (see [`shared`](crate::shared)) could not be created or opened: which one, and
    /// why (it does not exist, it already exists, it is not a bitbridge object, permission).
    #[error("cannot {action} {object}: {reason}")]
    SharedObject {
        /// `create` or `open`.
        action: &'static str,
        /// The object: its name and file, or its path.
        object: String,
        /// Why, in words.
        reason: String,
    },
    /// The server could not be started.
    #[error("cannot start the server {}: {source}", path.display())]
    Spawn {
        /// The server binary.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The server started but its greeting was wrong (another program, or another version).
    #[error("handshake with the server failed: {0}")]
    Handshake(String),
    /// The server process ended; every later request on it fails with this too.
    #[error("the server (pid {pid}) died: {status}{}", stderr_tail(stderr))]
    ServerDied {
        /// The server's process id.
        pid: u32,
        /// How it ended.
        status: ExitReason,
        /// The end of what it wrote to stderr.
        stderr: String,
    },
    /// A request took longer than the call timeout; the server (whose library state is now unknown) was
    /// killed.
    #[error("the call timed out; the server (pid {pid}) was killed")]
    Timeout {
        /// The killed server's process id.
        pid: u32,
    },
    /// Loading a library (its initialisers included) took longer than the load timeout
    /// (`ServerOptions::load_timeout`, 30 s by default); the server was killed.
    #[error("loading {path} did not finish within {after:?}; the server (pid {pid}) was killed")]
    LoadTimeout {
        /// The library.
        path: String,
        /// The killed server's process id.
        pid: u32,
        /// The load timeout.
        after: std::time::Duration,
    },
    /// The server did not greet the client within the start-up timeout; it was killed.
    #[error("the server (pid {pid}) did not start within {after:?}; it was killed")]
    StartupTimeout {
        /// The killed server's process id.
        pid: u32,
        /// The start-up timeout.
        after: std::time::Duration,
    },
    /// A request (arguments, memory to write) is larger than one frame may be; nothing was sent.
    #[error("the request is {size} bytes, more than the {max}-byte frame limit; nothing was sent")]
    MessageTooLarge {
        /// The encoded request's size.
        size: u64,
        /// The frame limit.
        max: u32,
    },
    /// What was asked is not available on this connection or out of range (a shared buffer over the
    /// socket transport, an offset beyond a shared buffer).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The server was started by the parent of this forked process: a child cannot use (or stop) it.
    #[error(
        "the server (pid {pid}) was started before this process forked and belongs to the parent; open the library again in the child"
    )]
    Forked {
        /// The parent's server.
        pid: u32,
    },
    /// The server was shut down with [`Server::shutdown`](crate::Server::shutdown).
    #[error("the server was shut down")]
    ShutDown,
    /// The library could not be loaded by the server.
    #[error("cannot load {path}: {message}{}", missing_list(missing))]
    Load {
        /// The library.
        path: String,
        /// The loader's message.
        message: String,
        /// Dependencies (`DT_NEEDED` entries) that bitbridge found on none of the loader's search paths
        /// for the library's architecture: add their folders with `ServerOptions::library_dir`. For a
        /// Windows DLL, the DLLs it imports found nowhere Wine looks (see [`dll_dependencies`]).
        ///
        /// [`dll_dependencies`]: crate::dll_dependencies
        missing: Vec<String>,
    },
    /// The library is a second copy of a system library the server already runs on (same SONAME,
    /// another file): two C libraries in one process crash at the first `printf("%f")`. Open it by
    /// name (`libc.so.6`) to get the server's own.
    #[error(
        "{} is another copy of {soname}: the server already runs on {}; open it by name (\"{soname}\") to use the server's own",
        path.display(),
        loaded.display()
    )]
    DuplicateSystemLibrary {
        /// The file asked for.
        path: PathBuf,
        /// Its SONAME.
        soname: String,
        /// The file of that SONAME already in the server.
        loaded: PathBuf,
    },
    /// The library does not export the symbol.
    #[error("symbol not found: {message}")]
    SymbolNotFound {
        /// The symbol asked for.
        symbol: String,
        /// The loader's message.
        message: String,
    },
    /// C declarations could not be understood (a syntax error, an unsupported construct, an unknown
    /// type): where, what, and the line's text.
    #[error("{}", declaration_message(origin.as_deref(), *line, *column, message, source_line))]
    Declaration {
        /// The file, when the text came from one.
        origin: Option<String>,
        /// The line (from 1) in the text given; 0 when the file could not be read.
        line: usize,
        /// The column (from 1).
        column: usize,
        /// What is wrong.
        message: String,
        /// The text of that line, trimmed.
        source_line: String,
    },
    /// A function was asked for by name but the declarations have no such function.
    #[error("`{function}` is not declared{hint}")]
    NotDeclared {
        /// The name asked for.
        function: String,
        /// The functions that are declared, or how to declare it.
        hint: String,
    },
    /// The signature cannot be called (libffi refused it, or a type cannot be passed by value).
    #[error("bad signature for `{function}`: {message}")]
    Signature {
        /// The function.
        function: String,
        /// Why.
        message: String,
    },
    /// An argument does not match the declared signature (count, kind or range).
    #[error("bad argument to `{function}`: {source}")]
    Argument {
        /// The function.
        function: String,
        /// Which argument and what is wrong.
        #[source]
        source: Box<MarshalError>,
    },
    /// A typed call's return value or out-parameter did not convert to its Rust type (see
    /// [`TypedFunction`](crate::TypedFunction)).
    #[error("`{function}` gave back a value of another type than its Rust type: {source}")]
    Typed {
        /// The function.
        function: String,
        /// Which value and what is wrong.
        #[source]
        source: ValueTypeError,
    },
    /// A value read back from the server does not fit its type.
    #[error("cannot read back the result of `{function}`: {source}")]
    Result {
        /// The function.
        function: String,
        /// What is wrong.
        #[source]
        source: Box<MarshalError>,
    },
    /// A callback failed (it panicked, or its result did not fit its declared type) while the library
    /// ran `function`; the library got a zeroed result from it.
    #[error("a callback failed during `{function}`: {message}")]
    Callback {
        /// The function whose call the callback ran in.
        function: String,
        /// What went wrong.
        message: String,
    },
    /// A custom server's service raised an error in its constructor, a method or a property (msl-loadlib's
    /// `Server32Error`). The server and the service object stay usable.
    #[error("{call} raised {kind}: {message}")]
    Raised {
        /// What was called: ``method `read` ``, ``property `serial` ``, or `the constructor`.
        call: String,
        /// The error's kind: the service's own (its error type's name, or the kind it chose), or one of
        /// bitbridge's `bitbridge::…` kinds ([`bitbridge_proto::service::kinds`]) for an unknown name,
        /// arguments that do not decode as the method's parameters, or a panic.
        kind: String,
        /// Its message, with its causes.
        message: String,
    },
    /// A service value could not be encoded, or a result does not decode as the type asked for.
    #[error("{call}: {message}")]
    Value {
        /// What was called.
        call: String,
        /// What is wrong, such as "invalid type: string, expected f64".
        message: String,
    },
    /// Another error reported by the server (a bad address, an unknown handle, out of memory).
    #[error("the server refused the request: {0}")]
    Remote(#[source] RemoteError),
    /// The server sent something that is not a valid message; the connection is closed.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Communication with the server failed.
    #[error("I/O error talking to the server: {0}")]
    Io(#[source] io::Error),
}

/// How a server process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitReason {
    /// It exited with this status (a library calling `exit()` shows here).
    Code(i32),
    /// It was killed by this signal (a segfault is 11, `abort()` 6).
    Signal(i32),
    /// It closed the connection but had not exited when the client gave up waiting.
    Unknown,
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Code(c) => write!(f, "exited with status {c}"),
            ExitReason::Signal(s) => write!(f, "killed by signal {s} ({})", signal_name(*s)),
            ExitReason::Unknown => f.write_str("closed the connection"),
        }
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        1 => "SIGHUP",
        2 => "SIGINT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "signal",
    }
}

fn stderr_tail(s: &str) -> String {
    let s = s.trim_end();
    if s.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends with:\n{s}")
    }
}

fn declaration_message(origin: Option<&str>, line: usize, column: usize, message: &str, source: &str) -> String {
    let at = match (origin, line) {
        (Some(o), 0) => format!("{o}: "),
        (Some(o), _) => format!("{o}:{line}:{column}: "),
        (None, _) => format!("line {line}, column {column}: "),
    };
    if source.is_empty() {
        format!("{at}{message}")
    } else {
        format!("{at}{message} (in `{source}`)")
    }
}

fn missing_list(missing: &[String]) -> String {
    if missing.is_empty() {
        String::new()
    } else if missing.iter().all(|m| m.to_ascii_lowercase().ends_with(".dll")) {
        format!(
            " (DLLs it imports that are neither beside it, nor in the Wine prefix's system folder, nor among Wine's \
             builtins: {}; put them beside it)",
            missing.join(", ")
        )
    } else {
        format!(
            " (dependencies not found on the {} search path: {}; add their folders with ServerOptions::library_dir)",
            "library",
            missing.join(", ")
        )
    }
}

fn list(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

impl From<CodecError> for Error {
    fn from(e: CodecError) -> Self {
        Error::Protocol(e.to_string())
    }
}

impl Error {
    pub(crate) fn from_frame(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => Error::Io(e),
            other => Error::Protocol(other.to_string()),
        }
    }
}

/// A specialised `Result` for bitbridge.
pub type Result<T, E = Error> = std::result::Result<T, E>;
