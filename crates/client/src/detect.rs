//! What a library file is: its format and architecture, read from its header with the `object` crate.

use std::fs::File;
use std::path::{Path, PathBuf};

use bitbridge_proto::{Arch, Os};
use object::read::ReadCache;
use object::{Architecture, BinaryFormat, Object};

use crate::error::{Error, Result};

/// What [`inspect`] found in a library file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LibraryInfo {
    /// The architecture a server needs to host it.
    pub arch: Arch,
    /// The platform it was built for.
    pub os: Os,
    /// The file's path.
    pub path: PathBuf,
}

/// Reads the header of `path` and says which server could host it.
pub fn inspect(path: &Path) -> Result<LibraryInfo> {
    let file = File::open(path).map_err(|source| Error::LibraryNotFound { path: path.into(), source })?;
    let meta = file.metadata().map_err(|source| Error::LibraryNotFound { path: path.into(), source })?;
    if meta.is_dir() {
        return Err(Error::NotALibrary { path: path.into(), reason: "it is a directory".into() });
    }
    if !meta.is_file() {
        return Err(Error::NotALibrary { path: path.into(), reason: "it is not a regular file".into() });
    }
    let cache = ReadCache::new(file);
    let obj = object::File::parse(&cache).map_err(|e| Error::NotALibrary {
        path: path.into(),
        reason: if meta.len() == 0 {
            "the file is empty".into()
        } else {
            format!("{e} (is it a linker script or a text file?)")
        },
    })?;
    let os = match obj.format() {
        BinaryFormat::Elf => Os::Linux,
        BinaryFormat::Pe => Os::Windows,
        other => {
            return Err(Error::UnsupportedArchitecture {
                path: path.into(),
                found: format!("a {other:?} file"),
                hint: String::new(),
            })
        }
    };
    let arch = match obj.architecture() {
        Architecture::I386 => Some(Arch::X86),
        Architecture::X86_64 => Some(Arch::X86_64),
        _ => None,
    };
    let found = || {
        let fmt = if os == Os::Windows { "a Windows DLL (PE)" } else { "an ELF library" };
        format!("{fmt} for {:?}", obj.architecture())
    };
    if os == Os::Linux {
        if obj.kind() == object::ObjectKind::Executable {
            return Err(Error::NotALibrary {
                path: path.into(),
                reason: "it is an executable, not a shared object (ET_EXEC)".into(),
            });
        }
        if obj.kind() != object::ObjectKind::Dynamic {
            return Err(Error::NotALibrary {
                path: path.into(),
                reason: format!("it is an ELF file of kind {:?}, not a shared object", obj.kind()),
            });
        }
        if is_pie(path) {
            return Err(Error::NotALibrary {
                path: path.into(),
                reason: "it is a position-independent executable (DF_1_PIE), which the loader refuses to open \
                         (build the code as a shared library with -shared)"
                    .into(),
            });
        }
    }
    if os == Os::Windows && obj.kind() != object::ObjectKind::Dynamic {
        return Err(Error::NotALibrary {
            path: path.into(),
            reason: "it is a Windows executable (.exe), not a DLL (IMAGE_FILE_DLL is not set)".into(),
        });
    }
    match (arch, os) {
        (Some(arch), _) => Ok(LibraryInfo { arch, os, path: path.into() }),
        _ => Err(Error::UnsupportedArchitecture {
            path: path.into(),
            found: found(),
            hint: format!("; it needs a server built for {:?}", obj.architecture()),
        }),
    }
}

/// The architecture of an executable (used to check a server binary is the one it claims to be).
pub(crate) fn executable_arch(path: &Path) -> Option<Arch> {
    let cache = ReadCache::new(File::open(path).ok()?);
    let obj = object::File::parse(&cache).ok()?;
    match obj.architecture() {
        Architecture::I386 => Some(Arch::X86),
        Architecture::X86_64 => Some(Arch::X86_64),
        _ => None,
    }
}

/// Where a library given by bare name (`libm.so.6`) is found for `arch`, searching `LD_LIBRARY_PATH`
/// and the multiarch and multilib directories the way the loader of that architecture would.
pub(crate) fn find_by_name(name: &str, arch: Option<Arch>) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("LD_LIBRARY_PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    dirs.extend(standard_dirs(arch).into_iter().map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file() && inspect(p).is_ok_and(|i| arch.is_none_or(|a| i.arch == a)))
}

