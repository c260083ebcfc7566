//! The bitbridge host: loads a native library into this process and calls its functions through
//! libffi on behalf of a client.
//!
//! The `bitbridge-server` binary, built for each architecture bitbridge hosts (i686 and x86_64),
//! runs a [`Host`] over the socket its client handed it. The client crate also uses [`InProcess`] to
//! run the same host inside the client for libraries of the client's own architecture.
//!
//! Everything unsafe in bitbridge lives in this crate: library loading, libffi calls, raw memory.
#![deny(missing_docs)]

mod callback;
mod ffi;
mod host;
mod link;
mod memory;
mod run;
mod sys;

/// Process set-up for the server binary (Unix: connection on fd 0, parent-death signal).
#[doc(hidden)]
pub use sys::take_connection;

use std::collections::VecDeque;

use bitbridge_proto::{msg, Frame, FrameError, Hello, Reply, Request, Transport};

pub use host::{panic_message, source_chain, Handler, Host, Raised};
pub use run::run;

/// The hello a host of this build sends.
pub fn hello(pid: u32) -> Hello {
    let t = bitbridge_proto::Target::host().expect("supported target");
    Hello::new(t.arch, t.os, std::mem::size_of::<usize>() as u8, pid, env!("CARGO_PKG_VERSION"))
}

/// A [`Transport`] whose peer is a [`Host`] in the same process: each request frame is decoded and
/// answered synchronously, so the client code path is the same as with a server process, byte for byte.
#[derive(Debug)]
pub struct InProcess {
    host: Host,
    replies: VecDeque<Vec<u8>>,
    closed: bool,
    /// The buffer the last reply was received into, reused for the next reply.
    spare: Vec<u8>,
}

impl InProcess {
    /// A transport to `host`. The first frame received is the host's [`Hello`].
    pub fn new(host: Host) -> InProcess {
        let mut hello = Vec::new();
        msg::encode(&self::hello(std::process::id()), &mut hello);
        InProcess { host, replies: VecDeque::from([hello]), closed: false, spare: Vec::new() }
    }
}

impl Transport for InProcess {
    fn send(&mut self, frame: &[u8]) -> Result<(), FrameError> {
        if self.closed {
            return Err(FrameError::Closed);
        }
        if let Some(call) = bitbridge_proto::flat::peek_call(frame) {
            // The fast path, as the server's link takes it.
            let mut out = std::mem::take(&mut self.spare);
            out.clear();
            let mut value = [0u8; 32];
            match self.host.call_flat(call.func, call.args, &mut value) {
                host::FlatAnswer::Plain { len, errno, last_error } => {
                    bitbridge_proto::flat::encode_returned(&mut out, call.id, &value[..len], errno, last_error)
                }
                host::FlatAnswer::General(reply) => msg::encode(&Frame::Reply { id: call.id, reply }, &mut out),
            }
            self.replies.push_back(out);
            return Ok(());
        }
        let reply = match msg::decode::<Frame>(frame) {
            Ok(Frame::Request { id, request } | Frame::Nested { id, request, .. }) => {
                self.closed = matches!(request, Request::Shutdown);
                Frame::Reply { id, reply: self.host.handle(request) }
            }
            Ok(Frame::Reply { id, .. }) => Frame::Reply { id, reply: Ok(Reply::Done) },
            Err(e) => {
                self.closed = true;
                Frame::Reply {
                    id: 0,
                    reply: Err(bitbridge_proto::RemoteError {
                        kind: bitbridge_proto::ErrorKind::Protocol,
                        message: e.to_string(),
                    }),
                }
            }
        };
        let mut out = std::mem::take(&mut self.spare);
        out.clear();
        msg::encode(&reply, &mut out);
        self.replies.push_back(out);
        Ok(())
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> Result<(), FrameError> {
        match self.replies.pop_front() {
            Some(mut f) => {
                std::mem::swap(buf, &mut f);
                self.spare = f;
                Ok(())
            }
            None => Err(FrameError::Closed),
        }
    }
}
