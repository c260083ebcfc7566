//! Typed calls: Rust types for C types, over the dynamic [`Value`] layer (as libffi-rs's `high` sits
//! over its `middle`).
//!
//! - [`CValue`]: a Rust type with a C type ([`CValue::ctype`]) and conversions to and from [`Value`].
//!   The name: libffi-rs and safer_ffi call this trait `CType`, which here is already the enum of C
//!   type *descriptions*; a `CValue` is a Rust value that has one. Implemented for the integers (`i32`
//!   is `int32_t`, ...), `f32`, `f64`, `bool`, `usize`/`isize` (`size_t`/`ssize_t`), [`CLong`] and
//!   [`CULong`] (`long`, whose width is the server's), [`Addr`] (`void *` in the server), arrays `[T;
//!   N]`, `String`/`CString`/`Option<String>` (`char *` strings), and every `#[derive(CStruct)]`
//!   struct.
//! - [`CArg`]: how one parameter is passed. A `CValue` is passed by value; the pointer wrappers
//!   [`In`], [`Out`] and [`InOut`] (of one `T`, or of a slice `[T]`) pass a `T *` whose memory travels
//!   as their name says; `&str` passes a `char *` string.
//! - [`CArgs`]: the parameter list, a tuple of up to 12 `CArg`s; [`CReturn`]: `()` or a `CValue`.
//! - [`TypedFunction`]: from [`Library::typed`]; [`TypedFunction::call`] takes the arguments as a tuple
//!   and returns the Rust return value.
//!
//! **Out-parameters are filled through `&mut`**, as in C, rather than returned in a tuple: for a
//! `TypedFunction<(Out<i32>, Out<f64>), ()>` (`void get_two(int *a, double *b)`), `call` takes `(&mut
//! i32, &mut f64)` and writes both after the call. The marker types only say how a parameter travels;
//! what `call` takes for each is [`CArg::Call`]. So a function's Rust type reads like its prototype,
//! the return value stays the return value whatever the parameters, and a struct out-parameter is a
//! variable of the struct's type.
//!
//! The signature is built from the types once, when the function is prepared ([`Library::typed`]), and
//! checked for the server's target there, like any [`Library::function`]; a call converts the
//! arguments into a stack array of [`Value`]s and goes through the same path as [`Function::call`],
//! so a typed call costs what a dynamic one does plus building its argument values (measured: 30-40 ns
//! on a ~1 us round trip through the i686 server).
//!
//! Offsets are never taken from the Rust compiler: a `#[derive(CStruct)]` struct is a *description*
//! that the server's [`Target`](crate::Target) lays out, so the same Rust struct crosses to an i386
//! library with a `double` after a `char` at offset 4, and to an x86_64 one at offset 8:
//!
//! ```
//! use bitbridge::{CStruct, CValue, Target};
//!
//! /// struct Reading { char tag; double value; uint8_t id[16]; };
//! #[derive(CStruct, Clone, Debug, PartialEq)]
//! #[repr(C)]
//! struct Reading {
//!     tag: i8,
//!     value: f64,
//!     id: [u8; 16],
//! }
//!
//! let offsets = |t: Target| t.aggregate_layout(&Reading::ctype()).unwrap().unwrap().offsets;
//! assert_eq!(offsets(Target::I386_SYSV), [0, 4, 12]);
//! assert_eq!(offsets(Target::X86_64_SYSV), [0, 8, 16]);
//! assert_eq!(Reading::ctype().to_string(), "struct Reading");
//! let r = Reading { tag: 1, value: 2.5, id: [7; 16] };
//! assert_eq!(Reading::from_value(r.clone().into_value()), Ok(r));
//! ```
//!
//! Shapes C has no equivalent for are refused at compile time, with a message naming the problem
//! (tested on the macro's expansion in `crates/derive`; each of these fails to compile):
//!
//! ```compile_fail
//! #[derive(bitbridge::CStruct)]
//! #[repr(C)]
//! enum Mode { Idle, Busy } // a C enum is an integer: use i32
//! ```
//!
//! ```compile_fail
//! #[derive(bitbridge::CStruct)]
//! #[repr(C)]
//! struct Pair(i32, f64); // tuple structs: C members need names
//! ```
//!
//! ```compile_fail
//! #[derive(bitbridge::CStruct)]
//! #[repr(C)]
//! struct Wrapper<T> { inner: T } // generic structs
//! ```
//!
//! ```compile_fail
//! #[derive(bitbridge::CStruct)]
//! #[repr(C)]
//! struct Borrowing { name: &'static str } // references: use bitbridge::Addr for server memory
//! ```
//!
//! ```compile_fail
//! #[derive(bitbridge::CStruct)]
//! struct NotC { x: i32 } // #[repr(C)] is required
//! ```
//!
//! ```compile_fail
//! #[derive(bitbridge::CStruct)]
//! #[repr(C)]
//! struct Opaque { x: std::time::Duration } // a member type without CValue
//! ```

