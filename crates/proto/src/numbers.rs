//! Homogeneous arrays of numbers held as one contiguous Rust vector: [`Numbers`], the packed form of a
//! [`Value::Array`] of scalars.
//!
//! A `Vec<f64>` of a million elements is 8 MB in a [`Value::Numbers`], against ~32 MB and a million
//! enum values in a [`Value::Array`] of [`Value::Float`]s. When the elements are laid out on the
//! server's target exactly as here (an `f64` array for `double *`, an `i32` array for `int *`; both
//! ends are little endian), the marshaller sends the vector's bytes as they are, with no per-element
//! work; otherwise (an `i64` array for a 4-byte `long`) each element is converted and range-checked
//! like the [`Value`] it stands for.

use std::any::{Any, TypeId};

use zerocopy::IntoBytes;

use crate::types::CType;
use crate::value::Value;

/// The element type of a [`Numbers`] array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NumKind {
    /// `i8`.
    I8,
    /// `u8`.
    U8,
    /// `i16`.
    I16,
    /// `u16`.
    U16,
    /// `i32`.
    I32,
    /// `u32`.
    U32,
    /// `i64`.
    I64,
    /// `u64`.
    U64,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
}

impl NumKind {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            NumKind::I8 | NumKind::U8 => 1,
            NumKind::I16 | NumKind::U16 => 2,
            NumKind::I32 | NumKind::U32 | NumKind::F32 => 4,
            NumKind::I64 | NumKind::U64 | NumKind::F64 => 8,
        }
    }

    /// Whether the elements are floating point.
    pub fn is_float(self) -> bool {
        matches!(self, NumKind::F32 | NumKind::F64)
    }

    /// Whether the elements are signed integers.
    pub fn is_signed_int(self) -> bool {
        matches!(self, NumKind::I8 | NumKind::I16 | NumKind::I32 | NumKind::I64)
    }

    /// The Rust name of the element type (`f64`).
    pub fn name(self) -> &'static str {
        match self {
            NumKind::I8 => "i8",
            NumKind::U8 => "u8",
            NumKind::I16 => "i16",
            NumKind::U16 => "u16",
            NumKind::I32 => "i32",
            NumKind::U32 => "u32",
            NumKind::I64 => "i64",
            NumKind::U64 => "u64",
            NumKind::F32 => "f32",
            NumKind::F64 => "f64",
        }
    }

    /// The C type of the same layout on every target (`int32_t` for `i32`, `double` for `f64`).
    pub fn ctype(self) -> CType {
        match self {
            NumKind::I8 => CType::I8,
            NumKind::U8 => CType::U8,
            NumKind::I16 => CType::I16,
            NumKind::U16 => CType::U16,
            NumKind::I32 => CType::I32,
            NumKind::U32 => CType::U32,
            NumKind::I64 => CType::I64,
            NumKind::U64 => CType::U64,
            NumKind::F32 => CType::Float,
            NumKind::F64 => CType::Double,
        }
    }
}

/// A homogeneous array of numbers in one contiguous vector: the packed form of a [`Value::Array`] of
/// scalars (as [`Value::Numbers`]).
///
/// Element `i` stands for the [`Value`] [`Numbers::get`] gives: [`Value::Int`] for the signed kinds,
/// [`Value::UInt`] for the unsigned ones, [`Value::Float`] for `f32`/`f64`. That is also what equality
/// compares: `Value::Numbers` equals a `Value::Array` (or other `Numbers`) holding the same element
/// values, whatever the representation.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Numbers {
    /// `i8` elements.
    I8(Vec<i8>),
    /// `u8` elements.
    U8(Vec<u8>),
    /// `i16` elements.
    I16(Vec<i16>),
    /// `u16` elements.
    U16(Vec<u16>),
    /// `i32` elements.
    I32(Vec<i32>),
    /// `u32` elements.
    U32(Vec<u32>),
    /// `i64` elements.
    I64(Vec<i64>),
    /// `u64` elements.
    U64(Vec<u64>),
    /// `f32` elements.
    F32(Vec<f32>),
    /// `f64` elements.
    F64(Vec<f64>),
}

/// Runs `$body` with `$v` bound to the vector inside `$n`, whatever its kind.
macro_rules! each {
    ($n:expr, $v:ident => $body:expr) => {
        match $n {
            Numbers::I8($v) => $body,
            Numbers::U8($v) => $body,
            Numbers::I16($v) => $body,
            Numbers::U16($v) => $body,
            Numbers::I32($v) => $body,
            Numbers::U32($v) => $body,
            Numbers::I64($v) => $body,
            Numbers::U64($v) => $body,
            Numbers::F32($v) => $body,
            Numbers::F64($v) => $body,
        }
    };
}

