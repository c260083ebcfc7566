//! From the abstract C types of `bitbridge-proto` to libffi types for the target this server runs on.
//!
//! Plain structs become libffi structs, whose layout libffi computes; it is checked against the layout
//! `bitbridge-proto` computed for the client, so the two can never silently disagree. libffi has no
//! unions and no packed structs, so aggregates containing either are *synthesized*: a struct of
//! integer and float members with the same size, alignment and, on x86_64, the same register class in
//! each eightbyte, which is all the calling convention looks at (System V AMD64 ABI, 3.2.3).

use bitbridge_proto::{Arch, CType, Target};
use libffi::middle::Type;

/// Why a type cannot be passed by value here.
pub(crate) type Unsupported = String;

/// The libffi type of a parameter or return value of type `ty` on `target`.
pub(crate) fn ffi_type(target: &Target, ty: &CType) -> Result<Type, Unsupported> {
    use CType::*;
    let int = |size: u64, signed: bool| match (size, signed) {
        (1, true) => Type::i8(),
        (1, false) => Type::u8(),
        (2, true) => Type::i16(),
        (2, false) => Type::u16(),
        (4, true) => Type::i32(),
        (4, false) => Type::u32(),
        (_, true) => Type::i64(),
        (_, false) => Type::u64(),
    };
    Ok(match ty {
        Void => Type::void(),
        Float => Type::f32(),
        Double => Type::f64(),
        LongDouble if target.os == bitbridge_proto::Os::Windows => Type::f64(),
        LongDouble => Type::longdouble(),
        Pointer(_) | CStr | WStr | FnPtr(_) => Type::pointer(),
        Array(..) => return Err(format!("`{ty}`: C passes arrays as pointers; declare the parameter as a pointer")),
        Struct(def) if !needs_synthesis(ty) => {
            let mut fields = Vec::new();
            for f in &def.fields {
                push_member(target, &f.ty, &mut fields)?;
            }
            Type::structure(fields)
        }
        Struct(_) | Union(_) => synthesize(target, ty)?,
        t => {
            let size = target.layout(t).map_err(|e| e.to_string())?.size;
            let signed = matches!(t, Char | SChar | Short | Int | Long | LongLong | I8 | I16 | I32 | I64 | SSizeT)
                || (*t == WChar && target.wchar_signed());
            int(size, signed)
        }
    })
}

/// Appends the libffi members for a struct member of type `ty` (arrays become repeated elements).
fn push_member(target: &Target, ty: &CType, out: &mut Vec<Type>) -> Result<(), Unsupported> {
    match ty {
        CType::Array(of, n) => {
            let t = ffi_type(target, of).or_else(|_| match **of {
                CType::Array(..) => {
                    let mut inner = Vec::new();
                    push_member(target, of, &mut inner)?;
                    Ok(Type::structure(inner))
                }
                _ => Err(format!("`{ty}` cannot be a member passed by value")),
            })?;
            for _ in 0..*n {
                out.push(t.clone());
            }
            Ok(())
        }
        t => {
            out.push(ffi_type(target, t)?);
            Ok(())
        }
    }
}

