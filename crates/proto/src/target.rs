//! Targets and their C data models: sizes, alignments and field offsets.
//!
//! Every layout is computed for a named [`Target`], the one that runs the call. The numbers are those of
//! the platform ABI documents and of GCC/MSVC; `tests/tests/layout.rs` checks the System V ones against
//! `sizeof`/`offsetof`/`_Alignof` printed by `gcc -m32` and `gcc -m64` on every run.

use std::fmt;

use bincode::{Decode, Encode};

use crate::types::{CType, StructDef};

/// A processor architecture bitbridge can host a library for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
#[non_exhaustive]
pub enum Arch {
    /// 32-bit x86 (i386/i686).
    X86,
    /// 64-bit x86 (x86_64/amd64).
    X86_64,
}

/// An operating system family; decides `wchar_t`, `long` and the Windows struct rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
#[non_exhaustive]
pub enum Os {
    /// Linux (System V ABI).
    Linux,
    /// Windows (Microsoft ABI).
    Windows,
}

/// The platform whose C ABI a layout or call follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Target {
    /// The processor.
    pub arch: Arch,
    /// The operating system.
    pub os: Os,
}

/// Size and alignment of a type, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    /// `sizeof`.
    pub size: u64,
    /// The alignment the type gets as a struct member (`_Alignof`).
    pub align: u64,
}

/// The layout of a struct or union and the offset of each member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StructLayout {
    /// Size and alignment of the whole aggregate.
    pub layout: Layout,
    /// `offsetof` of each member, in declaration order (all zero for a union); for a bit-field, the
    /// byte holding its first bit.
    pub offsets: Vec<u64>,
    /// For each bit-field member, its first bit counted from the start of the aggregate (bit `b` is
    /// bit `b % 8` of byte `b / 8`, least significant first, as on every x86 target); `None` for the
    /// other members.
    pub bit_offsets: Vec<Option<u64>>,
}

/// Why a type has no layout.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// `void` used as a value (a member, an array element or a parameter).
    #[error("`void` has no size: use it only as a return type or behind a pointer")]
    VoidValue,
    /// A struct or union without members.
    #[error("{0} has no members; C gives it no portable size")]
    Empty(String),
    /// A `#pragma pack` value that is not a power of two.
    #[error("{name}: pack({pack}) is not a power of two")]
    BadPack {
        /// The aggregate.
        name: String,
        /// The pack value given.
        pack: u32,
    },
    /// A type larger than the target's address space.
    #[error("{0} is larger than the target's address space")]
    TooLarge(String),
    /// A bit-field that C does not allow (a width wider than its type, a type that is not an integer,
    /// a named zero-width field).
    #[error("bit-field {member}: {reason}")]
    BadBitField {
        /// `struct S.name`.
        member: String,
        /// What is wrong.
        reason: String,
    },
    /// Types nested deeper than bitbridge follows.
    #[error("type nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// How deep types may nest (pointers, arrays, members) before they are refused.
pub const MAX_DEPTH: u32 = 64;

impl Target {
    /// i386 System V (32-bit Linux): `double` and `long long` align to 4 inside structs.
    pub const I386_SYSV: Target = Target { arch: Arch::X86, os: Os::Linux };
    /// x86_64 System V (64-bit Linux).
    pub const X86_64_SYSV: Target = Target { arch: Arch::X86_64, os: Os::Linux };
    /// 32-bit Windows (MSVC rules: `double` and `long long` align to 8).
    pub const WIN32: Target = Target { arch: Arch::X86, os: Os::Windows };
    /// 64-bit Windows (LLP64: `long` is 4 bytes).
    pub const WIN64: Target = Target { arch: Arch::X86_64, os: Os::Windows };

    /// The target this code was compiled for, if bitbridge knows it.
    pub fn host() -> Option<Target> {
        let arch = if cfg!(target_arch = "x86_64") {
            Arch::X86_64
        } else if cfg!(target_arch = "x86") {
            Arch::X86
        } else {
            return None;
        };
        let os = if cfg!(target_os = "linux") {
            Os::Linux
        } else if cfg!(windows) {
            Os::Windows
        } else {
            return None;
        };
        Some(Target { arch, os })
    }

