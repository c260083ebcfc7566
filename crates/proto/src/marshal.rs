//! Laying values out for a call on the server's target, and reading results back.
//!
//! Arguments become bytes exactly as the server's C code expects them. Memory behind pointer arguments
//! (and behind pointer members of structs passed that way) becomes [`Block`]s that the server allocates
//! for the duration of the call; [`Reloc`]s say where their addresses go. Blocks of `Out`/`InOut`
//! parameters come back after the call and are read into values of the same shape as those given.
//!
//! Blocks are numbered depth first in the order the values are walked, both when encoding and when
//! reading back, which is how a pointer member finds its block again without any bookkeeping on the wire.

use std::fmt;

use crate::msg::{Block, CallData, Loc, Reloc, Returned, MAX_BLOCK};
use crate::numbers::{NumKind, NumSlice, NumSliceMut, Numbers};
use crate::target::{LayoutError, Os, Target};
use crate::types::{CType, Direction, Field, Signature};
use crate::value::{ExtF80, Value};

/// A value that does not fit its declared type, naming where it is (`argument 2 -> [3] -> .x`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {kind}")]
pub struct MarshalError {
    /// Where in the arguments: `argument 2`, `argument 1 -> .points -> [3]`, `return value`.
    pub path: String,
    /// What is wrong.
    pub kind: MarshalErrorKind,
}

/// What is wrong with a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MarshalErrorKind {
    /// The number of arguments differs from the signature's.
    #[error(
        "the function takes {expected} argument{}, {got} {} given",
        plural(*expected),
        if *got == 1 { "was" } else { "were" }
    )]
    ArgCount {
        /// Parameters declared.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// A value of the wrong kind.
    #[error("expected {expected}, got {got}")]
    Mismatch {
        /// What the type accepts.
        expected: String,
        /// What was given.
        got: &'static str,
    },
    /// An integer outside the type's range.
    #[error("{value} does not fit in `{ty}` ({min}..={max})")]
    OutOfRange {
        /// The value given.
        value: i128,
        /// The declared type.
        ty: String,
        /// The type's minimum.
        min: i128,
        /// The type's maximum.
        max: i128,
    },
    /// More elements than an array or buffer holds.
    #[error("{got} element{} {} not fit in `{ty}`", plural(*got), if *got == 1 { "does" } else { "do" })]
    TooLong {
        /// Elements given.
        got: usize,
        /// The declared type.
        ty: String,
    },
    /// More elements than one block of memory may hold (the target's address space, or the largest
    /// block a call may carry).
    #[error("{count} elements of `{ty}` are more than one block of memory may hold ({max} bytes)")]
    TooLarge {
        /// Elements asked for.
        count: u64,
        /// The element type.
        ty: String,
        /// The largest block, in bytes.
        max: u64,
    },
    /// The type has no layout.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The server sent back a different number of memory blocks than the call copies back.
    #[error("{got} memory block{} came back, the call copies back {expected}", plural(*got))]
    BlockCount {
        /// Blocks with copy-back.
        expected: usize,
        /// Blocks received.
        got: usize,
    },
    /// The bytes read back are shorter than the type (a protocol violation by the server).
    #[error("{got} bytes read back for `{ty}`, which needs {want}")]
    Short {
        /// Bytes available.
        got: usize,
        /// Bytes needed.
        want: u64,
        /// The type.
        ty: String,
    },
}

/// `"s"` unless there is one.
fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// What the client keeps of an encoded call to read its results.
#[derive(Clone, Debug, Default)]
pub struct CallPlan {
    /// Per block: whether it comes back after the call.
    pub copy_back: Vec<bool>,
}

/// One step of the path to a value, rendered only when an error is reported.
#[derive(Clone, Copy)]
enum Seg<'s> {
    Arg(usize),
    Field(&'s str),
    Index(u64),
    Named(&'static str),
}

/// The path to the value being laid out or read: its first step kept inline, so that the common
/// case (a scalar argument, one step) allocates nothing.
#[derive(Default)]
struct Path<'s> {
    first: Option<Seg<'s>>,
    rest: Vec<Seg<'s>>,
}

