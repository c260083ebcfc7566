//! The C type model: what a function takes and returns, described abstractly.
//!
//! Nothing here has a size yet. Sizes, alignments and field offsets depend on the target that runs the
//! call (a `long` is 4 bytes on i386 and Win64, 8 on x86_64 Linux) and are computed by
//! [`Target`](crate::Target) for the *server's* target, never the client's.

use std::fmt;
use std::sync::Arc;

use bincode::{Decode, Encode};

/// A C type.
///
/// Fundamental types follow ctypes' names; fixed-width integers are spelled out. `Pointer(Void)` is
/// `void *`; [`CType::CStr`] and [`CType::WStr`] are `char *` and `wchar_t *` used as NUL-terminated
/// strings (ctypes' `c_char_p` and `c_wchar_p`): as arguments they take text, as return values the
/// server reads the string the function returned.
// `Decode` is written by hand below so that nesting is bounded while decoding untrusted frames.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode)]
#[non_exhaustive]
pub enum CType {
    /// `void`: only as a return type, or behind a pointer.
    Void,
    /// `_Bool` / `bool`.
    Bool,
    /// `char` (signed on x86 targets).
    Char,
    /// `signed char`.
    SChar,
    /// `unsigned char`.
    UChar,
    /// `wchar_t`: 4 bytes and signed on Linux, 2 bytes and unsigned on Windows.
    WChar,
    /// `short`.
    Short,
    /// `unsigned short`.
    UShort,
    /// `int`.
    Int,
    /// `unsigned int`.
    UInt,
    /// `long`: 4 bytes on i386, Win32 and Win64; 8 bytes on x86_64 Linux.
    Long,
    /// `unsigned long`.
    ULong,
    /// `long long`.
    LongLong,
    /// `unsigned long long`.
    ULongLong,
    /// `int8_t`.
    I8,
    /// `uint8_t`.
    U8,
    /// `int16_t`.
    I16,
    /// `uint16_t`.
    U16,
    /// `int32_t`.
    I32,
    /// `uint32_t`.
    U32,
    /// `int64_t`.
    I64,
    /// `uint64_t`.
    U64,
    /// `size_t`: as wide as a pointer.
    SizeT,
    /// `ssize_t` / `ptrdiff_t`.
    SSizeT,
    /// `float`.
    Float,
    /// `double`.
    Double,
    /// `long double`: x87 80-bit extended on Linux (12 bytes on i386, 16 on x86_64); a `double` on Windows.
    LongDouble,
    /// A pointer to a value of the inner type (`Pointer(Void)` is `void *`).
    Pointer(Box<CType>),
    /// `char *` as a NUL-terminated string (ctypes' `c_char_p`).
    CStr,
    /// `wchar_t *` as a NUL-terminated wide string (ctypes' `c_wchar_p`).
    WStr,
    /// A fixed-size array `T[n]`; nest for multi-dimensional arrays (`double[3][4]` is
    /// `Array(Array(Double, 4), 3)`).
    Array(Box<CType>, u32),
    /// A `struct`.
    Struct(Arc<StructDef>),
    /// A `union`.
    Union(Arc<StructDef>),
    /// A pointer to a function of the given signature.
    FnPtr(Arc<Signature>),
}

/// The members of a struct or union.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub struct StructDef {
    /// The tag, used in messages (`struct Complex`); may be empty.
    pub name: String,
    /// The members in declaration order.
    pub fields: Vec<Field>,
    /// `#pragma pack(n)`: no member is aligned to more than `n` bytes. `Some(1)` is
    /// `__attribute__((packed))`.
    pub pack: Option<u32>,
}

/// One member of a struct or union.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Field {
    /// The member's name (empty for an unnamed bit-field or an anonymous struct or union member).
    pub name: String,
    /// The member's type (for a bit-field, its declared integer type: `unsigned`, `int`, `_Bool`, ...).
    pub ty: CType,
    /// `Some(width)` for a bit-field of `width` bits (`unsigned ready : 1`); `Some(0)` is an unnamed
    /// zero-width bit-field (`int : 0`), which only moves the next member to a new storage unit. Its
    /// place is [`StructLayout::bit_offsets`](crate::StructLayout::bit_offsets), per the target's rules
    /// (gcc's System V layout on Linux, MSVC's on Windows). Its value is an integer (a bool for `_Bool`).
    pub bits: Option<u32>,
}

