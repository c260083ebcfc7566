//! bitbridge's shared-memory transport.
//!
//! A client creates a memfd segment and hands it to its server over their socketpair (`SCM_RIGHTS`), so
//! the segment has no name anywhere and no other process can map it. The segment holds two rings,
//! client-to-server and server-to-client, each a control block and a data area: a single-producer
//! single-consumer byte ring of records (a frame, in chunks when larger), so a sender queues frames
//! behind unread ones instead of waiting for each to be read. The producer announces records by moving
//! its `head` counter, the consumer frees them by moving its `tail`; each waits for the other by
//! spinning on the counter for a bounded time, then sleeping on it with a futex.
//!
//! Between a 64-bit and a 32-bit process:
//! - every shared word is an `AtomicU32` or a `u64` at a fixed offset in `#[repr(C)]` blocks with explicit
//!   alignment, asserted at compile time to be laid out the same on both targets;
//! - the futex is used without `FUTEX_PRIVATE_FLAG`, since the two processes do not share an address
//!   space (a private futex is keyed by virtual address and would never wake the other side);
//! - no glibc `pthread` object is placed in shared memory (their sizes differ between i686 and x86_64).
//!
//! The socket stays open beside the segment: a sleeping side checks it between futex waits, so a peer
//! that died is noticed within [`LIVENESS`] even though no futex wake-up will ever come from it.
#![deny(missing_docs)]

use std::io;
#[cfg(unix)]
use std::io::{IoSlice, IoSliceMut};
#[cfg(unix)]
use std::mem::MaybeUninit;
use std::mem::{offset_of, size_of};
#[cfg(unix)]
use std::os::fd::{AsFd, OwnedFd};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod cpu;
mod futex;
#[cfg(unix)]
pub mod object;

use bitbridge_proto::{FrameError, Transport};
#[cfg(unix)]
use memmap2::MmapRaw;
#[cfg(windows)]
mod winmap;
#[cfg(unix)]
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
#[cfg(windows)]
use winmap::MmapRaw;

/// How often a sleeping side checks that its peer is still there.
pub const LIVENESS: Duration = Duration::from_millis(5);

/// The default time a receiver spins before it sleeps. A blocking wake-up across vCPUs costs about
/// 50 us on the machines bitbridge is measured on, so spinning up to that long costs at most twice the
/// best case while catching every reply that comes quicker.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// How many times the process is a `fork()`ed child of the one that first asked: a connection made
/// before a fork belongs to the parent (its server, its shared memory, its replies), and the child must
/// neither use it nor shut it down. Counted by a `pthread_atfork` child handler, registered at the first
/// call, so checking costs one atomic load.
#[cfg(unix)]
pub fn fork_generation() -> u32 {
    static GENERATION: AtomicU32 = AtomicU32::new(0);
    static REGISTER: std::sync::Once = std::sync::Once::new();
    extern "C" fn in_child() {
        GENERATION.fetch_add(1, Ordering::SeqCst);
    }
    REGISTER.call_once(|| {
        // SAFETY: registers a handler that only increments an atomic (async-signal-safe, as a child
        // handler must be); nothing is unregistered later.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
    GENERATION.load(Ordering::SeqCst)
}

/// Windows has no `fork()`: always 0.
#[cfg(windows)]
pub fn fork_generation() -> u32 {
    0
}

/// How one side of a shared-memory connection waits for the other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WaitMode {
    /// Spin only while it pays: up to four times the recent waits that spinning caught (averaged), at
    /// least 2 us and at most the spin time; a wait that ended in the futex just after the spin gave up
    /// doubles the next spin, a much longer one shrinks it by a quarter. Waits for room to send and waits
    /// for a message learn separately. Like [`WaitMode::Spin`], it stops spinning for a peer last seen
    /// on this very CPU and gives a sleeping peer only a short spin (see `cpu.rs`). Spins less than
    /// `Spin` on a busy machine; measured against it in `./x bench`'s contention section, where it beat
    /// the spin in none of this round's later runs (README, Benchmarks).
    Adaptive,
    /// Spin for the spin time, then sleep on the futex (the default). The spin stops early when the
    /// peer is seen on this very CPU (it cannot run while we spin) and after 30 us for a peer that is
    /// asleep (it must be woken and scheduled first).
    #[default]
    Spin,
    /// Never spin: sleep on the futex at once (the least CPU; a wake-up per message).
    Sleep,
}

impl WaitMode {
    /// The name used in the server's environment (`BITBRIDGE_WAIT`).
    pub fn name(self) -> &'static str {
        match self {
            WaitMode::Adaptive => "adaptive",
            WaitMode::Spin => "spin",
            WaitMode::Sleep => "sleep",
        }
    }

    /// The mode named `name` (see [`WaitMode::name`]).
    pub fn from_name(name: &str) -> Option<WaitMode> {
        match name {
            "adaptive" => Some(WaitMode::Adaptive),
            "spin" => Some(WaitMode::Spin),
            "sleep" => Some(WaitMode::Sleep),
            _ => None,
        }
    }
}

/// How long a wait spins for a peer that is asleep (or woken and not yet running): a little more than a
/// wake-up to an idle CPU takes on a quiet machine (~22 us on the 2-vCPU VMs measured, half the futex-only
/// round trip), so that the first call after a pause is still caught, and less than the spin time, so
/// that on a busy machine, where the woken peer may wait for the very CPU we spin on, less is burnt.
const ASLEEP_SPIN: Duration = Duration::from_micros(30);

/// The shortest spin the adaptive wait tries (a round trip on a quiet machine is well under this).
const MIN_SPIN_NS: u32 = 2_000;

/// The adaptive wait's memory of one kind of wait (for room to send, or for a message) on one side
/// (atomics: a transport is shared by reference).
#[derive(Debug)]
struct Adapt {
    /// How long the next spin may last, in nanoseconds.
    budget_ns: AtomicU32,
}

impl Adapt {
    fn new() -> Adapt {
        Adapt { budget_ns: AtomicU32::new(MIN_SPIN_NS * 4) }
    }
}

/// The default size of each ring's data area (a power of two). Larger frames are sent in chunks.
pub const DEFAULT_CAPACITY: u32 = 4 << 20;

