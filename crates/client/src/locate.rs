//! Finding the server binary for an architecture.
//!
//! In order: an explicit path; `BITBRIDGE_SERVER_<ARCH>` (a file) or `BITBRIDGE_SERVER_DIR` (a folder);
//! beside the running executable (`bitbridge-server-i686`: how a deployed program ships its server); the
//! Cargo target directory the executable runs from, or `$CARGO_TARGET_DIR`
//! (`target/i686-unknown-linux-gnu/{release,debug}`: only a workspace that builds `bitbridge-server`
//! itself has one there, so this serves bitbridge's own development); the per-user folder
//! ([`user_server_dir`], filled by `bitbridge servers install`). No build directory is compiled in. Every candidate's ELF header is checked, so a server built for the
//! wrong target is never started, and so are its owner and mode: a file that another user could have
//! replaced (writable by group or others, or owned by someone other than this user or root) is refused.

use std::path::{Path, PathBuf};

use bitbridge_proto::{Arch, Os, Target};

use crate::detect::executable_arch;
use crate::error::{Error, Result};

/// The file name of an installed server for `arch`.
pub fn server_file_name(arch: Arch) -> String {
    format!("bitbridge-server-{arch}")
}

/// Where an installed server for `target` is, relative to a servers folder: [`server_file_name`] for
/// Linux; for Windows a folder of its own, `bitbridge-server-windows-<arch>/bitbridge-server.exe`,
/// since the DLL it needs beside it (`bcryptprimitives.dll`, see `docs/WINDOWS.md`) has the same name
/// for both architectures.
pub fn server_relative_path(target: Target) -> PathBuf {
    match target.os {
        Os::Windows => Path::new(&format!("bitbridge-server-windows-{}", target.arch)).join("bitbridge-server.exe"),
        _ => PathBuf::from(server_file_name(target.arch)),
    }
}

/// `$XDG_DATA_HOME`, or `~/.local/share` when it is unset or not absolute.
pub(crate) fn data_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_DATA_HOME").map(PathBuf::from).filter(|p| p.is_absolute()).or_else(|| {
        std::env::var_os("HOME").map(PathBuf::from).filter(|p| p.is_absolute()).map(|h| h.join(".local/share"))
    })
}

/// The per-user folder of installed servers, searched after the other places (see the module docs):
/// `$XDG_DATA_HOME/bitbridge/servers`, or `~/.local/share/bitbridge/servers` when `XDG_DATA_HOME` is
/// unset or not absolute. `bitbridge servers install` (crate `bitbridge-cli`) puts servers there, named
/// as [`server_file_name`] says. `None` when neither variable gives a folder.
pub fn user_server_dir() -> Option<PathBuf> {
    Some(data_dir()?.join("bitbridge").join("servers"))
}

fn env_name(target: Target) -> &'static str {
    match (target.os, target.arch) {
        (Os::Windows, Arch::X86) => "BITBRIDGE_SERVER_WINDOWS_I686",
        (Os::Windows, _) => "BITBRIDGE_SERVER_WINDOWS_X86_64",
        (_, Arch::X86) => "BITBRIDGE_SERVER_I686",
        (_, Arch::X86_64) => "BITBRIDGE_SERVER_X86_64",
        _ => "BITBRIDGE_SERVER_OTHER",
    }
}

/// The Rust target a server for `target` is built for (`i686-unknown-linux-gnu`,
/// `x86_64-pc-windows-gnu`...).
pub fn rust_triple(target: Target) -> &'static str {
    match (target.os, target.arch) {
        (Os::Windows, Arch::X86) => "i686-pc-windows-gnu",
        (Os::Windows, _) => "x86_64-pc-windows-gnu",
        (_, arch) => arch.linux_triple(),
    }
}

/// Finds the server for `arch` as [`Server::spawn`](crate::Server::spawn) would (`explicit`: a path given
/// with `ServerOptions::server_path`), or says where it looked and how to build one. A server found and
/// checked once is reused while its file is unchanged (its ELF header is not read again at every start).
pub fn find_server(arch: Arch, explicit: Option<&Path>) -> Result<PathBuf> {
    find_server_for(Target { arch, os: Os::Linux }, explicit)
}

/// Finds the server for `target` (Linux or Windows) the way [`find_server`] does; a Windows server is
/// `bitbridge-server.exe` in the folder [`server_relative_path`] names, or in the Cargo target
/// directory of its Rust target (`target/i686-pc-windows-gnu/release`).
pub fn find_server_for(target: Target, explicit: Option<&Path>) -> Result<PathBuf> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    type Key = (Target, Option<PathBuf>, Option<std::ffi::OsString>, Option<std::ffi::OsString>, Option<PathBuf>);
    static FOUND: Mutex<Option<HashMap<Key, (PathBuf, std::time::SystemTime)>>> = Mutex::new(None);
    // What the search depends on besides the files: the environment variables it reads.
    let key = (
        target,
        explicit.map(Path::to_path_buf),
        std::env::var_os(env_name(target)),
        std::env::var_os("BITBRIDGE_SERVER_DIR"),
        user_server_dir(),
    );
    let stamp = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    if let Some((p, when)) = FOUND.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashMap::new).get(&key)
    {
        if stamp(p) == Some(*when) {
            return Ok(p.clone());
        }
    }
    let found = search_server(target, explicit)?;
    if let Some(when) = stamp(&found) {
        FOUND
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(HashMap::new)
            .insert(key, (found.clone(), when));
    }
    Ok(found)
}