use std::ffi::CString;
use std::fmt;
use std::marker::PhantomData;

use bitbridge_proto::{
    BorrowedNumbers, CType, CallConv, Direction, NumKind, NumSlice, NumSliceMut, Numbers, Param, Signature, Value,
    ValueTypeError,
};

use crate::error::{Error, Result};
use crate::library::{Function, Library, Outcome};

/// A Rust type that maps to a C type: its [`CType`], and conversions to and from [`Value`].
///
/// See the [module documentation](self) for the types implementing it. Implement it for your own
/// structs with `#[derive(CStruct)]`.
pub trait CValue: Sized {
    /// The C type this Rust type stands for (for a struct: its description, laid out by the server's
    /// target).
    fn ctype() -> CType;
    /// The value to send.
    fn into_value(self) -> Value;
    /// The Rust value of a value the server sent back for [`CValue::ctype`].
    fn from_value(value: Value) -> std::result::Result<Self, ValueTypeError>;
    /// A slice of this type as borrowed numbers, for the number types that travel packed (not the
    /// byte types, which travel as [`Value::Bytes`]): `In<[f64]>` is sent from the caller's slice
    /// without a copy into a `Value`. The default (and what `#[derive(CStruct)]` keeps) is `None`.
    #[doc(hidden)]
    fn num_slice(items: &[Self]) -> Option<NumSlice<'_>> {
        let _ = items;
        None
    }
    /// [`CValue::num_slice`], mutably: `InOut<[f64]>`/`Out<[f64]>` are written in place.
    #[doc(hidden)]
    fn num_slice_mut(items: &mut [Self]) -> Option<NumSliceMut<'_>> {
        let _ = items;
        None
    }
}

macro_rules! scalar {
    ($($t:ty => $c:ident),* $(,)?) => {$(
        impl CValue for $t {
            fn ctype() -> CType {
                CType::$c
            }
            fn into_value(self) -> Value {
                Value::from(self)
            }
            fn from_value(value: Value) -> std::result::Result<Self, ValueTypeError> {
                <$t>::try_from(value)
            }
        }
    )*};
}
scalar!(i8 => I8, u8 => U8, bool => Bool);

/// The number types that travel packed: slices of them are borrowed by a call ([`CValue::num_slice`]).
macro_rules! number {
    ($($t:ty => $c:ident / $kind:ident),* $(,)?) => {$(
        impl CValue for $t {
            fn ctype() -> CType {
                CType::$c
            }
            fn into_value(self) -> Value {
                Value::from(self)
            }
            fn from_value(value: Value) -> std::result::Result<Self, ValueTypeError> {
                <$t>::try_from(value)
            }
            fn num_slice(items: &[Self]) -> Option<NumSlice<'_>> {
                Some(NumSlice::$kind(items))
            }
            fn num_slice_mut(items: &mut [Self]) -> Option<NumSliceMut<'_>> {
                Some(NumSliceMut::$kind(items))
            }
        }
    )*};
}
number!(i16 => I16 / I16, i32 => I32 / I32, i64 => I64 / I64, u16 => U16 / U16, u32 => U32 / U32,
    u64 => U64 / U64, f32 => Float / F32, f64 => Double / F64);

/// `size_t`: 4 bytes in a 32-bit server, so a value above `u32::MAX` is refused there (named), never
/// truncated.
impl CValue for usize {
    fn ctype() -> CType {
        CType::SizeT
    }
    fn into_value(self) -> Value {
        Value::UInt(self as u64)
    }
    fn from_value(value: Value) -> std::result::Result<Self, ValueTypeError> {
        value.as_u64().and_then(|u| usize::try_from(u).ok()).ok_or_else(|| ValueTypeError::new("usize", &value))
    }
}

/// `ssize_t`, as wide as the server's pointers.
impl CValue for isize {
    fn ctype() -> CType {
        CType::SSizeT
    }
    fn into_value(self) -> Value {
        Value::Int(self as i64)
    }
    fn from_value(value: Value) -> std::result::Result<Self, ValueTypeError> {
        value.as_i64().and_then(|i| isize::try_from(i).ok()).ok_or_else(|| ValueTypeError::new("isize", &value))
    }
}

