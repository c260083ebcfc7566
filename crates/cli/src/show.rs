//! How `bitbridge call` prints values: the form follows the declared type, never the bytes.
//!
//! - `char` arrays, `char` buffers and strings (`const char *`) are C string literals: printable
//!   characters (valid UTF-8) as they are, `\n \t \r \\ \"` and every other byte as an escape (`\xHH`,
//!   or `\ooo` when a hex digit follows, `\0`), never cut at a zero byte. An array or buffer leaves out
//!   its trailing zero bytes, as a C initialiser does (`char name[8] = "ab"` is `"ab"` padded with zeros).
//! - `unsigned char`/`uint8_t` arrays and buffers (and `void *` memory) are byte arrays in hex
//!   (`[0x00, 0x20]`); `signed char`/`int8_t` ones are arrays of signed numbers.
//! - `--json` has one shape per type: a `char` array, buffer or string is a JSON string holding the
//!   same escaped text as the literal (without its quotes); byte arrays are arrays of numbers.
//! - `long double` prints the shortest decimal that reads back as the same 80-bit value.
//! - In text, arrays of more than [`SUMMARY`] elements (strings of more than [`SUMMARY_BYTES`] bytes)
//!   are summarised: the first elements, then how many more. `--json` always has everything.

use std::fmt::Write as _;

use bitbridge::{CType, Value};

use crate::longdouble;

/// Arrays longer than this are summarised in text output.
pub const SUMMARY: usize = 64;
/// Elements shown of a summarised array.
const SHOWN: usize = 16;
/// Character data longer than this is summarised in text output.
pub const SUMMARY_BYTES: usize = 256;

/// How a value is printed: in full (for comparisons and `--json`) or summarised.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Full,
    Summary,
}

/// What a byte sequence of this type is: text, unsigned bytes or signed bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Bytes {
    Text,
    Unsigned,
    Signed,
}

/// The element type of arrays, pointers and strings.
pub fn elem(ty: &CType) -> &CType {
    match ty {
        CType::Pointer(to) | CType::Array(to, _) => to,
        CType::CStr => &CType::Char,
        CType::WStr => &CType::WChar,
        other => other,
    }
}

fn bytes_kind(ty: &CType) -> Bytes {
    match elem(ty) {
        CType::Char => Bytes::Text,
        CType::SChar | CType::I8 => Bytes::Signed,
        _ => Bytes::Unsigned,
    }
}

/// Whether a value's trailing zero bytes are padding (arrays and buffers, not strings).
fn padded(ty: &CType) -> bool {
    !matches!(ty, CType::CStr)
}

/// A value in C-like syntax (structs as `{x = 1, y = 2}`, addresses as `@0x...`, the literal syntax).
pub fn c_text(v: &Value, ty: &CType, mode: Mode) -> String {
    let mut s = String::new();
    write_c(&mut s, v, ty, mode);
    s
}

