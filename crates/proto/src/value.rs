//! Dynamic values: what the client passes to a call and gets back.
//!
//! A [`Value`] has no layout of its own; it is checked against the declared [`CType`](crate::CType) and
//! laid out for the server's target when a call is encoded, so `Value::Int(300)` for an `unsigned char`
//! is refused with an error naming the argument, never truncated.

use std::fmt;

use crate::numbers::Numbers;

/// A value passed to or returned from a bridged function.
///
/// Equality compares what values stand for: a [`Value::Numbers`] equals a [`Value::Array`] (or another
/// `Numbers`) whose elements are the same values ([`Numbers::get`]: `Int` for signed elements, `UInt`
/// for unsigned ones, `Float` for floats), so `Value::f64s([1.0])` equals
/// `Value::Array(vec![Value::Float(1.0)])`. Every other variant equals only itself with equal contents
/// (`Bytes` is not an `Array` of `UInt`s, `Int(1)` is not `UInt(1)`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Value {
    /// No value: what a `void` function returns.
    Void,
    /// A `bool`.
    Bool(bool),
    /// A signed integer (any integer type accepts it when it fits).
    Int(i64),
    /// An unsigned integer (any integer type accepts it when it fits).
    UInt(u64),
    /// A `float` or `double` (integers are accepted too).
    Float(f64),
    /// An x87 80-bit `long double`, kept bit-exact.
    LongDouble(ExtF80),
    /// An address in the server's memory: an opaque handle, memory from
    /// [`Request::Alloc`](crate::Request::Alloc), or `NULL` (`Pointer(0)`).
    Pointer(u64),
    /// Text: for `char *`/`wchar_t *` strings (a NUL is added) and character arrays.
    Str(String),
    /// Raw bytes: for byte buffers, character arrays, or any pointee or aggregate given already laid out.
    Bytes(Vec<u8>),
    /// The elements of an array, or of the memory a pointer argument points to.
    Array(Vec<Value>),
    /// A homogeneous array of numbers in one contiguous vector: for a pointer or a C array whose
    /// elements have the same layout on the server (`f64` for `double`, `i32` for `int`), its bytes are
    /// sent as they are; otherwise each element is converted and range-checked like the `Value` it
    /// stands for. Read back (an `Out`/`InOut` pointer, a C array member) as `Numbers` of the same kind
    /// when every element fits it, else as a [`Value::Array`].
    Numbers(Numbers),
    /// The members of a struct, in declaration order.
    Struct(Vec<Value>),
    /// The member of a union to set: its index and value.
    Variant(u32, Box<Value>),
    /// A union read back: every member's view of the same bytes.
    Union(Vec<Value>),
    /// `n` zeroed elements of a pointer's pointee type: an output buffer.
    Zeros(u32),
    /// For a pointer argument: memory in a buffer shared with the server (region `region`, from
    /// `offset`, `len` bytes). Passed as the server's own address of that memory: nothing is copied
    /// either way, and the library may keep the pointer and write through it later.
    Shared {
        /// The shared buffer's region id.
        region: u32,
        /// Where in it.
        offset: u64,
        /// How many bytes the function may use.
        len: u64,
    },
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        use Value::*;
        match (self, other) {
            (Numbers(a), Numbers(b)) => a.same_as(b),
            (Numbers(n), Array(items)) | (Array(items), Numbers(n)) => n.same_as_values(items),
            (Void, Void) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (UInt(a), UInt(b)) => a == b,
            (Float(a), Float(b)) => a == b,
            (LongDouble(a), LongDouble(b)) => a == b,
            (Pointer(a), Pointer(b)) => a == b,
            (Str(a), Str(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (Array(a), Array(b)) | (Struct(a), Struct(b)) | (Union(a), Union(b)) => a == b,
            (Variant(i, a), Variant(j, b)) => i == j && a == b,
            (Zeros(a), Zeros(b)) => a == b,
            (Shared { region: r, offset: o, len: l }, Shared { region: r2, offset: o2, len: l2 }) => {
                (r, o, l) == (r2, o2, l2)
            }
            _ => false,
        }
    }
}

impl Value {
    /// `NULL`.
    pub const NULL: Value = Value::Pointer(0);

