//! Declarations from C text (cffi's `cdef`): paste a vendor header's structs, unions, enums, typedefs
//! and prototypes, get [`Signature`]s and [`CType`]s.
//!
//! Two passes. A small preprocessor of our own (`Preprocessor`) evaluates conditionals, records
//! `#define` constants and `#pragma pack`, and turns calling-convention markers (`WINAPI`, `__stdcall`,
//! user macros standing for them) into GNU attributes. It never adds or removes a line: every
//! directive becomes an empty line and each edit inside a line is remembered, so positions in what
//! it produces map back to the user's line and column. The text is then parsed by `lang-c` (a C11
//! parser with GNU extensions) and its syntax tree is mapped onto bitbridge's type model. Sizes are
//! never computed here: a `long` stays [`CType::Long`] and is laid out for the server's target later.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use bitbridge_proto::{CType, CallConv, Direction, Field, Signature, StructDef};
use lang_c::ast;
use lang_c::driver::{parse_preprocessed, Config, Flavor};
use lang_c::span::Node;

use crate::error::{Error, Result};

/// A named constant: a `#define NAME <number or string>`, or an enum member.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Constant {
    /// A signed integer (enum members, and integer macros that fit).
    Int(i64),
    /// An unsigned integer (a `U` suffix, or above `i64::MAX`).
    UInt(u64),
    /// A floating-point number.
    Float(f64),
    /// A string literal.
    Str(String),
}

impl Constant {
    /// The constant as a signed integer, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Constant::Int(i) => Some(i),
            Constant::UInt(u) => i64::try_from(u).ok(),
            _ => None,
        }
    }

    /// The constant as a number (integers convert).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Constant::Int(i) => Some(i as f64),
            Constant::UInt(u) => Some(u as f64),
            Constant::Float(f) => Some(f),
            Constant::Str(_) => None,
        }
    }
}

/// A function declared in C: its signature and the names of its parameters.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Prototype {
    /// The function's name.
    pub name: String,
    /// Its signature, with pointer directions from the rules in `docs/DECLARATIONS.md`.
    pub signature: Signature,
    /// Each parameter's name as declared, or `argN` (from 1) for unnamed ones.
    pub param_names: Vec<String>,
    /// The line it was declared on.
    pub line: usize,
}

/// C declarations parsed from header text: functions, types and constants.
///
/// ```
/// use bitbridge::{CType, Declarations};
///
/// let decls = Declarations::parse(
///     "#define MAX_NAME 32\n\
///      typedef struct { char name[MAX_NAME]; double gain; } Channel;\n\
///      int WINAPI set_channel(int index, const Channel *ch);",
/// )?;
/// assert_eq!(decls.constant("MAX_NAME").and_then(|c| c.as_i64()), Some(32));
/// let sig = decls.function("set_channel").unwrap();
/// assert_eq!(sig.conv, bitbridge::CallConv::Stdcall);
/// assert!(matches!(decls.type_named("Channel"), Some(CType::Struct(_))));
/// # Ok::<(), bitbridge::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Declarations {
    functions: Vec<Prototype>,
    function_index: HashMap<String, usize>,
    typedefs: HashMap<String, Qt>,
    tags: HashMap<String, Qt>,
    public_types: HashMap<String, CType>,
    constants: HashMap<String, Constant>,
    macros: HashMap<String, Macro>,
    last_declared: Option<usize>,
    /// Names (functions, typedef names, `struct tag`s) whose declaration uses something unsupported:
    /// the failure, reported when the name is used rather than when the text is parsed.
    unusable: HashMap<String, Failure>,
}

/// Why a declaration cannot be used: where (origin, line, column) and what.
#[derive(Clone, Debug, PartialEq)]
struct Failure {
    origin: Option<String>,
    line: usize,
    column: usize,
    message: String,
    source_line: String,
}

impl Failure {
    fn error(&self) -> Error {
        Error::Declaration {
            origin: self.origin.clone(),
            line: self.line,
            column: self.column,
            message: self.message.clone(),
            source_line: self.source_line.clone(),
        }
    }

    /// Where it is, for messages about its users: `vendor.h:12` or `line 12`.
    fn place(&self) -> String {
        match &self.origin {
            Some(o) => format!("{o}:{}", self.line),
            None => format!("line {}", self.line),
        }
    }
}

/// What the preprocessor remembers of a `#define`.
#[derive(Clone, Debug, PartialEq)]
enum Macro {
    /// A number or string: also a [`Constant`]; the name stays in the text and is evaluated where used.
    Constant,
    /// Empty, or only markers: removed from the text, or replaced by a calling convention.
    Marker(Option<CallConv>),
}

/// A type while declarations are read: C's view, with `const` and incomplete types, before it is
/// mapped onto [`CType`] (which depends on where the type is used: see [`Use`]).
#[derive(Clone, Debug)]
struct Qt {
    ty: Ty,
    konst: bool,
}

#[derive(Clone, Debug)]
enum Ty {
    C(CType),
    /// A struct or union declared but not (yet) defined: usable only behind a pointer.
    Opaque(String),
    Func(Box<FnTy>),
    Ptr(Box<Qt>),
    Arr(Box<Qt>, Option<u32>),
    /// A typedef name or tag whose declaration failed (a key of `Declarations::unusable`).
    Unusable(String),
}

#[derive(Clone, Debug)]
struct FnTy {
    ret: Qt,
    params: Vec<(Option<String>, Qt)>,
    variadic: bool,
    conv: CallConv,
}

/// Where a type is used, which decides how pointers map (see `docs/DECLARATIONS.md`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Param,
    Return,
    Member,
}

/// A failure with its position in the user's text (1-based); the caller adds the origin.
#[derive(Debug)]
struct Fail {
    line: usize,
    column: usize,
    message: String,
}

fn fail(line: usize, column: usize, message: impl Into<String>) -> Fail {
    Fail { line, column, message: message.into() }
}

impl Declarations {
    /// No declarations yet; add text with [`Declarations::add`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses C declarations (see `docs/DECLARATIONS.md` for the subset understood).
    pub fn parse(text: &str) -> Result<Self> {
        let mut d = Self::new();
        d.add(text)?;
        Ok(d)
    }

    /// Parses a header file; errors name the file.
    pub fn parse_file(path: impl AsRef<Path>) -> Result<Self> {
        let mut d = Self::new();
        d.add_file(path)?;
        Ok(d)
    }

    /// Parses more declarations, which may use the types, constants and macros seen so far.
    pub fn add(&mut self, text: &str) -> Result<&mut Self> {
        self.add_from(text, None)
    }