/// Runs `$body` with `$t` the element type of `$kind` (`$make` wraps a `Vec<$t>` into `Numbers`).
macro_rules! of_kind {
    ($kind:expr, $t:ident, $make:ident => $body:expr) => {
        match $kind {
            NumKind::I8 => {
                type $t = i8;
                let $make = Numbers::I8;
                $body
            }
            NumKind::U8 => {
                type $t = u8;
                let $make = Numbers::U8;
                $body
            }
            NumKind::I16 => {
                type $t = i16;
                let $make = Numbers::I16;
                $body
            }
            NumKind::U16 => {
                type $t = u16;
                let $make = Numbers::U16;
                $body
            }
            NumKind::I32 => {
                type $t = i32;
                let $make = Numbers::I32;
                $body
            }
            NumKind::U32 => {
                type $t = u32;
                let $make = Numbers::U32;
                $body
            }
            NumKind::I64 => {
                type $t = i64;
                let $make = Numbers::I64;
                $body
            }
            NumKind::U64 => {
                type $t = u64;
                let $make = Numbers::U64;
                $body
            }
            NumKind::F32 => {
                type $t = f32;
                let $make = Numbers::F32;
                $body
            }
            NumKind::F64 => {
                type $t = f64;
                let $make = Numbers::F64;
                $body
            }
        }
    };
}

/// An element as the [`Value`] it stands for.
trait Element: Copy + 'static {
    fn value(self) -> Value;
    /// The element a value stands for, if it is of this element's class and fits.
    fn from_value(v: &Value) -> Option<Self>;
}

macro_rules! int_element {
    ($variant:ident as $wide:ty: $($t:ty),*) => {$(
        impl Element for $t {
            fn value(self) -> Value {
                Value::$variant(<$wide>::from(self))
            }
            fn from_value(v: &Value) -> Option<Self> {
                match v {
                    Value::Int(i) => <$t>::try_from(*i).ok(),
                    Value::UInt(u) => <$t>::try_from(*u).ok(),
                    _ => None,
                }
            }
        }
    )*};
}
int_element!(Int as i64: i8, i16, i32, i64);
int_element!(UInt as u64: u8, u16, u32, u64);

impl Element for f32 {
    fn value(self) -> Value {
        Value::Float(f64::from(self))
    }
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            // Exact only: a float read from a C `float` converts back without rounding.
            Value::Float(f) if (*f as f32) as f64 == *f || f.is_nan() => Some(*f as f32),
            _ => None,
        }
    }
}

impl Element for f64 {
    fn value(self) -> Value {
        Value::Float(self)
    }
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
}

impl Numbers {
    /// The element type.
    pub fn kind(&self) -> NumKind {
        match self {
            Numbers::I8(_) => NumKind::I8,
            Numbers::U8(_) => NumKind::U8,
            Numbers::I16(_) => NumKind::I16,
            Numbers::U16(_) => NumKind::U16,
            Numbers::I32(_) => NumKind::I32,
            Numbers::U32(_) => NumKind::U32,
            Numbers::I64(_) => NumKind::I64,
            Numbers::U64(_) => NumKind::U64,
            Numbers::F32(_) => NumKind::F32,
            Numbers::F64(_) => NumKind::F64,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        each!(self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements' bytes, in this machine's byte order (little endian on every host bitbridge runs on).
    pub fn as_bytes(&self) -> &[u8] {
        each!(self, v => v.as_slice().as_bytes())
    }

    /// Element `i` as the [`Value`] it stands for.
    pub fn get(&self, i: usize) -> Option<Value> {
        each!(self, v => v.get(i).map(|x| x.value()))
    }

    /// The elements as the [`Value`]s they stand for.
    pub fn values(&self) -> impl ExactSizeIterator<Item = Value> + '_ {
        (0..self.len()).map(|i| self.get(i).expect("in range"))
    }

    /// `n` zero elements of `kind`.
    pub fn zeros(kind: NumKind, n: usize) -> Numbers {
        of_kind!(kind, T, make => make(vec![T::default(); n]))
    }

    /// `kind` elements from their little-endian bytes (the length a multiple of the element size; a
    /// rest is ignored).
    pub fn from_le_bytes(kind: NumKind, bytes: &[u8]) -> Numbers {
        let n = bytes.len() / kind.size();
        of_kind!(kind, T, make => {
            let mut v = vec![T::default(); n];
            if cfg!(target_endian = "little") {
                v.as_mut_slice().as_mut_bytes().copy_from_slice(&bytes[..n * kind.size()]);
            } else {
                for (x, c) in v.iter_mut().zip(bytes.chunks_exact(kind.size())) {
                    *x = T::from_le_bytes(c.try_into().expect("element size"));
                }
            }
            make(v)
        })
    }

    /// `kind` elements from values, if each is of the kind's class (an integer for the integer kinds, a
    /// float for the float kinds) and fits it exactly.
    pub fn from_values<'a>(kind: NumKind, values: impl IntoIterator<Item = &'a Value>) -> Option<Numbers> {
        of_kind!(kind, T, make => values.into_iter().map(<T as Element>::from_value).collect::<Option<Vec<T>>>().map(make))
    }

    /// The numbers of a vector whose element type is one of the kinds (`Err` gives it back otherwise).
    pub fn from_vec<T: 'static>(v: Vec<T>) -> Result<Numbers, Vec<T>> {
        let any: Box<dyn Any> = Box::new(v);
        macro_rules! try_kinds {
            ($any:ident: $($t:ty => $variant:ident),*) => {
                $(let $any = match $any.downcast::<Vec<$t>>() {
                    Ok(v) => return Ok(Numbers::$variant(*v)),
                    Err(other) => other,
                };)*
            };
        }
        try_kinds!(any: i8 => I8, u8 => U8, i16 => I16, u16 => U16, i32 => I32, u32 => U32, i64 => I64,
            u64 => U64, f32 => F32, f64 => F64);
        Err(*any.downcast::<Vec<T>>().expect("the vector given"))
    }

