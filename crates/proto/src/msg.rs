//! Messages between client and server, and their encoding.
//!
//! Every integer on the wire has a fixed width (no `usize`, no `c_long`), little endian, so a 64-bit
//! client and a 32-bit server read the same bytes the same way. Addresses are `u64` whatever the
//! server's pointer width. Messages are encoded with bincode 2 in fixed-int mode, with a byte limit so
//! a hostile length prefix inside a frame can never make the decoder allocate more than the frame holds.

use bincode::{Decode, Encode};

use crate::target::{Arch, Os};
use crate::types::{CType, Signature};

/// The protocol version; a server and client of different versions refuse each other at the handshake.
pub const PROTOCOL_VERSION: u32 = 5;

/// The largest memory block one call may pass: it must fit in a reply frame when copied back.
pub const MAX_BLOCK: u64 = crate::transport::DEFAULT_MAX_FRAME as u64 - (1 << 20);

/// The first bytes of every handshake.
pub const MAGIC: [u8; 8] = *b"BITBRDG\0";

/// What the server says first, before any request: who it is and what it hosts.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: [u8; 8],
    /// The server's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The server's architecture.
    pub arch: Arch,
    /// The server's operating system.
    pub os: Os,
    /// Pointer width in bytes (4 or 8).
    pub pointer_width: u8,
    /// The server's process id.
    pub pid: u32,
    /// The server crate's version, for messages.
    pub server_version: String,
}

/// One message in either direction. Both sides may send requests (the server sends one back to the
/// client while a call runs, for callbacks), so every reply names the request it answers.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum Frame {
    /// A request that expects exactly one reply with the same id.
    Request {
        /// Chosen by the sender, unique among its requests in flight.
        id: u64,
        /// What is asked.
        request: Request,
    },
    /// A request a client sends from inside a callback (a nested call): the server runs it on the thread
    /// that waits for that callback's reply, the thread the library called back on.
    Nested {
        /// As for [`Frame::Request`].
        id: u64,
        /// The id of the server's [`Request::Callback`] being run.
        parent: u64,
        /// What is asked.
        request: Request,
    },
    /// The answer to a request.
    Reply {
        /// The id of the request answered.
        id: u64,
        /// The result.
        reply: Result<Reply, RemoteError>,
    },
}

/// What a client asks of its server.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
#[non_exhaustive]
pub enum Request {
    /// Load a library (`dlopen`) under a handle the client chooses. Replies [`Reply::Done`].
    ///
    /// Handles are chosen by the client so that, after a server restart, replaying the loads and
    /// prepares gives every library and function the handle it had.
    Load {
        /// The handle, not in use.
        lib: u32,
        /// The path as given to the loader (a bare name searches the loader's path).
        path: String,
    },
    /// Unload a library; its functions become unusable. Replies [`Reply::Done`].
    Unload {
        /// From [`Request::Load`].
        lib: u32,
    },
    /// Look up a function and prepare it for calls under a handle the client chooses. Replies
    /// [`Reply::Address`] (the function's address).
    Prepare {
        /// From [`Request::Load`].
        lib: u32,
        /// The function's handle, not in use.
        func: u32,
        /// The exported name.
        symbol: String,
        /// How to call it.
        sig: Signature,
    },
    /// Look up any exported symbol's address. Replies [`Reply::Address`].
    Symbol {
        /// From [`Request::Load`].
        lib: u32,
        /// The exported name.
        symbol: String,
    },
    /// Call a prepared function. Replies [`Reply::Returned`].
    Call {
        /// From [`Request::Prepare`].
        func: u32,
        /// The arguments, laid out for the server's target.
        call: CallData,
    },
    /// Forget a prepared function. Replies [`Reply::Done`].
    Release {
        /// From [`Request::Prepare`].
        func: u32,
    },
    /// Allocate server memory that outlives calls. Replies [`Reply::Address`].
    Alloc {
        /// Bytes, at least 1.
        size: u64,
        /// A power of two, at most 4096.
        align: u32,
    },
    /// Free memory from [`Request::Alloc`]. Replies [`Reply::Done`].
    Free {
        /// From [`Reply::Address`].
        addr: u64,
    },
    /// Write bytes into server memory. Replies [`Reply::Done`].
    Write {
        /// Where.
        addr: u64,
        /// What.
        bytes: Vec<u8>,
    },
    /// Read bytes of server memory. Replies [`Reply::Bytes`].
    Read {
        /// Where.
        addr: u64,
        /// How many.
        len: u64,
    },
    /// Read a NUL-terminated string of server memory. Replies [`Reply::Bytes`] (without the NUL; wide
    /// strings as the target's `wchar_t` units, little endian).
    ReadString {
        /// Where.
        addr: u64,
        /// `wchar_t` units rather than bytes.
        wide: bool,
        /// Give up after this many units.
        max_len: u64,
    },
    /// Map the bulk arena, a shared-memory segment whose file descriptor the client has just sent over
    /// the socket; it replaces any previous arena. Replies [`Reply::Done`].
    AttachArena {
        /// The arena's size in bytes.
        size: u64,
    },
    /// Map a shared buffer (region `region`, not 0) whose file descriptor the client has just sent over
    /// the socket; pointer arguments may then point into it with nothing copied. Replies [`Reply::Done`].
    MapShared {
        /// The region's id, chosen by the client.
        region: u32,
        /// Its size in bytes.
        size: u64,
    },
    /// Forget a shared buffer (the memory lives on while the client keeps it). Replies [`Reply::Done`].
    UnmapShared {
        /// From [`Request::MapShared`].
        region: u32,
    },
    /// Create a C function pointer that calls back the client (a libffi closure in the server) with
    /// signature `sig`. Replies [`Reply::Address`]: the pointer to pass to the library.
    MakeCallback {
        /// The callback's id, chosen by the client.
        cb: u32,
        /// What the library calls it with and expects back.
        sig: Signature,
    },
    /// Free a callback made with [`Request::MakeCallback`]. Replies [`Reply::Done`].
    DropCallback {
        /// From [`Request::MakeCallback`].
        cb: u32,
    },
    /// Sent by the server: the library called callback `cb`. `call` holds the arguments, and for each
    /// non-NULL pointer argument a block with the memory it points to (the pointee type's size; a
    /// string for `char *`), tied to its argument by a relocation. Replied to with
    /// [`Reply::Returned`]: the return value, and the new content of blocks with `copy_back`.
    Callback {
        /// Which callback.
        cb: u32,
        /// Its arguments.
        call: CallData,
    },
    /// Create the server's service object (a custom server's wrapper, see `bitbridge-service`) from
    /// its constructor options, replacing any previous one. Replies [`Reply::Done`], or
    /// [`Reply::Raised`] when the constructor fails.
    Start {
        /// The options, encoded by the service codec (CBOR).
        options: Vec<u8>,
    },
    /// Call a method of the service object by name. Replies [`Reply::Bytes`] (the result, encoded by
    /// the service codec) or [`Reply::Raised`].
    Invoke {
        /// The method's registered name.
        method: String,
        /// The positional arguments, one encoded sequence.
        args: Vec<u8>,
    },
    /// Read a property of the service object. Replies like [`Request::Invoke`].
    Get {
        /// The property's registered name.
        name: String,
    },
    /// Reply [`Reply::Done`], then exit.
    Shutdown,
}