/// A library a library needs (`DT_NEEDED`), and where the loader of its architecture would find it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Dependency {
    /// The name as recorded in the library (`libfoo.so.1`).
    pub name: String,
    /// Where it was found, or `None` when it is on none of the search paths.
    pub found: Option<PathBuf>,
}

/// The libraries `path` needs and where each resolves for its architecture: its own `RPATH`/`RUNPATH`
/// (with `$ORIGIN`), then `extra_dirs` (the server's `LD_LIBRARY_PATH`), the directories of
/// `/etc/ld.so.conf`, and the standard multiarch and multilib directories. A dependency of the wrong
/// architecture does not count as found.
pub fn dependencies(path: &Path, extra_dirs: &[PathBuf]) -> Result<Vec<Dependency>> {
    let info = inspect(path)?;
    let data = std::fs::read(path).map_err(|source| Error::LibraryNotFound { path: path.into(), source })?;
    let (needed, runpaths) = match object::FileKind::parse(&*data) {
        Ok(object::FileKind::Elf32) => elf_needed::<object::elf::FileHeader32<object::Endianness>>(&data),
        Ok(object::FileKind::Elf64) => elf_needed::<object::elf::FileHeader64<object::Endianness>>(&data),
        _ => None,
    }
    .unwrap_or_default();
    let origin = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut dirs: Vec<PathBuf> = runpaths
        .iter()
        .flat_map(|r| r.split(':'))
        .filter(|d| !d.is_empty())
        .map(|d| {
            PathBuf::from(
                d.replace("$ORIGIN", &origin.to_string_lossy()).replace("${ORIGIN}", &origin.to_string_lossy()),
            )
        })
        .collect();
    dirs.extend(extra_dirs.iter().cloned());
    dirs.extend(ld_so_conf_dirs());
    dirs.extend(standard_dirs(Some(info.arch)).into_iter().map(PathBuf::from));
    Ok(needed
        .into_iter()
        .map(|name| {
            let found = dirs
                .iter()
                .map(|d| d.join(&name))
                .find(|p| p.is_file() && inspect(p).is_ok_and(|i| i.arch == info.arch));
            Dependency { name, found }
        })
        .collect())
}

/// The names of the dependencies of `path` that resolve nowhere (empty when they all do, or when the
/// file cannot be read).
pub(crate) fn missing_dependencies(path: &Path, _arch: Arch, extra_dirs: &[PathBuf]) -> Vec<String> {
    dependencies(path, extra_dirs)
        .map(|deps| deps.into_iter().filter(|d| d.found.is_none()).map(|d| d.name).collect())
        .unwrap_or_default()
}

/// `DT_NEEDED` names and `DT_RPATH`/`DT_RUNPATH` values of an ELF file.
fn elf_needed<Elf: object::read::elf::FileHeader<Endian = object::Endianness>>(
    data: &[u8],
) -> Option<(Vec<String>, Vec<String>)> {
    use object::read::elf::Dyn;
    let header = Elf::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let sections = header.sections(endian, data).ok()?;
    let (dynamic, link) = sections.dynamic(endian, data).ok()??;
    let strings = sections.strings(endian, data, link).ok()?;
    let (mut needed, mut runpaths) = (Vec::new(), Vec::new());
    for d in dynamic {
        let text = || d.string(endian, strings).ok().map(|s| String::from_utf8_lossy(s).into_owned());
        match d.tag32(endian) {
            Some(object::elf::DT_NEEDED) => needed.extend(text()),
            Some(object::elf::DT_RPATH | object::elf::DT_RUNPATH) => runpaths.extend(text()),
            _ => {}
        }
    }
    Some((needed, runpaths))
}