/// C `long`: 4 bytes on i386, Win32 and Win64, 8 on x86_64 Linux. Held as an `i64`; a value that does
/// not fit the server's `long` is refused when the call is encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CLong(pub i64);

/// C `unsigned long`, as wide as the server's `long` (see [`CLong`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CULong(pub u64);

impl CValue for CLong {
    fn ctype() -> CType {
        CType::Long
    }
    fn into_value(self) -> Value {
        Value::Int(self.0)
    }
    fn from_value(value: Value) -> std::result::Result<Self, ValueTypeError> {
        value.as_i64().map(CLong).ok_or_else(|| ValueTypeError::new("CLong", &value))
    }
}

impl CValue for CULong {
    fn ctype() -> CType {
        CType::ULong
    }
    fn into_value(self) -> Value {
        Value::UInt(self.0)
    }
    fn from_value(value: Value) -> std::result::Result<Self, ValueTypeError> {
        value.as_u64().map(CULong).ok_or_else(|| ValueTypeError::new("CULong", &value))
    }
}

/// An address in the *server's* memory, as `void *`: an opaque handle a library returned, memory from
/// [`Server::alloc`](crate::Server::alloc), or [`Addr::NULL`]. It is never an address in this process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Addr(pub u64);

impl Addr {
    /// `NULL`.
    pub const NULL: Addr = Addr(0);

    /// Whether this is `NULL`.
    pub fn is_null(self) -> bool {
        self.0 == 0
    }
}

impl CValue for Addr {
    fn ctype() -> CType {
        CType::void_ptr()
    }
    fn into_value(self) -> Value {
        Value::Pointer(self.0)
    }
    fn from_value(value: Value) -> std::result::Result<Self, ValueTypeError> {
        value.as_pointer().map(Addr).ok_or_else(|| ValueTypeError::new("Addr", &value))
    }
}

/// `char *` as a NUL-terminated string (`CType::CStr`): text in; as a return value, the text the
/// function returned (a `NULL` return is an error: use `Option<String>`).
impl CValue for String {
    fn ctype() -> CType {
        CType::CStr
    }
    fn into_value(self) -> Value {
        Value::Str(self)
    }
    fn from_value(value: Value) -> std::result::Result<Self, ValueTypeError> {
        match value {
            Value::Pointer(0) => {
                Err(ValueTypeError::found("String", "NULL (declare it Option<String> to accept NULL)"))
            }
            Value::Bytes(_) => Err(ValueTypeError::found(
                "String",
                "text that is not UTF-8 (declare it CString to take its bytes as they are)",
            )),
            other => String::try_from(other),
        }
    }
}

/// `char *` that may be `NULL` (`None`).
impl CValue for Option<String> {
    fn ctype() -> CType {
        CType::CStr
    }
    fn into_value(self) -> Value {
        self.map_or(Value::NULL, Value::Str)
    }
    fn from_value(value: Value) -> std::result::Result<Self, ValueTypeError> {
        match value {
            Value::Pointer(0) => Ok(None),
            other => String::try_from(other).map(Some),
        }
    }
}

/// `char *` as bytes that need not be UTF-8.
impl CValue for CString {
    fn ctype() -> CType {
        CType::CStr
    }
    fn into_value(self) -> Value {
        Value::Bytes(self.into_bytes())
    }
    fn from_value(value: Value) -> std::result::Result<Self, ValueTypeError> {
        let bytes = match value {
            Value::Str(s) => s.into_bytes(),
            Value::Bytes(b) => b,
            other => return Err(ValueTypeError::new("CString", &other)),
        };
        let end = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
        let mut bytes = bytes;
        bytes.truncate(end);
        // No NUL is left, so this cannot fail; the error path keeps the code free of panics.
        CString::new(bytes).map_err(|e| ValueTypeError::new("CString", &Value::Bytes(e.into_vec())))
    }
}

/// The value of one element `b` of a byte array or buffer, as the element type reads it (a `char` or
/// `int8_t` is signed).
fn byte_value(of: &CType, b: u8) -> Value {
    match of {
        CType::Char | CType::SChar | CType::I8 => Value::Int(i64::from(b as i8)),
        _ => Value::UInt(u64::from(b)),
    }
}