impl<'s> Path<'s> {
    fn one(seg: Seg<'s>) -> Path<'s> {
        Path { first: Some(seg), rest: Vec::new() }
    }

    fn push(&mut self, seg: Seg<'s>) {
        if self.first.is_none() {
            self.first = Some(seg);
        } else {
            self.rest.push(seg);
        }
    }

    fn pop(&mut self) {
        if self.rest.pop().is_none() {
            self.first = None;
        }
    }
}

fn render(path: &Path<'_>) -> String {
    let parts: Vec<String> = path
        .first
        .iter()
        .chain(&path.rest)
        .map(|s| match s {
            Seg::Arg(i) => format!("argument {}", i + 1),
            Seg::Field(f) => format!(".{f}"),
            Seg::Index(i) => format!("[{i}]"),
            Seg::Named(n) => (*n).to_owned(),
        })
        .collect();
    parts.join(" -> ")
}

/// `char`, for the pointee of `char *` strings.
static CHAR: CType = CType::Char;
/// `wchar_t`, for the pointee of `wchar_t *` strings.
static WCHAR: CType = CType::WChar;

struct Encoder<'a, 's, 'v> {
    target: &'a Target,
    data: CallData,
    path: Path<'s>,
    /// Blocks at least this large given as bytes are not copied: they are listed in `deferred`.
    defer_at: u64,
    deferred: Vec<(u32, &'v [u8])>,
}

/// Lays out `values` as the arguments of `sig` for `target`.
pub fn encode_call(target: &Target, sig: &Signature, values: &[Value]) -> Result<(CallData, CallPlan), MarshalError> {
    let (data, plan, deferred) = encode_call_bulk(target, sig, values, u64::MAX)?;
    debug_assert!(deferred.is_empty());
    Ok((data, plan))
}

/// Like [`encode_call`], but `Value::Bytes` pointees of at least `defer_at` bytes (for `In`/`InOut`
/// pointers) are not copied into their block: each is returned as `(block, bytes)`, its block left with
/// empty `data`. The caller must place those bytes (in the arena, or into `data`) before sending.
#[allow(clippy::type_complexity)]
pub fn encode_call_bulk<'v>(
    target: &Target,
    sig: &Signature,
    values: &'v [Value],
    defer_at: u64,
) -> Result<(CallData, CallPlan, Vec<(u32, &'v [u8])>), MarshalError> {
    encode_call_borrowed(target, sig, values, &[], defer_at)
}

/// Like [`encode_call_bulk`], with some pointer arguments given as borrowed numbers: where
/// `borrowed[i]` is `Some`, argument `i` (a pointer) points to those numbers, laid out as
/// [`Value::Numbers`] would be, and `values[i]` is not read. Read the results with
/// [`decode_results_borrowed`] and the same mask, then [`decode_numbers_into`] for each.
#[allow(clippy::type_complexity)]
pub fn encode_call_borrowed<'v>(
    target: &Target,
    sig: &Signature,
    values: &'v [Value],
    borrowed: &[Option<NumSlice<'v>>],
    defer_at: u64,
) -> Result<(CallData, CallPlan, Vec<(u32, &'v [u8])>), MarshalError> {
    let mut enc = Encoder { target, data: CallData::default(), path: Path::default(), defer_at, deferred: Vec::new() };
    let n = sig.params.len();
    if values.len() != n {
        return Err(enc.err(MarshalErrorKind::ArgCount { expected: n, got: values.len() }));
    }
    // Each argument's (offset, size), on the stack for the usual few arguments.
    let mut few = [(0u64, 0u64); 8];
    let mut many = Vec::new();
    let slots: &mut [(u64, u64)] = if n <= few.len() {
        &mut few[..n]
    } else {
        many.resize(n, (0, 0));
        &mut many
    };
    let mut total = 0u64;
    for (i, p) in sig.params.iter().enumerate() {
        enc.path.push(Seg::Arg(i));
        let size = enc.size_of(&p.ty)?;
        enc.path.pop();
        // As `arg_slots`: each at the next multiple of 16 bytes.
        let start = total.next_multiple_of(16);
        slots[i] = (start, size);
        total = start + size;
    }
    let mut args = vec![0u8; total as usize];
    for (i, (p, v)) in sig.params.iter().zip(values).enumerate() {
        enc.path.push(Seg::Arg(i));
        let (start, size) = slots[i];
        let slot = &mut args[start as usize..(start + size) as usize];
        match (borrowed.get(i).copied().flatten(), &p.ty) {
            (Some(nums), CType::Pointer(to)) => {
                let index = enc.reserve();
                let (index, data, len) = enc.numbers_block(index, to, nums, p.dir)?;
                enc.finish_block(to, index, data, len, p.dir != Direction::In, p.dir, Loc::Arg(i as u32), 0);
            }
            (Some(_), ty) => {
                return Err(enc.err(MarshalErrorKind::Mismatch {
                    expected: format!("a value for `{ty}`"),
                    got: "an array of numbers",
                }))
            }
            (None, _) => enc.write(&p.ty, v, slot, Loc::Arg(i as u32), 0, p.dir)?,
        }
        enc.path.pop();
    }
    enc.data.args = args;
    let plan = CallPlan { copy_back: enc.data.blocks.iter().map(|b| b.copy_back).collect() };
    Ok((enc.data, plan, enc.deferred))
}

/// Lays out one value of type `ty` for `target` as plain bytes (pointer members must be addresses).
/// For writing server memory.
pub fn encode_value(target: &Target, ty: &CType, value: &Value) -> Result<Vec<u8>, MarshalError> {
    let mut enc = Encoder {
        target,
        data: CallData::default(),
        path: Path::one(Seg::Named("value")),
        defer_at: u64::MAX,
        deferred: Vec::new(),
    };
    let mut buf = vec![0u8; enc.size_of(ty)? as usize];
    enc.write(ty, value, &mut buf, Loc::Block(u32::MAX), 0, Direction::In)?;
    if !enc.data.blocks.is_empty() {
        return Err(enc.err(MarshalErrorKind::Mismatch {
            expected: "addresses (Value::Pointer) for pointer members of memory written directly".into(),
            got: "memory to copy",
        }));
    }
    Ok(buf)
}

/// Writes `value` as an argument of type `ty` for `target` into `out` (exactly `ty`'s size) when it
/// needs no memory of its own: a number, an address, a struct or array of those. `false` when it does
/// (a string, a pointee to copy, a shared buffer) or does not fit `ty`: then [`encode_call`] lays the
/// call out (and names what is wrong). The fast path's encoder: nothing is allocated.
pub fn encode_plain(target: &Target, ty: &CType, value: &Value, out: &mut [u8]) -> bool {
    let mut enc =
        Encoder { target, data: CallData::default(), path: Path::default(), defer_at: u64::MAX, deferred: Vec::new() };
    enc.write(ty, value, out, Loc::Arg(0), 0, Direction::In).is_ok() && enc.data.blocks.is_empty()
}

impl<'s, 'v> Encoder<'_, 's, 'v> {
    fn err(&self, kind: MarshalErrorKind) -> MarshalError {
        MarshalError { path: render(&self.path), kind }
    }

    fn mismatch(&self, expected: impl Into<String>, got: &Value) -> MarshalError {
        self.err(MarshalErrorKind::Mismatch { expected: expected.into(), got: got.kind() })
    }

    fn size_of(&self, ty: &CType) -> Result<u64, MarshalError> {
        self.target.layout(ty).map(|l| l.size).map_err(|e| self.err(e.into()))
    }

    /// Writes `v` as a `ty` into `out` (exactly `ty`'s size), which sits at `base` inside `loc`.
    fn write(
        &mut self,
        ty: &'s CType,
        v: &'v Value,
        out: &mut [u8],
        loc: Loc,
        base: u64,
        dir: Direction,
    ) -> Result<(), MarshalError> {
        if let Value::Zeros(_) = v {
            if !ty.is_pointer() {
                return Ok(()); // already zero
            }
        }
        if ty.is_integer() {
            return self.write_int(ty, v, out);
        }
        match ty {
            CType::Float => {
                let f = self.float(v)?;
                out.copy_from_slice(&(f as f32).to_le_bytes());
            }
            CType::Double => out.copy_from_slice(&self.float(v)?.to_le_bytes()),
            CType::LongDouble if self.target.os == Os::Windows => out.copy_from_slice(&self.float(v)?.to_le_bytes()),
            CType::LongDouble => {
                let x = match v {
                    Value::LongDouble(x) => *x,
                    _ => ExtF80::from_f64(self.float(v)?),
                };
                out[..10].copy_from_slice(&x.0);
            }
            CType::Void => return Err(self.err(LayoutError::VoidValue.into())),
            CType::Pointer(_) | CType::CStr | CType::WStr | CType::FnPtr(_) => {
                self.write_pointer(ty, v, out, loc, base, dir)?
            }
            CType::Array(of, n) => self.write_array(ty, of, *n, v, out, loc, base, dir)?,
            CType::Struct(def) => match v {
                Value::Struct(vals) => {
                    if vals.len() != def.fields.len() {
                        let n = def.fields.len();
                        let what = if n == 1 { "value" } else { "values" };
                        return Err(self.mismatch(format!("{n} {what} for `{ty}`"), v));
                    }
                    let layout = self.target.struct_layout(def).map_err(|e| self.err(e.into()))?;
                    for (i, ((f, off), fv)) in def.fields.iter().zip(&layout.offsets).zip(vals).enumerate() {
                        self.path.push(Seg::Field(&f.name));
                        if let (Some(width), Some(Some(bit))) = (f.bits, layout.bit_offsets.get(i)) {
                            self.write_bits(f, width, fv, out, *bit)?;
                        } else {
                            let size = self.size_of(&f.ty)?;
                            let (s, e) = (*off as usize, (*off + size) as usize);
                            self.write(&f.ty, fv, &mut out[s..e], loc, base + off, dir)?;
                        }
                        self.path.pop();
                    }
                }
                Value::Bytes(b) if b.len() == out.len() => out.copy_from_slice(b),
                _ => return Err(self.mismatch(format!("Value::Struct for `{ty}`"), v)),
            },
            CType::Union(def) => match v {
                Value::Variant(i, member) => {
                    let f = def.fields.get(*i as usize).ok_or_else(|| {
                        self.err(MarshalErrorKind::Mismatch {
                            expected: format!("a member index below {} for `{ty}`", def.fields.len()),
                            got: "a larger index",
                        })
                    })?;
                    self.path.push(Seg::Field(&f.name));
                    if let Some(width) = f.bits {
                        self.write_bits(f, width, member, out, 0)?;
                    } else {
                        let size = self.size_of(&f.ty)? as usize;
                        self.write(&f.ty, member, &mut out[..size], loc, base, dir)?;
                    }
                    self.path.pop();
                }
                Value::Bytes(b) if b.len() <= out.len() => out[..b.len()].copy_from_slice(b),
                _ => return Err(self.mismatch(format!("Value::Variant for `{ty}`"), v)),
            },
            _ => unreachable!("integers are handled above"),
        }
        Ok(())
    }

    /// Writes an integer into the `width` bits of a bit-field starting at bit `bit` of `out`, checked
    /// against the range those bits hold. An unnamed bit-field is padding: its value is ignored.
    fn write_bits(&self, f: &Field, width: u32, v: &Value, out: &mut [u8], bit: u64) -> Result<(), MarshalError> {
        if f.name.is_empty() || width == 0 {
            return Ok(());
        }
        let n: i128 = match v {
            Value::Int(i) => i128::from(*i),
            Value::UInt(u) => i128::from(*u),
            Value::Bool(b) => i128::from(*b),
            Value::Zeros(_) => 0,
            _ => return Err(self.mismatch(format!("an integer for the bit-field `{} : {width}`", f.ty), v)),
        };
        let (min, max) = bit_range(self.target, &f.ty, width);
        if n < min || n > max {
            return Err(self.err(MarshalErrorKind::OutOfRange {
                value: n,
                ty: format!("{} : {width}", f.ty),
                min,
                max,
            }));
        }
        set_bits(out, bit, width, n as u128);
        Ok(())
    }

    fn float(&self, v: &Value) -> Result<f64, MarshalError> {
        match v {
            Value::Float(f) => Ok(*f),
            Value::LongDouble(x) => Ok(x.to_f64()),
            Value::Int(i) => Ok(*i as f64),
            Value::UInt(u) => Ok(*u as f64),
            _ => Err(self.mismatch("a number", v)),
        }
    }

    fn write_int(&self, ty: &CType, v: &Value, out: &mut [u8]) -> Result<(), MarshalError> {
        let n: i128 = match v {
            Value::Int(i) => i128::from(*i),
            Value::UInt(u) => i128::from(*u),
            Value::Bool(b) => i128::from(*b),
            Value::Bytes(b) if b.len() == 1 && ty.is_byte() => i128::from(b[0]),
            Value::Str(s) if s.len() == 1 && ty.is_byte() => i128::from(s.as_bytes()[0]),
            Value::Str(s) if *ty == CType::WChar && s.chars().count() == 1 => {
                i128::from(u32::from(s.chars().next().expect("one char")))
            }
            _ => return Err(self.mismatch(format!("an integer for `{ty}`"), v)),
        };
        let (min, max) = self.target.int_range(ty).expect("write_int is called for integer types");
        if n < min || n > max {
            return Err(self.err(MarshalErrorKind::OutOfRange { value: n, ty: ty.to_string(), min, max }));
        }
        out.copy_from_slice(&(n as u128).to_le_bytes()[..out.len()]);
        Ok(())
    }

    fn write_address(&self, addr: u64, out: &mut [u8]) -> Result<(), MarshalError> {
        if addr > self.target.max_address() {
            return Err(self.err(MarshalErrorKind::OutOfRange {
                value: i128::from(addr),
                ty: "pointer".into(),
                min: 0,
                max: i128::from(self.target.max_address()),
            }));
        }
        out.copy_from_slice(&addr.to_le_bytes()[..out.len()]);
        Ok(())
    }

    fn write_pointer(
        &mut self,
        ty: &'s CType,
        v: &'v Value,
        out: &mut [u8],
        loc: Loc,
        base: u64,
        dir: Direction,
    ) -> Result<(), MarshalError> {
        if let Value::Pointer(addr) = v {
            return self.write_address(*addr, out);
        }
        if let (CType::Pointer(_) | CType::CStr | CType::WStr, Value::Shared { region, offset, len }) = (ty, v) {
            // Already in memory the server maps: only its address is patched in.
            let index = self.reserve();
            let block = &mut self.data.blocks[index as usize];
            block.len = *len;
            block.align = 1;
            block.arena = Some(*offset);
            block.region = *region;
            self.data.relocs.push(Reloc { at: loc, offset: base, block: index });
            out.fill(0);
            return Ok(());
        }
        let (pointee, (index, data, len), copy_back): (&CType, _, bool) = match (ty, v) {
            (CType::CStr, Value::Str(s)) => (&CHAR, self.text_block(nul_terminated(s.as_bytes())), false),
            (CType::CStr, Value::Bytes(b)) => (&CHAR, self.text_block(nul_terminated(b)), false),
            (CType::WStr, Value::Str(s)) => (&WCHAR, self.text_block(self.wide(s, true)), false),
            (CType::Pointer(to), _) => (&**to, self.pointee_bytes(to, v, dir)?, dir != Direction::In),
            (CType::FnPtr(_), _) => return Err(self.mismatch(format!("an address for `{ty}`"), v)),
            _ => return Err(self.mismatch(format!("text or an address for `{ty}`"), v)),
        };
        self.finish_block(pointee, index, data, len, copy_back, dir, loc, base);
        out.fill(0); // the server writes the address
        Ok(())
    }

    /// Completes block `index` (reserved before its content was laid out, so nested blocks get higher
    /// numbers than their parent, which the reader relies on) and records where its address goes.
    #[allow(clippy::too_many_arguments)]
    fn finish_block(
        &mut self,
        pointee: &CType,
        index: u32,
        data: Vec<u8>,
        len: u64,
        copy_back: bool,
        dir: Direction,
        loc: Loc,
        base: u64,
    ) {
        let align = match pointee {
            CType::Void => 16,
            t => self.target.layout(t).map(|l| l.align.max(16)).unwrap_or(16),
        } as u32;
        let block = &mut self.data.blocks[index as usize];
        block.len = len;
        block.align = align;
        block.copy_back = copy_back;
        // Out memory starts zeroed (the server writes the addresses of nested memory into it).
        block.data = if dir == Direction::Out && copy_back { Vec::new() } else { data };
        self.data.relocs.push(Reloc { at: loc, offset: base, block: index });
    }

    fn text_block(&mut self, data: Vec<u8>) -> (u32, Vec<u8>, u64) {
        let len = data.len() as u64;
        (self.reserve(), data, len)
    }

    /// `count` elements of `size` bytes, checked against the target's address space.
    fn total(&self, size: u64, count: u64, ty: &CType) -> Result<u64, MarshalError> {
        size.checked_mul(count).filter(|t| *t <= self.target.max_address() && *t <= MAX_BLOCK).ok_or_else(|| {
            self.err(MarshalErrorKind::TooLarge {
                count,
                ty: ty.to_string(),
                max: self.target.max_address().min(MAX_BLOCK),
            })
        })
    }

    /// Reserves a block and lays out the memory a pointer to `to` points to, given as `v`.
    fn pointee_bytes(
        &mut self,
        to: &'s CType,
        v: &'v Value,
        dir: Direction,
    ) -> Result<(u32, Vec<u8>, u64), MarshalError> {
        let index = self.reserve();
        let loc = Loc::Block(index);
        let bytes = match v {
            Value::Bytes(b) if dir == Direction::Out => return Ok((index, Vec::new(), b.len() as u64)),
            Value::Bytes(b) if b.len() as u64 >= self.defer_at => {
                self.deferred.push((index, b));
                return Ok((index, Vec::new(), b.len() as u64));
            }
            Value::Bytes(b) => b.clone(),
            Value::Numbers(nums) => return self.numbers_block(index, to, nums.as_slice(), dir),
            Value::Str(s) if to.is_byte() => nul_terminated(s.as_bytes()),
            Value::Str(s) if *to == CType::WChar => self.wide(s, true),
            Value::Zeros(n) => {
                // Never allocated here: the server zero-fills a block sent without data.
                let size = if *to == CType::Void { 1 } else { self.size_of(to)? };
                return Ok((index, Vec::new(), self.total(size, u64::from(*n), to)?));
            }
            Value::Array(vals) => {
                let size = self.size_of(to)?;
                let mut buf = vec![0u8; self.total(size, vals.len() as u64, to)? as usize];
                for (i, ev) in vals.iter().enumerate() {
                    self.path.push(Seg::Index(i as u64));
                    let off = size * i as u64;
                    self.write(to, ev, &mut buf[off as usize..(off + size) as usize], loc, off, dir)?;
                    self.path.pop();
                }
                buf
            }
            _ if *to == CType::Void => return Err(self.mismatch("bytes, zeros or an address for `void *`", v)),
            single => {
                let mut buf = vec![0u8; self.size_of(to)? as usize];
                self.write(to, single, &mut buf, loc, 0, dir)?;
                buf
            }
        };
        let len = bytes.len() as u64;
        Ok((index, bytes, len))
    }

    /// The block of numbers behind a pointer to `to`: their bytes as they are when `to` has their
    /// layout (borrowed, not copied, when at least `defer_at` bytes), else each converted and checked.
    fn numbers_block(
        &mut self,
        index: u32,
        to: &'s CType,
        nums: NumSlice<'v>,
        dir: Direction,
    ) -> Result<(u32, Vec<u8>, u64), MarshalError> {
        if *to == CType::Void || self.numbers_match(to, nums.kind()) {
            let bytes = nums.as_bytes();
            let len = self.total(nums.kind().size() as u64, nums.len() as u64, to)?;
            if dir == Direction::Out {
                return Ok((index, Vec::new(), len));
            }
            if len >= self.defer_at {
                self.deferred.push((index, bytes));
                return Ok((index, Vec::new(), len));
            }
            return Ok((index, bytes.to_vec(), len));
        }
        let size = self.size_of(to)?;
        let len = self.total(size, nums.len() as u64, to)?;
        if dir == Direction::Out {
            return Ok((index, Vec::new(), len)); // its content is not sent
        }
        let mut buf = vec![0u8; len as usize];
        self.write_numbers(to, nums, &mut buf)?;
        Ok((index, buf, len))
    }

    fn numbers_match(&self, ty: &CType, kind: NumKind) -> bool {
        numbers_match(self.target, ty, kind)
    }

    /// Writes `nums` as consecutive elements of `of` into `out` (at least as long): their bytes when
    /// the layouts match, else each element converted and range-checked, the error naming its index.
    fn write_numbers(&mut self, of: &CType, nums: NumSlice<'_>, out: &mut [u8]) -> Result<(), MarshalError> {
        if self.numbers_match(of, nums.kind()) {
            let b = nums.as_bytes();
            out[..b.len()].copy_from_slice(b);
            return Ok(());
        }
        let size = self.size_of(of)? as usize;
        for i in 0..nums.len() {
            let ev = nums.get(i).expect("in range");
            self.path.push(Seg::Index(i as u64));
            self.write_number(of, &ev, &mut out[i * size..(i + 1) * size])?;
            self.path.pop();
        }
        Ok(())
    }

    /// Writes one number (an element of a [`Value::Numbers`]) as a scalar `ty`.
    fn write_number(&self, ty: &CType, v: &Value, out: &mut [u8]) -> Result<(), MarshalError> {
        if ty.is_integer() {
            return self.write_int(ty, v, out);
        }
        match ty {
            CType::Float => out.copy_from_slice(&(self.float(v)? as f32).to_le_bytes()),
            CType::Double => out.copy_from_slice(&self.float(v)?.to_le_bytes()),
            CType::LongDouble if self.target.os == Os::Windows => out.copy_from_slice(&self.float(v)?.to_le_bytes()),
            CType::LongDouble => out[..10].copy_from_slice(&ExtF80::from_f64(self.float(v)?).0),
            _ => {
                return Err(
                    self.err(MarshalErrorKind::Mismatch { expected: format!("a value for `{ty}`"), got: "a number" })
                )
            }
        }
        Ok(())
    }

    fn reserve(&mut self) -> u32 {
        self.data.blocks.push(Block::default());
        (self.data.blocks.len() - 1) as u32
    }

    #[allow(clippy::too_many_arguments)]
    fn write_array(
        &mut self,
        ty: &'s CType,
        of: &'s CType,
        n: u32,
        v: &'v Value,
        out: &mut [u8],
        loc: Loc,
        base: u64,
        dir: Direction,
    ) -> Result<(), MarshalError> {
        let too_long = |got| MarshalErrorKind::TooLong { got, ty: ty.to_string() };
        match v {
            Value::Bytes(_) | Value::Str(_) if matches!(v, Value::Bytes(_)) || of.is_byte() => {
                let b = v.as_bytes().expect("bytes or text");
                if b.len() > out.len() {
                    return Err(self.err(too_long(b.len())));
                }
                out[..b.len()].copy_from_slice(b);
            }
            Value::Str(s) if *of == CType::WChar => {
                let w = self.wide(s, false);
                if w.len() > out.len() {
                    return Err(self.err(too_long(s.chars().count())));
                }
                out[..w.len()].copy_from_slice(&w);
            }
            Value::Array(vals) => {
                if vals.len() > n as usize {
                    return Err(self.err(too_long(vals.len())));
                }
                let size = self.size_of(of)?;
                for (i, ev) in vals.iter().enumerate() {
                    self.path.push(Seg::Index(i as u64));
                    let off = size * i as u64;
                    self.write(of, ev, &mut out[off as usize..(off + size) as usize], loc, base + off, dir)?;
                    self.path.pop();
                }
            }
            Value::Numbers(nums) => {
                if nums.len() > n as usize {
                    return Err(self.err(too_long(nums.len())));
                }
                self.write_numbers(of, nums.as_slice(), out)?;
            }
            _ => return Err(self.mismatch(format!("Value::Array for `{ty}`"), v)),
        }
        Ok(())
    }

    /// Text as the target's `wchar_t` units (UTF-32 on Linux, UTF-16 on Windows), little endian.
    fn wide(&self, s: &str, nul: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if self.target.os == Os::Windows {
            for u in s.encode_utf16().chain(nul.then_some(0)) {
                out.extend_from_slice(&u.to_le_bytes());
            }
        } else {
            for c in s.chars().map(u32::from).chain(nul.then_some(0)) {
                out.extend_from_slice(&c.to_le_bytes());
            }
        }
        out
    }
}

/// Whether numbers of `kind` are laid out on `target` exactly as elements of `ty` are (same size, same
/// class and signedness; both ends little endian), so their bytes can go as they are.
fn numbers_match(target: &Target, ty: &CType, kind: NumKind) -> bool {
    if !cfg!(target_endian = "little") {
        return false;
    }
    match ty {
        CType::Float => kind == NumKind::F32,
        CType::Double => kind == NumKind::F64,
        CType::LongDouble => kind == NumKind::F64 && target.os == Os::Windows,
        CType::Bool => false,
        t if t.is_integer() => {
            !kind.is_float()
                && target.layout(t).ok().map(|l| l.size) == Some(kind.size() as u64)
                && target.int_signed(t) == kind.is_signed_int()
        }
        _ => false,
    }
}

/// The values a bit-field of `width` bits of type `ty` holds.
fn bit_range(target: &Target, ty: &CType, width: u32) -> (i128, i128) {
    if target.int_signed(ty) && *ty != CType::Bool {
        (-(1i128 << (width - 1)), (1i128 << (width - 1)) - 1)
    } else {
        (0, (1i128 << width) - 1)
    }
}

/// Sets `width` bits of `out` from bit `bit` (least significant first) to the low bits of `v`.
fn set_bits(out: &mut [u8], bit: u64, width: u32, v: u128) {
    for i in 0..u64::from(width) {
        let (byte, shift) = (((bit + i) / 8) as usize, (bit + i) % 8);
        if v >> i & 1 == 1 {
            out[byte] |= 1 << shift;
        } else {
            out[byte] &= !(1 << shift);
        }
    }
}

/// Reads `width` bits of `bytes` from bit `bit` as a value of the bit-field's type `ty`.
fn get_bits(target: &Target, ty: &CType, bytes: &[u8], bit: u64, width: u32) -> Option<Value> {
    let mut raw = 0u128;
    for i in 0..u64::from(width) {
        let (byte, shift) = (((bit + i) / 8) as usize, (bit + i) % 8);
        raw |= u128::from(bytes.get(byte)? >> shift & 1) << i;
    }
    Some(if *ty == CType::Bool {
        Value::Bool(raw != 0)
    } else if target.int_signed(ty) && width > 0 {
        let shift = 128 - width;
        Value::Int((((raw << shift) as i128) >> shift) as i64)
    } else {
        Value::UInt(raw as u64)
    })
}

fn nul_terminated(b: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(b.len() + 1);
    v.extend_from_slice(b);
    v.push(0);
    v
}

/// Whether a value of `ty` can make more than its own top-level block.
fn has_nested_pointer(ty: &CType) -> bool {
    match ty {
        CType::Pointer(to) => to.contains_pointer(),
        CType::CStr | CType::WStr | CType::FnPtr(_) => false,
        other => other.contains_pointer(),
    }
}

/// Reads a value of type `ty` from bytes laid out for `target`. Pointers become [`Value::Pointer`],
/// byte arrays [`Value::Bytes`], unions [`Value::Union`] (every member's view).
pub fn decode_value(target: &Target, ty: &CType, bytes: &[u8]) -> Result<Value, MarshalError> {
    Reader { target, blocks: &[], next: 0, path: Path::one(Seg::Named("value")), addrs: &[], in_block: false }
        .fresh(ty, bytes)
}

/// A call's return value from its bytes, as [`decode_results_at`] reads it (errors name "return
/// value"), for calls that passed no memory: nothing else to read back. `Void` for `void`.
pub fn decode_return(target: &Target, ty: &CType, bytes: &[u8]) -> Result<Value, MarshalError> {
    if *ty == CType::Void {
        return Ok(Value::Void);
    }
    Reader { target, blocks: &[], next: 0, path: Path::one(Seg::Named("return value")), addrs: &[], in_block: false }
        .fresh(ty, bytes)
}

/// Wide-character units read from the server (a `wchar_t *` string without its NUL) as text.
pub fn decode_wide(target: &Target, units: &[u8]) -> String {
    Reader { target, blocks: &[], next: 0, path: Path::default(), addrs: &[], in_block: false }.wide_str(units)
}

/// Reads the arguments of a callback the server reports ([`Request::Callback`](crate::Request)):
/// pointer arguments become the value they point to (or `NULL`), `char *` strings become text.
pub fn decode_callback_args(target: &Target, sig: &Signature, call: &CallData) -> Result<Vec<Value>, MarshalError> {
    let sizes: Vec<u64> = sig
        .params
        .iter()
        .map(|p| target.layout(&p.ty).map(|l| l.size))
        .collect::<Result<_, _>>()
        .map_err(|e| MarshalError { path: "callback arguments".into(), kind: e.into() })?;
    let (offsets, total) = crate::msg::arg_slots(sizes.iter().copied());
    let short = |got: usize, want: u64| MarshalError {
        path: "callback arguments".into(),
        kind: MarshalErrorKind::Short { got, want, ty: sig.to_string() },
    };
    if (call.args.len() as u64) < total {
        return Err(short(call.args.len(), total));
    }
    let mut out = Vec::with_capacity(sig.params.len());
    for (i, p) in sig.params.iter().enumerate() {
        let slot = &call.args[offsets[i] as usize..(offsets[i] + sizes[i]) as usize];
        let block =
            call.relocs.iter().find(|r| r.at == Loc::Arg(i as u32)).and_then(|r| call.blocks.get(r.block as usize));
        let v = match (&p.ty, block) {
            (CType::CStr, Some(b)) => {
                String::from_utf8(b.data.clone()).map(Value::Str).unwrap_or_else(|e| Value::Bytes(e.into_bytes()))
            }
            (CType::Pointer(to), Some(b)) if **to != CType::Void => decode_value(target, to, &b.data)?,
            (ty, _) => decode_value(target, ty, slot)?,
        };
        out.push(v);
    }
    Ok(out)
}

/// Lays out a callback's results for the server: the return value, and for each block with
/// `copy_back` the new value of the argument it belongs to (which the callback may have changed).
pub fn encode_callback_result(
    target: &Target,
    sig: &Signature,
    ret: &Value,
    args: &[Value],
    call: &CallData,
) -> Result<Returned, MarshalError> {
    let value = match &sig.ret {
        CType::Void => Vec::new(),
        ty => encode_value(target, ty, ret).map_err(|mut e| {
            e.path = "callback return value".into();
            e
        })?,
    };
    let mut blocks = Vec::new();
    for (j, b) in call.blocks.iter().enumerate() {
        if !b.copy_back {
            continue;
        }
        let arg = call.relocs.iter().find(|r| r.block == j as u32).and_then(|r| match r.at {
            Loc::Arg(i) => Some(i as usize),
            Loc::Block(_) => None,
        });
        let bytes = match arg.and_then(|i| Some((sig.params.get(i)?, args.get(i)?))) {
            Some((p, v)) => match &p.ty {
                CType::Pointer(to) => encode_value(target, to, v)?,
                _ => b.data.clone(),
            },
            None => b.data.clone(),
        };
        blocks.push(bytes);
    }
    Ok(Returned { value, string: None, blocks, errno: None, last_error: None, addrs: Vec::new() })
}

/// Reads a call's return value and the `Out`/`InOut` arguments back, in the shapes they were given.
/// Returns the return value and, per parameter, `Some(value after the call)` for those copied back.
pub fn decode_returned(
    target: &Target,
    sig: &Signature,
    values: &[Value],
    plan: &CallPlan,
    returned: Returned,
) -> Result<(Value, Vec<Option<Value>>), MarshalError> {
    let expected = plan.copy_back.iter().filter(|&&c| c).count();
    if returned.blocks.len() != expected {
        return Err(MarshalError {
            path: "reply".into(),
            kind: MarshalErrorKind::BlockCount { expected, got: returned.blocks.len() },
        });
    }
    let mut back = returned.blocks.iter();
    let views: Vec<Option<&[u8]>> =
        plan.copy_back.iter().map(|&c| if c { back.next().map(Vec::as_slice) } else { None }).collect();
    decode_results_at(target, sig, values, plan, &returned.value, returned.string, &views, &returned.addrs)
}

/// Like [`decode_returned`], with the content of each block after the call given directly (`None` for
/// blocks that do not come back: for blocks read in place from shared memory), knowing the server's
/// address of every block (`addrs`, from
/// [`Returned::addrs`]): a pointer inside a copied-back block that the library replaced (it no longer
/// holds its block's address) is read back as [`Value::Pointer`] with the new address (`NULL`
/// included), never as the old content of its block. [`follow_up`] lists them. With `addrs` empty,
/// pointers are taken to be unchanged.
#[allow(clippy::too_many_arguments)]
pub fn decode_results_at(
    target: &Target,
    sig: &Signature,
    values: &[Value],
    plan: &CallPlan,
    value: &[u8],
    string: Option<Vec<u8>>,
    blocks: &[Option<&[u8]>],
    addrs: &[u64],
) -> Result<(Value, Vec<Option<Value>>), MarshalError> {
    decode_results_borrowed(target, sig, values, &[], plan, value, string, blocks, addrs)
}

/// Like [`decode_results_at`] for a call encoded by [`encode_call_borrowed`]: where `borrowed[i]`, the
/// argument's block is counted but not read (its out value is `None`): the caller reads it into its
/// numbers with [`decode_numbers_into`].
#[allow(clippy::too_many_arguments)]
pub fn decode_results_borrowed(
    target: &Target,
    sig: &Signature,
    values: &[Value],
    borrowed: &[bool],
    plan: &CallPlan,
    value: &[u8],
    string: Option<Vec<u8>>,
    blocks: &[Option<&[u8]>],
    addrs: &[u64],
) -> Result<(Value, Vec<Option<Value>>), MarshalError> {
    let mut r = Reader { target, blocks, next: 0, path: Path::one(Seg::Named("return value")), addrs, in_block: false };
    let ret = match (&sig.ret, string) {
        (CType::Void, _) => Value::Void,
        (CType::CStr | CType::WStr, None) => Value::NULL,
        (CType::CStr, Some(b)) => String::from_utf8(b).map(Value::Str).unwrap_or_else(|e| Value::Bytes(e.into_bytes())),
        (CType::WStr, Some(b)) => Value::Str(r.wide_str(&b)),
        (ty, _) => r.fresh(ty, value)?,
    };
    let mut outs = Vec::with_capacity(values.len());
    if !plan.copy_back.iter().any(|&c| c) {
        outs.resize(values.len(), None);
        return Ok((ret, outs));
    }
    for (i, (p, v)) in sig.params.iter().zip(values).enumerate() {
        if borrowed.get(i).copied().unwrap_or(false) {
            r.next += 1; // its one block (numbers hold no pointers)
            outs.push(None);
            continue;
        }
        r.path = Path::one(Seg::Arg(i));
        outs.push(r.param(&p.ty, p.dir, v)?);
    }
    Ok((ret, outs))
}

/// Reads the memory of pointer argument `arg` (to `to`) after the call into `out`, in place: its bytes
/// as they are when the layouts match, else each element converted, one that does not fit `out`'s kind
/// being an error naming the argument and the element.
pub fn decode_numbers_into(
    target: &Target,
    to: &CType,
    arg: usize,
    block: &[u8],
    out: &mut NumSliceMut<'_>,
) -> Result<(), MarshalError> {
    let r = Reader { target, blocks: &[], next: 0, path: Path::one(Seg::Arg(arg)), addrs: &[], in_block: true };
    let kind = out.kind();
    let n = out.len();
    if *to == CType::Void || numbers_match(target, to, kind) {
        let want = (n * kind.size()) as u64;
        let b = block
            .get(..want as usize)
            .ok_or_else(|| r.err(MarshalErrorKind::Short { got: block.len(), want, ty: format!("{to}[{n}]") }))?;
        out.as_mut_bytes().copy_from_slice(b);
        return Ok(());
    }
    let size = r.size_of(to)? as usize;
    for i in 0..n {
        let v = r.fresh(to, block.get(i * size..).unwrap_or(&[]))?;
        if !out.set(i, &v) {
            let (min, max) = kind_range(kind);
            let value = match v {
                Value::Int(x) => i128::from(x),
                Value::UInt(x) => i128::from(x),
                _ => {
                    let e = MarshalErrorKind::Mismatch { expected: format!("a {}", kind.name()), got: v.kind() };
                    return Err(MarshalError { path: format!("{} -> [{i}]", render(&r.path)), kind: e });
                }
            };
            let e = MarshalErrorKind::OutOfRange { value, ty: kind.name().into(), min, max };
            return Err(MarshalError { path: format!("{} -> [{i}]", render(&r.path)), kind: e });
        }
    }
    Ok(())
}

/// The range of an integer kind (floats: unused).
fn kind_range(kind: NumKind) -> (i128, i128) {
    match kind {
        NumKind::I8 => (i8::MIN.into(), i8::MAX.into()),
        NumKind::U8 => (0, u8::MAX.into()),
        NumKind::I16 => (i16::MIN.into(), i16::MAX.into()),
        NumKind::U16 => (0, u16::MAX.into()),
        NumKind::I32 => (i32::MIN.into(), i32::MAX.into()),
        NumKind::U32 => (0, u32::MAX.into()),
        NumKind::I64 => (i64::MIN.into(), i64::MAX.into()),
        NumKind::U64 => (0, u64::MAX.into()),
        _ => (0, 0),
    }
}

struct Reader<'a, 's> {
    target: &'a Target,
    blocks: &'a [Option<&'a [u8]>],
    /// The number of the next block, counted in the encoder's order.
    next: u32,
    path: Path<'s>,
    /// The server's address of each block (empty: unknown).
    addrs: &'a [u64],
    /// Whether the bytes being read are a block's content after the call (not an argument slot).
    in_block: bool,
}

