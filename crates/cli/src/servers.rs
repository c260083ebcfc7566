//! `bitbridge servers`: install the server binaries a program that depends on the `bitbridge` crate
//! needs, into the per-user folder the client searches ([`bitbridge::user_server_dir`]), and show which
//! server each architecture would use.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use bitbridge::{find_server_for, rust_triple, server_relative_path, user_server_dir, Arch, Os, Target};

/// The source of `bcryptprimitives.dll`, the stand-in each Windows server needs beside it under Wine 8
/// (see the file's comment and docs/WINDOWS.md): compiled with mingw-w64 at install time.
const BCRYPT_STUB_C: &str = include_str!("bcryptprimitives.c");

/// What `servers install` builds from.
#[derive(Debug)]
pub enum Source {
    /// `bitbridge-server` of this command's own version, from crates.io.
    Registry,
    /// A folder holding the `bitbridge-server` crate: a checkout's `crates/server` or an unpacked package.
    Path(PathBuf),
}

/// The mingw-w64 C compiler for a Windows target (`i686-w64-mingw32-gcc`), which also links its server.
fn mingw(t: Target) -> &'static str {
    if t.arch == Arch::X86 {
        "i686-w64-mingw32-gcc"
    } else {
        "x86_64-w64-mingw32-gcc"
    }
}