/// The arguments of one call, already laid out for the server's target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct CallData {
    /// The types of the variadic arguments, after the fixed ones, for a variadic function.
    pub variadic: Vec<CType>,
    /// The arguments' bytes, each in a slot of its own (see [`arg_slots`]).
    pub args: Vec<u8>,
    /// Memory that pointer arguments point to, allocated by the server for the duration of the call.
    pub blocks: Vec<Block>,
    /// Where to write each block's server address.
    pub relocs: Vec<Reloc>,
}

/// Where each argument starts in [`CallData::args`] given the arguments' sizes, and the total length:
/// each in order, at a multiple of 16 bytes (so any argument is aligned once the buffer is).
pub fn arg_slots(sizes: impl IntoIterator<Item = u64>) -> (Vec<u64>, u64) {
    let mut offsets = Vec::new();
    let mut end = 0u64;
    for size in sizes {
        let start = end.next_multiple_of(16);
        offsets.push(start);
        end = start + size;
    }
    (offsets, end)
}

/// Memory a pointer argument points to during one call: allocated by the server, or already in the
/// shared bulk arena.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct Block {
    /// The initial content; empty means `len` zero bytes (or, in the arena, the arena's bytes as they are).
    pub data: Vec<u8>,
    /// The size in bytes.
    pub len: u64,
    /// The alignment, a power of two.
    pub align: u32,
    /// Whether the content comes back after the call (in the reply, or in place in the arena).
    pub copy_back: bool,
    /// `Some(offset)`: the block is at this offset of shared region `region` (0: the bulk arena of
    /// [`Request::AttachArena`]; others: [`Request::MapShared`]), already filled by the client; the
    /// server neither allocates nor copies it, and does not send it back.
    pub arena: Option<u64>,
    /// The shared region `arena` refers to.
    pub region: u32,
}

/// "Write the address of block `block` at `offset` inside `at`": a pointer, in the target's width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Reloc {
    /// The argument or block holding the pointer.
    pub at: Loc,
    /// Byte offset of the pointer inside it.
    pub offset: u64,
    /// The block pointed to.
    pub block: u32,
}

/// An argument or a block of a [`CallData`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Loc {
    /// Argument number `n`.
    Arg(u32),
    /// Block number `n`.
    Block(u32),
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[non_exhaustive]
pub enum Reply {
    /// Nothing to report.
    Done,
    /// An address.
    Address(u64),
    /// Bytes read.
    Bytes(Vec<u8>),
    /// A call's results.
    Returned(Returned),
    /// A service's constructor, method or property failed: the error it raised. The connection and
    /// the service object stay usable.
    Raised {
        /// What kind of error: the name the service gave it, or one of bitbridge's own for failures
        /// around the method (unknown method, arguments that do not decode, a panic).
        kind: String,
        /// Its message, with its cause chain.
        message: String,
    },
}