    /// Parses more declarations from a file.
    pub fn add_file(&mut self, path: impl AsRef<Path>) -> Result<&mut Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Declaration {
            origin: Some(path.display().to_string()),
            line: 0,
            column: 0,
            message: format!("cannot read the file: {e}"),
            source_line: String::new(),
        })?;
        self.add_from(&text, Some(path.display().to_string()))
    }

    /// Parses one prototype (such as `"double sum(double *f, int n)"`; the `;` may be left out), which
    /// may use the types and constants declared so far, adds it, and returns it. Errors are placed in
    /// `prototype`.
    pub fn add_prototype(&mut self, prototype: &str) -> Result<Prototype> {
        let text = with_semicolon(prototype);
        self.last_declared = None;
        let before = self.unusable.clone();
        let restore = self.clone();
        self.add_from(&text, Some("prototype".into())).map_err(|e| match e {
            // The `;` is ours, not the user's: an error there is at the end of what they wrote.
            Error::Declaration { origin, line, column, message, source_line: _ }
                if text.len() > prototype.len() && column > prototype.trim_end().len() =>
            {
                let message = message.replacen("syntax error at `;`", "the prototype ends too early", 1);
                Error::Declaration { origin, line, column, message, source_line: prototype.trim().to_owned() }
            }
            other => other,
        })?;
        // A prototype is used as soon as it is given: what it cannot use is its error.
        if let Some(f) = self.unusable.iter().find(|(k, v)| before.get(*k) != Some(*v)).map(|(_, v)| v.clone()) {
            *self = restore;
            return Err(f.error());
        }
        match self.last_declared {
            Some(i) => Ok(self.functions[i].clone()),
            None => Err(Error::Declaration {
                origin: Some("prototype".into()),
                line: 1,
                column: 1,
                message: "this declares no function (write it as `RETURN NAME(PARAMETERS)`)".into(),
                source_line: prototype.trim().to_owned(),
            }),
        }
    }

    /// Defines a preprocessor name as `#define NAME VALUE` would (`define("_WIN32", "1")` selects a
    /// header's Windows branches).
    pub fn define(&mut self, name: &str, value: &str) -> Result<&mut Self> {
        self.add_from(&format!("#define {name} {value}\n"), Some("<define>".into()))
    }

    fn add_from(&mut self, text: &str, origin: Option<String>) -> Result<&mut Self> {
        // Work on a copy so a failed parse leaves the declarations as they were.
        let mut next = self.clone();
        match next.parse_text(text, origin.as_deref()) {
            Ok(()) => {
                *self = next;
                Ok(self)
            }
            Err(f) => Err(Error::Declaration {
                origin,
                line: f.line,
                column: f.column,
                source_line: text.lines().nth(f.line.saturating_sub(1)).unwrap_or("").trim().to_owned(),
                message: f.message,
            }),
        }
    }

    /// Why `name` (a function, a typedef name, or `struct tag`) cannot be used, when its declaration
    /// uses something unsupported: the error, naming the construct and its line. Such a declaration
    /// does not fail the text it is in; only using it does ([`Library::declare`](crate::Library::declare)
    /// returns this error).
    pub fn unusable(&self, name: &str) -> Option<Error> {
        let key = name.split_whitespace().collect::<Vec<_>>().join(" ");
        self.unusable.get(&key).map(Failure::error)
    }

    /// The signature of function `name`.
    pub fn function(&self, name: &str) -> Option<&Signature> {
        self.prototype(name).map(|p| &p.signature)
    }

    /// Function `name` with its parameter names.
    pub fn prototype(&self, name: &str) -> Option<&Prototype> {
        self.function_index.get(name).map(|&i| &self.functions[i])
    }

    /// Every function declared, in order.
    pub fn functions(&self) -> impl Iterator<Item = &Prototype> {
        self.functions.iter()
    }

    /// A type by name: a typedef name, or `struct tag`, `union tag`, `enum tag`. Opaque types
    /// (declared, never defined) and function types (not pointers to them) have none.
    pub fn type_named(&self, name: &str) -> Option<&CType> {
        let key = name.split_whitespace().collect::<Vec<_>>().join(" ");
        self.public_types.get(&key)
    }

    /// A constant: from `#define NAME <number or string>`, or an enum member.
    pub fn constant(&self, name: &str) -> Option<&Constant> {
        self.constants.get(name)
    }

    /// Every constant, by name.
    pub fn constants(&self) -> impl Iterator<Item = (&str, &Constant)> {
        self.constants.iter().map(|(k, v)| (k.as_str(), v))
    }

    fn parse_text(&mut self, text: &str, origin: Option<&str>) -> Result<(), Fail> {
        let pre = Preprocessor::new(self).run(text)?;
        // lang-c's parser recurses per nesting level: refuse absurd nesting before it can overflow the stack.
        let mut depth = 0usize;
        for (i, c) in pre.text.bytes().enumerate() {
            match c {
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth > MAX_NESTING {
                let line = pre.text[..i].matches('\n').count() + 1;
                let column = i - pre.text[..i].rfind('\n').map_or(0, |p| p + 1) + 1;
                return Err(fail(line, column, format!("brackets nest deeper than {MAX_NESTING} levels")));
            }
        }
        // lang-c must know typedef names to parse; it starts empty each time. Earlier and built-in
        // typedef names used in this text are declared on one extra first line.
        let used: HashSet<&str> = identifiers(&pre.text).collect();
        let mut prelude = String::new();
        for name in used {
            if self.typedefs.contains_key(name) || builtin_typedef(name).is_some() {
                prelude.push_str(&format!("typedef int {name}; "));
            }
        }
        prelude.push('\n');
        let source = format!("{prelude}{}", pre.text);
        let cfg = Config { flavor: Flavor::GnuC11, ..Config::default() };
        let map = PosMap { prelude: prelude.len(), pre: &pre };
        let unit = parse_preprocessed(&cfg, source).map_err(|e| {
            let (line, column) = map.line_col(e.offset);
            let mut expected: Vec<_> = e
                .expected
                .iter()
                .copied()
                .filter(|t| !(t.starts_with('<') || (t.starts_with('[') && t.len() > 1)))
                .collect();
            expected.sort_unstable();
            let (found, next) = map.tokens_at(e.offset);
            let message = if found.is_empty() {
                "unexpected end of the declarations (a missing `;` or `}`?)".to_owned()
            } else if is_identifier(&found) && (is_identifier(&next) || next == "*") && !is_keyword(&found) {
                // `widget_t *w` or `widget_t w` where widget_t names no type.
                format!("unknown type name `{found}`")
            } else if expected.len() <= 6 && !expected.is_empty() {
                format!("syntax error at `{found}`: expected {}", expected.join(" or "))
            } else {
                format!("syntax error at `{found}`")
            };
            fail(line, column, message)
        })?;
        let mut sem = Semantics { d: self, map: &map };
        // The prelude's own typedefs are only for the parser.
        for ext in unit.unit.0.iter().filter(|e| e.span.start >= map.prelude) {
            // A declaration that uses something unsupported fails alone, when what it declares is used.
            if let Err(f) = sem.external(ext) {
                let (names, typedefs) = declared_names(ext);
                if names.is_empty() {
                    return Err(f);
                }
                let failure = Failure {
                    origin: origin.map(str::to_owned),
                    line: f.line,
                    column: f.column,
                    source_line: text.lines().nth(f.line.saturating_sub(1)).unwrap_or("").trim().to_owned(),
                    message: f.message,
                };
                for name in names {
                    if let Some(&i) = sem.d.function_index.get(&name) {
                        // A failed redeclaration replaces the earlier one.
                        sem.d.functions.remove(i);
                        sem.d.function_index =
                            sem.d.functions.iter().enumerate().map(|(i, p)| (p.name.clone(), i)).collect();
                        sem.d.last_declared = None;
                    }
                    sem.d.public_types.remove(&name);
                    if typedefs.contains(&name) {
                        sem.d.typedefs.insert(name.clone(), Qt { ty: Ty::Unusable(name.clone()), konst: false });
                    } else if name.starts_with("struct ") || name.starts_with("union ") {
                        sem.d.tags.insert(name.clone(), Qt { ty: Ty::Unusable(name.clone()), konst: false });
                    }
                    sem.d.unusable.insert(name, failure.clone());
                }
            }
        }
        Ok(())
    }

    fn set_constant(&mut self, name: &str, c: Constant) {
        self.constants.insert(name.to_owned(), c);
    }
}

// ---- the preprocessor --------------------------------------------------------------------------

/// What the preprocessor produced: text with as many lines as the input, edits to map columns back,
/// and `#pragma pack` in force from each line on.
struct PreText {
    text: String,
    /// Per line: (start in output, length in output, start in input, length in input).
    edits: Vec<Vec<(usize, usize, usize, usize)>>,
    packs: Vec<(usize, Option<u32>)>,
}

struct Preprocessor<'a> {
    d: &'a mut Declarations,
    conds: Vec<Cond>,
    braces: usize,
    extern_c: Vec<usize>,
    pack: Option<u32>,
    pack_stack: Vec<Option<u32>>,
    packs: Vec<(usize, Option<u32>)>,
    /// Macros whose definition is not supported (function-like, `#`/`##`, a type or expression
    /// body): ignored unless the text after them uses their name, which then refuses the text.
    skipped: Vec<(String, Fail)>,
}

struct Cond {
    line: usize,
    directive: &'static str,
    parent_active: bool,
    active: bool,
    taken: bool,
    seen_else: bool,
}

/// The deepest bracket nesting accepted (real headers stay far below it).
const MAX_NESTING: usize = 200;

/// Headers whose declarations are built in (see [`builtin_typedef`]).
const STANDARD_HEADERS: &[&str] = &[
    "stdint.h",
    "inttypes.h",
    "stddef.h",
    "stdbool.h",
    "wchar.h",
    "sys/types.h",
    "stdlib.h",
    "string.h",
    "limits.h",
    "windows.h",
    "windef.h",
    "wtypes.h",
    "minwindef.h",
    "basetsd.h",
];

/// Calling-convention markers understood without a `#define`.
fn builtin_marker(name: &str) -> Option<Option<CallConv>> {
    Some(match name {
        "__cdecl" | "_cdecl" | "__cdecl__" | "WINAPIV" => Some(CallConv::Cdecl),
        "__stdcall" | "_stdcall" | "__stdcall__" | "WINAPI" | "CALLBACK" | "APIENTRY" | "PASCAL" | "NTAPI"
        | "STDMETHODCALLTYPE" => Some(CallConv::Stdcall),
        "__fastcall" | "_fastcall" | "__fastcall__" => Some(CallConv::Fastcall),
        "__thiscall" | "__thiscall__" => Some(CallConv::Thiscall),
        "__w64" | "__ptr32" | "__ptr64" | "__unaligned" | "EXTERN_C" | "_In_" | "_Out_" | "_Inout_" | "_In_opt_"
        | "_Out_opt_" | "_Inout_opt_" => None,
        _ => return None,
    })
}

fn conv_attribute(conv: CallConv) -> &'static str {
    match conv {
        CallConv::Stdcall => "__attribute__((stdcall))",
        CallConv::Fastcall => "__attribute__((fastcall))",
        CallConv::Thiscall => "__attribute__((thiscall))",
        _ => "__attribute__((cdecl))",
    }
}

impl<'a> Preprocessor<'a> {
    fn new(d: &'a mut Declarations) -> Self {
        Preprocessor {
            d,
            conds: Vec::new(),
            braces: 0,
            extern_c: Vec::new(),
            pack: None,
            pack_stack: Vec::new(),
            packs: Vec::new(),
            skipped: Vec::new(),
        }
    }

    fn active(&self) -> bool {
        self.conds.last().is_none_or(|c| c.active)
    }

