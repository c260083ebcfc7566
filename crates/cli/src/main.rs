//! `bitbridge`: try a native library from the shell.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bitbridge::{
    dependencies, dll_dependencies, exports, find_server_for, inspect, undecorate, wine, CallConv, DllLocation, Error,
    LibraryOptions, Os, ServerOptions, Target,
};
use clap::{Parser, Subcommand};

/// `println!` for the command's output, except that a reader that went away (`bitbridge info x.so |
/// head`) ends the command quietly with status 0, as ripgrep and the coreutils do, instead of a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            panic!("failed printing to stdout: {e}");
        }
    }};
}
pub(crate) use out;

mod call;
mod literal;
mod longdouble;
mod servers;
mod show;

/// Call the C functions of a library that cannot be loaded into your process (a 32-bit .so from a
/// 64-bit program), through a server of the library's own architecture.
#[derive(Parser, Debug)]
#[command(name = "bitbridge", version, about, long_about = None, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the library cannot be loaded (a dependency is missing, its initialiser failed, ...), or does not
     export the function called; or `servers install` failed
  2  bad usage: options, a header or prototype that does not parse, the wrong number of arguments, an
     argument that does not parse or does not fit its parameter
  3  the file is missing, is not a shared library, or no server can host it
  4  the call failed: the library crashed, exited or hung (--timeout), or the server refused the call

Errors are printed on one line, each cause after a colon.";

const CALL_HELP: &str = "\
Arguments are C-like literals, checked against the parameter types:
  42  -7  0x1F  017  0b101        integers (the parameter's range is checked)
  1.5  -2e-3  inf  nan            floating-point numbers
  'c'  '\\n'                       characters;  \"text\\n\"  strings (C escapes, \\u{e9})
  {1.5, 2.5}  {.im = 2, .re = 1}  structs (positional or by member name; missing members are 0)
  [1, 2, 3]  [0; 64]              arrays, and n copies of a value (a 64-element output buffer)
  null  true  false  @0x8041000    NULL, booleans, a raw address in the server
  VND_OK  #VND_OK                 a constant from a --header (enum member or #define)
A value given for a pointer parameter is what it points to: `0` for `int *out` passes a pointer to
an int holding 0, `[1, 2, 3]` for `double *f` an array, \"hello\" for `char *s` a buffer. Pointers to
non-const data are read back after the call: each one the function changed is printed as
`name = value` after the return value (--json lists them all, changed or not). Each run starts its
own server: a handle printed by one run means nothing to the next.

Examples:
  bitbridge call ./libctest32.so 'double sum(double *f, int n)' '[1,2,3]' 3
  bitbridge call ./libctest32.so 'void titlecase(char *s)' '\"hello world\"'
  bitbridge call --header ctest.h ./libctest32.so add '{1, 2}' '{3.5, -1}'
  bitbridge call --json --header vendor_api.h ./libvendor32.so vnd_open '\"VND-0042\"' null
  bitbridge call --arch i686 libc.so.6 'int snprintf(char *buf, size_t n, const char *fmt, ...)' '[0; 32]' 32 '\"%d-%s\"' 7 '\"x\"'

A bare name such as libc.so.6 is resolved by the server's own loader (the server's architecture is
--arch, else that of the first file of that name found, else x86_64).";

