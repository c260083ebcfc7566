//! Linux system calls, each wrapped to return `io::Result` (the one place the server calls libc
//! directly besides the library it hosts).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// Runs a libc call and turns a `-1` into the thread's `errno`.
macro_rules! syscall {
    ($e:expr) => {{
        // SAFETY: each use passes arguments valid for the call, as explained at the call site.
        let r = unsafe { $e };
        if r == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }};
}

fn own_copy(local: *mut u8, remote: *const u8, len: usize, write: bool) -> io::Result<usize> {
    let l = libc::iovec { iov_base: local.cast(), iov_len: len };
    let r = libc::iovec { iov_base: remote as *mut _, iov_len: len };
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    // process_vm_readv/writev check every address against this process's mappings and fail with
    // EFAULT instead of faulting; `local` is a buffer we own of `len` bytes.
    let n = if write {
        syscall!(libc::process_vm_writev(pid, &l, 1, &r, 1, 0))?
    } else {
        syscall!(libc::process_vm_readv(pid, &l, 1, &r, 1, 0))?
    };
    Ok(n as usize)
}

fn fallback(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM))
}

/// Copies `len` bytes from `src` (any address of this process) to `dst` (a buffer we own).
pub(crate) fn copy_own_memory(src: *const u8, dst: *mut u8, len: usize) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    match own_copy(dst, src, len, false) {
        Ok(n) if n == len => Ok(()),
        Ok(n) => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("only {n} bytes are mapped"))),
        Err(e) if fallback(&e) => {
            // SAFETY: the kernel refused the checked copy; the client asked for this address as ctypes'
            // string_at would, and a bad one ends this server process only, which the client reports.
            unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Copies `len` bytes from `src` (a buffer we own) to `dst` (any address of this process).
pub(crate) fn copy_to_own_memory(src: *const u8, dst: *mut u8, len: usize) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    match own_copy(src as *mut u8, dst, len, true) {
        Ok(n) if n == len => Ok(()),
        Ok(n) => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("only {n} bytes are mapped writable"))),
        Err(e) if fallback(&e) => {
            // SAFETY: as in copy_own_memory: ctypes' memmove semantics, contained to this process.
            unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Prepares the server process: takes the connection from fd 0, puts `/dev/null` in its place (a
/// library that reads stdin gets EOF, not protocol bytes), and asks the kernel to kill this process
/// when its parent dies. Returns the connection, or an error if the parent is already gone.
pub fn take_connection(parent: Option<u32>) -> io::Result<OwnedFd> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and affects only this process.
    syscall!(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0))?;
    if let Some(p) = parent {
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } as u32 != p {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "the client exited before the server started"));
        }
    }
    // F_DUPFD_CLOEXEC: the connection must not leak into processes the library may spawn.
    let fd = syscall!(libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3))?;
    // SAFETY: fd was just returned by fcntl and is owned by nobody else.
    let conn = unsafe { OwnedFd::from_raw_fd(fd) };
    let null = syscall!(libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC))?;
    syscall!(libc::dup2(null, 0))?;
    syscall!(libc::close(null))?;
    Ok(conn)
}