fn write_c(s: &mut String, v: &Value, ty: &CType, mode: Mode) {
    match v {
        Value::Void => s.push_str("void"),
        Value::Bool(b) => write!(s, "{b}").unwrap(),
        Value::Int(_) | Value::UInt(_) if matches!(elem(ty), CType::Bool) && !matches!(ty, CType::Array(..)) => {
            write!(s, "{}", v.as_i64() != Some(0)).unwrap()
        }
        Value::Int(i) => write!(s, "{i}").unwrap(),
        Value::UInt(u) => write!(s, "{u}").unwrap(),
        Value::Float(f) if *elem(ty) == CType::Float => write_float(s, f64::from(*f as f32), true),
        Value::Float(f) => write_float(s, *f, false),
        Value::LongDouble(x) => s.push_str(&longdouble::format(*x)),
        Value::Pointer(0) => s.push_str("null"),
        Value::Pointer(p) => write!(s, "@{p:#x}").unwrap(),
        Value::Str(t) if matches!(elem(ty), CType::WChar) => {
            s.push('"');
            escape_text(s, t.as_bytes(), usize::MAX);
            s.push('"');
        }
        Value::Str(_) | Value::Bytes(_) => {
            let b = v.as_bytes().expect("bytes or text");
            write_bytes(s, b, ty, mode)
        }
        Value::Array(items) => {
            let of = elem(ty);
            s.push('[');
            let limit = if mode == Mode::Summary && items.len() > SUMMARY { SHOWN } else { items.len() };
            for (i, x) in items.iter().take(limit).enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                write_c(s, x, of, mode);
            }
            if limit < items.len() {
                write!(s, ", ... {} more ({} elements)", items.len() - limit, items.len()).unwrap();
            }
            s.push(']');
        }
        Value::Numbers(n) => {
            let of = elem(ty);
            s.push('[');
            let limit = if mode == Mode::Summary && n.len() > SUMMARY { SHOWN } else { n.len() };
            for i in 0..limit {
                if i > 0 {
                    s.push_str(", ");
                }
                write_c(s, &n.get(i).expect("in range"), of, mode);
            }
            if limit < n.len() {
                write!(s, ", ... {} more ({} elements)", n.len() - limit, n.len()).unwrap();
            }
            s.push(']');
        }
        Value::Struct(members) | Value::Union(members) => {
            let def = match elem(ty) {
                CType::Struct(d) | CType::Union(d) => Some(d.clone()),
                _ => None,
            };
            s.push('{');
            let mut first = true;
            for (i, x) in members.iter().enumerate() {
                let field = def.as_ref().and_then(|d| d.fields.get(i));
                if field.is_some_and(|f| f.bits.is_some() && f.name.is_empty()) {
                    continue; // an unnamed bit-field is padding
                }
                if !first {
                    s.push_str(", ");
                }
                first = false;
                match field {
                    Some(f) if !f.name.is_empty() => {
                        write!(s, "{} = ", f.name).unwrap();
                        write_c(s, x, &f.ty, mode);
                    }
                    Some(f) => write_c(s, x, &f.ty, mode),
                    None => write_c(s, x, &CType::Void, mode),
                }
            }
            s.push('}');
        }
        Value::Zeros(n) => write!(s, "[0; {n}]").unwrap(),
        other => write!(s, "{other:?}").unwrap(),
    }
}

fn write_bytes(s: &mut String, b: &[u8], ty: &CType, mode: Mode) {
    match bytes_kind(ty) {
        Bytes::Text => {
            let b = if padded(ty) { trim_zeros(b) } else { b };
            let limit = if mode == Mode::Summary && b.len() > SUMMARY_BYTES { SUMMARY_BYTES } else { b.len() };
            s.push('"');
            escape_text(s, b, limit);
            s.push('"');
            if limit < b.len() {
                write!(s, "... ({} more bytes, {} in all)", b.len() - limit, b.len()).unwrap();
            }
        }
        kind => {
            s.push('[');
            let limit = if mode == Mode::Summary && b.len() > SUMMARY { SHOWN } else { b.len() };
            for (i, &x) in b.iter().take(limit).enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                match kind {
                    Bytes::Signed => write!(s, "{}", x as i8).unwrap(),
                    _ => write!(s, "{x:#04x}").unwrap(),
                }
            }
            if limit < b.len() {
                write!(s, ", ... {} more ({} elements)", b.len() - limit, b.len()).unwrap();
            }
            s.push(']');
        }
    }
}

/// The bytes without their trailing zeros.
fn trim_zeros(b: &[u8]) -> &[u8] {
    let end = b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    &b[..end]
}

/// The C escapes of `b[..limit]` (the whole of `b` decides what follows an escape): valid UTF-8
/// printable characters stay as they are, every other byte is escaped.
fn escape_text(s: &mut String, b: &[u8], limit: usize) {
    let limit = limit.min(b.len());
    let mut i = 0;
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            if i >= limit {
                return;
            }
            let next = b.get(i + c.len_utf8()).copied();
            match c {
                '"' => s.push_str("\\\""),
                '\\' => s.push_str("\\\\"),
                '\n' => s.push_str("\\n"),
                '\t' => s.push_str("\\t"),
                '\r' => s.push_str("\\r"),
                c if c.is_control() => escape_byte(s, c as u8, next),
                c => s.push(c),
            }
            i += c.len_utf8();
        }
        for &x in chunk.invalid() {
            if i >= limit {
                return;
            }
            escape_byte(s, x, b.get(i + 1).copied());
            i += 1;
        }
    }
}

