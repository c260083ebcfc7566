//! `bitbridge._native.CType`: a C type description, built by the Python layer from ctypes classes, and
//! the targets it can be laid out for.

use std::sync::Arc;

use bitbridge::{Arch, CType, CallConv, Direction, Os, Signature, StructDef, Target};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// A C type, independent of any target (`long` stays `long`; its size is the target's).
#[pyclass(frozen, name = "CType", module = "bitbridge._native", eq, hash, from_py_object)]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PyCType {
    pub ty: CType,
}

/// Parses a target name: `i686`/`i386` (32-bit Linux), `x86_64` (64-bit Linux), `win32`, `win64`,
/// or `host` (this process's own).
pub fn parse_target(name: &str) -> PyResult<Target> {
    Ok(match name {
        "i686" | "i386" | "x86" => Target::I386_SYSV,
        "x86_64" | "amd64" => Target::X86_64_SYSV,
        "win32" => Target::WIN32,
        "win64" => Target::WIN64,
        "host" => host(),
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown target {other:?}: use 'i686', 'x86_64', 'win32', 'win64' or 'host'"
            )))
        }
    })
}

/// The target this process runs (x86_64 Linux for the wheels built here).
pub fn host() -> Target {
    Target::host().unwrap_or(Target::X86_64_SYSV)
}

/// A target's short name, the inverse of [`parse_target`].
pub fn target_name(t: Target) -> &'static str {
    match (t.arch, t.os) {
        (Arch::X86, Os::Linux) => "i686",
        (Arch::X86_64, Os::Linux) => "x86_64",
        (Arch::X86, _) => "win32",
        _ => "win64",
    }
}

/// Parses an architecture name for a server.
pub fn parse_arch(name: &str) -> PyResult<Arch> {
    match name {
        "i686" | "i386" | "x86" | "32" => Ok(Arch::X86),
        "x86_64" | "amd64" | "64" => Ok(Arch::X86_64),
        other => Err(PyValueError::new_err(format!("unknown architecture {other:?}: use 'i686' or 'x86_64'"))),
    }
}

pub fn parse_dir(flag: &str) -> PyResult<Direction> {
    match flag {
        "in" => Ok(Direction::In),
        "out" => Ok(Direction::Out),
        "inout" => Ok(Direction::InOut),
        other => Err(PyValueError::new_err(format!("unknown direction {other:?}: use 'in', 'out' or 'inout'"))),
    }
}

pub fn parse_conv(name: &str) -> PyResult<CallConv> {
    match name {
        "cdecl" => Ok(CallConv::Cdecl),
        "stdcall" => Ok(CallConv::Stdcall),
        "fastcall" => Ok(CallConv::Fastcall),
        "thiscall" => Ok(CallConv::Thiscall),
        other => Err(PyValueError::new_err(format!("unknown calling convention {other:?}"))),
    }
}

fn scalar(name: &str) -> Option<CType> {
    use CType::*;
    Some(match name {
        "void" => Void,
        "bool" => Bool,
        "char" => Char,
        "signed char" | "schar" => SChar,
        "unsigned char" | "uchar" => UChar,
        "wchar_t" | "wchar" => WChar,
        "short" => Short,
        "unsigned short" | "ushort" => UShort,
        "int" => Int,
        "unsigned int" | "uint" => UInt,
        "long" => Long,
        "unsigned long" | "ulong" => ULong,
        "long long" | "longlong" => LongLong,
        "unsigned long long" | "ulonglong" => ULongLong,
        "int8_t" => I8,
        "uint8_t" => U8,
        "int16_t" => I16,
        "uint16_t" => U16,
        "int32_t" => I32,
        "uint32_t" => U32,
        "int64_t" => I64,
        "uint64_t" => U64,
        "size_t" => SizeT,
        "ssize_t" => SSizeT,
        "float" => Float,
        "double" => Double,
        "long double" | "longdouble" => LongDouble,
        "char *" | "cstr" => CStr,
        "wchar_t *" | "wstr" => WStr,
        "void *" => CType::void_ptr(),
        _ => return None,
    })
}

#[pymethods]
impl PyCType {
    /// A fundamental type by its C name (`"int"`, `"unsigned long"`, `"int64_t"`, `"double"`,
    /// `"char *"` for a NUL-terminated string, `"void *"`). Raises `ValueError` for an unknown name.
    #[staticmethod]
    fn scalar(name: &str) -> PyResult<PyCType> {
        scalar(name)
            .map(|ty| PyCType { ty })
            .ok_or_else(|| PyValueError::new_err(format!("unknown C type name {name:?}")))
    }

    /// `T *`.
    #[staticmethod]
    fn pointer(to: &PyCType) -> PyCType {
        PyCType { ty: CType::ptr(to.ty.clone()) }
    }

    /// `T[n]`.
    #[staticmethod]
    fn array(of: &PyCType, n: u32) -> PyCType {
        PyCType { ty: CType::array(of.ty.clone(), n) }
    }

    /// A struct (or, with `union=True`, a union) of `(name, CType)` members; `pack` is `#pragma pack(n)`
    /// (ctypes' `_pack_`).
    #[staticmethod]
    #[pyo3(signature = (name, fields, pack=None, union=false))]
    fn aggregate(name: &str, fields: Vec<(String, PyCType)>, pack: Option<u32>, union: bool) -> PyCType {
        let def = Arc::new(StructDef::new(name, fields.into_iter().map(|(n, t)| (n, t.ty)), pack));
        PyCType { ty: if union { CType::Union(def) } else { CType::Struct(def) } }
    }

