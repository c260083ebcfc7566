//! `#[derive(CStruct)]`: a `#[repr(C)]` Rust struct as the description of a C struct.
//!
//! Use it through `bitbridge` (`bitbridge::CStruct`, the default `derive` feature): the code it writes
//! names `::bitbridge`, or the path given with `#[cstruct(crate = "path")]` when the dependency is
//! renamed or re-exported. See the package README for what is accepted and refused.
#![deny(missing_docs)]

use proc_macro2::{Literal, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Error, Fields, Type};

/// Implements `bitbridge::CValue` for a `#[repr(C)]` struct with named members.
///
/// `ctype()` is `CType::struct_of(name, members, pack)`: the *description* of the struct, laid out by
/// the server's target (i386 puts a `double` after a `char` at offset 4, x86_64 at 8), never by the
/// Rust compiler. `#[repr(C, packed)]` is pack 1, `#[repr(C, packed(N))]` pack N. Values convert to and
/// from `Value::Struct`, member by member in declaration order. `#[cstruct(crate = "path")]` names the
/// `bitbridge` crate when it is not `::bitbridge` (a renamed dependency, a re-export), as serde's
/// `#[serde(crate = "...")]` does.
#[proc_macro_derive(CStruct, attributes(cstruct))]
pub fn derive_cstruct(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    let input = syn::parse_macro_input!(input as DeriveInput);
    expand(&input).unwrap_or_else(Error::into_compile_error).into()
}

/// The path of the `bitbridge` crate: `#[cstruct(crate = "path")]`, else `::bitbridge`.
fn crate_path(input: &DeriveInput) -> syn::Result<syn::Path> {
    let mut path: syn::Path = syn::parse_quote!(::bitbridge);
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("cstruct")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                let s: syn::LitStr = meta.value()?.parse()?;
                path = s.parse()?;
                Ok(())
            } else {
                Err(meta.error("#[cstruct(...)] takes only `crate = \"path\"`"))
            }
        })?;
    }
    Ok(path)
}

/// The `#[repr(...)]` of the struct: whether it has `C`, and its pack.
fn repr(input: &DeriveInput) -> syn::Result<Option<u32>> {
    let mut c = false;
    let mut pack = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("repr")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("C") {
                c = true;
            } else if meta.path.is_ident("packed") {
                pack = Some(if meta.input.peek(syn::token::Paren) {
                    let content;
                    syn::parenthesized!(content in meta.input);
                    let n: syn::LitInt = content.parse()?;
                    let n: u32 = n.base10_parse()?;
                    if !n.is_power_of_two() {
                        return Err(meta.error("#[repr(packed(N))] needs a power of two"));
                    }
                    n
                } else {
                    1
                });
            } else if meta.path.is_ident("align") {
                return Err(meta.error(
                    "#[derive(CStruct)] does not support #[repr(align(N))]: a C type description has no \
                     alignment attribute (declare the struct with CType::struct_of by hand)",
                ));
            } else if meta.path.is_ident("transparent") {
                return Err(meta.error("#[derive(CStruct)] needs #[repr(C)], not #[repr(transparent)]"));
            } else {
                return Err(meta.error(
                    "#[derive(CStruct)] supports #[repr(C)], #[repr(C, packed)] and #[repr(C, packed(N))] only",
                ));
            }
            Ok(())
        })?;
    }
    if !c {
        return Err(Error::new(
            input.ident.span(),
            "#[derive(CStruct)] needs #[repr(C)]: the struct mirrors a C declaration, members in C's order",
        ));
    }
    Ok(pack)
}

