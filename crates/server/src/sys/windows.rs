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
    crash::report_unhandled_exceptions();
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

/// What a crash says. Under Wine an unhandled exception ends the process with the low byte of its code
/// as exit status (an access violation, 0xC0000005, exits with 5) and, with `WINEDEBUG=-all`, nothing
/// on stderr; the client reports the death with the end of stderr, so this filter writes the exception
/// there first: its code and name, the address and the module it is in. Then the process ends at once
/// with that exit status, without starting Wine's debugger (which an unhandled exception otherwise
/// starts: a winedbg process and half a second later).
mod crash {
    use std::fmt::Write as _;

    use windows_sys::Win32::Foundation::HMODULE;
    use windows_sys::Win32::Storage::FileSystem::WriteFile;
    use windows_sys::Win32::System::Console::{GetStdHandle, STD_ERROR_HANDLE};
    use windows_sys::Win32::System::Diagnostics::Debug::{SetUnhandledExceptionFilter, EXCEPTION_POINTERS};
    use windows_sys::Win32::System::LibraryLoader::{
        GetModuleFileNameW, GetModuleHandleExW, GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS,
        GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
    };

    const EXCEPTION_CONTINUE_SEARCH: i32 = 0;
    /// From a top-level filter: end the process now, with the exception code as its status.
    const EXCEPTION_EXECUTE_HANDLER: i32 = 1;

    /// A message built on the stack: the heap may be what broke.
    struct Buf {
        bytes: [u8; 768],
        len: usize,
    }

    impl std::fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let n = s.len().min(self.bytes.len() - self.len);
            self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
            self.len += n;
            Ok(())
        }
    }

    /// The names of the exception codes a library's bug raises (ntstatus.h).
    fn name(code: u32) -> &'static str {
        match code {
            0xC000_0005 => "access violation",
            0xC000_0094 => "integer division by zero",
            0xC000_0095 => "integer overflow",
            0xC000_008E => "floating-point division by zero",
            0xC000_001D => "illegal instruction",
            0xC000_0096 => "privileged instruction",
            0xC000_00FD => "stack overflow",
            0xC000_0409 => "stack buffer overrun (fast fail)",
            0xC000_0374 => "heap corruption",
            0x8000_0003 => "breakpoint",
            0x8000_0002 => "misaligned data",
            _ => "exception",
        }
    }

    unsafe extern "system" fn filter(info: *const EXCEPTION_POINTERS) -> i32 {
        let mut msg = Buf { bytes: [0; 768], len: 0 };
        // SAFETY: the system passes valid exception pointers to the filter (checked for null anyway).
        let record = unsafe { info.as_ref().and_then(|i| i.ExceptionRecord.as_ref()) };
        let Some(record) = record else { return EXCEPTION_CONTINUE_SEARCH };
        let code = record.ExceptionCode as u32;
        let addr = record.ExceptionAddress;
        let _ = write!(msg, "bitbridge-server.exe: unhandled {} (0x{code:08X}) at {addr:?}", name(code));
        if code == 0xC000_0005 && record.NumberParameters >= 2 {
            let what = match record.ExceptionInformation[0] {
                0 => "reading",
                1 => "writing",
                8 => "executing",
                _ => "accessing",
            };
            let _ = write!(msg, " {what} 0x{:X}", record.ExceptionInformation[1]);
        }
        let mut module: HMODULE = std::ptr::null_mut();
        let flags = GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT;
        // SAFETY: with FROM_ADDRESS the "name" is an address inside a module; `module` receives a handle
        // whose count is not changed (nothing to release).
        if unsafe { GetModuleHandleExW(flags, addr as *const u16, &mut module) } != 0 {
            let mut wide = [0u16; 260];
            // SAFETY: writes at most `wide.len()` units into `wide`.
            let n = unsafe { GetModuleFileNameW(module, wide.as_mut_ptr(), wide.len() as u32) } as usize;
            let _ = write!(msg, " in ");
            for c in char::decode_utf16(wide[..n.min(wide.len())].iter().copied()) {
                let _ = msg.write_char(c.unwrap_or(char::REPLACEMENT_CHARACTER));
            }
        }
        let _ = msg.write_str("\n");
        let mut written = 0u32;
        // SAFETY: writes our stack buffer to this process's standard error handle.
        unsafe {
            WriteFile(
                GetStdHandle(STD_ERROR_HANDLE),
                msg.bytes.as_ptr(),
                msg.len as u32,
                &mut written,
                std::ptr::null_mut(),
            )
        };
        EXCEPTION_EXECUTE_HANDLER
    }

    /// Installs the filter for the whole process.
    pub(super) fn report_unhandled_exceptions() {
        // SAFETY: `filter` has the signature the system expects and lives for the whole program.
        unsafe { SetUnhandledExceptionFilter(Some(filter)) };
    }
}

/// Ends the process when a thread serving calls ends inside the library. Under Wine a DLL that calls
/// `ExitThread`, or a fault Wine cannot deliver (a stack overflow on x86_64), ends only that thread;
/// the connection's watcher thread keeps the process alive, so the client would wait for a reply
/// forever. A thread watching each serving thread's handle sees it end without having left
/// [`ServingThread`]'s scope, says so on stderr and ends the process, which the client reports as
/// `ServerDied`.
pub(crate) struct ServingThread {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The exit status of a server whose serving thread ended inside the library.
const THREAD_ENDED: u32 = 70;

impl ServingThread {
    /// Starts watching the calling thread.
    pub(crate) fn start() -> ServingThread {
        use std::sync::atomic::{AtomicBool, Ordering};
        use windows_sys::Win32::Foundation::{DuplicateHandle, DUPLICATE_SAME_ACCESS};
        use windows_sys::Win32::System::Threading::{ExitProcess, GetCurrentThread, WaitForSingleObject, INFINITE};
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let mut thread: HANDLE = std::ptr::null_mut();
        // SAFETY: turns this thread's pseudo-handle into a real handle owned by the watcher below.
        let ok = unsafe {
            DuplicateHandle(
                GetCurrentProcess(),
                GetCurrentThread(),
                GetCurrentProcess(),
                &mut thread,
                0,
                0,
                DUPLICATE_SAME_ACCESS,
            )
        };
        if ok == 0 {
            return ServingThread { done };
        }
        let (flag, handle) = (done.clone(), thread as usize);
        let watcher = std::thread::Builder::new().name("bitbridge-thread-guard".into()).spawn(move || {
            // SAFETY: a valid thread handle this closure owns; waiting has no other effect.
            unsafe { WaitForSingleObject(handle as HANDLE, INFINITE) };
            if !flag.load(Ordering::SeqCst) {
                eprintln!(
                    "bitbridge-server.exe: the thread serving calls ended inside the library (ExitThread, or a \
                     fault Wine could not deliver, such as a stack overflow); the server ends"
                );
                // SAFETY: ends this process, as a crash would; nothing of it is used afterwards.
                unsafe { ExitProcess(THREAD_ENDED) };
            }
            // SAFETY: closes the handle duplicated above, once.
            unsafe { windows_sys::Win32::Foundation::CloseHandle(handle as HANDLE) };
        });
        if watcher.is_err() {
            // SAFETY: as above: the watcher did not start, so the handle is closed here.
            unsafe { windows_sys::Win32::Foundation::CloseHandle(thread) };
        }
        ServingThread { done }
    }
}

impl Drop for ServingThread {
    /// Leaving the scope (a return, or a panic unwinding) is a normal end; `ExitThread` runs no drop.
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
