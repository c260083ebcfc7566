//! The host: loaded libraries, prepared functions, and the calls themselves.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{mpsc, Arc, Mutex, RwLock};

use bitbridge_proto::{
    CType, CallConv, CallData, ErrorKind, Frame, FrameError, Loc, RemoteError, Reply, Request, Returned, Signature,
    Target, Transport,
};
use libffi::middle::{Cif, CodePtr};

use crate::ffi::ffi_type;
use crate::memory::{self, Buffer, Heap};

use bitbridge_proto::msg::MAX_BLOCK;
use bitbridge_shm::Arena;

use crate::link::{Link, Next};

/// Loaded libraries and prepared functions, serving requests one at a time.
pub struct Host {
    target: Target,
    libs: Mutex<HashMap<u32, Arc<Loaded>>>,
    funcs: RwLock<HashMap<u32, Arc<Prepared>>>,
    heap: Mutex<Heap>,
    /// Shared regions: 0 is the bulk arena, others are buffers the client shares.
    regions: RwLock<HashMap<u32, Arc<Arena>>>,
    /// Prepared calls of variadic functions, per function and variadic argument types.
    variadic: Mutex<VariadicCache>,
    callbacks: Mutex<HashMap<u32, crate::callback::CallbackSlot>>,
    /// Dropped callbacks still running somewhere, freed when they are done.
    retired: Mutex<Vec<crate::callback::CallbackSlot>>,
    /// The connection, once serving: callbacks send requests on it.
    link: std::sync::OnceLock<Arc<Link>>,
    fd_source: Option<FdSource>,
    /// A custom server's service object, answering [`Request::Start`], [`Request::Invoke`] and
    /// [`Request::Get`].
    handler: Option<Arc<dyn Handler>>,
    /// Whether native requests (load, call, raw memory) are served: not by a service-only host.
    native: bool,
}

/// A custom server's service, as the host sees it: encoded options, arguments and results in, encoded
/// results or a raised error out. `bitbridge-service` implements it over a typed Rust object; the host
/// only routes requests to it.
pub trait Handler: Send + Sync {
    /// Creates (or replaces) the service object from its encoded constructor options.
    fn start(&self, options: &[u8]) -> Result<(), Raised>;
    /// Calls method `method` with encoded positional arguments; returns the encoded result.
    fn invoke(&self, method: &str, args: &[u8]) -> Result<Vec<u8>, Raised>;
    /// Reads property `name`; returns it encoded.
    fn get(&self, name: &str) -> Result<Vec<u8>, Raised>;
    /// Drops the service object (after any method in progress), so that its `Drop` runs even when
    /// worker threads still hold the host as the process ends. Called when serving ends.
    fn stop(&self) {}
}

/// An error a service raised: sent to the client as [`Reply::Raised`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raised {
    /// What kind of error (a type name, or one of bitbridge's `bitbridge::…` kinds).
    pub kind: String,
    /// The message, with its causes.
    pub message: String,
}

/// Prepared calls of variadic functions, keyed by function handle and variadic argument types.
type VariadicCache = HashMap<(u32, Vec<CType>), Arc<Prepared>>;

/// Where the host gets file descriptors the client sends (the arena's), read from the socket.
/// On Linux they come over the socket (`SCM_RIGHTS`); a Windows server under Wine opens the client's
/// descriptor by name (`Z:\\proc\\<client pid>\\fd\\<n>`).
pub type FdSource = Box<dyn Fn(&[u8; 4], u32) -> std::io::Result<std::fs::File> + Send + Sync>;

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("target", &self.target).finish_non_exhaustive()
    }
}

/// A block's memory during a call: allocated for it, or a range of the shared arena.
enum BlockMem {
    Owned(Buffer),
    Shared { ptr: *mut u8, len: usize },
}

impl BlockMem {
    fn addr(&self) -> u64 {
        match self {
            BlockMem::Owned(b) => b.addr(),
            BlockMem::Shared { ptr, .. } => *ptr as usize as u64,
        }
    }