const MAGIC: u64 = u64::from_le_bytes(*b"BBSHMv02");
/// Each record in a ring: a `u32` payload length, a `u32` "more chunks of this frame follow" flag, then
/// the payload padded to a multiple of 8 (so a record header never straddles the ring's end).
const RECORD_HEADER: usize = 8;

/// The segment's first 64 bytes.
#[repr(C, align(64))]
struct Header {
    magic: u64,
    capacity: u32,
    _reserved: u32,
    size: u64,
}

/// One direction's control block: a single-producer single-consumer byte ring. The producer's line and
/// the consumer's line are 64 bytes apart, so each side writes only its own cache line.
#[repr(C, align(64))]
struct Control {
    /// The producer's line.
    prod: Producer,
    /// The consumer's line.
    cons: Consumer,
}

#[repr(C, align(64))]
struct Producer {
    /// Bytes written so far (wrapping), records included: the futex word a consumer with nothing to
    /// read sleeps on.
    head: AtomicU32,
    /// How many threads sleep (or are about to) on `head`.
    sleepers: AtomicU32,
    /// Where this ring's *writer* runs (see `cpu.rs`): the side waiting for it spins only while that
    /// could pay.
    cpu: AtomicU32,
}

#[repr(C, align(64))]
struct Consumer {
    /// Bytes read so far (wrapping): the futex word a producer waiting for room sleeps on.
    tail: AtomicU32,
    /// How many threads sleep (or are about to) on `tail`.
    sleepers: AtomicU32,
}

const CONTROL_C2S: usize = 128;
const CONTROL_S2C: usize = 256;
const DATA: usize = 4096;

// The layout both bitnesses rely on: the same sizes and offsets on i686 and x86_64.
const _: () = {
    assert!(size_of::<Header>() == 64);
    assert!(offset_of!(Header, capacity) == 8);
    assert!(offset_of!(Header, size) == 16);
    assert!(size_of::<Control>() == 128);
    assert!(offset_of!(Control, cons) == 64);
    assert!(offset_of!(Producer, sleepers) == 4);
    assert!(offset_of!(Producer, cpu) == 8);
    assert!(offset_of!(Consumer, sleepers) == 4);
    assert!(size_of::<AtomicU32>() == 4);
    assert!(CONTROL_S2C + size_of::<Control>() <= DATA);
};

/// A shared-memory segment: a memfd mapped into this process.
#[derive(Debug)]
pub struct Segment {
    map: MmapRaw,
    #[cfg(unix)]
    fd: OwnedFd,
    capacity: usize,
}

/// Which ring: the one the client writes, or the one the server writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    ToServer,
    /// Server to client.
    ToClient,
}

impl Segment {
    /// Creates a segment with rings of `capacity` bytes each (4 KiB to 1 GiB), rounded up to a power of two
    /// (client side).
    #[cfg(unix)]
    pub fn create(capacity: u32) -> io::Result<Segment> {
        // A power of two, so positions stay right when the wrapping counters wrap.
        let capacity = (capacity.clamp(4096, 1 << 30) as usize).next_power_of_two();
        let size = DATA + 2 * capacity;
        let fd = rustix::fs::memfd_create(c"bitbridge", rustix::fs::MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&fd, size as u64)?;
        let map = MmapRaw::map_raw(&std::fs::File::from(fd.try_clone()?))?;
        let seg = Segment { map, fd, capacity };
        // SAFETY: the mapping is at least DATA bytes, page-aligned (so aligned for Header), and nobody
        // else has it yet: this is the only write before it is shared.
        unsafe {
            seg.map.as_mut_ptr().cast::<Header>().write(Header {
                magic: MAGIC,
                capacity: capacity as u32,
                _reserved: 0,
                size: size as u64,
            });
        }
        Ok(seg)
    }

    /// Maps a segment received from a client (server side), checking its header.
    #[cfg(unix)]
    pub fn open(fd: OwnedFd) -> io::Result<Segment> {
        let map = MmapRaw::map_raw(&std::fs::File::from(fd.try_clone()?))?;
        let capacity = Self::check(&map)?;
        Ok(Segment { map, fd, capacity })
    }

    /// Maps a segment the client created, opened by name (a Windows server under Wine opens the
    /// client's memfd as `Z:\proc\<client pid>\fd\<n>`), checking its header.
    #[cfg(windows)]
    pub fn open_file(file: &std::fs::File) -> io::Result<Segment> {
        let map = MmapRaw::map_raw(file)?;
        let capacity = Self::check(&map)?;
        Ok(Segment { map, capacity })
    }

    /// The ring capacity a mapped segment's header states, checked against the mapping.
    fn check(map: &MmapRaw) -> io::Result<usize> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("not a bitbridge segment: {m}"));
        if map.len() < DATA {
            return Err(bad("too small"));
        }
        // SAFETY: at least DATA bytes are mapped (checked) and the mapping is page-aligned; the header is
        // written once by the client before it sends the fd and never changed after.
        let h = unsafe { map.as_ptr().cast::<Header>().read() };
        let capacity = h.capacity as usize;
        if h.magic != MAGIC {
            return Err(bad("wrong magic"));
        }
        let expected = capacity.checked_mul(2).and_then(|c| c.checked_add(DATA));
        if capacity < 4096 || !capacity.is_power_of_two() || h.size != map.len() as u64 || expected != Some(map.len()) {
            return Err(bad("sizes do not match the mapping"));
        }
        Ok(capacity)
    }

    /// The memfd, to send to the server.
    #[cfg(unix)]
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The capacity of each ring.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn control(&self, dir: Direction) -> &Control {
        let off = match dir {
            Direction::ToServer => CONTROL_C2S,
            Direction::ToClient => CONTROL_S2C,
        };
        // SAFETY: the offset is within the mapping (DATA bytes at least), 64-byte aligned, and Control
        // holds only atomics, which may be shared with another process and accessed through `&`.
        unsafe { &*self.map.as_ptr().add(off).cast::<Control>() }
    }

    /// Wakes every sleeper on the segment's futex words (the peer is gone).
    fn wake_all(&self) {
        for dir in [Direction::ToServer, Direction::ToClient] {
            futex::wake(&self.control(dir).prod.head);
            futex::wake(&self.control(dir).cons.tail);
        }
    }

    /// Copies `src` into `dir`'s ring at counter `at` (wrapping at the capacity, a power of two).
    ///
    /// # Safety
    /// The caller is `dir`'s producer and the bytes `at..at + src.len()` are free (the consumer has
    /// read past them); `src.len()` is at most the capacity.
    unsafe fn ring_write(&self, dir: Direction, at: u32, src: &[u8]) {
        let pos = at as usize & (self.capacity - 1);
        let first = src.len().min(self.capacity - pos);
        let data = self.data(dir);
        // SAFETY: pos + first <= capacity and src.len() - first <= capacity - first: both inside the
        // ring; the range is the producer's (the caller's contract).
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), data.add(pos), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), data, src.len() - first);
        }
    }

    /// Copies `dst.len()` bytes out of `dir`'s ring from counter `at`.
    ///
    /// # Safety
    /// The caller is `dir`'s consumer and the bytes `at..at + dst.len()` were published by the
    /// producer and not yet consumed; `dst.len()` is at most the capacity.
    unsafe fn ring_read(&self, dir: Direction, at: u32, dst: *mut u8, len: usize) {
        let pos = at as usize & (self.capacity - 1);
        let first = len.min(self.capacity - pos);
        let data = self.data(dir);
        // SAFETY: as in ring_write, for reading; `dst` has room for `len` bytes (the caller's contract).
        unsafe {
            std::ptr::copy_nonoverlapping(data.add(pos), dst, first);
            std::ptr::copy_nonoverlapping(data, dst.add(first), len - first);
        }
    }

    fn data(&self, dir: Direction) -> *mut u8 {
        let off = match dir {
            Direction::ToServer => DATA,
            Direction::ToClient => DATA + self.capacity,
        };
        // SAFETY: DATA + 2 * capacity is the mapping's size (checked at open, made so at create).
        unsafe { self.map.as_mut_ptr().add(off) }
    }
}

