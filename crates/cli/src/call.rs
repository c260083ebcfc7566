//! `bitbridge call LIB PROTOTYPE ARG...`: one function through the right server, arguments written as
//! C-like literals, the return value and what the function wrote printed after the call.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use bitbridge::{
    Arch, CType, CallConv, Declarations, Direction, Error, LibraryOptions, Prototype, ServerOptions, Value,
};

use crate::literal::{self, Converter, Lit};

/// What failed, with the exit code it maps to (see `EXIT_CODES` in main.rs).
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

fn usage(error: impl Into<anyhow::Error>) -> Failure {
    Failure { code: 2, error: error.into() }
}

/// The options of `bitbridge call`.
#[derive(Debug)]
pub struct CallArgs {
    pub library: PathBuf,
    pub prototype: String,
    pub args: Vec<String>,
    pub headers: Vec<PathBuf>,
    pub defines: Vec<String>,
    pub json: bool,
    pub library_dirs: Vec<PathBuf>,
    pub server: Option<PathBuf>,
    pub timeout: Option<f64>,
    pub arch: Option<Arch>,
}

pub fn run(a: CallArgs) -> Result<(), Failure> {
    let mut decls = Declarations::new();
    for d in &a.defines {
        let (name, value) = d.split_once('=').unwrap_or((d, "1"));
        decls.define(name, value).map_err(|e| usage(anyhow!(e).context(format!("--define {d}"))))?;
    }
    for h in &a.headers {
        decls.add_file(h).map_err(usage)?;
    }
    let proto = prototype(&mut decls, &a.prototype)?;
    let sig = &proto.signature;
    let fixed = sig.params.len();
    if a.args.len() < fixed || (!sig.variadic && a.args.len() > fixed) {
        return Err(usage(anyhow!(
            "`{}` takes {}{} argument{} ({}), {} {} given",
            proto.name,
            if sig.variadic { "at least " } else { "" },
            fixed,
            if fixed == 1 { "" } else { "s" },
            params_text(&proto),
            a.args.len(),
            if a.args.len() == 1 { "was" } else { "were" }
        )));
    }
    let lits = a
        .args
        .iter()
        .enumerate()
        .map(|(i, text)| {
            literal::parse(text).map_err(|e| usage(anyhow!("{}: cannot read `{text}`: {e}", arg_name(&proto, i))))
        })
        .collect::<Result<Vec<Lit>, Failure>>()?;

    let mut opts = ServerOptions::new();
    for d in &a.library_dirs {
        opts = opts.library_dir(d);
    }
    if let Some(s) = &a.server {
        opts = opts.server_path(s);
    }
    if let Some(t) = a.timeout {
        let t = Duration::try_from_secs_f64(t).map_err(|e| usage(anyhow!("--timeout {t}: {e}")))?;
        opts = opts.call_timeout(t);
    }
    let mut lib = LibraryOptions::new(&a.library).server(opts);
    if let Some(arch) = a.arch {
        lib = lib.arch(arch);
    }
    let lib = lib
        .open()
        .with_context(|| format!("loading {}", a.library.display()))
        .map_err(|e| Failure { code: load_code(&e), error: e })?;
    let target = lib.server().target();

    // errno is captured for --json; stdcall and friends mean nothing on x86_64 (as compilers do).
    let mut call_sig = sig.clone().errno();
    if target.arch != Arch::X86 {
        call_sig.conv = CallConv::Cdecl;
    }
    let function = lib.function(&proto.name, call_sig).map_err(|e| {
        let code = match e {
            Error::SymbolNotFound { .. } => 1,
            _ => 2,
        };
        Failure { code, error: anyhow!(e) }
    })?;

    let conv = Converter { target, decls: &decls };
    let mut values = Vec::with_capacity(fixed);
    for (i, (lit, p)) in lits.iter().zip(&sig.params).enumerate() {
        let v = conv.param(lit, &p.ty).map_err(|e| usage(anyhow!("{}: {e}", arg_name(&proto, i))))?;
        values.push(v);
    }
    let mut variadic = Vec::new();
    for (i, lit) in lits.iter().enumerate().skip(fixed) {
        variadic.push(conv.variadic(lit).map_err(|e| usage(anyhow!("argument {} (variadic): {e}", i + 1)))?);
    }
    let outcome = if sig.variadic { function.call_variadic(&values, &variadic) } else { function.call(&values) };
    let outcome = outcome.map_err(|e| {
        let code = match e {
            Error::Argument { .. } => 2,
            _ => 4,
        };
        Failure { code, error: anyhow!(e).context(format!("calling {}", proto.name)) }
    })?;

    if a.json {
        let mut out = serde_json::Map::new();
        for (i, p) in sig.params.iter().enumerate() {
            if let (Direction::Out | Direction::InOut, Some(v)) = (p.dir, outcome.out(i)) {
                out.insert(proto.param_names[i].clone(), json(single(v, &lits[i]), &p.ty));
            }
        }
        let doc = serde_json::json!({
            "function": proto.name,
            "return": json(&outcome.ret, &sig.ret),
            "out": out,
            "errno": outcome.errno,
        });
        println!("{doc}");
        return Ok(());
    }
    if sig.ret != CType::Void {
        println!("{}", c_text(&outcome.ret, &sig.ret));
    }
    for (i, p) in sig.params.iter().enumerate() {
        let Some(after) = outcome.out(i) else { continue };
        // What the function may have written, when it differs from what went in.
        let text = c_text(single(after, &lits[i]), &p.ty);
        let before = values.get(i).map(|v| c_text(single(v, &lits[i]), &p.ty));
        if p.dir == Direction::Out || before.as_ref() != Some(&text) {
            println!("{} = {text}", proto.param_names[i]);
        }
    }
    Ok(())
}