    /// The value as a signed integer, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            Value::UInt(u) => i64::try_from(u).ok(),
            Value::Bool(b) => Some(i64::from(b)),
            _ => None,
        }
    }

    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Int(i) => u64::try_from(i).ok(),
            Value::UInt(u) => Some(u),
            Value::Bool(b) => Some(u64::from(b)),
            _ => None,
        }
    }

    /// The value as a float (integers and `long double` convert).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Float(f) => Some(f),
            Value::LongDouble(x) => Some(x.to_f64()),
            Value::Int(i) => Some(i as f64),
            Value::UInt(u) => Some(u as f64),
            _ => None,
        }
    }

    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            Value::Int(i) => Some(i != 0),
            Value::UInt(u) => Some(u != 0),
            _ => None,
        }
    }

    /// The address of a pointer value.
    pub fn as_pointer(&self) -> Option<u64> {
        match *self {
            Value::Pointer(p) => Some(p),
            _ => None,
        }
    }

    /// Text up to the first NUL: from [`Value::Str`], or [`Value::Bytes`] holding UTF-8 (like ctypes'
    /// `.value` of a `char` array).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s.split('\0').next().unwrap_or("")),
            Value::Bytes(b) => {
                let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                std::str::from_utf8(&b[..end]).ok()
            }
            _ => None,
        }
    }

    /// Raw bytes of a [`Value::Bytes`] or [`Value::Str`].
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            Value::Str(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// The elements of an array or the members of a struct (not of [`Value::Numbers`], whose elements
    /// are not stored as `Value`s: see [`Value::element`]).
    pub fn as_slice(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) | Value::Struct(v) | Value::Union(v) => Some(v),
            _ => None,
        }
    }

    /// Element or member `i` of an array, struct or union.
    pub fn get(&self, i: usize) -> Option<&Value> {
        self.as_slice()?.get(i)
    }

    /// Element `i` of an array (packed or not), or member `i` of a struct or union, by value.
    pub fn element(&self, i: usize) -> Option<Value> {
        match self {
            Value::Numbers(n) => n.get(i),
            other => other.get(i).cloned(),
        }
    }

    /// The number of elements of an array (packed or not), or of members of a struct or union (0 for
    /// anything else).
    pub fn element_count(&self) -> usize {
        match self {
            Value::Numbers(n) => n.len(),
            other => other.as_slice().map_or(0, <[Value]>::len),
        }
    }

    /// An array of doubles, packed ([`Value::Numbers`]).
    pub fn f64s(values: impl IntoIterator<Item = f64>) -> Value {
        Value::Numbers(Numbers::F64(values.into_iter().collect()))
    }

    /// An array of signed integers, packed as `i64`s ([`Value::Numbers`]; each is range-checked against
    /// the C element type when sent).
    pub fn ints(values: impl IntoIterator<Item = i64>) -> Value {
        Value::Numbers(Numbers::I64(values.into_iter().collect()))
    }

    /// The array's elements as doubles, if every element is a number.
    pub fn to_f64_vec(&self) -> Option<Vec<f64>> {
        match self {
            Value::Numbers(Numbers::F64(v)) => Some(v.clone()),
            Value::Numbers(n) => n.values().map(|v| v.as_f64()).collect(),
            other => other.as_slice()?.iter().map(Value::as_f64).collect(),
        }
    }

    /// A short name of the value's kind, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Void => "void",
            Value::Bool(_) => "a bool",
            Value::Int(_) | Value::UInt(_) => "an integer",
            Value::Float(_) => "a float",
            Value::LongDouble(_) => "a long double",
            Value::Pointer(_) => "a pointer",
            Value::Str(_) => "a string",
            Value::Bytes(_) => "bytes",
            Value::Array(_) => "an array",
            Value::Numbers(_) => "an array of numbers",
            Value::Struct(_) => "a struct",
            Value::Variant(..) => "a union member",
            Value::Union(_) => "a union",
            Value::Zeros(_) => "zeroed elements",
            Value::Shared { .. } => "shared memory",
        }
    }
}

macro_rules! from_int {
    ($variant:ident as $wide:ty: $($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::$variant(<$wide>::from(v))
            }
        }
    )*};
}
from_int!(Int as i64: i8, i16, i32, i64);
from_int!(UInt as u64: u8, u16, u32, u64);

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}
impl From<f32> for Value {
    fn from(v: f32) -> Value {
        Value::Float(f64::from(v))
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Str(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Str(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Bytes(v)
    }
}
impl From<Numbers> for Value {
    fn from(v: Numbers) -> Value {
        Value::Numbers(v)
    }
}

macro_rules! from_numbers {
    ($($t:ty),*) => {$(
        /// A packed array ([`Value::Numbers`]), moved in without copying.
        impl From<Vec<$t>> for Value {
            fn from(v: Vec<$t>) -> Value {
                Value::Numbers(Numbers::from(v))
            }
        }
    )*};
}
from_numbers!(i8, i16, u16, i32, u32, i64, u64, f32, f64);

impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Value {
        Value::Array(v)
    }
}

/// A [`Value`] that is not of the Rust type asked for: its kind, or an integer out of that type's range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, got {found}")]
#[non_exhaustive]
pub struct ValueTypeError {
    /// The Rust type asked for (`i32`, `String`, `Vec<f64>`).
    pub expected: &'static str,
    /// What the value was (`a string`, `an integer out of range: 300`).
    pub found: String,
}

impl ValueTypeError {
    /// The error for value `v` where a `expected` was asked for (used by the typed layer's
    /// conversions, and by the code `#[derive(CStruct)]` writes).
    pub fn new(expected: &'static str, v: &Value) -> Self {
        let found = match v {
            Value::Int(i) => format!("an integer out of range: {i}"),
            Value::UInt(u) => format!("an integer out of range: {u}"),
            other => other.kind().to_owned(),
        };
        ValueTypeError { expected, found }
    }

