//! `bitbridge`: try a native library from the shell.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bitbridge::{dependencies, exports, find_server, inspect, Error, LibraryOptions, ServerOptions};
use clap::{Parser, Subcommand};

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
  1  the library cannot be loaded (a dependency is missing, its initialiser failed, ...)
  2  bad usage
  3  the file is missing, is not a shared library, or no server can host it";

#[derive(Subcommand, Debug)]
enum Command {
    /// Describe a library: format and architecture, the server that would host it, the libraries it
    /// needs and where each resolves, what it exports; then load it in that server.
    #[command(
        after_help = "Examples:\n  bitbridge info ./libvendor32.so\n  bitbridge info --library-dir ./deps ./libvendor32.so\n  bitbridge info --no-load /usr/lib32/libm.so.6"
    )]
    Info {
        /// The library file.
        library: PathBuf,
        /// A directory where the library's own dependencies are (may be repeated).
        #[arg(long = "library-dir", value_name = "DIR")]
        library_dirs: Vec<PathBuf>,
        /// Only read the file; do not start a server to load it.
        #[arg(long)]
        no_load: bool,
        /// The server binary to use.
        #[arg(long, value_name = "PATH")]
        server: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bitbridge: {e:#}");
            if let Some(Error::Load { missing, .. }) = e.downcast_ref::<Error>() {
                if !missing.is_empty() {
                    eprintln!("hint: pass --library-dir DIR for the folder holding {}", missing.join(", "));
                }
            }
            let code = match e.downcast_ref::<Error>() {
                Some(Error::Load { .. } | Error::ServerDied { .. }) => 1,
                _ => 3,
            };
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Info { library, library_dirs, no_load, server } => info(&library, &library_dirs, no_load, server),
    }
}

fn info(path: &std::path::Path, dirs: &[PathBuf], no_load: bool, server: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let lib = inspect(path)?;
    println!("file:     {}", path.display());
    println!("format:   ELF shared library for {} ({})", lib.arch, target_name(lib.arch));
    match find_server(lib.arch, server.as_deref()) {
        Ok(p) => {
            let p = std::fs::canonicalize(&p).unwrap_or(p);
            println!("server:   bitbridge-server for {} ({})", lib.arch, p.display())
        }
        Err(e) => println!("server:   none found: {e}"),
    }
    let deps = dependencies(path, dirs)?;
    println!("needs:    {}", if deps.is_empty() { "nothing" } else { "" });
    let mut missing = 0;
    for d in &deps {
        match &d.found {
            Some(p) => println!("  {:<24} {}", d.name, p.display()),
            None => {
                missing += 1;
                println!("  {:<24} NOT FOUND for {}", d.name, lib.arch);
            }
        }
    }
    let names = exports(path)?;
    println!("exports:  {} symbols", names.len());
    for n in &names {
        println!("  {n}");
    }
    if no_load {
        return Ok(ExitCode::SUCCESS);
    }
    let mut opts = ServerOptions::new();
    for d in dirs {
        opts = opts.library_dir(d);
    }
    if let Some(s) = server {
        opts = opts.server_path(s);
    }
    let loaded =
        LibraryOptions::new(path).server(opts).open().with_context(|| format!("loading {}", path.display()))?;
    println!("loads:    yes, in the {} server (pid {})", lib.arch, loaded.server().pid());
    if missing > 0 {
        println!("note:     {missing} dependencies were not found on the search path yet the library loaded");
    }
    Ok(ExitCode::SUCCESS)
}

fn target_name(arch: bitbridge::Arch) -> &'static str {
    match arch {
        bitbridge::Arch::X86 => "32-bit x86",
        bitbridge::Arch::X86_64 => "64-bit x86",
        _ => "another processor",
    }
}
