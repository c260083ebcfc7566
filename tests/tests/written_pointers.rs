//! Pointers the library writes are followed back through the API (issue 15, kind 2), on every
//! backend, with `fixtures/lossless_caller.c` (built `-m32`/`-m64`) as the expected values: after the
//! call, what a replaced pointer points to is read in the server when its type says how much (a string,
//! one struct), or the new address is given; never the old data.

use std::collections::HashMap;
use std::process::Command;

use bitbridge::{CType, Signature, Value};
use bitbridge_tests::{program, Bits, BACKENDS};

fn truth(bits: Bits) -> HashMap<String, String> {
    let out = Command::new(program("lossless_caller", bits, &["-pie", "-fPIE"])).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_once(' ').map(|(k, v)| (k.to_owned(), v.to_owned())).unwrap())
        .collect()
}

fn text(hex: &str) -> String {
    let b: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    String::from_utf8(b).unwrap()
}

#[test]
fn replaced_pointers_come_back_as_what_they_point_to() {
    let _check = bitbridge_tests::no_server_left();
    for b in BACKENDS {
        let t = truth(b.bits());
        let lib = b.open("lossless");

        // int get_version(const char **out): an out CStr pointee is the library's string.
        let f = lib.function("get_version", Signature::new(CType::Int).arg_inout(CType::ptr(CType::CStr))).unwrap();
        let o = f.call(&[Value::Str(String::new())]).unwrap();
        assert_eq!(o.ret.as_i64().unwrap().to_string(), t["get_version"]);
        assert_eq!(o.out(0), Some(&Value::Str(text(&t["get_version.out"]))), "{b:?}");
        let o = f.call(&[Value::Array(vec![Value::NULL])]).unwrap();
        assert_eq!(o.out(0), Some(&Value::Array(vec![Value::Str(text(&t["get_version.out"]))])), "{b:?}");

        // void get_point(struct point **out): the struct it points to now.
        let point = CType::structure("point", [("x", CType::Int), ("y", CType::Int)]);
        let f =
            lib.function("get_point", Signature::new(CType::Void).arg_inout(CType::ptr(CType::ptr(point)))).unwrap();
        let o = f.call(&[Value::Array(vec![Value::NULL])]).unwrap();
        let xy: Vec<i64> = t["get_point.out"].split(' ').map(|v| v.parse().unwrap()).collect();
        assert_eq!(o.out(0), Some(&Value::Array(vec![Value::Struct(vec![Value::Int(xy[0]), Value::Int(xy[1])])])));

        // A struct whose array member the library replaced: the new count and the new address.
        let dbuf = CType::structure("dbuf", [("n", CType::Int), ("data", CType::ptr(CType::Double))]);
        let f = lib.function("replace_data", Signature::new(CType::Void).arg_inout(CType::ptr(dbuf))).unwrap();
        let o = f.call(&[Value::Struct(vec![1.into(), Value::f64s([9.0])])]).unwrap();
        let s = o.out(0).unwrap();
        assert_eq!(s.get(0).unwrap().as_i64().unwrap().to_string(), t["replace_data"].split(' ').next().unwrap());
        let addr = s.get(1).and_then(Value::as_pointer).unwrap_or_else(|| panic!("{b:?}: {s:?}"));
        let want: Vec<f64> = t["replace_data"].split(' ').skip(1).map(|v| v.parse().unwrap()).collect();
        let data = lib.server().read_value(addr, &CType::array(CType::Double, 3)).unwrap();
        assert_eq!(data.to_f64_vec().unwrap(), want);

        // strtol's endptr points into the string passed in, which the server has freed by now: read from
        // the client's copy of it.
        let f = lib
            .function(
                "parse_num",
                Signature::new(CType::Long).arg(CType::CStr).arg_inout(CType::ptr(CType::ptr(CType::Char))),
            )
            .unwrap();
        let o = f.call(&["42 apples".into(), Value::Array(vec![Value::NULL])]).unwrap();
        assert_eq!(o.ret.as_i64().unwrap().to_string(), t["parse_num"]);
        assert_eq!(o.out(1), Some(&Value::Array(vec![Value::Str(text(&t["parse_num.end"]))])), "{b:?}");

        // A pointer the library leaves alone still reads back as the data it pointed to.
        let named = CType::structure("named", [("id", CType::Int), ("label", CType::CStr)]);
        let f = lib.function("relabel", Signature::new(CType::Void).arg_inout(CType::ptr(named))).unwrap();
        let o = f.call(&[Value::Struct(vec![1.into(), "old".into()])]).unwrap();
        assert_eq!(
            o.out(0),
            Some(&Value::Struct(vec![
                Value::Int(t["relabel"].parse().unwrap()),
                Value::Str(text(&t["relabel.label"]))
            ]))
        );
    }
}
