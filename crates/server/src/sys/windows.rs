//! Windows system calls (a Windows server runs under Wine; see `docs/WINDOWS.md`), each wrapped to
//! return `io::Result`.

use std::fs::File;
use std::io;
use std::os::windows::io::AsRawHandle;

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::Console::{SetStdHandle, STD_INPUT_HANDLE};
use windows_sys::Win32::System::Diagnostics::Debug::{ReadProcessMemory, WriteProcessMemory};
use windows_sys::Win32::System::Threading::GetCurrentProcess;

/// A read-write handle to what `handle` (the standard input, which Wine opens read-only) refers to.
fn reopen_read_write(handle: HANDLE) -> io::Result<File> {
    use std::os::windows::io::FromRawHandle;
    use windows_sys::Win32::Foundation::{DuplicateHandle, GENERIC_READ, GENERIC_WRITE};
    let mut out: HANDLE = std::ptr::null_mut();
    // SAFETY: duplicates a handle of this process into this process; `out` receives a new handle that
    // nobody else owns.
    let ok = unsafe {
        DuplicateHandle(GetCurrentProcess(), handle, GetCurrentProcess(), &mut out, GENERIC_READ | GENERIC_WRITE, 0, 0)
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `out` is a fresh handle owned by nothing else.
    Ok(unsafe { File::from_raw_handle(out as _) })
}

/// Copies with ReadProcessMemory/WriteProcessMemory on this process: like Linux's process_vm_readv,
/// a bad address is an error instead of a fault.
fn own_copy(from: *const u8, to: *mut u8, len: usize, write: bool) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let mut done = 0usize;
    // SAFETY: GetCurrentProcess returns a pseudo-handle that needs no closing; the calls check every
    // address of the remote side against this process's mappings and fail instead of faulting; the
    // local side is a buffer of `len` bytes owned by the caller.
    let ok = unsafe {
        if write {
            WriteProcessMemory(GetCurrentProcess(), to.cast(), from.cast(), len, &mut done)
        } else {
            ReadProcessMemory(GetCurrentProcess(), from.cast(), to.cast(), len, &mut done)
        }
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    if done != len {
        let what = if write { "mapped writable" } else { "mapped" };
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("only {done} bytes are {what}")));
    }
    Ok(())
}

/// Copies `len` bytes from `src` (any address of this process) to `dst` (a buffer we own).
pub(crate) fn copy_own_memory(src: *const u8, dst: *mut u8, len: usize) -> io::Result<()> {
    own_copy(src, dst, len, false)
}

/// Copies `len` bytes from `src` (a buffer we own) to `dst` (any address of this process).
pub(crate) fn copy_to_own_memory(src: *const u8, dst: *mut u8, len: usize) -> io::Result<()> {
    own_copy(src, dst, len, true)
}

/// Takes the connection from the standard input handle (under Wine, the client's socketpair end) and
/// puts `NUL` in its place, so a library that reads stdin gets EOF, not protocol bytes. Under Wine the
/// client watches this very process (Wine runs the program in the process it was started as) and
/// sees the connection's end when it dies. This process is killed when the client dies, even in the
/// middle of a call that never returns, by the Linux parent-death signal, asked for with the system
/// call itself (see [`linux`]); with `parent` given, a client already gone is an error.
pub fn take_connection(parent: Option<u32>) -> io::Result<File> {
    if let Some(p) = parent {
        linux::die_with_parent(p)?;
    }
    let conn = reopen_read_write(io::stdin().as_raw_handle() as HANDLE)?;
    let null = File::open("NUL")?;
    // SAFETY: SetStdHandle stores the handle for this process; `null` is leaked below so the handle
    // stays valid for the process's life.
    if unsafe { SetStdHandle(STD_INPUT_HANDLE, null.as_raw_handle() as HANDLE) } == 0 {
        return Err(io::Error::last_os_error());
    }
    std::mem::forget(null);
    Ok(conn)
}

