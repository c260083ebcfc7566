//! Typed C objects in shared memory, between processes of any bitness: Python's
//! `multiprocessing.sharedctypes` (`RawArray`, `RawValue`, `Array`, `Value`, `copy`, `synchronized`)
//! for 32- and 64-bit processes, passable to a bridged function with nothing copied.
//!
//! An object is laid out for the [`Target`] it is declared for (not the process's own), so a struct
//! written by a 64-bit process reads correctly in a 32-bit one. Its header records the target, the type
//! and the length, so another process opens it by name alone; and holds a lock made of plain 32-bit
//! words and a futex that works across bitness (glibc's `pthread_mutex_t` does not: 40 bytes on x86_64,
//! 24 on i686).

use std::path::PathBuf;
use std::sync::Arc;

use bincode::{Decode, Encode};
use bitbridge_proto::{decode_value, encode_value, msg, CType, Target, Value};
pub use bitbridge_shm::object::{Backing, LockGuard, LockKind};
use bitbridge_shm::object::{SharedMem, DATA_OFFSET};

use crate::error::{Error, Result};
use crate::server::Server;

#[derive(Encode, Decode)]
struct Desc {
    target: Target,
    ty: CType,
    len: u32,
}

/// How to create a shared object.
#[derive(Clone, Debug)]
pub struct SharedOptions {
    backing: Backing,
    target: Target,
    locked: bool,
    kind: LockKind,
}

impl SharedOptions {
    /// An anonymous object laid out for `target` (use the *server's* target to pass it to a bridged
    /// function, e.g. `Target::I386_SYSV`), locked (each access takes its recursive lock) like
    /// `multiprocessing.Array`.
    pub fn new(target: Target) -> Self {
        SharedOptions { backing: Backing::Anonymous, target, locked: true, kind: LockKind::Recursive }
    }

    /// A named object (`/dev/shm/bitbridge-<name>`), which other processes open with
    /// [`SharedArray::open`]; the name goes away when the creator drops it.
    pub fn named(mut self, name: &str) -> Self {
        self.backing = Backing::Named(name.to_owned());
        self
    }

    /// A file-backed object, shared with any program that maps the file.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.backing = Backing::File(path.into());
        self
    }

    /// Raw (`RawArray`/`RawValue`): accesses do not take the lock (it is still there for [`SharedArray::lock`]).
    pub fn raw(mut self) -> Self {
        self.locked = false;
        self
    }

    /// The kind of the object's lock (default: recursive, like `multiprocessing`'s `RLock`).
    pub fn lock_kind(mut self, kind: LockKind) -> Self {
        self.kind = kind;
        self
    }

    /// An array of `len` zeroed elements of type `ty`.
    pub fn array(&self, ty: CType, len: u32) -> Result<SharedArray> {
        let bad = |m: String| Error::Unsupported(m);
        if ty.contains_pointer() {
            return Err(bad(format!(
                "`{ty}` holds pointers, which would mean nothing in another process: share the memory they point to instead"
            )));
        }
        let elem = self.target.layout(&ty).map_err(|e| bad(e.to_string()))?.size;
        let data_len = elem
            .checked_mul(u64::from(len))
            .filter(|l| *l > 0)
            .ok_or_else(|| bad(format!("{len} elements of `{ty}`")))?;
        let mut desc = Vec::new();
        msg::encode(&Desc { target: self.target, ty: ty.clone(), len }, &mut desc);
        let mem = SharedMem::create(&self.backing, data_len, &desc, self.kind)
            .map_err(|e| object_error("create", &self.backing, &e))?;
        Ok(SharedArray { mem: Arc::new(mem), target: self.target, ty, len, elem, locked: self.locked, lock_from: None })
    }

    /// A single value of type `ty`, zeroed (`multiprocessing.Value` / `RawValue`).
    pub fn value(&self, ty: CType) -> Result<SharedArray> {
        self.array(ty, 1)
    }

    /// An array holding copies of `values` (`multiprocessing.sharedctypes.copy`).
    pub fn copy(&self, ty: CType, values: &[Value]) -> Result<SharedArray> {
        let a = self.array(ty, values.len() as u32)?;
        for (i, v) in values.iter().enumerate() {
            a.set(i as u32, v)?;
        }
        Ok(a)
    }
}