    fn run(mut self, text: &str) -> Result<PreText, Fail> {
        let clean = strip_comments(text)?;
        let lines: Vec<&str> = clean.split('\n').collect();
        let mut out = String::with_capacity(clean.len());
        let mut edits = vec![Vec::new(); lines.len()];
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i].strip_suffix('\r').unwrap_or(lines[i]);
            if line.trim_start().starts_with('#') {
                // A directive, with its continuation lines.
                let first = i;
                let mut joined = String::new();
                let mut l = line;
                loop {
                    match l.strip_suffix('\\') {
                        Some(s) if i + 1 < lines.len() => {
                            joined.push_str(s);
                            joined.push(' ');
                            i += 1;
                            l = lines[i].strip_suffix('\r').unwrap_or(lines[i]);
                        }
                        _ => {
                            joined.push_str(l);
                            break;
                        }
                    }
                }
                let indent = line.len() - line.trim_start().len();
                self.directive(first + 1, indent + 1, &joined)?;
                for _ in first..=i {
                    out.push('\n');
                }
                i += 1;
                continue;
            }
            if self.active() {
                let (text, e) = self.code_line(i + 1, line)?;
                out.push_str(&text);
                edits[i] = e;
            }
            out.push('\n');
            i += 1;
        }
        out.pop(); // the split added one line too many
        if let Some(c) = self.conds.last() {
            return Err(fail(c.line, 1, format!("this `#{}` is not closed by `#endif`", c.directive)));
        }
        if !self.skipped.is_empty() {
            let used: HashSet<&str> = identifiers(&out).collect();
            if let Some((_, f)) = self.skipped.iter().find(|(n, _)| used.contains(n.as_str())) {
                return Err(fail(f.line, f.column, f.message.clone()));
            }
        }
        Ok(PreText { text: out, edits, packs: self.packs })
    }

    /// Rewrites one line of code: markers become attributes or spaces, `extern "C"` and its braces go.
    #[allow(clippy::type_complexity)]
    fn code_line(&mut self, line: usize, text: &str) -> Result<(String, Vec<(usize, usize, usize, usize)>), Fail> {
        let toks = tokenize(text).map_err(|(col, m)| fail(line, col, m))?;
        let mut out = String::new();
        let mut edits = Vec::new();
        let mut copied = 0; // input bytes copied so far
        let mut replace = |out: &mut String, start: usize, end: usize, with: &str, copied: &mut usize| {
            out.push_str(&text[*copied..start]);
            if with.is_empty() {
                out.extend(std::iter::repeat_n(' ', end - start));
            } else {
                edits.push((out.len(), with.len(), start, end - start));
                out.push_str(with);
            }
            *copied = end;
        };
        let mut k = 0;
        while k < toks.len() {
            let t = &toks[k];
            match &t.tok {
                Tok::Ident(name)
                    if name == "extern"
                        && matches!(toks.get(k + 1), Some(Tok2 { tok: Tok::Str(s), .. }) if s == "\"C\"" || s == "\"C++\"") =>
                {
                    let mut end = toks[k + 1].end;
                    if matches!(toks.get(k + 2), Some(Tok2 { tok: Tok::Punct(p), .. }) if p == "{") {
                        end = toks[k + 2].end;
                        self.extern_c.push(self.braces);
                        k += 1;
                    }
                    replace(&mut out, t.start, end, "", &mut copied);
                    k += 2;
                    continue;
                }
                Tok::Ident(name) if name == "__declspec" => {
                    // __declspec(...) with balanced parentheses on this line.
                    let mut depth = 0;
                    let mut j = k + 1;
                    let mut end = None;
                    while j < toks.len() {
                        match &toks[j].tok {
                            Tok::Punct(p) if p == "(" => depth += 1,
                            Tok::Punct(p) if p == ")" => {
                                depth -= 1;
                                if depth == 0 {
                                    end = Some(j);
                                    break;
                                }
                            }
                            _ if depth == 0 => break,
                            _ => {}
                        }
                        j += 1;
                    }
                    let Some(j) = end else {
                        return Err(fail(line, t.start + 1, "`__declspec` needs its `(...)` on the same line"));
                    };
                    replace(&mut out, t.start, toks[j].end, "", &mut copied);
                    k = j + 1;
                    continue;
                }
                Tok::Ident(name) => {
                    let marker = match self.d.macros.get(name) {
                        Some(Macro::Marker(m)) => Some(*m),
                        Some(Macro::Constant) => None,
                        None => builtin_marker(name),
                    };
                    if let Some(m) = marker {
                        replace(&mut out, t.start, t.end, m.map(conv_attribute).unwrap_or(""), &mut copied);
                    }
                }
                Tok::Punct(p) if p == "{" => self.braces += 1,
                Tok::Punct(p) if p == "}" => {
                    if self.extern_c.last() == Some(&self.braces) {
                        self.extern_c.pop();
                        replace(&mut out, t.start, t.end, "", &mut copied);
                    } else {
                        self.braces = self.braces.saturating_sub(1);
                    }
                }
                Tok::Punct(p) if p == "##" || p == "#" => {
                    return Err(fail(line, t.start + 1, format!("`{p}` outside a directive")));
                }
                _ => {}
            }
            k += 1;
        }
        out.push_str(&text[copied..]);
        Ok((out, edits))
    }

    fn directive(&mut self, line: usize, col: usize, text: &str) -> Result<(), Fail> {
        let body = text.trim_start().strip_prefix('#').unwrap_or("").trim_start();
        let name_len = body.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(body.len());
        let (name, rest) = body.split_at(name_len);
        let rest = rest.trim();
        let err = |m: String| fail(line, col, m);
        match name {
            "ifdef" | "ifndef" => {
                let defined = self.is_defined(rest.split_whitespace().next().unwrap_or(""));
                let cond = if name == "ifdef" { defined } else { !defined };
                self.push_cond(cond, line, if name == "ifdef" { "ifdef" } else { "ifndef" });
            }
            "if" => {
                let cond = if self.active() {
                    self.condition(rest).map_err(|m| err(format!("in `#if`: {m}")))?
                } else {
                    false
                };
                self.push_cond(cond, line, "if");
            }
            "elif" | "else" => {
                let active = self.conds.last().is_some_and(|c| c.parent_active && !c.taken);
                let seen_else = self.conds.last().is_some_and(|c| c.seen_else);
                if self.conds.is_empty() || seen_else {
                    return Err(err(format!("`#{name}` without a matching `#if`")));
                }
                let cond = if name == "else" {
                    true
                } else if active {
                    self.condition(rest).map_err(|m| err(format!("in `#elif`: {m}")))?
                } else {
                    false
                };
                let c = self.conds.last_mut().expect("checked above");
                c.active = active && cond;
                c.taken |= c.active;
                c.seen_else = name == "else";
            }
            "endif" => {
                if self.conds.pop().is_none() {
                    return Err(err("`#endif` without a matching `#if`".into()));
                }
            }
            _ if !self.active() => {}
            "" => {}
            "define" => {
                if let Err(m) = self.define(rest) {
                    let name_len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
                    if name_len == 0 {
                        return Err(err(m));
                    }
                    // A helper macro for code, not declarations: an error only if something uses it.
                    let name = rest[..name_len].to_owned();
                    self.skipped.retain(|(n, _)| *n != name);
                    self.d.macros.remove(&name);
                    self.d.constants.remove(&name);
                    self.skipped.push((name, err(m)));
                }
            }
            "undef" => {
                let n = rest.split_whitespace().next().unwrap_or("");
                self.skipped.retain(|(s, _)| s != n);
                self.d.macros.remove(n);
                self.d.constants.remove(n);
            }
            "include" => {
                let header = rest.trim_start_matches('<').trim_end_matches('>');
                if !(rest.starts_with('<') && STANDARD_HEADERS.contains(&header)) {
                    return Err(err(format!(
                        "`#include {rest}` is not supported: only standard headers whose types are built in are \
                         ({}); paste the declarations you need from other headers",
                        STANDARD_HEADERS.join(", ")
                    )));
                }
            }
            "pragma" => self.pragma(line, rest).map_err(err)?,
            "error" => return Err(err(format!("`#error {rest}`"))),
            other => return Err(err(format!("the directive `#{other}` is not supported"))),
        }
        Ok(())
    }

    fn push_cond(&mut self, cond: bool, line: usize, directive: &'static str) {
        let parent_active = self.active();
        let active = parent_active && cond;
        self.conds.push(Cond { line, directive, parent_active, active, taken: active, seen_else: false });
    }

    fn is_defined(&self, name: &str) -> bool {
        self.d.macros.contains_key(name) || matches!(name, "__STDC__" | "__STDC_VERSION__")
    }

    fn condition(&self, expr: &str) -> Result<bool, String> {
        let toks = tokenize(expr).map_err(|(_, m)| m)?;
        let mut p = Expr { toks: &toks, pos: 0, pre: self, in_if: true };
        let v = p.ternary()?;
        if p.pos != toks.len() {
            return Err(format!("unexpected `{}`", toks[p.pos].text()));
        }
        Ok(v.truthy())
    }

    fn define(&mut self, rest: &str) -> Result<(), String> {
        let name_len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        let (name, body) = rest.split_at(name_len);
        if name.is_empty() {
            return Err("`#define` without a name".into());
        }
        if body.starts_with('(') {
            return Err(format!(
                "the function-like macro `{name}` is not supported: only `#define NAME <number>`, string constants \
                 and markers such as `#define API __declspec(dllimport)`"
            ));
        }
        let toks = tokenize(body).map_err(|(_, m)| m)?;
        if let Some(t) = toks.iter().find(|t| matches!(&t.tok, Tok::Punct(p) if p == "#" || p == "##")) {
            return Err(format!("`{}` (stringizing or token pasting) in `#define {name}` is not supported", t.text()));
        }
        if toks.is_empty() {
            self.d.macros.insert(name.into(), Macro::Marker(None));
            return Ok(());
        }
        if let [Tok2 { tok: Tok::Str(s), .. }] = toks.as_slice() {
            self.d.macros.insert(name.into(), Macro::Constant);
            self.d.set_constant(name, Constant::Str(unescape(&s[1..s.len() - 1])));
            return Ok(());
        }
        if let Some(conv) = self.marker_body(&toks) {
            self.d.macros.insert(name.into(), Macro::Marker(conv));
            return Ok(());
        }
        let mut p = Expr { toks: &toks, pos: 0, pre: self, in_if: false };
        match p.ternary() {
            Ok(v) if p.pos == toks.len() => {
                self.d.macros.insert(name.into(), Macro::Constant);
                self.d.set_constant(name, v.constant());
                Ok(())
            }
            _ => Err(format!(
                "`#define {name} {}` is not supported: a macro may be a number, a string, empty, or calling-convention \
                 and export markers",
                body.trim()
            )),
        }
    }

    /// If the tokens are only markers (`__stdcall`, `__declspec(...)`, `__attribute__((...))`,
    /// `extern "C"`, earlier marker macros), the calling convention they name.
    fn marker_body(&self, toks: &[Tok2]) -> Option<Option<CallConv>> {
        let mut conv = None;
        let mut k = 0;
        while k < toks.len() {
            match &toks[k].tok {
                Tok::Ident(n) if n == "__declspec" || n == "__attribute__" || n == "__attribute" => {
                    // Skip a balanced (...) group, noting a calling convention inside.
                    let mut depth = 0;
                    k += 1;
                    loop {
                        match toks.get(k).map(|t| &t.tok) {
                            Some(Tok::Punct(p)) if p == "(" => depth += 1,
                            Some(Tok::Punct(p)) if p == ")" => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            Some(Tok::Ident(a)) => {
                                if let Some(Some(c)) =
                                    builtin_marker(a).or_else(|| builtin_marker(&format!("__{}", a.trim_matches('_'))))
                                {
                                    conv = Some(c);
                                }
                            }
                            Some(_) if depth > 0 => {}
                            _ => return None,
                        }
                        k += 1;
                    }
                }
                Tok::Ident(n) if n == "extern" => {
                    if matches!(toks.get(k + 1).map(|t| &t.tok), Some(Tok::Str(_))) {
                        k += 1;
                    }
                }
                Tok::Ident(n) => match self.d.macros.get(n) {
                    Some(Macro::Marker(c)) => conv = c.or(conv),
                    Some(Macro::Constant) => return None,
                    None => conv = builtin_marker(n)?.or(conv),
                },
                _ => return None,
            }
            k += 1;
        }
        Some(conv)
    }

    fn pragma(&mut self, line: usize, rest: &str) -> Result<(), String> {
        let Some(args) = rest.strip_prefix("pack") else {
            return Ok(()); // #pragma once, warning(...), ...: like compilers, ignore what we do not know
        };
        let args = args.trim().trim_start_matches('(').trim_end_matches(')');
        let parts: Vec<&str> = args.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        let number = |s: &str| -> Result<u32, String> {
            s.parse::<u32>()
                .ok()
                .filter(|n| n.is_power_of_two() && *n <= 16)
                .ok_or_else(|| format!("`#pragma pack({args})`: `{s}` is not 1, 2, 4, 8 or 16"))
        };
        match parts.as_slice() {
            [] => self.pack = None,
            ["push"] => self.pack_stack.push(self.pack),
            ["push", n] => {
                self.pack_stack.push(self.pack);
                self.pack = Some(number(n)?);
            }
            ["pop"] => self.pack = self.pack_stack.pop().flatten(),
            [n] => self.pack = Some(number(n)?),
            _ => return Err(format!("`#pragma pack({args})` is not supported")),
        }
        self.packs.push((line, self.pack));
        Ok(())
    }
}

