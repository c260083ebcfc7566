//! What a hostile review of the typed layer found, each now fixed: a C array behind a pointer
//! (`In<[T; N]>`, `InOut<[T; N]>`, which the module documentation offers), the derive under a renamed
//! crate path and beside lowercase constants, and `String` results that cannot be strings.

use bitbridge::{In, InOut};
use bitbridge_tests::Backend;

/// `double sum(double f[], int n)` (fixtures/ctest.c) through `In<[f64; 3]>`: `[f64; 3]` is `double[3]`,
/// one value behind the pointer. It was `Error::Argument` "argument 1 -> [0]: expected Value::Array for
/// `double[3]`, got a float" (the array's value is read as an array *of* `double[3]` elements).
#[test]
fn an_array_behind_an_in_pointer() {
    let _check = bitbridge_tests::no_server_left();
    for b in [Backend::Server32, Backend::Server64] {
        let lib = b.open("ctest");
        let sum = lib.typed::<(In<[f64; 3]>, i32), f64>("sum").unwrap();
        assert_eq!(sum.call((&[1.0, 2.0, 3.5], 3)).unwrap(), 6.5, "{b:?}");
    }
}

/// `void inc_all(int *v, int n)` (fixtures/edge.c) through `InOut<[i32; 4]>`. It was the same
/// `Error::Argument` as above, before the call.
#[test]
fn an_array_behind_an_inout_pointer() {
    let _check = bitbridge_tests::no_server_left();
    for b in [Backend::Server32, Backend::Server64] {
        let lib = b.open("edge");
        let inc_all = lib.typed::<(InOut<[i32; 4]>, i32), ()>("inc_all").unwrap();
        let mut v = [1, 2, 3, 40];
        inc_all.call((&mut v, 3)).unwrap();
        assert_eq!(v, [2, 3, 4, 40], "{b:?}");
    }
}

/// `size_t str_len(const char *s)` (fixtures/edge.c) given `char[2][4]` through `In<[[u8; 4]; 2]>`:
/// "abcdefg". The call *succeeded with wrong data*: each row (a `Value::Bytes` of 4) is taken as a
/// whole `uint8_t[2][4]` element padded with zeros, so the library sees "abcd\0\0\0\0efg..." and returns 4.
#[test]
fn nested_byte_arrays_behind_a_pointer_send_every_row() {
    let _check = bitbridge_tests::no_server_left();
    for b in [Backend::Server32, Backend::Server64] {
        let lib = b.open("edge");
        let len = lib.typed::<(In<[[u8; 4]; 2]>,), usize>("str_len").unwrap();
        let text: [[u8; 4]; 2] = [*b"abcd", *b"efg\0"];
        assert_eq!(len.call((&text,)).unwrap(), 7, "{b:?}");
    }
}

/// The derive names the crate it was told to (`#[cstruct(crate = "...")]`: a renamed dependency or a
/// re-export), and its expansion does not collide with a lowercase constant in scope (`members`,
/// `value`), both found reviewing the derive.
mod renamed {
    #[allow(non_upper_case_globals, dead_code)]
    const members: u8 = 0;
    #[allow(non_upper_case_globals, dead_code)]
    const value: u8 = 0;

    /// bitbridge under another name, as `bb = { package = "bitbridge" }` would make it.
    pub mod bb {
        pub use bitbridge::*;
    }

    #[derive(bitbridge::CStruct, Clone, Copy, Debug, PartialEq)]
    #[cstruct(crate = "crate::renamed::bb")]
    #[repr(C)]
    pub struct Complex {
        pub re: f64,
        pub im: f64,
    }
}

/// `struct Complex add(struct Complex, struct Complex)` (fixtures/ctest.c) through the struct derived
/// with a crate path of its own.
#[test]
fn a_struct_derived_with_a_renamed_crate_path_calls() {
    let _check = bitbridge_tests::no_server_left();
    let lib = Backend::Server32.open("ctest");
    let add = lib.typed::<(renamed::Complex, renamed::Complex), renamed::Complex>("add").unwrap();
    let z = |re, im| renamed::Complex { re, im };
    assert_eq!(add.call((z(1.0, 2.0), z(3.0, 4.0))).unwrap(), z(4.0, 6.0));
}

/// A `char *` result that is NULL, or not UTF-8, read as `String`: the error says which type takes it.
#[test]
fn a_string_result_that_cannot_be_a_string_says_what_to_declare() {
    use bitbridge::Value;
    let v = <String as bitbridge::CValue>::from_value(Value::NULL).unwrap_err();
    assert!(v.to_string().contains("Option<String>"), "{v}");
    let v = <String as bitbridge::CValue>::from_value(Value::Bytes(vec![b'a', 0xff])).unwrap_err();
    assert!(v.to_string().contains("CString"), "{v}");
}
