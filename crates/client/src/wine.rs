//! Running a Windows server under Wine: which `wine` loader, which prefix, and the prefix's creation.
//!
//! Each architecture has its own prefix owned by bitbridge (a 64-bit prefix cannot run 32-bit
//! programs when the 32-bit Wine is not installed system-wide, and a 32-bit prefix is what a 32-bit DLL
//! expects): `$XDG_DATA_HOME/bitbridge/wine/win32` and `.../win64` (or under `~/.local/share`),
//! created on first use (`wineboot --init`, about 30 s, with a message on stderr) and reused after.
//! The loader and the prefix can be given with [`ServerOptions::wine`](crate::ServerOptions::wine) and
//! [`ServerOptions::wine_prefix`](crate::ServerOptions::wine_prefix), or the variables
//! `BITBRIDGE_WINE_I686`/`BITBRIDGE_WINE_X86_64` and `BITBRIDGE_WINEPREFIX_I686`/`BITBRIDGE_WINEPREFIX_X86_64`.
//!
//! What is public here is what a tool needs to tell where a DLL's imports would come from (as
//! `bitbridge info` does with [`dll_dependencies`](crate::dll_dependencies)): the loader and prefix a
//! server would use ([`find_loader`], [`prefix`]) and the folders of DLLs they give ([`DllDirs`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bitbridge_proto::Arch;

use crate::error::{Error, Result};

/// The environment every Wine process of bitbridge's gets: no debug output (it would fill the
/// server's stderr tail), no prompt to install Mono or Gecko, no window.
pub(crate) const QUIET: [(&str, &str); 3] =
    [("WINEDEBUG", "-all"), ("WINEDLLOVERRIDES", "mscoree,mshtml="), ("DISPLAY", "")];

/// Wine's name of the prefix architecture for `arch` (`WINEARCH`, and bitbridge's prefix folder name).
fn winearch(arch: Arch) -> &'static str {
    if arch == Arch::X86 {
        "win32"
    } else {
        "win64"
    }
}

fn arch_suffix(arch: Arch) -> &'static str {
    match arch {
        Arch::X86 => "I686",
        _ => "X86_64",
    }
}

/// Where the Wine loader that runs Windows servers for `arch` is, as a server would find it:
/// `explicit` (what [`ServerOptions::wine`](crate::ServerOptions::wine) gives), else
/// `BITBRIDGE_WINE_I686`/`BITBRIDGE_WINE_X86_64`, else the usual places of distributions' packages
/// (`/usr/lib/wine`, `/opt/wine-*/bin`, then `wine64`/`wine` on `PATH`). Only an ELF executable of
/// `arch` is taken (Debian's `/usr/bin/wine` is a script).
///
/// # Errors
/// [`Error::WineNotFound`], naming every place looked at.
pub fn find_loader(arch: Arch, explicit: Option<&Path>) -> Result<PathBuf> {
    let var = format!("BITBRIDGE_WINE_{}", arch_suffix(arch));
    let mut searched = Vec::new();
    let mut refused = Vec::new();
    // An empty variable is no variable.
    let given =
        explicit.map(Path::to_path_buf).or_else(|| std::env::var_os(&var).filter(|v| !v.is_empty()).map(PathBuf::from));
    let candidates: Vec<PathBuf> = match given {
        Some(p) => vec![p],
        None => {
            let names: &[&str] = if arch == Arch::X86 { &["wine"] } else { &["wine64", "wine"] };
            let path_dirs: Vec<PathBuf> =
                std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
            let mut c: Vec<PathBuf> = Vec::new();
            for dir in ["/usr/lib/wine", "/usr/lib64/wine", "/opt/wine-stable/bin", "/opt/wine-staging/bin"] {
                c.extend(names.iter().map(|n| Path::new(dir).join(n)));
            }
            c.extend(path_dirs.iter().flat_map(|d| names.iter().map(move |n| d.join(n))));
            c
        }
    };
    for c in candidates {
        searched.push(c.clone());
        if !c.is_file() {
            continue;
        }
        match loader_check(&c, arch) {
            Ok(()) => return Ok(c),
            Err(why) => refused.push(format!("{} {why}", c.display())),
        }
    }
    let refused = if refused.is_empty() { String::new() } else { format!("{}; ", refused.join("; ")) };
    Err(Error::WineNotFound {
        arch,
        searched,
        hint: format!(
            "{refused}install Wine (Debian: `apt-get install wine wine64`, and wine32:i386 for 32-bit DLLs; see \
             docs/WINDOWS.md for a 32-bit Wine unpacked without installing) and name its loader with \
             ServerOptions::wine or {var}"
        ),
    })
}