/// Elements converted one by one, each error naming its index; a [`Value::Numbers`] of `T`s is taken
/// as it is.
fn elements<T: CValue + 'static>(values: Value, len: Option<usize>) -> std::result::Result<Vec<T>, ValueTypeError> {
    let count = |n: usize| match len.filter(|want| *want != n) {
        Some(want) => Err(ValueTypeError::found("an array", format!("{n} elements where {want} were declared"))),
        None => Ok(()),
    };
    let items: Vec<Value> = match values {
        Value::Numbers(n) => {
            count(n.len())?;
            return match n.into_vec::<T>() {
                Ok(v) => Ok(v),
                Err(n) => n
                    .values()
                    .enumerate()
                    .map(|(i, v)| T::from_value(v).map_err(|e| e.within(format_args!("element {i}"))))
                    .collect(),
            };
        }
        Value::Array(items) => items,
        Value::Bytes(b) => {
            let of = T::ctype();
            b.into_iter().map(|c| byte_value(&of, c)).collect()
        }
        other => return Err(ValueTypeError::new("an array", &other)),
    };
    count(items.len())?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| T::from_value(v).map_err(|e| e.within(format_args!("element {i}"))))
        .collect()
}

/// Values of elements: byte-sized elements travel as one [`Value::Bytes`], the other numbers as one
/// [`Value::Numbers`] (the vector moved in, sent as its bytes), anything else element by element.
fn element_values<T: CValue + 'static>(items: Vec<T>) -> Value {
    match Numbers::kind_of::<T>() {
        Some(NumKind::U8) | Some(NumKind::I8) => {
            Value::Bytes(items.into_iter().map(|x| x.into_value().as_i64().map_or(0, |i| i as u8)).collect())
        }
        Some(_) => match Numbers::from_vec(items) {
            Ok(n) => Value::Numbers(n),
            Err(items) => Value::Array(items.into_iter().map(T::into_value).collect()),
        },
        None if T::ctype().is_byte() => {
            Value::Bytes(items.into_iter().map(|x| x.into_value().as_i64().map_or(0, |i| i as u8)).collect())
        }
        None => Value::Array(items.into_iter().map(T::into_value).collect()),
    }
}

/// The value sent for an out-buffer of `n` elements: zeroed numbers of `T`'s kind, so that what comes
/// back is packed too, or [`Value::Zeros`].
fn out_buffer<T: 'static>(n: usize) -> Value {
    match Numbers::kind_of::<T>() {
        Some(kind) if !matches!(kind, NumKind::U8 | NumKind::I8) => Value::Numbers(Numbers::zeros(kind, n)),
        _ => Value::Zeros(u32::try_from(n).unwrap_or(u32::MAX)),
    }
}

/// A C array `T[N]` (a struct member, or behind a pointer: `In<[f64; 3]>`). Nest for more dimensions:
/// `[[f64; 4]; 3]` is `double[3][4]`. The array moves by value through the conversion, so for large
/// buffers (hundreds of KiB: a thread's stack is 2 MiB by default) take a slice instead: `In<[f64]>`,
/// `Out<[f64]>` with `&mut vec[..]`.
impl<T: CValue + 'static, const N: usize> CValue for [T; N] {
    fn ctype() -> CType {
        CType::array(T::ctype(), u32::try_from(N).unwrap_or(u32::MAX))
    }
    fn into_value(self) -> Value {
        element_values(Vec::from(self))
    }
    fn from_value(value: Value) -> std::result::Result<Self, ValueTypeError> {
        let v = elements::<T>(value, Some(N))?;
        // `elements` checked the length.
        v.try_into().map_err(|_| ValueTypeError::new("an array", &Value::Void))
    }
}

/// A return type: `()` for `void`, or any [`CValue`].
pub trait CReturn: Sized {
    /// The C return type.
    fn ret_ctype() -> CType;
    /// The Rust value of what the function returned.
    fn from_ret(value: Value) -> std::result::Result<Self, ValueTypeError>;
}

/// `void`.
impl CReturn for () {
    fn ret_ctype() -> CType {
        CType::Void
    }
    fn from_ret(value: Value) -> std::result::Result<Self, ValueTypeError> {
        match value {
            Value::Void => Ok(()),
            other => Err(ValueTypeError::new("void", &other)),
        }
    }
}

impl<T: CValue> CReturn for T {
    fn ret_ctype() -> CType {
        T::ctype()
    }
    fn from_ret(value: Value) -> std::result::Result<Self, ValueTypeError> {
        T::from_value(value)
    }
}

