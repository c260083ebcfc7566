//! A server reply of any bytes read back against a call's types: values or an error, never a panic.
#![no_main]
use bitbridge_proto::marshal::{decode_returned, encode_call};
use bitbridge_proto::{msg, CType, Returned, Signature, Target, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let buf = CType::structure("Buf", [("n", CType::Int), ("data", CType::ptr(CType::Double))]);
    let sig = Signature::new(CType::union("U", [("i", CType::Int), ("d", CType::array(CType::Double, 2))]))
        .arg_inout(CType::ptr(buf))
        .arg_out(CType::ptr(CType::array(CType::Char, 4)));
    let values = [Value::Struct(vec![2.into(), Value::f64s([1.0, 2.0])]), Value::Zeros(3)];
    for target in [Target::I386_SYSV, Target::X86_64_SYSV] {
        let (_, plan) = encode_call(&target, &sig, &values).expect("valid call");
        if let Ok(returned) = msg::decode::<Returned>(data) {
            let _ = decode_returned(&target, &sig, &values, &plan, returned);
        }
    }
});
