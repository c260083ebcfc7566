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

/// Prepares the server process: closes every descriptor it inherited beyond 0-2 (the client's other
/// files must not reach the library), takes the connection from fd 0, puts `/dev/null` in its place (a
/// library that reads stdin gets EOF, not protocol bytes), asks the kernel to kill this process when its
/// parent dies, and starts the process-group guard (see [`guard_process_group`]). Returns the
/// connection, or an error if the parent is already gone.
pub fn take_connection(parent: Option<u32>) -> io::Result<OwnedFd> {
    close_from(3);
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and affects only this process.
    syscall!(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0))?;
    if let Some(p) = parent {
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } as u32 != p {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "the client exited before the server started"));
        }
    }
    if parent.is_some() {
        guard_process_group()?;
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

/// Closes every descriptor from `first` up (`close_range`, Linux 5.9; a loop on older kernels).
fn close_from(first: u32) {
    // SAFETY: close_range only closes descriptors; nothing in this process owns any above `first` yet
    // (this runs before the connection is duplicated and before any library is loaded).
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) };
    if r != 0 {
        // SAFETY: sysconf has no preconditions.
        let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.clamp(first as libc::c_long + 1, 65536) as libc::c_int;
        for fd in first as libc::c_int..max {
            // SAFETY: as above; closing a descriptor that is not open is a harmless EBADF.
            unsafe { libc::close(fd) };
        }
    }
}

/// Makes sure that the processes a library starts do not outlive this server, however it ends (a
/// crash, SIGKILL from the parent-death signal, a normal exit): forks a small guard process, before
/// any library is loaded and while this process has one thread, which waits for this server's death
/// (its own parent-death signal) and then kills the whole process group.
///
/// Only when this server leads its own process group (the client starts it so: every process the
/// library forks joins that group); a server started otherwise is left alone, so another program's
/// group is never killed. Limits: a process that leaves the group (`setsid`, `setpgid`) escapes, and
/// so does everything if the guard itself is killed (the client still kills the group when it reaps
/// the server).
fn guard_process_group() -> io::Result<()> {
    // SAFETY: getpid and getpgrp have no preconditions.
    let (me, group) = unsafe { (libc::getpid(), libc::getpgrp()) };
    if me != group {
        return Ok(());
    }
    // SAFETY: this process has a single thread here (run() calls this first), so the child may run
    // any code; it runs only the system calls below and never returns into Rust's runtime.
    let pid = syscall!(libc::fork())?;
    if pid != 0 {
        return Ok(());
    }
    // The guard: no descriptor of the server's (the client's output pipes would otherwise stay open).
    close_from(0);
    // SAFETY: plain system calls on a signal set we own; `_exit` never returns.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0);
        if libc::getppid() == me {
            // Returns when the server has died (or someone sent this guard SIGTERM: the group ends).
            while libc::sigwaitinfo(&set, std::ptr::null_mut()) == -1 {}
        }
        libc::kill(0, libc::SIGKILL);
        libc::_exit(0)
    }
}

/// Opens a library with `dlopen(RTLD_NOW | RTLD_LOCAL)`: an unresolved symbol is reported now, with its
/// name, not as a crash at the first call.
///
/// # Safety
/// Runs the library's initialisers (see `Host::new`).
pub(crate) unsafe fn load_library(path: &str) -> Result<libloading::Library, libloading::Error> {
    let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL;
    // SAFETY: forwarded to the caller.
    unsafe { libloading::os::unix::Library::open(Some(path), flags) }.map(Into::into)
}

/// Maps the arena whose descriptor the client sent.
pub(crate) fn open_arena(file: std::fs::File, len: u64) -> io::Result<bitbridge_shm::Arena> {
    bitbridge_shm::Arena::open(OwnedFd::from(file), len)
}

/// Linux has no last-error code; functions that ask for one are refused when prepared.
pub(crate) fn set_last_error(_: u32) {}

/// See [`set_last_error`].
pub(crate) fn get_last_error() -> u32 {
    0
}

/// Sets this thread's `errno`.
pub(crate) fn set_errno(v: i32) {
    // SAFETY: __errno_location returns this thread's errno, valid for the thread's lifetime.
    unsafe { *libc::__errno_location() = v }
}

/// This thread's `errno`.
pub(crate) fn get_errno() -> i32 {
    // SAFETY: as in set_errno.
    unsafe { *libc::__errno_location() }
}

/// On Linux a thread that ends inside the library (`pthread_exit`) is not watched: with one serving
/// thread the process ends with it; see the Windows version for why Wine needs more.
pub(crate) struct ServingThread;

impl ServingThread {
    /// Nothing to watch.
    pub(crate) fn start() -> ServingThread {
        ServingThread
    }
}
