//! Finding the server binary for an architecture.
//!
//! In order: an explicit path; `BITBRIDGE_SERVER_<ARCH>` (a file) or `BITBRIDGE_SERVER_DIR` (a folder);
//! beside the running executable (`bitbridge-server-i686`, as installed); the Cargo target directory
//! the executable runs from, or this workspace's (`target/i686-unknown-linux-gnu/{release,debug}`).
//! Every candidate's ELF header is checked, so a server built for the wrong target is never started.

use std::path::{Path, PathBuf};

use bitbridge_proto::Arch;

use crate::detect::executable_arch;
use crate::error::{Error, Result};

/// The file name of an installed server for `arch`.
pub fn server_file_name(arch: Arch) -> String {
    format!("bitbridge-server-{arch}")
}

fn env_name(arch: Arch) -> &'static str {
    match arch {
        Arch::X86 => "BITBRIDGE_SERVER_I686",
        Arch::X86_64 => "BITBRIDGE_SERVER_X86_64",
        _ => "BITBRIDGE_SERVER_OTHER",
    }
}

/// Finds the server for `arch` as [`Server::spawn`](crate::Server::spawn) would (`explicit`: a path given
/// with `ServerOptions::server_path`), or says where it looked and how to build one. A server found and
/// checked once is reused while its file is unchanged (its ELF header is not read again at every start).
pub fn find_server(arch: Arch, explicit: Option<&Path>) -> Result<PathBuf> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    type Key = (Arch, Option<PathBuf>, Option<std::ffi::OsString>, Option<std::ffi::OsString>);
    static FOUND: Mutex<Option<HashMap<Key, (PathBuf, std::time::SystemTime)>>> = Mutex::new(None);
    // What the search depends on besides the files: the environment variables it reads.
    let key = (
        arch,
        explicit.map(Path::to_path_buf),
        std::env::var_os(env_name(arch)),
        std::env::var_os("BITBRIDGE_SERVER_DIR"),
    );
    let stamp = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    if let Some((p, when)) = FOUND.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashMap::new).get(&key)
    {
        if stamp(p) == Some(*when) {
            return Ok(p.clone());
        }
    }
    let found = search_server(arch, explicit)?;
    if let Some(when) = stamp(&found) {
        FOUND
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(HashMap::new)
            .insert(key, (found.clone(), when));
    }
    Ok(found)
}

fn search_server(arch: Arch, explicit: Option<&Path>) -> Result<PathBuf> {
    let mut searched = Vec::new();
    let mut wrong = Vec::new();
    let mut check = |p: PathBuf, searched: &mut Vec<PathBuf>| -> Option<PathBuf> {
        searched.push(p.clone());
        if !p.is_file() {
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
    } else {
        if let Some(p) = std::env::var_os(env_name(arch)) {
            if let Some(p) = check(PathBuf::from(p), &mut searched) {
                return Ok(p);
            }
        }
        let name = server_file_name(arch);
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
        targets.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
        let mut built = Vec::new();
        for t in targets {
            for profile in ["release", "debug"] {
                let mut candidates = vec![t.join(arch.linux_triple()).join(profile).join("bitbridge-server")];
                if bitbridge_proto::Target::host().is_some_and(|h| h.arch == arch) {
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
    }
    let mut hint = format!(
        "build it with `cargo build --release -p bitbridge-server --target {}`{}, or name it with ServerOptions::server_path or {}",
        arch.linux_triple(),
        if arch == Arch::X86 { " (needs `rustup target add i686-unknown-linux-gnu` and gcc-multilib)" } else { "" },
        env_name(arch)
    );
    if !wrong.is_empty() {
        hint = format!("{}; {hint}", wrong.join("; "));
    }
    Err(Error::ServerNotFound { arch, searched, hint })
}
