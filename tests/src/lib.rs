//! Helpers for bitbridge's cross-process tests, examples and benchmarks: building the C fixtures for
//! both bitnesses with the system compiler, and opening them through each backend.
#![deny(unsafe_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bitbridge::{Library, LibraryOptions};

/// A bitness to build for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bits {
    /// `-m32`: i686, hosted by the 32-bit server.
    B32,
    /// `-m64`: x86_64.
    B64,
}

impl Bits {
    fn flag(self) -> &'static str {
        match self {
            Bits::B32 => "-m32",
            Bits::B64 => "-m64",
        }
    }
    fn suffix(self) -> &'static str {
        match self {
            Bits::B32 => "32",
            Bits::B64 => "64",
        }
    }
}

/// The workspace's root folder.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Where built fixtures go.
pub fn out_dir() -> PathBuf {
    let d = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("fixtures");
    std::fs::create_dir_all(&d).expect("creating target/fixtures");
    d
}

fn build(src: &Path, out: &Path, bits: Bits, shared: bool, extra: &[&str]) {
    let ext = src.extension().and_then(|e| e.to_str()).unwrap_or("");
    let fresh = out.metadata().and_then(|o| o.modified()).ok().is_some_and(|o| {
        let deps = [src.to_path_buf(), src.with_extension("h"), root().join("fixtures/layout.h")];
        deps.iter().filter_map(|d| d.metadata().and_then(|m| m.modified()).ok()).all(|m| m <= o)
    });
    if fresh {
        return;
    }
    // Build to a name of our own, then rename: parallel test processes never see half a file.
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let compiler = match ext {
        "cpp" => "g++",
        "f90" => "gfortran",
        _ => "gcc",
    };
    let mut cmd = Command::new(compiler);
    if ext == "f90" {
        // Module files go beside the output, one folder per build, not into the working directory.
        let modules = tmp.with_extension("mod.d");
        std::fs::create_dir_all(&modules).expect("creating a Fortran module folder");
        cmd.arg("-J").arg(modules);
    }
    cmd.arg(bits.flag()).args(["-O1", "-g", "-Wall", "-Werror", "-o"]).arg(&tmp).arg(src).args(extra);
    if shared {
        cmd.args(["-shared", "-fPIC"]);
    }
    let o = cmd.output().unwrap_or_else(|e| panic!("running the C compiler for {}: {e}", src.display()));
    assert!(
        o.status.success(),
        "building {} with {compiler} {} failed (are gcc/g++/gfortran-multilib installed? run ./x install):\n{}",
        src.display(),
        bits.flag(),
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::rename(&tmp, out).expect("moving the built fixture into place");
}

fn once(key: String, f: impl FnOnce() -> PathBuf) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut m = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = m.get(&key) {
        return p.clone();
    }
    let p = f();
    m.insert(key, p.clone());
    p
}

/// Builds `fixtures/<name>.c` (or `.cpp`) as a shared library for `bits`; returns its path
/// (`target/fixtures/lib<name>32.so`).
pub fn fixture(name: &str, bits: Bits) -> PathBuf {
    once(format!("lib {name} {bits:?}"), || {
        let dir = root().join("fixtures");
        let src = [dir.join(format!("{name}.c")), dir.join(format!("{name}.cpp")), dir.join(format!("{name}.f90"))]
            .into_iter()
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("no fixture source fixtures/{name}.c, .cpp or .f90"));
        let out = out_dir().join(format!("lib{name}{}.so", bits.suffix()));
        build(&src, &out, bits, true, &[]);
        out
    })
}

/// Builds `fixtures/<name>.c` as the shared library `<dir>/lib<out>.so` for `bits`, with extra compiler
/// arguments (`-L`, `-l`); returns its path.
pub fn fixture_in(name: &str, bits: Bits, dir: &str, out: &str, extra: &[&str]) -> PathBuf {
    once(format!("lib {name} {bits:?} {dir} {out}"), || {
        let src = root().join("fixtures").join(format!("{name}.c"));
        let dir = out_dir().join(dir).join(bits.suffix());
        std::fs::create_dir_all(&dir).expect("creating a fixture folder");
        let out = dir.join(format!("lib{out}.so"));
        build(&src, &out, bits, true, extra);
        out
    })
}

