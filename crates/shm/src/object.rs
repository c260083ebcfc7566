//! Shared objects: a mapping (named, anonymous or file-backed) with a header holding a lock that works
//! between 32- and 64-bit processes, a type description, and the data.
//!
//! Layout (the same on i686 and x86_64, asserted at compile time):
//! `[ObjHeader: 64 B][type description: up to 4032 B][data: from 4096]`.

use std::fs::OpenOptions;
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use memmap2::MmapRaw;
use rustix::thread::futex;

const MAGIC: u64 = u64::from_le_bytes(*b"BBOBJv01");
/// Where the data starts.
pub const DATA_OFFSET: u64 = 4096;
const TYPE_OFFSET: usize = 64;
const TYPE_MAX: usize = DATA_OFFSET as usize - TYPE_OFFSET;

/// The header at the start of every shared object.
#[repr(C, align(64))]
struct ObjHeader {
    /// Written last when the object is created: a reader that sees it sees the rest.
    magic: AtomicU64,
    data_len: u64,
    type_len: u32,
    _reserved: u32,
    lock: RawLock,
}

/// A mutex made of plain 32-bit words, usable by any process that maps it, whatever its bitness: no
/// glibc `pthread_mutex_t` (40 bytes on x86_64, 24 on i686), a futex without `FUTEX_PRIVATE_FLAG`.
#[repr(C)]
struct RawLock {
    /// 0 unlocked, 1 locked, 2 locked with waiters (Drepper, "Futexes are tricky", mutex 2).
    state: AtomicU32,
    /// The owning thread's id (`gettid`), 0 when free.
    owner: AtomicU32,
    /// How many times the owner holds it (recursive locks).
    count: AtomicU32,
    /// 0 plain, 1 recursive.
    kind: AtomicU32,
}

const _: () = {
    assert!(size_of::<ObjHeader>() == 64);
    assert!(offset_of!(ObjHeader, data_len) == 8);
    assert!(offset_of!(ObjHeader, type_len) == 16);
    assert!(offset_of!(ObjHeader, lock) == 24);
    assert!(size_of::<RawLock>() == 16);
};

/// Whether a lock may be taken again by the thread that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// Taking it twice from one thread deadlocks, as with a plain mutex (`multiprocessing.Lock`).
    Plain,
    /// The holder may take it again; it is released when released as often (`multiprocessing.RLock`).
    Recursive,
}

/// Where a shared object lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A name in `/dev/shm` (`bitbridge-<name>`), which other processes open by name.
    Named(String),
    /// A memfd: no name; shared with a server by passing its descriptor.
    Anonymous,
    /// A file anywhere, shared with any program that maps it.
    File(PathBuf),
}

/// A mapped shared object.
#[derive(Debug)]
pub struct SharedMem {
    map: MmapRaw,
    fd: OwnedFd,
    path: Option<PathBuf>,
    owner: bool,
}

fn named_path(name: &str) -> io::Result<PathBuf> {
    if name.is_empty() || name.contains('/') || name.len() > 200 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?} is not a valid shared object name")));
    }
    Ok(Path::new("/dev/shm").join(format!("bitbridge-{name}")))
}