    /// A pointer to a function returning `ret` and taking `params` (`(CType, direction)` pairs,
    /// direction `"in"`, `"out"` or `"inout"`), with calling convention `conv`.
    #[staticmethod]
    #[pyo3(signature = (ret, params, conv="cdecl"))]
    fn function(ret: &PyCType, params: Vec<(PyCType, String)>, conv: &str) -> PyResult<PyCType> {
        Ok(PyCType { ty: CType::fn_ptr(signature(ret, params, conv, false, false)?) })
    }

    /// `sizeof` on `target` (see `parse_target`). Raises `ValueError` for a type without a size.
    #[pyo3(signature = (target="host"))]
    fn size(&self, target: &str) -> PyResult<u64> {
        Ok(layout(&self.ty, parse_target(target)?)?.size)
    }

    /// `_Alignof` on `target`.
    #[pyo3(signature = (target="host"))]
    fn align(&self, target: &str) -> PyResult<u64> {
        Ok(layout(&self.ty, parse_target(target)?)?.align)
    }

    /// `offsetof` of each member of a struct or union on `target`; `TypeError` for other types,
    /// `ValueError` for one with bit-fields (which the Python views do not lay out yet).
    #[pyo3(signature = (target="host"))]
    fn offsets(&self, target: &str) -> PyResult<Vec<u64>> {
        let t = parse_target(target)?;
        if let CType::Struct(d) | CType::Union(d) = &self.ty {
            if let Some(f) = d.fields.iter().find(|f| f.bits.is_some()) {
                return Err(PyValueError::new_err(format!(
                    "`{}` has the bit-field `{}`: bit-fields are not supported in Python yet",
                    self.ty, f.name
                )));
            }
        }
        match t.aggregate_layout(&self.ty) {
            Some(l) => Ok(l.map_err(|e| PyValueError::new_err(e.to_string()))?.offsets),
            None => Err(PyTypeError::new_err(format!("`{}` is not a struct or union", self.ty))),
        }
    }

    /// What kind of type this is: `"scalar"`, `"void"`, `"cstr"`, `"wstr"`, `"pointer"`, `"array"`,
    /// `"struct"`, `"union"` or `"function"`.
    #[getter]
    fn kind(&self) -> &'static str {
        match &self.ty {
            CType::Void => "void",
            CType::CStr => "cstr",
            CType::WStr => "wstr",
            CType::Pointer(_) => "pointer",
            CType::Array(..) => "array",
            CType::Struct(_) => "struct",
            CType::Union(_) => "union",
            CType::FnPtr(_) => "function",
            _ => "scalar",
        }
    }

    /// The C name of a scalar (`"unsigned long"`), or of any type in C syntax.
    #[getter]
    fn name(&self) -> String {
        match &self.ty {
            CType::Struct(d) | CType::Union(d) => d.name.clone(),
            t => t.to_string(),
        }
    }

    /// The pointed-to type of a pointer, or the element type of an array; `None` otherwise.
    #[getter]
    fn element(&self) -> Option<PyCType> {
        match &self.ty {
            CType::Pointer(t) | CType::Array(t, _) => Some(PyCType { ty: (**t).clone() }),
            _ => None,
        }
    }

    /// The length of an array; `None` otherwise.
    #[getter]
    fn length(&self) -> Option<u32> {
        match &self.ty {
            CType::Array(_, n) => Some(*n),
            _ => None,
        }
    }

    /// The `(name, CType)` members of a struct or union; `None` otherwise.
    #[getter]
    fn fields(&self) -> Option<Vec<(String, PyCType)>> {
        match &self.ty {
            CType::Struct(d) | CType::Union(d) => {
                Some(d.fields.iter().map(|f| (f.name.clone(), PyCType { ty: f.ty.clone() })).collect())
            }
            _ => None,
        }
    }

    /// A struct's or union's `#pragma pack` value, if any.
    #[getter]
    fn pack(&self) -> Option<u32> {
        match &self.ty {
            CType::Struct(d) | CType::Union(d) => d.pack,
            _ => None,
        }
    }

    /// Whether values of this type hold addresses anywhere.
    fn contains_pointer(&self) -> bool {
        self.ty.contains_pointer()
    }

    /// The type in C syntax (`struct Point *`, `double[3][4]`).
    fn __str__(&self) -> String {
        self.ty.to_string()
    }

    fn __repr__(&self) -> String {
        format!("CType({:?})", self.ty.to_string())
    }
}

fn layout(ty: &CType, t: Target) -> PyResult<bitbridge::proto::Layout> {
    t.layout(ty).map_err(|e| PyValueError::new_err(format!("`{ty}` on {t}: {e}")))
}

/// A signature from Python's description of it.
pub fn signature(
    ret: &PyCType,
    params: Vec<(PyCType, String)>,
    conv: &str,
    use_errno: bool,
    variadic: bool,
) -> PyResult<Signature> {
    let mut sig = Signature::new(ret.ty.clone()).conv(parse_conv(conv)?);
    for (t, d) in params {
        sig = sig.param(t.ty, parse_dir(&d)?);
    }
    sig.use_errno = use_errno;
    sig.variadic = variadic;
    Ok(sig)
}
