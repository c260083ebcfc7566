//! C-like literals for `bitbridge call` arguments: a small recursive-descent parser, then the
//! conversion of a literal to a [`Value`] of a parameter's declared type.
//!
//! ```text
//! literal  := number | char | string | struct | array | address | name
//! number   := ['-'|'+'] (decimal | 0x hex | 0 octal | 0b binary) [u|l suffixes]
//!           | ['-'|'+'] float [f|l] | ['-'|'+'] (inf | nan)
//! char     := '\'' one character or escape '\''
//! string   := '"' characters and escapes (\n \t \r \0 \\ \" \' \xHH \u{...}) '"'
//! struct   := '{' [member (',' member)* [',']] '}'      member := ['.' name '='] literal
//! array    := '[' [literal (',' literal)* [',']] ']' | '[' literal ';' count ']'
//! address  := '@' number                                 (a raw address in the server)
//! name     := null | NULL | true | false | a constant from the headers (enum member or #define)
//! ```

use std::fmt;

use bitbridge::{CType, Constant, Declarations, NumKind, Numbers, Target, Value};

/// A parsed literal.
#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Int(i128),
    Float(f64),
    /// A floating literal with the `l`/`L` suffix: its text, read exactly for a `long double`, and
    /// its value as a double for anything else.
    LongFloat(String, f64),
    Char(char),
    /// A string's bytes (`\xHH` is one byte, other characters are UTF-8).
    Str(Vec<u8>),
    Bool(bool),
    Null,
    Address(u64),
    Struct(Vec<(Option<String>, Lit)>),
    Array(Vec<Lit>),
    /// `[x; n]`.
    Repeat(Box<Lit>, u32),
    Name(String),
}

/// A literal that does not parse: what and where (a 1-based column).
#[derive(Debug, PartialEq)]
pub struct SyntaxError {
    pub column: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

impl std::error::Error for SyntaxError {}

/// Parses one whole argument.
pub fn parse(text: &str) -> Result<Lit, SyntaxError> {
    let mut p = Parser { s: text.as_bytes(), text, pos: 0, depth: 0 };
    let lit = p.literal()?;
    p.ws();
    if p.pos != p.s.len() {
        return Err(p.err(format!("unexpected `{}` after the value", &text[p.pos..])));
    }
    Ok(lit)
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
    /// Nesting of `{` and `[`, bounded so a hostile argument cannot overflow the stack.
    depth: u32,
}

/// The deepest nesting of structs and arrays accepted (the type model's own limit is lower).
const MAX_NESTING: u32 = 64;

impl Parser<'_> {
    fn err(&self, message: impl Into<String>) -> SyntaxError {
        SyntaxError { column: self.pos + 1, message: message.into() }
    }

    fn ws(&mut self) {
        while self.s.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self) -> Result<Lit, SyntaxError> {
        if matches!(self.peek(), Some(b'{' | b'[')) {
            self.depth += 1;
            if self.depth > MAX_NESTING {
                return Err(self.err(format!("values nest deeper than {MAX_NESTING} levels")));
            }
            let r = if self.peek() == Some(b'{') { self.structure() } else { self.array() };
            self.depth -= 1;
            return r;
        }
        match self.peek() {
            None => Err(self.err("a value is missing")),
            Some(b'{') => self.structure(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string().map(Lit::Str),
            Some(b'\'') => self.character(),
            Some(b'@') => {
                self.pos += 1;
                self.ws();
                match self.number()? {
                    Lit::Int(a) if a >= 0 && a <= i128::from(u64::MAX) => Ok(Lit::Address(a as u64)),
                    _ => Err(self.err("an address is a non-negative integer")),
                }
            }
            Some(c) if c.is_ascii_digit() || c == b'-' || c == b'+' || c == b'.' => self.number(),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b'#' => {
                if c == b'#' {
                    self.pos += 1;
                }
                let name = self.word();
                Ok(match name.as_str() {
                    "null" | "NULL" | "nullptr" => Lit::Null,
                    "true" => Lit::Bool(true),
                    "false" => Lit::Bool(false),
                    "inf" | "infinity" => Lit::Float(f64::INFINITY),
                    "nan" => Lit::Float(f64::NAN),
                    "" => return Err(self.err("a name must follow `#`")),
                    _ => Lit::Name(name),
                })
            }
            Some(_) => {
                let c = self.text[self.pos..].chars().next().unwrap_or('?');
                Err(self.err(format!("`{c}` cannot start a value (numbers, 'c', \"text\", {{...}}, [...], null)")))
            }
        }
    }

    fn word(&mut self) -> String {
        let start = self.pos;
        while self.s.get(self.pos).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') {
            self.pos += 1;
        }
        self.text[start..self.pos].to_owned()
    }

