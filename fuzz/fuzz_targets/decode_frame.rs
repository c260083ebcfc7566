//! Any bytes given to the message decoder: an error or a message, never a panic, a stack overflow or
//! an allocation far beyond the input. A decoded message re-encodes to the same bytes.
#![no_main]
use bitbridge_proto::{msg, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = msg::decode::<Frame>(data) {
        let mut again = Vec::new();
        msg::encode(&frame, &mut again);
        assert_eq!(again, data);
    }
});
