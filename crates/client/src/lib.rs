#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod cdecl;
mod detect;
mod error;
mod fast;
mod library;
mod locate;
mod process;
mod server;
mod service;
pub mod shared;
pub mod typed;
pub mod wine;

pub use bitbridge_proto::{
    Arch, CType, CallConv, Direction, ExtF80, Field, NumKind, Numbers, Os, Param, Signature, StructDef, Target, Value,
    ValueTypeError,
};
pub use cdecl::{Constant, Declarations, Prototype};
pub use detect::{
    dependencies, dll_dependencies, dll_imports, exports, inspect, undecorate, Dependency, DllDependency, DllLocation,
    LibraryInfo, Undecorated,
};
pub use error::{Error, ExitReason, Result};
pub use library::{Function, Library, LibraryOptions, Outcome};
pub use locate::{find_server, find_server_for, rust_triple, server_file_name, server_relative_path, user_server_dir};
pub use server::{Callback, Server, ServerOptions, ServerOutput, SharedBuffer, DEFAULT_LOAD_TIMEOUT, FRAME_STALL};
pub use service::ServiceClient;
pub use typed::{Addr, CArg, CArgs, CLong, CReturn, CULong, CValue, In, InOut, Out, TypedFunction};

/// `#[derive(CStruct)]`: a `#[repr(C)]` struct with named members as a C struct ([`CValue`]), laid out
/// by the server's target (feature `derive`, on by default). See [`typed`].
#[cfg(feature = "derive")]
pub use bitbridge_derive::CStruct;

/// How a shared-memory connection waits (see [`ServerOptions::wait_mode`]).
pub use bitbridge_shm::WaitMode;

/// The wire contract shared with the server (types, layouts, messages), for advanced use.
pub use bitbridge_proto as proto;
