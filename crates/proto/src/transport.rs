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
    /// Limits the size of the frames [`Transport::recv`] accepts from now on (a larger one is
    /// [`FrameError::TooLarge`], refused before its body is read where the length is announced).
    /// Transports that cannot refuse frames ignore it.
    fn set_max_frame(&mut self, max: u32) {
        let _ = max;
    }
    /// Whether a frame has begun arriving and is not complete: a [`Transport::recv`] that timed out
    /// part-way keeps what it read, and the next one continues the same frame.
    fn in_frame(&self) -> bool {
        false
    }
    /// Limits how long [`Transport::send`] may wait for room (`None`: forever). Transports that cannot
    /// time out ignore it.
    fn set_send_timeout(&mut self, timeout: Option<std::time::Duration>) -> Result<(), FrameError> {
        let _ = timeout;
        Ok(())
    }
}

/// Length-prefixed frames over a byte stream.
///
/// A receive that times out part-way through a frame keeps what it has read: the next
/// [`Transport::recv`] carries on from there, so a deadline applies to every byte of a frame (not only
/// its start) and the stream never falls out of step. The body grows with the bytes actually read, never
/// with the announced length alone.
#[derive(Debug)]
pub struct StreamTransport<S> {
    stream: S,
    max_frame: u32,
    scratch: Vec<u8>,
    /// The frame being received: header bytes so far, and the body once the header is complete.
    header: [u8; 4],
    header_got: usize,
    body: Vec<u8>,
}

/// The first read of a frame's body asks for at most this much; each later read at most doubles what
/// has arrived, so memory follows the bytes received.
const FIRST_CHUNK: usize = 64 * 1024;

impl<S: Read + Write> StreamTransport<S> {
    /// Frames over `stream` with the default maximum frame size.
    pub fn new(stream: S) -> Self {
        Self::with_max_frame(stream, DEFAULT_MAX_FRAME)
    }

    /// Frames over `stream`, refusing frames longer than `max_frame` bytes.
    pub fn with_max_frame(stream: S, max_frame: u32) -> Self {
        StreamTransport { stream, max_frame, scratch: Vec::new(), header: [0; 4], header_got: 0, body: Vec::new() }
    }

    /// Changes the largest frame accepted from now on (a greeting is read with a small one).
    pub fn set_max_frame(&mut self, max_frame: u32) {
        self.max_frame = max_frame;
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The underlying stream, mutably (to change its deadline, say).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    fn reset(&mut self) {
        self.header_got = 0;
        self.body.clear();
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
        while self.header_got < 4 {
            match read_some(&mut self.stream, &mut self.header[self.header_got..])? {
                0 if self.header_got == 0 => return Err(FrameError::Closed),
                0 => {
                    let got = self.header_got as u64;
                    self.reset();
                    return Err(FrameError::Truncated { got, want: 4 });
                }
                n => self.header_got += n,
            }
        }
        let len = u32::from_le_bytes(self.header);
        if len > self.max_frame {
            self.reset();
            return Err(FrameError::TooLarge { len: u64::from(len), max: self.max_frame });
        }
        let len = len as usize;
        while self.body.len() < len {
            let at = self.body.len();
            let chunk = (len - at).min(at.max(FIRST_CHUNK));
            self.body.resize(at + chunk, 0);
            let got = read_some(&mut self.stream, &mut self.body[at..]);
            self.body.truncate(at + got.as_ref().map_or(0, |n| *n));
            if got? == 0 {
                self.reset();
                return Err(FrameError::Truncated { got: at as u64, want: len as u64 });
            }
        }
        std::mem::swap(buf, &mut self.body);
        self.reset();
        Ok(())
    }

    fn in_frame(&self) -> bool {
        self.header_got > 0
    }

    fn set_max_frame(&mut self, max: u32) {
        self.max_frame = max;
    }
}

/// One read, retried on EINTR; a timeout is [`FrameError::TimedOut`] (what was read so far is kept by
/// the caller).
fn read_some(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, FrameError> {
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(map_io(e)),
        }
    }
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

    /// Gives its pieces one read at a time; `None` is a timeout.
    struct Script(std::collections::VecDeque<Option<Vec<u8>>>);
    impl Read for Script {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            match self.0.pop_front() {
                Some(Some(mut piece)) => {
                    let n = piece.len().min(b.len());
                    b[..n].copy_from_slice(&piece[..n]);
                    if n < piece.len() {
                        self.0.push_front(Some(piece.split_off(n)));
                    }
                    Ok(n)
                }
                Some(None) => Err(io::ErrorKind::TimedOut.into()),
                None => Ok(0),
            }
        }
    }
    impl Write for Script {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_timeout_inside_a_frame_keeps_its_place_and_memory_follows_the_bytes_read() {
        let pieces = [Some(vec![6, 0]), None, Some(vec![0, 0, b'a']), None, Some(b"bcdef".to_vec())];
        let mut t = StreamTransport::new(Script(pieces.into_iter().collect()));
        let mut buf = Vec::new();
        assert!(!t.in_frame());
        assert!(matches!(t.recv(&mut buf), Err(FrameError::TimedOut)));
        assert!(t.in_frame());
        assert!(matches!(t.recv(&mut buf), Err(FrameError::TimedOut)));
        t.recv(&mut buf).unwrap();
        assert_eq!(buf, b"abcdef");
        assert!(!t.in_frame());

        // A header announcing almost 1 GiB followed by 10 bytes: nothing near 1 GiB is allocated.
        let len = (DEFAULT_MAX_FRAME - 1).to_le_bytes().to_vec();
        let mut t = StreamTransport::new(Script([Some(len), Some(vec![7; 10]), None].into_iter().collect()));
        assert!(matches!(t.recv(&mut buf), Err(FrameError::TimedOut)));
        assert!(t.body.capacity() <= 2 * FIRST_CHUNK, "{} bytes reserved", t.body.capacity());
        assert!(matches!(t.recv(&mut buf), Err(FrameError::Truncated { got: 10, .. })));
    }
}
