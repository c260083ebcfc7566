//! Failing cases found reviewing the typed layer (branch typed-review): a C array behind a pointer
//! (`In<[T; N]>`, `InOut<[T; N]>`), which the module documentation offers (`In<[f64; 3]>`).

use bitbridge::{In, InOut};
use bitbridge_tests::Backend;

/// `double sum(double f[], int n)` (fixtures/ctest.c) through `In<[f64; 3]>`: `[f64; 3]` is `double[3]`,
/// one value behind the pointer. Today: `Error::Argument` "argument 1 -> [0]: expected Value::Array for
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

/// `void inc_all(int *v, int n)` (fixtures/edge.c) through `InOut<[i32; 4]>`. Today: the same
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
/// "abcdefg". Today the call *succeeds with wrong data*: each row (a `Value::Bytes` of 4) is taken as a
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