/// Whether `loader` is a Wine loader for `arch`: an ELF program of that architecture (Debian's
/// `/usr/bin/wine` is a script that fails without the 32-bit package) whose `--version` says `wine-`.
/// The answer is kept per file (and its modification time): asking costs a process.
fn loader_check(loader: &Path, arch: Arch) -> std::result::Result<(), String> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    type Key = (PathBuf, Arch, Option<std::time::SystemTime>);
    static CHECKED: Mutex<Option<HashMap<Key, std::result::Result<(), String>>>> = Mutex::new(None);
    let key = (loader.to_path_buf(), arch, loader.metadata().and_then(|m| m.modified()).ok());
    if let Some(r) = CHECKED.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashMap::new).get(&key) {
        return r.clone();
    }
    let r = match crate::detect::executable_arch(loader) {
        None => Err("is not an ELF program (a script?)".to_string()),
        Some(a) if a != arch => Err(format!("is a program for {a}, not {arch}")),
        Some(_) => match Command::new(loader).arg("--version").stdin(Stdio::null()).output() {
            Ok(o) if String::from_utf8_lossy(&o.stdout).trim_start().starts_with("wine-") => Ok(()),
            Ok(o) => Err(format!(
                "is not Wine: `--version` printed {:?}",
                String::from_utf8_lossy(&o.stdout).trim().chars().take(60).collect::<String>()
            )),
            Err(e) => Err(format!("cannot be run: {e}")),
        },
    };
    CHECKED.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashMap::new).insert(key, r.clone());
    r
}

/// The Wine prefix Windows servers for `arch` run in: `explicit` (what
/// [`ServerOptions::wine_prefix`](crate::ServerOptions::wine_prefix) gives), else
/// `BITBRIDGE_WINEPREFIX_I686`/`BITBRIDGE_WINEPREFIX_X86_64`, else bitbridge's own,
/// `$XDG_DATA_HOME/bitbridge/wine/win32` or `win64` (`~/.local/share` without `XDG_DATA_HOME`). The
/// folder may not exist yet: the first server started creates it.
///
/// # Errors
/// [`Error::WinePrefix`] when neither `XDG_DATA_HOME` nor `HOME` gives a folder for bitbridge's own.
pub fn prefix(arch: Arch, explicit: Option<&Path>) -> Result<PathBuf> {
    // Wine takes only an absolute prefix; a relative one means from the current folder.
    let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    if let Some(p) = explicit {
        return Ok(absolute(p.to_path_buf()));
    }
    let var = std::env::var_os(format!("BITBRIDGE_WINEPREFIX_{}", arch_suffix(arch)));
    if let Some(p) = var.filter(|v| !v.is_empty()) {
        return Ok(absolute(PathBuf::from(p)));
    }
    let data = crate::locate::data_dir().ok_or_else(|| Error::WinePrefix {
        prefix: PathBuf::new(),
        reason: "neither XDG_DATA_HOME nor HOME names a folder for bitbridge's Wine prefix; give one with \
                 ServerOptions::wine_prefix"
            .into(),
    })?;
    Ok(data.join("bitbridge").join("wine").join(winearch(arch)))
}