/// Whether an ELF file is a position-independent executable: `DT_FLAGS_1` has `DF_1_PIE`, which is
/// what glibc's loader checks to refuse `dlopen` of one.
fn is_pie(path: &Path) -> bool {
    use object::read::elf::{Dyn, FileHeader};
    fn read<Elf: FileHeader<Endian = object::Endianness>>(data: &[u8]) -> Option<bool> {
        let header = Elf::parse(data).ok()?;
        let endian = header.endian().ok()?;
        let sections = header.sections(endian, data).ok()?;
        let (dynamic, _) = sections.dynamic(endian, data).ok()??;
        Some(dynamic.iter().any(|d| {
            d.tag32(endian) == Some(object::elf::DT_FLAGS_1)
                && d.val32(endian).is_some_and(|v| v & object::elf::DF_1_PIE != 0)
        }))
    }
    let Ok(data) = std::fs::read(path) else { return false };
    match object::FileKind::parse(&*data) {
        Ok(object::FileKind::Elf32) => read::<object::elf::FileHeader32<object::Endianness>>(&data),
        Ok(object::FileKind::Elf64) => read::<object::elf::FileHeader64<object::Endianness>>(&data),
        _ => None,
    }
    .unwrap_or(false)
}

/// The `DT_SONAME` of an ELF shared library, if it has one.
pub(crate) fn soname(path: &Path) -> Option<String> {
    use object::read::elf::{Dyn, FileHeader};
    fn read<Elf: FileHeader<Endian = object::Endianness>>(data: &[u8]) -> Option<String> {
        let header = Elf::parse(data).ok()?;
        let endian = header.endian().ok()?;
        let sections = header.sections(endian, data).ok()?;
        let (dynamic, link) = sections.dynamic(endian, data).ok()??;
        let strings = sections.strings(endian, data, link).ok()?;
        dynamic
            .iter()
            .find(|d| d.tag32(endian) == Some(object::elf::DT_SONAME))
            .and_then(|d| d.string(endian, strings).ok().map(|s| String::from_utf8_lossy(s).into_owned()))
    }
    let data = std::fs::read(path).ok()?;
    match object::FileKind::parse(&*data) {
        Ok(object::FileKind::Elf32) => read::<object::elf::FileHeader32<object::Endianness>>(&data),
        Ok(object::FileKind::Elf64) => read::<object::elf::FileHeader64<object::Endianness>>(&data),
        _ => None,
    }
}

/// The files mapped into process `pid` (from `/proc/<pid>/maps`), each once, in order of address.
pub(crate) fn mapped_files(pid: u32) -> Vec<PathBuf> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { return Vec::new() };
    let mut files: Vec<PathBuf> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path
        let mut fields = line.splitn(6, ' ');
        let inode = fields.nth(4).unwrap_or("0");
        let path = fields.next().unwrap_or("").trim_start();
        if inode != "0" && path.starts_with('/') && !path.ends_with(" (deleted)") {
            let p = PathBuf::from(path);
            if !files.contains(&p) {
                files.push(p);
            }
        }
    }
    files
}

/// The system libraries of which a process can hold only one copy: a second file with the same SONAME
/// (gcc-multilib's `lib32/libc.so.6` beside Debian's `lib/i386-linux-gnu/libc.so.6`) loaded next to the
/// first gives the process two C libraries, and a crash at the first `printf("%f")`.
pub(crate) const SINGLETONS: [&str; 9] = [
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "ld-linux.so.2",
    "ld-linux-x86-64.so.2",
];

/// Whether two paths are the same file (hard or symbolic links included).
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a.metadata(), b.metadata()) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Directories listed in `/etc/ld.so.conf` and the files it includes.
fn ld_so_conf_dirs() -> Vec<PathBuf> {
    fn read(path: &Path, out: &mut Vec<PathBuf>, depth: u32) {
        let Ok(text) = std::fs::read_to_string(path) else { return };
        for line in text.lines().map(|l| l.split('#').next().unwrap_or("").trim()).filter(|l| !l.is_empty()) {
            if let Some(pattern) = line.strip_prefix("include").map(str::trim) {
                if depth > 4 {
                    continue;
                }
                // Only the common `dir/*.conf` form is expanded.
                let (dir, suffix) = pattern.rsplit_once("/*").unwrap_or((pattern, ""));
                let dir = if Path::new(dir).is_absolute() { PathBuf::from(dir) } else { Path::new("/etc").join(dir) };
                let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.to_string_lossy().ends_with(suffix))
                    .collect();
                files.sort();
                for f in files {
                    read(&f, out, depth + 1);
                }
            } else {
                out.push(PathBuf::from(line));
            }
        }
    }
    let mut out = Vec::new();
    read(Path::new("/etc/ld.so.conf"), &mut out, 0);
    out
}