/// How one parameter is passed: its [`Param`] (type and direction), what [`TypedFunction::call`]
/// takes for it ([`CArg::Call`]), and, for out-parameters, how the value that came back is written.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a parameter of a typed function",
    note = "a parameter is a CValue (i32, f64, a #[derive(CStruct)] struct...) or In<T>/Out<T>/InOut<T> of one; \
            In<T> and InOut<T> also need T: Clone"
)]
pub trait CArg {
    /// What `call` takes for this parameter: the value itself for a [`CValue`], `&mut T` for
    /// [`Out<T>`] and [`InOut<T>`], `&T` for [`In<T>`].
    type Call<'a>;
    /// What is kept during the call to write the result into (`()` when nothing comes back).
    type Back<'a>;
    /// The declared parameter.
    fn param() -> Param;
    /// The value to send, and where its result goes.
    fn split<'a>(arg: Self::Call<'a>) -> (Value, Self::Back<'a>);
    /// Writes what came back after the call (for `Out`/`InOut`; others ignore it).
    fn write_back<'a>(back: Self::Back<'a>, after: Option<Value>) -> std::result::Result<(), ValueTypeError>;
    /// The parameter as borrowed numbers, sent (and written back) in place of its value: slices of
    /// the packed number types.
    #[doc(hidden)]
    fn borrow<'b>(back: &'b mut Self::Back<'_>) -> Option<BorrowedNumbers<'b>> {
        let _ = back;
        None
    }
}

/// Passed by value.
impl<T: CValue> CArg for T {
    type Call<'a> = T;
    type Back<'a> = ();
    fn param() -> Param {
        Param { ty: T::ctype(), dir: Direction::In }
    }
    fn split<'a>(arg: Self::Call<'a>) -> (Value, Self::Back<'a>) {
        (arg.into_value(), ())
    }
    fn write_back<'a>(_: Self::Back<'a>, _: Option<Value>) -> std::result::Result<(), ValueTypeError> {
        Ok(())
    }
}

/// `const char *` text, borrowed for the call.
impl CArg for &'static str {
    type Call<'a> = &'a str;
    type Back<'a> = ();
    fn param() -> Param {
        Param { ty: CType::CStr, dir: Direction::In }
    }
    fn split<'a>(arg: Self::Call<'a>) -> (Value, Self::Back<'a>) {
        (Value::Str(arg.to_owned()), ())
    }
    fn write_back<'a>(_: Self::Back<'a>, _: Option<Value>) -> std::result::Result<(), ValueTypeError> {
        Ok(())
    }
}

/// A `const T *` parameter: `call` takes `&T` (or `&[T]` for `In<[T]>`), copied to the server for the
/// call and not read back.
#[derive(Debug)]
pub struct In<T: ?Sized>(PhantomData<T>);

/// A `T *` parameter the function fills: `call` takes `&mut T` (or `&mut [T]`, a buffer of that many
/// elements for `Out<[T]>`); the server passes zeroed memory and the result is written into it.
#[derive(Debug)]
pub struct Out<T: ?Sized>(PhantomData<T>);

/// A `T *` parameter the function reads and changes: `call` takes `&mut T` (or `&mut [T]`), copied to
/// the server and written back after the call.
#[derive(Debug)]
pub struct InOut<T: ?Sized>(PhantomData<T>);

/// The one value that came back for a pointer to a single `T` (sent as one element: `Value::Zeros(1)`,
/// or an array of one value), converted without an element index in its errors.
fn single<T: CValue + 'static>(after: Option<Value>) -> std::result::Result<T, ValueTypeError> {
    match after {
        Some(Value::Array(mut items)) if items.len() == 1 => T::from_value(items.pop().expect("one element")),
        other => {
            let mut v = elements::<T>(other.unwrap_or(Value::Void), Some(1))?;
            v.pop().ok_or_else(|| ValueTypeError::new("a value", &Value::Void))
        }
    }
}

impl<T: CValue + Clone + 'static> CArg for In<T> {
    type Call<'a> = &'a T;
    type Back<'a> = ();
    fn param() -> Param {
        Param { ty: CType::ptr(T::ctype()), dir: Direction::In }
    }
    fn split<'a>(arg: Self::Call<'a>) -> (Value, Self::Back<'a>) {
        // One element behind the pointer (a `T` that is itself an array, `[f64; 3]`, is that one
        // element, not three).
        (Value::Array(vec![arg.clone().into_value()]), ())
    }
    fn write_back<'a>(_: Self::Back<'a>, _: Option<Value>) -> std::result::Result<(), ValueTypeError> {
        Ok(())
    }
}