/// Opens a DLL with `LoadLibraryExW(LOAD_WITH_ALTERED_SEARCH_PATH)`: the DLLs it imports are searched
/// first in its own folder, where vendors ship them, as Windows does for a program's own folder.
///
/// # Safety
/// Runs the library's `DllMain` (see `Host::new`).
pub(crate) unsafe fn load_library(path: &str) -> Result<libloading::Library, libloading::Error> {
    let flags = libloading::os::windows::LOAD_WITH_ALTERED_SEARCH_PATH;
    // SAFETY: forwarded to the caller.
    unsafe { libloading::os::windows::Library::load_with_flags(path, flags) }.map(Into::into)
}

/// Maps the arena the client created, opened by name.
pub(crate) fn open_arena(file: File, len: u64) -> io::Result<bitbridge_shm::Arena> {
    bitbridge_shm::Arena::open_file(&file, len)
}

unsafe extern "C" {
    /// The C runtime's `errno` of this thread (msvcrt, which mingw-built programs and DLLs share).
    fn _errno() -> *mut i32;
}

/// Sets this thread's last-error code (`SetLastError`).
pub(crate) fn set_last_error(v: u32) {
    // SAFETY: SetLastError only stores the value for this thread.
    unsafe { windows_sys::Win32::Foundation::SetLastError(v) }
}

/// This thread's last-error code (`GetLastError`).
pub(crate) fn get_last_error() -> u32 {
    // SAFETY: GetLastError only reads this thread's value.
    unsafe { windows_sys::Win32::Foundation::GetLastError() }
}

/// Sets this thread's C runtime `errno`.
pub(crate) fn set_errno(v: i32) {
    // SAFETY: _errno returns this thread's errno, valid for the thread's lifetime.
    unsafe { *_errno() = v }
}

/// This thread's C runtime `errno`.
pub(crate) fn get_errno() -> i32 {
    // SAFETY: as in set_errno.
    unsafe { *_errno() }
}

/// Linux system calls made directly from this Windows program: Wine 8 runs Windows code natively and
/// does not intercept the `syscall` instruction (x86_64) or `int 0x80` (i386), so they reach the kernel
/// as from any Linux program (the same route as bitbridge-shm's futex; see docs/WINDOWS.md). Only
/// used for what Windows has no equivalent of: the parent-death signal.
mod linux {
    use std::io;

    #[cfg(target_arch = "x86_64")]
    const NR: (usize, usize) = (157, 110); // prctl, getppid
    #[cfg(target_arch = "x86")]
    const NR: (usize, usize) = (172, 64);
    const PR_SET_PDEATHSIG: usize = 1;
    const SIGKILL: usize = 9;

    /// A system call with up to three arguments; returns the kernel's result (negative: -errno).
    fn syscall3(nr: usize, a: usize, b: usize, c: usize) -> isize {
        let r: isize;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid read no memory of ours and write none; `syscall`
        // clobbers rcx and r11, declared.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") nr as isize => r,
                in("rdi") a,
                in("rsi") b,
                in("rdx") c,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        #[cfg(target_arch = "x86")]
        // SAFETY: as above, through `int 0x80`, which preserves every register but eax.
        unsafe {
            std::arch::asm!(
                "int 0x80",
                inlateout("eax") nr as isize => r,
                in("ebx") a,
                in("ecx") b,
                in("edx") c,
            );
        }
        r
    }

    /// Asks the kernel to kill this process when its parent (the client, which started Wine in this
    /// process) dies, then checks that the parent is still `parent`.
    pub(super) fn die_with_parent(parent: u32) -> io::Result<()> {
        let r = syscall3(NR.0, PR_SET_PDEATHSIG, SIGKILL, 0);
        if r < 0 {
            return Err(io::Error::other(format!("prctl(PR_SET_PDEATHSIG) failed with Linux errno {}", -r)));
        }
        if syscall3(NR.1, 0, 0, 0) as u32 != parent {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "the client exited before the server started"));
        }
        Ok(())
    }
}