impl Field {
    /// A member of type `ty`.
    pub fn new(name: impl Into<String>, ty: CType) -> Field {
        Field { name: name.into(), ty, bits: None }
    }

    /// A bit-field of `width` bits of the integer type `ty`.
    pub fn bit_field(name: impl Into<String>, ty: CType, width: u32) -> Field {
        Field { name: name.into(), ty, bits: Some(width) }
    }
}

/// How a pointer argument's memory travels (ctypes' `paramflags`, zugbruecke's memsync).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Encode, Decode)]
pub enum Direction {
    /// Copied to the server before the call; the function only reads it.
    #[default]
    In,
    /// Not copied in (the server passes zeroed memory of the same size); copied back after the call.
    Out,
    /// Copied to the server before the call and back after it.
    InOut,
}

/// A calling convention. Only i386 has more than one; elsewhere every value means the platform's C
/// convention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Encode, Decode)]
#[non_exhaustive]
pub enum CallConv {
    /// The platform's C convention (`__cdecl` on i386, System V or Microsoft x64 on x86_64).
    #[default]
    Cdecl,
    /// `__stdcall` (`WINAPI`): the callee pops its arguments. i386 only.
    Stdcall,
    /// `__fastcall`: the first two integer arguments in ECX and EDX. i386 only.
    Fastcall,
    /// `__thiscall`: the first argument in ECX. i386 only.
    Thiscall,
}

/// One parameter of a function: its type and, for pointers, how the pointed-to memory travels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Param {
    /// The parameter's type.
    pub ty: CType,
    /// For pointer parameters: when the pointed-to memory is copied. Ignored for other types.
    pub dir: Direction,
}

/// A function's signature: ctypes' `argtypes` and `restype`, plus the calling convention.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Signature {
    /// The return type (`CType::Void` for none).
    pub ret: CType,
    /// The parameters, in order.
    pub params: Vec<Param>,
    /// The calling convention.
    pub conv: CallConv,
    /// Read `errno` right after each call and return it (ctypes' `use_errno`); it is set to 0 before.
    pub use_errno: bool,
    /// Read the thread's Windows last-error code (`GetLastError`) right after each call and return it
    /// (ctypes' `use_last_error`); it is set to 0 before. Windows servers only.
    pub use_last_error: bool,
    /// The function takes more arguments after `params` (`...`), whose types are given per call.
    pub variadic: bool,
}

impl Signature {
    /// A `cdecl` function returning `ret` and taking no parameters yet.
    pub fn new(ret: CType) -> Self {
        Signature {
            ret,
            params: Vec::new(),
            conv: CallConv::Cdecl,
            use_errno: false,
            use_last_error: false,
            variadic: false,
        }
    }

    /// Captures the Windows last-error code after every call (ctypes' `use_last_error=True`): see
    /// `Outcome::last_error` in the client. A Linux server refuses to prepare such a function.
    pub fn last_error(mut self) -> Self {
        self.use_last_error = true;
        self
    }

    /// Captures `errno` after every call (ctypes' `use_errno=True`): see `Outcome::errno` in the client.
    pub fn errno(mut self) -> Self {
        self.use_errno = true;
        self
    }

    /// Declares the function variadic: `params` are the fixed parameters, the rest are typed per call.
    pub fn variadic(mut self) -> Self {
        self.variadic = true;
        self
    }

    /// Adds a parameter passed by value (or a pointer whose memory is only read: [`Direction::In`]).
    pub fn arg(self, ty: CType) -> Self {
        self.param(ty, Direction::In)
    }

    /// Adds a pointer parameter whose memory the function fills ([`Direction::Out`]).
    pub fn arg_out(self, ty: CType) -> Self {
        self.param(ty, Direction::Out)
    }

    /// Adds a pointer parameter whose memory the function reads and changes ([`Direction::InOut`]).
    pub fn arg_inout(self, ty: CType) -> Self {
        self.param(ty, Direction::InOut)
    }

    /// Adds a parameter with an explicit direction.
    pub fn param(mut self, ty: CType, dir: Direction) -> Self {
        self.params.push(Param { ty, dir });
        self
    }

    /// The deepest nesting among the signature's types (see [`CType::depth`]).
    pub fn depth(&self) -> u32 {
        self.params.iter().map(|p| p.ty.depth()).chain([self.ret.depth()]).max().unwrap_or(1)
    }

    /// Sets the calling convention.
    pub fn conv(mut self, conv: CallConv) -> Self {
        self.conv = conv;
        self
    }
}