/// Replaces comments by spaces (newlines kept), so offsets stay those of the input.
fn strip_comments(text: &str) -> Result<String, Fail> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let (mut line, mut line_start) = (1, 0);
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    out.push(b' ');
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let (l0, c0) = (line, i - line_start + 1);
                out.extend_from_slice(b"  ");
                i += 2;
                loop {
                    if i >= b.len() {
                        return Err(fail(l0, c0, "a comment `/*` is not closed"));
                    }
                    if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        out.extend_from_slice(b"  ");
                        i += 2;
                        break;
                    }
                    if b[i] == b'\n' {
                        out.push(b'\n');
                        line += 1;
                        line_start = i + 1;
                    } else {
                        out.push(b' ');
                    }
                    i += 1;
                }
            }
            q @ (b'"' | b'\'') => {
                out.push(q);
                i += 1;
                while i < b.len() && b[i] != q && b[i] != b'\n' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        out.push(b[i]);
                        i += 1;
                    }
                    out.push(b[i]);
                    i += 1;
                }
                if i < b.len() && b[i] == q {
                    out.push(q);
                    i += 1;
                }
            }
            c => {
                if c == b'\n' {
                    line += 1;
                    line_start = i + 1;
                }
                out.push(c);
                i += 1;
            }
        }
    }
    // Only ASCII bytes were replaced by ASCII, so the result is UTF-8 again.
    Ok(String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Num(String),
    Str(String),
    Char(String),
    Punct(String),
}

#[derive(Clone, Debug)]
struct Tok2 {
    tok: Tok,
    start: usize,
    end: usize,
}

impl Tok2 {
    fn text(&self) -> &str {
        match &self.tok {
            Tok::Ident(s) | Tok::Num(s) | Tok::Str(s) | Tok::Char(s) | Tok::Punct(s) => s,
        }
    }
}

/// Splits a line into preprocessing tokens; errors carry a 1-based column.
fn tokenize(s: &str) -> Result<Vec<Tok2>, (usize, String)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let tok = if c.is_ascii_whitespace() {
            i += 1;
            continue;
        } else if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] >= 0x80) {
                i += 1;
            }
            // L"..." and L'...' are wide literals.
            if &s[start..i] == "L" && i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                continue_literal(b, &mut i).map_err(|m| (start + 1, m))?;
                let t = &s[start..i];
                if t.ends_with('"') {
                    Tok::Str(t[1..].to_owned())
                } else {
                    Tok::Char(t[1..].to_owned())
                }
            } else {
                Tok::Ident(s[start..i].to_owned())
            }
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < b.len() {
                let d = b[i];
                let exp = i > start && matches!(b[i - 1], b'e' | b'E' | b'p' | b'P') && (d == b'+' || d == b'-');
                if d.is_ascii_alphanumeric() || d == b'.' || d == b'_' || exp {
                    i += 1;
                } else {
                    break;
                }
            }
            Tok::Num(s[start..i].to_owned())
        } else if c == b'"' || c == b'\'' {
            continue_literal(b, &mut i).map_err(|m| (start + 1, m))?;
            if c == b'"' {
                Tok::Str(s[start..i].to_owned())
            } else {
                Tok::Char(s[start..i].to_owned())
            }
        } else {
            const OPS: &[&str] = &["...", "<<", ">>", "<=", ">=", "==", "!=", "&&", "||", "##", "->"];
            let op = OPS.iter().find(|o| s[i..].starts_with(**o)).copied();
            let len = op.map_or_else(|| s[i..].chars().next().map_or(1, char::len_utf8), str::len);
            i += len;
            Tok::Punct(s[start..i].to_owned())
        };
        out.push(Tok2 { tok, start, end: i });
    }
    Ok(out)
}

fn continue_literal(b: &[u8], i: &mut usize) -> Result<(), String> {
    let q = b[*i];
    *i += 1;
    while *i < b.len() && b[*i] != q {
        if b[*i] == b'\\' {
            *i += 1;
        }
        *i += 1;
    }
    if *i >= b.len() {
        return Err(format!("a {} literal is not closed", if q == b'"' { "string" } else { "character" }));
    }
    *i += 1;
    Ok(())
}

/// C escapes in a string or character literal's body.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('a') => out.push('\x07'),
            Some('b') => out.push('\x08'),
            Some('f') => out.push('\x0c'),
            Some('v') => out.push('\x0b'),
            Some('x') => {
                let mut v = 0u32;
                while let Some(d) = it.peek().and_then(|c| c.to_digit(16)) {
                    v = v * 16 + d;
                    it.next();
                }
                out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Identifiers in a text (for the typedef prelude), skipping string and character literals.
fn identifiers(text: &str) -> impl Iterator<Item = &str> {
    let mut in_lit: Option<char> = None;
    let mut prev = '\0';
    text.split(move |c: char| {
        let sep = !(c.is_ascii_alphanumeric() || c == '_');
        match in_lit {
            Some(q) if c == q && prev != '\\' => in_lit = None,
            None if c == '"' || c == '\'' => in_lit = Some(c),
            _ => {}
        }
        prev = c;
        sep || in_lit.is_some()
    })
    .filter(|w| w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
}

// ---- constant expressions ----------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Num {
    I(i128, bool),
    F(f64),
}

impl Num {
    fn truthy(self) -> bool {
        match self {
            Num::I(i, _) => i != 0,
            Num::F(f) => f != 0.0,
        }
    }

    fn constant(self) -> Constant {
        match self {
            Num::I(i, unsigned) if i < 0 || (!unsigned && i <= i128::from(i64::MAX)) => {
                Constant::Int(i64::try_from(i).unwrap_or(i64::MIN))
            }
            Num::I(i, _) => Constant::UInt(u64::try_from(i).unwrap_or(u64::MAX)),
            Num::F(f) => Constant::Float(f),
        }
    }

    fn from_constant(c: &Constant) -> Option<Num> {
        match c {
            Constant::Int(i) => Some(Num::I(i128::from(*i), false)),
            Constant::UInt(u) => Some(Num::I(i128::from(*u), true)),
            Constant::Float(f) => Some(Num::F(*f)),
            Constant::Str(_) => None,
        }
    }
}

/// Parses a C number literal (`0x1F`, `017`, `0b101`, `10UL`, `1.5f`, `1e-3`).
fn parse_number(s: &str) -> Option<Num> {
    let lower = s.to_ascii_lowercase();
    let hex = lower.starts_with("0x");
    let is_float = !hex && (lower.contains('.') || lower.contains('e')) || hex && lower.contains('p');
    if is_float {
        let t = lower.trim_end_matches(['f', 'l']);
        return t.parse::<f64>().ok().map(Num::F);
    }
    let unsigned = lower.contains('u');
    let t = lower.trim_end_matches(['u', 'l']);
    let v = if let Some(h) = t.strip_prefix("0x") {
        i128::from_str_radix(h, 16).ok()?
    } else if let Some(b) = t.strip_prefix("0b") {
        i128::from_str_radix(b, 2).ok()?
    } else if t.len() > 1 && t.starts_with('0') {
        i128::from_str_radix(&t[1..], 8).ok()?
    } else {
        t.parse::<i128>().ok()?
    };
    Some(Num::I(v, unsigned))
}

/// A recursive-descent evaluator for `#if` conditions and `#define` bodies.
struct Expr<'t, 'p, 'a> {
    toks: &'t [Tok2],
    pos: usize,
    pre: &'p Preprocessor<'a>,
    in_if: bool,
}