impl<'s> Reader<'_, 's> {
    fn err(&self, kind: MarshalErrorKind) -> MarshalError {
        MarshalError { path: render(&self.path), kind }
    }

    fn size_of(&self, ty: &CType) -> Result<u64, MarshalError> {
        self.target.layout(ty).map(|l| l.size).map_err(|e| self.err(e.into()))
    }

    fn slice<'b>(&self, bytes: &'b [u8], off: u64, ty: &CType) -> Result<&'b [u8], MarshalError> {
        let size = self.size_of(ty)?;
        bytes
            .get(off as usize..(off + size) as usize)
            .ok_or_else(|| self.err(MarshalErrorKind::Short { got: bytes.len(), want: off + size, ty: ty.to_string() }))
    }

    /// A parameter after the call: walks every value that made a block, to keep the count in step.
    fn param(&mut self, ty: &'s CType, dir: Direction, v: &Value) -> Result<Option<Value>, MarshalError> {
        if dir == Direction::In || !matches!(ty, CType::Pointer(_)) {
            // Nothing of it comes back; only the blocks it made are counted.
            if !has_nested_pointer(ty) {
                self.next += u32::from(ty.is_pointer() && !matches!(v, Value::Pointer(_)));
                return Ok(None);
            }
        }
        let scratch = vec![0u8; self.size_of(ty)? as usize];
        let after = self.like(ty, v, &scratch)?;
        Ok((dir != Direction::In && matches!(ty, CType::Pointer(_)) && !matches!(v, Value::Pointer(_)))
            .then_some(after))
    }

    /// Reads a value of type `ty` shaped like `orig` from `bytes`; where `orig` made a block, reads the
    /// block (if it came back) instead of the address.
    fn like(&mut self, ty: &'s CType, orig: &Value, bytes: &[u8]) -> Result<Value, MarshalError> {
        match (ty, orig) {
            (_, Value::Pointer(_)) if ty.is_pointer() => self.fresh(ty, bytes),
            (_, Value::Shared { .. }) if ty.is_pointer() => {
                self.next += 1; // its block is the shared memory itself: nothing comes back
                Ok(orig.clone())
            }
            (CType::CStr | CType::WStr, _) => {
                let index = self.next;
                self.next += 1; // its block never comes back
                Ok(self.replaced(index, bytes).unwrap_or_else(|| orig.clone()))
            }
            (CType::Pointer(to), _) => {
                let index = self.next;
                self.next += 1;
                let replaced = self.replaced(index, bytes);
                let blocks = self.blocks;
                match blocks.get(index as usize) {
                    Some(Some(block)) => {
                        let v = self.pointee(to, orig, block)?;
                        // Walked either way, to keep the block count in step.
                        Ok(replaced.unwrap_or(v))
                    }
                    _ => {
                        // Not copied back (under an `In` parameter, whose value is not returned): walk it
                        // only to count the blocks nested in it.
                        if to.contains_pointer() {
                            let len = self.pointee_len(to, orig)?;
                            self.pointee(to, orig, &vec![0u8; len])?;
                        }
                        Ok(Value::Void)
                    }
                }
            }
            (CType::Struct(def), Value::Struct(vals)) => {
                let layout = self.target.struct_layout(def).map_err(|e| self.err(e.into()))?;
                let mut out = Vec::with_capacity(vals.len());
                for (i, ((f, off), fv)) in def.fields.iter().zip(&layout.offsets).zip(vals).enumerate() {
                    self.path.push(Seg::Field(&f.name));
                    if let Some(v) = self.bit_field(f, layout.bit_offsets.get(i).copied().flatten(), bytes)? {
                        out.push(v);
                    } else {
                        let b = self.slice(bytes, *off, &f.ty)?;
                        out.push(self.like(&f.ty, fv, b)?);
                    }
                    self.path.pop();
                }
                Ok(Value::Struct(out))
            }
            (CType::Union(def), Value::Variant(i, member)) => {
                let f = def.fields.get(*i as usize).ok_or_else(|| {
                    self.err(MarshalErrorKind::Mismatch {
                        expected: format!("a member of `{ty}`"),
                        got: "a larger index",
                    })
                })?;
                if let Some(v) = self.bit_field(f, Some(0), bytes)? {
                    return Ok(Value::Variant(*i, Box::new(v)));
                }
                let b = self.slice(bytes, 0, &f.ty)?;
                Ok(Value::Variant(*i, Box::new(self.like(&f.ty, member, b)?)))
            }
            (CType::Array(of, n), Value::Numbers(nums)) => self.numbers_back(of, nums.kind(), *n as usize, bytes),
            (CType::Array(of, n), Value::Array(vals)) => {
                let size = self.size_of(of)?;
                let mut out = Vec::with_capacity(*n as usize);
                for i in 0..u64::from(*n) {
                    self.path.push(Seg::Index(i));
                    let b = self.slice(bytes, i * size, of)?;
                    out.push(match vals.get(i as usize) {
                        Some(ev) => self.like(of, ev, b)?,
                        None => self.fresh(of, b)?,
                    });
                    self.path.pop();
                }
                Ok(Value::Array(out))
            }
            _ => self.fresh(ty, bytes),
        }
    }

    /// The size of the block made for a pointee given as `orig`.
    fn pointee_len(&self, to: &CType, orig: &Value) -> Result<usize, MarshalError> {
        let size = if *to == CType::Void { 1 } else { self.size_of(to)? } as usize;
        Ok(match orig {
            Value::Bytes(b) => b.len(),
            Value::Str(s) if to.is_byte() => s.len() + 1,
            Value::Str(s) => (s.chars().count() + 1) * size,
            Value::Zeros(n) => *n as usize * size,
            Value::Array(v) => v.len() * size,
            Value::Numbers(v) if *to == CType::Void => v.as_bytes().len(),
            Value::Numbers(v) => v.len() * size,
            _ => size,
        })
    }

    /// When the pointer at the start of `bytes` (inside a block after the call) no longer holds the
    /// address of its block `index`: the address it holds now.
    fn replaced(&self, index: u32, bytes: &[u8]) -> Option<Value> {
        if !self.in_block {
            return None;
        }
        let block_addr = *self.addrs.get(index as usize)?;
        let size = self.target.pointer_size() as usize;
        let mut raw = [0u8; 8];
        raw[..size].copy_from_slice(bytes.get(..size)?);
        let now = u64::from_le_bytes(raw);
        (now != block_addr).then_some(Value::Pointer(now))
    }

    /// Reads the memory a pointer to `to` pointed to, shaped like `orig`.
    fn pointee(&mut self, to: &'s CType, orig: &Value, block: &[u8]) -> Result<Value, MarshalError> {
        let outer = std::mem::replace(&mut self.in_block, true);
        let v = self.pointee_in(to, orig, block);
        self.in_block = outer;
        v
    }

    fn pointee_in(&mut self, to: &'s CType, orig: &Value, block: &[u8]) -> Result<Value, MarshalError> {
        Ok(match orig {
            Value::Bytes(_) => Value::Bytes(block.to_vec()),
            Value::Str(_) if to.is_byte() => {
                let end = block.iter().position(|&c| c == 0).unwrap_or(block.len());
                String::from_utf8(block[..end].to_vec())
                    .map(Value::Str)
                    .unwrap_or_else(|e| Value::Bytes(e.into_bytes()))
            }
            Value::Str(_) if *to == CType::WChar => Value::Str(self.wide_str(block)),
            Value::Zeros(_) if to.is_byte() || *to == CType::Void => Value::Bytes(block.to_vec()),
            Value::Zeros(n) => {
                let size = self.size_of(to)?;
                let mut out = Vec::with_capacity(*n as usize);
                for i in 0..u64::from(*n) {
                    out.push(self.fresh(to, self.slice(block, i * size, to)?)?);
                }
                Value::Array(out)
            }
            Value::Numbers(nums) => self.numbers_back(to, nums.kind(), nums.len(), block)?,
            Value::Array(vals) => {
                let size = self.size_of(to)?;
                let mut out = Vec::with_capacity(vals.len());
                for (i, ev) in vals.iter().enumerate() {
                    self.path.push(Seg::Index(i as u64));
                    let b = self.slice(block, i as u64 * size, to)?;
                    out.push(self.like(to, ev, b)?);
                    self.path.pop();
                }
                Value::Array(out)
            }
            single => {
                let b = self.slice(block, 0, to)?;
                self.like(to, single, b)?
            }
        })
    }

    /// Reads `n` elements of `of` given as numbers of `kind`: as `Numbers` of that kind (their bytes as
    /// they are when the layouts match), or a `Value::Array` when an element does not fit the kind.
    fn numbers_back(&self, of: &CType, kind: NumKind, n: usize, bytes: &[u8]) -> Result<Value, MarshalError> {
        let matches = *of == CType::Void || numbers_match(self.target, of, kind);
        let size = if matches { kind.size() as u64 } else { self.size_of(of)? };
        let want = size * n as u64;
        let b = bytes
            .get(..want as usize)
            .ok_or_else(|| self.err(MarshalErrorKind::Short { got: bytes.len(), want, ty: format!("{of}[{n}]") }))?;
        if matches {
            return Ok(Value::Numbers(Numbers::from_le_bytes(kind, b)));
        }
        let vals = (0..n).map(|i| self.fresh(of, &b[i * size as usize..])).collect::<Result<Vec<_>, _>>()?;
        Ok(Numbers::from_values(kind, &vals).map_or(Value::Array(vals), Value::Numbers))
    }

    /// Reads a value with no original to follow.
    fn fresh(&self, ty: &CType, bytes: &[u8]) -> Result<Value, MarshalError> {
        let b = self.slice(bytes, 0, ty)?;
        let mut wide = [0u8; 16];
        wide[..b.len().min(16)].copy_from_slice(&b[..b.len().min(16)]);
        let raw = u128::from_le_bytes(wide);
        if ty.is_integer() {
            let bits = b.len() as u32 * 8;
            return Ok(if *ty == CType::Bool {
                Value::Bool(raw != 0)
            } else if self.target.int_signed(ty) {
                let shift = 128 - bits;
                Value::Int((((raw << shift) as i128) >> shift) as i64)
            } else {
                Value::UInt(raw as u64)
            });
        }
        Ok(match ty {
            CType::Float => Value::Float(f64::from(f32::from_le_bytes(b.try_into().expect("4 bytes")))),
            CType::Double => Value::Float(f64::from_le_bytes(b.try_into().expect("8 bytes"))),
            CType::LongDouble if b.len() == 8 => Value::Float(f64::from_le_bytes(b.try_into().expect("8 bytes"))),
            CType::LongDouble => Value::LongDouble(ExtF80(b[..10].try_into().expect("10 bytes"))),
            CType::Pointer(_) | CType::CStr | CType::WStr | CType::FnPtr(_) => Value::Pointer(raw as u64),
            CType::Array(of, n) if of.is_byte() => Value::Bytes(b[..*n as usize].to_vec()),
            CType::Array(of, n) => {
                let size = self.size_of(of)?;
                let mut out = Vec::with_capacity(*n as usize);
                for i in 0..u64::from(*n) {
                    out.push(self.fresh(of, self.slice(b, i * size, of)?)?);
                }
                Value::Array(out)
            }
            CType::Struct(def) => {
                let layout = self.target.struct_layout(def).map_err(|e| self.err(e.into()))?;
                let mut out = Vec::with_capacity(def.fields.len());
                for (i, (f, off)) in def.fields.iter().zip(&layout.offsets).enumerate() {
                    match self.bit_field(f, layout.bit_offsets.get(i).copied().flatten(), b)? {
                        Some(v) => out.push(v),
                        None => out.push(self.fresh(&f.ty, self.slice(b, *off, &f.ty)?)?),
                    }
                }
                Value::Struct(out)
            }
            CType::Union(def) => {
                let mut out = Vec::with_capacity(def.fields.len());
                for f in &def.fields {
                    match self.bit_field(f, Some(0), b)? {
                        Some(v) => out.push(v),
                        None => out.push(self.fresh(&f.ty, self.slice(b, 0, &f.ty)?)?),
                    }
                }
                Value::Union(out)
            }
            CType::Void => Value::Void,
            _ => unreachable!("integers are handled above"),
        })
    }

    /// A bit-field member's value (`None` for other members), read from the aggregate's `bytes`.
    fn bit_field(&self, f: &Field, bit: Option<u64>, bytes: &[u8]) -> Result<Option<Value>, MarshalError> {
        let (Some(width), Some(bit)) = (f.bits, bit) else { return Ok(None) };
        get_bits(self.target, &f.ty, bytes, bit, width).map(Some).ok_or_else(|| {
            self.err(MarshalErrorKind::Short {
                got: bytes.len(),
                want: (bit + u64::from(width)).div_ceil(8),
                ty: f.ty.to_string(),
            })
        })
    }

    /// Wide-character units (little endian) up to the first NUL, as text; unpaired or invalid units
    /// become U+FFFD.
    fn wide_str(&self, b: &[u8]) -> String {
        if self.target.os == Os::Windows {
            let units: Vec<u16> =
                b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
            String::from_utf16_lossy(&units)
        } else {
            b.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .take_while(|&u| u != 0)
                .map(|u| char::from_u32(u).unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect()
        }
    }
}