    fn number(&mut self) -> Result<Lit, SyntaxError> {
        let start = self.pos;
        let negative = match self.s.get(self.pos) {
            Some(b'-') => {
                self.pos += 1;
                true
            }
            Some(b'+') => {
                self.pos += 1;
                false
            }
            _ => false,
        };
        let body_start = self.pos;
        while let Some(&c) = self.s.get(self.pos) {
            let exp_sign = (c == b'-' || c == b'+')
                && matches!(self.s[self.pos - 1], b'e' | b'E')
                && !self.text[body_start..self.pos].to_ascii_lowercase().starts_with("0x");
            if c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || exp_sign {
                self.pos += 1;
            } else {
                break;
            }
        }
        let body = self.text[body_start..self.pos].replace('_', "");
        let lower = body.to_ascii_lowercase();
        let bad = |p: &Self| SyntaxError {
            column: start + 1,
            message: format!("`{}` is not a number", &p.text[start..p.pos]),
        };
        if body.is_empty() {
            return Err(bad(self));
        }
        if lower == "inf" || lower == "infinity" || lower == "nan" {
            let f = if lower == "nan" { f64::NAN } else { f64::INFINITY };
            return Ok(Lit::Float(if negative { -f } else { f }));
        }
        let hex = lower.starts_with("0x");
        if !hex && (lower.contains('.') || lower.contains('e')) {
            if let Some(t) = lower.strip_suffix('l') {
                let f: f64 = t.parse().map_err(|_| bad(self))?;
                crate::longdouble::parse(t).map_err(|_| bad(self))?;
                let text = if negative { format!("-{t}") } else { t.to_owned() };
                return Ok(Lit::LongFloat(text, if negative { -f } else { f }));
            }
            let t = lower.trim_end_matches('f');
            let f: f64 = t.parse().map_err(|_| bad(self))?;
            return Ok(Lit::Float(if negative { -f } else { f }));
        }
        let t = lower.trim_end_matches(['u', 'l']);
        let (digits, radix) = if let Some(h) = t.strip_prefix("0x") {
            (h, 16)
        } else if let Some(b) = t.strip_prefix("0b") {
            (b, 2)
        } else if t.len() > 1 && t.starts_with('0') {
            (&t[1..], 8)
        } else {
            (t, 10)
        };
        let v = i128::from_str_radix(digits, radix).map_err(|_| bad(self))?;
        Ok(Lit::Int(if negative { -v } else { v }))
    }