    /// The vector inside, if its elements are `T` (`Err` gives the numbers back otherwise).
    pub fn into_vec<T: 'static>(self) -> Result<Vec<T>, Numbers> {
        let any: Box<dyn Any> = each!(self, v => Box::new(v));
        match any.downcast::<Vec<T>>() {
            Ok(v) => Ok(*v),
            Err(any) => Err(Numbers::back(any)),
        }
    }

    /// The kind whose elements are `T`, if there is one.
    pub fn kind_of<T: 'static>() -> Option<NumKind> {
        let t = TypeId::of::<T>();
        [
            (TypeId::of::<i8>(), NumKind::I8),
            (TypeId::of::<u8>(), NumKind::U8),
            (TypeId::of::<i16>(), NumKind::I16),
            (TypeId::of::<u16>(), NumKind::U16),
            (TypeId::of::<i32>(), NumKind::I32),
            (TypeId::of::<u32>(), NumKind::U32),
            (TypeId::of::<i64>(), NumKind::I64),
            (TypeId::of::<u64>(), NumKind::U64),
            (TypeId::of::<f32>(), NumKind::F32),
            (TypeId::of::<f64>(), NumKind::F64),
        ]
        .into_iter()
        .find_map(|(id, k)| (id == t).then_some(k))
    }

    fn back(any: Box<dyn Any>) -> Numbers {
        macro_rules! back_kinds {
            ($any:ident: $($t:ty => $variant:ident),*) => {
                $(let $any = match $any.downcast::<Vec<$t>>() {
                    Ok(v) => return Numbers::$variant(*v),
                    Err(other) => other,
                };)*
            };
        }
        back_kinds!(any: i8 => I8, u8 => U8, i16 => I16, u16 => U16, i32 => I32, u32 => U32, i64 => I64,
            u64 => U64, f32 => F32);
        Numbers::F64(*any.downcast::<Vec<f64>>().expect("one of the kinds"))
    }

    /// Whether `self` holds the same element values as `other` (see the type's documentation).
    pub(crate) fn same_as(&self, other: &Numbers) -> bool {
        if self.kind() == other.kind() {
            // Same layout: compare as the Rust elements (NaN is unequal, as for Value::Float).
            return match (self, other) {
                (Numbers::F32(a), Numbers::F32(b)) => a == b,
                (Numbers::F64(a), Numbers::F64(b)) => a == b,
                _ => self.as_bytes() == other.as_bytes(),
            };
        }
        self.len() == other.len() && self.values().zip(other.values()).all(|(a, b)| a == b)
    }

    /// Whether `self` holds the element values of `items`.
    pub(crate) fn same_as_values(&self, items: &[Value]) -> bool {
        self.len() == items.len() && self.values().zip(items).all(|(a, b)| a == *b)
    }
}