impl<T: CValue + Clone + 'static> CArg for In<[T]> {
    type Call<'a> = &'a [T];
    type Back<'a> = &'a [T];
    fn param() -> Param {
        Param { ty: CType::ptr(T::ctype()), dir: Direction::In }
    }
    fn split<'a>(arg: Self::Call<'a>) -> (Value, Self::Back<'a>) {
        match T::num_slice(arg) {
            Some(_) => (Value::Void, arg), // sent from the slice itself (see `borrow`)
            None => (element_values(arg.to_vec()), arg),
        }
    }
    fn write_back<'a>(_: Self::Back<'a>, _: Option<Value>) -> std::result::Result<(), ValueTypeError> {
        Ok(())
    }
    fn borrow<'b>(back: &'b mut Self::Back<'_>) -> Option<BorrowedNumbers<'b>> {
        T::num_slice(back).map(BorrowedNumbers::Ref)
    }
}

impl<T: CValue + 'static> CArg for Out<T> {
    type Call<'a> = &'a mut T;
    type Back<'a> = &'a mut T;
    fn param() -> Param {
        Param { ty: CType::ptr(T::ctype()), dir: Direction::Out }
    }
    fn split<'a>(arg: Self::Call<'a>) -> (Value, Self::Back<'a>) {
        (Value::Zeros(1), arg)
    }
    fn write_back<'a>(back: Self::Back<'a>, after: Option<Value>) -> std::result::Result<(), ValueTypeError> {
        *back = single(after)?;
        Ok(())
    }
}

impl<T: CValue + 'static> CArg for Out<[T]> {
    type Call<'a> = &'a mut [T];
    type Back<'a> = &'a mut [T];
    fn param() -> Param {
        Param { ty: CType::ptr(T::ctype()), dir: Direction::Out }
    }
    fn split<'a>(arg: Self::Call<'a>) -> (Value, Self::Back<'a>) {
        match T::num_slice(arg) {
            Some(_) => (Value::Void, arg), // written in place (see `borrow`)
            None => (out_buffer::<T>(arg.len()), arg),
        }
    }
    fn write_back<'a>(back: Self::Back<'a>, after: Option<Value>) -> std::result::Result<(), ValueTypeError> {
        if T::num_slice(back).is_some() {
            return Ok(()); // already written in place
        }
        let v = elements::<T>(after.unwrap_or(Value::Void), Some(back.len()))?;
        back.iter_mut().zip(v).for_each(|(slot, x)| *slot = x);
        Ok(())
    }
    fn borrow<'b>(back: &'b mut Self::Back<'_>) -> Option<BorrowedNumbers<'b>> {
        T::num_slice_mut(back).map(BorrowedNumbers::Mut)
    }
}

impl<T: CValue + Clone + 'static> CArg for InOut<T> {
    type Call<'a> = &'a mut T;
    type Back<'a> = &'a mut T;
    fn param() -> Param {
        Param { ty: CType::ptr(T::ctype()), dir: Direction::InOut }
    }
    fn split<'a>(arg: Self::Call<'a>) -> (Value, Self::Back<'a>) {
        // One element behind the pointer, as for `In<T>`.
        (Value::Array(vec![arg.clone().into_value()]), arg)
    }
    fn write_back<'a>(back: Self::Back<'a>, after: Option<Value>) -> std::result::Result<(), ValueTypeError> {
        *back = single(after)?;
        Ok(())
    }
}

impl<T: CValue + Clone + 'static> CArg for InOut<[T]> {
    type Call<'a> = &'a mut [T];
    type Back<'a> = &'a mut [T];
    fn param() -> Param {
        Param { ty: CType::ptr(T::ctype()), dir: Direction::InOut }
    }
    fn split<'a>(arg: Self::Call<'a>) -> (Value, Self::Back<'a>) {
        match T::num_slice(arg) {
            Some(_) => (Value::Void, arg), // sent from and written into the slice (see `borrow`)
            None => (element_values(arg.to_vec()), arg),
        }
    }
    fn write_back<'a>(back: Self::Back<'a>, after: Option<Value>) -> std::result::Result<(), ValueTypeError> {
        if T::num_slice(back).is_some() {
            return Ok(()); // already written in place
        }
        let v = elements::<T>(after.unwrap_or(Value::Void), Some(back.len()))?;
        back.iter_mut().zip(v).for_each(|(slot, x)| *slot = x);
        Ok(())
    }
    fn borrow<'b>(back: &'b mut Self::Back<'_>) -> Option<BorrowedNumbers<'b>> {
        T::num_slice_mut(back).map(BorrowedNumbers::Mut)
    }
}