/// Builds `fixtures/<name>.c` as a program for `bits` (linking `libs` such as `-lm`); returns its path.
pub fn program(name: &str, bits: Bits, libs: &[&str]) -> PathBuf {
    once(format!("exe {name} {bits:?}"), || {
        let src = root().join("fixtures").join(format!("{name}.c"));
        let out = out_dir().join(format!("{name}{}", bits.suffix()));
        build(&src, &out, bits, false, libs);
        out
    })
}

/// Where a library is hosted in a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The 32-bit fixture in the i686 server (shared-memory transport): the case bitbridge exists for.
    Server32,
    /// The 64-bit fixture in the x86_64 server (shared-memory transport).
    Server64,
    /// The 32-bit fixture in the i686 server over the socket transport.
    Server32Socket,
    /// The 64-bit fixture in the x86_64 server over the socket transport.
    Server64Socket,
    /// The 64-bit fixture in this process: the reference.
    InProcess,
}

/// Every backend, 32-bit first: both transports are covered by the same tests.
pub const BACKENDS: [Backend; 5] =
    [Backend::Server32, Backend::Server32Socket, Backend::Server64, Backend::Server64Socket, Backend::InProcess];

impl Backend {
    /// The bitness of fixture this backend hosts.
    pub fn bits(self) -> Bits {
        match self {
            Backend::Server32 | Backend::Server32Socket => Bits::B32,
            _ => Bits::B64,
        }
    }

    /// Whether the library is hosted by an i686 server.
    pub fn is_32(self) -> bool {
        self.bits() == Bits::B32
    }

    /// Opens the fixture `name` built for this backend.
    pub fn open(self, name: &str) -> Library {
        watchdog();
        let path = fixture(name, self.bits());
        let opts = LibraryOptions::new(&path);
        let lib = match self {
            Backend::InProcess => {
                // SAFETY: the fixtures are this project's own C code and every signature declared in the
                // tests matches its definition; a mismatch is a test bug the other backends expose too.
                #[allow(unsafe_code)]
                unsafe {
                    opts.open_in_process()
                }
            }
            Backend::Server32Socket | Backend::Server64Socket => {
                opts.server(bitbridge::ServerOptions::new().shared_memory(false)).open()
            }
            _ => opts.open(),
        };
        let lib = lib.unwrap_or_else(|e| panic!("opening {} ({self:?}): {e}", path.display()));
        let want = if self.is_32() { bitbridge::Arch::X86 } else { bitbridge::Arch::X86_64 };
        assert_eq!(lib.server().target().arch, want, "{self:?} must host the library in a {want} process");
        assert_eq!(lib.server().is_in_process(), self == Backend::InProcess);
        if self != Backend::InProcess {
            track(lib.server());
        }
        lib
    }
}

/// Ends the whole test process if it runs longer than 10 minutes, so a hung server can never hang CI.
/// (Servers die with it: they have the parent-death signal set.)
pub fn watchdog() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(600));
            eprintln!("bitbridge-tests watchdog: test process still running after 600 s, aborting");
            std::process::exit(101);
        });
    });
}

/// The server binary built for `bits` in this workspace's target directory (debug build).
pub fn server_binary(bits: Bits) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    let triple = match bits {
        Bits::B32 => "i686-unknown-linux-gnu",
        Bits::B64 => "x86_64-unknown-linux-gnu",
    };
    let p = target.join(triple).join("debug").join("bitbridge-server");
    assert!(p.is_file(), "{} is missing: run ./x servers (or ./x test)", p.display());
    p
}

/// An example custom server (`examples/services/src/bin/<name>.rs`) built for `bits` by `./x servers`.
pub fn service_program(name: &str, bits: Bits) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    let triple = match bits {
        Bits::B32 => "i686-unknown-linux-gnu",
        Bits::B64 => "x86_64-unknown-linux-gnu",
    };
    let p = target.join(triple).join("debug").join(name);
    assert!(p.is_file(), "{} is missing: run ./x servers (or ./x test)", p.display());
    p
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