impl SharedMem {
    /// Creates an object of `data_len` bytes whose header records `type_desc` and a lock of `kind`.
    /// A named object or file must not exist yet; the file is created with mode 0600. The creator of a
    /// named object removes the name when it drops it.
    pub fn create(backing: &Backing, data_len: u64, type_desc: &[u8], kind: LockKind) -> io::Result<SharedMem> {
        if type_desc.len() > TYPE_MAX {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the type description is too long"));
        }
        let (fd, path): (OwnedFd, Option<PathBuf>) = match backing {
            Backing::Anonymous => {
                (rustix::fs::memfd_create(c"bitbridge-object", rustix::fs::MemfdFlags::CLOEXEC)?, None)
            }
            Backing::Named(n) => {
                let p = named_path(n)?;
                (OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&p)?.into(), Some(p))
            }
            Backing::File(p) => (
                OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(p)?.into(),
                Some(p.clone()),
            ),
        };
        let total = DATA_OFFSET
            .checked_add(data_len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "too large"))?;
        rustix::fs::ftruncate(&fd, total)?;
        let map = MmapRaw::map_raw(&std::fs::File::from(fd.try_clone()?))?;
        let mem = SharedMem { map, fd, path, owner: matches!(backing, Backing::Named(_)) };
        let h = mem.header();
        // SAFETY: nobody else knows the object yet (the name was just created exclusively, the memfd
        // is ours); the non-atomic header fields are written once, before `magic` publishes them.
        unsafe {
            let raw = mem.map.as_mut_ptr().cast::<ObjHeader>();
            std::ptr::addr_of_mut!((*raw).data_len).write(data_len);
            std::ptr::addr_of_mut!((*raw).type_len).write(type_desc.len() as u32);
            std::ptr::copy_nonoverlapping(type_desc.as_ptr(), mem.map.as_mut_ptr().add(TYPE_OFFSET), type_desc.len());
        }
        h.lock.kind.store(u32::from(kind == LockKind::Recursive), Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok(mem)
    }

    /// Opens an existing named object or file.
    pub fn open(backing: &Backing) -> io::Result<SharedMem> {
        let path = match backing {
            Backing::Named(n) => named_path(n)?,
            Backing::File(p) => p.clone(),
            Backing::Anonymous => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "an anonymous object has no name to open"))
            }
        };
        let file = OpenOptions::new().read(true).write(true).custom_flags(libc_o_nonblock()).open(&path)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", path.display()),
            ));
        }
        Self::from_fd(file.into())
    }

    /// Maps an object from its descriptor (a memfd received from another process), checking the header.
    pub fn from_fd(fd: OwnedFd) -> io::Result<SharedMem> {
        let map = MmapRaw::map_raw(&std::fs::File::from(fd.try_clone()?))?;
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("not a bitbridge shared object: {m}"));
        if (map.len() as u64) < DATA_OFFSET {
            return Err(bad("too small"));
        }
        let mem = SharedMem { map, fd, path: None, owner: false };
        let h = mem.header();
        if h.magic.load(Ordering::Acquire) != MAGIC {
            return Err(bad("wrong magic"));
        }
        // SAFETY: published before `magic` (acquired above) and never written again.
        let (data_len, type_len) = unsafe {
            let raw = mem.map.as_ptr().cast::<ObjHeader>();
            (std::ptr::addr_of!((*raw).data_len).read(), std::ptr::addr_of!((*raw).type_len).read())
        };
        if DATA_OFFSET.checked_add(data_len) != Some(mem.map.len() as u64) || type_len as usize > TYPE_MAX {
            return Err(bad("sizes do not match the mapping"));
        }
        Ok(mem)
    }

    fn header(&self) -> &ObjHeader {
        // SAFETY: the mapping is at least DATA_OFFSET bytes (created so, or checked) and page-aligned;
        // the fields used through `&` are atomics or written once before publication.
        unsafe { &*self.map.as_ptr().cast::<ObjHeader>() }
    }

    /// The type description recorded at creation.
    pub fn type_desc(&self) -> Vec<u8> {
        let len = self.header().type_len as usize;
        let mut out = vec![0u8; len];
        // SAFETY: type_len <= TYPE_MAX was checked; the description is written once, before publication.
        unsafe { std::ptr::copy_nonoverlapping(self.map.as_ptr().add(TYPE_OFFSET), out.as_mut_ptr(), len) };
        out
    }

    /// The data's length in bytes.
    pub fn data_len(&self) -> u64 {
        self.map.len() as u64 - DATA_OFFSET
    }

    /// The descriptor (to share the object with a server).
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The whole mapping's size (header included), as a server maps it.
    pub fn mapped_len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Copies `bytes` into the data at `offset`, through raw pointers (other processes may access the
    /// same bytes at any time). Panics when out of range.
    pub fn write(&self, offset: u64, bytes: &[u8]) {
        let o = self.range(offset, bytes.len() as u64);
        // SAFETY: the range is inside the data (checked); a raw byte copy, sound whatever others do.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.map.as_mut_ptr().add(o), bytes.len()) }
    }

    /// Copies `len` bytes of the data at `offset`. Panics when out of range.
    pub fn read(&self, offset: u64, len: u64) -> Vec<u8> {
        let o = self.range(offset, len);
        let mut out = vec![0u8; len as usize];
        // SAFETY: as in write.
        unsafe { std::ptr::copy_nonoverlapping(self.map.as_ptr().add(o), out.as_mut_ptr(), len as usize) };
        out
    }

    fn range(&self, offset: u64, len: u64) -> usize {
        let end = offset.checked_add(len).expect("range overflows");
        assert!(end <= self.data_len(), "{len} bytes at {offset} beyond {} bytes of data", self.data_len());
        (DATA_OFFSET + offset) as usize
    }

    /// Takes the object's lock, waiting as long as it takes.
    pub fn lock(&self) -> io::Result<LockGuard<'_>> {
        let l = &self.header().lock;
        let me = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        if l.kind.load(Ordering::Relaxed) == 1 && l.owner.load(Ordering::Relaxed) == me {
            l.count.fetch_add(1, Ordering::Relaxed);
            return Ok(LockGuard { lock: l, _not_send: std::marker::PhantomData });
        }
        if l.state.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
            // Mark contended; sleep until the holder releases (not FUTEX_PRIVATE: other processes).
            while l.state.swap(2, Ordering::Acquire) != 0 {
                match futex::wait(&l.state, futex::Flags::empty(), 2, None) {
                    Ok(()) | Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        l.owner.store(me, Ordering::Relaxed);
        l.count.store(1, Ordering::Relaxed);
        Ok(LockGuard { lock: l, _not_send: std::marker::PhantomData })
    }

    /// Takes the lock if it is free (or, recursive, already ours).
    pub fn try_lock(&self) -> Option<LockGuard<'_>> {
        let l = &self.header().lock;
        let me = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        if l.kind.load(Ordering::Relaxed) == 1 && l.owner.load(Ordering::Relaxed) == me {
            l.count.fetch_add(1, Ordering::Relaxed);
            return Some(LockGuard { lock: l, _not_send: std::marker::PhantomData });
        }
        l.state.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).ok()?;
        l.owner.store(me, Ordering::Relaxed);
        l.count.store(1, Ordering::Relaxed);
        Some(LockGuard { lock: l, _not_send: std::marker::PhantomData })
    }

    /// Takes the lock like [`SharedMem::lock`] but gives up at `deadline` (`None` if it passed first),
    /// and keeps it past the guard: release it with [`SharedMem::unlock`] on the same thread. For
    /// callers that cannot hold a guard across calls (Python's `acquire()`/`release()`).
    pub fn lock_until(&self, deadline: Option<std::time::Instant>) -> io::Result<bool> {
        if let Some(g) = self.try_lock() {
            std::mem::forget(g);
            return Ok(true);
        }
        // Contended: as in `lock`, from now on the lock is only taken by swapping in 2 ("locked, maybe
        // waiters"), so that our release wakes whoever still sleeps (taking it with a plain 0 -> 1 after
        // a wake-up would lose the other sleepers' wake-up).
        let l = &self.header().lock;
        loop {
            if l.state.swap(2, Ordering::Acquire) == 0 {
                let me = rustix::thread::gettid().as_raw_nonzero().get() as u32;
                l.owner.store(me, Ordering::Relaxed);
                l.count.store(1, Ordering::Relaxed);
                return Ok(true);
            }
            let wait = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(false),
                },
            };
            let ts = wait
                .map(|w| rustix::time::Timespec { tv_sec: w.as_secs() as i64, tv_nsec: i64::from(w.subsec_nanos()) });
            match futex::wait(&l.state, futex::Flags::empty(), 2, ts.as_ref()) {
                Ok(())
                | Err(rustix::io::Errno::AGAIN)
                | Err(rustix::io::Errno::INTR)
                | Err(rustix::io::Errno::TIMEDOUT) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Releases a lock taken with [`SharedMem::lock_until`]; an error if this thread does not hold it.
    pub fn unlock(&self) -> io::Result<()> {
        let l = &self.header().lock;
        let me = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        if l.owner.load(Ordering::Relaxed) != me || l.state.load(Ordering::Relaxed) == 0 {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "the lock is not held by this thread"));
        }
        drop(LockGuard { lock: l, _not_send: std::marker::PhantomData });
        Ok(())
    }

    /// The address of the data in this process (for views such as a Python buffer). Others may write
    /// the memory at any time: access it only through raw pointers or volatile-free byte copies.
    pub fn data_ptr(&self) -> *mut u8 {
        // SAFETY: DATA_OFFSET is inside the mapping (the mapping is DATA_OFFSET + data_len bytes).
        unsafe { self.map.as_mut_ptr().add(DATA_OFFSET as usize) }
    }

    /// The path of a named or file-backed object.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

impl Drop for SharedMem {
    fn drop(&mut self) {
        if let (true, Some(p)) = (self.owner, &self.path) {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// O_NONBLOCK, so opening a FIFO given as a file fails instead of blocking.
fn libc_o_nonblock() -> i32 {
    rustix::fs::OFlags::NONBLOCK.bits() as i32
}

/// Holds a shared object's lock; releases it when dropped, on the thread that took it (not `Send`,
/// like std's `MutexGuard`: a recursive lock is owned by a thread).
#[derive(Debug)]
pub struct LockGuard<'a> {
    lock: &'a RawLock,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl std::fmt::Debug for RawLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawLock(state {})", self.state.load(Ordering::Relaxed))
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let l = self.lock;
        if l.count.load(Ordering::Relaxed) > 1 {
            l.count.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        l.count.store(0, Ordering::Relaxed);
        l.owner.store(0, Ordering::Relaxed);
        if l.state.swap(0, Ordering::Release) == 2 {
            let _ = futex::wake(&l.state, futex::Flags::empty(), 1);
        }
    }
}