impl Expr<'_, '_, '_> {
    fn peek(&self) -> Option<&str> {
        self.toks.get(self.pos).map(Tok2::text)
    }

    fn eat(&mut self, p: &str) -> bool {
        if self.peek() == Some(p) && matches!(self.toks[self.pos].tok, Tok::Punct(_)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn ternary(&mut self) -> Result<Num, String> {
        let c = self.binary(0)?;
        if self.eat("?") {
            let a = self.ternary()?;
            if !self.eat(":") {
                return Err("expected `:`".into());
            }
            let b = self.ternary()?;
            return Ok(if c.truthy() { a } else { b });
        }
        Ok(c)
    }

    fn binary(&mut self, min_prec: u8) -> Result<Num, String> {
        let mut lhs = self.unary()?;
        while let Some(op) = self.peek().map(str::to_owned) {
            let prec = match op.as_str() {
                "||" => 1,
                "&&" => 2,
                "|" => 3,
                "^" => 4,
                "&" => 5,
                "==" | "!=" => 6,
                "<" | ">" | "<=" | ">=" => 7,
                "<<" | ">>" => 8,
                "+" | "-" => 9,
                "*" | "/" | "%" => 10,
                _ => break,
            };
            if prec < min_prec || !matches!(self.toks[self.pos].tok, Tok::Punct(_)) {
                break;
            }
            self.pos += 1;
            let rhs = self.binary(prec + 1)?;
            lhs = apply(&op, lhs, rhs)?;
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Num, String> {
        if self.eat("-") {
            return Ok(match self.unary()? {
                Num::I(i, u) => Num::I(-i, u),
                Num::F(f) => Num::F(-f),
            });
        }
        if self.eat("+") {
            return self.unary();
        }
        if self.eat("!") {
            return Ok(Num::I(i128::from(!self.unary()?.truthy()), false));
        }
        if self.eat("~") {
            return match self.unary()? {
                Num::I(i, u) => Ok(Num::I(!i, u)),
                Num::F(_) => Err("`~` of a floating-point number".into()),
            };
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Num, String> {
        let Some(t) = self.toks.get(self.pos).cloned() else {
            return Err("an expression ends too early".into());
        };
        self.pos += 1;
        match &t.tok {
            Tok::Num(n) => parse_number(n).ok_or_else(|| format!("`{n}` is not a number")),
            Tok::Char(c) => {
                let body = unescape(&c[1..c.len() - 1]);
                let mut chars = body.chars();
                match (chars.next(), chars.next()) {
                    (Some(ch), None) => Ok(Num::I(i128::from(u32::from(ch)), false)),
                    _ => Err(format!("`{c}` is not a single character")),
                }
            }
            Tok::Punct(p) if p == "(" => {
                // A cast such as `(DWORD)0xFFFF` or `(unsigned long)1` is skipped.
                let start = self.pos;
                let mut k = self.pos;
                while let Some(Tok::Ident(n)) = self.toks.get(k).map(|t| &t.tok) {
                    if !is_type_word(n) && builtin_typedef(n).is_none() && !self.pre.d.typedefs.contains_key(n) {
                        break;
                    }
                    k += 1;
                }
                if k > start && matches!(self.toks.get(k).map(|t| &t.tok), Some(Tok::Punct(p)) if p == ")") {
                    self.pos = k + 1;
                    return self.unary();
                }
                let v = self.ternary()?;
                if !self.eat(")") {
                    return Err("expected `)`".into());
                }
                Ok(v)
            }
            Tok::Ident(n) if n == "defined" && self.in_if => {
                let paren = self.eat("(");
                let name = match self.toks.get(self.pos).map(|t| &t.tok) {
                    Some(Tok::Ident(name)) => name.clone(),
                    _ => return Err("`defined` needs a name".into()),
                };
                self.pos += 1;
                if paren && !self.eat(")") {
                    return Err("expected `)` after `defined(NAME`".into());
                }
                Ok(Num::I(i128::from(self.pre.is_defined(&name)), false))
            }
            Tok::Ident(n) => {
                if let Some(v) = self.pre.d.constants.get(n).and_then(Num::from_constant) {
                    return Ok(v);
                }
                match n.as_str() {
                    "true" => Ok(Num::I(1, false)),
                    "false" => Ok(Num::I(0, false)),
                    "__STDC__" => Ok(Num::I(1, false)),
                    "__STDC_VERSION__" => Ok(Num::I(201112, false)),
                    _ if self.in_if && !self.pre.is_defined(n) => Ok(Num::I(0, false)),
                    _ => Err(format!("`{n}` is not a numeric constant")),
                }
            }
            _ => Err(format!("unexpected `{}`", t.text())),
        }
    }
}

fn is_identifier(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_keyword(s: &str) -> bool {
    matches!(
        s,
        "auto"
            | "break"
            | "case"
            | "char"
            | "const"
            | "continue"
            | "default"
            | "do"
            | "double"
            | "else"
            | "enum"
            | "extern"
            | "float"
            | "for"
            | "goto"
            | "if"
            | "inline"
            | "int"
            | "long"
            | "register"
            | "restrict"
            | "return"
            | "short"
            | "signed"
            | "sizeof"
            | "static"
            | "struct"
            | "switch"
            | "typedef"
            | "union"
            | "unsigned"
            | "void"
            | "volatile"
            | "while"
            | "_Bool"
            | "_Complex"
            | "_Alignas"
            | "_Atomic"
            | "__attribute__"
            | "__attribute"
    )
}

fn is_type_word(n: &str) -> bool {
    matches!(n, "int" | "unsigned" | "signed" | "long" | "short" | "char" | "float" | "double" | "const")
}

fn apply(op: &str, a: Num, b: Num) -> Result<Num, String> {
    use Num::*;
    Ok(match (a, b) {
        (I(x, ux), I(y, uy)) => {
            let u = ux || uy;
            let v = match op {
                "+" => x.checked_add(y),
                "-" => x.checked_sub(y),
                "*" => x.checked_mul(y),
                "/" | "%" if y == 0 => return Err("division by zero".into()),
                "/" => Some(x / y),
                "%" => Some(x % y),
                "<<" => u32::try_from(y).ok().filter(|s| *s < 64).map(|s| x << s),
                ">>" => u32::try_from(y).ok().filter(|s| *s < 128).map(|s| x >> s),
                "&" => Some(x & y),
                "|" => Some(x | y),
                "^" => Some(x ^ y),
                _ => return Ok(I(i128::from(compare(op, x as f64, y as f64, x.cmp(&y))), false)),
            };
            I(v.ok_or_else(|| format!("`{op}` overflows"))?, u)
        }
        (a, b) => {
            let (x, y) = (to_f(a), to_f(b));
            match op {
                "+" => F(x + y),
                "-" => F(x - y),
                "*" => F(x * y),
                "/" => F(x / y),
                "%" | "<<" | ">>" | "&" | "|" | "^" => return Err(format!("`{op}` of a floating-point number")),
                _ => I(i128::from(compare(op, x, y, x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal))), false),
            }
        }
    })
}

fn to_f(n: Num) -> f64 {
    match n {
        Num::I(i, _) => i as f64,
        Num::F(f) => f,
    }
}

fn compare(op: &str, x: f64, y: f64, ord: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        "==" => ord == Equal,
        "!=" => ord != Equal,
        "<" => ord == Less,
        ">" => ord == Greater,
        "<=" => ord != Greater,
        ">=" => ord != Less,
        "&&" => x != 0.0 && y != 0.0,
        "||" => x != 0.0 || y != 0.0,
        _ => false,
    }
}

// ---- positions ---------------------------------------------------------------------------------

struct PosMap<'p> {
    prelude: usize,
    pre: &'p PreText,
}

impl PosMap<'_> {
    /// The user's 1-based line and column of a byte offset in the parsed source.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let off = offset.saturating_sub(self.prelude).min(self.pre.text.len());
        let before = &self.pre.text[..off];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |p| p + 1);
        let col = off - line_start;
        // Undo the edits made on this line before that column.
        let mut orig = col;
        for &(out_start, out_len, in_start, in_len) in self.pre.edits.get(line - 1).into_iter().flatten() {
            if col >= out_start + out_len {
                orig = orig + in_len - out_len;
            } else if col >= out_start {
                orig = in_start;
                break;
            }
        }
        (line, orig + 1)
    }

    /// The token at an offset and the one after it (empty at the end).
    fn tokens_at(&self, offset: usize) -> (String, String) {
        let off = offset.saturating_sub(self.prelude).min(self.pre.text.len());
        let toks = tokenize(&self.pre.text[off..]).unwrap_or_default();
        let text = |i: usize| toks.get(i).map(|t| t.text().to_owned()).unwrap_or_default();
        (text(0), text(1))
    }

    fn pack_at(&self, line: usize) -> Option<u32> {
        self.pre.packs.iter().take_while(|(l, _)| *l < line).last().and_then(|(_, p)| *p)
    }
}

// ---- from the syntax tree to the type model ----------------------------------------------------

/// Typedef names that need no declaration: stdint/stddef and common Windows ones. Windows' `LONG` and
/// `DWORD` are 32 bits on every Windows target, so they map to `I32`/`U32`, not to `long`.
fn builtin_typedef(name: &str) -> Option<Qt> {
    use CType::*;
    let c = |t: CType| Qt { ty: Ty::C(t), konst: false };
    let ptr = |t: CType, konst: bool| Qt { ty: Ty::Ptr(Box::new(Qt { ty: Ty::C(t), konst })), konst: false };
    Some(match name {
        "int8_t" | "INT8" | "__int8" => c(I8),
        "uint8_t" | "UINT8" | "BYTE" | "UCHAR" | "BOOLEAN" => c(if name == "UCHAR" { UChar } else { U8 }),
        "int16_t" | "INT16" | "SHORT" | "__int16" => c(I16),
        "uint16_t" | "UINT16" | "WORD" | "USHORT" => c(U16),
        "int32_t" | "INT32" | "INT" | "LONG" | "BOOL" | "__int32" => c(I32),
        "uint32_t" | "UINT32" | "UINT" | "DWORD" | "ULONG" | "DWORD32" => c(U32),
        "int64_t" | "INT64" | "LONGLONG" | "LONG64" | "intmax_t" | "__int64" => c(I64),
        "uint64_t" | "UINT64" | "ULONGLONG" | "DWORD64" | "QWORD" | "ULONG64" | "uintmax_t" => c(U64),
        "size_t" | "uintptr_t" | "SIZE_T" | "UINT_PTR" | "ULONG_PTR" | "DWORD_PTR" => c(SizeT),
        "ssize_t" | "ptrdiff_t" | "intptr_t" | "SSIZE_T" | "INT_PTR" | "LONG_PTR" | "off_t" => c(SSizeT),
        "wchar_t" | "WCHAR" => c(WChar),
        "bool" => c(Bool),
        "CHAR" => c(Char),
        "FLOAT" => c(Float),
        "DOUBLE" => c(Double),
        "HANDLE" | "LPVOID" | "PVOID" | "HWND" | "HMODULE" | "HINSTANCE" | "HKEY" | "LPCVOID" => {
            ptr(Void, name == "LPCVOID")
        }
        "LPCSTR" | "PCSTR" => ptr(Char, true),
        "LPSTR" | "PSTR" => ptr(Char, false),
        "LPCWSTR" | "PCWSTR" => ptr(WChar, true),
        "LPWSTR" | "PWSTR" => ptr(WChar, false),
        "LPDWORD" | "PDWORD" => ptr(U32, false),
        "LPBYTE" | "PBYTE" => ptr(U8, false),
        "LPBOOL" | "PBOOL" | "LPLONG" | "PLONG" | "LPINT" => ptr(I32, false),
        _ => return None,
    })
}