    /// The body of a quoted literal after its opening quote, with escapes applied.
    /// The bytes of a quoted literal: characters as UTF-8, `\xHH` and octal `\ooo` escapes as one byte
    /// each (as in C), `\u{...}` as the character's UTF-8.
    fn quoted(&mut self, quote: u8) -> Result<Vec<u8>, SyntaxError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let Some(c) = self.text[self.pos..].chars().next() else {
                self.pos = open;
                return Err(
                    self.err(format!("the {} is not closed", if quote == b'"' { "string" } else { "character" }))
                );
            };
            self.pos += c.len_utf8();
            if c as u32 == u32::from(quote) {
                return Ok(out);
            }
            let mut utf8 = [0u8; 4];
            if c != '\\' {
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                continue;
            }
            let Some(e) = self.text[self.pos..].chars().next() else { continue };
            self.pos += e.len_utf8();
            let byte = |b: u8| -> Vec<u8> { vec![b] };
            out.extend(match e {
                'n' => byte(b'\n'),
                't' => byte(b'\t'),
                'r' => byte(b'\r'),
                'a' => byte(0x07),
                'b' => byte(0x08),
                'f' => byte(0x0c),
                'v' => byte(0x0b),
                'e' => byte(0x1b),
                '0'..='7' => {
                    // Up to three octal digits, as in C: `\0`, `\12`, `\377`.
                    let start = self.pos - 1;
                    while self.s.get(self.pos).is_some_and(|d| (b'0'..=b'7').contains(d)) && self.pos - start < 3 {
                        self.pos += 1;
                    }
                    let v = u32::from_str_radix(&self.text[start..self.pos], 8).expect("octal digits");
                    let v = u8::try_from(v).map_err(|_| self.err(format!("`\\{:o}` is more than one byte", v)))?;
                    byte(v)
                }
                'x' => {
                    let start = self.pos;
                    while self.s.get(self.pos).is_some_and(u8::is_ascii_hexdigit) && self.pos - start < 2 {
                        self.pos += 1;
                    }
                    let v = u8::from_str_radix(&self.text[start..self.pos], 16)
                        .map_err(|_| self.err("`\\x` needs hexadecimal digits"))?;
                    byte(v)
                }
                'u' => {
                    if !self.eat(b'{') {
                        return Err(self.err("write `\\u{HEX}`"));
                    }
                    let start = self.pos;
                    while self.s.get(self.pos).is_some_and(u8::is_ascii_hexdigit) {
                        self.pos += 1;
                    }
                    let v = u32::from_str_radix(&self.text[start..self.pos], 16).ok().and_then(char::from_u32);
                    let v = v.ok_or_else(|| self.err("`\\u{...}` needs a Unicode scalar value"))?;
                    if !self.eat(b'}') {
                        return Err(self.err("expected `}` to end `\\u{...}`"));
                    }
                    v.encode_utf8(&mut utf8).as_bytes().to_vec()
                }
                other => other.encode_utf8(&mut utf8).as_bytes().to_vec(),
            });
        }
    }

    fn string(&mut self) -> Result<Vec<u8>, SyntaxError> {
        self.quoted(b'"')
    }

    fn character(&mut self) -> Result<Lit, SyntaxError> {
        let start = self.pos;
        let body = self.quoted(b'\'')?;
        let one = match std::str::from_utf8(&body) {
            Ok(t) => {
                let mut chars = t.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => Some(c),
                    _ => None,
                }
            }
            Err(_) => None,
        };
        match (one, body.as_slice()) {
            (Some(c), _) => Ok(Lit::Char(c)),
            (None, [b]) => Ok(Lit::Char(char::from(*b))),
            _ => Err(SyntaxError { column: start + 1, message: "a character literal holds one character".into() }),
        }
    }

    fn structure(&mut self) -> Result<Lit, SyntaxError> {
        self.pos += 1; // {
        let mut members = Vec::new();
        loop {
            if self.eat(b'}') {
                return Ok(Lit::Struct(members));
            }
            let name = if self.eat(b'.') {
                let n = self.word();
                if n.is_empty() {
                    return Err(self.err("a member name must follow `.`"));
                }
                if !self.eat(b'=') {
                    return Err(self.err(format!("expected `=` after `.{n}`")));
                }
                Some(n)
            } else {
                None
            };
            members.push((name, self.literal()?));
            if !self.eat(b',') && self.peek() != Some(b'}') {
                return Err(self.err("expected `,` or `}` in a struct"));
            }
        }
    }

    fn array(&mut self) -> Result<Lit, SyntaxError> {
        self.pos += 1; // [
        let mut items = Vec::new();
        loop {
            if self.eat(b']') {
                return Ok(Lit::Array(items));
            }
            items.push(self.literal()?);
            if items.len() == 1 && self.eat(b';') {
                self.ws();
                let n = match self.number()? {
                    Lit::Int(n) => u32::try_from(n).map_err(|_| self.err("the count of `[x; n]` is too large"))?,
                    _ => return Err(self.err("the count of `[x; n]` is an integer")),
                };
                if !self.eat(b']') {
                    return Err(self.err("expected `]` after `[x; n`"));
                }
                return Ok(Lit::Repeat(Box::new(items.remove(0)), n));
            }
            if !self.eat(b',') && self.peek() != Some(b']') {
                return Err(self.err("expected `,` or `]` in an array"));
            }
        }
    }
}

/// Converts a literal to a value of type `ty` for `target`; errors say what did not fit.
pub struct Converter<'a> {
    pub target: Target,
    pub decls: &'a Declarations,
}