    fn bytes_mut(&mut self, len: usize) -> &mut [u8] {
        match self {
            BlockMem::Owned(b) => b.bytes_mut(len),
            BlockMem::Shared { ptr, len: size } => {
                assert!(len <= *size);
                // SAFETY: ptr..ptr+size lies in the arena (checked when the block was set up), which is
                // mapped for the whole call; during the call only this host touches the block's range.
                unsafe { std::slice::from_raw_parts_mut(*ptr, len) }
            }
        }
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
struct Loaded {
    lib: libloading::Library,
    path: String,
}

struct Prepared {
    /// Keeps the library mapped while a call may still run, even if it is unloaded meanwhile.
    lib: Arc<Loaded>,
    cif: Cif,
    code: CodePtr,
    sig: Signature,
    arg_sizes: Vec<usize>,
    /// Where each argument starts in `CallData::args`, and the buffer's length.
    arg_offsets: Vec<usize>,
    args_len: usize,
    ret_size: usize,
}

/// How [`Host::call_flat`] answered.
pub(crate) enum FlatAnswer {
    /// Returned: the first `len` bytes of the value buffer, with `errno` and the last error.
    Plain { len: usize, errno: Option<i32>, last_error: Option<u32> },
    /// Answered as the general request.
    General(Result<Reply, RemoteError>),
}

thread_local! {
    /// Per thread, reused by every call: the 16-byte aligned argument slots and libffi's pointers to them.
    static SCRATCH: std::cell::RefCell<(Vec<u128>, Vec<*mut c_void>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prepared({} at {:p})", self.sig, self.code.as_ptr())
    }
}

// SAFETY: a Cif and a code pointer are plain data (libffi's type descriptions and an address). ffi_call
// only reads the cif, so calls on several threads may share one (libffi documents a prepared cif as
// reusable); whether the *function* tolerates concurrent calls is the user's opt-in (`workers`).
unsafe impl Send for Prepared {}
// SAFETY: as above: nothing in a Prepared is written after preparation.
unsafe impl Sync for Prepared {}

type Res<T> = Result<T, RemoteError>;

fn fail<T>(kind: ErrorKind, message: impl Into<String>) -> Res<T> {
    Err(RemoteError { kind, message: message.into() })
}

impl Host {
    /// A host for libraries of this process's own architecture.
    ///
    /// # Safety
    ///
    /// The host loads libraries (running their initialisers) and calls their functions with whatever
    /// signatures and memory the requests describe. Nothing can check that a signature matches the
    /// function, so a wrong one corrupts the process the host runs in. In the server binary that is the
    /// server process, which exists for that risk; in-process, the caller accepts it for its own process.
    pub unsafe fn new() -> Host {
        Host {
            target: Target::host().expect("bitbridge-server is built only for supported targets"),
            libs: Mutex::new(HashMap::new()),
            funcs: RwLock::new(HashMap::new()),
            heap: Mutex::new(Heap::default()),
            regions: RwLock::new(HashMap::new()),
            variadic: Mutex::new(HashMap::new()),
            callbacks: Mutex::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
            link: std::sync::OnceLock::new(),
            fd_source: None,
            handler: None,
            native: true,
        }
    }

    /// A host that serves only `handler`'s service and refuses every native request (loading libraries,
    /// calls, raw memory): safe, since it runs no code but the service's own. The client's in-process
    /// mode for custom servers uses it.
    pub fn service_only(handler: Arc<dyn Handler>) -> Host {
        // SAFETY: the host never loads a library or touches raw memory: `native` is false, so every such
        // request is refused before it is looked at.
        let mut host = unsafe { Host::new() };
        host.native = false;
        host.handler = Some(handler);
        host
    }

    /// Routes service requests ([`Request::Start`], [`Request::Invoke`], [`Request::Get`]) to `handler`:
    /// a custom server is the generic host plus its service.
    pub fn set_handler(&mut self, handler: Arc<dyn Handler>) {
        self.handler = Some(handler);
    }

    /// Lets the host receive file descriptors from the client (the bulk arena's), as the server binary
    /// does over its socket. Without one, [`Request::AttachArena`] is refused.
    pub fn set_fd_source(&mut self, source: FdSource) {
        self.fd_source = Some(source);
    }

    /// The target this host calls functions for.
    pub fn target(&self) -> Target {
        self.target
    }

    /// Answers one request. [`Request::Shutdown`] is answered like any other; the caller stops after.
    /// A panic while handling (a bug in bitbridge, never expected) becomes an error reply rather than
    /// a request that is never answered.
    pub fn handle(&self, request: Request) -> Result<Reply, RemoteError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle_inner(request))).unwrap_or_else(|p| {
            let what = panic_message(p.as_ref()).unwrap_or_default();
            fail(ErrorKind::BadArguments, format!("the server failed handling the request: {what}"))
        })
    }

    fn handle_inner(&self, request: Request) -> Result<Reply, RemoteError> {
        // A service's error is a reply like any other: the connection and the object stay usable.
        let raised =
            |r: Result<Reply, Raised>| r.or_else(|Raised { kind, message }| Ok(Reply::Raised { kind, message }));
        match request {
            Request::Start { options } => raised(self.service()?.start(&options).map(|()| Reply::Done)),
            Request::Invoke { method, args } => raised(self.service()?.invoke(&method, &args).map(Reply::Bytes)),
            Request::Get { name } => raised(self.service()?.get(&name).map(Reply::Bytes)),
            Request::Shutdown => Ok(Reply::Done),
            _ if !self.native => {
                fail(ErrorKind::NotServed, "this in-process host serves only its service: it loads no library")
            }
            Request::Load { lib, path } => self.load(lib, path),
            Request::Unload { lib } => {
                lock(&self.libs).remove(&lib).ok_or_else(|| unknown("library", lib))?;
                Ok(Reply::Done)
            }
            Request::Prepare { lib, func, symbol, sig } => self.prepare(lib, func, &symbol, sig),
            Request::Symbol { lib, symbol } => self.symbol(lib, &symbol).map(Reply::Address),
            Request::Call { func, call } => self.call(func, call).map(Reply::Returned),
            Request::Release { func } => {
                self.funcs
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&func)
                    .ok_or_else(|| unknown("function", func))?;
                Ok(Reply::Done)
            }
            Request::Alloc { size, align } => {
                if size == 0 || size > MAX_BLOCK || !align.is_power_of_two() || align > 4096 {
                    return fail(ErrorKind::BadArguments, format!("cannot allocate {size} bytes aligned to {align}"));
                }
                match lock(&self.heap).alloc(size, align) {
                    Some(a) => Ok(Reply::Address(a)),
                    None => fail(ErrorKind::OutOfMemory, format!("out of memory allocating {size} bytes")),
                }
            }
            Request::Free { addr } => match lock(&self.heap).free(addr) {
                true => Ok(Reply::Done),
                false => {
                    fail(ErrorKind::UnknownHandle, format!("{addr:#x} was not allocated by this server or was freed"))
                }
            },
            Request::Write { addr, bytes } => {
                memory::write(addr, &bytes).or_else(|e| fail(ErrorKind::BadArguments, e))?;
                Ok(Reply::Done)
            }
            Request::Read { addr, len } => {
                memory::read(addr, len).map(Reply::Bytes).or_else(|e| fail(ErrorKind::BadArguments, e))
            }
            Request::ReadString { addr, wide, max_len } => {
                let unit = if wide { self.wchar_size() } else { 1 };
                memory::read_string(addr, unit, max_len).map(Reply::Bytes).or_else(|e| fail(ErrorKind::BadArguments, e))
            }
            Request::AttachArena { size } => self.map_region(0, size, b"ARN1"),
            Request::MapShared { region: 0, .. } => fail(ErrorKind::BadArguments, "region 0 is the bulk arena"),
            Request::MapShared { region, size } => self.map_region(region, size, b"SHR1"),
            Request::UnmapShared { region } => {
                let gone = self.regions.write().unwrap_or_else(|e| e.into_inner()).remove(&region);
                gone.map(|_| Reply::Done).ok_or_else(|| unknown("shared region", region))
            }
            Request::MakeCallback { cb, sig } => self.make_callback(cb, sig),
            Request::DropCallback { cb } => {
                let slot = lock(&self.callbacks).remove(&cb).ok_or_else(|| unknown("callback", cb))?;
                // Freed once no run of it is in progress (the library may be inside it on another thread,
                // or this very drop may come from inside it).
                let mut retired = lock(&self.retired);
                retired.push(slot);
                retired.retain(|s| s.in_use());
                Ok(Reply::Done)
            }
            _ => fail(ErrorKind::Protocol, "request not understood by this server"),
        }
    }

    /// The service that answers service requests, or the error saying this host has none.
    fn service(&self) -> Result<&Arc<dyn Handler>, RemoteError> {
        self.handler.as_ref().ok_or_else(|| RemoteError {
            kind: ErrorKind::NotServed,
            message: "this is the generic bitbridge-server: it hosts no service (start the custom server program \
                      that serves one)"
                .into(),
        })
    }

    /// Maps a region whose file descriptor the client sends over the socket with `tag`.
    fn map_region(&self, region: u32, size: u64, tag: &[u8; 4]) -> Res<Reply> {
        let source = self.fd_source.as_ref().ok_or_else(|| RemoteError {
            kind: ErrorKind::BadArguments,
            message: "this connection cannot carry shared memory".into(),
        })?;
        let mem = source(tag, region)
            .and_then(|file| crate::sys::open_arena(file, size))
            .or_else(|e| fail(ErrorKind::BadArguments, format!("cannot map shared region {region}: {e}")))?;
        self.regions.write().unwrap_or_else(|e| e.into_inner()).insert(region, Arc::new(mem));
        Ok(Reply::Done)
    }

    fn wchar_size(&self) -> usize {
        self.target.layout(&CType::WChar).map(|l| l.size as usize).unwrap_or(4)
    }

    fn load(&self, id: u32, path: String) -> Res<Reply> {
        if lock(&self.libs).contains_key(&id) {
            return fail(ErrorKind::BadArguments, format!("library handle {id} is in use"));
        }
        // SAFETY: loading runs the library's initialisers; hosting untrusted-to-be-correct libraries is
        // this process's job, and the contract of Host::new covers it.
        let lib = unsafe { crate::sys::load_library(&path) };
        match lib {
            Ok(lib) => {
                lock(&self.libs).insert(id, Arc::new(Loaded { lib, path }));
                Ok(Reply::Done)
            }
            Err(e) => fail(ErrorKind::LoadFailed, source_chain(&e)),
        }
    }

    fn symbol(&self, lib: u32, symbol: &str) -> Res<u64> {
        let loaded = lock(&self.libs).get(&lib).cloned().ok_or_else(|| unknown("library", lib))?;
        Self::address_of(&loaded, symbol)
    }

    /// The names a 32-bit Windows DLL may export an undecorated C name under, tried when the plain name
    /// is not exported: `name@N` and `_name@N` for stdcall and fastcall (`@name@N`), N being the bytes
    /// of arguments on the stack (each rounded up to 4), as MinGW and MSVC decorate them; `_name` for
    /// cdecl. Nothing on other targets, or for a name that is decorated already.
    fn decorated(&self, symbol: &str, sig: &Signature) -> Vec<String> {
        if self.target != bitbridge_proto::Target::WIN32 || symbol.contains('@') {
            return Vec::new();
        }
        let bytes: Option<u64> =
            sig.params.iter().map(|p| self.target.layout(&p.ty).ok().map(|l| l.size.div_ceil(4) * 4)).sum();
        match (sig.conv, bytes) {
            (CallConv::Stdcall, Some(n)) => vec![format!("{symbol}@{n}"), format!("_{symbol}@{n}")],
            (CallConv::Fastcall, Some(n)) => vec![format!("@{symbol}@{n}")],
            _ => vec![format!("_{symbol}")],
        }
    }

    /// A symbol that is not found on Win32 may be exported under another convention's decoration
    /// (`f@8` for a function declared cdecl): the error then says how it is exported.
    fn convention_hint(&self, loaded: &Loaded, symbol: &str, sig: &Signature, mut e: RemoteError) -> RemoteError {
        for conv in [CallConv::Stdcall, CallConv::Fastcall] {
            if conv == sig.conv {
                continue;
            }
            let other = Signature { conv, ..sig.clone() };
            if let Some(d) = self.decorated(symbol, &other).into_iter().find(|d| Self::address_of(loaded, d).is_ok()) {
                let c = if conv == CallConv::Stdcall { "__stdcall (WINAPI)" } else { "__fastcall" };
                e.message = format!("{}; it is exported as `{d}`: declare the function {c}", e.message);
                break;
            }
        }
        e
    }

    fn address_of(loaded: &Loaded, symbol: &str) -> Res<u64> {
        // SAFETY: the symbol is only turned into an address here; nothing is called or read through it.
        let sym = unsafe { loaded.lib.get::<*mut c_void>(symbol.as_bytes()) };
        match sym {
            // SAFETY: as above, reading the symbol's address is all `into_raw` does.
            Ok(s) => Ok(unsafe { s.into_raw() }.as_raw_ptr() as usize as u64),
            Err(e) => fail(ErrorKind::SymbolNotFound, format!("`{symbol}` in {}: {}", loaded.path, source_chain(&e))),
        }
    }

    fn prepare(&self, lib: u32, id: u32, symbol: &str, sig: Signature) -> Res<Reply> {
        if self.funcs.read().unwrap_or_else(|e| e.into_inner()).contains_key(&id) {
            return fail(ErrorKind::BadArguments, format!("function handle {id} is in use"));
        }
        let loaded = lock(&self.libs).get(&lib).cloned().ok_or_else(|| unknown("library", lib))?;
        let addr = match Self::address_of(&loaded, symbol) {
            Ok(a) => a,
            Err(e) => match self.decorated(symbol, &sig).into_iter().find_map(|d| Self::address_of(&loaded, &d).ok()) {
                Some(a) => a,
                None => return Err(self.convention_hint(&loaded, symbol, &sig, e)),
            },
        };
        let code = CodePtr::from_ptr(addr as usize as *const c_void);
        let prepared = self
            .build(loaded, code, sig, None)
            .map_err(|m| RemoteError { kind: ErrorKind::BadSignature, message: format!("`{symbol}`: {m}") })?;
        let prepared = Arc::new(prepared);
        self.funcs.write().unwrap_or_else(|e| e.into_inner()).insert(id, prepared);
        Ok(Reply::Address(addr))
    }

    /// Describes a call of `sig` to libffi; with `variadic`, the arguments after the fixed ones.
    fn build(
        &self,
        lib: Arc<Loaded>,
        code: CodePtr,
        mut sig: Signature,
        variadic: Option<&[CType]>,
    ) -> Result<Prepared, String> {
        let fixed = sig.params.len();
        if sig.use_last_error && self.target.os != bitbridge_proto::Os::Windows {
            return Err(format!(
                "use_last_error asks for GetLastError(), which exists only on Windows; this server hosts {} \
                 libraries (use use_errno)",
                self.target
            ));
        }
        if let Some(extra) = variadic {
            sig.params.extend(extra.iter().map(|t| bitbridge_proto::Param { ty: t.clone(), dir: Default::default() }));
        }
        let mut args = Vec::with_capacity(sig.params.len());
        let mut arg_sizes = Vec::with_capacity(sig.params.len());
        for (i, p) in sig.params.iter().enumerate() {
            if p.ty == CType::Void {
                return Err(format!("parameter {} is `void`", i + 1));
            }
            args.push(ffi_type(&self.target, &p.ty).map_err(|m| format!("parameter {}: {m}", i + 1))?);
            arg_sizes.push(self.target.layout(&p.ty).map_err(|e| e.to_string())?.size as usize);
        }
        let ret = ffi_type(&self.target, &sig.ret).map_err(|m| format!("return type: {m}"))?;
        let ret_size = match sig.ret {
            CType::Void => 0,
            ref t => self.target.layout(t).map_err(|e| e.to_string())?.size as usize,
        };
        let abi = abi(&self.target, sig.conv)?;
        let cif = if sig.variadic {
            Cif::try_new_variadic_with_abi(args, fixed, ret, abi)
        } else {
            Cif::try_new_with_abi(args, ret, abi)
        };
        let cif = cif.map_err(|e| format!("libffi refused the signature: {e:?}"))?;
        check_layouts(&cif, &arg_sizes, ret_size)?;
        let (offsets, args_len) = bitbridge_proto::msg::arg_slots(arg_sizes.iter().map(|&s| s as u64));
        let arg_offsets = offsets.into_iter().map(|o| o as usize).collect();
        Ok(Prepared { lib, cif, code, sig, arg_sizes, arg_offsets, args_len: args_len as usize, ret_size })
    }

    /// The description of a variadic function's call with these variadic argument types (cached).
    fn variadic_call(&self, func: u32, f: &Prepared, types: &[CType]) -> Res<Arc<Prepared>> {
        let bad = |m: String| RemoteError { kind: ErrorKind::BadArguments, message: m };
        if !f.sig.variadic {
            return Err(bad(format!("`{}` is not declared variadic", f.sig)));
        }
        let key = (func, types.to_vec());
        if let Some(p) = lock(&self.variadic).get(&key) {
            return Ok(p.clone());
        }
        let p = Arc::new(self.build(f.lib.clone(), f.code, f.sig.clone(), Some(types)).map_err(bad)?);
        lock(&self.variadic).insert(key, p.clone());
        Ok(p)
    }

    fn call(&self, func: u32, call: CallData) -> Res<Returned> {
        let f = self.funcs.read().unwrap_or_else(|e| e.into_inner()).get(&func).cloned();
        let f = f.ok_or_else(|| unknown("function", func))?;
        let f =
            if f.sig.variadic || !call.variadic.is_empty() { self.variadic_call(func, &f, &call.variadic)? } else { f };
        let bad = |m: String| RemoteError { kind: ErrorKind::BadArguments, message: m };
        if call.args.len() != f.args_len {
            return Err(bad(format!(
                "{} bytes of arguments for `{}`, which takes {}",
                call.args.len(),
                f.sig,
                f.args_len
            )));
        }

        let back: u64 =
            call.blocks.iter().filter(|b| b.copy_back && b.arena.is_none()).map(|b| b.len).fold(0, u64::saturating_add);
        if back > MAX_BLOCK {
            return Err(bad(format!("{back} bytes to copy back are more than one reply can carry ({MAX_BLOCK})")));
        }
        // The memory pointer arguments point to, zeroed, then filled with what the client sent.
        // Shared regions used by this call stay mapped until it is over, even if unmapped meanwhile.
        let mut keep: Vec<Arc<Arena>> = Vec::new();
        let mut blocks = Vec::with_capacity(call.blocks.len());
        for (i, b) in call.blocks.iter().enumerate() {
            if let Some(off) = b.arena {
                let a = read(&self.regions).get(&b.region).cloned();
                let a =
                    a.ok_or_else(|| bad(format!("block {i} is in shared region {}, which is not mapped", b.region)))?;
                let fits = off.checked_add(b.len).is_some_and(|end| end <= a.len());
                if !fits || !b.align.is_power_of_two() || off % u64::from(b.align) != 0 {
                    return Err(bad(format!("block {i}: {} bytes at arena offset {off} do not fit or align", b.len)));
                }
                // SAFETY: offset and length are inside the arena's mapping (checked just above).
                let ptr = unsafe { a.as_ptr().add(off as usize) };
                blocks.push(BlockMem::Shared { ptr, len: b.len as usize });
                keep.push(a);
                continue;
            }
            if b.len > MAX_BLOCK || !b.align.is_power_of_two() || b.align > 4096 {
                return Err(bad(format!("block {i}: {} bytes aligned to {} cannot be allocated", b.len, b.align)));
            }
            if !b.data.is_empty() && b.data.len() as u64 != b.len {
                return Err(bad(format!("block {i}: {} bytes of data for {} bytes", b.data.len(), b.len)));
            }
            let mut buf = Buffer::zeroed(b.len, b.align).ok_or_else(|| RemoteError {
                kind: ErrorKind::OutOfMemory,
                message: format!("block {i}: {} bytes", b.len),
            })?;
            buf.bytes_mut(b.data.len()).copy_from_slice(&b.data);
            blocks.push(BlockMem::Owned(buf));
        }
        // Taken out for the call and put back after: a callback may re-enter this function (a nested
        // call on the same thread), which then simply starts with empty buffers.
        let (mut slots, mut avalues) = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        let result = self.run(&f, call, blocks, &mut slots, &mut avalues);
        SCRATCH.with(|s| *s.borrow_mut() = (slots, avalues));
        drop(keep);
        result
    }

    /// Copies the arguments into aligned slots, patches the block addresses in, calls, collects results.
    fn run(
        &self,
        f: &Prepared,
        call: CallData,
        mut blocks: Vec<BlockMem>,
        slots: &mut Vec<u128>,
        avalues: &mut Vec<*mut c_void>,
    ) -> Res<Returned> {
        let bad = |m: String| RemoteError { kind: ErrorKind::BadArguments, message: m };
        let ptr_size = std::mem::size_of::<usize>();
        slots.clear();
        slots.resize(f.args_len.div_ceil(16).max(1), 0);
        as_bytes_mut(slots)[..f.args_len].copy_from_slice(&call.args);
        for r in &call.relocs {
            let target =
                blocks.get(r.block as usize).ok_or_else(|| bad(format!("relocation to missing block {}", r.block)))?;
            let addr = target.addr().to_le_bytes();
            let (dest, len): (&mut [u8], u64) = match r.at {
                Loc::Arg(i) => {
                    let size = *f
                        .arg_sizes
                        .get(i as usize)
                        .ok_or_else(|| bad(format!("relocation in missing argument {i}")))?;
                    let start = f.arg_offsets[i as usize];
                    (&mut as_bytes_mut(slots)[start..start + size], size as u64)
                }
                Loc::Block(j) => {
                    let len =
                        call.blocks.get(j as usize).ok_or_else(|| bad(format!("relocation in missing block {j}")))?.len;
                    (blocks[j as usize].bytes_mut(len as usize), len)
                }
            };
            if r.offset.checked_add(ptr_size as u64).is_none_or(|end| end > len) {
                return Err(bad(format!("relocation at offset {} does not fit in {:?}", r.offset, r.at)));
            }
            dest[r.offset as usize..r.offset as usize + ptr_size].copy_from_slice(&addr[..ptr_size]);
        }

        let addrs: Vec<u64> = blocks.iter().map(BlockMem::addr).collect();
        // libffi writes at least a full register for small integer returns.
        let mut small = [0u128; 2];
        let mut large = Vec::new();
        let ret: &mut [u128] = if f.ret_size <= 32 {
            &mut small
        } else {
            large.resize(f.ret_size.div_ceil(16), 0u128);
            &mut large
        };
        let (errno, last_error) = Self::invoke(f, slots, avalues, ret);
        let value = as_bytes_mut(ret)[..f.ret_size].to_vec();
        let string = match f.sig.ret {
            CType::CStr | CType::WStr => {
                let mut p = [0u8; 8];
                p[..ptr_size].copy_from_slice(&value[..ptr_size]);
                match u64::from_le_bytes(p) {
                    0 => None,
                    addr => {
                        let unit = if f.sig.ret == CType::WStr { self.wchar_size() } else { 1 };
                        Some(memory::read_string(addr, unit, u64::MAX).map_err(bad)?)
                    }
                }
            }
            _ => None,
        };
        let mut back = Vec::new();
        for (b, buf) in call.blocks.iter().zip(blocks.iter_mut()) {
            if b.copy_back && b.arena.is_none() {
                back.push(buf.bytes_mut(b.len as usize).to_vec());
            }
        }
        Ok(Returned { value, string, blocks: back, errno, last_error, addrs })
    }

    /// A call whose arguments are plain bytes (a [`Request::Call`] with no blocks, relocations or
    /// variadic types, as `bitbridge_proto::flat` reads it): the fast path, with no heap work. The
    /// return value is written into `value` (its length is the return type's size). A call it does not
    /// take (unknown function, wrong length, a variadic function, a result too large or a string to
    /// read) is answered by [`Host::handle`] as the general request.
    pub(crate) fn call_flat(&self, func: u32, args: &[u8], value: &mut [u8; 32]) -> FlatAnswer {
        let general = || FlatAnswer::General(self.handle(bitbridge_proto::flat::call_request(func, args)));
        if !self.native {
            return general();
        }
        let Some(f) = read(&self.funcs).get(&func).cloned() else { return general() };
        if f.sig.variadic
            || f.ret_size > 32
            || matches!(f.sig.ret, CType::CStr | CType::WStr)
            || args.len() != f.args_len
        {
            return general();
        }
        let run = || {
            // As in `call`: taken out for the call, so a callback re-entering on this thread starts afresh.
            let (mut slots, mut avalues) = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
            slots.clear();
            slots.resize(f.args_len.div_ceil(16).max(1), 0);
            as_bytes_mut(&mut slots)[..f.args_len].copy_from_slice(args);
            let mut ret = [0u128; 2];
            let (errno, last_error) = Self::invoke(&f, &mut slots, &mut avalues, &mut ret);
            SCRATCH.with(|s| *s.borrow_mut() = (slots, avalues));
            value[..f.ret_size].copy_from_slice(&as_bytes_mut(&mut ret)[..f.ret_size]);
            FlatAnswer::Plain { len: f.ret_size, errno, last_error }
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|p| {
            let what = panic_message(p.as_ref()).unwrap_or_default();
            FlatAnswer::General(fail(
                ErrorKind::BadArguments,
                format!("the server failed handling the request: {what}"),
            ))
        })
    }

    /// Calls `f` with the arguments in `slots` (each at its offset, pointers patched), the result into
    /// `ret` (at least the return type's size, and 32 bytes). Returns `errno` and the last error, when the
    /// signature asks for them.
    fn invoke(
        f: &Prepared,
        slots: &mut [u128],
        avalues: &mut Vec<*mut c_void>,
        ret: &mut [u128],
    ) -> (Option<i32>, Option<u32>) {
        let base: *mut u8 = slots.as_mut_ptr().cast();
        avalues.clear();
        // SAFETY: every offset is inside `slots` (args_len bytes fit, as sized by the callers).
        avalues.extend(f.arg_offsets.iter().map(|&o| unsafe { base.add(o) }.cast::<c_void>()));
        if f.sig.use_errno {
            crate::sys::set_errno(0);
        }
        if f.sig.use_last_error {
            crate::sys::set_last_error(0);
        }
        // SAFETY: the cif was prepared from the client's signature for this very function; each argument
        // slot holds exactly its type's bytes in this target's layout (the callers checked the argument
        // bytes are `args_len` long), pointer arguments point into live blocks or are the caller's own
        // addresses, and the return buffer is larger than the return type (the callers' contract). Whether
        // the signature matches the function is the contract of Host::new.
        unsafe {
            libffi::raw::ffi_call(
                f.cif.as_raw_ptr(),
                Some(*f.code.as_fun()),
                ret.as_mut_ptr().cast(),
                avalues.as_mut_ptr(),
            );
        }

        // Before anything else can touch errno.
        let last_error = f.sig.use_last_error.then(crate::sys::get_last_error);
        let errno = f.sig.use_errno.then(crate::sys::get_errno);
        (errno, last_error)
    }

    /// Serves requests from `recv`, answering on `send`, until the client shuts the server down or goes
    /// away. With one worker, every request runs on this thread, in order (vendor libraries that need
    /// one thread get it); with more, the workers take turns reading (see `link.rs`) so calls run at the
    /// same time, for thread-safe libraries. A frame that cannot be decoded is answered with an
    /// [`ErrorKind::Protocol`] error and ends the session.
    pub fn serve(
        self: Arc<Self>,
        recv: Box<dyn Transport>,
        send: Box<dyn Transport>,
        workers: usize,
    ) -> Result<(), FrameError> {
        let link = Arc::new(Link::new(recv, send));
        let _ = self.link.set(link.clone());
        if workers <= 1 {
            return self.work(&link);
        }
        let (done_tx, done_rx) = mpsc::channel::<Result<(), FrameError>>();
        for i in 0..workers {
            let (host, link, done) = (self.clone(), link.clone(), done_tx.clone());
            std::thread::Builder::new()
                .name(format!("bitbridge-worker-{i}"))
                .spawn(move || {
                    let _ = done.send(host.work(&link));
                })
                .expect("spawning a worker thread");
        }
        drop(done_tx);
        // The first worker to see the end (Shutdown, EOF, a protocol error) ends the service; the others
        // may still be blocked reading, and end with the process.
        done_rx.recv().unwrap_or(Ok(()))
    }

    fn work(&self, link: &Link) -> Result<(), FrameError> {
        use std::sync::atomic::Ordering::SeqCst;
        let _watched = crate::sys::ServingThread::start();
        loop {
            match link.next_request() {
                Next::Request(id, Request::Shutdown) => {
                    // Let the calls in flight finish, then answer and stop.
                    while link.in_flight.load(SeqCst) > 0 {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    return link.send(&Frame::Reply { id, reply: Ok(Reply::Done) });
                }
                Next::Request(id, request) => link.answer(id, self.handle(request))?,
                Next::Flat(call) => link.answer_flat(self, &call)?,
                Next::Stop(end) => return end,
            }
        }
    }

    /// Sends a request to the client (a callback) and waits for its reply.
    pub(crate) fn call_client(&self, request: Request) -> Result<Reply, RemoteError> {
        match self.link.get() {
            Some(link) => link.request(self, request),
            None => fail(ErrorKind::BadArguments, "callbacks need a server process"),
        }
    }

    fn make_callback(&self, cb: u32, sig: Signature) -> Res<Reply> {
        let bad = |m: String| RemoteError { kind: ErrorKind::BadSignature, message: format!("callback: {m}") };
        if self.link.get().is_none() {
            return Err(bad("callbacks need a server process (not in-process)".into()));
        }
        if lock(&self.callbacks).contains_key(&cb) {
            return Err(bad(format!("callback handle {cb} is in use")));
        }
        let mut args = Vec::new();
        let mut sizes = Vec::new();
        for (i, p) in sig.params.iter().enumerate() {
            args.push(ffi_type(&self.target, &p.ty).map_err(|m| bad(format!("parameter {}: {m}", i + 1)))?);
            sizes.push(self.target.layout(&p.ty).map_err(|e| bad(e.to_string()))?.size);
        }
        let ret = ffi_type(&self.target, &sig.ret).map_err(|m| bad(format!("return type: {m}")))?;
        let ret_size = match sig.ret {
            CType::Void => 0,
            ref t => self.target.layout(t).map_err(|e| bad(e.to_string()))?.size as usize,
        };
        let abi = abi(&self.target, sig.conv).map_err(bad)?;
        let cif = Cif::try_new_with_abi(args, ret, abi).map_err(|e| bad(format!("libffi refused it: {e:?}")))?;
        let mut callbacks = lock(&self.callbacks);
        if callbacks.contains_key(&cb) {
            return Err(bad(format!("callback handle {cb} is in use")));
        }
        let slot = crate::callback::make(self, cb, sig, cif, sizes, ret_size);
        let address = slot.address;
        callbacks.insert(cb, slot);
        lock(&self.retired).retain(|s| s.in_use());
        Ok(Reply::Address(address))
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unknown(what: &str, id: u32) -> RemoteError {
    RemoteError { kind: ErrorKind::UnknownHandle, message: format!("no {what} with handle {id}") }
}

/// A panic's message, when it has one (`panic!` with a literal or a format).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned())
}

/// An error's message followed by each of its sources, separated by `: `.
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn as_bytes_mut(v: &mut [u128]) -> &mut [u8] {
    let len = std::mem::size_of_val(v);
    // SAFETY: u128 has no padding and any byte pattern is valid for u8; the slice covers exactly v.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), len) }
}

/// The libffi ABI for a calling convention on this target.
fn abi(target: &Target, conv: CallConv) -> Result<libffi::middle::FfiAbi, String> {
    use libffi::raw::*;
    #[cfg(target_arch = "x86")]
    {
        let _ = target;
        Ok(match conv {
            CallConv::Cdecl => ffi_abi_FFI_DEFAULT_ABI,
            CallConv::Stdcall => ffi_abi_FFI_STDCALL,
            CallConv::Fastcall => ffi_abi_FFI_FASTCALL,
            CallConv::Thiscall => ffi_abi_FFI_THISCALL,
            _ => return Err(format!("calling convention {conv:?} is not known to this server")),
        })
    }
    #[cfg(not(target_arch = "x86"))]
    {
        match conv {
            CallConv::Cdecl => Ok(ffi_abi_FFI_DEFAULT_ABI),
            // Win64 has one convention; its compilers accept and ignore __stdcall and the others (so
            // ctypes' WinDLL works there as CDLL does).
            _ if target.os == bitbridge_proto::Os::Windows => Ok(ffi_abi_FFI_DEFAULT_ABI),
            other => Err(format!("{other:?} exists only on 32-bit x86, not on {target}")),
        }
    }
}

/// Checks that libffi sized every argument and the return value as bitbridge-proto did.
fn check_layouts(cif: &Cif, arg_sizes: &[usize], ret_size: usize) -> Result<(), String> {
    let raw = cif.as_raw_ptr();
    // SAFETY: the cif was prepared successfully, so its arg_types array holds nargs initialised types
    // and rtype is initialised; we only read their sizes.
    unsafe {
        for (i, &want) in arg_sizes.iter().enumerate() {
            let got = (**(*raw).arg_types.add(i)).size;
            if got != want {
                return Err(format!("parameter {}: libffi lays it out in {got} bytes, bitbridge in {want}", i + 1));
            }
        }
        let got = (*(*raw).rtype).size;
        if ret_size != 0 && got != ret_size {
            return Err(format!("return type: libffi lays it out in {got} bytes, bitbridge in {ret_size}"));
        }
    }
    Ok(())
}