/// One byte as an escape that C and `bitbridge call` read back as that byte whatever follows it.
fn escape_byte(s: &mut String, x: u8, next: Option<u8>) {
    let octal_next = next.is_some_and(|n| (b'0'..=b'7').contains(&n));
    let hex_next = next.is_some_and(|n| n.is_ascii_hexdigit());
    if x == 0 && !octal_next {
        s.push_str("\\0");
    } else if hex_next {
        write!(s, "\\{x:03o}").unwrap();
    } else {
        write!(s, "\\x{x:02x}").unwrap();
    }
}

fn write_float(s: &mut String, f: f64, single: bool) {
    if f.is_nan() {
        s.push_str("nan");
    } else if f.is_infinite() {
        s.push_str(if f > 0.0 { "inf" } else { "-inf" });
    } else if single {
        write!(s, "{}", f as f32).unwrap();
    } else {
        write!(s, "{f}").unwrap();
    }
}

/// A value as JSON: numbers, strings, arrays, objects keyed by member name; NULL is `null`, other
/// addresses are numbers; `char` data is a string of the C-escaped text, other byte data an array of
/// numbers; `long double` a string of its exact decimal (JSON numbers are doubles).
pub fn json(v: &Value, ty: &CType) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Void => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::UInt(u) => J::from(*u),
        Value::Float(f) => json_float(if *elem(ty) == CType::Float { f64::from(*f as f32) } else { *f }),
        Value::LongDouble(x) => J::from(longdouble::format(*x)),
        Value::Pointer(0) => J::Null,
        Value::Pointer(p) => J::from(*p),
        Value::Str(t) if matches!(elem(ty), CType::WChar) => J::from(t.as_str()),
        Value::Str(_) | Value::Bytes(_) => {
            let b = v.as_bytes().expect("bytes or text");
            match bytes_kind(ty) {
                Bytes::Text => {
                    let b = if padded(ty) { trim_zeros(b) } else { b };
                    let mut s = String::new();
                    escape_text(&mut s, b, usize::MAX);
                    J::from(s)
                }
                Bytes::Signed => J::Array(b.iter().map(|&x| J::from(x as i8)).collect()),
                Bytes::Unsigned => J::Array(b.iter().map(|&x| J::from(x)).collect()),
            }
        }
        Value::Array(items) => J::Array(items.iter().map(|x| json(x, elem(ty))).collect()),
        Value::Numbers(n) => J::Array(n.values().map(|x| json(&x, elem(ty))).collect()),
        Value::Struct(members) | Value::Union(members) => {
            let def = match elem(ty) {
                CType::Struct(d) | CType::Union(d) => Some(d.clone()),
                _ => None,
            };
            let mut m = serde_json::Map::new();
            for (i, x) in members.iter().enumerate() {
                let f = def.as_ref().and_then(|d| d.fields.get(i));
                if f.is_some_and(|f| f.bits.is_some() && f.name.is_empty()) {
                    continue; // an unnamed bit-field is padding
                }
                let key = f.map(|f| f.name.clone()).filter(|n| !n.is_empty()).unwrap_or_else(|| i.to_string());
                m.insert(key, json(x, f.map_or(&CType::Void, |f| &f.ty)));
            }
            J::Object(m)
        }
        other => J::from(format!("{other:?}")),
    }
}

fn json_float(f: f64) -> serde_json::Value {
    serde_json::Number::from_f64(f).map_or_else(|| serde_json::Value::from(f.to_string()), serde_json::Value::Number)
}

/// Whether the call left an argument as it was: `before` is what was passed, `after` what came back.
/// A zeroed buffer is unchanged when it is still all zeros; scalars compare as the type prints them.
pub fn unchanged(before: &Value, after: &Value, ty: &CType) -> bool {
    match (before, after) {
        (Value::Zeros(_), a) => is_zero(a),
        (Value::Str(_) | Value::Bytes(_), Value::Str(_) | Value::Bytes(_)) => before.as_bytes() == after.as_bytes(),
        (Value::Array(b), Value::Array(a)) => {
            b.len() == a.len() && b.iter().zip(a).all(|(x, y)| unchanged(x, y, elem(ty)))
        }
        (Value::Numbers(b), Value::Numbers(a)) if b.kind() == a.kind() && !b.kind().is_float() => b == a,
        (Value::Numbers(_), Value::Numbers(_) | Value::Array(_)) | (Value::Array(_), Value::Numbers(_)) => {
            let (b, a) = (before.element_count(), after.element_count());
            b == a
                && (0..b).all(|i| match (before.element(i), after.element(i)) {
                    (Some(x), Some(y)) => unchanged(&x, &y, elem(ty)),
                    _ => false,
                })
        }
        (Value::Bytes(b), Value::Array(a)) | (Value::Array(a), Value::Bytes(b)) => {
            b.len() == a.len() && b.iter().zip(a).all(|(x, y)| y.as_u64() == Some(u64::from(*x)))
        }
        (Value::Struct(b), Value::Struct(a)) => {
            let fields: Vec<&CType> = match elem(ty) {
                CType::Struct(d) => d.fields.iter().map(|f| &f.ty).collect(),
                _ => Vec::new(),
            };
            b.len() == a.len()
                && b.iter()
                    .zip(a)
                    .enumerate()
                    .all(|(i, (x, y))| unchanged(x, y, fields.get(i).copied().unwrap_or(&CType::Void)))
        }
        _ => c_text(before, elem_or_self(ty, before), Mode::Full) == c_text(after, elem_or_self(ty, after), Mode::Full),
    }
}