/// A value read back as it was given: one element when the literal was a single value (a pointer to
/// one handle travels as an array of one).
fn single<'v>(v: &'v Value, lit: &Lit) -> &'v Value {
    match (v, lit) {
        (Value::Array(items), lit) if items.len() == 1 && !matches!(lit, Lit::Array(_) | Lit::Repeat(..)) => &items[0],
        _ => v,
    }
}

/// The prototype given, or the function of that name from the headers.
fn prototype(decls: &mut Declarations, text: &str) -> Result<Prototype, Failure> {
    let t = text.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return decls.prototype(t).cloned().ok_or_else(|| {
            let names: Vec<&str> = decls.functions().map(|p| p.name.as_str()).take(12).collect();
            usage(anyhow!(
                "`{t}` is not declared{}: give its prototype, such as 'int {t}(int x)', or the --header declaring it",
                if names.is_empty() { String::new() } else { format!(" (the headers declare {})", names.join(", ")) }
            ))
        });
    }
    decls.add_prototype(t).map_err(usage)
}

fn params_text(p: &Prototype) -> String {
    let mut s: Vec<String> =
        p.signature.params.iter().zip(&p.param_names).map(|(q, n)| format!("{n}: {}", q.ty)).collect();
    if p.signature.variadic {
        s.push("...".into());
    }
    if s.is_empty() {
        "none".into()
    } else {
        s.join(", ")
    }
}

fn arg_name(p: &Prototype, i: usize) -> String {
    match (p.param_names.get(i), p.signature.params.get(i)) {
        (Some(n), Some(q)) => format!("argument {} ({n}: {})", i + 1, q.ty),
        _ => format!("argument {} (variadic)", i + 1),
    }
}

/// The exit code of a failure to open a library: 1 when the loader or the library refused it, 3 when it
/// is not a library this machine can host (the codes `--help` documents).
pub(crate) fn load_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<Error>() {
        Some(
            Error::Load { .. }
            | Error::LoadTimeout { .. }
            | Error::DuplicateSystemLibrary { .. }
            | Error::ServerDied { .. },
        ) => 1,
        _ => 3,
    }
}

/// A value in C-like syntax (structs as `{x = 1, y = 2}`, addresses as `@0x...`, the literal syntax).
pub fn c_text(v: &Value, ty: &CType) -> String {
    let mut s = String::new();
    write_c(&mut s, v, ty);
    s
}

fn elem(ty: &CType) -> &CType {
    match ty {
        CType::Pointer(to) | CType::Array(to, _) => to,
        CType::CStr => &CType::Char,
        CType::WStr => &CType::WChar,
        other => other,
    }
}

fn write_c(s: &mut String, v: &Value, ty: &CType) {
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
        Value::LongDouble(x) => write_float(s, x.to_f64(), false),
        Value::Pointer(0) => s.push_str("null"),
        Value::Pointer(p) => write!(s, "@{p:#x}").unwrap(),
        Value::Str(t) => write_str(s, t),
        Value::Bytes(b) => {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            match std::str::from_utf8(&b[..end]) {
                Ok(t) => write_str(s, t),
                Err(_) => {
                    let items: Vec<String> = b.iter().map(u8::to_string).collect();
                    write!(s, "[{}]", items.join(", ")).unwrap()
                }
            }
        }
        Value::Array(items) => {
            let of = elem(ty);
            s.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                write_c(s, x, of);
            }
            s.push(']');
        }
        Value::Struct(members) | Value::Union(members) => {
            let def = match elem(ty) {
                CType::Struct(d) | CType::Union(d) => Some(d.clone()),
                _ => None,
            };
            s.push('{');
            for (i, x) in members.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                match def.as_ref().and_then(|d| d.fields.get(i)) {
                    Some(f) if !f.name.is_empty() => {
                        write!(s, "{} = ", f.name).unwrap();
                        write_c(s, x, &f.ty);
                    }
                    Some(f) => write_c(s, x, &f.ty),
                    None => write_c(s, x, &CType::Void),
                }
            }
            s.push('}');
        }
        other => write!(s, "{other:?}").unwrap(),
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

fn write_str(s: &mut String, t: &str) {
    s.push('"');
    for c in t.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            '\r' => s.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => write!(s, "\\x{:02x}", c as u32).unwrap(),
            c => s.push(c),
        }
    }
    s.push('"');
}

/// A value as JSON: numbers, strings, arrays, objects keyed by member name; NULL is `null`, other
/// addresses are numbers.
pub fn json(v: &Value, ty: &CType) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Void => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::UInt(u) => J::from(*u),
        Value::Float(f) => json_float(if *elem(ty) == CType::Float { f64::from(*f as f32) } else { *f }),
        Value::LongDouble(x) => json_float(x.to_f64()),
        Value::Pointer(0) => J::Null,
        Value::Pointer(p) => J::from(*p),
        Value::Str(t) => J::from(t.as_str()),
        Value::Bytes(b) => {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            match std::str::from_utf8(&b[..end]) {
                Ok(t) => J::from(t),
                Err(_) => J::from(b.clone()),
            }
        }
        Value::Array(items) => J::Array(items.iter().map(|x| json(x, elem(ty))).collect()),
        Value::Struct(members) | Value::Union(members) => {
            let def = match elem(ty) {
                CType::Struct(d) | CType::Union(d) => Some(d.clone()),
                _ => None,
            };
            let mut m = serde_json::Map::new();
            for (i, x) in members.iter().enumerate() {
                let f = def.as_ref().and_then(|d| d.fields.get(i));
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