/// A parameter list: a tuple of up to 12 [`CArg`]s (`()` for none, `(i32,)` for one).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a parameter list",
    note = "the parameters are a tuple of up to 12: `()` for none, `(i32,)` for one (mind the comma), `(i32, f64)`"
)]
pub trait CArgs {
    /// What [`TypedFunction::call`] takes: the tuple of each parameter's [`CArg::Call`].
    type Call<'a>;
    /// The declared parameters, in order.
    fn params() -> Vec<Param>;
    /// Converts the arguments, calls `call` with their values, then writes the out-parameters back.
    #[doc(hidden)]
    fn invoke(
        args: Self::Call<'_>,
        call: impl FnOnce(&[Value], &mut [Option<BorrowedNumbers<'_>>]) -> Result<Outcome>,
    ) -> Result<std::result::Result<Value, ValueTypeError>>;
}

macro_rules! tuple_args {
    ($(($($T:ident $a:ident $b:ident $i:tt),*))*) => {$(
        impl<$($T: CArg),*> CArgs for ($($T,)*) {
            type Call<'a> = ($($T::Call<'a>,)*);
            fn params() -> Vec<Param> {
                vec![$($T::param()),*]
            }
            #[allow(unused_variables, unused_mut, clippy::unused_unit)]
            fn invoke(
                args: Self::Call<'_>,
                call: impl FnOnce(&[Value], &mut [Option<BorrowedNumbers<'_>>]) -> Result<Outcome>,
            ) -> Result<std::result::Result<Value, ValueTypeError>> {
                let ($($a,)*) = args;
                $(let ($a, mut $b) = $T::split($a);)*
                let outcome = call(&[$($a),*], &mut [$($T::borrow(&mut $b)),*])?;
                let mut outs = outcome.outs.into_iter();
                $(
                    if let Err(e) = $T::write_back($b, outs.next().flatten()) {
                        return Ok(Err(e.within(format_args!("argument {}", $i + 1))));
                    }
                )*
                Ok(Ok(outcome.ret))
            }
        }
    )*};
}
tuple_args! {
    ()
    (A a0 b0 0)
    (A a0 b0 0, B a1 b1 1)
    (A a0 b0 0, B a1 b1 1, C a2 b2 2)
    (A a0 b0 0, B a1 b1 1, C a2 b2 2, D a3 b3 3)
    (A a0 b0 0, B a1 b1 1, C a2 b2 2, D a3 b3 3, E a4 b4 4)
    (A a0 b0 0, B a1 b1 1, C a2 b2 2, D a3 b3 3, E a4 b4 4, F a5 b5 5)
    (A a0 b0 0, B a1 b1 1, C a2 b2 2, D a3 b3 3, E a4 b4 4, F a5 b5 5, G a6 b6 6)
    (A a0 b0 0, B a1 b1 1, C a2 b2 2, D a3 b3 3, E a4 b4 4, F a5 b5 5, G a6 b6 6, H a7 b7 7)
    (A a0 b0 0, B a1 b1 1, C a2 b2 2, D a3 b3 3, E a4 b4 4, F a5 b5 5, G a6 b6 6, H a7 b7 7, I a8 b8 8)
    (A a0 b0 0, B a1 b1 1, C a2 b2 2, D a3 b3 3, E a4 b4 4, F a5 b5 5, G a6 b6 6, H a7 b7 7, I a8 b8 8,
     J a9 b9 9)
    (A a0 b0 0, B a1 b1 1, C a2 b2 2, D a3 b3 3, E a4 b4 4, F a5 b5 5, G a6 b6 6, H a7 b7 7, I a8 b8 8,
     J a9 b9 9, K a10 b10 10)
    (A a0 b0 0, B a1 b1 1, C a2 b2 2, D a3 b3 3, E a4 b4 4, F a5 b5 5, G a6 b6 6, H a7 b7 7, I a8 b8 8,
     J a9 b9 9, K a10 b10 10, L a11 b11 11)
}

/// The signature the Rust types stand for: `Ret (Args...)`, `cdecl`.
pub fn signature<Args: CArgs, Ret: CReturn>() -> Signature {
    let mut sig = Signature::new(Ret::ret_ctype());
    sig.params = Args::params();
    sig
}

/// A function whose parameter and return types are Rust types: from [`Library::typed`].
///
/// `Args` is the tuple of parameter types ([`CArgs`]), `Ret` the return type ([`CReturn`]). Calls
/// never show a [`Value`]; the dynamic [`Function`] underneath is [`TypedFunction::function`].
pub struct TypedFunction<Args, Ret> {
    function: Function,
    types: PhantomData<fn() -> (Args, Ret)>,
}

impl<Args: CArgs, Ret: CReturn> TypedFunction<Args, Ret> {
    /// Calls the function with the arguments as a tuple (`f.call((2, 3))`, `f.call((&mut a, &mut b))`
    /// for out-parameters, `f.call(())` for none). Out- and in-out parameters are written through their
    /// `&mut` after the call; the return value is converted to `Ret`.
    pub fn call(&self, args: Args::Call<'_>) -> Result<Ret> {
        let f = &self.function;
        let ret = Args::invoke(args, |values, borrowed| f.call_borrowed(values, borrowed))?;
        ret.and_then(Ret::from_ret).map_err(|source| Error::Typed { function: f.name().to_owned(), source })
    }

    /// The dynamic function underneath (its [`Signature`], address, `call_timeout`).
    pub fn function(&self) -> &Function {
        &self.function
    }

    /// The signature built from the Rust types: what was prepared and what every call sends.
    pub fn signature(&self) -> &Signature {
        self.function.signature()
    }
}

impl<Args, Ret> fmt::Debug for TypedFunction<Args, Ret> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TypedFunction").field(&self.function).finish()
    }
}