/// Whether only this user (or root) could have put the file there: refused when it is writable by group
/// or others, or owned by another user than this one and root.
fn trusted(p: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let m = p.metadata().map_err(|e| e.to_string())?;
    let mode = m.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "it is writable by {} (mode {mode:04o})",
            if mode & 0o002 != 0 { "others" } else { "its group" }
        ));
    }
    let me = rustix::process::getuid().as_raw();
    if m.uid() != 0 && m.uid() != me {
        return Err(format!("it is owned by user {}, not by this user ({me}) or root", m.uid()));
    }
    Ok(())
}

fn search_server(target: Target, explicit: Option<&Path>) -> Result<PathBuf> {
    let arch = target.arch;
    let mut searched = Vec::new();
    let mut wrong = Vec::new();
    let mut untrusted = Vec::new();
    let mut check = |p: PathBuf, searched: &mut Vec<PathBuf>| -> Option<PathBuf> {
        searched.push(p.clone());
        if !p.is_file() {
            return None;
        }
        if let Err(reason) = trusted(&p) {
            untrusted.push((p, reason));
            return None;
        }
        match executable_arch(&p) {
            Some(a) if a == arch => Some(p),
            other => {
                wrong.push(format!(
                    "{} is built for {}",
                    p.display(),
                    other.map_or("an unknown target".into(), |a| a.to_string())
                ));
                None
            }
        }
    };
    if let Some(p) = explicit {
        if let Some(p) = check(p.to_path_buf(), &mut searched) {
            return Ok(p);
        }
        if let Some((path, reason)) = untrusted.pop() {
            return Err(Error::UntrustedServer { path, reason });
        }
    } else {
        if let Some(p) = std::env::var_os(env_name(target)) {
            if let Some(p) = check(PathBuf::from(p), &mut searched) {
                return Ok(p);
            }
        }
        let name = server_relative_path(target);
        if let Some(dir) = std::env::var_os("BITBRIDGE_SERVER_DIR") {
            if let Some(p) = check(Path::new(&dir).join(&name), &mut searched) {
                return Ok(p);
            }
        }
        let exe_dir = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
        if let Some(dir) = &exe_dir {
            if let Some(p) = check(dir.join(&name), &mut searched) {
                return Ok(p);
            }
        }
        // Cargo target directories: the one the executable runs from, $CARGO_TARGET_DIR, this workspace's.
        let mut targets = Vec::new();
        if let Some(dir) = &exe_dir {
            if let Some(t) = dir.ancestors().find(|a| a.file_name().is_some_and(|n| n == "target")) {
                targets.push(t.to_path_buf());
            }
        }
        if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
            targets.push(PathBuf::from(t));
        }
        let mut built = Vec::new();
        for t in targets {
            for profile in ["release", "debug"] {
                let exe = if target.os == Os::Windows { "bitbridge-server.exe" } else { "bitbridge-server" };
                let mut candidates = vec![t.join(rust_triple(target)).join(profile).join(exe)];
                if Target::host() == Some(target) {
                    candidates.push(t.join(profile).join("bitbridge-server"));
                }
                for c in candidates {
                    if let Some(p) = check(c, &mut searched) {
                        let modified = p.metadata().and_then(|m| m.modified()).ok();
                        built.push((modified, p));
                    }
                }
            }
        }
        // The most recently built wins, so a stale release build never shadows a fresh debug one.
        if let Some((_, p)) = built.into_iter().max_by_key(|(m, _)| *m) {
            return Ok(p);
        }
        if let Some(dir) = user_server_dir() {
            if let Some(p) = check(dir.join(&name), &mut searched) {
                return Ok(p);
            }
        }
    }
    let mut hint = if target.os == Os::Windows {
        format!(
            "build it with `./x winservers` in bitbridge's repository (it needs `rustup target add {}` and mingw-w64; \
             see docs/WINDOWS.md) and name it with ServerOptions::server_path or {}",
            rust_triple(target),
            env_name(target)
        )
    } else {
        format!(
            "install one with `cargo install bitbridge-cli && bitbridge servers install`, or build it with `cargo build --release -p bitbridge-server --target {}`{} and name it with ServerOptions::server_path or {}",
            arch.linux_triple(),
            if arch == Arch::X86 { " (needs `rustup target add i686-unknown-linux-gnu` and gcc-multilib)" } else { "" },
            env_name(target)
        )
    };
    wrong.extend(untrusted.iter().map(|(p, why)| format!("{} was refused: {why}", p.display())));
    if !wrong.is_empty() {
        hint = format!("{}; {hint}", wrong.join("; "));
    }
    Err(Error::ServerNotFound { arch, os: target.os, searched, hint })
}