thread_local! {
    static TRACKED: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Remembers a server process so the [`NoServerLeft`] guard of the current test checks it is gone.
pub fn track(server: &bitbridge::Server) {
    if !server.is_in_process() {
        TRACKED.with(|t| t.borrow_mut().push(server.pid()));
    }
}

/// A guard for the start of every test: starts the watchdog and, when the test ends, checks that every
/// server it opened (through [`Backend::open`] or [`track`]) has exited: no test leaves one behind.
#[must_use = "keep the guard alive for the whole test: `let _check = no_server_left();`"]
#[derive(Debug)]
pub struct NoServerLeft(());

/// Starts a [`NoServerLeft`] guard.
pub fn no_server_left() -> NoServerLeft {
    watchdog();
    TRACKED.with(|t| t.borrow_mut().clear());
    NoServerLeft(())
}

impl Drop for NoServerLeft {
    fn drop(&mut self) {
        let pids = TRACKED.with(|t| std::mem::take(&mut *t.borrow_mut()));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut alive: Vec<u32> = pids.clone();
        while !alive.is_empty() && std::time::Instant::now() < deadline {
            alive.retain(|&p| process_alive(p));
            std::thread::sleep(Duration::from_millis(2));
        }
        if !alive.is_empty() && !std::thread::panicking() {
            panic!("servers left running after the test: {alive:?}");
        }
    }
}

/// Opens a system library by name (`libc.so.6`, `libm.so.6`) of the backend's bitness, on its transport.
pub fn system_library(name: &str, b: Backend) -> Library {
    let arch = if b.is_32() { bitbridge::Arch::X86 } else { bitbridge::Arch::X86_64 };
    let opts = LibraryOptions::new(name).arch(arch);
    let socket = matches!(b, Backend::Server32Socket | Backend::Server64Socket);
    let lib = match b {
        // SAFETY: the system's libc and libm, called only with their exact C signatures in the tests.
        #[allow(unsafe_code)]
        Backend::InProcess => unsafe { opts.open_in_process() },
        _ => opts.server(bitbridge::ServerOptions::new().shared_memory(!socket)).open(),
    };
    let lib = lib.unwrap_or_else(|e| panic!("opening {name} ({b:?}): {e}"));
    track(lib.server());
    lib
}

/// The project README's Rust examples, compiled as doctests here (the `bitbridge` crate's own docs are
/// its package README, `crates/client/README.md`).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct RootReadme;

/// The mingw-w64 compiler for `bits` (`i686-w64-mingw32-gcc`, `x86_64-w64-mingw32-gcc`).
fn mingw(bits: Bits) -> &'static str {
    match bits {
        Bits::B32 => "i686-w64-mingw32-gcc",
        Bits::B64 => "x86_64-w64-mingw32-gcc",
    }
}

