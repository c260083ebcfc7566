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
    let cache = ReadCache::new(file);
    let obj = object::File::parse(&cache).map_err(|e| Error::NotALibrary {
        path: path.into(),
        reason: format!("{e} (is it a linker script or a text file?)"),
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
    match (arch, os) {
        (Some(arch), Os::Linux) => Ok(LibraryInfo { arch, os, path: path.into() }),
        (Some(_), Os::Windows) => Err(Error::UnsupportedArchitecture {
            path: path.into(),
            found: found(),
            hint: "; a Windows DLL needs a Windows server, which is not built on Linux yet".into(),
        }),
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
    let x86 = ["/lib32", "/usr/lib32", "/lib/i386-linux-gnu", "/usr/lib/i386-linux-gnu", "/usr/local/lib32"];
    let x64 = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/usr/local/lib"];
    let common = ["/lib", "/usr/lib"];
    let order: Vec<&str> = match arch {
        Some(Arch::X86) => x86.iter().chain(&common).copied().collect(),
        _ => x64.iter().chain(&common).chain(&x86).copied().collect(),
    };
    dirs.extend(order.into_iter().map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file() && inspect(p).is_ok_and(|i| arch.is_none_or(|a| i.arch == a)))
}