impl CType {
    /// `T *`.
    pub fn ptr(to: CType) -> CType {
        CType::Pointer(Box::new(to))
    }

    /// `void *`.
    pub fn void_ptr() -> CType {
        CType::Pointer(Box::new(CType::Void))
    }

    /// `T[n]`.
    pub fn array(of: CType, n: u32) -> CType {
        CType::Array(Box::new(of), n)
    }

    /// A struct with the given `(name, type)` members and natural alignment.
    pub fn structure<N: Into<String>>(name: &str, fields: impl IntoIterator<Item = (N, CType)>) -> CType {
        CType::Struct(Arc::new(StructDef::new(name, fields, None)))
    }

    /// A struct laid out under `#pragma pack(pack)` (`pack = 1` is `__attribute__((packed))`).
    pub fn packed_structure<N: Into<String>>(
        name: &str,
        pack: u32,
        fields: impl IntoIterator<Item = (N, CType)>,
    ) -> CType {
        CType::Struct(Arc::new(StructDef::new(name, fields, Some(pack))))
    }

    /// A struct of the given members (bit-fields among them), under `#pragma pack(pack)` if given.
    pub fn struct_of(name: &str, fields: Vec<Field>, pack: Option<u32>) -> CType {
        CType::Struct(Arc::new(StructDef { name: name.to_owned(), fields, pack }))
    }

    /// A union with the given `(name, type)` members.
    pub fn union<N: Into<String>>(name: &str, fields: impl IntoIterator<Item = (N, CType)>) -> CType {
        CType::Union(Arc::new(StructDef::new(name, fields, None)))
    }

    /// A pointer to a function of the given signature.
    pub fn fn_ptr(sig: Signature) -> CType {
        CType::FnPtr(Arc::new(sig))
    }

    /// True for the integer types (including `bool`, the character types and `wchar_t`).
    pub fn is_integer(&self) -> bool {
        use CType::*;
        matches!(
            self,
            Bool | Char
                | SChar
                | UChar
                | WChar
                | Short
                | UShort
                | Int
                | UInt
                | Long
                | ULong
                | LongLong
                | ULongLong
                | I8
                | U8
                | I16
                | U16
                | I32
                | U32
                | I64
                | U64
                | SizeT
                | SSizeT
        )
    }

    /// True for the types whose values are addresses: pointers, strings and function pointers.
    pub fn is_pointer(&self) -> bool {
        matches!(self, CType::Pointer(_) | CType::CStr | CType::WStr | CType::FnPtr(_))
    }

    /// Whether values of this type hold addresses anywhere (itself, a member, an element).
    pub fn contains_pointer(&self) -> bool {
        match self {
            t if t.is_pointer() => true,
            CType::Array(of, _) => of.contains_pointer(),
            CType::Struct(d) | CType::Union(d) => d.fields.iter().any(|f| f.ty.contains_pointer()),
            _ => false,
        }
    }

    /// How deeply the type nests (a scalar is 1, `int *` is 2), as the server's decoder counts it; it
    /// refuses types deeper than [`MAX_DEPTH`](crate::target::MAX_DEPTH).
    pub fn depth(&self) -> u32 {
        1 + match self {
            CType::Pointer(t) | CType::Array(t, _) => t.depth(),
            CType::Struct(d) | CType::Union(d) => d.fields.iter().map(|f| f.ty.depth()).max().unwrap_or(0),
            CType::FnPtr(sig) => sig.depth(),
            _ => 0,
        }
    }

    /// The type C passes in its place among variadic arguments (the default argument promotions), if it
    /// differs: `float` becomes `double`; `bool`, `char`, `short` and their kin become `int`.
    pub fn promoted(&self) -> Option<CType> {
        use CType::*;
        match self {
            Float => Some(Double),
            Bool | Char | SChar | UChar | Short | UShort | I8 | U8 | I16 | U16 => Some(Int),
            _ => None,
        }
    }

    /// True for byte-sized element types, whose arrays and buffers travel as [`Value::Bytes`](crate::Value).
    pub fn is_byte(&self) -> bool {
        matches!(self, CType::Char | CType::SChar | CType::UChar | CType::I8 | CType::U8)
    }
}

impl StructDef {
    /// A struct or union definition from `(name, type)` members.
    pub fn new<N: Into<String>>(name: &str, fields: impl IntoIterator<Item = (N, CType)>, pack: Option<u32>) -> Self {
        StructDef { name: name.to_owned(), fields: fields.into_iter().map(|(n, ty)| Field::new(n, ty)).collect(), pack }
    }