/// The loader's default directories for `arch`, in search order.
fn standard_dirs(arch: Option<Arch>) -> Vec<&'static str> {
    let x86 = ["/lib32", "/usr/lib32", "/lib/i386-linux-gnu", "/usr/lib/i386-linux-gnu", "/usr/local/lib32"];
    let x64 = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/usr/local/lib"];
    let common = ["/lib", "/usr/lib"];
    match arch {
        Some(Arch::X86) => x86.iter().chain(&common).copied().collect(),
        _ => x64.iter().chain(&common).chain(&x86).copied().collect(),
    }
}

/// The names a library exports, sorted. For an ELF library, its dynamic symbols defined in it; for a
/// Windows DLL, the names in its export table, forwarded ones included (`GetProcAddress` follows them to
/// the other DLL), as they are exported: a 32-bit DLL's `__stdcall` and `__fastcall` names keep their
/// decorations (`add_std@8`, see [`undecorate`]). An export by ordinal only has no name and is not listed.
pub fn exports(path: &Path) -> Result<Vec<String>> {
    use object::read::pe::{PeFile32, PeFile64};
    let file = File::open(path).map_err(|source| Error::LibraryNotFound { path: path.into(), source })?;
    let cache = ReadCache::new(file);
    let bad = |e: object::Error| Error::NotALibrary { path: path.into(), reason: e.to_string() };
    let mut names: Vec<String> = match object::FileKind::parse(&cache).map_err(bad)? {
        object::FileKind::Pe32 => pe_export_names(&PeFile32::parse(&cache).map_err(bad)?).map_err(bad)?,
        object::FileKind::Pe64 => pe_export_names(&PeFile64::parse(&cache).map_err(bad)?).map_err(bad)?,
        _ => {
            let obj = object::File::parse(&cache).map_err(bad)?;
            let exports = obj.exports().map_err(bad)?;
            exports.iter().map(|e| String::from_utf8_lossy(e.name()).into_owned()).collect()
        }
    };
    names.sort();
    names.dedup();
    Ok(names)
}

/// The names in a PE file's export table (forwarded exports included, exports by ordinal only left out).
fn pe_export_names<'data, Pe, R>(file: &object::read::pe::PeFile<'data, Pe, R>) -> object::Result<Vec<String>>
where
    Pe: object::read::pe::ImageNtHeaders,
    R: object::ReadRef<'data>,
{
    let Some(table) = file.export_table()? else { return Ok(Vec::new()) };
    table
        .name_iter()
        .map(|(pointer, _)| table.name_from_pointer(pointer).map(|n| String::from_utf8_lossy(n).into_owned()))
        .collect()
}

/// The names of the DLLs a Windows DLL imports, in the order its import directory lists them
/// (`KERNEL32.dll`, `msvcrt.dll`): the DLLs the Windows loader must find before the DLL's code runs.
/// Delay-loaded DLLs, loaded at their first call, are not among them. An ELF library has none (its
/// `DT_NEEDED` libraries are in [`dependencies`]); [`dll_dependencies`] says where each name resolves.
pub fn dll_imports(path: &Path) -> Result<Vec<String>> {
    use object::read::pe::{PeFile32, PeFile64};
    fn names<'data, Pe, R>(file: &object::read::pe::PeFile<'data, Pe, R>) -> object::Result<Vec<String>>
    where
        Pe: object::read::pe::ImageNtHeaders,
        R: object::ReadRef<'data>,
    {
        let Some(table) = file.import_table()? else { return Ok(Vec::new()) };
        let mut descriptors = table.descriptors()?;
        let mut names = Vec::new();
        while let Some(d) = descriptors.next()? {
            names.push(String::from_utf8_lossy(table.name(d.name.get(object::LittleEndian))?).into_owned());
        }
        Ok(names)
    }
    inspect(path)?;
    let file = File::open(path).map_err(|source| Error::LibraryNotFound { path: path.into(), source })?;
    let cache = ReadCache::new(file);
    let bad = |e: object::Error| Error::NotALibrary { path: path.into(), reason: e.to_string() };
    match object::FileKind::parse(&cache).map_err(bad)? {
        object::FileKind::Pe32 => names(&PeFile32::parse(&cache).map_err(bad)?).map_err(bad),
        object::FileKind::Pe64 => names(&PeFile64::parse(&cache).map_err(bad)?).map_err(bad),
        _ => Ok(Vec::new()),
    }
}