impl Converter<'_> {
    /// A parameter's value. A scalar, struct or string given for a pointer is what it points to; `null`
    /// and `@ADDR` are the pointer itself.
    pub fn param(&self, lit: &Lit, ty: &CType) -> Result<Value, String> {
        self.value(lit, ty)
    }

    fn resolve<'l>(&self, lit: &'l Lit, owned: &'l mut Option<Lit>) -> Result<&'l Lit, String> {
        if let Lit::Name(n) = lit {
            let c = self.decls.constant(n).ok_or_else(|| {
                format!("`{n}` is not a value: use null, true, false, a number, or a constant from a --header")
            })?;
            *owned = Some(match c {
                Constant::Int(i) => Lit::Int(i128::from(*i)),
                Constant::UInt(u) => Lit::Int(i128::from(*u)),
                Constant::Float(f) => Lit::Float(*f),
                Constant::Str(s) => Lit::Str(s.clone().into_bytes()),
                _ => return Err(format!("the constant `{n}` has no value usable here")),
            });
            return Ok(owned.as_ref().expect("just set"));
        }
        Ok(lit)
    }

    fn value(&self, lit: &Lit, ty: &CType) -> Result<Value, String> {
        let mut owned = None;
        let lit = self.resolve(lit, &mut owned)?;
        if matches!(ty, CType::Struct(_) | CType::Array(..)) && matches!(lit, Lit::Int(0)) {
            return Ok(zero(ty)); // C's `{0}`: all members zero
        }
        if ty.is_integer() {
            let n = match lit {
                Lit::Int(i) => *i,
                Lit::Char(c) => i128::from(u32::from(*c)),
                Lit::Bool(b) => i128::from(*b),
                Lit::Str(s) if s.len() == 1 && ty.is_byte() => i128::from(s[0]),
                other => return Err(format!("{} is not an integer, which `{ty}` needs", describe(other))),
            };
            let (min, max) = self.target.int_range(ty).ok_or_else(|| format!("`{ty}` has no layout on this target"))?;
            if n < min || n > max {
                return Err(format!("{n} does not fit in `{ty}` ({min}..={max})"));
            }
            return Ok(if n < 0 { Value::Int(n as i64) } else { Value::UInt(n as u64) });
        }
        match ty {
            // A `long double` takes the exact value of an integer or of an `L` literal; a literal
            // without `L` is a double first, as in C.
            CType::LongDouble if self.target.os != bitbridge::Os::Windows => match lit {
                Lit::Int(i) => Ok(Value::LongDouble(crate::longdouble::parse(&i.to_string())?)),
                Lit::LongFloat(t, _) => Ok(Value::LongDouble(crate::longdouble::parse(t)?)),
                Lit::Float(f) => Ok(Value::LongDouble(bitbridge::ExtF80::from_f64(*f))),
                other => Err(format!("{} is not a number, which `{ty}` needs", describe(other))),
            },
            CType::Float | CType::Double | CType::LongDouble => match lit {
                Lit::Int(i) => Ok(Value::Float(*i as f64)),
                Lit::Float(f) | Lit::LongFloat(_, f) => Ok(Value::Float(*f)),
                other => Err(format!("{} is not a number, which `{ty}` needs", describe(other))),
            },
            CType::CStr | CType::WStr => match lit {
                Lit::Str(s) if *ty == CType::CStr => Ok(Value::Bytes(s.clone())),
                Lit::Str(s) => Ok(Value::Str(text(s)?)),
                Lit::Null => Ok(Value::NULL),
                Lit::Address(a) => Ok(Value::Pointer(*a)),
                other => Err(format!("{} is not text, which `{ty}` needs (\"...\" or null)", describe(other))),
            },
            CType::FnPtr(_) => match lit {
                Lit::Null => Ok(Value::NULL),
                Lit::Address(a) => Ok(Value::Pointer(*a)),
                Lit::Int(i) if *i >= 0 => Ok(Value::Pointer(*i as u64)),
                other => Err(format!("{} is not a function address (@ADDR or null)", describe(other))),
            },
            CType::Pointer(to) => self.pointer(lit, ty, to),
            CType::Array(of, n) => match lit {
                // As in C, the terminating NUL is left out when the text fills the array exactly.
                Lit::Str(s) if of.is_byte() => {
                    if s.len() > *n as usize {
                        return Err(format!("\"{}\" ({} bytes) is longer than `{ty}`", s.escape_ascii(), s.len()));
                    }
                    Ok(Value::Bytes(s.clone()))
                }
                Lit::Str(s) if **of == CType::WChar => {
                    let t = text(s)?;
                    if t.chars().count() > *n as usize {
                        return Err(format!("\"{}\" is longer than `{ty}`", t.escape_default()));
                    }
                    Ok(Value::Str(t))
                }
                Lit::Array(items) => {
                    if items.len() > *n as usize {
                        let n = items.len();
                        return Err(format!(
                            "{n} element{} {} not fit in `{ty}`",
                            if n == 1 { "" } else { "s" },
                            if n == 1 { "does" } else { "do" }
                        ));
                    }
                    let vals = self.elements(items, of)?;
                    Ok(if of.is_byte() { bytes(&vals) } else { self.pack(of, vals) })
                }
                Lit::Repeat(x, k) if *k <= *n => {
                    let v = self.value(x, of)?;
                    Ok(self.repeat(of, v, *k))
                }
                other => Err(format!("{} is not an array, which `{ty}` needs ([...])", describe(other))),
            },
            CType::Struct(def) => match lit {
                Lit::Struct(members) => {
                    let mut values: Vec<Option<Value>> = vec![None; def.fields.len()];
                    let mut next = 0;
                    for (name, m) in members {
                        let i = match name {
                            Some(n) => def.index_of(n).ok_or_else(|| format!("`{ty}` has no member `{n}`"))?,
                            None => next,
                        };
                        let f = def.fields.get(i).ok_or_else(|| {
                            let n = def.fields.len();
                            format!("`{ty}` has {n} member{}: too many values", if n == 1 { "" } else { "s" })
                        })?;
                        values[i] = Some(self.value(m, &f.ty).map_err(|e| format!(".{}: {e}", f.name))?);
                        next = i + 1;
                    }
                    Ok(Value::Struct(
                        values.into_iter().zip(&def.fields).map(|(v, f)| v.unwrap_or_else(|| zero(&f.ty))).collect(),
                    ))
                }
                other => Err(format!("{} is not a struct, which `{ty}` needs ({{...}})", describe(other))),
            },
            CType::Union(def) => match lit {
                Lit::Struct(members) if members.len() == 1 => {
                    let (name, m) = &members[0];
                    let i = match name {
                        Some(n) => def.index_of(n).ok_or_else(|| format!("`{ty}` has no member `{n}`"))?,
                        None => 0,
                    };
                    let f = def.fields.get(i).ok_or_else(|| format!("`{ty}` has no members"))?;
                    let v = self.value(m, &f.ty).map_err(|e| format!(".{}: {e}", f.name))?;
                    Ok(Value::Variant(i as u32, Box::new(v)))
                }
                _ => Err(format!("a union takes one member: {{.name = value}}, for `{ty}`")),
            },
            CType::Void => Err("`void` takes no value".into()),
            other => Err(format!("values of `{other}` cannot be written yet")),
        }
    }

    fn pointer(&self, lit: &Lit, ty: &CType, to: &CType) -> Result<Value, String> {
        match lit {
            Lit::Null => return Ok(Value::NULL),
            Lit::Address(a) => return Ok(Value::Pointer(*a)),
            _ => {}
        }
        if *to == CType::Void {
            return match lit {
                Lit::Int(i) if *i >= 0 => Ok(Value::Pointer(*i as u64)),
                Lit::Str(s) => Ok(Value::Bytes(s.clone())),
                Lit::Repeat(x, n) if matches!(**x, Lit::Int(0)) => Ok(Value::Zeros(*n)),
                other => {
                    Err(format!("{} is not an address for `{ty}` (@ADDR, a handle number, or null)", describe(other)))
                }
            };
        }
        self.pointee(lit, ty, to)
    }

    fn pointee(&self, lit: &Lit, ty: &CType, to: &CType) -> Result<Value, String> {
        match lit {
            // A buffer holding the text and its NUL, read back whole (never cut at a zero byte).
            Lit::Str(s) if to.is_byte() => {
                let mut b = s.clone();
                b.push(0);
                Ok(Value::Bytes(b))
            }
            Lit::Str(s) if *to == CType::WChar => Ok(Value::Str(text(s)?)),
            Lit::Array(items) if to.is_byte() => Ok(bytes(&self.elements(items, to)?)),
            Lit::Array(items) => self.elements(items, to).map(|vals| self.pack(to, vals)),
            Lit::Repeat(x, n) => {
                let v = self.value(x, to)?;
                if is_zero(x) {
                    Ok(Value::Zeros(*n)) // an output buffer: the server zero-fills it
                } else {
                    Ok(self.repeat(to, v, *n))
                }
            }
            single => {
                let v = self.value(single, to).map_err(|e| format!("{e} (as what `{ty}` points to)"))?;
                // An address alone would be the pointer itself, and bytes alone raw memory: one pointer or
                // string (or character array) to point to is an array of one.
                Ok(if matches!(v, Value::Pointer(_) | Value::Bytes(_) | Value::Str(_)) {
                    Value::Array(vec![v])
                } else {
                    v
                })
            }
        }
    }

    /// The kind numbers of `of` are packed as on this target: its own size and signedness (`long` on
    /// i386 is an `i32`), so they are sent as their bytes. `None` for what does not pack (bytes travel
    /// as `Value::Bytes`, `_Bool`, x87 `long double`, aggregates, pointers).
    fn pack_kind(&self, of: &CType) -> Option<NumKind> {
        match of {
            CType::Float => Some(NumKind::F32),
            CType::Double => Some(NumKind::F64),
            CType::LongDouble if self.target.os == bitbridge::Os::Windows => Some(NumKind::F64),
            CType::Bool => None,
            t if t.is_integer() => match (self.target.layout(t).ok()?.size, self.target.int_signed(t)) {
                (2, true) => Some(NumKind::I16),
                (2, false) => Some(NumKind::U16),
                (4, true) => Some(NumKind::I32),
                (4, false) => Some(NumKind::U32),
                (8, true) => Some(NumKind::I64),
                (8, false) => Some(NumKind::U64),
                _ => None,
            },
            _ => None,
        }
    }

    /// Elements already checked against `of`, packed into one vector when `of` is a number type
    /// (`Value::Numbers`), else as they are.
    fn pack(&self, of: &CType, vals: Vec<Value>) -> Value {
        let packed = match self.pack_kind(of) {
            Some(NumKind::F32) => {
                vals.iter().map(|v| v.as_f64().map(|f| f as f32)).collect::<Option<Vec<f32>>>().map(Numbers::from)
            }
            Some(NumKind::F64) => vals.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>().map(Numbers::from),
            Some(kind) => Numbers::from_values(kind, &vals),
            None => None,
        };
        packed.map_or(Value::Array(vals), Value::Numbers)
    }

    /// `[v; n]`, `v` already checked against `of`: `n` copies in one vector of `of`'s size (bytes, or
    /// `Value::Numbers`), never `n` values; other types (structs) repeat the value.
    fn repeat(&self, of: &CType, v: Value, n: u32) -> Value {
        let n = n as usize;
        if of.is_byte() {
            return bytes(&[v]).as_bytes().map_or(Value::Zeros(0), |b| Value::Bytes(vec![b[0]; n]));
        }
        match self.pack(of, vec![v]) {
            Value::Numbers(one) => Value::Numbers(match one {
                Numbers::I16(x) => Numbers::I16(vec![x[0]; n]),
                Numbers::U16(x) => Numbers::U16(vec![x[0]; n]),
                Numbers::I32(x) => Numbers::I32(vec![x[0]; n]),
                Numbers::U32(x) => Numbers::U32(vec![x[0]; n]),
                Numbers::I64(x) => Numbers::I64(vec![x[0]; n]),
                Numbers::U64(x) => Numbers::U64(vec![x[0]; n]),
                Numbers::F32(x) => Numbers::F32(vec![x[0]; n]),
                Numbers::F64(x) => Numbers::F64(vec![x[0]; n]),
                other => other, // byte kinds are not packed (see `pack_kind`)
            }),
            Value::Array(mut one) => Value::Array(vec![one.pop().expect("one value"); n]),
            other => other,
        }
    }

    fn elements(&self, items: &[Lit], of: &CType) -> Result<Vec<Value>, String> {
        items.iter().enumerate().map(|(i, x)| self.value(x, of).map_err(|e| format!("[{i}]: {e}"))).collect()
    }

    /// The type a variadic argument is passed as, from its literal (C's default promotions).
    pub fn variadic(&self, lit: &Lit) -> Result<(CType, Value), String> {
        let mut owned = None;
        let lit = self.resolve(lit, &mut owned)?;
        Ok(match lit {
            Lit::Int(i) if i32::try_from(*i).is_ok() => (CType::Int, Value::Int(*i as i64)),
            Lit::Int(i) if *i < 0 => {
                (CType::LongLong, Value::Int(i64::try_from(*i).map_err(|_| format!("{i} is too large"))?))
            }
            Lit::Int(i) => (CType::ULongLong, Value::UInt(u64::try_from(*i).map_err(|_| format!("{i} is too large"))?)),
            Lit::Char(c) => (CType::Int, Value::Int(i64::from(u32::from(*c)))),
            Lit::Bool(b) => (CType::Int, Value::Int(i64::from(*b))),
            Lit::Float(f) => (CType::Double, Value::Float(*f)),
            Lit::LongFloat(t, _) if self.target.os != bitbridge::Os::Windows => {
                (CType::LongDouble, Value::LongDouble(crate::longdouble::parse(t)?))
            }
            Lit::LongFloat(_, f) => (CType::LongDouble, Value::Float(*f)),
            Lit::Str(s) => (CType::CStr, Value::Bytes(s.clone())),
            Lit::Null => (CType::void_ptr(), Value::NULL),
            Lit::Address(a) => (CType::void_ptr(), Value::Pointer(*a)),
            other => return Err(format!("{} cannot be passed as a variadic argument", describe(other))),
        })
    }
}

