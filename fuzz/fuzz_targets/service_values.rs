//! Any bytes as a custom server's arguments or options: the CBOR decoder gives an error or a value,
//! never a panic, a stack overflow (nesting is bounded) or an allocation far beyond the input; a decoded
//! value re-encodes and decodes again. (The first re-encoding may normalise: a bignum tag holding -1
//! comes back as the integer -1; from then on the encoding is stable.)
#![no_main]
use bitbridge_proto::service::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = decode::<ciborium::Value>(data) {
        let again = encode(&value).expect("a decoded value encodes");
        let back: ciborium::Value = decode(&again).expect("an encoded value decodes");
        let normal = encode(&back).expect("a decoded value encodes");
        // NaN is not equal to itself: compare encodings.
        let stable: ciborium::Value = decode(&normal).expect("an encoded value decodes");
        assert_eq!(encode(&stable).unwrap(), normal);
    }
    // Typed decoding, as a method with parameters (i32, String, Vec<f64>) does.
    let _ = decode::<(i32, String, Vec<f64>)>(data);
});