/// Creates the prefix with `wineboot --init` unless it is there (its `system.reg` exists), waiting for
/// its wineserver to finish writing, then checks it can serve: of `arch`, and with Wine's `Z:` drive
/// mapped to `/` (the DLL's path and the shared memory are reached through it). Concurrent creators
/// (threads or processes) wait for one another on a lock file beside it. Everything, `wineboot`
/// included, is bounded by `timeout`. A folder that existed before is never removed; one this call
/// created is, when `wineboot` leaves no usable prefix in it.
pub(crate) fn ensure_prefix(loader: &Path, arch: Arch, prefix: &Path, timeout: Duration) -> Result<()> {
    let ready = |p: &Path| p.join("system.reg").is_file();
    let fail = |reason: String| Error::WinePrefix { prefix: prefix.to_path_buf(), reason };
    if ready(prefix) {
        return check_prefix(arch, prefix);
    }
    let parent = prefix.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| fail(format!("cannot create {}: {e}", parent.display())))?;
    let lock_path = parent.join(format!(".{}.lock", prefix.file_name().and_then(|n| n.to_str()).unwrap_or("prefix")));
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| fail(format!("cannot create {}: {e}", lock_path.display())))?;
    let deadline = Instant::now() + timeout;
    loop {
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break,
            Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR) => {
                return Err(fail(format!("another process is still creating it after {timeout:?}")))
            }
            Err(e) => return Err(fail(format!("cannot lock {}: {e}", lock_path.display()))),
        }
    }
    if ready(prefix) {
        return check_prefix(arch, prefix);
    }
    let existed = prefix.exists();
    eprintln!("bitbridge: creating the Wine prefix for {arch} Windows DLLs in {} (once; about 30 s)", prefix.display());
    let mut cmd = Command::new(loader);
    cmd.args(["wineboot", "--init"])
        .env("WINEPREFIX", prefix)
        .env("WINEARCH", winearch(arch))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in QUIET {
        cmd.env(k, v);
    }
    if let Some(ws) = wineserver(loader) {
        cmd.env("WINESERVER", ws);
    }
    let mut child = cmd.spawn().map_err(|e| fail(format!("cannot run {}: {e}", loader.display())))?;
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut text);
        text
    });
    // wineboot's status is not success when an optional part is missing (FreeType for fonts, in an
    // unpacked 32-bit Wine): the registry being written is what counts.
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    // wineboot returns before the wineserver has written the registry: wait for it to finish (and
    // end it, on a timeout).
    wait_wineserver(loader, prefix, if status.is_some() { deadline } else { Instant::now() });
    let text = if status.is_some() { reader.join().unwrap_or_default() } else { Vec::new() };
    if !ready(prefix) {
        if !existed {
            let _ = std::fs::remove_dir_all(prefix);
        }
        let why = match status {
            None => format!("`{} wineboot --init` did not finish within {timeout:?}", loader.display()),
            Some(s) => format!(
                "`{} wineboot --init` ({s}) wrote no system.reg: {}",
                loader.display(),
                String::from_utf8_lossy(&text).trim()
            ),
        };
        return Err(fail(why));
    }
    check_prefix(arch, prefix)
}