    /// Pointer width in bytes (4 or 8).
    pub fn pointer_size(&self) -> u64 {
        u64::from(self.arch.pointer_size())
    }

    /// The largest address a pointer of this target can hold.
    pub fn max_address(&self) -> u64 {
        match self.arch {
            Arch::X86 => u32::MAX as u64,
            Arch::X86_64 => u64::MAX,
        }
    }

    /// Size and alignment of a scalar type, or `None` for aggregates and `void`.
    pub fn scalar_layout(&self, ty: &CType) -> Option<Layout> {
        use CType::*;
        let l = |size, align| Some(Layout { size, align });
        let ptr = self.pointer_size();
        let i386_sysv = *self == Target::I386_SYSV;
        let win = self.os == Os::Windows;
        match ty {
            Bool | Char | SChar | UChar | I8 | U8 => l(1, 1),
            Short | UShort | I16 | U16 => l(2, 2),
            Int | UInt | I32 | U32 | Float => l(4, 4),
            WChar if win => l(2, 2),
            WChar => l(4, 4),
            Long | ULong if win || self.arch == Arch::X86 => l(4, 4),
            Long | ULong => l(8, 8),
            // i386 System V aligns 8-byte scalars to 4 inside structs; MSVC aligns them to 8.
            LongLong | ULongLong | I64 | U64 | Double if i386_sysv => l(8, 4),
            LongLong | ULongLong | I64 | U64 | Double => l(8, 8),
            LongDouble if win => l(8, 8),
            LongDouble if self.arch == Arch::X86 => l(12, 4),
            LongDouble => l(16, 16),
            SizeT | SSizeT | Pointer(_) | CStr | WStr | FnPtr(_) => l(ptr, ptr),
            Void | Array(..) | Struct(_) | Union(_) => None,
        }
    }

    /// True where `wchar_t` is signed (Linux) rather than unsigned (Windows).
    pub fn wchar_signed(&self) -> bool {
        self.os == Os::Linux
    }

    /// Whether integer type `ty` is signed on this target (`wchar_t` is on Linux, not on Windows).
    pub fn int_signed(&self, ty: &CType) -> bool {
        use CType::*;
        match ty {
            WChar => self.wchar_signed(),
            Char | SChar | Short | Int | Long | LongLong | I8 | I16 | I32 | I64 | SSizeT => true,
            _ => false,
        }
    }

    /// The values integer type `ty` takes on this target, inclusive (`None` for other types). `bool` is
    /// 0..=1; a plain `char` also takes the bytes 128..=255, as C code writes them.
    pub fn int_range(&self, ty: &CType) -> Option<(i128, i128)> {
        if !ty.is_integer() {
            return None;
        }
        let bits = self.layout(ty).ok()?.size as u32 * 8;
        Some(match ty {
            CType::Bool => (0, 1),
            CType::Char => (-(1i128 << (bits - 1)), (1i128 << bits) - 1),
            _ if self.int_signed(ty) => (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1),
            _ => (0, (1i128 << bits) - 1),
        })
    }

    /// Size and alignment of any type.
    pub fn layout(&self, ty: &CType) -> Result<Layout, LayoutError> {
        self.layout_at(ty, 0)
    }

    fn layout_at(&self, ty: &CType, depth: u32) -> Result<Layout, LayoutError> {
        if depth > MAX_DEPTH {
            return Err(LayoutError::TooDeep);
        }
        if let Some(l) = self.scalar_layout(ty) {
            return Ok(l);
        }
        match ty {
            CType::Void => Err(LayoutError::VoidValue),
            CType::Array(of, n) => {
                let e = self.layout_at(of, depth + 1)?;
                let size = e.size.checked_mul(u64::from(*n)).filter(|s| *s <= self.max_address());
                let size = size.ok_or_else(|| LayoutError::TooLarge(ty.to_string()))?;
                Ok(Layout { size, align: e.align })
            }
            CType::Struct(def) => Ok(self.aggregate_at(def, false, depth)?.layout),
            CType::Union(def) => Ok(self.aggregate_at(def, true, depth)?.layout),
            _ => unreachable!("scalar_layout covers every other type"),
        }
    }