/// A typed array (or single value) in shared memory.
#[derive(Clone)]
pub struct SharedArray {
    mem: Arc<SharedMem>,
    target: Target,
    ty: CType,
    len: u32,
    elem: u64,
    locked: bool,
    /// `synchronized` with another object's lock.
    lock_from: Option<Arc<SharedMem>>,
}

impl SharedArray {
    /// Opens an object another process created, by name or file; its type, length and target come from
    /// its header. Accesses take its lock.
    pub fn open(backing: &Backing) -> Result<SharedArray> {
        let mem = SharedMem::open(backing).map_err(|e| object_error("open", backing, &e))?;
        let broken = |reason: String| Error::SharedObject { action: "open", object: describe(backing), reason };
        let desc: Desc = msg::decode(&mem.type_desc()).map_err(|e| {
            broken(format!("not a bitbridge shared object: its type description does not decode ({e})"))
        })?;
        let elem =
            desc.target.layout(&desc.ty).map_err(|e| broken(format!("its element type cannot be laid out: {e}")))?.size;
        if elem.checked_mul(u64::from(desc.len)) != Some(mem.data_len()) {
            return Err(broken(format!(
                "not a bitbridge shared object: its header says {} elements of `{}` ({elem} bytes each) but it holds {} bytes",
                desc.len,
                desc.ty,
                mem.data_len()
            )));
        }
        Ok(SharedArray {
            mem: Arc::new(mem),
            target: desc.target,
            ty: desc.ty,
            len: desc.len,
            elem,
            locked: true,
            lock_from: None,
        })
    }

    /// The number of elements.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the array has no elements (never: objects have at least one).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The element type.
    pub fn element_type(&self) -> &CType {
        &self.ty
    }

    /// The target the elements are laid out for.
    pub fn target(&self) -> Target {
        self.target
    }

    /// Element `i`.
    pub fn get(&self, i: u32) -> Result<Value> {
        let off = self.offset(i)?;
        let _g = self.auto_lock()?;
        self.read_at(off)
    }

    fn read_at(&self, off: u64) -> Result<Value> {
        let bytes = self.mem.read(off, self.elem);
        decode_value(&self.target, &self.ty, &bytes)
            .map_err(|e| Error::Result { function: "SharedArray::get".into(), source: Box::new(e) })
    }

    /// Sets element `i`.
    pub fn set(&self, i: u32, value: &Value) -> Result<()> {
        let off = self.offset(i)?;
        let bytes = encode_value(&self.target, &self.ty, value)
            .map_err(|e| Error::Argument { function: "SharedArray::set".into(), source: Box::new(e) })?;
        let _g = self.auto_lock()?;
        self.mem.write(off, &bytes);
        Ok(())
    }

    /// Every element, read under one lock.
    pub fn to_vec(&self) -> Result<Vec<Value>> {
        let _g = self.auto_lock()?;
        (0..self.len).map(|i| self.read_at(u64::from(i) * self.elem)).collect()
    }