/// Whether a created prefix can serve `arch`: of that architecture (a 32-bit prefix cannot run 64-bit
/// programs, and Wine refuses a 64-bit one for `WINEARCH=win32`), with `Z:` mapped to `/`.
fn check_prefix(arch: Arch, prefix: &Path) -> Result<()> {
    let fail = |reason: String| Error::WinePrefix { prefix: prefix.to_path_buf(), reason };
    match prefix_arch(prefix) {
        Some(a) if a != arch => {
            let (is, want) = if a == Arch::X86 { ("32-bit", "64-bit") } else { ("64-bit", "32-bit") };
            return Err(fail(format!(
                "it is a {is} prefix and {arch} DLLs need a {want} one (bitbridge uses one prefix per architecture: \
                 name another with ServerOptions::wine_prefix or BITBRIDGE_WINEPREFIX_{})",
                arch_suffix(arch)
            )));
        }
        _ => {}
    }
    let z = prefix.join("dosdevices").join("z:");
    match std::fs::read_link(&z) {
        Ok(to) if to == Path::new("/") => Ok(()),
        Ok(to) => Err(fail(format!(
            "its drive Z: maps to {}, not to /: bitbridge reaches the DLL and the shared memory through Z:\\ \
             (make {} a link to /)",
            to.display(),
            z.display()
        ))),
        Err(_) => Err(fail(format!(
            "it has no drive Z: mapped to / ({} is missing), through which bitbridge reaches the DLL and the shared \
             memory (`ln -s / {}`)",
            z.display(),
            z.display()
        ))),
    }
}

/// The wineserver that goes with `loader`, when it is not the one on `PATH`: beside it (Debian's
/// `/usr/lib/wine/wineserver64`, or an unpacked 32-bit Wine whose own wineserver is missing: then the
/// system's 64-bit one, which serves both).
pub(crate) fn wineserver(loader: &Path) -> Option<OsString> {
    // The binaries, not Debian's `wineserver` script (which looks only in /usr/lib/wine); a 64-bit
    // wineserver serves 32-bit programs too.
    let dir = loader.parent()?;
    for name in ["wineserver64", "wineserver32"] {
        let p = dir.join(name);
        if p.is_file() {
            return Some(p.into());
        }
    }
    ["/usr/lib/wine/wineserver64", "/usr/lib/wine/wineserver32", "/usr/bin/wineserver"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(|p| p.as_os_str().to_owned())
}

/// Waits until `deadline` for the prefix's wineserver to exit (`wineserver -w`), then ends it (`-k`).
fn wait_wineserver(loader: &Path, prefix: &Path, deadline: Instant) {
    let Some(ws) = wineserver(loader) else { return };
    let run = |arg: &str| {
        Command::new(&ws)
            .arg(arg)
            .env("WINEPREFIX", prefix)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    };
    if let Ok(mut w) = run("-w") {
        loop {
            match w.try_wait() {
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok(Some(_)) => return,
                _ => {
                    let _ = w.kill();
                    let _ = w.wait();
                    break;
                }
            }
        }
    }
    if let Ok(mut k) = run("-k") {
        let _ = k.wait();
    }
}

/// The environment of a server started under Wine.
pub(crate) fn environment(loader: &Path, arch: Arch, prefix: &Path) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = QUIET.iter().map(|(k, v)| (k.into(), v.into())).collect();
    env.push(("WINEPREFIX".into(), prefix.into()));
    env.push(("WINEARCH".into(), winearch(arch).into()));
    if let Some(ws) = wineserver(loader) {
        env.push(("WINESERVER".into(), ws));
    }
    env
}

/// The name a Windows program under Wine opens `path` by: a bare name (`kernel32.dll`) as it is, for
/// the Windows loader to search; a path as `Z:` plus its absolute Linux path with backslashes (Wine maps
/// drive Z: to `/`; a path starting with `/` would be read as on the current drive).
pub(crate) fn dos_path(path: &Path) -> String {
    if path.components().count() == 1 && !path.exists() {
        return path.to_string_lossy().into_owned();
    }
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    format!("Z:{}", abs.to_string_lossy().replace('/', "\\"))
}