/// Where the Windows loader under Wine finds a DLL that another DLL imports (see [`dll_dependencies`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DllLocation {
    /// In the importing DLL's own folder, searched first: the server opens a DLL with
    /// `LoadLibraryExW(LOAD_WITH_ALTERED_SEARCH_PATH)`, as a vendor's DLLs shipped together expect.
    BesideLibrary(PathBuf),
    /// In the Wine prefix's system folder ([`wine::system_dir`](crate::wine::system_dir)): `system32`,
    /// or `syswow64` for a 32-bit DLL in a 64-bit prefix.
    SystemFolder(PathBuf),
    /// Among Wine's builtin DLLs ([`wine::builtin_dir`](crate::wine::builtin_dir)), which Wine loads
    /// for a name it finds nowhere else.
    WineBuiltin(PathBuf),
    /// In none of those places, for the DLL's architecture: loading the DLL fails.
    NotFound,
}

impl DllLocation {
    /// The file found, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            DllLocation::BesideLibrary(p) | DllLocation::SystemFolder(p) | DllLocation::WineBuiltin(p) => Some(p),
            DllLocation::NotFound => None,
        }
    }
}

/// A DLL a Windows DLL imports, and where the Windows loader under Wine would find it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DllDependency {
    /// The name as the import directory records it (`KERNEL32.dll`).
    pub name: String,
    /// Where it resolves.
    pub location: DllLocation,
}

/// The DLLs the Windows DLL `path` imports ([`dll_imports`]) and where each resolves for its
/// architecture, in the order Wine searches: the DLL's own folder, then, with `wine` (the folders of a
/// Wine installation and prefix, see [`wine::DllDirs`](crate::wine::DllDirs)), the prefix's system
/// folder and Wine's builtin DLLs. Names are matched without regard to case, as Windows does, and `.dll`
/// is added to a name without an extension. A file of another architecture, or that is not a DLL, does
/// not count as found. Without `wine` only the DLL's own folder is searched.
pub fn dll_dependencies(path: &Path, wine: Option<&crate::wine::DllDirs>) -> Result<Vec<DllDependency>> {
    let info = inspect(path)?;
    let names = dll_imports(path)?;
    let own = path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p });
    Ok(names
        .into_iter()
        .map(|name| {
            let location = find_dll(&name, info.arch, own, wine);
            DllDependency { name, location }
        })
        .collect())
}

/// Where the Windows loader under Wine finds the DLL `name` for `arch`: in `own` (the folder of the DLL
/// that imports it), then in `wine`'s system folder and among its builtins (see [`dll_dependencies`]).
pub(crate) fn find_dll(name: &str, arch: Arch, own: Option<&Path>, wine: Option<&crate::wine::DllDirs>) -> DllLocation {
    let file = if Path::new(name).extension().is_some() { name.to_owned() } else { format!("{name}.dll") };
    let fits = |p: &Path| inspect(p).is_ok_and(|i| i.os == Os::Windows && i.arch == arch);
    let find = |dir: Option<&Path>| dir.and_then(|d| find_file_nocase(d, &file)).filter(|p| fits(p));
    if let Some(p) = find(own) {
        DllLocation::BesideLibrary(p)
    } else if let Some(p) = find(wine.map(|w| w.system.as_path())) {
        DllLocation::SystemFolder(p)
    } else if let Some(p) = find(wine.and_then(|w| w.builtin.as_deref())) {
        DllLocation::WineBuiltin(p)
    } else {
        DllLocation::NotFound
    }
}

/// The file `name` in `dir`, its case ignored (`KERNEL32.dll` is `kernel32.dll`).
fn find_file_nocase(dir: &Path, name: &str) -> Option<PathBuf> {
    if name.contains(['/', '\\']) {
        return None;
    }
    let exact = dir.join(name);
    if exact.is_file() {
        return Some(exact);
    }
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .map(|e| e.path())
        .filter(|p| p.is_file())
}

