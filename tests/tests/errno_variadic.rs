//! `errno` read right after a call, and variadic functions, through the system's own libc (32- and
//! 64-bit).

use bitbridge::{CType, Error, Library, Signature, Value};
use bitbridge_tests::{no_server_left, Backend, BACKENDS};

fn libc(b: Backend) -> Library {
    bitbridge_tests::system_library("libc.so.6", b)
}

#[test]
fn strtol_on_bad_input_sets_errno() {
    let _check = no_server_left();
    for b in BACKENDS {
        let lib = libc(b);
        let strtol = lib
            .function(
                "strtol",
                Signature::new(CType::Long).arg(CType::CStr).arg(CType::void_ptr()).arg(CType::Int).errno(),
            )
            .unwrap();
        let r = strtol.call(&["99999999999999999999999".into(), Value::NULL, 10.into()]).unwrap();
        let long_max = if b.is_32() { i64::from(i32::MAX) } else { i64::MAX };
        assert_eq!(r.ret, Value::Int(long_max), "{b:?}");
        assert_eq!(r.errno, Some(34), "ERANGE, {b:?}");
        let r = strtol.call(&["-123".into(), Value::NULL, 10.into()]).unwrap();
        assert_eq!((r.ret, r.errno), (Value::Int(-123), Some(0)));
        // Without use_errno nothing is captured.
        let plain = lib
            .function("strtol", Signature::new(CType::Long).arg(CType::CStr).arg(CType::void_ptr()).arg(CType::Int))
            .unwrap();
        assert_eq!(plain.call(&["1".into(), Value::NULL, 10.into()]).unwrap().errno, None);
    }
}

#[test]
fn snprintf_with_mixed_variadic_arguments() {
    let _check = no_server_left();
    for b in BACKENDS {
        let lib = libc(b);
        let sig =
            Signature::new(CType::Int).arg_out(CType::ptr(CType::Char)).arg(CType::SizeT).arg(CType::CStr).variadic();
        let snprintf = lib.function("snprintf", sig).unwrap();
        let fixed = [Value::Zeros(64), 64.into(), "%d %.2f %s %lld %c|%5.1f".into()];
        let extra = [
            (CType::Int, Value::Int(-42)),
            (CType::Double, Value::Float(2.5)),
            (CType::CStr, Value::from("str")),
            (CType::LongLong, Value::Int(123_456_789_012)),
            (CType::Int, Value::Int(i64::from(b'x'))),
            (CType::Double, Value::Float(9.25)),
        ];
        let r = snprintf.call_variadic(&fixed, &extra).unwrap();
        let want = "-42 2.50 str 123456789012 x|  9.2";
        assert_eq!(r.out(0).and_then(Value::as_str), Some(want), "{b:?}");
        assert_eq!(r.ret, Value::Int(want.len() as i64));
        // Another set of variadic types for the same function.
        let r = snprintf
            .call_variadic(&[Value::Zeros(16), 16.into(), "<%s>".into()], &[(CType::CStr, "ok".into())])
            .unwrap();
        assert_eq!(r.out(0).and_then(Value::as_str), Some("<ok>"));

        // C's default argument promotions: a float is passed as a double, so declaring it float is refused.
        let e = snprintf.call_variadic(&fixed, &[(CType::Float, 1.0.into())]).unwrap_err();
        assert!(matches!(&e, Error::Signature { message, .. } if message.contains("as `double`")), "{e}");
        let e = snprintf.call_variadic(&fixed, &[(CType::Char, 1.into())]).unwrap_err();
        assert!(matches!(&e, Error::Signature { message, .. } if message.contains("as `int`")), "{e}");
        // Variadic arguments for a function not declared variadic.
        let strlen = lib.function("strlen", Signature::new(CType::SizeT).arg(CType::CStr)).unwrap();
        assert!(matches!(strlen.call_variadic(&["a".into()], &[(CType::Int, 1.into())]), Err(Error::Signature { .. })));
    }
}
