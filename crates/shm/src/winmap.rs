//! A file mapping for the Windows build (a Windows server under Wine, mapping the client's memfd):
//! `CreateFileMappingW` and `MapViewOfFile` over the whole file, with the interface of
//! `memmap2::MmapRaw` that the rest of the crate uses. memmap2's own Windows mapping asks the file for
//! its metadata and duplicates its handle, which Wine refuses for a descriptor opened through
//! `/proc/<pid>/fd` ("invalid handle"); these two calls are all a shared mapping needs.

use std::fs::File;
use std::io;
use std::os::windows::io::AsRawHandle;

use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, MapViewOfFile, UnmapViewOfFile, VirtualQuery, FILE_MAP_ALL_ACCESS, MEMORY_BASIC_INFORMATION,
    MEMORY_MAPPED_VIEW_ADDRESS, PAGE_READWRITE,
};

/// A read-write view of a whole file, shared with every other mapping of it.
#[derive(Debug)]
pub(crate) struct MmapRaw {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the view is plain memory owned by this value; what is shared through it is the business of
// the types that hold it (which use atomics and the protocol's turns).
unsafe impl Send for MmapRaw {}
// SAFETY: as above.
unsafe impl Sync for MmapRaw {}

impl MmapRaw {
    /// Maps all of `file`; the view's length is the file's size rounded up to pages (its region size).
    pub(crate) fn map_raw(file: &File) -> io::Result<MmapRaw> {
        // SAFETY: `file` is an open handle for the call's duration; a null name and security make an
        // anonymous mapping object, closed below once the view holds the section.
        let mapping = unsafe {
            CreateFileMappingW(file.as_raw_handle() as HANDLE, std::ptr::null(), PAGE_READWRITE, 0, 0, std::ptr::null())
        };
        if mapping.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `mapping` is the handle just created; a zero length maps the whole section.
        let view = unsafe { MapViewOfFile(mapping, FILE_MAP_ALL_ACCESS, 0, 0, 0) };
        // SAFETY: the view keeps the section alive; this handle is ours to close.
        unsafe { CloseHandle(mapping) };
        if view.Value.is_null() {
            return Err(io::Error::last_os_error());
        }
        let mut info: MEMORY_BASIC_INFORMATION = unsafe_zeroed();
        // SAFETY: VirtualQuery writes at most size_of::<MEMORY_BASIC_INFORMATION>() bytes into `info`.
        let n = unsafe { VirtualQuery(view.Value, &mut info, std::mem::size_of::<MEMORY_BASIC_INFORMATION>()) };
        if n == 0 {
            let e = io::Error::last_os_error();
            // SAFETY: `view` was returned by MapViewOfFile and is unmapped once.
            unsafe { UnmapViewOfFile(view) };
            return Err(e);
        }
        Ok(MmapRaw { ptr: view.Value.cast(), len: info.RegionSize })
    }

    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    pub(crate) fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

fn unsafe_zeroed() -> MEMORY_BASIC_INFORMATION {
    // SAFETY: MEMORY_BASIC_INFORMATION is plain data (pointers and integers) for which all zeros is valid.
    unsafe { std::mem::zeroed() }
}

impl Drop for MmapRaw {
    fn drop(&mut self) {
        // SAFETY: `ptr` is the start of a view this value mapped, unmapped only here.
        unsafe { UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS { Value: self.ptr.cast() }) };
    }
}