/// A string literal as text, for wide strings (whose units are characters, not bytes).
fn text(s: &[u8]) -> Result<String, String> {
    String::from_utf8(s.to_vec()).map_err(|_| {
        format!(
            "\"{}\" is not UTF-8 text, which a wide string needs (write characters as \\u{{...}})",
            s.escape_ascii()
        )
    })
}

/// Byte-sized integers as raw bytes (how char buffers travel and read back as text).
fn bytes(vals: &[Value]) -> Value {
    Value::Bytes(vals.iter().map(|v| v.as_i64().or_else(|| v.as_u64().map(|u| u as i64)).unwrap_or(0) as u8).collect())
}

/// Whether a literal is all zeros (`0`, `[0; 20]`, `{0, 0}`).
fn is_zero(lit: &Lit) -> bool {
    match lit {
        Lit::Int(0) | Lit::Null | Lit::Bool(false) => true,
        Lit::Float(f) | Lit::LongFloat(_, f) => *f == 0.0,
        Lit::Repeat(x, _) => is_zero(x),
        Lit::Array(items) => items.iter().all(is_zero),
        Lit::Struct(members) => members.iter().all(|(_, m)| is_zero(m)),
        _ => false,
    }
}

/// A zero of a type, for struct members left out of a literal.
pub fn zero(ty: &CType) -> Value {
    match ty {
        CType::Float | CType::Double | CType::LongDouble => Value::Float(0.0),
        t if t.is_integer() => Value::Int(0),
        t if t.is_pointer() => Value::NULL,
        CType::Struct(def) => Value::Struct(def.fields.iter().map(|f| zero(&f.ty)).collect()),
        CType::Array(of, n) if of.is_byte() => Value::Bytes(vec![0; *n as usize]),
        CType::Array(of, n) => Value::Array(vec![zero(of); *n as usize]),
        _ => Value::Bytes(Vec::new()),
    }
}