/// Refuses member types that cannot describe C memory in the server.
fn check_member_type(ty: &Type) -> syn::Result<()> {
    let refuse = |what: &str| Err(Error::new(ty.span(), format!("#[derive(CStruct)]: {what}")));
    match ty {
        Type::Path(_) => Ok(()),
        Type::Array(a) => check_member_type(&a.elem),
        Type::Paren(p) => check_member_type(&p.elem),
        Type::Group(g) => check_member_type(&g.elem),
        Type::Reference(_) => refuse(
            "a reference cannot be a member: the struct is copied into another process (use \
             bitbridge::Addr for an address in the server's memory)",
        ),
        Type::Ptr(_) => refuse(
            "a raw pointer cannot be a member: it would be an address in this process, not the server's \
             (use bitbridge::Addr for an address in the server's memory)",
        ),
        Type::Slice(_) => refuse("a slice cannot be a member: C arrays have a size (use [T; N])"),
        Type::Tuple(_) => {
            refuse("a tuple cannot be a member: C has no tuples (use a nested #[derive(CStruct)] struct)")
        }
        Type::BareFn(_) => refuse("a function pointer cannot be a member of a derived struct"),
        _ => refuse("this member type has no C equivalent"),
    }
}

fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let name = &input.ident;
    let data = match &input.data {
        Data::Struct(s) => s,
        Data::Enum(e) => {
            return Err(Error::new(
                e.enum_token.span,
                "#[derive(CStruct)] is for structs: a C enum is an integer (use i32 or the enum's integer type)",
            ))
        }
        Data::Union(u) => {
            return Err(Error::new(
                u.union_token.span,
                "#[derive(CStruct)] is for structs, not unions (describe a union with CType::union)",
            ))
        }
    };
    if !input.generics.params.is_empty() {
        return Err(Error::new(
            input.generics.span(),
            "#[derive(CStruct)] does not support generic structs: a C struct has one layout per target",
        ));
    }
    let fields = match &data.fields {
        Fields::Named(f) if !f.named.is_empty() => &f.named,
        Fields::Named(f) => {
            return Err(Error::new(f.span(), "#[derive(CStruct)]: a struct without members has no C equivalent"))
        }
        Fields::Unnamed(f) => {
            return Err(Error::new(
                f.span(),
                "#[derive(CStruct)] needs named members (struct S { x: i32 }): tuple structs are not supported",
            ))
        }
        Fields::Unit => {
            return Err(Error::new(name.span(), "#[derive(CStruct)]: a unit struct has no members, so no C equivalent"))
        }
    };
    let pack = repr(input)?;
    let mut errors: Option<Error> = None;
    for f in fields {
        if let Err(e) = check_member_type(&f.ty) {
            match &mut errors {
                Some(all) => all.combine(e),
                None => errors = Some(e),
            }
        }
    }
    if let Some(e) = errors {
        return Err(e);
    }

    let bb = crate_path(input)?;
    let tag = name.unraw().to_string();
    let count = Literal::usize_unsuffixed(fields.len());
    let idents: Vec<_> = fields.iter().filter_map(|f| f.ident.clone()).collect();
    let names: Vec<String> = idents.iter().map(|i| i.unraw().to_string()).collect();
    let types: Vec<&Type> = fields.iter().map(|f| &f.ty).collect();
    let pack = match pack {
        Some(n) => quote!(::core::option::Option::Some(#n)),
        None => quote!(::core::option::Option::None),
    };
    // Each member's conversion carries its type's span, so a member type without a CValue impl is
    // reported at the member.
    let ctypes = types
        .iter()
        .zip(&names)
        .map(|(ty, n)| quote_spanned!(ty.span()=> #bb::Field::new(#n, <#ty as #bb::CValue>::ctype())));
    let intos =
        idents.iter().zip(&types).map(|(i, ty)| quote_spanned!(ty.span()=> <#ty as #bb::CValue>::into_value(self.#i)));
    let froms = idents.iter().zip(&types).zip(&names).map(|((i, ty), n)| {
        let place = format!("member `{n}` of struct {tag}");
        quote_spanned!(ty.span()=>
            #i: <#ty as #bb::CValue>::from_value(
                __bitbridge_members.next().unwrap_or(#bb::Value::Void),
            ).map_err(|__bitbridge_e| __bitbridge_e.within(#place))?
        )
    });
    let expected = format!("struct {tag} ({} members)", fields.len());
    let span = Span::call_site();
    Ok(quote_spanned! {span=>
        impl #bb::CValue for #name {
            fn ctype() -> #bb::CType {
                #bb::CType::struct_of(#tag, ::std::vec![#(#ctypes),*], #pack)
            }

            fn into_value(self) -> #bb::Value {
                #bb::Value::Struct(::std::vec![#(#intos),*])
            }

            fn from_value(__bitbridge_value: #bb::Value) -> ::core::result::Result<Self, #bb::ValueTypeError> {
                match __bitbridge_value {
                    #bb::Value::Struct(__bitbridge_members) if __bitbridge_members.len() == #count => {
                        let mut __bitbridge_members = __bitbridge_members.into_iter();
                        ::core::result::Result::Ok(#name { #(#froms),* })
                    }
                    __bitbridge_other => ::core::result::Result::Err(#bb::ValueTypeError::new(#expected, &__bitbridge_other)),
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(src: &str) -> String {
        let input: DeriveInput = syn::parse_str(src).expect("valid Rust");
        expand(&input).expect_err("refused").to_string()
    }

    fn code_of(src: &str) -> String {
        let input: DeriveInput = syn::parse_str(src).expect("valid Rust");
        expand(&input).expect("accepted").to_string()
    }

    #[test]
    fn refuses_each_unsupported_shape_naming_it() {
        let cases = [
            ("#[repr(C)] enum E { A, B }", "for structs: a C enum is an integer"),
            ("#[repr(C)] union U { a: i32, b: f32 }", "not unions"),
            ("#[repr(C)] struct T(i32, f64);", "tuple structs are not supported"),
            ("#[repr(C)] struct U;", "unit struct"),
            ("#[repr(C)] struct E {}", "without members"),
            ("#[repr(C)] struct G<T> { x: T }", "generic structs"),
            ("#[repr(C)] struct R<'a> { x: &'a i32 }", "generic structs"),
            ("#[repr(C)] struct R { x: &'static i32 }", "a reference cannot be a member"),
            ("#[repr(C)] struct P { x: *const u8 }", "a raw pointer cannot be a member"),
            ("#[repr(C)] struct P { x: [&'static str; 2] }", "a reference cannot be a member"),
            ("#[repr(C)] struct P { x: (i32, i32) }", "C has no tuples"),
            ("struct N { x: i32 }", "needs #[repr(C)]"),
            ("#[repr(packed)] struct N { x: i32 }", "needs #[repr(C)]"),
            ("#[repr(C, align(8))] struct A { x: i32 }", "repr(align(N))"),
            ("#[repr(transparent)] struct A { x: i32 }", "not #[repr(transparent)]"),
            ("#[repr(C, packed(3))] struct A { x: i32 }", "power of two"),
            ("#[repr(u8)] struct A { x: i32 }", "supports #[repr(C)]"),
        ];
        for (src, want) in cases {
            let e = error_of(src);
            assert!(e.contains(want), "{src}: {e}");
        }
    }

    #[test]
    fn describes_members_in_order_with_the_pack() {
        let code = code_of("#[repr(C)] struct Reading { tag: i8, value: f64, id: [u8; 16] }");
        assert!(code.contains("struct_of (\"Reading\""), "{code}");
        let (tag, value, id) =
            (code.find("\"tag\"").unwrap(), code.find("\"value\"").unwrap(), code.find("\"id\"").unwrap());
        assert!(tag < value && value < id, "{code}");
        assert!(code.contains(":: core :: option :: Option :: None"), "{code}");
        let packed = code_of("#[repr(C, packed)] struct P { c: u8, i: i32 }");
        assert!(packed.contains("Option :: Some (1u32)"), "{packed}");
        let packed2 = code_of("#[repr(C, packed(2))] struct P { c: u8, i: i32 }");
        assert!(packed2.contains("Option :: Some (2u32)"), "{packed2}");
        let raw = code_of("#[repr(C)] struct r#Raw { r#type: i32 }");
        assert!(raw.contains("\"Raw\"") && raw.contains("\"type\""), "{raw}");
    }
}