impl Library {
    /// Prepares `name` as a typed function: `lib.typed::<(i32, i32), i32>("add")?` for `int add(int,
    /// int)`, then `add.call((2, 3))?`. The signature is built from the types ([`signature`]) and
    /// checked for the server's target here, once.
    pub fn typed<Args: CArgs, Ret: CReturn>(&self, name: &str) -> Result<TypedFunction<Args, Ret>> {
        self.typed_with(name, CallConv::Cdecl)
    }

    /// [`Library::typed`] with a calling convention (`CallConv::Stdcall` for a `WINAPI` function of a
    /// 32-bit DLL or an i386 `.so`). A Win64 server accepts and ignores it, as its compilers do; an
    /// x86_64 Linux server refuses any but `Cdecl` here, when the function is prepared.
    pub fn typed_with<Args: CArgs, Ret: CReturn>(
        &self,
        name: &str,
        conv: CallConv,
    ) -> Result<TypedFunction<Args, Ret>> {
        let function = self.function(name, signature::<Args, Ret>().conv(conv))?;
        Ok(TypedFunction { function, types: PhantomData })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_rust_types() {
        let sig = signature::<(i32, In<[f64]>, Out<f64>, InOut<[u8; 4]>, &str, CLong, Addr), ()>();
        assert_eq!(sig.to_string(), "void (int32_t, double *, double *, uint8_t[4] *, char *, long, void *)");
        let dirs: Vec<Direction> = sig.params.iter().map(|p| p.dir).collect();
        let (i, o, io) = (Direction::In, Direction::Out, Direction::InOut);
        assert_eq!(dirs, [i, i, o, io, i, i, i]);
        assert_eq!(signature::<(), f32>().to_string(), "float ()");
        assert_eq!(<[[f64; 4]; 3]>::ctype().to_string(), "double[3][4]");
    }

    #[test]
    fn values_convert_both_ways() {
        assert_eq!([1u8, 2, 3].into_value(), Value::Bytes(vec![1, 2, 3]));
        assert_eq!(<[i8; 2]>::from_value(Value::Bytes(vec![0xff, 1])), Ok([-1, 1]));
        assert_eq!(<[f64; 2]>::from_value(Value::f64s([1.0, 2.0])), Ok([1.0, 2.0]));
        let e = <[f64; 3]>::from_value(Value::f64s([1.0])).unwrap_err();
        assert_eq!(e.to_string(), "expected an array, got 1 elements where 3 were declared");
        let e = <[i32; 2]>::from_value(Value::Array(vec![Value::Int(1), Value::Float(2.0)])).unwrap_err();
        assert_eq!(e.to_string(), "expected i32, got a float in element 1");
        assert_eq!(Option::<String>::from_value(Value::NULL), Ok(None));
        assert_eq!(CString::from_value(Value::Bytes(b"a\xffb\0".to_vec())).unwrap().as_bytes(), b"a\xffb");
        assert_eq!(Addr::from_value(Value::Pointer(0x10)), Ok(Addr(0x10)));
        assert_eq!(usize::from_value(Value::UInt(7)), Ok(7));
        assert!(<()>::from_ret(Value::Int(1)).is_err());
    }
}
