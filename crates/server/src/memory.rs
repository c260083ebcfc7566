//! Server memory: blocks for one call, allocations that outlive calls, and reads of arbitrary
//! addresses that fail with an error instead of a crash where the kernel allows it.

use std::alloc::{self, Layout};
use std::collections::HashMap;

/// Memory allocated with the global allocator, freed on drop.
#[derive(Debug)]
pub(crate) struct Buffer {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: the buffer owns its memory exclusively; nothing about it is tied to a thread.
unsafe impl Send for Buffer {}

impl Buffer {
    /// `len` zeroed bytes aligned to `align`; `None` if the layout is invalid or memory is exhausted.
    pub(crate) fn zeroed(len: u64, align: u32) -> Option<Buffer> {
        let len = usize::try_from(len).ok()?;
        let layout = Layout::from_size_align(len.max(1), align as usize).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        (!ptr.is_null()).then_some(Buffer { ptr, layout })
    }

    pub(crate) fn addr(&self) -> u64 {
        self.ptr as usize as u64
    }

    /// The buffer's bytes (its requested length may be 0, the allocation is at least 1).
    pub(crate) fn bytes_mut(&mut self, len: usize) -> &mut [u8] {
        assert!(len <= self.layout.size());
        // SAFETY: ptr is valid for layout.size() bytes, which are initialised (zeroed at allocation),
        // and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, len) }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: ptr was allocated with exactly this layout and is freed once.
        unsafe { alloc::dealloc(self.ptr, self.layout) }
    }
}

/// Allocations made on the client's request, keyed by address, so a bad `free` is an error.
#[derive(Debug, Default)]
pub(crate) struct Heap {
    live: HashMap<u64, Buffer>,
}

impl Heap {
    pub(crate) fn alloc(&mut self, size: u64, align: u32) -> Option<u64> {
        let b = Buffer::zeroed(size, align)?;
        let addr = b.addr();
        self.live.insert(addr, b);
        Some(addr)
    }

    pub(crate) fn free(&mut self, addr: u64) -> bool {
        self.live.remove(&addr).is_some()
    }
}

/// Copies `len` bytes from address `addr` of this process. Uses `process_vm_readv` on itself, which
/// reports an unmapped address as `EFAULT` instead of crashing; falls back to a plain read where the
/// call is forbidden (seccomp in containers), where a bad address then ends the server.
pub(crate) fn read(addr: u64, len: u64) -> Result<Vec<u8>, String> {
    if len > bitbridge_proto::msg::MAX_BLOCK {
        return Err(format!(
            "{len} bytes are more than one reply can carry ({} at most)",
            bitbridge_proto::msg::MAX_BLOCK
        ));
    }
    let len = usize::try_from(len).map_err(|_| format!("{len} bytes do not fit this server's address space"))?;
    let start =
        usize::try_from(addr).map_err(|_| format!("address {addr:#x} is outside this server's address space"))?;
    if start.checked_add(len).is_none() {
        return Err(format!("{len} bytes at {addr:#x} wrap around the address space"));
    }
    let mut out = vec![0u8; len];
    match crate::sys::copy_own_memory(start as *const u8, out.as_mut_ptr(), len) {
        Ok(()) => Ok(out),
        Err(e) => Err(format!("cannot read {len} bytes at {addr:#x}: {e}")),
    }
}

/// Copies `bytes` to address `addr` of this process, with the same protection as [`read`].
pub(crate) fn write(addr: u64, bytes: &[u8]) -> Result<(), String> {
    let start =
        usize::try_from(addr).map_err(|_| format!("address {addr:#x} is outside this server's address space"))?;
    if start.checked_add(bytes.len()).is_none() {
        return Err(format!("{} bytes at {addr:#x} wrap around the address space", bytes.len()));
    }
    crate::sys::copy_to_own_memory(bytes.as_ptr(), start as *mut u8, bytes.len())
        .map_err(|e| format!("cannot write {} bytes at {addr:#x}: {e}", bytes.len()))
}

/// Reads a string of `unit`-byte characters up to its NUL (not included), at most `max` units.
pub(crate) fn read_string(addr: u64, unit: usize, max: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut at = addr;
    const CHUNK: u64 = 256;
    loop {
        // Never read across a page boundary in one go: the next page may be unmapped.
        let to_page = 4096 - (at % 4096);
        let n = (CHUNK.min(to_page) / unit as u64 * unit as u64).max(unit as u64);
        let chunk = read(at, n)?;
        for c in chunk.chunks_exact(unit) {
            if c.iter().all(|&b| b == 0) {
                return Ok(out);
            }
            out.extend_from_slice(c);
            if (out.len() / unit) as u64 >= max {
                return Ok(out);
            }
            if out.len() as u64 >= bitbridge_proto::msg::MAX_BLOCK {
                return Err(format!("no NUL within {} bytes at {addr:#x}", out.len()));
            }
        }
        at += n;
    }
}