/// What a call gave back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct Returned {
    /// The return value's bytes, exactly the size of the return type (empty for `void`).
    pub value: Vec<u8>,
    /// For `char *`/`wchar_t *` return types: the string at the returned address (without the NUL),
    /// `None` when the function returned `NULL`.
    pub string: Option<Vec<u8>>,
    /// The content after the call of every block with `copy_back` that is not in the arena, in block
    /// order.
    pub blocks: Vec<Vec<u8>>,
    /// `errno` right after the call, for functions declared with `use_errno`.
    pub errno: Option<i32>,
    /// `GetLastError()` right after the call, for functions declared with `use_last_error`.
    pub last_error: Option<u32>,
    /// The server's address of every block of the call, in block order (empty in a callback's
    /// result): a pointer inside a copied-back block that no longer holds its block's address was
    /// replaced by the library, and the client follows it instead of showing the old data.
    pub addrs: Vec<u64>,
}

/// An error the server reports; the connection stays usable.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RemoteError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The details, such as the loader's message.
    pub message: String,
}

/// The kinds of [`RemoteError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The library could not be loaded.
    LoadFailed,
    /// The library does not export the symbol.
    SymbolNotFound,
    /// The signature cannot be called on this target (libffi refused it).
    BadSignature,
    /// The call's data does not match the prepared signature.
    BadArguments,
    /// An unknown library, function or allocation handle.
    UnknownHandle,
    /// Memory could not be allocated.
    OutOfMemory,
    /// The request was malformed or out of order; the server closes the connection after this.
    Protocol,
    /// A service request ([`Request::Start`], [`Request::Invoke`], [`Request::Get`]) reached a server
    /// that hosts no service, or a native request reached a host that serves only a service.
    NotServed,
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes are not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Bytes were left over after the message.
    #[error("malformed message: {0} trailing bytes")]
    Trailing(usize),
}

fn config() -> bincode::config::Configuration<bincode::config::LittleEndian, bincode::config::Fixint> {
    bincode::config::standard().with_little_endian().with_fixed_int_encoding()
}

/// Encodes a message, appending to `out`.
pub fn encode<T: Encode>(msg: &T, out: &mut Vec<u8>) {
    bincode::encode_into_std_write(msg, out, config()).expect("writing to a Vec cannot fail");
}

/// Decodes a whole message; trailing bytes are an error.
///
/// bincode allocates a container as soon as it has read its length, checked only against the decoder's
/// limit, so the limit is chosen per input: the smallest power of four at least four times the input's
/// length. A hostile length inside a small frame can then cost at most a few times the frame's size.
pub fn decode<T: Decode<()>>(bytes: &[u8]) -> Result<T, CodecError> {
    macro_rules! tiers {
        ($($limit:literal),*) => {
            $(if bytes.len() as u64 * 4 <= $limit {
                return decode_limited::<T, $limit>(bytes);
            })*
        };
    }
    tiers!(4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864, 268435456, 1073741824);
    // Above 256 MiB (frames may reach 1 GiB): no tier fits a 32-bit usize, so trust the frame limit.
    decode_limited::<T, { usize::MAX }>(bytes)
}

fn decode_limited<T: Decode<()>, const LIMIT: usize>(bytes: &[u8]) -> Result<T, CodecError> {
    let (msg, used) = bincode::decode_from_slice::<T, _>(bytes, config().with_limit::<LIMIT>())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(msg)
}

impl Hello {
    /// The hello of a server running on `arch`/`os`.
    pub fn new(arch: Arch, os: Os, pointer_width: u8, pid: u32, server_version: &str) -> Hello {
        Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            arch,
            os,
            pointer_width,
            pid,
            server_version: server_version.to_owned(),
        }
    }
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for RemoteError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CType, Signature};

    #[test]
    fn frames_round_trip_with_fixed_width_integers() {
        let sig = Signature::new(CType::structure("P", [("x", CType::Double)]))
            .arg(CType::ptr(CType::array(CType::Long, 3)))
            .arg(CType::fn_ptr(Signature::new(CType::Void).arg(CType::WStr)));
        let f = Frame::Request { id: u64::MAX, request: Request::Prepare { lib: 7, func: 8, symbol: "f".into(), sig } };
        let mut out = Vec::new();
        encode(&f, &mut out);
        assert_eq!(decode::<Frame>(&out).unwrap(), f);
        // The id is 8 bytes little endian after the 4-byte variant index, on every target.
        assert_eq!(&out[..12], &[0, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255]);
        out.push(0);
        assert!(matches!(decode::<Frame>(&out), Err(CodecError::Trailing(1))));
    }

    #[test]
    fn hostile_lengths_are_refused_without_allocating_them() {
        // Request::Write with a byte vector claiming 2^40 bytes inside a 30-byte frame.
        let mut b = Vec::new();
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&8u32.to_le_bytes()); // Request::Write
        b.extend_from_slice(&0u64.to_le_bytes()); // addr
        b.extend_from_slice(&(1u64 << 40).to_le_bytes()); // bytes.len()
        assert!(decode::<Frame>(&b).is_err());
    }
}
