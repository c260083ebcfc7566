//! Any bytes given to the message decoder: an error or a message, never a panic, a stack overflow or
//! an allocation far beyond the input. A decoded message re-encodes to the same bytes, and the fast
//! path's hand readers (`flat`) agree with the general decoder.
#![no_main]
use bitbridge_proto::{flat, msg, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flat::assert_agrees_with_general_decoder(data);
    if let Ok(frame) = msg::decode::<Frame>(data) {
        let mut again = Vec::new();
        msg::encode(&frame, &mut again);
        assert_eq!(again, data);
    }
});
