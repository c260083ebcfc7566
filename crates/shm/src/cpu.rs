//! Which CPU a thread runs on, published by each side in its control block so the other side spins
//! only while that could pay: a peer last seen on *our* CPU cannot run while we spin (we hold the
//! CPU), and a peer asleep in its futex needs a wake-up whatever we do.
//!
//! The published word is [`ASLEEP`] (not running: asleep, or woken and not yet on a CPU), the CPU's
//! number plus one, or [`UNKNOWN`] (running, CPU unknown). On Linux the CPU comes from glibc's
//! `sched_getcpu` (a load from the kernel's restartable-sequences area, a few nanoseconds). A Windows
//! build runs under Wine on Linux, where the processor's `TSC_AUX`, which Linux sets to the CPU's number
//! (low 12 bits) for its own vDSO `getcpu`, is read with `rdtscp`: the same numbering as the client's.

/// Not running: asleep in the futex, or woken and not yet on a CPU (and the word's initial value).
pub(crate) const ASLEEP: u32 = 0;
/// Running, on a CPU that could not be told.
pub(crate) const UNKNOWN: u32 = u32::MAX;

/// Whether spinning for a peer is futile: it was last seen on `here`, our own CPU (it cannot run while
/// we spin), or it is asleep and `spun` has reached `asleep_spin` (it runs only once woken and
/// scheduled, which a spin rarely outlasts on a busy machine).
pub(crate) fn futile(here: u32, there: u32, spun: std::time::Duration, asleep_spin: std::time::Duration) -> bool {
    (there == here && here != UNKNOWN && here != ASLEEP) || (there == ASLEEP && spun >= asleep_spin)
}

/// The CPU this thread runs on now, as published: its number plus one, or [`UNKNOWN`].
pub(crate) fn current() -> u32 {
    imp::current()
}

#[cfg(unix)]
mod imp {
    pub(super) fn current() -> u32 {
        // SAFETY: sched_getcpu takes no arguments and only reports; -1 is its error.
        let cpu = unsafe { libc::sched_getcpu() };
        u32::try_from(cpu).map_or(super::UNKNOWN, |c| c.saturating_add(1).min(super::UNKNOWN - 1))
    }
}

#[cfg(windows)]
mod imp {
    #[cfg(target_arch = "x86")]
    use std::arch::x86::{__cpuid, __rdtscp};
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::{__cpuid, __rdtscp};
    use std::sync::OnceLock;

    pub(super) fn current() -> u32 {
        // CPUID leaf 0x8000_0001, EDX bit 27: RDTSCP (every x86-64 CPU since about 2008 has it).
        static RDTSCP: OnceLock<bool> = OnceLock::new();
        if !*RDTSCP.get_or_init(|| __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).edx & (1 << 27) != 0)
        {
            return super::UNKNOWN;
        }
        let mut aux = 0u32;
        // SAFETY: the CPU supports rdtscp (checked just above); it only reads the time stamp counter
        // and TSC_AUX into `aux`.
        unsafe { __rdtscp(&mut aux) };
        (aux & 0xfff) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_cpu_is_the_one_this_thread_is_pinned_to() {
        use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
        let all = sched_getaffinity(None).unwrap();
        let cpus: Vec<usize> = (0..CpuSet::MAX_CPU).filter(|&c| all.is_set(c)).collect();
        assert!(!cpus.is_empty());
        for &c in &cpus {
            let mut one = CpuSet::new();
            one.set(c);
            sched_setaffinity(None, &one).unwrap();
            assert_eq!(current(), c as u32 + 1);
        }
        sched_setaffinity(None, &all).unwrap();
    }

    #[test]
    fn spinning_is_futile_for_a_peer_on_our_cpu_or_asleep_for_long() {
        let (short, long, limit) = (Duration::from_micros(1), Duration::from_micros(40), Duration::from_micros(30));
        assert!(futile(3, 3, short, limit)); // on our CPU
        assert!(!futile(3, 4, long, limit)); // running elsewhere: the spin time decides
        assert!(!futile(3, ASLEEP, short, limit)); // asleep: a short spin may catch its wake-up
        assert!(futile(3, ASLEEP, long, limit));
        assert!(!futile(UNKNOWN, UNKNOWN, long, limit)); // nothing known
        assert!(!futile(3, UNKNOWN, long, limit));
    }
}