    /// The layout of a struct and the offset of each member.
    pub fn struct_layout(&self, def: &StructDef) -> Result<StructLayout, LayoutError> {
        self.aggregate_at(def, false, 0)
    }

    /// The layout of a union (every member at offset 0).
    pub fn union_layout(&self, def: &StructDef) -> Result<StructLayout, LayoutError> {
        self.aggregate_at(def, true, 0)
    }

    /// The layout of a struct or union type; `None` for other types.
    pub fn aggregate_layout(&self, ty: &CType) -> Option<Result<StructLayout, LayoutError>> {
        match ty {
            CType::Struct(d) => Some(self.struct_layout(d)),
            CType::Union(d) => Some(self.union_layout(d)),
            _ => None,
        }
    }

    fn aggregate_at(&self, def: &StructDef, union: bool, depth: u32) -> Result<StructLayout, LayoutError> {
        let kind = if union { "union" } else { "struct" };
        let name = || format!("{kind} {}", def.name);
        if def.fields.is_empty() {
            return Err(LayoutError::Empty(name()));
        }
        if let Some(p) = def.pack {
            if !p.is_power_of_two() {
                return Err(LayoutError::BadPack { name: name(), pack: p });
            }
        }
        if def.fields.iter().any(|f| f.bits.is_some()) {
            return self.aggregate_with_bits(def, union, depth);
        }
        let mut offset = 0u64;
        let mut size = 0u64;
        let mut align = 1u64;
        let mut offsets = Vec::with_capacity(def.fields.len());
        for field in &def.fields {
            let mut l = self.layout_at(&field.ty, depth + 1)?;
            if let Some(p) = def.pack {
                l.align = l.align.min(u64::from(p));
            }
            align = align.max(l.align);
            if union {
                offsets.push(0);
                size = size.max(l.size);
            } else {
                offset = offset.checked_next_multiple_of(l.align).ok_or_else(|| LayoutError::TooLarge(name()))?;
                offsets.push(offset);
                offset = offset.checked_add(l.size).ok_or_else(|| LayoutError::TooLarge(name()))?;
                size = offset;
            }
        }
        let size = size.checked_next_multiple_of(align).filter(|s| *s <= self.max_address());
        let size = size.ok_or_else(|| LayoutError::TooLarge(name()))?;
        let bit_offsets = vec![None; offsets.len()];
        Ok(StructLayout { layout: Layout { size, align }, offsets, bit_offsets })
    }