#[derive(Subcommand, Debug)]
enum Command {
    /// Describe a library: format and architecture, the server that would host it, the libraries it
    /// needs and where each resolves, what it exports; then load it in that server.
    #[command(
        after_help = "Examples:\n  bitbridge info ./libvendor32.so\n  bitbridge info --library-dir ./deps ./libvendor32.so\n  bitbridge info --arch i686 libm.so.6\n  bitbridge info ./vendor.dll\n\nA Windows DLL is hosted under Wine: `info` names the Wine loader and prefix, where each DLL it imports\nresolves (beside it, in the prefix's system folder, or as a Wine builtin), and each 32-bit stdcall or\nfastcall export by its C name with what its decoration says."
    )]
    Info {
        /// The library file (an ELF shared library or a Windows DLL), or a bare name (libm.so.6,
        /// kernel32.dll) for the server's loader to resolve.
        library: PathBuf,
        /// The architecture of the server for a bare name: i686 or x86_64 (for a file, its header says,
        /// and another one given here is an error).
        #[arg(long, value_name = "ARCH", value_parser = parse_arch)]
        arch: Option<bitbridge::Arch>,
        /// A directory where the library's own dependencies are (may be repeated). Not for a Windows
        /// DLL, whose imports are found as Wine's loader finds them.
        #[arg(long = "library-dir", value_name = "DIR")]
        library_dirs: Vec<PathBuf>,
        /// Only read the file; do not start a server to load it.
        #[arg(long)]
        no_load: bool,
        /// The server binary to use.
        #[arg(long, value_name = "PATH")]
        server: Option<PathBuf>,
    },
    /// Call one function of a library and print its return value and what it wrote through its
    /// pointer arguments.
    #[command(after_help = CALL_HELP)]
    Call {
        /// The library file, or a bare name (libc.so.6) for the server's loader to resolve.
        library: PathBuf,
        /// The architecture of the server for a bare name: i686 or x86_64 (for a file, its header says,
        /// and another one given here is an error).
        #[arg(long, value_name = "ARCH", value_parser = parse_arch)]
        arch: Option<bitbridge::Arch>,
        /// The function's C prototype, such as 'double sum(double *f, int n)', or just its name when a
        /// --header declares it.
        prototype: String,
        /// The arguments, as C-like literals (see below).
        #[arg(value_name = "ARG", allow_negative_numbers = true)]
        args: Vec<String>,
        /// A header with the declarations (types, constants, functions) the prototype uses (may be
        /// repeated).
        #[arg(long = "header", value_name = "FILE")]
        headers: Vec<PathBuf>,
        /// Define a preprocessor name for the headers, as #define NAME VALUE would (VALUE is 1 if left
        /// out; may be repeated).
        #[arg(short = 'D', long = "define", value_name = "NAME[=VALUE]")]
        defines: Vec<String>,
        /// Print one JSON object: {"function", "return", "out": {name: value}, "errno"}.
        #[arg(long)]
        json: bool,
        /// A directory where the library's own dependencies are (may be repeated).
        #[arg(long = "library-dir", value_name = "DIR")]
        library_dirs: Vec<PathBuf>,
        /// The server binary to use.
        #[arg(long, value_name = "PATH")]
        server: Option<PathBuf>,
        /// Give the call at most this many seconds; a hung call kills the server (exit code 4).
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
    },
    /// The server binaries programs using the bitbridge crate start: install them, or show which ones
    /// would be used.
    Servers {
        #[command(subcommand)]
        action: ServersCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ServersCommand {
    /// Build bitbridge-server (cargo install) for every architecture this machine can build (i686 when
    /// the Rust target i686-unknown-linux-gnu is installed, x86_64) and put each, as
    /// bitbridge-server-<arch>, into the per-user folder the client searches
    /// ($XDG_DATA_HOME/bitbridge/servers, else ~/.local/share/bitbridge/servers).
    #[command(
        after_help = "Examples:\n  bitbridge servers install\n  bitbridge servers install --arch i686\n  bitbridge servers install --windows\n  bitbridge servers install --path ./crates/server --dir ./dist"
    )]
    Install {
        /// Only this architecture: i686 or x86_64 (may be repeated).
        #[arg(long, value_name = "ARCH", value_parser = parse_arch)]
        arch: Vec<bitbridge::Arch>,
        /// Build from this folder holding the bitbridge-server crate (a checkout's crates/server, an
        /// unpacked package) instead of crates.io's bitbridge-server of this command's version.
        #[arg(long, value_name = "DIR")]
        path: Option<PathBuf>,
        /// Put the servers here instead (to ship beside a program, or for BITBRIDGE_SERVER_DIR).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Also the Windows servers, run under Wine for Windows DLLs (bitbridge-server.exe with its
        /// bcryptprimitives.dll, in bitbridge-server-windows-<arch>/): needs the Rust targets
        /// i686-pc-windows-gnu and x86_64-pc-windows-gnu and mingw-w64 (docs/WINDOWS.md).
        #[arg(long)]
        windows: bool,
    },
    /// Print the per-user folder and the server each architecture would use, as a program would find it.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(call::Failure { code, error }) => {
            eprintln!("bitbridge: {}", one_line(&chain(&error)));
            if let Some(Error::Load { missing, .. }) = error.downcast_ref::<Error>() {
                if !missing.is_empty() {
                    eprintln!("hint: pass --library-dir DIR for the folder holding {}", missing.join(", "));
                }
            }
            ExitCode::from(code)
        }
    }
}

/// The error and its causes joined by `: `, skipping a cause whose text a message before it already
/// holds (bitbridge's errors show their cause in their own message and also return it as `source()`).
fn chain(error: &anyhow::Error) -> String {
    let mut s = String::new();
    for cause in error.chain() {
        let m = cause.to_string();
        if s.contains(&m) {
            continue;
        }
        if !s.is_empty() {
            s.push_str(": ");
        }
        s.push_str(&m);
    }
    s
}

/// A message on one line: a server's stderr tail and multi-line causes are joined with ` | `.
fn one_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ")
}