    /// Takes the lock (this object's, or the one given to [`SharedArray::synchronized`]) for a multi-step
    /// update; accesses inside it may take it again, since the default lock is recursive.
    pub fn lock(&self) -> Result<LockGuard<'_>> {
        self.lock_mem().lock().map_err(Error::Io)
    }

    /// A view of the same memory whose every access takes a lock: this object's own, or `lock`'s
    /// (`multiprocessing.sharedctypes.synchronized`).
    pub fn synchronized(&self, lock: Option<&SharedArray>) -> SharedArray {
        SharedArray { locked: true, lock_from: lock.map(|l| l.lock_mem().clone()), ..self.clone() }
    }

    /// Maps the object into `server` and returns it as a pointer argument: the library gets the server's
    /// address of the elements, nothing is copied, and it may keep the pointer. The object must be laid
    /// out for the server's target. The mapping lasts as long as the server.
    pub fn share_with(&self, server: &Server) -> Result<Value> {
        if server.target() != self.target {
            return Err(Error::Unsupported(format!(
                "the object is laid out for {}, the server runs {}",
                self.target,
                server.target()
            )));
        }
        let region = server.map_fd(self.mem.fd(), self.mem.mapped_len())?;
        Ok(Value::Shared { region, offset: DATA_OFFSET, len: self.mem.data_len() })
    }

    /// The address of the first element in this process, for views that read and write the memory in
    /// place (the Python package's ctypes views and buffers). Other processes may change it at any time.
    pub fn as_ptr(&self) -> *mut u8 {
        self.mem.data_ptr()
    }

    /// The data's size in bytes.
    pub fn byte_len(&self) -> u64 {
        self.mem.data_len()
    }

    /// The path of a named or file-backed object (`/dev/shm/bitbridge-<name>`).
    pub fn path(&self) -> Option<&std::path::Path> {
        self.mem.path()
    }

    /// Takes the object's lock (or the one given to [`SharedArray::synchronized`]) and keeps it until
    /// [`SharedArray::release`] on the same thread; gives up after `timeout` (`Ok(false)`). For callers
    /// that cannot hold a [`LockGuard`] (Python's `acquire()`/`release()`).
    pub fn acquire(&self, timeout: Option<std::time::Duration>) -> Result<bool> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        self.lock_mem().lock_until(deadline).map_err(Error::Io)
    }

    /// Releases a lock taken with [`SharedArray::acquire`]; [`Error::Unsupported`] if this thread does
    /// not hold it.
    pub fn release(&self) -> Result<()> {
        self.lock_mem().unlock().map_err(|e| Error::Unsupported(format!("release: {e}")))
    }

    fn lock_mem(&self) -> &Arc<SharedMem> {
        self.lock_from.as_ref().unwrap_or(&self.mem)
    }

    fn auto_lock(&self) -> Result<Option<LockGuard<'_>>> {
        if self.locked {
            self.lock().map(Some)
        } else {
            Ok(None)
        }
    }

    fn offset(&self, i: u32) -> Result<u64> {
        if i >= self.len {
            return Err(Error::Unsupported(format!("index {i} of a {}-element shared array", self.len)));
        }
        Ok(u64::from(i) * self.elem)
    }
}

impl std::fmt::Debug for SharedArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedArray({}[{}] for {})", self.ty, self.len, self.target)
    }
}

/// How an object is named in errors: `shared object "frames" (/dev/shm/bitbridge-frames)`.
fn describe(backing: &Backing) -> String {
    match backing {
        Backing::Named(n) => format!("shared object {n:?} (/dev/shm/bitbridge-{n})"),
        Backing::File(p) => format!("shared object file {}", p.display()),
        Backing::Anonymous => "an anonymous shared object".into(),
    }
}

/// A failure to create or open an object, naming it and saying why in words.
fn object_error(action: &'static str, backing: &Backing, e: &std::io::Error) -> Error {
    use std::io::ErrorKind as K;
    let reason = match e.kind() {
        K::NotFound if action == "open" => "it does not exist (no process created it, or its creator has dropped it)".into(),
        K::NotFound => format!("its folder does not exist ({e})"),
        K::AlreadyExists => match backing {
            Backing::Named(n) => format!(
                "it already exists (another process created it, or a crashed one left it: remove /dev/shm/bitbridge-{n} if nobody uses it)"
            ),
            _ => "the file already exists".into(),
        },
        K::PermissionDenied => format!("permission denied ({e})"),
        _ => e.to_string(),
    };
    Error::SharedObject { action, object: describe(backing), reason }
}