fn build_windows(src: &Path, out: &Path, bits: Bits, dll: bool, extra: &[&str]) {
    let fresh = out.metadata().and_then(|o| o.modified()).ok().is_some_and(|o| {
        // The DLLs it is linked against (given by path among `extra`) too.
        let mut deps = vec![src.to_path_buf(), root().join("fixtures/layout.h")];
        deps.extend(extra.iter().map(PathBuf::from).filter(|p| p.is_file()));
        deps.iter().filter_map(|d| d.metadata().and_then(|m| m.modified()).ok()).all(|m| m <= o)
    });
    if fresh {
        return;
    }
    // Built under its own name in a folder of this process's, then moved: a DLL's name is recorded in
    // it (its export directory), and the DLLs linked against it import it by that name.
    let tmp_dir = out.with_extension(format!("tmp{}", std::process::id()));
    std::fs::create_dir_all(&tmp_dir).expect("creating a folder to build a fixture in");
    let tmp = tmp_dir.join(out.file_name().expect("a fixture's file name"));
    let mut cmd = Command::new(mingw(bits));
    // C99 printf (%zu) instead of msvcrt's.
    cmd.args(["-O1", "-Wall", "-Werror", "-D__USE_MINGW_ANSI_STDIO=1", "-o"]).arg(&tmp).arg(src).args(extra);
    if dll {
        cmd.arg("-shared");
    }
    let o =
        cmd.output().unwrap_or_else(|e| panic!("running {} for {}: {e} (run ./x wine)", mingw(bits), src.display()));
    assert!(
        o.status.success(),
        "building {} with {} failed:\n{}",
        src.display(),
        mingw(bits),
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::rename(&tmp, out).expect("moving the built fixture into place");
    let _ = std::fs::remove_dir(&tmp_dir);
}

/// Builds `fixtures/<name>.c` as a Windows DLL for `bits` with mingw-w64; returns its path
/// (`target/fixtures/<name>32.dll`).
pub fn windows_fixture(name: &str, bits: Bits) -> PathBuf {
    once(format!("dll {name} {bits:?}"), || {
        let src = root().join("fixtures").join(format!("{name}.c"));
        let out = out_dir().join(format!("{name}{}.dll", bits.suffix()));
        build_windows(&src, &out, bits, true, &[]);
        out
    })
}

/// Builds `fixtures/<name>.c` as the Windows DLL `<dir>/<bits>/<out>.dll` under the fixtures folder for
/// `bits` with mingw-w64 and extra compiler arguments (`-D`, or another DLL's path to import from it);
/// returns its path.
pub fn windows_fixture_in(name: &str, bits: Bits, dir: &str, out: &str, extra: &[&str]) -> PathBuf {
    once(format!("dll {name} {bits:?} {dir} {out}"), || {
        let src = root().join("fixtures").join(format!("{name}.c"));
        let dir = out_dir().join(dir).join(bits.suffix());
        std::fs::create_dir_all(&dir).expect("creating a fixture folder");
        let out = dir.join(format!("{out}.dll"));
        build_windows(&src, &out, bits, true, extra);
        out
    })
}

/// Builds `fixtures/<name>.c` as a Windows program for `bits` with mingw-w64; returns its path.
pub fn windows_program(name: &str, bits: Bits) -> PathBuf {
    once(format!("win-exe {name} {bits:?}"), || {
        let src = root().join("fixtures").join(format!("{name}.c"));
        let out = out_dir().join(format!("{name}{}.exe", bits.suffix()));
        build_windows(&src, &out, bits, false, &[]);
        out
    })
}

/// The Windows target a `bits` DLL is hosted for.
pub fn windows_target(bits: Bits) -> bitbridge::Target {
    match bits {
        Bits::B32 => bitbridge::Target::WIN32,
        Bits::B64 => bitbridge::Target::WIN64,
    }
}

/// Opens the Windows fixture `name` for `bits` in a Windows server under Wine (shared memory unless
/// `socket`), checking it is hosted where it must be.
pub fn open_windows(name: &str, bits: Bits, socket: bool) -> Library {
    watchdog();
    let path = windows_fixture(name, bits);
    let lib = LibraryOptions::new(&path)
        .server(bitbridge::ServerOptions::new().shared_memory(!socket))
        .open()
        .unwrap_or_else(|e| panic!("opening {} under Wine: {e:#}", path.display()));
    assert_eq!(lib.server().target(), windows_target(bits));
    track(lib.server());
    lib
}

/// Runs a Windows program under the Wine loader and in the prefix bitbridge uses for `bits` (started
/// once through a server, which creates the prefix when it is missing); returns its output.
pub fn run_under_wine(exe: &Path, bits: Bits) -> std::process::Output {
    let target = windows_target(bits);
    let server = bitbridge::ServerOptions::new()
        .spawn_for(target)
        .unwrap_or_else(|e| panic!("starting a {target} server (for its Wine prefix): {e:#}"));
    let (loader, env) = server.wine_command().expect("a Windows server runs under Wine");
    let out = Command::new(loader)
        .arg(exe)
        .envs(env)
        .output()
        .unwrap_or_else(|e| panic!("running {} under Wine: {e}", exe.display()));
    drop(server);
    out
}