/// Borrowed numbers: the elements of a slice of one of the [`NumKind`]s, sent by a call as
/// [`Value::Numbers`] would be, without being copied into one first (the typed layer's `In<[f64]>`).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum NumSlice<'a> {
    I8(&'a [i8]),
    U8(&'a [u8]),
    I16(&'a [i16]),
    U16(&'a [u16]),
    I32(&'a [i32]),
    U32(&'a [u32]),
    I64(&'a [i64]),
    U64(&'a [u64]),
    F32(&'a [f32]),
    F64(&'a [f64]),
}

/// Mutably borrowed numbers: a slice the results of an `Out`/`InOut` pointer are written into in
/// place (the typed layer's `InOut<[f64]>`), instead of into a new [`Value`].
#[derive(Debug)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum NumSliceMut<'a> {
    I8(&'a mut [i8]),
    U8(&'a mut [u8]),
    I16(&'a mut [i16]),
    U16(&'a mut [u16]),
    I32(&'a mut [i32]),
    U32(&'a mut [u32]),
    I64(&'a mut [i64]),
    U64(&'a mut [u64]),
    F32(&'a mut [f32]),
    F64(&'a mut [f64]),
}

macro_rules! each_slice {
    ($ty:ident, $n:expr, $v:ident => $body:expr) => {
        match $n {
            $ty::I8($v) => $body,
            $ty::U8($v) => $body,
            $ty::I16($v) => $body,
            $ty::U16($v) => $body,
            $ty::I32($v) => $body,
            $ty::U32($v) => $body,
            $ty::I64($v) => $body,
            $ty::U64($v) => $body,
            $ty::F32($v) => $body,
            $ty::F64($v) => $body,
        }
    };
}

macro_rules! slice_kind {
    ($ty:ident, $n:expr) => {
        match $n {
            $ty::I8(_) => NumKind::I8,
            $ty::U8(_) => NumKind::U8,
            $ty::I16(_) => NumKind::I16,
            $ty::U16(_) => NumKind::U16,
            $ty::I32(_) => NumKind::I32,
            $ty::U32(_) => NumKind::U32,
            $ty::I64(_) => NumKind::I64,
            $ty::U64(_) => NumKind::U64,
            $ty::F32(_) => NumKind::F32,
            $ty::F64(_) => NumKind::F64,
        }
    };
}

impl<'a> NumSlice<'a> {
    /// The element type.
    pub fn kind(&self) -> NumKind {
        slice_kind!(NumSlice, self)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        each_slice!(NumSlice, self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements' bytes (this machine's byte order).
    pub fn as_bytes(&self) -> &'a [u8] {
        each_slice!(NumSlice, *self, v => v.as_bytes())
    }

    /// Element `i` as the [`Value`] it stands for.
    pub fn get(&self, i: usize) -> Option<Value> {
        each_slice!(NumSlice, self, v => v.get(i).map(|x| x.value()))
    }
}

impl NumSliceMut<'_> {
    /// The element type.
    pub fn kind(&self) -> NumKind {
        slice_kind!(NumSliceMut, self)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        each_slice!(NumSliceMut, self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same elements, shared.
    pub fn as_slice(&self) -> NumSlice<'_> {
        match self {
            NumSliceMut::I8(v) => NumSlice::I8(v),
            NumSliceMut::U8(v) => NumSlice::U8(v),
            NumSliceMut::I16(v) => NumSlice::I16(v),
            NumSliceMut::U16(v) => NumSlice::U16(v),
            NumSliceMut::I32(v) => NumSlice::I32(v),
            NumSliceMut::U32(v) => NumSlice::U32(v),
            NumSliceMut::I64(v) => NumSlice::I64(v),
            NumSliceMut::U64(v) => NumSlice::U64(v),
            NumSliceMut::F32(v) => NumSlice::F32(v),
            NumSliceMut::F64(v) => NumSlice::F64(v),
        }
    }

    /// The elements' bytes, to write (this machine's byte order).
    pub fn as_mut_bytes(&mut self) -> &mut [u8] {
        each_slice!(NumSliceMut, self, v => v.as_mut_bytes())
    }

    /// Sets element `i` to the number `v` stands for, if it is of the element's class and fits.
    pub fn set(&mut self, i: usize, v: &Value) -> bool {
        each_slice!(NumSliceMut, self, s => match (s.get_mut(i), Element::from_value(v)) {
            (Some(slot), Some(x)) => {
                *slot = x;
                true
            }
            _ => false,
        })
    }
}

/// A pointer argument given as borrowed numbers instead of a [`Value`] (see
/// [`encode_call_borrowed`](crate::encode_call_borrowed)): sent as [`Value::Numbers`] would be,
/// without a copy into one; a `Mut` one is written in place with what comes back.
#[derive(Debug)]
pub enum BorrowedNumbers<'a> {
    /// Only read (an `In` pointer).
    Ref(NumSlice<'a>),
    /// Read and written (`InOut`), or only written (`Out`).
    Mut(NumSliceMut<'a>),
}

impl BorrowedNumbers<'_> {
    /// The numbers, shared.
    pub fn as_slice(&self) -> NumSlice<'_> {
        match self {
            BorrowedNumbers::Ref(s) => *s,
            BorrowedNumbers::Mut(s) => s.as_slice(),
        }
    }
}

impl Numbers {
    /// The elements, borrowed.
    pub fn as_slice(&self) -> NumSlice<'_> {
        match self {
            Numbers::I8(v) => NumSlice::I8(v),
            Numbers::U8(v) => NumSlice::U8(v),
            Numbers::I16(v) => NumSlice::I16(v),
            Numbers::U16(v) => NumSlice::U16(v),
            Numbers::I32(v) => NumSlice::I32(v),
            Numbers::U32(v) => NumSlice::U32(v),
            Numbers::I64(v) => NumSlice::I64(v),
            Numbers::U64(v) => NumSlice::U64(v),
            Numbers::F32(v) => NumSlice::F32(v),
            Numbers::F64(v) => NumSlice::F64(v),
        }
    }

    /// The elements, mutably borrowed (results are written into them in place).
    pub fn as_mut_slice(&mut self) -> NumSliceMut<'_> {
        match self {
            Numbers::I8(v) => NumSliceMut::I8(v),
            Numbers::U8(v) => NumSliceMut::U8(v),
            Numbers::I16(v) => NumSliceMut::I16(v),
            Numbers::U16(v) => NumSliceMut::U16(v),
            Numbers::I32(v) => NumSliceMut::I32(v),
            Numbers::U32(v) => NumSliceMut::U32(v),
            Numbers::I64(v) => NumSliceMut::I64(v),
            Numbers::U64(v) => NumSliceMut::U64(v),
            Numbers::F32(v) => NumSliceMut::F32(v),
            Numbers::F64(v) => NumSliceMut::F64(v),
        }
    }
}

impl PartialEq for Numbers {
    fn eq(&self, other: &Numbers) -> bool {
        self.same_as(other)
    }
}

macro_rules! from_vec {
    ($($t:ty => $variant:ident),*) => {$(
        impl From<Vec<$t>> for Numbers {
            fn from(v: Vec<$t>) -> Numbers {
                Numbers::$variant(v)
            }
        }
    )*};
}
from_vec!(i8 => I8, u8 => U8, i16 => I16, u16 => U16, i32 => I32, u32 => U32, i64 => I64, u64 => U64,
    f32 => F32, f64 => F64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_convert_and_compare_by_element_values() {
        let n = Numbers::from(vec![1.5f64, -2.0]);
        assert_eq!(n.kind(), NumKind::F64);
        assert_eq!(n.as_bytes(), [1.5f64.to_le_bytes(), (-2.0f64).to_le_bytes()].concat());
        assert_eq!(Numbers::from_le_bytes(NumKind::F64, n.as_bytes()), n);
        assert_eq!(n.get(1), Some(Value::Float(-2.0)));
        assert_eq!(Numbers::from(vec![1i32, -1]), Numbers::from(vec![1i64, -1]));
        assert_ne!(Numbers::from(vec![1i32]), Numbers::from(vec![1u32])); // Int(1) vs UInt(1)
        assert!(Numbers::from(vec![3u16]).same_as_values(&[Value::UInt(3)]));
        assert_eq!(Numbers::from_values(NumKind::I8, &[Value::Int(-128)]), Some(Numbers::I8(vec![-128])));
        assert_eq!(Numbers::from_values(NumKind::I8, &[Value::Int(128)]), None);
        assert_eq!(Numbers::from_values(NumKind::F32, &[Value::Float(0.1)]), None); // not exact
        assert_eq!(Numbers::from_vec(vec![1u64]).unwrap(), Numbers::U64(vec![1]));
        assert_eq!(Numbers::from_vec(vec![true]).unwrap_err(), vec![true]);
        assert_eq!(Numbers::F64(vec![2.0]).into_vec::<f64>(), Ok(vec![2.0]));
        assert_eq!(Numbers::F64(vec![2.0]).into_vec::<f32>(), Err(Numbers::F64(vec![2.0])));
        assert_eq!(Numbers::kind_of::<u16>(), Some(NumKind::U16));
        assert_eq!(Numbers::kind_of::<bool>(), None);
        assert_eq!(Numbers::zeros(NumKind::I16, 3), Numbers::I16(vec![0; 3]));
    }
}