#[cfg(unix)]
/// Sends a file descriptor over the socket (`SCM_RIGHTS`) with a 4-byte tag saying what it is and
/// the id it is for, so the receiver can check it gets the descriptor it expects.
pub fn send_fd(sock: &UnixStream, fd: &OwnedFd, tag: &[u8; 4], id: u32) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd.as_fd()];
    control.push(SendAncillaryMessage::ScmRights(&fds));
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(tag);
    msg[4..].copy_from_slice(&id.to_le_bytes());
    // NOSIGNAL: a peer that died is an EPIPE error, not a SIGPIPE that kills the host program.
    rustix::net::sendmsg(sock, &[IoSlice::new(&msg)], &mut control, SendFlags::NOSIGNAL)?;
    Ok(())
}

#[cfg(unix)]
/// Receives a file descriptor sent with [`send_fd`], checking its tag and id.
pub fn recv_fd(sock: &UnixStream, want: &[u8; 4], id: u32) -> io::Result<OwnedFd> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut msg = [0u8; 8];
    let got = rustix::net::recvmsg(sock, &mut [IoSliceMut::new(&mut msg)], &mut control, RecvFlags::CMSG_CLOEXEC)?;
    let fd = control.drain().find_map(|m| match m {
        RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
        _ => None,
    });
    if got.bytes != 8 || msg[..4] != want[..] || msg[4..] != id.to_le_bytes() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("expected {:?} for {id} on the socket", String::from_utf8_lossy(want)),
        ));
    }
    fd.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no file descriptor came with the message"))
}

#[cfg(unix)]
/// Sends the segment's memfd over the socket.
pub fn send_segment(sock: &UnixStream, seg: &Segment) -> io::Result<()> {
    send_fd(sock, seg.fd(), b"SHM1", 0)
}

#[cfg(unix)]
/// Receives a segment's memfd sent with [`send_segment`] and maps it.
pub fn recv_segment(sock: &UnixStream) -> io::Result<Segment> {
    Segment::open(recv_fd(sock, b"SHM1", 0)?)
}

/// The bulk arena: a second shared segment where the client puts large blocks (arrays behind pointer
/// arguments) so they cross with one copy, or none, instead of travelling inside frames.
///
/// Who may touch it when is the protocol's business: the client writes it only before sending a call
/// that uses it and reads it only after that call's reply; the server touches it only while running that
/// call. The client serialises the calls that use it.
#[derive(Debug)]
pub struct Arena {
    map: MmapRaw,
    #[cfg(unix)]
    fd: OwnedFd,
}

impl Arena {
    /// Creates an arena of `len` bytes (client side); its pages cost memory only once touched.
    #[cfg(unix)]
    pub fn create(len: u64) -> io::Result<Arena> {
        let fd = rustix::fs::memfd_create(c"bitbridge-arena", rustix::fs::MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&fd, len)?;
        let map = MmapRaw::map_raw(&std::fs::File::from(fd.try_clone()?))?;
        Ok(Arena { map, fd })
    }

    /// Maps an arena received from a client (server side), which must be `len` bytes.
    #[cfg(unix)]
    pub fn open(fd: OwnedFd, len: u64) -> io::Result<Arena> {
        let map = MmapRaw::map_raw(&std::fs::File::from(fd.try_clone()?))?;
        Self::check_len(&map, len)?;
        Ok(Arena { map, fd })
    }

    /// Maps an arena the client created, opened by name (see [`Segment::open_file`]); it must be `len`
    /// bytes.
    #[cfg(windows)]
    pub fn open_file(file: &std::fs::File, len: u64) -> io::Result<Arena> {
        let map = MmapRaw::map_raw(file)?;
        Self::check_len(&map, len)?;
        Ok(Arena { map })
    }

