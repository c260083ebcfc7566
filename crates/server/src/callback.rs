//! Callbacks: C function pointers (libffi closures) that, when the library calls them, forward the
//! call to the client and return what the client's code returned.

use std::ffi::c_void;

use bitbridge_proto::{Block, CType, CallData, Loc, Reloc, Reply, Request, Signature, Target};
use libffi::middle::{Cif, Closure};

use crate::host::Host;
use crate::memory;

/// What the closure needs when the library calls it.
pub(crate) struct Ctx {
    /// Runs of the trampoline in progress: a dropped callback is freed only when none is left.
    active: std::sync::atomic::AtomicUsize,
    cb: u32,
    sig: Signature,
    target: Target,
    /// The host that made the closure; it outlives the closure (it owns it).
    host: *const Host,
    arg_sizes: Vec<u64>,
    ret_size: usize,
}

/// A live callback: the closure and its context, freed together.
pub(crate) struct CallbackSlot {
    closure: Option<Closure<'static>>,
    ctx: *mut Ctx,
    pub(crate) address: u64,
}

// SAFETY: the closure's trampoline and the context are immutable after creation and freed only when
// the slot is dropped (under the host's mutex, after DropCallback); the library may call the closure from
// any thread, which the context supports (it only reads, and reaches the host through `&`).
unsafe impl Send for CallbackSlot {}

impl CallbackSlot {
    /// Whether the library is inside this callback right now (on any thread).
    pub(crate) fn in_use(&self) -> bool {
        // SAFETY: ctx lives until the slot is dropped.
        unsafe { &*self.ctx }.active.load(std::sync::atomic::Ordering::SeqCst) > 0
    }
}

impl Drop for CallbackSlot {
    fn drop(&mut self) {
        drop(self.closure.take());
        // SAFETY: ctx came from Box::into_raw in `make` and the closure referring to it is gone.
        drop(unsafe { Box::from_raw(self.ctx) });
    }
}

/// Makes the closure for callback `cb` of signature `sig`, prepared as `cif`.
pub(crate) fn make(
    host: &Host,
    cb: u32,
    sig: Signature,
    cif: Cif,
    arg_sizes: Vec<u64>,
    ret_size: usize,
) -> CallbackSlot {
    let ctx = Box::into_raw(Box::new(Ctx {
        active: std::sync::atomic::AtomicUsize::new(0),
        cb,
        sig,
        target: host.target(),
        host,
        arg_sizes,
        ret_size,
    }));
    // SAFETY: ctx is a fresh, never-freed-until-drop allocation; the reference lives as long as the slot,
    // which drops the closure before freeing it.
    let closure = Closure::new(cif, trampoline, unsafe { &*ctx });
    let address = *closure.code_ptr() as usize as u64;
    CallbackSlot { closure: Some(closure), ctx, address }
}

/// Called by libffi when the library calls the closure.
unsafe extern "C" fn trampoline(cif: &libffi::low::ffi_cif, result: &mut u8, args: *const *const c_void, ctx: &Ctx) {
    use std::sync::atomic::Ordering::SeqCst;
    ctx.active.fetch_add(1, SeqCst);
    // SAFETY: forwarded: the same arguments libffi gave us.
    unsafe { run(cif, result, args, ctx) };
    ctx.active.fetch_sub(1, SeqCst);
}

/// The body of the trampoline.
///
/// # Safety
///
/// As for libffi closure callbacks: `args` holds one pointer per parameter of `ctx.sig`, `result` a
/// buffer for the return value.
unsafe fn run(_cif: &libffi::low::ffi_cif, result: &mut u8, args: *const *const c_void, ctx: &Ctx) {
    let ptr = std::mem::size_of::<usize>();
    let (offsets, total) = bitbridge_proto::msg::arg_slots(ctx.arg_sizes.iter().copied());
    let mut call = CallData { args: vec![0u8; total as usize], ..Default::default() };
    // Where each copied-back block goes after the client answers.
    let mut back: Vec<(u64, u64)> = Vec::new();
    for (i, p) in ctx.sig.params.iter().enumerate() {
        let size = ctx.arg_sizes[i] as usize;
        let start = offsets[i] as usize;
        // SAFETY: libffi passes one pointer per parameter, each to a value of the parameter's type,
        // whose size is arg_sizes[i] on this target.
        unsafe { std::ptr::copy_nonoverlapping((*args.add(i)).cast::<u8>(), call.args.as_mut_ptr().add(start), size) };
        let pointee = match &p.ty {
            CType::Pointer(to) if **to != CType::Void => Some(ctx.target.layout(to).map(|l| l.size).unwrap_or(0)),
            CType::CStr => Some(0),
            _ => None,
        };
        let Some(len) = pointee else { continue };
        let mut a = [0u8; 8];
        a[..ptr].copy_from_slice(&call.args[start..start + ptr]);
        let addr = u64::from_le_bytes(a);
        if addr == 0 {
            continue;
        }
        // Read through the checked copy: a bad pointer from the library is an error, not a crash here.
        let data = if p.ty == CType::CStr { memory::read_string(addr, 1, u64::MAX) } else { memory::read(addr, len) };
        let Ok(data) = data else { continue };
        let copy_back = p.dir != bitbridge_proto::Direction::In && p.ty != CType::CStr;
        if copy_back {
            back.push((addr, data.len() as u64));
        }
        call.relocs.push(Reloc { at: Loc::Arg(i as u32), offset: 0, block: call.blocks.len() as u32 });
        call.blocks.push(Block { len: data.len() as u64, data, align: 1, copy_back, arena: None, region: 0 });
    }
    // SAFETY: the host owns this closure and outlives it.
    let host = unsafe { &*ctx.host };
    let reply = host.call_client(Request::Callback { cb: ctx.cb, call });
    let ret: *mut u8 = result;
    // Integral results narrower than a register are returned widened to a full ffi_arg (libffi's rule).
    let width = ctx.ret_size.max(if ctx.sig.ret.is_integer() { ptr } else { 0 });
    // SAFETY: libffi's result buffer holds at least the return type, and at least an ffi_arg for
    // integral types.
    unsafe { std::ptr::write_bytes(ret, 0, width) };
    if let Ok(Reply::Returned(r)) = reply.as_ref().map_err(|_| ()).and_then(|r| match r {
        Reply::Returned(r) if r.value.len() == ctx.ret_size => Ok(Reply::Returned(r.clone())),
        _ => Err(()),
    }) {
        let n = ctx.ret_size;
        // SAFETY: n is at most the return type's size, which the buffer holds.
        unsafe { std::ptr::copy_nonoverlapping(r.value.as_ptr(), ret, n) };
        let signed = matches!(
            ctx.sig.ret,
            CType::Char
                | CType::SChar
                | CType::Short
                | CType::Int
                | CType::Long
                | CType::I8
                | CType::I16
                | CType::I32
                | CType::SSizeT
        ) || (ctx.sig.ret == CType::WChar && ctx.target.wchar_signed());
        if signed && n > 0 && n < width && r.value[n - 1] & 0x80 != 0 {
            // SAFETY: the buffer holds `width` bytes (above).
            unsafe { std::ptr::write_bytes(ret.add(n), 0xff, width - n) };
        }
        for ((addr, len), bytes) in back.iter().zip(&r.blocks) {
            if bytes.len() as u64 == *len {
                let _ = memory::write(*addr, bytes);
            }
        }
    }
    // On an error (the client's callback failed, or the client went away) the library gets zero: the
    // client reports the failure to its own caller.
}