/// The type a scalar prints as: a pointer's pointee for a scalar given for it.
fn elem_or_self<'t>(ty: &'t CType, v: &Value) -> &'t CType {
    match (ty, v) {
        (CType::Pointer(to), Value::Float(_) | Value::Int(_) | Value::UInt(_) | Value::Bool(_)) => to,
        _ => ty,
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Int(0) | Value::UInt(0) | Value::Bool(false) | Value::Pointer(0) | Value::Zeros(_) => true,
        Value::Float(f) => f.to_bits() == 0,
        Value::LongDouble(x) => x.0 == [0; 10],
        Value::Bytes(b) => b.iter().all(|&c| c == 0),
        Value::Numbers(n) => n.as_bytes().iter().all(|&c| c == 0),
        Value::Str(t) => t.bytes().all(|c| c == 0),
        Value::Array(items) | Value::Struct(items) | Value::Union(items) => items.iter().all(is_zero),
        Value::Variant(_, x) => is_zero(x),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_data_is_a_literal_of_every_byte() {
        let key = Value::Bytes(vec![0, 32, 64, 0xff, b'z', 0, 0]);
        let ty = CType::array(CType::Char, 7);
        assert_eq!(c_text(&key, &ty, Mode::Full), r#""\0 @\xffz""#);
        assert_eq!(json(&key, &ty), serde_json::json!(r"\0 @\xffz"));
        // An escape followed by a digit stays one byte.
        assert_eq!(c_text(&Value::Bytes(vec![0, b'1', 0xff, b'a']), &ty, Mode::Full), r#""\0001\377a""#);
        // A string keeps its bytes; UTF-8 stays readable.
        assert_eq!(c_text(&Value::Bytes("é\n".into()), &CType::CStr, Mode::Full), r#""é\n""#);
    }

    #[test]
    fn byte_arrays_are_numbers_whatever_their_content() {
        let ty = CType::array(CType::U8, 3);
        assert_eq!(c_text(&Value::Bytes(b"ab\0".to_vec()), &ty, Mode::Full), "[0x61, 0x62, 0x00]");
        assert_eq!(json(&Value::Bytes(b"ab\0".to_vec()), &ty), serde_json::json!([97, 98, 0]));
        let ty = CType::ptr(CType::SChar);
        assert_eq!(c_text(&Value::Bytes(vec![0xff, 1]), &ty, Mode::Full), "[-1, 1]");
    }

    #[test]
    fn large_arrays_are_summarised_in_text_only() {
        let v = Value::ints(0..1000);
        let ty = CType::ptr(CType::Int);
        let t = c_text(&v, &ty, Mode::Summary);
        assert!(t.ends_with(", 15, ... 984 more (1000 elements)]"), "{t}");
        assert_eq!(json(&v, &ty).as_array().unwrap().len(), 1000);
    }

    #[test]
    fn zeros_that_stay_zero_are_unchanged() {
        let ty = CType::ptr(CType::Double);
        assert!(unchanged(&Value::Zeros(3), &Value::f64s([0.0; 3]), &ty));
        assert!(!unchanged(&Value::Zeros(3), &Value::f64s([0.0, 1.0, 0.0]), &ty));
        assert!(unchanged(
            &Value::Array(vec![Value::UInt(1)]),
            &Value::Array(vec![Value::Int(1)]),
            &CType::ptr(CType::Int)
        ));
    }
}