    fn check_len(map: &MmapRaw, len: u64) -> io::Result<()> {
        if map.len() as u64 != len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the arena is {} bytes, not {len}", map.len()),
            ));
        }
        Ok(())
    }

    /// The memfd, to send to the server.
    #[cfg(unix)]
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The size in bytes.
    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Whether the arena has no bytes.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// The start of the mapping in this process.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// `len` bytes at `offset`, to fill before a call. Panics when out of range.
    pub fn bytes_mut(&mut self, offset: u64, len: u64) -> &mut [u8] {
        let (o, l) = self.range(offset, len);
        // SAFETY: the range is inside the mapping (checked); `&mut self` excludes other uses in this
        // process, and by the protocol the server does not touch the arena while no call is running.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(o), l) }
    }

    /// `len` bytes at `offset`, to read after a call. Panics when out of range.
    pub fn bytes(&self, offset: u64, len: u64) -> &[u8] {
        let (o, l) = self.range(offset, len);
        // SAFETY: as in bytes_mut; after the call's reply the server no longer writes the arena.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(o), l) }
    }

    /// Copies `bytes` into the arena at `offset`, through raw pointers: the other process may be
    /// reading or writing the same bytes (a library keeping a pointer into a shared buffer), and no
    /// Rust reference to racing memory is ever made. Panics when out of range.
    pub fn write_at(&self, offset: u64, bytes: &[u8]) {
        let (o, l) = self.range(offset, bytes.len() as u64);
        // SAFETY: the range is inside the mapping (checked); a plain byte copy between our buffer and
        // the mapping, whatever the peer does meanwhile (bytes may tear, memory stays valid).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.map.as_mut_ptr().add(o), l) }
    }

    /// Copies `len` bytes out of the arena at `offset`, like [`Arena::write_at`]. Panics when out of range.
    pub fn read_at(&self, offset: u64, len: u64) -> Vec<u8> {
        let (o, l) = self.range(offset, len);
        let mut out = vec![0u8; l];
        // SAFETY: as in write_at.
        unsafe { std::ptr::copy_nonoverlapping(self.map.as_ptr().add(o), out.as_mut_ptr(), l) };
        out
    }

    fn range(&self, offset: u64, len: u64) -> (usize, usize) {
        let end = offset.checked_add(len).expect("arena range overflows");
        assert!(end <= self.map.len() as u64, "arena range {offset}+{len} beyond {} bytes", self.map.len());
        (offset as usize, len as usize)
    }
}

#[cfg(unix)]
/// Whether the peer at the other end of `sock` has gone (EOF or an error), without blocking.
fn peer_gone(sock: &UnixStream) -> bool {
    let mut b = [0u8; 1];
    match rustix::net::recv(sock, &mut b, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
        Ok((0, _)) => true,
        Ok(_) => false, // data on the socket: the peer is there (the socket carries nothing after set-up)
        Err(e) => e != rustix::io::Errno::AGAIN && e != rustix::io::Errno::INTR,
    }
}

#[cfg(unix)]
/// Whether `fd` (a pidfd) is readable now: the process it refers to has exited.
fn exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [rustix::event::PollFd::new(pidfd, rustix::event::PollFlags::IN)];
    let zero = rustix::time::Timespec { tv_sec: 0, tv_nsec: 0 };
    matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
}

/// Watches for the peer's end: a thread blocked until the socket reaches EOF or, given a pidfd, the
/// peer *process* exits (a child the library forked may hold the socket open: the process, not the
/// socket, says when the server is gone). It then raises a flag and wakes every sleeper on the
/// segment's futex words, so a death is seen at once, not at the next liveness check. Only for the
/// side that never reads the socket otherwise (the client).
#[derive(Debug, Clone)]
pub struct Watch {
    gone: Arc<AtomicBool>,
    #[cfg(unix)]
    pidfd: Option<Arc<OwnedFd>>,
}

/// The size of a descriptor announcement on a Windows server's connection: a 4-byte tag, the
/// little-endian id it is for and the client's descriptor number (see [`Watch::reader`]).
pub const ANNOUNCEMENT: usize = 12;

impl Watch {
    /// Watches a connection that carries nothing but descriptor announcements after the greeting (a
    /// Windows server's, whose client cannot pass descriptors): a thread reads `conn` until its end,
    /// hands each [`ANNOUNCEMENT`] to `announce`, and at EOF or an error raises the flag and wakes every
    /// sleeper on the segment's futex words.
    pub fn reader(
        mut conn: impl io::Read + Send + 'static,
        seg: Arc<Segment>,
        mut announce: impl FnMut([u8; ANNOUNCEMENT]) + Send + 'static,
    ) -> io::Result<Watch> {
        let gone = Arc::new(AtomicBool::new(false));
        let flag = gone.clone();
        std::thread::Builder::new().name("bitbridge-watch".into()).spawn(move || {
            let mut msg = [0u8; ANNOUNCEMENT];
            while conn.read_exact(&mut msg).is_ok() {
                announce(msg);
            }
            flag.store(true, Ordering::SeqCst);
            seg.wake_all();
        })?;
        Ok(Watch {
            gone,
            #[cfg(unix)]
            pidfd: None,
        })
    }

    /// Starts watching `sock` (a clone of the connection) for EOF, and `pidfd` (the peer process's) for
    /// its exit.
    #[cfg(unix)]
    pub fn start(sock: UnixStream, seg: Arc<Segment>, pidfd: Option<Arc<OwnedFd>>) -> io::Result<Watch> {
        let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = gone.clone();
        let pid = pidfd.clone();
        std::thread::Builder::new().name("bitbridge-watch".into()).spawn(move || {
            use rustix::event::{PollFd, PollFlags};
            let mut b = [0u8; 64];
            // The server never writes to the socket after its greeting: it becomes readable only at its end.
            loop {
                let mut fds = vec![PollFd::new(&sock, PollFlags::IN)];
                if let Some(p) = &pid {
                    fds.push(PollFd::new(&**p, PollFlags::IN));
                }
                match rustix::event::poll(&mut fds, None) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(_) => break,
                }
                if fds.get(1).is_some_and(|f| !f.revents().is_empty()) {
                    break; // the process exited
                }
                if !fds[0].revents().is_empty() {
                    match rustix::net::recv(&sock, &mut b, RecvFlags::DONTWAIT) {
                        Ok((0, _)) => break,
                        Ok(_) | Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
                        Err(_) => break,
                    }
                }
            }
            flag.store(true, Ordering::SeqCst);
            seg.wake_all();
        })?;
        Ok(Watch { gone, pidfd })
    }

    fn gone(&self) -> bool {
        #[cfg(unix)]
        if self.pidfd.as_deref().is_some_and(exited) {
            return true;
        }
        self.gone.load(Ordering::SeqCst)
    }
}

