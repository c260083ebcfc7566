//! The contract between a bitbridge client and its server: C types, their layouts on each target,
//! values and how they are laid out for a call, the messages, and framing.
//!
//! This crate is pure: no `unsafe`, no system calls. It compiles identically for i686 and x86_64, which
//! is what lets a 64-bit client and a 32-bit server agree on every byte.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod flat;
pub mod marshal;
pub mod msg;
pub mod numbers;
pub mod service;
pub mod target;
pub mod transport;
pub mod types;
pub mod value;

pub use marshal::{
    decode_callback_args, decode_numbers_into, decode_results_at, decode_results_borrowed, decode_returned,
    decode_value, decode_wide, encode_call, encode_call_borrowed, encode_call_bulk, encode_callback_result,
    encode_value, CallPlan, MarshalError,
};
pub use msg::{
    Block, CallData, CodecError, ErrorKind, Frame, Hello, Loc, Reloc, RemoteError, Reply, Request, Returned, MAGIC,
    PROTOCOL_VERSION,
};
pub use numbers::{BorrowedNumbers, NumKind, NumSlice, NumSliceMut, Numbers};
pub use target::{Arch, Layout, LayoutError, Os, StructLayout, Target};
pub use transport::{FrameError, StreamTransport, Transport, DEFAULT_MAX_FRAME};
pub use types::{CType, CallConv, Direction, Field, Param, Signature, StructDef};
pub use value::{ExtF80, Value, ValueTypeError};