/// A 32-bit Windows export name with its decoration taken apart (see [`undecorate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Undecorated<'a> {
    /// The C name (`add_std`).
    pub name: &'a str,
    /// [`CallConv::Stdcall`](crate::CallConv::Stdcall) or [`CallConv::Fastcall`](crate::CallConv::Fastcall).
    pub conv: crate::CallConv,
    /// The bytes of arguments the callee pops from the stack (each argument rounded up to 4 bytes).
    pub arg_bytes: u32,
}

/// Takes apart the decoration MinGW and MSVC give a 32-bit Windows DLL's exports: `name@N` (and MSVC's
/// `_name@N`) is `__stdcall` with `N` bytes of arguments, `@name@N` is `__fastcall`. `None` for any
/// other name, which is used as it is: a plain `_name` keeps its underscore (a C name may start with
/// one, `_errno`; only the decorated form `_name@N` drops it), and so do C++ names (`?f@@YAHH@Z`),
/// `__vectorcall`'s `name@@N`, a name that is not a C identifier and an `N` that is not a multiple of 4.
/// A 64-bit DLL's names are not decorated: do not call it for them.
pub fn undecorate(export: &str) -> Option<Undecorated<'_>> {
    fn identifier(s: &str) -> bool {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
            && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
    }
    let (head, digits) = export.rsplit_once('@')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    let arg_bytes: u32 = digits.parse().ok()?;
    if arg_bytes % 4 != 0 {
        return None;
    }
    let (name, conv) = match head.strip_prefix('@') {
        Some(name) => (name, crate::CallConv::Fastcall),
        // MSVC's `_name@N`; a name of just `_` stays one.
        None => (head.strip_prefix('_').filter(|n| identifier(n)).unwrap_or(head), crate::CallConv::Stdcall),
    };
    identifier(name).then_some(Undecorated { name, conv, arg_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CallConv;

    fn u(export: &str) -> Option<(&str, CallConv, u32)> {
        undecorate(export).map(|d| (d.name, d.conv, d.arg_bytes))
    }

    #[test]
    fn stdcall_and_fastcall_decorations_are_taken_apart() {
        assert_eq!(u("add_std@8"), Some(("add_std", CallConv::Stdcall, 8)));
        assert_eq!(u("GetTickCount@0"), Some(("GetTickCount", CallConv::Stdcall, 0)));
        assert_eq!(u("@add_fast@8"), Some(("add_fast", CallConv::Fastcall, 8)));
        assert_eq!(u("@f@0"), Some(("f", CallConv::Fastcall, 0)));
        // MSVC's stdcall form carries the cdecl underscore too.
        assert_eq!(u("_add_std@8"), Some(("add_std", CallConv::Stdcall, 8)));
        assert_eq!(u("__under@4"), Some(("_under", CallConv::Stdcall, 4)));
        assert_eq!(u("_@4"), Some(("_", CallConv::Stdcall, 4)));
        assert_eq!(u("big@4096"), Some(("big", CallConv::Stdcall, 4096)));
    }

    #[test]
    fn other_names_are_left_as_they_are() {
        for name in [
            "add",             // plain cdecl
            "_errno",          // a leading underscore alone is part of the C name
            "_add",            // even when it could be MSVC's cdecl decoration
            "add@",            // no byte count
            "add@x8",          // not a number
            "add@6",           // not a multiple of 4
            "add@08",          // a leading zero
            "add@99999999999", // does not fit
            "@8",              // no name
            "@@8",             // no name
            "@f",              // fastcall without a byte count
            "f@@8",            // __vectorcall
            "?f@@YAHH@Z",      // C++
            "a.b@8",           // not a C identifier
            "1abc@8",          // not a C identifier
            "a@b@8",           // two decorations
            "",
        ] {
            assert_eq!(u(name), None, "{name:?}");
        }
    }

    #[test]
    fn dll_names_are_found_whatever_their_case() {
        let dir = std::env::temp_dir().join(format!("bitbridge-nocase-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("kernel32.dll"), b"").unwrap();
        assert_eq!(find_file_nocase(&dir, "KERNEL32.dll"), Some(dir.join("kernel32.dll")));
        assert_eq!(find_file_nocase(&dir, "kernel32.dll"), Some(dir.join("kernel32.dll")));
        assert_eq!(find_file_nocase(&dir, "user32.dll"), None);
        assert_eq!(find_file_nocase(&dir, "../kernel32.dll"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