/// One end of a segment, as a [`Transport`]: it sends on one ring and receives on the other.
#[derive(Debug)]
pub struct ShmTransport {
    seg: Arc<Segment>,
    send: Direction,
    recv: Direction,
    /// The connection, checked without blocking for the peer's end (a Unix server's).
    #[cfg(unix)]
    sock: Option<UnixStream>,
    watch: Option<Watch>,
    spin: Duration,
    mode: WaitMode,
    /// The adaptive wait's memory: waits for room to send, and for a message.
    adapt: [Adapt; 2],
    /// The consumer's tail of the ring this end sends on, as last read: room is checked against it
    /// first, so a producer reads the consumer's cache line only when the ring looks full.
    seen_tail: AtomicU32,
    timeout: Option<Duration>,
    send_timeout: Option<Duration>,
    /// The frame being received, kept when a receive times out part-way (the next one continues it).
    partial: Vec<u8>,
    in_frame: bool,
    /// The rest of a frame refused as too large is still to be taken off the ring (unread).
    skipping: bool,
    /// The largest frame accepted (chunks beyond it are refused as they arrive).
    max_frame: u32,
}

impl ShmTransport {
    /// A client end: sends to the server, receives from it. `sock` is the connection, kept for liveness;
    /// `watch` reports the server's end at once.
    #[cfg(unix)]
    pub fn client(seg: Arc<Segment>, sock: UnixStream, watch: Watch, spin: Duration) -> ShmTransport {
        let mut t = Self::new(seg, Direction::ToServer, Some(watch), spin);
        t.sock = Some(sock);
        t
    }

    /// A server end whose connection `sock` is checked for the client's end while it sleeps.
    #[cfg(unix)]
    pub fn server(seg: Arc<Segment>, sock: UnixStream, spin: Duration) -> ShmTransport {
        let mut t = Self::new(seg, Direction::ToClient, None, spin);
        t.sock = Some(sock);
        t
    }

    /// A server end told of the client's end by `watch` (see [`Watch::reader`]).
    pub fn server_watched(seg: Arc<Segment>, watch: Watch, spin: Duration) -> ShmTransport {
        Self::new(seg, Direction::ToClient, Some(watch), spin)
    }

    /// An end that sends on `send` and receives on the other ring.
    fn new(seg: Arc<Segment>, send: Direction, watch: Option<Watch>, spin: Duration) -> ShmTransport {
        let recv = match send {
            Direction::ToServer => Direction::ToClient,
            Direction::ToClient => Direction::ToServer,
        };
        ShmTransport {
            seg,
            send,
            recv,
            #[cfg(unix)]
            sock: None,
            watch,
            spin,
            mode: WaitMode::Spin,
            adapt: [Adapt::new(), Adapt::new()],
            seen_tail: AtomicU32::new(0),
            timeout: None,
            send_timeout: None,
            partial: Vec::new(),
            in_frame: false,
            skipping: false,
            max_frame: bitbridge_proto::DEFAULT_MAX_FRAME,
        }
    }

    /// Chooses how this end waits (default [`WaitMode::Spin`]); the spin time is the longest it spins.
    pub fn wait_mode(mut self, mode: WaitMode) -> ShmTransport {
        self.mode = mode;
        self
    }

    fn peer_gone(&self) -> bool {
        #[cfg(unix)]
        if self.sock.as_ref().is_some_and(peer_gone) {
            return true;
        }
        self.watch.as_ref().is_some_and(Watch::gone)
    }

    /// Waits until `ready()`: spins (as the [`WaitMode`] says), then sleeps on the futex `word` (its
    /// waiters counted in `sleepers`, so the peer wakes them after changing it) in slices of
    /// [`LIVENESS`], checking between slices that the peer lives and the deadline has not passed.
    /// `kind` is 0 for a wait for room to send, 1 for a wait for a message (learned separately).
    fn wait_until(
        &self,
        word: &AtomicU32,
        sleepers: &AtomicU32,
        ready: impl Fn() -> bool,
        kind: usize,
        deadline: Option<Instant>,
    ) -> Result<(), FrameError> {
        if ready() {
            return Ok(());
        }
        let adapt = &self.adapt[kind];
        let spin = match self.mode {
            WaitMode::Sleep => Duration::ZERO,
            WaitMode::Spin => self.spin,
            WaitMode::Adaptive => {
                Duration::from_nanos(u64::from(adapt.budget_ns.load(Ordering::Relaxed))).min(self.spin)
            }
        };
        // Only the adaptive wait learns from how long a wait took; the others read the clock only to end
        // the spin (a clock read costs as much as a quick round trip's own work).
        let adaptive = self.mode == WaitMode::Adaptive;
        let mut start = adaptive.then(Instant::now);
        let me = &self.seg.control(self.send).prod;
        let peer = &self.seg.control(self.recv).prod;
        // How long the spin lasted: less than `spin` when it stopped early (the adaptive wait learns
        // from what was tried, not what was planned).
        let mut spun = Duration::ZERO;
        if !spin.is_zero() {
            let here = cpu::current();
            // Written only when it changed: the word shares its cache line with the counter the peer polls.
            if me.cpu.load(Ordering::Relaxed) != here {
                me.cpu.store(here, Ordering::Relaxed);
            }
            let mut n = 0u32;
            loop {
                // Every 256 checks (the first included): the clock, and where the peer is.
                if n % 4 == 0 {
                    let now = Instant::now();
                    let elapsed = now.saturating_duration_since(*start.get_or_insert(now));
                    let futile = cpu::futile(here, peer.cpu.load(Ordering::Relaxed), elapsed, ASLEEP_SPIN);
                    // The deadline ends a spin too (a spin time may be set longer than a call may take).
                    let late = deadline.is_some_and(|d| now >= d);
                    if futile
                        || elapsed >= spin
                        || late
                        || self.watch.as_ref().is_some_and(|w| w.gone.load(Ordering::Relaxed))
                    {
                        spun = elapsed;
                        break;
                    }
                }
                n += 1;
                for _ in 0..64 {
                    std::hint::spin_loop();
                    if ready() {
                        if let Some(start) = start.filter(|_| adaptive) {
                            self.caught(adapt, start.elapsed());
                        }
                        return Ok(());
                    }
                }
            }
        }
        me.cpu.store(cpu::ASLEEP, Ordering::Relaxed);
        let result = self.sleep_until(word, sleepers, &ready, deadline);
        me.cpu.store(cpu::current(), Ordering::Relaxed);
        if let (Ok(()), Some(start)) = (&result, start.filter(|_| adaptive)) {
            self.slept(adapt, spun, start.elapsed());
        }
        result
    }