fn run(cli: Cli) -> Result<ExitCode, call::Failure> {
    match cli.command {
        Command::Info { library, arch, library_dirs, no_load, server } => {
            info(&library, arch, &library_dirs, no_load, server)
                .map_err(|error| call::Failure { code: call::load_code(&error), error })
        }
        Command::Call { library, arch, prototype, args, headers, defines, json, library_dirs, server, timeout } => {
            call::run(call::CallArgs {
                library,
                prototype,
                args,
                headers,
                defines,
                json,
                library_dirs,
                server,
                timeout,
                arch,
            })
            .map(|()| ExitCode::SUCCESS)
        }
        Command::Servers { action } => {
            let done = match action {
                ServersCommand::Install { arch, path, dir, windows } => {
                    let source = path.map_or(servers::Source::Registry, servers::Source::Path);
                    servers::install(&source, &arch, windows, dir)
                }
                ServersCommand::List => servers::list(),
            };
            done.map(|()| ExitCode::SUCCESS).map_err(|error| call::Failure { code: 1, error })
        }
    }
}

fn parse_arch(s: &str) -> Result<bitbridge::Arch, String> {
    match s {
        "i686" | "i386" | "x86" => Ok(bitbridge::Arch::X86),
        "x86_64" | "amd64" => Ok(bitbridge::Arch::X86_64),
        other => Err(format!("`{other}` is not an architecture bitbridge hosts: i686 or x86_64")),
    }
}