    /// A struct or union with bit-fields, positions counted in bits.
    ///
    /// Linux targets follow gcc's System V rules (`PCC_BITFIELD_TYPE_MATTERS`): a bit-field goes at the
    /// next free bit unless it would span more units of its type's alignment than its type has, then
    /// it starts at the next such unit (not under `#pragma pack` or `packed`, which place it at the
    /// next bit); a named bit-field aligns the whole aggregate like its type (capped by the pack), an
    /// unnamed one does not; `T : 0` moves to the next boundary of `T`'s alignment, whatever the pack.
    /// Windows targets follow MSVC's: consecutive bit-fields share a storage unit of their type's size
    /// while their types have the same size and the bits fit, else a new unit starts (aligned like
    /// the type); a member after bit-fields starts after the whole unit; `T : 0` closes the unit.
    fn aggregate_with_bits(&self, def: &StructDef, union: bool, depth: u32) -> Result<StructLayout, LayoutError> {
        let kind = if union { "union" } else { "struct" };
        let name = || format!("{kind} {}", def.name);
        let too_large = || LayoutError::TooLarge(name());
        let msvc = self.os == Os::Windows;
        let pack = def.pack.map(u64::from);
        let mut bitpos = 0u64; // the next free bit
        let mut end = 0u64; // bits used so far (a union's largest member)
        let mut align = 1u64;
        let mut offsets = Vec::with_capacity(def.fields.len());
        let mut bit_offsets = Vec::with_capacity(def.fields.len());
        // MSVC: the open storage unit (start bit, size in bits, bits used).
        let mut unit: Option<(u64, u64, u64)> = None;
        for field in &def.fields {
            let l = self.layout_at(&field.ty, depth + 1)?;
            let packed_align = pack.map_or(l.align, |p| l.align.min(p));
            let Some(width) = field.bits else {
                if let Some((start, size, _)) = unit.take() {
                    bitpos = bitpos.max(start + size);
                }
                align = align.max(packed_align);
                let at =
                    if union { 0 } else { bitpos.checked_next_multiple_of(packed_align * 8).ok_or_else(too_large)? };
                offsets.push(at / 8);
                bit_offsets.push(None);
                let after = at.checked_add(l.size.checked_mul(8).ok_or_else(too_large)?).ok_or_else(too_large)?;
                if !union {
                    bitpos = after;
                }
                end = end.max(after);
                continue;
            };
            let bad =
                |reason: String| LayoutError::BadBitField { member: format!("{}.{}", name(), field.name), reason };
            if !field.ty.is_integer() {
                return Err(bad(format!("a bit-field must have an integer type, not `{}`", field.ty)));
            }
            let type_bits = l.size * 8;
            if u64::from(width) > type_bits {
                return Err(bad(format!("{width} bits do not fit in `{}` ({type_bits} bits)", field.ty)));
            }
            if width == 0 && !field.name.is_empty() {
                return Err(bad("a zero-width bit-field must be unnamed".into()));
            }
            let width = u64::from(width);
            let at;
            if msvc {
                if width == 0 {
                    if let Some((start, size, _)) = unit.take() {
                        bitpos = bitpos.max(start + size);
                    }
                    offsets.push(bitpos / 8);
                    bit_offsets.push(Some(bitpos));
                    continue;
                }
                match unit {
                    Some((start, size, used)) if !union && size == type_bits && used + width <= size => {
                        at = start + used;
                        unit = Some((start, size, used + width));
                    }
                    _ => {
                        if let Some((start, size, _)) = unit.take() {
                            bitpos = bitpos.max(start + size);
                        }
                        let start = if union {
                            0
                        } else {
                            bitpos.checked_next_multiple_of(packed_align * 8).ok_or_else(too_large)?
                        };
                        at = start;
                        unit = Some((start, type_bits, width));
                        if !union {
                            bitpos = start + type_bits;
                        }
                    }
                }
                align = align.max(packed_align);
                end = end.max(if union { type_bits } else { at + width });
                if union {
                    unit = None;
                }
            } else {
                let type_align = l.align * 8;
                if width == 0 {
                    // Not influenced by the pack; unnamed, so the aggregate's alignment is unchanged.
                    if !union {
                        bitpos = bitpos.checked_next_multiple_of(type_align).ok_or_else(too_large)?;
                    }
                    offsets.push(bitpos / 8);
                    bit_offsets.push(Some(bitpos));
                    end = end.max(bitpos);
                    continue;
                }
                let mut p = if union { 0 } else { bitpos };
                let units = |p: u64| (p % type_align + width).div_ceil(type_align);
                if pack.is_none() && units(p) > type_bits / type_align {
                    p = p.checked_next_multiple_of(type_align).ok_or_else(too_large)?;
                }
                at = p;
                if !union {
                    bitpos = p + width;
                }
                end = end.max(p + width);
                if !field.name.is_empty() {
                    align = align.max(packed_align);
                }
            }
            offsets.push(at / 8);
            bit_offsets.push(Some(at));
        }
        if let Some((start, size, _)) = unit {
            end = end.max(start + size);
        }
        let size = end.div_ceil(8).checked_next_multiple_of(align).filter(|s| *s <= self.max_address());
        let size = size.ok_or_else(too_large)?;
        Ok(StructLayout { layout: Layout { size, align }, offsets, bit_offsets })
    }
}