    /// The futex part of a wait.
    fn sleep_until(
        &self,
        word: &AtomicU32,
        sleepers: &AtomicU32,
        ready: &impl Fn() -> bool,
        deadline: Option<Instant>,
    ) -> Result<(), FrameError> {
        loop {
            sleepers.fetch_add(1, Ordering::SeqCst);
            // Read after announcing ourselves: the peer changes the word, then looks for sleepers (both
            // sequentially consistent), so either we see its change here or it wakes us.
            let seen = word.load(Ordering::SeqCst);
            if !ready() {
                let mut slice = LIVENESS;
                if let Some(d) = deadline {
                    slice = slice.min(d.saturating_duration_since(Instant::now()));
                }
                futex::wait(word, seen, slice);
            }
            sleepers.fetch_sub(1, Ordering::SeqCst);
            if ready() {
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(FrameError::TimedOut);
            }
            if self.peer_gone() {
                return Err(FrameError::Closed);
            }
        }
    }

    /// A spin caught the peer after `took`: spin next time up to four times that (at least the minimum,
    /// at most the spin time), averaged with the previous budget so one slow wait does not swing it.
    fn caught(&self, adapt: &Adapt, took: Duration) {
        let cap = self.spin.as_nanos().min(u128::from(u32::MAX)) as u32;
        let want = (took.as_nanos().min(u128::from(u32::MAX / 4)) as u32 * 4).clamp(MIN_SPIN_NS, cap.max(MIN_SPIN_NS));
        let old = adapt.budget_ns.load(Ordering::Relaxed);
        adapt.budget_ns.store(old / 2 + want / 2, Ordering::Relaxed);
    }

    /// A spin of `spun` caught nothing and the wait ended in the futex after `took` in all. When that
    /// was within twice the spin, a longer spin would have caught it: double the budget (up to the spin
    /// time), so a function that takes a steady few microseconds is soon caught spinning. When it was
    /// longer, the peer was busy for long, idle, or not running (an oversubscribed machine, where
    /// spinning only takes the CPU from the peer and sleeping earns the quick wake-up the scheduler gives
    /// sleepers): shrink the budget by a quarter, down to the minimum. Never zero: a quick answer is
    /// still caught.
    fn slept(&self, adapt: &Adapt, spun: Duration, took: Duration) {
        let cap = self.spin.as_nanos().min(u128::from(u32::MAX)) as u32;
        let old = adapt.budget_ns.load(Ordering::Relaxed);
        let new = if took <= spun * 2 { old.saturating_mul(2).min(cap) } else { old - old / 4 };
        adapt.budget_ns.store(new.max(MIN_SPIN_NS), Ordering::Relaxed);
    }

    /// Moves the tail of the ring this end receives on to `next` (what was read is free again) and wakes
    /// a producer waiting for room.
    fn consumed(&self, next: u32) {
        let ring = self.seg.control(self.recv);
        ring.cons.tail.store(next, Ordering::SeqCst);
        if ring.cons.sleepers.load(Ordering::SeqCst) > 0 {
            futex::wake(&ring.cons.tail);
        }
    }

    /// The peer wrote something no producer of ours writes: the connection cannot be trusted.
    fn corrupt(&mut self, what: String) -> FrameError {
        self.partial = Vec::new();
        self.in_frame = false;
        self.skipping = false;
        corrupt_ring(what)
    }

    /// Sends one chunk of a frame as is, `more` saying whether chunks follow: for tests that play a
    /// peer which stops half-way through a frame. Not for normal use (see [`Transport::send`]).
    #[doc(hidden)]
    pub fn send_chunk(&mut self, chunk: &[u8], more: bool) -> Result<(), FrameError> {
        let n = chunk.len().min(self.seg.capacity - RECORD_HEADER);
        self.put(&chunk[..n], more, None)
    }

    /// Appends one record (a chunk of a frame) to the ring this end sends on, waiting for room.
    fn put(&self, chunk: &[u8], more: bool, deadline: Option<Instant>) -> Result<(), FrameError> {
        let ring = self.seg.control(self.send);
        let cap = self.seg.capacity as u32;
        let need = (RECORD_HEADER + chunk.len().next_multiple_of(8)) as u32;
        debug_assert!(need <= cap);
        // This end is the ring's only producer (one sender per direction at a time): nobody else moves
        // `head`.
        let head = ring.prod.head.load(Ordering::Relaxed);
        // The free bytes with the consumer at `tail`; `None` when no consumer could be there (past the
        // head, or more than a ring behind it): the shared words were overwritten.
        let free = |tail: u32| cap.checked_sub(head.wrapping_sub(tail));
        // The tail only moves forward: room seen against an older tail is there.
        if free(self.seen_tail.load(Ordering::Relaxed)).is_none_or(|f| f < need) {
            // A corrupt tail ends the wait too, to be reported just below.
            let room = || free(ring.cons.tail.load(Ordering::Acquire)).is_none_or(|f| f >= need);
            self.wait_until(&ring.cons.tail, &ring.cons.sleepers, room, 0, deadline)?;
            let tail = ring.cons.tail.load(Ordering::Acquire);
            if free(tail).is_none() {
                return Err(corrupt_ring(format!("the consumer's tail {tail} with the producer's head {head}")));
            }
            self.seen_tail.store(tail, Ordering::Relaxed);
        }
        let mut header = [0u8; RECORD_HEADER];
        header[..4].copy_from_slice(&(chunk.len() as u32).to_le_bytes());
        header[4..].copy_from_slice(&u32::from(more).to_le_bytes());
        // SAFETY: we are the producer, and `need` bytes from `head` are free (the consumer's tail is at
        // most `cap - need` behind, checked just above); the header and the chunk fit in `need`, and in
        // the first branch between `pos` and the ring's end.
        unsafe {
            let pos = head as usize & (self.seg.capacity - 1);
            if pos + RECORD_HEADER + chunk.len() <= self.seg.capacity {
                // The usual case: the record does not reach the ring's end, one place to write.
                let at = self.seg.data(self.send).add(pos);
                std::ptr::copy_nonoverlapping(header.as_ptr(), at, RECORD_HEADER);
                std::ptr::copy_nonoverlapping(chunk.as_ptr(), at.add(RECORD_HEADER), chunk.len());
            } else {
                self.seg.ring_write(self.send, head, &header);
                self.seg.ring_write(self.send, head.wrapping_add(RECORD_HEADER as u32), chunk);
            }
        }
        ring.prod.head.store(head.wrapping_add(need), Ordering::SeqCst);
        if ring.prod.sleepers.load(Ordering::SeqCst) > 0 {
            futex::wake(&ring.prod.head);
        }
        Ok(())
    }
}