/// The targets this machine can build a server for: x86_64, i686 when Rust's `i686-unknown-linux-gnu`
/// standard library is installed (`rustup target add i686-unknown-linux-gnu`), and the two Windows
/// targets when their standard library and mingw-w64's compiler are there.
fn buildable() -> anyhow::Result<Vec<Target>> {
    let out = Command::new(rustc())
        .args(["--print", "sysroot"])
        .output()
        .context("running `rustc --print sysroot` (is Rust installed? see https://rustup.rs)")?;
    if !out.status.success() {
        bail!("`rustc --print sysroot` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let mut targets = Vec::new();
    for t in [Target::I386_SYSV, Target::X86_64_SYSV, Target::WIN32, Target::WIN64] {
        let std_there = sysroot.join("lib/rustlib").join(rust_triple(t)).join("lib").is_dir();
        let cc_there = t.os != Os::Windows || Command::new(mingw(t)).arg("--version").output().is_ok();
        if std_there && cc_there {
            targets.push(t);
        }
    }
    Ok(targets)
}

/// How the command names a target: `i686`, `x86_64`, `i686 Windows`, `x86_64 Windows`.
fn label(t: Target) -> String {
    match t.os {
        Os::Windows => format!("{} Windows", t.arch),
        _ => t.arch.to_string(),
    }
}

/// What to install: the architectures asked for (all when none), on Linux, and on Windows too when
/// `windows`.
fn wanted(arches: &[Arch], windows: bool) -> Vec<Target> {
    let arches: Vec<Arch> = if arches.is_empty() { vec![Arch::X86, Arch::X86_64] } else { arches.to_vec() };
    let mut out: Vec<Target> = arches.iter().map(|&arch| Target { arch, os: Os::Linux }).collect();
    if windows {
        out.extend(arches.iter().map(|&arch| Target { arch, os: Os::Windows }));
    }
    out
}

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn rustc() -> std::ffi::OsString {
    std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into())
}

/// The folder servers go to: `dir`, else the per-user folder.
fn destination(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    dir.or_else(user_server_dir).context(
        "neither XDG_DATA_HOME nor HOME names an absolute folder: pass --dir (and point BITBRIDGE_SERVER_DIR at it)",
    )
}

/// Builds `bitbridge-server` for each architecture asked for (all this machine can build when none is),
/// and with `windows` for Windows as well, with `cargo install`, and copies each into `dir` where the
/// client looks ([`server_relative_path`]: `bitbridge-server-<arch>`, or for Windows
/// `bitbridge-server-windows-<arch>/bitbridge-server.exe` with its `bcryptprimitives.dll`).
pub fn install(source: &Source, arches: &[Arch], windows: bool, dir: Option<PathBuf>) -> anyhow::Result<()> {
    let dest = destination(dir)?;
    let can = buildable()?;
    let asked = wanted(arches, windows);
    // With no architecture named, what cannot be built here is left out; named, it is an error.
    let targets: Vec<Target> =
        if arches.is_empty() { asked.iter().copied().filter(|t| can.contains(t)).collect() } else { asked.clone() };
    for t in &targets {
        if !can.contains(t) {
            let how = match t.os {
                Os::Windows => format!(
                    "`rustup target add {}` and mingw-w64's {} (Debian: gcc-mingw-w64-{}-win32)",
                    rust_triple(*t),
                    mingw(*t),
                    if t.arch == Arch::X86 { "i686" } else { "x86-64" }
                ),
                _ => format!("`rustup target add {}`; linking also needs gcc-multilib for i686", rust_triple(*t)),
            };
            bail!("cannot build a server for {} here: {how}", label(*t));
        }
    }
    if windows && !targets.iter().any(|t| t.os == Os::Windows) {
        bail!(
            "--windows: no Windows server can be built here: it needs `rustup target add i686-pc-windows-gnu \
             x86_64-pc-windows-gnu` and mingw-w64 (Debian: gcc-mingw-w64-i686-win32 gcc-mingw-w64-x86-64-win32)"
        );
    }
    std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
    // Kept between runs beside the servers, so a second install compiles nothing unchanged.
    let build = dest.parent().unwrap_or(&dest).join("build");
    for t in targets {
        let root = build.join(format!("root-{}", label(t).replace(' ', "-")));
        let mut cmd = Command::new(cargo());
        cmd.arg("install");
        match source {
            Source::Registry => {
                // The lock file published with the server: the versions it was tested with.
                cmd.args(["bitbridge-server", "--locked", "--version", concat!("=", env!("CARGO_PKG_VERSION"))]);
            }
            Source::Path(p) => {
                cmd.arg("--path").arg(p);
            }
        }
        cmd.args(["--quiet", "--force", "--target", rust_triple(t), "--root"])
            .arg(&root)
            .arg("--target-dir")
            .arg(build.join("target"));
        if t.os == Os::Windows {
            let var = format!("CARGO_TARGET_{}_LINKER", rust_triple(t).to_uppercase().replace('-', "_"));
            cmd.env(var, mingw(t));
        }
        eprintln!("bitbridge: building the {} server: {cmd:?}", label(t));
        let status = cmd.status().context("running cargo (is Rust installed? see https://rustup.rs)")?;
        if !status.success() {
            bail!("building the {} server failed ({status}): cargo's messages are above", label(t));
        }
        let exe = if t.os == Os::Windows { "bitbridge-server.exe" } else { "bitbridge-server" };
        let built = root.join("bin").join(exe);
        let target = dest.join(server_relative_path(t));
        if let Some(folder) = target.parent() {
            std::fs::create_dir_all(folder).with_context(|| format!("creating {}", folder.display()))?;
        }
        copy_executable(&built, &target)?;
        if t.os == Os::Windows {
            build_stub(t, &build, target.parent().unwrap_or(&dest))?;
        }
        // The client's own checks (the file's header, owner, mode), as it will run them.
        let chosen = find_server_for(t, Some(&target))?;
        crate::out!("{}: {}", label(t), chosen.display());
    }
    Ok(())
}

/// Compiles [`BCRYPT_STUB_C`] with mingw-w64 into `folder/bcryptprimitives.dll`.
fn build_stub(t: Target, build: &Path, folder: &Path) -> anyhow::Result<()> {
    let src = build.join("bcryptprimitives.c");
    std::fs::write(&src, BCRYPT_STUB_C).with_context(|| format!("writing {}", src.display()))?;
    let tmp = folder.join("bcryptprimitives.dll.new");
    let out = Command::new(mingw(t))
        .args(["-O2", "-shared", "-Wl,--kill-at", "-o"])
        .arg(&tmp)
        .arg(&src)
        .arg("-ladvapi32")
        .output()
        .with_context(|| format!("running {}", mingw(t)))?;
    if !out.status.success() {
        bail!(
            "building bcryptprimitives.dll with {} failed: {}",
            mingw(t),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let dll = folder.join("bcryptprimitives.dll");
    std::fs::rename(&tmp, &dll).with_context(|| format!("moving {} to {}", tmp.display(), dll.display()))?;
    Ok(())
}

/// Copies `from` to `to` as an executable only its owner may write, replacing `to` in one rename (a
/// program starting a server meanwhile sees the old file or the new one).
fn copy_executable(from: &Path, to: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", tmp.display()))?;
    std::fs::rename(&tmp, to).with_context(|| format!("moving {} to {}", tmp.display(), to.display()))?;
    Ok(())
}

/// Prints the per-user folder and, for each architecture, the server a program would start (the
/// client's own search) or why there is none.
pub fn list() -> anyhow::Result<()> {
    match user_server_dir() {
        Some(d) => crate::out!("per-user folder: {}", d.display()),
        None => crate::out!("per-user folder: none (neither XDG_DATA_HOME nor HOME is set)"),
    }
    for t in [Target::I386_SYSV, Target::X86_64_SYSV, Target::WIN32, Target::WIN64] {
        match find_server_for(t, None) {
            Ok(p) => crate::out!("{}: {}", label(t), p.display()),
            Err(e) => crate::out!("{}: none: {e}", label(t)),
        }
    }
    Ok(())
}