struct Semantics<'d, 'm> {
    d: &'d mut Declarations,
    map: &'m PosMap<'m>,
}

fn attr_conv(exts: &[Node<ast::Extension>]) -> Option<CallConv> {
    exts.iter().find_map(|e| match &e.node {
        ast::Extension::Attribute(a) => match a.name.node.trim_matches('_') {
            "stdcall" => Some(CallConv::Stdcall),
            "fastcall" => Some(CallConv::Fastcall),
            "thiscall" => Some(CallConv::Thiscall),
            "cdecl" => Some(CallConv::Cdecl),
            _ => None,
        },
        _ => None,
    })
}

fn attr_packed(exts: &[Node<ast::Extension>]) -> bool {
    exts.iter().any(|e| matches!(&e.node, ast::Extension::Attribute(a) if a.name.node.trim_matches('_') == "packed"))
}

/// The specifiers of a declaration, whichever list they came from.
#[derive(Default)]
struct Specs<'a> {
    words: Vec<(&'static str, &'a lang_c::span::Span)>,
    typedef_name: Option<&'a Node<ast::Identifier>>,
    record: Option<&'a Node<ast::StructType>>,
    enumeration: Option<&'a Node<ast::EnumType>>,
    konst: bool,
    is_typedef: bool,
    is_static: bool,
    conv: Option<CallConv>,
    packed: bool,
    unsupported: Option<(&'static str, lang_c::span::Span)>,
}

impl<'a> Specs<'a> {
    fn type_spec(&mut self, t: &'a Node<ast::TypeSpecifier>) {
        use ast::TypeSpecifier as T;
        let w = match &t.node {
            T::Void => "void",
            T::Char => "char",
            T::Short => "short",
            T::Int => "int",
            T::Long => "long",
            T::Float => "float",
            T::Double => "double",
            T::Signed => "signed",
            T::Unsigned => "unsigned",
            T::Bool => "_Bool",
            T::Struct(s) => {
                self.record = Some(s);
                return;
            }
            T::Enum(e) => {
                self.enumeration = Some(e);
                return;
            }
            T::TypedefName(n) => {
                self.typedef_name = Some(n);
                return;
            }
            T::Complex => {
                self.unsupported = Some(("_Complex types are", t.span));
                return;
            }
            T::Atomic(_) => {
                self.unsupported = Some(("_Atomic types are", t.span));
                return;
            }
            T::TypeOf(_) => {
                self.unsupported = Some(("typeof is", t.span));
                return;
            }
            T::TS18661Float(_) => {
                self.unsupported = Some(("_FloatN types are", t.span));
                return;
            }
        };
        self.words.push((w, &t.span));
    }

    fn qualifier(&mut self, q: &ast::TypeQualifier) {
        if *q == ast::TypeQualifier::Const {
            self.konst = true;
        }
    }

    fn from_decl(list: &'a [Node<ast::DeclarationSpecifier>]) -> Self {
        use ast::DeclarationSpecifier as D;
        let mut s = Specs::default();
        for spec in list {
            match &spec.node {
                D::StorageClass(c) => match c.node {
                    ast::StorageClassSpecifier::Typedef => s.is_typedef = true,
                    ast::StorageClassSpecifier::Static => s.is_static = true,
                    _ => {}
                },
                D::TypeSpecifier(t) => s.type_spec(t),
                D::TypeQualifier(q) => s.qualifier(&q.node),
                D::Function(_) => {}
                D::Alignment(a) => s.unsupported = Some(("_Alignas is", a.span)),
                D::Extension(e) => {
                    s.conv = attr_conv(e).or(s.conv);
                    s.packed |= attr_packed(e);
                }
            }
        }
        s
    }

    fn from_field(list: &'a [Node<ast::SpecifierQualifier>]) -> Self {
        use ast::SpecifierQualifier as S;
        let mut s = Specs::default();
        for spec in list {
            match &spec.node {
                S::TypeSpecifier(t) => s.type_spec(t),
                S::TypeQualifier(q) => s.qualifier(&q.node),
                S::Extension(e) => s.packed |= attr_packed(e),
            }
        }
        s
    }
}

impl Semantics<'_, '_> {
    fn at(&self, span: &lang_c::span::Span, message: impl Into<String>) -> Fail {
        let (line, column) = self.map.line_col(span.start);
        fail(line, column, message)
    }

    fn line_of(&self, span: &lang_c::span::Span) -> usize {
        self.map.line_col(span.start).0
    }

    fn external(&mut self, ext: &Node<ast::ExternalDeclaration>) -> Result<(), Fail> {
        match &ext.node {
            ast::ExternalDeclaration::Declaration(d) => self.declaration(&d.node),
            ast::ExternalDeclaration::StaticAssert(_) => Ok(()),
            ast::ExternalDeclaration::FunctionDefinition(f) => {
                let specs = Specs::from_decl(&f.node.specifiers);
                let inline = f.node.specifiers.iter().any(|s| matches!(s.node, ast::DeclarationSpecifier::Function(_)));
                if specs.is_static || inline {
                    return Ok(()); // a header's inline helper: not exported, nothing to call
                }
                // A K&R definition is named as such.
                let base = self.base_type(&specs, f.node.specifiers.first().map(|s| s.span))?;
                self.declarator(&f.node.declarator.node, base, specs.conv)?;
                Err(self.at(&f.span, "a function definition (with a body): declare the function without its body"))
            }
        }
    }

    fn declaration(&mut self, decl: &ast::Declaration) -> Result<(), Fail> {
        let specs = Specs::from_decl(&decl.specifiers);
        let mut base = self.base_type(&specs, decl.specifiers.first().map(|s| s.span))?;
        // `typedef struct { ... } Name;`: the struct is called Name in messages.
        if let (true, Some(first)) = (specs.is_typedef, decl.declarators.first()) {
            if let (Some(name), Ty::C(CType::Struct(def) | CType::Union(def))) =
                (declarator_name(&first.node.declarator.node), &base.ty)
            {
                if def.name.is_empty() && first.node.declarator.node.derived.is_empty() {
                    let mut named = (**def).clone();
                    named.name = name;
                    let named = Arc::new(named);
                    base.ty = Ty::C(match &base.ty {
                        Ty::C(CType::Struct(_)) => CType::Struct(named),
                        _ => CType::Union(named),
                    });
                }
            }
        }
        for init in &decl.declarators {
            let d = &init.node.declarator;
            let (name, qt) = self.declarator(&d.node, base.clone(), specs.conv)?;
            let Some(name) = name else {
                return Err(self.at(&d.span, "a declaration without a name"));
            };
            if specs.is_typedef {
                if let Ok(t) = self.ctype(&qt, Use::Member, &d.span) {
                    self.d.public_types.insert(name.clone(), t);
                }
                self.d.typedefs.insert(name, qt);
            } else if let Ty::Func(f) = &qt.ty {
                if specs.is_static {
                    continue;
                }
                let line = self.line_of(&d.span);
                let (signature, param_names) = self.signature(f, &d.span)?;
                let proto = Prototype { name: name.clone(), signature, param_names, line };
                let i = match self.d.function_index.get(&name) {
                    Some(&i) => {
                        self.d.functions[i] = proto;
                        i
                    }
                    None => {
                        self.d.function_index.insert(name, self.d.functions.len());
                        self.d.functions.push(proto);
                        self.d.functions.len() - 1
                    }
                };
                self.d.last_declared = Some(i);
            }
            // Variables (`extern int vnd_errno;`) are not declared here: use Library::symbol.
        }
        Ok(())
    }

    /// The type the specifiers name (defining any struct, union or enum in them).
    fn base_type(&mut self, s: &Specs<'_>, first: Option<lang_c::span::Span>) -> Result<Qt, Fail> {
        if let Some((what, span)) = s.unsupported {
            return Err(self.at(&span, format!("{what} not supported")));
        }
        let ty = if let Some(r) = s.record {
            self.record(r, s.packed)?
        } else if let Some(e) = s.enumeration {
            self.enumeration(e)?
        } else if let Some(n) = s.typedef_name {
            let name = &n.node.name;
            let t = self.d.typedefs.get(name).cloned().or_else(|| builtin_typedef(name));
            let t = t.ok_or_else(|| self.at(&n.span, format!("unknown type name `{name}`")))?;
            if let Ty::Unusable(key) = &t.ty {
                return Err(self.unusable_at(&n.span, key));
            }
            return Ok(Qt { ty: t.ty, konst: t.konst || s.konst });
        } else {
            let words: Vec<&str> = s.words.iter().map(|w| w.0).collect();
            let span = s.words.first().map(|w| *w.1).or(first);
            Ty::C(scalar(&words).ok_or_else(|| {
                let msg = if words.is_empty() {
                    "a declaration without a type (K&R-style implicit int is not supported)".to_owned()
                } else {
                    format!("`{}` is not a C type", words.join(" "))
                };
                match span {
                    Some(sp) => self.at(&sp, msg),
                    None => fail(1, 1, msg),
                }
            })?)
        };
        Ok(Qt { ty, konst: s.konst })
    }