/// Whether `prefix` is a 64-bit prefix (`Some(Arch::X86_64)`, with `syswow64` for 32-bit programs) or a
/// 32-bit one: the `#arch=win32`/`#arch=win64` line Wine writes near the top of `system.reg`, else
/// whether `drive_c/windows/syswow64` exists. `None` for a prefix not created yet.
fn prefix_arch(prefix: &Path) -> Option<Arch> {
    use std::io::BufRead;
    if let Ok(reg) = std::fs::File::open(prefix.join("system.reg")) {
        for line in std::io::BufReader::new(reg).lines().take(16).map_while(std::result::Result::ok) {
            match line.trim().strip_prefix("#arch=") {
                Some("win32") => return Some(Arch::X86),
                Some("win64") => return Some(Arch::X86_64),
                _ => {}
            }
        }
    }
    let windows = prefix.join("drive_c").join("windows");
    if windows.join("syswow64").is_dir() {
        Some(Arch::X86_64)
    } else if windows.join("system32").is_dir() {
        Some(Arch::X86)
    } else {
        None
    }
}

/// The folder of `prefix` where a DLL of `arch` finds the system's DLLs: `drive_c/windows/system32`,
/// except for a 32-bit DLL in a 64-bit prefix (as the `#arch=win64` line of its `system.reg` says, or
/// its `syswow64` folder), whose folder is `drive_c/windows/syswow64`. Wine copies its builtin DLLs
/// there when it creates the prefix. The folder may not exist yet.
pub fn system_dir(prefix: &Path, arch: Arch) -> PathBuf {
    let windows = prefix.join("drive_c").join("windows");
    if arch == Arch::X86 && prefix_arch(prefix) == Some(Arch::X86_64) {
        windows.join("syswow64")
    } else {
        windows.join("system32")
    }
}

/// The folder of Wine's builtin DLLs for DLLs of `arch` (`i386-windows`, `x86_64-windows`) that goes
/// with `loader`, found relative to it as Wine itself finds it: Debian's
/// `<root>/usr/lib/wine/wine64` has its DLLs in `<root>/usr/lib/x86_64-linux-gnu/wine/x86_64-windows`
/// (`<root>` is `/`, or the folder a 32-bit Wine was unpacked into), an upstream or WineHQ build's
/// `<dir>/bin/wine` in `<dir>/lib/wine/<arch>-windows` or `<dir>/lib64/wine/<arch>-windows`. `None`
/// when none of these folders exists.
pub fn builtin_dir(loader: &Path, arch: Arch) -> Option<PathBuf> {
    let loader = std::fs::canonicalize(loader).unwrap_or_else(|_| loader.to_path_buf());
    let up = loader.parent()?.parent()?;
    let windows = format!("{}-windows", if arch == Arch::X86 { "i386" } else { "x86_64" });
    let multiarch = |a: Arch| if a == Arch::X86 { "i386-linux-gnu" } else { "x86_64-linux-gnu" };
    // The loader's own multiarch folder first: a 64-bit Wine keeps its 32-bit PE DLLs beside its 64-bit ones.
    let own = crate::detect::executable_arch(&loader).unwrap_or(arch);
    let mut candidates = Vec::new();
    for a in [own, arch] {
        candidates.push(up.join(multiarch(a)).join("wine").join(&windows));
    }
    candidates.push(up.join("lib").join("wine").join(&windows));
    candidates.push(up.join("lib64").join("wine").join(&windows));
    candidates.into_iter().find(|d| d.is_dir())
}

/// The folders the Windows loader under Wine searches, after a DLL's own folder, for the DLLs it
/// imports: given to [`dll_dependencies`](crate::dll_dependencies).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DllDirs {
    /// The prefix's system folder for the DLL's architecture ([`system_dir`]).
    pub system: PathBuf,
    /// Wine's builtin DLLs for it ([`builtin_dir`]), if that folder was found.
    pub builtin: Option<PathBuf>,
}

impl DllDirs {
    /// The folders for DLLs of `arch` run by `loader` in `prefix`.
    pub fn new(loader: &Path, prefix: &Path, arch: Arch) -> DllDirs {
        DllDirs { system: system_dir(prefix, arch), builtin: builtin_dir(loader, arch) }
    }
}