impl fmt::Display for CallPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} blocks", self.copy_back.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Returned;

    fn buf_ty() -> CType {
        CType::structure("Buf", [("n", CType::Int), ("data", CType::ptr(CType::Double))])
    }

    #[test]
    fn pointer_members_become_blocks_at_the_targets_offsets() {
        let sig = Signature::new(CType::Void).arg_inout(CType::ptr(buf_ty()));
        let v = [Value::Struct(vec![2.into(), Value::f64s([1.0, 2.0])])];
        for (target, off, size) in [(Target::I386_SYSV, 4, 8), (Target::X86_64_SYSV, 8, 16)] {
            let (data, plan) = encode_call(&target, &sig, &v).unwrap();
            assert_eq!(data.args, vec![0u8; target.pointer_size() as usize]);
            assert_eq!(data.blocks.len(), 2);
            assert_eq!(data.blocks[0].len, size);
            assert_eq!(data.blocks[1].data, [1.0f64.to_le_bytes(), 2.0f64.to_le_bytes()].concat());
            assert_eq!(
                data.relocs,
                vec![
                    Reloc { at: Loc::Block(0), offset: off, block: 1 },
                    Reloc { at: Loc::Arg(0), offset: 0, block: 0 }
                ]
            );
            assert_eq!(plan.copy_back, [true, true]);

            // Read back in the same shape, with what the server changed.
            let mut outer = data.blocks[0].data.clone();
            outer[..4].copy_from_slice(&3i32.to_le_bytes());
            let inner = [5.0f64.to_le_bytes(), 6.0f64.to_le_bytes()].concat();
            let returned = Returned { blocks: vec![outer, inner], ..Returned::default() };
            let (ret, outs) = decode_returned(&target, &sig, &v, &plan, returned).unwrap();
            assert_eq!(ret, Value::Void);
            assert_eq!(outs, vec![Some(Value::Struct(vec![Value::Int(3), Value::f64s([5.0, 6.0])]))]);
        }
    }

    #[test]
    fn bit_fields_round_trip_and_are_range_checked() {
        use crate::types::Field;
        let ty = CType::struct_of(
            "F",
            vec![
                Field::bit_field("ready", CType::Bool, 1),
                Field::bit_field("mode", CType::UInt, 3),
                Field::bit_field("level", CType::Int, 5),
                Field::bit_field("", CType::UInt, 0),
                Field::bit_field("big", CType::LongLong, 40),
            ],
            None,
        );
        let v = Value::Struct(vec![
            Value::Bool(true),
            Value::UInt(5),
            Value::Int(-3),
            Value::UInt(0),
            Value::Int(-(1 << 39)),
        ]);
        for t in [Target::I386_SYSV, Target::X86_64_SYSV, Target::WIN32, Target::WIN64] {
            let bytes = encode_value(&t, &ty, &v).unwrap();
            assert_eq!(decode_value(&t, &ty, &bytes).unwrap(), v, "{t}");
            if t.os == crate::Os::Linux {
                // gcc: ready, mode and level share the first bits: 1 | 5 << 1 | (-3 & 31) << 4.
                assert_eq!(u16::from_le_bytes([bytes[0], bytes[1]]) & 0x1ff, 1 | 5 << 1 | (29 << 4), "{t}");
            } else {
                // MSVC: `_Bool` has a unit of its own (1 byte); mode and level share the `unsigned` at 4.
                assert_eq!((bytes[0], bytes[4]), (1, 5 | (29 << 3)), "{t}");
            }
        }
        let bad = Value::Struct(vec![false.into(), 8u32.into(), 0.into(), 0.into(), 0.into()]);
        let e = encode_value(&Target::I386_SYSV, &ty, &bad).unwrap_err();
        assert_eq!(e.to_string(), "value -> .mode: 8 does not fit in `unsigned int : 3` (0..=7)");
    }

    #[test]
    fn a_reply_with_missing_blocks_is_an_error() {
        let sig = Signature::new(CType::Void).arg_out(CType::ptr(CType::Int));
        let v = [Value::Zeros(1)];
        let (_, plan) = encode_call(&Target::I386_SYSV, &sig, &v).unwrap();
        let e = decode_returned(&Target::I386_SYSV, &sig, &v, &plan, Returned::default()).unwrap_err();
        assert!(matches!(e.kind, MarshalErrorKind::BlockCount { expected: 1, got: 0 }));
    }

    #[test]
    fn out_memory_is_not_sent() {
        let sig = Signature::new(CType::Void).arg_out(CType::ptr(CType::Double));
        let (data, _) = encode_call(&Target::I386_SYSV, &sig, &[Value::Zeros(1000)]).unwrap();
        assert!(data.blocks[0].data.is_empty());
        assert_eq!(data.blocks[0].len, 8000);
    }

    #[test]
    fn errors_name_the_place() {
        let sig = Signature::new(CType::Void).arg(CType::UChar).arg(CType::ptr(buf_ty()));
        let e = encode_call(&Target::I386_SYSV, &sig, &[300.into(), 0.into()]).unwrap_err();
        assert_eq!(e.to_string(), "argument 1: 300 does not fit in `unsigned char` (0..=255)");
        let v = [1.into(), Value::Struct(vec![1.into(), Value::Array(vec!["x".into()])])];
        let e = encode_call(&Target::I386_SYSV, &sig, &v).unwrap_err();
        assert_eq!(e.path, "argument 2 -> .data -> [0]");
        let e = encode_value(&Target::I386_SYSV, &CType::array(CType::Int, 2), &Value::ints([1, 2, 3])).unwrap_err();
        assert!(matches!(e.kind, MarshalErrorKind::TooLong { got: 3, .. }));
    }

    #[test]
    fn numbers_of_the_targets_layout_go_as_their_bytes_and_come_back_packed() {
        let sig = Signature::new(CType::Void).arg_inout(CType::ptr(CType::Double)).arg(CType::ptr(CType::Int));
        let v = [Value::f64s([1.0, 2.5]), Value::from(vec![7i32, -8])];
        let (data, plan) = encode_call(&Target::I386_SYSV, &sig, &v).unwrap();
        assert_eq!(data.blocks[0].data, [1.0f64.to_le_bytes(), 2.5f64.to_le_bytes()].concat());
        assert_eq!(data.blocks[1].data, [7i32.to_le_bytes(), (-8i32).to_le_bytes()].concat());
        // Large enough: borrowed, not copied into the block.
        let (data2, _, deferred) = encode_call_bulk(&Target::I386_SYSV, &sig, &v, 16).unwrap();
        assert!(data2.blocks[0].data.is_empty() && data2.blocks[0].len == 16);
        let Value::Numbers(n) = &v[0] else { panic!() };
        assert!(std::ptr::eq(deferred[0].1, n.as_bytes()));
        assert_eq!(deferred.len(), 1, "8 bytes of i32s stay below the threshold");
        let back = [4.0f64.to_le_bytes(), 5.0f64.to_le_bytes()].concat();
        let returned = Returned { blocks: vec![back], ..Returned::default() };
        let (_, outs) = decode_returned(&Target::I386_SYSV, &sig, &v, &plan, returned).unwrap();
        assert!(matches!(&outs[0], Some(Value::Numbers(Numbers::F64(x))) if *x == [4.0, 5.0]));
        assert_eq!(outs[0], Some(Value::Array(vec![Value::Float(4.0), Value::Float(5.0)])));
        assert_eq!(outs[1], None);
    }

    #[test]
    fn numbers_of_another_layout_are_converted_and_range_checked() {
        // i64s into a 4-byte `long` on i386 (8 bytes on x86_64, where they go as they are).
        let sig = Signature::new(CType::Void).arg(CType::Int).arg_inout(CType::ptr(CType::Long));
        let v = [Value::Int(0), Value::from(vec![1i64, -2])];
        let (data, plan) = encode_call(&Target::I386_SYSV, &sig, &v).unwrap();
        assert_eq!(data.blocks[0].data, [1i32.to_le_bytes(), (-2i32).to_le_bytes()].concat());
        let back = [3i32.to_le_bytes(), (-4i32).to_le_bytes()].concat();
        let returned = Returned { blocks: vec![back], ..Returned::default() };
        let (_, outs) = decode_returned(&Target::I386_SYSV, &sig, &v, &plan, returned).unwrap();
        assert!(matches!(&outs[1], Some(Value::Numbers(Numbers::I64(x))) if *x == [3, -4]));
        let (data, _) = encode_call(&Target::X86_64_SYSV, &sig, &v).unwrap();
        assert_eq!(data.blocks[0].data, [1i64.to_le_bytes(), (-2i64).to_le_bytes()].concat());

        let big = [Value::Int(0), Value::from(vec![1i64, 1 << 40])];
        let e = encode_call(&Target::I386_SYSV, &sig, &big).unwrap_err();
        assert_eq!(e.to_string(), "argument 2 -> [1]: 1099511627776 does not fit in `long` (-2147483648..=2147483647)");
        // Unsigned into signed of the same size: checked too.
        let sig = Signature::new(CType::Void).arg(CType::ptr(CType::Int));
        let e = encode_call(&Target::I386_SYSV, &sig, &[Value::from(vec![1u32, u32::MAX])]).unwrap_err();
        assert_eq!(e.path, "argument 1 -> [1]");
        // Floats for integers are refused, integers for floats converted.
        let e = encode_call(&Target::I386_SYSV, &sig, &[Value::f64s([1.0])]).unwrap_err();
        assert_eq!(e.to_string(), "argument 1 -> [0]: expected an integer for `int`, got a float");
        let sig = Signature::new(CType::Void).arg(CType::ptr(CType::Float));
        let (data, _) = encode_call(&Target::I386_SYSV, &sig, &[Value::ints([3])]).unwrap();
        assert_eq!(data.blocks[0].data, 3.0f32.to_le_bytes());
        // Numbers cannot stand for structs.
        let sig = Signature::new(CType::Void).arg(CType::ptr(buf_ty()));
        let e = encode_call(&Target::I386_SYSV, &sig, &[Value::ints([3])]).unwrap_err();
        assert_eq!(e.to_string(), "argument 1 -> [0]: expected a value for `struct Buf`, got a number");
    }

    #[test]
    fn numbers_fill_c_arrays_and_read_back_as_numbers_when_they_fit() {
        let ty = CType::structure("A", [("n", CType::Int), ("xs", CType::array(CType::Short, 3))]);
        let sig = Signature::new(CType::Void).arg_inout(CType::ptr(ty.clone()));
        let v = [Value::Struct(vec![Value::Int(2), Value::from(vec![1u16, 2])])];
        let (data, plan) = encode_call(&Target::I386_SYSV, &sig, &v).unwrap();
        assert_eq!(&data.blocks[0].data[4..10], &[1, 0, 2, 0, 0, 0]);
        let mut after = data.blocks[0].data.clone();
        after[8..10].copy_from_slice(&(-1i16).to_le_bytes()); // does not fit a u16
        let returned = Returned { blocks: vec![after], ..Returned::default() };
        let (_, outs) = decode_returned(&Target::I386_SYSV, &sig, &v, &plan, returned).unwrap();
        let Some(Value::Struct(m)) = &outs[0] else { panic!() };
        assert!(matches!(&m[1], Value::Array(_)), "an element out of the kind's range: read as values");
        assert_eq!(m[1], Value::Array(vec![Value::Int(1), Value::Int(2), Value::Int(-1)]));
        let e = encode_value(&Target::I386_SYSV, &ty, &Value::Struct(vec![Value::Int(0), Value::from(vec![0u16; 4])]))
            .unwrap_err();
        assert_eq!(e.to_string(), "value -> .xs: 4 elements do not fit in `short[3]`");
    }

    #[test]
    fn text_for_a_char_pointer_is_still_its_bytes_and_nul() {
        let sig = Signature::new(CType::Void).arg_inout(CType::ptr(CType::Char));
        let (data, _) = encode_call(&Target::I386_SYSV, &sig, &["ab".into()]).unwrap();
        assert_eq!(data.blocks[0].data, b"ab\0");
    }

    #[test]
    fn out_numbers_are_not_sent_and_void_pointers_take_their_bytes() {
        let sig = Signature::new(CType::Void).arg_out(CType::ptr(CType::Double)).arg_inout(CType::void_ptr());
        let v = [Value::f64s([9.0; 4]), Value::from(vec![1u16, 2])];
        let (data, plan) = encode_call(&Target::X86_64_SYSV, &sig, &v).unwrap();
        assert!(data.blocks[0].data.is_empty());
        assert_eq!(data.blocks[0].len, 32);
        assert_eq!(data.blocks[1].data, [1, 0, 2, 0]);
        let returned = Returned { blocks: vec![vec![0; 32], vec![3, 0, 4, 0]], ..Returned::default() };
        let (_, outs) = decode_returned(&Target::X86_64_SYSV, &sig, &v, &plan, returned).unwrap();
        assert_eq!(outs[0], Some(Value::f64s([0.0; 4])));
        assert!(matches!(&outs[1], Some(Value::Numbers(Numbers::U16(x))) if *x == [3, 4]));
    }

    #[test]
    fn borrowed_numbers_are_sent_and_read_back_in_place() {
        let sig = Signature::new(CType::Void).arg_inout(CType::ptr(CType::Long)).arg(CType::Int);
        let mut xs = [1i64, -2];
        let borrowed = [Some(NumSlice::I64(&xs)), None];
        let v = [Value::Void, Value::Int(2)];
        let (data, plan, _) = encode_call_borrowed(&Target::I386_SYSV, &sig, &v, &borrowed, u64::MAX).unwrap();
        assert_eq!(data.blocks[0].data, [1i32.to_le_bytes(), (-2i32).to_le_bytes()].concat());
        assert!(data.blocks[0].copy_back);
        let after = [5i32.to_le_bytes(), (-6i32).to_le_bytes()].concat();
        let views = [Some(&after[..])];
        let (_, outs) =
            decode_results_borrowed(&Target::I386_SYSV, &sig, &v, &[true, false], &plan, &[], None, &views, &[])
                .unwrap();
        assert_eq!(outs, [None, None]);
        decode_numbers_into(&Target::I386_SYSV, &CType::Long, 0, &after, &mut NumSliceMut::I64(&mut xs)).unwrap();
        assert_eq!(xs, [5, -6]);
        // Read back into a kind the values do not fit: an error naming the argument and the element.
        let mut small = [0u16; 2];
        let e = decode_numbers_into(&Target::I386_SYSV, &CType::Long, 0, &after, &mut NumSliceMut::U16(&mut small))
            .unwrap_err();
        assert_eq!(e.to_string(), "argument 1 -> [1]: -6 does not fit in `u16` (0..=65535)");
        // Borrowed numbers stand only for pointers.
        let both = [Some(NumSlice::I64(&[1])), Some(NumSlice::I32(&[1]))];
        let e = encode_call_borrowed(&Target::I386_SYSV, &sig, &v, &both, u64::MAX).unwrap_err();
        assert_eq!(e.to_string(), "argument 2: expected a value for `int`, got an array of numbers");
    }

    #[test]
    fn values_round_trip_through_bytes() {
        let ty = CType::structure(
            "S",
            [
                ("c", CType::Char),
                ("d", CType::Double),
                ("w", CType::array(CType::WChar, 4)),
                ("u", CType::union("U", [("i", CType::Int), ("f", CType::Float)])),
                ("p", CType::void_ptr()),
                ("l", CType::Long),
            ],
        );
        for t in [Target::I386_SYSV, Target::X86_64_SYSV, Target::WIN32, Target::WIN64] {
            let v = Value::Struct(vec![
                (-5).into(),
                2.5.into(),
                Value::ints([65, 66, 0, 0]),
                Value::Variant(0, Box::new(7.into())),
                Value::Pointer(0xdead),
                (-1).into(),
            ]);
            let bytes = encode_value(&t, &ty, &v).unwrap();
            assert_eq!(bytes.len() as u64, t.layout(&ty).unwrap().size);
            let back = decode_value(&t, &ty, &bytes).unwrap();
            let Value::Struct(f) = back else { panic!() };
            assert_eq!(f[0], Value::Int(-5));
            assert_eq!(f[1], Value::Float(2.5));
            assert_eq!(f[3].get(0), Some(&Value::Int(7)));
            assert_eq!(f[4], Value::Pointer(0xdead));
            assert_eq!(f[5], Value::Int(-1));
            let w = if t.os == crate::Os::Windows { Value::UInt(65) } else { Value::Int(65) };
            assert_eq!(f[2].get(0), Some(&w));
        }
    }
}
