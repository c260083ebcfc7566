//! `bitbridge call LIB PROTOTYPE ARG...`: one function through the right server, arguments written as
//! C-like literals, the return value and what the function wrote printed after the call.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use bitbridge::{
    Arch, CType, CallConv, Declarations, Direction, Error, LibraryOptions, Prototype, ServerOptions, Value,
};

use crate::literal::{self, Converter, Lit};
use crate::show::{self, c_text, json, Mode};

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
                let (v, ty) = single(v, &lits[i], &p.ty);
                out.insert(proto.param_names[i].clone(), json(v, ty));
            }
        }
        let doc = serde_json::json!({
            "function": proto.name,
            "return": json(&outcome.ret, &sig.ret),
            "out": out,
            "errno": outcome.errno,
        });
        crate::out!("{doc}");
        return Ok(());
    }
    if sig.ret != CType::Void {
        crate::out!("{}", c_text(&outcome.ret, &sig.ret, Mode::Summary));
    }
    for (i, p) in sig.params.iter().enumerate() {
        let Some(after) = outcome.out(i) else { continue };
        // What the function wrote: only an argument the call changed is printed.
        let (after, ty) = single(after, &lits[i], &p.ty);
        let changed = match values.get(i) {
            Some(before) => !show::unchanged(single(before, &lits[i], &p.ty).0, after, ty),
            None => true,
        };
        if changed {
            crate::out!("{} = {}", proto.param_names[i], c_text(after, ty, Mode::Summary));
        }
    }
    Ok(())
}

/// A value read back as it was given: one element when the literal was a single value (a pointer to
/// one handle travels as an array of one).
/// Returns the value to print and its type (the pointee's, for an unwrapped element).
fn single<'v, 't>(v: &'v Value, lit: &Lit, ty: &'t CType) -> (&'v Value, &'t CType) {
    match (v, lit, ty) {
        (Value::Array(items), lit, CType::Pointer(to))
            if items.len() == 1 && !matches!(lit, Lit::Array(_) | Lit::Repeat(..)) =>
        {
            (&items[0], to)
        }
        _ => (v, ty),
    }
}

/// The prototype given, or the function of that name from the headers.
fn prototype(decls: &mut Declarations, text: &str) -> Result<Prototype, Failure> {
    let t = text.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        if decls.prototype(t).is_none() {
            if let Some(e) = decls.unusable(t) {
                return Err(usage(e));
            }
        }
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