    /// The error for something described by `found` where a `expected` was asked for.
    pub fn found(expected: &'static str, found: impl Into<String>) -> Self {
        ValueTypeError { expected, found: found.into() }
    }

    /// The same error, found inside `place` of a larger value (`member \`x\` of struct Pt`,
    /// `element 3`): the place is added to [`ValueTypeError::found`].
    pub fn within(mut self, place: impl std::fmt::Display) -> Self {
        self.found = format!("{} in {place}", self.found);
        self
    }
}

macro_rules! try_from_int {
    ($via:ident: $($t:ty),*) => {$(
        /// The integer, if it is one (or a bool) and fits; a float is refused, not truncated.
        impl TryFrom<Value> for $t {
            type Error = ValueTypeError;
            fn try_from(v: Value) -> Result<$t, ValueTypeError> {
                v.$via().and_then(|i| <$t>::try_from(i).ok()).ok_or_else(|| ValueTypeError::new(stringify!($t), &v))
            }
        }
    )*};
}
try_from_int!(as_i64: i8, i16, i32, i64);
try_from_int!(as_u64: u8, u16, u32, u64);

/// A `float`/`double` (or `long double`, rounded); an integer is refused.
impl TryFrom<Value> for f64 {
    type Error = ValueTypeError;
    fn try_from(v: Value) -> Result<f64, ValueTypeError> {
        match v {
            Value::Float(f) => Ok(f),
            Value::LongDouble(x) => Ok(x.to_f64()),
            other => Err(ValueTypeError::new("f64", &other)),
        }
    }
}

/// A `float` (exact: a C `float` comes back as a `Value::Float` it converts to without rounding).
impl TryFrom<Value> for f32 {
    type Error = ValueTypeError;
    fn try_from(v: Value) -> Result<f32, ValueTypeError> {
        match v {
            Value::Float(f) => Ok(f as f32),
            other => Err(ValueTypeError::new("f32", &other)),
        }
    }
}

/// A `bool` (a C `_Bool`), or an integer 0 or 1.
impl TryFrom<Value> for bool {
    type Error = ValueTypeError;
    fn try_from(v: Value) -> Result<bool, ValueTypeError> {
        match v {
            Value::Bool(b) => Ok(b),
            Value::Int(0) | Value::UInt(0) => Ok(false),
            Value::Int(1) | Value::UInt(1) => Ok(true),
            other => Err(ValueTypeError::new("bool", &other)),
        }
    }
}

/// Text up to the first NUL, as [`Value::as_str`] reads it (a string, or bytes holding UTF-8).
impl TryFrom<Value> for String {
    type Error = ValueTypeError;
    fn try_from(v: Value) -> Result<String, ValueTypeError> {
        match v {
            Value::Str(mut s) => {
                if let Some(end) = s.find('\0') {
                    s.truncate(end);
                }
                Ok(s)
            }
            other => other.as_str().map(str::to_owned).ok_or_else(|| ValueTypeError::new("String", &other)),
        }
    }
}

/// The elements of an array (each converted), or of bytes (each byte as an integer, so `Vec<u8>` takes
/// a `char`/`uint8_t` buffer). [`Value::Numbers`] of `T` elements gives its vector as it is (no copy);
/// of another kind, each element is converted like the value it stands for.
impl<T: TryFrom<Value, Error = ValueTypeError> + 'static> TryFrom<Value> for Vec<T> {
    type Error = ValueTypeError;
    fn try_from(v: Value) -> Result<Vec<T>, ValueTypeError> {
        match v {
            Value::Numbers(n) => match n.into_vec::<T>() {
                Ok(v) => Ok(v),
                Err(n) => n.values().map(T::try_from).collect(),
            },
            Value::Array(items) => items.into_iter().map(T::try_from).collect(),
            Value::Bytes(b) => b.into_iter().map(|c| T::try_from(Value::UInt(u64::from(c)))).collect(),
            other => Err(ValueTypeError::new("Vec", &other)),
        }
    }
}

