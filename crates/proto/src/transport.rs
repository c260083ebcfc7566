//! How frames move, separate from what they mean.
//!
//! A frame on a byte stream is a `u32` little-endian length followed by that many bytes of message. The
//! length is checked against a maximum *before* anything is allocated. Other transports (shared memory,
//! in-process) implement [`Transport`] directly and carry the same message bytes.

use std::io::{self, Read, Write};

/// The largest frame accepted by default: 1 GiB, enough for a 64 MiB array many times over while keeping
/// a 32-bit server's address space safe from a hostile length.
pub const DEFAULT_MAX_FRAME: u32 = 1 << 30;

/// Why a frame could not be received.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer closed the connection cleanly between frames.
    #[error("the peer closed the connection")]
    Closed,
    /// The connection ended in the middle of a frame.
    #[error("the connection ended inside a frame ({got} of {want} bytes)")]
    Truncated {
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        want: u64,
    },
    /// A length prefix above the maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The maximum in force.
        max: u32,
    },
    /// No frame arrived within the time allowed.
    #[error("timed out waiting for a frame")]
    TimedOut,
    /// Any other I/O failure.
    #[error("I/O error on the connection")]
    Io(#[source] io::Error),
}

/// Moves whole frames between two peers. Implementations: [`StreamTransport`] over a socket (or any
/// byte stream); the server crate's in-process transport.
pub trait Transport: Send {
    /// Sends one frame.
    fn send(&mut self, frame: &[u8]) -> Result<(), FrameError>;
    /// Receives one frame into `buf` (cleared first).
    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<(), FrameError>;
    /// Limits how long [`Transport::recv`] waits (`None`: forever); past it, `recv` fails with
    /// [`FrameError::TimedOut`]. Transports that cannot time out ignore it.
    fn set_recv_timeout(&mut self, timeout: Option<std::time::Duration>) -> Result<(), FrameError> {
        let _ = timeout;
        Ok(())
    }
    /// Limits how long [`Transport::send`] may wait for room (`None`: forever). Transports that cannot
    /// time out ignore it.
    fn set_send_timeout(&mut self, timeout: Option<std::time::Duration>) -> Result<(), FrameError> {
        let _ = timeout;
        Ok(())
    }
}

/// Length-prefixed frames over a byte stream.
#[derive(Debug)]
pub struct StreamTransport<S> {
    stream: S,
    max_frame: u32,
    scratch: Vec<u8>,
}

impl<S: Read + Write> StreamTransport<S> {
    /// Frames over `stream` with the default maximum frame size.
    pub fn new(stream: S) -> Self {
        Self::with_max_frame(stream, DEFAULT_MAX_FRAME)
    }

    /// Frames over `stream`, refusing frames longer than `max_frame` bytes.
    pub fn with_max_frame(stream: S, max_frame: u32) -> Self {
        StreamTransport { stream, max_frame, scratch: Vec::new() }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }
}

impl<S: Read + Write + Send> Transport for StreamTransport<S> {
    fn send(&mut self, frame: &[u8]) -> Result<(), FrameError> {
        let len = u32::try_from(frame.len())
            .ok()
            .filter(|l| *l <= self.max_frame)
            .ok_or(FrameError::TooLarge { len: frame.len() as u64, max: self.max_frame })?;
        // One write for small frames: the header and body in a single syscall.
        if frame.len() <= 64 * 1024 {
            self.scratch.clear();
            self.scratch.extend_from_slice(&len.to_le_bytes());
            self.scratch.extend_from_slice(frame);
            self.stream.write_all(&self.scratch).map_err(map_io)?;
        } else {
            self.stream.write_all(&len.to_le_bytes()).map_err(map_io)?;
            self.stream.write_all(frame).map_err(map_io)?;
        }
        self.stream.flush().map_err(map_io)
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<(), FrameError> {
        // A timeout counts only before a frame's first byte: once it has begun, the rest is waited for
        // (abandoning it half-read would leave the stream out of step).
        let mut header = [0u8; 4];
        let got = read_full(&mut self.stream, &mut header, false)?;
        if got == 0 {
            return Err(FrameError::Closed);
        }
        if got < 4 {
            return Err(FrameError::Truncated { got: got as u64, want: 4 });
        }
        let len = u32::from_le_bytes(header);
        if len > self.max_frame {
            return Err(FrameError::TooLarge { len: u64::from(len), max: self.max_frame });
        }
        buf.clear();
        buf.resize(len as usize, 0);
        let got = read_full(&mut self.stream, buf, true)?;
        if got < buf.len() {
            return Err(FrameError::Truncated { got: got as u64, want: u64::from(len) });
        }
        Ok(())
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read. A read timeout ends it only
/// when nothing was read yet and `begun` is false.
fn read_full(r: &mut impl Read, buf: &mut [u8], begun: bool) -> Result<usize, FrameError> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) && (begun || done > 0) => {}
            Err(e) => return Err(map_io(e)),
        }
    }
    Ok(done)
}

fn map_io(e: io::Error) -> FrameError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FrameError::TimedOut,
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof => FrameError::Closed,
        _ => FrameError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[derive(Default)]
    struct Pipe(Cursor<Vec<u8>>);
    impl Read for Pipe {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            self.0.read(b)
        }
    }
    impl Write for Pipe {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.get_mut().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn frames_round_trip_and_bad_lengths_are_refused_before_allocating() {
        let mut t = StreamTransport::with_max_frame(Pipe::default(), 100);
        t.send(b"hello").unwrap();
        t.send(&[]).unwrap();
        let mut buf = Vec::new();
        t.recv(&mut buf).unwrap();
        assert_eq!(buf, b"hello");
        t.recv(&mut buf).unwrap();
        assert!(buf.is_empty());
        assert!(matches!(t.recv(&mut buf), Err(FrameError::Closed)));
        assert!(matches!(t.send(&[0; 101]), Err(FrameError::TooLarge { len: 101, max: 100 })));

        let mut t = StreamTransport::with_max_frame(Pipe(Cursor::new(u32::MAX.to_le_bytes().to_vec())), 100);
        assert!(matches!(t.recv(&mut buf), Err(FrameError::TooLarge { .. })));
        let mut t = StreamTransport::new(Pipe(Cursor::new(vec![10, 0, 0, 0, 1, 2])));
        assert!(matches!(t.recv(&mut buf), Err(FrameError::Truncated { got: 2, want: 10 })));
        let mut t = StreamTransport::new(Pipe(Cursor::new(vec![10, 0])));
        assert!(matches!(t.recv(&mut buf), Err(FrameError::Truncated { got: 2, want: 4 })));
    }
}