/// The error for a ring whose shared words no peer of ours would write.
fn corrupt_ring(what: String) -> FrameError {
    FrameError::Io(io::Error::new(io::ErrorKind::InvalidData, format!("shared-memory ring corrupt: {what}")))
}

impl Transport for ShmTransport {
    fn send(&mut self, frame: &[u8]) -> Result<(), FrameError> {
        let deadline = self.send_timeout.map(|t| Instant::now() + t);
        let max = self.seg.capacity - RECORD_HEADER;
        let mut off = 0;
        loop {
            let n = (frame.len() - off).min(max);
            let more = off + n < frame.len();
            self.put(&frame[off..off + n], more, deadline)?;
            off += n;
            if !more {
                return Ok(());
            }
        }
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<(), FrameError> {
        let ring = self.seg.control(self.recv);
        let cap = self.seg.capacity as u32;
        // The timeout applies to every chunk of the frame: a receive that times out part-way keeps the
        // chunks it took, and the next receive continues the same frame (never out of step).
        let deadline = self.timeout.map(|t| Instant::now() + t);
        loop {
            // This end is the ring's only consumer (one reader at a time): nobody else moves `tail`.
            let tail = ring.cons.tail.load(Ordering::Relaxed);
            let any = || ring.prod.head.load(Ordering::Acquire) != tail;
            self.wait_until(&ring.prod.head, &ring.prod.sleepers, any, 1, deadline)?;
            let avail = ring.prod.head.load(Ordering::Acquire).wrapping_sub(tail);
            if (avail as usize) < RECORD_HEADER || avail > cap {
                return Err(self.corrupt(format!("{avail} bytes announced in a ring of {cap}")));
            }
            let mut header = [0u8; RECORD_HEADER];
            // SAFETY: we are the consumer and at least a record header was published from `tail`.
            unsafe { self.seg.ring_read(self.recv, tail, header.as_mut_ptr(), RECORD_HEADER) };
            let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
            let more = u32::from_le_bytes(header[4..].try_into().expect("4 bytes")) != 0;
            // Checked before any arithmetic on it: padded, or added to the frame so far, a length near
            // `u32::MAX` would overflow a 32-bit server's `usize`. From here on it is at most `cap`.
            if len > avail - RECORD_HEADER as u32 {
                return Err(self.corrupt(format!("a record of {len} bytes where {avail} were announced")));
            }
            if len == 0 && more {
                // A chunk that is not a frame's last is as long as the ring allows: without this, a peer
                // could send empty chunks without end, a frame that neither grows nor ever completes.
                return Err(self.corrupt("an empty chunk announcing more".into()));
            }
            let len = len as usize;
            let need = RECORD_HEADER + len.next_multiple_of(8);
            if need > avail as usize {
                return Err(self.corrupt(format!("a record of {len} bytes where {avail} were announced")));
            }
            let next = tail.wrapping_add(need as u32);
            if self.skipping {
                // The rest of a frame refused as too large: taken off the ring unread.
                self.consumed(next);
                self.skipping = more;
                self.in_frame = more;
                continue;
            }
            let total = self.partial.len() + len;
            if total > self.max_frame as usize {
                // Taken off the ring, and its chunks still to come with it (by the next receives), so the
                // stream stays in step for whoever reads next.
                self.consumed(next);
                self.partial = Vec::new();
                self.skipping = more;
                self.in_frame = more;
                return Err(FrameError::TooLarge { len: total as u64, max: self.max_frame });
            }
            let at = self.partial.len();
            // Grows with the chunks actually received.
            self.partial.reserve(len);
            // SAFETY: we are the consumer, the record's `len` bytes were published (need <= avail), and
            // `reserve` made room for them after `at`.
            unsafe {
                self.seg.ring_read(
                    self.recv,
                    tail.wrapping_add(RECORD_HEADER as u32),
                    self.partial.as_mut_ptr().add(at),
                    len,
                );
                self.partial.set_len(at + len);
            }
            self.consumed(next);
            if !more {
                std::mem::swap(buf, &mut self.partial);
                self.partial.clear();
                self.in_frame = false;
                return Ok(());
            }
            self.in_frame = true;
        }
    }

    fn in_frame(&self) -> bool {
        self.in_frame
    }

    fn set_max_frame(&mut self, max: u32) {
        self.max_frame = max;
    }

    fn set_recv_timeout(&mut self, timeout: Option<Duration>) -> Result<(), FrameError> {
        self.timeout = timeout;
        Ok(())
    }

    fn set_send_timeout(&mut self, timeout: Option<Duration>) -> Result<(), FrameError> {
        self.send_timeout = timeout;
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// A client end and a server end over one small segment (rings of 4 KiB) in this process.
    fn pair() -> (ShmTransport, ShmTransport) {
        let seg = Arc::new(Segment::create(4096).unwrap());
        let (a, b) = UnixStream::pair().unwrap();
        let watch = Watch::start(a.try_clone().unwrap(), seg.clone(), None).unwrap();
        let client = ShmTransport::client(seg.clone(), a, watch, Duration::from_micros(50));
        let server = ShmTransport::server(seg, b, Duration::from_micros(50));
        (client, server)
    }

    #[test]
    fn frames_of_every_size_cross_the_ring_whole_and_in_order() {
        let (mut client, mut server) = pair();
        // Sizes that wrap the 4 KiB ring at every offset, fill it exactly, and exceed it (chunked).
        let sizes: Vec<usize> = (0..300).map(|i| (i * 37) % 5000).chain([4088, 4096, 10_000, 0, 1]).collect();
        let frames: Vec<Vec<u8>> =
            sizes.iter().enumerate().map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect()).collect();
        let sent = frames.clone();
        let producer = std::thread::spawn(move || {
            for f in &sent {
                client.send(f).unwrap();
            }
            client
        });
        let mut buf = Vec::new();
        for f in &frames {
            server.recv(&mut buf).unwrap();
            assert_eq!(&buf, f);
        }
        drop(producer.join().unwrap());
    }

    #[test]
    fn a_sender_queues_frames_without_waiting_for_each_to_be_read() {
        let (mut client, mut server) = pair();
        // Ten small frames fit in the ring together: sent before any is read, with no reader running.
        for i in 0..10u8 {
            client.send(&[i; 100]).unwrap();
        }
        let mut buf = Vec::new();
        for i in 0..10u8 {
            server.recv(&mut buf).unwrap();
            assert_eq!(buf, [i; 100]);
        }
    }

    #[test]
    fn a_corrupt_ring_is_an_error_not_a_read_out_of_bounds() {
        let (mut client, mut server) = pair();
        client.send(&[1; 16]).unwrap();
        // A record header announcing more than was published.
        let seg = server.seg.clone();
        let ring = seg.control(Direction::ToServer);
        let tail = ring.cons.tail.load(Ordering::Relaxed);
        // SAFETY: test only: nobody else uses the ring now; 8 bytes at the tail are inside it.
        unsafe { seg.ring_write(Direction::ToServer, tail, &[0xff, 0xff, 0, 0, 0, 0, 0, 0]) };
        let mut buf = Vec::new();
        match server.recv(&mut buf) {
            Err(FrameError::Io(e)) => assert!(e.to_string().contains("ring corrupt"), "{e}"),
            other => panic!("{other:?}"),
        }
        // A head far past the tail.
        ring.prod.head.store(tail.wrapping_add(1 << 20), Ordering::SeqCst);
        assert!(matches!(server.recv(&mut buf), Err(FrameError::Io(_))));
    }

    #[test]
    fn a_tail_the_consumer_could_not_have_reached_is_an_error_for_the_producer() {
        let (mut client, server) = pair();
        // Four records of 1008 bytes leave 64 of the 4096: the next one makes the producer read the tail.
        for _ in 0..4 {
            client.send(&[0; 1000]).unwrap();
        }
        let ring = server.seg.control(Direction::ToServer);
        let head = ring.prod.head.load(Ordering::SeqCst);
        for tail in [head.wrapping_add(8), head.wrapping_add(1 << 20), head.wrapping_sub(4096 + 8)] {
            // A consumer's tail past the producer's head, or more than a ring behind it.
            ring.cons.tail.store(tail, Ordering::SeqCst);
            match client.send(&[0; 1000]) {
                Err(FrameError::Io(e)) => assert!(e.to_string().contains("ring corrupt"), "{e}"),
                other => panic!("tail {tail} with head {head}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_record_longer_than_what_was_announced_is_an_error_whatever_its_length() {
        // Lengths whose padding or sum with the frame so far overflows a 32-bit server's usize.
        for len in [u32::MAX, u32::MAX - 6, u32::MAX - 7, 1 << 31, 4096] {
            let (mut client, mut server) = pair();
            client.send_chunk(&[1; 16], true).unwrap();
            let seg = server.seg.clone();
            let ring = seg.control(Direction::ToServer);
            let head = ring.prod.head.load(Ordering::SeqCst);
            let mut header = [0u8; RECORD_HEADER];
            header[..4].copy_from_slice(&len.to_le_bytes());
            // SAFETY: test only: the producer is idle and 8 bytes at its head are free in the 4 KiB ring.
            unsafe { seg.ring_write(Direction::ToServer, head, &header) };
            ring.prod.head.store(head.wrapping_add(RECORD_HEADER as u32), Ordering::SeqCst);
            let mut buf = Vec::new();
            match server.recv(&mut buf) {
                Err(FrameError::Io(e)) => assert!(e.to_string().contains("ring corrupt"), "{e}"),
                other => panic!("a record of {len} bytes: {other:?}"),
            }
        }
    }

    #[test]
    fn an_empty_chunk_announcing_more_is_an_error_not_a_frame_without_end() {
        // No producer of ours sends one (a chunk that is not the last is as long as the ring allows); a
        // peer sending them without end would keep a receiver busy forever, deadline or not.
        let (mut client, mut server) = pair();
        client.send_chunk(&[], true).unwrap();
        // Only so that the receive returns before the fix (it waits for the next chunk).
        server.set_recv_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = Vec::new();
        match server.recv(&mut buf) {
            Err(FrameError::Io(e)) => assert!(e.to_string().contains("ring corrupt"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_frame_refused_as_too_large_is_skipped_whole() {
        let (mut client, mut server) = pair();
        server.set_max_frame(100);
        // Four chunks in a 4 KiB ring, then a small frame.
        let producer = std::thread::spawn(move || {
            client.send(&vec![9; 3 * 4096]).unwrap();
            client.send(&[7; 5]).unwrap();
            client
        });
        let mut buf = Vec::new();
        assert!(matches!(server.recv(&mut buf), Err(FrameError::TooLarge { .. })));
        server.recv(&mut buf).unwrap();
        assert_eq!(buf, [7; 5]);
        drop(producer.join().unwrap());
    }

    #[test]
    fn a_spin_longer_than_the_deadline_ends_at_the_deadline() {
        let seg = Arc::new(Segment::create(4096).unwrap());
        let (a, b) = UnixStream::pair().unwrap();
        let watch = Watch::start(a.try_clone().unwrap(), seg.clone(), None).unwrap();
        let _client = ShmTransport::client(seg.clone(), a, watch, Duration::ZERO);
        // A spin time far beyond the receive's deadline, and a peer seen running (on a CPU not told),
        // so nothing but the deadline can end the spin early.
        let mut server = ShmTransport::server(seg.clone(), b, Duration::from_secs(3600));
        seg.control(Direction::ToServer).prod.cpu.store(cpu::UNKNOWN, Ordering::SeqCst);
        server.set_recv_timeout(Some(Duration::from_millis(10))).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = tx.send(server.recv(&mut buf).map(|()| buf));
        });
        // A watchdog, not a measure: the receive ends soon after its 10 ms, or spins for an hour.
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Err(FrameError::TimedOut)) => {}
            Ok(other) => panic!("{other:?}"),
            Err(_) => panic!("the receive still spins a minute past its deadline"),
        }
    }
}