/// An x87 80-bit extended-precision float (`long double` on x86 Linux), stored as its 10 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExtF80(pub [u8; 10]);

impl ExtF80 {
    /// Converts a double exactly (every double is representable).
    pub fn from_f64(v: f64) -> ExtF80 {
        let bits = v.to_bits();
        let sign = ((bits >> 63) as u16) << 15;
        let exp = ((bits >> 52) & 0x7ff) as i32;
        let frac = bits & ((1 << 52) - 1);
        let (e, m): (u16, u64) = if exp == 0 && frac == 0 {
            (0, 0)
        } else if exp == 0x7ff {
            // Infinity or NaN: explicit integer bit set, payload kept.
            (0x7fff, (1 << 63) | (frac << 11))
        } else if exp == 0 {
            // Subnormal double: normalise (the extended format's range covers it).
            // frac * 2^-1074 == (frac << lz) * 2^(e - 16383 - 63) with e = 15372 - lz.
            let lz = frac.leading_zeros();
            ((15372 - lz) as u16, frac << lz)
        } else {
            ((exp - 1023 + 16383) as u16, (1 << 63) | (frac << 11))
        };
        let mut out = [0u8; 10];
        out[..8].copy_from_slice(&m.to_le_bytes());
        out[8..].copy_from_slice(&(sign | e).to_le_bytes());
        ExtF80(out)
    }

    /// Rounds to the nearest double (ties to even); out-of-range values become infinities or zeros.
    pub fn to_f64(self) -> f64 {
        let m = u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes"));
        let se = u16::from_le_bytes([self.0[8], self.0[9]]);
        let sign = if se & 0x8000 != 0 { -1.0 } else { 1.0 };
        let e = i32::from(se & 0x7fff);
        if e == 0x7fff {
            return if m << 1 == 0 { sign * f64::INFINITY } else { f64::NAN };
        }
        if m == 0 {
            return sign * 0.0;
        }
        // value = m * 2^(e - 16383 - 63); split the scaling so no step overflows early.
        let mut v = m as f64; // rounds to 53 bits (ties to even)
        let mut p = e - 16383 - 63;
        while p > 1000 {
            v *= 2f64.powi(1000);
            p -= 1000;
        }
        while p < -1000 {
            v *= 2f64.powi(-1000);
            p += 1000;
        }
        sign * v * 2f64.powi(p)
    }
}

impl fmt::Debug for ExtF80 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExtF80({})", self.to_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_f80_round_trips_doubles() {
        for v in [0.0, -0.0, 1.0, -2.5, 1e300, -1e-300, f64::MAX, f64::MIN_POSITIVE, 5e-324, f64::INFINITY] {
            assert_eq!(ExtF80::from_f64(v).to_f64().to_bits(), v.to_bits(), "{v}");
        }
        assert!(ExtF80::from_f64(f64::NAN).to_f64().is_nan());
        // 1.0 is 0x3fff 8000000000000000.
        assert_eq!(ExtF80::from_f64(1.0).0, [0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f]);
    }
}

#[cfg(test)]
mod try_from_tests {
    use super::{Value, ValueTypeError};

    #[test]
    fn scalars_strings_and_vectors_convert_or_say_why_not() {
        assert_eq!(i32::try_from(Value::Int(-7)), Ok(-7));
        assert_eq!(u8::try_from(Value::UInt(255)), Ok(255));
        let e = u8::try_from(Value::Int(300)).unwrap_err();
        assert_eq!(e.to_string(), "expected u8, got an integer out of range: 300");
        assert_eq!(i64::try_from(Value::Float(1.5)).unwrap_err().found, "a float");
        assert_eq!(f64::try_from(Value::Float(2.5)), Ok(2.5));
        assert_eq!(f32::try_from(Value::Float(0.5)), Ok(0.5));
        assert_eq!(bool::try_from(Value::Int(1)), Ok(true));
        assert_eq!(String::try_from(Value::Str("ab\0cd".into())).as_deref(), Ok("ab"));
        assert_eq!(String::try_from(Value::Bytes(b"hi\0\0".to_vec())).as_deref(), Ok("hi"));
        assert_eq!(Vec::<f64>::try_from(Value::f64s([1.0, 2.0])), Ok(vec![1.0, 2.0]));
        assert_eq!(Vec::<u8>::try_from(Value::Bytes(vec![1, 2])), Ok(vec![1, 2]));
        assert_eq!(Vec::<Vec<i32>>::try_from(Value::Array(vec![Value::ints([1, 2])])), Ok(vec![vec![1, 2]]));
        let e: ValueTypeError = Vec::<i32>::try_from(Value::Str("x".into())).unwrap_err();
        assert_eq!(e.found, "a string");
    }
}