    fn record(&mut self, r: &Node<ast::StructType>, packed: bool) -> Result<Ty, Fail> {
        let kind = match r.node.kind.node {
            ast::StructKind::Struct => "struct",
            ast::StructKind::Union => "union",
        };
        let tag = r.node.identifier.as_ref().map(|i| i.node.name.clone());
        let key = tag.as_ref().map(|t| format!("{kind} {t}"));
        let Some(decls) = &r.node.declarations else {
            let Some(key) = key else {
                return Err(self.at(&r.span, format!("a {kind} needs a tag or a member list")));
            };
            return Ok(self.d.tags.get(&key).map(|q| q.ty.clone()).unwrap_or(Ty::Opaque(key)));
        };
        let mut fields = Vec::new();
        for d in decls {
            let ast::StructDeclaration::Field(f) = &d.node else { continue };
            let specs = Specs::from_field(&f.node.specifiers);
            let base = self.base_type(&specs, f.node.specifiers.first().map(|s| s.span))?;
            if f.node.declarators.is_empty() {
                // An anonymous struct or union member (C11).
                let t = self.ctype(&base, Use::Member, &f.span)?;
                fields.push(Field::new(String::new(), t));
            }
            for sd in &f.node.declarators {
                if let Some(w) = &sd.node.bit_width {
                    // A bit-field: `unsigned ready : 1;`, `int : 0;` (unnamed).
                    let (name, qt) = match &sd.node.declarator {
                        Some(d) => self.declarator(&d.node, base.clone(), None)?,
                        None => (None, base.clone()),
                    };
                    let t = self.ctype(&qt, Use::Member, &sd.span)?;
                    let member = name.clone().unwrap_or_else(|| "<unnamed>".into());
                    if !t.is_integer() {
                        return Err(self.at(
                            &sd.span,
                            format!("the bit-field `{member}` has type `{t}`; a bit-field must have an integer type"),
                        ));
                    }
                    let width = match self.eval(w)? {
                        Num::I(i, _) => u32::try_from(i).ok(),
                        Num::F(_) => None,
                    };
                    let width = width.ok_or_else(|| {
                        self.at(
                            &w.span,
                            format!("the width of the bit-field `{member}` must be a non-negative integer"),
                        )
                    })?;
                    if width == 0 && name.is_some() {
                        return Err(self.at(&sd.span, format!("the zero-width bit-field `{member}` must be unnamed")));
                    }
                    fields.push(Field::bit_field(name.unwrap_or_default(), t, width));
                    continue;
                }
                let Some(d) = &sd.node.declarator else { continue };
                let (name, qt) = self.declarator(&d.node, base.clone(), None)?;
                let t = self.ctype(&qt, Use::Member, &d.span)?;
                fields.push(Field::new(name.unwrap_or_default(), t));
            }
        }
        let pack = if packed { Some(1) } else { self.map.pack_at(self.line_of(&r.span)) };
        let def = Arc::new(StructDef { name: tag.as_deref().unwrap_or("").to_owned(), fields, pack });
        let t = if kind == "struct" { CType::Struct(def) } else { CType::Union(def) };
        if let Some(key) = key {
            self.d.public_types.insert(key.clone(), t.clone());
            self.d.tags.insert(key, Qt { ty: Ty::C(t.clone()), konst: false });
        }
        Ok(Ty::C(t))
    }

    fn enumeration(&mut self, e: &Node<ast::EnumType>) -> Result<Ty, Fail> {
        let mut next: i128 = 0;
        for en in &e.node.enumerators {
            if let Some(x) = &en.node.expression {
                next = match self.eval(x)? {
                    Num::I(i, _) => i,
                    Num::F(_) => return Err(self.at(&x.span, "an enum value must be an integer")),
                };
            }
            let c = Num::I(next, false).constant();
            self.d.set_constant(&en.node.identifier.node.name, c);
            next += 1;
        }
        if let Some(tag) = &e.node.identifier {
            self.d.public_types.insert(format!("enum {}", tag.node.name), CType::Int);
        }
        Ok(Ty::C(CType::Int))
    }

    /// Applies a declarator to its base type: pointers first, then arrays and functions (the leftmost
    /// outermost), then the nested declarator inside parentheses.
    fn declarator(
        &mut self,
        d: &ast::Declarator,
        base: Qt,
        outer_conv: Option<CallConv>,
    ) -> Result<(Option<String>, Qt), Fail> {
        // A calling convention written at this level, or inside `( ... *name)`, belongs to the
        // function type of this level.
        let mut conv = attr_conv(&d.extensions).or(outer_conv);
        if let ast::DeclaratorKind::Declarator(inner) = &d.kind.node {
            conv = attr_conv(&inner.node.extensions).or(conv);
            for dd in &inner.node.derived {
                if let ast::DerivedDeclarator::Pointer(q) = &dd.node {
                    conv = pointer_conv(q).or(conv);
                }
            }
        }
        let mut t = base;
        for dd in &d.derived {
            if let ast::DerivedDeclarator::Pointer(q) = &dd.node {
                conv = pointer_conv(q).or(conv);
                let konst = q.iter().any(|q| matches!(&q.node, ast::PointerQualifier::TypeQualifier(t) if t.node == ast::TypeQualifier::Const));
                t = Qt { ty: Ty::Ptr(Box::new(t)), konst };
            }
        }
        for dd in d.derived.iter().rev() {
            match &dd.node {
                ast::DerivedDeclarator::Pointer(_) => {}
                ast::DerivedDeclarator::Array(a) => {
                    let n = match &a.node.size {
                        ast::ArraySize::Unknown => None,
                        ast::ArraySize::VariableExpression(e) | ast::ArraySize::StaticExpression(e) => {
                            match self.eval(e)? {
                                Num::I(i, _) => Some(u32::try_from(i).map_err(|_| {
                                    self.at(&e.span, format!("the array size {i} is not between 0 and {}", u32::MAX))
                                })?),
                                Num::F(_) => return Err(self.at(&e.span, "an array size must be an integer")),
                            }
                        }
                        ast::ArraySize::VariableUnknown => {
                            return Err(self.at(&dd.span, "variable-length arrays are not supported"))
                        }
                    };
                    t = Qt { ty: Ty::Arr(Box::new(t), n), konst: false };
                }
                ast::DerivedDeclarator::Function(f) => {
                    let mut params = Vec::new();
                    for p in &f.node.parameters {
                        let specs = Specs::from_decl(&p.node.specifiers);
                        let pbase = self.base_type(&specs, p.node.specifiers.first().map(|s| s.span))?;
                        let (pname, pt) = match &p.node.declarator {
                            Some(pd) => self.declarator(&pd.node, pbase, specs.conv)?,
                            None => (None, pbase),
                        };
                        params.push((pname, pt));
                    }
                    // `f(void)` has no parameters.
                    if let [(None, Qt { ty: Ty::C(CType::Void), .. })] = params.as_slice() {
                        params.clear();
                    }
                    let variadic = f.node.ellipsis == ast::Ellipsis::Some;
                    let conv = conv.take().unwrap_or_default();
                    t = Qt { ty: Ty::Func(Box::new(FnTy { ret: t, params, variadic, conv })), konst: false };
                }
                ast::DerivedDeclarator::KRFunction(ids) => {
                    if !ids.is_empty() {
                        return Err(self.at(
                            &dd.span,
                            "a K&R-style parameter list (names without types): give each parameter its type",
                        ));
                    }
                    let conv = conv.take().unwrap_or_default();
                    t = Qt {
                        ty: Ty::Func(Box::new(FnTy { ret: t, params: Vec::new(), variadic: false, conv })),
                        konst: false,
                    };
                }
                ast::DerivedDeclarator::Block(_) => {
                    return Err(self.at(&dd.span, "blocks (`^`) are not supported"));
                }
            }
        }
        match &d.kind.node {
            ast::DeclaratorKind::Abstract => Ok((None, t)),
            ast::DeclaratorKind::Identifier(i) => Ok((Some(i.node.name.clone()), t)),
            ast::DeclaratorKind::Declarator(inner) => self.declarator(&inner.node, t, None),
        }
    }

    fn signature(&self, f: &FnTy, span: &lang_c::span::Span) -> Result<(Signature, Vec<String>), Fail> {
        let ret = match &f.ret.ty {
            Ty::C(CType::Void) => CType::Void,
            _ => self.ctype(&f.ret, Use::Return, span)?,
        };
        let mut sig = Signature::new(ret).conv(f.conv);
        let mut names = Vec::new();
        for (i, (name, qt)) in f.params.iter().enumerate() {
            let ty = self.ctype(qt, Use::Param, span)?;
            // A pointer to something writable is read back after the call; `const T *`, `void *`,
            // opaque handles, strings and function pointers only go in.
            let writable = match &qt.ty {
                Ty::Ptr(to) | Ty::Arr(to, _) => !to.konst && matches!(ty, CType::Pointer(ref p) if **p != CType::Void),
                _ => false,
            };
            sig = sig.param(ty, if writable { Direction::InOut } else { Direction::In });
            names.push(name.clone().unwrap_or_else(|| format!("arg{}", i + 1)));
        }
        if f.variadic {
            sig = sig.variadic();
        }
        Ok((sig, names))
    }

    /// Maps a C type onto the type model for a use.
    /// The failure of a use of `key`, whose own declaration failed.
    fn unusable_at(&self, span: &lang_c::span::Span, key: &str) -> Fail {
        match self.d.unusable.get(key) {
            Some(f) => self.at(span, format!("`{key}` cannot be used: {} (at {})", f.message, f.place())),
            None => self.at(span, format!("`{key}` cannot be used")),
        }
    }