fn describe(lit: &Lit) -> String {
    match lit {
        Lit::Int(i) => format!("the integer {i}"),
        Lit::Float(f) => format!("the number {f}"),
        Lit::LongFloat(t, _) => format!("the number {t}L"),
        Lit::Char(c) => format!("the character {c:?}"),
        Lit::Str(s) => format!("the string \"{}\"", s.escape_ascii()),
        Lit::Bool(b) => format!("`{b}`"),
        Lit::Null => "null".into(),
        Lit::Address(a) => format!("the address @{a:#x}"),
        Lit::Struct(_) => "a struct {...}".into(),
        Lit::Array(_) | Lit::Repeat(..) => "an array [...]".into(),
        Lit::Name(n) => format!("`{n}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_parse() {
        assert_eq!(parse("42"), Ok(Lit::Int(42)));
        assert_eq!(parse(" -0x1F "), Ok(Lit::Int(-31)));
        assert_eq!(parse("017"), Ok(Lit::Int(15)));
        assert_eq!(parse("0b101u"), Ok(Lit::Int(5)));
        assert_eq!(parse("1_000_000UL"), Ok(Lit::Int(1_000_000)));
        assert_eq!(parse("1e3"), Ok(Lit::Float(1000.0)));
        assert_eq!(parse("-2.5e-1f"), Ok(Lit::Float(-0.25)));
        assert_eq!(parse(".5"), Ok(Lit::Float(0.5)));
        assert_eq!(parse("-inf"), Ok(Lit::Float(f64::NEG_INFINITY)));
        assert!(matches!(parse("nan"), Ok(Lit::Float(f)) if f.is_nan()));
        assert_eq!(parse(r"'\n'"), Ok(Lit::Char('\n')));
        assert_eq!(parse("'é'"), Ok(Lit::Char('é')));
        assert_eq!(parse(r#""a\tb\x41\u{e9}\"""#), Ok(Lit::Str("a\tbAé\"".into())));
        // \xHH and octal escapes are single bytes, as in C.
        assert_eq!(parse(r#""\xff\0\101\377""#), Ok(Lit::Str(vec![0xff, 0, b'A', 0xff])));
        assert_eq!(parse(r"'\xff'"), Ok(Lit::Char('\u{ff}')));
        assert_eq!(parse("null"), Ok(Lit::Null));
        assert_eq!(parse("NULL"), Ok(Lit::Null));
        assert_eq!(parse("@0x1000"), Ok(Lit::Address(0x1000)));
        assert_eq!(parse("#VND_OK"), Ok(Lit::Name("VND_OK".into())));
        assert_eq!(parse("[1, 2.5, 'x',]"), Ok(Lit::Array(vec![Lit::Int(1), Lit::Float(2.5), Lit::Char('x')])));
        assert_eq!(parse("[0; 16]"), Ok(Lit::Repeat(Box::new(Lit::Int(0)), 16)));
        assert_eq!(
            parse("{1.5, .im = -2, {true}}"),
            Ok(Lit::Struct(vec![
                (None, Lit::Float(1.5)),
                (Some("im".into()), Lit::Int(-2)),
                (None, Lit::Struct(vec![(None, Lit::Bool(true))]))
            ]))
        );
        assert_eq!(parse("[]"), Ok(Lit::Array(vec![])));
    }

    /// Random strings over the literal alphabet parse or fail, never panic.
    #[test]
    fn number_arrays_pack_as_the_targets_element_type() {
        let decls = Declarations::default();
        let conv = |target| Converter { target, decls: &decls };
        let i386 = conv(Target::I386_SYSV);
        let int_ptr = CType::ptr(CType::Int);
        assert!(
            matches!(i386.param(&parse("[7; 3]").unwrap(), &int_ptr), Ok(Value::Numbers(Numbers::I32(v))) if v == [7; 3])
        );
        let long_ptr = CType::ptr(CType::Long);
        assert!(matches!(i386.param(&parse("[1, -2]").unwrap(), &long_ptr), Ok(Value::Numbers(Numbers::I32(_)))));
        let x64 = conv(Target::X86_64_SYSV);
        assert!(matches!(x64.param(&parse("[1, -2]").unwrap(), &long_ptr), Ok(Value::Numbers(Numbers::I64(_)))));
        let float_arr = CType::array(CType::Float, 4);
        assert!(
            matches!(i386.param(&parse("[0.5; 2]").unwrap(), &float_arr), Ok(Value::Numbers(Numbers::F32(v))) if v == [0.5; 2])
        );
        // Each element is still checked against the C type, its index named.
        let e = i386.param(&parse("[1, 70000]").unwrap(), &CType::ptr(CType::UShort)).map(|_| ()).unwrap_err();
        assert_eq!(e, "[1]: 70000 does not fit in `unsigned short` (0..=65535)");
        let e = i386.param(&parse("[70000; 2]").unwrap(), &CType::ptr(CType::UShort)).unwrap_err();
        assert_eq!(e, "70000 does not fit in `unsigned short` (0..=65535)");
        // Not numbers: bools and structs keep their values.
        assert!(matches!(i386.param(&parse("[true; 2]").unwrap(), &CType::ptr(CType::Bool)), Ok(Value::Array(_))));
    }

    #[test]
    fn random_input_never_panics() {
        let alphabet: Vec<char> = "0123456789xXbeE.+-_uUlLfF'\"\\{}[];,.=@#abcnulNUé \t".chars().collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 12) as usize;
            let text: String =
                (0..len).map(|k| alphabet[((seed >> (k * 5)) as usize + k * 7) % alphabet.len()]).collect();
            let _ = parse(&text);
        }
    }

    #[test]
    fn bad_literals_say_where() {
        let e = |s: &str| parse(s).unwrap_err().to_string();
        assert_eq!(e("12abc"), "column 1: `12abc` is not a number");
        assert_eq!(e("[1, 2"), "column 6: expected `,` or `]` in an array");
        assert_eq!(e("[1 2]"), "column 4: expected `,` or `]` in an array");
        assert_eq!(e("\"open"), "column 1: the string is not closed");
        assert_eq!(e("'ab'"), "column 1: a character literal holds one character");
        assert_eq!(e("{.x 1}"), "column 5: expected `=` after `.x`");
        assert_eq!(e("1 2"), "column 3: unexpected `2` after the value");
        assert_eq!(e(""), "column 1: a value is missing");
        assert_eq!(e(&"[".repeat(100_000)), "column 65: values nest deeper than 64 levels");
        assert_eq!(e("%"), "column 1: `%` cannot start a value (numbers, 'c', \"text\", {...}, [...], null)");
    }
}