    /// The index of the member called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}

impl fmt::Display for CType {
    /// Writes the type in C syntax (`struct Complex *`, `double[100]`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CType::*;
        let s = match self {
            Void => "void",
            Bool => "bool",
            Char => "char",
            SChar => "signed char",
            UChar => "unsigned char",
            WChar => "wchar_t",
            Short => "short",
            UShort => "unsigned short",
            Int => "int",
            UInt => "unsigned int",
            Long => "long",
            ULong => "unsigned long",
            LongLong => "long long",
            ULongLong => "unsigned long long",
            I8 => "int8_t",
            U8 => "uint8_t",
            I16 => "int16_t",
            U16 => "uint16_t",
            I32 => "int32_t",
            U32 => "uint32_t",
            I64 => "int64_t",
            U64 => "uint64_t",
            SizeT => "size_t",
            SSizeT => "ssize_t",
            Float => "float",
            Double => "double",
            LongDouble => "long double",
            CStr => "char *",
            WStr => "wchar_t *",
            Pointer(to) => return write!(f, "{to} *"),
            Array(..) => {
                // C writes the outermost dimension first: Array(Array(Double, 4), 3) is double[3][4].
                let mut dims = Vec::new();
                let mut t = self;
                while let Array(of, n) = t {
                    dims.push(*n);
                    t = of;
                }
                write!(f, "{t}")?;
                return dims.iter().try_for_each(|n| write!(f, "[{n}]"));
            }
            Struct(d) => return write!(f, "struct {}", if d.name.is_empty() { "<anonymous>" } else { &d.name }),
            Union(d) => return write!(f, "union {}", if d.name.is_empty() { "<anonymous>" } else { &d.name }),
            FnPtr(sig) => {
                write!(f, "{} (*)(", sig.ret)?;
                for (i, p) in sig.params.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}", p.ty)?;
                }
                return f.write_str(")");
            }
        };
        f.write_str(s)
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (", self.ret)?;
        for (i, p) in self.params.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", p.ty)?;
        }
        if self.variadic {
            f.write_str(if self.params.is_empty() { "..." } else { ", ..." })?;
        }
        f.write_str(")")
    }
}

thread_local! {
    static DECODE_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Decodes like the derived implementation would (a `u32` variant index, then the fields), but refuses
/// types nested deeper than [`MAX_DEPTH`](crate::target::MAX_DEPTH) before recursing, so a hostile frame
/// of a million nested pointers is an error rather than a stack overflow.
impl<C> Decode<C> for CType {
    fn decode<D: bincode::de::Decoder<Context = C>>(d: &mut D) -> Result<Self, bincode::error::DecodeError> {
        struct Guard;
        impl Drop for Guard {
            fn drop(&mut self) {
                DECODE_DEPTH.with(|c| c.set(c.get() - 1));
            }
        }
        let depth = DECODE_DEPTH.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        let _guard = Guard;
        if depth > crate::target::MAX_DEPTH {
            return Err(bincode::error::DecodeError::Other("C type nests too deeply"));
        }
        use CType::*;
        const UNIT: [CType; 27] = [
            Void, Bool, Char, SChar, UChar, WChar, Short, UShort, Int, UInt, Long, ULong, LongLong, ULongLong, I8, U8,
            I16, U16, I32, U32, I64, U64, SizeT, SSizeT, Float, Double, LongDouble,
        ];
        let tag = u32::decode(d)?;
        Ok(match tag {
            t if (t as usize) < UNIT.len() => UNIT[t as usize].clone(),
            27 => Pointer(Box::new(CType::decode(d)?)),
            28 => CStr,
            29 => WStr,
            30 => {
                let of = CType::decode(d)?;
                Array(Box::new(of), u32::decode(d)?)
            }
            31 => Struct(Arc::new(StructDef::decode(d)?)),
            32 => Union(Arc::new(StructDef::decode(d)?)),
            33 => FnPtr(Arc::new(Signature::decode(d)?)),
            found => {
                return Err(bincode::error::DecodeError::UnexpectedVariant {
                    type_name: "CType",
                    allowed: &bincode::error::AllowedEnumVariants::Range { min: 0, max: 33 },
                    found,
                })
            }
        })
    }
}
bincode::impl_borrow_decode!(CType);