fn info(
    path: &std::path::Path,
    arch: Option<bitbridge::Arch>,
    dirs: &[PathBuf],
    no_load: bool,
    server: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let mut opts = ServerOptions::new();
    for d in dirs {
        opts = opts.library_dir(d);
    }
    if let Some(s) = &server {
        opts = opts.server_path(s);
    }
    let mut options = LibraryOptions::new(path).server(opts);
    if let Some(a) = arch {
        options = options.arch(a);
    }
    // A bare name is resolved as `call` and the API resolve it: by the server's own loader (without a
    // server, --no-load, by bitbridge's search of the architecture's folders).
    let bare = path.components().count() == 1 && !path.exists();
    let mut loaded = None;
    let file = if bare && !no_load {
        let l = options.open().with_context(|| format!("loading {}", path.display()))?;
        let file = l.file().map(std::path::Path::to_path_buf).unwrap_or_else(|| path.to_path_buf());
        loaded = Some(l);
        file
    } else {
        options.resolve()?
    };
    let lib = inspect(&file)?;
    let windows = lib.os == Os::Windows;
    if let Some(a) = arch.filter(|a| *a != lib.arch) {
        anyhow::bail!(Error::UnsupportedArchitecture {
            path: file,
            found: format!("{} for {}", if windows { "a Windows DLL" } else { "an ELF library" }, lib.arch),
            hint: format!("; {a} was asked for"),
        });
    }
    if bare {
        let by = if no_load {
            "bitbridge's search (the server's loader decides when it loads)"
        } else {
            "the server's loader"
        };
        out!("name:     {} (resolved by {by})", path.display());
    }
    out!("file:     {}", file.display());
    if windows {
        out!("format:   Windows DLL ({})", pe_kind(lib.arch));
    } else {
        out!("format:   ELF shared library for {} ({})", lib.arch, target_name(lib.arch));
    }
    let target = Target { arch: lib.arch, os: lib.os };
    let chosen = match &loaded {
        Some(l) => l.server().path().map(std::path::Path::to_path_buf).ok_or_else(|| anyhow::anyhow!("in-process")),
        None => find_server_for(target, server.as_deref()).map_err(anyhow::Error::from),
    };
    match chosen {
        Ok(p) => {
            let p = std::fs::canonicalize(&p).unwrap_or(p);
            if windows {
                out!("server:   bitbridge-server.exe for {} Windows, run by Wine ({})", lib.arch, p.display())
            } else {
                out!("server:   bitbridge-server for {} ({})", lib.arch, p.display())
            }
        }
        Err(e) => out!("server:   none found: {e}"),
    }
    // Each dependency's name, and whether bitbridge's search found it.
    let deps: Vec<(String, bool)> = if windows {
        let deps = dll_imports_section(&file, lib.arch)?;
        if !dirs.is_empty() {
            out!(
                "note:     --library-dir is not searched for a DLL's imports: Wine's loader looks beside the DLL, \
                 in the prefix's system folder and among its builtins"
            );
        }
        deps
    } else {
        let deps = dependencies(&file, dirs)?;
        out!("needs:    {}", if deps.is_empty() { "nothing" } else { "" });
        for d in &deps {
            match &d.found {
                Some(p) => out!("  {:<24} {}", d.name, p.display()),
                None => out!("  {:<24} NOT FOUND for {}", d.name, lib.arch),
            }
        }
        deps.into_iter().map(|d| (d.name, d.found.is_some())).collect()
    };
    let missing = deps.iter().filter(|(_, found)| !found).count();
    let names = exports(&file)?;
    out!("exports:  {} symbols", names.len());
    if windows && lib.arch == bitbridge::Arch::X86 {
        // By C name, each decorated one with what its decoration says.
        let mut shown: Vec<(&str, String)> = names
            .iter()
            .map(|n| match undecorate(n) {
                Some(u) => {
                    let conv = if u.conv == CallConv::Fastcall { "fastcall" } else { "stdcall" };
                    (u.name, format!("  ({conv}, {} bytes of arguments; exported as {n})", u.arg_bytes))
                }
                None => (n.as_str(), String::new()),
            })
            .collect();
        shown.sort();
        for (name, decoration) in shown {
            out!("  {name}{decoration}");
        }
    } else {
        for n in &names {
            out!("  {n}");
        }
    }
    if no_load {
        return Ok(ExitCode::SUCCESS);
    }
    let loaded = match loaded {
        Some(l) => l,
        None => options.open().with_context(|| format!("loading {}", path.display()))?,
    };
    let server_kind = if windows { format!("{} Windows", lib.arch) } else { lib.arch.to_string() };
    out!("loads:    yes, in the {server_kind} server (pid {})", loaded.server().pid());
    // Where the server's own loader found each dependency (the list above is bitbridge's search).
    let resolved: Vec<(String, PathBuf)> =
        deps.iter().filter_map(|(name, _)| Some((name.clone(), loaded.server().loaded_file(name)?))).collect();
    if !resolved.is_empty() {
        out!("loaded:   by the server's loader");
        for (name, file) in resolved {
            out!("  {name:<24} {}", file.display());
        }
    }
    if missing > 0 {
        out!("note:     {missing} dependencies were not found on the search path yet the library loaded");
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the `wine:` and `imports:` lines of a Windows DLL: the Wine loader and prefix a server would
/// run in, and where the Windows loader under them would find each DLL it imports. Returns each import
/// and whether it was found.
fn dll_imports_section(file: &std::path::Path, arch: bitbridge::Arch) -> anyhow::Result<Vec<(String, bool)>> {
    let dirs = match (wine::find_loader(arch, None), wine::prefix(arch, None)) {
        (Ok(loader), Ok(prefix)) => {
            let created = if prefix.join("system.reg").is_file() {
                ""
            } else {
                " (not created yet: the first server creates it, and fills its system folder)"
            };
            out!("wine:     {}, prefix {}{created}", loader.display(), prefix.display());
            Some(wine::DllDirs::new(&loader, &prefix, arch))
        }
        (Err(e), _) | (_, Err(e)) => {
            out!("wine:     none found: {e}");
            None
        }
    };
    let deps = dll_dependencies(file, dirs.as_ref())?;
    out!("imports:  {}", if deps.is_empty() { "nothing" } else { "" });
    for d in &deps {
        let place = match &d.location {
            DllLocation::BesideLibrary(_) => "beside the DLL",
            DllLocation::SystemFolder(_) => "the Wine prefix's system folder",
            DllLocation::WineBuiltin(_) => "a Wine builtin",
            _ => "",
        };
        match d.location.path() {
            Some(p) => out!("  {:<24} {} ({place})", d.name, p.display()),
            None => {
                let mut searched = vec!["beside the DLL".to_owned()];
                let mut unsearched = "";
                match &dirs {
                    Some(dirs) => {
                        searched.push(format!("in {}", dirs.system.display()));
                        match &dirs.builtin {
                            Some(b) => searched.push(format!("among Wine's builtins in {}", b.display())),
                            None => unsearched = " (no folder of Wine's builtin DLLs was found)",
                        }
                    }
                    None => unsearched = " (without Wine, its folders were not searched)",
                }
                out!("  {:<24} NOT FOUND for {} Windows: not {}{unsearched}", d.name, arch, searched.join(", nor "));
            }
        }
    }
    Ok(deps.into_iter().map(|d| (d.name, d.location.path().is_some())).collect())
}

/// The PE flavour and machine of a Windows DLL of `arch`, as `objdump` and Microsoft's tools name them.
fn pe_kind(arch: bitbridge::Arch) -> &'static str {
    match arch {
        bitbridge::Arch::X86 => "PE32, i386",
        bitbridge::Arch::X86_64 => "PE32+, x86-64",
        _ => "another processor",
    }
}

fn target_name(arch: bitbridge::Arch) -> &'static str {
    match arch {
        bitbridge::Arch::X86 => "32-bit x86",
        bitbridge::Arch::X86_64 => "64-bit x86",
        _ => "another processor",
    }
}
