//! The futex on a shared word, without `FUTEX_PRIVATE_FLAG` (the word is shared with another process,
//! possibly of the other bitness).
//!
//! On Linux through rustix. A Windows build exists only to run under Wine on Linux (bitbridge's
//! Windows servers): Wine 8 lets PE code make Linux system calls directly, so the same futex is
//! reached with the raw system call (x86_64: `syscall`, number 202; i386: `int 0x80`, number 240),
//! measured on Wine 8.0 at 7-10 us a sleeping round trip, against milliseconds for any Windows wait
//! that could be woken from Linux. Errors are ignored on purpose: every wait is bounded and its caller
//! re-checks the word, the deadline and the peer after it, so a failed or spurious wait only costs one
//! more loop.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Sleeps while `word` holds `expected`, for at most `timeout`.
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    imp::wait(word, expected, timeout)
}

/// Wakes every thread, of any process, sleeping on `word`.
pub(crate) fn wake(word: &AtomicU32) {
    imp::wake(word)
}

#[cfg(unix)]
mod imp {
    use super::*;
    use rustix::thread::futex;

    pub(super) fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
        let ts = rustix::time::Timespec { tv_sec: timeout.as_secs() as _, tv_nsec: timeout.subsec_nanos() as _ };
        let _ = futex::wait(word, futex::Flags::empty(), expected, Some(&ts));
    }

    pub(super) fn wake(word: &AtomicU32) {
        let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
    }
}

#[cfg(all(windows, target_arch = "x86_64"))]
mod imp {
    use super::*;
    use std::arch::asm;

    const SYS_FUTEX: usize = 202;
    const FUTEX_WAIT: usize = 0;
    const FUTEX_WAKE: usize = 1;

    /// `struct timespec` of x86_64 Linux.
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }

    pub(super) fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
        let ts = Timespec { tv_sec: timeout.as_secs() as i64, tv_nsec: i64::from(timeout.subsec_nanos()) };
        // SAFETY: the Linux futex system call (only reached under Wine on Linux, where this build runs):
        // it reads the word and the timespec, both valid for the call, and writes no memory of ours.
        // `syscall` clobbers rcx and r11, declared; the result in rax is ignored (see the module docs).
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") SYS_FUTEX => _,
                in("rdi") word.as_ptr(),
                in("rsi") FUTEX_WAIT,
                in("rdx") expected as usize,
                in("r10") &ts as *const Timespec,
                in("r8") 0usize,
                in("r9") 0usize,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
    }

    pub(super) fn wake(word: &AtomicU32) {
        // SAFETY: as in `wait`: FUTEX_WAKE only reads the word's address.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") SYS_FUTEX => _,
                in("rdi") word.as_ptr(),
                in("rsi") FUTEX_WAKE,
                in("rdx") i32::MAX as usize,
                in("r10") 0usize,
                in("r8") 0usize,
                in("r9") 0usize,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
    }
}

#[cfg(all(windows, target_arch = "x86"))]
mod imp {
    use super::*;
    use std::arch::asm;

    const SYS_FUTEX: usize = 240;
    const FUTEX_WAIT: usize = 0;
    const FUTEX_WAKE: usize = 1;

    /// `struct timespec` of i386 Linux (the 32-bit `futex` system call, number 240).
    #[repr(C)]
    struct Timespec {
        tv_sec: i32,
        tv_nsec: i32,
    }

    pub(super) fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
        let ts =
            Timespec { tv_sec: timeout.as_secs().min(i32::MAX as u64) as i32, tv_nsec: timeout.subsec_nanos() as i32 };
        // SAFETY: the Linux futex system call through `int 0x80` (only reached under Wine on Linux): it
        // reads the word and the timespec, both valid for the call. The fourth argument goes in esi,
        // which Rust reserves on x86: it is saved and restored around the call by hand.
        unsafe {
            asm!(
                "push esi",
                "mov esi, {ts}",
                "int 0x80",
                "pop esi",
                ts = in(reg) &ts as *const Timespec,
                inlateout("eax") SYS_FUTEX => _,
                in("ebx") word.as_ptr(),
                in("ecx") FUTEX_WAIT,
                in("edx") expected as usize,
                in("edi") 0usize,
            );
        }
    }

    pub(super) fn wake(word: &AtomicU32) {
        // SAFETY: as in `wait`: FUTEX_WAKE only reads the word's address (esi, the unused timeout, is
        // zeroed around the call and restored).
        unsafe {
            asm!(
                "push esi",
                "xor esi, esi",
                "int 0x80",
                "pop esi",
                inlateout("eax") SYS_FUTEX => _,
                in("ebx") word.as_ptr(),
                in("ecx") FUTEX_WAKE,
                in("edx") i32::MAX as usize,
                in("edi") 0usize,
            );
        }
    }
}
