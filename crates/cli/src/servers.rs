//! `bitbridge servers`: install the server binaries a program that depends on the `bitbridge` crate
//! needs, into the per-user folder the client searches ([`bitbridge::user_server_dir`]), and show which
//! server each architecture would use.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use bitbridge::{find_server, server_file_name, user_server_dir, Arch};

/// What `servers install` builds from.
#[derive(Debug)]
pub enum Source {
    /// `bitbridge-server` of this command's own version, from crates.io.
    Registry,
    /// A folder holding the `bitbridge-server` crate: a checkout's `crates/server` or an unpacked package.
    Path(PathBuf),
}

/// The architectures this machine can build a server for: x86_64, and i686 when Rust's
/// `i686-unknown-linux-gnu` standard library is installed (`rustup target add i686-unknown-linux-gnu`).
fn buildable() -> anyhow::Result<Vec<Arch>> {
    let out = Command::new(rustc())
        .args(["--print", "sysroot"])
        .output()
        .context("running `rustc --print sysroot` (is Rust installed? see https://rustup.rs)")?;
    if !out.status.success() {
        bail!("`rustc --print sysroot` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let mut arches = Vec::new();
    for arch in [Arch::X86, Arch::X86_64] {
        if sysroot.join("lib/rustlib").join(arch.linux_triple()).join("lib").is_dir() {
            arches.push(arch);
        }
    }
    Ok(arches)
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

/// Builds `bitbridge-server` for each architecture asked for (all this machine can build when none is)
/// with `cargo install`, and copies each into `dir` as `bitbridge-server-<arch>`.
pub fn install(source: &Source, arches: &[Arch], dir: Option<PathBuf>) -> anyhow::Result<()> {
    let dest = destination(dir)?;
    let can = buildable()?;
    let arches: Vec<Arch> = if arches.is_empty() { can.clone() } else { arches.to_vec() };
    for a in &arches {
        if !can.contains(a) {
            bail!(
                "cannot build a server for {a} here: Rust's {t} target is not installed (`rustup target add {t}`; \
                 linking also needs gcc-multilib for i686)",
                t = a.linux_triple()
            );
        }
    }
    std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
    // Kept between runs beside the servers, so a second install compiles nothing unchanged.
    let build = dest.parent().unwrap_or(&dest).join("build");
    for arch in arches {
        let root = build.join(format!("root-{arch}"));
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
        cmd.args(["--quiet", "--force", "--target", arch.linux_triple(), "--root"])
            .arg(&root)
            .arg("--target-dir")
            .arg(build.join("target"));
        eprintln!("bitbridge: building the {arch} server: {cmd:?}");
        let status = cmd.status().context("running cargo (is Rust installed? see https://rustup.rs)")?;
        if !status.success() {
            bail!("building the {arch} server failed ({status}): cargo's messages are above");
        }
        let built = root.join("bin").join("bitbridge-server");
        let target = dest.join(server_file_name(arch));
        copy_executable(&built, &target)?;
        // The client's own checks (ELF header, owner, mode), as it will run them.
        let chosen = find_server(arch, Some(&target))?;
        println!("{arch}: {}", chosen.display());
    }
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
        Some(d) => println!("per-user folder: {}", d.display()),
        None => println!("per-user folder: none (neither XDG_DATA_HOME nor HOME is set)"),
    }
    for arch in [Arch::X86, Arch::X86_64] {
        match find_server(arch, None) {
            Ok(p) => println!("{arch}: {}", p.display()),
            Err(e) => println!("{arch}: none: {e}"),
        }
    }
    Ok(())
}