/// True when `ty` contains a union, a packed struct or a bit-field, which libffi cannot describe
/// directly.
fn needs_synthesis(ty: &CType) -> bool {
    match ty {
        CType::Union(_) => true,
        CType::Struct(def) => {
            def.pack.is_some() || def.fields.iter().any(|f| f.bits.is_some() || needs_synthesis(&f.ty))
        }
        CType::Array(of, _) => needs_synthesis(of),
        _ => false,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Integer,
    Sse,
    X87,
}

/// The scalar leaves of `ty` at `base`: (offset, size, class, natural alignment).
fn leaves(target: &Target, ty: &CType, base: u64, out: &mut Vec<(u64, u64, Class, u64)>) -> Result<(), Unsupported> {
    let err = |e: bitbridge_proto::LayoutError| e.to_string();
    match ty {
        CType::Struct(def) => {
            let l = target.struct_layout(def).map_err(err)?;
            for ((f, off), bit) in def.fields.iter().zip(l.offsets).zip(l.bit_offsets) {
                match (f.bits, bit) {
                    (Some(width), Some(bit)) => bit_leaf(target, &f.ty, base, bit, width, out)?,
                    _ => leaves(target, &f.ty, base + off, out)?,
                }
            }
        }
        CType::Union(def) => {
            for f in &def.fields {
                match f.bits {
                    Some(width) => bit_leaf(target, &f.ty, base, 0, width, out)?,
                    None => leaves(target, &f.ty, base, out)?,
                }
            }
        }
        CType::Array(of, n) => {
            let size = target.layout(of).map_err(err)?.size;
            for i in 0..u64::from(*n) {
                leaves(target, of, base + i * size, out)?;
            }
        }
        t => {
            let l = target.layout(t).map_err(err)?;
            let class = match t {
                CType::Float | CType::Double => Class::Sse,
                CType::LongDouble if target.os == bitbridge_proto::Os::Linux => Class::X87,
                CType::LongDouble => Class::Sse,
                _ => Class::Integer,
            };
            out.push((base, l.size, class, l.align));
        }
    }
    Ok(())
}

/// The bytes a bit-field occupies, as an INTEGER leaf starting at a multiple of its type's alignment
/// (the classification only asks which eightbytes hold integer data).
fn bit_leaf(
    target: &Target,
    ty: &CType,
    base: u64,
    bit: u64,
    width: u32,
    out: &mut Vec<(u64, u64, Class, u64)>,
) -> Result<(), Unsupported> {
    if width == 0 {
        return Ok(());
    }
    let align = target.layout(ty).map_err(|e| e.to_string())?.align;
    let start = bit / 8 / align * align;
    let end = (bit + u64::from(width)).div_ceil(8);
    out.push((base + start, end - start, Class::Integer, align));
    Ok(())
}

/// A libffi struct that the calling convention treats exactly like the union or packed struct `ty`.
fn synthesize(target: &Target, ty: &CType) -> Result<Type, Unsupported> {
    let layout = target.layout(ty).map_err(|e| e.to_string())?;
    let (size, align) = (layout.size, layout.align);
    let chunk = |n: u64| match n {
        1 => Type::u8(),
        2 => Type::u16(),
        4 => Type::u32(),
        8 => Type::u64(),
        // Only for aggregates passed in memory: keeps the 16-byte alignment their stack slot needs.
        _ => Type::longdouble(),
    };
    // i386 (and anything passed in memory) only needs the size and alignment right.
    let in_memory = |fields: &mut Vec<Type>| {
        for _ in 0..size / align {
            fields.push(chunk(align));
        }
    };
    let mut fields = Vec::new();
    if target.arch == Arch::X86 || size > 16 {
        in_memory(&mut fields);
        return Ok(Type::structure(fields));
    }
    let mut ls = Vec::new();
    leaves(target, ty, 0, &mut ls)?;
    if ls.iter().any(|&(_, _, c, _)| c == Class::X87) {
        return Err(format!("`{ty}` holds a long double in a union or packed struct; libffi cannot pass it by value"));
    }
    if ls.iter().any(|&(off, _, _, a)| off % a != 0) {
        return Err(format!("`{ty}` has unaligned members (it is packed); x86_64 passes such values in memory, which libffi cannot express by value: pass a pointer"));
    }
    let mut pos = 0;
    while pos < size {
        let end = (pos + 8).min(size);
        let sse =
            ls.iter().filter(|&&(off, len, _, _)| off < end && off + len > pos).all(|&(_, _, c, _)| c == Class::Sse);
        while pos < end {
            let left = end - pos;
            if sse && left >= 8 && align >= 8 {
                fields.push(Type::f64());
                pos += 8;
            } else if sse && left >= 4 {
                fields.push(Type::f32());
                pos += 4;
            } else {
                let n = [8, 4, 2, 1].into_iter().find(|&n| n <= left && n <= align && pos % n == 0).unwrap_or(1);
                fields.push(chunk(n));
                pos += n;
            }
        }
    }
    Ok(Type::structure(fields))
}