    fn ctype(&self, qt: &Qt, u: Use, span: &lang_c::span::Span) -> Result<CType, Fail> {
        match &qt.ty {
            Ty::Unusable(key) => Err(self.unusable_at(span, key)),
            Ty::C(t) => Ok(t.clone()),
            Ty::Opaque(name) => Err(self.at(
                span,
                format!("`{name}` is declared but not defined here, so it can only be used behind a pointer"),
            )),
            Ty::Func(_) => Err(self.at(span, "a function type can only be used behind a pointer")),
            Ty::Arr(of, n) if u == Use::Param => self.pointer_to(of, u, span),
            Ty::Arr(of, n) => {
                let n =
                    n.ok_or_else(|| self.at(span, "an array without a size (flexible array member) is not supported"))?;
                Ok(CType::array(self.ctype(of, u, span)?, n))
            }
            Ty::Ptr(to) => self.pointer_to(to, u, span),
        }
    }

    fn pointer_to(&self, to: &Qt, u: Use, span: &lang_c::span::Span) -> Result<CType, Fail> {
        Ok(match &to.ty {
            // Strings: `const char *` always; a member `char *` too (ctypes' c_char_p).
            Ty::C(CType::Char) if to.konst || u == Use::Member => CType::CStr,
            Ty::C(CType::WChar) if to.konst || u == Use::Member => CType::WStr,
            Ty::C(CType::Void) | Ty::Opaque(_) => CType::void_ptr(),
            Ty::Func(f) => {
                let (sig, _) = self.signature(f, span)?;
                CType::fn_ptr(sig)
            }
            // Deeper levels: a `char **` points to `char *` buffers, not to strings.
            _ => CType::ptr(self.ctype(to, if u == Use::Member { Use::Member } else { Use::Return }, span)?),
        })
    }

    /// Evaluates a constant expression of the syntax tree (array sizes, enum values).
    fn eval(&self, e: &Node<ast::Expression>) -> Result<Num, Fail> {
        use ast::Expression as E;
        Ok(match &e.node {
            E::Constant(c) => match &c.node {
                ast::Constant::Integer(i) => {
                    let digits = &i.number;
                    let v = match i.base {
                        ast::IntegerBase::Decimal => digits.parse::<i128>().ok(),
                        ast::IntegerBase::Octal => i128::from_str_radix(digits, 8).ok(),
                        ast::IntegerBase::Hexadecimal => i128::from_str_radix(digits, 16).ok(),
                        ast::IntegerBase::Binary => i128::from_str_radix(digits, 2).ok(),
                    };
                    Num::I(v.ok_or_else(|| self.at(&e.span, "integer constant too large"))?, i.suffix.unsigned)
                }
                ast::Constant::Float(f) => {
                    let text = match f.base {
                        ast::FloatBase::Decimal => f.number.to_string(),
                        ast::FloatBase::Hexadecimal => {
                            return Err(self.at(&e.span, "hexadecimal floats are not supported"))
                        }
                    };
                    Num::F(text.parse().map_err(|_| self.at(&e.span, "not a number"))?)
                }
                ast::Constant::Character(c) => {
                    let body = unescape(c.trim_start_matches('L').trim_matches('\''));
                    Num::I(i128::from(body.chars().next().map_or(0, u32::from)), false)
                }
            },
            E::Identifier(id) => {
                let n = &id.node.name;
                match self.d.constants.get(n).and_then(Num::from_constant) {
                    Some(v) => v,
                    None => return Err(self.at(&e.span, format!("`{n}` is not a known numeric constant"))),
                }
            }
            E::UnaryOperator(u) => {
                let v = self.eval(&u.node.operand)?;
                let op = match u.node.operator.node {
                    ast::UnaryOperator::Minus => "-",
                    ast::UnaryOperator::Plus => "+",
                    ast::UnaryOperator::Complement => "~",
                    ast::UnaryOperator::Negate => "!",
                    _ => return Err(self.at(&e.span, "this operator is not allowed in a constant")),
                };
                match (op, v) {
                    ("-", Num::I(i, u)) => Num::I(-i, u),
                    ("-", Num::F(f)) => Num::F(-f),
                    ("~", Num::I(i, u)) => Num::I(!i, u),
                    ("!", v) => Num::I(i128::from(!v.truthy()), false),
                    ("+", v) => v,
                    _ => return Err(self.at(&e.span, "`~` of a floating-point number")),
                }
            }
            E::BinaryOperator(b) => {
                use ast::BinaryOperator as B;
                let op = match b.node.operator.node {
                    B::Multiply => "*",
                    B::Divide => "/",
                    B::Modulo => "%",
                    B::Plus => "+",
                    B::Minus => "-",
                    B::ShiftLeft => "<<",
                    B::ShiftRight => ">>",
                    B::Less => "<",
                    B::Greater => ">",
                    B::LessOrEqual => "<=",
                    B::GreaterOrEqual => ">=",
                    B::Equals => "==",
                    B::NotEquals => "!=",
                    B::BitwiseAnd => "&",
                    B::BitwiseXor => "^",
                    B::BitwiseOr => "|",
                    B::LogicalAnd => "&&",
                    B::LogicalOr => "||",
                    _ => return Err(self.at(&e.span, "this operator is not allowed in a constant")),
                };
                let (l, r) = (self.eval(&b.node.lhs)?, self.eval(&b.node.rhs)?);
                apply(op, l, r).map_err(|m| self.at(&e.span, m))?
            }
            E::Conditional(c) => {
                if self.eval(&c.node.condition)?.truthy() {
                    self.eval(&c.node.then_expression)?
                } else {
                    self.eval(&c.node.else_expression)?
                }
            }
            E::Cast(c) => self.eval(&c.node.expression)?,
            E::SizeOfTy(_) | E::SizeOfVal(_) | E::AlignOf(_) => {
                return Err(self.at(
                    &e.span,
                    "`sizeof` depends on the server's target and is not supported in declarations: write the number",
                ))
            }
            _ => return Err(self.at(&e.span, "not a constant expression bitbridge can evaluate")),
        })
    }
}

fn pointer_conv(q: &[Node<ast::PointerQualifier>]) -> Option<CallConv> {
    q.iter().find_map(|q| match &q.node {
        ast::PointerQualifier::Extension(e) => attr_conv(e),
        _ => None,
    })
}

/// The names an external declaration declares (functions, typedef names, a defined `struct tag`),
/// and which of them are typedef names.
fn declared_names(ext: &Node<ast::ExternalDeclaration>) -> (Vec<String>, Vec<String>) {
    let mut names = Vec::new();
    let mut typedefs = Vec::new();
    match &ext.node {
        ast::ExternalDeclaration::Declaration(d) => {
            let is_typedef = d.node.specifiers.iter().any(|s| {
                matches!(&s.node, ast::DeclarationSpecifier::StorageClass(c) if c.node == ast::StorageClassSpecifier::Typedef)
            });
            for s in &d.node.specifiers {
                if let ast::DeclarationSpecifier::TypeSpecifier(t) = &s.node {
                    if let ast::TypeSpecifier::Struct(r) = &t.node {
                        if let (Some(tag), Some(_)) = (&r.node.identifier, &r.node.declarations) {
                            let kind = match r.node.kind.node {
                                ast::StructKind::Struct => "struct",
                                ast::StructKind::Union => "union",
                            };
                            names.push(format!("{kind} {}", tag.node.name));
                        }
                    }
                }
            }
            for init in &d.node.declarators {
                if let Some(n) = declarator_name(&init.node.declarator.node) {
                    if is_typedef {
                        typedefs.push(n.clone());
                    }
                    names.push(n);
                }
            }
        }
        ast::ExternalDeclaration::FunctionDefinition(f) => names.extend(declarator_name(&f.node.declarator.node)),
        ast::ExternalDeclaration::StaticAssert(_) => {}
    }
    (names, typedefs)
}

fn declarator_name(d: &ast::Declarator) -> Option<String> {
    match &d.kind.node {
        ast::DeclaratorKind::Identifier(i) => Some(i.node.name.clone()),
        ast::DeclaratorKind::Declarator(inner) => declarator_name(&inner.node),
        ast::DeclaratorKind::Abstract => None,
    }
}

/// A fundamental type from its words, in any order (`unsigned long int`, `long unsigned`).
fn scalar(words: &[&str]) -> Option<CType> {
    use CType::*;
    let count = |w: &str| words.iter().filter(|x| **x == w).count();
    let (signed, unsigned) = (count("signed"), count("unsigned"));
    let (short, long, int, chr) = (count("short"), count("long"), count("int"), count("char"));
    if signed + unsigned > 1 {
        return None;
    }
    let others = words.len() - signed - unsigned - short - long - int - chr;
    if others > 0 {
        return match words {
            ["void"] => Some(Void),
            ["float"] => Some(Float),
            ["double"] => Some(Double),
            ["_Bool"] => Some(Bool),
            _ if others == 1 && count("double") == 1 && long == 1 && words.len() == 2 => Some(LongDouble),
            _ => None,
        };
    }
    let u = unsigned == 1;
    Some(match (chr, short, long, int) {
        (1, 0, 0, 0) if signed == 1 => SChar,
        (1, 0, 0, 0) if u => UChar,
        (1, 0, 0, 0) => Char,
        (0, 1, 0, 0 | 1) => {
            if u {
                UShort
            } else {
                Short
            }
        }
        (0, 0, 0, _) if int <= 1 && (int == 1 || signed + unsigned == 1) => {
            if u {
                UInt
            } else {
                Int
            }
        }
        (0, 0, 1, 0 | 1) => {
            if u {
                ULong
            } else {
                Long
            }
        }
        (0, 0, 2, 0 | 1) => {
            if u {
                ULongLong
            } else {
                LongLong
            }
        }
        _ => return None,
    })
}

/// `text` ending in `;` (a prototype typed on a command line usually has none).
fn with_semicolon(text: &str) -> String {
    let t = text.trim_end();
    if t.ends_with(';') || t.ends_with('}') {
        t.to_owned()
    } else {
        format!("{t};")
    }
}