/// Rounds `n` up to a multiple of `align` (a power of two).
pub fn round_up(n: u64, align: u64) -> u64 {
    n.div_ceil(align) * align
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::X86 => "i686",
            Arch::X86_64 => "x86_64",
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match (self.arch, self.os) {
            (Arch::X86, Os::Linux) => "i386 System V (32-bit Linux)",
            (Arch::X86_64, Os::Linux) => "x86_64 System V (64-bit Linux)",
            (Arch::X86, Os::Windows) => "Win32",
            (Arch::X86_64, Os::Windows) => "Win64",
        };
        f.write_str(s)
    }
}

impl Arch {
    /// Pointer width in bytes.
    pub fn pointer_size(&self) -> u8 {
        match self {
            Arch::X86 => 4,
            Arch::X86_64 => 8,
        }
    }

    /// The Rust target triple of the server for this architecture on Linux.
    pub fn linux_triple(&self) -> &'static str {
        match self {
            Arch::X86 => "i686-unknown-linux-gnu",
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i386_aligns_eight_byte_scalars_to_four_in_structs() {
        let s = CType::structure("S", [("c", CType::Char), ("d", CType::Double), ("ll", CType::LongLong)]);
        let CType::Struct(def) = &s else { unreachable!() };
        let l32 = Target::I386_SYSV.struct_layout(def).unwrap();
        assert_eq!((l32.layout.size, l32.layout.align, l32.offsets.clone()), (20, 4, vec![0, 4, 12]));
        let l64 = Target::X86_64_SYSV.struct_layout(def).unwrap();
        assert_eq!((l64.layout.size, l64.layout.align, l64.offsets.clone()), (24, 8, vec![0, 8, 16]));
        let w32 = Target::WIN32.struct_layout(def).unwrap();
        assert_eq!((w32.layout.size, w32.offsets.clone()), (24, vec![0, 8, 16]));
    }

    #[test]
    fn long_and_wchar_follow_the_data_model() {
        assert_eq!(Target::X86_64_SYSV.layout(&CType::Long).unwrap().size, 8);
        assert_eq!(Target::WIN64.layout(&CType::Long).unwrap().size, 4);
        assert_eq!(Target::I386_SYSV.layout(&CType::Long).unwrap().size, 4);
        assert_eq!(Target::WIN64.layout(&CType::WChar).unwrap().size, 2);
        assert_eq!(Target::I386_SYSV.layout(&CType::WChar).unwrap().size, 4);
        assert_eq!(Target::I386_SYSV.layout(&CType::LongDouble).unwrap(), Layout { size: 12, align: 4 });
    }

    #[test]
    fn packed_and_empty() {
        let p = CType::packed_structure("P", 1, [("c", CType::Char), ("i", CType::Int)]);
        assert_eq!(Target::X86_64_SYSV.layout(&p).unwrap(), Layout { size: 5, align: 1 });
        let e = CType::structure::<&str>("E", []);
        assert!(matches!(Target::X86_64_SYSV.layout(&e), Err(LayoutError::Empty(_))));
        // 2^64 - 1 bytes: the rounding up to the alignment must not wrap around.
        let wraps = CType::union(
            "W",
            [("c", CType::array(CType::array(CType::array(CType::Char, 6700417), 42009217), 65535)), ("i", CType::Int)],
        );
        assert!(matches!(Target::X86_64_SYSV.layout(&wraps), Err(LayoutError::TooLarge(_))));
        let huge = CType::array(CType::array(CType::Double, u32::MAX), 2);
        assert!(matches!(Target::I386_SYSV.layout(&huge), Err(LayoutError::TooLarge(_))));
    }
}
