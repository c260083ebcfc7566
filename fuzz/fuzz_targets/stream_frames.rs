//! Any byte stream given to the framing layer (length prefixes included): frames or a clean error.
#![no_main]
use std::io::{Cursor, Read, Write};

use bitbridge_proto::{msg, Frame, StreamTransport, Transport};
use libfuzzer_sys::fuzz_target;

struct Input(Cursor<Vec<u8>>);
impl Read for Input {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(b)
    }
}
impl Write for Input {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut t = StreamTransport::with_max_frame(Input(Cursor::new(data.to_vec())), 1 << 20);
    let mut buf = Vec::new();
    while t.recv(&mut buf).is_ok() {
        let _ = msg::decode::<Frame>(&buf);
    }
});
